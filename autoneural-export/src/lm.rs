//! The LFM2 language model as static-shape ONNX graphs with explicit state, one graph per
//! step length: `prefill` (`prefill_len` positions) and `decode` (one position), plus
//! `embed_tokens` (token ids -> embeddings). Every op mirrors `autoneural_model::text`.
//!
//! The state contract (also in `manifest.json`):
//! - a conv layer `L` takes `conv_state_L` `[1, kernel - 1, hidden]` (the gated inputs of
//!   the previous `kernel - 1` positions, zeros at the start) and returns `new_conv_state_L`;
//! - an attention layer `L` takes `past_key_L` / `past_value_L` `[1, kv_heads, context,
//!   head_dim]` (the host's cache: slot `p` holds position `p`, unused slots anything) and
//!   returns `present_key_L` / `present_value_L` `[1, kv_heads, T, head_dim]`, the keys
//!   (after norm and RoPE) and values of this step's `T` positions, which the host writes
//!   into slots `position .. position + T`;
//! - `attention_mask` `[1, 1, T, context + T]` is added to the attention scores: query `i`
//!   sees cache slot `j < context` when `j < position` and this step's key `k` (column
//!   `context + k`) when `k <= i`; [`MASK_VISIBLE`] there, [`MASK_HIDDEN`] elsewhere;
//! - `position_ids` `[1, T]` are `position .. position + T` (RoPE).
//!
//! LFM3 adds, for its sliding attention layers, a ring of `window` slots per layer:
//! `past_key_L` / `past_value_L` `[1, kv_heads, window, head_dim]` (position `p` in slot
//! `p % window`), into which the host writes the last `min(T, window)` of the step's
//! `present_key_L` / `present_value_L`; and `sliding_attention_mask` `[1, 1, T, window + T]`:
//! query `i` (position `position + i`) sees ring slot `j` when the slot holds a position
//! `q` with `position + i - window < q` (every held position is earlier), and this step's
//! key `k` when `k <= i` and `i - k < window`. Its RoPE tables are the sliding layers' own
//! (`rope.sliding.cos` / `.sin`); the full layers' are `rope.cos` / `.sin`. Sandwich norms
//! and attention gates are ops like the others; initializers keep the module paths
//! (`self_attn.out_proj`), which `quantization.json` uses too.

use anyhow::{Result, bail};
use autoneural_model::text::attention::Attention;
use autoneural_model::text::model::Mixer;
use autoneural_model::text::rope::Rope;
use autoneural_model::text::shortconv::ShortConv;
use autoneural_model::text::{LayerKind, Lfm2ForCausalLM};

use crate::graph::{Attr, Build, DType, Graph, linear, values};
use crate::qdq::{self, Layout};

/// Mask value of a visible key.
pub const MASK_VISIBLE: f32 = 0.0;
/// Mask value of a hidden key: `exp` of it underflows to 0 in f32, as `-inf` would, and
/// quantized runtimes can represent it.
pub const MASK_HIDDEN: f32 = -10000.0;

/// The names state inputs and outputs take.
pub fn state_names(kind: LayerKind, layer: usize) -> (Vec<String>, Vec<String>) {
    match kind {
        LayerKind::Conv => (vec![format!("conv_state_{layer}")], vec![format!("new_conv_state_{layer}")]),
        LayerKind::Attention | LayerKind::SlidingAttention => (
            vec![format!("past_key_{layer}"), format!("past_value_{layer}")],
            vec![format!("present_key_{layer}"), format!("present_value_{layer}")],
        ),
    }
}

/// Shapes of one step: `t` positions (each attention kind's cache length is in its
/// [`AttentionInputs`]).
pub(crate) struct Step {
    pub t: usize,
}

fn short_conv(g: &mut Graph, x: &str, conv: &ShortConv, key: &str, layer: usize, step: &Step, d: usize) -> String {
    let (t, k) = (step.t as i64, conv.kernel());
    let bcx = linear(g, x, &conv.in_proj, &format!("{key}.in_proj"));
    let parts = g.op_n("Split", &[&bcx], vec![("axis", Attr::Int(2)), ("num_outputs", Attr::Int(3))], 3);
    let v = g.mul(&parts[0], &parts[2]);
    let state = g.input(&format!("conv_state_{layer}"), DType::Float32, &[1, k - 1, d]);
    let window = g.concat(&[&state, &v], 1); // [1, t + k - 1, d]
    let new_state = g.slice(&window, &[t], &[t + k as i64 - 1], &[1]);
    g.output(&new_state, &format!("new_conv_state_{layer}"), DType::Float32, &[1, k - 1, d]);
    // Depthwise causal conv over time: Conv on [1, d, t + k - 1] with one group per channel.
    let channels_first = g.transpose(&window, &[0, 2, 1]);
    let w = qdq::weight(g, &format!("{key}.conv.weight"), &[d, 1, k], &values(conv.conv.weight.val()), Layout::Torch);
    let mut inputs = vec![channels_first.as_str(), w.as_str()];
    let bias;
    if let Some(b) = &conv.conv.bias {
        bias = g.weight(&format!("{key}.conv.bias"), &[d], &values(b.val()));
        inputs.push(&bias);
    }
    let y = g.op("Conv", &inputs, vec![("group", Attr::Int(d as i64)), ("kernel_shape", Attr::Ints(vec![k as i64]))]);
    let y = g.transpose(&y, &[0, 2, 1]);
    let gated = g.mul(&parts[1], &y);
    linear(g, &gated, &conv.out_proj, &format!("{key}.out_proj"))
}

/// `x * cos + rotate_half(x) * sin` on `[1, heads, t, hd]` (tables broadcasting over it).
pub(crate) fn rope(g: &mut Graph, x: &str, cos: &str, sin: &str, hd: i64) -> String {
    let x1 = g.slice(x, &[0], &[hd / 2], &[3]);
    let x2 = g.slice(x, &[hd / 2], &[hd], &[3]);
    let neg = g.op("Neg", &[&x2], vec![]);
    let rotated = g.concat(&[&neg, &x1], 3);
    let a = g.mul(x, cos);
    let b = g.mul(&rotated, sin);
    g.add(&a, &b)
}

/// How a graph's attention layers take and give their cache.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KvLayout {
    /// `past_key_L` / `past_value_L` `[1, kv_heads, cache, head_dim]`.
    Plain,
    /// The Genie / AI Hub layout ([`crate::genie`]): keys transposed, `past_key_L` `[1,
    /// kv_heads, head_dim, cache]` and `present_key_L` `[1, kv_heads, head_dim, t]`.
    Genie,
}

/// What one kind of attention layer reads in a step: its cache length (the context, or a
/// sliding layer's window, or the context less the step in the Genie layout), RoPE rows
/// (`[1, 1, t, head_dim]`), mask and cache layout.
pub(crate) struct AttentionInputs {
    pub cache: usize,
    pub cos: String,
    pub sin: String,
    pub mask: String,
    pub layout: KvLayout,
}

fn attention(
    g: &mut Graph,
    x: &str,
    attn: &Attention,
    key: &str,
    layer: usize,
    step: &Step,
    kind: &AttentionInputs,
    eps: f64,
) -> String {
    let (t, c) = (step.t as i64, kind.cache as i64);
    let (rope_tables, mask) = ((kind.cos.as_str(), kind.sin.as_str()), kind.mask.as_str());
    let (h, kvh, hd) = (attn.num_heads as i64, attn.num_kv_heads as i64, attn.head_dim as i64);
    let heads = |g: &mut Graph, y: &str, n: i64| g.reshape(y, &[1, t, n, hd]);
    let q = linear(g, x, &attn.q_proj, &format!("{key}.q_proj"));
    let q = heads(g, &q, h);
    let qn = g.weight(&format!("{key}.q_layernorm.weight"), &[hd as usize], &values(attn.q_layernorm.weight.val()));
    let q = g.rms_norm(&q, &qn, eps);
    let q = g.transpose(&q, &[0, 2, 1, 3]);
    let k = linear(g, x, &attn.k_proj, &format!("{key}.k_proj"));
    let k = heads(g, &k, kvh);
    let kn = g.weight(&format!("{key}.k_layernorm.weight"), &[hd as usize], &values(attn.k_layernorm.weight.val()));
    let k = g.rms_norm(&k, &kn, eps);
    let k = g.transpose(&k, &[0, 2, 1, 3]);
    let v = linear(g, x, &attn.v_proj, &format!("{key}.v_proj"));
    let v = heads(g, &v, kvh);
    let v = g.transpose(&v, &[0, 2, 1, 3]);
    let q = rope(g, &q, rope_tables.0, rope_tables.1, hd);
    let k = rope(g, &k, rope_tables.0, rope_tables.1, hd);
    // What the cache holds, at the policy's KV-cache bits.
    let k = qdq::activation(g, &format!("{key}.k_cache"), &k);
    let v = qdq::activation(g, &format!("{key}.v_cache"), &v);
    let (kv, n) = (kvh as usize, hd as usize);
    let v_shape = [1, kv, step.t, n];
    let cache = [1, kv, kind.cache, n];
    // The keys (`[1, kvh, c + t, hd]`, or transposed in the Genie layout) and values.
    let (keys, vals) = match kind.layout {
        KvLayout::Plain => {
            g.output(&k, &format!("present_key_{layer}"), DType::Float32, &v_shape);
            g.output(&v, &format!("present_value_{layer}"), DType::Float32, &v_shape);
            let past_k = g.input(&format!("past_key_{layer}"), DType::Float32, &cache);
            let past_v = g.input(&format!("past_value_{layer}"), DType::Float32, &cache);
            let keys = g.concat(&[&past_k, &k], 2);
            let vals = g.concat(&[&past_v, &v], 2);
            (keys, vals)
        }
        KvLayout::Genie => {
            let k = g.transpose(&k, &[0, 1, 3, 2]);
            g.output(&k, &format!("present_key_{layer}"), DType::Float32, &[1, kv, n, step.t]);
            g.output(&v, &format!("present_value_{layer}"), DType::Float32, &v_shape);
            let past_k = g.input(&format!("past_key_{layer}"), DType::Float32, &[1, kv, n, kind.cache]);
            let past_v = g.input(&format!("past_value_{layer}"), DType::Float32, &cache);
            (g.concat(&[&past_k, &k], 3), g.concat(&[&past_v, &v], 2))
        }
    };
    // Query heads sharing a kv head stacked on the row axis (as the Burn model does).
    let grp = h / kvh;
    let q = g.reshape(&q, &[1, kvh, grp * t, hd]);
    let kt = match kind.layout {
        KvLayout::Plain => g.transpose(&keys, &[0, 1, 3, 2]),
        KvLayout::Genie => keys,
    };
    let scores = g.matmul(&q, &kt);
    let scale = g.scalar(1.0 / (hd as f32).sqrt());
    let scores = g.mul(&scores, &scale);
    let scores = g.reshape(&scores, &[1, kvh, grp, t, c + t]);
    let m = g.reshape(mask, &[1, 1, 1, t, c + t]);
    let scores = g.add(&scores, &m);
    let probs = g.op("Softmax", &[&scores], vec![("axis", Attr::Int(-1))]);
    let probs = g.reshape(&probs, &[1, kvh, grp * t, c + t]);
    let o = g.matmul(&probs, &vals); // [1, kvh, grp * t, hd]
    let o = g.reshape(&o, &[1, h, t, hd]);
    let o = g.transpose(&o, &[0, 2, 1, 3]); // [1, t, h, hd]
    let o = match &attn.g_proj {
        // LFM3: each head's output times sigmoid(g_proj(x)).
        Some(gate) => {
            let z = linear(g, x, gate, &format!("{key}.g_proj"));
            let z = g.op("Sigmoid", &[&z], vec![]);
            let z = g.reshape(&z, &[1, t, h, 1]);
            g.mul(&o, &z)
        }
        None => o,
    };
    let o = g.reshape(&o, &[1, t, h * hd]);
    linear(g, &o, &attn.out_proj, &format!("{key}.out_proj"))
}

/// One step of `t` positions of `lm` over a cache of `context` positions. `prefix` is the
/// language model's key prefix in its checkpoint (`""` for LFM2, `"language."` in a VLM),
/// so initializers carry checkpoint keys.
pub fn step_graph(
    lm: &Lfm2ForCausalLM,
    name: &str,
    t: usize,
    context: usize,
    prefix: &str,
    build: &Build,
) -> Result<Graph> {
    let c = &lm.config;
    if t == 0 || t > context {
        bail!("{name}: {t} positions per step over a context of {context}");
    }
    if context > c.max_position_embeddings {
        bail!("context {context} is over the model's max_position_embeddings {}", c.max_position_embeddings);
    }
    let (d, v) = (c.hidden_size, c.vocab_size);
    let step = Step { t };
    let mut g = Graph::with(name, build);
    let embeds = g.input("inputs_embeds", DType::Float32, &[1, t, d]);
    let positions = g.input("position_ids", DType::Int64, &[1, t]);
    let mask = g.input("attention_mask", DType::Float32, &[1, 1, t, context + t]);
    let device = lm.device();
    // RoPE rows for this step's positions, gathered from a kind's `[context, head_dim]` tables.
    let rope_rows = |g: &mut Graph, kind: LayerKind, prefix: &str| {
        let (cos, sin) = Rope::from_spec(c.head_dim, &c.rope_for(kind)).tables(0, context, &device);
        let axis1 = g.ints(&[1]);
        let mut rows = [cos, sin].into_iter().zip(["cos", "sin"]).map(|(table, which)| {
            let table = g.weight(&format!("{prefix}.{which}"), &[context, c.head_dim], &values(table));
            let row = g.op("Gather", &[&table, &positions], vec![("axis", Attr::Int(0))]); // [1, t, hd]
            g.op("Unsqueeze", &[&row, &axis1], vec![])
        });
        (rows.next().expect("cos"), rows.next().expect("sin"))
    };
    let (cos, sin) = rope_rows(&mut g, LayerKind::Attention, "rope");
    let full = AttentionInputs { cache: context, cos, sin, mask, layout: KvLayout::Plain };
    let sliding = match (c.layer_types.contains(&LayerKind::SlidingAttention), c.sliding_window()) {
        (true, Some(w)) => {
            let (cos, sin) = rope_rows(&mut g, LayerKind::SlidingAttention, "rope.sliding");
            let mask = g.input("sliding_attention_mask", DType::Float32, &[1, 1, t, w + t]);
            Some(AttentionInputs { cache: w, cos, sin, mask, layout: KvLayout::Plain })
        }
        _ => None,
    };
    let mut h = embeds;
    for i in 0..lm.model.layers.len() {
        h = decoder_layer(&mut g, lm, i, &h, &step, Some(&full), sliding.as_ref(), prefix)?;
    }
    let logits = head(&mut g, lm, &h, t, prefix);
    g.output(&logits, "logits", DType::Float32, &[1, t, v]);
    Ok(g)
}

fn embedding_table(g: &mut Graph, lm: &Lfm2ForCausalLM, prefix: &str) -> String {
    let c = &lm.config;
    let table = values(lm.model.embed_tokens.weight.val());
    qdq::weight(g, &format!("{prefix}model.embed_tokens.weight"), &[c.vocab_size, c.hidden_size], &table, Layout::Torch)
}

/// `input_ids [1, t]` (a graph input) -> the token embeddings `[1, t, hidden]`. A quantized
/// table is stored already on its weight grid, as float values, in every form: AIMET and
/// QNN take a Gather's table as an activation (one per-tensor encoding at the activation
/// bit-width, which [`crate::calibrate`] adds), never as a weight.
pub(crate) fn embeddings(g: &mut Graph, lm: &Lfm2ForCausalLM, t: usize, prefix: &str) -> String {
    let c = &lm.config;
    let ids = g.input("input_ids", DType::Int64, &[1, t]);
    let key = format!("{prefix}model.embed_tokens.weight");
    let mut table = values(lm.model.embed_tokens.weight.val());
    if let Some(enc) = g.quantization.as_ref().and_then(|q| q.weights.get(&key)) {
        table = enc.fake_quant(&table);
    }
    let table = g.weight(&key, &[c.vocab_size, c.hidden_size], &table);
    g.op("Gather", &[&table, &ids], vec![("axis", Attr::Int(0))])
}

/// `input_ids [1, t]` -> `inputs_embeds [1, t, hidden]`: the token embeddings the host
/// splices image features into before `prefill`.
pub fn embed_graph(lm: &Lfm2ForCausalLM, t: usize, prefix: &str, build: &Build) -> Graph {
    let mut g = Graph::with("embed_tokens", build);
    let e = embeddings(&mut g, lm, t, prefix);
    g.output(&e, "inputs_embeds", DType::Float32, &[1, t, lm.config.hidden_size]);
    g
}

/// Decoder layer `i` of `lm` on the hidden states `h` `[1, t, hidden]`: its mixer (a short
/// convolution, or attention reading `full` or `sliding`), the feed-forward block and both
/// residuals, with LFM3's sandwich norms where the layer has them.
#[allow(clippy::too_many_arguments)]
pub(crate) fn decoder_layer(
    g: &mut Graph,
    lm: &Lfm2ForCausalLM,
    i: usize,
    h: &str,
    step: &Step,
    full: Option<&AttentionInputs>,
    sliding: Option<&AttentionInputs>,
    prefix: &str,
) -> Result<String> {
    let c = &lm.config;
    let d = c.hidden_size;
    let layer = &lm.model.layers[i];
    let key = format!("{prefix}model.layers.{i}");
    let w = g.weight(&format!("{key}.operator_norm.weight"), &[d], &values(layer.operator_norm().weight.val()));
    let normed = g.rms_norm(h, &w, c.norm_eps);
    let mixed = match layer.mixer() {
        Mixer::Conv(conv) => short_conv(g, &normed, conv, &format!("{key}.conv"), i, step, d),
        Mixer::Attention(attn) => {
            let kind = match c.layer_types[i] {
                LayerKind::SlidingAttention => sliding.expect("sliding inputs"),
                _ => full.expect("full attention inputs"),
            };
            attention(g, &normed, attn, &format!("{key}.self_attn"), i, step, kind, c.norm_eps)
        }
    };
    let (post_op, post_ffn) = layer.post_norms();
    let norm_after = |g: &mut Graph, y: String, norm: Option<&autoneural_model::nn::RmsNorm>, name: &str| match norm {
        Some(n) => {
            let w = g.weight(&format!("{key}.{name}.weight"), &[d], &values(n.weight.val()));
            g.rms_norm(&y, &w, c.norm_eps)
        }
        None => y,
    };
    let mixed = norm_after(g, mixed, post_op, "post_operator_norm");
    let h1 = g.add(h, &mixed);
    let w = g.weight(&format!("{key}.ffn_norm.weight"), &[d], &values(layer.ffn_norm().weight.val()));
    let normed = g.rms_norm(&h1, &w, c.norm_eps);
    let Some(mlp) = layer.feed_forward().dense() else {
        bail!("{key}: LFM2-MoE's routed experts have no ONNX export yet (dense LFM2 models export)");
    };
    let gate = linear(g, &normed, &mlp.w1, &format!("{key}.feed_forward.w1"));
    let gate = g.silu(&gate);
    let up = linear(g, &normed, &mlp.w3, &format!("{key}.feed_forward.w3"));
    let inner = g.mul(&gate, &up);
    let down = linear(g, &inner, &mlp.w2, &format!("{key}.feed_forward.w2"));
    let down = norm_after(g, down, post_ffn, "post_ffn_norm");
    Ok(g.add(&h1, &down))
}

/// The final norm and the LM head on `h` `[1, t, hidden]` -> logits `[1, t, vocab]` (a tied
/// head reads the embedding table as it is stored, `[vocab, hidden]`).
pub(crate) fn head(g: &mut Graph, lm: &Lfm2ForCausalLM, h: &str, t: usize, prefix: &str) -> String {
    let c = &lm.config;
    let (d, v) = (c.hidden_size, c.vocab_size);
    let w =
        g.weight(&format!("{prefix}model.embedding_norm.weight"), &[d], &values(lm.model.embedding_norm.weight.val()));
    let h = g.rms_norm(h, &w, c.norm_eps);
    match &lm.lm_head {
        Some(head) => linear(g, &h, head, &format!("{prefix}lm_head")),
        None => {
            let table = embedding_table(g, lm, prefix);
            let rows = g.reshape(&h, &[t as i64, d as i64]);
            let rows = qdq::activation(g, &format!("{prefix}model.embed_tokens.weight"), &rows);
            let y = g.op("Gemm", &[&rows, &table], vec![("transB", Attr::Int(1))]);
            g.reshape(&y, &[1, t as i64, v as i64])
        }
    }
}

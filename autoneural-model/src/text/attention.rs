//! LFM2 grouped-query attention: per-head RMSNorm on q and k before rotate-half RoPE,
//! no biases, scale `1/sqrt(head_dim)`, causal. LFM3's is the same with its own key names
//! (`o_proj`, `q_norm`, `k_norm`: see the checkpoint's key map), optionally a sigmoid gate
//! per head on the output (`g_proj`), and for sliding layers a window in the mask
//! ([`sliding_hidden_keys`]) and a ring for a cache.

use burn::module::Module;
use burn::tensor::activation::softmax;
use burn::tensor::{Bool, Device, Tensor, TensorData};

use crate::nn::{Linear, LinearConfig, RmsNorm, RmsNormConfig};
use crate::quant::kv::at_cache_input;
use crate::text::rope::Rope;
use crate::text::state::{KvCache, ring_key_slots};

/// Keys: `self_attn.{q_proj,k_proj,v_proj,out_proj}.weight`, `self_attn.{q,k}_layernorm.weight`
/// (LFM3: `o_proj`, `q_norm`, `k_norm`, and `g_proj` published as `gate_proj`).
#[derive(Module, Debug)]
pub struct Attention {
    pub q_proj: Linear,
    pub k_proj: Linear,
    pub v_proj: Linear,
    pub out_proj: Linear,
    pub q_layernorm: RmsNorm,
    pub k_layernorm: RmsNorm,
    /// LFM3's output gate `[hidden -> heads]`: each head's output times
    /// `sigmoid(g_proj(x))`, `x` the layer's (normalised) input.
    pub g_proj: Option<Linear>,
    pub num_heads: usize,
    pub num_kv_heads: usize,
    pub head_dim: usize,
}

/// An [`Attention`] of `heads` query heads sharing `kv_heads` key/value heads.
#[derive(Debug, Clone, Copy)]
pub struct AttentionConfig {
    pub hidden: usize,
    pub heads: usize,
    pub kv_heads: usize,
    pub head_dim: usize,
    /// The q/k norms' epsilon.
    pub eps: f64,
    /// LFM3's sigmoid output gate per head.
    pub gate: bool,
    /// Biases on q, k, v and the output projection (LFM3's `attention_bias`).
    pub bias: bool,
}

impl AttentionConfig {
    pub fn init(&self, device: &Device) -> Attention {
        let &Self { hidden, heads, kv_heads, head_dim, eps, gate, bias } = self;
        let lin = |i, o| LinearConfig::new(i, o).with_bias(bias).init(device);
        Attention {
            q_proj: lin(hidden, heads * head_dim),
            k_proj: lin(hidden, kv_heads * head_dim),
            v_proj: lin(hidden, kv_heads * head_dim),
            out_proj: lin(heads * head_dim, hidden),
            q_layernorm: RmsNormConfig::new(head_dim, eps).init(device),
            k_layernorm: RmsNormConfig::new(head_dim, eps).init(device),
            g_proj: gate.then(|| LinearConfig::new(hidden, heads).with_bias(false).init(device)),
            num_heads: heads,
            num_kv_heads: kv_heads,
            head_dim,
        }
    }
}

impl Attention {
    /// `x: [b, t, hidden]` at slots `start..start + t` -> `[b, t, hidden]`.
    /// With a cache, keys and values are appended and queries attend to all of it.
    /// `hidden` is [`hidden_keys`]' mask for this step, built once for all the layers.
    pub fn forward(
        &self,
        x: Tensor<3>,
        rope: (&Tensor<4>, &Tensor<4>),
        start: usize,
        cache: Option<&mut KvCache>,
        hidden: Option<&Tensor<3, Bool>>,
    ) -> Tensor<3> {
        let [b, t, _] = x.dims();
        let (h, kvh, hd) = (self.num_heads, self.num_kv_heads, self.head_dim);
        let heads = |y: Tensor<3>, n: usize| y.reshape([b, t, n, hd]);
        let q = self.q_layernorm.forward(heads(self.q_proj.forward(x.clone()), h)).swap_dims(1, 2);
        let k = self.k_layernorm.forward(heads(self.k_proj.forward(x.clone()), kvh)).swap_dims(1, 2);
        let gate = self.g_proj.as_ref().map(|g| burn::tensor::activation::sigmoid(g.forward(x.clone()))); // [b, t, h]
        let v = heads(self.v_proj.forward(x), kvh).swap_dims(1, 2);
        let q = Rope::apply(q, rope.0, rope.1);
        // What the cache holds (an NPU's past_key / past_value state), quantized at the
        // policy's KV-cache bits when a quantization context says so.
        let k = at_cache_input(self.k_proj.weight.id, Rope::apply(k, rope.0, rope.1));
        let v = at_cache_input(self.v_proj.weight.id, v);
        let ring = cache.as_ref().is_some_and(|c| c.window().is_some());
        let (k, v) = match cache {
            Some(c) => c.append(k, v),
            None => (k, v),
        };
        let s = k.dims()[2]; // keys visible: everything cached, or this chunk
        let past = s - t; // == start when a (full) cache is used from position 0
        debug_assert!(ring || cache_consistent(start, past));
        debug_assert!(
            hidden.is_none_or(|m| m.dims()[1..] == [t, s]),
            "the step's mask is for {t} queries over {s} keys"
        );
        // Query heads that share a kv head are stacked on the row axis, so K and V are
        // multiplied as they are, never repeated per head: [b, kvh, g*t, hd].
        let g = h / kvh;
        let q = q.reshape([b, kvh, g * t, hd]);
        let scores = q.matmul(k.swap_dims(2, 3)) * (1.0 / (hd as f64).sqrt()); // [b, kvh, g*t, s]
        let scores = match hidden {
            Some(mask) => {
                let rows = mask.dims()[0];
                let scores = scores.reshape([b, kvh, g, t, s]);
                scores
                    .mask_fill(mask.clone().reshape([rows, 1, 1, t, s]).expand([b, kvh, g, t, s]), f32::NEG_INFINITY)
                    .reshape([b, kvh, g * t, s])
            }
            None => scores,
        };
        let probs = softmax(scores, 3);
        let out = probs.matmul(v).reshape([b, h, t, hd]).swap_dims(1, 2); // [b, t, h, hd]
        let out = match gate {
            Some(g) => out * g.reshape([b, t, h, 1]),
            None => out,
        };
        self.out_proj.forward(out.reshape([b, t, h * hd]))
    }
}

fn cache_consistent(start: usize, past: usize) -> bool {
    past == 0 || past == start
}

/// `mask[r, i, j]` is true where query `i` (slot `past + i`) of row `r` must not see key
/// `j`: a later key, or a pad key seen from a real query (`pads[r]` pad slots lead row `r`,
/// in a batch of prompts of different lengths; a pad query, whose value rows are zero, sees
/// only pads, so pad slots stay zero). `[1, t, s]` without pads; `None` when nothing is
/// hidden (one query, no pads).
pub fn hidden_keys(
    b: usize,
    t: usize,
    s: usize,
    past: usize,
    pads: &[usize],
    device: &Device,
) -> Option<Tensor<3, Bool>> {
    let padded = pads.iter().any(|&p| p > 0);
    if t == 1 && !padded {
        return None;
    }
    debug_assert!(!padded || pads.len() == b, "a pad count per row");
    Some(key_mask(t, past, 0..s, None, pads, device))
}

/// [`hidden_keys`] for a sliding attention layer of window `w`: query slot `q` sees key slot
/// `k` when `q - w < k <= q` (transformers' sliding-window mask: the window counts the
/// query itself), and pads as [`hidden_keys`] says. The keys are the chunk's own without a
/// cache, or what the ring returns with one ([`ring_key_slots`]). `None` when nothing is
/// hidden (a decode step without pads: the ring holds exactly the window).
pub fn sliding_hidden_keys(
    t: usize,
    start: usize,
    w: usize,
    cached: bool,
    pads: &[usize],
    device: &Device,
) -> Option<Tensor<3, Bool>> {
    let padded = pads.iter().any(|&p| p > 0);
    if t == 1 && cached && !padded {
        return None;
    }
    let keys: Vec<usize> = if cached { ring_key_slots(start, t, w) } else { (start..start + t).collect() };
    Some(key_mask(t, start, keys.into_iter(), Some(w), pads, device))
}

/// The mask of queries at slots `start..start + t` over keys at slots `keys` (in the order
/// the keys are attended): hidden when later than the query, outside its `window`, or a
/// pad key seen from a real query. One row per padded sequence, or one for all.
fn key_mask(
    t: usize,
    start: usize,
    keys: impl Iterator<Item = usize> + Clone,
    window: Option<usize>,
    pads: &[usize],
    device: &Device,
) -> Tensor<3, Bool> {
    let padded = pads.iter().any(|&p| p > 0);
    let rows = if padded { pads.len() } else { 1 };
    let s = keys.clone().count();
    let mut data = Vec::with_capacity(rows * t * s);
    for r in 0..rows {
        let pad = if padded { pads[r] } else { 0 };
        for i in 0..t {
            let q = start + i;
            let real = q >= pad;
            data.extend(keys.clone().map(|k| k > q || window.is_some_and(|w| q - k >= w) || (real && k < pad)));
        }
    }
    Tensor::from_data(TensorData::new(data, [rows, t, s]), device)
}

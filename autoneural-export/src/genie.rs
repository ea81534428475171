//! The Genie / AI Hub LLM layout: the language model as Qualcomm's LLM runtimes take it
//! (`export --layout genie`).
//!
//! - **Parts** under a size limit (`--part-max-mb`), chained by the host: part 0 is the
//!   embedding (`input_ids` -> `hidden_states_out`), then parts of consecutive decoder
//!   layers (`hidden_states_in` -> `hidden_states_out`), the last the final norm and the LM
//!   head (`hidden_states_in` -> `logits`).
//! - **Two graphs per part, one set of weights**: AR-N (`prefill_len` positions) and AR-1
//!   over a fixed context; both read their weights from the part's one external data file
//!   (`part<k>.data`), as QNN shares weights between the AR graphs of a context binary.
//! - **The cache as Genie keeps it**: an AR-T graph over a context of C takes the past
//!   `C - T` positions, keys transposed (`past_key_L` `[1, kv_heads, head_dim, C - T]`,
//!   `past_value_L` `[1, kv_heads, C - T, head_dim]`), and returns only the step's new
//!   entries (`present_key_L` `[1, kv_heads, head_dim, T]`, `present_value_L` `[1,
//!   kv_heads, T, head_dim]`); the hybrid's conv layers take and return their state
//!   (`conv_state_L` / `new_conv_state_L` `[1, kernel - 1, hidden]`), the state QAIRT's
//!   HybridLLM generator carries beside the KV cache.
//! - **Host-side positions**: RoPE's `position_ids_cos` / `position_ids_sin` `[1, 1, T,
//!   head_dim / 2]` are inputs (rows of `rope.safetensors`), and `attention_mask` `[1, 1, T,
//!   C]` is additive with a finite hidden value ([`crate::lm::MASK_HIDDEN`]).
//! - Linear layers as 1x1 Conv, as the HTP prefers.
//!
//! - **LFM3's sliding layers** keep the default layout's ring of `window` slots, keys
//!   transposed (`past_key_L` `[1, kv_heads, head_dim, window]`), with their own
//!   `sliding_attention_mask` `[1, 1, T, window + T]` and RoPE rows
//!   (`position_ids_cos_sliding` / `position_ids_sin_sliding`).
//!
//! A quantized checkpoint gets AIMET encodings per graph, on the float graphs, as in the
//! default layout.

use std::collections::BTreeMap;
use std::ops::Range;
use std::path::Path;

use anyhow::{Context, Result, bail};
use autoneural_model::text::rope::Rope;
use autoneural_model::text::{LayerKind, Lfm2ForCausalLM};
use burn::module::Module;
use safetensors::{Dtype, tensor::TensorView};
use serde::Serialize;

use crate::export::{
    ExportOptions, GraphEntry, Manifest, float_entry, language_reference, state_entries, write_manifest,
};
use crate::graph::{Build, DType, Graph, values, write_models_sharing};
use crate::lm::{AttentionInputs, KvLayout, MASK_HIDDEN, MASK_VISIBLE, Step, decoder_layer, embeddings, head};
use crate::qdq::Form;

/// RoPE rows the host feeds: `cos` and `sin` `[context, head_dim / 2]`.
pub const ROPE: &str = "rope.safetensors";

#[derive(Debug, Clone)]
pub struct GenieOptions {
    /// Largest part: its shared weights and its larger graph, in bytes.
    pub part_max_bytes: u64,
}

/// What a part holds.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Holds {
    Embedding,
    Layers(Range<usize>),
    Head,
}

#[derive(Debug, Serialize)]
pub struct PartEntry {
    pub index: usize,
    /// `embedding`, `layers` or `head`.
    pub kind: &'static str,
    /// The decoder layers `[first, last + 1)` of a `layers` part.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub layers: Option<[usize; 2]>,
    /// The weights both graphs read (ONNX external data).
    pub data: String,
    /// The part's size: its weights and its larger graph file.
    pub bytes: u64,
    /// `ar<T>` -> the graph of `T` positions per call.
    pub graphs: BTreeMap<String, GraphEntry>,
}

#[derive(Debug, Serialize)]
pub struct GenieEntry {
    /// Positions per call of each graph of a part, largest first (`prefill_len`, 1).
    pub ar: Vec<usize>,
    pub part_max_bytes: u64,
    pub rope: &'static str,
    pub head_dim: usize,
    pub parts: Vec<PartEntry>,
    /// How to drive the parts, step by step.
    #[serde(rename = "loop")]
    pub loop_: Vec<&'static str>,
}

const LOOP: [&str; 8] = [
    "state: per conv layer conv_state_L zeros [1, kernel - 1, hidden]; per attention layer a key cache [1, kv_heads, head_dim, context] and a value cache [1, kv_heads, context, head_dim], zeros; position = 0",
    "a call of T positions (T in ar): part 0 on input_ids [1, T]; each next part on the previous part's hidden_states_out as hidden_states_in; the last part gives logits [1, T, vocab]. A VLM host puts image features into part 0's output at the image-token positions",
    "each layers part also takes: attention_mask [1, 1, T, context], visible at column j < context - T when j < position and at column context - T + k when k <= i, hidden elsewhere; position_ids_cos / position_ids_sin [1, 1, T, head_dim / 2], rows position .. position + T of rope.safetensors; past_key_L = key cache [..., :context - T], past_value_L = value cache [:, :, :context - T]; conv_state_L",
    "after each call: key cache [..., position : position + T] <- present_key_L; value cache [:, :, position : position + T] <- present_value_L; conv_state_L <- new_conv_state_L; position += T",
    "prompt: the largest AR graph on each full chunk, then AR-1 on each remaining position (position + T must stay within context - T + T)",
    "next token: argmax (or a sampler) over the last position's logits, then AR-1",
    "stop at an eos_token_id, or when position reaches context",
    "LFM3 sliding layers (state kind sliding_attention): key ring [1, kv_heads, head_dim, sliding_window] and value ring [1, kv_heads, sliding_window, head_dim], passed whole as past_key_L / past_value_L, position p in slot p % sliding_window; after each call write the last min(T, sliding_window) present columns / rows into their slots; sliding_attention_mask [1, 1, T, sliding_window + T] as the default layout's; position_ids_cos_sliding / position_ids_sin_sliding are rows of cos_sliding / sin_sliding",
];

/// f32 bytes of the weights a part holds.
fn weight_bytes(lm: &Lfm2ForCausalLM, holds: &Holds) -> u64 {
    let table = (lm.config.vocab_size * lm.config.hidden_size * 4) as u64;
    match holds {
        Holds::Embedding => table,
        Holds::Layers(r) => r.clone().map(|i| lm.model.layers[i].num_params() as u64 * 4).sum(),
        Holds::Head => {
            let norm = lm.model.embedding_norm.num_params() as u64 * 4;
            norm + lm.lm_head.as_ref().map_or(table, |h| h.num_params() as u64 * 4)
        }
    }
}

/// The embedding, then consecutive layers while they fit under `limit`, then the head.
fn plan(lm: &Lfm2ForCausalLM, limit: u64) -> Result<Vec<Holds>> {
    let mut parts = vec![Holds::Embedding];
    let mut start = 0;
    let n = lm.model.layers.len();
    while start < n {
        let mut end = start;
        while end < n && weight_bytes(lm, &Holds::Layers(start..end + 1)) <= limit {
            end += 1;
        }
        if end == start {
            let one = weight_bytes(lm, &Holds::Layers(start..start + 1));
            bail!("decoder layer {start} alone is {one} bytes, over --part-max-mb ({limit} bytes)");
        }
        parts.push(Holds::Layers(start..end));
        start = end;
    }
    parts.push(Holds::Head);
    for p in [&parts[0], &parts[parts.len() - 1]] {
        let bytes = weight_bytes(lm, p);
        if bytes > limit {
            bail!("the {p:?} part is {bytes} bytes of weights, over --part-max-mb ({limit} bytes)");
        }
    }
    Ok(parts)
}

/// The graph of part `holds` for `t` positions per call over `context`.
fn part_graph(
    lm: &Lfm2ForCausalLM,
    prefix: &str,
    holds: &Holds,
    t: usize,
    context: usize,
    name: &str,
    build: &Build,
) -> Result<Graph> {
    let c = &lm.config;
    let d = c.hidden_size;
    let mut g = Graph::with(name, build);
    match holds {
        Holds::Embedding => {
            let e = embeddings(&mut g, lm, t, prefix);
            g.output(&e, "hidden_states_out", DType::Float32, &[1, t, d]);
        }
        Holds::Layers(range) => {
            let mut h = g.input("hidden_states_in", DType::Float32, &[1, t, d]);
            let has = |kind: LayerKind| range.clone().any(|i| c.layer_types[i] == kind);
            let half = [1, 1, t, c.head_dim / 2];
            // The inputs of one kind of attention layer, when this part holds one.
            let mut inputs = |kind: LayerKind, suffix: &str, mask: &str, mask_len: usize, cache: usize| {
                has(kind).then(|| {
                    let mask = g.input(mask, DType::Float32, &[1, 1, t, mask_len]);
                    // Half rows in, repeated over the head once per part for the layers' RoPE.
                    let [cos, sin] = ["cos", "sin"].map(|which| {
                        let half_rows = g.input(&format!("position_ids_{which}{suffix}"), DType::Float32, &half);
                        g.concat(&[&half_rows, &half_rows], 3)
                    });
                    AttentionInputs { cache, cos, sin, mask, layout: KvLayout::Genie }
                })
            };
            let full = inputs(LayerKind::Attention, "", "attention_mask", context, context - t);
            // LFM3's sliding layers: a ring of `window` slots, as in the default layout.
            let sliding = c
                .sliding_window()
                .and_then(|w| inputs(LayerKind::SlidingAttention, "_sliding", "sliding_attention_mask", w + t, w));
            for i in range.clone() {
                h = decoder_layer(&mut g, lm, i, &h, &Step { t }, full.as_ref(), sliding.as_ref(), prefix)?;
            }
            g.output(&h, "hidden_states_out", DType::Float32, &[1, t, d]);
        }
        Holds::Head => {
            let h = g.input("hidden_states_in", DType::Float32, &[1, t, d]);
            let logits = head(&mut g, lm, &h, t, prefix);
            g.output(&logits, "logits", DType::Float32, &[1, t, c.vocab_size]);
        }
    }
    Ok(g)
}

/// RoPE's tables of one kind of attention layer as half rows `[context, head_dim / 2]`: the
/// two halves of a row are equal (LFM3's proportional RoPE gives its unrotated pairs
/// frequency 0, which stays so), and the layout feeds one.
fn rope_rows(lm: &Lfm2ForCausalLM, kind: LayerKind, context: usize) -> Result<(Vec<f32>, Vec<f32>)> {
    let c = &lm.config;
    let (hd, half) = (c.head_dim, c.head_dim / 2);
    let (cos, sin) = Rope::from_spec(hd, &c.rope_for(kind)).tables(0, context, &lm.device());
    let (cos, sin) = (values(cos), values(sin));
    let halves = |t: &[f32]| -> Option<Vec<f32>> {
        let rows: Vec<&[f32]> = t.chunks(hd).collect();
        rows.iter().all(|r| r[..half] == r[half..]).then(|| rows.iter().flat_map(|r| r[..half].to_vec()).collect())
    };
    match (halves(&cos), halves(&sin)) {
        (Some(c), Some(s)) => Ok((c, s)),
        _ => bail!(
            "this model's RoPE rows do not repeat over the two halves of a head: the Genie layout feeds half rows"
        ),
    }
}

/// Writes the language model in the Genie layout into `out` (see the module docs).
pub fn export_genie(
    lm: &Lfm2ForCausalLM,
    prefix: &str,
    out: &Path,
    opts: &ExportOptions,
    genie: &GenieOptions,
) -> Result<Manifest> {
    let c = &lm.config;
    let context = opts.context;
    if opts.prefill_len >= context {
        bail!(
            "--prefill-len {} must be below --context {context} in the Genie layout (each call reads context - T past positions)",
            opts.prefill_len
        );
    }
    if context > c.max_position_embeddings {
        bail!("context {context} is over the model's max_position_embeddings {}", c.max_position_embeddings);
    }
    let sliding = c.sliding_window().filter(|_| c.layer_types.contains(&LayerKind::SlidingAttention));
    let mut rope = vec![("", rope_rows(lm, LayerKind::Attention, context)?)];
    if sliding.is_some() {
        rope.push(("_sliding", rope_rows(lm, LayerKind::SlidingAttention, context)?));
    }
    let parts = plan(lm, genie.part_max_bytes)?;
    let ar: Vec<usize> = if opts.prefill_len > 1 { vec![opts.prefill_len, 1] } else { vec![1] };
    // Linear layers as 1x1 Conv; float graphs, with AIMET encodings for a quantized checkpoint.
    let form = opts.quantization.as_ref().map(|_| Form::Encodings);
    let build = Build { linear_as_conv: true, ..opts.build(form)? };
    let mut entries = Vec::new();
    for (index, holds) in parts.iter().enumerate() {
        let data = format!("part{index}.data");
        let mut models = Vec::new();
        let mut graphs = BTreeMap::new();
        for &t in &ar {
            let name = format!("part{index}_ar{t}");
            let mut g = part_graph(lm, prefix, holds, t, context, &name, &build)?;
            // The parts are not calibrated whole; an embedding table keeps an encoding (the
            // activation AIMET and QNN take it for).
            g.hoist_activations();
            if let Some(file) = &opts.quantization {
                crate::calibrate::gather_tables(&mut g, crate::calibrate::activation_bits(&file.activations))?;
            }
            let entry = float_entry(out, &name, &mut g, opts)?;
            let doc =
                format!("LFM2 part {index} ({holds:?}), {t} positions per call over a {context}-position context");
            models.push((g.into_model(&doc), out.join(&entry.file)));
            graphs.insert(format!("ar{t}"), entry);
        }
        let shared = write_models_sharing(models, &out.join(&data))?;
        let largest = graphs
            .values()
            .map(|e| std::fs::metadata(out.join(&e.file)).map(|m| m.len()))
            .collect::<std::io::Result<Vec<u64>>>()?
            .into_iter()
            .max()
            .unwrap_or(0);
        let bytes = shared + largest;
        if bytes > genie.part_max_bytes {
            bail!("part {index} is {bytes} bytes, over --part-max-mb ({} bytes)", genie.part_max_bytes);
        }
        let (kind, layers) = match holds {
            Holds::Embedding => ("embedding", None),
            Holds::Layers(r) => ("layers", Some([r.start, r.end])),
            Holds::Head => ("head", None),
        };
        entries.push(PartEntry { index, kind, layers, data, bytes, graphs });
    }
    write_rope(out, &rope, context, c.head_dim / 2)?;
    let state = state_entries(lm, context, KvLayout::Genie);
    let manifest = Manifest {
        format: crate::export::FORMAT,
        vision: None,
        prefill_len: opts.prefill_len,
        context,
        linear_as_conv: true,
        encodings_version: opts.quantization.as_ref().map(|_| opts.encodings_version),
        hidden_size: c.hidden_size,
        vocab_size: c.vocab_size,
        eos_token_ids: c.eos_token_ids.clone(),
        graphs: BTreeMap::new(),
        state,
        attention_mask: BTreeMap::from([("visible", MASK_VISIBLE), ("hidden", MASK_HIDDEN)]),
        sliding_window: sliding,
        loop_: Vec::new(),
        genie: Some(GenieEntry {
            ar,
            part_max_bytes: genie.part_max_bytes,
            rope: ROPE,
            head_dim: c.head_dim,
            parts: entries,
            loop_: LOOP.to_vec(),
        }),
    };
    language_reference(lm, out, opts)?;
    write_manifest(&manifest, out)?;
    Ok(manifest)
}

/// `rope.safetensors`: `cos` / `sin` (full attention) and `cos_sliding` / `sin_sliding`
/// (LFM3's sliding layers), each `[context, head_dim / 2]`.
fn write_rope(out: &Path, tables: &[(&str, (Vec<f32>, Vec<f32>))], context: usize, half: usize) -> Result<()> {
    let bytes = |v: &[f32]| v.iter().flat_map(|x| x.to_le_bytes()).collect::<Vec<u8>>();
    let data: Vec<(String, Vec<u8>)> = tables
        .iter()
        .flat_map(|(suffix, (cos, sin))| [(format!("cos{suffix}"), bytes(cos)), (format!("sin{suffix}"), bytes(sin))])
        .collect();
    let views = data
        .iter()
        .map(|(name, b)| Ok((name.clone(), TensorView::new(Dtype::F32, vec![context, half], b)?)))
        .collect::<Result<Vec<_>>>()?;
    safetensors::serialize_to_file(views, None, &out.join(ROPE))
        .with_context(|| format!("writing {}", out.join(ROPE).display()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use autoneural_model::text::Lfm2Config;
    use burn::tensor::Device;

    #[test]
    fn parts_are_the_embedding_layers_under_the_limit_and_the_head() {
        let device = Device::flex();
        let lm = Lfm2Config::preset("lfm2-nano").unwrap().init(&device);
        let layer = weight_bytes(&lm, &Holds::Layers(0..1));
        let table = weight_bytes(&lm, &Holds::Embedding);
        let limit = (2 * layer + layer / 2).max(table);
        let parts = plan(&lm, limit).unwrap();
        assert_eq!(parts.first(), Some(&Holds::Embedding));
        assert_eq!(parts.last(), Some(&Holds::Head));
        let layers: Vec<usize> =
            parts.iter().filter_map(|p| if let Holds::Layers(r) = p { Some(r.len()) } else { None }).collect();
        assert_eq!(layers.iter().sum::<usize>(), lm.model.layers.len());
        assert!(parts.iter().all(|p| weight_bytes(&lm, p) <= limit));
        let err = plan(&lm, layer / 2).unwrap_err().to_string();
        assert!(err.contains("over --part-max-mb"), "{err}");
    }
}

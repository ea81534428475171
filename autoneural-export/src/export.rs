//! `autoneural export`: a checkpoint's language model as `embed_tokens.onnx`,
//! `prefill.onnx` and `decode.onnx` with `manifest.json` (every graph's inputs and outputs,
//! the state contract and the loop that drives them), and optionally
//! `reference.safetensors`: a greedy generation by the Burn model that
//! `scripts/verify_onnx.py` replays through onnxruntime.

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::{Context, Result, bail};
use autoneural_model::text::model::ids_tensor;
use autoneural_model::text::{LayerKind, Lfm2ForCausalLM, Logits};
use safetensors::tensor::{Dtype, TensorView};
use serde::Serialize;

use crate::graph::{Graph, Port, write_model};
use crate::lm::{MASK_HIDDEN, MASK_VISIBLE, embed_graph, state_names, step_graph};

pub const MANIFEST: &str = "manifest.json";
pub const REFERENCE: &str = "reference.safetensors";
pub const FORMAT: &str = "autoneural-onnx/1";

#[derive(Debug, Clone)]
pub struct ExportOptions {
    /// Positions per `prefill` call.
    pub prefill_len: usize,
    /// Cache slots (the longest sequence the graphs serve).
    pub context: usize,
    /// New tokens of the reference generation (0: no `reference.safetensors`).
    pub reference_tokens: usize,
}

#[derive(Debug, Serialize)]
pub struct GraphEntry {
    pub file: String,
    pub inputs: Vec<Port>,
    pub outputs: Vec<Port>,
}

#[derive(Debug, Serialize)]
pub struct StateEntry {
    pub layer: usize,
    pub kind: &'static str,
    pub inputs: Vec<String>,
    pub outputs: Vec<String>,
    /// Shape of each input (the conv window, or the whole cache of one of K and V).
    pub shape: Vec<usize>,
}

#[derive(Debug, Serialize)]
pub struct Manifest {
    pub format: &'static str,
    pub prefill_len: usize,
    pub context: usize,
    pub hidden_size: usize,
    pub vocab_size: usize,
    pub eos_token_ids: Vec<u32>,
    pub graphs: BTreeMap<String, GraphEntry>,
    pub state: Vec<StateEntry>,
    pub attention_mask: BTreeMap<&'static str, f32>,
    /// How to drive the graphs, step by step.
    pub loop_: Vec<&'static str>,
}

const LOOP: [&str; 7] = [
    "embeddings: embed_tokens.onnx per token id (input_ids [1, 1]); a VLM host puts image features at the image-token positions",
    "state: conv_state_L zeros [1, kernel - 1, hidden]; past_key_L / past_value_L zeros [1, kv_heads, context, head_dim]; position = 0",
    "prompt: prefill.onnx on each full chunk of prefill_len embeddings, then decode.onnx on each remaining position",
    "each call: position_ids = position .. position + T; attention_mask[0, 0, i, j] = visible when (j < context and j < position) or (j >= context and j - context <= i), hidden otherwise",
    "after each call: conv_state_L <- new_conv_state_L; write present_key_L / present_value_L into cache slots position .. position + T; position += T",
    "next token: argmax (or a sampler) over the last position's logits; its embedding goes to decode.onnx",
    "stop at an eos_token_id, or when position reaches context",
];

fn entry(file: &str, g: &Graph) -> GraphEntry {
    GraphEntry { file: file.into(), inputs: g.input_ports.clone(), outputs: g.output_ports.clone() }
}

/// Writes the language model's graphs, manifest and (optionally) reference into `out`.
/// `prefix` is the language model's checkpoint key prefix (`"language."` in a VLM).
pub fn export_language(lm: &Lfm2ForCausalLM, prefix: &str, out: &Path, opts: &ExportOptions) -> Result<Manifest> {
    if opts.prefill_len == 0 || opts.prefill_len > opts.context {
        bail!("--prefill-len {} must be between 1 and --context {}", opts.prefill_len, opts.context);
    }
    std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
    let c = &lm.config;
    let mut graphs = BTreeMap::new();
    let embed = embed_graph(lm, 1, prefix);
    graphs.insert("embed_tokens".to_string(), entry("embed_tokens.onnx", &embed));
    write_model(embed.into_model("LFM2 token embeddings"), &out.join("embed_tokens.onnx"))?;
    for (name, t) in [("prefill", opts.prefill_len), ("decode", 1)] {
        let g = step_graph(lm, name, t, opts.context, prefix)?;
        let file = format!("{name}.onnx");
        graphs.insert(name.to_string(), entry(&file, &g));
        write_model(
            g.into_model(&format!("LFM2 {name}: {t} positions over a {}-slot cache", opts.context)),
            &out.join(&file),
        )?;
    }
    let state = c
        .layer_types
        .iter()
        .enumerate()
        .map(|(layer, &kind)| {
            let (inputs, outputs) = state_names(kind, layer);
            let (kind, shape) = match kind {
                LayerKind::Conv => ("conv", vec![1, c.conv_kernel - 1, c.hidden_size]),
                LayerKind::Attention => ("attention", vec![1, c.num_key_value_heads, opts.context, c.head_dim]),
            };
            StateEntry { layer, kind, inputs, outputs, shape }
        })
        .collect();
    let manifest = Manifest {
        format: FORMAT,
        prefill_len: opts.prefill_len,
        context: opts.context,
        hidden_size: c.hidden_size,
        vocab_size: c.vocab_size,
        eos_token_ids: c.eos_token_ids.clone(),
        graphs,
        state,
        attention_mask: BTreeMap::from([("visible", MASK_VISIBLE), ("hidden", MASK_HIDDEN)]),
        loop_: LOOP.to_vec(),
    };
    let text = serde_json::to_string_pretty(&manifest)?.replace("\"loop_\"", "\"loop\"");
    std::fs::write(out.join(MANIFEST), text).with_context(|| format!("writing {}", out.join(MANIFEST).display()))?;
    if opts.reference_tokens > 0 {
        write_reference(lm, out, opts)?;
    }
    Ok(manifest)
}

/// A greedy generation by the Burn model, driven as the graphs are (prefill on full chunks,
/// then one position at a time): `prompt_ids` (one full chunk and three more), then per
/// generated token the logits it was chosen from (`step_logits [n, vocab]`) and the token
/// (`generated_ids`).
fn write_reference(lm: &Lfm2ForCausalLM, out: &Path, opts: &ExportOptions) -> Result<()> {
    let c = &lm.config;
    let n = opts.prefill_len + 3;
    if n + opts.reference_tokens > opts.context {
        bail!("the reference needs {} positions; --context is {}", n + opts.reference_tokens, opts.context);
    }
    let prompt: Vec<u32> = (0..n).map(|i| ((i * 7919 + 13) % c.vocab_size) as u32).collect();
    let device = lm.device();
    let mut state = lm.new_state(1, opts.context, &device);
    let row = |t: burn::tensor::Tensor<3>| t.into_data().try_into_vec_as::<f32>().expect("f32 logits");
    let mut last = Vec::new();
    let mut pos = 0;
    while pos < n {
        let step = if n - pos >= opts.prefill_len { opts.prefill_len } else { 1 };
        last = row(lm.forward(ids_tensor(&prompt[pos..pos + step], &device), Some(&mut state), Logits::Last));
        pos += step;
    }
    let (mut generated, mut logits) = (Vec::new(), Vec::new());
    for _ in 0..opts.reference_tokens {
        let next =
            last.iter().enumerate().fold((0, f32::NEG_INFINITY), |b, (i, &v)| if v > b.1 { (i, v) } else { b }).0;
        logits.extend_from_slice(&last);
        generated.push(next as i64);
        last = row(lm.forward(ids_tensor(&[next as u32], &device), Some(&mut state), Logits::Last));
    }
    let prompt: Vec<i64> = prompt.iter().map(|&x| i64::from(x)).collect();
    let bytes = |v: &[i64]| v.iter().flat_map(|x| x.to_le_bytes()).collect::<Vec<u8>>();
    let (p, g) = (bytes(&prompt), bytes(&generated));
    let l: Vec<u8> = logits.iter().flat_map(|x| x.to_le_bytes()).collect();
    let views = [
        ("prompt_ids", TensorView::new(Dtype::I64, vec![prompt.len()], &p)?),
        ("generated_ids", TensorView::new(Dtype::I64, vec![generated.len()], &g)?),
        ("step_logits", TensorView::new(Dtype::F32, vec![generated.len(), c.vocab_size], &l)?),
    ];
    safetensors::serialize_to_file(views, None, &out.join(REFERENCE))
        .with_context(|| format!("writing {}", out.join(REFERENCE).display()))?;
    Ok(())
}

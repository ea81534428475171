//! `autoneural export`: a checkpoint's language model as `embed_tokens.onnx`,
//! `prefill.onnx` and `decode.onnx` with `manifest.json` (every graph's inputs and outputs,
//! the state contract and the loop that drives them), and optionally
//! `reference.safetensors`: a greedy generation by the Burn model that
//! `scripts/verify_onnx.py` replays through onnxruntime.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::Arc;

use anyhow::{Context, Result, bail};
use autoneural_model::quant::activations::quantize_with;
use autoneural_model::quant::saved::QuantizationFile;
use autoneural_model::text::model::ids_tensor;
use autoneural_model::text::{LayerKind, Lfm2ForCausalLM, Logits};
use autoneural_model::vlm::VisionLanguageModel;
use burn::module::Module;
use burn::tensor::{Device, Tensor, TensorData};
use safetensors::tensor::{Dtype, TensorView};
use serde::Serialize;

use crate::calibrate::{Host, Ranges, activation_bits, complete};
use crate::genie::{GenieEntry, GenieOptions};
use crate::graph::{Build, Graph, Port, write_model};
use crate::interpret::{Interpreter, Value};
use crate::lm::{KvLayout, MASK_HIDDEN, MASK_VISIBLE, embed_graph, state_names, step_graph};
use crate::placement::Placement;
use crate::qdq::{EncodingsVersion, Form, Quantization, check_against};
use crate::vision::{check_supported, vision_graph};

pub const MANIFEST: &str = "manifest.json";
pub const REFERENCE: &str = "reference.safetensors";
/// The reference with op inputs and KV caches fake-quantized (quantized checkpoints).
pub const REFERENCE_QDQ: &str = "reference.qdq.safetensors";
pub const FORMAT: &str = "autoneural-onnx/1";

#[derive(Debug, Clone)]
pub struct ExportOptions {
    /// Positions per `prefill` call.
    pub prefill_len: usize,
    /// Cache slots (the longest sequence the graphs serve).
    pub context: usize,
    /// New tokens of the reference generation (0: no `reference.safetensors`).
    pub reference_tokens: usize,
    /// Linear layers as 1x1 Conv (Qualcomm's HTP prefers them).
    pub linear_as_conv: bool,
    /// A quantized checkpoint's `quantization.json`: the graphs are also written as QDQ
    /// (`<graph>.qdq.onnx`) and the float ones get AIMET encodings (`<graph>.encodings`).
    pub quantization: Option<QuantizationFile>,
    /// The version of the `<graph>.encodings` files.
    pub encodings_version: EncodingsVersion,
    /// The Genie / AI Hub layout for the language model instead of embed/prefill/decode
    /// ([`crate::genie`]).
    pub genie: Option<GenieOptions>,
    /// Conversations a quantized export also calibrates the quantizers Qualcomm's tools add
    /// on (besides its reference inputs): `autoneural export --calib`.
    pub calibration: Vec<CalibrationSample>,
}

/// One conversation to calibrate on: its token ids (image tokens in place) and its images
/// (`[3, s, s]` each, at the encoder's input size, in [0, 1]).
#[derive(Debug, Clone, Default)]
pub struct CalibrationSample {
    pub ids: Vec<u32>,
    pub images: Vec<Vec<f32>>,
}

/// The command line's defaults: 128 positions per prefill call over 4,096 cache slots, no
/// reference, MatMul Linear layers, a float checkpoint, 1.0.0 encodings, the default layout.
impl Default for ExportOptions {
    fn default() -> Self {
        Self {
            prefill_len: 128,
            context: 4096,
            reference_tokens: 0,
            linear_as_conv: false,
            quantization: None,
            encodings_version: EncodingsVersion::default(),
            genie: None,
            calibration: Vec::new(),
        }
    }
}

impl ExportOptions {
    pub(crate) fn build(&self, form: Option<Form>) -> Result<Build> {
        let quantization = match (form, &self.quantization) {
            (Some(form), Some(file)) => {
                let q = Quantization { weights: file.weights.clone(), activations: file.activations.clone(), form };
                q.check()?;
                Some(Arc::new(q))
            }
            _ => None,
        };
        Ok(Build { linear_as_conv: self.linear_as_conv, quantization })
    }
}

#[derive(Debug, Serialize)]
pub struct GraphEntry {
    /// The float graph.
    pub file: String,
    /// Its AIMET encodings (quantized checkpoints).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub encodings: Option<String>,
    /// The AIMET QuantSim configuration the encodings were written for (quantized
    /// checkpoints): `QuantizationSimModel(..., config_file=...)`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub quantsim_config: Option<String>,
    /// The same graph with QuantizeLinear / DequantizeLinear (quantized checkpoints).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub qdq: Option<String>,
    pub inputs: Vec<Port>,
    pub outputs: Vec<Port>,
}

#[derive(Debug, Clone, Serialize)]
pub struct StateEntry {
    pub layer: usize,
    pub kind: &'static str,
    pub inputs: Vec<String>,
    pub outputs: Vec<String>,
    /// Shape of each input (the conv window, or the whole cache of one of K and V).
    pub shape: Vec<usize>,
    /// The Genie layout: the host's key cache, transposed (`[1, kv_heads, head_dim,
    /// context]`); `shape` is the value cache's.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key_shape: Option<Vec<usize>>,
}

/// What a VLM host needs to build the prompt around `vision_encoder.onnx`.
#[derive(Debug, Serialize)]
pub struct VisionEntry {
    /// Side the image is resized to (pixels in [0, 1], RGB, channels first).
    pub image_size: usize,
    pub tokens_per_image: usize,
    /// The prompt holds this id `tokens_per_image` times per image; the image's feature rows
    /// replace their embeddings, in order.
    pub image_token_id: u32,
}

#[derive(Debug, Serialize)]
pub struct Manifest {
    pub format: &'static str,
    pub vision: Option<VisionEntry>,
    pub prefill_len: usize,
    pub context: usize,
    pub linear_as_conv: bool,
    /// The version of the graphs' `.encodings` files (when the export is quantized).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub encodings_version: Option<EncodingsVersion>,
    pub hidden_size: usize,
    pub vocab_size: usize,
    pub eos_token_ids: Vec<u32>,
    pub graphs: BTreeMap<String, GraphEntry>,
    pub state: Vec<StateEntry>,
    pub attention_mask: BTreeMap<&'static str, f32>,
    /// LFM3: the window of the sliding attention layers (their state entries are rings of
    /// this many slots; `sliding_attention_mask` is fed beside `attention_mask`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sliding_window: Option<usize>,
    /// How to drive the graphs, step by step.
    pub loop_: Vec<&'static str>,
    /// The Genie layout's parts (the language model is in them, not in `graphs`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub genie: Option<GenieEntry>,
}

const LOOP: [&str; 8] = [
    "embeddings: embed_tokens.onnx per token id (input_ids [1, 1]); a VLM host puts image features at the image-token positions",
    "state: conv_state_L zeros [1, kernel - 1, hidden]; past_key_L / past_value_L zeros [1, kv_heads, context, head_dim]; position = 0",
    "prompt: prefill.onnx on each full chunk of prefill_len embeddings, then decode.onnx on each remaining position",
    "each call: position_ids = position .. position + T; attention_mask[0, 0, i, j] = visible when (j < context and j < position) or (j >= context and j - context <= i), hidden otherwise",
    "after each call: conv_state_L <- new_conv_state_L; write present_key_L / present_value_L into cache slots position .. position + T; position += T",
    "next token: argmax (or a sampler) over the last position's logits; its embedding goes to decode.onnx",
    "stop at an eos_token_id, or when position reaches context",
    "LFM3 sliding layers (state kind sliding_attention): past_key_L / past_value_L are rings [1, kv_heads, sliding_window, head_dim], position p in slot p % sliding_window; after each call write the last min(T, sliding_window) present rows into their slots; sliding_attention_mask[0, 0, i, j] = visible when (j < sliding_window and slot j holds a position q > position + i - sliding_window) or (j >= sliding_window and 0 <= i - (j - sliding_window) < sliding_window), hidden otherwise",
];

/// The entry of float graph `g` (to be written as `<name>.onnx`); for a quantized
/// checkpoint, with its AIMET encodings and their QuantSim configuration written beside it.
pub(crate) fn float_entry(out: &Path, name: &str, g: &mut Graph, opts: &ExportOptions) -> Result<GraphEntry> {
    let mut entry = GraphEntry {
        file: format!("{name}.onnx"),
        encodings: None,
        quantsim_config: None,
        qdq: None,
        inputs: g.input_ports.clone(),
        outputs: g.output_ports.clone(),
    };
    if opts.quantization.is_some() {
        let write = |file: &str, value: serde_json::Value| -> Result<()> {
            let text = serde_json::to_string_pretty(&value)?;
            std::fs::write(out.join(file), text).with_context(|| format!("writing {}", out.join(file).display()))
        };
        let file = format!("{name}.encodings");
        write(&file, g.aimet.to_json(opts.encodings_version)?)?;
        entry.encodings = Some(file);
        let file = format!("{name}.quantsim.json");
        write(&file, g.aimet.quantsim_config())?;
        entry.quantsim_config = Some(file);
    }
    Ok(entry)
}

/// How a graph of a quantized export is calibrated ([`crate::calibrate`]): the ranges its
/// tensors take on the export's calibration inputs.
type Calibrate<'a> = &'a mut dyn FnMut(&Graph) -> Result<Ranges>;

/// Builds graph `name` in every form the export asks for and writes it: `<name>.onnx`
/// (float), and for a quantized checkpoint `<name>.encodings` (AIMET, every tensor AIMET
/// quantizes covered: the checkpoint's encodings, and the rest calibrated by `calibrate`)
/// and `<name>.qdq.onnx` (the same encodings applied).
fn write_forms(
    out: &Path,
    name: &str,
    doc: &str,
    opts: &ExportOptions,
    build: impl Fn(&Build) -> Result<Graph>,
    calibrate: Calibrate,
) -> Result<GraphEntry> {
    let mut g = build(&opts.build(Some(Form::Encodings))?)?;
    let Some(file) = &opts.quantization else {
        let entry = float_entry(out, name, &mut g, opts)?;
        write_model(g.into_model(doc), &out.join(&entry.file))?;
        return Ok(entry);
    };
    g.hoist_activations();
    let placement = Placement::of(&g);
    let mut ranges = calibrate(&g).with_context(|| format!("calibrating {name}"))?;
    ranges.constants(&g, placement.tensors.iter().map(String::as_str));
    complete(&mut g, &placement, &ranges, activation_bits(&file.activations))?;
    let activations = g.aimet.activations.clone();
    let mut entry = float_entry(out, name, &mut g, opts)?;
    write_model(g.into_model(doc), &out.join(&entry.file))?;
    let mut q = build(&opts.build(Some(Form::Qdq))?)?;
    q.quantize_activations(&activations);
    let file = format!("{name}.qdq.onnx");
    write_model(q.into_model(&format!("{doc} (QDQ)")), &out.join(&file))?;
    entry.qdq = Some(file);
    Ok(entry)
}

/// A prompt a quantized export calibrates its language graphs on: token ids, and a VLM's
/// image features (`[tokens, hidden]` rows, as the quantized encoder gives them, every
/// image's in order) for the image-token positions.
pub(crate) struct CalibrationPrompt {
    pub ids: Vec<u32>,
    pub image: Option<(u32, Vec<f32>)>,
}

/// Writes the language model's graphs, manifest and (optionally) reference into `out`, an
/// existing directory the caller owns (the command's staging directory,
/// `autoneural_io::output`): the exporter writes files into it and creates nothing else.
/// `prefix` is the language model's checkpoint key prefix (`"language."` in a VLM).
pub fn export_language(lm: &Lfm2ForCausalLM, prefix: &str, out: &Path, opts: &ExportOptions) -> Result<Manifest> {
    let mut prompts = vec![CalibrationPrompt { ids: text_prompt(lm, opts), image: None }];
    prompts.extend(opts.calibration.iter().map(|c| CalibrationPrompt { ids: c.ids.clone(), image: None }));
    export_language_on(lm, prefix, out, opts, prompts)
}

/// The text-only reference prompt (and calibration prompt): two prefill chunks (the second
/// over a filled state), then decode steps.
fn text_prompt(lm: &Lfm2ForCausalLM, opts: &ExportOptions) -> Vec<u32> {
    let n = 2 * opts.prefill_len + 3;
    (0..n).map(|i| ((i * 7919 + 13) % lm.config.vocab_size) as u32).collect()
}

/// [`export_language`], calibrating a quantized export on `prompts` (the first, the
/// reference, is also continued greedily).
fn export_language_on(
    lm: &Lfm2ForCausalLM,
    prefix: &str,
    out: &Path,
    opts: &ExportOptions,
    prompts: Vec<CalibrationPrompt>,
) -> Result<Manifest> {
    if opts.prefill_len == 0 || opts.prefill_len > opts.context {
        bail!("--prefill-len {} must be between 1 and --context {}", opts.prefill_len, opts.context);
    }
    if let (Some(file), "") = (&opts.quantization, prefix) {
        check_against(file, lm)?;
    }
    if let Some(genie) = &opts.genie {
        return crate::genie::export_genie(lm, prefix, out, opts, genie);
    }
    let c = &lm.config;
    let device = lm.device();
    let window = c.sliding_window().filter(|_| c.layer_types.contains(&LayerKind::SlidingAttention));
    let mut graphs = BTreeMap::new();
    // Calibration: the prompt's embeddings from the embedding graph (image features in
    // place), then the prompt and a greedy continuation through prefill and decode, whose
    // ranges both graphs share (they name their tensors alike).
    let mut embeds: Vec<Vec<Value>> = Vec::new();
    let mut table = None;
    let mut calibrate_embed = |g: &Graph| -> Result<Ranges> {
        let interp = Interpreter::new(g.nodes(), g.initializers(), &device)?;
        let mut ranges = Ranges::default();
        for prompt in &prompts {
            let ids = &prompt.ids[..prompt.ids.len().min(opts.context)];
            let mut features = prompt.image.as_ref().map(|(id, f)| (*id, f.chunks(c.hidden_size)));
            let mut rows = Vec::with_capacity(ids.len());
            for &id in ids {
                let row = match features.as_mut().filter(|(image, _)| *image == id) {
                    Some((_, rows)) => {
                        let row = rows.next().context("more image tokens in the prompt than feature rows")?;
                        Value::float(row.to_vec(), &[1, 1, c.hidden_size], &device)
                    }
                    None => {
                        let feeds =
                            HashMap::from([("input_ids".to_string(), Value::I(vec![i64::from(id)], vec![1, 1]))]);
                        ranges.run(&interp, feeds)?.remove("inputs_embeds").context("no inputs_embeds")?
                    }
                };
                rows.push(row);
            }
            embeds.push(rows);
        }
        table = Some(Embeddings::of(g, &interp)?);
        Ok(ranges)
    };
    let embed = write_forms(
        out,
        "embed_tokens",
        "LFM2 token embeddings",
        opts,
        |b| Ok(embed_graph(lm, 1, prefix, b)),
        &mut calibrate_embed,
    )?;
    graphs.insert("embed_tokens".to_string(), embed);
    let steps = match (&opts.quantization, table) {
        (Some(_), Some(table)) => {
            let build = |name: &str, t: usize| {
                step_graph(lm, name, t, opts.context, prefix, &opts.build(Some(Form::Encodings))?)
            };
            let state = state_entries(lm, opts.context, KvLayout::Plain);
            let host = || Host::new(opts.context, state.clone(), window, &device);
            calibrate_steps(build, opts, host, &embeds, &table, &device)?
        }
        _ => Ranges::default(),
    };
    for (name, t) in [("prefill", opts.prefill_len), ("decode", 1)] {
        let doc = format!("LFM2 {name}: {t} positions over a {}-slot cache", opts.context);
        let build = |b: &Build| step_graph(lm, name, t, opts.context, prefix, b);
        let entry = write_forms(out, name, &doc, opts, build, &mut |_| Ok(steps.clone()))?;
        graphs.insert(name.to_string(), entry);
    }
    let state = state_entries(lm, opts.context, KvLayout::Plain);
    let manifest = Manifest {
        format: FORMAT,
        vision: None,
        prefill_len: opts.prefill_len,
        context: opts.context,
        linear_as_conv: opts.linear_as_conv,
        encodings_version: opts.quantization.as_ref().map(|_| opts.encodings_version),
        hidden_size: c.hidden_size,
        vocab_size: c.vocab_size,
        eos_token_ids: c.eos_token_ids.clone(),
        graphs,
        state,
        attention_mask: BTreeMap::from([("visible", MASK_VISIBLE), ("hidden", MASK_HIDDEN)]),
        sliding_window: c.sliding_window().filter(|_| c.layer_types.contains(&LayerKind::SlidingAttention)),
        loop_: LOOP.to_vec(),
        genie: None,
    };
    language_reference(lm, out, opts)?;
    write_manifest(&manifest, out)?;
    Ok(manifest)
}

/// Each layer's state as the host keeps it over `context` positions: a conv layer's window,
/// an attention layer's K and V caches (a sliding layer's ring of `window` slots), with the
/// key cache transposed in the Genie layout.
pub fn state_entries(lm: &Lfm2ForCausalLM, context: usize, layout: KvLayout) -> Vec<StateEntry> {
    let c = &lm.config;
    let (kv, hd) = (c.num_key_value_heads, c.head_dim);
    c.layer_types
        .iter()
        .enumerate()
        .map(|(layer, &kind)| {
            let (inputs, outputs) = state_names(kind, layer);
            let (kind, slots) = match kind {
                LayerKind::Conv => {
                    let shape = vec![1, c.conv_kernel - 1, c.hidden_size];
                    return StateEntry { layer, kind: "conv", inputs, outputs, shape, key_shape: None };
                }
                LayerKind::Attention => ("attention", context),
                LayerKind::SlidingAttention => ("sliding_attention", c.sliding_window().unwrap_or(context)),
            };
            let key_shape = (layout == KvLayout::Genie).then(|| vec![1, kv, hd, slots]);
            StateEntry { layer, kind, inputs, outputs, shape: vec![1, kv, slots, hd], key_shape }
        })
        .collect()
}

/// `[1, 1, hidden]` rows as one `[1, n, hidden]` value.
fn concat_rows(rows: Vec<Value>, hidden: usize, device: &Device) -> Result<Value> {
    let mut all = Vec::with_capacity(rows.len() * hidden);
    for r in &rows {
        all.extend(r.to_vec()?);
    }
    Ok(Value::float(all, &[1, rows.len(), hidden], device))
}

/// Greedy tokens a quantized export's calibration decodes after its prompt, so the ranges
/// cover the model's own continuations too.
const CALIBRATION_TOKENS: usize = 32;

/// The embedding table as the embedding graph holds it, for the calibration's own tokens.
pub(crate) struct Embeddings {
    table: burn::tensor::Tensor<{ crate::interpret::RANK }>,
    hidden: usize,
}

impl Embeddings {
    fn of(g: &Graph, interp: &Interpreter) -> Result<Self> {
        let gather = g.nodes().iter().find(|n| n.op_type == "Gather").context("the embedding graph has no Gather")?;
        match interp.constant(&gather.input[0]) {
            Some(Value::F(t, shape)) => Ok(Self { table: t.clone(), hidden: shape[1] }),
            _ => bail!("the embedding graph's table is not a float constant"),
        }
    }

    fn row(&self, id: usize, device: &Device) -> Value {
        let r = crate::interpret::RANK;
        let idx = Tensor::<1, burn::tensor::Int>::from_data(TensorData::new(vec![id as i64], [1]), device);
        Value::F(self.table.clone().select(r - 2, idx), vec![1, 1, self.hidden])
    }
}

/// The ranges of the step graphs on the calibration prompts' `embeds`, each from a fresh
/// state: its full chunks through `prefill`, the rest through `decode`, and after the first
/// (the reference) [`CALIBRATION_TOKENS`] greedy tokens.
fn calibrate_steps(
    build: impl Fn(&str, usize) -> Result<Graph>,
    opts: &ExportOptions,
    host: impl Fn() -> Host,
    embeds: &[Vec<Value>],
    table: &Embeddings,
    device: &Device,
) -> Result<Ranges> {
    let mut ranges = Ranges::default();
    let hidden = table.hidden;
    let t = opts.prefill_len;
    // Each prompt's state after its prefill chunks, for the decode graph.
    let mut hosts = Vec::with_capacity(embeds.len());
    {
        let g = build("prefill", t)?;
        let interp = Interpreter::new(g.nodes(), g.initializers(), device)?;
        for prompt in embeds {
            let mut host = host();
            while host.position + t <= prompt.len() {
                let rows = prompt[host.position..host.position + t].to_vec();
                let feeds = host.feeds(concat_rows(rows, hidden, device)?)?;
                let outputs = ranges.run(&interp, feeds).context("calibrating prefill")?;
                host.advance(&outputs, t)?;
            }
            hosts.push(host);
        }
    }
    let g = build("decode", 1)?;
    let interp = Interpreter::new(g.nodes(), g.initializers(), device)?;
    for (i, (prompt, mut host)) in embeds.iter().zip(hosts).enumerate() {
        let continuation = if i == 0 { CALIBRATION_TOKENS } else { 0 };
        let mut next = None;
        for _ in 0..prompt.len() - host.position + continuation {
            if host.position >= opts.context {
                break;
            }
            let row = match prompt.get(host.position) {
                Some(row) => row.clone(),
                None => table.row(next.context("no token to continue from")?, device),
            };
            let mut outputs = ranges.run(&interp, host.feeds(row)?).context("calibrating decode")?;
            host.advance(&outputs, 1)?;
            let logits = outputs.remove("logits").context("no logits")?.to_vec()?;
            next = logits.iter().enumerate().max_by(|a, b| a.1.total_cmp(b.1)).map(|(i, _)| i);
        }
    }
    Ok(ranges)
}

/// With `--reference-tokens`: the text-only reference generation, over two prefill chunks
/// (the second over a filled state), then decode steps.
pub(crate) fn language_reference(lm: &Lfm2ForCausalLM, out: &Path, opts: &ExportOptions) -> Result<()> {
    if opts.reference_tokens > 0 {
        let prompt = text_prompt(lm, opts);
        let write = |file: &str| write_reference(lm, out, opts, file, &prompt, lm.embed_ids(&prompt), Vec::new());
        references(lm, opts, write)?;
    }
    Ok(())
}

/// Runs `write` for the float reference, and for a quantized checkpoint again with its op
/// inputs and KV caches fake-quantized (what the QDQ graphs compute).
fn references<M: Module>(model: &M, opts: &ExportOptions, write: impl Fn(&str) -> Result<()>) -> Result<()> {
    write(REFERENCE)?;
    if let Some(file) = &opts.quantization {
        let encodings = file.activation_encodings(model)?;
        quantize_with(encodings, || write(REFERENCE_QDQ))?;
    }
    Ok(())
}

pub(crate) fn write_manifest(manifest: &Manifest, out: &Path) -> Result<()> {
    let text = serde_json::to_string_pretty(manifest)?.replace("\"loop_\"", "\"loop\"");
    std::fs::write(out.join(MANIFEST), text).with_context(|| format!("writing {}", out.join(MANIFEST).display()))
}

/// A vision-language model: `vision_encoder.onnx` beside the language model's graphs, and a
/// reference generation whose prompt holds an image, into `out` (an existing directory the
/// caller owns, as for [`export_language`]).
pub fn export_vlm(model: &VisionLanguageModel, out: &Path, opts: &ExportOptions) -> Result<Manifest> {
    // Refused before anything is written when the encoder or the encodings cannot be exported.
    check_supported(model)?;
    if let Some(file) = &opts.quantization {
        check_against(file, model)?;
    }
    let language = ExportOptions { reference_tokens: 0, ..opts.clone() };
    let s = model.config.encoder.image_size();
    let tokens = model.config.tokens_per_image(s, s);
    let (pattern, prompt) = vlm_reference_inputs(model, opts, s, tokens);
    let device = model.language.device();
    // The vision graph first: the quantized encoder's features go into the language graphs'
    // calibration prompts (the reference's, and each --calib conversation's).
    let mut features: Vec<Vec<f32>> = Vec::new();
    let mut calibrate = |g: &Graph| -> Result<Ranges> {
        let interp = Interpreter::new(g.nodes(), g.initializers(), &device)?;
        let mut ranges = Ranges::default();
        let encodings =
            opts.quantization.as_ref().context("calibrating a float export")?.activation_encodings(model)?;
        let images = std::iter::once(&pattern).chain(opts.calibration.iter().flat_map(|c| &c.images));
        for image in images {
            if image.len() != 3 * s * s {
                bail!("a calibration image of {} values, expected 3 x {s} x {s}", image.len());
            }
            let feeds = HashMap::from([("pixels".to_string(), Value::float(image.clone(), &[1, 3, s, s], &device))]);
            ranges.run(&interp, feeds)?;
            // The language graphs are calibrated on the features the quantized encoder gives,
            // as the device's encoder would give them.
            let pixels = Tensor::<4>::from_data(TensorData::new(image.clone(), [1, 3, s, s]), &device);
            let quantized = quantize_with(encodings.clone(), || model.image_features(pixels));
            features.push(quantized.into_data().try_into_vec_as::<f32>().expect("f32 features"));
        }
        Ok(ranges)
    };
    let doc = "AutoNeural vision encoder and connector";
    let entry = write_forms(out, "vision_encoder", doc, opts, |b| vision_graph(model, b), &mut calibrate)?;
    let image_token = model.config.image_token_id;
    let mut features = features.into_iter();
    let mut prompts = vec![CalibrationPrompt { ids: prompt.clone(), image: features.next().map(|f| (image_token, f)) }];
    for c in &opts.calibration {
        let f: Vec<f32> = features.by_ref().take(c.images.len()).flatten().collect();
        prompts
            .push(CalibrationPrompt { ids: c.ids.clone(), image: (!c.images.is_empty()).then_some((image_token, f)) });
    }
    let mut manifest = export_language_on(&model.language, "language.", out, &language, prompts)?;
    manifest.graphs.insert("vision_encoder".into(), entry);
    manifest.vision =
        Some(VisionEntry { image_size: s, tokens_per_image: tokens, image_token_id: model.config.image_token_id });
    if opts.reference_tokens > 0 {
        let write = |file: &str| -> Result<()> {
            let pixels = Tensor::<4>::from_data(TensorData::new(pattern.clone(), [1, 3, s, s]), &device);
            let features = model.image_features(pixels);
            let embeds =
                model.merge(&prompt, Some(features.clone().reshape([tokens, model.language.config.hidden_size])))?;
            let f = features.into_data().try_into_vec_as::<f32>().expect("f32 features");
            let extra = vec![
                ("pixels".to_string(), Dtype::F32, vec![1, 3, s, s], f32_bytes(&pattern)),
                (
                    "image_features".to_string(),
                    Dtype::F32,
                    vec![1, tokens, model.language.config.hidden_size],
                    f32_bytes(&f),
                ),
                (
                    "image_token_id".to_string(),
                    Dtype::I64,
                    vec![1],
                    i64::from(model.config.image_token_id).to_le_bytes().to_vec(),
                ),
            ];
            write_reference(&model.language, out, opts, file, &prompt, embeds, extra)
        };
        references(model, opts, write)?;
    }
    write_manifest(&manifest, out)?;
    Ok(manifest)
}

/// The VLM's reference (and calibration) inputs: a smooth test pattern in [0, 1] at the
/// encoder's size, and a prompt of two text tokens, the image, then text up to a full
/// prefill chunk and three more positions (text ids are never the image token, whose count
/// must match the features).
fn vlm_reference_inputs(
    model: &VisionLanguageModel,
    opts: &ExportOptions,
    s: usize,
    tokens: usize,
) -> (Vec<f32>, Vec<u32>) {
    let pattern: Vec<f32> = (0..3 * s * s).map(|i| 0.5 + 0.5 * (i as f32 * 0.0123).sin()).collect();
    let vocab = model.language.config.vocab_size;
    let n = (opts.prefill_len + 3).max(tokens + 5);
    let image = model.config.image_token_id;
    let text = |i: usize| match ((i * 7919 + 13) % vocab) as u32 {
        id if id == image => (id + 1) % vocab as u32,
        id => id,
    };
    let mut prompt: Vec<u32> = vec![text(0), text(1)];
    prompt.extend(std::iter::repeat_n(image, tokens));
    prompt.extend((prompt.len()..n).map(text));
    (pattern, prompt)
}

fn f32_bytes(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

/// A greedy generation by the Burn model, driven as the graphs are (prefill on full chunks,
/// then one position at a time): `prompt_ids` (whose embeddings are `embeds`, image
/// features in place for a VLM), then per generated token the logits it was chosen from
/// (`step_logits [n, vocab]`) and the token (`generated_ids`); `extra` tensors are added.
fn write_reference(
    lm: &Lfm2ForCausalLM,
    out: &Path,
    opts: &ExportOptions,
    file: &str,
    prompt: &[u32],
    embeds: Tensor<3>,
    extra: Vec<(String, Dtype, Vec<usize>, Vec<u8>)>,
) -> Result<()> {
    let c = &lm.config;
    let n = prompt.len();
    if n + opts.reference_tokens > opts.context {
        bail!("the reference needs {} positions; --context is {}", n + opts.reference_tokens, opts.context);
    }
    let device = lm.device();
    let mut state = lm.new_state(1, opts.context, &device);
    let row = |t: Tensor<3>| t.into_data().try_into_vec_as::<f32>().expect("f32 logits");
    let mut last = Vec::new();
    let mut pos = 0;
    while pos < n {
        let step = if n - pos >= opts.prefill_len { opts.prefill_len } else { 1 };
        let chunk = embeds.clone().slice([0..1, pos..pos + step, 0..c.hidden_size]);
        last = row(lm.logits(lm.hidden_states(chunk, Some(&mut state)), Logits::Last));
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
    let prompt: Vec<i64> = prompt.iter().map(|&x| i64::from(x)).collect::<Vec<_>>();
    let bytes = |v: &[i64]| v.iter().flat_map(|x| x.to_le_bytes()).collect::<Vec<u8>>();
    let (p, g) = (bytes(&prompt), bytes(&generated));
    let l: Vec<u8> = logits.iter().flat_map(|x| x.to_le_bytes()).collect();
    let mut views = vec![
        ("prompt_ids".to_string(), TensorView::new(Dtype::I64, vec![prompt.len()], &p)?),
        ("generated_ids".to_string(), TensorView::new(Dtype::I64, vec![generated.len()], &g)?),
        ("step_logits".to_string(), TensorView::new(Dtype::F32, vec![generated.len(), c.vocab_size], &l)?),
    ];
    for (name, dtype, shape, data) in &extra {
        views.push((name.clone(), TensorView::new(*dtype, shape.clone(), data)?));
    }
    safetensors::serialize_to_file(views, None, &out.join(file))
        .with_context(|| format!("writing {}", out.join(file).display()))?;
    Ok(())
}

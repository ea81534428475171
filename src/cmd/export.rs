//! `autoneural export`: ONNX graphs of a checkpoint's language model for onnxruntime and
//! Qualcomm's tools (docs/deployment.md).

use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use autoneural_export::export::{ExportOptions, export_language, export_vlm};
use autoneural_export::genie::GenieOptions;
use autoneural_export::qdq::EncodingsVersion;
use autoneural_io::output::{Output, Spec};
use autoneural_model::checkpoint::{is_vlm_type, load_lfm2, load_vlm, model_type};
use autoneural_model::device::parse_device;
use autoneural_model::quant::PrecisionPolicy;
use autoneural_model::quant::saved::QuantizationFile;
use autoneural_model::text::Lfm2Config;
use autoneural_npu::paper::autoneural_paper;
use autoneural_quant::ptq::{batcher_for, calibration_records, post_training_quantize};
use clap::Args;

#[derive(Args, Debug)]
pub struct ExportArgs {
    /// A checkpoint directory (LFM2, LFM2-VL or AutoNeural).
    #[arg(long, required_unless_present = "preset")]
    pub model: Option<PathBuf>,
    /// Instead of --model: random weights (seed 0) of an LFM2 preset (`lfm2-1.2b`: the
    /// language graphs), or `autoneural-paper` (the paper's VLM: MobileNetV5-300M at 768x768
    /// + the MLP connector + LFM2-1.2B), to check export at full size.
    #[arg(long, conflicts_with = "model")]
    pub preset: Option<String>,
    /// `fp32` (default), or a precision policy (`w8a16`, `w4a16`, `autoneural`, or a policy
    /// TOML) to quantize a float VLM checkpoint first (post-training, calibrated on
    /// `--calib`), as `autoneural quantize` does. A quantized checkpoint (from `quantize` or a
    /// QAT run) is exported at its own policy. Quantized exports hold float graphs with
    /// AIMET encodings, and QDQ graphs.
    #[arg(long, default_value = "fp32")]
    pub precision: String,
    /// Calibration conversations (JSONL with images). With `--precision POLICY`, the
    /// post-training quantization's; for any quantized export, also the ranges of the
    /// activations Qualcomm's tools quantize beyond the checkpoint's own (calibrated at
    /// export; without --calib on the export's reference image and prompt only). Repeatable.
    #[arg(long)]
    pub calib: Vec<PathBuf>,
    /// Calibration records to use (0: all).
    #[arg(long, default_value_t = 64)]
    pub samples: usize,
    /// Output directory. It must be new, empty, or an earlier `export` of the same inputs
    /// (which is replaced: graphs it held that this export does not write are removed).
    #[arg(long)]
    pub out: PathBuf,
    #[command(flatten)]
    pub output: super::OutputPolicy,
    /// Positions per prefill call.
    #[arg(long, default_value_t = 128)]
    pub prefill_len: usize,
    /// Cache slots: the longest sequence the graphs serve.
    #[arg(long, default_value_t = 4096)]
    pub context: usize,
    /// Also write reference.safetensors: this many greedy tokens from the Burn model, which
    /// scripts/verify_onnx.py replays through onnxruntime (0: none).
    #[arg(long, default_value_t = 0)]
    pub reference_tokens: usize,
    /// Write Linear layers as 1x1 Conv on `[1, in, 1, t]`, as Qualcomm's HTP prefers.
    #[arg(long)]
    pub linear_as_conv: bool,
    /// The version of the AIMET encodings files of a quantized export: `1.0.0` (QNN's
    /// offsets; LPBQ weights as PER_BLOCK) or `2.0.0` (ONNX's terms; LPBQ with its integer
    /// block scales). Both are read by AIMET's `load_encodings_to_sim` and QNN's converter.
    #[arg(long, default_value = "1.0.0")]
    pub encodings_version: EncodingsVersion,
    /// `default` (embed_tokens, prefill, decode) or `genie`: the Genie / AI Hub LLM layout
    /// (parts under --part-max-mb, AR-N and AR-1 graphs sharing weights, keys transposed,
    /// cos/sin inputs, only new KV out, Linear as 1x1 Conv; docs/deployment.md).
    #[arg(long, default_value = "default", value_parser = ["default", "genie"])]
    pub layout: String,
    /// The Genie layout's largest part (weights and graph), MiB.
    #[arg(long, default_value_t = 1024)]
    pub part_max_mb: u64,
}

/// `--preset` for the paper's whole VLM at full size.
const PAPER_VLM: &str = "autoneural-paper";

pub fn run(args: ExportArgs) -> Result<()> {
    let quantization = match &args.model {
        Some(dir) => QuantizationFile::read(dir)?,
        None => None,
    };
    let policy = match args.precision.as_str() {
        "fp32" => None,
        p => {
            if let Some(q) = &quantization {
                bail!(
                    "--precision {p}: {} is already quantized (policy {:?}); export it without --precision",
                    args.model.as_ref().map(|d| d.display().to_string()).unwrap_or_default(),
                    q.policy
                );
            }
            if args.calib.is_empty() {
                bail!("--precision {p}: give --calib FILE.jsonl (conversations with images) to calibrate on");
            }
            Some(PrecisionPolicy::load(p).with_context(|| format!("--precision {p}"))?)
        }
    };
    if policy.is_some() && args.model.is_none() {
        bail!("--precision with --preset: random weights are exported in fp32 only");
    }
    if !args.calib.is_empty() && policy.is_none() && quantization.is_none() {
        bail!("--calib calibrates a quantized export: give --precision POLICY, or a quantized checkpoint");
    }
    // Everything that can be refused without writing is refused before --out is claimed.
    let kind = match &args.model {
        Some(dir) => Some(model_type(dir).with_context(|| format!("loading {}", dir.display()))?),
        None => None,
    };
    if let (Some(_), Some(kind)) = (&policy, &kind)
        && !is_vlm_type(kind)
    {
        bail!(
            "--precision {}: quantization applies to vision-language checkpoints ({kind} is not one)",
            args.precision
        );
    }
    let device = parse_device("flex")?;
    let mut owned = Output::claim(&args.out, ownership(&args))?;
    let staging = owned.staging()?;
    let mut opts = ExportOptions {
        prefill_len: args.prefill_len,
        context: args.context,
        reference_tokens: args.reference_tokens,
        linear_as_conv: args.linear_as_conv,
        quantization,
        encodings_version: args.encodings_version,
        genie: (args.layout == "genie").then(|| GenieOptions { part_max_bytes: args.part_max_mb << 20 }),
        calibration: Vec::new(),
    };
    let manifest = match (&args.model, &args.preset) {
        (_, Some(name)) if name == PAPER_VLM => {
            // at the encoder's native input, 768x768 (256 image tokens)
            device.seed(0);
            let model = autoneural_paper(768).init(&device)?;
            export_vlm(&model, &staging, &opts)?
        }
        (_, Some(name)) => {
            let config = Lfm2Config::preset(name).with_context(|| {
                format!("--preset {name:?}: expected {PAPER_VLM} or one of {}", Lfm2Config::preset_names().join(", "))
            })?;
            device.seed(0);
            export_language(&config.init(&device), "", &staging, &opts)?
        }
        (Some(dir), None) => {
            if kind.as_deref().is_some_and(is_vlm_type) {
                let model = load_vlm(dir, &device).with_context(|| format!("loading {}", dir.display()))?;
                let records = match args.calib.is_empty() {
                    true => Vec::new(),
                    false => {
                        let calib = args
                            .calib
                            .iter()
                            .map(|f| autoneural_data::SourceSpec::file(f, autoneural_data::OnBadRecord::Fail))
                            .collect::<Result<Vec<_>, _>>()?;
                        calibration_records(&calib, args.samples)?
                    }
                };
                let batcher = batcher_for(&model, dir)?;
                let model = match &policy {
                    Some(policy) => {
                        // post-training quantization in memory, as `autoneural quantize`
                        let (quantized, file, _) = post_training_quantize(model, &batcher, &records, policy)?;
                        eprintln!("quantized at {} on {} calibration records", policy.name, records.len());
                        opts.quantization = Some(file);
                        quantized
                    }
                    None => model,
                };
                if opts.quantization.is_some() {
                    opts.calibration = calibration_samples(&batcher, &records)?;
                    if records.is_empty() {
                        eprintln!(
                            "note: the activations Qualcomm's tools quantize beyond the checkpoint's own are calibrated on the \
                             export's reference image and prompt only; give --calib FILE.jsonl to calibrate them on your data"
                        );
                    }
                }
                export_vlm(&model, &staging, &opts)?
            } else {
                let model = load_lfm2(dir, &device).with_context(|| format!("loading {}", dir.display()))?;
                export_language(&model, "", &staging, &opts)?
            }
        }
        (None, None) => bail!("give --model DIR or --preset NAME"),
    };
    owned.commit()?;
    for (name, g) in &manifest.graphs {
        let extra: String =
            [&g.encodings, &g.qdq].iter().filter_map(|f| f.as_ref()).map(|f| format!(", {f}")).collect();
        eprintln!(
            "{name}: {} ({} inputs, {} outputs{extra})",
            args.out.join(&g.file).display(),
            g.inputs.len(),
            g.outputs.len()
        );
    }
    eprintln!("manifest: {}", args.out.join(autoneural_export::export::MANIFEST).display());
    Ok(())
}

/// The conversations of `records` as the exported graphs take them: token ids with the
/// image tokens in place, and each image at the encoder's input size.
fn calibration_samples(
    batcher: &autoneural_train::train::Batcher,
    records: &[(String, autoneural_data::Record)],
) -> Result<Vec<autoneural_export::export::CalibrationSample>> {
    records
        .iter()
        .map(|(origin, r)| {
            let b =
                batcher.batch(std::slice::from_ref(&(origin.clone(), r.clone()))).with_context(|| origin.clone())?;
            let n = b.batch.attention_mask.iter().take(b.batch.len).filter(|&&m| m).count();
            let ids = b.batch.inputs[..n].to_vec();
            let images = match b.pixels {
                Some(p) => {
                    let [count, ..] = p.dims();
                    let values = p.into_data().try_into_vec_as::<f32>().expect("f32 pixels");
                    let each = values.len() / count.max(1);
                    values.chunks(each.max(1)).map(<[f32]>::to_vec).collect()
                }
                None => Vec::new(),
            };
            Ok(autoneural_export::export::CalibrationSample { ids, images })
        })
        .collect()
}

/// The export's claim on `--out`: what the graphs are made from, as the marker records it.
fn ownership(args: &ExportArgs) -> Spec<'static> {
    let mut inputs = serde_json::json!({
        "model": args.model.as_deref().map(autoneural_io::output::canonical),
        "preset": args.preset,
        "precision": args.precision,
        "calib": args.calib.iter().map(|p| autoneural_io::output::canonical(p)).collect::<Vec<_>>(),
        "samples": args.samples,
        "prefill_len": args.prefill_len,
        "context": args.context,
        "reference_tokens": args.reference_tokens,
        "linear_as_conv": args.linear_as_conv,
    });
    // Recorded only when not the default, so exports made before the options stay ours.
    if args.encodings_version != EncodingsVersion::default() {
        inputs["encodings_version"] = serde_json::json!(args.encodings_version);
    }
    if args.layout != "default" {
        inputs["layout"] = serde_json::json!(args.layout);
        inputs["part_max_mb"] = serde_json::json!(args.part_max_mb);
    }
    args.output.spec("export", inputs)
}

//! `autoneural export`: ONNX graphs of a checkpoint's language model for onnxruntime and
//! Qualcomm's tools (docs/deployment.md).

use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use autoneural_export::export::{ExportOptions, export_language, export_vlm};
use autoneural_model::checkpoint::{is_vlm_type, load_lfm2, load_vlm, model_type};
use autoneural_model::device::parse_device;
use autoneural_model::quant::saved::QuantizationFile;
use autoneural_model::text::{Lfm2Config, Lfm2ForCausalLM};
use clap::Args;

#[derive(Args, Debug)]
pub struct ExportArgs {
    /// A checkpoint directory (LFM2, LFM2-VL or AutoNeural).
    #[arg(long, required_unless_present = "preset")]
    pub model: Option<PathBuf>,
    /// Instead of --model: an LFM2 preset with random weights (seed 0), e.g. `lfm2-1.2b`,
    /// to check export at full size.
    #[arg(long, conflicts_with = "model")]
    pub preset: Option<String>,
    /// `fp32`. A quantized checkpoint (written by `autoneural quantize` or a QAT run) is
    /// exported at its own policy: float graphs with AIMET encodings, and QDQ graphs.
    #[arg(long, default_value = "fp32")]
    pub precision: String,
    #[arg(long)]
    pub out: PathBuf,
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
}

pub fn run(args: ExportArgs) -> Result<()> {
    let quantization = match &args.model {
        Some(dir) => QuantizationFile::read(dir)?,
        None => None,
    };
    if args.precision != "fp32" {
        bail!(
            "--precision {p}: the exporter writes the encodings of a quantized checkpoint; quantize first \
             (`autoneural quantize --model DIR --precision {p} --calib FILE.jsonl --out QDIR`, or a QAT run's \
             final/), then `autoneural export --model QDIR`",
            p = args.precision
        );
    }
    let device = parse_device("flex")?;
    let opts = ExportOptions {
        prefill_len: args.prefill_len,
        context: args.context,
        reference_tokens: args.reference_tokens,
        linear_as_conv: args.linear_as_conv,
        quantization,
    };
    let manifest = match (&args.model, &args.preset) {
        (_, Some(name)) => {
            let config = Lfm2Config::preset(name)
                .with_context(|| format!("--preset {name:?}: expected one of {}", Lfm2Config::PRESETS.join(", ")))?;
            device.seed(0);
            export_language(&Lfm2ForCausalLM::new(&config, &device), "", &args.out, &opts)?
        }
        (Some(dir), None) => {
            let kind = model_type(dir).with_context(|| format!("loading {}", dir.display()))?;
            if is_vlm_type(&kind) {
                let model = load_vlm(dir, &device).with_context(|| format!("loading {}", dir.display()))?;
                export_vlm(&model, &args.out, &opts)?
            } else {
                let model = load_lfm2(dir, &device).with_context(|| format!("loading {}", dir.display()))?;
                export_language(&model, "", &args.out, &opts)?
            }
        }
        (None, None) => bail!("give --model DIR or --preset NAME"),
    };
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

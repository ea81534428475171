//! `autoneural quant-report`: the quantization error of a checkpoint under a precision
//! policy, per weight, per group, at the encoder's output, and over a bit-width sweep.

use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use autoneural_data::{OnBadRecord, SourceSpec};
use autoneural_io::output::Output;
use autoneural_model::checkpoint::load_vlm;
use autoneural_model::device::parse_device;
use autoneural_model::quant::PrecisionPolicy;
use autoneural_model::quant::saved::{self, QuantizationFile};
use autoneural_quant::ptq::quantize_checkpoint;
use autoneural_quant::report::{comparison_markdown, quant_report, write_plots};
use clap::Args;

use super::Format;

#[derive(Args, Debug)]
pub struct QuantReportArgs {
    /// A float vision-language checkpoint directory (AutoNeural or LFM2-VL); repeat to
    /// compare several (e.g. the ViT baseline against MobileNetV5) in one report.
    #[arg(long, required = true)]
    pub model: Vec<PathBuf>,
    /// A preset (fp32, w8a16, w4a16, autoneural) or a policy TOML file (docs/quantization.md).
    #[arg(long, default_value = "autoneural")]
    pub precision: String,
    /// JSONL conversations whose images measure the encoder's output error.
    #[arg(long)]
    pub data: Option<PathBuf>,
    /// Images to use from `--data`.
    #[arg(long, default_value_t = 16)]
    pub samples: usize,
    /// Uniform per-channel weight bit-widths to sweep, comma-separated, 2 to 16 (`""`: none).
    #[arg(long, default_value = "4,8,16")]
    pub sweep: String,
    #[arg(long, default_value = "flex")]
    pub device: String,
    /// `text` prints the markdown report; `json` the full report with every weight.
    #[arg(long, value_enum, default_value_t = Format::Text)]
    pub format: Format,
    /// Also write `quant_report.json`, `quant_report.md` and the plots
    /// (`quant_report_sweep.svg`, `quant_report_layers.svg`) into this directory (new,
    /// empty, or an earlier report of the same inputs).
    #[arg(long)]
    pub out: Option<PathBuf>,
    #[command(flatten)]
    pub output: super::OutputPolicy,
}

/// `--sweep`: bit-widths, or none for an empty value.
fn sweep_bits(text: &str) -> Result<Vec<u32>> {
    text.split(',')
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .map(|t| match t.parse::<u32>() {
            Ok(b) if (2..=16).contains(&b) => Ok(b),
            _ => bail!("--sweep: {t:?} is not a bit-width from 2 to 16 (give e.g. \"4,8,16\", or \"\" for none)"),
        })
        .collect()
}

pub fn run(args: QuantReportArgs) -> Result<()> {
    let policy = PrecisionPolicy::load(&args.precision)?;
    let sweep = sweep_bits(&args.sweep)?;
    let device = parse_device(&args.device)?;
    // Claimed before the work: a refused --out is known at once, not after the report.
    let owned = match &args.out {
        Some(dir) => {
            let inputs = serde_json::json!({
                "models": args.model.iter().map(|p| autoneural_io::output::canonical(p)).collect::<Vec<_>>(),
                "precision": args.precision,
                "data": args.data.as_deref().map(autoneural_io::output::canonical),
                "samples": args.samples,
                "sweep": sweep,
            });
            let spec = args.output.spec("quant-report", inputs);
            Some(Output::claim(dir, spec)?)
        }
        None => None,
    };
    let data = args.data.as_deref().map(|p| SourceSpec::file(p, OnBadRecord::Fail)).transpose()?;
    let mut reports = Vec::new();
    for dir in &args.model {
        if QuantizationFile::read(dir)?.is_some() {
            bail!(
                "{} is quantized already ({}): the report measures quantization against the float model; give \
                 the float checkpoint (a QAT run keeps it in before_qat/)",
                dir.display(),
                saved::FILE
            );
        }
        let model = load_vlm(dir, &device)?;
        let name = dir.display().to_string();
        reports.push(quant_report(model, &name, &policy, data.as_ref(), args.samples, &sweep)?);
    }
    // One model: its report; several: each report, then the comparison.
    let json = match reports.as_slice() {
        [one] => serde_json::to_string_pretty(one)?,
        all => serde_json::to_string_pretty(all)?,
    };
    let mut markdown: String = reports.iter().map(|r| r.markdown() + "\n").collect();
    if reports.len() > 1 {
        markdown += &comparison_markdown(&reports);
    }
    if let (Some(dir), Some(mut owned)) = (&args.out, owned) {
        let staging = owned.staging()?;
        std::fs::write(staging.join("quant_report.json"), &json)
            .with_context(|| format!("writing into {}", staging.display()))?;
        std::fs::write(staging.join("quant_report.md"), &markdown)
            .with_context(|| format!("writing into {}", staging.display()))?;
        let plots = write_plots(&reports, &staging)?;
        owned.commit()?;
        for path in plots {
            eprintln!("plot: {}", dir.join(path.file_name().unwrap_or_default()).display());
        }
    }
    match args.format {
        Format::Text => print!("{markdown}"),
        Format::Json => println!("{json}"),
    }
    Ok(())
}

#[derive(Args, Debug)]
pub struct QuantizeArgs {
    /// A vision-language checkpoint directory (AutoNeural or LFM2-VL).
    #[arg(long)]
    pub model: PathBuf,
    /// A preset (fp32, w8a16, w4a16, autoneural) or a policy TOML file.
    #[arg(long)]
    pub precision: String,
    /// JSONL conversations to calibrate activation ranges on; repeat for several files
    /// (e.g. one per task family).
    #[arg(long, required = true)]
    pub calib: Vec<PathBuf>,
    /// Conversations to use from each `--calib` file.
    #[arg(long, default_value_t = 64)]
    pub samples: usize,
    /// Output directory: the model with QDQ weights, its tokenizer, and quantization.json.
    /// It must be new, empty, or an earlier `quantize` output of the same inputs.
    #[arg(long)]
    pub out: PathBuf,
    #[command(flatten)]
    pub output: super::OutputPolicy,
    #[arg(long, default_value = "flex")]
    pub device: String,
}

pub fn quantize(args: QuantizeArgs) -> Result<()> {
    let policy = PrecisionPolicy::load(&args.precision)?;
    let device = parse_device(&args.device)?;
    let r =
        quantize_checkpoint(&args.model, &policy, &args.calib, args.samples, &args.out, args.output.force, &device)?;
    println!(
        "{}: {} weights and {} op inputs quantized at {} (calibrated on {} conversations)",
        args.out.display(),
        r.weights.len(),
        r.activations,
        policy.name,
        r.calibration_records
    );
    Ok(())
}

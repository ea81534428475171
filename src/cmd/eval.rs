//! `autoneural eval`: per-task accuracy of a checkpoint on JSONL conversations.

use std::path::PathBuf;

use anyhow::{Context, Result};
use autoneural_eval::evaluate::{EvalOptions, evaluate};
use autoneural_model::checkpoint::load_vlm;
use autoneural_model::device::parse_device;
use autoneural_model::quant::runtime::QuantizedRuntime;
use autoneural_model::tokenizer::TextTokenizer;
use clap::Args;

use super::Format;

#[derive(Args, Debug)]
pub struct EvalArgs {
    /// A vision-language checkpoint directory (AutoNeural or LFM2-VL).
    #[arg(long)]
    pub model: PathBuf,
    /// JSONL conversations with `task` labels; repeat for several files.
    #[arg(long = "data", required = true)]
    pub data: Vec<PathBuf>,
    #[arg(long, default_value_t = 16)]
    pub max_new_tokens: usize,
    /// Records per task family (0: all).
    #[arg(long, default_value_t = 0)]
    pub max_per_task: usize,
    #[arg(long, default_value = "flex")]
    pub device: String,
    /// `text` prints the markdown table; `json` the full report.
    #[arg(long, value_enum, default_value_t = Format::Text)]
    pub format: Format,
    /// Also write the JSON report here (a new file, or an earlier `eval` report).
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Replace --out even when it is not an earlier `eval` report.
    #[arg(long)]
    pub force: bool,
}

/// Whether `bytes` are a report `eval --out` wrote.
fn is_eval_report(bytes: &[u8]) -> bool {
    serde_json::from_slice::<serde_json::Value>(bytes)
        .is_ok_and(|v| v.get("tasks").is_some() && v.get("overall_exact_match").is_some())
}

pub fn run(args: EvalArgs) -> Result<()> {
    if let Some(out) = &args.out {
        // Checked before the evaluation, which can take hours.
        let way_out = "choose another --out, or pass --force to replace it";
        autoneural_io::output::check_file(out, is_eval_report, args.force, way_out)?;
    }
    let device = parse_device(&args.device)?;
    let model = load_vlm(&args.model, &device)?;
    let tok = TextTokenizer::from_dir(&args.model, &model.language.config.eos_token_ids)?;
    let options = EvalOptions { max_new_tokens: args.max_new_tokens, max_per_task: args.max_per_task };
    // A quantized checkpoint runs as calibrated (op inputs fake-quantized) and decodes from
    // its packed low-bit weights.
    let (model, quantized) = QuantizedRuntime::for_checkpoint(model, &args.model, None)?;
    let sources = args
        .data
        .iter()
        .map(|f| autoneural_data::SourceSpec::file(f, autoneural_data::OnBadRecord::Fail))
        .collect::<Result<Vec<_>, _>>()?;
    let report = quantized.run(|| evaluate(&model, &tok, &sources, &options))?;
    let json = serde_json::to_string_pretty(&report)?;
    if let Some(out) = &args.out {
        autoneural_io::output::write_file(out, json.as_bytes())
            .with_context(|| format!("writing {}", out.display()))?;
    }
    match args.format {
        super::Format::Text => print!("{}", report.markdown()),
        super::Format::Json => println!("{json}"),
    }
    Ok(())
}

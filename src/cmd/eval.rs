//! `autoneural eval`: per-task accuracy of a checkpoint on conversations, or with
//! `--benchmark` its score on a public benchmark (`eval_benchmark`).

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
    /// Conversations with `task` labels (JSONL, Parquet, WebDataset); repeat for several
    /// files. With --benchmark: the benchmark's file (a VLMEvalKit TSV or an lmms-eval
    /// Parquet).
    #[arg(long = "data", required = true)]
    pub data: Vec<PathBuf>,
    /// Tokens generated per answer at most (default: 16; 64 with --benchmark).
    #[arg(long)]
    pub max_new_tokens: Option<usize>,
    /// Score a public benchmark (AI2D_TEST, MMStar, OCRBench, ChartQA_TEST, DocVQA_VAL,
    /// TextVQA_VAL, MathVista_MINI, or `mcq` / `vqa` for any such TSV, `auto` for the one
    /// the file's name or columns say; aliases as in docs/evaluation.md).
    #[arg(long)]
    pub benchmark: Option<String>,
    #[command(flatten)]
    pub bench: super::eval_benchmark::BenchmarkArgs,
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

/// Whether `bytes` are a report `eval --out` wrote (per-task accuracy, or benchmark scores).
pub(crate) fn is_eval_report(bytes: &[u8]) -> bool {
    serde_json::from_slice::<serde_json::Value>(bytes).is_ok_and(|v| {
        (v.get("tasks").is_some() && v.get("overall_exact_match").is_some())
            || (v.get("benchmark").is_some() && v.get("score").is_some())
            || v.get("precisions").is_some_and(|p| p.is_object())
    })
}

pub fn run(args: EvalArgs) -> Result<()> {
    if let Some(name) = args.benchmark.clone() {
        return super::eval_benchmark::run(args, &name);
    }
    if let Some(out) = &args.out {
        // Checked before the evaluation, which can take hours.
        let way_out = "choose another --out, or pass --force to replace it";
        autoneural_io::output::check_file(out, is_eval_report, args.force, way_out)?;
    }
    let device = parse_device(&args.device)?;
    let model = load_vlm(&args.model, &device)?;
    let tok = TextTokenizer::from_dir(&args.model, &model.language.config.eos_token_ids)?;
    let options = EvalOptions { max_new_tokens: args.max_new_tokens.unwrap_or(16), max_per_task: args.max_per_task };
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

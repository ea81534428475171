//! `autoneural eval --benchmark NAME --data FILE`: a checkpoint's score on a public
//! benchmark, at one or several precisions, with a resumable predictions file per precision
//! (docs/evaluation.md).

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use autoneural_benchmarks::{Benchmark, PromptStyle, Scores, compare};
use autoneural_data::{OnBadRecord, SourceSpec};
use autoneural_experiments::benchmarks::{
    BenchmarkRun, default_style, load_items, model_at, precision_path, score_model,
};
use autoneural_model::device::parse_device;
use autoneural_model::tokenizer::TextTokenizer;
use clap::Args;

use super::Format;
use super::eval::EvalArgs;

#[derive(Args, Debug)]
pub struct BenchmarkArgs {
    /// With --benchmark: the predictions file (VLMEvalKit's layout). Rows already in it are
    /// not generated again (a killed run resumes; predictions made elsewhere are scored).
    /// Default: `<model>_<data file stem>.tsv` here; with several precisions each gets
    /// `.<precision>` before `.tsv`.
    #[arg(long)]
    pub predictions: Option<PathBuf>,
    /// With --benchmark: whose prompts, `vlmevalkit`, `lmms-eval` or `question` (the
    /// question alone). Default: `question` for a conversations file, else `vlmevalkit`.
    #[arg(long)]
    pub prompt_style: Option<PromptStyle>,
    /// With --benchmark: questions decoded together.
    #[arg(long, default_value_t = 8)]
    pub batch: usize,
    /// With --benchmark: precisions to score, comma-separated (`fp32,w8a16,w4a16,autoneural`
    /// or policy files); the scores of each and their differences from the first are
    /// printed. Default: the checkpoint as it is.
    #[arg(long)]
    pub precision: Option<String>,
    /// With --benchmark and --precision: conversations to calibrate the quantized models'
    /// op inputs on (as `quantize` does); without, only the weights are quantized.
    #[arg(long)]
    pub calib: Vec<PathBuf>,
    /// Conversations used from each --calib file.
    #[arg(long, default_value_t = 64)]
    pub samples: usize,
    /// With --benchmark: the first N items only (0: all).
    #[arg(long, default_value_t = 0)]
    pub limit: usize,
}

/// The predictions file of `precision` (the only one, or one of several).
fn predictions_for(args: &EvalArgs, data: &Path, precision: &str, several: bool) -> PathBuf {
    let base = args.bench.predictions.clone().unwrap_or_else(|| {
        let model = args.model.file_name().and_then(|s| s.to_str()).unwrap_or("model");
        let stem = data.file_stem().and_then(|s| s.to_str()).unwrap_or("benchmark");
        PathBuf::from(format!("{model}_{stem}.tsv"))
    });
    if several { precision_path(&base, precision) } else { base }
}

pub fn run(args: EvalArgs, name: &str) -> Result<()> {
    let [data] = args.data.as_slice() else {
        bail!("--benchmark scores one file: give one --data (run eval again for another benchmark)");
    };
    let bench: &'static Benchmark = if name.eq_ignore_ascii_case("auto") {
        Benchmark::infer(data)?
    } else {
        Benchmark::named(name).map_err(anyhow::Error::msg)?
    };
    if args.bench.batch == 0 || args.bench.batch > 256 {
        bail!("--batch {}: give 1 to 256 questions decoded together", args.bench.batch);
    }
    if args.max_per_task != 0 {
        bail!("--max-per-task applies to conversations; with --benchmark use --limit");
    }
    // `None`: the checkpoint as it is.
    let precisions: Vec<Option<String>> = match &args.bench.precision {
        Some(p) => p.split(',').map(|s| s.trim().to_string()).filter(|s| !s.is_empty()).map(Some).collect(),
        None => vec![None],
    };
    if precisions.is_empty() {
        bail!("--precision: give at least one precision (fp32, w8a16, w4a16, autoneural, or a policy file)");
    }
    for p in precisions.iter().flatten() {
        autoneural_model::quant::PrecisionPolicy::load(p).with_context(|| format!("--precision {p}"))?;
    }
    if let Some(out) = &args.out {
        let way_out = "choose another --out, or pass --force to replace it";
        autoneural_io::output::check_file(out, super::eval::is_eval_report, args.force, way_out)?;
    }
    let items = load_items(bench, data, args.bench.limit)?;
    let style = args.bench.prompt_style.unwrap_or_else(|| default_style(data));
    if items.without_image > 0 {
        eprintln!("{}: {} rows without an image left out, as VLMEvalKit does", data.display(), items.without_image);
    }
    let calib =
        args.bench.calib.iter().map(|f| SourceSpec::file(f, OnBadRecord::Fail)).collect::<Result<Vec<_>, _>>()?;
    let device = parse_device(&args.device)?;
    let several = precisions.len() > 1;
    let mut runs: Vec<(String, Scores)> = Vec::new();
    for asked in &precisions {
        let (model, runtime) = model_at(&args.model, asked.as_deref(), &calib, args.bench.samples, &device)?;
        // The label: the precision asked for, or the checkpoint's own.
        let precision = asked.clone().or_else(|| runtime.name.clone()).unwrap_or_else(|| "fp32".into());
        let predictions = predictions_for(&args, data, &precision, several);
        if asked.is_some() && runtime.name.is_some() && runtime.activations.is_empty() {
            eprintln!("{precision}: weights quantized, op inputs in float (give --calib to calibrate them)");
        }
        let tokenizer = TextTokenizer::from_dir(&args.model, &model.language.config.eos_token_ids)?;
        eprintln!(
            "{} at {precision}: {} items, {} prompts, batch {}, predictions in {}",
            bench.name,
            items.items.len(),
            style,
            args.bench.batch,
            predictions.display()
        );
        let run = BenchmarkRun {
            bench,
            items: &items,
            style,
            predictions: &predictions,
            batch: args.bench.batch,
            max_new_tokens: args.max_new_tokens.unwrap_or(64),
            progress: true,
        };
        let scores = score_model(&model, &runtime, &tokenizer, &run)?;
        runs.push((precision, scores));
    }
    let json = match runs.as_slice() {
        [(_, one)] => serde_json::to_string_pretty(one)?,
        all => {
            let by: serde_json::Map<String, serde_json::Value> = all
                .iter()
                .map(|(p, s)| Ok((p.clone(), serde_json::to_value(s)?)))
                .collect::<Result<_, serde_json::Error>>()?;
            serde_json::to_string_pretty(&serde_json::json!({ "precisions": by }))?
        }
    };
    if let Some(out) = &args.out {
        autoneural_io::output::write_file(out, json.as_bytes())
            .with_context(|| format!("writing {}", out.display()))?;
    }
    match args.format {
        Format::Json => println!("{json}"),
        Format::Text => {
            for (p, s) in &runs {
                if several {
                    println!("### {p}\n");
                }
                println!("{}", s.to_markdown());
            }
            if several {
                let refs: Vec<(&str, &Scores)> = runs.iter().map(|(p, s)| (p.as_str(), s)).collect();
                println!("{}", compare(&refs)?);
            }
        }
    }
    Ok(())
}

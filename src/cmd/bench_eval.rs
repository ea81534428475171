//! `autoneural bench eval`: questions per second answering a benchmark, one at a time
//! against several decoded together, in alternating rounds in the same process, with the
//! host beside the table.

use std::path::PathBuf;

use anyhow::Result;
use autoneural_benchmarks::answer::ModelAnswerer;
use autoneural_benchmarks::bench::bench_eval;
use autoneural_benchmarks::{Benchmark, PromptStyle};
use autoneural_experiments::benchmarks::{default_style, load_items, model_at};
use autoneural_model::device::parse_device;
use autoneural_model::tokenizer::TextTokenizer;
use clap::Args;

use super::Format;

#[derive(Args, Debug)]
pub struct EvalBenchArgs {
    /// A vision-language checkpoint directory.
    #[arg(long)]
    pub model: PathBuf,
    /// The benchmark (as `eval --benchmark`; `vqa` for a conversations file).
    #[arg(long, default_value = "vqa")]
    pub benchmark: String,
    /// Its file: a VLMEvalKit TSV, an lmms-eval Parquet, or conversations (JSONL, WebDataset).
    #[arg(long)]
    pub data: PathBuf,
    /// Batch sizes, comma-separated; the first is the baseline.
    #[arg(long, default_value = "1,8")]
    pub batch: String,
    /// Questions answered at each batch size.
    #[arg(long, default_value_t = 64)]
    pub limit: usize,
    #[arg(long, default_value_t = 16)]
    pub max_new_tokens: usize,
    /// Rounds, the batch sizes alternating within each; the table gives medians.
    #[arg(long, default_value_t = 3)]
    pub rounds: usize,
    /// `vlmevalkit`, `lmms-eval` or `question` (default: `question` for conversations).
    #[arg(long)]
    pub prompt_style: Option<PromptStyle>,
    #[arg(long, default_value = "flex")]
    pub device: String,
    #[arg(long, value_enum, default_value_t = Format::Text)]
    pub format: Format,
}

pub fn run(args: EvalBenchArgs) -> Result<()> {
    let batches: Vec<usize> = args
        .batch
        .split(',')
        .map(|b| match b.trim().parse::<usize>() {
            Ok(n) if (1..=256).contains(&n) => Ok(n),
            _ => anyhow::bail!("--batch: {b:?} is not a batch size from 1 to 256 (give e.g. \"1,8\")"),
        })
        .collect::<Result<_>>()?;
    let bench = Benchmark::named(&args.benchmark).map_err(anyhow::Error::msg)?;
    let items = load_items(bench, &args.data, args.limit)?;
    let device = parse_device(&args.device)?;
    let (model, runtime) = model_at(&args.model, None, &[], 0, &device)?;
    let tokenizer = TextTokenizer::from_dir(&args.model, &model.language.config.eos_token_ids)?;
    let answerer = ModelAnswerer { model: &model, tokenizer: &tokenizer, max_new_tokens: args.max_new_tokens };
    let style = args.prompt_style.unwrap_or_else(|| default_style(&args.data));
    let r = runtime.run(|| bench_eval(&answerer, bench, &items.items, style, &batches, args.rounds))?;
    match args.format {
        Format::Json => println!("{}", serde_json::to_string(&r)?),
        Format::Text => {
            println!("{}\n", autoneural_eval::host::Host::detect().line());
            print!("{}", r.markdown());
        }
    }
    Ok(())
}

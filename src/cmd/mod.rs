//! Subcommands.

mod bench;
mod bench_eval;
mod data;
mod eval;
mod eval_benchmark;
mod export;
mod generate;
mod npu;
mod quant;
mod report;
mod run;

use clap::{Args, Parser, Subcommand, ValueEnum};

#[derive(Parser, Debug)]
#[command(
    name = "autoneural",
    version,
    about = "NPU-co-designed vision-language models on Burn (AutoNeural, arXiv 2512.02924)"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
    /// Images with more pixels are refused before they are decoded (a decompression bomb
    /// is a few KB that decodes to gigabytes). Default 64000000, or AUTONEURAL_MAX_IMAGE_PIXELS.
    #[arg(long, global = true, value_name = "PIXELS")]
    pub max_image_pixels: Option<u64>,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Generate text from a checkpoint directory (LFM2, LFM2-VL or AutoNeural), with images
    /// for vision-language models.
    Generate(generate::GenerateArgs),
    /// Run an experiment file: synthetic data, tokenizer, training stages, evaluation and a
    /// report, in one run directory; a file with a [sweep] runs each of its points (skipping
    /// finished runs, resuming interrupted ones) and writes the experiment report.
    Run(run::RunArgs),
    /// Rebuild an experiment's report (results.csv/jsonl, report.md, plots) from its run
    /// directories.
    Report(report::ReportArgs),
    /// Per-task accuracy (exact match, ANLS) of a checkpoint on JSONL conversations.
    Eval(eval::EvalArgs),
    /// Benchmarks (random weights, no checkpoint needed).
    #[command(subcommand)]
    Bench(bench::BenchCommand),
    /// Synthetic datasets and tokenizer training.
    #[command(subcommand)]
    Data(data::DataCommand),
    /// Quantization error (SQNR, relative RMS) of a checkpoint under a precision policy:
    /// per weight, per group, at the encoder's output, and over a bit-width sweep.
    QuantReport(quant::QuantReportArgs),
    /// Post-training quantization by policy: calibrates activation ranges, writes the model
    /// with QDQ weights and quantization.json (read by generate, eval and the exporter).
    Quantize(quant::QuantizeArgs),
    /// ONNX graphs of the language model (embed_tokens, prefill, decode) with explicit
    /// per-layer state and manifest.json, for onnxruntime and Qualcomm's tools.
    Export(export::ExportArgs),
    /// Predicted NPU latency, decode speed and largest context (a roofline cost model on a
    /// device profile; docs/npu_cost_model.md).
    NpuCost(npu::NpuCostArgs),
}

/// `--force`, for the commands that write a directory of their own (docs/reliability.md).
#[derive(Args, Debug, Clone, Copy)]
pub struct OutputPolicy {
    /// Write into --out even when it holds files this command did not write, or its output
    /// from other inputs (files of the same names are replaced, the others kept).
    #[arg(long)]
    pub force: bool,
}

impl OutputPolicy {
    /// What a command that owns its `--out` claims it with: the command's name and the
    /// inputs its output is made from (an output of other inputs is refused unless --force).
    pub fn spec(self, command: &'static str, inputs: serde_json::Value) -> autoneural_io::output::Spec<'static> {
        autoneural_io::output::Spec {
            command,
            inputs: inputs.as_object().cloned().unwrap_or_default(),
            force: self.force,
            way_out: WAY_OUT,
            legacy: None,
        }
    }
}

/// How to get past a refused --out.
pub const WAY_OUT: &str = "choose another --out, or pass --force to write there anyway (files of the same names are \
                           replaced, the others kept)";

#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Text,
    Json,
}

pub fn run(cli: Cli) -> anyhow::Result<()> {
    if let Some(pixels) = cli.max_image_pixels {
        autoneural_model::images::set_max_pixels(pixels);
    }
    match cli.command {
        Command::Generate(args) => generate::run(args),
        Command::Bench(cmd) => bench::run(cmd),
        Command::Data(cmd) => data::run(cmd),
        Command::Run(args) => run::run(args),
        Command::Report(args) => report::run(args),
        Command::Eval(args) => eval::run(args),
        Command::QuantReport(args) => quant::run(args),
        Command::Quantize(args) => quant::quantize(args),
        Command::Export(args) => export::run(args),
        Command::NpuCost(args) => npu::run(args),
    }
}

//! Subcommands.

mod bench;
mod generate;

use clap::{Parser, Subcommand, ValueEnum};

#[derive(Parser, Debug)]
#[command(
    name = "autoneural",
    version,
    about = "NPU-co-designed vision-language models on Burn (AutoNeural, arXiv 2512.02924)"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Generate text from a checkpoint directory (LFM2, LFM2-VL or AutoNeural), with images
    /// for vision-language models.
    Generate(generate::GenerateArgs),
    /// Benchmarks (random weights, no checkpoint needed).
    #[command(subcommand)]
    Bench(bench::BenchCommand),
}

#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Text,
    Json,
}

pub fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Generate(args) => generate::run(args),
        Command::Bench(cmd) => bench::run(cmd),
    }
}

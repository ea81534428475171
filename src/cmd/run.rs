//! `autoneural run EXPERIMENT.toml`: data, tokenizer, training stages, evaluation, report.

use std::path::PathBuf;

use anyhow::Result;
use autoneural_eval::runner::{RunOptions, run_experiment};
use clap::Args;

#[derive(Args, Debug)]
pub struct RunArgs {
    /// The experiment file (see experiments/ and docs/training.md).
    pub experiment: PathBuf,
    /// Continue the run from its latest checkpoint (same data order, optimizer and schedule).
    #[arg(long)]
    pub resume: bool,
    /// Override the experiment's device: `flex` (CPU) or `wgpu`.
    #[arg(long)]
    pub device: Option<String>,
    /// Stop after this many optimizer steps over all stages, with a checkpoint (a planned
    /// interruption; `--resume` continues it).
    #[arg(long)]
    pub stop_after_steps: Option<usize>,
    /// Show a progress bar (or plain lines) instead of burn-train's dashboard on a terminal.
    #[arg(long)]
    pub no_dashboard: bool,
}

pub fn run(args: RunArgs) -> Result<()> {
    let options = RunOptions {
        resume: args.resume,
        device: args.device,
        stop_after_steps: args.stop_after_steps,
        quiet: false,
        dashboard: !args.no_dashboard,
    };
    let out = run_experiment(&args.experiment, &options)?;
    match &out.eval {
        Some(e) => {
            println!("{}", e.markdown());
            println!("report: {}", out.run_dir.join("report.md").display());
            println!("model:  {}", out.final_dir.display());
        }
        None if out.stages.len() < 1 || !out.final_dir.exists() => {
            println!("stopped with a checkpoint under {}; continue with --resume", out.run_dir.display());
        }
        None => println!("model: {}", out.final_dir.display()),
    }
    Ok(())
}

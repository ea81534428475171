//! `autoneural run EXPERIMENT.toml`: data, tokenizer, training stages, evaluation, report;
//! for a file with a `[sweep]`, every run of the sweep and the experiment report.

use std::path::PathBuf;

use anyhow::{Context, Result};
use autoneural_experiments::runner::{RunOptions, run_single};
use autoneural_experiments::sweep::{Expansion, parse_overrides};
use autoneural_experiments::sweep::{SweepOptions, run_point, run_sweep};
use clap::Args;

#[derive(Args, Debug)]
pub struct RunArgs {
    /// The experiment file (see experiments/ and docs/training.md; sweeps: docs/experiments.md).
    pub experiment: PathBuf,
    /// Continue the run from its latest checkpoint (same data order, optimizer and schedule).
    /// Sweeps always continue their interrupted runs and skip finished ones.
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
    /// Override a key of the experiment file, as TOML: `--set seed=3`,
    /// `--set stage.full.steps=200`, `--set 'sweep.axes.seed=[0,1,2]'`. Repeatable.
    #[arg(long = "set", value_name = "KEY=VALUE")]
    pub set: Vec<String>,
    /// Sweeps: runs at a time (each is a process; on a 2-core CPU 1 is fastest).
    #[arg(long, default_value_t = 1)]
    pub jobs: usize,
    /// List the runs (sweep points) with their status and directories; run nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Run only this run of the sweep (by id, as `--dry-run` lists them), in this process.
    #[arg(long)]
    pub only: Option<String>,
}

pub fn run(args: RunArgs) -> Result<()> {
    let overrides = parse_overrides(&args.set).map_err(anyhow::Error::msg)?;
    let options = RunOptions {
        resume: args.resume,
        device: args.device.clone(),
        stop_after_steps: args.stop_after_steps,
        quiet: false,
        dashboard: !args.no_dashboard,
        overrides: overrides.clone(),
    };
    let expansion = Expansion::from_file(&args.experiment, &overrides)?;
    if let Some(id) = &args.only {
        let dir = run_point(&expansion, id, &options)?;
        println!("run: {}", dir.display());
        return Ok(());
    }
    if expansion.is_sweep || args.dry_run {
        let exe = std::env::current_exe().context("locating this program to start the sweep's runs")?;
        let report = run_sweep(
            &expansion,
            &SweepOptions {
                jobs: args.jobs,
                dry_run: args.dry_run,
                exe,
                set: args.set.clone(),
                device: args.device.clone(),
                quiet: false,
            },
        )?;
        if !args.dry_run {
            println!("report: {}", report.display());
        }
        return Ok(());
    }
    let out = run_single(expansion, &options)?;
    match &out.eval {
        Some(e) => {
            println!("{}", e.markdown());
            println!("report: {}", out.run_dir.join("report.md").display());
            println!("model:  {}", out.final_dir.display());
        }
        None if !out.final_dir.exists() => {
            println!("stopped with a checkpoint under {}; continue with --resume", out.run_dir.display());
        }
        None => println!("model: {}", out.final_dir.display()),
    }
    Ok(())
}

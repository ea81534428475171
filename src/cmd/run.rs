//! `autoneural run EXPERIMENT.toml`: data, tokenizer, training stages, evaluation, report;
//! for a file with a `[sweep]`, every run of the sweep and the experiment report.

use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use autoneural_experiments::launch::Launcher;
use autoneural_experiments::launch::nodes::{self, Node};
use autoneural_experiments::launch::slurm::{self, SlurmOptions};
use autoneural_experiments::runner::{RunOptions, run_single};
use autoneural_experiments::sweep::{Expansion, parse_overrides};
use autoneural_experiments::sweep::{SweepOptions, run_point, run_sweep};
use autoneural_model::device::parse_devices;
use autoneural_train::train::signals;
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
    /// Where a sweep's runs execute: `local` (child processes here) or `slurm` (a job array
    /// submitted with sbatch, a task per unfinished run; docs/scaling.md).
    #[arg(long, default_value = "local")]
    pub launcher: Launcher,
    /// An option for sbatch, as typed: `--slurm-arg=--partition=gpu --slurm-arg=--gres=gpu:1`.
    /// Repeatable.
    #[arg(long = "slurm-arg", value_name = "ARG", allow_hyphen_values = true)]
    pub slurm_arg: Vec<String>,
    /// With `--launcher slurm`: every run's state (from its directory) and the tasks Slurm
    /// still holds; submits nothing.
    #[arg(long)]
    pub status: bool,
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
    // One run across machines: every rank but 0 serves its devices to rank 0 and trains nothing.
    if let Some(node) = Node::from_env()? {
        if expansion.is_sweep && args.only.is_none() {
            bail!(
                "rank {} of {}: a run across machines trains one experiment; name a run of the sweep with --only",
                node.rank,
                node.world
            );
        }
        if node.rank != 0 {
            let point = match &args.only {
                Some(id) => expansion.point(id)?,
                None => &expansion.points[0],
            };
            let device = args.device.clone().unwrap_or_else(|| point.experiment.device.clone());
            return nodes::serve(&node, parse_devices(&device)?);
        }
    }
    if let Some(id) = &args.only {
        signals::stop_on_signals().context("installing the SIGTERM handler")?;
        let dir = run_point(&expansion, id, &options)?;
        println!("run: {}", dir.display());
        if !dir.join(autoneural_experiments::sweep::RESULT).is_file() {
            stopped_by_signal(&dir);
        }
        return Ok(());
    }
    let exe = || std::env::current_exe().context("locating this program to start the sweep's runs");
    if args.launcher == Launcher::Slurm {
        let slurm = SlurmOptions {
            exe: exe()?,
            set: args.set.clone(),
            device: args.device.clone(),
            sbatch_args: args.slurm_arg.clone(),
            sbatch: None,
        };
        if args.status {
            print!("{}", slurm::status_text(&expansion)?);
        } else if args.dry_run {
            print!("{}", slurm::dry_run(&expansion, &slurm)?);
        } else {
            slurm::submit(&expansion, &slurm, false)?;
        }
        return Ok(());
    }
    if args.status || !args.slurm_arg.is_empty() {
        bail!("--status and --slurm-arg go with --launcher slurm");
    }
    if expansion.is_sweep || args.dry_run {
        let exe = exe()?;
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
    signals::stop_on_signals().context("installing the SIGTERM handler")?;
    let out = run_single(expansion, &options)?;
    if !out.final_dir.exists() {
        stopped_by_signal(&out.run_dir);
    }
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

/// A run that a signal stopped (with its checkpoint written) ends as the signal would have
/// ended it, 128 + its number, so that a scheduler or a script sees it did not finish.
fn stopped_by_signal(run_dir: &std::path::Path) {
    if let Some(signal) = signals::stop_requested() {
        eprintln!(
            "stopped by {} with a checkpoint under {}; `--resume` (or running the sweep again) continues it",
            signals::name(signal),
            run_dir.display()
        );
        std::process::exit(128 + signal);
    }
}

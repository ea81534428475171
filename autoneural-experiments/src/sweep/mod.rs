//! Running a sweep: every point of an experiment file's `[sweep]` in its own directory,
//! finished runs skipped, interrupted ones resumed from their latest checkpoint, at most
//! `jobs` at a time; then `results.csv`, `results.jsonl` and the experiment report.
//!
//! ```text
//! runs/<experiment>/
//!   <run-id>/            one run (see `runner`): config.toml (the point, as TOML), log.txt,
//!                        metrics.jsonl, checkpoints/, final/, report.md, result.json (when done)
//!   results.csv, results.jsonl, report.md, plots/*.svg
//! ```
//!
//! Each run is a child process (`autoneural run FILE --only ID`), so a crash or a kill stops
//! one run, its output goes to its own `log.txt`, and the next `autoneural run` continues
//! where it stopped.

pub mod expand;
pub mod measure;
pub mod report;
pub mod results;

pub use expand::{Expansion, SweepPoint, parse_overrides};

use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Mutex;

use anyhow::{Context, Result, bail};
use autoneural_train::train::{latest_checkpoint, trainer_state};
use indicatif::{ProgressBar, ProgressStyle};

use crate::runner::{RunOptions, claim_run_dir, ensure_data, run_resolved};

/// The file a finished run writes last.
pub const RESULT: &str = "result.json";
/// The point's configuration, written when the run starts.
pub const CONFIG: &str = "config.toml";

/// Where a run stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RunStatus {
    Finished,
    /// Has a checkpoint (`step` of its stage) but no result.
    Interrupted {
        stage: String,
        step: usize,
    },
    Pending,
}

impl std::fmt::Display for RunStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RunStatus::Finished => write!(f, "finished"),
            RunStatus::Interrupted { stage, step } => {
                write!(f, "interrupted (resumes at stage {stage:?}, step {step})")
            }
            RunStatus::Pending => write!(f, "pending"),
        }
    }
}

/// A point's run directory.
pub fn run_dir(point: &SweepPoint) -> PathBuf {
    point.experiment.out_dir.join(&point.experiment.name)
}

fn point_toml(point: &SweepPoint) -> String {
    toml::to_string(&point.table).expect("a table serializes")
}

/// The run's status; an error when its directory holds a run of another configuration
/// (the file changed since): that work is not overwritten.
pub fn status(point: &SweepPoint) -> Result<RunStatus> {
    let dir = run_dir(point);
    let config = dir.join(CONFIG);
    if config.is_file() {
        let old = autoneural_io::read::read_to_string(&config, autoneural_io::read::CONFIG)?;
        if old != point_toml(point) {
            bail!(
                "{}: this run directory holds a run of a different configuration (the experiment file or \
                 --set changed since it started); move it away to run the new configuration, or restore \
                 the old one",
                dir.display()
            );
        }
    }
    if dir.join(RESULT).is_file() {
        return Ok(RunStatus::Finished);
    }
    match latest_checkpoint(&dir)? {
        Some(ckpt) => {
            let state = trainer_state(&ckpt)?;
            Ok(RunStatus::Interrupted { stage: state.stage_name, step: state.step })
        }
        None => Ok(RunStatus::Pending),
    }
}

#[derive(Debug, Clone)]
pub struct SweepOptions {
    /// Runs at a time.
    pub jobs: usize,
    /// List the runs and their status; run nothing.
    pub dry_run: bool,
    /// This program (children are `exe run FILE --only ID`).
    pub exe: PathBuf,
    /// Passed on to every child: `--set` texts and `--device`.
    pub set: Vec<String>,
    pub device: Option<String>,
    pub quiet: bool,
}

/// One line per run: id, status, directory.
pub fn plan(expansion: &Expansion) -> Result<String> {
    let mut out = format!(
        "{}: {} run(s) of {} ({:?} over {})\n",
        expansion.file.display(),
        expansion.points.len(),
        expansion.name,
        expansion.mode,
        if expansion.axes.is_empty() { "no axes".to_string() } else { expansion.axes.join(", ") }
    );
    for p in &expansion.points {
        out += &format!("  {:<40} {:<12} {}\n", p.id, status(p)?.to_string(), run_dir(p).display());
    }
    Ok(out)
}

/// Runs every unfinished point of `expansion`, then writes the results and the report.
/// Returns the report's path; fails (after the others finished) when a run failed.
pub fn run_sweep(expansion: &Expansion, options: &SweepOptions) -> Result<PathBuf> {
    if options.dry_run {
        print!("{}", plan(expansion)?);
        return Ok(expansion.dir.join("report.md"));
    }
    // The experiment directory holds the runs and the report: this sweep's, locked while it
    // runs (a second `autoneural run` of the same file is turned away).
    let _owner = claim_sweep_dir(&expansion.dir)?;
    let mut todo = VecDeque::new();
    let mut done = 0;
    for p in &expansion.points {
        match status(p)? {
            RunStatus::Finished => done += 1,
            s => todo.push_back((p, s)),
        }
    }
    // Data is shared by the runs: generated once, here, not by concurrent children.
    let mut seen = Vec::new();
    for p in &expansion.points {
        if p.experiment.data.dir.as_ref().is_some_and(|d| !seen.contains(d)) {
            seen.extend(p.experiment.data.dir.clone());
            ensure_data(&p.experiment, options.quiet)?;
        }
    }
    let bar = if options.quiet { ProgressBar::hidden() } else { ProgressBar::new(expansion.points.len() as u64) };
    // Above the bar on a terminal; plain lines otherwise (a hidden bar prints nothing).
    let say = |line: String| {
        if options.quiet {
        } else if bar.is_hidden() {
            eprintln!("{line}");
        } else {
            bar.println(line);
        }
    };
    bar.set_style(
        ProgressStyle::with_template("{prefix} [{bar:30}] {pos}/{len} runs, {elapsed} ({eta} left) {msg}")
            .expect("a valid template")
            .progress_chars("=> "),
    );
    bar.set_prefix(expansion.name.clone());
    bar.set_position(done as u64);
    if done > 0 {
        say(format!("{done} run(s) already finished: skipped"));
    }
    let queue = Mutex::new(todo);
    let failures = Mutex::new(Vec::new());
    std::thread::scope(|s| {
        for _ in 0..options.jobs.max(1) {
            s.spawn(|| {
                loop {
                    let Some((point, state)) = queue.lock().expect("queue").pop_front() else { break };
                    say(format!("{}: {state}, starting", point.id));
                    bar.set_message(point.id.clone());
                    match spawn_run(expansion, point, options) {
                        Ok(()) => say(format!("{}: finished", point.id)),
                        Err(e) => {
                            say(format!("{}: FAILED: {e:#}", point.id));
                            failures.lock().expect("failures").push(format!("{}: {e:#}", point.id));
                        }
                    }
                    bar.inc(1);
                }
            });
        }
    });
    bar.finish_and_clear();
    let report = report::write(&expansion.dir)?;
    let failures = failures.into_inner().expect("failures");
    if !failures.is_empty() {
        bail!(
            "{} of {} runs failed (the others' results are in {}):\n  {}",
            failures.len(),
            expansion.points.len(),
            report.display(),
            failures.join("\n  ")
        );
    }
    Ok(report)
}

/// Runs one point as a child process, its output appended to the run's `log.txt`.
fn spawn_run(expansion: &Expansion, point: &SweepPoint, options: &SweepOptions) -> Result<()> {
    let dir = run_dir(point);
    // Marked as a run before its log goes in; the child takes the lock.
    drop(claim_run_dir(&dir)?);
    let log_path = dir.join("log.txt");
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log_path)
        .with_context(|| format!("opening {}", log_path.display()))?;
    let mut cmd = Command::new(&options.exe);
    cmd.arg("run").arg(&expansion.file).arg("--only").arg(&point.id).arg("--no-dashboard");
    for s in &options.set {
        cmd.arg("--set").arg(s);
    }
    if let Some(d) = &options.device {
        cmd.arg("--device").arg(d);
    }
    // The pixel limit this process was given, whichever way.
    let images = autoneural_model::images::MAX_PIXELS_ENV;
    cmd.env(images, autoneural_model::images::max_pixels().to_string());
    let status = cmd
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        .status()
        .with_context(|| format!("starting {}", options.exe.display()))?;
    if !status.success() {
        let tail = std::fs::read_to_string(&log_path).unwrap_or_default();
        let last: Vec<&str> = tail.lines().rev().take(3).collect();
        bail!(
            "{status}; last lines of {}: {}",
            log_path.display(),
            last.into_iter().rev().collect::<Vec<_>>().join(" | ")
        );
    }
    Ok(())
}

/// Runs point `id` in this process (what a child does): trains (resuming from the latest
/// checkpoint when there is one), measures, and writes `result.json` last.
pub fn run_point(expansion: &Expansion, id: &str, options: &RunOptions) -> Result<PathBuf> {
    let point = expansion.point(id)?;
    if status(point)? == RunStatus::Finished {
        return Ok(run_dir(point));
    }
    let dir = run_dir(point);
    {
        let _owner = claim_run_dir(&dir)?;
        std::fs::write(dir.join(CONFIG), point_toml(point))
            .with_context(|| format!("writing {}", dir.join(CONFIG).display()))?;
    }
    let resume = latest_checkpoint(&dir)?.is_some();
    let outcome = run_resolved(point.experiment.clone(), &expansion.file, &RunOptions { resume, ..options.clone() })?;
    if !outcome.final_dir.is_dir() {
        // stopped on request: the checkpoint is there, no result yet
        return Ok(dir);
    }
    let result = measure::measure(expansion, point, &outcome, options.quiet)?;
    result.write(&dir)?;
    Ok(dir)
}

/// The command a sweep's experiment directory records.
pub const SWEEP_COMMAND: &str = "run (sweep)";

/// Claims a sweep's experiment directory (`<out_dir>/<experiment>`) and locks it while the
/// sweep runs; a directory holding anything but a sweep's runs and report is refused.
pub(crate) fn claim_sweep_dir(dir: &Path) -> Result<autoneural_io::output::Output> {
    // A sweep from before ownership markers: its results, or runs with their configs.
    let legacy = |d: &Path| {
        d.join("results.csv").is_file()
            || std::fs::read_dir(d).is_ok_and(|rd| rd.flatten().any(|e| e.path().join(CONFIG).is_file()))
    };
    let spec = autoneural_io::output::Spec {
        command: SWEEP_COMMAND,
        inputs: serde_json::Map::new(),
        force: false,
        way_out: "give the experiment another name or out_dir, or move the directory away",
        legacy: Some(&legacy),
    };
    Ok(autoneural_io::output::Output::claim(dir, spec)?)
}

/// The run directories under an experiment directory that hold a result, by name.
pub fn finished_runs(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut out: Vec<PathBuf> = std::fs::read_dir(dir)
        .with_context(|| format!("reading {}", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.join(RESULT).is_file())
        .collect();
    out.sort();
    Ok(out)
}

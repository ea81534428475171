//! Sweeps on Slurm: the unfinished runs of a sweep as one job array, a task per run, each
//! task `autoneural run FILE --only ID` (the very command the local runner starts, so a run
//! trains and measures the same on either, bit for bit), then a report job that waits for
//! the array (`--dependency=afterany`) and writes the experiment report.
//!
//! ```text
//! runs/<experiment>/
//!   <run-id>/            as with the local runner: config.toml, log.txt (the task's output),
//!                        checkpoints/, final/, result.json
//!   slurm/array-<k>.sh   the batch script of submission k
//!   slurm/jobs.jsonl     one line per submission: job ids, and the run of each task index
//!   slurm/<job>_<task>.out, slurm/report-<job>.out   what Slurm itself printed
//! ```
//!
//! What the local runner guarantees holds here because the runs are the same processes:
//! finished runs are skipped at submission (they get no task); an interrupted run resumes
//! from its latest checkpoint; a task that Slurm preempts and requeues (`--requeue`) starts
//! again and resumes likewise, and a cancelled one resumes when the sweep is submitted again.
//! SIGTERM (which Slurm sends on `scancel`, preemption and the time limit) stops a run at its
//! next step with a checkpoint (`autoneural_train::train::signals`). A submission while
//! tasks of an earlier one are still queued or running is refused: a run would train twice.
//!
//! Nothing here needs the cluster's configuration: `--slurm-arg` passes options to `sbatch`
//! as they are (`--partition=gpu`, `--gres=gpu:1`, `--time=4:00:00`, `--cpus-per-task=8`).

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};
use serde::{Deserialize, Serialize};

use crate::runner::{claim_run_dir, ensure_data};
use crate::sweep::{Expansion, RunStatus, SweepPoint, claim_sweep_dir, plan, run_dir, status};

/// The Slurm folder of an experiment directory.
pub const SLURM_DIR: &str = "slurm";
/// One line per submission.
pub const JOBS: &str = "jobs.jsonl";

#[derive(Debug, Clone, Default)]
pub struct SlurmOptions {
    /// The program each task runs (this one, `std::env::current_exe`).
    pub exe: PathBuf,
    /// `--set` texts and `--device`, passed on to every task as the local runner does.
    pub set: Vec<String>,
    pub device: Option<String>,
    /// Options for `sbatch`, as typed (`--partition=gpu`); on the array and the report job.
    pub sbatch_args: Vec<String>,
    /// The command that submits (`sbatch`; tests name another).
    pub sbatch: Option<PathBuf>,
}

/// What a submission recorded (a line of `slurm/jobs.jsonl`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Submission {
    /// The array's job id.
    pub job: String,
    /// The report job's id.
    pub report_job: String,
    /// The run of each task index.
    pub runs: Vec<String>,
    pub script: PathBuf,
}

/// `'text'` for a POSIX shell.
fn quote(text: &str) -> String {
    format!("'{}'", text.replace('\'', r"'\''"))
}

fn absolute(path: &Path) -> Result<PathBuf> {
    std::path::absolute(path).with_context(|| format!("{}: cannot make the path absolute", path.display()))
}

/// The batch script of a job array running `points`, a task each.
pub fn batch_script(expansion: &Expansion, points: &[&SweepPoint], options: &SlurmOptions) -> Result<String> {
    let file = absolute(&expansion.file)?;
    let slurm = absolute(&expansion.dir)?.join(SLURM_DIR);
    let cwd = std::env::current_dir().context("reading the current directory")?;
    let mut s = String::from("#!/bin/bash\n");
    s += &format!("# Written by `autoneural run {} --launcher slurm`; one task per run.\n", expansion.file.display());
    s += &format!("#SBATCH --job-name={}\n", quote(&format!("autoneural-{}", expansion.name)));
    s += &format!("#SBATCH --array=0-{}\n", points.len().saturating_sub(1));
    s += &format!("#SBATCH --output={}\n", quote(&slurm.join("%A_%a.out").to_string_lossy()));
    s += &format!("#SBATCH --chdir={}\n", quote(&cwd.to_string_lossy()));
    // A preempted task goes back into the queue (and resumes from its checkpoint there).
    s += "#SBATCH --requeue\n#SBATCH --open-mode=append\n\nset -euo pipefail\n";
    s += "# The run of each task index, and its directory.\nRUNS=(\n";
    for p in points {
        s += &format!("  {}\n", quote(&p.id));
    }
    s += ")\nDIRS=(\n";
    for p in points {
        s += &format!("  {}\n", quote(&absolute(&run_dir(p))?.to_string_lossy()));
    }
    s += ")\nI=${SLURM_ARRAY_TASK_ID:?this script runs as a Slurm job array task}\n";
    let pixels = autoneural_model::images::MAX_PIXELS_ENV;
    s += &format!("export {pixels}={}\n", autoneural_model::images::max_pixels());
    s += "echo \"$(date -Is) task $I (job ${SLURM_JOB_ID:-?}, restart ${SLURM_RESTART_COUNT:-0}) on $(hostname): run ${RUNS[$I]}\" >> \"${DIRS[$I]}/log.txt\"\n";
    // `exec`: the run itself receives Slurm's signals (SIGTERM stops it with a checkpoint).
    let mut cmd = vec![quote(&options.exe.to_string_lossy()), "run".into(), quote(&file.to_string_lossy())];
    cmd.extend(["--only".into(), "\"${RUNS[$I]}\"".into(), "--no-dashboard".into()]);
    for set in &options.set {
        cmd.extend(["--set".into(), quote(set)]);
    }
    if let Some(d) = &options.device {
        cmd.extend(["--device".into(), quote(d)]);
    }
    s += &format!("exec {} >> \"${{DIRS[$I]}}/log.txt\" 2>&1\n", cmd.join(" "));
    Ok(s)
}

/// The submissions recorded in `dir` (an experiment directory), oldest first.
pub fn submissions(dir: &Path) -> Result<Vec<Submission>> {
    let path = dir.join(SLURM_DIR).join(JOBS);
    if !path.is_file() {
        return Ok(Vec::new());
    }
    let text = autoneural_io::read::read_to_string(&path, autoneural_io::read::CONFIG)?;
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .enumerate()
        .map(|(i, l)| {
            serde_json::from_str(l)
                .with_context(|| format!("{} line {}: not a submission record", path.display(), i + 1))
        })
        .collect()
}

/// What [`QueuedTask::run`] says for a submission's report job.
pub const REPORT: &str = "(the report)";

/// A task Slurm still holds (pending, running, requeued, completing...): its run (or
/// [`REPORT`]) and state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueuedTask {
    pub run: String,
    pub task: String,
    pub state: String,
}

/// The tasks and report jobs of `dir`'s submissions that `squeue` still lists. Without `squeue` (a login
/// node without Slurm's tools): an error that says so.
pub fn queued(dir: &Path) -> Result<Vec<QueuedTask>> {
    let subs = submissions(dir)?;
    if subs.is_empty() {
        return Ok(Vec::new());
    }
    // Every job of the cluster's queue, arrays expanded one task per line: an id that Slurm
    // has forgotten is not an error this way (`squeue -j` fails on one).
    let out = Command::new("squeue")
        .args(["-h", "-r", "-o", "%i|%T"])
        .output()
        .context("running squeue (Slurm's tools must be on PATH to see the job's tasks)")?;
    if !out.status.success() {
        bail!("squeue failed: {}", String::from_utf8_lossy(&out.stderr).trim());
    }
    let mut tasks = Vec::new();
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let Some((id, state)) = line.trim().split_once('|') else { continue };
        if subs.iter().any(|s| s.report_job == id) {
            tasks.push(QueuedTask { run: REPORT.into(), task: id.into(), state: state.into() });
            continue;
        }
        let Some((job, index)) = id.split_once('_') else { continue };
        for sub in subs.iter().filter(|s| s.job == job) {
            // A pending array not yet split lists its tasks as `[0-3]`, `[2,5-7%2]`.
            for i in task_indices(index, sub.runs.len()) {
                tasks.push(QueuedTask { run: sub.runs[i].clone(), task: format!("{job}_{i}"), state: state.into() });
            }
        }
    }
    Ok(tasks)
}

/// The task indices of an array task id as squeue prints it: `3`, or `[0-3]`, `[1,4-6%2]`.
fn task_indices(text: &str, n: usize) -> Vec<usize> {
    let inner = text.trim_start_matches('[').trim_end_matches(']');
    let inner = inner.split('%').next().unwrap_or("");
    let mut out = Vec::new();
    for part in inner.split(',') {
        let (a, b) = part.split_once('-').unwrap_or((part, part));
        if let (Ok(a), Ok(b)) = (a.trim().parse::<usize>(), b.trim().parse::<usize>()) {
            out.extend((a..=b).filter(|&i| i < n));
        }
    }
    out
}

/// Submits the sweep's unfinished runs; `None` when every run has finished (the report is
/// written then, as the local runner would).
pub fn submit(expansion: &Expansion, options: &SlurmOptions, quiet: bool) -> Result<Option<Submission>> {
    if !expansion.is_sweep {
        bail!(
            "{}: --launcher slurm submits a sweep's runs as a job array, and this file has no [sweep]; give it \
             one (a single run: `--set 'sweep.axes.seed=[0]'`), or submit `autoneural run` in a batch script \
             of your own",
            expansion.file.display()
        );
    }
    let _owner = claim_sweep_dir(&expansion.dir)?;
    let mut todo = Vec::new();
    for p in &expansion.points {
        if status(p)? != RunStatus::Finished {
            todo.push(p);
        }
    }
    if todo.is_empty() {
        let report = crate::sweep::report::write(&expansion.dir)?;
        if !quiet {
            println!("all {} runs have finished; report: {}", expansion.points.len(), report.display());
        }
        return Ok(None);
    }
    let busy: Vec<QueuedTask> =
        queued(&expansion.dir)?.into_iter().filter(|t| todo.iter().any(|p| p.id == t.run)).collect();
    if !busy.is_empty() {
        let list: Vec<String> = busy.iter().map(|t| format!("{} (task {}, {})", t.run, t.task, t.state)).collect();
        bail!(
            "{} run(s) of {} are still in Slurm's queue from an earlier submission: {}; wait for them \
             (`--status`) or cancel them (`scancel`) first, or they would train twice",
            busy.len(),
            expansion.name,
            list.join(", ")
        );
    }
    // Data is shared by the runs: generated once, here, not by concurrent tasks.
    let mut seen = Vec::new();
    for p in &expansion.points {
        if p.experiment.data.dir.as_ref().is_some_and(|d| !seen.contains(d)) {
            seen.extend(p.experiment.data.dir.clone());
            ensure_data(&p.experiment, quiet)?;
        }
    }
    // Each run directory is marked as a run before its task writes its log there.
    for p in &todo {
        drop(claim_run_dir(&run_dir(p))?);
    }
    let slurm = expansion.dir.join(SLURM_DIR);
    std::fs::create_dir_all(&slurm).with_context(|| format!("creating {}", slurm.display()))?;
    let script = (0..).map(|k| slurm.join(format!("array-{k}.sh"))).find(|p| !p.exists()).expect("a free name");
    std::fs::write(&script, batch_script(expansion, &todo, options)?)
        .with_context(|| format!("writing {}", script.display()))?;
    let sbatch = options.sbatch.clone().unwrap_or_else(|| "sbatch".into());
    let run_sbatch = |args: &[String]| -> Result<String> {
        let out = Command::new(&sbatch)
            .arg("--parsable")
            .args(args)
            .output()
            .with_context(|| format!("running {} (is Slurm installed here?)", sbatch.display()))?;
        if !out.status.success() {
            bail!("sbatch refused the job: {}", String::from_utf8_lossy(&out.stderr).trim());
        }
        // `--parsable` prints `jobid` or `jobid;cluster`.
        let text = String::from_utf8_lossy(&out.stdout);
        let id = text.trim().split(';').next().unwrap_or("").to_string();
        if id.is_empty() || !id.chars().all(|c| c.is_ascii_digit()) {
            bail!("sbatch printed no job id: {:?}", text.trim());
        }
        Ok(id)
    };
    let mut args = options.sbatch_args.clone();
    args.push(script.to_string_lossy().into_owned());
    let job = run_sbatch(&args)?;
    let exe = quote(&options.exe.to_string_lossy());
    let dir = quote(&absolute(&expansion.dir)?.to_string_lossy());
    let mut args = options.sbatch_args.clone();
    args.extend([
        format!("--dependency=afterany:{job}"),
        format!("--job-name=autoneural-{}-report", expansion.name),
        format!("--output={}", absolute(&slurm)?.join("report-%j.out").display()),
        format!("--wrap={exe} report {dir}"),
    ]);
    let report_job = match run_sbatch(&args) {
        Ok(id) => id,
        Err(e) => format!("none ({e:#}; `autoneural report {}` writes it)", expansion.dir.display()),
    };
    let sub = Submission { job, report_job, runs: todo.iter().map(|p| p.id.clone()).collect(), script };
    let jobs = slurm.join(JOBS);
    let mut line = serde_json::to_string(&sub)?;
    line.push('\n');
    use std::io::Write;
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&jobs)
        .and_then(|mut f| f.write_all(line.as_bytes()))
        .with_context(|| format!("recording the submission in {}", jobs.display()))?;
    if !quiet {
        let finished = expansion.points.len() - todo.len();
        println!(
            "submitted {} run(s) of {} as Slurm job array {} (report: job {}){}\n  script: {}\n  progress: autoneural run {} --launcher slurm --status",
            todo.len(),
            expansion.name,
            sub.job,
            sub.report_job,
            if finished > 0 { format!("; {finished} finished run(s) skipped") } else { String::new() },
            sub.script.display(),
            expansion.file.display()
        );
    }
    Ok(Some(sub))
}

/// `--dry-run`: the runs that would be submitted and the batch script, writing nothing.
pub fn dry_run(expansion: &Expansion, options: &SlurmOptions) -> Result<String> {
    let mut todo = Vec::new();
    for p in &expansion.points {
        if status(p)? != RunStatus::Finished {
            todo.push(p);
        }
    }
    let mut out = plan(expansion)?;
    if todo.is_empty() {
        out += "every run has finished: nothing to submit\n";
        return Ok(out);
    }
    let sbatch: Vec<String> = options.sbatch_args.iter().map(|a| quote(a)).collect();
    out += &format!(
        "\nsbatch --parsable {}{}/array-<k>.sh, with:\n\n",
        if sbatch.is_empty() { String::new() } else { format!("{} ", sbatch.join(" ")) },
        expansion.dir.join(SLURM_DIR).display()
    );
    out += &batch_script(expansion, &todo, options)?;
    out += &format!(
        "\nthen a report job: sbatch --dependency=afterany:<array> --wrap 'autoneural report {}'\n",
        expansion.dir.display()
    );
    Ok(out)
}

/// `--status`: every run's state from its directory, and what Slurm still holds of them.
pub fn status_text(expansion: &Expansion) -> Result<String> {
    let mut out = plan(expansion)?;
    let (mut finished, mut interrupted, mut pending) = (0, 0, 0);
    for p in &expansion.points {
        match status(p)? {
            RunStatus::Finished => finished += 1,
            RunStatus::Interrupted { .. } => interrupted += 1,
            RunStatus::Pending => pending += 1,
        }
    }
    out += &format!("{finished} finished, {interrupted} interrupted, {pending} not started\n");
    let subs = submissions(&expansion.dir)?;
    match subs.last() {
        None => out += "never submitted to Slurm\n",
        Some(last) => {
            out += &format!(
                "last submission: job array {} ({} runs), report job {}\n",
                last.job,
                last.runs.len(),
                last.report_job
            );
            match queued(&expansion.dir) {
                Ok(tasks) if tasks.is_empty() => out += "Slurm holds none of its tasks\n",
                Ok(tasks) => {
                    for t in tasks {
                        out += &format!("  {:<12} {:<40} {}\n", t.task, t.run, t.state);
                    }
                }
                Err(e) => out += &format!("Slurm's queue unknown: {e:#}\n"),
            }
        }
    }
    if finished == expansion.points.len() {
        out += &format!("report: {}\n", expansion.dir.join("report.md").display());
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn array_task_ids_as_squeue_prints_them() {
        assert_eq!(task_indices("3", 5), vec![3]);
        assert_eq!(task_indices("[0-3]", 5), vec![0, 1, 2, 3]);
        assert_eq!(task_indices("[1,3-4%2]", 5), vec![1, 3, 4]);
        assert_eq!(task_indices("[7]", 5), Vec::<usize>::new());
    }

    #[test]
    fn quoting_survives_quotes_and_spaces() {
        assert_eq!(quote("a b"), "'a b'");
        assert_eq!(quote("it's"), r"'it'\''s'");
    }
}

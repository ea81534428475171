//! `experiments/ablation_attention_ratio.toml` as a sweep, at a reduced grid and budget: runs
//! in their own directories, a killed sweep resumes (finished runs skipped, the interrupted
//! one continued from its checkpoint), a changed configuration is refused, and the report
//! regenerates from the run directories alone and shows decode speed and state memory
//! falling with the number of attention layers. The same sweep on a real Slurm cluster
//! (`--launcher slurm`; CI starts a single-node one with `scripts/slurm/single-node.sh`)
//! finishes, resumes a cancelled task on resubmission, and equals the local runner bit for
//! bit.

use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

fn autoneural() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_autoneural"));
    c.env("XDG_RUNTIME_DIR", "/tmp");
    c
}

/// The ablation at CI size: 3 of its 5 layer mixes, a few steps per stage, small data.
fn args(tmp: &Path) -> Vec<String> {
    args_with(tmp, "runs", &[])
}

/// [`args`] with the runs under `tmp/<runs>` and more `--set`s (later ones win).
fn args_with(tmp: &Path, runs: &str, more: &[&str]) -> Vec<String> {
    let mut a = vec!["run".to_string(), "experiments/ablation_attention_ratio.toml".into(), "--no-dashboard".into()];
    for set in [
        format!("out_dir=\"{}\"", tmp.join(runs).display()),
        format!("data.dir=\"{}\"", tmp.join("data").display()),
        "data.synth.samples=24".into(),
        "device=\"flex\"".into(),
        "sweep.axes.model.language.attention_layers=[0,3,6]".into(),
        "stage.vision.steps=2".into(),
        "stage.vision.micro_batch=4".into(),
        "data.synth.image_size=64".into(),
        "model.image_size=64".into(),
        "stage.connector.steps=2".into(),
        "stage.full.steps=3".into(),
        "stage.instruct.steps=2".into(),
        "stage.qat.steps=2".into(),
        "stage.qat.val_batches=1".into(),
        "stage.connector.micro_batch=4".into(),
        "stage.full.micro_batch=4".into(),
        "stage.instruct.micro_batch=4".into(),
        "stage.qat.micro_batch=4".into(),
        "eval.max_per_task=1".into(),
        "eval.max_new_tokens=4".into(),
        "measure.contexts=[64,4096]".into(),
        "measure.decode_tokens=24".into(),
        "measure.resolutions=[64]".into(),
        "measure.sqnr_bits=[8]".into(),
        "measure.sqnr_images=2".into(),
    ]
    .into_iter()
    .chain(more.iter().map(|m| m.to_string()))
    {
        a.push("--set".into());
        a.push(set);
    }
    a
}

fn run(tmp: &Path, extra: &[&str]) -> Output {
    autoneural().args(args(tmp)).args(extra).output().unwrap()
}

fn text(o: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr))
}

#[test]
fn a_killed_sweep_resumes_and_its_report_shows_state_and_speed_falling_with_fewer_attention_layers() {
    let tmp = tempfile::tempdir().unwrap();
    let exp_dir = tmp.path().join("runs/ablation_attention_ratio");
    let first = exp_dir.join("attention_layers=0");

    // The plan: three runs, none started.
    let plan = run(tmp.path(), &["--dry-run"]);
    assert!(plan.status.success(), "{}", text(&plan));
    let plan = text(&plan);
    assert_eq!(plan.matches(" pending ").count(), 3, "{plan}");

    // Kill the whole sweep (parent and child) once the first run has a checkpoint.
    let mut child = autoneural()
        .args(args(tmp.path()))
        .process_group(0)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let t0 = Instant::now();
    while !first.join("checkpoints/latest").is_file() {
        assert!(t0.elapsed() < Duration::from_secs(600), "no checkpoint after 10 minutes");
        assert!(child.try_wait().unwrap().is_none(), "the sweep ended before it could be killed");
        std::thread::sleep(Duration::from_millis(50));
    }
    // (procps kill needs `--` before a negative id, the process group)
    let killed = Command::new("kill").args(["-s", "KILL", "--", &format!("-{}", child.id())]).status().unwrap();
    assert!(killed.success());
    child.wait().unwrap();
    assert!(!first.join("result.json").exists());
    let plan = text(&run(tmp.path(), &["--dry-run"]));
    assert!(plan.contains("interrupted (resumes at stage"), "{plan}");

    // Run again: the interrupted run continues from its checkpoint, the others start.
    let out = run(tmp.path(), &[]);
    assert!(out.status.success(), "{}", text(&out));
    let log = std::fs::read_to_string(first.join("log.txt")).unwrap();
    assert!(log.contains("resuming from"), "{log}");
    for id in ["attention_layers=0", "attention_layers=3", "attention_layers=6"] {
        assert!(exp_dir.join(id).join("result.json").is_file(), "{id}");
        assert!(exp_dir.join(id).join("config.toml").is_file(), "{id}");
    }

    // Once more: everything is finished, nothing runs.
    let again = run(tmp.path(), &[]);
    assert!(again.status.success() && text(&again).contains("3 run(s) already finished: skipped"), "{}", text(&again));

    // The same runs under another configuration are refused, not overwritten.
    let changed = run(tmp.path(), &["--set", "stage.full.steps=4"]);
    assert!(!changed.status.success());
    assert!(text(&changed).contains("holds a run of a different configuration"), "{}", text(&changed));

    // The report, from the run directories alone.
    for f in ["results.csv", "results.jsonl", "report.md"] {
        std::fs::remove_file(exp_dir.join(f)).unwrap();
    }
    std::fs::remove_dir_all(exp_dir.join("plots")).unwrap();
    let rep = autoneural().args(["report", exp_dir.to_str().unwrap()]).output().unwrap();
    assert!(rep.status.success(), "{}", text(&rep));
    let csv = std::fs::read_to_string(exp_dir.join("results.csv")).unwrap();
    assert_eq!(csv.lines().count(), 4, "{csv}");
    let md = std::fs::read_to_string(exp_dir.join("report.md")).unwrap();
    for needle in ["## Accuracy", "## Decoding", "predicted by the roofline cost model", "## Encoder output SQNR"] {
        assert!(md.contains(needle), "{needle} missing:\n{md}");
    }
    for plot in ["accuracy_vs_attention_ratio", "decode_speed_vs_context", "state_memory_vs_context", "sqnr_vs_bits"] {
        assert!(exp_dir.join("plots").join(format!("{plot}.svg")).is_file(), "{plot}");
    }

    // Replacing attention layers by conv layers: less state, faster decoding at 4096.
    let mut rows: Vec<serde_json::Value> = std::fs::read_to_string(exp_dir.join("results.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    rows.sort_by_key(|r| r["model"]["attention_layers"].as_u64().unwrap());
    let at = |r: &serde_json::Value, key: &str| {
        r["decode"].as_array().unwrap().iter().find(|d| d["context"] == 4096).unwrap()[key].as_f64().unwrap()
    };
    let state: Vec<f64> = rows.iter().map(|r| at(r, "state_bytes")).collect();
    let speed: Vec<f64> = rows.iter().map(|r| at(r, "tok_s")).collect();
    assert!(state[0] < state[1] && state[1] < state[2], "state bytes at 4096 by 0/3/6 attention layers: {state:?}");
    assert!(speed[0] > speed[2], "decode tok/s at 4096 by 0/3/6 attention layers: {speed:?}");
    assert!(rows.iter().all(|r| r["npu"]["decode_tok_s"].is_number()), "{rows:?}");
}

/// Whether this machine has a Slurm cluster to submit to: `sinfo` answers. CI starts one and
/// sets AUTONEURAL_SLURM=1, which makes its absence a failure.
fn slurm_available() -> bool {
    let up = Command::new("sinfo").arg("-h").output().is_ok_and(|o| o.status.success());
    if !up && std::env::var_os("AUTONEURAL_SLURM").is_some() {
        panic!("AUTONEURAL_SLURM is set but Slurm does not answer (bash scripts/slurm/single-node.sh start)");
    }
    up
}

/// Waits (up to 10 minutes) until `done` holds for the sweep's `--status` text.
fn wait_status(args: &[String], done: impl Fn(&str) -> bool) -> String {
    let t0 = Instant::now();
    loop {
        let out = autoneural().args(args).args(["--launcher", "slurm", "--status"]).output().unwrap();
        let text = text(&out);
        assert!(out.status.success(), "{text}");
        if done(&text) {
            return text;
        }
        assert!(t0.elapsed() < Duration::from_secs(600), "still waiting after 10 minutes:\n{text}");
        std::thread::sleep(Duration::from_millis(500));
    }
}

#[test]
fn a_sweep_on_slurm_resumes_a_cancelled_task_and_equals_the_local_runner() {
    if !slurm_available() {
        eprintln!("skipped: no Slurm cluster here (sinfo does not answer); CI starts one");
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    // Two runs; the first is cancelled inside its longest stage.
    let more = ["sweep.axes.model.language.attention_layers=[0,6]", "stage.full.steps=24"];
    let slurm_args = args_with(tmp.path(), "slurm", &more);
    let exp_dir = tmp.path().join("slurm/ablation_attention_ratio");
    let first = exp_dir.join("attention_layers=0");

    // --dry-run prints the batch script and writes nothing.
    let dry = autoneural().args(&slurm_args).args(["--launcher", "slurm", "--dry-run"]).output().unwrap();
    let dry_text = text(&dry);
    assert!(dry.status.success(), "{dry_text}");
    assert!(dry_text.contains("#SBATCH --array=0-1") && dry_text.contains("--only"), "{dry_text}");
    assert!(!exp_dir.exists(), "--dry-run wrote {}", exp_dir.display());

    let submit = || autoneural().args(&slurm_args).args(["--launcher", "slurm"]).output().unwrap();
    let out = submit();
    assert!(out.status.success() && text(&out).contains("submitted 2 run(s)"), "{}", text(&out));
    // A second submission while the first's tasks are queued is refused.
    let again = submit();
    assert!(!again.status.success() && text(&again).contains("still in Slurm's queue"), "{}", text(&again));

    // Cancel the array once the first run trains its "full" stage.
    let t0 = Instant::now();
    while !std::fs::read_to_string(first.join("log.txt")).unwrap_or_default().contains("stage 3/5 \"full\"") {
        assert!(t0.elapsed() < Duration::from_secs(600), "the first run did not reach its full stage");
        std::thread::sleep(Duration::from_millis(100));
    }
    let jobs = std::fs::read_to_string(exp_dir.join("slurm/jobs.jsonl")).unwrap();
    let job: serde_json::Value = serde_json::from_str(jobs.lines().next().unwrap()).unwrap();
    let cancelled = Command::new("scancel").arg(job["job"].as_str().unwrap()).status().unwrap();
    assert!(cancelled.success());
    let status = wait_status(&slurm_args, |t| t.contains("Slurm holds none of its tasks"));
    assert!(status.contains("interrupted (resumes at stage \"full\""), "{status}");
    let log = std::fs::read_to_string(first.join("log.txt")).unwrap();
    assert!(log.contains("stopped by SIGTERM with a checkpoint"), "{log}");

    // Submitted again: the cancelled run resumes, the other starts, the report follows.
    let out = submit();
    assert!(out.status.success() && text(&out).contains("submitted 2 run(s)"), "{}", text(&out));
    let status = wait_status(&slurm_args, |t| t.contains("2 finished") && t.contains("Slurm holds none"));
    assert!(status.contains("report:"), "{status}");
    assert!(std::fs::read_to_string(first.join("log.txt")).unwrap().contains("resuming from"));
    assert!(exp_dir.join("report.md").is_file() && exp_dir.join("results.csv").is_file());
    // Submitting a finished sweep submits nothing.
    let done = submit();
    assert!(done.status.success() && text(&done).contains("all 2 runs have finished"), "{}", text(&done));

    // The local runner, same sweep: the same models and measurements, bit for bit (all but
    // the wall-clock timings).
    let local = autoneural().args(args_with(tmp.path(), "local", &more)).output().unwrap();
    assert!(local.status.success(), "{}", text(&local));
    for id in ["attention_layers=0", "attention_layers=6"] {
        let (a, b) = (exp_dir.join(id), tmp.path().join("local/ablation_attention_ratio").join(id));
        let weights = |d: &Path| std::fs::read(d.join("final/model.safetensors")).unwrap();
        assert!(weights(&a) == weights(&b), "{id}: Slurm and local runs trained different models");
        let result = |d: &Path| {
            let mut r: serde_json::Value =
                serde_json::from_str(&std::fs::read_to_string(d.join("result.json")).unwrap()).unwrap();
            r["train_seconds"] = serde_json::Value::Null;
            for timed in ["decode", "encoder_latency"] {
                for row in r[timed].as_array_mut().unwrap() {
                    for key in ["tok_s", "cpu_ms"] {
                        row.as_object_mut().unwrap().remove(key);
                    }
                }
            }
            r
        };
        assert_eq!(result(&a), result(&b), "{id}: Slurm and local results differ");
    }
}

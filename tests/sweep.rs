//! `experiments/ablation_attention_ratio.toml` as a sweep, at a reduced grid and budget: runs
//! in their own directories, a killed sweep resumes (finished runs skipped, the interrupted
//! one continued from its checkpoint), a changed configuration is refused, and the report
//! regenerates from the run directories alone and shows decode speed and state memory
//! falling with the number of attention layers.

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
    let mut a = vec!["run".to_string(), "experiments/ablation_attention_ratio.toml".into(), "--no-dashboard".into()];
    for set in [
        format!("out_dir=\"{}\"", tmp.join("runs").display()),
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
    ] {
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

//! Experiments on `[[data.source]]` data: the same records as JSONL, Parquet and
//! WebDataset train to the same weights (same seed, same order), and a run interrupted
//! inside a shuffled, streamed source resumes where its reader stopped, reaching the
//! weights of the uninterrupted run.

use std::path::{Path, PathBuf};

use autoneural_experiments::runner::{RunOptions, run_experiment};

fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/data")
}

/// An experiment training on one source, `source` its TOML lines after `name`.
fn experiment(dir: &Path, source: &str) -> PathBuf {
    let text = format!(
        r#"
name = "src"
seed = 1
out_dir = "{out}"
[data]
vocab_size = 320
[[data.source]]
name = "shapes"
{source}
[model.vision]
preset = "mobilenetv5_tiny"
[model.language]
preset = "lfm2-nano"
[[stage]]
name = "full"
train = ["vision", "projector", "language"]
steps = 4
lr = 1e-3
micro_batch = 2
grad_accum = 2
checkpoint_every = 1
val_every = 0
"#,
        out = dir.join("runs").display(),
    );
    let path = dir.join("exp.toml");
    std::fs::write(&path, text).unwrap();
    path
}

fn quiet() -> RunOptions {
    RunOptions { quiet: true, ..Default::default() }
}

fn final_weights(run: &autoneural_experiments::runner::RunOutcome) -> Vec<u8> {
    std::fs::read(run.final_dir.join("model.safetensors")).unwrap()
}

#[test]
fn jsonl_parquet_and_webdataset_train_to_the_same_weights() {
    let data = fixtures();
    let mut weights = Vec::new();
    for (name, source) in [
        ("jsonl", format!("path = \"{}\"", data.join("records.jsonl").display())),
        ("parquet", format!("path = \"{}\"", data.join("records.parquet").display())),
        ("webdataset", format!("path = \"{}\"", data.join("shards/records-*.tar").display())),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let run = run_experiment(&experiment(dir.path(), &source), &quiet()).unwrap();
        assert_eq!(run.stages[0].steps, 4, "{name}");
        weights.push((name, final_weights(&run)));
    }
    for (name, w) in &weights[1..] {
        assert!(*w == weights[0].1, "{name} trained to other weights than JSONL");
    }
}

#[test]
fn a_streamed_shuffled_run_resumes_where_its_reader_stopped() {
    let source = format!("path = \"{}\"\nshuffle = 5\nseed = 3", fixtures().join("records.parquet").display());
    let a = tempfile::tempdir().unwrap();
    let full = run_experiment(&experiment(a.path(), &source), &quiet()).unwrap();

    let b = tempfile::tempdir().unwrap();
    let exp = experiment(b.path(), &source);
    run_experiment(&exp, &RunOptions { stop_after_steps: Some(2), ..quiet() }).unwrap();
    // The checkpoint holds the reader's place (a file, a row, a shuffle block), not a
    // count of records to replay.
    let state_path = b.path().join("runs/src/checkpoints/step-000002/trainer_state.json");
    let state: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&state_path).unwrap()).unwrap();
    let position = &state["sampler"]["positions"][0];
    assert!(position["read"]["offset"].is_u64() && position["block"].is_u64(), "{state}");
    assert_eq!(state["sampler"]["drawn"][0], 8, "two steps of 2 x 2 records");
    let resumed = run_experiment(&exp, &RunOptions { resume: true, ..quiet() }).unwrap();
    assert!(final_weights(&resumed) == final_weights(&full), "the resumed run differs from the uninterrupted one");
}

#[test]
fn eval_benchmarks_are_scored_after_training_into_the_run() {
    let dir = tempfile::tempdir().unwrap();
    let mcq = fixtures().join("../benchmarks/mcq.tsv");
    let source = format!("path = \"{}\"", fixtures().join("records.jsonl").display());
    let exp = experiment(dir.path(), &source);
    let text = std::fs::read_to_string(&exp).unwrap().replace("steps = 4", "steps = 1")
        + &format!(
            "[eval]\nmax_new_tokens = 4\nbenchmarks = [{{ name = \"mcq\", data = \"{}\", limit = 3, batch = 2 }}]\n",
            mcq.display()
        );
    std::fs::write(&exp, text).unwrap();
    let run = run_experiment(&exp, &quiet()).unwrap();
    assert_eq!(run.benchmarks.len(), 1);
    assert_eq!(run.benchmarks[0].n, 3);
    let predictions = std::fs::read_to_string(run.run_dir.join("benchmarks/mcq.tsv")).unwrap();
    assert_eq!(predictions.lines().count(), 4, "{predictions}");
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(run.run_dir.join("benchmarks.json")).unwrap()).unwrap();
    assert_eq!(json[0]["benchmark"], "mcq");
    let report = std::fs::read_to_string(run.run_dir.join("report.md")).unwrap();
    assert!(report.contains("## Benchmarks"), "{report}");
    // A name that is no benchmark is refused by key before anything runs.
    let bad = std::fs::read_to_string(&exp).unwrap().replace("name = \"mcq\"", "name = \"mmmu\"");
    std::fs::write(&exp, bad).unwrap();
    let err = run_experiment(&exp, &quiet()).err().unwrap();
    assert!(format!("{err:#}").contains("eval.benchmarks[0].name"), "{err:#}");
    // A missing file is named before training, not after it.
    let dir = tempfile::tempdir().unwrap();
    let exp2 = experiment(dir.path(), &source);
    let text =
        std::fs::read_to_string(&exp2).unwrap() + "[eval]\nbenchmarks = [{ name = \"mcq\", data = \"missing.tsv\" }]\n";
    std::fs::write(&exp2, text).unwrap();
    let err = format!("{:#}", run_experiment(&exp2, &quiet()).err().unwrap());
    assert!(err.contains("eval.benchmarks[0].data") && err.contains("missing.tsv"), "{err}");
    assert!(!dir.path().join("runs/src/checkpoints").exists(), "trained before finding the file missing");
}

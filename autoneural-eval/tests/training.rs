//! Training end to end on a tiny model and the synthetic data: stage freezing, exact
//! resumption, the NaN stop, and experiment-file errors.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use autoneural_eval::runner::{RunOptions, run_experiment};
use autoneural_model::checkpoint::apply::{Identity, collect_tensors};
use autoneural_model::checkpoint::load_vlm;
use autoneural_model::tokenizer::TextTokenizer;
use autoneural_train::config::{Experiment, Part};
use autoneural_train::data::mixture::BadRecordPolicy;
use autoneural_train::synth::{Family, SynthOptions, synthesize};
use autoneural_train::tokenizer_train::train_tokenizer;
use autoneural_train::train::{Batcher, MetricsLog, StageRun, build_model, latest_checkpoint, run_stage};
use burn::module::Module;
use burn::tensor::Device;

/// Synthetic data and a tokenizer, made once for all tests.
fn shared() -> &'static (tempfile::TempDir, PathBuf, PathBuf) {
    static DATA: OnceLock<(tempfile::TempDir, PathBuf, PathBuf)> = OnceLock::new();
    DATA.get_or_init(|| {
        let tmp = tempfile::tempdir().unwrap();
        let data = tmp.path().join("data");
        synthesize(&SynthOptions {
            out: data.clone(),
            samples: 8,
            image_size: 64,
            seed: 3,
            families: Family::ALL.to_vec(),
        })
        .unwrap();
        let tok = tmp.path().join("tokenizer");
        let files: Vec<PathBuf> = Family::ALL.iter().map(|f| data.join(f.name()).join("train.jsonl")).collect();
        train_tokenizer(&files, 320, &tok).unwrap();
        (tmp, data, tok)
    })
}

fn experiment(out: &Path, stages: &str) -> String {
    experiment_with_norm(out, stages, "rms")
}

/// `norm`: the MobileNetV5 norm ("rms" or "batch", whose running statistics are state that
/// freezing and resuming must also keep exact).
fn experiment_with_norm(out: &Path, stages: &str, norm: &str) -> String {
    let (_, data, tok) = shared();
    format!(
        r#"
name = "t"
seed = 1
out_dir = "{out}"
[data]
dir = "{data}"
tokenizer = "{tok}"
[model.vision]
preset = "mobilenetv5_tiny"
norm = "{norm}"
[model.language]
preset = "lfm2-nano"
[eval]
max_per_task = 2
max_new_tokens = 4
{stages}"#,
        out = out.display(),
        data = data.display(),
        tok = tok.display()
    )
}

const TWO_STAGES: &str = r#"
[[stage]]
name = "connector"
train = ["projector"]
steps = 2
lr = 1e-3
micro_batch = 2
grad_accum = 2
[[stage]]
name = "full"
train = ["vision", "projector", "language"]
steps = 3
lr = 1e-3
warmup_steps = 1
micro_batch = 2
grad_accum = 2
weight_decay = 0.1
checkpoint_every = 1
"#;

fn write_experiment(dir: &Path, stages: &str, norm: &str) -> PathBuf {
    let path = dir.join("exp.toml");
    std::fs::write(&path, experiment_with_norm(&dir.join("runs"), stages, norm)).unwrap();
    path
}

/// Every float parameter by key.
fn weights<M: Module>(m: &M) -> BTreeMap<String, Vec<f32>> {
    collect_tensors(m, &Identity).into_iter().map(|(key, _, values)| (key, values)).collect()
}

#[test]
fn frozen_parts_stay_bit_identical() {
    for norm in ["rms", "batch"] {
        frozen_parts_stay_bit_identical_with(norm);
    }
}

fn frozen_parts_stay_bit_identical_with(norm: &str) {
    let (_, data, tok_dir) = shared();
    let tmp = tempfile::tempdir().unwrap();
    let exp = Experiment::from_toml(&experiment_with_norm(tmp.path(), TWO_STAGES, norm)).unwrap();
    let device = Device::flex().autodiff();
    let plain = TextTokenizer::from_dir(tok_dir, &[]).unwrap();
    let model = build_model(&exp.model, &plain, 5, &device).unwrap();
    let before = weights(&model);
    let size = model.config.encoder.image_size();
    let batcher = Batcher {
        tokenizer: TextTokenizer::from_dir(tok_dir, &model.language.config.eos_token_ids).unwrap(),
        image_tokens: model.image_tokens(),
        tokens_per_image: model.config.tokens_per_image(size, size),
        preprocess: model.config.preprocess.clone(),
        pad_id: 0,
        device: device.clone(),
    };
    let stage = &exp.stages[0];
    assert_eq!(stage.train, vec![Part::Projector]);
    let run = StageRun {
        run_dir: tmp.path(),
        data_dir: data,
        tokenizer_dir: tok_dir,
        batcher: &batcher,
        index: 0,
        count: 1,
        stage,
        on_bad_record: BadRecordPolicy::Fail,
        global_step_base: 0,
        keep: 1,
        stop_after: None,
    };
    let mut log = MetricsLog::open(tmp.path()).unwrap();
    log.echo = false;
    let (model, report) = run_stage(model, &run, None, &mut log).unwrap();
    assert!(report.complete && report.steps == 2);
    let after = weights(&model);
    let mut changed = 0;
    for (path, w) in &before {
        if path.starts_with("multi_modal_projector") {
            changed += usize::from(&after[path] != w);
        } else {
            assert!(after[path] == *w, "{norm}: frozen parameter {path} changed");
        }
    }
    assert_eq!(changed, 4, "every projector tensor (2 weights, 2 biases) should move");
    assert!(report.frozen_params > report.trainable_params);
}

#[test]
fn resumed_run_matches_uninterrupted_run() {
    // Batch norm: its running statistics must also resume exactly.
    let a = tempfile::tempdir().unwrap();
    let quiet = RunOptions { quiet: true, ..Default::default() };
    let full = run_experiment(&write_experiment(a.path(), TWO_STAGES, "batch"), &quiet).unwrap();
    assert_eq!(full.stages.len(), 2);
    let eval = full.eval.as_ref().unwrap();
    assert_eq!(eval.tasks.len(), Family::ALL.len());
    assert!(full.run_dir.join("report.md").is_file());

    // Interrupted inside stage 2 (after 2 + 1 steps), then resumed.
    let b = tempfile::tempdir().unwrap();
    let exp_b = write_experiment(b.path(), TWO_STAGES, "batch");
    let stopped = run_experiment(&exp_b, &RunOptions { stop_after_steps: Some(3), ..quiet.clone() }).unwrap();
    assert!(stopped.eval.is_none() && !stopped.final_dir.exists());
    // Without --resume an existing run is refused rather than overwritten.
    let err = run_experiment(&exp_b, &quiet).err().unwrap().to_string();
    assert!(err.contains("--resume"), "{err}");
    let resumed = run_experiment(&exp_b, &RunOptions { resume: true, ..quiet }).unwrap();
    assert_eq!(resumed.stages.len(), 2);

    let device = Device::flex();
    let w_full = weights(&load_vlm(&full.final_dir, &device).unwrap());
    let w_resumed = weights(&load_vlm(&resumed.final_dir, &device).unwrap());
    assert_eq!(w_full.len(), w_resumed.len());
    for (k, v) in &w_full {
        assert!(w_resumed[k] == *v, "{k} differs between the resumed and the uninterrupted run");
    }
}

#[test]
fn non_finite_loss_stops_and_keeps_the_last_checkpoint() {
    let tmp = tempfile::tempdir().unwrap();
    let stages = r#"
[[stage]]
name = "explode"
train = ["vision", "projector", "language"]
steps = 6
lr = 1e30
micro_batch = 2
grad_clip = 0
checkpoint_every = 1
"#;
    let path = write_experiment(tmp.path(), stages, "rms");
    let err = run_experiment(&path, &RunOptions { quiet: true, ..Default::default() }).err().unwrap();
    let msg = format!("{err:#}");
    assert!(msg.contains("training stopped") && msg.contains("--resume"), "{msg}");
    let run_dir = tmp.path().join("runs").join("t");
    let last = latest_checkpoint(&run_dir).unwrap().expect("the checkpoint before the blow-up");
    load_vlm(&last, &Device::flex()).unwrap();
    assert!(!run_dir.join("final").exists());
}

#[test]
fn experiment_errors_name_the_key() {
    let cases = [
        (
            "name = \"x\"\n[data]\ndir = \"d\"\n[model.vision]\npreset = \"mobilenetv5_tiny\"\n[model.language]\npreset = \"lfm2-nano\"\n",
            "stage",
        ),
        (
            &experiment(
                Path::new("o"),
                "[[stage]]\nname = \"s\"\ntrain = [\"projector\"]\nsteps = 1\nlr = 1e-3\nbogus = 1\n",
            ),
            "bogus",
        ),
        (
            &experiment(Path::new("o"), "[[stage]]\nname = \"s\"\ntrain = [\"wheels\"]\nsteps = 1\nlr = 1e-3\n"),
            "wheels",
        ),
        (&experiment(Path::new("o"), "[[stage]]\nname = \"s\"\ntrain = [\"projector\"]\nlr = 1e-3\n"), "steps"),
        (&experiment(Path::new("o"), "[[stage]]\nname = \"s\"\ntrain = [\"projector\"]\nsteps = 1\nlr = -1.0\n"), "lr"),
        (
            &experiment(
                Path::new("o"),
                "[[stage]]\nname = \"q\"\ntrain = [\"language\"]\nsteps = 1\nlr = 1e-3\n[stage.quantization]\nbits = 4\n",
            ),
            "quantization",
        ),
        (
            &experiment_with_norm(
                Path::new("o"),
                "[[stage]]\nname = \"s\"\ntrain = [\"projector\"]\nsteps = 1\nlr = 1e-3\n",
                "layer",
            ),
            "norm",
        ),
    ];
    for (text, key) in cases {
        let err = Experiment::from_toml(text).unwrap_err();
        assert!(err.contains(key), "expected {key:?} in: {err}");
    }
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("broken.toml");
    std::fs::write(&path, "name = \"x\"\n[data\n").unwrap();
    let err = Experiment::from_file(&path).unwrap_err().to_string();
    assert!(err.contains("broken.toml") && err.contains("line 2"), "{err}");
}

#[test]
fn the_shipped_experiments_parse() {
    for name in ["quickstart", "paper"] {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join("experiments").join(format!("{name}.toml"));
        let exp = Experiment::from_file(&path).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert!(!exp.stages.is_empty());
    }
}

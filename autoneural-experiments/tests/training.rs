//! Training end to end on a tiny model and the synthetic data: stage freezing, exact
//! resumption, the NaN stop, and experiment-file errors.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use autoneural_data::mixture::BadRecordPolicy;
use autoneural_data::synth::{Family, SynthOptions, synthesize};
use autoneural_data::tokenizer_train::train_tokenizer;
use autoneural_data::{Catalog, MixtureSampler, OnBadRecord, SourceSpec, Split};
use autoneural_experiments::experiment::Experiment;
use autoneural_experiments::runner::{RunOptions, run_experiment};
use autoneural_experiments::sweep::Expansion;
use autoneural_model::checkpoint::apply::{Identity, collect_tensors};
use autoneural_model::checkpoint::{load_vlm, save_vlm};
use autoneural_model::tokenizer::TextTokenizer;
use autoneural_model::vlm::VisionLanguageModel;
use autoneural_train::config::Part;
use autoneural_train::train::parallel::Replicas;
use autoneural_train::train::trainer::{optimizer, stage_recipe};
use autoneural_train::train::{
    Batcher, MetricsLog, StageReport, StageRun, build_model, latest_checkpoint, run_stage, set_trainable,
};
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
        let files: Vec<SourceSpec> = Family::ALL
            .iter()
            .map(|f| SourceSpec::file(&data.join(f.name()).join("train.jsonl"), OnBadRecord::Fail).unwrap())
            .collect();
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

/// A model built from `exp` (seed 5) and a batcher for it, on the autodiff flex device.
fn model_and_batcher(exp: &Experiment) -> (VisionLanguageModel, Batcher) {
    let (_, _, tok_dir) = shared();
    let device = Device::flex().autodiff();
    let plain = TextTokenizer::from_dir(tok_dir, &[]).unwrap();
    let model = build_model(&exp.model, &plain, 5, &device).unwrap();
    let batcher = Batcher {
        tokenizer: TextTokenizer::from_dir(tok_dir, &model.language.config.eos_token_ids).unwrap(),
        image_tokens: model.image_tokens(),
        tokens_per_image: model.config.image_token_count(),
        preprocess: model.config.preprocess.clone(),
        pad_id: 0,
        device,
        max_seq_len: exp.data.max_seq_len,
    };
    (model, batcher)
}

/// Stage `index` of `exp` as a one-stage run in `dir`.
fn stage_run<'a>(
    exp: &'a Experiment,
    index: usize,
    batcher: &'a Batcher,
    devices: &'a [Device],
    dir: &'a Path,
) -> StageRun<'a> {
    static CATALOG: OnceLock<Catalog> = OnceLock::new();
    let (_, data, tok_dir) = shared();
    StageRun {
        run_dir: dir,
        catalog: CATALOG.get_or_init(|| Catalog::new(Some(data), &[]).unwrap()),
        tokenizer_dir: tok_dir,
        batcher,
        devices,
        index: 0,
        count: 1,
        stage: &exp.stages[index],
        on_bad_record: BadRecordPolicy::Fail,
        global_step_base: 0,
        keep: 1,
        stop_after: None,
    }
}

fn frozen_parts_stay_bit_identical_with(norm: &str) {
    let tmp = tempfile::tempdir().unwrap();
    let exp = Experiment::from_toml(&experiment_with_norm(tmp.path(), TWO_STAGES, norm)).unwrap();
    let (model, batcher) = model_and_batcher(&exp);
    let before = weights(&model);
    assert_eq!(exp.stages[0].train, vec![Part::Projector]);
    let devices = [batcher.device.clone()];
    let run = stage_run(&exp, 0, &batcher, &devices, tmp.path());
    let mut log = MetricsLog::open(tmp.path(), 0).unwrap();
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

/// Every weight after one full-model step of batch 2 from the seed-5 model, with `extra`
/// stage keys (no clipping, so that a change in one part's gradients cannot rescale another's).
fn one_step_weights(extra: &str) -> BTreeMap<String, Vec<f32>> {
    weights_after(extra, true)
}

/// [`one_step_weights`], or the weights before the step.
fn weights_after(extra: &str, step: bool) -> BTreeMap<String, Vec<f32>> {
    one_step_run(extra, step).0
}

/// The weights after one step of a one-stage experiment (`extra` added to its stage), with
/// the stage's report; or the weights before the step, without one.
fn one_step_run(extra: &str, step: bool) -> (BTreeMap<String, Vec<f32>>, Option<StageReport>) {
    one_step_run_of(&[], extra, step)
}

/// [`one_step_run`] with lines of the experiment replaced (`(old, new)` pairs).
fn one_step_run_of(
    replace: &[(&str, &str)],
    extra: &str,
    step: bool,
) -> (BTreeMap<String, Vec<f32>>, Option<StageReport>) {
    let stage = format!(
        "[[stage]]\nname = \"full\"\ntrain = [\"vision\", \"projector\", \"language\"]\nsteps = 1\nlr = 1e-3\n\
         micro_batch = 2\ngrad_clip = 0.0\n{extra}"
    );
    let tmp = tempfile::tempdir().unwrap();
    let text = replace
        .iter()
        .fold(experiment_with_norm(tmp.path(), &stage, "batch"), |text, (old, new)| text.replace(old, new));
    let exp = Experiment::from_toml(&text).unwrap();
    let (model, batcher) = model_and_batcher(&exp);
    if !step {
        return (weights(&model), None);
    }
    let devices = [batcher.device.clone()];
    let run = stage_run(&exp, 0, &batcher, &devices, tmp.path());
    let mut log = MetricsLog::open(tmp.path(), 0).unwrap();
    log.echo = false;
    let (model, report) = run_stage(model, &run, None, &mut log).unwrap();
    (weights(&model), Some(report))
}

/// How many tensors whose key starts with one of `moved` differ between `a` and `b`; every
/// other tensor must be bit-identical.
fn moved_tensors(a: &BTreeMap<String, Vec<f32>>, b: &BTreeMap<String, Vec<f32>>, moved: &[&str]) -> usize {
    let mut n = 0;
    for (path, w) in a {
        if moved.iter().any(|m| path.starts_with(m)) {
            n += usize::from(b[path] != *w);
        } else {
            assert!(b[path] == *w, "{path} changed");
        }
    }
    n
}

/// An LFM3 language model (conv, sliding attention over 2 positions, full attention,
/// sandwich norms, attention gates) trains in an experiment, under QAT too: one step moves
/// every one of its tensors.
#[test]
fn an_lfm3_language_model_trains_in_an_experiment() {
    let lfm3 = [("preset = \"lfm2-nano\"", "preset = \"lfm3-nano\"\nsliding_window = 2")];
    let before = one_step_run_of(&lfm3, "", false).0;
    assert!(
        before.keys().any(|k| k.contains("self_attn.g_proj")) && before.keys().any(|k| k.contains("post_ffn_norm"))
    );
    for extra in ["", "quantization = { policy = \"w4a16\" }\n"] {
        let after = one_step_run_of(&lfm3, extra, true).0;
        let language: Vec<&String> = before.keys().filter(|k| k.starts_with("language")).collect();
        let still: Vec<&&String> = language.iter().filter(|k| before[**k] == after[**k]).collect();
        assert!(still.is_empty(), "{extra:?}: a step left these LFM3 tensors unchanged: {still:?}");
    }
}

/// LFM3-VL's tower (gated 2-D convolutions and attention) and its projector train as an
/// AutoNeural encoder, under QAT too: one step moves every one of their tensors.
#[test]
fn an_lfm3_vl_tower_trains_in_an_experiment() {
    let tower = [("preset = \"mobilenetv5_tiny\"\nnorm = \"batch\"", "preset = \"lfm3_vl_tiny\"")];
    let before = one_step_run_of(&tower, "", false).0;
    assert!(before.keys().any(|k| k.contains("conv.spatial_conv")) && before.keys().any(|k| k.contains("q_layernorm")));
    for extra in ["", "quantization = { policy = \"w8a16\" }\n"] {
        let after = one_step_run_of(&tower, extra, true).0;
        let image_side =
            before.keys().filter(|k| k.starts_with("vision_tower") || k.starts_with("multi_modal_projector"));
        let still: Vec<&String> = image_side.filter(|k| before[*k] == after[*k]).collect();
        assert!(still.is_empty(), "{extra:?}: a step left these tensors unchanged: {still:?}");
    }
}

/// `lr_scale` gives a part its own learning rate: with `vision = 3` only the vision tower's
/// update changes; after one step from the same start, the other parts, stepped with the
/// same gradients at the stage's rate, are bit-identical to a run without the multiplier.
#[test]
fn lr_scale_changes_only_its_part() {
    let (plain, scaled) = (one_step_weights(""), one_step_weights("lr_scale = { vision = 3.0 }\n"));
    let n = moved_tensors(&plain, &scaled, &["vision_tower"]);
    assert!(n > 10, "only {n} vision tensors moved differently");
}

/// The alignment loss reaches the image side only (the text embeddings are its fixed
/// targets): with it, vision and connector take another step and the language model the
/// same one.
#[test]
fn align_weight_trains_the_image_side_only() {
    let (plain, aligned) = (one_step_weights(""), one_step_weights("align_weight = 1.0\n"));
    let n = moved_tensors(&plain, &aligned, &["vision_tower", "multi_modal_projector"]);
    assert!(n > 10, "only {n} image-side tensors moved differently");
    let projector =
        plain.keys().filter(|k| k.starts_with("multi_modal_projector")).filter(|k| plain[*k] != aligned[*k]);
    assert_eq!(projector.count(), 4, "every connector tensor should move differently");
}

/// An encoder-alignment stage (`lm_weight = 0` with `align_weight`) trains vision and
/// connector on the alignment loss alone: the language model, though listed as trainable,
/// gets no gradient and stays bit-identical to its start, while every connector tensor moves.
/// The stage does not validate (validation measures the language model it does not run).
#[test]
fn lm_weight_zero_trains_the_image_side_on_alignment_alone() {
    let start = weights_after("", false);
    let (aligned, report) = one_step_run("lm_weight = 0.0\nalign_weight = 1.0\n", true);
    assert!(report.unwrap().val.is_none(), "an alignment-only stage reported a validation loss");
    let n = moved_tensors(&start, &aligned, &["vision_tower", "multi_modal_projector"]);
    assert!(n > 10, "only {n} image-side tensors moved");
    assert_eq!(start.keys().filter(|k| k.starts_with("multi_modal_projector") && start[*k] != aligned[*k]).count(), 4);
    let e = Experiment::from_toml(&experiment_with_norm(
        std::path::Path::new("."),
        "[[stage]]\nname = \"a\"\ntrain = [\"vision\"]\nsteps = 1\nlr = 1e-3\nlm_weight = 0.0\n",
        "batch",
    ))
    .unwrap_err();
    assert!(e.contains("lm_weight") && e.contains("align_weight"), "{e}");
}

/// Data parallelism changes nothing but where the shards run: two shards on two replicas
/// (threads) give bit for bit the gradients, loss and accuracy of the same two shards run
/// one after the other on one device.
#[test]
fn data_parallel_gradients_equal_sequential_shards() {
    let tmp = tempfile::tempdir().unwrap();
    let exp = Experiment::from_toml(&experiment_with_norm(tmp.path(), TWO_STAGES, "batch")).unwrap();
    let stage = &exp.stages[1];
    // Two copies of one model through a checkpoint: clones would share the batch-norm
    // running statistics, and building twice races with other tests over the device's seed.
    let (model, batcher) = model_and_batcher(&exp);
    let saved = tmp.path().join("model");
    save_vlm(&model, &saved).unwrap();
    let mut results = Vec::new();
    for replicas in [1, 2] {
        let model = set_trainable(load_vlm(&saved, &batcher.device).unwrap(), &stage.train);
        let devices = vec![batcher.device.clone(); replicas];
        let run = stage_run(&exp, 1, &batcher, &devices, tmp.path());
        let mut sampler = MixtureSampler::new(&stage_recipe(&run).unwrap(), Split::Train).unwrap();
        let shards: Vec<_> = (0..2).map(|_| batcher.next_batch(&mut sampler, 2).unwrap()).collect();
        let tokens = shards.iter().map(|b| b.loss_tokens()).sum::<usize>() as f64;
        let out = Replicas::new(&devices).unwrap().step_gradients(&model, &shards, tokens).unwrap();
        let model = optimizer(stage).step(1e-3, model, out.grads.expect("finite loss"));
        results.push((out.nll, out.correct, weights(&model)));
    }
    let ((nll1, correct1, w1), (nll2, correct2, w2)) = (&results[0], &results[1]);
    assert!(nll1.is_finite() && nll1 == nll2 && correct1 == correct2, "{nll1} {nll2} {correct1} {correct2}");
    let mut stats = 0;
    for (k, v) in w1 {
        if k.contains("running_") {
            // Sequential updates against the mean of the replicas' updates.
            stats += 1;
            assert!(w2[k].iter().all(|x| x.is_finite()), "{k}");
        } else {
            assert!(w2[k] == *v, "{k}: the data-parallel step differs from the sequential one");
        }
    }
    assert!(stats > 0, "the batch-norm running statistics are part of the model");
}

#[test]
fn resumed_run_matches_uninterrupted_run() {
    // One device, and two replicas (data parallel on the CPU): same data order, same
    // summation order, so both resume exactly.
    for device in ["flex", "flex,flex"] {
        resumed_run_matches_uninterrupted_run_on(device);
    }
}

fn resumed_run_matches_uninterrupted_run_on(device: &str) {
    // Batch norm: its running statistics must also resume exactly.
    let a = tempfile::tempdir().unwrap();
    let quiet = RunOptions { quiet: true, device: Some(device.into()), ..Default::default() };
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

    let device_cpu = Device::flex();
    let w_full = weights(&load_vlm(&full.final_dir, &device_cpu).unwrap());
    let w_resumed = weights(&load_vlm(&resumed.final_dir, &device_cpu).unwrap());
    assert_eq!(w_full.len(), w_resumed.len());
    for (k, v) in &w_full {
        assert!(w_resumed[k] == *v, "{device}: {k} differs between the resumed and the uninterrupted run");
    }
}

/// A last stage with quantization-aware training: interrupted inside it and resumed, it
/// reaches the weights of an uninterrupted run (activation ranges resume with it, on two
/// replicas); the final checkpoint is quantized, and the report compares PTQ with QAT.
#[test]
fn qat_stage_resumes_exactly_and_reports_ptq_against_qat() {
    const QAT: &str = r#"
[[stage]]
name = "connector"
train = ["projector"]
steps = 2
lr = 1e-3
micro_batch = 2
[[stage]]
name = "qat"
train = ["vision", "projector", "language"]
steps = 3
lr = 1e-4
micro_batch = 2
checkpoint_every = 1
[stage.quantization]
policy = "w4a16"
"#;
    let quiet = RunOptions { quiet: true, device: Some("flex,flex".into()), ..Default::default() };
    let a = tempfile::tempdir().unwrap();
    let full = run_experiment(&write_experiment(a.path(), QAT, "batch"), &quiet).unwrap();
    let q = full.final_dir.join("quantization.json");
    assert!(q.is_file());
    let file: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&q).unwrap()).unwrap();
    assert!(file["activations"].as_object().unwrap().len() > 10 && file["weights"].as_object().unwrap().len() > 10);
    let report = std::fs::read_to_string(full.run_dir.join("report.md")).unwrap();
    assert!(report.contains("PTQ against QAT at w4a16"), "{report}");
    let cmp: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(full.run_dir.join("quantization_comparison.json")).unwrap())
            .unwrap();
    assert!(cmp["ptq"]["answers"].as_u64().unwrap() > 0 && cmp["qat"]["answers"] == cmp["ptq"]["answers"]);
    for model in ["float_val", "ptq_val", "qat_val"] {
        assert!(cmp[model]["token_accuracy"].as_f64().is_some(), "{model}: {cmp}");
    }
    assert!(report.contains("validation token accuracy"), "{report}");
    // The float model QAT started from stays beside the quantized final one.
    let before = full.run_dir.join("before_qat");
    assert!(before.join("model.safetensors").is_file() && !before.join("quantization.json").exists());

    let b = tempfile::tempdir().unwrap();
    let exp_b = write_experiment(b.path(), QAT, "batch");
    run_experiment(&exp_b, &RunOptions { stop_after_steps: Some(3), ..quiet.clone() }).unwrap();
    let resumed = run_experiment(&exp_b, &RunOptions { resume: true, ..quiet }).unwrap();
    let cpu = Device::flex();
    let w_full = weights(&load_vlm(&full.final_dir, &cpu).unwrap());
    let w_resumed = weights(&load_vlm(&resumed.final_dir, &cpu).unwrap());
    for (k, v) in &w_full {
        assert!(w_resumed[k] == *v, "{k} differs between the resumed and the uninterrupted QAT run");
    }
    let q_resumed = std::fs::read_to_string(resumed.final_dir.join("quantization.json")).unwrap();
    assert_eq!(q_resumed, std::fs::read_to_string(&q).unwrap(), "activation ranges differ after resuming");
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
fn devices_are_checked_against_the_micro_batch() {
    let tmp = tempfile::tempdir().unwrap();
    let path = write_experiment(tmp.path(), TWO_STAGES, "rms");
    let run = |device: &str| {
        let options = RunOptions { quiet: true, device: Some(device.into()), ..Default::default() };
        format!("{:#}", run_experiment(&path, &options).err().unwrap())
    };
    let err = run("flex,flex,flex");
    assert!(err.contains("exp.toml") && err.contains("micro_batch 2") && err.contains("3 devices"), "{err}");
    let err = run("flex,,flex");
    assert!(err.contains("empty entry"), "{err}");
    let err = run("tpu");
    assert!(err.contains("\"tpu\"") && err.contains("expected flex, wgpu, wgpu:N, cuda or cuda:N"), "{err}");
}

#[test]
fn experiment_errors_name_the_key() {
    let cases = [
        (
            "name = \"x\"\n[data]\ndir = \"d\"\n[model.vision]\npreset = \"mobilenetv5_tiny\"\n[model.language]\npreset = \"lfm2-nano\"\n[measure]\ncontext = [1]\n",
            "context",
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
                "[[stage]]\nname = \"q\"\ntrain = [\"language\"]\nsteps = 1\nlr = 1e-3\n[stage.quantization]\npolicy = \"int3\"\n",
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
        (
            &experiment(
                Path::new("o"),
                "[[stage]]\nname = \"s\"\ntrain = [\"vision\"]\nsteps = 1\nlr = 1e-3\nlr_scale = { vision = 0.0 }\n",
            ),
            "lr_scale",
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
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join("experiments");
    for name in ["quickstart", "quickstart_vit", "paper"] {
        let exp = Experiment::from_file(&dir.join(format!("{name}.toml"))).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert!(!exp.stages.is_empty());
    }
    // the sweeps expand into their runs
    for (name, runs) in [
        ("ablation_attention_ratio", 5),
        ("ablation_precision", 4),
        ("paper_quantization_error", 3),
        ("paper_latency", 3),
        ("study_reading", 2),
    ] {
        let e = Expansion::from_file(&dir.join(format!("{name}.toml")), &[]).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert!(e.is_sweep && e.points.len() == runs, "{name}: {} runs", e.points.len());
    }
    // a single experiment reads its `extends` base as `run` does; a sweep is turned away
    let tmp = tempfile::tempdir().unwrap();
    let child = tmp.path().join("child.toml");
    let base = dir.join("quickstart.toml").canonicalize().unwrap();
    std::fs::write(&child, format!("extends = {:?}\nname = \"child\"\n", base.to_str().unwrap())).unwrap();
    let exp = Experiment::from_file(&child).unwrap();
    let quickstart = Experiment::from_file(&dir.join("quickstart.toml")).unwrap();
    assert_eq!((exp.name.as_str(), exp.stages.len()), ("child", quickstart.stages.len()));
    let err = Experiment::from_file(&dir.join("study_document.toml")).unwrap_err().to_string();
    assert!(err.contains("study_document.toml") && err.contains("--only"), "{err}");
}

//! Training on the GPU backend checked against the CPU backend: from the same initial
//! weights (drawn once, saved, and loaded on each device), the gradients of one step, and the
//! weights after one and several AdamW steps, agree between flex and wgpu within stated
//! tolerances, for every trainable part (vision with batch norm, projector, language, the
//! alignment loss) and under QAT. Built with `--features wgpu` (lavapipe without a GPU).
//!
//! Why tolerances and not bit equality: the two backends sum in other orders (a GEMM's
//! tiles, a reduction's tree), so results differ in the last bits. The tolerances are set
//! against what the same last-bit difference does on the CPU alone (every initial weight
//! moved by one unit in the last place, [`one_ulp`]): the backends may differ up to 4 times
//! that, or a fixed floor. A wrong gradient (a missing term, a transposed weight, a wrong
//! scale) lands at order 1. Measured (lavapipe, AMD EPYC AVX2): float gradients 9.4e-4 per
//! tensor at worst (one ulp: 1.4e-4); QAT gradients 5.4e-2 (one ulp: 5.1e-2, its rounding to
//! a grid turns last bits into whole steps); weights after 3 steps 2.1e-3, 1.1e-2, 6.6e-3
//! (vision, projector, language).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use autoneural_data::mixture::BadRecordPolicy;
use autoneural_data::synth::{Family, SynthOptions, synthesize};
use autoneural_data::tokenizer_train::train_tokenizer;
use autoneural_data::{Catalog, MixtureSampler, OnBadRecord, SourceSpec, Split};
use autoneural_experiments::experiment::Experiment;
use autoneural_model::checkpoint::apply::{Identity, collect_tensors, map_tensors};
use autoneural_model::checkpoint::{load_vlm, save_vlm};
use autoneural_model::quant::activations::with_qat;
use autoneural_model::quant::qat::Qat;
use autoneural_model::tokenizer::TextTokenizer;
use autoneural_model::vlm::VisionLanguageModel;
use autoneural_train::train::loss::LossWeights;
use autoneural_train::train::parallel::Replicas;
use autoneural_train::train::trainer::stage_recipe;
use autoneural_train::train::{Batcher, MetricsLog, StageRun, build_model, run_stage, set_trainable};
use burn::module::{Module, ModuleVisitor, Param};
use burn::optim::GradientsParams;
#[cfg(feature = "wgpu")]
use burn::tensor::DeviceKind;
use burn::tensor::{Device, Tensor};

/// Synthetic data, a tokenizer and the initial model (drawn once on the CPU, saved).
struct Shared {
    _tmp: tempfile::TempDir,
    data: PathBuf,
    tokenizer: PathBuf,
    init: PathBuf,
}

fn shared() -> &'static Shared {
    static SHARED: OnceLock<Shared> = OnceLock::new();
    SHARED.get_or_init(|| {
        let tmp = tempfile::tempdir().unwrap();
        let data = tmp.path().join("data");
        let families = vec![Family::Ocr, Family::Vqa];
        synthesize(&SynthOptions {
            out: data.clone(),
            samples: 8,
            image_size: 64,
            seed: 3,
            families: families.clone(),
        })
        .unwrap();
        let tokenizer = tmp.path().join("tokenizer");
        let files: Vec<SourceSpec> = families
            .iter()
            .map(|f| SourceSpec::file(&data.join(f.name()).join("train.jsonl"), OnBadRecord::Fail).unwrap())
            .collect();
        train_tokenizer(&files, 320, &tokenizer).unwrap();
        let init = tmp.path().join("init");
        let exp = experiment(tmp.path(), &data, &tokenizer, "");
        let plain = TextTokenizer::from_dir(&tokenizer, &[]).unwrap();
        save_vlm(&build_model(&exp.model, &plain, 5, &Device::flex().autodiff()).unwrap(), &init).unwrap();
        Shared { _tmp: tmp, data, tokenizer, init }
    })
}

/// A tiny hybrid (two conv layers, one attention layer) behind a batch-norm MobileNetV5
/// with its blocks' layer scale at 1 (so that every block contributes, as in the quickstart).
fn experiment(out: &Path, data: &Path, tokenizer: &Path, stages: &str) -> Experiment {
    Experiment::from_toml(&format!(
        r#"
name = "parity"
seed = 1
out_dir = "{out}"
[data]
dir = "{data}"
tokenizer = "{tokenizer}"
[model]
image_size = 64
[model.vision]
preset = "mobilenetv5_tiny"
norm = "batch"
layer_scale_init = 1.0
msfa_output_resolution = 4
[model.language]
preset = "lfm2-nano"
hidden_size = 64
intermediate_size = 128
num_layers = 3
attention_layers = 1
{stages}"#,
        out = out.display(),
        data = data.display(),
        tokenizer = tokenizer.display()
    ))
    .unwrap()
}

/// The language-model loss and the alignment loss on everything the model has.
const FULL: &str = r#"
[[stage]]
name = "full"
train = ["vision", "projector", "language"]
steps = STEPS
mixture = { ocr = 1, vqa = 1 }
lr = 1e-3
warmup_steps = 0
micro_batch = 2
grad_accum = 2
weight_decay = 0.01
align_weight = 0.5
val_batches = 1
"#;

const QAT: &str = r#"
[[stage]]
name = "qat"
train = ["vision", "projector", "language"]
steps = STEPS
mixture = { ocr = 1, vqa = 1 }
lr = 1e-3
warmup_steps = 0
micro_batch = 2
val_batches = 1
[stage.quantization]
policy = "w4a16"
"#;

fn flex() -> Device {
    Device::flex().autodiff()
}

#[cfg(feature = "wgpu")]
fn wgpu() -> Device {
    Device::wgpu(DeviceKind::DefaultDevice).autodiff()
}

/// The first CUDA device, or `None` (with a message) where this machine has no NVIDIA GPU:
/// the CUDA build is compiled in CI, which has none.
#[cfg(feature = "cuda")]
fn cuda() -> Option<Device> {
    if !Path::new("/dev/nvidiactl").exists() {
        eprintln!("skipped: no NVIDIA GPU here (no /dev/nvidiactl); the CUDA parity runs where there is one");
        return None;
    }
    Some(Device::cuda(0).autodiff())
}

/// The shared initial model loaded on `device` (its weights moved by one unit in the last
/// place with `perturb`), and a batcher that puts batches there.
fn model_on(exp: &Experiment, device: &Device, perturb: bool) -> (VisionLanguageModel, Batcher) {
    let s = shared();
    let model = load_vlm(&s.init, device).unwrap();
    let model = match perturb {
        true => map_tensors(model, &Identity, |key, _, values| (!key.contains("running_")).then(|| one_ulp(values))),
        false => model,
    };
    let batcher = Batcher {
        tokenizer: TextTokenizer::from_dir(&s.tokenizer, &model.language.config.eos_token_ids).unwrap(),
        image_tokens: model.image_tokens(),
        tokens_per_image: model.config.image_token_count(),
        preprocess: model.config.preprocess.clone(),
        pad_id: 0,
        device: device.clone(),
        max_seq_len: exp.data.max_seq_len,
    };
    (model, batcher)
}

fn stage_run<'a>(exp: &'a Experiment, batcher: &'a Batcher, devices: &'a [Device], dir: &'a Path) -> StageRun<'a> {
    static CATALOG: OnceLock<Catalog> = OnceLock::new();
    let s = shared();
    StageRun {
        run_dir: dir,
        catalog: CATALOG.get_or_init(|| Catalog::new(Some(&s.data), &[]).unwrap()),
        tokenizer_dir: &s.tokenizer,
        batcher,
        devices,
        index: 0,
        count: 1,
        stage: &exp.stages[0],
        on_bad_record: BadRecordPolicy::Fail,
        global_step_base: 0,
        keep: 1,
        stop_after: None,
    }
}

/// Every float tensor of `model`, by checkpoint key (batch-norm running statistics too).
fn weights(model: &VisionLanguageModel) -> BTreeMap<String, Vec<f32>> {
    collect_tensors(model, &Identity).into_iter().map(|(key, _, values)| (key, values)).collect()
}

/// The gradients in `grads` of `model`'s parameters, by checkpoint key (as
/// [`collect_tensors`] names them: enum variants name no segment).
fn gradients(model: &VisionLanguageModel, grads: &GradientsParams) -> BTreeMap<String, Vec<f32>> {
    struct Collect<'a> {
        grads: &'a GradientsParams,
        path: Vec<Option<String>>,
        out: BTreeMap<String, Vec<f32>>,
    }
    impl ModuleVisitor for Collect<'_> {
        fn enter_module(&mut self, name: &str, container: &str) {
            self.path.push((!container.starts_with("Enum:")).then(|| name.to_string()));
        }
        fn exit_module(&mut self, _: &str, _: &str) {
            self.path.pop();
        }
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
            if let Some(g) = self.grads.get::<D>(param.id) {
                let key = self.path.iter().flatten().cloned().collect::<Vec<_>>().join(".");
                self.out.insert(key, g.into_data().try_into_vec_as::<f32>().unwrap());
            }
        }
    }
    let mut v = Collect { grads, path: Vec::new(), out: BTreeMap::new() };
    model.visit(&mut v);
    v.out
}

/// `values` moved by one unit in the last place, up and down in turn: what summing in
/// another order does to a result.
fn one_ulp(values: Vec<f32>) -> Vec<f32> {
    let step = |x: f32, up: bool| {
        if x == 0.0 { x } else { f32::from_bits(if up { x.to_bits() + 1 } else { x.to_bits() - 1 }) }
    };
    values.into_iter().enumerate().map(|(i, x)| step(x, i % 2 == 0)).collect()
}

/// The gradients of the first optimizer step of `stages` (two micro-batches of two
/// conversations, as the trainer draws them), on `device`; from the initial weights, or
/// from them moved by one unit in the last place (`perturb`).
fn first_step_gradients(stages: &str, device: &Device, perturb: bool) -> BTreeMap<String, Vec<f32>> {
    let s = shared();
    let tmp = tempfile::tempdir().unwrap();
    let exp = experiment(tmp.path(), &s.data, &s.tokenizer, &stages.replace("STEPS", "1"));
    let stage = &exp.stages[0];
    let (model, batcher) = model_on(&exp, device, perturb);
    let model = set_trainable(model, &stage.train);
    let devices = [device.clone()];
    let run = stage_run(&exp, &batcher, &devices, tmp.path());
    let mut sampler = MixtureSampler::new(&stage_recipe(&run).unwrap(), Split::Train).unwrap();
    let shards: Vec<_> = (0..stage.grad_accum.max(2))
        .map(|_| {
            let mut b = batcher.next_batch(&mut sampler, stage.micro_batch).unwrap();
            b.weights = LossWeights { lm: stage.lm_weight, align: stage.align_weight };
            b
        })
        .collect();
    let tokens = shards.iter().map(|b| b.loss_tokens()).sum::<usize>() as f64;
    let qat = stage
        .quantization
        .as_ref()
        .map(|q| std::sync::Arc::new(Qat::new(&model, q.load_policy().unwrap(), q.range_momentum)));
    let out = with_qat(qat, || Replicas::new(&devices).unwrap().step_gradients(&model, &shards, tokens)).unwrap();
    gradients(&model, &out.grads.expect("a finite loss"))
}

/// Every tensor of the model after `steps` steps of `stages` on `device` (from weights one
/// unit in the last place away with `perturb`).
fn weights_after(stages: &str, steps: usize, device: &Device, perturb: bool) -> BTreeMap<String, Vec<f32>> {
    let s = shared();
    let tmp = tempfile::tempdir().unwrap();
    let exp = experiment(tmp.path(), &s.data, &s.tokenizer, &stages.replace("STEPS", &steps.to_string()));
    let (model, batcher) = model_on(&exp, device, perturb);
    let devices = [device.clone()];
    let run = stage_run(&exp, &batcher, &devices, tmp.path());
    let mut log = MetricsLog::open(tmp.path(), 0).unwrap();
    log.echo = false;
    let (model, report) = run_stage(model, &run, None, &mut log).unwrap();
    assert!(report.complete && report.steps == steps);
    weights(&model)
}

fn norm(v: impl Iterator<Item = f32>) -> f64 {
    v.map(|x| f64::from(x) * f64::from(x)).sum::<f64>().sqrt()
}

fn distance(a: &[f32], b: &[f32]) -> f64 {
    assert_eq!(a.len(), b.len());
    norm(a.iter().zip(b).map(|(x, y)| x - y))
}

/// A gradient below this fraction of the global gradient norm is a null gradient: zero in
/// exact arithmetic, what is left is rounding. These are the biases (and one scale) that
/// reach the loss only through a train-mode batch norm or a norm's mean, which subtracts
/// any per-channel shift: on this model the largest is 1.3e-5 of the global norm, the
/// smallest real one 1.4e-2 (float), so the line falls in a gap of three orders.
const NULL_GRADIENT: f64 = 1e-4;

/// The tensors of the first step's CPU gradients that are null (see [`NULL_GRADIENT`]),
/// and the global norm.
fn null_gradients(cpu: &BTreeMap<String, Vec<f32>>) -> (Vec<String>, f64) {
    let global = norm(cpu.values().flatten().copied());
    let null = cpu.iter().filter(|(_, g)| norm(g.iter().copied()) < NULL_GRADIENT * global).map(|(k, _)| k.clone());
    (null.collect(), global)
}

/// The largest of `distance(cpu, gpu) / scale(key)` over `keys`, with its key.
fn worst<'a>(
    keys: impl Iterator<Item = &'a String>,
    cpu: &BTreeMap<String, Vec<f32>>,
    gpu: &BTreeMap<String, Vec<f32>>,
    scale: impl Fn(&str) -> f64,
) -> (f64, String) {
    keys.map(|k| {
        assert!(gpu[k].iter().all(|x| x.is_finite()), "{k}: not finite on wgpu");
        (distance(&cpu[k], &gpu[k]) / scale(k), k.clone())
    })
    .fold((0.0, String::new()), |a, b| if b.0 > a.0 { b } else { a })
}

/// Gradients of one step agree per tensor: `|g_gpu - g_cpu| / |g_cpu|` below `floor`, or
/// below 4 times what moving every weight by one unit in the last place does to them on the
/// CPU alone where that is larger (QAT: its rounding to a grid turns last-bit differences
/// into whole steps, on any one backend too). Null gradients (rounding on both sides)
/// agree to `NULL_GRADIENT` of the global norm.
fn gradients_agree(stages: &str, gpu_device: &Device, floor: f64) {
    let cpu = first_step_gradients(stages, &flex(), false);
    let gpu = first_step_gradients(stages, gpu_device, false);
    assert_eq!(cpu.keys().collect::<Vec<_>>(), gpu.keys().collect::<Vec<_>>());
    for part in ["vision_tower", "multi_modal_projector", "language"] {
        assert!(cpu.keys().any(|k| k.starts_with(part)), "no gradient reaches {part}");
    }
    let (null, global) = null_gradients(&cpu);
    let real = cpu.keys().filter(|k| !null.contains(k));
    let own = |k: &str| norm(cpu[k].iter().copied());
    let (w, key) = worst(real.clone(), &cpu, &gpu, own);
    let (sensitivity, _) = worst(real, &cpu, &first_step_gradients(stages, &flex(), true), own);
    let tol = floor.max(4.0 * sensitivity);
    let (w_null, key_null) = worst(null.iter(), &cpu, &gpu, |_| global);
    println!(
        "{} gradient tensors (global norm {global:.3e}, {} null): worst relative distance {w:.2e} ({key}), \
         one ulp on flex alone {sensitivity:.2e}; null gradients {w_null:.2e} of the global norm ({key_null})",
        cpu.len(),
        null.len()
    );
    assert!(w < tol, "{key}: flex and wgpu gradients {w:.2e} apart (tolerance {tol:e})");
    assert!(w_null < NULL_GRADIENT, "{key_null}: a null gradient {w_null:.2e} of the global norm apart");
}

fn sci(v: &[f64]) -> String {
    v.iter().map(|x| format!("{x:.2e}")).collect::<Vec<_>>().join(" ")
}

const PARTS: [&str; 3] = ["vision_tower", "multi_modal_projector", "language"];

/// Per part, how far `other` lands from `cpu` relative to how far training moved the part
/// from `init`: `|w_other - w_cpu| / |w_cpu - w_0|` over all of the part's tensors but
/// `skip`'s.
fn part_distances(
    init: &BTreeMap<String, Vec<f32>>,
    cpu: &BTreeMap<String, Vec<f32>>,
    other: &BTreeMap<String, Vec<f32>>,
    skip: &[String],
) -> [f64; 3] {
    PARTS.map(|part| {
        let keys: Vec<&String> = cpu.keys().filter(|k| k.starts_with(part) && !skip.contains(k)).collect();
        let sum = |a: &BTreeMap<String, Vec<f32>>, b: &BTreeMap<String, Vec<f32>>| {
            keys.iter().map(|k| distance(&a[*k], &b[*k]).powi(2)).sum::<f64>().sqrt()
        };
        let moved = sum(cpu, init);
        assert!(moved > 0.0, "{part} did not move");
        sum(cpu, other) / moved
    })
}

/// Weights after `steps` AdamW steps agree per part (vision, projector, language, each as
/// one vector): `|w_gpu - w_cpu| / |w_cpu - w_0|` below `floor`, or below 4 times what one
/// unit in the last place of the initial weights does on the CPU alone where that is
/// larger. Per part and not per tensor because AdamW's first steps are close to `lr`
/// times the gradient's sign: an element whose gradient lies within rounding of zero (one
/// of the 16 of a k_layernorm's weight: -4.2e-7 on flex, +1.4e-6 on wgpu) steps the other
/// way, which is 20% of that small tensor's update and nothing of its part's.
///
/// Tensors with a null gradient are left out: AdamW divides their rounding noise by its
/// own size, so each backend moves them by up to `lr` per step in directions of its own (no
/// information, as in PyTorch); for them the test checks AdamW's bound on both backends.
fn steps_agree(stages: &str, steps: usize, gpu_device: &Device, floor: f64) {
    let init = weights(&load_vlm(&shared().init, &Device::flex()).unwrap());
    let (null, _) = null_gradients(&first_step_gradients(stages, &flex(), false));
    let cpu = weights_after(stages, steps, &flex(), false);
    let gpu = weights_after(stages, steps, gpu_device, false);
    assert_eq!(cpu.keys().collect::<Vec<_>>(), gpu.keys().collect::<Vec<_>>());
    assert!(gpu.values().flatten().all(|x| x.is_finite()), "not finite on wgpu");
    let apart = part_distances(&init, &cpu, &gpu, &null);
    let sensitivity = part_distances(&init, &cpu, &weights_after(stages, steps, &flex(), true), &null);
    // Tensors training leaves alone stay equal.
    for k in cpu.keys().filter(|k| cpu[*k] == init[*k]) {
        assert!(cpu[k] == gpu[k], "{k}: unchanged on flex, moved on wgpu");
    }
    let lr = 1e-3;
    let mut largest = 0f64;
    for k in &null {
        for w in [&cpu[k], &gpu[k]] {
            let step = w.iter().zip(&init[k]).map(|(a, b)| f64::from((a - b).abs())).fold(0.0, f64::max);
            largest = largest.max(step / (lr * steps as f64));
        }
    }
    println!(
        "{steps} step(s): flex vs wgpu {} (vision, projector, language), one ulp on flex alone {}; \
         {} null-gradient tensors moved at most {largest:.2} lr per step",
        sci(&apart),
        sci(&sensitivity),
        null.len()
    );
    for ((part, w), s) in PARTS.iter().zip(apart).zip(sensitivity) {
        let tol = floor.max(4.0 * s);
        assert!(w < tol, "{part}: after {steps} step(s) flex and wgpu {w:.2e} apart (tolerance {tol:.2e})");
    }
    assert!(largest <= 1.5, "a null-gradient tensor moved {largest:.2} lr per step");
}

#[cfg(feature = "wgpu")]
#[test]
fn gradients_agree_on_flex_and_wgpu() {
    gradients_agree(FULL, &wgpu(), 5e-3);
}

#[cfg(feature = "wgpu")]
#[test]
fn qat_gradients_agree_on_flex_and_wgpu() {
    gradients_agree(QAT, &wgpu(), 5e-3);
}

#[cfg(feature = "wgpu")]
#[test]
fn one_and_three_steps_agree_on_flex_and_wgpu() {
    steps_agree(FULL, 1, &wgpu(), 3e-2);
    steps_agree(FULL, 3, &wgpu(), 3e-2);
}

#[cfg(feature = "wgpu")]
#[test]
fn qat_steps_agree_on_flex_and_wgpu() {
    steps_agree(QAT, 2, &wgpu(), 3e-2);
}

/// The same checks on CUDA (`--features cuda`), where there is an NVIDIA GPU.
#[cfg(feature = "cuda")]
#[test]
fn training_agrees_on_flex_and_cuda() {
    let Some(cuda) = cuda() else { return };
    gradients_agree(FULL, &cuda, 5e-3);
    gradients_agree(QAT, &cuda, 5e-3);
    steps_agree(FULL, 3, &cuda, 3e-2);
    steps_agree(QAT, 2, &cuda, 3e-2);
}

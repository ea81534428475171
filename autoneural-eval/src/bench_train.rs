//! Training throughput of an experiment's model: the optimizer steps of one training stage
//! (forward with the loss, backward, global-norm clipping, AdamW) on one fixed synthetic
//! batch with the shapes real training sees, timed per phase. No data, tokenizer or
//! checkpoint needed; `scripts/bench_reference.py --mode train` builds the same model in
//! PyTorch for the ratio in docs/benchmarks.md.

use std::time::Instant;

use anyhow::{Context, Result, bail};
use autoneural_data::Batch;
use autoneural_model::text::Logits;
use autoneural_model::vlm::{VisionLanguageModel, VlmConfig};
use autoneural_train::config::{ModelConfig, Part, StageConfig};
use autoneural_train::train::clip::clip_global_norm;
use autoneural_train::train::loss::{DeviceBatch, forward_loss};
use autoneural_train::train::parallel::{Replicas, shard_sizes};
use autoneural_train::train::trainer::{optimizer, set_trainable};
use autoneural_train::train::vlm_config;
use burn::module::Module;
use burn::optim::{GradientsParams, ModuleOptimizer};
use burn::tensor::activation::log_softmax;
use burn::tensor::{Device, Distribution, Int, Tensor, TensorData};
use serde::Serialize;

use crate::peak_alloc;

#[derive(Debug, Clone)]
pub struct TrainBenchOptions {
    /// Sequences per step (one micro-batch, no accumulation).
    pub batch: usize,
    /// Timed optimizer steps.
    pub steps: usize,
    /// Untimed steps first.
    pub warmup: usize,
    /// Text positions per sequence besides the image tokens.
    pub text_tokens: usize,
    /// Trained (loss) positions at the end of each sequence.
    pub loss_tokens: usize,
    /// Stage by name (default: the first that trains every part with the language-model
    /// loss, else the first).
    pub stage: Option<String>,
    /// Also time the two halves of the model on their own (see [`Breakdown`]).
    pub breakdown: bool,
}

impl Default for TrainBenchOptions {
    fn default() -> Self {
        Self { batch: 16, steps: 10, warmup: 2, text_tokens: 40, loss_tokens: 8, stage: None, breakdown: false }
    }
}

/// Means over the timed steps, milliseconds.
#[derive(Debug, Clone, Serialize)]
pub struct PhaseMs {
    /// Encoder + connector + merge + LM + loss, and reading the loss back (as the trainer does).
    pub forward: f64,
    /// 0 with several devices: their forward and backward passes overlap, and `forward`
    /// holds both.
    pub backward: f64,
    /// `GradientsParams::from_grads` + global-norm clipping.
    pub clip: f64,
    pub optimizer: f64,
}

/// The halves of a step's forward and backward, each timed as its own graph (means over
/// `steps` runs, milliseconds): the vision side (encoder + connector, backward from the sum
/// of the image features) and the language side (embedding merge with detached image
/// features, LM, loss).
#[derive(Debug, Clone, Serialize)]
pub struct Breakdown {
    pub vision_forward: f64,
    pub vision_backward: f64,
    pub language_forward: f64,
    pub language_backward: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct TrainBenchResult {
    pub experiment: String,
    pub stage: String,
    pub trained_parts: Vec<String>,
    pub params_vision: usize,
    pub params_projector: usize,
    pub params_language: usize,
    pub params_total: usize,
    pub image_size: usize,
    pub image_tokens: usize,
    pub vision_dim: usize,
    pub text_hidden: usize,
    pub text_mlp_width: usize,
    pub text_layers: usize,
    pub attention_layers: Vec<usize>,
    pub vocab_size: usize,
    pub batch: usize,
    pub seq_len: usize,
    pub loss_tokens_per_row: usize,
    pub warmup: usize,
    pub steps: usize,
    /// Mean over the timed steps.
    pub ms_per_step: f64,
    pub median_ms: f64,
    pub min_ms: f64,
    pub samples_per_s: f64,
    pub phases_ms: PhaseMs,
    pub breakdown_ms: Option<Breakdown>,
    /// Mean loss of the last timed step (it falls: the same batch is fitted again and again).
    pub last_loss: f64,
    /// Peak heap during the timed steps above what was live before them (weights and the
    /// optimizer state excluded). None without the counting allocator.
    pub peak_step_mib: Option<f64>,
    pub threads: usize,
}

/// What `bench train` builds and trains: an experiment's model and stages (the CLI reads
/// them from the experiment file as `run` does; `Experiment::bench_spec`).
#[derive(Debug, Clone)]
pub struct TrainBenchSpec {
    /// The experiment's name, for the report.
    pub name: String,
    pub seed: u64,
    /// The vocabulary the model is built with (`data.vocab_size`).
    pub vocab_size: usize,
    pub model: ModelConfig,
    pub stages: Vec<StageConfig>,
}

/// The stage the benchmark trains: by name, else the first that trains every part with the
/// language-model loss (the quickstart's "full"), else the first.
pub fn pick_stage<'a>(exp: &'a TrainBenchSpec, name: Option<&str>) -> Result<&'a StageConfig> {
    match name {
        Some(n) => exp.stages.iter().find(|s| s.name == n).with_context(|| {
            let names: Vec<_> = exp.stages.iter().map(|s| s.name.as_str()).collect();
            format!("the experiment has no stage {n:?} (it has {names:?})")
        }),
        None => exp
            .stages
            .iter()
            .find(|s| {
                [Part::Vision, Part::Projector, Part::Language].iter().all(|p| s.train.contains(p)) && s.lm_weight > 0.0
            })
            .or_else(|| exp.stages.first())
            .context("the experiment has no [[stage]]"),
    }
}

/// The experiment's model config, for a vocabulary of `data.vocab_size` with the image token
/// at its last id (a trained tokenizer puts it elsewhere; shapes and cost do not change).
pub fn model_config(exp: &TrainBenchSpec) -> Result<VlmConfig> {
    if exp.model.checkpoint.is_some() || exp.model.language.checkpoint.is_some() {
        bail!("bench train builds presets at random; this experiment starts from a checkpoint");
    }
    let vocab = exp.vocab_size;
    if vocab < 16 {
        bail!("data.vocab_size {vocab} is too small for a synthetic batch");
    }
    vlm_config(&exp.model, vocab, (vocab - 1) as u32)
}

/// A tiny deterministic generator (SplitMix64) for the synthetic token ids.
struct SplitMix(u64);

impl SplitMix {
    fn below(&mut self, n: u64) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        (z ^ (z >> 31)) % n
    }
}

/// One batch shaped like a training batch: per row, 3 leading text tokens, the image's
/// tokens, then text; random ids (never the image token); the loss on the last
/// `loss_tokens` positions; no padding. Pixels uniform in [0, 1).
pub fn synthetic_batch(cfg: &VlmConfig, opts: &TrainBenchOptions, seed: u64, device: &Device) -> DeviceBatch {
    let size = cfg.encoder.image_size();
    let image_tokens = cfg.tokens_per_image(size, size);
    let lead = 3.min(opts.text_tokens);
    let len = image_tokens + opts.text_tokens;
    let rows = opts.batch;
    let image = cfg.image_token_id;
    let vocab = cfg.text.vocab_size as u64;
    let mut rng = SplitMix(seed ^ 0x5EED);
    let mut text_id = || loop {
        let id = rng.below(vocab) as u32;
        if id != image {
            return id;
        }
    };
    // Each row is a full sequence of len + 1 ids; inputs drop the last, targets the first.
    let mut inputs = Vec::with_capacity(rows * len);
    let mut targets = Vec::with_capacity(rows * len);
    let mut loss_mask = Vec::with_capacity(rows * len);
    for _ in 0..rows {
        let seq: Vec<u32> =
            (0..=len).map(|p| if p >= lead && p < lead + image_tokens { image } else { text_id() }).collect();
        inputs.extend_from_slice(&seq[..len]);
        targets.extend_from_slice(&seq[1..]);
        loss_mask.extend((0..len).map(|p| p + opts.loss_tokens.min(opts.text_tokens - lead) >= len));
    }
    let batch = Batch { rows, len, inputs, targets, loss_mask, attention_mask: vec![true; rows * len] };
    let pixels = Tensor::<4>::random([rows, 3, size, size], Distribution::Uniform(0.0, 1.0), device);
    DeviceBatch { batch, pixels: Some(pixels), records: rows, weights: Default::default(), origins: Vec::new() }
}

/// Rows `start..start + n` of `b` (its pixels: one image per row).
fn shard_rows(b: &DeviceBatch, start: usize, n: usize) -> DeviceBatch {
    let len = b.batch.len;
    let cut = |v: &[u32]| v[start * len..(start + n) * len].to_vec();
    let cut_mask = |v: &[bool]| v[start * len..(start + n) * len].to_vec();
    let batch = Batch {
        rows: n,
        len,
        inputs: cut(&b.batch.inputs),
        targets: cut(&b.batch.targets),
        loss_mask: cut_mask(&b.batch.loss_mask),
        attention_mask: cut_mask(&b.batch.attention_mask),
    };
    DeviceBatch {
        batch,
        pixels: b.pixels.clone().map(|p| p.narrow(0, start, n)),
        records: n,
        weights: b.weights,
        origins: Vec::new(),
    }
}

fn ms(t: Instant) -> f64 {
    t.elapsed().as_secs_f64() * 1e3
}

/// [`Breakdown`]: `runs` timed passes of each half after one untimed one. No optimizer step,
/// so the weights stay as they are.
pub fn breakdown(model: &VisionLanguageModel, b: &DeviceBatch, runs: usize) -> Result<Breakdown> {
    let pixels = b.pixels.clone().context("the batch has no images")?;
    let (rows, len) = (b.batch.rows, b.batch.len);
    let device = model.language.device();
    let targets = Tensor::<3, Int>::from_data(
        TensorData::new(b.batch.targets.iter().map(|&x| i64::from(x)).collect::<Vec<_>>(), [rows, len, 1]),
        &device,
    );
    let mask = Tensor::<2>::from_data(
        TensorData::new(b.batch.loss_mask.iter().map(|&m| f32::from(u8::from(m))).collect::<Vec<_>>(), [rows, len]),
        &device,
    );
    let tokens = b.loss_tokens().max(1) as f64;
    let features = {
        let f = model.image_features(pixels.clone()).detach();
        let [n, t, d] = f.dims();
        f.reshape([n * t, d])
    };
    let mut out =
        Breakdown { vision_forward: 0.0, vision_backward: 0.0, language_forward: 0.0, language_backward: 0.0 };
    for run in 0..=runs {
        let t = Instant::now();
        let f = model.image_features(pixels.clone());
        let _ = f.clone().detach().slice([0..1, 0..1, 0..1]).into_data();
        let vf = ms(t);
        let t = Instant::now();
        let _grads = f.sum().backward();
        let vb = ms(t);

        let t = Instant::now();
        let embeds = model.merge_batch(&b.batch.inputs, rows, len, Some(features.clone()))?;
        let hidden = model.language.hidden_states(embeds, None);
        let logits = model.language.logits(hidden, Logits::All);
        let nll = -log_softmax(logits, 2).gather(2, targets.clone()).reshape([rows, len]);
        let loss = (nll * mask.clone()).sum() / tokens;
        let _ = loss.clone().detach().into_scalar::<f32>();
        let lf = ms(t);
        let t = Instant::now();
        let _grads = loss.backward();
        let lb = ms(t);
        if run > 0 {
            out.vision_forward += vf;
            out.vision_backward += vb;
            out.language_forward += lf;
            out.language_backward += lb;
        }
    }
    let n = runs.max(1) as f64;
    out.vision_forward /= n;
    out.vision_backward /= n;
    out.language_forward /= n;
    out.language_backward /= n;
    Ok(out)
}

/// Builds the experiment's model on `device` (made differentiable here) and times
/// `opts.steps` optimizer steps after `opts.warmup` untimed ones.
/// Times the stage's optimizer steps on `devices` (more than one: data-parallel, see
/// `autoneural_train::train::parallel`).
pub fn run(exp: &TrainBenchSpec, opts: &TrainBenchOptions, devices: &[Device]) -> Result<TrainBenchResult> {
    check_options(opts, devices)?;
    let devices: Vec<Device> = devices.iter().map(|d| d.clone().autodiff()).collect();
    let stage = pick_stage(exp, opts.stage.as_deref())?;
    let cfg = model_config(exp)?;
    let device = devices[0].clone();
    device.seed(exp.seed);
    let mut model = set_trainable(cfg.init(&device)?, &stage.train);
    let params =
        (model.vision_tower.num_params(), model.multi_modal_projector.num_params(), model.language.num_params());
    let b = synthetic_batch(&cfg, opts, exp.seed, &device);
    let inputs = StepInputs {
        shards: shards_of(&b, opts.batch, devices.len()),
        tokens: b.loss_tokens().max(1) as f64,
        replicas: Replicas::new(&devices)?,
        batch: b,
        stage,
    };
    let mut optim = optimizer(stage);
    let mut timed = Vec::new();
    let mut before = None;
    for step in 0..opts.warmup + opts.steps {
        if step == opts.warmup {
            peak_alloc::reset_peak();
            before = peak_alloc::current_bytes();
        }
        let (m, times) = inputs.step(model, &mut optim, step)?;
        model = m;
        if step >= opts.warmup {
            timed.push(times);
        }
    }
    let peak = peak_alloc::peak_bytes().zip(before).map(|(p, b)| p.saturating_sub(b) as f64 / 1048576.0);
    let split = if opts.breakdown { Some(breakdown(&model, &inputs.batch, opts.steps)?) } else { None };
    Ok(summarize(exp, &inputs, &cfg, params, opts, &timed, peak, split))
}

fn check_options(opts: &TrainBenchOptions, devices: &[Device]) -> Result<()> {
    if opts.batch == 0 || opts.steps == 0 {
        bail!("--batch and --steps must be at least 1");
    }
    if devices.is_empty() || opts.batch < devices.len() {
        bail!("--batch {} must give every one of the {} devices a row", opts.batch, devices.len());
    }
    if opts.text_tokens < 4 || opts.loss_tokens == 0 {
        bail!("--text-tokens must be at least 4 and --loss-tokens at least 1");
    }
    Ok(())
}

/// With several devices the batch's rows are split into one shard per device.
fn shards_of(b: &DeviceBatch, batch: usize, devices: usize) -> Vec<DeviceBatch> {
    let mut row = 0;
    shard_sizes(batch, devices)
        .into_iter()
        .map(|n| {
            row += n;
            shard_rows(b, row - n, n)
        })
        .collect()
}

/// What every timed step trains on.
struct StepInputs<'a> {
    batch: DeviceBatch,
    shards: Vec<DeviceBatch>,
    /// Trained tokens of the batch (the loss is their mean).
    tokens: f64,
    replicas: Replicas,
    stage: &'a StageConfig,
}

/// One optimizer step's phases, in milliseconds, and its loss per trained token.
struct StepTimes {
    forward: f64,
    backward: f64,
    clip: f64,
    optimizer: f64,
    total: f64,
    loss: f64,
}

impl StepInputs<'_> {
    /// Optimizer step `step` (0-based, for messages) on the batch, timed by phase.
    fn step(
        &self,
        model: VisionLanguageModel,
        optim: &mut ModuleOptimizer,
        step: usize,
    ) -> Result<(VisionLanguageModel, StepTimes)> {
        let t_step = Instant::now();
        let t = Instant::now();
        let (nll, grads, forward, backward) = if self.shards.len() == 1 {
            let parts = forward_loss(&model, &self.batch)?;
            let nll = f64::from(parts.nll_sum.clone().detach().into_scalar::<f32>());
            let _correct = parts.correct.into_scalar::<f32>();
            let f = ms(t);
            if !nll.is_finite() {
                bail!("step {}: the loss is {nll}", step + 1);
            }
            let t = Instant::now();
            let grads = GradientsParams::from_grads((parts.nll_sum / self.tokens).backward(), &model);
            (nll, grads, f, ms(t))
        } else {
            let out = self.replicas.step_gradients(&model, &self.shards, self.tokens)?;
            let grads = out.grads.with_context(|| format!("step {}: the loss is {}", step + 1, out.nll))?;
            // Forward and backward overlap across the replicas: one phase.
            (out.nll, grads, ms(t), 0.0)
        };
        let mut grads = grads;
        let t = Instant::now();
        let norm = clip_global_norm(&model, &mut grads, self.stage.grad_clip);
        let clip = ms(t);
        if !norm.is_finite() {
            bail!("step {}: the gradient norm is {norm}", step + 1);
        }
        let t = Instant::now();
        let model = optim.step(self.stage.lr, model, grads);
        let optimizer = ms(t);
        let times = StepTimes { forward, backward, clip, optimizer, total: ms(t_step), loss: nll / self.tokens };
        Ok((model, times))
    }
}

/// The result from the timed steps.
#[allow(clippy::too_many_arguments)]
fn summarize(
    exp: &TrainBenchSpec,
    inputs: &StepInputs,
    cfg: &VlmConfig,
    (pv, pp, pl): (usize, usize, usize),
    opts: &TrainBenchOptions,
    timed: &[StepTimes],
    peak_step_mib: Option<f64>,
    breakdown_ms: Option<Breakdown>,
) -> TrainBenchResult {
    let (b, stage) = (&inputs.batch, inputs.stage);
    let n = timed.len() as f64;
    let mean_of = |f: fn(&StepTimes) -> f64| timed.iter().map(f).sum::<f64>() / n;
    let mean = mean_of(|t| t.total);
    let mut sorted: Vec<f64> = timed.iter().map(|t| t.total).collect();
    sorted.sort_by(f64::total_cmp);
    let size = cfg.encoder.image_size();
    let (_, _, vision_dim) = cfg.encoder.token_grid(size, size);
    TrainBenchResult {
        experiment: exp.name.clone(),
        stage: stage.name.clone(),
        trained_parts: stage.train.iter().map(|p| format!("{p:?}").to_lowercase()).collect(),
        params_vision: pv,
        params_projector: pp,
        params_language: pl,
        params_total: pv + pp + pl,
        image_size: size,
        image_tokens: cfg.tokens_per_image(size, size),
        vision_dim,
        text_hidden: cfg.text.hidden_size,
        text_mlp_width: cfg.text.mlp_width(),
        text_layers: cfg.text.num_layers(),
        attention_layers: cfg.text.attention_layers(),
        vocab_size: cfg.text.vocab_size,
        batch: b.batch.rows,
        seq_len: b.batch.len,
        loss_tokens_per_row: b.loss_tokens() / b.batch.rows,
        warmup: opts.warmup,
        steps: opts.steps,
        ms_per_step: mean,
        median_ms: sorted[sorted.len() / 2],
        min_ms: sorted[0],
        samples_per_s: b.batch.rows as f64 * 1e3 / mean,
        phases_ms: PhaseMs {
            forward: mean_of(|t| t.forward),
            backward: mean_of(|t| t.backward),
            clip: mean_of(|t| t.clip),
            optimizer: mean_of(|t| t.optimizer),
        },
        breakdown_ms,
        last_loss: timed.last().map_or(f64::NAN, |t| t.loss),
        peak_step_mib,
        threads: rayon::current_num_threads(),
    }
}

impl TrainBenchResult {
    /// The report `bench train` prints, for `device` (as the user named it).
    pub fn text(&self, device: &str) -> String {
        let r = self;
        let p = &r.phases_ms;
        let mut lines = vec![
            format!(
                "{} stage {:?} (training {}): {} params = vision {} + projector {} + language {}",
                r.experiment,
                r.stage,
                r.trained_parts.join(", "),
                r.params_total,
                r.params_vision,
                r.params_projector,
                r.params_language
            ),
            format!(
                "image {}px -> {} tokens of {}; LM hidden {}, MLP {}, {} layers (attention at {:?}), vocab {}",
                r.image_size,
                r.image_tokens,
                r.vision_dim,
                r.text_hidden,
                r.text_mlp_width,
                r.text_layers,
                r.attention_layers,
                r.vocab_size
            ),
            format!(
                "batch {} x {} positions ({} trained per row), {} timed steps after {} warm-up",
                r.batch, r.seq_len, r.loss_tokens_per_row, r.steps, r.warmup
            ),
            format!(
                "step: {:.1} ms mean ({:.1} median, {:.1} min) = {:.2} samples/s",
                r.ms_per_step, r.median_ms, r.min_ms, r.samples_per_s
            ),
            format!(
                "phases: forward {:.1} ms, backward {:.1} ms, grads + clip {:.1} ms, optimizer {:.1} ms",
                p.forward, p.backward, p.clip, p.optimizer
            ),
        ];
        if let Some(b) = &r.breakdown_ms {
            lines.push(format!(
                "halves: vision forward {:.1} + backward {:.1} ms, language forward {:.1} + backward {:.1} ms",
                b.vision_forward, b.vision_backward, b.language_forward, b.language_backward
            ));
        }
        lines.push(format!(
            "last loss {:.3}, peak step heap {}, {} threads, device {device}",
            r.last_loss,
            r.peak_step_mib.map_or("n/a".into(), |m| format!("{m:.0} MiB")),
            r.threads
        ));
        lines.join("\n") + "\n"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The model and stages of an experiment file (its other tables are the experiment's).
    #[derive(serde::Deserialize)]
    struct Tables {
        model: ModelConfig,
        #[serde(rename = "stage")]
        stages: Vec<StageConfig>,
    }

    fn spec() -> TrainBenchSpec {
        let t: Tables = toml::from_str(EXP).unwrap();
        TrainBenchSpec { name: "t".into(), seed: 0, vocab_size: 64, model: t.model, stages: t.stages }
    }

    const EXP: &str = r#"
[model.vision]
preset = "mobilenetv5_tiny"
msfa_output_resolution = 2
[model.language]
preset = "lfm2-nano"
num_layers = 2
attention_layers = 1
[[stage]]
name = "connector"
train = ["projector"]
steps = 1
lr = 1e-3
[[stage]]
name = "full"
train = ["vision", "projector", "language"]
steps = 1
lr = 1e-3
"#;

    #[test]
    fn batch_has_training_shapes() {
        let exp = spec();
        let cfg = model_config(&exp).unwrap();
        let opts = TrainBenchOptions { batch: 2, ..Default::default() };
        let b = synthetic_batch(&cfg, &opts, 0, &Device::flex());
        let per_image = cfg.tokens_per_image(64, 64);
        assert_eq!(b.batch.len, per_image + 40);
        assert_eq!(b.batch.inputs.iter().filter(|&&x| x == cfg.image_token_id).count(), 2 * per_image);
        assert_eq!(b.loss_tokens(), 2 * 8);
        assert!(b.batch.inputs[3..3 + per_image].iter().all(|&x| x == cfg.image_token_id));
        assert_eq!(b.pixels.as_ref().unwrap().dims(), [2, 3, 64, 64]);
    }

    #[test]
    fn steps_run_and_loss_falls() {
        let exp = spec();
        let opts = TrainBenchOptions { batch: 2, steps: 3, warmup: 1, breakdown: true, ..Default::default() };
        let r = run(&exp, &opts, &[Device::flex()]).unwrap();
        assert!(r.breakdown_ms.is_some_and(|b| b.vision_backward > 0.0 && b.language_backward > 0.0));
        assert_eq!(r.stage, "full");
        assert!(r.samples_per_s > 0.0 && r.last_loss.is_finite());
        assert_eq!(r.params_total, r.params_vision + r.params_projector + r.params_language);
        // Two replicas: one row each, forward and backward timed together.
        let opts = TrainBenchOptions { breakdown: false, ..opts };
        let two = run(&exp, &opts, &[Device::flex(), Device::flex()]).unwrap();
        assert!(two.last_loss.is_finite() && two.phases_ms.forward > 0.0 && two.phases_ms.backward == 0.0);
        assert!(run(&exp, &TrainBenchOptions { batch: 1, ..opts }, &[Device::flex(), Device::flex()]).is_err());
    }
}

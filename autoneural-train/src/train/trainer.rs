//! The training loop of one stage: AdamW (beta2 0.95 by default), warmup + cosine learning
//! rate, gradient accumulation with the loss normalised over the whole effective batch,
//! global-norm clipping, validation and checkpoints at intervals, and a hard stop on a
//! non-finite loss or gradient (the last checkpoint stays as it was).
//!
//! Why a loop of our own and not burn-train's `Learner`: the Learner checkpoints and resumes
//! per epoch and has no stop on NaN; the paper's stages are counted in optimizer steps, and
//! a resumed run here must reproduce the uninterrupted one bit for bit.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use anyhow::{Context, Result, bail};
use autoneural_model::quant::activations::with_qat;
use autoneural_model::quant::qat::Qat;
use autoneural_model::vlm::VisionLanguageModel;
use burn::module::Module;
use burn::optim::{AdamWConfig, GradientsParams, ModuleOptimizer};
use burn::tensor::{Device, Tensor};

use crate::config::{Part, StageConfig};
use crate::train::batches::{Batcher, Prefetcher};
use crate::train::checkpoint::{TrainerState, save_checkpoint};
use crate::train::clip::{clip_global_norm, take_grads};
use crate::train::loss::{LossWeights, forward_loss};
use crate::train::metrics::{MetricsLog, StepMetrics, ValMetrics};
use crate::train::parallel::{Replicas, shard_sizes};
use crate::train::schedule::learning_rate;
use autoneural_data::mixture::BadRecordPolicy;
use autoneural_data::{Catalog, MixtureSampler, Recipe, SamplerState, Skipped, Split};

/// Everything a stage needs besides the model.
pub struct StageRun<'a> {
    pub run_dir: &'a Path,
    /// The sources stages mix: `[[data.source]]` and the families of `data.dir`.
    pub catalog: &'a Catalog,
    pub tokenizer_dir: &'a Path,
    pub batcher: &'a Batcher,
    /// Training devices, the main one (the batcher's and the model's) first; more than one
    /// trains data-parallel (see `parallel`).
    pub devices: &'a [Device],
    pub index: usize,
    pub count: usize,
    pub stage: &'a StageConfig,
    pub on_bad_record: BadRecordPolicy,
    /// Steps finished by earlier stages.
    pub global_step_base: usize,
    /// Checkpoints to keep.
    pub keep: usize,
    /// Stop (with a checkpoint) once this many steps are done over all stages: an
    /// interruption on purpose, for tests and time-boxed jobs.
    pub stop_after: Option<usize>,
}

/// What a finished stage reports.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct StageReport {
    pub name: String,
    pub steps: usize,
    pub effective_batch: usize,
    pub trainable_params: usize,
    pub frozen_params: usize,
    /// The last step's language-model loss; none in an alignment-only stage (`lm_weight = 0`),
    /// which does not run the language model.
    pub final_train_loss: Option<f64>,
    /// The last step's alignment loss, in stages with `align_weight`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub final_align_loss: Option<f64>,
    pub val: Option<ValMetrics>,
    pub samples_per_s: f64,
    pub seconds: f64,
    pub checkpoint: PathBuf,
    /// False when the stage stopped early on request (`stop_after`).
    pub complete: bool,
    /// A QAT stage's activation ranges at its end, by op (its weight's key).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub qat_ranges: Option<BTreeMap<String, (f32, f32)>>,
    /// Records skipped under `on_bad_record = "skip"`, with the first reasons.
    #[serde(default)]
    pub skipped: Skipped,
}

/// The stage's data: its recipe file, or its mixture over the experiment's sources (by
/// default the declared sources at their weights, or the paper's mixture of families).
pub fn stage_recipe(run: &StageRun) -> Result<Recipe> {
    let s = run.stage;
    let mut recipe = match &s.recipe {
        Some(path) => Recipe::from_file(path)?,
        None => {
            let mixture: Option<Vec<(String, f64)>> =
                s.mixture.as_ref().map(|m| m.iter().map(|(k, v)| (k.clone(), *v)).collect());
            run.catalog
                .recipe(mixture.as_deref(), run.on_bad_record)
                .map_err(|e| anyhow::anyhow!("stage {:?}: {e}", s.name))?
        }
    };
    recipe.on_bad_record = run.on_bad_record;
    Ok(recipe)
}

/// Sets which parts train; the others get no gradients, so no optimizer touches them.
pub fn set_trainable(mut model: VisionLanguageModel, parts: &[Part]) -> VisionLanguageModel {
    model.vision_tower = model.vision_tower.set_require_grad(parts.contains(&Part::Vision));
    model.multi_modal_projector = model.multi_modal_projector.set_require_grad(parts.contains(&Part::Projector));
    model.language = model.language.set_require_grad(parts.contains(&Part::Language));
    model
}

fn param_counts(model: &VisionLanguageModel, parts: &[Part]) -> (usize, usize) {
    let sizes = [
        (Part::Vision, model.vision_tower.num_params()),
        (Part::Projector, model.multi_modal_projector.num_params()),
        (Part::Language, model.language.num_params()),
    ];
    let trainable = sizes.iter().filter(|(p, _)| parts.contains(p)).map(|(_, n)| n).sum();
    let total: usize = sizes.iter().map(|(_, n)| n).sum();
    (trainable, total - trainable)
}

pub fn optimizer(stage: &StageConfig) -> ModuleOptimizer {
    AdamWConfig::new()
        .with_beta_1(stage.beta1 as f32)
        .with_beta_2(stage.beta2 as f32)
        .with_epsilon(1e-8)
        .with_weight_decay(stage.weight_decay as f32)
        .init()
}

/// One optimizer step, each part at `lr` times its `lr_scale` multiplier. Parts with their
/// own rate are stepped separately with their own gradients; AdamW's moments are kept per
/// parameter, so this is the same update as one step with per-part rates.
fn step_parts(
    optim: &mut ModuleOptimizer,
    lr: f64,
    lr_scale: &BTreeMap<Part, f64>,
    mut model: VisionLanguageModel,
    mut grads: GradientsParams,
) -> VisionLanguageModel {
    let mut scaled = Vec::new();
    for (&part, &factor) in lr_scale.iter().filter(|(_, f)| **f != 1.0) {
        let own = match part {
            Part::Vision => take_grads(&model.vision_tower, &mut grads),
            Part::Projector => take_grads(&model.multi_modal_projector, &mut grads),
            Part::Language => take_grads(&model.language, &mut grads),
        };
        scaled.push((lr * factor, own));
    }
    model = optim.step(lr, model, grads);
    for (part_lr, own) in scaled {
        model = optim.step(part_lr, model, own);
    }
    model
}

/// Mean loss and token accuracy on the first `val_batches` batches of the validation split;
/// `None` when no source of the stage has one.
pub fn validate(model: &VisionLanguageModel, run: &StageRun) -> Result<Option<ValMetrics>> {
    let recipe = stage_recipe(run)?;
    if !recipe.has(Split::Val) {
        return Ok(None);
    }
    let model = model.valid();
    let mut sampler = MixtureSampler::new(&recipe, Split::Val)?;
    let (mut nll, mut correct, mut tokens) = (0.0f64, 0.0f64, 0usize);
    let (mut rotated_nll, mut rotated_tokens) = (0.0f64, 0usize);
    for _ in 0..run.stage.val_batches.max(1) {
        let mut b = run.batcher.next_batch(&mut sampler, run.stage.micro_batch)?;
        let parts = forward_loss(&model, &b)?;
        nll += f64::from(parts.nll_sum.into_scalar::<f32>());
        correct += f64::from(parts.correct.into_scalar::<f32>());
        tokens += b.loss_tokens();
        if let Some(rotated) = b.pixels.as_ref().and_then(rotate_images) {
            b.pixels = Some(rotated);
            rotated_nll += f64::from(forward_loss(&model, &b)?.nll_sum.into_scalar::<f32>());
            rotated_tokens += b.loss_tokens();
        }
    }
    let tokens = tokens.max(1) as f64;
    Ok(Some(ValMetrics {
        loss: nll / tokens,
        token_accuracy: correct / tokens,
        loss_images_rotated: (rotated_tokens > 0).then(|| rotated_nll / rotated_tokens as f64),
    }))
}

/// `[n, 3, h, w]` with image `i` in place of image `i + 1` (the last first); `None` for
/// fewer than two images.
fn rotate_images(pixels: &Tensor<4>) -> Option<Tensor<4>> {
    let n = pixels.dims()[0];
    (n >= 2).then(|| Tensor::cat(vec![pixels.clone().narrow(0, n - 1, 1), pixels.clone().narrow(0, 0, n - 1)], 0))
}

/// Trains one stage from `model`, continuing from `resume` (state and optimizer file of a
/// checkpoint taken inside this stage) when given.
pub fn run_stage(
    model: VisionLanguageModel,
    run: &StageRun,
    resume: Option<(TrainerState, PathBuf)>,
    log: &mut MetricsLog,
) -> Result<(VisionLanguageModel, StageReport)> {
    let s = run.stage;
    let mut model = set_trainable(model, &s.train);
    let params = param_counts(&model, &s.train);
    let mut t = Training::start(run, &model, resume)?;
    t.announce(log, params);
    for step in t.steps_done..t.total {
        model = t.step(model, step, log)?;
        let last = step + 1 == t.total;
        if !last && (run.stop_after == Some(run.global_step_base + t.steps_done) || log.interrupted()) {
            break;
        }
        if !last && s.checkpoint_every > 0 && t.steps_done % s.checkpoint_every == 0 {
            t.checkpoint(&model, false)?;
        }
    }
    log.finish_stage();
    t.finish(model, log, params)
}

/// One stage in progress: its data, optimizer and (QAT) quantizers, and how far it got.
struct Training<'r, 'a> {
    run: &'r StageRun<'a>,
    /// Optimizer steps of the stage.
    total: usize,
    optim: ModuleOptimizer,
    /// The stage's records, drawn and prepared ahead on a worker thread.
    data: Prefetcher,
    /// The sampler's state after the last micro-batch the steps used.
    sampler: SamplerState,
    replicas: Replicas,
    /// QAT: fake quantizers on every quantized weight and op input, for this stage only.
    qat: Option<Arc<Qat>>,
    /// The stage runs the language model (an alignment-only stage has no loss or token
    /// accuracy, and nothing to validate).
    lm: bool,
    steps_done: usize,
    train_seconds: f64,
    samples: usize,
    last_loss: Option<f64>,
    last_align: Option<f64>,
    val: Option<ValMetrics>,
    /// Skipped records already named in the log.
    skips_shown: usize,
}

impl<'r, 'a> Training<'r, 'a> {
    /// The stage's data, optimizer and quantizers, put where `resume` (a checkpoint taken
    /// inside this stage) left them.
    fn start(
        run: &'r StageRun<'a>,
        model: &VisionLanguageModel,
        resume: Option<(TrainerState, PathBuf)>,
    ) -> Result<Self> {
        let s = run.stage;
        let recipe = stage_recipe(run)?;
        // Counting reads the files (JSONL) or their headers: only stages in epochs need it.
        let records = if s.steps.is_none() { recipe.count(Split::Train)? as usize } else { 0 };
        let total = s.total_steps(records);
        let qat = match &s.quantization {
            Some(q) => {
                let policy = q.load_policy().with_context(|| format!("stage {:?}: quantization.policy", s.name))?;
                Some(Arc::new(Qat::new(model, policy, q.range_momentum)))
            }
            None => None,
        };
        let mut sampler = MixtureSampler::new(&recipe, Split::Train)?;
        let replicas = Replicas::new(run.devices)?;
        let mut optim = optimizer(s);
        let mut steps_done = 0;
        if let Some((state, optimizer_file)) = resume {
            if state.step > total {
                bail!("the checkpoint is at step {} of stage {:?}, which has {total} steps", state.step, s.name);
            }
            if let (Some(q), Some(ranges)) = (&qat, &state.qat_ranges) {
                q.restore_ranges(ranges)?;
            }
            optim = optim
                .load(&optimizer_file)
                .map_err(|e| anyhow::anyhow!("{}: cannot load the optimizer state: {e:?}", optimizer_file.display()))?;
            match &state.sampler {
                // Each source opened where the checkpoint's reader was.
                Some(at) => sampler.restore(at).with_context(|| format!("stage {:?}: resuming the data", s.name))?,
                // A checkpoint from before reader positions were recorded: replay the draws.
                None => {
                    for _ in 0..state.records_drawn {
                        sampler.next_record()?;
                    }
                    sampler.refused = state.refused.clone();
                }
            }
            steps_done = state.step;
        }
        // Each micro-batch is drawn as one shard per device, in order, so the records of a
        // step are the same with any number of devices.
        let pattern: Vec<usize> =
            (0..s.grad_accum).flat_map(|_| shard_sizes(s.micro_batch, replicas.count())).collect();
        let depth = pattern.len();
        let state = sampler.state();
        let t = Self {
            run,
            total,
            optim,
            data: Prefetcher::start(run.batcher, sampler, pattern, depth),
            skips_shown: state.skipped().first.len(),
            sampler: state,
            replicas,
            qat,
            lm: s.lm_weight > 0.0,
            steps_done,
            train_seconds: 0.0,
            samples: 0,
            last_loss: None,
            last_align: None,
            val: None,
        };
        Ok(t)
    }

    /// What the stage trains, for whoever watches; starts its progress display.
    fn announce(&self, log: &mut MetricsLog, (trainable, frozen): (usize, usize)) {
        let (run, s) = (self.run, self.run.stage);
        log.say(format!(
            "stage {}/{} {:?}: {} steps x {} samples, training {:?} ({} parameters, {} frozen)",
            run.index + 1,
            run.count,
            s.name,
            self.total,
            s.effective_batch(),
            s.train,
            trainable,
            frozen
        ));
        if let Some(q) = &self.qat {
            let (w, a) = q.counts();
            log.say(format!("  quantization-aware at {}: {w} weights and {a} op inputs fake-quantized", q.policy.name));
        }
        log.start_stage(&s.name, run.index, run.count, self.steps_done, self.total);
    }

    /// Where the stage stands, as a checkpoint records it.
    fn state(&self, done: bool) -> TrainerState {
        let (run, s) = (self.run, self.run.stage);
        TrainerState {
            stage: run.index,
            stage_name: s.name.clone(),
            step: self.steps_done,
            global_step: run.global_step_base + self.steps_done,
            records_drawn: self.sampler.drawn.iter().sum(),
            stage_done: done,
            qat_ranges: self.qat.as_ref().map(|q| q.ranges_by_key()),
            refused: self.sampler.refused.clone(),
            sampler: Some(self.sampler.clone()),
        }
    }

    fn checkpoint(&self, model: &VisionLanguageModel, done: bool) -> Result<PathBuf> {
        let run = self.run;
        save_checkpoint(run.run_dir, model, &self.optim, &self.state(done), run.tokenizer_dir, run.keep)
    }

    /// Optimizer step `step` (0-based): its batch, forward and backward on every replica,
    /// clipping, the update; then its metrics, and a validation when one is due.
    fn step(
        &mut self,
        mut model: VisionLanguageModel,
        step: usize,
        log: &mut MetricsLog,
    ) -> Result<VisionLanguageModel> {
        let (run, s) = (self.run, self.run.stage);
        let t0 = Instant::now();
        let lr = learning_rate(step, self.total, s.warmup_steps, s.lr, s.min_lr());
        let micro_batches = s.grad_accum * shard_sizes(s.micro_batch, self.replicas.count()).len();
        let mut shards = Vec::with_capacity(micro_batches);
        for _ in 0..micro_batches {
            let (mut b, state) = self.data.next()?;
            b.weights = LossWeights { lm: s.lm_weight, align: s.align_weight };
            shards.push(b);
            self.sampler = state;
        }
        // The loss of the whole effective batch is the mean over all of its trained tokens,
        // so accumulation gives the same gradient as one large batch.
        let tokens = shards.iter().map(|b| b.loss_tokens()).sum::<usize>().max(1) as f64;
        let out = with_qat(self.qat.clone(), || self.replicas.step_gradients(&model, &shards, tokens))?;
        let (nll, correct) = (out.nll, out.correct);
        let origins: Vec<&str> = shards.iter().flat_map(|b| b.origins.iter().map(String::as_str)).collect();
        let Some(mut grads) = out.grads else {
            bail!(non_finite(run, step, "loss", nll, &origins));
        };
        let grad_norm = clip_global_norm(&model, &mut grads, s.grad_clip);
        if !grad_norm.is_finite() {
            bail!(non_finite(run, step, "gradient norm", grad_norm, &origins));
        }
        model = step_parts(&mut self.optim, lr, &s.lr_scale, model, grads);
        if let Some(q) = &self.qat {
            q.commit_step();
        }
        let dt = t0.elapsed().as_secs_f64();
        self.train_seconds += dt;
        self.samples += s.effective_batch();
        self.last_loss = self.lm.then_some(nll / tokens);
        self.last_align = out.align;
        let m = StepMetrics {
            stage: s.name.clone(),
            step: step + 1,
            global_step: run.global_step_base + step + 1,
            loss: self.last_loss,
            token_accuracy: self.lm.then_some(correct / tokens),
            lr,
            grad_norm,
            samples_per_s: s.effective_batch() as f64 / dt,
            align_loss: out.align,
        };
        let last = step + 1 == self.total;
        let skipped = self.sampler.skipped();
        for reason in &skipped.first[self.skips_shown..] {
            log.say(format!("  skipped a bad record (on_bad_record = \"skip\"): {reason}"));
        }
        self.skips_shown = skipped.first.len();
        log.step(&m, last || (step + 1) % s.log_every.max(1) == 0, self.total, skipped.count)?;
        // Validation measures the language model's loss, which a stage that does not run
        // it (alignment only) has no use for: it would report the untrained head's.
        if self.lm
            && (last || (s.val_every > 0 && (step + 1) % s.val_every == 0))
            && let Some(v) = with_qat(self.qat.clone(), || validate(&model, run))?
        {
            log.val(&s.name, run.global_step_base + step + 1, &v)?;
            self.val = Some(v);
        }
        self.steps_done = step + 1;
        Ok(model)
    }

    /// The stage's last checkpoint (at its end, or where `stop_after` or the dashboard
    /// stopped it) and its report.
    fn finish(
        self,
        model: VisionLanguageModel,
        log: &mut MetricsLog,
        (trainable_params, frozen_params): (usize, usize),
    ) -> Result<(VisionLanguageModel, StageReport)> {
        let s = self.run.stage;
        let complete = self.steps_done == self.total;
        let skipped = self.sampler.skipped();
        if skipped.count > 0 {
            log.say(format!(
                "stage {:?}: {} bad record(s) skipped (on_bad_record = \"skip\"); the run report lists the first",
                s.name, skipped.count
            ));
        }
        let checkpoint = self.checkpoint(&model, complete)?;
        let report = StageReport {
            name: s.name.clone(),
            steps: self.steps_done,
            effective_batch: s.effective_batch(),
            trainable_params,
            frozen_params,
            final_train_loss: self.last_loss,
            final_align_loss: self.last_align,
            val: self.val,
            samples_per_s: if self.train_seconds > 0.0 { self.samples as f64 / self.train_seconds } else { 0.0 },
            seconds: self.train_seconds,
            checkpoint,
            complete,
            qat_ranges: self.qat.as_ref().map(|q| q.ranges_by_key()),
            skipped,
        };
        Ok((model, report))
    }
}

/// Why training stopped on a NaN or infinity, with the records of the step's batch: the
/// cause is as often one record (an empty image, an absurd value) as the learning rate.
fn non_finite(run: &StageRun, step: usize, what: &str, value: f64, origins: &[&str]) -> String {
    let shown: Vec<&str> = origins.iter().take(8).copied().collect();
    let more =
        if origins.len() > shown.len() { format!(" and {} more", origins.len() - shown.len()) } else { String::new() };
    format!(
        "stage {:?} step {}: the {what} is {value}; training stopped. The last good checkpoint under {} is \
         untouched. The step's batch held: {}{more}. Look at those records first (a record can make a \
         weight's gradient overflow); if they are sound, lower the learning rate (stage.lr) or tighten \
         grad_clip, then run again with --resume",
        run.stage.name,
        step + 1,
        run.run_dir.join("checkpoints").display(),
        shown.join("; ")
    )
}

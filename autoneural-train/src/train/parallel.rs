//! Data parallelism, the way burn-train's multi-device strategy does it: each shard of an
//! optimizer step runs forward and backward on a replica of the model forked to its device,
//! one thread per device, and the gradients are summed on the main device (the first) in
//! shard order, so the sum does not depend on which thread finishes first.
//!
//! The effective batch is the same with any number of devices: the experiment's
//! `micro_batch` is split into one shard per device, and `grad_accum` micro-batches run as
//! that many waves. Only batch-norm statistics see the split: each replica normalises with
//! its own shard's statistics (as PyTorch DDP without SyncBatchNorm), and the running
//! statistics become the mean of the replicas' updates (Burn's `RunningState` semantics).
//! On a CPU, `device = "flex,flex"` runs two replicas, each with its own share of the cores
//! (a rayon pool of its own): on two cores, one replica per core, where one replica alone
//! leaves the second core idle during the element-wise work Burn's flex backend does on one
//! thread.

use std::sync::Arc;
use std::sync::mpsc::{Receiver, Sender, channel};

use anyhow::{Result, anyhow};
use autoneural_model::nn::conv_norm::{commit_running_stats, defer_running_stats};
use autoneural_model::quant::activations::{current_qat, with_qat};
use autoneural_model::quant::qat::Qat;
use autoneural_model::vlm::VisionLanguageModel;
use burn::module::Module;
use burn::optim::{GradientsAccumulator, GradientsParams};
use burn::tensor::Device;

use crate::train::loss::{DeviceBatch, forward_loss};

/// What the shards of one optimizer step produced.
pub struct StepGradients {
    /// Summed gradients of `nll / tokens`; `None` when a shard's loss was not finite (its
    /// backward was skipped).
    pub grads: Option<GradientsParams>,
    /// Summed negative log-likelihood over the trained tokens (the first non-finite shard's
    /// value when there is one).
    pub nll: f64,
    /// Trained tokens the argmax predicts.
    pub correct: f64,
    /// The alignment loss, weighted by each shard's share of the trained tokens, when the
    /// step computed it.
    pub align: Option<f64>,
}

/// One shard's contribution.
struct ShardOutput {
    grads: Option<GradientsParams>,
    nll: f64,
    correct: f64,
    /// The shard's alignment loss times its share of the step's trained tokens.
    align: Option<f64>,
}

/// A replica, its shard, the step's trained-token count, and the QAT quantizers of the
/// calling thread (thread-local state, so each job carries them to its worker).
type Job = (VisionLanguageModel, DeviceBatch, f64, Option<Arc<Qat>>);

/// A rayon pool for one of `replicas` replicas, with an even share of the global pool's
/// threads. Burn's flex backend runs its GEMMs and reductions on the current rayon pool:
/// with every replica calling into the global pool, two replicas on two cores keep four
/// threads busy (each caller's serial ops plus the pool's two workers) and contend for the
/// cores; in pools of their own they run one per core, as one process per core would
/// (1.29x the samples/s, docs/benchmarks.md). The threads live as long as the replicas: a
/// thread per step would also cost its allocator heap, whose fresh pages the kernel must
/// zero again every step.
fn replica_pool(index: usize, replicas: usize) -> Result<rayon::ThreadPool> {
    rayon::ThreadPoolBuilder::new()
        .num_threads((rayon::current_num_threads() / replicas).max(1))
        .thread_name(move |i| format!("replica-{index}.{i}"))
        .build()
        .map_err(|e| anyhow!("cannot start a training thread: {e}"))
}

/// One device's replica: its threads and where its results arrive.
struct Worker {
    device: Device,
    pool: rayon::ThreadPool,
    outbox: Sender<Result<ShardOutput, String>>,
    results: Receiver<Result<ShardOutput, String>>,
}

impl Worker {
    fn spawn(device: Device, index: usize, replicas: usize) -> Result<Self> {
        let (outbox, results) = channel();
        Ok(Self { device, pool: replica_pool(index, replicas)?, outbox, results })
    }

    fn submit(&self, (replica, batch, tokens, qat): Job) {
        let outbox = self.outbox.clone();
        self.pool.spawn(move || {
            let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                with_qat(qat, || defer_running_stats(|| shard(&replica, &batch, tokens)))
            }));
            let r = match r {
                Ok(Ok(out)) => Ok(out),
                Ok(Err(e)) => Err(format!("{e:#}")),
                Err(p) => Err(format!("panicked: {}", panic_text(p.as_ref()))),
            };
            let _ = outbox.send(r);
        });
    }

    fn receive(&self) -> Result<ShardOutput> {
        let r =
            self.results.recv().map_err(|_| anyhow!("the training worker on device {:?} has stopped", self.device))?;
        r.map_err(|e| anyhow!("the training worker on device {:?}: {e}", self.device))
    }
}

fn panic_text(payload: &(dyn std::any::Any + Send)) -> String {
    payload
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "unknown panic".into())
}

/// The training devices. With one device its shards run on the calling thread and the
/// global rayon pool; with several, each device's replica, the main one's included, runs
/// on a worker with a pool of its own.
pub struct Replicas {
    /// One per device, the main one (the model's) first; none with a single device.
    workers: Vec<Worker>,
}

impl Replicas {
    /// `devices`: the main device (the model's) first. Errors on an empty list.
    pub fn new(devices: &[Device]) -> Result<Self> {
        let n = devices.len();
        let workers = match n {
            0 => return Err(anyhow!("no training device")),
            1 => Vec::new(),
            _ => devices.iter().enumerate().map(|(i, d)| Worker::spawn(d.clone(), i, n)).collect::<Result<_>>()?,
        };
        Ok(Self { workers })
    }

    pub fn count(&self) -> usize {
        self.workers.len().max(1)
    }

    /// Forward and backward of `shards`, in waves of [`Replicas::count`] shards at once,
    /// with the loss divided by `tokens`, the trained-token count of the whole step.
    pub fn step_gradients(
        &self,
        model: &VisionLanguageModel,
        shards: &[DeviceBatch],
        tokens: f64,
    ) -> Result<StepGradients> {
        // With several devices, gradients gather on the main one's.
        let main = self.workers.first().map(|w| &w.device);
        let mut accumulator = GradientsAccumulator::new();
        let (mut nll, mut correct, mut align) = (0.0, 0.0, None);
        for wave in shards.chunks(self.count()) {
            let results = if main.is_some() {
                self.run_wave(model, wave, tokens)?
            } else {
                // One device: batch-norm statistics are committed as they are computed.
                wave.iter().map(|b| shard(model, b, tokens)).collect::<Result<Vec<_>>>()?
            };
            for r in results {
                if !r.nll.is_finite() {
                    return Ok(StepGradients { grads: None, nll: r.nll, correct, align });
                }
                nll += r.nll;
                correct += r.correct;
                if let Some(a) = r.align {
                    align = Some(align.unwrap_or(0.0) + a);
                }
                if let Some(g) = r.grads {
                    let g = match main {
                        Some(device) => g.to_device(device, model),
                        None => g,
                    };
                    accumulator.accumulate(model, g);
                }
            }
            if main.is_some() {
                commit_running_stats(&model.vision_tower);
            }
        }
        Ok(StepGradients { grads: Some(accumulator.grads()), nll, correct, align })
    }

    /// Shard `i` on worker `i`: shard 0 with `model` itself, the others with a replica
    /// forked to their device; results in shard order.
    fn run_wave(&self, model: &VisionLanguageModel, wave: &[DeviceBatch], tokens: f64) -> Result<Vec<ShardOutput>> {
        let qat = current_qat();
        for (i, (b, worker)) in wave.iter().zip(&self.workers).enumerate() {
            // `fork` detaches the parameters: each other replica records its own autodiff
            // graph (a graph shared between threads would serialise their backward passes),
            // and the parameter ids stay those of `model`.
            let replica = if i == 0 { model.clone() } else { model.clone().fork(&worker.device) };
            let b = DeviceBatch {
                batch: b.batch.clone(),
                pixels: b.pixels.clone().map(|p| p.to_device(&worker.device)),
                records: b.records,
                weights: b.weights,
                origins: b.origins.clone(),
            };
            worker.submit((replica, b, tokens, qat.clone()));
        }
        // Every submitted result is received, even after a failed shard, so that none of
        // this step's is left in a channel for the next one.
        let results: Vec<Result<ShardOutput>> = self.workers[..wave.len()].iter().map(Worker::receive).collect();
        results.into_iter().collect()
    }
}

/// Rows of each device's shard of a `micro_batch`: as even as possible, the larger first.
pub fn shard_sizes(micro_batch: usize, devices: usize) -> Vec<usize> {
    let n = devices.max(1);
    (0..n).map(|i| micro_batch / n + usize::from(i < micro_batch % n)).collect()
}

/// One shard's forward and backward on `model` (already on the shard's device).
fn shard(model: &VisionLanguageModel, b: &DeviceBatch, tokens: f64) -> Result<ShardOutput> {
    let parts = forward_loss(model, b)?;
    let nll = f64::from(parts.nll_sum.clone().detach().into_scalar::<f32>());
    let correct = f64::from(parts.correct.into_scalar::<f32>());
    // The alignment loss is a mean over this shard's conversations, weighted by the shard's
    // share of the step's trained tokens (the weights of the shards sum to one).
    let share = b.loss_tokens() as f64 / tokens;
    let align_value = parts.align.as_ref().map(|a| f64::from(a.clone().detach().into_scalar::<f32>()) * share);
    if !nll.is_finite() {
        return Ok(ShardOutput { grads: None, nll, correct, align: align_value });
    }
    let loss = match parts.align {
        Some(align) => parts.nll_sum.mul_scalar(b.weights.lm / tokens) + align.mul_scalar(b.weights.align * share),
        None => parts.nll_sum.mul_scalar(b.weights.lm / tokens),
    };
    let grads = loss.backward();
    Ok(ShardOutput { grads: Some(GradientsParams::from_grads(grads, model)), nll, correct, align: align_value })
}

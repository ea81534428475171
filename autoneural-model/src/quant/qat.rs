//! Quantization-aware training (stage 4 of the recipe): while a [`Qat`] context is installed
//! on a thread, every weight the policy quantizes is read fake-quantized (its encoding
//! computed from its current values, as PTQ would compute it) and every op input the
//! policy quantizes is fake-quantized with a running range; gradients pass straight through
//! ([`super::fake::fake_quant`]) to the float master weights.
//!
//! Activation ranges start from the first training batch (its min-max or percentile range,
//! as the policy calibrates) and then follow an exponential moving average of each step's
//! range, so they stay up to date while the weights move. Within a step the ranges are
//! frozen: every shard (data-parallel replicas included) reads the same ranges and merges
//! its batch range into a pending one by min and max, an order-free merge, so runs are
//! deterministic with any number of devices; [`Qat::commit_step`] folds the pending range
//! in after the optimizer step. Validation (tensors without autodiff) reads the ranges and
//! changes nothing.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Mutex, PoisonError};

use burn::module::{Module, Param, ParamId};
use burn::tensor::Tensor;

use super::activations::{Observer, current_qat};
use super::apply::{weight_encoding_in, weight_group};
use super::encoding::{Axes, Encoding};
use super::fake::fake_quant;
use super::kv::{cache_entries, cache_scheme};
use super::policy::{ActivationScheme, Calibration, PrecisionPolicy, WeightScheme};
use crate::checkpoint::apply::{Identity, param_keys, param_shapes};
use crate::error::{ModelError, Result};

/// The fake quantizers of one model under one policy, and their running activation ranges.
#[derive(Debug)]
pub struct Qat {
    pub policy: PrecisionPolicy,
    /// Weight of each step's range in the running range is `1 - momentum`.
    pub momentum: f32,
    weights: HashMap<ParamId, WeightScheme>,
    activations: HashMap<ParamId, ActivationScheme>,
    keys: HashMap<ParamId, String>,
    ranges: Mutex<Ranges>,
}

#[derive(Debug, Default)]
struct Ranges {
    /// `[min, max]` by op (its weight's id), as of the start of this step.
    running: HashMap<ParamId, (f32, f32)>,
    /// This step's batch ranges, merged over shards.
    pending: HashMap<ParamId, (f32, f32)>,
}

impl Qat {
    /// The quantizers `policy` puts on `model` (ids are shared by forks and replicas).
    pub fn new<M: Module>(model: &M, policy: PrecisionPolicy, momentum: f32) -> Self {
        let shapes: HashMap<String, usize> =
            param_shapes(model, &Identity).into_iter().map(|(k, s)| (k, s.len())).collect();
        let (mut weights, mut activations, mut keys) = (HashMap::new(), HashMap::new(), HashMap::new());
        for (key, id) in param_keys(model, &Identity) {
            if let Some(group) = weight_group(&key, shapes[&key]) {
                let p = policy.precision_of(group, &key);
                if let Some(w) = p.weights {
                    weights.insert(id, w);
                }
            }
            // Op inputs are keyed by their weight, as calibration keys them.
            if let Some(a) = weight_group(&key, 2).and_then(|g| policy.precision_of(g, &key).activations) {
                activations.insert(id, a);
            }
            keys.insert(id, key);
        }
        if let Some(scheme) = cache_scheme(&policy) {
            for (key, id) in cache_entries(model) {
                activations.insert(id, scheme);
                keys.insert(id, key);
            }
        }
        Self { policy, momentum, weights, activations, keys, ranges: Mutex::new(Ranges::default()) }
    }

    fn ranges(&self) -> std::sync::MutexGuard<'_, Ranges> {
        self.ranges.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Number of fake-quantized weights and op inputs.
    pub fn counts(&self) -> (usize, usize) {
        (self.weights.len(), self.activations.len())
    }

    /// Folds this step's ranges into the running ones (the first step's become them).
    pub fn commit_step(&self) {
        let mut r = self.ranges();
        let pending = std::mem::take(&mut r.pending);
        let m = self.momentum;
        for (id, (lo, hi)) in pending {
            r.running
                .entry(id)
                .and_modify(|(a, b)| {
                    *a = m * *a + (1.0 - m) * lo;
                    *b = m * *b + (1.0 - m) * hi;
                })
                .or_insert((lo, hi));
        }
    }

    /// The running ranges by checkpoint key (saved with checkpoints for exact resume).
    pub fn ranges_by_key(&self) -> BTreeMap<String, (f32, f32)> {
        self.ranges().running.iter().map(|(id, r)| (self.keys[id].clone(), *r)).collect()
    }

    /// Restores ranges saved by [`Qat::ranges_by_key`]; a key the model lacks is an error.
    pub fn restore_ranges(&self, saved: &BTreeMap<String, (f32, f32)>) -> Result<()> {
        let ids: HashMap<&str, ParamId> = self.keys.iter().map(|(id, k)| (k.as_str(), *id)).collect();
        let mut r = self.ranges();
        for (key, range) in saved {
            let id = ids
                .get(key.as_str())
                .ok_or_else(|| ModelError::Invalid(format!("QAT ranges: the model has no weight {key:?}")))?;
            r.running.insert(*id, *range);
        }
        Ok(())
    }

    /// Encodings of the op inputs from the running ranges, by weight id.
    pub fn activation_encodings(&self) -> Result<HashMap<ParamId, Encoding>> {
        let r = self.ranges();
        r.running
            .iter()
            .filter_map(|(id, &(lo, hi))| self.activations.get(id).map(|a| (id, lo, hi, a.bits)))
            .map(|(id, lo, hi, bits)| {
                let enc = Encoding::activation(lo, hi, bits)
                    .map_err(|e| ModelError::Invalid(format!("{}: {e}", self.keys[id])))?;
                Ok((*id, enc))
            })
            .collect()
    }

    pub fn weight<const D: usize>(&self, param: &Param<Tensor<D>>, axes: Axes) -> Tensor<D> {
        let w = param.val();
        let Some(&scheme) = self.weights.get(&param.id) else { return w };
        let values = w.clone().detach().into_data().try_into_vec_as::<f32>().expect("float weights");
        match weight_encoding_in(&values, &w.dims(), scheme, axes) {
            Ok(enc) => fake_quant(w, &enc),
            Err(_) => w, // a layout the scheme cannot express stays float, as PTQ reports it
        }
    }

    /// The op input `x` under QAT (called by [`super::activations::at_weight_input`]).
    pub(crate) fn input<const D: usize>(&self, id: ParamId, x: Tensor<D>) -> Tensor<D> {
        let Some(&scheme) = self.activations.get(&id) else { return x };
        let training = x.device().is_autodiff();
        let batch = || {
            let values = x.clone().detach().into_data().try_into_vec_as::<f32>().expect("float activations");
            let mut o = Observer::default();
            o.record(&values);
            match scheme.calibration {
                Calibration::MinMax => (o.min, o.max),
                Calibration::Percentile(p) => o.percentile_range(p),
            }
        };
        let range = {
            let running = self.ranges().running.get(&id).copied();
            match (running, training) {
                (Some(r), false) => r,
                (r, _) => {
                    let (lo, hi) = batch();
                    let mut g = self.ranges();
                    if training {
                        g.pending.entry(id).and_modify(|(a, b)| (*a, *b) = (a.min(lo), b.max(hi))).or_insert((lo, hi));
                    }
                    // the first step calibrates: its shard's own range until committed
                    r.unwrap_or((lo, hi))
                }
            }
        };
        match Encoding::activation(range.0, range.1, scheme.bits) {
            Ok(enc) => fake_quant(x, &enc),
            Err(_) => x, // a non-finite range: the loss check stops the run
        }
    }
}

/// A weight as the forward pass reads it: fake-quantized (straight-through) while a QAT
/// context is installed on this thread, as stored otherwise. `axes` place its output
/// channels and input blocks in Burn's layout (`Axes::LINEAR` for a `Linear`).
pub fn weight_value<const D: usize>(param: &Param<Tensor<D>>, axes: Axes) -> Tensor<D> {
    match current_qat() {
        Some(q) => q.weight(param, axes),
        None => param.val(),
    }
}

//! Activation quantization at the input of every weight op: each `Linear` (through
//! [`crate::text::linear::project`]) and each `Conv2d` of the vision encoders. Those are
//! the tensors an NPU holds in int8/int16 between its ops. Each one is keyed by the id of
//! the weight it multiplies.
//!
//! This thread's context ([`super::context`]) decides what happens there. By default nothing
//! happens (one thread-local read). Under [`observe`] the range of every input is recorded
//! (calibration). Under [`quantize_with`] every input with an encoding is fake-quantized.

use std::collections::HashMap;
use std::sync::Arc;

use burn::module::ParamId;
use burn::tensor::Tensor;

use super::context::{self, Activations, Scope};
use super::encoding::Encoding;
use super::fake::fake_quant;
use super::qat::Qat;

/// The range of one op input over the calibration data, with a strided sample of its values
/// for percentile ranges.
#[derive(Debug, Clone, Default)]
pub struct Observer {
    pub min: f32,
    pub max: f32,
    pub count: usize,
    sample: Vec<f32>,
}

/// Values kept per observer for percentiles.
const SAMPLE_CAP: usize = 1 << 16;

impl Observer {
    pub(crate) fn record(&mut self, values: &[f32]) {
        let (lo, hi) = values.iter().fold((f32::INFINITY, f32::NEG_INFINITY), |(a, b), &v| (a.min(v), b.max(v)));
        if self.count == 0 {
            (self.min, self.max) = (lo, hi);
        } else {
            (self.min, self.max) = (self.min.min(lo), self.max.max(hi));
        }
        self.count += values.len();
        let stride = (values.len() / (SAMPLE_CAP / 8).max(1)).max(1);
        self.sample.extend(values.iter().step_by(stride));
        if self.sample.len() > SAMPLE_CAP {
            // Keep every other value: the sample stays spread over all batches seen.
            self.sample = self.sample.iter().step_by(2).copied().collect();
        }
    }

    /// `[lo, hi]` at percentile `p` (and `100 - p`) of the sampled values, inside the
    /// observed min and max.
    pub fn percentile_range(&self, p: f64) -> (f32, f32) {
        if self.sample.is_empty() {
            return (self.min, self.max);
        }
        let mut s = self.sample.clone();
        s.sort_by(f32::total_cmp);
        let at = |q: f64| s[((q / 100.0) * (s.len() - 1) as f64).round() as usize];
        (at(100.0 - p).max(self.min), at(p).min(self.max))
    }
}

/// Observed ranges by weight id.
pub type Ranges = HashMap<ParamId, Observer>;

/// The input `x` of the op whose weight is `weight`: recorded, fake-quantized or returned
/// as is, by the context of this thread ([`super::context`]).
pub fn at_weight_input<const D: usize>(weight: ParamId, x: Tensor<D>) -> Tensor<D> {
    if let Some(q) = current_qat() {
        return q.input(weight, x);
    }
    context::with_mut(|c| match &mut c.activations {
        Activations::Float | Activations::Train(_) => x,
        Activations::Observe(ranges) => {
            let values = x.clone().into_data().try_into_vec_as::<f32>().expect("float activations");
            ranges.entry(weight).or_default().record(&values);
            x
        }
        Activations::Quantize(encodings) => match encodings.get(&weight) {
            Some(enc) => fake_quant(x, enc),
            None => x,
        },
    })
}

/// The QAT context installed on this thread, if any.
pub fn current_qat() -> Option<Arc<Qat>> {
    context::with(|c| match &c.activations {
        Activations::Train(q) => Some(q.clone()),
        _ => None,
    })
}

/// Runs `f` with `qat`'s fake quantizers installed on this thread (as is when `None`): the
/// training loop installs it on its own thread and on every replica's worker.
pub fn with_qat<R>(qat: Option<Arc<Qat>>, f: impl FnOnce() -> R) -> R {
    let Some(q) = qat else { return f() };
    let _scope = Scope::activations(Activations::Train(q));
    f()
}

/// Runs `f` recording the range of every weight op's input; returns its result and the
/// ranges.
pub fn observe<R>(f: impl FnOnce() -> R) -> (R, Ranges) {
    let scope = Scope::activations(Activations::Observe(Ranges::new()));
    let r = f();
    let ranges = match scope.exit_activations() {
        Activations::Observe(ranges) => ranges,
        _ => Ranges::new(),
    };
    (r, ranges)
}

/// Runs `f` with the inputs of the ops in `encodings` fake-quantized.
pub fn quantize_with<R>(encodings: HashMap<ParamId, Encoding>, f: impl FnOnce() -> R) -> R {
    let _scope = Scope::activations(Activations::Quantize(Arc::new(encodings)));
    f()
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::tensor::{Device, TensorData};

    #[test]
    fn observes_then_quantizes_only_inside_the_context() {
        let device = Device::flex();
        let id = ParamId::from(7);
        let x = Tensor::<1>::from_data(TensorData::new(vec![-1.0f32, 0.25, 3.0], [3]), &device);
        let ((), ranges) = observe(|| {
            at_weight_input(id, x.clone());
        });
        let o = &ranges[&id];
        assert_eq!((o.min, o.max, o.count), (-1.0, 3.0, 3));
        assert_eq!(o.percentile_range(100.0), (-1.0, 3.0));
        let enc = Encoding::activation(o.min, o.max, 8).unwrap();
        let expected = enc.fake_quant(&[-1.0, 0.25, 3.0]);
        let y = quantize_with(HashMap::from([(id, enc)]), || at_weight_input(id, x.clone()));
        assert_eq!(y.into_data().try_to_vec::<f32>().unwrap(), expected);
        // Outside any context, and for ops without an encoding, nothing changes.
        let same = at_weight_input(id, x.clone()).into_data().try_to_vec::<f32>().unwrap();
        assert_eq!(same, vec![-1.0, 0.25, 3.0]);
    }
}

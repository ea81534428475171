//! The linear layer every weight product of the models goes through (the language model's
//! projections, SigLIP's, the connector's), quantization-aware: its forward asks this
//! thread's context ([`crate::quant::context`]) what to run and says so ([`Arithmetic`]).
//! The tied LM head (the embedding table as an `[out, in]` weight) is the same op
//! ([`weight_product`]).

use burn::module::{Module, Param, ParamId};
use burn::tensor::{Device, Tensor};

use crate::kernels::{WeightLayout, matmul_weight};
use crate::quant::Axes;
use crate::quant::activations::{at_weight_input, current_qat};
use crate::quant::packed::{self, packed_product};

/// A [`Linear`] from `d_input` to `d_output` features, with a bias unless turned off.
#[derive(Debug, Clone, Copy)]
pub struct LinearConfig {
    pub d_input: usize,
    pub d_output: usize,
    pub bias: bool,
}

impl LinearConfig {
    pub fn new(d_input: usize, d_output: usize) -> Self {
        Self { d_input, d_output, bias: true }
    }

    pub fn with_bias(self, bias: bool) -> Self {
        Self { bias, ..self }
    }

    /// Initialised as Burn's `Linear` (Kaiming uniform, gain `1/sqrt(3)`, drawn lazily), so
    /// a seed gives the weights it always gave.
    pub fn init(&self, device: &Device) -> Linear {
        let l = burn::nn::LinearConfig::new(self.d_input, self.d_output).with_bias(self.bias).init(device);
        Linear { weight: l.weight, bias: l.bias }
    }
}

/// `y = x W + b`. Keys `weight` (stored `[in, out]`, Burn's layout; checkpoints hold
/// PyTorch's `[out, in]` and the loaders transpose) and `bias` `[out]`.
#[derive(Module, Debug)]
pub struct Linear {
    pub weight: Param<Tensor<2>>,
    pub bias: Option<Param<Tensor<1>>>,
}

/// What a weight op computes its product with, as this thread's context selects it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Arithmetic {
    /// The stored f32 weight (its QDQ values, for a quantized checkpoint).
    Float,
    /// The weight fake-quantized as a QAT stage trains it (straight-through gradients).
    FakeQuant,
    /// The packed int8/int4 matrix through the low-bit kernels (decode steps on flex).
    Packed,
}

impl Arithmetic {
    /// What the product of `weight` with `x` runs on this thread.
    pub fn of<const D: usize>(weight: ParamId, x: &Tensor<D>) -> Self {
        if packed::applies(weight, x) {
            Self::Packed
        } else if current_qat().is_some() {
            Self::FakeQuant
        } else {
            Self::Float
        }
    }
}

/// `x W` for a weight stored in `layout` (`x: [..., in]` -> `[..., out]`): the op input as
/// this thread's context has it (recorded, fake-quantized or as is), then the product in
/// the [`Arithmetic`] the context selects.
pub fn weight_product<const D: usize>(weight: &Param<Tensor<2>>, layout: WeightLayout, x: Tensor<D>) -> Tensor<D> {
    let x = at_weight_input(weight.id, x);
    match Arithmetic::of(weight.id, &x) {
        Arithmetic::Packed => packed_product(weight.id, &x).expect("the packed path applies"),
        Arithmetic::FakeQuant => {
            let axes = match layout {
                WeightLayout::InOut => Axes::LINEAR,
                WeightLayout::OutIn => Axes::OUT_IN,
            };
            let q = current_qat().expect("a QAT context");
            matmul_weight(x, &q.weight(weight, axes), layout)
        }
        Arithmetic::Float => matmul_weight(x, &weight.val(), layout),
    }
}

impl Linear {
    /// `[..., in] -> [..., out]`
    pub fn forward<const D: usize>(&self, x: Tensor<D>) -> Tensor<D> {
        let y = weight_product(&self.weight, WeightLayout::InOut, x);
        match &self.bias {
            Some(b) => y + b.val().unsqueeze::<D>(),
            None => y,
        }
    }

    /// What [`Self::forward`] on `x` runs on this thread (before the input's own
    /// quantization, which does not change it).
    pub fn arithmetic<const D: usize>(&self, x: &Tensor<D>) -> Arithmetic {
        Arithmetic::of(self.weight.id, x)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::quant::PrecisionPolicy;
    use crate::quant::packed::{quantize_and_pack, with_packed};
    use burn::tensor::Distribution;
    use std::sync::Arc;

    /// The same layer runs in float, then through its packed int8 matrix for a decode row
    /// (and in float again for a prefill of 16 rows, past the packed path's row limit).
    #[test]
    fn forward_says_what_it_runs() {
        // Keys `model.l.*`: a language-model weight, which the w8a16 policy quantizes.
        #[derive(Module, Debug)]
        struct One {
            l: Linear,
        }
        #[derive(Module, Debug)]
        struct Lm {
            model: One,
        }
        let device = Device::flex();
        let m = Lm { model: One { l: LinearConfig::new(64, 32).init(&device) } };
        let row = Tensor::<2>::random([1, 64], Distribution::Normal(0.0, 1.0), &device);
        let rows = Tensor::<2>::random([16, 64], Distribution::Normal(0.0, 1.0), &device);
        assert_eq!(m.model.l.arithmetic(&row), Arithmetic::Float);
        let (q, packed) = quantize_and_pack(m, &PrecisionPolicy::preset("w8a16").unwrap()).unwrap();
        with_packed(Arc::new(packed), || {
            assert_eq!(q.model.l.arithmetic(&row), Arithmetic::Packed);
            assert_eq!(q.model.l.arithmetic(&rows), Arithmetic::Float);
            let packed = q.model.l.forward(row.clone()).into_data().try_into_vec_as::<f32>().unwrap();
            let float = matmul_weight(row.clone(), &q.model.l.weight.val(), WeightLayout::InOut)
                + q.model.l.bias.as_ref().unwrap().val().unsqueeze::<2>();
            let float = float.into_data().try_into_vec_as::<f32>().unwrap();
            for (a, b) in packed.iter().zip(&float) {
                assert!((a - b).abs() <= 1e-3 * b.abs().max(1.0), "{a} vs {b}");
            }
        });
        assert_eq!(q.model.l.arithmetic(&row), Arithmetic::Float, "outside the scope");
    }
}

//! Projections through the CPU decode fast path (see [`crate::kernels`]), with their
//! inputs open to activation quantization (see [`crate::quant::activations`]).

use burn::nn::Linear;
use burn::tensor::Tensor;

use crate::kernels::{WeightLayout, matmul_weight};
use crate::quant::activations::at_weight_input;

/// `linear(x)` for a Burn `Linear` (weight `[in, out]`), `[..., in] -> [..., out]`.
pub fn project<const D: usize>(linear: &Linear, x: Tensor<D>) -> Tensor<D> {
    let x = at_weight_input(linear.weight.id, x);
    let y = matmul_weight(x, &linear.weight.val(), WeightLayout::InOut);
    match &linear.bias {
        Some(b) => y + b.val().unsqueeze::<D>(),
        None => y,
    }
}

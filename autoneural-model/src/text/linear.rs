//! Projections through the CPU decode fast paths (f32: [`crate::kernels`]; low-bit weights:
//! [`crate::quant::packed`]), with their inputs open to activation quantization (see
//! [`crate::quant::activations`]).

use burn::nn::Linear;
use burn::tensor::Tensor;

use crate::kernels::{WeightLayout, matmul_weight};
use crate::quant::Axes;
use crate::quant::activations::at_weight_input;
use crate::quant::packed::packed_product;
use crate::quant::qat::weight_value;

/// `linear(x)` for a Burn `Linear` (weight `[in, out]`), `[..., in] -> [..., out]`.
pub fn project<const D: usize>(linear: &Linear, x: Tensor<D>) -> Tensor<D> {
    let x = at_weight_input(linear.weight.id, x);
    let y = match packed_product(linear.weight.id, &x) {
        Some(y) => y,
        None => matmul_weight(x, &weight_value(&linear.weight, Axes::LINEAR), WeightLayout::InOut),
    };
    match &linear.bias {
        Some(b) => y + b.val().unsqueeze::<D>(),
        None => y,
    }
}

//! Fake quantization of tensors, differentiable: the forward value is exactly the QDQ
//! value of [`Encoding::fake_quant`] (the same f32 operations, on any backend), and the
//! gradient is the straight-through estimator, clipped: 1 where the value lies inside the
//! grid's range, 0 where it saturated.

use burn::tensor::{Tensor, TensorData};

use super::encoding::Encoding;

/// `qdq(x)` with straight-through gradients. `x`'s shape must be the encoding's (any shape
/// for a per-tensor encoding).
pub fn fake_quant<const D: usize>(x: Tensor<D>, enc: &Encoding) -> Tensor<D> {
    if enc.scales.len() == 1
        && let Some(y) = crate::kernels::qdq_per_tensor(&x, enc.scales[0], enc.zero_points[0], enc.grid)
    {
        return y;
    }
    let (lo, hi) = enc.grid.range();
    let xd = x.clone().detach();
    let (unclipped, xq) = if enc.scales.len() == 1 {
        // Per tensor (activations): scalar operands, nothing expanded.
        let (scale, zero_point) = (enc.scales[0], enc.zero_points[0]);
        let unclipped = (xd / scale).round() + zero_point;
        let xq = (unclipped.clone().clamp(lo, hi) - zero_point) * scale;
        (unclipped, xq)
    } else {
        let dims = x.dims();
        let device = x.device();
        let (scales, zero_points) = enc.expanded(dims.iter().product());
        let constant = |v: Vec<f32>| Tensor::<D>::from_data(TensorData::new(v, dims), &device);
        let (scale, zero_point) = (constant(scales), constant(zero_points));
        let unclipped = (xd / scale.clone()).round() + zero_point.clone();
        let xq = (unclipped.clone().clamp(lo, hi) - zero_point) * scale;
        (unclipped, xq)
    };
    if !x.is_autodiff() {
        // Inference (a quantized model answering, calibration): no gradient to carry, and
        // the mask below would double the passes over every op input.
        return xq;
    }
    // Straight through where the value was representable, zero where it saturated.
    let inside = unclipped.clone().greater_equal_elem(lo).bool_and(unclipped.lower_equal_elem(hi)).float();
    // `x - x.detach()` is exactly 0, so the value is exactly `xq`; its gradient is `inside`.
    xq + (x.clone() - x.detach()) * inside
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::quant::encoding::{Axes, Granularity};
    use burn::tensor::Device;

    #[test]
    fn values_equal_the_qdq_formula_and_gradients_pass_straight_through() {
        let device = Device::flex().autodiff();
        // int4 per-channel on a [3, 2] Linear weight, with a tie (0.5 / 1/7 * ... ) and a
        // saturating value once the encoding is computed from a smaller tensor.
        let w = [0.3, -1.0, 0.75, 0.2, -0.6, 0.05];
        let enc = Encoding::weights(&w, &[3, 2], 4, Granularity::PerChannel, Axes::LINEAR).unwrap();
        let mut wider = w;
        wider[0] = 5.0; // beyond channel 0's absmax (0.75): saturates
        let x = Tensor::<2>::from_data(TensorData::new(wider.to_vec(), [3, 2]), &device).require_grad();
        let y = fake_quant(x.clone(), &enc);
        let got = y.clone().into_data().try_to_vec::<f32>().unwrap();
        assert_eq!(got, enc.fake_quant(&wider));
        let grads = (y * 3.0).sum().backward();
        let g = x.grad(&grads).unwrap().into_data().try_to_vec::<f32>().unwrap();
        assert_eq!(g, vec![0.0, 3.0, 3.0, 3.0, 3.0, 3.0]);
        // Per tensor (the activation path): the same formula with scalar operands.
        let act = Encoding::activation(-0.5, 0.8, 16).unwrap();
        let y = fake_quant(x.clone(), &act).into_data().try_to_vec::<f32>().unwrap();
        assert_eq!(y, act.fake_quant(&wider));
    }

    #[test]
    fn the_fused_inference_path_is_the_qdq_formula_bit_for_bit() {
        // Values on, between and beyond the grid's steps, ties included, on an inference
        // tensor (the one-pass kernel) and an autodiff one (Burn's ops).
        let act = Encoding::activation(-0.5, 0.8, 8).unwrap();
        let step = act.scales[0];
        let values: Vec<f32> = (-300..300).map(|i| i as f32 * step * 0.5 + 1e-3 * (i % 7) as f32).collect();
        let n = values.len();
        let expected = act.fake_quant(&values);
        for device in [Device::flex(), Device::flex().autodiff()] {
            let x = Tensor::<1>::from_data(TensorData::new(values.clone(), [n]), &device);
            let got = fake_quant(x, &act).into_data().try_to_vec::<f32>().unwrap();
            assert_eq!(got, expected);
        }
    }
}

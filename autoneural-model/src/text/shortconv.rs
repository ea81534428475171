//! LFM2's gated short convolution:
//! `B, C, x = in_proj(u)`; `v = B * x`; `y = causal_depthwise_conv(v)`; `out_proj(C * y)`.
//!
//! The depthwise causal convolution is written as a sum of `L` shifted products over the
//! window `[state | v]`, so one code path serves prefill (state = zeros or a previous
//! chunk), single-token decode, training (autodiff) and every backend.

use burn::module::{Module, Param};
use burn::nn::Initializer;
use burn::tensor::{Device, Tensor};

use crate::nn::{Linear, LinearConfig};
use crate::quant::Axes;
use crate::quant::qat::weight_value;
use crate::text::state::ConvState;

/// Depthwise causal conv weights. Key `conv.conv.weight`, shape `[hidden, 1, kernel]`
/// (PyTorch's `Conv1d(groups=hidden)` layout); optional `conv.conv.bias` `[hidden]`.
#[derive(Module, Debug)]
pub struct DepthwiseCausalConv {
    pub weight: Param<Tensor<3>>,
    pub bias: Option<Param<Tensor<1>>>,
}

/// Keys: `conv.in_proj.weight [3D, D]`, `conv.out_proj.weight [D, D]`, `conv.conv.weight`.
#[derive(Module, Debug)]
pub struct ShortConv {
    pub in_proj: Linear,
    pub out_proj: Linear,
    pub conv: DepthwiseCausalConv,
}

/// A [`ShortConv`] over `hidden` channels with a causal window of `kernel` (`conv_L_cache`).
#[derive(Debug, Clone, Copy)]
pub struct ShortConvConfig {
    pub hidden: usize,
    pub kernel: usize,
    pub bias: bool,
}

impl ShortConvConfig {
    pub fn new(hidden: usize, kernel: usize, bias: bool) -> Self {
        Self { hidden, kernel, bias }
    }

    pub fn init(&self, device: &Device) -> ShortConv {
        let (hidden, kernel, bias) = (self.hidden, self.kernel, self.bias);
        let init = Initializer::KaimingUniform { gain: 1.0 / 3f64.sqrt(), fan_out_only: false };
        ShortConv {
            in_proj: LinearConfig::new(hidden, 3 * hidden).with_bias(bias).init(device),
            out_proj: LinearConfig::new(hidden, hidden).with_bias(bias).init(device),
            conv: DepthwiseCausalConv {
                weight: init.init_with([hidden, 1, kernel], Some(kernel), Some(kernel), device),
                bias: bias.then(|| Initializer::Zeros.init([hidden], device)),
            },
        }
    }
}

impl ShortConv {
    pub fn kernel(&self) -> usize {
        self.conv.weight.shape().dims::<3>()[2]
    }

    /// `u: [b, t, D]` -> `[b, t, D]`; `state` (`[b, kernel-1, D]`) is read and replaced
    /// by the last `kernel - 1` gated inputs.
    pub fn forward(&self, u: Tensor<3>, state: Option<&mut ConvState>) -> Tensor<3> {
        let [b, t, d] = u.dims();
        let l = self.kernel();
        let bcx = self.in_proj.forward(u);
        // Training on flex (no history, no bias): the gates and the convolution as one op
        // with its own backward.
        if state.is_none() && self.conv.bias.is_none() {
            let weight = weight_value(&self.conv.weight, Axes::OUT_IN);
            if let Some(z) = crate::kernels::autodiff::gated_short_conv(&bcx, &weight) {
                return self.out_proj.forward(z);
            }
        }
        let gate_b = bcx.clone().slice([0..b, 0..t, 0..d]);
        let gate_c = bcx.clone().slice([0..b, 0..t, d..2 * d]);
        let x = bcx.slice([0..b, 0..t, 2 * d..3 * d]);
        let v = gate_b * x;
        let past = match &state {
            Some(s) => s.window.clone(),
            None => Tensor::zeros([b, l - 1, d], &v.device()),
        };
        let window = Tensor::cat(vec![past, v], 1); // [b, t + l - 1, d]
        // y[t] = sum_j w[j] * window[t + j]; tap l-1 multiplies the current token
        let weight = weight_value(&self.conv.weight, Axes::OUT_IN).reshape([d, l]).transpose(); // [l, d]
        let mut y: Option<Tensor<3>> = None;
        for j in 0..l {
            let tap = weight.clone().slice([j..j + 1, 0..d]).reshape([1, 1, d]);
            let term = window.clone().slice([0..b, j..j + t, 0..d]) * tap;
            y = Some(match y {
                Some(acc) => acc + term,
                None => term,
            });
        }
        let mut y = y.expect("kernel >= 1");
        if let Some(bias) = &self.conv.bias {
            y = y + bias.val().reshape([1, 1, d]);
        }
        if let Some(s) = state {
            s.window = window.slice([0..b, t..t + l - 1, 0..d]);
        }
        self.out_proj.forward(gate_c * y)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::tensor::Distribution;

    /// Training without history takes the fused op (flex autodiff); with a zero history it
    /// takes the composite of Burn's ops. Same values, and the same gradients for the input
    /// and every weight.
    #[test]
    fn fused_training_path_matches_the_composite() {
        let device = Device::flex().autodiff();
        device.seed(11);
        let conv = ShortConvConfig::new(8, 3, false).init(&device);
        let u = Tensor::<3>::random([2, 7, 8], Distribution::Normal(0.0, 1.0), &device).require_grad();
        let fused = conv.forward(u.clone(), None);
        let mut zero = ConvState { window: Tensor::zeros([2, 2, 8], &device) };
        let composite = conv.forward(u.clone(), Some(&mut zero));
        let close = |a: Tensor<3>, b: Tensor<3>, what: &str| {
            let d = (a - b).abs().max().into_scalar::<f32>();
            assert!(d < 1e-5, "{what}: max difference {d}");
        };
        close(fused.clone().inner(), composite.clone().inner(), "output");
        let gy = Tensor::<3>::random([2, 7, 8], Distribution::Normal(0.0, 1.0), &device);
        let (ga, gb) = ((fused * gy.clone()).sum().backward(), (composite * gy).sum().backward());
        close(u.grad(&ga).unwrap(), u.grad(&gb).unwrap(), "input");
        let w = conv.conv.weight.val();
        close(w.grad(&ga).unwrap(), w.grad(&gb).unwrap(), "taps");
        let (wi, wo) = (conv.in_proj.weight.val(), conv.out_proj.weight.val());
        let close2 = |a: Tensor<2>, b: Tensor<2>, what: &str| close(a.unsqueeze(), b.unsqueeze(), what);
        close2(wi.grad(&ga).unwrap(), wi.grad(&gb).unwrap(), "in_proj");
        close2(wo.grad(&ga).unwrap(), wo.grad(&gb).unwrap(), "out_proj");
    }
}

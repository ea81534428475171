//! RMSNorm as LFM2 and MobileNetV5 use it: `x * rsqrt(mean(x^2) + eps) * weight`, in f32.

use burn::module::{Module, Param};
use burn::nn::Initializer;
use burn::tensor::{Device, Tensor};

/// Normalises the last dimension. Key: `<prefix>.weight`, shape `[dim]`.
#[derive(Module, Debug)]
pub struct RmsNorm {
    pub weight: Param<Tensor<1>>,
    pub eps: f64,
}

impl RmsNorm {
    pub fn new(dim: usize, eps: f64, device: &Device) -> Self {
        Self { weight: Initializer::Ones.init([dim], device), eps }
    }

    /// `[..., dim] -> [..., dim]`
    pub fn forward<const D: usize>(&self, x: Tensor<D>) -> Tensor<D> {
        let weight = self.weight.val();
        // Training on flex: one op with its own backward instead of seven.
        if let Some(y) = crate::kernels::autodiff::rms_norm(&x, &weight, self.eps) {
            return y;
        }
        let mean_sq = x.clone().square().mean_dim(D - 1);
        let inv = (mean_sq + self.eps).sqrt().recip();
        x * inv * weight.unsqueeze::<D>()
    }
}

//! RMSNorm as LFM2 uses it: `x * rsqrt(mean(x^2) + eps) * weight`, in f32, over the last
//! dimension.

use burn::module::{Module, Param};
use burn::nn::Initializer;
use burn::tensor::{Device, Tensor};

/// An [`RmsNorm`] of `dim` features.
#[derive(Debug, Clone, Copy)]
pub struct RmsNormConfig {
    pub dim: usize,
    pub eps: f64,
}

impl RmsNormConfig {
    pub fn new(dim: usize, eps: f64) -> Self {
        Self { dim, eps }
    }

    /// Weight ones.
    pub fn init(&self, device: &Device) -> RmsNorm {
        RmsNorm { weight: Initializer::Ones.init([self.dim], device), eps: self.eps }
    }
}

/// Normalises the last dimension. Key: `<prefix>.weight`, shape `[dim]`.
#[derive(Module, Debug)]
pub struct RmsNorm {
    pub weight: Param<Tensor<1>>,
    pub eps: f64,
}

impl RmsNorm {
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

//! LayerNorm with PyTorch's key names (`weight`, `bias`), over the last dimension: SigLIP's
//! towers and LFM2-VL's projector.

use burn::module::{Module, Param};
use burn::nn::Initializer;
use burn::tensor::{Device, Tensor};

/// A [`LayerNorm`] of `dim` features.
#[derive(Debug, Clone, Copy)]
pub struct LayerNormConfig {
    pub dim: usize,
    pub eps: f64,
}

impl LayerNormConfig {
    pub fn new(dim: usize, eps: f64) -> Self {
        Self { dim, eps }
    }

    /// Weight ones, bias zeros.
    pub fn init(&self, device: &Device) -> LayerNorm {
        LayerNorm {
            weight: Initializer::Ones.init([self.dim], device),
            bias: Initializer::Zeros.init([self.dim], device),
            eps: self.eps,
        }
    }
}

/// Keys `weight`, `bias`, both `[dim]`.
#[derive(Module, Debug)]
pub struct LayerNorm {
    pub weight: Param<Tensor<1>>,
    pub bias: Param<Tensor<1>>,
    pub eps: f64,
}

impl LayerNorm {
    /// `[..., dim] -> [..., dim]`
    pub fn forward<const D: usize>(&self, x: Tensor<D>) -> Tensor<D> {
        let (var, mean) = x.clone().var_mean_bias(D - 1);
        let y = (x - mean) / (var + self.eps).sqrt();
        y * self.weight.val().unsqueeze::<D>() + self.bias.val().unsqueeze::<D>()
    }
}

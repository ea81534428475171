//! Connectors from vision tokens to the language model's embedding space.
//!
//! - AutoNeural's normalization-free MLP: Linear -> GELU -> Linear. No norm, so nothing
//!   in the connector rescales activations by data-dependent statistics, which keeps its
//!   int16 activation ranges static on an NPU.
//! - LFM2-VL's projector: pixel-unshuffle by 2 (4x fewer tokens, 4x the channels),
//!   optional LayerNorm, Linear -> GELU -> Linear.
//!
//! Both use the exact (erf) GELU, as `nn.GELU()` and transformers' `"gelu"` do.

use burn::module::Module;
use burn::tensor::{Device, Tensor, activation};

use crate::nn::{LayerNorm, LayerNormConfig, Linear, LinearConfig};

/// Keys: `layer_norm.{weight,bias}` (optional), `linear_1.*`, `linear_2.*`.
#[derive(Module, Debug)]
pub struct Projector {
    pub layer_norm: Option<LayerNorm>,
    pub linear_1: Linear,
    pub linear_2: Linear,
    /// Pixel-unshuffle factor (1 = none).
    pub downsample: usize,
}

/// Shapes of a [`Projector`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ProjectorConfig {
    pub vision_dim: usize,
    pub hidden: usize,
    pub text_dim: usize,
    pub bias: bool,
    pub downsample: usize,
    pub layer_norm: bool,
}

impl ProjectorConfig {
    pub fn init(&self, device: &Device) -> Projector {
        let in_dim = self.vision_dim * self.downsample * self.downsample;
        Projector {
            layer_norm: self.layer_norm.then(|| LayerNormConfig::new(in_dim, 1e-5).init(device)),
            linear_1: LinearConfig::new(in_dim, self.hidden).with_bias(self.bias).init(device),
            linear_2: LinearConfig::new(self.hidden, self.text_dim).with_bias(self.bias).init(device),
            downsample: self.downsample,
        }
    }

    /// Tokens out for a `gh x gw` grid.
    pub fn tokens(&self, gh: usize, gw: usize) -> usize {
        (gh / self.downsample) * (gw / self.downsample)
    }
}

/// `out[a, b, (s*f + r)*C + c] = in[f*a + s, f*b + r, c]`: `[n, h, w, c] -> [n, h/f * w/f, f*f*c]`,
/// row-major over the smaller grid (LFM2-VL's order).
pub fn pixel_unshuffle(x: Tensor<4>, f: usize) -> Tensor<3> {
    let [n, h, w, c] = x.dims();
    x.reshape([n, h / f, f, w / f, f, c]).permute([0, 1, 3, 2, 4, 5]).reshape([n, (h / f) * (w / f), f * f * c])
}

impl Projector {
    /// Vision tokens `[n, gh*gw, vision_dim]` on a `gh x gw` grid -> `[n, tokens, text_dim]`.
    pub fn forward(&self, tokens: Tensor<3>, gh: usize, gw: usize) -> Tensor<3> {
        let x = if self.downsample > 1 {
            let [n, _, c] = tokens.dims();
            pixel_unshuffle(tokens.reshape([n, gh, gw, c]), self.downsample)
        } else {
            tokens
        };
        let x = match &self.layer_norm {
            Some(ln) => ln.forward(x),
            None => x,
        };
        self.linear_2.forward(activation::gelu(self.linear_1.forward(x)))
    }
}

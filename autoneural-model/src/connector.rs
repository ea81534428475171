//! Connectors from vision tokens to the language model's embedding space.
//!
//! - AutoNeural's normalization-free MLP: Linear -> GELU -> Linear. No norm, so nothing
//!   in the connector rescales activations by data-dependent statistics, which keeps its
//!   int16 activation ranges static on an NPU.
//! - LFM2-VL's projector: pixel-unshuffle by 2 (4x fewer tokens, 4x the channels),
//!   optional LayerNorm, Linear -> GELU -> Linear.
//!
//! - LFM3-VL's projector (`merge_blocks`): LayerNorm on each vision token (eps 1e-6), then
//!   the `downsample^2` tokens of each spatial-merge block, which its tower lists
//!   consecutively, concatenated; Linear -> GELU -> Linear.
//!
//! All use the exact (erf) GELU, as `nn.GELU()` and transformers' `"gelu"` do.

use burn::module::Module;
use burn::tensor::{Device, Tensor, activation};

use crate::nn::{LayerNorm, LayerNormConfig, Linear, LinearConfig};

/// Keys: `layer_norm.{weight,bias}` (optional), `linear_1.*`, `linear_2.*`.
#[derive(Module, Debug)]
pub struct Projector {
    pub layer_norm: Option<LayerNorm>,
    pub linear_1: Linear,
    pub linear_2: Linear,
    /// Pixel-unshuffle factor (1 = none), or the merge block's side.
    pub downsample: usize,
    /// LFM3-VL: normalise each token, then merge blocks of consecutive tokens.
    pub merge_blocks: bool,
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
    /// LFM3-VL's layout (the norm on `vision_dim`, before merging `downsample^2`
    /// consecutive tokens); `false`: pixel-unshuffle, then the optional norm.
    pub merge_blocks: bool,
}

impl ProjectorConfig {
    pub fn init(&self, device: &Device) -> Projector {
        let in_dim = self.vision_dim * self.downsample * self.downsample;
        let norm = if self.merge_blocks {
            LayerNormConfig::new(self.vision_dim, 1e-6)
        } else {
            LayerNormConfig::new(in_dim, 1e-5)
        };
        Projector {
            layer_norm: self.layer_norm.then(|| norm.init(device)),
            linear_1: LinearConfig::new(in_dim, self.hidden).with_bias(self.bias).init(device),
            linear_2: LinearConfig::new(self.hidden, self.text_dim).with_bias(self.bias).init(device),
            downsample: self.downsample,
            merge_blocks: self.merge_blocks,
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
        if self.merge_blocks {
            let [n, t, c] = tokens.dims();
            let k = self.downsample * self.downsample;
            let x = match &self.layer_norm {
                Some(ln) => ln.forward(tokens),
                None => tokens,
            };
            return self.linear_2.forward(activation::gelu(self.linear_1.forward(x.reshape([n, t / k, k * c]))));
        }
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

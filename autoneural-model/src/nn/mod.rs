//! Layers shared by several models: the quantization-aware linear layer (LFM2, SigLIP, the
//! connector, the tied LM head), RMSNorm (LFM2), LayerNorm (SigLIP, the LFM2-VL projector),
//! and convolution with its norm (MobileNetV5, SigLIP v1's patch embedding). Each is built
//! from its config with `XConfig::init(&device)`, as Burn's `burn-nn` builds its layers.

pub mod conv_norm;
pub mod layer_norm;
pub mod linear;
pub mod rms_norm;

pub use conv_norm::{
    Conv2d, Conv2dConfig, ConvNorm, ConvNormConfig, LayerScale2d, LayerScale2dConfig, Norm2d, Norm2dConfig,
};
pub use layer_norm::{LayerNorm, LayerNormConfig};
pub use linear::{Arithmetic, Linear, LinearConfig, weight_product};
pub use rms_norm::{RmsNorm, RmsNormConfig};

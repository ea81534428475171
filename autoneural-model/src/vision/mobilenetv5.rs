//! The MobileNetV5 encoder (Gemma 3n's vision tower): stem, stages of blocks, and the
//! multi-scale fusion adapter that turns the last two stages into one token grid.

use burn::module::Module;
use burn::tensor::{Device, Tensor};

use crate::error::Result;
use crate::nn::conv_norm::{Conv2dConfig, ConvNorm, ConvNormConfig, Norm2d, Norm2dConfig};
use crate::vision::arch::MobileNetV5Arch;
use crate::vision::blocks::{MobileBlock, MobileBlockConfig, Style, UirConfig, UniversalInvertedResidual};
use crate::vision::resize;

/// Multi-Scale Fusion Adapter: nearest-upsample the tapped stages to the finest grid,
/// concatenate channels, a pointwise UIR FFN (x2 expansion, no depthwise, no skip), then
/// average-pool (or bilinear-resize when the sizes do not divide) to the output grid and
/// normalise. Keys: `ffn.pw_exp.*`, `ffn.pw_proj.*`, `norm.*`.
#[derive(Module, Debug)]
pub struct MultiScaleFusionAdapter {
    pub ffn: UniversalInvertedResidual,
    pub norm: Norm2d,
    pub output_resolution: usize,
}

impl MultiScaleFusionAdapter {
    /// Feature maps, finest first -> `[b, out, r, r]`.
    pub fn forward(&self, inputs: Vec<Tensor<4>>) -> Tensor<4> {
        let [_, _, h, w] = inputs[0].dims();
        let resized = inputs
            .into_iter()
            .map(|t| {
                let [_, _, th, tw] = t.dims();
                if th < h || tw < w { resize::nearest(t, h, w) } else { t }
            })
            .collect();
        let x = self.ffn.forward(Tensor::cat(resized, 1));
        let r = self.output_resolution;
        let x = if (h, w) == (r, r) {
            x
        } else if h % r != 0 || w % r != 0 {
            resize::bilinear(x, r, r, false)
        } else {
            resize::avg_pool(x, h / r, w / r)
        };
        self.norm.forward(x)
    }
}

/// MobileNetV5 encoder: `[b, 3, H, W]` pixels in [0, 1] -> `[b, num_features, r, r]`.
/// Keys are timm's: `conv_stem.*`, `blocks.<stage>.<block>.*`, `msfa.*`.
#[derive(Module, Debug)]
pub struct MobileNetV5 {
    pub conv_stem: ConvNorm,
    pub blocks: Vec<Vec<MobileBlock>>,
    pub msfa: MultiScaleFusionAdapter,
    /// Stage outputs (0 = stem, s + 1 = stage s) the adapter takes.
    #[module(skip)]
    pub msfa_taps: Vec<usize>,
    #[module(skip)]
    pub arch: MobileNetV5Arch,
}

impl MobileNetV5Arch {
    /// The encoder this architecture describes, initialised as timm initialises it.
    pub fn init(&self, device: &Device) -> Result<MobileNetV5> {
        let arch = self;
        let resolved = arch.resolve()?;
        let style = Style { pad: arch.pad_type, norm: arch.norm };
        let stem = Conv2dConfig::new(3, arch.stem_size, 3, style.pad).stride(2).bias(true);
        let conv_stem = ConvNormConfig::new(stem, style.norm, true).init(device);
        let layer_scale = arch.layer_scale_init_value;
        let blocks = resolved
            .stages
            .iter()
            .map(|stage| {
                stage.iter().map(|block| MobileBlockConfig { block, style, layer_scale }.init(device)).collect()
            })
            .collect();
        let ffn = UirConfig {
            in_chs: resolved.msfa_in_chs,
            out_chs: arch.num_features,
            start_kernel: 0,
            mid_kernel: 0,
            end_kernel: 0,
            exp_ratio: 2.0,
            stride: 1,
            dilation: 1,
            noskip: true,
            layer_scale: None,
            style,
        }
        .init(device);
        Ok(MobileNetV5 {
            conv_stem,
            blocks,
            msfa: MultiScaleFusionAdapter {
                ffn,
                norm: Norm2dConfig::new(arch.norm, arch.num_features).init(device),
                output_resolution: arch.msfa_output_resolution,
            },
            msfa_taps: resolved.msfa_taps,
            arch: arch.clone(),
        })
    }
}

impl MobileNetV5 {
    /// `[b, 3, H, W] -> [b, num_features, r, r]`
    pub fn forward(&self, pixels: Tensor<4>) -> Tensor<4> {
        let mut x = self.conv_stem.forward(pixels);
        let mut taps = Vec::new();
        if self.msfa_taps.contains(&0) {
            taps.push(x.clone());
        }
        for (s, stage) in self.blocks.iter().enumerate() {
            for block in stage {
                x = block.forward(x);
            }
            if self.msfa_taps.contains(&(s + 1)) {
                taps.push(x.clone());
            }
        }
        self.msfa.forward(taps)
    }

    /// `[b, 3, H, W] -> [b, r*r, num_features]`, tokens row-major over the output grid.
    pub fn tokens(&self, pixels: Tensor<4>) -> Tensor<3> {
        let y = self.forward(pixels);
        let [b, c, h, w] = y.dims();
        y.reshape([b, c, h * w]).swap_dims(1, 2)
    }
}

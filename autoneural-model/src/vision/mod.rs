//! Vision encoders: MobileNetV5 (AutoNeural's, from timm), the SigLIP ViT baseline and
//! LFM3-VL's hybrid tower (gated convolutions and attention), with LFM2-VL's image processor
//! (tiles, thumbnail, NaFlex patch grids) and LFM3-VL's (Qwen2-VL's smart resize).

pub mod arch;
pub mod blocks;
pub mod lfm2_vl_processor;
pub mod lfm3_vl;
pub mod lfm3_vl_processor;
pub mod mobilenetv5;
pub mod resize;
pub mod resize_u8;
pub mod siglip;

use burn::module::Module;
use burn::tensor::{Device, Tensor};

pub use arch::{MobileNetV5Arch, NormKind, PadType};
pub use mobilenetv5::MobileNetV5;
pub use siglip::{SiglipVision, VitConfig};

/// Either encoder. The variant adds no segment to checkpoint keys.
#[derive(Module, Debug)]
pub enum VisionEncoder {
    MobileNetV5(MobileNetV5),
    Vit(SiglipVision),
    Lfm3Vl(lfm3_vl::Lfm3VlTower),
}

/// What an encoder is, as configs name it.
#[derive(Debug, Clone, PartialEq)]
pub enum EncoderConfig {
    MobileNetV5(MobileNetV5Arch),
    Vit(VitConfig),
    Lfm3Vl(lfm3_vl::Lfm3VlVisionConfig),
}

impl EncoderConfig {
    /// A preset by name: any MobileNetV5, ViT or LFM3-VL tower preset.
    pub fn preset(name: &str) -> Option<Self> {
        MobileNetV5Arch::preset(name)
            .map(Self::MobileNetV5)
            .or_else(|| VitConfig::preset(name).map(Self::Vit))
            .or_else(|| lfm3_vl::Lfm3VlVisionConfig::preset(name).map(Self::Lfm3Vl))
    }

    pub fn preset_names() -> Vec<&'static str> {
        MobileNetV5Arch::preset_names()
            .into_iter()
            .chain(VitConfig::preset_names())
            .chain(lfm3_vl::Lfm3VlVisionConfig::preset_names())
            .collect()
    }

    /// The family, as reports name it: `MobileNetV5` (convolution), `ViT` (attention) or
    /// `LFM3-VL` (gated convolutions and attention).
    pub fn family(&self) -> &'static str {
        match self {
            Self::MobileNetV5(_) => "MobileNetV5",
            Self::Vit(_) => "ViT",
            Self::Lfm3Vl(_) => "LFM3-VL",
        }
    }

    pub fn image_size(&self) -> usize {
        match self {
            Self::MobileNetV5(a) => a.image_size,
            Self::Vit(v) => v.image_size,
            Self::Lfm3Vl(v) => v.image_size,
        }
    }

    /// `(grid_h, grid_w, channels)` of the token grid for an `h x w` input.
    pub fn token_grid(&self, h: usize, w: usize) -> (usize, usize, usize) {
        match self {
            Self::MobileNetV5(a) => (a.msfa_output_resolution, a.msfa_output_resolution, a.num_features),
            Self::Vit(v) => {
                let (gh, gw) = v.grid(h, w);
                (gh, gw, v.hidden_size)
            }
            Self::Lfm3Vl(v) => {
                let (gh, gw) = v.grid(h, w);
                (gh, gw, v.hidden_size)
            }
        }
    }

    /// The encoder's sizes within bounds; the error names the field.
    pub fn check(&self) -> Result<(), (&'static str, String)> {
        match self {
            Self::MobileNetV5(a) => a.check(),
            Self::Vit(v) => v.check(),
            Self::Lfm3Vl(v) => v.check(),
        }
    }

    pub fn init(&self, device: &Device) -> crate::Result<VisionEncoder> {
        Ok(match self {
            Self::MobileNetV5(a) => VisionEncoder::MobileNetV5(a.init(device)?),
            Self::Vit(v) => VisionEncoder::Vit(v.init(device)),
            Self::Lfm3Vl(v) => VisionEncoder::Lfm3Vl(v.init(device)),
        })
    }
}

impl VisionEncoder {
    /// `[b, 3, H, W] -> [b, gh*gw, channels]`, tokens row-major over the grid (LFM3-VL's
    /// in spatial-merge order, as its projector merges them).
    pub fn tokens(&self, pixels: Tensor<4>) -> Tensor<3> {
        match self {
            Self::MobileNetV5(m) => m.tokens(pixels),
            Self::Vit(v) => v.tokens(pixels),
            Self::Lfm3Vl(t) => t.forward_image(pixels),
        }
    }
}

//! Vision encoders: MobileNetV5 (AutoNeural's, from timm) and the SigLIP ViT baseline, and
//! LFM2-VL's image processor (tiles, thumbnail, NaFlex patch grids).

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
}

/// What an encoder is, as configs name it.
#[derive(Debug, Clone, PartialEq)]
pub enum EncoderConfig {
    MobileNetV5(MobileNetV5Arch),
    Vit(VitConfig),
}

impl EncoderConfig {
    /// A preset by name: any MobileNetV5 or ViT preset.
    pub fn preset(name: &str) -> Option<Self> {
        MobileNetV5Arch::preset(name).map(Self::MobileNetV5).or_else(|| VitConfig::preset(name).map(Self::Vit))
    }

    pub fn preset_names() -> Vec<&'static str> {
        MobileNetV5Arch::preset_names().into_iter().chain(VitConfig::preset_names()).collect()
    }

    pub fn image_size(&self) -> usize {
        match self {
            Self::MobileNetV5(a) => a.image_size,
            Self::Vit(v) => v.image_size,
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
        }
    }

    /// The encoder's sizes within bounds; the error names the field.
    pub fn check(&self) -> Result<(), (&'static str, String)> {
        match self {
            Self::MobileNetV5(a) => a.check(),
            Self::Vit(v) => v.check(),
        }
    }

    pub fn init(&self, device: &Device) -> crate::Result<VisionEncoder> {
        Ok(match self {
            Self::MobileNetV5(a) => VisionEncoder::MobileNetV5(a.init(device)?),
            Self::Vit(v) => VisionEncoder::Vit(v.init(device)),
        })
    }
}

impl VisionEncoder {
    /// `[b, 3, H, W] -> [b, gh*gw, channels]`, tokens row-major over the grid.
    pub fn tokens(&self, pixels: Tensor<4>) -> Tensor<3> {
        match self {
            Self::MobileNetV5(m) => m.tokens(pixels),
            Self::Vit(v) => v.tokens(pixels),
        }
    }
}

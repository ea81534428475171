//! The SigLIP / SigLIP2 vision transformer, as transformers writes it (module names mirror
//! `vision_model.*` keys): patch embedding, learned position embeddings resized to the
//! patch grid (SigLIP2's antialiased bilinear), pre-norm encoder layers with tanh-GELU MLPs,
//! and a final LayerNorm. The attention-pooling head is not part of the tower.

use burn::module::Module;
use burn::nn::{Embedding, EmbeddingConfig, Initializer};
use burn::tensor::{Device, Tensor};
use serde::{Deserialize, Serialize};

use crate::nn::conv_norm::{Conv2d, Conv2dConfig, gelu_tanh};
use crate::nn::{LayerNorm, LayerNormConfig, Linear, LinearConfig};
use crate::vision::arch::PadType;
use crate::vision::resize;

/// Shapes of a SigLIP-family vision transformer (the fields of HF's vision config).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VitConfig {
    pub hidden_size: usize,
    pub intermediate_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    #[serde(default = "three")]
    pub num_channels: usize,
    pub patch_size: usize,
    /// Learned position table entries (a square grid).
    pub num_patches: usize,
    #[serde(default = "eps")]
    pub layer_norm_eps: f64,
    /// SigLIP2 embeds flattened patches with a Linear; SigLIP (v1) with a strided Conv2d.
    #[serde(default = "yes")]
    pub linear_patch_embedding: bool,
    /// Input side the encoder is used at (the processor resizes to it).
    pub image_size: usize,
}

fn three() -> usize {
    3
}
fn eps() -> f64 {
    1e-6
}
fn yes() -> bool {
    true
}

impl VitConfig {
    /// Every size within bounds and consistent; the error names the field.
    pub fn check(&self) -> Result<(), (&'static str, String)> {
        use super::arch::{MAX_CHANNELS, MAX_IMAGE_SIDE};
        let within = |field: &'static str, v: usize, lo: usize, hi: usize| {
            if (lo..=hi).contains(&v) { Ok(()) } else { Err((field, format!("{v} is not between {lo} and {hi}"))) }
        };
        within("hidden_size", self.hidden_size, 1, MAX_CHANNELS)?;
        within("intermediate_size", self.intermediate_size, 1, 1 << 20)?;
        within("num_hidden_layers", self.num_hidden_layers, 0, 1024)?;
        within("num_attention_heads", self.num_attention_heads, 1, 1024)?;
        within("num_channels", self.num_channels, 3, 3)?;
        within("image_size", self.image_size, 1, MAX_IMAGE_SIDE)?;
        within("patch_size", self.patch_size, 1, self.image_size)?;
        within("num_patches", self.num_patches, 1, 1 << 16)?;
        if !self.hidden_size.is_multiple_of(self.num_attention_heads) {
            return Err((
                "num_attention_heads",
                format!("{} does not divide hidden_size {}", self.num_attention_heads, self.hidden_size),
            ));
        }
        if !(self.layer_norm_eps.is_finite() && self.layer_norm_eps >= 0.0) {
            return Err(("layer_norm_eps", format!("{} is not a non-negative number", self.layer_norm_eps)));
        }
        Ok(())
    }

    /// Named shapes, one constructor each: `siglip2_base_p16` (86M), `siglip2_large_p16`
    /// (303M), `vit_300m_p14` (InternViT-300M / ViT-L/14 shapes, 304M), `vit_tiny` (tests),
    /// and `vit_mini`, the quickstart's ViT baseline: 0.11M parameters (MobileNetV5-tiny:
    /// 0.08M), an 8x8 patch grid on 64-pixel images.
    pub const PRESETS: &'static [(&'static str, fn() -> Self)] = &[
        ("siglip2_base_p16", || Self::shape(768, 3072, 12, 12, 16, 256)),
        ("siglip2_large_p16", || Self::shape(1024, 4096, 24, 16, 16, 256)),
        ("vit_300m_p14", || Self { num_patches: 1024, ..Self::shape(1024, 4096, 24, 16, 14, 448) }),
        ("vit_tiny", || Self { num_patches: 16, ..Self::shape(32, 64, 2, 4, 8, 32) }),
        ("vit_mini", || Self { num_patches: 64, ..Self::shape(64, 256, 2, 4, 8, 64) }),
    ];

    /// A preset by name.
    pub fn preset(name: &str) -> Option<Self> {
        Self::PRESETS.iter().find(|(n, _)| *n == name).map(|(_, make)| make())
    }

    pub fn preset_names() -> Vec<&'static str> {
        Self::PRESETS.iter().map(|(n, _)| *n).collect()
    }

    /// A SigLIP2 tower of these sizes (256 position embeddings unless set).
    fn shape(hidden: usize, inter: usize, layers: usize, heads: usize, patch: usize, image: usize) -> Self {
        Self {
            hidden_size: hidden,
            intermediate_size: inter,
            num_hidden_layers: layers,
            num_attention_heads: heads,
            num_channels: 3,
            patch_size: patch,
            num_patches: 256,
            layer_norm_eps: 1e-6,
            linear_patch_embedding: true,
            image_size: image,
        }
    }

    /// Tokens for an `h x w` image.
    pub fn grid(&self, h: usize, w: usize) -> (usize, usize) {
        (h / self.patch_size, w / self.patch_size)
    }
}

/// Patch embedding: a Linear over `(py, px, c)`-ordered patch pixels (SigLIP2) or a strided
/// conv (SigLIP). The variant adds no segment to checkpoint keys.
#[derive(Module, Debug)]
pub enum PatchEmbedding {
    Linear(Linear),
    Conv(Conv2d),
}

#[derive(Module, Debug)]
pub struct VitEmbeddings {
    pub patch_embedding: PatchEmbedding,
    pub position_embedding: Embedding,
    pub patch_size: usize,
}

impl VitEmbeddings {
    /// `[b, c, H, W] -> [b, gh*gw, d]`
    fn forward(&self, pixels: Tensor<4>) -> Tensor<3> {
        let [b, c, h, w] = pixels.dims();
        let p = self.patch_size;
        let (gh, gw) = (h / p, w / p);
        let pixels = pixels.slice([0..b, 0..c, 0..gh * p, 0..gw * p]);
        let patches = match &self.patch_embedding {
            PatchEmbedding::Linear(lin) => {
                // [b, c, gh, p, gw, p] -> [b, gh, gw, p, p, c]: the processor's patch order.
                let x =
                    pixels.reshape([b, c, gh, p, gw, p]).permute([0, 2, 4, 3, 5, 1]).reshape([b, gh * gw, p * p * c]);
                lin.forward(x)
            }
            PatchEmbedding::Conv(conv) => {
                let y = conv.forward(pixels);
                let [_, d, _, _] = y.dims();
                y.reshape([b, d, gh * gw]).swap_dims(1, 2)
            }
        };
        patches + self.positions(gh, gw).unsqueeze::<3>()
    }

    /// The learned square table resized to `gh x gw` (bilinear, antialiased), `[gh*gw, d]`.
    pub fn positions(&self, gh: usize, gw: usize) -> Tensor<2> {
        let table = self.position_embedding.weight.val();
        let [n, d] = table.dims();
        let side = (n as f64).sqrt().round() as usize;
        let grid = table.reshape([1, side, side, d]).permute([0, 3, 1, 2]);
        resize::bilinear(grid, gh, gw, true).reshape([d, gh * gw]).transpose()
    }
}

#[derive(Module, Debug)]
pub struct VitAttention {
    pub q_proj: Linear,
    pub k_proj: Linear,
    pub v_proj: Linear,
    pub out_proj: Linear,
    pub num_heads: usize,
}

impl VitAttention {
    fn forward(&self, x: Tensor<3>) -> Tensor<3> {
        let [b, t, d] = x.dims();
        let nh = self.num_heads;
        let hd = d / nh;
        let heads = |y: Tensor<3>| y.reshape([b, t, nh, hd]).swap_dims(1, 2);
        let q = heads(self.q_proj.forward(x.clone()));
        let k = heads(self.k_proj.forward(x.clone()));
        let v = heads(self.v_proj.forward(x));
        let scores = q.matmul(k.swap_dims(2, 3)) * (hd as f64).powf(-0.5);
        let o = crate::kernels::softmax_last(scores).matmul(v).swap_dims(1, 2).reshape([b, t, d]);
        self.out_proj.forward(o)
    }
}

#[derive(Module, Debug)]
pub struct VitMlp {
    pub fc1: Linear,
    pub fc2: Linear,
}

#[derive(Module, Debug)]
pub struct VitLayer {
    pub layer_norm1: LayerNorm,
    pub self_attn: VitAttention,
    pub layer_norm2: LayerNorm,
    pub mlp: VitMlp,
}

impl VitLayer {
    fn forward(&self, x: Tensor<3>) -> Tensor<3> {
        let x = x.clone() + self.self_attn.forward(self.layer_norm1.forward(x));
        let h = gelu_tanh(self.mlp.fc1.forward(self.layer_norm2.forward(x.clone())));
        x + self.mlp.fc2.forward(h)
    }
}

#[derive(Module, Debug)]
pub struct VitEncoder {
    pub layers: Vec<VitLayer>,
}

#[derive(Module, Debug)]
pub struct VitTransformer {
    pub embeddings: VitEmbeddings,
    pub encoder: VitEncoder,
    pub post_layernorm: LayerNorm,
}

/// HF `SiglipVisionModel` / `Siglip2VisionModel` without its pooling head.
/// Keys: `vision_model.{embeddings,encoder,post_layernorm}.*`.
#[derive(Module, Debug)]
pub struct SiglipVision {
    pub vision_model: VitTransformer,
    #[module(skip)]
    pub config: VitConfig,
}

impl VitConfig {
    /// The tower this config describes, initialised at random (lazily).
    pub fn init(&self, device: &Device) -> SiglipVision {
        let config = self;
        let d = config.hidden_size;
        let p = config.patch_size;
        let c = config.num_channels;
        let linear = |i, o| LinearConfig::new(i, o).init(device);
        let patch_embedding = if config.linear_patch_embedding {
            PatchEmbedding::Linear(linear(c * p * p, d))
        } else {
            PatchEmbedding::Conv(Conv2dConfig::new(c, d, p, PadType::Valid).stride(p).bias(true).init(device))
        };
        let layers = (0..config.num_hidden_layers)
            .map(|_| VitLayer {
                layer_norm1: LayerNormConfig::new(d, config.layer_norm_eps).init(device),
                self_attn: VitAttention {
                    q_proj: linear(d, d),
                    k_proj: linear(d, d),
                    v_proj: linear(d, d),
                    out_proj: linear(d, d),
                    num_heads: config.num_attention_heads,
                },
                layer_norm2: LayerNormConfig::new(d, config.layer_norm_eps).init(device),
                mlp: VitMlp { fc1: linear(d, config.intermediate_size), fc2: linear(config.intermediate_size, d) },
            })
            .collect();
        SiglipVision {
            vision_model: VitTransformer {
                embeddings: VitEmbeddings {
                    patch_embedding,
                    // transformers' SigLIP init: N(0, 1/d). Burn's default N(0, 1) makes the
                    // table outweigh the patch embeddings ~3x, and a ViT trained from
                    // scratch then never learns to look at the pixels.
                    position_embedding: EmbeddingConfig::new(config.num_patches, d)
                        .with_initializer(Initializer::Normal { mean: 0.0, std: 1.0 / (d as f64).sqrt() })
                        .init(device),
                    patch_size: p,
                },
                encoder: VitEncoder { layers },
                post_layernorm: LayerNormConfig::new(d, config.layer_norm_eps).init(device),
            },
            config: config.clone(),
        }
    }
}

impl SiglipVision {
    /// `[b, c, H, W] -> [b, gh*gw, hidden]`, tokens row-major over the patch grid.
    pub fn tokens(&self, pixels: Tensor<4>) -> Tensor<3> {
        let mut x = self.vision_model.embeddings.forward(pixels);
        for layer in &self.vision_model.encoder.layers {
            x = layer.forward(x);
        }
        self.vision_model.post_layernorm.forward(x)
    }
}

//! LFM3-VL's vision tower and projector (transformers' `Lfm3VlVisionModel` and
//! `Lfm3VlMultiModalProjector`): a hybrid encoder in the LFM family's own style, gated
//! short convolutions and attention, where MobileNetV5 is all convolution and SigLIP2 all
//! attention.
//!
//! An image arrives as patches (Qwen2-VL's layout, [`Lfm3VlVisionConfig::patch_dim`] values
//! each: `temporal_patch_size` frames of `patch_size^2` pixels per channel) on a `h x w`
//! grid, listed in spatial-merge order: the `m x m` blocks row by row, and within a block its
//! patches row by row (`m = spatial_merge_size`). Then:
//! `patchifier` (Linear) -> `embedding_norm` (RMSNorm) -> layers, each
//! `x += op(operator_norm(x)); x += feed_forward(ffn_norm(x))` with `op`
//! - `conv`: `B, C, v = in_proj(x)`; `C * depthwise_conv2d_kxk(B * v)` over the 2-D grid
//!   (zero padding `k / 2`), then `out_proj`;
//! - `full_attention`: bidirectional GQA over the image's patches, RMSNorm on q and k heads,
//!   axial 2-D RoPE (the first half of each head's frequency pairs rotate with the patch's
//!   row, the second half with its column);
//! and the SwiGLU `feed_forward`. No final norm. The projector normalises each token
//! (LayerNorm, eps 1e-6), concatenates the `m^2` tokens of each merge block and maps them
//! through Linear -> GELU (erf) -> Linear to the language model's width.
//!
//! Keys are the published ones (`model.vision_tower.patchifier`, `self_attn.q_layernorm`,
//! `k_layernorm`); transformers renames them `patch_embed`, `q_norm`, `k_norm` when it loads,
//! and those load too (`checkpoint/lfm3_vl.rs`).

use burn::module::Module;
use burn::tensor::{Device, Tensor, TensorData};

use crate::connector::{Projector, ProjectorConfig};
use crate::nn::{Conv2d, Conv2dConfig, Linear, LinearConfig, RmsNorm, RmsNormConfig};
use crate::text::attention::{Attention, AttentionConfig};
use crate::text::mlp::{Mlp, MlpConfig};
use crate::vision::PadType;

/// The tower's hyper-parameters (`vision_config` of an `lfm3_vl` config.json).
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Lfm3VlVisionConfig {
    pub hidden_size: usize,
    pub intermediate_size: usize,
    pub in_channels: usize,
    pub patch_size: usize,
    pub temporal_patch_size: usize,
    pub spatial_merge_size: usize,
    pub num_attention_heads: usize,
    pub num_key_value_heads: usize,
    /// `true` for an attention layer, `false` for a conv layer (`layer_types`).
    pub attention: Vec<bool>,
    pub conv_kernel_size: usize,
    pub norm_eps: f64,
    pub rope_theta: f64,
    /// The side of the square image assumed where one size must be named (reports, the
    /// cost model, presets); real images keep their aspect through the processor.
    pub image_size: usize,
}

impl Lfm3VlVisionConfig {
    /// Named towers: LFM3-VL-2B's (14 layers, conv for the first two and every odd one,
    /// 1024 wide, 16-pixel patches), and a small one for CPU runs whose 64-pixel images give
    /// 16 merged tokens, as `mobilenetv5_tiny` and `vit_mini` do.
    pub const PRESETS: &'static [(&'static str, fn() -> Self)] = &[
        ("lfm3_vl_tower", || Self::shape(1024, 2560, 14, 16, 8, 16, 512)),
        ("lfm3_vl_tiny", || Self::shape(64, 128, 4, 4, 2, 8, 64)),
    ];

    pub fn preset(name: &str) -> Option<Self> {
        Self::PRESETS.iter().find(|(n, _)| *n == name).map(|(_, make)| make())
    }

    pub fn preset_names() -> Vec<&'static str> {
        Self::PRESETS.iter().map(|(n, _)| *n).collect()
    }

    fn shape(hidden: usize, ff: usize, layers: usize, heads: usize, kv: usize, patch: usize, image: usize) -> Self {
        Self {
            hidden_size: hidden,
            intermediate_size: ff,
            in_channels: 3,
            patch_size: patch,
            temporal_patch_size: 2,
            spatial_merge_size: 2,
            num_attention_heads: heads,
            num_key_value_heads: kv,
            attention: Self::default_attention(layers),
            conv_kernel_size: 3,
            norm_eps: 1e-5,
            rope_theta: 1_000_000.0,
            image_size: image,
        }
    }

    /// LFM3-VL's projector from this tower to `text_dim` through `hidden`.
    pub fn projector(&self, hidden: usize, text_dim: usize, bias: bool) -> ProjectorConfig {
        ProjectorConfig {
            vision_dim: self.hidden_size,
            hidden,
            text_dim,
            bias,
            downsample: self.spatial_merge_size,
            layer_norm: true,
            merge_blocks: true,
        }
    }

    /// The patch grid of an `h x w` (processed) image.
    pub fn grid(&self, h: usize, w: usize) -> (usize, usize) {
        (h / self.patch_size, w / self.patch_size)
    }

    /// Values per patch: `in_channels * temporal_patch_size * patch_size^2`.
    pub fn patch_dim(&self) -> usize {
        self.in_channels * self.temporal_patch_size * self.patch_size * self.patch_size
    }

    pub fn head_dim(&self) -> usize {
        self.hidden_size / self.num_attention_heads
    }

    /// transformers' default mix: conv for the first two layers and every odd one.
    pub fn default_attention(layers: usize) -> Vec<bool> {
        (0..layers).map(|i| !(i < 2 || i % 2 == 1)).collect()
    }

    /// Sizes within bounds and consistent, by field name.
    pub fn check(&self) -> Result<(), (&'static str, String)> {
        let positive = [
            ("hidden_size", self.hidden_size, 1 << 16),
            ("intermediate_size", self.intermediate_size, 1 << 20),
            ("in_channels", self.in_channels, 16),
            ("patch_size", self.patch_size, 1024),
            ("temporal_patch_size", self.temporal_patch_size, 64),
            ("spatial_merge_size", self.spatial_merge_size, 64),
            ("num_attention_heads", self.num_attention_heads, 1024),
            ("num_key_value_heads", self.num_key_value_heads, 1024),
            ("conv_kernel_size", self.conv_kernel_size, 63),
            ("num_hidden_layers", self.attention.len(), 1024),
        ];
        for (name, v, max) in positive {
            if v == 0 || v > max {
                return Err((name, format!("{v} is not 1 to {max}")));
            }
        }
        if !self.hidden_size.is_multiple_of(self.num_attention_heads)
            || !self.num_attention_heads.is_multiple_of(self.num_key_value_heads)
        {
            return Err((
                "num_attention_heads",
                format!(
                    "hidden_size {} over {} heads over {} KV heads does not divide",
                    self.hidden_size, self.num_attention_heads, self.num_key_value_heads
                ),
            ));
        }
        if !self.head_dim().is_multiple_of(4) {
            return Err((
                "num_attention_heads",
                format!("head size {} is not a multiple of 4 (axial RoPE)", self.head_dim()),
            ));
        }
        if self.conv_kernel_size.is_multiple_of(2) {
            return Err((
                "conv_kernel_size",
                format!("{} is even (the grid is padded by k / 2 on each side)", self.conv_kernel_size),
            ));
        }
        if !(self.rope_theta.is_finite() && self.rope_theta > 0.0) {
            return Err(("rope_parameters", format!("rope_theta {} is not a positive number", self.rope_theta)));
        }
        Ok(())
    }

    pub fn init(&self, device: &Device) -> Lfm3VlTower {
        let d = self.hidden_size;
        let layers = self
            .attention
            .iter()
            .map(|&attention| {
                let operator_norm = RmsNormConfig::new(d, self.norm_eps).init(device);
                let ffn_norm = RmsNormConfig::new(d, self.norm_eps).init(device);
                let feed_forward = MlpConfig::new(d, self.intermediate_size).init(device);
                if attention {
                    let self_attn = AttentionConfig {
                        hidden: d,
                        heads: self.num_attention_heads,
                        kv_heads: self.num_key_value_heads,
                        head_dim: self.head_dim(),
                        eps: self.norm_eps,
                        gate: false,
                        bias: false,
                    }
                    .init(device);
                    Lfm3VlLayer::Attention(VisionAttentionLayer { operator_norm, ffn_norm, feed_forward, self_attn })
                } else {
                    let lin = |i, o| LinearConfig::new(i, o).with_bias(false).init(device);
                    let conv = SpatialShortConv {
                        in_proj: lin(d, 3 * d),
                        spatial_conv: Conv2dConfig::new(d, d, self.conv_kernel_size, PadType::Symmetric)
                            .depthwise()
                            .init(device),
                        out_proj: lin(d, d),
                        merge: self.spatial_merge_size,
                    };
                    Lfm3VlLayer::Conv(VisionConvLayer { operator_norm, ffn_norm, feed_forward, conv })
                }
            })
            .collect();
        Lfm3VlTower {
            patchifier: LinearConfig::new(self.patch_dim(), d).with_bias(false).init(device),
            embedding_norm: RmsNormConfig::new(d, self.norm_eps).init(device),
            layers,
            merge: self.spatial_merge_size,
            rope_theta: self.rope_theta,
            patch_size: self.patch_size,
            temporal_patch_size: self.temporal_patch_size,
        }
    }
}

/// Keys `conv.{in_proj, spatial_conv, out_proj}.weight`.
#[derive(Module, Debug)]
pub struct SpatialShortConv {
    pub in_proj: Linear,
    /// Depthwise `[hidden, 1, k, k]`, no bias.
    pub spatial_conv: Conv2d,
    pub out_proj: Linear,
    pub merge: usize,
}

impl SpatialShortConv {
    /// `x: [n, hidden]` in merge order on a `h x w` grid -> `[n, hidden]`.
    pub fn forward(&self, x: Tensor<2>, h: usize, w: usize) -> Tensor<2> {
        let [n, d] = x.dims();
        let m = self.merge;
        let bcx = self.in_proj.forward(x);
        let gate_b = bcx.clone().slice([0..n, 0..d]);
        let gate_c = bcx.clone().slice([0..n, d..2 * d]);
        let v = bcx.slice([0..n, 2 * d..3 * d]);
        // Merge order [h/m, w/m, m, m, d] -> the image [1, d, h, w].
        let grid = (gate_b * v).reshape([1, h / m, w / m, m, m, d]).permute([0, 5, 1, 3, 2, 4]).reshape([1, d, h, w]);
        let y = self.spatial_conv.forward(grid);
        // And back: [1, d, h/m, m, w/m, m] -> [h/m, w/m, m, m, d].
        let y = y.reshape([1, d, h / m, m, w / m, m]).permute([0, 2, 4, 3, 5, 1]).reshape([n, d]);
        self.out_proj.forward(gate_c * y)
    }
}

/// Keys `operator_norm`, `ffn_norm`, `feed_forward`, `conv`.
#[derive(Module, Debug)]
pub struct VisionConvLayer {
    pub operator_norm: RmsNorm,
    pub ffn_norm: RmsNorm,
    pub feed_forward: Mlp,
    pub conv: SpatialShortConv,
}

/// Keys `operator_norm`, `ffn_norm`, `feed_forward`, `self_attn` (LFM2's attention module,
/// used without a mask: every patch sees every patch of its image).
#[derive(Module, Debug)]
pub struct VisionAttentionLayer {
    pub operator_norm: RmsNorm,
    pub ffn_norm: RmsNorm,
    pub feed_forward: Mlp,
    pub self_attn: Attention,
}

/// One tower layer; the variant adds no key segment (`layers.N.conv.*`).
#[derive(Module, Debug)]
pub enum Lfm3VlLayer {
    Conv(VisionConvLayer),
    Attention(VisionAttentionLayer),
}

/// Keys `patchifier`, `embedding_norm`, `layers.N`.
#[derive(Module, Debug)]
pub struct Lfm3VlTower {
    pub patchifier: Linear,
    pub embedding_norm: RmsNorm,
    pub layers: Vec<Lfm3VlLayer>,
    pub merge: usize,
    pub rope_theta: f64,
    pub patch_size: usize,
    pub temporal_patch_size: usize,
}

impl Lfm3VlTower {
    /// Processed images `[b, 3, H, W]` (resized to multiples of `patch * merge` and
    /// normalised, [`crate::vision::lfm3_vl_processor`]) -> tokens `[b, gh * gw, hidden]` in
    /// merge order: the patches are cut as the processor cuts them (each frame repeated
    /// over the temporal patch), then [`Self::forward`] runs per image.
    pub fn forward_image(&self, pixels: Tensor<4>) -> Tensor<3> {
        let [b, c, h, w] = pixels.dims();
        let (patch, temporal) = (self.patch_size, self.temporal_patch_size);
        let (gh, gw, m) = (h / patch, w / patch, self.merge);
        // [b, c, gh/m, m, p, gw/m, m, p] -> [b, gh/m, gw/m, m, m, c, p, p]
        let patches = pixels.reshape([b, c, gh / m, m, patch, gw / m, m, patch]).permute([0, 2, 5, 3, 6, 1, 4, 7]);
        let n = gh * gw;
        let patches = patches.reshape([b * n, c, 1, patch * patch]).repeat_dim(2, temporal);
        let patches = patches.reshape([b, n, c * temporal * patch * patch]);
        let outs: Vec<Tensor<3>> = (0..b)
            .map(|i| {
                let one = patches.clone().narrow(0, i, 1).reshape([n, c * temporal * patch * patch]);
                self.forward(one, gh, gw).unsqueeze::<3>()
            })
            .collect();
        Tensor::cat(outs, 0)
    }

    /// Patches `[h * w, patch_dim]` of one image on a `h x w` grid (merge order) ->
    /// tokens `[h * w, hidden]`, in the same order.
    pub fn forward(&self, patches: Tensor<2>, h: usize, w: usize) -> Tensor<2> {
        let x = self.embedding_norm.forward(self.patchifier.forward(patches));
        let [n, d] = x.dims();
        let device = x.device();
        let mut rope = None;
        let mut x = x;
        for layer in &self.layers {
            x = match layer {
                Lfm3VlLayer::Conv(l) => {
                    let y = l.conv.forward(l.operator_norm.forward(x.clone()), h, w);
                    x + y
                }
                Lfm3VlLayer::Attention(l) => {
                    let hd = l.self_attn.head_dim;
                    let (cos, sin) =
                        rope.get_or_insert_with(|| axial_rope(h, w, self.merge, hd, self.rope_theta, &device));
                    let y = l.self_attn.forward(
                        l.operator_norm.forward(x.clone()).reshape([1, n, d]),
                        (&*cos, &*sin),
                        0,
                        None,
                        None,
                    );
                    x + y.reshape([n, d])
                }
            };
            let (ffn_norm, mlp) = match layer {
                Lfm3VlLayer::Conv(l) => (&l.ffn_norm, &l.feed_forward),
                Lfm3VlLayer::Attention(l) => (&l.ffn_norm, &l.feed_forward),
            };
            x = x.clone() + mlp.forward(ffn_norm.forward(x).unsqueeze::<3>()).squeeze::<2>();
        }
        x
    }
}

/// Axial RoPE tables `[1, 1, h * w, head_dim]` for a `h x w` grid in merge order: with
/// `f_i = theta^(-2i / (head_dim / 2))` for `i < head_dim / 4`, a patch at row `r`, column
/// `c` has angles `[r f, c f]` over the first half of the head, repeated over the second
/// (rotate-half pairs `j` and `j + head_dim / 2` share an angle).
pub fn axial_rope(
    h: usize,
    w: usize,
    m: usize,
    head_dim: usize,
    theta: f64,
    device: &Device,
) -> (Tensor<4>, Tensor<4>) {
    let spatial = head_dim / 2;
    let inv_freq: Vec<f32> =
        (0..spatial / 2).map(|i| (1.0 / theta.powf((2 * i) as f64 / spatial as f64)) as f32).collect();
    let n = h * w;
    let (mut cos, mut sin) = (Vec::with_capacity(n * head_dim), Vec::with_capacity(n * head_dim));
    for (r, c) in merge_order(h, w, m) {
        let angles: Vec<f32> =
            inv_freq.iter().map(|f| r as f32 * f).chain(inv_freq.iter().map(|f| c as f32 * f)).collect();
        for _ in 0..2 {
            cos.extend(angles.iter().map(|a| a.cos()));
            sin.extend(angles.iter().map(|a| a.sin()));
        }
    }
    let shape = [1, 1, n, head_dim];
    (Tensor::from_data(TensorData::new(cos, shape), device), Tensor::from_data(TensorData::new(sin, shape), device))
}

/// (row, column) of each patch of a `h x w` grid in spatial-merge order: the `m x m` blocks
/// row by row, and within each block its patches row by row.
pub fn merge_order(h: usize, w: usize, m: usize) -> impl Iterator<Item = (usize, usize)> {
    (0..h / m).flat_map(move |bh| {
        (0..w / m).flat_map(move |bw| (0..m).flat_map(move |i| (0..m).map(move |j| (bh * m + i, bw * m + j))))
    })
}

/// LFM3-VL's image side: keys `vision_tower.*` and `multi_modal_projector.*` under `model.`.
/// The projector is the shared connector in its `merge_blocks` layout.
#[derive(Module, Debug)]
pub struct Lfm3VlVision {
    pub vision_tower: Lfm3VlTower,
    pub multi_modal_projector: Projector,
}

impl Lfm3VlVision {
    /// Patches of one image on a `h x w` grid -> its language-model tokens `[h w / m^2, text_dim]`.
    pub fn features(&self, patches: Tensor<2>, h: usize, w: usize) -> Tensor<2> {
        let tokens = self.vision_tower.forward(patches, h, w).unsqueeze::<3>();
        self.multi_modal_projector.forward(tokens, h, w).squeeze::<2>()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merge_order_lists_blocks_then_their_patches() {
        let order: Vec<(usize, usize)> = merge_order(2, 4, 2).collect();
        assert_eq!(order, [(0, 0), (0, 1), (1, 0), (1, 1), (0, 2), (0, 3), (1, 2), (1, 3)]);
    }
}

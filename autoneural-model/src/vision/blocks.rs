//! The three MobileNetV5 block kinds, with timm's module names (so timm state dicts load
//! as they are).

use burn::module::Module;
use burn::tensor::{Device, Tensor};

use crate::kernels;
use crate::nn::conv_norm::{
    Conv2d, Conv2dConfig, ConvNorm, ConvNormConfig, LayerScale2d, LayerScale2dConfig, Norm2d, Norm2dConfig,
};
use crate::vision::arch::{BlockKind, NormKind, PadType, ResolvedBlock, make_divisible};

/// Full conv expansion -> norm+GELU -> 1x1 projection -> norm (no layer scale).
/// Keys: `conv_exp.weight`, `bn1.*`, `conv_pwl.weight`, `bn2.*`.
#[derive(Module, Debug)]
pub struct EdgeResidual {
    pub conv_exp: Conv2d,
    pub bn1: Norm2d,
    pub conv_pwl: Conv2d,
    pub bn2: Norm2d,
    pub has_skip: bool,
}

/// An [`EdgeResidual`] for `block`, with its kernel and expansion ratio.
#[derive(Debug, Clone, Copy)]
pub struct EdgeResidualConfig<'a> {
    pub block: &'a ResolvedBlock,
    pub kernel: usize,
    pub exp_ratio: f64,
    pub style: Style,
}

impl EdgeResidualConfig<'_> {
    pub fn init(&self, device: &Device) -> EdgeResidual {
        let (b, kernel) = (self.block, self.kernel);
        let Style { pad, norm } = self.style;
        let mid = make_divisible(b.in_chs as f64 * self.exp_ratio, 8);
        let out = b.spec.out_chs;
        EdgeResidual {
            conv_exp: Conv2dConfig::new(b.in_chs, mid, kernel, pad)
                .stride(b.spec.stride)
                .dilation(b.dilation)
                .init(device),
            bn1: Norm2dConfig::new(norm, mid).init(device),
            conv_pwl: Conv2dConfig::new(mid, out, 1, pad).init(device),
            bn2: Norm2dConfig::new(norm, out).init(device),
            has_skip: b.in_chs == out && b.spec.stride == 1 && !b.spec.noskip,
        }
    }
}

impl EdgeResidual {
    pub fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        let y = self.bn1.forward_gelu(self.conv_exp.forward(x.clone()));
        self.bn2.forward_scale_add(self.conv_pwl.forward(y), None, self.has_skip.then_some(x))
    }
}

/// Optional start depthwise -> 1x1 expansion -> optional middle depthwise -> 1x1 projection
/// -> optional end depthwise -> layer scale. Keys: `dw_start.*`, `pw_exp.*`, `dw_mid.*`,
/// `pw_proj.*`, `dw_end.*` (each `conv.weight`, `bn.weight`), `layer_scale.gamma`.
#[derive(Module, Debug)]
pub struct UniversalInvertedResidual {
    pub dw_start: Option<ConvNorm>,
    pub pw_exp: ConvNorm,
    pub dw_mid: Option<ConvNorm>,
    pub pw_proj: ConvNorm,
    pub dw_end: Option<ConvNorm>,
    pub layer_scale: Option<LayerScale2d>,
    pub has_skip: bool,
}

/// A [`UniversalInvertedResidual`]: its geometry and style.
#[derive(Debug, Clone, Copy)]
pub struct UirConfig {
    pub in_chs: usize,
    pub out_chs: usize,
    pub start_kernel: usize,
    pub mid_kernel: usize,
    pub end_kernel: usize,
    pub exp_ratio: f64,
    pub stride: usize,
    pub dilation: usize,
    pub noskip: bool,
    pub layer_scale: Option<f64>,
    pub style: Style,
}

/// How an encoder's convolutions pad and normalise, shared by all its blocks.
#[derive(Debug, Clone, Copy)]
pub struct Style {
    pub pad: PadType,
    pub norm: NormKind,
}

impl UirConfig {
    pub fn init(&self, device: &Device) -> UniversalInvertedResidual {
        let s = self;
        let dw = |chs: usize, k: usize, stride: usize, act: bool| {
            (k > 0).then(|| {
                let conv = Conv2dConfig::new(chs, chs, k, s.style.pad).stride(stride).dilation(s.dilation).depthwise();
                ConvNormConfig::new(conv, s.style.norm, act).init(device)
            })
        };
        let mid = make_divisible(s.in_chs as f64 * s.exp_ratio, 8);
        // The stride goes to the first depthwise conv that exists, counting from the middle.
        let start_stride = if s.mid_kernel == 0 { s.stride } else { 1 };
        let end_stride = if s.start_kernel == 0 && s.mid_kernel == 0 { s.stride } else { 1 };
        UniversalInvertedResidual {
            dw_start: dw(s.in_chs, s.start_kernel, start_stride, false),
            pw_exp: ConvNormConfig::new(Conv2dConfig::new(s.in_chs, mid, 1, s.style.pad), s.style.norm, true)
                .init(device),
            dw_mid: dw(mid, s.mid_kernel, s.stride, true),
            pw_proj: ConvNormConfig::new(Conv2dConfig::new(mid, s.out_chs, 1, s.style.pad), s.style.norm, false)
                .init(device),
            dw_end: dw(s.out_chs, s.end_kernel, end_stride, false),
            layer_scale: s.layer_scale.map(|v| LayerScale2dConfig::new(s.out_chs, v).init(device)),
            has_skip: s.in_chs == s.out_chs && s.stride == 1 && !s.noskip,
        }
    }
}

impl UniversalInvertedResidual {
    pub fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        let mut y = x.clone();
        if let Some(c) = &self.dw_start {
            y = c.forward(y);
        }
        y = self.pw_exp.forward(y);
        if let Some(c) = &self.dw_mid {
            y = c.forward(y);
        }
        let skip = self.has_skip.then_some(x);
        let scale = self.layer_scale.as_ref();
        match &self.dw_end {
            // Projection norm, layer scale and skip in one pass.
            None => self.pw_proj.bn.forward_scale_add(self.pw_proj.conv.forward(y), scale, skip),
            Some(end) => LayerScale2d::apply(scale, end.forward(self.pw_proj.forward(y)), skip),
        }
    }
}

/// Key or value path: optional strided depthwise downsample + norm, then a 1x1 projection
/// to one head. Keys: `down_conv.weight`, `norm.*`, `proj.weight`.
#[derive(Module, Debug)]
pub struct KvProjection {
    pub down_conv: Option<Conv2d>,
    pub norm: Option<Norm2d>,
    pub proj: Conv2d,
}

/// A [`KvProjection`] from `dim` channels to one head of `out`, downsampled by `stride`.
#[derive(Debug, Clone, Copy)]
struct KvProjectionConfig {
    dim: usize,
    out: usize,
    kernel: usize,
    stride: usize,
    dilation: usize,
    style: Style,
}

impl KvProjectionConfig {
    fn init(&self, d: &Device) -> KvProjection {
        let &Self { dim, out, kernel, stride, dilation, style } = self;
        let (down, pad) = (stride > 1, style.pad);
        KvProjection {
            down_conv: down.then(|| {
                Conv2dConfig::new(dim, dim, kernel, pad).stride(stride).dilation(dilation).depthwise().init(d)
            }),
            norm: down.then(|| Norm2dConfig::new(style.norm, dim).init(d)),
            proj: Conv2dConfig::new(dim, out, 1, pad).init(d),
        }
    }
}

impl KvProjection {
    fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        let mut y = x;
        if let (Some(c), Some(n)) = (&self.down_conv, &self.norm) {
            y = n.forward(c.forward(y));
        }
        self.proj.forward(y)
    }
}

/// A 1x1 conv in a named slot (`query.proj`, `output.proj`).
#[derive(Module, Debug)]
pub struct Projection {
    pub proj: Conv2d,
}

/// Multi-query attention over pixels: `heads` query heads share one key/value head, whose
/// grid may be downsampled by `kv_stride`. Keys: `query.proj`, `key.*`, `value.*`,
/// `output.proj`.
#[derive(Module, Debug)]
pub struct MultiQueryAttention2d {
    pub query: Projection,
    pub key: KvProjection,
    pub value: KvProjection,
    pub output: Projection,
    pub num_heads: usize,
    pub key_dim: usize,
}

impl MultiQueryAttention2d {
    /// `[b, c, h, w] -> [b, out, h, w]`
    pub fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        let [b, _, h, w] = x.dims();
        let (nh, d) = (self.num_heads, self.key_dim);
        // q: [b, nh*d, h, w] -> [b, nh, hw, d] -> [b, nh*hw, d] (one shared kv head, so the
        // heads stack into rows of a single matmul)
        let q =
            self.query.proj.forward(x.clone()).reshape([b, nh, d, h * w]).swap_dims(2, 3).reshape([b, nh * h * w, d]);
        let to_rows = |t: Tensor<4>| {
            let [_, c, kh, kw] = t.dims();
            t.reshape([b, c, kh * kw]).swap_dims(1, 2)
        };
        let k = to_rows(self.key.forward(x.clone())); // [b, p, d]
        let v = to_rows(self.value.forward(x)); // [b, p, d]
        let scores = q.matmul(k.swap_dims(1, 2)) * (d as f64).powf(-0.5);
        let o = kernels::softmax_last(scores).matmul(v); // [b, nh*hw, d]
        // [b, nh, hw, d] -> [b, hw, nh, d] -> [b, h, w, nh*d] -> [b, nh*d, h, w]
        let o = o.reshape([b, nh, h * w, d]).swap_dims(1, 2).reshape([b, h, w, nh * d]).permute([0, 3, 1, 2]);
        self.output.proj.forward(o)
    }
}

/// Pre-norm multi-query attention block with layer scale. Keys: `norm.*`, `attn.*`,
/// `layer_scale.gamma`.
#[derive(Module, Debug)]
pub struct MobileAttention {
    pub norm: Norm2d,
    pub attn: MultiQueryAttention2d,
    pub layer_scale: Option<LayerScale2d>,
    pub has_skip: bool,
}

impl MobileAttention {
    pub fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        let y = self.attn.forward(self.norm.forward(x.clone()));
        LayerScale2d::apply(self.layer_scale.as_ref(), y, self.has_skip.then_some(x))
    }
}

/// One block of the trunk. The variant adds no path segment to checkpoint keys.
#[derive(Module, Debug)]
pub enum MobileBlock {
    EdgeResidual(EdgeResidual),
    UniversalInvertedResidual(UniversalInvertedResidual),
    MobileAttention(MobileAttention),
}

/// The [`MobileBlock`] a resolved block string describes.
#[derive(Debug, Clone, Copy)]
pub struct MobileBlockConfig<'a> {
    pub block: &'a ResolvedBlock,
    pub style: Style,
    /// The layer-scale init of UIR and attention blocks (`None`: no layer scale).
    pub layer_scale: Option<f64>,
}

impl MobileBlockConfig<'_> {
    pub fn init(&self, device: &Device) -> MobileBlock {
        let (b, style, layer_scale) = (self.block, self.style, self.layer_scale);
        let pad = style.pad;
        match b.spec.kind {
            BlockKind::EdgeResidual { kernel, exp_ratio } => {
                MobileBlock::EdgeResidual(EdgeResidualConfig { block: b, kernel, exp_ratio, style }.init(device))
            }
            BlockKind::UniversalInvertedResidual { start_kernel, mid_kernel, end_kernel, exp_ratio } => {
                MobileBlock::UniversalInvertedResidual(
                    UirConfig {
                        in_chs: b.in_chs,
                        out_chs: b.spec.out_chs,
                        start_kernel,
                        mid_kernel,
                        end_kernel,
                        exp_ratio,
                        stride: b.spec.stride,
                        dilation: b.dilation,
                        noskip: b.spec.noskip,
                        layer_scale,
                        style,
                    }
                    .init(device),
                )
            }
            BlockKind::MultiQueryAttention { kv_kernel, num_heads, key_dim, kv_stride } => {
                let c = b.in_chs;
                let out = b.spec.out_chs;
                let kv = |d: &Device| {
                    KvProjectionConfig {
                        dim: c,
                        out: key_dim,
                        kernel: kv_kernel,
                        stride: kv_stride,
                        dilation: b.dilation,
                        style,
                    }
                    .init(d)
                };
                MobileBlock::MobileAttention(MobileAttention {
                    norm: Norm2dConfig::new(style.norm, c).init(device),
                    attn: MultiQueryAttention2d {
                        query: Projection { proj: Conv2dConfig::new(c, num_heads * key_dim, 1, pad).init(device) },
                        key: kv(device),
                        value: kv(device),
                        output: Projection { proj: Conv2dConfig::new(num_heads * key_dim, out, 1, pad).init(device) },
                        num_heads,
                        key_dim,
                    },
                    layer_scale: layer_scale.map(|v| LayerScale2dConfig::new(out, v).init(device)),
                    // A strided attention block keeps its resolution but loses its skip, as in timm.
                    has_skip: c == out && b.spec.stride == 1 && !b.spec.noskip,
                })
            }
        }
    }
}

impl MobileBlock {
    pub fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        match self {
            Self::EdgeResidual(m) => m.forward(x),
            Self::UniversalInvertedResidual(m) => m.forward(x),
            Self::MobileAttention(m) => m.forward(x),
        }
    }
}

//! Convolution building blocks shared by the MobileNetV5 blocks: a padded conv, RmsNorm2d,
//! conv + norm (+ act), layer scale, tanh-GELU.

use burn::module::{Module, Param};
use burn::nn::Initializer;
use burn::tensor::module::conv2d;
use burn::tensor::ops::ConvOptions;
use burn::tensor::{Device, Tensor};

use crate::kernels;

use crate::vision::arch::PadType;

/// tanh-approximated GELU, MobileNetV5's and SigLIP's activation (fused on CPU).
pub fn gelu_tanh<const D: usize>(x: Tensor<D>) -> Tensor<D> {
    kernels::gelu_tanh(x)
}

/// `(before, after)` padding of one spatial dim for a conv of kernel `k`.
pub fn conv_padding(pad: PadType, size: usize, k: usize, stride: usize, dilation: usize) -> (usize, usize) {
    match pad {
        PadType::Same => {
            // TensorFlow "same": the output has ceil(size / stride) positions.
            let out = size.div_ceil(stride);
            let total = ((out - 1) * stride + (k - 1) * dilation + 1).saturating_sub(size);
            (total / 2, total - total / 2)
        }
        PadType::Symmetric => {
            let p = ((stride - 1) + dilation * (k - 1)) / 2;
            (p, p)
        }
        PadType::Valid => (0, 0),
    }
}

/// A 2-D convolution whose padding is computed from the input size on every call (needed
/// for TensorFlow "same" with strides). Keys: `weight` `[out, in/groups, k, k]`, `bias`.
#[derive(Module, Debug)]
pub struct Conv2d {
    pub weight: Param<Tensor<4>>,
    pub bias: Option<Param<Tensor<1>>>,
    pub stride: usize,
    pub dilation: usize,
    pub groups: usize,
    #[module(skip)]
    pub pad: PadType,
}

/// Geometry of a [`Conv2d`].
#[derive(Debug, Clone, Copy)]
pub struct ConvSpec {
    pub in_chs: usize,
    pub out_chs: usize,
    pub kernel: usize,
    pub stride: usize,
    pub dilation: usize,
    pub groups: usize,
    pub bias: bool,
    pub pad: PadType,
}

impl ConvSpec {
    pub fn new(in_chs: usize, out_chs: usize, kernel: usize, pad: PadType) -> Self {
        Self { in_chs, out_chs, kernel, stride: 1, dilation: 1, groups: 1, bias: false, pad }
    }
    pub fn stride(mut self, s: usize) -> Self {
        self.stride = s;
        self
    }
    pub fn dilation(mut self, d: usize) -> Self {
        self.dilation = d;
        self
    }
    pub fn depthwise(mut self) -> Self {
        self.groups = self.in_chs;
        self
    }
    pub fn bias(mut self, b: bool) -> Self {
        self.bias = b;
        self
    }

    /// Random init as timm's EfficientNet init: normal with std sqrt(2 / fan_out).
    pub fn init(self, device: &Device) -> Conv2d {
        let k = self.kernel;
        let fan_out = k * k * self.out_chs / self.groups;
        let std = (2.0 / fan_out as f64).sqrt();
        Conv2d {
            weight: Initializer::Normal { mean: 0.0, std }
                .init([self.out_chs, self.in_chs / self.groups, k, k], device),
            bias: self.bias.then(|| Initializer::Zeros.init([self.out_chs], device)),
            stride: self.stride,
            dilation: self.dilation,
            groups: self.groups,
            pad: self.pad,
        }
    }
}

impl Conv2d {
    /// `[b, in, h, w] -> [b, out, h', w']`
    pub fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        let [_, _, h, w] = x.dims();
        let [_, _, kh, kw] = self.weight.lazy_shape().dims::<4>();
        let ph = conv_padding(self.pad, h, kh, self.stride, self.dilation);
        let pw = conv_padding(self.pad, w, kw, self.stride, self.dilation);
        let options = ConvOptions::new_with_padding([self.stride; 2], [ph, pw], [self.dilation; 2], self.groups);
        conv2d(x, self.weight.val(), self.bias.as_ref().map(|b| b.val()), options)
    }
}

/// RMS norm over channels at every pixel (timm `RmsNorm2d`, eps 1e-6). Key: `weight` `[c]`.
#[derive(Module, Debug)]
pub struct RmsNorm2d {
    pub weight: Param<Tensor<1>>,
    pub eps: f64,
}

impl RmsNorm2d {
    pub fn new(channels: usize, device: &Device) -> Self {
        Self { weight: Initializer::Ones.init([channels], device), eps: 1e-6 }
    }

    /// `[b, c, h, w] -> [b, c, h, w]`
    pub fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        kernels::rms_norm2d(x, &self.weight.val(), self.eps, false)
    }

    /// Norm then tanh-GELU, fused on CPU.
    pub fn forward_gelu(&self, x: Tensor<4>) -> Tensor<4> {
        kernels::rms_norm2d(x, &self.weight.val(), self.eps, true)
    }

    /// The end of a residual block: norm, then optional layer scale and skip, in one pass
    /// on CPU.
    pub fn forward_scale_add(&self, x: Tensor<4>, scale: Option<&LayerScale2d>, skip: Option<Tensor<4>>) -> Tensor<4> {
        let gamma = scale.map(|s| s.gamma.val());
        kernels::rms_norm2d_scale_add(x, &self.weight.val(), self.eps, gamma.as_ref(), skip)
    }
}

/// Conv -> RmsNorm2d (-> tanh-GELU): timm's `ConvNormAct`. Keys: `conv.*`, `bn.weight`.
#[derive(Module, Debug)]
pub struct ConvNorm {
    pub conv: Conv2d,
    pub bn: RmsNorm2d,
    pub act: bool,
}

impl ConvNorm {
    pub fn new(spec: ConvSpec, act: bool, device: &Device) -> Self {
        Self { conv: spec.init(device), bn: RmsNorm2d::new(spec.out_chs, device), act }
    }

    pub fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        let y = self.conv.forward(x);
        if self.act { self.bn.forward_gelu(y) } else { self.bn.forward(y) }
    }
}

/// Per-channel output scale (timm `LayerScale2d`). Key: `gamma` `[c]`.
#[derive(Module, Debug)]
pub struct LayerScale2d {
    pub gamma: Param<Tensor<1>>,
}

impl LayerScale2d {
    pub fn new(channels: usize, init: f64, device: &Device) -> Self {
        Self { gamma: Initializer::Constant { value: init }.init([channels], device) }
    }

    /// `x * gamma + skip`, either optional (one pass on CPU when both apply).
    pub fn apply(scale: Option<&Self>, x: Tensor<4>, skip: Option<Tensor<4>>) -> Tensor<4> {
        let gamma = scale.map(|s| s.gamma.val());
        kernels::scale_add(x, gamma.as_ref(), skip)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_padding_matches_tensorflow() {
        // stride 2, k 3 on an even size pads (0, 1); on an odd size (1, 1).
        assert_eq!(conv_padding(PadType::Same, 768, 3, 2, 1), (0, 1));
        assert_eq!(conv_padding(PadType::Same, 767, 3, 2, 1), (1, 1));
        assert_eq!(conv_padding(PadType::Same, 10, 5, 1, 1), (2, 2));
        assert_eq!(conv_padding(PadType::Symmetric, 768, 3, 2, 1), (1, 1));
        assert_eq!(conv_padding(PadType::Symmetric, 10, 5, 1, 2), (4, 4));
    }
}

//! Convolution building blocks shared by the MobileNetV5 blocks: a padded conv, the norm
//! (RMS or batch), conv + norm (+ act), layer scale, tanh-GELU.

use burn::module::{Module, Param, RunningState};
use burn::nn::Initializer;
use burn::tensor::module::{batch_norm, batch_norm_train, conv2d};
use burn::tensor::ops::ConvOptions;
use burn::tensor::{Device, Tensor};

use crate::kernels;

use crate::vision::arch::{NormKind, PadType};

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
pub struct Conv2dConfig {
    pub in_chs: usize,
    pub out_chs: usize,
    pub kernel: usize,
    pub stride: usize,
    pub dilation: usize,
    pub groups: usize,
    pub bias: bool,
    pub pad: PadType,
}

impl Conv2dConfig {
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
    pub fn init(&self, device: &Device) -> Conv2d {
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
        let x = crate::quant::activations::at_weight_input(self.weight.id, x);
        let [_, _, h, w] = x.dims();
        let [_, _, kh, kw] = self.weight.lazy_shape().dims::<4>();
        let ph = conv_padding(self.pad, h, kh, self.stride, self.dilation);
        let pw = conv_padding(self.pad, w, kw, self.stride, self.dilation);
        let options = ConvOptions::new_with_padding([self.stride; 2], [ph, pw], [self.dilation; 2], self.groups);
        let weight = crate::quant::qat::weight_value(&self.weight, crate::quant::Axes::OUT_IN);
        let bias = self.bias.as_ref().map(|b| b.val());
        let [b, c, ..] = x.dims();
        let o = weight.dims()[0];
        // Training: a 1x1 convolution as a matrix product (a 1x1 kernel at stride 1 has no
        // padding under any `PadType`).
        let pointwise = kh == 1 && kw == 1 && self.stride == 1 && self.groups == 1;
        if pointwise && x.device().is_autodiff() {
            let [h, w] = [x.dims()[2], x.dims()[3]];
            return weight_times_patches(weight, x.reshape([b, c, h * w]), bias, [b, o, h, w]);
        }
        // Training on flex, with backward passes of its own: other full convolutions as
        // im2col patches times the weight, depthwise ones directly (Burn's backward computes
        // a grouped convolution's weight gradient one channel at a time).
        if self.groups == 1 {
            if let Some((patches, [oh, ow])) =
                kernels::autodiff::unfold(&x, [kh, kw], self.stride, self.dilation, ph, pw)
            {
                return weight_times_patches(weight, patches, bias, [b, o, oh, ow]);
            }
        } else if self.groups == c && o == c {
            if let Some(y) = kernels::autodiff::depthwise_conv2d(&x, &weight, self.stride, self.dilation, ph, pw) {
                return match bias {
                    Some(bias) => y + bias.reshape([1, c, 1, 1]),
                    None => y,
                };
            }
        }
        conv2d(x, weight, bias, options)
    }
}

/// A convolution as one matrix product per image, `[out, in kh kw] @ [in kh kw, h' w']`,
/// for training: its backward is two matrix products, where Burn's conv backward computes
/// the weight gradient as a convolution whose kernel is the whole feature map (flex's
/// generic im2col path, after copying both operands to channel-major order). Same values as
/// `conv2d` up to summation order. `patches: [b, in kh kw, h' w']` (for a 1x1 convolution
/// the input itself) -> `out_dims = [b, out, h', w']`
fn weight_times_patches(
    weight: Tensor<4>,
    patches: Tensor<3>,
    bias: Option<Tensor<1>>,
    out_dims: [usize; 4],
) -> Tensor<4> {
    let [_, o, ..] = out_dims;
    let k = patches.dims()[1];
    let y = weight.reshape([1, o, k]).matmul(patches).reshape(out_dims);
    match bias {
        Some(bias) => y + bias.reshape([1, o, 1, 1]),
        None => y,
    }
}

/// The norm after a convolution (timm's `norm_layer`), by [`NormKind`]:
/// - `Rms`: `RmsNorm2d`, RMS over the channels of each pixel, eps 1e-6. Key: `weight`.
/// - `Batch`: `BatchNorm2d`, per channel over batch and pixels, eps 1e-5, momentum 0.1.
///   Keys: `weight`, `bias`, `running_mean`, `running_var`. It uses the batch's statistics
///   (and updates the running ones) only when its weight takes gradients on an autodiff
///   device, so a frozen encoder and inference both use the running statistics and stay
///   bit-identical.
#[derive(Module, Debug)]
pub struct Norm2d {
    pub weight: Param<Tensor<1>>,
    pub bias: Option<Param<Tensor<1>>>,
    pub running_mean: Option<RunningState<Tensor<1>>>,
    pub running_var: Option<RunningState<Tensor<1>>>,
    pub eps: f64,
}

const BATCH_NORM_MOMENTUM: f64 = 0.1;

/// A [`Norm2d`] of `kind` over `channels`.
#[derive(Debug, Clone, Copy)]
pub struct Norm2dConfig {
    pub kind: NormKind,
    pub channels: usize,
}

impl Norm2dConfig {
    pub fn new(kind: NormKind, channels: usize) -> Self {
        Self { kind, channels }
    }

    /// Weight ones (and bias zeros, running mean 0 and variance 1 for batch norm).
    pub fn init(&self, device: &Device) -> Norm2d {
        let channels = self.channels;
        let weight = Initializer::Ones.init([channels], device);
        match self.kind {
            NormKind::Rms => Norm2d { weight, bias: None, running_mean: None, running_var: None, eps: 1e-6 },
            NormKind::Batch => Norm2d {
                weight,
                bias: Some(Initializer::Zeros.init([channels], device)),
                running_mean: Some(RunningState::new(Tensor::zeros([channels], device))),
                running_var: Some(RunningState::new(Tensor::ones([channels], device))),
                eps: 1e-5,
            },
        }
    }
}

impl Norm2d {
    pub fn kind(&self) -> NormKind {
        if self.running_mean.is_some() { NormKind::Batch } else { NormKind::Rms }
    }

    /// `[b, c, h, w] -> [b, c, h, w]`
    pub fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        match self.kind() {
            NormKind::Rms => kernels::rms_norm2d(x, &self.weight.val(), self.eps, false),
            NormKind::Batch => self.batch_norm(x),
        }
    }

    /// Norm then tanh-GELU (one pass on CPU for `Rms`).
    pub fn forward_gelu(&self, x: Tensor<4>) -> Tensor<4> {
        match self.kind() {
            NormKind::Rms => kernels::rms_norm2d(x, &self.weight.val(), self.eps, true),
            NormKind::Batch => gelu_tanh(self.batch_norm(x)),
        }
    }

    /// The end of a residual block: norm, then optional layer scale and skip (one pass on
    /// CPU for `Rms`).
    pub fn forward_scale_add(&self, x: Tensor<4>, scale: Option<&LayerScale2d>, skip: Option<Tensor<4>>) -> Tensor<4> {
        match self.kind() {
            NormKind::Rms => {
                let gamma = scale.map(|s| s.gamma.val());
                kernels::rms_norm2d_scale_add(x, &self.weight.val(), self.eps, gamma.as_ref(), skip)
            }
            NormKind::Batch => LayerScale2d::apply(scale, self.batch_norm(x), skip),
        }
    }

    fn batch_norm(&self, x: Tensor<4>) -> Tensor<4> {
        let (Some(bias), Some(mean), Some(var)) = (&self.bias, &self.running_mean, &self.running_var) else {
            unreachable!("a batch norm has its bias and running statistics")
        };
        let device = x.device();
        let weight = self.weight.val();
        if !(device.is_autodiff() && weight.is_require_grad()) {
            let (m, v) = (mean.value().to_device(&device), var.value().to_device(&device));
            return batch_norm(x, weight, bias.val(), m, v, self.eps);
        }
        let beta = bias.val();
        let out = kernels::autodiff::batch_norm_train(&x, &weight, &beta, self.eps)
            .unwrap_or_else(|| batch_norm_train(constant_channels_pass_no_gradient(x), weight, beta, self.eps));
        let k = BATCH_NORM_MOMENTUM;
        // `value()` is current: every update below is committed at once.
        let m = mean.value().to_device(&device) * (1.0 - k) + out.mean.detach() * k;
        let v = var.value().to_device(&device) * (1.0 - k) + out.variance.detach() * k;
        mean.update(m.detach());
        var.update(v.detach());
        // Commit now: `RunningState` otherwise holds the update per thread until the next
        // one, and a checkpoint written in between would miss it (breaking exact resume).
        // Replicas running at once leave theirs pending instead: committing one while
        // another still reads the old value would race; see `commit_running_stats`.
        if !crate::quant::context::with(|c| c.defer_running_stats) {
            let _ = (mean.value_sync(), var.value_sync());
        }
        out.output
    }
}

/// Runs `f` (a data-parallel replica's forward pass) with batch-norm running-statistic
/// updates left pending on this thread; [`commit_running_stats`] then averages every
/// replica's update, as Burn's `RunningState` defines it.
pub fn defer_running_stats<R>(f: impl FnOnce() -> R) -> R {
    let _scope = crate::quant::context::Scope::defer_running_stats(true);
    f()
}

/// Commits the pending running-statistic updates of every thread (their mean) in `module`.
/// `Module::valid` is the public way to make a `RunningState` sync; the copy it returns
/// shares the parameters and is dropped.
pub fn commit_running_stats(module: &impl Module) {
    let _ = module.valid();
}

/// Conv -> norm (-> tanh-GELU): timm's `ConvNormAct`. Keys: `conv.*`, `bn.*`.
#[derive(Module, Debug)]
pub struct ConvNorm {
    pub conv: Conv2d,
    pub bn: Norm2d,
    pub act: bool,
}

/// A [`ConvNorm`]: the convolution, its norm, and whether tanh-GELU follows.
#[derive(Debug, Clone, Copy)]
pub struct ConvNormConfig {
    pub conv: Conv2dConfig,
    pub norm: NormKind,
    pub act: bool,
}

impl ConvNormConfig {
    pub fn new(conv: Conv2dConfig, norm: NormKind, act: bool) -> Self {
        Self { conv, norm, act }
    }

    pub fn init(&self, device: &Device) -> ConvNorm {
        ConvNorm {
            conv: self.conv.init(device),
            bn: Norm2dConfig::new(self.norm, self.conv.out_chs).init(device),
            act: self.act,
        }
    }
}

impl ConvNorm {
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

/// A [`LayerScale2d`] over `channels`, every scale starting at `init`.
#[derive(Debug, Clone, Copy)]
pub struct LayerScale2dConfig {
    pub channels: usize,
    pub init: f64,
}

impl LayerScale2dConfig {
    pub fn new(channels: usize, init: f64) -> Self {
        Self { channels, init }
    }

    pub fn init(&self, device: &Device) -> LayerScale2d {
        LayerScale2d { gamma: Initializer::Constant { value: self.init }.init([self.channels], device) }
    }
}

impl LayerScale2d {
    /// `x * gamma + skip`, either optional (one pass on CPU when both apply).
    pub fn apply(scale: Option<&Self>, x: Tensor<4>, skip: Option<Tensor<4>>) -> Tensor<4> {
        let gamma = scale.map(|s| s.gamma.val());
        kernels::scale_add(x, gamma.as_ref(), skip)
    }
}

/// `x`, with the channels whose values are all equal over the batch entering as constants:
/// they pass no gradient, as in the flex kernel (`kernels::batchnorm::backward`), where
/// the norm's slope of `1 / sqrt(eps)` would otherwise overflow the gradient. The values are
/// unchanged (`x * 1 + 0`).
fn constant_channels_pass_no_gradient(x: Tensor<4>) -> Tensor<4> {
    let [b, c, h, w] = x.dims();
    let per_channel = x.clone().swap_dims(0, 1).reshape([c, b * h * w]);
    let live = per_channel.clone().max_dim(1).greater(per_channel.min_dim(1)).float().reshape([1, c, 1, 1]).detach();
    let dead = live.clone().neg() + 1.0;
    x.clone() * live + (x * dead).detach()
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::tensor::Distribution;

    fn values(t: Tensor<1>) -> Vec<f32> {
        t.into_data().try_to_vec::<f32>().unwrap()
    }

    #[test]
    fn batch_norm_trains_on_batch_statistics_and_infers_with_running_ones() {
        let device = Device::flex().autodiff();
        let norm = Norm2dConfig::new(NormKind::Batch, 3).init(&device);
        let x = Tensor::<4>::random([4, 3, 5, 5], Distribution::Normal(2.0, 3.0), &device);
        // Training: each channel comes out with mean 0 and (biased) variance 1 ...
        let y = norm.forward(x.clone());
        let flat = y.swap_dims(0, 1).reshape([3, 100]);
        let (var, mean) = flat.var_mean_bias(1);
        assert!(values(mean.reshape([3])).iter().all(|m| m.abs() < 1e-4));
        assert!(values(var.reshape([3])).iter().all(|v| (v - 1.0).abs() < 1e-3));
        // ... and the running mean moved 10% of the way to the batch mean.
        let batch_mean = values(x.clone().swap_dims(0, 1).reshape([3, 100]).mean_dim(1).reshape([3]));
        let running = values(norm.running_mean.as_ref().unwrap().value());
        for (r, b) in running.iter().zip(&batch_mean) {
            assert!((r - 0.1 * b).abs() < 1e-4, "running {r} vs batch {b}");
        }
        // A frozen norm (no gradients) on the autodiff device uses and keeps the running
        // statistics, as inference does.
        let frozen = norm.clone().set_require_grad(false);
        let before = values(frozen.running_var.as_ref().unwrap().value());
        let a = frozen.forward(x.clone()).inner().into_data();
        assert_eq!(values(frozen.running_var.as_ref().unwrap().value()), before);
        let b = norm.valid().forward(x.inner()).into_data();
        assert_eq!(a, b);
    }

    /// The training path of a 1x1 convolution (a matrix product) gives `conv2d`'s values and
    /// gradients for input, weight and bias.
    #[test]
    fn pointwise_training_path_matches_conv2d() {
        let device = Device::flex().autodiff();
        device.seed(4);
        let conv = Conv2dConfig::new(6, 5, 1, PadType::Same).bias(true).init(&device);
        let x = Tensor::<4>::random([3, 6, 4, 7], Distribution::Normal(0.0, 1.0), &device).require_grad();
        let w = Tensor::<4>::random([3, 5, 4, 7], Distribution::Normal(0.0, 1.0), &device);
        let fast = conv.forward(x.clone());
        let bias = conv.bias.as_ref().map(|b| b.val());
        let reference = conv2d(x.clone(), conv.weight.val(), bias, ConvOptions::new([1, 1], [0, 0], [1, 1], 1));
        let close = |a: Tensor<4>, b: Tensor<4>| {
            let d = (a - b).abs().max().into_scalar::<f32>();
            assert!(d < 1e-5, "max difference {d}");
        };
        close(fast.clone().inner(), reference.clone().inner());
        let grads_fast = (fast * w.clone()).sum().backward();
        let grads_ref = (reference * w).sum().backward();
        close(x.grad(&grads_fast).unwrap(), x.grad(&grads_ref).unwrap());
        close(conv.weight.val().grad(&grads_fast).unwrap(), conv.weight.val().grad(&grads_ref).unwrap());
        let b = conv.bias.as_ref().unwrap().val();
        let (gb_fast, gb_ref) = (b.grad(&grads_fast).unwrap(), b.grad(&grads_ref).unwrap());
        close(gb_fast.reshape([1, 5, 1, 1]), gb_ref.reshape([1, 5, 1, 1]));
    }

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

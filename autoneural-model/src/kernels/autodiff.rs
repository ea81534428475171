//! Training ops with hand-written backward passes on flex's autodiff backend: a depthwise
//! convolution, im2col for full convolutions, batch norm with batch statistics, RMS norm and
//! LFM2's gated short convolution (the kernels are in [`depthwise`], [`batchnorm`],
//! [`rmsnorm`] and [`shortconv`]). Each returns `None` off flex's autodiff device (inference tensors, wgpu),
//! and its caller then uses Burn's op, so there is one model definition for every backend.
//!
//! Burn differentiates both generically, and on the quickstart's encoder that made the
//! backward twice PyTorch's (docs/benchmarks.md). The ops register with Burn's autodiff
//! graph as its own modules do (`Backward` + `OpsKind`), so gradients flow through them
//! to every other op unchanged.

use burn::tensor::{Tensor, TensorData};
use burn_autodiff::Autodiff;
use burn_autodiff::checkpoint::base::Checkpointer;
use burn_autodiff::checkpoint::strategy::NoCheckpointing;
use burn_autodiff::grads::Gradients;
use burn_autodiff::ops::{Backward, NodeGuard, Ops, OpsKind};
use burn_backend::backend::BackendTypes;
use burn_flex::{Flex, FlexTensor};

use super::{batchnorm, depthwise, rmsnorm, shortconv};

/// Flex under autodiff without gradient checkpointing: what `Device::flex().autodiff()`
/// dispatches to.
type Ad = Autodiff<Flex, NoCheckpointing>;
type AdTensor = <Ad as BackendTypes>::FloatTensorPrimitive;

/// The autodiff primitive of a float tensor on flex's autodiff device. Inference tensors are
/// turned away before the conversion (whose error formats a message): the norms call this
/// on every decode step.
fn autodiff_flex<const D: usize>(t: &Tensor<D>) -> Option<AdTensor> {
    if !t.device().is_autodiff() {
        return None;
    }
    let p = t.clone().try_into_primitive::<Ad>().ok()?;
    (p.primitive().dtype() == burn::tensor::DType::F32).then_some(p)
}

/// The f32 values of a flex tensor, in row-major order (a copy only when strided).
fn contiguous(t: &FlexTensor) -> FlexTensor {
    if t.is_contiguous() { t.clone() } else { t.to_contiguous() }
}

fn f32s(t: &FlexTensor) -> &[f32] {
    t.as_slice::<f32>().expect("a contiguous f32 flex tensor")
}

fn flex(values: Vec<f32>, shape: impl Into<Vec<usize>>) -> FlexTensor {
    FlexTensor::from_data(TensorData::new(values, shape.into()))
}

/// `output` as the result of `op` on the inputs behind `nodes`: recorded in the autodiff
/// graph with `state` for its backward when any input takes gradients, as a constant
/// otherwise.
fn record<const N: usize, O: Backward<Flex, N>>(
    op: O,
    nodes: [NodeGuard; N],
    state: O::State,
    output: FlexTensor,
) -> AdTensor {
    match op.prepare::<NoCheckpointing>(nodes).compute_bound().stateful() {
        OpsKind::Tracked(prep) => prep.finish(state, output),
        OpsKind::UnTracked(prep) => prep.finish(output),
    }
}

#[derive(Debug)]
struct DepthwiseBackward;

impl Backward<Flex, 2> for DepthwiseBackward {
    /// Input, weight (both contiguous) and the geometry.
    type State = (FlexTensor, FlexTensor, depthwise::Geometry);

    fn backward(self, ops: Ops<Self::State, 2>, grads: &mut Gradients, _: &mut Checkpointer) {
        let [node_x, node_w] = ops.parents;
        let gy = contiguous(&grads.consume::<Flex>(&ops.node));
        let (x, w, g) = ops.state;
        if let Some(node) = node_x {
            let gx = depthwise::input_grad(f32s(&gy), f32s(&w), &g);
            grads.register::<Flex>(node.id, flex(gx, [g.batch, g.channels, g.height, g.width]));
        }
        if let Some(node) = node_w {
            let gw = depthwise::weight_grad(f32s(&x), f32s(&gy), &g);
            grads.register::<Flex>(node.id, flex(gw, [g.channels, 1, g.kh, g.kw]));
        }
    }
}

/// Depthwise convolution of `x: [b, c, h, w]` by `weight: [c, 1, kh, kw]` with `(before,
/// after)` zero padding per spatial dim -> `[b, c, h', w']`, on flex's autodiff device.
pub fn depthwise_conv2d(
    x: &Tensor<4>,
    weight: &Tensor<4>,
    stride: usize,
    dilation: usize,
    pad_h: (usize, usize),
    pad_w: (usize, usize),
) -> Option<Tensor<4>> {
    let (xa, wa) = (autodiff_flex(x)?, autodiff_flex(weight)?);
    let [kh, kw] = [weight.dims()[2], weight.dims()[3]];
    let g = depthwise::Geometry::new(x.dims(), [kh, kw], stride, dilation, pad_h, pad_w);
    let (xv, wv) = (contiguous(xa.primitive()), contiguous(wa.primitive()));
    let y = flex(depthwise::forward(f32s(&xv), f32s(&wv), &g), [g.batch, g.channels, g.out_h, g.out_w]);
    let out = record(DepthwiseBackward, [xa.node(), wa.node()], (xv, wv, g), y);
    Some(Tensor::from_primitive::<Ad>(out))
}

#[derive(Debug)]
struct UnfoldBackward;

impl Backward<Flex, 1> for UnfoldBackward {
    type State = depthwise::Geometry;

    fn backward(self, ops: Ops<Self::State, 1>, grads: &mut Gradients, _: &mut Checkpointer) {
        let [node_x] = ops.parents;
        let gp = contiguous(&grads.consume::<Flex>(&ops.node));
        let g = ops.state;
        if let Some(node) = node_x {
            grads.register::<Flex>(
                node.id,
                flex(depthwise::fold(f32s(&gp), &g), [g.batch, g.channels, g.height, g.width]),
            );
        }
    }
}

/// The patches a `kh x kw` convolution reads from `x: [b, c, h, w]` (im2col), on flex's
/// autodiff device: `[b, c * kh * kw, h' * w']` and the output size `(h', w')`. The
/// convolution is then `weight.reshape([out, c * kh * kw])` times the patches: a matrix
/// product, whose backward is two more (Burn's full-convolution backward runs a transposed
/// convolution for the input and a convolution for the weight, on a padded copy when the
/// padding is asymmetric; 3-4x slower on the encoder's stem and expansion convolutions).
pub fn unfold(
    x: &Tensor<4>,
    [kh, kw]: [usize; 2],
    stride: usize,
    dilation: usize,
    pad_h: (usize, usize),
    pad_w: (usize, usize),
) -> Option<(Tensor<3>, [usize; 2])> {
    let xa = autodiff_flex(x)?;
    let g = depthwise::Geometry::new(x.dims(), [kh, kw], stride, dilation, pad_h, pad_w);
    let xv = contiguous(xa.primitive());
    let shape = [g.batch, g.channels * kh * kw, g.out_h * g.out_w];
    let patches = flex(depthwise::unfold(f32s(&xv), &g), shape);
    let out = record(UnfoldBackward, [xa.node()], g, patches);
    Some((Tensor::from_primitive::<Ad>(out), [g.out_h, g.out_w]))
}

#[derive(Debug)]
struct BatchNormBackward;

/// What the backward needs: the input, and per channel gamma, the batch mean and
/// `1 / sqrt(var + eps)`.
#[derive(Debug, Clone)]
struct BatchNormState {
    x: FlexTensor,
    gamma: Vec<f32>,
    mean: Vec<f32>,
    inv_std: Vec<f32>,
    geometry: batchnorm::Geometry,
}

impl Backward<Flex, 3> for BatchNormBackward {
    type State = BatchNormState;

    fn backward(self, ops: Ops<Self::State, 3>, grads: &mut Gradients, _: &mut Checkpointer) {
        let [node_x, node_gamma, node_beta] = ops.parents;
        let gy = contiguous(&grads.consume::<Flex>(&ops.node));
        let s = ops.state;
        let g = s.geometry;
        let (gx, ggamma, gbeta) = batchnorm::backward(f32s(&s.x), f32s(&gy), &s.mean, &s.inv_std, &s.gamma, &g);
        if let Some(node) = node_x {
            grads.register::<Flex>(node.id, flex(gx, s.x.layout().shape().to_vec()));
        }
        if let Some(node) = node_gamma {
            grads.register::<Flex>(node.id, flex(ggamma, [g.channels]));
        }
        if let Some(node) = node_beta {
            grads.register::<Flex>(node.id, flex(gbeta, [g.channels]));
        }
    }
}

/// Batch norm of `x: [b, c, ...]` with the batch's statistics (training mode), on flex's
/// autodiff device: the output, and the batch mean and biased variance (constants to
/// autodiff, for the running statistics), as Burn's `batch_norm_train` returns them.
pub fn batch_norm_train<const D: usize>(
    x: &Tensor<D>,
    gamma: &Tensor<1>,
    beta: &Tensor<1>,
    eps: f64,
) -> Option<burn::tensor::module::BatchNormTrainOutput<D>> {
    let (xa, ga, ba) = (autodiff_flex(x)?, autodiff_flex(gamma)?, autodiff_flex(beta)?);
    let dims = x.dims();
    let geometry = batchnorm::Geometry { batch: dims[0], channels: dims[1], plane: dims[2..].iter().product() };
    let xv = contiguous(xa.primitive());
    let (gv, bv) = (contiguous(ga.primitive()), contiguous(ba.primitive()));
    let (gamma_v, beta_v) = (f32s(&gv).to_vec(), f32s(&bv));
    let (mean, variance) = batchnorm::statistics(f32s(&xv), &geometry);
    let inv_std: Vec<f32> = variance.iter().map(|v| 1.0 / (v + eps as f32).sqrt()).collect();
    let scale: Vec<f32> = gamma_v.iter().zip(&inv_std).map(|(g, s)| g * s).collect();
    let shift: Vec<f32> = (0..geometry.channels).map(|c| beta_v[c] - mean[c] * scale[c]).collect();
    let y = flex(batchnorm::affine(f32s(&xv), &scale, &shift, &geometry), dims.to_vec());
    let device = x.device();
    let stat = |v: &[f32]| Tensor::<1>::from_data(TensorData::new(v.to_vec(), [v.len()]), &device);
    let (mean_t, variance_t) = (stat(&mean), stat(&variance));
    let nodes = [xa.node(), ga.node(), ba.node()];
    let out = record(BatchNormBackward, nodes, BatchNormState { x: xv, gamma: gamma_v, mean, inv_std, geometry }, y);
    Some(burn::tensor::module::BatchNormTrainOutput {
        output: Tensor::from_primitive::<Ad>(out),
        mean: mean_t,
        variance: variance_t,
    })
}

#[derive(Debug)]
struct RmsNormBackward;

impl Backward<Flex, 2> for RmsNormBackward {
    /// Input (contiguous), weight values and each row's `1 / rms`.
    type State = (FlexTensor, Vec<f32>, Vec<f32>);

    fn backward(self, ops: Ops<Self::State, 2>, grads: &mut Gradients, _: &mut Checkpointer) {
        let [node_x, node_w] = ops.parents;
        let gy = contiguous(&grads.consume::<Flex>(&ops.node));
        let (x, w, r) = ops.state;
        let (gx, gw) = rmsnorm::backward(f32s(&x), f32s(&gy), &w, &r);
        if let Some(node) = node_x {
            grads.register::<Flex>(node.id, flex(gx, x.layout().shape().to_vec()));
        }
        if let Some(node) = node_w {
            grads.register::<Flex>(node.id, flex(gw, [w.len()]));
        }
    }
}

/// RMS norm of the last dimension of `x` times `weight`, on flex's autodiff device.
pub fn rms_norm<const D: usize>(x: &Tensor<D>, weight: &Tensor<1>, eps: f64) -> Option<Tensor<D>> {
    let (xa, wa) = (autodiff_flex(x)?, autodiff_flex(weight)?);
    let (xv, wv) = (contiguous(xa.primitive()), contiguous(wa.primitive()));
    let w = f32s(&wv).to_vec();
    let (y, r) = rmsnorm::forward(f32s(&xv), &w, eps as f32);
    let y = flex(y, x.dims().to_vec());
    let out = record(RmsNormBackward, [xa.node(), wa.node()], (xv, w, r), y);
    Some(Tensor::from_primitive::<Ad>(out))
}

#[derive(Debug)]
struct ShortConvBackward;

impl Backward<Flex, 2> for ShortConvBackward {
    /// `bcx` (contiguous), the taps `[d, l]` and the geometry.
    type State = (FlexTensor, Vec<f32>, shortconv::Geometry);

    fn backward(self, ops: Ops<Self::State, 2>, grads: &mut Gradients, _: &mut Checkpointer) {
        let [node_bcx, node_w] = ops.parents;
        let gz = contiguous(&grads.consume::<Flex>(&ops.node));
        let (bcx, w, g) = ops.state;
        let (gbcx, gw) = shortconv::backward(f32s(&bcx), &w, f32s(&gz), &g);
        if let Some(node) = node_bcx {
            grads.register::<Flex>(node.id, flex(gbcx, [g.batch, g.time, 3 * g.dim]));
        }
        if let Some(node) = node_w {
            grads.register::<Flex>(node.id, flex(gw, [g.dim, 1, g.taps]));
        }
    }
}

/// LFM2's gated short convolution with no history, on flex's autodiff device: from
/// `bcx: [b, t, 3d]` (gates `B`, `C` and values `x`, the input projection's output) and the
/// depthwise taps `weight: [d, 1, l]`, `C * causal_conv(B * x)`, `[b, t, d]`.
pub fn gated_short_conv(bcx: &Tensor<3>, weight: &Tensor<3>) -> Option<Tensor<3>> {
    let (ba, wa) = (autodiff_flex(bcx)?, autodiff_flex(weight)?);
    let [b, t, d3] = bcx.dims();
    let g = shortconv::Geometry { batch: b, time: t, dim: d3 / 3, taps: weight.dims()[2] };
    let (bv, wv) = (contiguous(ba.primitive()), contiguous(wa.primitive()));
    let w = f32s(&wv).to_vec();
    let z = flex(shortconv::forward(f32s(&bv), &w, &g), [b, t, g.dim]);
    let out = record(ShortConvBackward, [ba.node(), wa.node()], (bv, w, g), z);
    Some(Tensor::from_primitive::<Ad>(out))
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::tensor::module::conv2d;
    use burn::tensor::ops::ConvOptions;
    use burn::tensor::{Device, Distribution};

    fn max_diff<const D: usize>(a: Tensor<D>, b: Tensor<D>) -> f32 {
        (a - b).abs().max().into_scalar::<f32>()
    }

    /// `ours` and `burns`, two convolutions of `x` by `w`: same values, and the same
    /// gradients for both under the same upstream gradient.
    fn assert_same_convolution(ours: Tensor<4>, burns: Tensor<4>, x: &Tensor<4>, w: &Tensor<4>, what: &str) {
        assert_eq!(ours.dims(), burns.dims(), "{what}");
        assert!(max_diff(ours.clone().inner(), burns.clone().inner()) < 1e-4, "{what}");
        let gy = Tensor::<4>::random(ours.dims(), Distribution::Normal(0.0, 1.0), &ours.device());
        let (ga, gb) = ((ours * gy.clone()).sum().backward(), (burns * gy).sum().backward());
        assert!(max_diff(x.grad(&ga).unwrap(), x.grad(&gb).unwrap()) < 1e-4, "{what} dx");
        assert!(max_diff(w.grad(&ga).unwrap(), w.grad(&gb).unwrap()) < 1e-3, "{what} dw");
    }

    /// Values and gradients (input and weight) equal Burn's `conv2d` with groups = channels,
    /// at stride 1 and at stride 2 with TensorFlow's asymmetric "same" padding.
    #[test]
    fn depthwise_matches_burns_grouped_convolution() {
        let device = Device::flex().autodiff();
        device.seed(7);
        for (k, stride, pad) in [(3, 1, (1, 1)), (3, 2, (0, 1)), (5, 2, (1, 2))] {
            let x = Tensor::<4>::random([2, 4, 8, 8], Distribution::Normal(0.0, 1.0), &device).require_grad();
            let w = Tensor::<4>::random([4, 1, k, k], Distribution::Normal(0.0, 1.0), &device).require_grad();
            let ours = depthwise_conv2d(&x, &w, stride, 1, pad, pad).expect("flex autodiff");
            let options = ConvOptions::new_with_padding([stride; 2], [pad, pad], [1, 1], 4);
            let burns = conv2d(x.clone(), w.clone(), None, options);
            assert_same_convolution(ours, burns, &x, &w, &format!("k{k} s{stride}"));
        }
    }

    /// A full convolution as unfolded patches times the weight: Burn's `conv2d` values and
    /// gradients.
    #[test]
    fn unfolded_convolution_matches_burns() {
        let device = Device::flex().autodiff();
        device.seed(9);
        for (k, stride, pad) in [(3, 1, (1, 1)), (3, 2, (0, 1))] {
            let x = Tensor::<4>::random([2, 3, 9, 8], Distribution::Normal(0.0, 1.0), &device).require_grad();
            let w = Tensor::<4>::random([5, 3, k, k], Distribution::Normal(0.0, 1.0), &device).require_grad();
            let (patches, [oh, ow]) = unfold(&x, [k, k], stride, 1, pad, pad).expect("flex autodiff");
            let ours = w.clone().reshape([1, 5, 3 * k * k]).matmul(patches).reshape([2, 5, oh, ow]);
            let options = ConvOptions::new_with_padding([stride; 2], [pad, pad], [1, 1], 1);
            let burns = conv2d(x.clone(), w.clone(), None, options);
            assert_same_convolution(ours, burns, &x, &w, &format!("k{k} s{stride}"));
        }
    }

    /// Output, statistics and gradients (input, gamma, beta) equal Burn's `batch_norm_train`.
    #[test]
    fn batch_norm_matches_burns() {
        let device = Device::flex().autodiff();
        device.seed(8);
        let x = Tensor::<4>::random([3, 5, 6, 7], Distribution::Normal(1.0, 2.0), &device).require_grad();
        let gamma = Tensor::<1>::random([5], Distribution::Normal(1.0, 0.3), &device).require_grad();
        let beta = Tensor::<1>::random([5], Distribution::Normal(0.0, 0.3), &device).require_grad();
        let ours = batch_norm_train(&x, &gamma, &beta, 1e-5).expect("flex autodiff");
        let burns = burn::tensor::module::batch_norm_train(x.clone(), gamma.clone(), beta.clone(), 1e-5);
        assert!(max_diff(ours.output.clone().inner(), burns.output.clone().inner()) < 1e-4);
        assert!(max_diff(ours.mean.inner(), burns.mean.inner()) < 1e-5);
        assert!(max_diff(ours.variance.inner(), burns.variance.inner()) < 1e-4);
        let gy = Tensor::<4>::random([3, 5, 6, 7], Distribution::Normal(0.0, 1.0), &device);
        let (ga, gb) = ((ours.output * gy.clone()).sum().backward(), (burns.output * gy).sum().backward());
        assert!(max_diff(x.grad(&ga).unwrap(), x.grad(&gb).unwrap()) < 1e-4);
        assert!(max_diff(gamma.grad(&ga).unwrap(), gamma.grad(&gb).unwrap()) < 1e-3);
        assert!(max_diff(beta.grad(&ga).unwrap(), beta.grad(&gb).unwrap()) < 1e-3);
    }

    /// Values and gradients (input and weight) equal the composite of Burn's ops.
    #[test]
    fn rms_norm_matches_burns_composite() {
        let device = Device::flex().autodiff();
        device.seed(10);
        let x = Tensor::<3>::random([2, 5, 12], Distribution::Normal(0.5, 2.0), &device).require_grad();
        let w = Tensor::<1>::random([12], Distribution::Normal(1.0, 0.3), &device).require_grad();
        let ours = rms_norm(&x, &w, 1e-5).expect("flex autodiff");
        let inv = (x.clone().square().mean_dim(2) + 1e-5).sqrt().recip();
        let burns = x.clone() * inv * w.clone().reshape([1, 1, 12]);
        assert!(max_diff(ours.clone().inner(), burns.clone().inner()) < 1e-5);
        let gy = Tensor::<3>::random([2, 5, 12], Distribution::Normal(0.0, 1.0), &device);
        let (ga, gb) = ((ours * gy.clone()).sum().backward(), (burns * gy).sum().backward());
        assert!(max_diff(x.grad(&ga).unwrap(), x.grad(&gb).unwrap()) < 1e-4);
        assert!(max_diff(w.grad(&ga).unwrap(), w.grad(&gb).unwrap()) < 1e-4);
    }

    /// Off flex's autodiff device the ops decline, and callers use Burn's.
    #[test]
    fn inference_tensors_are_declined() {
        let device = Device::flex();
        let x = Tensor::<4>::zeros([1, 2, 4, 4], &device);
        let w = Tensor::<4>::zeros([2, 1, 3, 3], &device);
        assert!(depthwise_conv2d(&x, &w, 1, 1, (1, 1), (1, 1)).is_none());
        let g = Tensor::<1>::ones([2], &device);
        assert!(batch_norm_train(&x, &g, &g, 1e-5).is_none());
    }
}

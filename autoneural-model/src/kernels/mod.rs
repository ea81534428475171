//! CPU fast paths behind Burn's tensor API (a backend extension for `flex`).
//!
//! [`matmul_weight`] is what every projection in the model calls. On the flex backend, for
//! inference tensors with at most [`gemv::MAX_ROWS`] rows (a decode step), it runs the
//! multi-threaded streaming kernels of [`gemv`] on the tensors' own memory; in every other
//! case (training through autodiff, prefill, wgpu) it is Burn's `matmul`, so there is still
//! one model definition for every backend.

pub mod autodiff;
pub mod batchnorm;
pub mod depthwise;
pub mod gemv;
pub mod lowbit;
pub mod pointwise;
pub mod rmsnorm;
pub mod shortconv;

use burn::tensor::{Tensor, TensorData};
use burn_flex::Flex;

/// The instruction set this process's own kernels ([`gemv`], [`lowbit`], [`pointwise`])
/// run, chosen at run time: `avx2+fma`, or `portable` (plain Rust the compiler vectorises).
pub fn isa() -> &'static str {
    #[cfg(target_arch = "x86_64")]
    if std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma") {
        return "avx2+fma";
    }
    "portable"
}

/// The path of the f32 matrix products Burn's flex backend runs (prefill, encoders,
/// training): the `gemm` crate's kernels, chosen at run time among those compiled in. Its
/// AVX-512 kernels are behind its `x86-v4` feature, which this build does not enable, so the
/// best it runs is AVX2+FMA.
pub fn gemm_isa() -> &'static str {
    match isa() {
        "avx2+fma" => "avx2+fma (gemm 0.19; its AVX-512 kernels not compiled in)",
        _ => "portable (gemm 0.19)",
    }
}

/// `f(a[0], b[0]) + ... + f(a[n-1], b[n-1])` (`n` the shorter length) over eight lanes, so
/// that loops vectorise (a single running sum has to keep its order). The order is fixed,
/// so results are reproducible.
fn lanes(a: &[f32], b: &[f32], f: impl Fn(f32, f32) -> f32) -> f32 {
    let n = a.len().min(b.len());
    let (ca, cb) = (a[..n].chunks_exact(8), b[..n].chunks_exact(8));
    let tail: f32 = ca.remainder().iter().zip(cb.remainder()).map(|(&x, &y)| f(x, y)).sum();
    let mut acc = [0f32; 8];
    for (x, y) in ca.zip(cb) {
        for l in 0..8 {
            acc[l] += f(x[l], y[l]);
        }
    }
    acc.iter().sum::<f32>() + tail
}

/// The element-wise sum of per-task partial results, in task order: not as a rayon
/// reduction, whose tree depends on work stealing, so a resumed run reproduces the
/// uninterrupted one bit for bit.
fn sum_in_order(partials: Vec<Vec<f32>>, n: usize) -> Vec<f32> {
    let mut total = vec![0f32; n];
    for p in partials {
        total.iter_mut().zip(p).for_each(|(a, b)| *a += b);
    }
    total
}

/// Deterministic test values in `[-1, 1)`.
#[cfg(test)]
fn test_values(n: usize, seed: u32) -> Vec<f32> {
    let unit = |i: usize| ((i as u32).wrapping_mul(2_654_435_761).wrapping_add(seed) >> 8) as f32 / (1 << 24) as f32;
    (0..n).map(|i| unit(i) * 2.0 - 1.0).collect()
}

/// The tensor's contiguous f32 values when it is a flex inference tensor (no autodiff).
fn flex_values<const D: usize>(x: &Tensor<D>) -> Option<Vec<f32>> {
    let p = x.clone().try_into_primitive::<Flex>().ok()?;
    p.as_slice::<f32>().map(<[f32]>::to_vec)
}

/// Runs `f` on the flex storage of `x` and wraps its output (same shape), or `None` when `x`
/// is not a contiguous f32 flex inference tensor.
fn with_flex<const D: usize>(x: &Tensor<D>, f: impl FnOnce(&[f32]) -> Vec<f32>) -> Option<Tensor<D>> {
    let p = x.clone().try_into_primitive::<Flex>().ok()?;
    let out = f(p.as_slice::<f32>()?);
    Some(Tensor::from_data(TensorData::new(out, x.dims()), &x.device()))
}

/// tanh-GELU: fused on flex (inference tensors in one pass, autodiff tensors through
/// [`linearised`]), Burn's ops otherwise (wgpu).
pub fn gelu_tanh<const D: usize>(x: Tensor<D>) -> Tensor<D> {
    with_flex(&x, pointwise::gelu_tanh)
        .or_else(|| linearised(&x, pointwise::gelu_tanh_and_slope))
        .unwrap_or_else(|| gelu_tanh_ops(x))
}

/// SiLU `x sigmoid(x)`: fused on flex as [`gelu_tanh`] is, Burn's `silu` otherwise.
pub fn silu<const D: usize>(x: Tensor<D>) -> Tensor<D> {
    with_flex(&x, pointwise::silu)
        .or_else(|| linearised(&x, pointwise::silu_and_slope))
        .unwrap_or_else(|| burn::tensor::activation::silu(x))
}

/// Per-tensor quantize-dequantize of an inference flex tensor in one pass (Burn's ops take
/// five passes, each allocating: op-input fake quantization was a quarter of a W4A16
/// model's answering time). `None` on autodiff tensors (which need the straight-through
/// gradient), off flex, or on non-contiguous storage.
pub fn qdq_per_tensor<const D: usize>(
    x: &Tensor<D>,
    scale: f32,
    zero_point: f32,
    grid: crate::quant::grid::Grid,
) -> Option<Tensor<D>> {
    if x.is_autodiff() {
        return None;
    }
    with_flex(x, |v| pointwise::qdq(v, scale, zero_point, grid))
}

/// An element-wise `f` of an autodiff flex tensor, for training: `x * slope + offset`, where
/// one fused pass over the values gives the slope `f'(x)` and the offset `f(x) - x f'(x)`,
/// both constants to autodiff. The value is `f(x)` (to rounding) and the gradient with
/// respect to `x` is `f'(x)`, as with Burn's composite ops, for two multiply-adds forward
/// and one multiply backward instead of a chain of ops. Burn's autodiff sigmoid alone runs a
/// serial libm `expf` loop twice (forward, and again in backward); on the quickstart model
/// that was 14% of a training step (`perf`, docs/benchmarks.md). `None` off flex, on an
/// inference tensor, or on non-contiguous storage.
fn linearised<const D: usize, F>(x: &Tensor<D>, f: F) -> Option<Tensor<D>>
where
    F: Fn(f32) -> (f32, f32) + Sync + Copy,
{
    let device = x.device();
    if !device.is_autodiff() {
        return None;
    }
    let values = x.clone().inner().try_into_primitive::<Flex>().ok()?;
    let (slope, offset) = pointwise::linearise(values.as_slice::<f32>()?, f);
    let dims = x.dims();
    let constant = |v: Vec<f32>| Tensor::<D>::from_data(TensorData::new(v, dims), &device);
    Some(x.clone() * constant(slope) + constant(offset))
}

/// tanh-GELU from differentiable tensor ops, for autodiff and other backends:
/// `0.5 x (1 + tanh(z)) = x sigmoid(2z)` with `z = sqrt(2/pi) (x + 0.044715 x^3)`. The
/// cube as two products and one sigmoid instead of Burn's `gelu_approximate` (`powf`,
/// `tanh`) took the quickstart encoder's training forward from 37.6 to 17.2 ms per step
/// and its backward from 52.8 to 41.3 ms (`bench train --breakdown`).
fn gelu_tanh_ops<const D: usize>(x: Tensor<D>) -> Tensor<D> {
    const TWO_SQRT_2_OVER_PI: f64 = 1.595_769_121_605_730_7;
    let cube = x.clone() * x.clone() * x.clone();
    let z = (x.clone() + cube * 0.044715) * TWO_SQRT_2_OVER_PI;
    x * burn::tensor::activation::sigmoid(z)
}

/// Softmax over the last dimension: fused on flex inference tensors, Burn's otherwise.
pub fn softmax_last<const D: usize>(x: Tensor<D>) -> Tensor<D> {
    let n = x.dims()[D - 1];
    with_flex(&x, |xs| pointwise::softmax_rows(xs, n)).unwrap_or_else(|| burn::tensor::activation::softmax(x, D - 1))
}

/// Channel RMS norm of `[b, c, h, w]` times `weight` (then tanh-GELU when `act`): one fused
/// pass on flex inference tensors, Burn's ops otherwise.
pub fn rms_norm2d(x: Tensor<4>, weight: &Tensor<1>, eps: f64, act: bool) -> Tensor<4> {
    let [b, c, h, w] = x.dims();
    let fused = flex_values(weight)
        .and_then(|wv| with_flex(&x, |xs| pointwise::rms_norm_channels(xs, &wv, b, c, h * w, eps as f32, act)));
    fused.unwrap_or_else(|| {
        let mean_sq = x.clone().square().mean_dim(1);
        // A pixel whose channels are all exactly 0 (an all-black image before any bias has
        // trained makes whole feature maps 0) passes no gradient: there the norm's slope is
        // 1 / sqrt(eps) = 1000, so through a dozen norms the gradient grows past f32 (1e38)
        // into inf and NaN, and even a finite 1e30 would leave nothing of the other
        // gradients after clipping. Elsewhere the mask is 1 and changes no bit, forward or
        // backward; its forward value is 0 either way.
        let live = mean_sq.clone().greater_elem(0.0).float().detach();
        let inv = (mean_sq + eps).sqrt().recip() * live;
        let y = x * inv * weight.clone().reshape([1, c, 1, 1]);
        if act { gelu_tanh(y) } else { y }
    })
}

/// The flex storage of a contiguous f32 inference tensor.
fn flex_primitive<const D: usize>(x: &Tensor<D>) -> Option<burn_flex::FlexTensor> {
    let p = x.clone().try_into_primitive::<Flex>().ok()?;
    p.as_slice::<f32>().is_some().then_some(p)
}

/// `rms_norm2d(x) * gamma + residual` (the end of a residual block with layer scale): one
/// pass on flex inference tensors. `gamma` and `residual` are optional.
pub fn rms_norm2d_scale_add(
    x: Tensor<4>,
    weight: &Tensor<1>,
    eps: f64,
    gamma: Option<&Tensor<1>>,
    residual: Option<Tensor<4>>,
) -> Tensor<4> {
    let [b, c, h, w] = x.dims();
    let fused = (|| {
        // Norm weight and layer scale are both per channel: fold them into one.
        let mut wv = flex_values(weight)?;
        if let Some(g) = gamma {
            wv.iter_mut().zip(flex_values(g)?).for_each(|(w, g)| *w *= g);
        }
        let r = match &residual {
            Some(t) => Some(flex_primitive(t)?),
            None => None,
        };
        let rs = r.as_ref().and_then(|p| p.as_slice::<f32>());
        with_flex(&x, |xs| pointwise::rms_norm_channels_add(xs, &wv, rs, b, c, h * w, eps as f32, false))
    })();
    fused.unwrap_or_else(|| scale_add(rms_norm2d(x, weight, eps, false), gamma, residual))
}

/// `y * gamma[c] + residual` over `[b, c, h, w]`, either part optional: one pass on flex
/// inference tensors when both are given.
pub fn scale_add(y: Tensor<4>, gamma: Option<&Tensor<1>>, residual: Option<Tensor<4>>) -> Tensor<4> {
    let [_, c, h, w] = y.dims();
    match (gamma, residual) {
        (None, None) => y,
        (None, Some(r)) => y + r,
        (Some(g), None) => y * g.clone().reshape([1, c, 1, 1]),
        (Some(g), Some(r)) => {
            let fused = (|| {
                let gv = flex_values(g)?;
                let rp = flex_primitive(&r)?;
                let rs = rp.as_slice::<f32>()?;
                with_flex(&y, |ys| pointwise::scale_add(ys, &gv, rs, c, h * w))
            })();
            fused.unwrap_or_else(|| y * g.clone().reshape([1, c, 1, 1]) + r)
        }
    }
}

/// How a weight matrix is stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WeightLayout {
    /// `[in, out]`: Burn's `Linear` layout; the product is `x @ w`.
    InOut,
    /// `[out, in]`: an embedding table used as a tied LM head; the product is `x @ w^T`.
    OutIn,
}

/// `x @ w` (or `x @ w^T`), `x: [..., in]` -> `[..., out]`.
pub fn matmul_weight<const D: usize>(x: Tensor<D>, w: &Tensor<2>, layout: WeightLayout) -> Tensor<D> {
    let dims = x.dims();
    let k = dims[D - 1];
    let m: usize = dims[..D - 1].iter().product();
    let n = match layout {
        WeightLayout::InOut => w.dims()[1],
        WeightLayout::OutIn => w.dims()[0],
    };
    if m <= gemv::MAX_ROWS {
        if let Some(out) = flex_gemv(&x, w, layout, m, k, n) {
            let mut out_dims = dims;
            out_dims[D - 1] = n;
            return Tensor::from_data(TensorData::new(out, out_dims), &x.device());
        }
    }
    let x2: Tensor<2> = x.reshape([m, k]);
    let y = match layout {
        WeightLayout::InOut => x2.matmul(w.clone()),
        WeightLayout::OutIn => x2.matmul(w.clone().transpose()),
    };
    let mut out_dims = dims;
    out_dims[D - 1] = n;
    y.reshape(out_dims)
}

/// The streaming kernel on the tensors' flex storage, or `None` when either tensor is not a
/// contiguous f32 inference tensor on flex.
fn flex_gemv<const D: usize>(
    x: &Tensor<D>,
    w: &Tensor<2>,
    layout: WeightLayout,
    m: usize,
    k: usize,
    n: usize,
) -> Option<Vec<f32>> {
    let xp = x.clone().try_into_primitive::<Flex>().ok()?;
    let wp = w.clone().try_into_primitive::<Flex>().ok()?;
    let (xs, ws) = (xp.as_slice::<f32>()?, wp.as_slice::<f32>()?);
    let mut out = vec![0f32; m * n];
    match layout {
        WeightLayout::InOut => gemv::gemv_kn(xs, ws, m, k, n, &mut out),
        WeightLayout::OutIn => gemv::gemv_nk(xs, ws, m, k, n, &mut out),
    }
    Some(out)
}

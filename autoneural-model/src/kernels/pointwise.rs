//! Fused element-wise kernels for convolutional activations on flex: tanh-GELU and
//! channel RMS norm (optionally followed by tanh-GELU) over NCHW, in one pass each,
//! split over the rayon pool. Burn's generic path runs these as 6-10 separate tensor ops
//! (each a full read and write of the activation, `powf` for the cube, libm `tanhf`),
//! which made them a third of MobileNetV5's CPU time.

use rayon::prelude::*;

/// Elements per parallel task: large enough to amortise scheduling, small enough to split
/// a 48x48 map over two cores.
const CHUNK: usize = 16 * 1024;

/// tanh as a 13/6 rational function (the approximation Eigen uses for float), accurate to a
/// few ulp and vectorisable; saturates beyond |x| ~ 7.9.
#[inline(always)]
pub fn tanh_fast(x: f32) -> f32 {
    const CLAMP: f32 = 7.905_311;
    let x = x.clamp(-CLAMP, CLAMP);
    let x2 = x * x;
    let mut p = x2 * -2.760_768_5e-16 + 2.000_187_9e-13;
    p = x2 * p + -8.604_671_5e-11;
    p = x2 * p + 5.122_297e-8;
    p = x2 * p + 1.485_722_4e-5;
    p = x2 * p + 6.372_619_3e-4;
    p = x2 * p + 4.893_524_6e-3;
    p *= x;
    let mut q = x2 * 1.198_258_4e-6 + 1.185_347e-4;
    q = x2 * q + 2.268_434_6e-3;
    q = x2 * q + 4.893_525e-3;
    p / q
}

/// `0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3)))`
#[inline(always)]
pub fn gelu_tanh_scalar(x: f32) -> f32 {
    const SQRT_2_OVER_PI: f32 = 0.797_884_6;
    0.5 * x * (1.0 + tanh_fast(SQRT_2_OVER_PI * (x + 0.044_715 * x * x * x)))
}

/// `e^x` by range reduction to `x = n ln2 + r`, |r| <= ln2/2, and Cephes' degree-6
/// polynomial for `e^r` (relative error ~2e-7); branch-free, so loops over it vectorise
/// (glibc's `expf` is one call per element). Clamped to the finite range of f32.
#[inline(always)]
pub fn exp_fast(x: f32) -> f32 {
    const LOG2E: f32 = std::f32::consts::LOG2_E;
    const LN2_HI: f32 = 0.693_359_4;
    const LN2_LO: f32 = -2.121_944_4e-4;
    // Adding and subtracting 1.5 * 2^23 rounds to the nearest integer without a branch.
    const ROUND: f32 = 12_582_912.0;
    let x = x.clamp(-87.0, 88.0);
    let n = (x * LOG2E + ROUND) - ROUND;
    let r = x - n * LN2_HI - n * LN2_LO;
    let mut p = 1.987_569_1e-4;
    p = p * r + 1.398_199_9e-3;
    p = p * r + 8.333_452e-3;
    p = p * r + 4.166_579_6e-2;
    p = p * r + 1.666_666_5e-1;
    p = p * r + 0.5;
    let er = p * r * r + r + 1.0;
    // 2^n from its exponent bits (n is within [-126, 127] after the clamp).
    er * f32::from_bits(((n as i32 + 127) as u32) << 23)
}

/// SiLU `x sigmoid(x)` and its derivative `s (1 + x (1 - s))`.
#[inline(always)]
pub fn silu_and_slope(x: f32) -> (f32, f32) {
    let s = 1.0 / (1.0 + exp_fast(-x));
    (x * s, s * (1.0 + x * (1.0 - s)))
}

/// tanh-GELU and its derivative `0.5 (1 + t) + 0.5 x (1 - t^2) sqrt(2/pi) (1 + 3 0.044715 x^2)`.
#[inline(always)]
pub fn gelu_tanh_and_slope(x: f32) -> (f32, f32) {
    const SQRT_2_OVER_PI: f32 = 0.797_884_6;
    const A: f32 = 0.044_715;
    let x2 = x * x;
    let t = tanh_fast(SQRT_2_OVER_PI * (x + A * x2 * x));
    let value = 0.5 * x * (1.0 + t);
    let slope = 0.5 * (1.0 + t) + 0.5 * x * (1.0 - t * t) * SQRT_2_OVER_PI * (1.0 + 3.0 * A * x2);
    (value, slope)
}

/// `f(x)` linearised at every element of `x`: the slope `f'(x)` and the offset
/// `f(x) - x f'(x)`, so that `x * slope + offset` is `f(x)` with `f'` as its gradient in x.
/// Generic over `f` (not a function pointer) so that `f` inlines and the loop vectorises.
pub fn linearise<F: Fn(f32) -> (f32, f32) + Sync + Copy>(x: &[f32], f: F) -> (Vec<f32>, Vec<f32>) {
    let (mut slope, mut offset) = (output(x.len()), output(x.len()));
    slope.par_chunks_mut(CHUNK).zip(offset.par_chunks_mut(CHUNK)).zip(x.par_chunks(CHUNK)).for_each(|((s, o), x)| {
        #[cfg(target_arch = "x86_64")]
        if std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma") {
            // SAFETY: the CPU supports the features the function was compiled for.
            return unsafe { linearise_avx2(x, s, o, f) };
        }
        linearise_chunk(x, s, o, f)
    });
    (slope, offset)
}

#[inline(always)]
fn linearise_chunk<F: Fn(f32) -> (f32, f32)>(x: &[f32], slope: &mut [f32], offset: &mut [f32], f: F) {
    for ((s, o), &v) in slope.iter_mut().zip(offset.iter_mut()).zip(x) {
        let (y, d) = f(v);
        *s = d;
        *o = y - v * d;
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn linearise_avx2<F: Fn(f32) -> (f32, f32)>(x: &[f32], slope: &mut [f32], offset: &mut [f32], f: F) {
    linearise_chunk(x, slope, offset, f)
}

/// SiLU of every element.
pub fn silu(x: &[f32]) -> Vec<f32> {
    let mut out = output(x.len());
    out.par_chunks_mut(CHUNK).zip(x.par_chunks(CHUNK)).for_each(|(o, i)| {
        for (o, &v) in o.iter_mut().zip(i) {
            *o = silu_and_slope(v).0;
        }
    });
    out
}

/// Quantize-dequantize every value on one grid (a per-tensor encoding), bit for bit as
/// [`crate::quant::grid::qdq`] computes it, in one vectorised pass (AVX2 when present).
pub fn qdq(x: &[f32], scale: f32, zero_point: f32, grid: crate::quant::grid::Grid) -> Vec<f32> {
    let (lo, hi) = grid.range();
    let mut out = output(x.len());
    out.par_chunks_mut(CHUNK).zip(x.par_chunks(CHUNK)).for_each(|(o, i)| {
        #[cfg(target_arch = "x86_64")]
        if std::is_x86_feature_detected!("avx2") {
            // SAFETY: the CPU supports the features the function was compiled for.
            return unsafe { qdq_avx2(i, o, scale, zero_point, lo, hi) };
        }
        qdq_chunk(i, o, scale, zero_point, lo, hi)
    });
    out
}

/// `grid::qdq` written so the loop vectorises: the clamp as two selects (`f32::clamp`
/// asserts its bounds, which keeps the loop scalar; NaN passes through both ways), the
/// rounding by the 1.5 * 2^23 trick `grid` uses.
#[inline(always)]
fn qdq_chunk(x: &[f32], out: &mut [f32], scale: f32, zero_point: f32, lo: f32, hi: f32) {
    const MAGIC: f32 = 12_582_912.0;
    let (a, b) = (lo - zero_point, hi - zero_point);
    for (o, &v) in out.iter_mut().zip(x) {
        let t = v / scale;
        let t = if t < a { a } else { t };
        let t = if t > b { b } else { t };
        let q = ((t + MAGIC) - MAGIC) + zero_point;
        *o = (q - zero_point) * scale;
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn qdq_avx2(x: &[f32], out: &mut [f32], scale: f32, zero_point: f32, lo: f32, hi: f32) {
    qdq_chunk(x, out, scale, zero_point, lo, hi)
}

/// An output buffer every element of which the caller writes: no zeroing pass (a
/// measurable cost on activations of tens of MiB).
fn output(len: usize) -> Vec<f32> {
    let mut v: Vec<std::mem::MaybeUninit<f32>> = Vec::with_capacity(len);
    // SAFETY: MaybeUninit needs no initialisation; every caller overwrites all `len` elements
    // before the buffer is read, and f32 has no invalid bit patterns.
    unsafe {
        v.set_len(len);
        std::mem::transmute::<Vec<std::mem::MaybeUninit<f32>>, Vec<f32>>(v)
    }
}

/// tanh-GELU of every element.
pub fn gelu_tanh(x: &[f32]) -> Vec<f32> {
    let mut out = output(x.len());
    out.par_chunks_mut(CHUNK).zip(x.par_chunks(CHUNK)).for_each(|(o, i)| {
        for (o, &v) in o.iter_mut().zip(i) {
            *o = gelu_tanh_scalar(v);
        }
    });
    out
}

/// `y * gamma[c] + residual` over `[b, c, hw]` (layer scale and skip in one pass).
pub fn scale_add(y: &[f32], gamma: &[f32], residual: &[f32], c: usize, hw: usize) -> Vec<f32> {
    let mut out = output(y.len());
    out.par_chunks_mut(hw).zip(y.par_chunks(hw)).zip(residual.par_chunks(hw)).enumerate().for_each(
        |(row, ((o, y), r))| {
            let g = gamma[row % c];
            for ((o, &y), &r) in o.iter_mut().zip(y).zip(r) {
                *o = y * g + r;
            }
        },
    );
    out
}

/// RMS norm over the channels of every pixel of `x: [b, c, hw]` (NCHW), times `weight[c]`,
/// then tanh-GELU when `act`.
pub fn rms_norm_channels(x: &[f32], weight: &[f32], b: usize, c: usize, hw: usize, eps: f32, act: bool) -> Vec<f32> {
    rms_norm_channels_add(x, weight, None, b, c, hw, eps, act)
}

/// [`rms_norm_channels`], plus `residual` added to the result when given.
#[allow(clippy::too_many_arguments)]
pub fn rms_norm_channels_add(
    x: &[f32],
    weight: &[f32],
    residual: Option<&[f32]>,
    b: usize,
    c: usize,
    hw: usize,
    eps: f32,
    act: bool,
) -> Vec<f32> {
    let mut out = output(x.len());
    // Tasks own a run of pixels of one image, across all channels.
    let px = (CHUNK / c.max(1)).max(64).min(hw.max(1));
    let tasks: Vec<(usize, usize)> = (0..b).flat_map(|n| (0..hw).step_by(px).map(move |p0| (n, p0))).collect();
    let out_ptr = SendPtr(out.as_mut_ptr());
    tasks.par_iter().for_each(|&(n, p0)| {
        let p1 = (p0 + px).min(hw);
        let len = p1 - p0;
        let base = n * c * hw;
        let mut acc = vec![0f32; len];
        for ch in 0..c {
            let row = &x[base + ch * hw + p0..base + ch * hw + p1];
            for (a, &v) in acc.iter_mut().zip(row) {
                *a += v * v;
            }
        }
        let inv_c = 1.0 / c as f32;
        for a in acc.iter_mut() {
            *a = 1.0 / (*a * inv_c + eps).sqrt();
        }
        for (ch, &w) in weight.iter().enumerate().take(c) {
            let start = base + ch * hw + p0;
            let row = &x[start..start + len];
            // SAFETY: tasks write disjoint (image, pixel-run) ranges of `out`.
            let dst = unsafe { std::slice::from_raw_parts_mut(out_ptr.get().add(start), len) };
            match (act, residual) {
                (true, _) => {
                    for ((d, &v), &s) in dst.iter_mut().zip(row).zip(&acc) {
                        *d = gelu_tanh_scalar(v * s * w);
                    }
                }
                (false, Some(r)) => {
                    let r = &r[start..start + len];
                    for (((d, &v), &s), &r) in dst.iter_mut().zip(row).zip(&acc).zip(r) {
                        *d = v * s * w + r;
                    }
                }
                (false, None) => {
                    for ((d, &v), &s) in dst.iter_mut().zip(row).zip(&acc) {
                        *d = v * s * w;
                    }
                }
            }
        }
    });
    out
}

/// Softmax of every row of length `n` (numerically stable: max subtracted), one read and
/// one write per element instead of Burn's five passes.
pub fn softmax_rows(x: &[f32], n: usize) -> Vec<f32> {
    let mut out = output(x.len());
    let rows_per_task = (CHUNK / n.max(1)).max(1);
    out.par_chunks_mut(rows_per_task * n).zip(x.par_chunks(rows_per_task * n)).for_each(|(o, i)| {
        for (o, i) in o.chunks_mut(n).zip(i.chunks(n)) {
            let max = i.iter().fold(f32::NEG_INFINITY, |m, &v| m.max(v));
            let mut sum = 0f32;
            for (o, &v) in o.iter_mut().zip(i) {
                let e = (v - max).exp();
                *o = e;
                sum += e;
            }
            let inv = 1.0 / sum;
            o.iter_mut().for_each(|v| *v *= inv);
        }
    });
    out
}

#[derive(Clone, Copy)]
struct SendPtr(*mut f32);
unsafe impl Send for SendPtr {}
unsafe impl Sync for SendPtr {}
impl SendPtr {
    fn get(self) -> *mut f32 {
        self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tanh_fast_is_accurate() {
        let mut worst = 0f32;
        for i in -20000..=20000 {
            let x = i as f32 * 1e-3;
            worst = worst.max((tanh_fast(x) - x.tanh()).abs());
        }
        assert!(worst < 5e-7, "max abs error {worst:e}");
    }

    #[test]
    fn exp_fast_is_accurate() {
        let mut worst = 0f32;
        for i in -8700..=8799 {
            let x = i as f32 * 1e-2 + 0.003; // within the clamp, [-87, 88]
            worst = worst.max(((exp_fast(x) - x.exp()) / x.exp()).abs());
        }
        assert!(worst < 4e-7, "max relative error {worst:e}");
        assert!(exp_fast(-1e9) >= 0.0 && exp_fast(1e9).is_finite());
    }

    #[test]
    fn slopes_are_the_derivatives() {
        let gelu = |x: f32| gelu_tanh_scalar(x);
        let silu = |x: f32| x / (1.0 + (-x).exp());
        for i in -400..=400 {
            let x = i as f32 * 0.02;
            for (f, exact) in
                [(silu_and_slope as fn(f32) -> (f32, f32), &silu as &dyn Fn(f32) -> f32), (gelu_tanh_and_slope, &gelu)]
            {
                let (y, d) = f(x);
                let h = 1e-2f64;
                let numeric = (f64::from(exact((f64::from(x) + h) as f32))
                    - f64::from(exact((f64::from(x) - h) as f32)))
                    / (2.0 * h);
                assert!((y - exact(x)).abs() < 2e-6 * (1.0 + x.abs()), "value at {x}");
                assert!((f64::from(d) - numeric).abs() < 2e-3, "slope at {x}: {d} vs {numeric}");
            }
        }
        let (s, o) = linearise(&[-3.0, 0.5, 4.0], silu_and_slope);
        for (i, &x) in [-3.0f32, 0.5, 4.0].iter().enumerate() {
            assert!((x * s[i] + o[i] - silu(x)).abs() < 1e-6);
        }
    }

    #[test]
    fn softmax_rows_sum_to_one_and_keep_order() {
        let x: Vec<f32> = (0..3 * 7).map(|i| (i as f32 * 0.7).sin() * 30.0).collect();
        let y = softmax_rows(&x, 7);
        for (r, row) in y.chunks(7).enumerate() {
            assert!((row.iter().sum::<f32>() - 1.0).abs() < 1e-6);
            let xr = &x[r * 7..r * 7 + 7];
            for j in 1..7 {
                assert_eq!(row[j] > row[j - 1], xr[j] > xr[j - 1]);
            }
        }
    }

    #[test]
    fn rms_norm_matches_naive() {
        let (b, c, hw) = (2, 5, 300);
        let x: Vec<f32> = (0..b * c * hw).map(|i| ((i * 37 % 101) as f32 - 50.0) / 17.0).collect();
        let w: Vec<f32> = (0..c).map(|i| 0.5 + i as f32 * 0.1).collect();
        for act in [false, true] {
            let got = rms_norm_channels(&x, &w, b, c, hw, 1e-6, act);
            for n in 0..b {
                for p in 0..hw {
                    let ms: f32 = (0..c).map(|ch| x[n * c * hw + ch * hw + p].powi(2)).sum::<f32>() / c as f32;
                    for ch in 0..c {
                        let i = n * c * hw + ch * hw + p;
                        let mut want = x[i] / (ms + 1e-6).sqrt() * w[ch];
                        if act {
                            want = 0.5 * want * (1.0 + (0.797_884_6 * (want + 0.044_715 * want.powi(3))).tanh());
                        }
                        assert!((got[i] - want).abs() < 1e-5, "{} vs {want}", got[i]);
                    }
                }
            }
        }
    }
}

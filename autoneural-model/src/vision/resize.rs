//! Spatial resizing written as small interpolation matrices, so it runs (and differentiates)
//! on every backend exactly as PyTorch computes it:
//! - nearest (`F.interpolate(mode="nearest")`): source index `floor(i * in / out)`;
//! - bilinear, `align_corners=False`, with or without antialiasing (`antialias=True` is
//!   the triangle filter widened by the downscale factor, as PyTorch and PIL compute it);
//! - average pooling by an integer factor.

use burn::tensor::{Device, Int, Tensor, TensorData};

/// Row-major `[out, in]` weights of 1-D bilinear resampling.
pub fn bilinear_weights(input: usize, output: usize, antialias: bool) -> Vec<f32> {
    let mut w = vec![0f32; output * input];
    let scale = input as f64 / output as f64;
    if antialias {
        let support = if scale >= 1.0 { scale } else { 1.0 };
        let inv = if scale >= 1.0 { 1.0 / scale } else { 1.0 };
        for i in 0..output {
            let center = scale * (i as f64 + 0.5);
            let lo = ((center - support + 0.5).floor().max(0.0)) as usize;
            let hi = ((center + support + 0.5).floor() as usize).min(input);
            let row = &mut w[i * input..(i + 1) * input];
            let mut total = 0.0;
            for (j, v) in row.iter_mut().enumerate().take(hi).skip(lo) {
                let x = ((j as f64 - center + 0.5) * inv).abs();
                let f = (1.0 - x).max(0.0);
                *v = f as f32;
                total += f;
            }
            if total > 0.0 {
                row.iter_mut().for_each(|v| *v = (*v as f64 / total) as f32);
            }
        }
    } else {
        for i in 0..output {
            let src = ((i as f64 + 0.5) * scale - 0.5).max(0.0);
            let i0 = (src.floor() as usize).min(input - 1);
            let i1 = (i0 + 1).min(input - 1);
            let l1 = (src - i0 as f64) as f32;
            w[i * input + i0] += 1.0 - l1;
            w[i * input + i1] += l1;
        }
    }
    w
}

/// Applies `[out, in]` weights along the last axis: `[n, in] -> [n, out]`.
fn apply_last(x: Tensor<2>, weights: Vec<f32>, input: usize, output: usize, device: &Device) -> Tensor<2> {
    let w = Tensor::<2>::from_data(TensorData::new(weights, [output, input]), device);
    x.matmul(w.transpose())
}

/// Bilinear resize of `[b, c, h, w]` to `[b, c, out_h, out_w]` (align_corners=False).
pub fn bilinear(x: Tensor<4>, out_h: usize, out_w: usize, antialias: bool) -> Tensor<4> {
    let [b, c, h, w] = x.dims();
    if (h, w) == (out_h, out_w) {
        return x;
    }
    let device = x.device();
    let y = apply_last(x.reshape([b * c * h, w]), bilinear_weights(w, out_w, antialias), w, out_w, &device);
    let y = y.reshape([b, c, h, out_w]).swap_dims(2, 3).reshape([b * c * out_w, h]);
    let y = apply_last(y, bilinear_weights(h, out_h, antialias), h, out_h, &device);
    y.reshape([b, c, out_w, out_h]).swap_dims(2, 3)
}

/// Nearest resize of `[b, c, h, w]` to `[b, c, out_h, out_w]`.
pub fn nearest(x: Tensor<4>, out_h: usize, out_w: usize) -> Tensor<4> {
    let [_, _, h, w] = x.dims();
    if (h, w) == (out_h, out_w) {
        return x;
    }
    let device = x.device();
    let index = |input: usize, output: usize| -> Tensor<1, Int> {
        let v: Vec<i64> = (0..output).map(|i| (i * input / output) as i64).collect();
        Tensor::from_data(TensorData::new(v, [output]), &device)
    };
    x.select(2, index(h, out_h)).select(3, index(w, out_w))
}

/// Average pooling with kernel = stride = `(fh, fw)`; `h, w` must divide.
pub fn avg_pool(x: Tensor<4>, fh: usize, fw: usize) -> Tensor<4> {
    let [b, c, h, w] = x.dims();
    x.reshape([b, c, h / fh, fh, w / fw, fw]).mean_dim(5).mean_dim(3).reshape([b, c, h / fh, w / fw])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(w: &[f32], input: usize, i: usize) -> &[f32] {
        &w[i * input..(i + 1) * input]
    }

    #[test]
    fn identity_when_same_size() {
        for aa in [false, true] {
            let w = bilinear_weights(5, 5, aa);
            for i in 0..5 {
                for j in 0..5 {
                    assert!((w[i * 5 + j] - if i == j { 1.0 } else { 0.0 }).abs() < 1e-6);
                }
            }
        }
    }

    #[test]
    fn rows_sum_to_one() {
        for (i, o) in [(16, 7), (7, 16), (48, 16), (3, 10)] {
            for aa in [false, true] {
                let w = bilinear_weights(i, o, aa);
                for r in 0..o {
                    let s: f32 = row(&w, i, r).iter().sum();
                    assert!((s - 1.0).abs() < 1e-5, "{i}->{o} aa={aa}");
                }
            }
        }
    }

    #[test]
    fn halving_without_antialias_averages_pairs() {
        let w = bilinear_weights(4, 2, false);
        assert_eq!(row(&w, 4, 0), &[0.5, 0.5, 0.0, 0.0]);
        // With antialias, the filter spans two source pixels on each side.
        let w = bilinear_weights(4, 2, true);
        let r = row(&w, 4, 0);
        assert!((r[0] - 3.0 / 7.0).abs() < 1e-6 && (r[2] - 1.0 / 7.0).abs() < 1e-6);
    }
}

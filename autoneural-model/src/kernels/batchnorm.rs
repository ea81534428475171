//! Batch norm in training mode over NCHW f32 slices: batch statistics, the normalisation
//! and its backward, each one or two passes.
//!
//! Burn's generic `batch_norm_train` (which flex does not override) reaches a channel's
//! values through `swap_dims(0, 1)` plus a reshape, a transposing copy of the activation, in
//! the forward and twice in the backward, among about a dozen full passes. Here a channel
//! is `batch` contiguous runs of `h * w` values and is read in place.

use rayon::prelude::*;

use super::lanes;

/// `[batch, channels, h * w]`
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Geometry {
    pub batch: usize,
    pub channels: usize,
    pub plane: usize,
}

impl Geometry {
    fn count(&self) -> f32 {
        (self.batch * self.plane) as f32
    }

    /// The runs of channel `c` in a tensor of this geometry.
    fn runs<'a>(&self, v: &'a [f32], c: usize) -> impl Iterator<Item = &'a [f32]> + 'a {
        let (channels, plane) = (self.channels, self.plane);
        (0..self.batch).map(move |b| &v[(b * channels + c) * plane..][..plane])
    }
}

/// Per channel: the mean and the biased variance (what PyTorch's running statistics and
/// the normalisation use), the latter from centred values (two passes, no cancellation).
pub fn statistics(x: &[f32], g: &Geometry) -> (Vec<f32>, Vec<f32>) {
    (0..g.channels)
        .into_par_iter()
        .map(|c| {
            let mean = g.runs(x, c).map(sum).sum::<f32>() / g.count();
            let var = g.runs(x, c).map(|r| sum_sq_dev(r, mean)).sum::<f32>() / g.count();
            (mean, var)
        })
        .unzip()
}

/// `x * scale[c] + shift[c]` for every channel `c`.
pub fn affine(x: &[f32], scale: &[f32], shift: &[f32], g: &Geometry) -> Vec<f32> {
    let mut y = vec![0f32; x.len()];
    y.par_chunks_mut(g.plane).zip(x.par_chunks(g.plane)).enumerate().for_each(|(p, (yp, xp))| {
        let (a, b) = (scale[p % g.channels], shift[p % g.channels]);
        yp.iter_mut().zip(xp).for_each(|(o, &v)| *o = v * a + b);
    });
    y
}

/// Gradients of `y = (x - mean) inv_std gamma + beta` with the batch's own statistics:
/// `(dL/dx, dL/dgamma, dL/dbeta)`. Per channel, with `n` values and `xhat` the normalised
/// input, `dL/dbeta = sum(gy)`, `dL/dgamma = sum(gy xhat)` and
/// `dL/dx = gamma inv_std (gy - dL/dbeta / n - xhat dL/dgamma / n)`, which is affine in `gy`
/// and `x`, so one more pass.
///
/// A channel whose values are all equal (an all-black image in a batch of one makes whole
/// feature maps constant) passes no gradient to `x`: its slope there is `1 / sqrt(eps)`
/// (316), which through a stack of norms grows the gradient past f32 into inf and NaN.
/// Its `gamma` and `beta` gradients are kept.
pub fn backward(
    x: &[f32],
    gy: &[f32],
    mean: &[f32],
    inv_std: &[f32],
    gamma: &[f32],
    g: &Geometry,
) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
    let (sums, constant): (Vec<(f32, f32)>, Vec<bool>) = (0..g.channels)
        .into_par_iter()
        .map(|c| {
            let s = g
                .runs(gy, c)
                .zip(g.runs(x, c))
                .fold((0f32, 0f32), |(s, sd), (gr, xr)| (s + sum(gr), sd + dot_dev(gr, xr, mean[c])));
            (s, g.runs(x, c).all(|r| r.iter().all(|&v| v == mean[c])))
        })
        .unzip();
    let (gbeta, gdev): (Vec<f32>, Vec<f32>) = sums.into_iter().unzip();
    let ggamma: Vec<f32> = gdev.iter().zip(inv_std).map(|(d, s)| d * s).collect();
    // dL/dx = a gy + b x + c0 per channel.
    let n = g.count();
    let coef: Vec<(f32, f32, f32)> = (0..g.channels)
        .map(|c| {
            if constant[c] {
                return (0.0, 0.0, 0.0);
            }
            let a = gamma[c] * inv_std[c];
            let b = -a * inv_std[c] * ggamma[c] / n;
            (a, b, -a * gbeta[c] / n - b * mean[c])
        })
        .collect();
    let mut gx = vec![0f32; x.len()];
    gx.par_chunks_mut(g.plane).enumerate().for_each(|(p, out)| {
        let (a, b, c0) = coef[p % g.channels];
        let (gp, xp) = (&gy[p * g.plane..][..g.plane], &x[p * g.plane..][..g.plane]);
        out.iter_mut().zip(gp.iter().zip(xp)).for_each(|(o, (&gv, &xv))| *o = a * gv + b * xv + c0);
    });
    (gx, ggamma, gbeta)
}

fn sum(v: &[f32]) -> f32 {
    lanes(v, v, |x, _| x)
}

fn sum_sq_dev(v: &[f32], mean: f32) -> f32 {
    lanes(v, v, |x, _| (x - mean) * (x - mean))
}

fn dot_dev(gy: &[f32], x: &[f32], mean: f32) -> f32 {
    lanes(gy, x, |g, x| g * (x - mean))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::test_values as values;

    /// The loss `sum(gy * bn(x))` in f64, for finite differences.
    fn loss(x: &[f32], gamma: &[f32], beta: &[f32], gy: &[f32], g: &Geometry) -> f64 {
        let n = (g.batch * g.plane) as f64;
        let mut total = 0f64;
        for c in 0..g.channels {
            let idx: Vec<usize> =
                (0..g.batch).flat_map(|b| (0..g.plane).map(move |i| (b * g.channels + c) * g.plane + i)).collect();
            let mean = idx.iter().map(|&i| x[i] as f64).sum::<f64>() / n;
            let var = idx.iter().map(|&i| (x[i] as f64 - mean).powi(2)).sum::<f64>() / n;
            for &i in &idx {
                let y = (x[i] as f64 - mean) / (var + 1e-5).sqrt() * gamma[c] as f64 + beta[c] as f64;
                total += y * gy[i] as f64;
            }
        }
        total
    }

    #[test]
    fn statistics_and_gradients_match_finite_differences() {
        let g = Geometry { batch: 3, channels: 2, plane: 13 };
        let x = values(3 * 2 * 13, 1);
        let gy = values(x.len(), 2);
        let (gamma, beta) = (vec![1.5f32, -0.5], vec![0.25f32, 2.0]);
        let (mean, var) = statistics(&x, &g);
        let inv_std: Vec<f32> = var.iter().map(|v| 1.0 / (v + 1e-5).sqrt()).collect();
        let (gx, ggamma, gbeta) = backward(&x, &gy, &mean, &inv_std, &gamma, &g);
        let h = 1e-3f32;
        let diff = |f: &dyn Fn(f32) -> f64| ((f(h) - f(-h)) / (2.0 * h as f64)) as f32;
        // The perturbed value is rounded to f32, so the difference is good to ~1e-4 relative.
        let close = |a: f32, b: f32| (a - b).abs() < 2e-3 * b.abs().max(1.0);
        for i in 0..x.len() {
            let numeric = diff(&|d| {
                let mut xd = x.clone();
                xd[i] += d;
                loss(&xd, &gamma, &beta, &gy, &g)
            });
            assert!(close(gx[i], numeric), "x[{i}]: {} vs {numeric}", gx[i]);
        }
        for c in 0..2 {
            let numeric = diff(&|d| {
                let mut gd = gamma.clone();
                gd[c] += d;
                loss(&x, &gd, &beta, &gy, &g)
            });
            assert!(close(ggamma[c], numeric), "gamma[{c}]: {} vs {numeric}", ggamma[c]);
            let numeric = diff(&|d| {
                let mut bd = beta.clone();
                bd[c] += d;
                loss(&x, &gamma, &bd, &gy, &g)
            });
            assert!(close(gbeta[c], numeric), "beta[{c}]: {} vs {numeric}", gbeta[c]);
        }
        // The forward: each channel normalised to mean beta, then scaled.
        let scale: Vec<f32> = (0..2).map(|c| gamma[c] * inv_std[c]).collect();
        let shift: Vec<f32> = (0..2).map(|c| beta[c] - mean[c] * scale[c]).collect();
        let y = affine(&x, &scale, &shift, &g);
        let (ymean, _) = statistics(&y, &g);
        assert!(ymean.iter().zip(&beta).all(|(m, b)| (m - b).abs() < 1e-5));
    }
}

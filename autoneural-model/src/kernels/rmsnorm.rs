//! RMS norm over the last dimension of row-major f32 rows, forward and backward, for
//! training on flex: `y = x r w` with `r = 1 / sqrt(mean(x^2) + eps)` per row.
//!
//! Burn differentiates the composite (`square`, `mean_dim`, `add`, `sqrt`, `recip` and two
//! broadcast products), each a pass over the activation in the forward and more in the
//! backward, and flex runs element-wise ops on one thread; the language model has one norm
//! before every mixer and MLP (13 in the quickstart's, 4 more on queries and keys).

use rayon::prelude::*;

/// Rows per parallel task.
const ROWS_PER_TASK: usize = 64;

/// `(y, r)`: the normalised rows and each row's `r`.
pub fn forward(x: &[f32], w: &[f32], eps: f32) -> (Vec<f32>, Vec<f32>) {
    let n = w.len();
    let mut y = vec![0f32; x.len()];
    let mut r = vec![0f32; x.len() / n];
    y.par_chunks_mut(n * ROWS_PER_TASK)
        .zip(r.par_chunks_mut(ROWS_PER_TASK))
        .zip(x.par_chunks(n * ROWS_PER_TASK))
        .for_each(|((yc, rc), xc)| {
            for ((yr, ri), xr) in yc.chunks_mut(n).zip(rc.iter_mut()).zip(xc.chunks(n)) {
                *ri = 1.0 / (xr.iter().map(|v| v * v).sum::<f32>() / n as f32 + eps).sqrt();
                yr.iter_mut().zip(xr.iter().zip(w)).for_each(|(o, (&v, &wv))| *o = v * *ri * wv);
            }
        });
    (y, r)
}

/// `(dL/dx, dL/dw)` from `dL/dy`. Per row, with `h = gy * w`:
/// `dL/dx = r h - x r^3 mean(h x)`; and `dL/dw = sum over rows of gy x r`.
pub fn backward(x: &[f32], gy: &[f32], w: &[f32], r: &[f32]) -> (Vec<f32>, Vec<f32>) {
    let n = w.len();
    let mut gx = vec![0f32; x.len()];
    let partials: Vec<Vec<f32>> = gx
        .par_chunks_mut(n * ROWS_PER_TASK)
        .zip(x.par_chunks(n * ROWS_PER_TASK))
        .zip(gy.par_chunks(n * ROWS_PER_TASK))
        .zip(r.par_chunks(ROWS_PER_TASK))
        .map(|(((gxc, xc), gyc), rc)| {
            let mut gw = vec![0f32; n];
            for (((gxr, xr), gyr), &ri) in gxc.chunks_mut(n).zip(xc.chunks(n)).zip(gyc.chunks(n)).zip(rc) {
                let hx: f32 = gyr.iter().zip(w).zip(xr).map(|((g, wv), v)| g * wv * v).sum();
                let k = ri * ri * ri * hx / n as f32;
                for i in 0..n {
                    gxr[i] = ri * gyr[i] * w[i] - xr[i] * k;
                    gw[i] += gyr[i] * xr[i] * ri;
                }
            }
            gw
        })
        .collect();
    let gw = super::sum_in_order(partials, n);
    (gx, gw)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::test_values as values;

    /// `sum(gy * rms_norm(x, w))` in f64.
    fn loss(x: &[f32], w: &[f32], gy: &[f32]) -> f64 {
        let n = w.len();
        x.chunks(n)
            .zip(gy.chunks(n))
            .map(|(xr, gr)| {
                let r = 1.0 / (xr.iter().map(|&v| (v as f64).powi(2)).sum::<f64>() / n as f64 + 1e-5).sqrt();
                (0..n).map(|i| xr[i] as f64 * r * w[i] as f64 * gr[i] as f64).sum::<f64>()
            })
            .sum()
    }

    #[test]
    fn gradients_match_finite_differences() {
        let (rows, n) = (130, 6); // more rows than one task, and a partial task
        let (x, w, gy) = (values(rows * n, 1), values(n, 2), values(rows * n, 3));
        let (y, r) = forward(&x, &w, 1e-5);
        assert!((y.iter().zip(&gy).map(|(a, b)| (a * b) as f64).sum::<f64>() - loss(&x, &w, &gy)).abs() < 1e-3);
        let (gx, gw) = backward(&x, &gy, &w, &r);
        let h = 1e-3f32;
        let close = |a: f32, b: f64| ((a as f64) - b).abs() < 2e-3 * b.abs().max(1.0);
        for i in (0..x.len()).step_by(7) {
            let (mut xp, mut xm) = (x.clone(), x.clone());
            xp[i] += h;
            xm[i] -= h;
            let numeric = (loss(&xp, &w, &gy) - loss(&xm, &w, &gy)) / (xp[i] - xm[i]) as f64;
            assert!(close(gx[i], numeric), "x[{i}]: {} vs {numeric}", gx[i]);
        }
        for i in 0..n {
            let (mut wp, mut wm) = (w.clone(), w.clone());
            wp[i] += h;
            wm[i] -= h;
            let numeric = (loss(&x, &wp, &gy) - loss(&x, &wm, &gy)) / (wp[i] - wm[i]) as f64;
            assert!(close(gw[i], numeric), "w[{i}]: {} vs {numeric}", gw[i]);
        }
    }
}

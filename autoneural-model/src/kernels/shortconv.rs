//! LFM2's gated short convolution between its two projections, over row-major f32, for
//! training on flex: from `bcx = in_proj(u)`, `[b, t, 3d]` holding the gates `B`, `C` and
//! the values `x`, `z = C * conv(B * x)` with a causal depthwise convolution of `l` taps
//! over time (zero history), `[b, t, d]`; and its backward.
//!
//! Built from Burn's ops this is three slices, a product, a concatenation with zeros, a
//! slice, product and sum per tap and the output gate: about fifteen passes forward, more
//! backward, with flex's element-wise ops on one thread.

use rayon::prelude::*;

/// Shape: `batch` sequences of `time` steps of `dim` channels, `taps` convolution taps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Geometry {
    pub batch: usize,
    pub time: usize,
    pub dim: usize,
    pub taps: usize,
}

impl Geometry {
    fn seq_in(&self) -> usize {
        self.time * 3 * self.dim
    }

    fn seq_out(&self) -> usize {
        self.time * self.dim
    }
}

/// The gates and values of time step `s` of one sequence of `bcx`: `(B, C, x)`.
fn split(seq: &[f32], s: usize, d: usize) -> (&[f32], &[f32], &[f32]) {
    let row = &seq[s * 3 * d..][..3 * d];
    (&row[..d], &row[d..2 * d], &row[2 * d..])
}

/// The taps `[d, l]` (PyTorch's `[d, 1, l]`) as `[l, d]`, so that loops over channels read
/// them contiguously.
fn taps_by_step(w: &[f32], g: &Geometry) -> Vec<f32> {
    (0..g.taps).flat_map(|j| (0..g.dim).map(move |c| w[c * g.taps + j])).collect()
}

/// `y[s] = sum_j w[j] v[s + j - (l - 1)]` with `v = B * x` (the last tap on the current
/// step), for one sequence; `wt` from [`taps_by_step`].
fn conv_seq(seq: &[f32], wt: &[f32], g: &Geometry, y: &mut [f32]) {
    let (d, l) = (g.dim, g.taps);
    for s in 0..g.time {
        let out = &mut y[s * d..][..d];
        out.fill(0.0);
        for j in 0..l {
            let Some(src) = (s + j).checked_sub(l - 1) else { continue };
            let (b, _, x) = split(seq, src, d);
            let wj = &wt[j * d..][..d];
            for c in 0..d {
                out[c] += wj[c] * b[c] * x[c];
            }
        }
    }
}

/// `z = C * conv(B * x)`: `[b, t, d]`.
pub fn forward(bcx: &[f32], w: &[f32], g: &Geometry) -> Vec<f32> {
    let wt = taps_by_step(w, g);
    let mut z = vec![0f32; g.batch * g.seq_out()];
    z.par_chunks_mut(g.seq_out()).zip(bcx.par_chunks(g.seq_in())).for_each(|(zs, seq)| {
        conv_seq(seq, &wt, g, zs);
        for s in 0..g.time {
            let (_, c, _) = split(seq, s, g.dim);
            zs[s * g.dim..][..g.dim].iter_mut().zip(c).for_each(|(o, &cv)| *o *= cv);
        }
    });
    z
}

/// `(dL/dbcx, dL/dw)` from `dL/dz`: `[b, t, 3d]` (gates and values in place) and `[d, l]`.
pub fn backward(bcx: &[f32], w: &[f32], gz: &[f32], g: &Geometry) -> (Vec<f32>, Vec<f32>) {
    let (d, l) = (g.dim, g.taps);
    let wt = taps_by_step(w, g);
    let mut gbcx = vec![0f32; bcx.len()];
    let partials: Vec<Vec<f32>> = gbcx
        .par_chunks_mut(g.seq_in())
        .zip(bcx.par_chunks(g.seq_in()))
        .zip(gz.par_chunks(g.seq_out()))
        .map(|((gseq, seq), gzs)| {
            // dL/dC = gz * y (y recomputed); dL/dy = gz * C.
            let mut y = vec![0f32; g.seq_out()];
            conv_seq(seq, &wt, g, &mut y);
            let mut gy = vec![0f32; g.seq_out()];
            for s in 0..g.time {
                let (_, c, _) = split(seq, s, d);
                let gc = &mut gseq[s * 3 * d + d..][..d];
                for i in 0..d {
                    gc[i] = gzs[s * d + i] * y[s * d + i];
                    gy[s * d + i] = gzs[s * d + i] * c[i];
                }
            }
            // dL/dv[src] = sum_j w[j] gy[src + (l - 1) - j]; dL/dw[j] = sum gy[s] v[s + j - (l - 1)]
            // (accumulated as `[l, d]`, transposed at the end).
            let mut gwt = vec![0f32; l * d];
            for src in 0..g.time {
                let (b, _, x) = split(seq, src, d);
                let mut gv = vec![0f32; d];
                for j in 0..l {
                    let s = src + (l - 1) - j;
                    if s >= g.time {
                        continue;
                    }
                    let gys = &gy[s * d..][..d];
                    let (wj, gwj) = (&wt[j * d..][..d], &mut gwt[j * d..][..d]);
                    for c in 0..d {
                        gv[c] += wj[c] * gys[c];
                        gwj[c] += gys[c] * b[c] * x[c];
                    }
                }
                let row = &mut gseq[src * 3 * d..][..3 * d];
                for c in 0..d {
                    row[c] = gv[c] * x[c];
                    row[2 * d + c] = gv[c] * b[c];
                }
            }
            gwt
        })
        .collect();
    let gwt = super::sum_in_order(partials, d * l);
    let gw = (0..d).flat_map(|c| (0..l).map(move |j| (c, j))).map(|(c, j)| gwt[j * d + c]).collect();
    (gbcx, gw)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::test_values as values;

    /// The definition, one output at a time.
    fn naive(bcx: &[f32], w: &[f32], g: &Geometry) -> Vec<f32> {
        let (d, l) = (g.dim, g.taps);
        let at = |b: usize, s: usize, k: usize| bcx[(b * g.time + s) * 3 * d + k];
        let mut z = vec![0f32; g.batch * g.time * d];
        for b in 0..g.batch {
            for s in 0..g.time {
                for c in 0..d {
                    let mut y = 0f32;
                    for j in 0..l {
                        if s + j >= l - 1 {
                            let src = s + j - (l - 1);
                            y += w[c * l + j] * at(b, src, c) * at(b, src, 2 * d + c);
                        }
                    }
                    z[(b * g.time + s) * d + c] = at(b, s, d + c) * y;
                }
            }
        }
        z
    }

    #[test]
    fn forward_and_gradients_match_the_definition() {
        let g = Geometry { batch: 2, time: 5, dim: 3, taps: 3 };
        let (bcx, w) = (values(2 * 5 * 9, 1), values(3 * 3, 2));
        let z = forward(&bcx, &w, &g);
        assert!(z.iter().zip(naive(&bcx, &w, &g)).all(|(a, b)| (a - b).abs() < 1e-6));
        let gz = values(z.len(), 3);
        let loss =
            |bcx: &[f32], w: &[f32]| -> f64 { naive(bcx, w, &g).iter().zip(&gz).map(|(a, b)| (a * b) as f64).sum() };
        let (gbcx, gw) = backward(&bcx, &w, &gz, &g);
        let h = 1e-2f32;
        for i in 0..bcx.len() {
            let (mut p, mut m) = (bcx.clone(), bcx.clone());
            p[i] += h;
            m[i] -= h;
            let numeric = (loss(&p, &w) - loss(&m, &w)) / (p[i] - m[i]) as f64;
            assert!((gbcx[i] as f64 - numeric).abs() < 1e-4, "bcx[{i}]: {} vs {numeric}", gbcx[i]);
        }
        for i in 0..w.len() {
            let (mut p, mut m) = (w.clone(), w.clone());
            p[i] += h;
            m[i] -= h;
            let numeric = (loss(&bcx, &p) - loss(&bcx, &m)) / (p[i] - m[i]) as f64;
            assert!((gw[i] as f64 - numeric).abs() < 1e-4, "w[{i}]: {} vs {numeric}", gw[i]);
        }
    }
}

//! Depthwise 2-D convolution (one `k x k` filter per channel) over NCHW f32 slices: the
//! forward pass and both gradients, for training on flex; and im2col ([`unfold`]) with its
//! gradient ([`fold`]) for full convolutions, which walk the input the same way.
//!
//! Burn's generic backward computes a grouped convolution's weight gradient group by group
//! (`conv2d_weight_grad_groups`: a slice, a convolution and a slice-assign per channel) and
//! pads asymmetric ("same" at stride 2) inputs with a copy first; a depthwise filter is
//! `k * k` multiply-adds per output, so here each `(image, channel)` plane is one task and
//! every tap one pass over the rows it reaches, with the padding as bounds.

use rayon::prelude::*;

/// Shape of a depthwise convolution: input `[batch, channels, height, width]`, weight
/// `[channels, 1, kh, kw]`, output `[batch, channels, out_h, out_w]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Geometry {
    pub batch: usize,
    pub channels: usize,
    pub height: usize,
    pub width: usize,
    pub kh: usize,
    pub kw: usize,
    pub stride: usize,
    pub dilation: usize,
    /// Zero rows above and columns left of the input (those below/right only bound `out_*`).
    pub pad_top: usize,
    pub pad_left: usize,
    pub out_h: usize,
    pub out_w: usize,
}

impl Geometry {
    /// The geometry for `(before, after)` paddings of each spatial dim.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        [batch, channels, height, width]: [usize; 4],
        [kh, kw]: [usize; 2],
        stride: usize,
        dilation: usize,
        pad_h: (usize, usize),
        pad_w: (usize, usize),
    ) -> Self {
        let out = |size: usize, k: usize, (a, b): (usize, usize)| (size + a + b - dilation * (k - 1) - 1) / stride + 1;
        Self {
            batch,
            channels,
            height,
            width,
            kh,
            kw,
            stride,
            dilation,
            pad_top: pad_h.0,
            pad_left: pad_w.0,
            out_h: out(height, kh, pad_h),
            out_w: out(width, kw, pad_w),
        }
    }

    fn plane_in(&self) -> usize {
        self.height * self.width
    }

    fn plane_out(&self) -> usize {
        self.out_h * self.out_w
    }

    /// Every tap `(i, j)` with the output rows `[y0, y1)` and columns `[x0, x1)` whose input
    /// position `(o * stride + tap * dilation - pad)` lies inside the image, and the offset
    /// of that position's column for output column 0 (may be negative).
    fn taps(&self) -> impl Iterator<Item = Tap> + '_ {
        (0..self.kh).flat_map(move |i| {
            (0..self.kw).filter_map(move |j| {
                let dy = (i * self.dilation) as isize - self.pad_top as isize;
                let dx = (j * self.dilation) as isize - self.pad_left as isize;
                let (y0, y1) = valid(self.out_h, self.height, self.stride, dy);
                let (x0, x1) = valid(self.out_w, self.width, self.stride, dx);
                (y0 < y1 && x0 < x1).then_some(Tap { index: i * self.kw + j, dy, dx, y0, y1, x0, x1 })
            })
        })
    }
}

struct Tap {
    index: usize,
    dy: isize,
    dx: isize,
    y0: usize,
    y1: usize,
    x0: usize,
    x1: usize,
}

impl Tap {
    /// Input row of output row `oy`.
    fn row(&self, oy: usize, stride: usize) -> usize {
        (oy as isize * stride as isize + self.dy) as usize
    }

    /// Input column of output column `x0`.
    fn col0(&self, stride: usize) -> usize {
        (self.x0 as isize * stride as isize + self.dx) as usize
    }
}

/// Output positions `o` in `[0, out)` with `0 <= o * stride + offset < size`, as a range.
fn valid(out: usize, size: usize, stride: usize, offset: isize) -> (usize, usize) {
    let lo = if offset >= 0 { 0 } else { (offset.unsigned_abs()).div_ceil(stride) };
    let room = size as isize - offset;
    let hi = if room <= 0 { 0 } else { ((room as usize - 1) / stride + 1).min(out) };
    (lo.min(hi), hi)
}

/// `y = depthwise(x, w)`.
pub fn forward(x: &[f32], w: &[f32], g: &Geometry) -> Vec<f32> {
    let taps: Vec<Tap> = g.taps().collect();
    let k = g.kh * g.kw;
    let mut y = vec![0f32; g.batch * g.channels * g.plane_out()];
    y.par_chunks_mut(g.plane_out()).enumerate().for_each(|(plane, yp)| {
        let c = plane % g.channels;
        let xp = &x[plane * g.plane_in()..][..g.plane_in()];
        let wc = &w[c * k..][..k];
        for t in &taps {
            let wv = wc[t.index];
            for oy in t.y0..t.y1 {
                let xr = &xp[t.row(oy, g.stride) * g.width..][..g.width];
                let yr = &mut yp[oy * g.out_w..][t.x0..t.x1];
                let start = t.col0(g.stride);
                if g.stride == 1 {
                    yr.iter_mut().zip(&xr[start..]).for_each(|(o, &v)| *o += wv * v);
                } else {
                    yr.iter_mut().zip(xr[start..].iter().step_by(g.stride)).for_each(|(o, &v)| *o += wv * v);
                }
            }
        }
    });
    y
}

/// `dL/dx` from `dL/dy`: every output's gradient times each tap's weight, added back to the
/// input position the tap read.
pub fn input_grad(gy: &[f32], w: &[f32], g: &Geometry) -> Vec<f32> {
    let taps: Vec<Tap> = g.taps().collect();
    let k = g.kh * g.kw;
    let mut gx = vec![0f32; g.batch * g.channels * g.plane_in()];
    gx.par_chunks_mut(g.plane_in()).enumerate().for_each(|(plane, gxp)| {
        let c = plane % g.channels;
        let gyp = &gy[plane * g.plane_out()..][..g.plane_out()];
        let wc = &w[c * k..][..k];
        for t in &taps {
            let wv = wc[t.index];
            for oy in t.y0..t.y1 {
                let gr = &gyp[oy * g.out_w..][t.x0..t.x1];
                let xr = &mut gxp[t.row(oy, g.stride) * g.width..][..g.width];
                let start = t.col0(g.stride);
                if g.stride == 1 {
                    xr[start..].iter_mut().zip(gr).for_each(|(o, &v)| *o += wv * v);
                } else {
                    xr[start..].iter_mut().step_by(g.stride).zip(gr).for_each(|(o, &v)| *o += wv * v);
                }
            }
        }
    });
    gx
}

/// `dL/dw` from `dL/dy`: per channel and tap, the sum over images and outputs of the
/// output's gradient times the input the tap read. `[channels, 1, kh, kw]`
pub fn weight_grad(x: &[f32], gy: &[f32], g: &Geometry) -> Vec<f32> {
    let taps: Vec<Tap> = g.taps().collect();
    let k = g.kh * g.kw;
    let mut gw = vec![0f32; g.channels * k];
    gw.par_chunks_mut(k).enumerate().for_each(|(c, gwc)| {
        for b in 0..g.batch {
            let plane = b * g.channels + c;
            let xp = &x[plane * g.plane_in()..][..g.plane_in()];
            let gyp = &gy[plane * g.plane_out()..][..g.plane_out()];
            for t in &taps {
                let mut acc = 0f32;
                for oy in t.y0..t.y1 {
                    let gr = &gyp[oy * g.out_w..][t.x0..t.x1];
                    let xr = &xp[t.row(oy, g.stride) * g.width..][..g.width];
                    let start = t.col0(g.stride);
                    acc += if g.stride == 1 {
                        dot(gr, &xr[start..start + gr.len()])
                    } else {
                        gr.iter().zip(xr[start..].iter().step_by(g.stride)).map(|(a, b)| a * b).sum::<f32>()
                    };
                }
                gwc[t.index] += acc;
            }
        }
    });
    gw
}

/// im2col: every input value each tap of each output reads, `[batch, channels * kh * kw,
/// out_h * out_w]` (zero where the tap falls in the padding), so that a full convolution
/// is one matrix product with its weight as `[out, channels * kh * kw]`.
pub fn unfold(x: &[f32], g: &Geometry) -> Vec<f32> {
    let taps: Vec<Tap> = g.taps().collect();
    let block = g.kh * g.kw * g.plane_out();
    let mut patches = vec![0f32; g.batch * g.channels * block];
    patches.par_chunks_mut(block).enumerate().for_each(|(plane, pp)| {
        let xp = &x[plane * g.plane_in()..][..g.plane_in()];
        for t in &taps {
            let rows = &mut pp[t.index * g.plane_out()..][..g.plane_out()];
            for oy in t.y0..t.y1 {
                let xr = &xp[t.row(oy, g.stride) * g.width..][..g.width];
                let pr = &mut rows[oy * g.out_w..][t.x0..t.x1];
                let start = t.col0(g.stride);
                pr.iter_mut().zip(xr[start..].iter().step_by(g.stride)).for_each(|(o, &v)| *o = v);
            }
        }
    });
    patches
}

/// col2im, the gradient of [`unfold`]: each patch entry's gradient added back to the input
/// value it was copied from. `[batch, channels, height, width]`
pub fn fold(gpatches: &[f32], g: &Geometry) -> Vec<f32> {
    let taps: Vec<Tap> = g.taps().collect();
    let block = g.kh * g.kw * g.plane_out();
    let mut gx = vec![0f32; g.batch * g.channels * g.plane_in()];
    gx.par_chunks_mut(g.plane_in()).enumerate().for_each(|(plane, gxp)| {
        let pp = &gpatches[plane * block..][..block];
        for t in &taps {
            let rows = &pp[t.index * g.plane_out()..][..g.plane_out()];
            for oy in t.y0..t.y1 {
                let pr = &rows[oy * g.out_w..][t.x0..t.x1];
                let xr = &mut gxp[t.row(oy, g.stride) * g.width..][..g.width];
                let start = t.col0(g.stride);
                xr[start..].iter_mut().step_by(g.stride).zip(pr).for_each(|(o, &v)| *o += v);
            }
        }
    });
    gx
}

/// `a . b` (same lengths).
fn dot(a: &[f32], b: &[f32]) -> f32 {
    super::lanes(a, b, |x, y| x * y)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::test_values as values;

    /// The definition, one output at a time, with explicit zero padding.
    fn naive(x: &[f32], w: &[f32], g: &Geometry) -> Vec<f32> {
        let mut y = vec![0f32; g.batch * g.channels * g.plane_out()];
        for plane in 0..g.batch * g.channels {
            let c = plane % g.channels;
            for oy in 0..g.out_h {
                for ox in 0..g.out_w {
                    let mut acc = 0f32;
                    for i in 0..g.kh {
                        for j in 0..g.kw {
                            let iy = (oy * g.stride + i * g.dilation) as isize - g.pad_top as isize;
                            let ix = (ox * g.stride + j * g.dilation) as isize - g.pad_left as isize;
                            if iy >= 0 && ix >= 0 && (iy as usize) < g.height && (ix as usize) < g.width {
                                acc += w[c * g.kh * g.kw + i * g.kw + j]
                                    * x[plane * g.plane_in() + iy as usize * g.width + ix as usize];
                            }
                        }
                    }
                    y[plane * g.plane_out() + oy * g.out_w + ox] = acc;
                }
            }
        }
        y
    }

    fn geometries() -> Vec<Geometry> {
        vec![
            Geometry::new([2, 3, 7, 6], [3, 3], 1, 1, (1, 1), (1, 1)),
            Geometry::new([2, 3, 8, 8], [3, 3], 2, 1, (0, 1), (0, 1)),
            Geometry::new([1, 2, 9, 10], [5, 5], 2, 1, (2, 2), (1, 2)),
            Geometry::new([2, 2, 9, 9], [3, 3], 1, 2, (2, 2), (2, 2)),
            Geometry::new([1, 1, 3, 3], [5, 5], 1, 1, (2, 2), (2, 2)),
        ]
    }

    #[test]
    fn forward_and_gradients_match_the_definition() {
        for g in geometries() {
            let x = values(g.batch * g.channels * g.plane_in(), 1);
            let w = values(g.channels * g.kh * g.kw, 2);
            let y = forward(&x, &w, &g);
            let reference = naive(&x, &w, &g);
            assert!(y.iter().zip(&reference).all(|(a, b)| (a - b).abs() < 1e-5), "{g:?}");
            // Gradients against the definition: y is linear in each of x and w, so the
            // gradient of `sum(y * gy)` is the reference applied to unit vectors.
            let gy = values(y.len(), 3);
            let loss = |x: &[f32], w: &[f32]| naive(x, w, &g).iter().zip(&gy).map(|(a, b)| a * b).sum::<f32>();
            let gx = input_grad(&gy, &w, &g);
            for (i, &got) in gx.iter().enumerate() {
                let mut unit = vec![0f32; x.len()];
                unit[i] = 1.0;
                assert!((got - loss(&unit, &w)).abs() < 1e-5, "{g:?} x[{i}]");
            }
            // unfold -> fold is the adjoint pair: <unfold(x), p> = <x, fold(p)>.
            let p = values(g.batch * g.channels * g.kh * g.kw * g.plane_out(), 4);
            let lhs: f32 = unfold(&x, &g).iter().zip(&p).map(|(a, b)| a * b).sum();
            let rhs: f32 = x.iter().zip(fold(&p, &g)).map(|(a, b)| a * b).sum();
            assert!((lhs - rhs).abs() < 1e-3, "{g:?} fold");
            // A depthwise convolution is the unfolded patches weighted by the taps.
            let patches = unfold(&x, &g);
            let k = g.kh * g.kw;
            for (i, &yv) in y.iter().enumerate() {
                let (plane, pos) = (i / g.plane_out(), i % g.plane_out());
                let c = plane % g.channels;
                let v: f32 = (0..k).map(|t| w[c * k + t] * patches[(plane * k + t) * g.plane_out() + pos]).sum();
                assert!((v - yv).abs() < 1e-5, "{g:?} unfold");
            }
            let gw = weight_grad(&x, &gy, &g);
            for (i, &got) in gw.iter().enumerate() {
                let mut unit = vec![0f32; w.len()];
                unit[i] = 1.0;
                assert!((got - loss(&x, &unit)).abs() < 1e-4, "{g:?} w[{i}]");
            }
        }
    }
}

//! Low-bit weight products for CPU decoding: int8 or int4 weights, one f32 scale per run of
//! input values, against activations quantized per row to int16 (the "A16" of W8A16 and
//! W4A16), summed exactly in int32 and scaled in f32.
//!
//! A decode step is bound by the bytes of weights it reads (see [`super::gemv`]): int8 reads
//! a quarter of f32's bytes and int4 an eighth. At those sizes the arithmetic must keep up
//! with the stream, so the inner loop is integer: sixteen int16 x int16 products and eight
//! pairwise sums per AVX2 `vpmaddwd`, twice the multiply-adds of an f32 FMA, on weights
//! widened from 8 or 4 bits in registers.
//!
//! Layout: output channels (PyTorch's `[out, in]` rows) are packed in blocks of four, the
//! rows padded with zeros to whole runs (and the last block with zero rows). A step holds 32
//! bytes of each of the block's four rows, one after the other, so a block streams from
//! memory as one sequential run that the hardware prefetcher follows (four rows read side
//! by side from four places measured at half the bandwidth). int8 steps are 32 values;
//! int4 steps are 64 values offset by 8 (0..=15): 16-bit word `j` of a row's 32 bytes holds
//! values `j`, `j + 16`, `j + 32` and `j + 48` in its four nibbles, so one 32-byte load,
//! three shifts and three masks give four vectors of sixteen weights. The offset is taken
//! out once per run, as 8 times the run's sum of activations.

use rayon::prelude::*;

/// Values per unrolled step: int8, two vectors of sixteen int16; int4, four.
const STEP8: usize = 32;
const STEP4: usize = 64;

/// Most input values per scale run: one int32 lane sums `run / 8` products of at most
/// 32767 * 128 in magnitude, which stays below 2^31 for runs up to 4096; 2048 leaves margin.
const MAX_RUN: usize = 2048;

/// Longest run used for a per-channel (or per-tensor) scale: short enough that the f32
/// rescale of each run's exact int32 sum is the only rounding.
const CHANNEL_RUN: usize = 512;

/// Weight rows per block: each activation vector loaded serves four rows, and the four rows
/// stream from memory as one sequential run.
const ROWS: usize = 4;

/// Bytes of packed weights per parallel task, at least: smaller tasks cost more in rayon's
/// hand-off than they save.
const MIN_TASK_BYTES: usize = 64 << 10;

/// A weight matrix stored as int8 or int4 values with a scale per run of inputs.
#[derive(Debug, Clone)]
pub struct PackedMatrix {
    n: usize,
    k: usize,
    bits: u32,
    run: usize,
    runs: usize,
    data: Vec<u8>,
    /// `[blocks * ROWS, runs]`: the scale of each run of `run` input values.
    scales: Vec<f32>,
}

/// Bytes of one row in one step.
const STEP_BYTES: usize = 32;

impl PackedMatrix {
    /// Packs integer weights `q: [n, k]` (row-major, output-major), each within the signed
    /// range of `bits` (2 to 8), whose scale is `scales[row * (k / group) + i / group]` for
    /// input `i` (`group == k`: one scale per row). `None` when the layout has no packed
    /// form: more than 8 bits, or blocks that are not a multiple of the step (32 values for
    /// int8, 64 for int4) or above 2048, which stay on the float path.
    pub fn new(q: &[i8], n: usize, k: usize, bits: u32, group: usize, scales: &[f32]) -> Option<Self> {
        if !(2..=8).contains(&bits) || group == 0 || k % group != 0 || q.len() != n * k {
            return None;
        }
        if scales.len() != n * (k / group) {
            return None;
        }
        let int4 = bits <= 4;
        let step = if int4 { STEP4 } else { STEP8 };
        let (run, runs) = if group == k {
            let run = k.next_multiple_of(step).min(CHANNEL_RUN);
            (run, k.div_ceil(run))
        } else if group % step == 0 && group <= MAX_RUN {
            (group, k / group)
        } else {
            return None;
        };
        let steps = run * runs / step;
        let blocks = n.div_ceil(ROWS);
        let mut data = vec![0u8; blocks * steps * ROWS * STEP_BYTES];
        let mut run_scales = vec![0f32; blocks * ROWS * runs];
        let groups = k / group;
        for r in 0..n {
            let row = &q[r * k..(r + 1) * k];
            let value = |i: usize| if i < k { row[i] } else { 0 };
            let (block, j) = (r / ROWS, r % ROWS);
            for s in 0..steps {
                let at = ((block * steps + s) * ROWS + j) * STEP_BYTES;
                let out = &mut data[at..at + STEP_BYTES];
                if int4 {
                    for w in 0..16 {
                        let word =
                            (0..4).fold(0u16, |acc, q| acc | (((value(s * STEP4 + w + 16 * q) + 8) as u16) << (4 * q)));
                        out[2 * w..2 * w + 2].copy_from_slice(&word.to_le_bytes());
                    }
                } else {
                    for (i, b) in out.iter_mut().enumerate() {
                        *b = value(s * STEP8 + i) as u8;
                    }
                }
            }
            for c in 0..runs {
                run_scales[r * runs + c] = scales[r * groups + (c * run).min(k - 1) / group];
            }
        }
        Some(Self { n, k, bits, run, runs, data, scales: run_scales })
    }

    /// Output channels.
    pub fn rows(&self) -> usize {
        self.n
    }

    /// Input features.
    pub fn cols(&self) -> usize {
        self.k
    }

    /// Bits per stored value: 8, or 4 (for 2- to 4-bit weights).
    pub fn storage_bits(&self) -> u32 {
        if self.bits <= 4 { 4 } else { 8 }
    }

    /// Bytes one product reads: the values and the scales.
    pub fn bytes(&self) -> usize {
        self.data.len() + 4 * self.scales.len()
    }

    fn blocks(&self) -> usize {
        self.n.div_ceil(ROWS)
    }

    fn block_bytes(&self) -> usize {
        self.data.len() / self.blocks()
    }

    /// `out[m, n] = x[m, :] . W[n, :]` (`x: [m, k]` row-major), each row of `x` quantized
    /// symmetrically to int16 first.
    pub fn matmul(&self, x: &[f32], m: usize, out: &mut [f32]) {
        assert!(x.len() == m * self.k && out.len() == m * self.n);
        let padded = self.run * self.runs;
        let mut xq = vec![0i16; m * padded];
        let mut xs = vec![0f32; m];
        for r in 0..m {
            xs[r] = quantize_row(&x[r * self.k..(r + 1) * self.k], &mut xq[r * padded..r * padded + self.k]);
        }
        // int4: 8 x each run's activation sum, the offset of the stored nibbles
        let offsets: Vec<i32> = match self.storage_bits() {
            4 => xq.chunks(self.run).map(|c| 8 * c.iter().map(|&v| i32::from(v)).sum::<i32>()).collect(),
            _ => vec![0; m * self.runs],
        };
        // Output channel-major while computing (each task owns a contiguous slab of blocks),
        // row-major at the end.
        let blocks = self.blocks();
        let mut out_t = vec![0f32; blocks * ROWS * m];
        let per_task = (MIN_TASK_BYTES / self.block_bytes().max(1))
            .max(blocks.div_ceil(rayon::current_num_threads().max(1)))
            .max(1);
        out_t.par_chunks_mut(per_task * ROWS * m).enumerate().for_each(|(t, slab)| {
            for (i, dst) in slab.chunks_mut(ROWS * m).enumerate() {
                self.block_products(t * per_task + i, &xq, &offsets, &xs, dst);
            }
        });
        for (c, vals) in out_t.chunks(m).take(self.n).enumerate() {
            for (r, &v) in vals.iter().enumerate() {
                out[r * self.n + c] = v;
            }
        }
    }

    /// `dst[j * m + r] = x[r] . W[block * ROWS + j]` for the block's four rows.
    fn block_products(&self, block: usize, xq: &[i16], offsets: &[i32], xs: &[f32], dst: &mut [f32]) {
        let (bb, m, padded) = (self.block_bytes(), xs.len(), self.run * self.runs);
        let w = &self.data[block * bb..(block + 1) * bb];
        let scales = &self.scales[block * ROWS * self.runs..(block + 1) * ROWS * self.runs];
        for r in 0..m {
            let x = Row { x: &xq[r * padded..(r + 1) * padded], offsets: &offsets[r * self.runs..(r + 1) * self.runs] };
            let sums = self.dot(w, scales, x);
            for j in 0..ROWS {
                dst[j * m + r] = sums[j] * xs[r];
            }
        }
    }

    /// The products of one block's rows (`w`, `scales`) with one activation row.
    fn dot(&self, w: &[u8], scales: &[f32], x: Row) -> [f32; ROWS] {
        let int4 = self.storage_bits() == 4;
        #[cfg(target_arch = "x86_64")]
        if std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma") {
            // SAFETY: the CPU has the features; `w` holds a block of `runs * run` values per
            // row (bytes, or nibbles for int4) and `x.x` that many values, as `new` and
            // `matmul` lay them out.
            return unsafe {
                if int4 { dot_avx2::<true>(w, scales, self.run, x) } else { dot_avx2::<false>(w, scales, self.run, x) }
            };
        }
        dot_portable(w, scales, self.run, int4, x)
    }
}

/// One quantized activation row, and (int4) each run's offset correction.
#[derive(Clone, Copy)]
struct Row<'a> {
    x: &'a [i16],
    offsets: &'a [i32],
}

/// Symmetric int16 quantization of one activation row into `q`; returns the scale.
fn quantize_row(x: &[f32], q: &mut [i16]) -> f32 {
    #[cfg(target_arch = "x86_64")]
    if std::is_x86_feature_detected!("avx2") {
        // SAFETY: the CPU has the feature (which lets `round_ties_even` vectorise instead of
        // calling libm's `rintf` per value).
        return unsafe { quantize_row_avx2(x, q) };
    }
    quantize_row_portable(x, q)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn quantize_row_avx2(x: &[f32], q: &mut [i16]) -> f32 {
    quantize_row_portable(x, q)
}

#[inline(always)]
fn quantize_row_portable(x: &[f32], q: &mut [i16]) -> f32 {
    let absmax = x.iter().fold(0f32, |m, &v| m.max(v.abs()));
    if absmax == 0.0 || !absmax.is_finite() {
        // zeros stay zeros; a non-finite row poisons its outputs as f32 would
        q.fill(0);
        return if absmax.is_finite() { 0.0 } else { f32::NAN };
    }
    let scale = absmax / 32767.0;
    let inv = 1.0 / scale;
    for (d, &v) in q.iter_mut().zip(x) {
        *d = (v * inv).round_ties_even().clamp(-32767.0, 32767.0) as i16;
    }
    scale
}

/// Stored value `i` of row `j` of a block: int8 as is, int4 its nibble (offset included).
#[inline(always)]
fn weight(w: &[u8], int4: bool, j: usize, i: usize) -> i32 {
    let step = if int4 { STEP4 } else { STEP8 };
    let at = ((i / step) * ROWS + j) * STEP_BYTES;
    let v = i % step;
    if int4 {
        let word = u16::from_le_bytes([w[at + 2 * (v % 16)], w[at + 2 * (v % 16) + 1]]);
        i32::from((word >> (4 * (v / 16))) & 0x0F)
    } else {
        i32::from(w[at + v] as i8)
    }
}

fn dot_portable(w: &[u8], scales: &[f32], run: usize, int4: bool, x: Row) -> [f32; ROWS] {
    let runs = scales.len() / ROWS;
    std::array::from_fn(|j| {
        let mut acc = 0f32;
        for c in 0..runs {
            let sum: i32 =
                (c * run..(c + 1) * run).map(|i| weight(w, int4, j, i) * i32::from(x.x[i])).sum::<i32>() - x.offsets[c];
            acc += sum as f32 * scales[j * runs + c];
        }
        acc
    })
}

/// Bytes ahead of the stream that each step asks the prefetcher for.
const PREFETCH_AHEAD: usize = 2048;

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn dot_avx2<const INT4: bool>(w: &[u8], scales: &[f32], run: usize, x: Row) -> [f32; ROWS] {
    use std::arch::x86_64::*;
    let runs = scales.len() / ROWS;
    let step = if INT4 { STEP4 } else { STEP8 };
    let mut acc = [_mm256_setzero_ps(); ROWS];
    let nibble = _mm256_set1_epi16(0x0F);
    let mut p = w.as_ptr();
    for c in 0..runs {
        // int4: the offset correction rides in lane 0 of the run's sum
        let start = _mm256_setr_epi32(-x.offsets[c], 0, 0, 0, 0, 0, 0, 0);
        let mut sums = [start; ROWS];
        let mut i = c * run;
        while i < (c + 1) * run {
            // a prefetch past the end of the block is a hint, never a fault
            _mm_prefetch(p.wrapping_add(PREFETCH_AHEAD) as *const i8, _MM_HINT_T0);
            _mm_prefetch(p.wrapping_add(PREFETCH_AHEAD + 64) as *const i8, _MM_HINT_T0);
            // SAFETY (whole step): i + step <= runs * run, the length of `x.x`, and the
            // block holds ROWS * STEP_BYTES bytes for this step at `p`.
            let xp = unsafe { x.x.as_ptr().add(i) } as *const __m256i;
            if INT4 {
                let xv = unsafe {
                    [
                        _mm256_loadu_si256(xp),
                        _mm256_loadu_si256(xp.add(1)),
                        _mm256_loadu_si256(xp.add(2)),
                        _mm256_loadu_si256(xp.add(3)),
                    ]
                };
                for (j, sum) in sums.iter_mut().enumerate() {
                    let v = unsafe { _mm256_loadu_si256(p.add(j * STEP_BYTES) as *const __m256i) };
                    let p0 = _mm256_madd_epi16(_mm256_and_si256(v, nibble), xv[0]);
                    let p1 = _mm256_madd_epi16(_mm256_and_si256(_mm256_srli_epi16(v, 4), nibble), xv[1]);
                    let p2 = _mm256_madd_epi16(_mm256_and_si256(_mm256_srli_epi16(v, 8), nibble), xv[2]);
                    let p3 = _mm256_madd_epi16(_mm256_srli_epi16(v, 12), xv[3]);
                    *sum = _mm256_add_epi32(*sum, _mm256_add_epi32(_mm256_add_epi32(p0, p1), _mm256_add_epi32(p2, p3)));
                }
            } else {
                let (x0, x1) = unsafe { (_mm256_loadu_si256(xp), _mm256_loadu_si256(xp.add(1))) };
                for (j, sum) in sums.iter_mut().enumerate() {
                    let (w0, w1) = unsafe {
                        let q = p.add(j * STEP_BYTES);
                        (
                            _mm256_cvtepi8_epi16(_mm_loadu_si128(q as *const __m128i)),
                            _mm256_cvtepi8_epi16(_mm_loadu_si128(q.add(16) as *const __m128i)),
                        )
                    };
                    *sum =
                        _mm256_add_epi32(*sum, _mm256_add_epi32(_mm256_madd_epi16(w0, x0), _mm256_madd_epi16(w1, x1)));
                }
            }
            p = p.wrapping_add(ROWS * STEP_BYTES);
            i += step;
        }
        for j in 0..ROWS {
            acc[j] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(sums[j]), _mm256_set1_ps(scales[j * runs + c]), acc[j]);
        }
    }
    std::array::from_fn(|j| {
        let v = acc[j];
        let h = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
        let h = _mm_add_ps(h, _mm_movehl_ps(h, h));
        let h = _mm_add_ss(h, _mm_shuffle_ps(h, h, 1));
        _mm_cvtss_f32(h)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pseudo(len: usize, seed: u32) -> Vec<f32> {
        (0..len)
            .map(|i| ((i as u32).wrapping_mul(2654435761).wrapping_add(seed) % 2001) as f32 / 1000.0 - 1.0)
            .collect()
    }

    /// The exact product of the int16-quantized rows with the dequantized weights, in f64.
    fn reference(
        x: &[f32],
        m: usize,
        q: &[i8],
        scale_of: impl Fn(usize, usize) -> f32,
        n: usize,
        k: usize,
    ) -> Vec<f64> {
        let mut out = vec![0f64; m * n];
        for r in 0..m {
            let row = &x[r * k..(r + 1) * k];
            let mut xq = vec![0i16; k];
            let s = f64::from(quantize_row(row, &mut xq));
            for c in 0..n {
                out[r * n + c] =
                    (0..k).map(|i| f64::from(xq[i]) * s * f64::from(q[c * k + i]) * f64::from(scale_of(c, i))).sum();
            }
        }
        out
    }

    #[test]
    fn products_match_the_exact_integer_reference() {
        // (m, n, k, bits, group): per channel with padding, blocks, LPBQ-like, 2-bit, batches
        for &(m, n, k, bits, group) in &[
            (1, 5, 7, 8, 7),
            (1, 300, 1030, 8, 1030),
            (3, 64, 256, 4, 64),
            (5, 33, 4608, 4, 64),
            (8, 17, 128, 2, 64),
            (4, 7, 96, 3, 96),
            (2, 9, 2048, 8, 2048),
        ] {
            let q: Vec<i8> =
                pseudo(n * k, 3).iter().map(|v| (v * ((1 << (bits - 1)) - 1) as f32).round() as i8).collect();
            let groups = k / group;
            let scales: Vec<f32> = (0..n * groups).map(|i| 0.01 + (i % 7) as f32 * 0.003).collect();
            let p = PackedMatrix::new(&q, n, k, bits, group, &scales).unwrap();
            let x = pseudo(m * k, 11);
            let mut got = vec![0f32; m * n];
            p.matmul(&x, m, &mut got);
            let want = reference(&x, m, &q, |c, i| scales[c * groups + i / group], n, k);
            for i in 0..m * n {
                let tol = 1e-5 * (1.0 + want[i].abs());
                assert!(
                    (f64::from(got[i]) - want[i]).abs() <= tol,
                    "{m}x{n}x{k} int{bits}/{group} at {i}: {} vs {}",
                    got[i],
                    want[i]
                );
            }
            // the portable path agrees with the vector path
            let mut xq = vec![0i16; p.run * p.runs];
            quantize_row(&x[..k], &mut xq[..k]);
            let offsets: Vec<i32> = match p.storage_bits() {
                4 => xq.chunks(p.run).map(|c| 8 * c.iter().map(|&v| i32::from(v)).sum::<i32>()).collect(),
                _ => vec![0; p.runs],
            };
            let row = Row { x: &xq, offsets: &offsets };
            let w = &p.data[..p.block_bytes()];
            let scales = &p.scales[..ROWS * p.runs];
            let portable = dot_portable(w, scales, p.run, p.storage_bits() == 4, row);
            let fast = p.dot(w, scales, row);
            for j in 0..ROWS {
                assert!((portable[j] - fast[j]).abs() <= 1e-5 * (1.0 + portable[j].abs()), "row {j}");
            }
        }
    }

    #[test]
    fn unpackable_layouts_are_refused() {
        let q = vec![0i8; 4 * 48];
        assert!(PackedMatrix::new(&q, 4, 48, 4, 16, &[1.0; 12]).is_none()); // blocks of 16
        let q2 = vec![0i8; 4 * 64];
        assert!(PackedMatrix::new(&q2, 4, 64, 4, 32, &[1.0; 8]).is_none()); // int4 blocks of 32
        assert!(PackedMatrix::new(&q2, 4, 64, 8, 32, &[1.0; 8]).is_some());
        assert!(PackedMatrix::new(&q, 4, 48, 12, 48, &[1.0; 4]).is_none()); // 12 bits
        assert!(PackedMatrix::new(&q, 4, 48, 8, 48, &[1.0; 4]).is_some());
    }
}

//! Memory read bandwidth of this machine, the denominator of every decode-speed bound.
//!
//! Decoding one token reads every weight once, so `bandwidth / weight bytes` is the fastest
//! a memory-bound decoder can go. The measurement streams a buffer much larger than the
//! caches with all rayon threads, each summing its own contiguous slab with wide loads (a
//! single-threaded or framework-level read understates the bound several-fold).

use std::time::Instant;

use rayon::prelude::*;
use serde::Serialize;

#[derive(Debug, Clone, Copy, Serialize)]
pub struct Bandwidth {
    /// Median of the repetitions, bytes per second / 1e9 (the bound we compare against:
    /// on a shared VM the best repetition is an outlier, up to a third above the median).
    pub gb_per_s: f64,
    /// Best repetition.
    pub best_gb_per_s: f64,
    pub bytes: usize,
    pub threads: usize,
}

impl Bandwidth {
    pub fn text(&self) -> String {
        format!(
            "memory read bandwidth: {:.2} GB/s median, {:.2} GB/s best ({} threads, {} MiB buffer)",
            self.gb_per_s,
            self.best_gb_per_s,
            self.threads,
            self.bytes >> 20
        )
    }
}

/// Reads `bytes` (rounded to whole f32) `reps` times; reports the median and best rates.
pub fn measure_read_bandwidth(bytes: usize, reps: usize) -> Bandwidth {
    let n = bytes / 4;
    let threads = rayon::current_num_threads();
    let buf: Vec<f32> = (0..n).into_par_iter().map(|i| (i % 7) as f32).collect();
    let slab = n.div_ceil(threads * 4).max(1 << 16);
    let mut times = Vec::new();
    let mut sink = 0f32;
    for _ in 0..reps.max(1) {
        let t = Instant::now();
        sink += buf.par_chunks(slab).map(sum_slab).sum::<f32>();
        times.push(t.elapsed().as_secs_f64());
    }
    std::hint::black_box(sink);
    times.sort_by(f64::total_cmp);
    let rate = |t: f64| (n * 4) as f64 / t / 1e9;
    Bandwidth { gb_per_s: rate(times[times.len() / 2]), best_gb_per_s: rate(times[0]), bytes: n * 4, threads }
}

fn sum_slab(x: &[f32]) -> f32 {
    #[cfg(target_arch = "x86_64")]
    if std::is_x86_feature_detected!("avx2") {
        // SAFETY: the CPU supports AVX2.
        return unsafe { sum_avx2(x) };
    }
    sum_portable(x)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn sum_avx2(x: &[f32]) -> f32 {
    sum_portable(x)
}

/// 32 independent lanes: enough loads in flight to saturate the memory system.
#[inline(always)]
fn sum_portable(x: &[f32]) -> f32 {
    let mut lanes = [0f32; 32];
    let chunks = x.len() / 32;
    for c in 0..chunks {
        let s = &x[c * 32..c * 32 + 32];
        for i in 0..32 {
            lanes[i] += s[i];
        }
    }
    lanes.iter().sum::<f32>() + x[chunks * 32..].iter().sum::<f32>()
}

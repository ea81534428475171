//! Vision-encoder latency and peak memory per input resolution, on random weights.

use std::time::Instant;

use autoneural_model::vision::EncoderConfig;
use burn::module::Module;
use burn::tensor::{Device, Distribution, Tensor};
use serde::Serialize;

use crate::peak_alloc;

#[derive(Debug, Clone, Serialize)]
pub struct VisionBenchRow {
    pub encoder: String,
    pub resolution: usize,
    pub params: usize,
    pub tokens: usize,
    /// Median over the timed runs.
    pub latency_ms: f64,
    pub min_ms: f64,
    /// Peak heap during one forward pass above what was live before it (activations and
    /// scratch; weights excluded). None without the counting allocator.
    pub peak_activation_mib: Option<f64>,
    /// Weights (f32).
    pub weights_mib: f64,
    pub runs: usize,
    pub threads: usize,
}

/// Runs `encoder` at each resolution: one warm-up pass, then `runs` timed passes.
pub fn run(
    name: &str,
    config: &EncoderConfig,
    resolutions: &[usize],
    runs: usize,
    device: &Device,
) -> autoneural_model::Result<Vec<VisionBenchRow>> {
    let model = config.init(device)?;
    let params = model.num_params();
    let mut rows = Vec::new();
    for &r in resolutions {
        let pixels = || Tensor::<4>::random([1, 3, r, r], Distribution::Uniform(0.0, 1.0), device);
        // Warm-up (also materialises lazily initialised weights).
        let _ = model.tokens(pixels()).into_data();
        peak_alloc::reset_peak();
        let before = peak_alloc::current_bytes();
        let mut times = Vec::new();
        let mut tokens = 0;
        for _ in 0..runs.max(1) {
            let x = pixels();
            let t0 = Instant::now();
            let y = model.tokens(x);
            let data = y.into_data();
            times.push(t0.elapsed().as_secs_f64() * 1e3);
            tokens = data.shape()[1];
        }
        let peak = peak_alloc::peak_bytes().zip(before).map(|(p, b)| p.saturating_sub(b) as f64 / 1048576.0);
        times.sort_by(f64::total_cmp);
        rows.push(VisionBenchRow {
            encoder: name.to_string(),
            resolution: r,
            params,
            tokens,
            latency_ms: times[times.len() / 2],
            min_ms: times[0],
            peak_activation_mib: peak,
            weights_mib: params as f64 * 4.0 / 1048576.0,
            runs: times.len(),
            threads: rayon::current_num_threads(),
        });
    }
    Ok(rows)
}

/// `bench vision`: encoders timed in one process, each row as a ratio to the first encoder
/// at the same resolution.
pub struct VisionComparison {
    pub rows: Vec<VisionBenchRow>,
    pub device: String,
    pub runs: usize,
}

impl VisionComparison {
    /// The first encoder's latency at `resolution`.
    fn baseline(&self, resolution: usize) -> Option<f64> {
        let first = &self.rows.first()?.encoder;
        self.rows.iter().find(|x| &x.encoder == first && x.resolution == resolution).map(|x| x.latency_ms)
    }

    pub fn json(&self) -> serde_json::Value {
        let rows = self
            .rows
            .iter()
            .map(|r| {
                let mut v = serde_json::to_value(r).expect("a row serializes");
                v["device"] = serde_json::json!(self.device);
                v["latency_vs_first"] = serde_json::json!(self.baseline(r.resolution).map(|b| r.latency_ms / b));
                v
            })
            .collect();
        serde_json::Value::Array(rows)
    }

    pub fn text(&self) -> String {
        use std::fmt::Write;
        let mut s = format!(
            "{:<22} {:>6} {:>9} {:>7} {:>11} {:>11} {:>13} {:>8}\n",
            "encoder", "res", "params", "tokens", "median ms", "min ms", "peak act MiB", "x first"
        );
        for r in &self.rows {
            let _ = writeln!(
                s,
                "{:<22} {:>6} {:>8.1}M {:>7} {:>11.1} {:>11.1} {:>13} {:>8.2}",
                r.encoder,
                r.resolution,
                r.params as f64 / 1e6,
                r.tokens,
                r.latency_ms,
                r.min_ms,
                r.peak_activation_mib.map_or("n/a".into(), |m| format!("{m:.0}")),
                self.baseline(r.resolution).map_or(f64::NAN, |b| r.latency_ms / b),
            );
        }
        let _ = writeln!(
            s,
            "({} threads, device {}, {} timed runs each after one warm-up)",
            self.rows.first().map_or(0, |r| r.threads),
            self.device,
            self.runs
        );
        s
    }
}

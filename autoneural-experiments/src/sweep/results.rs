//! One finished run's figures (`result.json`), and the table across runs (`results.jsonl`,
//! `results.csv`, one row per run, a column per figure).

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use autoneural_npu::NpuPrediction;

/// The architecture of the run's model.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ModelSummary {
    /// `MobileNetV5` or `ViT`.
    pub encoder: String,
    pub vision_params: usize,
    pub connector_params: usize,
    pub language_params: usize,
    pub num_layers: usize,
    /// Layers that attend, full or sliding.
    pub attention_layers: usize,
    /// Of those, LFM3's sliding-window layers.
    #[serde(default)]
    pub sliding_layers: usize,
    /// Attention layers / all layers (0: pure gated convolution, 1: pure attention).
    pub attention_ratio: f64,
    pub image_tokens: usize,
    pub image_size: usize,
}

/// Encoder output error with every weight at `bits` (per channel), against float.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SqnrPoint {
    pub bits: u32,
    pub sqnr_db: f64,
    pub relative_rms: f64,
}

/// Decoding at `context` positions of past state, measured on this machine.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DecodePoint {
    pub context: usize,
    pub tok_s: f64,
    /// KV cache + conv windows after the context (f32, batch 1).
    pub state_bytes: usize,
    pub kv_bytes: usize,
    pub conv_bytes: usize,
}

/// Encoder latency at `resolution` on this machine (random weights of the run's shapes).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LatencyPoint {
    pub resolution: usize,
    pub cpu_ms: f64,
}

/// What a finished run measured.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RunResult {
    pub experiment: String,
    pub run_id: String,
    /// The sweep's axes and this run's value of each, in the file's order.
    pub axes: Vec<(String, Value)>,
    pub model: ModelSummary,
    /// The QAT stage's precision policy, if the run has one.
    pub precision: Option<String>,
    pub steps: usize,
    pub train_seconds: f64,
    /// The last stage's final validation (teacher-forced).
    pub val_loss: Option<f64>,
    pub val_token_accuracy: Option<f64>,
    /// The same loss with each image swapped for another's (equal: the images are ignored).
    pub val_loss_images_rotated: Option<f64>,
    /// Exact match on the evaluation split, overall and per task family.
    pub exact_match: Option<f64>,
    pub tasks: BTreeMap<String, f64>,
    /// `[eval] benchmarks`: each benchmark's headline score, by its VLMEvalKit name.
    #[serde(default)]
    pub benchmarks: BTreeMap<String, f64>,
    /// A QAT run: validation loss in float and after PTQ (before QAT), and after QAT.
    pub float_val_loss: Option<f64>,
    pub ptq_val_loss: Option<f64>,
    pub qat_val_loss: Option<f64>,
    pub encoder_sqnr: Vec<SqnrPoint>,
    /// The encoder output at W8A16 (weights per channel, 16-bit op inputs calibrated on the
    /// same images): the paper's quantization-error measurement.
    #[serde(default)]
    pub encoder_w8a16: Option<SqnrPoint>,
    pub decode: Vec<DecodePoint>,
    pub encoder_latency: Vec<LatencyPoint>,
    /// Predicted by the NPU cost model (not measured).
    pub npu: Option<NpuPrediction>,
}

impl RunResult {
    /// Writes `result.json` (through a temporary file: its presence marks the run finished).
    pub fn write(&self, run_dir: &Path) -> Result<()> {
        let tmp = run_dir.join(".result.json.tmp");
        std::fs::write(&tmp, serde_json::to_string_pretty(self)?)
            .with_context(|| format!("writing {}", tmp.display()))?;
        std::fs::rename(&tmp, run_dir.join(super::RESULT)).with_context(|| format!("renaming {}", tmp.display()))
    }

    pub fn read(run_dir: &Path) -> Result<Self> {
        let path = run_dir.join(super::RESULT);
        let text = autoneural_io::read::read_to_string(&path, autoneural_io::read::CONFIG)?;
        serde_json::from_str(&text).with_context(|| format!("{}: not a run result", path.display()))
    }

    /// The row: column name -> value (numbers stay numbers).
    pub fn row(&self) -> Vec<(String, Value)> {
        let mut r: Vec<(String, Value)> = vec![("run_id".into(), self.run_id.clone().into())];
        for (k, v) in &self.axes {
            r.push((k.clone(), v.clone()));
        }
        let m = &self.model;
        r.push(("encoder".into(), m.encoder.clone().into()));
        r.push(("num_layers".into(), m.num_layers.into()));
        r.push(("attention_layers".into(), m.attention_layers.into()));
        r.push(("sliding_layers".into(), m.sliding_layers.into()));
        r.push(("attention_ratio".into(), num(m.attention_ratio)));
        r.push(("vision_params".into(), m.vision_params.into()));
        r.push(("language_params".into(), m.language_params.into()));
        r.push(("precision".into(), self.precision.clone().map(Value::from).unwrap_or(Value::Null)));
        r.push(("steps".into(), self.steps.into()));
        r.push(("train_seconds".into(), num(self.train_seconds)));
        for (k, v) in [
            ("val_loss", self.val_loss),
            ("val_token_accuracy", self.val_token_accuracy),
            ("val_loss_images_rotated", self.val_loss_images_rotated),
            ("exact_match", self.exact_match),
            ("float_val_loss", self.float_val_loss),
            ("ptq_val_loss", self.ptq_val_loss),
            ("qat_val_loss", self.qat_val_loss),
        ] {
            r.push((k.into(), v.map(num).unwrap_or(Value::Null)));
        }
        for (task, v) in &self.tasks {
            r.push((format!("exact_match.{task}"), num(*v)));
        }
        for (bench, v) in &self.benchmarks {
            r.push((format!("benchmark.{bench}"), num(*v)));
        }
        for s in &self.encoder_sqnr {
            r.push((format!("encoder_sqnr_db.w{}", s.bits), num(s.sqnr_db)));
        }
        if let Some(s) = &self.encoder_w8a16 {
            r.push(("encoder_w8a16_sqnr_db".into(), num(s.sqnr_db)));
            r.push(("encoder_w8a16_relative_rms".into(), num(s.relative_rms)));
        }
        for d in &self.decode {
            r.push((format!("decode_tok_s.ctx{}", d.context), num(d.tok_s)));
            r.push((format!("state_bytes.ctx{}", d.context), d.state_bytes.into()));
        }
        for l in &self.encoder_latency {
            r.push((format!("cpu_encoder_ms.{}px", l.resolution), num(l.cpu_ms)));
        }
        if let Some(n) = &self.npu {
            for (res, ms) in &n.encoder_ms {
                r.push((format!("npu_predicted_encoder_ms.{res}px"), ms.map(num).unwrap_or(Value::Null)));
            }
            r.push(("npu_predicted_ttft_ms".into(), n.ttft_ms.map(num).unwrap_or(Value::Null)));
            r.push(("npu_predicted_decode_tok_s".into(), n.decode_tok_s.map(num).unwrap_or(Value::Null)));
            r.push(("npu_predicted_max_context".into(), n.max_context.into()));
        }
        r
    }
}

fn num(x: f64) -> Value {
    serde_json::Number::from_f64(x).map(Value::Number).unwrap_or(Value::Null)
}

fn csv_field(v: &Value) -> String {
    let text = match v {
        Value::Null => String::new(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    };
    if text.contains([',', '"', '\n']) { format!("\"{}\"", text.replace('"', "\"\"")) } else { text }
}

/// Writes `results.jsonl` (one `RunResult` per line) and `results.csv` (the rows, columns
/// in first-seen order; empty where a run lacks a figure) in `dir`.
pub fn write_tables(results: &[RunResult], dir: &Path) -> Result<()> {
    let mut jsonl = String::new();
    for r in results {
        jsonl += &serde_json::to_string(r)?;
        jsonl.push('\n');
    }
    std::fs::write(dir.join("results.jsonl"), jsonl)
        .with_context(|| format!("writing {}/results.jsonl", dir.display()))?;
    let rows: Vec<Vec<(String, Value)>> = results.iter().map(RunResult::row).collect();
    let mut columns: Vec<String> = Vec::new();
    for row in &rows {
        for (k, _) in row {
            if !columns.contains(k) {
                columns.push(k.clone());
            }
        }
    }
    let mut csv = columns.iter().map(|c| csv_field(&Value::from(c.as_str()))).collect::<Vec<_>>().join(",") + "\n";
    for row in &rows {
        let line: Vec<String> = columns
            .iter()
            .map(|c| row.iter().find(|(k, _)| k == c).map(|(_, v)| csv_field(v)).unwrap_or_default())
            .collect();
        csv += &(line.join(",") + "\n");
    }
    std::fs::write(dir.join("results.csv"), csv).with_context(|| format!("writing {}/results.csv", dir.display()))
}

//! Predictions from an export directory (`autoneural export`): the graphs its
//! `manifest.json` lists, read by [`super::onnx`] (QDQ forms when present), timed at their
//! static shapes.

use std::fmt::Write;
use std::path::Path;

use anyhow::{Context, Result};
use serde::Serialize;

use super::onnx::read_onnx;
use super::ops::{Bits, totals};
use super::predict::label;
use super::profile::DeviceProfile;
use super::roofline::{footprint, graph_time};

/// One graph of the export.
#[derive(Debug, Clone, Serialize)]
pub struct GraphPrediction {
    pub graph: String,
    pub file: String,
    pub ops: usize,
    pub macs: u64,
    pub weight_bytes: u64,
    /// `None`: the graph's state and activations do not fit the session memory.
    pub ms: Option<f64>,
}

/// Every graph of an export directory.
#[derive(Debug, Clone, Serialize)]
pub struct ExportPrediction {
    pub kind: String,
    pub profile: String,
    pub prefill_len: usize,
    pub context: usize,
    pub graphs: Vec<GraphPrediction>,
}

/// Reads `dir/manifest.json` and predicts `vision_encoder`, `prefill` and `decode` (those
/// present), vision at `vision_bits` and the language graphs at `lm_bits`.
pub fn predict_export(
    dir: &Path,
    vision_bits: Bits,
    lm_bits: Bits,
    profile: &DeviceProfile,
) -> Result<ExportPrediction> {
    let path = dir.join("manifest.json");
    let text = autoneural_io::read::read_to_string(&path, autoneural_io::read::CONFIG)?;
    let m: serde_json::Value = serde_json::from_str(&text).with_context(|| format!("{}: not JSON", path.display()))?;
    let usize_key = |k: &str| {
        m[k].as_u64().map(|v| v as usize).with_context(|| format!("{}: `{k}` missing or not a number", path.display()))
    };
    let (prefill_len, context) = (usize_key("prefill_len")?, usize_key("context")?);
    let mut graphs = Vec::new();
    for (name, bits) in [("vision_encoder", vision_bits), ("prefill", lm_bits), ("decode", lm_bits)] {
        let entry = &m["graphs"][name];
        if entry.is_null() {
            continue;
        }
        let file = entry["qdq"]
            .as_str()
            .or(entry["file"].as_str())
            .with_context(|| format!("{}: graphs.{name}.file missing", path.display()))?;
        let ops = read_onnx(&dir.join(file), bits)?;
        let t = totals(&ops);
        let ms = (footprint(&ops, t.state_bytes) <= profile.session_memory_bytes)
            .then(|| graph_time(&ops, bits.activation, profile).total_s * 1e3);
        graphs.push(GraphPrediction {
            graph: name.into(),
            file: file.into(),
            ops: t.ops,
            macs: t.macs,
            weight_bytes: t.weight_bytes,
            ms,
        });
    }
    Ok(ExportPrediction { kind: label(&profile.name), profile: profile.name.clone(), prefill_len, context, graphs })
}

impl ExportPrediction {
    pub fn markdown(&self) -> String {
        let mut s = String::new();
        let _ = writeln!(s, "### NPU cost of the exported graphs: {}\n", self.kind);
        let _ = writeln!(s, "prefill {} positions, context {} slots\n", self.prefill_len, self.context);
        let _ = writeln!(s, "| graph | file | ops | GMACs | weights (MB) | {} |\n|---|---|---|---|---|---|", self.kind);
        for g in &self.graphs {
            let ms = g.ms.map_or("does not fit".into(), |v| format!("{v:.2} ms"));
            let (gmacs, mb) = (g.macs as f64 / 1e9, g.weight_bytes as f64 / 1e6);
            let _ = writeln!(s, "| {} | {} | {} | {gmacs:.3} | {mb:.2} | {ms} |", g.graph, g.file, g.ops);
        }
        s
    }
}

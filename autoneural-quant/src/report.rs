//! `autoneural quant-report`: how much a precision policy perturbs a model. Per weight, its
//! SQNR and relative RMS error at the policy; per group, their mean and worst; with images,
//! the SQNR and relative RMS error of the encoder's output (image features after the
//! connector) against the float model; and the same for a sweep of uniform per-channel
//! bit-widths (weights only). Activations are quantized at the inputs of every weight op
//! (see `autoneural_model::quant::activations`), with ranges calibrated on the same images.

use std::path::Path;

use anyhow::{Context, Result, bail};
use autoneural_data::SourceSpec;
use autoneural_model::quant::activations::{observe, quantize_with};
use autoneural_model::quant::apply::{WeightReport, activation_encodings, quantize_weights};
use autoneural_model::quant::policy::{Group, Precision, PrecisionPolicy, WeightScheme};
use autoneural_model::quant::{Granularity, relative_rms, sqnr_db};
use autoneural_model::vlm::VisionLanguageModel;
use burn::tensor::Tensor;
use serde::Serialize;

use autoneural_eval::plot::{LineChart, Series};

/// Error of one output tensor against the float model's, over every value.
#[derive(Debug, Clone, Serialize)]
pub struct OutputError {
    pub images: usize,
    pub sqnr_db: f64,
    pub relative_rms: f64,
}

/// A group's weights at one precision.
#[derive(Debug, Clone, Serialize)]
pub struct GroupSummary {
    pub group: Group,
    pub weights: usize,
    pub mean_sqnr_db: f64,
    pub min_sqnr_db: f64,
    /// Relative RMS error over all of the group's weight values together.
    pub relative_rms: f64,
}

/// One bit-width of the sweep (every group per channel at `bits`).
#[derive(Debug, Clone, Serialize)]
pub struct SweepRow {
    pub bits: u32,
    pub groups: Vec<GroupSummary>,
    pub encoder: Option<OutputError>,
}

#[derive(Debug, Clone, Serialize)]
pub struct QuantReport {
    pub model: String,
    /// The vision encoder's family: `MobileNetV5` or `ViT`.
    pub encoder_kind: String,
    pub policy: PrecisionPolicy,
    /// Whether `encoder` has the policy's activation quantization too (calibrated min-max
    /// or percentile ranges on the same images), or only its weights.
    pub activations_quantized: bool,
    pub groups: Vec<GroupSummary>,
    /// The encoder output at the policy: weights and activations.
    pub encoder: Option<OutputError>,
    /// The same with float activations.
    pub encoder_weights_only: Option<OutputError>,
    /// Float weights, activations quantized (when the policy quantizes them).
    pub encoder_activations_only: Option<OutputError>,
    pub sweep: Vec<SweepRow>,
    pub weights: Vec<WeightReport>,
}

/// Every group at `bits`, per channel, weights only.
fn uniform(bits: u32) -> PrecisionPolicy {
    let p = Precision { weights: Some(WeightScheme { bits, granularity: Granularity::PerChannel }), activations: None };
    PrecisionPolicy {
        name: format!("w{bits}"),
        vision: p,
        connector: p,
        language: p,
        lm_head: p,
        kv_cache_bits: None,
        overrides: Vec::new(),
    }
}

fn summarise(weights: &[WeightReport]) -> Vec<GroupSummary> {
    let mut out = Vec::new();
    for group in [Group::Vision, Group::Connector, Group::Language, Group::LmHead] {
        let ws: Vec<&WeightReport> = weights.iter().filter(|w| w.group == group).collect();
        if ws.is_empty() {
            continue;
        }
        let finite: Vec<f64> = ws.iter().map(|w| w.sqnr_db).filter(|s| s.is_finite()).collect();
        // Pooled over the group's values: sqrt(sum noise energy / sum signal energy).
        let (mut noise, mut signal) = (0.0, 0.0);
        for w in &ws {
            let energy = w.shape.iter().product::<usize>() as f64 * w.mean_square;
            signal += energy;
            noise += energy * w.relative_rms * w.relative_rms;
        }
        out.push(GroupSummary {
            group,
            weights: ws.len(),
            mean_sqnr_db: if finite.is_empty() {
                f64::INFINITY
            } else {
                finite.iter().sum::<f64>() / finite.len() as f64
            },
            min_sqnr_db: finite.iter().copied().fold(f64::INFINITY, f64::min),
            relative_rms: if signal > 0.0 { (noise / signal).sqrt() } else { 0.0 },
        });
    }
    out
}

/// Up to `samples` images of the records in `data`, preprocessed for `model`.
fn load_images(model: &VisionLanguageModel, data: &SourceSpec, samples: usize) -> Result<Vec<Tensor<4>>> {
    let device = model.language.device();
    let mut out = Vec::new();
    let name = data.files.first().map(|f| f.display().to_string()).unwrap_or_default();
    let mut stream = data.open()?;
    while let Some(record) = stream.next_record() {
        let record = record?;
        for image in &record.images {
            if out.len() == samples {
                return Ok(out);
            }
            let img = image.load().with_context(|| format!("{name}, {}", record.place()))?;
            out.push(model.config.preprocess.apply(&img, &device));
        }
    }
    if out.is_empty() {
        bail!("{name}: no images");
    }
    Ok(out)
}

fn features(model: &VisionLanguageModel, images: &[Tensor<4>]) -> Vec<f32> {
    images
        .iter()
        .flat_map(|p| model.image_features(p.clone()).into_data().try_to_vec::<f32>().expect("f32 features"))
        .collect()
}

fn encoder_error(
    reference: &Option<Vec<f32>>,
    model: &VisionLanguageModel,
    images: &[Tensor<4>],
) -> Option<OutputError> {
    let reference = reference.as_ref()?;
    let q = features(model, images);
    Some(OutputError {
        images: images.len(),
        sqnr_db: sqnr_db(reference, &q),
        relative_rms: relative_rms(reference, &q),
    })
}

/// The report of `policy` on `model` (and, with `data`, on up to `samples` of its images).
pub fn quant_report(
    model: VisionLanguageModel,
    model_name: &str,
    policy: &PrecisionPolicy,
    data: Option<&SourceSpec>,
    samples: usize,
    sweep_bits: &[u32],
) -> Result<QuantReport> {
    let images = match data {
        Some(d) => load_images(&model, d, samples)?,
        None => Vec::new(),
    };
    let reference = (!images.is_empty()).then(|| features(&model, &images));
    let (quantized, weights) = quantize_weights(model.clone(), policy)?;
    let groups = summarise(&weights);
    let encoder_weights_only = encoder_error(&reference, &quantized, &images);
    let quantizes_activations = policy.vision.activations.is_some() || policy.connector.activations.is_some();
    let (encoder, encoder_activations_only, activations_quantized) = if quantizes_activations && reference.is_some() {
        // Ranges from the float model on the same images, then the model with every op
        // input fake-quantized: with quantized weights, and with float weights.
        let ((), ranges) = observe(|| {
            features(&model, &images);
        });
        let encodings = activation_encodings(&model, policy, &ranges)?;
        let both = quantize_with(encodings.clone(), || encoder_error(&reference, &quantized, &images));
        let activations_only = quantize_with(encodings, || encoder_error(&reference, &model, &images));
        (both, activations_only, true)
    } else {
        (encoder_weights_only.clone(), None, false)
    };
    let mut sweep = Vec::new();
    for &bits in sweep_bits {
        let (q, w) = quantize_weights(model.clone(), &uniform(bits))?;
        sweep.push(SweepRow { bits, groups: summarise(&w), encoder: encoder_error(&reference, &q, &images) });
    }
    let encoder_kind = model.config.encoder.family();
    Ok(QuantReport {
        model: model_name.into(),
        encoder_kind: encoder_kind.into(),
        policy: policy.clone(),
        activations_quantized,
        groups,
        encoder,
        encoder_weights_only,
        encoder_activations_only,
        sweep,
        weights,
    })
}

fn fmt_db(x: f64) -> String {
    if x.is_finite() { format!("{x:.1}") } else { "inf".into() }
}

impl QuantReport {
    pub fn markdown(&self) -> String {
        let mut s = format!(
            "# Quantization error: {} at {}\n\nSQNR = 10 log10(E[x^2] / E[(x - xq)^2]); relative RMS = sqrt(E[(x - xq)^2] / \
             E[x^2]).\n\nWeights:\n\n| group | weights | mean SQNR (dB) | worst SQNR (dB) | relative RMS |\n|---|---:|---:|---:|---:|\n",
            self.model, self.policy.name
        );
        for g in &self.groups {
            s += &format!(
                "| {:?} | {} | {} | {} | {:.3}% |\n",
                g.group,
                g.weights,
                fmt_db(g.mean_sqnr_db),
                fmt_db(g.min_sqnr_db),
                100.0 * g.relative_rms
            );
        }
        if let (Some(e), Some(w)) = (&self.encoder, &self.encoder_weights_only) {
            let what = if self.activations_quantized { "weights and activations" } else { "weights only" };
            s += &format!(
                "\nEncoder output (image features after the connector, {} images), {what}: SQNR {} dB, relative RMS \
                 {:.3}%; weights only: SQNR {} dB, relative RMS {:.3}%\n",
                e.images,
                fmt_db(e.sqnr_db),
                100.0 * e.relative_rms,
                fmt_db(w.sqnr_db),
                100.0 * w.relative_rms
            );
            if let Some(a) = &self.encoder_activations_only {
                s += &format!(
                    "activations only (float weights): SQNR {} dB, relative RMS {:.3}%\n",
                    fmt_db(a.sqnr_db),
                    100.0 * a.relative_rms
                );
            }
        }
        if !self.sweep.is_empty() {
            let groups: Vec<Group> = self.sweep[0].groups.iter().map(|g| g.group).collect();
            s += "\n## Bit-width sweep (every group per channel, weights only)\n\nMean weight SQNR per group, and the encoder output's error.\n\n| bits |";
            for g in &groups {
                s += &format!(" {g:?} (dB) |");
            }
            s += " encoder SQNR (dB) | encoder relative RMS |\n|---:|";
            s += &"---:|".repeat(groups.len() + 2);
            s += "\n";
            for row in &self.sweep {
                s += &format!("| {} |", row.bits);
                for g in &row.groups {
                    s += &format!(" {} |", fmt_db(g.mean_sqnr_db));
                }
                match &row.encoder {
                    Some(e) => s += &format!(" {} | {:.3}% |\n", fmt_db(e.sqnr_db), 100.0 * e.relative_rms),
                    None => s += " - | - |\n",
                }
            }
        }
        if self.encoder.is_some() {
            s += PAPER_FIGURES;
        }
        s
    }
}

const PAPER_FIGURES: &str = "\nThe paper, for comparison (SA8295P NPU, W8A16 with activations quantized too, on \
                             device): MobileNetV5 45 dB / 0.562%, InternViT (InternVL-2B) 28 dB / 3.98% (7.1x the \
                             relative RMS error).\n";

/// The paper's W8A16 encoder figures: (encoder kind, SQNR dB, relative RMS).
const PAPER_W8A16: [(&str, f64, f64); 2] = [("MobileNetV5", 45.0, 0.00562), ("ViT", 28.0, 0.0398)];

fn pct(e: &Option<OutputError>) -> String {
    e.as_ref().map_or("-".into(), |e| format!("{:.3}%", 100.0 * e.relative_rms))
}

fn db(e: &Option<OutputError>) -> String {
    e.as_ref().map_or("-".into(), |e| fmt_db(e.sqnr_db))
}

/// Several models' reports side by side (e.g. the ViT baseline against MobileNetV5): the
/// encoder output's error at the policy and over the sweep, the vision weights', and the
/// ratio of relative RMS errors against the first model, next to the paper's.
pub fn comparison_markdown(reports: &[QuantReport]) -> String {
    let Some(first) = reports.first() else { return String::new() };
    let mut s = format!(
        "# Quantization error compared at {}\n\nEncoder output = image features after the connector, against \
         the same model in float.\n\n| model | encoder | vision weights mean SQNR (dB) | vision weights relative \
         RMS | encoder output SQNR (dB) | encoder output relative RMS | relative RMS vs {} | weights only (dB) | \
         activations only (dB) |\n|---|---|---:|---:|---:|---:|---:|---:|---:|\n",
        first.policy.name, first.model
    );
    let base = first.encoder.as_ref().map(|e| e.relative_rms);
    for r in reports {
        let vision = r.groups.iter().find(|g| g.group == Group::Vision);
        let ratio = match (base, &r.encoder) {
            (Some(b), Some(e)) if b > 0.0 => format!("{:.2}x", e.relative_rms / b),
            _ => "-".into(),
        };
        s += &format!(
            "| {} | {} | {} | {} | {} | {} | {ratio} | {} | {} |\n",
            r.model,
            r.encoder_kind,
            vision.map_or("-".into(), |g| fmt_db(g.mean_sqnr_db)),
            vision.map_or("-".into(), |g| format!("{:.3}%", 100.0 * g.relative_rms)),
            db(&r.encoder),
            pct(&r.encoder),
            db(&r.encoder_weights_only),
            db(&r.encoder_activations_only),
        );
    }
    let bits: Vec<u32> = first.sweep.iter().map(|row| row.bits).collect();
    if !bits.is_empty() {
        s += "\nEncoder output over the sweep (every group per channel, weights only), SQNR (dB) / relative RMS:\n\n| \
              model |";
        for b in &bits {
            s += &format!(" W{b} |");
        }
        s += &format!("\n|---|{}\n", "---:|".repeat(bits.len()));
        for r in reports {
            s += &format!("| {} |", r.model);
            for b in &bits {
                let e = r.sweep.iter().find(|row| row.bits == *b).and_then(|row| row.encoder.clone());
                s += &format!(" {} / {} |", db(&e), pct(&e));
            }
            s += "\n";
        }
    }
    s += PAPER_FIGURES;
    s
}

/// The charts of a comparison, into `dir`: `quant_report_sweep.svg` (encoder-output SQNR
/// against weight bits per model, the paper's W8A16 figures as markers) and
/// `quant_report_layers.svg` (every vision weight's SQNR at the policy, in model order).
pub fn write_plots(reports: &[QuantReport], dir: &Path) -> Result<Vec<std::path::PathBuf>> {
    let with_encoder = reports.iter().any(|r| r.sweep.iter().any(|row| row.encoder.is_some()));
    let mut sweep: Vec<Series> = reports
        .iter()
        .map(|r| {
            let points = r
                .sweep
                .iter()
                .filter_map(|row| {
                    let y = if with_encoder {
                        row.encoder.as_ref()?.sqnr_db
                    } else {
                        row.groups.iter().find(|g| g.group == Group::Vision)?.mean_sqnr_db
                    };
                    Some((f64::from(row.bits), y))
                })
                .collect();
            Series::line(format!("{} ({})", r.model, r.encoder_kind), points)
        })
        .collect();
    if with_encoder {
        for (kind, db, _) in PAPER_W8A16 {
            sweep.push(Series::markers(format!("paper, {kind} W8A16 on device"), vec![(8.0, db)]));
        }
    }
    let what = if with_encoder { "encoder output" } else { "vision weights (mean)" };
    let charts = [
        (
            "quant_report_sweep.svg",
            LineChart {
                title: format!("SQNR of the {what} against weight bits (per channel)"),
                x_label: "weight bits".into(),
                y_label: "SQNR (dB)".into(),
                series: sweep,
            },
        ),
        (
            "quant_report_layers.svg",
            LineChart {
                title: format!("Vision weights at {}: SQNR per weight, in model order", reports[0].policy.name),
                x_label: "weight (input to output)".into(),
                y_label: "SQNR (dB)".into(),
                series: reports
                    .iter()
                    .map(|r| {
                        let points = r
                            .weights
                            .iter()
                            .filter(|w| w.group == Group::Vision)
                            .enumerate()
                            .map(|(i, w)| (i as f64, w.sqnr_db))
                            .collect();
                        Series::line(format!("{} ({})", r.model, r.encoder_kind), points)
                    })
                    .collect(),
            },
        ),
    ];
    let mut written = Vec::new();
    for (name, chart) in charts {
        let path = dir.join(name);
        chart.write_svg(&path)?;
        written.push(path);
    }
    Ok(written)
}

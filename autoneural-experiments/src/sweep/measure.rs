//! A finished run's figures beyond training: accuracy from the run's own reports, then, per
//! the experiment's `[measure]`, decode speed and state memory per context length, encoder
//! latency and encoder-output SQNR per weight bit-width on this machine, and the NPU cost
//! model's prediction for the run's architecture.

use crate::sweep::{Expansion, SweepPoint};
use anyhow::{Context, Result};
use autoneural_model::checkpoint::vlm::load_vlm;
use autoneural_model::device::parse_devices;
use autoneural_model::quant::PrecisionPolicy;
use autoneural_model::text::DecodeState;
use autoneural_model::vlm::VisionLanguageModel;
use burn::module::Module;
use burn::tensor::Device;

use super::results::{DecodePoint, LatencyPoint, ModelSummary, RunResult, SqnrPoint};
use crate::runner::{BEFORE_QAT, RunOutcome};
use autoneural_eval::bench_lm::{self, LmBenchOptions};
use autoneural_npu::{Bits, DeviceProfile, Scenario, predict_vlm};
use autoneural_quant::compare::QuantComparison;

/// The float model of a run: before QAT when there was QAT, else the final one.
fn float_model(outcome: &RunOutcome, device: &Device) -> Result<VisionLanguageModel> {
    let before = outcome.run_dir.join(BEFORE_QAT);
    let dir = if before.is_dir() { before } else { outcome.final_dir.clone() };
    load_vlm(&dir, device).with_context(|| format!("loading {}", dir.display()))
}

pub fn summary(model: &VisionLanguageModel) -> ModelSummary {
    let c = &model.config;
    let size = c.encoder.image_size();
    let layers = c.text.num_layers();
    let attention = c.text.attention_layers().len();
    ModelSummary {
        encoder: c.encoder.family().into(),
        vision_params: model.vision_tower.num_params(),
        connector_params: model.multi_modal_projector.num_params(),
        language_params: model.language.num_params(),
        num_layers: layers,
        attention_layers: attention,
        sliding_layers: c.text.count(autoneural_model::text::LayerKind::SlidingAttention),
        attention_ratio: attention as f64 / layers.max(1) as f64,
        image_tokens: c.tokens_per_image(size, size),
        image_size: size,
    }
}

/// Everything `result.json` holds for the run of `point`.
pub fn measure(expansion: &Expansion, point: &SweepPoint, outcome: &RunOutcome, quiet: bool) -> Result<RunResult> {
    let exp = &point.experiment;
    let m = &exp.measure;
    let device = parse_devices(&exp.device)?.remove(0);
    let model = float_model(outcome, &device)?;
    let say = |s: String| {
        if !quiet {
            eprintln!("{}: {s}", point.id);
        }
    };
    let qat_policy = exp.stages.last().and_then(|s| s.quantization.as_ref()).map(|q| q.load_policy()).transpose()?;
    let last_val = outcome.stages.last().and_then(|s| s.val.clone());
    let cmp = QuantComparison::read(&outcome.run_dir);
    let mut result = RunResult {
        experiment: expansion.name.clone(),
        run_id: point.id.clone(),
        axes: point.values.iter().map(|(k, v)| (k.clone(), toml_to_json(v))).collect(),
        model: summary(&model),
        precision: qat_policy.as_ref().map(|p| p.name.clone()),
        steps: outcome.stages.iter().map(|s| s.steps).sum(),
        train_seconds: outcome.stages.iter().map(|s| s.seconds).sum(),
        val_loss: last_val.as_ref().map(|v| v.loss),
        val_token_accuracy: last_val.as_ref().map(|v| v.token_accuracy),
        val_loss_images_rotated: last_val.as_ref().and_then(|v| v.loss_images_rotated),
        exact_match: outcome.eval.as_ref().map(|e| e.overall_exact_match),
        tasks: outcome
            .eval
            .as_ref()
            .map(|e| e.tasks.iter().map(|(k, t)| (k.clone(), t.exact_match)).collect())
            .unwrap_or_default(),
        benchmarks: outcome.benchmarks.iter().map(|s| (s.benchmark.clone(), s.score)).collect(),
        float_val_loss: cmp.as_ref().and_then(|c| c.float_val.as_ref().map(|v| v.loss)),
        ptq_val_loss: cmp.as_ref().and_then(|c| c.ptq_val.as_ref().map(|v| v.loss)),
        qat_val_loss: cmp.as_ref().and_then(|c| c.qat_val.as_ref().map(|v| v.loss)),
        encoder_sqnr: Vec::new(),
        encoder_w8a16: None,
        decode: Vec::new(),
        encoder_latency: Vec::new(),
        npu: None,
    };
    if m.skip {
        return Ok(result);
    }

    for &context in &m.contexts {
        let r = bench_lm::run(
            &model.language,
            &device,
            &LmBenchOptions { prompt_len: 1, new_tokens: m.decode_tokens.max(1), context, batch: 1 },
        );
        // The state exactly at `context` (the benchmark's grew by the tokens it decoded).
        let bytes = DecodeState::synthetic(&model.config.text, 1, context, context, &device).bytes();
        say(format!("decode at context {context}: {:.1} tok/s, state {} KiB", r.decode_tok_s, bytes.total() / 1024));
        result.decode.push(DecodePoint {
            context,
            tok_s: r.decode_tok_s,
            state_bytes: bytes.total(),
            kv_bytes: bytes.kv,
            conv_bytes: bytes.conv,
        });
    }

    if !m.resolutions.is_empty() {
        let rows = autoneural_eval::bench_vision::run(
            &result.model.encoder,
            &model.config.encoder,
            &m.resolutions,
            3,
            &device,
        )
        .map_err(|e| anyhow::anyhow!("measure.resolutions: {e}"))?;
        for r in rows {
            say(format!("encoder at {0}x{0}: {1:.1} ms", r.resolution, r.latency_ms));
            result.encoder_latency.push(LatencyPoint { resolution: r.resolution, cpu_ms: r.latency_ms });
        }
    }

    if !m.sqnr_bits.is_empty() {
        let split = autoneural_data::Split::parse(&exp.eval.split).unwrap_or(autoneural_data::Split::Test);
        let (sources, _) = exp.catalog()?.split(split, autoneural_data::OnBadRecord::Fail)?;
        if let Some(source) = sources.first() {
            let policy = PrecisionPolicy::preset("w8a16").expect("a built-in preset");
            let report = autoneural_quant::report::quant_report(
                model.clone(),
                &point.id,
                &policy,
                Some(source),
                m.sqnr_images,
                &m.sqnr_bits,
            )?;
            if let Some(e) = &report.encoder {
                say(format!(
                    "encoder output at W8A16: {:.1} dB, relative RMS {:.3}%",
                    e.sqnr_db,
                    100.0 * e.relative_rms
                ));
                result.encoder_w8a16 = Some(SqnrPoint { bits: 8, sqnr_db: e.sqnr_db, relative_rms: e.relative_rms });
            }
            for row in report.sweep {
                if let Some(e) = row.encoder {
                    say(format!("encoder output at W{}: {:.1} dB", row.bits, e.sqnr_db));
                    result.encoder_sqnr.push(SqnrPoint {
                        bits: row.bits,
                        sqnr_db: e.sqnr_db,
                        relative_rms: e.relative_rms,
                    });
                }
            }
        }
    }

    if !m.npu_profile.is_empty() {
        let profile = DeviceProfile::resolve(&m.npu_profile).context("measure.npu_profile")?;
        // The run's deployed precision: its QAT policy, else the paper's (W8A16 encoder,
        // W4A16 language model, 8-bit KV cache).
        let policy = match &qat_policy {
            Some(p) => p.clone(),
            None => PrecisionPolicy::preset("autoneural").expect("a built-in preset"),
        };
        let (vision_bits, lm_bits) = Bits::from_policy(&policy);
        let scenario = Scenario {
            resolutions: if m.resolutions.is_empty() { vec![result.model.image_size] } else { m.resolutions.clone() },
            prompt_tokens: m.prompt_tokens,
            decode_context: m.contexts.iter().copied().max().unwrap_or(1024),
            ..Scenario::default()
        };
        result.npu = Some(predict_vlm(&model.config, vision_bits, lm_bits, &profile, &scenario));
    }
    Ok(result)
}

fn toml_to_json(v: &toml::Value) -> serde_json::Value {
    serde_json::to_value(v).unwrap_or(serde_json::Value::Null)
}

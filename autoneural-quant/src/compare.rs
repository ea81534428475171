//! PTQ against QAT at one precision policy, for a run whose last stage is
//! quantization-aware: the model before that stage is evaluated in float and after
//! post-training quantization (calibrated on the training split); the final model is
//! evaluated quantized after QAT. The run report puts the three side by side.

use std::fmt::Write;
use std::path::Path;

use autoneural_data::SourceSpec;

use anyhow::{Context, Result};
use autoneural_model::quant::PrecisionPolicy;
use autoneural_model::quant::runtime::QuantizedRuntime;
use autoneural_model::vlm::VisionLanguageModel;
use autoneural_train::train::{Batcher, StageRun, ValMetrics, validate};
use serde::{Deserialize, Serialize};

use crate::ptq::{calibration_records, post_training_quantize};
use autoneural_eval::evaluate::{EvalOptions, EvalReport, evaluate};

/// Where a run keeps the comparison (the float and PTQ figures are measured before the QAT
/// stage, so a resumed run reads them back).
pub const FILE: &str = "quantization_comparison.json";

/// Conversations per training file that calibrate PTQ.
pub const CALIBRATION_SAMPLES: usize = 16;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct QuantComparison {
    pub policy: String,
    /// The model before the QAT stage, in float.
    pub float: EvalReport,
    /// The same model after post-training quantization at `policy`.
    pub ptq: EvalReport,
    /// The final model, after quantization-aware training, at `policy`.
    pub qat: Option<EvalReport>,
    /// Teacher-forced loss and token accuracy on the QAT stage's validation mixture, for
    /// the same three models: finer than exact match, which a small model's guessing
    /// dominates.
    #[serde(default)]
    pub float_val: Option<ValMetrics>,
    #[serde(default)]
    pub ptq_val: Option<ValMetrics>,
    #[serde(default)]
    pub qat_val: Option<ValMetrics>,
}

impl QuantComparison {
    /// Float and PTQ evaluations of `model` (inference, before QAT) at `policy`; `stage` is
    /// the QAT stage, whose validation mixture gives the teacher-forced figures.
    pub fn before_qat(
        model: &VisionLanguageModel,
        stage: &StageRun,
        policy: &PrecisionPolicy,
        calib: &[SourceSpec],
        test: &[SourceSpec],
        opts: &EvalOptions,
    ) -> Result<Self> {
        let batcher: &Batcher = stage.batcher;
        let float = evaluate(model, &batcher.tokenizer, test, opts)?;
        let float_val = validate(model, stage)?;
        let records = calibration_records(calib, CALIBRATION_SAMPLES)?;
        let (quantized, file, _) = post_training_quantize(model.clone(), batcher, &records, policy)?;
        let runtime = QuantizedRuntime::from_file(&quantized, &file)?;
        let ptq = runtime.run(|| evaluate(&quantized, &batcher.tokenizer, test, opts))?;
        let ptq_val = runtime.run(|| validate(&quantized, stage))?;
        Ok(Self { policy: policy.name.clone(), float, ptq, qat: None, float_val, ptq_val, qat_val: None })
    }

    pub fn read(run_dir: &Path) -> Option<Self> {
        let text = autoneural_io::read::read_to_string(&run_dir.join(FILE), autoneural_io::read::CONFIG).ok()?;
        serde_json::from_str(&text).ok()
    }

    pub fn write(&self, run_dir: &Path) -> Result<()> {
        let path = run_dir.join(FILE);
        std::fs::write(&path, serde_json::to_string_pretty(self)?)
            .with_context(|| format!("writing {}", path.display()))
    }

    /// Exact match per family: float, PTQ and QAT.
    pub fn markdown(&self) -> String {
        let mut s =
            format!("| task | float, before QAT | PTQ at {p} | QAT at {p} |\n|---|---:|---:|---:|\n", p = self.policy);
        let pct = |r: Option<&EvalReport>, task: &str| {
            r.and_then(|r| r.tasks.get(task)).map_or("-".into(), |t| format!("{:.1}%", 100.0 * t.exact_match))
        };
        for task in self.float.tasks.keys() {
            let _ = writeln!(
                s,
                "| {task} | {} | {} | {} |",
                pct(Some(&self.float), task),
                pct(Some(&self.ptq), task),
                pct(self.qat.as_ref(), task)
            );
        }
        let overall =
            |r: Option<&EvalReport>| r.map_or("-".into(), |r| format!("{:.1}%", 100.0 * r.overall_exact_match));
        let _ = writeln!(
            s,
            "| overall | {} | {} | {} |",
            overall(Some(&self.float)),
            overall(Some(&self.ptq)),
            overall(self.qat.as_ref())
        );
        if self.float_val.is_some() {
            let val = |v: &Option<ValMetrics>, f: fn(&ValMetrics) -> String| v.as_ref().map_or("-".into(), f);
            let loss = |m: &ValMetrics| format!("{:.4}", m.loss);
            let acc = |m: &ValMetrics| format!("{:.1}%", 100.0 * m.token_accuracy);
            let _ = writeln!(
                s,
                "| validation loss (teacher-forced) | {} | {} | {} |",
                val(&self.float_val, loss),
                val(&self.ptq_val, loss),
                val(&self.qat_val, loss)
            );
            let _ = writeln!(
                s,
                "| validation token accuracy | {} | {} | {} |",
                val(&self.float_val, acc),
                val(&self.ptq_val, acc),
                val(&self.qat_val, acc)
            );
        }
        s
    }
}

//! Training metrics: one JSON line per step (and per validation) in `<run>/metrics.jsonl`
//! for plots and reports, and a compact line on stderr every few steps for whoever
//! watches the run.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StepMetrics {
    pub stage: String,
    /// Optimizer steps done in the stage.
    pub step: usize,
    pub global_step: usize,
    /// Mean cross-entropy per trained token over the effective batch.
    pub loss: f64,
    /// Share of trained tokens the argmax predicts.
    pub token_accuracy: f64,
    pub lr: f64,
    /// Gradient norm before clipping.
    pub grad_norm: f64,
    pub samples_per_s: f64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ValMetrics {
    pub loss: f64,
    pub token_accuracy: f64,
}

pub struct MetricsLog {
    file: File,
    path: PathBuf,
    /// Print to stderr (off in tests).
    pub echo: bool,
}

impl MetricsLog {
    /// Appends to `<run_dir>/metrics.jsonl` (a resumed run continues the same file).
    pub fn open(run_dir: &Path) -> Result<Self> {
        std::fs::create_dir_all(run_dir).with_context(|| format!("creating {}", run_dir.display()))?;
        let path = run_dir.join("metrics.jsonl");
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .with_context(|| format!("opening {}", path.display()))?;
        Ok(Self { file, path, echo: true })
    }

    fn write(&mut self, value: serde_json::Value) -> Result<()> {
        writeln!(self.file, "{value}").with_context(|| format!("writing {}", self.path.display()))
    }

    pub fn step(&mut self, m: &StepMetrics, print: bool, total: usize) -> Result<()> {
        let mut v = serde_json::to_value(m).expect("serialisable");
        v["kind"] = "train".into();
        self.write(v)?;
        if self.echo && print {
            eprintln!(
                "  [{}] step {:>5}/{total}  loss {:.4}  token acc {:.3}  lr {:.2e}  |g| {:.3}  {:.1} samples/s",
                m.stage, m.step, m.loss, m.token_accuracy, m.lr, m.grad_norm, m.samples_per_s
            );
        }
        Ok(())
    }

    pub fn val(&mut self, stage: &str, global_step: usize, m: &ValMetrics) -> Result<()> {
        self.write(serde_json::json!({
            "kind": "val", "stage": stage, "global_step": global_step,
            "loss": m.loss, "token_accuracy": m.token_accuracy,
        }))?;
        if self.echo {
            eprintln!("  [{stage}] validation: loss {:.4}  token acc {:.3}", m.loss, m.token_accuracy);
        }
        Ok(())
    }
}

//! Training metrics: one JSON line per step (and per validation) in `<run>/metrics.jsonl`
//! for plots and reports, and for whoever watches the run: burn-train's dashboard when it
//! is turned on (a terminal), else a live progress bar (step, loss, token accuracy, learning
//! rate, samples/s, time left) when stderr is a terminal, or a plain line every few steps
//! when it is a log file.

use std::fs::{File, OpenOptions};
use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use indicatif::{ProgressBar, ProgressStyle};
use serde::{Deserialize, Serialize};

use crate::train::dashboard::Dashboard;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StepMetrics {
    pub stage: String,
    /// Optimizer steps done in the stage.
    pub step: usize,
    pub global_step: usize,
    /// Mean cross-entropy per trained token over the effective batch; none in an
    /// alignment-only stage (`lm_weight = 0`), which does not run the language model.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub loss: Option<f64>,
    /// Share of trained tokens the argmax predicts (none where `loss` is none).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_accuracy: Option<f64>,
    pub lr: f64,
    /// Gradient norm before clipping.
    pub grad_norm: f64,
    pub samples_per_s: f64,
    /// The image-text alignment loss (stages with `align_weight`), unweighted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub align_loss: Option<f64>,
}

impl StepMetrics {
    /// `loss 1.2345  align 2.3456  token acc 0.500`, leaving out what the stage did not compute.
    fn losses(&self) -> String {
        let mut parts = Vec::new();
        if let Some(l) = self.loss {
            parts.push(format!("loss {l:.4}"));
        }
        if let Some(a) = self.align_loss {
            parts.push(format!("align {a:.4}"));
        }
        if let Some(acc) = self.token_accuracy {
            parts.push(format!("token acc {acc:.3}"));
        }
        parts.join("  ")
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ValMetrics {
    pub loss: f64,
    pub token_accuracy: f64,
    /// The same loss with each batch's images rotated by one (every conversation sees
    /// another's image). Equal to `loss` when the model ignores its images; the gap is how
    /// much the images help. `None` when no batch had two images.
    #[serde(default)]
    pub loss_images_rotated: Option<f64>,
}

/// Rewrites `path` (through a temporary file) with only the lines of global steps up to
/// `upto`.
fn keep_steps_upto(path: &Path, upto: usize) -> Result<()> {
    use autoneural_io::read::{LINE_LIMIT, Line, Lines};
    let mut kept = String::new();
    for line in Lines::open(path, LINE_LIMIT)? {
        if let Line::Text(text) = line? {
            let step = serde_json::from_str::<serde_json::Value>(&text).ok().and_then(|v| v["global_step"].as_u64());
            if step.is_some_and(|s| s as usize <= upto) {
                kept.push_str(&text);
                kept.push('\n');
            }
        }
    }
    autoneural_io::output::write_file(path, kept.as_bytes())?;
    Ok(())
}

pub struct MetricsLog {
    file: File,
    path: PathBuf,
    /// Print to stderr (off in tests).
    pub echo: bool,
    bar: Option<ProgressBar>,
    dashboard: Option<Dashboard>,
}

impl MetricsLog {
    /// Appends to `<run_dir>/metrics.jsonl`, after dropping its lines of global steps past
    /// `upto`: a resumed run logs again the steps its checkpoint did not keep, and a fresh
    /// start (`upto` 0) begins an empty file, so no step is ever in the file twice.
    pub fn open(run_dir: &Path, upto: usize) -> Result<Self> {
        std::fs::create_dir_all(run_dir).with_context(|| format!("creating {}", run_dir.display()))?;
        let path = run_dir.join("metrics.jsonl");
        if path.exists() {
            keep_steps_upto(&path, upto)?;
        }
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .with_context(|| format!("opening {}", path.display()))?;
        Ok(Self { file, path, echo: true, bar: None, dashboard: None })
    }

    /// Shows burn-train's dashboard from now on, when stdout and stderr are a terminal
    /// (else the progress bar or plain lines stay). Returns whether it opened.
    pub fn open_dashboard(&mut self) -> bool {
        if self.echo && std::io::stdout().is_terminal() && std::io::stderr().is_terminal() {
            self.dashboard = Some(Dashboard::open());
        }
        self.dashboard.is_some()
    }

    /// Gives the terminal back.
    pub fn close_dashboard(&mut self) {
        self.dashboard = None;
    }

    /// The user stopped the run from the dashboard, or a signal asked it to stop
    /// (`signals`).
    pub fn interrupted(&self) -> bool {
        self.dashboard.as_ref().is_some_and(Dashboard::interrupted) || crate::train::signals::stop_requested().is_some()
    }

    /// Stage `index` of `count` begins (or resumes at `done` of `total` steps): the
    /// dashboard or, on a terminal, the progress bar.
    pub fn start_stage(&mut self, name: &str, index: usize, count: usize, done: usize, total: usize) {
        self.finish_stage();
        if let Some(d) = &mut self.dashboard {
            d.start_stage(name, index, count, done, total);
        } else if self.echo && std::io::stderr().is_terminal() {
            let bar = ProgressBar::new(total as u64).with_position(done as u64);
            let style = ProgressStyle::with_template(
                "  [{prefix}] {bar:30} {pos}/{len} steps  {msg}  {elapsed_precise} (eta {eta})",
            )
            .expect("valid template");
            bar.set_style(style);
            bar.set_prefix(name.to_string());
            self.bar = Some(bar);
        }
    }

    /// Leaves the finished bar on screen.
    pub fn finish_stage(&mut self) {
        if let Some(bar) = self.bar.take() {
            bar.finish();
        }
    }

    /// A line for whoever watches: the dashboard's event line, or above the bar when there
    /// is one.
    pub fn say(&mut self, line: String) {
        if !self.echo {
            return;
        }
        match (&mut self.dashboard, &self.bar) {
            (Some(d), _) => d.note(&line),
            (None, Some(bar)) => bar.println(line),
            (None, None) => eprintln!("{line}"),
        }
    }

    fn write(&mut self, value: serde_json::Value) -> Result<()> {
        writeln!(self.file, "{value}").with_context(|| format!("writing {}", self.path.display()))
    }

    /// One step's line; `skipped` counts the bad records skipped so far in the stage
    /// (written when there are any).
    pub fn step(&mut self, m: &StepMetrics, print: bool, total: usize, skipped: usize) -> Result<()> {
        let mut v = serde_json::to_value(m).expect("serialisable");
        v["kind"] = "train".into();
        if skipped > 0 {
            v["skipped_records"] = skipped.into();
        }
        self.write(v)?;
        if let Some(d) = &mut self.dashboard {
            d.step(m);
        } else if let Some(bar) = &self.bar {
            bar.set_position(m.step as u64);
            bar.set_message(format!("{}  lr {:.2e}  {:.1} samples/s", m.losses(), m.lr, m.samples_per_s));
        } else if self.echo && print {
            eprintln!(
                "  [{}] step {:>5}/{total}  {}  lr {:.2e}  |g| {:.3}  {:.1} samples/s",
                m.stage,
                m.step,
                m.losses(),
                m.lr,
                m.grad_norm,
                m.samples_per_s
            );
        }
        Ok(())
    }

    pub fn val(&mut self, stage: &str, global_step: usize, m: &ValMetrics) -> Result<()> {
        self.write(serde_json::json!({
            "kind": "val", "stage": stage, "global_step": global_step,
            "loss": m.loss, "token_accuracy": m.token_accuracy, "loss_images_rotated": m.loss_images_rotated,
        }))?;
        if let Some(d) = &mut self.dashboard {
            d.val(m);
        }
        let rotated = m.loss_images_rotated.map_or(String::new(), |r| format!("  (images rotated: {r:.4})"));
        self.say(format!("  [{stage}] validation: loss {:.4}  token acc {:.3}{rotated}", m.loss, m.token_accuracy));
        Ok(())
    }
}

//! burn-train's terminal dashboard (the TUI of its `Learner`), fed by our own loop: the
//! loop keeps step-exact resumption, gradient accumulation over stages and the NaN stop,
//! and the dashboard shows what it measures. Stages are the dashboard's "epochs", steps its
//! items. Pressing `q` in the dashboard stops the run at the end of the current step with
//! a checkpoint (`--resume` continues it).

use std::sync::Arc;

use burn::train::Interrupter;
use burn::train::logger::TrainingProgressLogger;
use burn::train::metric::{
    MetricAttributes, MetricDefinition, MetricEntry, MetricId, NumericAttributes, NumericEntry, SerializedEntry,
};
use burn::train::renderer::tui::TuiMetricsRendererWrapper;
use burn::train::renderer::{MetricState, MetricsRenderer, MetricsRendererTraining};

use crate::train::metrics::{StepMetrics, ValMetrics};

/// (id, name shown, higher is better)
const METRICS: [(&str, &str, bool); 6] = [
    ("loss", "Loss", false),
    ("align_loss", "Alignment loss", false),
    ("token_accuracy", "Token accuracy", true),
    ("loss_images_rotated", "Loss, images rotated", false),
    ("lr", "Learning rate", false),
    ("samples_per_s", "Samples/s", true),
];

pub struct Dashboard {
    tui: TuiMetricsRendererWrapper,
    interrupter: Interrupter,
}

impl Dashboard {
    /// Takes over the terminal (alternate screen) until dropped.
    pub fn open() -> Self {
        let interrupter = Interrupter::new();
        let mut tui = TuiMetricsRendererWrapper::new(interrupter.clone(), None);
        for (id, name, higher_is_better) in METRICS {
            tui.register_metric(MetricDefinition {
                metric_id: metric_id(id),
                name: Arc::new(name.to_string()),
                description: None,
                attributes: MetricAttributes::Numeric(NumericAttributes { unit: None, higher_is_better }),
            });
        }
        Self { tui, interrupter }
    }

    /// Stage `index` of `count` begins (or resumes at `done` of `total` steps).
    pub fn start_stage(&mut self, name: &str, index: usize, count: usize, done: usize, total: usize) {
        self.tui.start(count, index, Some(total), Some(&format!("stage {}/{count} \"{name}\"", index + 1)));
        self.tui.update_epoch(index);
        self.tui.start_split("train", total);
        self.tui.update_split(done);
    }

    pub fn step(&mut self, m: &StepMetrics) {
        self.tui.update_split(m.step);
        let metrics = [
            ("loss", m.loss),
            ("align_loss", m.align_loss),
            ("token_accuracy", m.token_accuracy),
            ("lr", Some(m.lr)),
            ("samples_per_s", Some(m.samples_per_s)),
        ];
        for (id, value) in metrics {
            if let Some(value) = value {
                self.tui.update_train(numeric(id, value));
            }
        }
    }

    pub fn val(&mut self, m: &ValMetrics) {
        self.tui.update_valid(numeric("loss", m.loss));
        self.tui.update_valid(numeric("token_accuracy", m.token_accuracy));
        if let Some(r) = m.loss_images_rotated {
            self.tui.update_valid(numeric("loss_images_rotated", r));
        }
    }

    /// A message for the dashboard's event line.
    pub fn note(&mut self, line: &str) {
        self.tui.log_event_training(line.trim().to_string());
    }

    /// The user asked the dashboard to stop.
    pub fn interrupted(&self) -> bool {
        self.interrupter.should_stop()
    }
}

fn metric_id(id: &str) -> MetricId {
    MetricId::new(Arc::new(id.to_string()))
}

fn numeric(id: &str, value: f64) -> MetricState {
    let shown = if value.abs() < 1e-2 && value != 0.0 { format!("{value:.2e}") } else { format!("{value:.4}") };
    let entry = MetricEntry::new(metric_id(id), SerializedEntry::new(shown, value.to_string()));
    MetricState::Numeric(entry, Some(NumericEntry::Value(value)))
}

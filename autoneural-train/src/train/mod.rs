//! The training stages: model initialisation, batches, the loss, the loop, checkpoints.

pub mod batches;
pub mod checkpoint;
pub mod clip;
pub mod dashboard;
pub mod init;
pub mod loss;
pub mod metrics;
pub mod parallel;
pub mod schedule;
pub mod signals;
pub mod trainer;

pub use batches::Batcher;
pub use checkpoint::{
    TrainerState, copy_tokenizer, latest_checkpoint, load_checkpoint, save_checkpoint, save_model_dir, trainer_state,
};
pub use init::{build_model, vlm_config};
pub use metrics::{MetricsLog, StepMetrics, ValMetrics};
pub use trainer::{StageReport, StageRun, run_stage, set_trainable, validate};

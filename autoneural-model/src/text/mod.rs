//! The LFM2 hybrid language backbone.

pub mod attention;
pub mod config;
pub mod mlp;
pub mod model;
pub mod moe;
pub mod rope;
pub mod shortconv;
pub mod state;

pub use config::{LayerKind, Lfm2Config, attention_placement};
pub use model::{Lfm2ForCausalLM, Logits};
pub use state::{DecodeState, StateBytes};

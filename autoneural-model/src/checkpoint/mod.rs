//! Checkpoints: configs and safetensors weights in the formats of the field.

pub mod apply;
pub mod json;
pub mod lfm2;
pub mod safetensors;

pub use lfm2::{load_lfm2, read_config, save_lfm2};

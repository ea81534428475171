//! Checkpoints: configs and safetensors weights in the formats of the field.

pub mod apply;
pub mod json;
pub mod lfm2;
pub mod lfm3_vl;
pub mod mobilenet;
pub mod safetensors;
pub mod vlm;

pub use lfm2::{load_lfm2, read_config, save_lfm2};
pub use lfm3_vl::load_lfm3_vl_vision;
pub use mobilenet::load_mobilenetv5;
pub use vlm::{is_vlm_type, load_siglip_vision, load_vlm, model_type, read_vlm_config, save_vlm};

//! What the AutoNeural model *is*: modules, configs, checkpoints, tokenizer, generation.
//!
//! Modules carry no backend type parameter (Burn 0.22): the [`burn::tensor::Device`] a
//! model is created on picks the backend at run time (see [`device::parse_device`]).

pub mod checkpoint;
pub mod connector;
pub mod device;
pub mod error;
pub mod generate;
pub mod generate_batch;
pub mod images;
pub mod kernels;
pub mod nn;
pub mod quant;
pub mod text;
pub mod tokenizer;
pub mod vision;
pub mod vlm;

pub use error::{KeyReport, ModelError, Result};

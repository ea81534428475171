//! An NPU cost model (a roofline): predicted vision-encoder latency per resolution, time to
//! first token, decode speed and the largest context that fits, per model configuration and
//! device profile. A model, not a measurement: every rendering says
//! "predicted (roofline model, <profile>)". docs/npu_cost_model.md has the formula, the
//! profile keys and the calibration against the paper.
//!
//! - [`ops`]: [`OpCost`] (MACs, weight/state/activation bytes of one op) and [`Bits`];
//! - [`vision`], [`text`]: op lists from configs (MobileNetV5, ViT, connector, LFM2 steps);
//! - [`onnx`]: op lists from exported `.onnx` graphs (shape propagation);
//! - [`profile`], [`roofline`]: the device and the time/memory of an op list;
//! - [`predict`]: [`predict_vlm`] and its renderings; [`paper`]: the paper's configurations.

pub mod builder;
#[cfg(test)]
mod calibration;
pub mod export_dir;
pub mod onnx;
pub mod ops;
pub mod paper;
pub mod predict;
pub mod profile;
pub mod roofline;
pub mod text;
pub mod vision;

pub use ops::{Bits, OpCost, OpKind, Totals, totals};
pub use predict::{NpuPrediction, Scenario, predict_vlm};
pub use profile::DeviceProfile;

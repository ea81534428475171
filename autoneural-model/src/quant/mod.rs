//! Quantization as the paper deploys it (conventions in `shared/REFERENCE.md`): weights
//! symmetric int2..int16 per tensor, per output channel, per block or LPBQ; activations
//! asymmetric int8/int16 per tensor from calibrated ranges. Values follow ONNX
//! QuantizeLinear/DequantizeLinear exactly ([`grid`]), so exported QDQ graphs compute the
//! same numbers; [`fake::fake_quant`] is differentiable with straight-through gradients
//! for quantization-aware training; [`sqnr`] measures the error as the paper reports it;
//! [`packed`] runs decoding on int8/int4 weights.

pub mod activations;
pub mod apply;
pub mod context;
pub mod encoding;
pub mod fake;
pub mod grid;
pub mod kv;
pub mod packed;
pub mod policy;
pub mod qat;
pub mod runtime;
pub mod saved;
pub mod sqnr;

pub use encoding::{Axes, Encoding, Granularity};
pub use fake::fake_quant;
pub use grid::Grid;
pub use policy::{Group, Precision, PrecisionPolicy};
pub use sqnr::{relative_rms, sqnr_db};

//! ONNX export for NPU deployment: static-shape graphs written through a real protobuf
//! binding (`onnx-protobuf`), module by module (`burn-onnx` cannot lower this model): the
//! MobileNetV5 vision encoder with its connector, the language model's `embed_tokens`,
//! `prefill` and `decode` graphs with explicit per-layer state, in fp32 and for quantized
//! checkpoints as QDQ graphs and AIMET encodings ([`qdq`]), `manifest.json`, and reference
//! generations for `scripts/verify_onnx.py`.

pub mod calibrate;
pub mod export;
pub mod genie;
pub mod graph;
pub mod interpret;
pub mod lm;
pub mod placement;
pub mod qdq;
pub mod vision;

/// The ONNX messages the exporter writes (and the cost model reads), so every crate speaks
/// of one `ModelProto`.
pub use onnx_protobuf as onnx;
pub use protobuf;

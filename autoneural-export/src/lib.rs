//! ONNX export for NPU deployment: static-shape graphs written through a real protobuf
//! binding (`onnx-protobuf`), module by module (`burn-onnx` cannot lower this model). Today,
//! in fp32: the MobileNetV5 vision encoder with its connector, the language model's
//! `embed_tokens`, `prefill` and `decode` graphs with explicit per-layer state,
//! `manifest.json`, and a reference generation for `scripts/verify_onnx.py`.

pub mod export;
pub mod graph;
pub mod lm;
pub mod vision;

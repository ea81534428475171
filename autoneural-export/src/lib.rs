//! ONNX export (fp32 and QDQ) with static shapes, AIMET encodings.

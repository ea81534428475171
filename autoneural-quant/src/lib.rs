//! Quantization you can see, over the quantized layers of `autoneural_model::quant`:
//!
//! - [`ptq`]: post-training quantization of a checkpoint by policy: calibration on
//!   conversations, QDQ weights, `quantization.json` (`autoneural quantize`);
//! - [`report`]: the quantization error (SQNR, relative RMS) per weight, per group, at the
//!   encoder's output and over a bit-width sweep (`autoneural quant-report`);
//! - [`compare`]: a QAT run's float, PTQ and QAT models side by side (the run report's table).

pub mod compare;
pub mod ptq;
pub mod report;

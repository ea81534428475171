//! How a quantized model runs: its packed low-bit weights (from a precision policy, or from
//! a quantized checkpoint's encodings) and its calibrated op-input encodings, installed
//! around a generation or an evaluation.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

use burn::module::{Module, ParamId};

use super::activations::quantize_with;
use super::encoding::Encoding;
use super::packed::{PackedWeights, quantize_and_pack, with_packed};
use super::policy::PrecisionPolicy;
use super::saved::QuantizationFile;
use crate::error::{ModelError, Result};

/// What a run installs: packed weights for the low-bit kernels, and op-input encodings.
#[derive(Debug, Default)]
pub struct QuantizedRuntime {
    /// The policy's name (`None`: the model runs in float).
    pub name: Option<String>,
    pub packed: Option<Arc<PackedWeights>>,
    pub activations: HashMap<ParamId, Encoding>,
}

impl QuantizedRuntime {
    /// The model loaded from `dir`, quantized by `precision` when given, or run as its
    /// `quantization.json` says when it has one (both is an error: the checkpoint is
    /// quantized already). Returns the model with its QDQ weights.
    pub fn for_checkpoint<M: Module>(model: M, dir: &Path, precision: Option<&str>) -> Result<(M, Self)> {
        let saved = QuantizationFile::read(dir)?;
        let saved_name =
            |q: &QuantizationFile| q.policy.get("name").and_then(|v| v.as_str()).unwrap_or("quantized").to_string();
        match (precision, saved) {
            (Some(p), Some(q)) => Err(ModelError::Invalid(format!(
                "{} is quantized already (policy {}); drop --precision {p}, or quantize the float checkpoint",
                dir.display(),
                saved_name(&q)
            ))),
            (Some(p), None) => {
                let policy = PrecisionPolicy::load(p)?;
                if policy.name == "fp32" {
                    return Ok((model, Self::default()));
                }
                let (model, packed) = quantize_and_pack(model, &policy)?;
                Ok((
                    model,
                    Self { name: Some(policy.name), packed: Some(Arc::new(packed)), activations: HashMap::new() },
                ))
            }
            (None, Some(q)) => {
                q.check_against(&model, &dir.join(super::saved::FILE))?;
                let runtime = Self::from_file(&model, &q)?;
                Ok((model, runtime))
            }
            (None, None) => Ok((model, Self::default())),
        }
    }

    /// The runtime of `model` (already holding its QDQ weights) as `file` describes it.
    pub fn from_file<M: Module>(model: &M, file: &QuantizationFile) -> Result<Self> {
        let name = file.policy.get("name").and_then(|v| v.as_str()).unwrap_or("quantized").to_string();
        let activations = file.activation_encodings(model)?;
        let packed = PackedWeights::pack(model, &file.weights);
        Ok(Self { name: Some(name), packed: Some(Arc::new(packed)), activations })
    }

    /// Runs `f` with the packed weights and the op-input encodings installed on this thread.
    pub fn run<R>(&self, f: impl FnOnce() -> R) -> R {
        let activations = self.activations.clone();
        match &self.packed {
            Some(p) => with_packed(p.clone(), || quantize_with(activations, f)),
            None => quantize_with(activations, f),
        }
    }

    /// One line on what is packed, for the CLI's stderr.
    pub fn summary(&self) -> Option<String> {
        let (name, p) = (self.name.as_ref()?, self.packed.as_ref()?);
        Some(format!(
            "{name}: {} weight matrices decode from int8/int4: {:.1} MB instead of {:.1} MB in f32",
            p.len(),
            p.packed_bytes as f64 / 1e6,
            p.float_bytes as f64 / 1e6
        ))
    }
}

//! A quantized checkpoint's `quantization.json`: the policy, the encoding of every quantized
//! weight, and the encoding of every quantized op input, keyed by module path (the weight's
//! path for an op input). The weights in `model.safetensors` are already their QDQ values,
//! so loading the directory gives the fake-quantized weights; [`activation_encodings`]
//! gives what [`super::activations::quantize_with`] needs for the activations.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use burn::module::{Module, ParamId};
use serde::{Deserialize, Serialize};

use super::encoding::Encoding;
use super::kv::activation_keys;
use super::policy::PrecisionPolicy;
use crate::error::{ModelError, Result};

pub const FILE: &str = "quantization.json";
pub const FORMAT: &str = "autoneural-quantization/1";

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct QuantizationFile {
    pub format: String,
    /// The policy's name and what it set (informative; the encodings are what count).
    pub policy: serde_json::Value,
    pub weights: BTreeMap<String, Encoding>,
    /// Op inputs, by the path of the op's weight; KV caches as `...self_attn.k_cache` and
    /// `...self_attn.v_cache` ([`super::kv`]).
    pub activations: BTreeMap<String, Encoding>,
}

impl QuantizationFile {
    pub fn new(policy: &PrecisionPolicy) -> Self {
        Self {
            format: FORMAT.into(),
            policy: serde_json::to_value(policy).unwrap_or(serde_json::Value::Null),
            weights: BTreeMap::new(),
            activations: BTreeMap::new(),
        }
    }

    pub fn write(&self, dir: &Path) -> Result<()> {
        let path = dir.join(FILE);
        let text = serde_json::to_string_pretty(self).map_err(|e| ModelError::Invalid(e.to_string()))?;
        std::fs::write(&path, text).map_err(|e| ModelError::io(&path, e))
    }

    /// The directory's file, or `None` for a float checkpoint.
    pub fn read(dir: &Path) -> Result<Option<Self>> {
        let path = dir.join(FILE);
        if !path.is_file() {
            return Ok(None);
        }
        let text = autoneural_io::read::read_to_string(&path, autoneural_io::read::QUANTIZATION)?;
        let file: Self =
            serde_json::from_str(&text).map_err(|e| ModelError::Invalid(format!("{}: {e}", path.display())))?;
        if file.format != FORMAT {
            return Err(ModelError::Invalid(format!(
                "{}: format {:?}, expected {FORMAT:?}",
                path.display(),
                file.format
            )));
        }
        Ok(Some(file))
    }

    /// Every entry applies to `model`: each weight encoding names one of its weights and
    /// fits its shape (bits, axes, blocks, one finite scale per group), each op-input
    /// encoding names one of its weights and is per tensor. A hand-edited or foreign file is
    /// an error naming the key here, never a panic or a silently float model later.
    /// `file` names the file in messages.
    pub fn check_against<M: Module>(&self, model: &M, file: &Path) -> Result<()> {
        let shapes: HashMap<String, Vec<usize>> =
            crate::checkpoint::apply::param_shapes(model, &crate::checkpoint::apply::Identity).into_iter().collect();
        let path = file;
        if self.weights.is_empty() && self.activations.is_empty() {
            return Err(ModelError::Invalid(format!(
                "{}: holds no encodings, so the model would silently run in float; quantize it again",
                path.display()
            )));
        }
        let bad = |kind: &str, key: &str, message: String| {
            ModelError::Invalid(format!("{}: {kind} {key:?}: {message}", path.display()))
        };
        for (key, enc) in &self.weights {
            let shape = shapes.get(key).ok_or_else(|| bad("weights", key, "the model has no such weight".into()))?;
            enc.check_fits(Some(shape)).map_err(|m| bad("weights", key, m))?;
        }
        let ops: std::collections::HashSet<String> = activation_keys(model).into_iter().map(|(k, _)| k).collect();
        for (key, enc) in &self.activations {
            if !ops.contains(key) {
                return Err(bad("activations", key, "the model has no such op".into()));
            }
            enc.check_fits(None).map_err(|m| bad("activations", key, m))?;
            if enc.granularity != super::encoding::Granularity::PerTensor {
                return Err(bad("activations", key, "op inputs are quantized per tensor".into()));
            }
        }
        Ok(())
    }

    /// Op-input encodings by the ids of `model`'s weights; a path the model does not have
    /// is an error naming it.
    pub fn activation_encodings<M: Module>(&self, model: &M) -> Result<HashMap<ParamId, Encoding>> {
        let ids: HashMap<String, ParamId> = activation_keys(model).into_iter().collect();
        self.activations
            .iter()
            .map(|(key, enc)| match ids.get(key) {
                Some(id) => Ok((*id, enc.clone())),
                None => Err(ModelError::Invalid(format!("{FILE}: the model has no weight {key:?}"))),
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nn::{Linear, LinearConfig};
    use crate::quant::encoding::{Axes, Granularity};
    use burn::module::Param;
    use burn::tensor::{Device, Tensor};

    #[derive(Module, Debug)]
    struct Two {
        a: Linear,
        b: Linear,
    }

    #[test]
    fn round_trip_and_ids() {
        let device = Device::flex();
        let m = Two { a: LinearConfig::new(2, 2).init(&device), b: LinearConfig::new(2, 2).init(&device) };
        let mut file = QuantizationFile::new(&PrecisionPolicy::preset("w8a16").unwrap());
        let w = Encoding::weights(&[1.0, -2.0, 0.5, 0.25], &[2, 2], 8, Granularity::PerChannel, Axes::OUT_IN).unwrap();
        file.weights.insert("a.weight".into(), w);
        file.activations.insert("b.weight".into(), Encoding::activation(-1.0, 2.0, 16).unwrap());
        let dir = tempfile::tempdir().unwrap();
        assert!(QuantizationFile::read(dir.path()).unwrap().is_none());
        file.write(dir.path()).unwrap();
        let back = QuantizationFile::read(dir.path()).unwrap().unwrap();
        assert_eq!(back.weights, file.weights);
        let ids = back.activation_encodings(&m).unwrap();
        assert_eq!(ids.len(), 1);
        assert!(ids.contains_key(&m.b.weight.id));
        let _: &Param<Tensor<2>> = &m.a.weight;
        file.activations.insert("c.weight".into(), Encoding::activation(0.0, 1.0, 8).unwrap());
        let err = file.activation_encodings(&m).unwrap_err().to_string();
        assert!(err.contains("c.weight"), "{err}");
    }
}

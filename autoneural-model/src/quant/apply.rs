//! Post-training quantization of a whole model's weights by policy: every weight matrix and
//! convolution kernel is replaced by its QDQ values, and each one's error is reported.
//! Biases, norm weights, layer scales and position embeddings stay float (they are added,
//! not multiplied through a matmul, and NPU toolchains keep them at higher precision).

use std::collections::HashMap;

use burn::module::{Module, ParamId};
use serde::Serialize;

use super::activations::{Observer, Ranges};
use super::encoding::{Axes, Encoding, Granularity};
use super::kv::{cache_entries, cache_scheme};
use super::policy::{ActivationScheme, Calibration, Group, PrecisionPolicy, WeightScheme};
use super::sqnr::{relative_rms, sqnr_db};
use crate::checkpoint::apply::{Identity, map_tensors, param_keys};
use crate::error::{ModelError, Result};

/// One quantized weight and its error.
#[derive(Debug, Clone, Serialize)]
pub struct WeightReport {
    /// Module path (the AutoNeural checkpoint key without its prefix).
    pub key: String,
    pub group: Group,
    /// PyTorch layout: `[out, in, ...]`.
    pub shape: Vec<usize>,
    pub bits: u32,
    pub granularity: Granularity,
    pub sqnr_db: f64,
    pub relative_rms: f64,
    /// `E[x^2]` of the float weight (to pool errors over a group).
    pub mean_square: f64,
    /// Its scales (in `quantization.json`, not in reports).
    #[serde(skip)]
    pub encoding: Encoding,
}

/// The policy group of a parameter, or `None` when it stays float.
pub fn weight_group(key: &str, rank: usize) -> Option<Group> {
    if rank < 2 {
        return None; // biases, norms, layer scales
    }
    if key.ends_with("embed_tokens.weight") || key.contains("lm_head") {
        // LFM2 ties its embedding to the LM head: the table is the head's weight.
        return Some(Group::LmHead);
    }
    if rank == 2 && key.contains("embedding") {
        return None; // position embeddings (added)
    }
    match key.split('.').next() {
        Some("vision_tower") => Some(Group::Vision),
        Some("multi_modal_projector") => Some(Group::Connector),
        // `model.` is a bare LFM2 checkpoint's backbone (its head is `lm_head`, above).
        Some("language" | "model") => Some(Group::Language),
        _ => None,
    }
}

/// The activation encodings of every op input observed in `ranges` (keyed by the op's
/// weight), at the bits and calibration the policy gives the op's group; ops whose group
/// keeps float activations get none.
pub fn activation_encodings<M: Module>(
    model: &M,
    policy: &PrecisionPolicy,
    ranges: &Ranges,
) -> Result<HashMap<ParamId, Encoding>> {
    let mut out = HashMap::new();
    let encode = |key: &str, observer: &Observer, scheme: ActivationScheme| {
        let (lo, hi) = match scheme.calibration {
            Calibration::MinMax => (observer.min, observer.max),
            Calibration::Percentile(p) => observer.percentile_range(p),
        };
        Encoding::activation(lo, hi, scheme.bits).map_err(|e| ModelError::Invalid(format!("{key}: {e}")))
    };
    for (key, id) in param_keys(model, &Identity) {
        let (Some(observer), Some(group)) = (ranges.get(&id), weight_group(&key, 2)) else {
            continue;
        };
        let Some(scheme) = policy.precision_of(group, &key).activations else {
            continue;
        };
        out.insert(id, encode(&key, observer, scheme)?);
    }
    // The KV caches, at the policy's `kv_cache_bits`.
    if let Some(scheme) = cache_scheme(policy) {
        for (key, id) in cache_entries(model) {
            if let Some(observer) = ranges.get(&id) {
                out.insert(id, encode(&key, observer, scheme)?);
            }
        }
    }
    Ok(out)
}

/// The encoding of one weight in PyTorch layout (`[out, in, ...]`). A blocked scheme whose
/// block does not divide the input dimension (depthwise kernels, narrow layers) falls back
/// to per channel, and the report says so.
pub fn weight_encoding(values: &[f32], shape: &[usize], scheme: WeightScheme) -> Result<Encoding> {
    weight_encoding_in(values, shape, scheme, Axes::OUT_IN)
}

/// [`weight_encoding`] for a weight whose channels and blocks lie on `axes` (Burn's layout
/// during training: `Axes::LINEAR` for a `Linear`).
pub fn weight_encoding_in(values: &[f32], shape: &[usize], scheme: WeightScheme, axes: Axes) -> Result<Encoding> {
    let blocked = match scheme.granularity {
        Granularity::PerBlock { block_size } | Granularity::Lpbq { block_size, .. } => Some(block_size),
        _ => None,
    };
    let granularity = match blocked {
        Some(b) if !shape[axes.block].is_multiple_of(b) => Granularity::PerChannel,
        _ => scheme.granularity,
    };
    Encoding::weights(values, shape, scheme.bits, granularity, axes)
}

/// `model` with every weight the policy quantizes replaced by its QDQ values.
pub fn quantize_weights<M: Module>(model: M, policy: &PrecisionPolicy) -> Result<(M, Vec<WeightReport>)> {
    let mut reports = Vec::new();
    let mut error = None;
    let model = map_tensors(model, &Identity, |key, shape, values| {
        let group = weight_group(key, shape.len())?;
        let scheme = policy.precision_of(group, key).weights?;
        if error.is_some() {
            return None;
        }
        match weight_encoding(&values, shape, scheme) {
            Ok(enc) => {
                let q = enc.fake_quant(&values);
                let granularity = enc.granularity;
                reports.push(WeightReport {
                    key: key.to_string(),
                    group,
                    shape: shape.to_vec(),
                    bits: scheme.bits,
                    granularity,
                    sqnr_db: sqnr_db(&values, &q),
                    relative_rms: relative_rms(&values, &q),
                    mean_square: values.iter().map(|&v| f64::from(v) * f64::from(v)).sum::<f64>()
                        / values.len().max(1) as f64,
                    encoding: enc,
                });
                Some(q)
            }
            Err(e) => {
                error = Some(ModelError::Invalid(format!("{key}: {e}")));
                None
            }
        }
    });
    match error {
        Some(e) => Err(e),
        None => Ok((model, reports)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn groups_by_path() {
        assert_eq!(weight_group("vision_tower.conv_stem.conv.weight", 4), Some(Group::Vision));
        assert_eq!(weight_group("vision_tower.conv_stem.bn.weight", 1), None);
        assert_eq!(weight_group("multi_modal_projector.linear_1.weight", 2), Some(Group::Connector));
        assert_eq!(weight_group("language.model.layers.0.feed_forward.w1.weight", 2), Some(Group::Language));
        assert_eq!(weight_group("language.model.embed_tokens.weight", 2), Some(Group::LmHead));
        assert_eq!(weight_group("language.lm_head.weight", 2), Some(Group::LmHead));
        assert_eq!(weight_group("model.layers.2.conv.in_proj.weight", 2), Some(Group::Language));
        assert_eq!(weight_group("model.embed_tokens.weight", 2), Some(Group::LmHead));
        assert_eq!(weight_group("vision_tower.embeddings.position_embedding.weight", 2), None);
        assert_eq!(weight_group("vision_tower.embeddings.patch_embedding.weight", 4), Some(Group::Vision));
    }

    #[test]
    fn blocked_schemes_fall_back_per_channel_when_blocks_do_not_fit() {
        let lpbq = WeightScheme { bits: 4, granularity: Granularity::Lpbq { block_size: 64, scale_bits: 4 } };
        let depthwise = vec![0.5f32; 8 * 3];
        let e = weight_encoding(&depthwise, &[8, 1, 3], lpbq).unwrap();
        assert_eq!(e.granularity, Granularity::PerChannel);
        let w = vec![0.25f32; 2 * 128];
        assert_eq!(weight_encoding(&w, &[2, 128], lpbq).unwrap().granularity, lpbq.granularity);
    }
}

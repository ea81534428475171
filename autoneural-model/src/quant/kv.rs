//! The KV cache's quantization (a policy's `kv_cache_bits`, 8 in the `autoneural` preset):
//! the keys (after their norm and RoPE) and values of every language attention layer are
//! fake-quantized as they enter the cache, asymmetric per tensor from calibrated ranges,
//! as an NPU holds its `past_key` / `past_value` state. They go through the same per-thread
//! context as op inputs ([`super::activations`]): calibration records their ranges, PTQ
//! and QAT quantize them, `quantization.json` names them `...self_attn.k_cache` and
//! `...self_attn.v_cache`. Their ids derive from the `k_proj` / `v_proj` weight ids.

use burn::module::{Module, ParamId};
use burn::tensor::Tensor;

use super::activations::at_weight_input;
use super::apply::weight_group;
use super::policy::{ActivationScheme, Calibration, Group, PrecisionPolicy};
use crate::checkpoint::apply::{Identity, param_keys};

/// Mixed into a projection weight's id to name its cache ("kvcache\0").
const TAG: u64 = 0x6b76_6361_6368_6500;

/// The id under which the cache fed by the projection weight `proj_weight` is observed
/// and quantized.
pub fn cache_id(proj_weight: ParamId) -> ParamId {
    ParamId::from(proj_weight.val() ^ TAG)
}

/// The cache a language attention projection fills: `...self_attn.k_proj.weight` ->
/// `...self_attn.k_cache` (and `v_proj` -> `v_cache`); `None` for any other weight
/// (vision transformers cache nothing).
pub fn cache_key(weight_key: &str) -> Option<String> {
    if weight_group(weight_key, 2) != Some(Group::Language) {
        return None;
    }
    [("self_attn.k_proj.weight", "self_attn.k_cache"), ("self_attn.v_proj.weight", "self_attn.v_cache")]
        .into_iter()
        .find_map(|(proj, cache)| weight_key.strip_suffix(proj).map(|prefix| format!("{prefix}{cache}")))
}

/// The names and ids of everything activation quantization keys: every weight (for the op
/// input it multiplies) and every KV cache.
pub fn activation_keys<M: Module>(model: &M) -> Vec<(String, ParamId)> {
    param_keys(model, &Identity).into_iter().chain(cache_entries(model)).collect()
}

/// The caches of `model`: name and id.
pub fn cache_entries<M: Module>(model: &M) -> Vec<(String, ParamId)> {
    param_keys(model, &Identity).into_iter().filter_map(|(k, id)| cache_key(&k).map(|c| (c, cache_id(id)))).collect()
}

/// How `policy` quantizes the caches: `kv_cache_bits`, calibrated as the language model's
/// activations are (min-max when those are float).
pub fn cache_scheme(policy: &PrecisionPolicy) -> Option<ActivationScheme> {
    let bits = policy.kv_cache_bits?;
    let calibration = policy.language.activations.map_or(Calibration::MinMax, |a| a.calibration);
    Some(ActivationScheme { bits, calibration })
}

/// Keys or values `[b, kv_heads, t, head_dim]` as they enter the cache filled by the
/// projection weight `proj_weight`: recorded, fake-quantized or as they are, by this
/// thread's context.
pub fn at_cache_input<const D: usize>(proj_weight: ParamId, x: Tensor<D>) -> Tensor<D> {
    at_weight_input(cache_id(proj_weight), x)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_language_attention_projections_fill_caches() {
        assert_eq!(
            cache_key("language.model.layers.2.self_attn.k_proj.weight").as_deref(),
            Some("language.model.layers.2.self_attn.k_cache")
        );
        assert_eq!(
            cache_key("model.layers.0.self_attn.v_proj.weight").as_deref(),
            Some("model.layers.0.self_attn.v_cache")
        );
        assert_eq!(cache_key("language.model.layers.2.self_attn.q_proj.weight"), None);
        assert_eq!(cache_key("vision_tower.vision_model.encoder.layers.0.self_attn.k_proj.weight"), None);
        let id = ParamId::from(42);
        assert_ne!(cache_id(id), id);
        assert_eq!(cache_id(cache_id(id)), id);
    }
}

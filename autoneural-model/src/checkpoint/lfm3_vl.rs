//! LFM3-VL checkpoints (`model_type: lfm3_vl`): the vision tower and projector, loaded on
//! their own as an encoder (the language model is an LFM3, `checkpoint/lfm2.rs`).

use std::path::Path;

use burn::tensor::Device;

use crate::checkpoint::apply::{KeyMap, load_module};
use crate::checkpoint::json::Fields;
use crate::checkpoint::safetensors::WeightFiles;
use crate::checkpoint::vlm::read_vlm_config;
use crate::error::{ModelError, Result};
use crate::vision::EncoderConfig;
use crate::vision::lfm3_vl::{Lfm3VlVision, Lfm3VlVisionConfig};

/// Module paths under `model.`, with the published names (`patchifier`, `q_layernorm`,
/// `k_layernorm`) or transformers' in-memory ones (`patch_embed`, `q_norm`, `k_norm`),
/// whichever the files hold; the language model's keys are not read here.
struct Lfm3VlVisionKeys {
    transformers_names: bool,
}

/// A published tower key under transformers' in-memory names.
pub fn transformers_key(key: &str) -> String {
    key.replace(".patchifier.", ".patch_embed.")
        .replace(".self_attn.q_layernorm.", ".self_attn.q_norm.")
        .replace(".self_attn.k_layernorm.", ".self_attn.k_norm.")
}

impl KeyMap for Lfm3VlVisionKeys {
    fn key_for(&self, p: &str) -> String {
        let key = format!("model.{p}");
        if self.transformers_names { transformers_key(&key) } else { key }
    }
    fn ignorable(&self, key: &str) -> bool {
        key.starts_with("model.language_model.") || key.starts_with("lm_head.")
    }
}

/// The tower's config from the fields `v` of a `vision_config`, with transformers' defaults
/// for what is absent.
pub fn vision_config(v: &Fields, path: &Path) -> Result<Lfm3VlVisionConfig> {
    let layers = v.usize_opt(&["num_hidden_layers"])?.unwrap_or(14);
    let attention = match v.str_list_opt(&["layer_types"])? {
        Some(types) => types
            .iter()
            .map(|t| match *t {
                "conv" => Ok(false),
                "full_attention" => Ok(true),
                other => Err(v.invalid(
                    "layer_types",
                    format!("unknown vision layer type {other:?} (expected \"conv\" or \"full_attention\")"),
                )),
            })
            .collect::<Result<Vec<_>>>()?,
        None => Lfm3VlVisionConfig::default_attention(layers),
    };
    if attention.len() != layers {
        return Err(
            v.invalid("layer_types", format!("has {} entries but num_hidden_layers is {layers}", attention.len()))
        );
    }
    let rope_theta = match v.object_opt("rope_parameters")? {
        Some(rp) => Fields::new(path, rp).f64_opt(&["rope_theta"])?,
        None => None,
    };
    let config = Lfm3VlVisionConfig {
        hidden_size: v.usize_opt(&["hidden_size"])?.unwrap_or(1024),
        intermediate_size: v.usize_opt(&["intermediate_size"])?.unwrap_or(2560),
        in_channels: v.usize_opt(&["in_channels"])?.unwrap_or(3),
        patch_size: v.usize_opt(&["patch_size"])?.unwrap_or(16),
        temporal_patch_size: v.usize_opt(&["temporal_patch_size"])?.unwrap_or(2),
        spatial_merge_size: v.usize_opt(&["spatial_merge_size"])?.unwrap_or(2),
        num_attention_heads: v.usize_opt(&["num_attention_heads"])?.unwrap_or(16),
        num_key_value_heads: v.usize_opt(&["num_key_value_heads"])?.unwrap_or(8),
        attention,
        conv_kernel_size: v.usize_opt(&["conv_kernel_size"])?.unwrap_or(3),
        norm_eps: v.f64_opt(&["norm_eps"])?.unwrap_or(1e-5),
        rope_theta: rope_theta.unwrap_or(1_000_000.0),
        image_size: v.usize_opt(&["image_size"])?.unwrap_or(512),
    };
    config.check().map_err(|(field, message)| v.invalid(field, message))?;
    Ok(config)
}

/// Loads the vision tower and projector of an LFM3-VL checkpoint directory (its config read
/// and checked as [`crate::checkpoint::load_vlm`] reads it; the language model's weights
/// are not read).
pub fn load_lfm3_vl_vision(dir: &Path, device: &Device) -> Result<Lfm3VlVision> {
    let config = read_vlm_config(dir)?;
    let EncoderConfig::Lfm3Vl(vision) = &config.encoder else {
        return Err(ModelError::config(
            dir.join("config.json"),
            "model_type",
            "not an LFM3-VL checkpoint (expected \"lfm3_vl\")",
        ));
    };
    let model =
        Lfm3VlVision { vision_tower: vision.init(device), multi_modal_projector: config.projector.init(device) };
    let files = WeightFiles::open_dir(dir)?;
    let transformers_names = files.keys().any(|k| k.starts_with("model.vision_tower.patch_embed."));
    load_module(model, &files, &Lfm3VlVisionKeys { transformers_names }, dir)
}

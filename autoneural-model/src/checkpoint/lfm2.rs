//! Hugging Face LFM2 checkpoint directories: `config.json` + safetensors, loaded unchanged.

use std::path::Path;

use burn::tensor::Device;

use crate::checkpoint::apply::{KeyMap, collect_tensors, load_module};
use crate::checkpoint::json::{config_path, read_object};
use crate::checkpoint::safetensors::{WeightFiles, write_f32};
use crate::error::{ModelError, Result};
use crate::text::{Lfm2Config, Lfm2ForCausalLM};

/// Module paths are the HF keys; a tied model ignores a stored `lm_head.weight`, as
/// transformers does.
struct Lfm2Keys {
    tied: bool,
}

impl KeyMap for Lfm2Keys {
    fn key_for(&self, p: &str) -> String {
        p.to_string()
    }
    fn ignorable(&self, key: &str) -> bool {
        self.tied && key == "lm_head.weight"
    }
}

/// Reads `dir/config.json` as an LFM2 config.
pub fn read_config(dir: &Path) -> Result<Lfm2Config> {
    let path = config_path(dir)?;
    let map = read_object(&path)?;
    if let Some(mt) = map.get("model_type").and_then(|v| v.as_str()) {
        if mt != "lfm2" && mt != "lfm2_moe" {
            return Err(ModelError::config(
                &path,
                "model_type",
                format!("{mt:?} is not an LFM2 text model (expected \"lfm2\" or \"lfm2_moe\")"),
            ));
        }
    }
    Lfm2Config::from_hf_json(&path, &map)
}

/// Loads an LFM2 checkpoint directory onto `device` (weights converted to f32).
pub fn load_lfm2(dir: &Path, device: &Device) -> Result<Lfm2ForCausalLM> {
    let config = read_config(dir)?;
    let files = WeightFiles::open_dir(dir)?;
    let model = config.init(device);
    load_module(model, &files, &Lfm2Keys { tied: config.tie_word_embeddings }, dir)
}

/// Writes `config.json` and `model.safetensors` (f32) that transformers and [`load_lfm2`] read.
pub fn save_lfm2(model: &Lfm2ForCausalLM, dir: &Path) -> Result<()> {
    std::fs::create_dir_all(dir).map_err(|e| ModelError::io(dir, e))?;
    let tensors = collect_tensors(model, &Lfm2Keys { tied: model.config.tie_word_embeddings });
    write_f32(&dir.join("model.safetensors"), &tensors)?;
    let cfg = serde_json::to_string_pretty(&model.config.to_hf_json()).expect("config serialises");
    let path = dir.join("config.json");
    std::fs::write(&path, cfg).map_err(|e| ModelError::io(&path, e))
}

//! Hugging Face LFM2 checkpoint directories: `config.json` + safetensors, loaded unchanged.

use std::path::Path;

use burn::tensor::Device;

use crate::checkpoint::apply::{KeyMap, collect_tensors, load_module};
use crate::checkpoint::json::{config_path, read_object};
use crate::checkpoint::safetensors::{WeightFiles, write_f32};
use crate::error::{ModelError, Result};
use crate::text::{Lfm2Config, Lfm2ForCausalLM};

/// Module paths are the HF keys; a tied model ignores a stored `lm_head.weight`, as
/// transformers does. LFM3's attention has Qwen3's names ([`lfm3_key`]).
pub(crate) struct Lfm2Keys {
    pub tied: bool,
    /// LFM3's attention gate key (`gate_proj` as published, `g_proj` as transformers names
    /// it in memory); `None` for LFM2.
    pub lfm3_gate: Option<&'static str>,
}

impl Lfm2Keys {
    pub fn new(config: &Lfm2Config, files: Option<&WeightFiles>) -> Self {
        let lfm3_gate = config.lfm3.as_ref().map(|_| {
            // Read whichever spelling the files have; write the published one.
            let transformers = files.is_some_and(|f| f.keys().any(|k| k.contains(".self_attn.g_proj.")));
            if transformers { "g_proj" } else { "gate_proj" }
        });
        Self { tied: config.tie_word_embeddings, lfm3_gate }
    }
}

impl KeyMap for Lfm2Keys {
    fn key_for(&self, p: &str) -> String {
        match self.lfm3_gate {
            Some(gate) => lfm3_key(p, gate),
            None => p.to_string(),
        }
    }
    fn ignorable(&self, key: &str) -> bool {
        self.tied && key == "lm_head.weight"
    }
}

/// An LFM3 key for a module path: the attention shares LFM2's module (one implementation
/// for decoding, export and quantization) under Qwen3's names, `o_proj`, `q_norm`, `k_norm`,
/// and the gate `g_proj` as `gate`.
pub(crate) fn lfm3_key(path: &str, gate: &str) -> String {
    let Some((layer, rest)) = path.split_once(".self_attn.") else { return path.to_string() };
    let (module, param) = rest.split_once('.').unwrap_or((rest, ""));
    let module = match module {
        "out_proj" => "o_proj",
        "q_layernorm" => "q_norm",
        "k_layernorm" => "k_norm",
        "g_proj" => gate,
        other => other,
    };
    format!("{layer}.self_attn.{module}.{param}")
}

/// Reads `dir/config.json` as an LFM2 config.
pub fn read_config(dir: &Path) -> Result<Lfm2Config> {
    let path = config_path(dir)?;
    let map = read_object(&path)?;
    if let Some(mt) = map.get("model_type").and_then(|v| v.as_str()) {
        if !matches!(mt, "lfm2" | "lfm2_moe" | "lfm3") {
            return Err(ModelError::config(
                &path,
                "model_type",
                format!("{mt:?} is not an LFM text model (expected \"lfm2\", \"lfm2_moe\" or \"lfm3\")"),
            ));
        }
    }
    Lfm2Config::from_hf_json(&path, &map)
}

/// Loads an LFM2 checkpoint directory onto `device` (weights converted to f32).
pub fn load_lfm2(dir: &Path, device: &Device) -> Result<Lfm2ForCausalLM> {
    let config = read_config(dir)?;
    let files = WeightFiles::open_dir(dir)?;
    let keys = Lfm2Keys::new(&config, Some(&files));
    let model = config.init(device);
    load_module(model, &files, &keys, dir)
}

/// Writes `config.json` and `model.safetensors` (f32) that transformers and [`load_lfm2`] read.
pub fn save_lfm2(model: &Lfm2ForCausalLM, dir: &Path) -> Result<()> {
    std::fs::create_dir_all(dir).map_err(|e| ModelError::io(dir, e))?;
    let tensors = collect_tensors(model, &Lfm2Keys::new(&model.config, None));
    write_f32(&dir.join("model.safetensors"), &tensors)?;
    let cfg = serde_json::to_string_pretty(&model.config.to_hf_json()).expect("config serialises");
    let path = dir.join("config.json");
    std::fs::write(&path, cfg).map_err(|e| ModelError::io(&path, e))
}

//! Standalone MobileNetV5 weights: a timm state dict (`model.safetensors`, keys as timm
//! names them) or a Gemma 3n checkpoint (keys under `model.vision_tower.timm_model.`).

use std::path::{Path, PathBuf};

use burn::tensor::Device;

use crate::checkpoint::apply::{KeyMap, load_module};
use crate::checkpoint::json::{Fields, read_object};
use crate::checkpoint::safetensors::WeightFiles;
use crate::error::{ModelError, Result};
use crate::vision::{MobileNetV5, MobileNetV5Arch};

pub const GEMMA3N_PREFIX: &str = "model.vision_tower.timm_model.";

struct TimmKeys {
    prefix: &'static str,
}

impl KeyMap for TimmKeys {
    fn key_for(&self, p: &str) -> String {
        format!("{}{p}", self.prefix)
    }
    fn ignorable(&self, key: &str) -> bool {
        // PyTorch's BatchNorm2d step counter: only used when momentum is None (not timm's).
        if key.ends_with(".num_batches_tracked") {
            return true;
        }
        if !self.prefix.is_empty() {
            // A Gemma 3n checkpoint holds the whole multimodal model.
            return !key.starts_with(self.prefix);
        }
        // Classifier variants carry a head the encoder does not use.
        ["classifier.", "conv_head.", "norm_head."].iter().any(|h| key.starts_with(h))
    }
}

/// Loads MobileNetV5 weights from a directory (timm hub style: `config.json` with
/// `architecture`, plus safetensors) or a `.safetensors` file. `arch` overrides the
/// directory's architecture (and is required for a bare file).
pub fn load_mobilenetv5(path: &Path, arch: Option<&MobileNetV5Arch>, device: &Device) -> Result<MobileNetV5> {
    let (files, dir): (WeightFiles, PathBuf) = if path.is_dir() {
        (WeightFiles::open_dir(path)?, path.to_path_buf())
    } else {
        (WeightFiles::open_files(&[path.to_path_buf()])?, path.parent().unwrap_or(Path::new(".")).to_path_buf())
    };
    let arch = match arch {
        Some(a) => a.clone(),
        None => {
            let cfg = dir.join("config.json");
            let map = read_object(&cfg)?;
            let f = Fields::new(&cfg, &map);
            let name = f.str_opt(&["architecture"])?.ok_or_else(|| f.invalid("architecture", "missing"))?;
            MobileNetV5Arch::preset(name).ok_or_else(|| {
                f.invalid(
                    "architecture",
                    format!("unknown preset {name:?} (known: {})", MobileNetV5Arch::preset_names().join(", ")),
                )
            })?
        }
    };
    let prefix =
        if files.shape(&format!("{GEMMA3N_PREFIX}conv_stem.conv.weight")).is_some() { GEMMA3N_PREFIX } else { "" };
    let model = arch.init(device).map_err(|e| ModelError::Invalid(format!("{}: {e}", path.display())))?;
    load_module(model, &files, &TimmKeys { prefix }, &dir)
}

//! VLM checkpoint directories: the AutoNeural format (docs/checkpoint-format.md) and
//! Hugging Face LFM2-VL. Both are `config.json` + safetensors + tokenizer files.

use std::path::Path;

use burn::tensor::Device;
use serde_json::{Value, json};

use crate::checkpoint::apply::{KeyMap, collect_tensors, load_module};
use crate::checkpoint::json::{Fields, config_path, read_object};
use crate::checkpoint::lfm2::lfm3_key;
use crate::checkpoint::lfm3_vl::{
    transformers_key as lfm3_vl_transformers_key, vision_config as lfm3_vl_vision_config,
};
use crate::checkpoint::safetensors::{WeightFiles, write_f32};
use crate::connector::ProjectorConfig;
use crate::error::{ModelError, Result};
use crate::images::Preprocess;
use crate::text::Lfm2Config;
use crate::vision::lfm2_vl_processor::Lfm2VlProcessorConfig;
use crate::vision::lfm3_vl_processor::Lfm3VlProcessorConfig;
use crate::vision::{EncoderConfig, MobileNetV5Arch, NormKind, PadType, VitConfig};
use crate::vlm::{VisionLanguageModel, VlmConfig, VlmFormat};

/// Module paths -> checkpoint keys for both formats.
struct VlmKeys {
    vit: bool,
    tied: bool,
    /// transformers 5 writes SigLIP towers without their `vision_model.` level; hub
    /// checkpoints have it. Both load; a model saves the way it was loaded.
    flat_vit: bool,
    /// An LFM3 language model: its attention's Qwen3 key names, the gate under this name
    /// (`gate_proj` as published, `g_proj` as transformers names it in memory).
    lfm3_gate: Option<&'static str>,
    /// LFM3-VL's tower, under `model.vision_tower.` directly; `renamed`: with transformers'
    /// in-memory names (`patch_embed`, `q_norm`, `k_norm`) rather than the published ones.
    lfm3_vl: Option<bool>,
}

impl VlmKeys {
    fn new(config: &VlmConfig) -> Self {
        Self {
            vit: matches!(config.encoder, EncoderConfig::Vit(_)),
            tied: config.text.tie_word_embeddings,
            flat_vit: config.flat_vit_keys,
            lfm3_gate: config.text.lfm3.as_ref().map(|_| "gate_proj"),
            lfm3_vl: matches!(config.encoder, EncoderConfig::Lfm3Vl(_)).then_some(false),
        }
    }

    /// The key names `files` use where two spellings exist.
    fn reading(mut self, files: &WeightFiles) -> Self {
        if self.lfm3_gate.is_some() && files.keys().any(|k| k.contains(".self_attn.g_proj.")) {
            self.lfm3_gate = Some("g_proj");
        }
        if self.lfm3_vl.is_some() {
            self.lfm3_vl = Some(files.keys().any(|k| k.starts_with("model.vision_tower.patch_embed.")));
        }
        self
    }

    fn language_key(&self, key: String) -> String {
        match self.lfm3_gate {
            Some(gate) => lfm3_key(&key, gate),
            None => key,
        }
    }
}

/// `vision_model.rest` -> `rest` for flat SigLIP layouts.
fn vit_key(rest: &str, flat: bool) -> &str {
    if flat { rest.strip_prefix("vision_model.").unwrap_or(rest) } else { rest }
}

impl KeyMap for VlmKeys {
    fn key_for(&self, p: &str) -> String {
        if let Some(rest) = p.strip_prefix("vision_tower.") {
            if let Some(renamed) = self.lfm3_vl {
                let key = format!("model.vision_tower.{rest}");
                return if renamed { lfm3_vl_transformers_key(&key) } else { key };
            }
            if self.vit {
                format!("model.vision_tower.{}", vit_key(rest, self.flat_vit))
            } else {
                format!("model.vision_tower.timm_model.{rest}")
            }
        } else if let Some(rest) = p.strip_prefix("language.model.") {
            self.language_key(format!("model.language_model.{rest}"))
        } else if let Some(rest) = p.strip_prefix("language.") {
            self.language_key(rest.to_string())
        } else {
            format!("model.{p}")
        }
    }
    fn ignorable(&self, key: &str) -> bool {
        (self.tied && key == "lm_head.weight")
            // SigLIP's attention-pooling head is unused by VLMs; position_ids are buffers.
            || key.starts_with("model.vision_tower.vision_model.head.")
            || key.starts_with("model.vision_tower.head.")
            || key.ends_with("embeddings.position_ids")
    }
}

/// The model type a checkpoint directory declares (`lfm2` when absent).
pub fn model_type(dir: &Path) -> Result<String> {
    let map = read_object(&config_path(dir)?)?;
    Ok(map.get("model_type").and_then(|v| v.as_str()).unwrap_or("lfm2").to_string())
}

/// True for the model types this module reads.
pub fn is_vlm_type(model_type: &str) -> bool {
    matches!(model_type, "autoneural" | "lfm2-vl" | "lfm2_vl" | "lfm3_vl")
}

fn floats3(f: &Fields, name: &str, default: [f32; 3]) -> Result<[f32; 3]> {
    match f.get(&[name]) {
        None => Ok(default),
        Some((_, Value::Array(a))) if a.len() == 3 && a.iter().all(|v| v.is_number()) => {
            Ok([0, 1, 2].map(|i| a[i].as_f64().unwrap_or_default() as f32))
        }
        Some((_, Value::Number(n))) => Ok([n.as_f64().unwrap_or_default() as f32; 3]),
        Some((_, v)) => Err(f.invalid(name, format!("expected three numbers (one per RGB channel), found {v}"))),
    }
}

/// A SigLIP-style vision config (HF `siglip_vision_model` / `siglip2_vision_model` fields).
fn vit_config(f: &Fields, default_image: usize) -> Result<VitConfig> {
    let patch_size = f.usize_req(&["patch_size"])?;
    if patch_size == 0 {
        return Err(f.invalid("patch_size", "must be positive"));
    }
    let mt = f.str_opt(&["model_type"])?.unwrap_or("siglip2_vision_model");
    let linear = mt != "siglip_vision_model";
    let image_size = f.usize_opt(&["image_size"])?.unwrap_or(default_image);
    let num_patches = match f.usize_opt(&["num_patches"])? {
        Some(n) => n,
        None if !linear => (image_size / patch_size).pow(2),
        None => 256,
    };
    let side = (num_patches as f64).sqrt().round() as usize;
    if side * side != num_patches {
        return Err(f.invalid("num_patches", format!("{num_patches} is not a square grid")));
    }
    Ok(VitConfig {
        hidden_size: f.usize_req(&["hidden_size"])?,
        intermediate_size: f.usize_req(&["intermediate_size"])?,
        num_hidden_layers: f.usize_req(&["num_hidden_layers"])?,
        num_attention_heads: f.usize_req(&["num_attention_heads"])?,
        num_channels: f.usize_opt(&["num_channels"])?.unwrap_or(3),
        patch_size,
        num_patches,
        layer_norm_eps: f.f64_opt(&["layer_norm_eps"])?.unwrap_or(1e-6),
        linear_patch_embedding: linear,
        image_size,
    })
}

/// AutoNeural's `vision_config`: a MobileNetV5 preset or block strings, a ViT, or LFM3-VL's
/// tower.
fn autoneural_encoder(f: &Fields, path: &Path) -> Result<EncoderConfig> {
    match f.str_opt(&["encoder"])? {
        Some("vit") => return Ok(EncoderConfig::Vit(vit_config(f, 224)?)),
        Some("lfm3_vl") => return Ok(EncoderConfig::Lfm3Vl(lfm3_vl_vision_config(f, path)?)),
        _ => {}
    }
    let mut arch = match f.str_opt(&["architecture"])? {
        Some(name) => MobileNetV5Arch::preset(name).ok_or_else(|| {
            f.invalid(
                "architecture",
                format!("unknown preset {name:?} (known: {})", MobileNetV5Arch::preset_names().join(", ")),
            )
        })?,
        None => {
            let stages = match f.get(&["block_args"]) {
                None => return Err(f.invalid("block_args", "missing: give `architecture` (a preset) or `block_args`")),
                Some((_, v)) => serde_json::from_value::<Vec<Vec<String>>>(v.clone())
                    .map_err(|_| f.invalid("block_args", "expected a list of stages, each a list of block strings"))?,
            };
            MobileNetV5Arch {
                block_args: stages,
                stem_size: f.usize_req(&["stem_size"])?,
                pad_type: PadType::Same,
                msfa_output_resolution: f.usize_req(&["msfa_output_resolution"])?,
                num_features: 2048,
                image_size: f.usize_req(&["image_size"])?,
                layer_scale_init_value: Some(1e-5),
                norm: NormKind::Rms,
            }
        }
    };
    if let Some(v) = f.usize_opt(&["stem_size"])? {
        arch.stem_size = v;
    }
    if let Some(v) = f.usize_opt(&["msfa_output_resolution"])? {
        arch.msfa_output_resolution = v;
    }
    if let Some(v) = f.usize_opt(&["num_features"])? {
        arch.num_features = v;
    }
    if let Some(v) = f.usize_opt(&["image_size"])? {
        arch.image_size = v;
    }
    if let Some(p) = f.str_opt(&["pad_type"])? {
        arch.pad_type = match p {
            "same" => PadType::Same,
            "" => PadType::Symmetric,
            other => return Err(f.invalid("pad_type", format!("{other:?}: expected \"same\" or \"\""))),
        };
    }
    if let Some(n) = f.str_opt(&["norm"])? {
        arch.norm = serde_json::from_value(Value::String(n.to_string()))
            .map_err(|_| f.invalid("norm", format!("{n:?}: expected \"rms\" or \"batch\"")))?;
    }
    arch.resolve().map_err(|e| f.invalid("block_args", e.to_string()))?;
    Ok(EncoderConfig::MobileNetV5(arch))
}

fn text_config(f: &Fields, path: &Path) -> Result<Lfm2Config> {
    let text = f.object_opt("text_config")?.ok_or_else(|| f.invalid("text_config", "missing"))?;
    let mut cfg = Lfm2Config::from_hf_json(path, text)?;
    if let Some(tied) = f.bool_opt(&["tie_word_embeddings", "tie_embedding"])? {
        cfg.tie_word_embeddings = tied;
    }
    Ok(cfg)
}

/// Reads `dir/config.json` (and, for LFM2-VL, `preprocessor_config.json`) as a VLM config,
/// every size checked (an error names the file and the field).
pub fn read_vlm_config(dir: &Path) -> Result<VlmConfig> {
    let config = parse_vlm_config(dir)?;
    config.check().map_err(|(field, message)| ModelError::config(dir.join("config.json"), field, message))?;
    Ok(config)
}

fn parse_vlm_config(dir: &Path) -> Result<VlmConfig> {
    let path = dir.join("config.json");
    let map = read_object(&path)?;
    let f = Fields::new(&path, &map);
    let mt = f.str_opt(&["model_type"])?.unwrap_or_default().to_string();
    let vision = f.object_opt("vision_config")?.ok_or_else(|| f.invalid("vision_config", "missing"))?;
    let vf = Fields::new(&path, vision);
    let text = text_config(&f, &path)?;
    let source_json = Some(Value::Object(map.clone()));
    match mt.as_str() {
        "autoneural" => {
            let encoder = autoneural_encoder(&vf, &path)?;
            let (_, _, vision_dim) = encoder.token_grid(encoder.image_size(), encoder.image_size());
            let hidden = f.usize_req(&["projector_hidden_size"])?;
            let bias = f.bool_opt(&["projector_bias"])?.unwrap_or(true);
            let projector = match &encoder {
                // LFM3-VL's tower keeps its own projector (merge blocks, normalised tokens).
                EncoderConfig::Lfm3Vl(v) => v.projector(hidden, text.hidden_size, bias),
                _ => ProjectorConfig {
                    vision_dim,
                    hidden,
                    text_dim: text.hidden_size,
                    bias,
                    downsample: f.usize_opt(&["downsample_factor"])?.unwrap_or(1),
                    layer_norm: false,
                    merge_blocks: false,
                },
            };
            let preprocess = Preprocess::Fixed {
                size: encoder.image_size(),
                mean: floats3(&vf, "image_mean", [0.0; 3])?,
                std: floats3(&vf, "image_std", [1.0; 3])?,
            };
            let image_token_id = f.usize_req(&["image_token_id"])? as u32;
            check_token(&f, image_token_id, &text)?;
            Ok(VlmConfig::new(VlmFormat::AutoNeural, encoder, projector, text, image_token_id, preprocess, source_json))
        }
        "lfm2-vl" | "lfm2_vl" => {
            let vit = vit_config(&vf, 512)?;
            let downsample = f.usize_opt(&["downsample_factor"])?.unwrap_or(2);
            let projector = ProjectorConfig {
                vision_dim: vit.hidden_size,
                hidden: f.usize_opt(&["projector_hidden_size"])?.unwrap_or(2560),
                text_dim: text.hidden_size,
                bias: f.bool_opt(&["projector_bias"])?.unwrap_or(true),
                downsample,
                layer_norm: f.bool_opt(&["projector_use_layernorm"])?.unwrap_or(true),
                merge_blocks: false,
            };
            if let Some(act) = f.str_opt(&["projector_hidden_act"])? {
                if act != "gelu" {
                    return Err(f.invalid("projector_hidden_act", format!("{act:?}: only \"gelu\" is supported")));
                }
            }
            let processor = Lfm2VlProcessorConfig::from_dir(dir, &map, vit.patch_size, downsample)?;
            // The processor cuts patches and counts tokens; the tower and projector must agree.
            if (processor.encoder_patch_size, processor.downsample_factor) != (vit.patch_size, downsample) {
                return Err(f.invalid(
                    "vision_config.patch_size",
                    format!(
                        "the model's patch size {} and downsample factor {downsample} differ from the image \
                         processor's encoder_patch_size {} and downsample_factor {}",
                        vit.patch_size, processor.encoder_patch_size, processor.downsample_factor
                    ),
                ));
            }
            let preprocess = Preprocess::Lfm2Vl(processor);
            let image_token_id = f.usize_opt(&["image_token_id", "image_token_index"])?.unwrap_or(396) as u32;
            check_token(&f, image_token_id, &text)?;
            let encoder = EncoderConfig::Vit(vit);
            Ok(VlmConfig::new(VlmFormat::Lfm2Vl, encoder, projector, text, image_token_id, preprocess, source_json))
        }
        "lfm3_vl" => {
            let vision = lfm3_vl_vision_config(&vf, &path)?;
            if let Some(act) = f.str_opt(&["projector_hidden_act"])?
                && act != "gelu"
            {
                return Err(f.invalid("projector_hidden_act", format!("{act:?}: only \"gelu\" is supported")));
            }
            let projector = vision.projector(
                f.usize_opt(&["projector_hidden_size"])?.unwrap_or(4096),
                text.hidden_size,
                f.bool_opt(&["projector_bias"])?.unwrap_or(true),
            );
            let processor = Lfm3VlProcessorConfig::from_dir(dir)?;
            if (processor.patch_size, processor.merge_size, processor.temporal_patch_size)
                != (vision.patch_size, vision.spatial_merge_size, vision.temporal_patch_size)
            {
                return Err(f.invalid(
                    "vision_config.patch_size",
                    format!(
                        "the tower's patch {}, merge {} and temporal patch {} differ from the image processor's \
                         {}, {} and {}",
                        vision.patch_size,
                        vision.spatial_merge_size,
                        vision.temporal_patch_size,
                        processor.patch_size,
                        processor.merge_size,
                        processor.temporal_patch_size
                    ),
                ));
            }
            let image_token_id = f.usize_opt(&["image_token_id"])?.unwrap_or(125_030) as u32;
            check_token(&f, image_token_id, &text)?;
            let bounds = [("vision_start_token_id", 125_009), ("vision_end_token_id", 125_010)].map(
                |(name, default)| -> Result<u32> {
                    let id = f.usize_opt(&[name])?.unwrap_or(default) as u32;
                    check_token(&f, id, &text).map_err(|_| {
                        f.invalid(name, format!("{id} is outside the vocabulary of {}", text.vocab_size))
                    })?;
                    Ok(id)
                },
            );
            let [start, end] = bounds;
            let mut config = VlmConfig::new(
                VlmFormat::Lfm3Vl,
                EncoderConfig::Lfm3Vl(vision),
                projector,
                text,
                image_token_id,
                Preprocess::Lfm3Vl(processor),
                source_json,
            );
            config.image_bounds = Some((start?, end?));
            Ok(config)
        }
        other => Err(f.invalid(
            "model_type",
            format!("{other:?} is not a VLM (expected \"autoneural\", \"lfm2-vl\" or \"lfm3_vl\")"),
        )),
    }
}

fn check_token(f: &Fields, id: u32, text: &Lfm2Config) -> Result<()> {
    if id as usize >= text.vocab_size {
        return Err(f.invalid("image_token_id", format!("{id} is outside the vocabulary of {}", text.vocab_size)));
    }
    Ok(())
}

/// Loads a VLM checkpoint directory onto `device`.
pub fn load_vlm(dir: &Path, device: &Device) -> Result<VisionLanguageModel> {
    let mut config = read_vlm_config(dir)?;
    let files = WeightFiles::open_dir(dir)?;
    config.flat_vit_keys = files.shape("model.vision_tower.embeddings.patch_embedding.weight").is_some();
    if config.format == VlmFormat::Lfm2Vl {
        // Some published LFM2-VL / LFM2.5-VL configs say `projector_use_layernorm: false`
        // while their weights hold the norm: the weights decide, as llama.cpp's converter does.
        config.projector.layer_norm = files.shape("model.multi_modal_projector.layer_norm.weight").is_some();
    }
    let keys = VlmKeys::new(&config).reading(&files);
    load_module(config.init(device)?, &files, &keys, dir)
}

/// The AutoNeural `config.json` for a config built in code.
pub fn autoneural_config_json(config: &VlmConfig) -> Value {
    let vision = match &config.encoder {
        EncoderConfig::MobileNetV5(a) => json!({
            "encoder": "mobilenetv5",
            "block_args": a.block_args,
            "stem_size": a.stem_size,
            "pad_type": a.pad_type,
            "msfa_output_resolution": a.msfa_output_resolution,
            "num_features": a.num_features,
            "image_size": a.image_size,
            "norm": a.norm,
        }),
        EncoderConfig::Vit(v) => json!({
            "encoder": "vit",
            "model_type": if v.linear_patch_embedding { "siglip2_vision_model" } else { "siglip_vision_model" },
            "hidden_size": v.hidden_size,
            "intermediate_size": v.intermediate_size,
            "num_hidden_layers": v.num_hidden_layers,
            "num_attention_heads": v.num_attention_heads,
            "num_channels": v.num_channels,
            "patch_size": v.patch_size,
            "num_patches": v.num_patches,
            "layer_norm_eps": v.layer_norm_eps,
            "image_size": v.image_size,
        }),
        EncoderConfig::Lfm3Vl(v) => json!({
            "encoder": "lfm3_vl",
            "model_type": "lfm3_vl_vision",
            "hidden_size": v.hidden_size,
            "intermediate_size": v.intermediate_size,
            "num_hidden_layers": v.attention.len(),
            "layer_types": v.attention.iter().map(|&a| if a { "full_attention" } else { "conv" }).collect::<Vec<_>>(),
            "num_attention_heads": v.num_attention_heads,
            "num_key_value_heads": v.num_key_value_heads,
            "in_channels": v.in_channels,
            "patch_size": v.patch_size,
            "temporal_patch_size": v.temporal_patch_size,
            "spatial_merge_size": v.spatial_merge_size,
            "conv_kernel_size": v.conv_kernel_size,
            "norm_eps": v.norm_eps,
            "rope_parameters": {"rope_type": "axial", "rope_theta": v.rope_theta},
            "image_size": v.image_size,
        }),
    };
    json!({
        "architectures": ["AutoNeuralForConditionalGeneration"],
        "model_type": "autoneural",
        "vision_config": vision,
        "text_config": config.text.to_hf_json(),
        "projector_hidden_size": config.projector.hidden,
        "projector_bias": config.projector.bias,
        "downsample_factor": config.projector.downsample,
        "image_token_id": config.image_token_id,
        "tie_word_embeddings": config.text.tie_word_embeddings,
    })
}

/// Writes `config.json` and `model.safetensors` (f32) in the model's own format, and for
/// LFM2-VL its processor as transformers 5 does (`processor_config.json`, the image
/// processor nested).
pub fn save_vlm(model: &VisionLanguageModel, dir: &Path) -> Result<()> {
    std::fs::create_dir_all(dir).map_err(|e| ModelError::io(dir, e))?;
    let c = &model.config;
    write_f32(&dir.join("model.safetensors"), &collect_tensors(model, &VlmKeys::new(c)))?;
    if let Preprocess::Lfm2Vl(p) = &c.preprocess {
        let path = dir.join("processor_config.json");
        let processor = json!({
            "image_processor": p.to_json(),
            "processor_class": "Lfm2VlProcessor",
            "use_image_special_tokens": p.use_image_special_tokens,
        });
        std::fs::write(&path, serde_json::to_string_pretty(&processor).expect("config serialises"))
            .map_err(|e| ModelError::io(&path, e))?;
    }
    if let Preprocess::Lfm3Vl(p) = &c.preprocess {
        let path = dir.join("preprocessor_config.json");
        std::fs::write(&path, serde_json::to_string_pretty(&p.to_json()).expect("config serialises"))
            .map_err(|e| ModelError::io(&path, e))?;
    }
    let cfg = c.source_json.clone().unwrap_or_else(|| autoneural_config_json(c));
    let path = dir.join("config.json");
    std::fs::write(&path, serde_json::to_string_pretty(&cfg).expect("config serialises"))
        .map_err(|e| ModelError::io(&path, e))
}

/// Module paths of a standalone SigLIP tower are its HF keys.
struct VitKeys {
    flat: bool,
}

impl KeyMap for VitKeys {
    fn key_for(&self, p: &str) -> String {
        vit_key(p, self.flat).to_string()
    }
    fn ignorable(&self, key: &str) -> bool {
        key.starts_with("vision_model.head.") || key.starts_with("head.") || key.ends_with("embeddings.position_ids")
    }
}

/// Loads a Hugging Face `SiglipVisionModel` / `Siglip2VisionModel` directory.
pub fn load_siglip_vision(dir: &Path, device: &Device) -> Result<crate::vision::SiglipVision> {
    let path = dir.join("config.json");
    let map = read_object(&path)?;
    let f = Fields::new(&path, &map);
    // A full SigLIP (text + vision) config nests the vision part.
    let vision = f.object_opt("vision_config")?;
    let cfg = match vision {
        Some(v) => vit_config(&Fields::new(&path, v), 224)?,
        None => vit_config(&f, 224)?,
    };
    let files = WeightFiles::open_dir(dir)?;
    let flat = files.shape("embeddings.patch_embedding.weight").is_some();
    load_module(cfg.init(device), &files, &VitKeys { flat }, dir)
}

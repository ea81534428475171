//! What training needs from an experiment file: the model to start from (`[model]`:
//! presets with shape overrides, or public checkpoints) and the stages (`[[stage]]`: what
//! trains, the learning rate and its schedule, batches, the data mixture, QAT). The file
//! as a whole (`name`, `[data]`, `[eval]`, sweeps) is `autoneural_experiments::experiment`.
//! Every table rejects unknown keys; `check` methods name the key and what was expected.

use std::collections::BTreeMap;
use std::path::PathBuf;

use autoneural_model::quant::PrecisionPolicy;
use autoneural_model::vision::NormKind;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelConfig {
    pub vision: VisionInit,
    pub language: LanguageInit,
    /// The connector's hidden width (default: the language model's hidden size).
    pub projector_hidden_size: Option<usize>,
    /// The connector's pixel-unshuffle factor (1: none; LFM2-VL's is 2: 4x fewer tokens of 4x
    /// the channels). Default 1.
    pub projector_downsample: Option<usize>,
    /// Encoder input side (default: the encoder preset's).
    pub image_size: Option<usize>,
    /// Start from a whole AutoNeural / LFM2-VL checkpoint instead (overrides the parts).
    pub checkpoint: Option<PathBuf>,
}

impl ModelConfig {
    /// The keys that shape a model built from presets and are set here, which a whole
    /// `checkpoint` makes moot (its own config decides the model): a run warns about them.
    /// Read off the serialized config (unset options are left out), so a new field is covered.
    pub fn shape_keys_set(&self) -> Vec<String> {
        let table = toml::Table::try_from(self).expect("a model config serializes");
        let mut keys = Vec::new();
        for (key, value) in &table {
            match value {
                toml::Value::Table(part) => keys.extend(part.keys().map(|sub| format!("model.{key}.{sub}"))),
                _ => keys.push(format!("model.{key}")),
            }
        }
        // the checkpoint itself, and the vision preset, which every model config names
        keys.retain(|k| k != "model.checkpoint" && k != "model.vision.preset");
        keys.sort();
        keys
    }
}

/// The vision tower: a preset (MobileNetV5 or ViT) initialised at random, optionally with
/// weights from a timm / Gemma 3n MobileNetV5 safetensors file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VisionInit {
    pub preset: String,
    pub checkpoint: Option<PathBuf>,
    /// MobileNetV5 only: the adapter's output grid side (tokens per image = its square).
    pub msfa_output_resolution: Option<usize>,
    /// MobileNetV5 only: `"rms"` (Gemma 3n's RmsNorm2d, the preset's) or `"batch"`
    /// (BatchNorm2d, which trains from scratch; see docs/training.md).
    pub norm: Option<NormKind>,
    /// MobileNetV5 only: the layer-scale init of UIR and attention blocks (preset: 1e-5).
    pub layer_scale_init: Option<f64>,
    /// MobileNetV5 only: the architecture as timm block strings, one list per stage
    /// (`[["er_r1_k3_s2_e4_c24"], ["uir_r1_a3_k5_s2_e4_c32", ...], ...]`), replacing the
    /// preset's; for width and depth ablations.
    pub blocks: Option<Vec<Vec<String>>>,
    /// MobileNetV5 only: the stem's output channels (preset's otherwise).
    pub stem_size: Option<usize>,
    /// MobileNetV5 only: the adapter's output channels, the width of each image token.
    pub num_features: Option<usize>,
}

/// The language model: a preset at random (with optional shape overrides, for ablations),
/// or a Hugging Face LFM2 checkpoint directory (its tokenizer is then used).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LanguageInit {
    pub preset: Option<String>,
    pub checkpoint: Option<PathBuf>,
    pub hidden_size: Option<usize>,
    pub intermediate_size: Option<usize>,
    pub num_layers: Option<usize>,
    /// How many of the layers are attention (the rest gated short convolutions), placed
    /// evenly and ending at the last layer.
    pub attention_layers: Option<usize>,
    /// Or exactly which layers (0-based) are attention: a placement ablation
    /// (`attention_at = [2, 5]` against `[0, 1]`).
    pub attention_at: Option<Vec<usize>>,
    /// LFM3 presets: how many further layers are sliding-window attention, so the
    /// attention-ratio ablation is conv : sliding : full. The `attention_layers +
    /// sliding_layers` attention layers are placed as `attention_layers` alone would be, and
    /// the full ones evenly among them, ending at the last.
    pub sliding_layers: Option<usize>,
    /// LFM3 presets: the sliding layers' window in positions.
    pub sliding_window: Option<usize>,
    /// Or every layer's kind, as `config.json` spells it (`"conv"`, `"sliding_attention"`,
    /// `"full_attention"`), replacing the preset's stack.
    pub layer_types: Option<Vec<autoneural_model::text::LayerKind>>,
    pub num_attention_heads: Option<usize>,
    pub num_key_value_heads: Option<usize>,
}

/// Which part of the VLM a stage trains.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Part {
    Vision,
    Projector,
    Language,
}

/// One training stage (the paper has four: connector alignment, full training, instruction
/// tuning, quantization-aware training).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StageConfig {
    pub name: String,
    /// Parts whose weights change; the others stay bit-identical.
    pub train: Vec<Part>,
    /// Optimizer steps; or give `epochs` over the stage's data instead.
    pub steps: Option<usize>,
    pub epochs: Option<f64>,
    /// Peak learning rate (after warmup), then cosine decay to `min_lr`.
    pub lr: f64,
    #[serde(default)]
    pub warmup_steps: usize,
    /// Default `lr / 10`.
    pub min_lr: Option<f64>,
    #[serde(default = "one")]
    pub micro_batch: usize,
    /// Micro-batches per optimizer step (effective batch = micro_batch * grad_accum).
    #[serde(default = "one")]
    pub grad_accum: usize,
    #[serde(default)]
    pub weight_decay: f64,
    /// Per-part multipliers of the learning rate (schedule included), as VLM recipes give
    /// the vision tower its own rate: `lr_scale = { vision = 4.0 }`. Unlisted parts: 1.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub lr_scale: BTreeMap<Part, f64>,
    /// Weight of the image-to-words alignment loss (each image's mean token classified
    /// against the language model's embedding table toward its answers' tokens; for encoders
    /// trained from scratch). 0: off.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub align_weight: f64,
    /// Weight of the language-model loss (default 1). 0, with `align_weight`, makes an
    /// encoder-alignment stage that skips the language model's forward pass.
    #[serde(default = "one_f64", skip_serializing_if = "is_one")]
    pub lm_weight: f64,
    /// Global gradient-norm clipping (default 1.0; 0 turns it off).
    #[serde(default = "default_clip")]
    pub grad_clip: f64,
    #[serde(default = "default_beta1")]
    pub beta1: f64,
    #[serde(default = "default_beta2")]
    pub beta2: f64,
    /// Task family -> weight over `data.dir` (default: the paper's mixture); or a recipe file.
    pub mixture: Option<BTreeMap<String, f64>>,
    pub recipe: Option<PathBuf>,
    /// Validate every this many steps (0: only at the end).
    #[serde(default)]
    pub val_every: usize,
    #[serde(default = "default_val_batches")]
    pub val_batches: usize,
    /// Checkpoint every this many steps (0: only at the end of the stage).
    #[serde(default)]
    pub checkpoint_every: usize,
    /// Log a line every this many steps.
    #[serde(default = "default_log_every")]
    pub log_every: usize,
    /// Quantization-aware training (stage 4): the stage trains through fake quantizers.
    pub quantization: Option<QatConfig>,
}

/// A stage's quantization-aware training.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QatConfig {
    /// A precision preset (`w8a16`, `w4a16`, `autoneural`) or a policy TOML file (relative to
    /// the experiment file); docs/quantization.md.
    pub policy: String,
    /// Weight of the running activation range against each step's batch range.
    #[serde(default = "default_range_momentum")]
    pub range_momentum: f32,
}

fn default_range_momentum() -> f32 {
    0.9
}

impl QatConfig {
    pub fn load_policy(&self) -> autoneural_model::Result<PrecisionPolicy> {
        PrecisionPolicy::load(&self.policy)
    }
}

fn one() -> usize {
    1
}
fn default_clip() -> f64 {
    1.0
}
fn default_beta1() -> f64 {
    0.9
}
fn default_beta2() -> f64 {
    0.95
}
fn one_f64() -> f64 {
    1.0
}

fn is_one(x: &f64) -> bool {
    *x == 1.0
}

fn is_zero(x: &f64) -> bool {
    *x == 0.0
}
fn default_val_batches() -> usize {
    4
}
fn default_log_every() -> usize {
    10
}

impl ModelConfig {
    /// Checks what serde cannot, naming the key: the language model comes from exactly one
    /// place.
    pub fn check(&self) -> Result<(), String> {
        let lang = &self.language;
        if self.checkpoint.is_none() && lang.preset.is_none() == lang.checkpoint.is_none() {
            return Err("model.language: give exactly one of `preset` or `checkpoint`".into());
        }
        Ok(())
    }
}

/// The largest micro-batch (records in memory at once; the paper's global batch is 512).
pub const MAX_MICRO_BATCH: usize = 4096;

impl StageConfig {
    pub fn min_lr(&self) -> f64 {
        self.min_lr.unwrap_or(self.lr / 10.0)
    }

    pub fn effective_batch(&self) -> usize {
        self.micro_batch * self.grad_accum
    }

    /// Optimizer steps, given how many records the stage's data holds.
    pub fn total_steps(&self, records: usize) -> usize {
        match (self.steps, self.epochs) {
            (Some(s), _) => s,
            (None, Some(e)) => ((e * records as f64) / self.effective_batch() as f64).ceil().max(1.0) as usize,
            (None, None) => unreachable!("checked when the experiment was read"),
        }
    }

    /// Checks what serde cannot: ranges and exclusive choices, naming the key as
    /// `stage[i] ("name").key`.
    pub fn check(&self, i: usize) -> Result<(), String> {
        let s = self;
        let key = |k: &str| format!("stage[{i}] ({:?}).{k}", s.name);
        if s.train.is_empty() {
            return Err(format!("{}: list at least one of \"vision\", \"projector\", \"language\"", key("train")));
        }
        match (s.steps, s.epochs) {
            (Some(0), _) => return Err(format!("{}: must be at least 1", key("steps"))),
            (Some(_), Some(_)) | (None, None) => {
                return Err(format!("{}: give exactly one of `steps` or `epochs`", key("steps")));
            }
            (None, Some(e)) if !(e.is_finite() && e > 0.0 && e <= 1e6) => {
                return Err(format!("{}: must be a number in (0, 1e6], found {e:e}", key("epochs")));
            }
            _ => {}
        }
        if !(s.lr.is_finite() && s.lr > 0.0) {
            return Err(format!("{}: must be a positive number, found {}", key("lr"), s.lr));
        }
        if let Some(m) = s.min_lr {
            if !(m.is_finite() && m >= 0.0 && m <= s.lr) {
                return Err(format!("{}: must be in [0, lr], found {m}", key("min_lr")));
            }
        }
        // A micro-batch is held in memory at once (its images, activations and
        // gradients); accumulation is sequential but each step draws all of it.
        if !(1..=MAX_MICRO_BATCH).contains(&s.micro_batch) || !(1..=1 << 16).contains(&s.grad_accum) {
            return Err(format!(
                "{}: micro_batch must be 1 to {MAX_MICRO_BATCH} and grad_accum 1 to 65536, found {} and {}",
                key("micro_batch"),
                s.micro_batch,
                s.grad_accum
            ));
        }
        if !(0.0..1.0).contains(&s.beta1) || !(0.0..1.0).contains(&s.beta2) {
            return Err(format!("{}: betas must be in [0, 1)", key("beta1")));
        }
        if !(s.lm_weight.is_finite() && s.lm_weight >= 0.0) {
            return Err(format!("{}: must be a non-negative number, found {}", key("lm_weight"), s.lm_weight));
        }
        if s.lm_weight == 0.0 && s.align_weight == 0.0 {
            return Err(format!(
                "{}: 0 needs an `align_weight` above 0 (the stage would train nothing)",
                key("lm_weight")
            ));
        }
        if !(s.align_weight.is_finite() && s.align_weight >= 0.0) {
            return Err(format!("{}: must be a non-negative number, found {}", key("align_weight"), s.align_weight));
        }
        if s.grad_clip < 0.0 || s.weight_decay < 0.0 {
            return Err(format!("{}: grad_clip and weight_decay must not be negative", key("grad_clip")));
        }
        if let Some((part, f)) = s.lr_scale.iter().find(|(_, f)| !(f.is_finite() && **f > 0.0)) {
            return Err(format!(
                "{}: the {} multiplier must be a positive number, found {f}",
                key("lr_scale"),
                format!("{part:?}").to_lowercase()
            ));
        }
        if s.mixture.is_some() && s.recipe.is_some() {
            return Err(format!("{}: give `mixture` or `recipe`, not both", key("mixture")));
        }
        if let Some(m) = &s.mixture {
            if let Some((k, w)) = m.iter().find(|(_, w)| !(w.is_finite() && **w > 0.0)) {
                return Err(format!("{}: weight of {k:?} must be positive, found {w}", key("mixture")));
            }
        }
        if let Some(q) = &s.quantization {
            if PrecisionPolicy::preset(&q.policy).is_none() && !q.policy.ends_with(".toml") {
                return Err(format!(
                    "{}: {:?} is neither a preset ({}) nor a policy .toml file",
                    key("quantization.policy"),
                    q.policy,
                    autoneural_model::quant::policy::PRESETS.join(", ")
                ));
            }
            if !(0.0..1.0).contains(&q.range_momentum) {
                return Err(format!(
                    "{}: must be in [0, 1), found {}",
                    key("quantization.range_momentum"),
                    q.range_momentum
                ));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::ModelConfig;

    #[test]
    fn shape_keys_that_a_whole_checkpoint_overrides_are_listed() {
        // The `[model]` table of an experiment file.
        let model: ModelConfig = toml::from_str(
            "checkpoint = \"c\"\n[vision]\npreset = \"mobilenetv5_tiny\"\nmsfa_output_resolution = 6\n\
             [language]\npreset = \"lfm2-nano\"\n",
        )
        .unwrap();
        assert_eq!(model.shape_keys_set(), ["model.language.preset", "model.vision.msfa_output_resolution"]);
    }
}

//! Experiment files: one TOML takes a model from nothing (or from public checkpoints) through
//! the training stages to an evaluated checkpoint. Every table rejects unknown keys, and
//! errors name the file, the key and what was expected (see `docs/training.md`).
//!
//! ```toml
//! name = "quickstart"
//! [data]                     # synthetic data, generated when missing
//! dir = "../data/synthetic"
//! [model.vision]
//! preset = "mobilenetv5_tiny"
//! [model.language]
//! preset = "lfm2-nano"
//! [[stage]]
//! name = "connector"
//! train = ["projector"]
//! steps = 100
//! lr = 1e-3
//! ```

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use autoneural_model::quant::PrecisionPolicy;
use autoneural_model::vision::NormKind;
use serde::{Deserialize, Serialize};

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{}: {source}", path.display())]
    Io { path: PathBuf, source: std::io::Error },
    /// Not a regular file, or too large to be an experiment.
    #[error(transparent)]
    File(#[from] autoneural_io::Error),
    /// A TOML syntax or type error; toml's message names the line, column and key.
    #[error("{}: {message}", path.display())]
    Invalid { path: PathBuf, message: String },
}

/// A whole experiment.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Experiment {
    pub name: String,
    /// Seeds model initialisation (data order is a deterministic schedule, see `data::mixture`).
    #[serde(default)]
    pub seed: u64,
    /// Where runs go (`<out_dir>/<name>`); relative to the experiment file.
    #[serde(default = "default_out_dir")]
    pub out_dir: PathBuf,
    /// `flex` (CPU) or `wgpu`.
    #[serde(default = "default_device")]
    pub device: String,
    pub data: DataConfig,
    pub model: ModelConfig,
    /// No stages: the model as initialised (measurements of an architecture only).
    #[serde(rename = "stage", default)]
    pub stages: Vec<StageConfig>,
    #[serde(default)]
    pub eval: EvalConfig,
    /// What a sweep measures per run besides accuracy (decode speed and state memory per
    /// context, encoder latency and SQNR, the NPU cost model); defaults when absent.
    #[serde(default)]
    pub measure: MeasureConfig,
    /// The sweep's axes (see `sweep`): read by `Expansion`, ignored here.
    #[serde(default, skip_serializing)]
    pub sweep: Option<toml::Table>,
    /// Another experiment file this one starts from (see `sweep`), merged by `Expansion`.
    #[serde(default, skip_serializing)]
    pub extends: Option<String>,
}

/// Per-run measurements of a sweep (`[measure]`), for the experiment report.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MeasureConfig {
    /// Decode tokens/s and state memory at these context lengths (synthetic past state).
    pub contexts: Vec<usize>,
    /// Timed decode steps per context.
    pub decode_tokens: usize,
    /// Encoder latency on this machine and predicted on the NPU at these input sides.
    pub resolutions: Vec<usize>,
    /// Encoder-output SQNR with every weight at these bit-widths (per channel), on test images.
    pub sqnr_bits: Vec<u32>,
    pub sqnr_images: usize,
    /// The NPU cost model's device profile: a built-in name or a profile TOML.
    pub npu_profile: String,
    /// Text tokens in the prompt besides the image's, for the predicted time to first token.
    pub prompt_tokens: usize,
    /// Skip all of it (accuracy only).
    pub skip: bool,
}

impl Default for MeasureConfig {
    fn default() -> Self {
        Self {
            contexts: vec![128, 1024, 4096],
            decode_tokens: 16,
            resolutions: vec![256, 512],
            sqnr_bits: vec![4, 8, 16],
            sqnr_images: 8,
            npu_profile: "sa8295p".into(),
            prompt_tokens: 64,
            skip: false,
        }
    }
}

fn default_out_dir() -> PathBuf {
    PathBuf::from("runs")
}
fn default_device() -> String {
    "flex".into()
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DataConfig {
    /// Directory with `<family>/{train,val,test}.jsonl` (relative to the experiment file).
    pub dir: PathBuf,
    /// When present and `dir` has no `manifest.json`, the synthetic set is generated first.
    pub synth: Option<SynthConfig>,
    /// A tokenizer directory to use as is; without one, a BPE tokenizer of `vocab_size` is
    /// trained on the training split and stored in the run directory.
    pub tokenizer: Option<PathBuf>,
    #[serde(default = "default_vocab")]
    pub vocab_size: usize,
    /// Records that cannot be used: `"fail"` (default) or `"skip"` (counted in the log and
    /// the run report).
    #[serde(default)]
    pub on_bad_record: crate::data::mixture::BadRecordPolicy,
    /// The longest training sequence in tokens (image tokens included); a longer record is
    /// a bad record. Attention's memory grows with its square. Capped by the language
    /// model's `max_position_embeddings`.
    #[serde(default = "default_max_seq_len")]
    pub max_seq_len: usize,
}

fn default_vocab() -> usize {
    512
}

fn default_max_seq_len() -> usize {
    4096
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SynthConfig {
    /// Training samples per task family.
    pub samples: usize,
    pub image_size: u32,
    #[serde(default)]
    pub seed: u64,
    /// Task families (default: all).
    #[serde(default)]
    pub families: Vec<String>,
}

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

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EvalConfig {
    #[serde(default = "default_eval_split")]
    pub split: String,
    /// Records per task family (0: all).
    #[serde(default)]
    pub max_per_task: usize,
    #[serde(default = "default_eval_tokens")]
    pub max_new_tokens: usize,
}

impl Default for EvalConfig {
    fn default() -> Self {
        Self { split: default_eval_split(), max_per_task: 0, max_new_tokens: default_eval_tokens() }
    }
}

fn default_eval_split() -> String {
    "test".into()
}
fn default_eval_tokens() -> usize {
    16
}

impl Experiment {
    /// Reads and checks an experiment file as `autoneural run` does (its `extends` base
    /// merged in); relative paths resolve against its directory. A file with a `[sweep]` is
    /// several experiments: read it with [`crate::sweep::Expansion::from_file`].
    pub fn from_file(path: &Path) -> Result<Self, ConfigError> {
        let mut expansion = crate::sweep::Expansion::from_file(path, &[])?;
        if expansion.is_sweep {
            let message = format!("has a [sweep] of {} runs; pick one with --only", expansion.points.len());
            return Err(ConfigError::Invalid { path: path.into(), message });
        }
        Ok(expansion.points.remove(0).experiment)
    }

    /// Parses and checks TOML text (paths stay as written).
    pub fn from_toml(text: &str) -> Result<Self, String> {
        let exp: Self = toml::from_str(text).map_err(|e| e.to_string())?;
        exp.check()?;
        Ok(exp)
    }

    pub(crate) fn resolve_paths(&mut self, dir: &Path) {
        let join = |p: &mut PathBuf| *p = lexical_join(dir, p);
        join(&mut self.out_dir);
        join(&mut self.data.dir);
        self.data.tokenizer.as_mut().map(join);
        self.model.checkpoint.as_mut().map(join);
        self.model.vision.checkpoint.as_mut().map(join);
        self.model.language.checkpoint.as_mut().map(join);
        for s in &mut self.stages {
            s.recipe.as_mut().map(join);
            if let Some(q) = &mut s.quantization {
                if PrecisionPolicy::preset(&q.policy).is_none() {
                    q.policy = lexical_join(dir, Path::new(&q.policy)).to_string_lossy().into_owned();
                }
            }
        }
        if !self.measure.npu_profile.is_empty() && self.measure.npu_profile.ends_with(".toml") {
            self.measure.npu_profile =
                lexical_join(dir, Path::new(&self.measure.npu_profile)).to_string_lossy().into_owned();
        }
    }

    /// Checks what serde cannot: ranges and exclusive choices, naming the key.
    fn check(&self) -> Result<(), String> {
        if self.name.is_empty() || self.name.contains(['/', '\\']) || self.name == "." || self.name == ".." {
            return Err(format!("name: must be a directory name (not `.` or `..`), found {:?}", self.name));
        }
        if !(1..=1 << 22).contains(&self.data.vocab_size) {
            return Err(format!("data.vocab_size: must be 1 to {}, found {}", 1 << 22, self.data.vocab_size));
        }
        if self.data.max_seq_len == 0 {
            return Err("data.max_seq_len: must be at least 1".into());
        }
        let lang = &self.model.language;
        if self.model.checkpoint.is_none() && lang.preset.is_none() == lang.checkpoint.is_none() {
            return Err("model.language: give exactly one of `preset` or `checkpoint`".into());
        }
        for (i, s) in self.stages.iter().enumerate() {
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
                return Err(format!(
                    "{}: must be a non-negative number, found {}",
                    key("align_weight"),
                    s.align_weight
                ));
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
        }
        Ok(())
    }
}

/// The largest micro-batch (records in memory at once; the paper's global batch is 512).
pub const MAX_MICRO_BATCH: usize = 4096;

/// Keys of an experiment that may change when a run resumes, because they change neither
/// what the model trains on nor how: where it runs, where runs go, what is measured and
/// evaluated afterwards, how often it logs, validates and checkpoints. `[*]` is any stage;
/// `.*` any key below.
pub const RESUME_SAFE: &[&str] = &[
    "device",
    "out_dir",
    "eval.*",
    "measure.*",
    "stage[*].log_every",
    "stage[*].val_every",
    "stage[*].val_batches",
    "stage[*].checkpoint_every",
];

/// Every leaf of a JSON value by dotted key (`data.synth.samples`, `stage[1].lr`); lists of
/// scalars are one leaf.
fn flatten(prefix: &str, v: &serde_json::Value, out: &mut BTreeMap<String, serde_json::Value>) {
    use serde_json::Value;
    match v {
        Value::Object(m) => {
            for (k, v) in m {
                let key = if prefix.is_empty() { k.clone() } else { format!("{prefix}.{k}") };
                flatten(&key, v, out);
            }
        }
        Value::Array(items) if items.iter().any(Value::is_object) => {
            for (i, v) in items.iter().enumerate() {
                flatten(&format!("{prefix}[{i}]"), v, out);
            }
        }
        leaf => {
            out.insert(prefix.to_string(), leaf.clone());
        }
    }
}

fn resume_safe(key: &str) -> bool {
    // `stage[12].lr` -> `stage[*].lr`
    let mut general = String::with_capacity(key.len());
    let mut in_index = false;
    for c in key.chars() {
        match c {
            '[' => {
                in_index = true;
                general.push_str("[*");
            }
            ']' => {
                in_index = false;
                general.push(']');
            }
            _ if in_index => {}
            c => general.push(c),
        }
    }
    RESUME_SAFE.iter().any(|p| match p.strip_suffix(".*") {
        Some(prefix) => general.starts_with(&format!("{prefix}.")),
        None => general == *p,
    })
}

impl Experiment {
    /// How `self` differs from the experiment a run started with (`started`, as its
    /// `experiment.json` holds it), leaving out [`RESUME_SAFE`] keys: what a resume would
    /// silently change. Each as `key: old then, new now`.
    pub fn resume_differences(&self, started: &Experiment) -> Vec<String> {
        let (mut old, mut new) = (BTreeMap::new(), BTreeMap::new());
        flatten("", &serde_json::to_value(started).unwrap_or_default(), &mut old);
        flatten("", &serde_json::to_value(self).unwrap_or_default(), &mut new);
        let keys: std::collections::BTreeSet<&String> = old.keys().chain(new.keys()).collect();
        let show = |v: Option<&serde_json::Value>| v.map_or("(none)".to_string(), |v| v.to_string());
        keys.into_iter()
            .filter(|k| old.get(*k) != new.get(*k) && !resume_safe(k))
            .map(|k| format!("{k}: {} then, {} now", show(old.get(k)), show(new.get(k))))
            .collect()
    }
}

/// `base/path` with `.` and `..` folded away lexically (`experiments/../runs` -> `runs`), so
/// messages and reports show the paths a user would write.
fn lexical_join(base: &Path, path: &Path) -> PathBuf {
    use std::path::Component;
    let mut out = PathBuf::new();
    for c in base.join(path).components() {
        match c {
            Component::CurDir => {}
            Component::ParentDir if matches!(out.components().next_back(), Some(Component::Normal(_))) => {
                out.pop();
            }
            other => out.push(other),
        }
    }
    if out.as_os_str().is_empty() { PathBuf::from(".") } else { out }
}

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
}

#[cfg(test)]
mod tests {
    use super::{Experiment, lexical_join};
    use std::path::{Path, PathBuf};

    #[test]
    fn shape_keys_that_a_whole_checkpoint_overrides_are_listed() {
        let exp = Experiment::from_toml(
            "name = \"x\"\n[data]\ndir = \"d\"\n[model]\ncheckpoint = \"c\"\n[model.vision]\npreset = \"mobilenetv5_tiny\"\n\
             msfa_output_resolution = 6\n[model.language]\npreset = \"lfm2-nano\"\n[[stage]]\nname = \"s\"\n\
             train = [\"projector\"]\nsteps = 1\nlr = 1e-3\n",
        )
        .unwrap();
        assert_eq!(exp.model.shape_keys_set(), ["model.language.preset", "model.vision.msfa_output_resolution"]);
    }

    #[test]
    fn resuming_lists_what_changed_but_the_safe_keys() {
        let base = "name = \"x\"\n[data]\ndir = \"d\"\n[model.vision]\npreset = \"mobilenetv5_tiny\"\n\
                    [model.language]\npreset = \"lfm2-nano\"\n[[stage]]\nname = \"s\"\ntrain = [\"projector\"]\n\
                    steps = 10\nlr = 1e-3\n";
        let started = Experiment::from_toml(base).unwrap();
        let safe =
            Experiment::from_toml(&format!("{base}log_every = 3\nval_every = 5\n[eval]\nmax_per_task = 2\n")).unwrap();
        assert!(safe.resume_differences(&started).is_empty());
        let changed = Experiment::from_toml(&base.replace("lr = 1e-3", "lr = 2e-3").replace("nano", "tiny")).unwrap();
        assert_eq!(
            changed.resume_differences(&started),
            ["model.language.preset: \"lfm2-nano\" then, \"lfm2-tiny\" now", "stage[0].lr: 0.001 then, 0.002 now"]
        );
    }

    #[test]
    fn paths_fold_dot_dot() {
        assert_eq!(lexical_join(Path::new("experiments"), Path::new("../runs")), PathBuf::from("runs"));
        assert_eq!(lexical_join(Path::new(""), Path::new("../x")), PathBuf::from("../x"));
        assert_eq!(lexical_join(Path::new("/a/b"), Path::new("./c/../d")), PathBuf::from("/a/b/d"));
        assert_eq!(lexical_join(Path::new("a"), Path::new("/abs")), PathBuf::from("/abs"));
    }
}

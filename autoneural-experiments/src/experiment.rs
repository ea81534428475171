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
use autoneural_train::config::{ModelConfig, StageConfig};
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
    /// Directory with `<family>/{train,val,test}.jsonl` (relative to the experiment file):
    /// the synthetic families, each a source of that name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dir: Option<PathBuf>,
    /// Sources as the field ships them (`[[data.source]]`: JSONL, Hugging Face Parquet,
    /// WebDataset shards; see `autoneural_data::sources`), mixed by name in stages.
    #[serde(default, rename = "source", skip_serializing_if = "Vec::is_empty")]
    pub sources: Vec<autoneural_data::SourceConfig>,
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
    pub on_bad_record: autoneural_data::mixture::BadRecordPolicy,
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
pub struct EvalConfig {
    #[serde(default = "default_eval_split")]
    pub split: String,
    /// Records per task family (0: all).
    #[serde(default)]
    pub max_per_task: usize,
    #[serde(default = "default_eval_tokens")]
    pub max_new_tokens: usize,
    /// Benchmarks the final model is scored on (`benchmarks.json`, the report's
    /// "Benchmarks" section, a sweep's results): `[{ name = "OCRBench", data = "..." }]`.
    #[serde(default)]
    pub benchmarks: Vec<crate::benchmarks::BenchmarkConfig>,
}

impl Default for EvalConfig {
    fn default() -> Self {
        Self {
            split: default_eval_split(),
            max_per_task: 0,
            max_new_tokens: default_eval_tokens(),
            benchmarks: Vec::new(),
        }
    }
}

fn default_eval_split() -> String {
    "test".into()
}
fn default_eval_tokens() -> usize {
    16
}

impl Experiment {
    /// What `bench train` builds and trains from this experiment.
    pub fn bench_spec(&self) -> autoneural_eval::bench_train::TrainBenchSpec {
        autoneural_eval::bench_train::TrainBenchSpec {
            name: self.name.clone(),
            seed: self.seed,
            vocab_size: self.data.vocab_size,
            model: self.model.clone(),
            stages: self.stages.clone(),
        }
    }

    /// Reads and checks an experiment file as `autoneural run` does (its `extends` base
    /// merged in); relative paths resolve against its directory. A file with a `[sweep]` is
    /// several experiments: read it with [`crate::sweep::Expansion::from_file`].
    pub fn from_file(path: &Path) -> Result<Self, ConfigError> {
        let mut expansion = crate::sweep::expand::Expansion::from_file(path, &[])?;
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
        self.data.dir.as_mut().map(join);
        for src in &mut self.data.sources {
            src.resolve(dir);
        }
        self.data.tokenizer.as_mut().map(join);
        self.model.checkpoint.as_mut().map(join);
        for b in &mut self.eval.benchmarks {
            join(&mut b.data);
        }
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
        for (i, b) in self.eval.benchmarks.iter().enumerate() {
            b.benchmark().map_err(|e| format!("eval.benchmarks[{i}].name: {e}"))?;
            if !(1..=256).contains(&b.batch) {
                return Err(format!("eval.benchmarks[{i}].batch: must be 1 to 256, found {}", b.batch));
            }
        }
        if self.data.dir.is_none() && self.data.sources.is_empty() {
            return Err("data: give data.dir (synthetic families) or [[data.source]] entries".into());
        }
        if self.data.synth.is_some() && self.data.dir.is_none() {
            return Err("data.synth: the synthetic set is written to data.dir; give one".into());
        }
        autoneural_data::sources::config::check_sources(&self.data.sources, "data.source")?;
        self.model.check()?;
        for (i, s) in self.stages.iter().enumerate() {
            s.check(i)?;
        }
        Ok(())
    }
}

impl Experiment {
    /// The sources the stages can mix: `[[data.source]]` and the families of `data.dir`
    /// (as they are on disk now: call it after the synthetic set is made).
    pub fn catalog(&self) -> anyhow::Result<autoneural_data::Catalog> {
        autoneural_data::Catalog::new(self.data.dir.as_deref(), &self.data.sources).map_err(anyhow::Error::msg)
    }
}

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

#[cfg(test)]
mod tests {
    use super::{Experiment, lexical_join};
    use std::path::{Path, PathBuf};

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

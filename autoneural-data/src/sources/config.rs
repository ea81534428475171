//! A named data source as experiment files (`[[data.source]]`) and recipe files
//! (`[[source]]`) declare it: where its splits are, how they are written and laid out,
//! its task label and its weight in a mixture. The synthetic families of `data.dir`
//! (`<family>/{train,val,test}.jsonl`) are sources of the same kind.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::{Format, SourceSpec};
use crate::layouts::Layout;
use crate::records::{DataError, OnBadRecord};

/// The most records a shuffle block may hold: a block is held in memory, images included.
pub const MAX_SHUFFLE: usize = 1 << 20;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SourceConfig {
    /// What mixtures call it; also the task label of records that carry none.
    pub name: String,
    /// The training files: a file or a glob (`hf/train-*.parquet`), relative to the file
    /// that declares the source.
    pub path: PathBuf,
    /// The validation and test files (a file or a glob), when the source has them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub val: Option<PathBuf>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub test: Option<PathBuf>,
    /// `jsonl`, `parquet` or `webdataset` (default: by the extension of the files).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub format: Option<Format>,
    #[serde(default)]
    pub layout: Layout,
    /// The task label of its records (default: `name`); a record's own `task` wins.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub task: Option<String>,
    /// Its share of a mixture that does not give one (relative to the others).
    #[serde(default = "default_weight")]
    pub weight: f64,
    /// Records per shuffle block (0: file order). Each block is read whole, permuted by a
    /// generator seeded from `seed`, the epoch and the block, and handed out.
    #[serde(default)]
    pub shuffle: usize,
    #[serde(default)]
    pub seed: u64,
}

fn default_weight() -> f64 {
    1.0
}

/// A data split.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Split {
    Train,
    Val,
    Test,
}

impl Split {
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "train" => Some(Self::Train),
            "val" => Some(Self::Val),
            "test" => Some(Self::Test),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Train => "train",
            Self::Val => "val",
            Self::Test => "test",
        }
    }
}

impl SourceConfig {
    /// A synthetic family of `dir`: `dir/<name>/{train,val,test}.jsonl` (the splits whose
    /// files exist; `train` always), its task its name.
    pub fn family(dir: &Path, name: &str) -> Self {
        let split = |s: &str| dir.join(name).join(format!("{s}.jsonl"));
        let existing = |s: &str| Some(split(s)).filter(|p| p.is_file());
        Self {
            name: name.into(),
            path: split("train"),
            val: existing("val"),
            test: existing("test"),
            format: Some(Format::Jsonl),
            layout: Layout::Auto,
            task: None,
            weight: 1.0,
            shuffle: 0,
            seed: 0,
        }
    }

    /// Checks what serde cannot, naming the key as `{key}.field`.
    pub fn check(&self, key: &str) -> Result<(), String> {
        if self.name.trim().is_empty() {
            return Err(format!("{key}.name: a source needs a name"));
        }
        if !(self.weight.is_finite() && self.weight > 0.0) {
            return Err(format!("{key}.weight: must be a positive number, found {}", self.weight));
        }
        if self.shuffle > MAX_SHUFFLE {
            return Err(format!(
                "{key}.shuffle = {}: at most {MAX_SHUFFLE} records per block (a block is held in memory)",
                self.shuffle
            ));
        }
        Ok(())
    }

    /// Paths relative to `dir` (the declaring file's directory) made absolute.
    pub fn resolve(&mut self, dir: &Path) {
        for p in [Some(&mut self.path), self.val.as_mut(), self.test.as_mut()].into_iter().flatten() {
            if p.is_relative() {
                *p = dir.join(&*p);
            }
        }
    }

    /// The files of `split`, if the source has that split.
    pub fn pattern(&self, split: Split) -> Option<&Path> {
        match split {
            Split::Train => Some(&self.path),
            Split::Val => self.val.as_deref(),
            Split::Test => self.test.as_deref(),
        }
    }

    /// How to read `split`; `None` when the source has no such split (for a synthetic
    /// family, no such file). An error when its files are missing or of an unknown format.
    pub fn spec(&self, split: Split, policy: OnBadRecord) -> Option<Result<SourceSpec, DataError>> {
        let pattern = self.pattern(split)?;
        Some(self.spec_of(pattern, split, policy))
    }

    fn spec_of(&self, pattern: &Path, split: Split, policy: OnBadRecord) -> Result<SourceSpec, DataError> {
        let files = SourceSpec::files(pattern).map_err(|e| match e {
            DataError::Format { path, message } => DataError::Format {
                path,
                message: format!("source {:?} ({} split): {message}", self.name, split.as_str()),
            },
            other => other,
        })?;
        let format = match self.format {
            Some(f) => f,
            None => Format::of(&files[0]).ok_or_else(|| DataError::Format {
                path: files[0].clone(),
                message: format!(
                    "source {:?}: cannot tell the format from the extension; set format = \"jsonl\", \
                     \"parquet\" or \"webdataset\"",
                    self.name
                ),
            })?,
        };
        Ok(SourceSpec {
            files,
            format,
            layout: self.layout,
            task: Some(self.task.clone().unwrap_or_else(|| self.name.clone())),
            policy,
            // Only training data is shuffled; evaluation reads in file order.
            shuffle: if split == Split::Train { self.shuffle } else { 0 },
            seed: self.seed,
        })
    }
}

/// Checks a list of sources: each one, and names that are unique.
pub fn check_sources(sources: &[SourceConfig], key: &str) -> Result<(), String> {
    for (i, s) in sources.iter().enumerate() {
        s.check(&format!("{key}[{i}]"))?;
        if let Some(j) = sources[..i].iter().position(|t| t.name == s.name) {
            return Err(format!("{key}[{i}].name = {:?}: {key}[{j}] has the same name", s.name));
        }
    }
    Ok(())
}

/// The sources an experiment can mix: its `[[data.source]]` entries and the synthetic
/// families of its `data.dir` (each `<family>/train.jsonl` there).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Catalog {
    pub sources: Vec<SourceConfig>,
    /// The `[[data.source]]` names (the rest are families of `data.dir`).
    declared: Vec<String>,
}

impl Catalog {
    /// The families of `dir` (when given) and the `declared` sources; a declared name
    /// that is also a family is an error (which would a mixture mean?).
    pub fn new(dir: Option<&Path>, declared: &[SourceConfig]) -> Result<Self, String> {
        let mut sources: Vec<SourceConfig> = match dir {
            Some(dir) => families_in(dir).iter().map(|name| SourceConfig::family(dir, name)).collect(),
            None => Vec::new(),
        };
        for (i, s) in declared.iter().enumerate() {
            if sources.iter().any(|f| f.name == s.name) {
                return Err(format!(
                    "data.source[{i}].name = {:?}: data.dir has a family of that name; rename the source",
                    s.name
                ));
            }
        }
        sources.extend(declared.iter().cloned());
        Ok(Self { sources, declared: declared.iter().map(|s| s.name.clone()).collect() })
    }

    pub fn get(&self, name: &str) -> Option<&SourceConfig> {
        self.sources.iter().find(|s| s.name == name)
    }

    /// The mixture of a stage that gives none: the declared sources at their weights, or
    /// without any, the paper's mixture over the families.
    pub fn default_mixture(&self) -> Vec<(String, f64)> {
        if self.declared.is_empty() {
            crate::mixture::PAPER_MIXTURE.iter().map(|(k, w)| (k.to_string(), *w)).collect()
        } else {
            self.declared.iter().filter_map(|n| self.get(n)).map(|s| (s.name.clone(), s.weight)).collect()
        }
    }

    /// The sources `mixture` names (default: [`Self::default_mixture`]) at its weights.
    pub fn recipe(
        &self,
        mixture: Option<&[(String, f64)]>,
        on_bad_record: crate::mixture::BadRecordPolicy,
    ) -> Result<crate::mixture::Recipe, String> {
        let default = self.default_mixture();
        let weights = mixture.unwrap_or(&default);
        let sources = weights
            .iter()
            .map(|(name, weight)| {
                let s = self.get(name).ok_or_else(|| {
                    let known: Vec<&str> = self.sources.iter().map(|s| s.name.as_str()).collect();
                    format!(
                        "the mixture names {name:?}, which is neither a [[data.source]] nor a family of data.dir \
                         (known: {})",
                        if known.is_empty() { "none".to_string() } else { known.join(", ") }
                    )
                })?;
                Ok(SourceConfig { weight: *weight, ..s.clone() })
            })
            .collect::<Result<_, String>>()?;
        Ok(crate::mixture::Recipe { sources, on_bad_record })
    }

    /// Every source's `split`, for evaluation, calibration and tokenizer training; and the
    /// names of the sources that have no such split (named in reports, not dropped).
    pub fn split(&self, split: Split, policy: OnBadRecord) -> Result<(Vec<SourceSpec>, Vec<String>), DataError> {
        let (mut specs, mut missing) = (Vec::new(), Vec::new());
        for s in &self.sources {
            match s.spec(split, policy) {
                Some(spec) => specs.push(spec?),
                None => missing.push(s.name.clone()),
            }
        }
        Ok((specs, missing))
    }
}

/// The family names under `dir`: its subdirectories with a `train.jsonl`, sorted.
pub fn families_in(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .map(|rd| {
            rd.filter_map(|e| e.ok())
                .filter(|e| e.path().join("train.jsonl").is_file())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}

//! Data mixtures: a recipe names sources (JSONL, Parquet, WebDataset; see
//! [`crate::sources`]) and their weights, and the sampler draws records from them in those
//! proportions, reproducibly. The default weights are the
//! paper's instruction-tuning mixture: 35% VQA, 25% document, 20% chart, 15% OCR,
//! 5% multi-turn.
//!
//! ```toml
//! on_bad_record = "fail"        # or "skip"
//! [[source]]
//! name = "vqa"
//! path = "synthetic/vqa/train.jsonl"   # relative to the recipe file
//! weight = 35
//! ```
//!
//! The schedule is smooth weighted round-robin: after any `n` draws, each source has
//! supplied within one record of `n * weight / total`, with no randomness at all, so a run
//! and its resumption see the same order. Sources are streamed and restart from the top
//! when exhausted (an epoch of a small source inside a large mixture). A sampler's state
//! (the draws, each source's read position) goes into checkpoints, so a resumed run reads
//! on from where it stopped without reading what came before.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::records::{DataError, OnBadRecord, Record, Skipped};
use crate::sources::config::{Split, check_sources};
use crate::sources::{Source, SourceConfig, SourcePosition, SourceSpec};

/// The paper's stage-3 mixture (task family, weight).
pub const PAPER_MIXTURE: &[(&str, f64)] =
    &[("vqa", 35.0), ("document", 25.0), ("chart", 20.0), ("ocr", 15.0), ("multi_turn", 5.0)];

/// Named sources and their weights.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Recipe {
    #[serde(rename = "source")]
    pub sources: Vec<SourceConfig>,
    #[serde(default)]
    pub on_bad_record: BadRecordPolicy,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum BadRecordPolicy {
    #[default]
    Fail,
    Skip,
}

impl BadRecordPolicy {
    pub fn reading(self) -> OnBadRecord {
        match self {
            Self::Fail => OnBadRecord::Fail,
            Self::Skip => OnBadRecord::Skip,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum RecipeError {
    #[error("{}: {source}", path.display())]
    Io { path: PathBuf, source: std::io::Error },
    #[error("{}: {message}", path.display())]
    Invalid { path: PathBuf, message: String },
    #[error(transparent)]
    Data(#[from] DataError),
    /// Not a regular file, or too large to be a recipe.
    #[error(transparent)]
    File(autoneural_io::Error),
}

impl Recipe {
    /// The paper's mixture over the synthetic families of `dir`.
    pub fn paper(dir: &Path) -> Self {
        let sources = PAPER_MIXTURE
            .iter()
            .map(|&(name, weight)| SourceConfig { weight, ..SourceConfig::family(dir, name) })
            .collect();
        Self { sources, on_bad_record: BadRecordPolicy::Fail }
    }

    /// Reads a recipe TOML; source paths resolve against its directory. A JSONL source
    /// whose file is a `train.jsonl` and that names no `val`/`test` files has the
    /// `val.jsonl`/`test.jsonl` beside it, when they exist.
    pub fn from_file(path: &Path) -> Result<Self, RecipeError> {
        let text = autoneural_io::read::read_to_string(path, autoneural_io::read::CONFIG).map_err(|e| match e {
            autoneural_io::Error::Io { path, source } => RecipeError::Io { path, source },
            other => RecipeError::File(other),
        })?;
        let invalid = |message: String| RecipeError::Invalid { path: path.into(), message };
        // toml's message names the line, column and key.
        let mut recipe: Recipe = toml::from_str(&text).map_err(|e| invalid(e.to_string()))?;
        if recipe.sources.is_empty() {
            return Err(invalid("no [[source]] entries".into()));
        }
        check_sources(&recipe.sources, "source").map_err(invalid)?;
        let dir = path.parent().unwrap_or(Path::new("."));
        for s in &mut recipe.sources {
            s.resolve(dir);
            if s.path.file_name().is_some_and(|n| n == "train.jsonl") {
                let beside =
                    |split: &str| Some(s.path.with_file_name(format!("{split}.jsonl"))).filter(|p| p.is_file());
                s.val = s.val.take().or_else(|| beside("val"));
                s.test = s.test.take().or_else(|| beside("test"));
            }
        }
        Ok(recipe)
    }

    /// Each source's share of the draws.
    pub fn fractions(&self) -> Vec<f64> {
        let total: f64 = self.sources.iter().map(|s| s.weight).sum();
        self.sources.iter().map(|s| s.weight / total).collect()
    }

    /// Whether any source has `split`.
    pub fn has(&self, split: Split) -> bool {
        self.sources.iter().any(|s| s.pattern(split).is_some())
    }

    /// Records in the `split` files of every source (for stages counted in epochs).
    pub fn count(&self, split: Split) -> Result<u64, RecipeError> {
        let mut n = 0;
        for s in &self.sources {
            if let Some(spec) = s.spec(split, self.on_bad_record.reading()) {
                n += spec?.count()?;
            }
        }
        Ok(n)
    }
}

/// Where a sampler stands, as a checkpoint records it: draws so far, each source's
/// position, and records refused after they were drawn.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct SamplerState {
    pub drawn: Vec<usize>,
    pub positions: Vec<SourcePosition>,
    pub refused: Skipped,
}

impl SamplerState {
    /// Every record skipped so far: bad records the readers passed over, and records
    /// refused after they were drawn.
    pub fn skipped(&self) -> Skipped {
        let mut all = Skipped::default();
        for p in &self.positions {
            all.merge(&p.skipped);
        }
        all.merge(&self.refused);
        all
    }
}

/// Draws records from a recipe's sources, for one split, in proportion to their weights.
pub struct MixtureSampler {
    names: Vec<String>,
    weights: Vec<f64>,
    sources: Vec<Source>,
    credit: Vec<f64>,
    total_weight: f64,
    /// Records drawn from each source so far.
    pub drawn: Vec<usize>,
    /// Records drawn whole but refused later (a batcher's checks: too long, an image that does
    /// not decode) under `on_bad_record = "skip"`.
    pub refused: Skipped,
    policy: BadRecordPolicy,
}

impl MixtureSampler {
    /// The sources of `recipe` that have `split`, each opened at its start.
    pub fn new(recipe: &Recipe, split: Split) -> Result<Self, RecipeError> {
        let mut named = Vec::new();
        for s in &recipe.sources {
            if let Some(spec) = s.spec(split, recipe.on_bad_record.reading()) {
                named.push((s.name.clone(), s.weight, spec?));
            }
        }
        if named.is_empty() {
            return Err(RecipeError::Invalid {
                path: PathBuf::from(split.as_str()),
                message: format!("no source of the mixture has a {} split", split.as_str()),
            });
        }
        Self::from_specs(named, recipe.on_bad_record)
    }

    /// A mixture of `(name, weight, source)`, each opened at its start.
    pub fn from_specs(named: Vec<(String, f64, SourceSpec)>, policy: BadRecordPolicy) -> Result<Self, RecipeError> {
        let n = named.len();
        let (mut names, mut weights, mut sources) = (Vec::new(), Vec::new(), Vec::new());
        for (name, weight, spec) in named {
            sources.push(spec.open()?);
            names.push(name);
            weights.push(weight);
        }
        Ok(Self {
            total_weight: weights.iter().sum(),
            names,
            weights,
            sources,
            credit: vec![0.0; n],
            drawn: vec![0; n],
            refused: Skipped::default(),
            policy,
        })
    }

    /// The source the schedule picks next (smooth weighted round-robin).
    fn pick(&mut self) -> usize {
        for (c, w) in self.credit.iter_mut().zip(&self.weights) {
            *c += w;
        }
        let best = (0..self.credit.len()).fold(0, |b, i| if self.credit[i] > self.credit[b] { i } else { b });
        self.credit[best] -= self.total_weight;
        best
    }

    /// The next record and the name of its source.
    pub fn next_record(&mut self) -> Result<(String, Record), RecipeError> {
        let i = self.pick();
        self.drawn[i] += 1;
        for attempt in 0..2 {
            match self.sources[i].next_record() {
                Some(r) => return Ok((self.names[i].clone(), r?)),
                // Exhausted: start the source over (once; an empty source is an error).
                None if attempt == 0 => self.sources[i].restart()?,
                None => break,
            }
        }
        Err(RecipeError::Invalid {
            path: PathBuf::from(&self.names[i]),
            message: format!("source {:?} has no usable records", self.names[i]),
        })
    }

    /// Whether bad records are skipped (`on_bad_record = "skip"`) rather than fatal.
    pub fn skips_bad_records(&self) -> bool {
        self.policy == BadRecordPolicy::Skip
    }

    /// Where the sampler stands (see [`Self::restore`]).
    pub fn state(&self) -> SamplerState {
        SamplerState {
            drawn: self.drawn.clone(),
            positions: self.sources.iter().map(Source::position).collect(),
            refused: self.refused.clone(),
        }
    }

    /// Puts a fresh sampler of the same recipe where `state` says: the schedule replayed
    /// (no reading), each source opened at its recorded position.
    pub fn restore(&mut self, state: &SamplerState) -> Result<(), RecipeError> {
        if state.drawn.len() != self.sources.len() || state.positions.len() != self.sources.len() {
            return Err(RecipeError::Invalid {
                path: PathBuf::from("checkpoint"),
                message: format!(
                    "the checkpoint's sampler has {} sources, this mixture {}",
                    state.positions.len(),
                    self.sources.len()
                ),
            });
        }
        for _ in 0..state.drawn.iter().sum::<usize>() {
            self.pick();
        }
        for (source, at) in self.sources.iter_mut().zip(&state.positions) {
            source.seek(at)?;
        }
        self.drawn = state.drawn.clone();
        self.refused = state.refused.clone();
        Ok(())
    }

    /// Every record skipped so far (see [`SamplerState::skipped`]).
    pub fn skipped(&self) -> Skipped {
        self.state().skipped()
    }
}

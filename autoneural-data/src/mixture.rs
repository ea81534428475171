//! Data mixtures: a recipe names JSONL sources and their weights, and the sampler draws
//! records from them in those proportions, reproducibly. The default weights are the
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
//! when exhausted (an epoch of a small source inside a large mixture).

use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::records::{DataError, JsonlRecords, OnBadRecord, Record, Skipped};

/// The paper's stage-3 mixture (task family, weight).
pub const PAPER_MIXTURE: &[(&str, f64)] =
    &[("vqa", 35.0), ("document", 25.0), ("chart", 20.0), ("ocr", 15.0), ("multi_turn", 5.0)];

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Source {
    pub name: String,
    pub path: PathBuf,
    pub weight: f64,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Recipe {
    #[serde(rename = "source")]
    pub sources: Vec<Source>,
    #[serde(default)]
    pub on_bad_record: BadRecordPolicy,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum BadRecordPolicy {
    #[default]
    Fail,
    Skip,
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
    /// The paper's mixture over `dir/<family>/<split>.jsonl`.
    pub fn paper(dir: &Path, split: &str) -> Self {
        let sources = PAPER_MIXTURE
            .iter()
            .map(|&(name, weight)| Source {
                name: name.into(),
                path: dir.join(name).join(format!("{split}.jsonl")),
                weight,
            })
            .collect();
        Self { sources, on_bad_record: BadRecordPolicy::Fail }
    }

    /// Reads a recipe TOML; source paths resolve against its directory.
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
        for s in &recipe.sources {
            if !(s.weight.is_finite() && s.weight > 0.0) {
                return Err(invalid(format!(
                    "source {:?}: weight must be a positive number, found {}",
                    s.name, s.weight
                )));
            }
        }
        let dir = path.parent().unwrap_or(Path::new("."));
        for s in &mut recipe.sources {
            s.path = dir.join(&s.path);
        }
        Ok(recipe)
    }

    /// Each source's share of the draws.
    pub fn fractions(&self) -> Vec<f64> {
        let total: f64 = self.sources.iter().map(|s| s.weight).sum();
        self.sources.iter().map(|s| s.weight / total).collect()
    }
}

/// Draws records from a recipe's sources in proportion to their weights.
pub struct MixtureSampler {
    recipe: Recipe,
    readers: Vec<JsonlRecords>,
    credit: Vec<f64>,
    total_weight: f64,
    /// Records drawn from each source so far.
    pub drawn: Vec<usize>,
    /// Bad records skipped by readers that have since been reopened (a source's epoch ended).
    closed: Skipped,
    /// Records drawn whole but refused later (a batcher's checks: too long, an image that does
    /// not decode) under `on_bad_record = "skip"`.
    pub refused: Skipped,
}

impl MixtureSampler {
    pub fn new(recipe: Recipe) -> Result<Self, RecipeError> {
        let readers =
            recipe.sources.iter().map(|s| JsonlRecords::open(&s.path, policy(&recipe))).collect::<Result<_, _>>()?;
        let n = recipe.sources.len();
        let total_weight = recipe.sources.iter().map(|s| s.weight).sum();
        Ok(Self {
            recipe,
            readers,
            credit: vec![0.0; n],
            total_weight,
            drawn: vec![0; n],
            closed: Skipped::default(),
            refused: Skipped::default(),
        })
    }

    /// The source the schedule picks next (smooth weighted round-robin).
    fn pick(&mut self) -> usize {
        for (c, s) in self.credit.iter_mut().zip(&self.recipe.sources) {
            *c += s.weight;
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
            match self.readers[i].next() {
                Some(r) => return Ok((self.recipe.sources[i].name.clone(), r?)),
                // Exhausted: start the source over (once; an empty source is an error).
                None if attempt == 0 => {
                    let fresh = JsonlRecords::open(&self.recipe.sources[i].path, policy(&self.recipe))?;
                    let done = std::mem::replace(&mut self.readers[i], fresh);
                    self.closed.merge(&done.skipped);
                }
                None => break,
            }
        }
        Err(RecipeError::Invalid {
            path: self.recipe.sources[i].path.clone(),
            message: format!("source {:?} has no usable records", self.recipe.sources[i].name),
        })
    }
}

impl MixtureSampler {
    /// Whether bad records are skipped (`on_bad_record = "skip"`) rather than fatal.
    pub fn skips_bad_records(&self) -> bool {
        self.recipe.on_bad_record == BadRecordPolicy::Skip
    }

    /// Every record skipped so far: bad lines the readers passed over, and records refused
    /// after they were drawn.
    pub fn skipped(&self) -> Skipped {
        let mut all = self.closed.clone();
        for r in &self.readers {
            all.merge(&r.skipped);
        }
        all.merge(&self.refused);
        all
    }
}

fn policy(recipe: &Recipe) -> OnBadRecord {
    match recipe.on_bad_record {
        BadRecordPolicy::Fail => OnBadRecord::Fail,
        BadRecordPolicy::Skip => OnBadRecord::Skip,
    }
}

//! Deterministic synthetic multimodal data: small images with short, exactly checkable
//! question/answer conversations, in the task families of the paper's mixture (`vqa`,
//! `document`, `chart`, `ocr`, `multi_turn`) plus `parking`, a stand-in for its in-car
//! data. Answers come from small closed vocabularies ([`Family::answers`]) and are drawn
//! uniformly, so a tiny model can learn them on a CPU in minutes and a majority-answer
//! guess scores low.
//!
//! Output under `out`:
//!
//! ```text
//! out/manifest.json                     options, counts, majority answer per family/split
//! out/<family>/{train,val,test}.jsonl   one record per line (see below)
//! out/<family>/images/<split>-<i>.png   the image of record i of that split
//! ```
//!
//! A record (the `messages` shape of [`crate::records`], image paths relative to the
//! JSONL file; `multi_turn` has several user/assistant pairs, `<image>` only in the first):
//!
//! ```json
//! {"messages":[{"role":"user","content":"<image>How many shapes are there?"},
//!   {"role":"assistant","content":"3"}],"images":["images/train-0.png"],"task":"vqa"}
//! ```
//!
//! Determinism: every sample draws from its own `StdRng`, seeded from (seed, family, split,
//! index), so families and splits are independent of each other and of which families are
//! requested, generation can run in parallel, and the same options give byte-identical files.
//! [`synthesize_into`] owns its output directory (`autoneural_io::output`): it writes into
//! a directory that does not exist, is empty, or holds this same set from an interrupted or
//! earlier run, through a staging directory committed at the end; a user's dataset or a set
//! rendered from other options is refused unless forced.

pub mod canvas;
mod chart;
mod document;
pub mod font;
mod ocr;
mod output;
mod parking;
mod tasks;
mod vqa;

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use rand::SeedableRng;
use rand::rngs::StdRng;
use rayon::prelude::*;

pub use output::differences;
use output::{AnswerStats, FamilyStats};

/// Version of the output layout and record format, recorded in the manifest.
pub const FORMAT_VERSION: u32 = 1;
/// Version of what the families draw, recorded in the manifest: bumped whenever the same
/// options and seed would render different images or questions, so a directory rendered by
/// an older generator is not silently trained on (2: document values drawn larger than
/// their labels; 3: two document fields, each entry under its caption).
pub const RENDER_VERSION: u32 = 3;
/// Smallest supported image side: the form and chart layouts need 64 pixels.
pub const MIN_IMAGE_SIZE: u32 = 64;
/// Largest supported image side.
pub const MAX_IMAGE_SIZE: u32 = 2048;
/// Floor on the validation and test split sizes.
pub const MIN_EVAL_SAMPLES: usize = 20;
/// The most training records per family: a million 64-pixel images is ~10 GB of PNGs and
/// the answers of a split are held in memory while it renders; more is a typo.
pub const MAX_SAMPLES: usize = 1_000_000;

/// A task family; its name is the directory name and the records' `task` label.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Family {
    Vqa,
    Document,
    Chart,
    Ocr,
    MultiTurn,
    Parking,
}

impl Family {
    pub const ALL: [Family; 6] =
        [Family::Vqa, Family::Document, Family::Chart, Family::Ocr, Family::MultiTurn, Family::Parking];

    pub fn name(self) -> &'static str {
        match self {
            Self::Vqa => "vqa",
            Self::Document => "document",
            Self::Chart => "chart",
            Self::Ocr => "ocr",
            Self::MultiTurn => "multi_turn",
            Self::Parking => "parking",
        }
    }

    /// Every answer a turn of this family can have (its closed vocabulary), sorted.
    pub fn answers(self) -> Vec<String> {
        let mut out: Vec<String> = match self {
            Self::Vqa | Self::MultiTurn => vqa::ANSWERS.iter().map(|s| s.to_string()).collect(),
            Self::Document => document::answers(),
            Self::Chart => chart::answers(),
            Self::Ocr => ocr::WORDS.iter().map(|s| s.to_string()).collect(),
            Self::Parking => parking::answers(),
        };
        out.sort();
        out.dedup();
        out
    }

    /// Stable number mixed into the seed; never reuse one, or two families would share data.
    fn seed_id(self) -> u64 {
        match self {
            Self::Vqa => 1,
            Self::Document => 2,
            Self::Chart => 3,
            Self::Ocr => 4,
            Self::MultiTurn => 5,
            Self::Parking => 6,
        }
    }
}

impl fmt::Display for Family {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Family {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        Self::ALL.into_iter().find(|f| f.name() == s).ok_or_else(|| {
            let names: Vec<&str> = Self::ALL.iter().map(|f| f.name()).collect();
            format!("unknown task family {s:?}; expected one of {}", names.join(", "))
        })
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Split {
    Train,
    Val,
    Test,
}

impl Split {
    pub const ALL: [Split; 3] = [Split::Train, Split::Val, Split::Test];

    pub fn name(self) -> &'static str {
        match self {
            Self::Train => "train",
            Self::Val => "val",
            Self::Test => "test",
        }
    }

    fn seed_id(self) -> u64 {
        match self {
            Self::Train => 1,
            Self::Val => 2,
            Self::Test => 3,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SynthOptions {
    /// Output directory (created if missing).
    pub out: PathBuf,
    /// Records per family in the train split; see [`SynthOptions::split_size`].
    pub samples: usize,
    /// Side of the square images, in pixels ([`MIN_IMAGE_SIZE`]..=[`MAX_IMAGE_SIZE`]).
    pub image_size: u32,
    pub seed: u64,
    /// Families to generate, each at most once.
    pub families: Vec<Family>,
}

impl SynthOptions {
    /// Records in `split`: `samples` for train; `max(samples / 10, 20)` each for val and
    /// test, so small runs still have an evaluation set worth a number.
    pub fn split_size(&self, split: Split) -> usize {
        match split {
            Split::Train => self.samples,
            Split::Val | Split::Test => (self.samples / 10).max(MIN_EVAL_SAMPLES),
        }
    }

    fn validate(&self) -> Result<(), SynthError> {
        let bad = |m: String| Err(SynthError::Options(m));
        if !(1..=MAX_SAMPLES).contains(&self.samples) {
            return bad(format!("samples must be 1 to {MAX_SAMPLES} per family, found {}", self.samples));
        }
        if !(MIN_IMAGE_SIZE..=MAX_IMAGE_SIZE).contains(&self.image_size) {
            return bad(format!(
                "image size {} is outside {MIN_IMAGE_SIZE}..={MAX_IMAGE_SIZE} (text needs 64 pixels to stay legible)",
                self.image_size
            ));
        }
        if self.families.is_empty() {
            return bad("no task families selected".into());
        }
        for (i, f) in self.families.iter().enumerate() {
            if self.families[..i].contains(f) {
                return bad(format!("task family {f} is listed twice"));
            }
        }
        Ok(())
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SynthError {
    #[error("invalid synthesis options: {0}")]
    Options(String),
    #[error("{}: {source}", path.display())]
    Io { path: PathBuf, source: std::io::Error },
    #[error("{}: cannot encode PNG: {source}", path.display())]
    Image { path: PathBuf, source: image::ImageError },
    #[error("{}: cannot serialize JSON: {source}", path.display())]
    Json { path: PathBuf, source: serde_json::Error },
    /// The output directory is not ours to write, or an ownership file could not be written.
    #[error(transparent)]
    Output(#[from] autoneural_io::Error),
}

/// What one split of one family holds.
#[derive(Debug, Clone, PartialEq)]
pub struct SplitSummary {
    pub family: Family,
    pub split: Split,
    pub jsonl: PathBuf,
    pub records: usize,
    /// Question/answer pairs (more than `records` for `multi_turn`).
    pub turns: usize,
    /// The most frequent answer over all turns (ties: the smallest string) and its share:
    /// the accuracy of always answering it.
    pub majority_answer: String,
    pub majority_share: f64,
}

#[derive(Debug, Clone, PartialEq)]
pub struct SynthSummary {
    pub manifest: PathBuf,
    /// In the order of the requested families, then train, val, test.
    pub splits: Vec<SplitSummary>,
}

/// Generates the requested families into `opts.out` and writes the manifest.
pub fn synthesize(opts: &SynthOptions) -> Result<SynthSummary, SynthError> {
    opts.validate()?;
    output::create_dir(&opts.out)?;
    let mut splits = Vec::new();
    let mut families = BTreeMap::new();
    for &family in &opts.families {
        let mut stats = FamilyStats::default();
        for split in Split::ALL {
            let (summary, answer_stats) = generate_split(opts, family, split)?;
            stats.insert(split, &opts.out, &summary, answer_stats);
            splits.push(summary);
        }
        families.insert(family.name(), stats);
    }
    let manifest = manifest_path(&opts.out);
    output::write_manifest(&manifest, opts, families)?;
    Ok(SynthSummary { manifest, splits })
}

/// The command name an output directory's marker records for a synthetic set.
pub const COMMAND: &str = "data synth";

/// What a synthetic set is made from, as its directory's marker records it: the same
/// inputs render byte-identical files.
pub fn ownership_inputs(opts: &SynthOptions) -> serde_json::Map<String, serde_json::Value> {
    let mut families: Vec<&str> = opts.families.iter().map(|f| f.name()).collect();
    families.sort_unstable();
    let v = serde_json::json!({
        "samples": opts.samples,
        "image_size": opts.image_size,
        "seed": opts.seed,
        "families": families,
        "format_version": FORMAT_VERSION,
        "render_version": RENDER_VERSION,
    });
    v.as_object().cloned().unwrap_or_default()
}

/// Whether `opts.out` holds this very set, complete: reusable as it is, without a lock (a
/// sweep's runs read one set at the same time). A set written before ownership markers
/// counts when its manifest matches.
pub fn up_to_date(opts: &SynthOptions) -> Result<bool, SynthError> {
    match autoneural_io::output::marker(&opts.out) {
        Some(m) => Ok(m.command == COMMAND && m.complete && m.inputs == ownership_inputs(opts)),
        None => legacy_set(opts),
    }
}

/// A set from before ownership markers: its manifest says our generator rendered it with
/// these options.
fn legacy_set(opts: &SynthOptions) -> Result<bool, SynthError> {
    Ok(manifest_path(&opts.out).is_file() && differences(opts).is_ok_and(|d| d.is_empty()))
}

/// Generates the set into `opts.out` as its owner: refused (naming the directory and
/// `way_out`) when the directory holds anything but this set, unless `force`; written
/// through a staging directory, so an interrupted run leaves the earlier set or nothing.
pub fn synthesize_into(opts: &SynthOptions, force: bool, way_out: &str) -> Result<SynthSummary, SynthError> {
    opts.validate()?;
    let legacy = |_: &Path| legacy_set(opts).unwrap_or(false);
    let spec = autoneural_io::output::Spec {
        command: COMMAND,
        inputs: ownership_inputs(opts),
        force,
        way_out,
        legacy: Some(&legacy),
    };
    let mut out = autoneural_io::output::Output::claim(&opts.out, spec)?;
    let staging = out.staging()?;
    let mut summary = synthesize(&SynthOptions { out: staging.clone(), ..opts.clone() })?;
    out.commit()?;
    let moved = |p: &Path| opts.out.join(p.strip_prefix(&staging).unwrap_or(p));
    summary.manifest = moved(&summary.manifest);
    for s in &mut summary.splits {
        s.jsonl = moved(&s.jsonl);
    }
    Ok(summary)
}

/// Writes the images, then the JSONL file, of one split.
fn generate_split(
    opts: &SynthOptions,
    family: Family,
    split: Split,
) -> Result<(SplitSummary, AnswerStats), SynthError> {
    let dir = opts.out.join(family.name());
    let images = dir.join("images");
    output::create_dir(&images)?;
    let split_seed = derive_seed(opts.seed, &[family.seed_id(), split.seed_id()]);
    let turns: Vec<Vec<tasks::Turn>> = (0..opts.split_size(split))
        .into_par_iter()
        .map(|i| {
            let mut rng = StdRng::seed_from_u64(derive_seed(split_seed, &[i as u64]));
            let sample = tasks::generate(family, i, opts.image_size, &mut rng);
            output::write_png(&images.join(image_name(split, i)), &sample.image)?;
            Ok(sample.turns)
        })
        .collect::<Result<_, SynthError>>()?;

    let jsonl = dir.join(format!("{}.jsonl", split.name()));
    let lines = turns.iter().enumerate().map(|(i, t)| {
        output::record_json(family.name(), &format!("images/{}", image_name(split, i)), t)
            .map_err(|source| SynthError::Json { path: jsonl.clone(), source })
    });
    output::write_lines_atomic(&jsonl, lines)?;

    let mut stats = AnswerStats::default();
    turns.iter().flatten().for_each(|t| stats.add(t));
    let (majority_answer, majority_share) = stats.majority();
    let summary = SplitSummary {
        family,
        split,
        jsonl,
        records: turns.len(),
        turns: stats.turns(),
        majority_answer,
        majority_share,
    };
    Ok((summary, stats))
}

fn image_name(split: Split, index: usize) -> String {
    format!("{}-{index}.png", split.name())
}

/// SplitMix64's finaliser: a bijective mix, so distinct inputs give unrelated outputs.
fn splitmix64(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// A seed for the stream named by `parts` under `seed`.
fn derive_seed(seed: u64, parts: &[u64]) -> u64 {
    parts.iter().fold(splitmix64(seed), |h, &p| splitmix64(h ^ p))
}

/// The manifest path of a synthesized directory.
pub fn manifest_path(out: &Path) -> PathBuf {
    out.join("manifest.json")
}

//! Files: PNG images, JSONL records and the manifest, and the answer statistics the
//! manifest reports.
//!
//! Manifest shape (`families` and the split maps are sorted by name):
//!
//! ```json
//! {"format_version": 1, "generator": "autoneural-train synth",
//!  "options": {"samples": 2000, "val_samples": 200, "test_samples": 200,
//!              "image_size": 64, "seed": 0, "families": ["vqa", "ocr"]},
//!  "families": {"vqa": {"train": {"jsonl": "vqa/train.jsonl", "records": 2000, "turns": 2000,
//!     "majority_answer": "top", "majority_share": 0.07,
//!     "by_kind": {"count": {"turns": 500, "distinct_answers": 4,
//!                           "majority_answer": "2", "majority_share": 0.26}, ...}}, ...}}}
//! ```
//!
//! `majority_share` is the accuracy of always giving the majority answer: the
//! majority-answer baseline, overall and per question kind.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use image::RgbImage;
use image::codecs::png::PngEncoder;
use serde::Serialize;

use super::tasks::Turn;
use super::{FORMAT_VERSION, RENDER_VERSION, Split, SplitSummary, SynthError, SynthOptions};

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> SynthError + '_ {
    move |source| SynthError::Io { path: path.to_path_buf(), source }
}

pub fn create_dir(path: &Path) -> Result<(), SynthError> {
    std::fs::create_dir_all(path).map_err(io_err(path))
}

/// Encodes `img` as PNG (the `image` crate's encoder is deterministic) and writes it.
pub fn write_png(path: &Path, img: &RgbImage) -> Result<(), SynthError> {
    let mut bytes = Vec::new();
    img.write_with_encoder(PngEncoder::new(&mut bytes))
        .map_err(|source| SynthError::Image { path: path.to_path_buf(), source })?;
    std::fs::write(path, bytes).map_err(io_err(path))
}

#[derive(Serialize)]
struct MessageOut<'a> {
    role: &'static str,
    content: &'a str,
}

#[derive(Serialize)]
struct RecordOut<'a> {
    messages: Vec<MessageOut<'a>>,
    images: [&'a str; 1],
    task: &'a str,
}

/// One JSONL line: the turns as user/assistant messages, `<image>` opening the first
/// question.
pub fn record_json(task: &str, image: &str, turns: &[Turn]) -> Result<String, serde_json::Error> {
    let first = turns.first().map(|t| format!("<image>{}", t.question)).unwrap_or_default();
    let mut messages = Vec::with_capacity(2 * turns.len());
    for (i, t) in turns.iter().enumerate() {
        let question = if i == 0 { first.as_str() } else { t.question.as_str() };
        messages.push(MessageOut { role: "user", content: question });
        messages.push(MessageOut { role: "assistant", content: &t.answer });
    }
    serde_json::to_string(&RecordOut { messages, images: [image], task })
}

/// `path` with `.tmp` appended to its file name.
fn temp_path(path: &Path) -> PathBuf {
    let mut name = OsString::from(path.as_os_str());
    name.push(".tmp");
    PathBuf::from(name)
}

/// Writes `lines` (each followed by a newline) under a temporary name, then renames it to
/// `path`, so `path` is either absent, the old file, or complete.
pub fn write_lines_atomic(
    path: &Path,
    lines: impl Iterator<Item = Result<String, SynthError>>,
) -> Result<(), SynthError> {
    let tmp = temp_path(path);
    let result = (|| {
        let mut w = BufWriter::new(File::create(&tmp).map_err(io_err(&tmp))?);
        for line in lines {
            w.write_all(line?.as_bytes()).map_err(io_err(&tmp))?;
            w.write_all(b"\n").map_err(io_err(&tmp))?;
        }
        w.into_inner().map_err(|e| e.into_error()).and_then(|f| f.sync_all()).map_err(io_err(&tmp))?;
        std::fs::rename(&tmp, path).map_err(io_err(path))
    })();
    if result.is_err() {
        // Best effort: the error being reported matters more than a stray temp file.
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

/// Answer counts of one split, overall and per question kind.
#[derive(Debug, Default)]
pub struct AnswerStats {
    all: Counts,
    by_kind: BTreeMap<&'static str, Counts>,
}

#[derive(Debug, Default)]
struct Counts {
    turns: usize,
    answers: BTreeMap<String, usize>,
}

impl Counts {
    fn add(&mut self, answer: &str) {
        self.turns += 1;
        *self.answers.entry(answer.to_string()).or_default() += 1;
    }

    /// The most frequent answer (ties: the smallest string) and its share of the turns.
    fn majority(&self) -> (String, f64) {
        // BTreeMap iterates in string order; `max_by_key` keeps the last maximum, so
        // iterate in reverse to keep the first.
        match self.answers.iter().rev().max_by_key(|(_, n)| **n) {
            Some((answer, &n)) => (answer.clone(), n as f64 / self.turns as f64),
            None => (String::new(), 0.0),
        }
    }
}

impl AnswerStats {
    pub fn add(&mut self, turn: &Turn) {
        self.all.add(&turn.answer);
        self.by_kind.entry(turn.kind).or_default().add(&turn.answer);
    }

    pub fn turns(&self) -> usize {
        self.all.turns
    }

    pub fn majority(&self) -> (String, f64) {
        self.all.majority()
    }
}

#[derive(Serialize)]
struct KindOut {
    turns: usize,
    distinct_answers: usize,
    majority_answer: String,
    majority_share: f64,
}

#[derive(Serialize)]
struct SplitOut {
    /// Relative to the manifest's directory.
    jsonl: String,
    records: usize,
    turns: usize,
    majority_answer: String,
    majority_share: f64,
    by_kind: BTreeMap<&'static str, KindOut>,
}

/// The manifest entries of one family, by split name.
#[derive(Serialize, Default)]
#[serde(transparent)]
pub struct FamilyStats(BTreeMap<&'static str, SplitOut>);

impl FamilyStats {
    pub fn insert(&mut self, split: Split, out: &Path, summary: &SplitSummary, stats: AnswerStats) {
        let jsonl = summary.jsonl.strip_prefix(out).unwrap_or(&summary.jsonl);
        let by_kind = stats
            .by_kind
            .iter()
            .map(|(&kind, c)| {
                let (majority_answer, majority_share) = c.majority();
                (kind, KindOut { turns: c.turns, distinct_answers: c.answers.len(), majority_answer, majority_share })
            })
            .collect();
        // Forward slashes on every platform: the manifest is data, not a local path.
        let jsonl = jsonl.components().map(|c| c.as_os_str().to_string_lossy()).collect::<Vec<_>>().join("/");
        self.0.insert(
            split.name(),
            SplitOut {
                jsonl,
                records: summary.records,
                turns: summary.turns,
                majority_answer: summary.majority_answer.clone(),
                majority_share: summary.majority_share,
                by_kind,
            },
        );
    }
}

#[derive(Serialize)]
struct OptionsOut<'a> {
    samples: usize,
    val_samples: usize,
    test_samples: usize,
    image_size: u32,
    seed: u64,
    families: Vec<&'a str>,
}

impl<'a> OptionsOut<'a> {
    fn of(opts: &'a SynthOptions) -> Self {
        Self {
            samples: opts.samples,
            val_samples: opts.split_size(Split::Val),
            test_samples: opts.split_size(Split::Test),
            image_size: opts.image_size,
            seed: opts.seed,
            families: opts.families.iter().map(|f| f.name()).collect(),
        }
    }
}

#[derive(Serialize)]
struct Manifest<'a> {
    format_version: u32,
    render_version: u32,
    generator: &'static str,
    options: OptionsOut<'a>,
    families: BTreeMap<&'static str, FamilyStats>,
}

/// Writes the manifest (pretty JSON) atomically. The output directory itself is not
/// recorded, so the same options give the same manifest wherever it is written.
pub fn write_manifest(
    path: &Path,
    opts: &SynthOptions,
    families: BTreeMap<&'static str, FamilyStats>,
) -> Result<(), SynthError> {
    let manifest = Manifest {
        format_version: FORMAT_VERSION,
        render_version: RENDER_VERSION,
        generator: "autoneural-train synth",
        options: OptionsOut::of(opts),
        families,
    };
    let text = serde_json::to_string_pretty(&manifest)
        .map_err(|source| SynthError::Json { path: path.to_path_buf(), source })?;
    write_lines_atomic(path, std::iter::once(Ok(text)))
}

/// How the directory `opts.out` already holds differs from what `opts` would generate
/// (empty: it is what `opts` asks for), as `key found (asked: wanted)`: every option the
/// manifest records (families in any order), then the render version (a manifest from
/// before it counts as version 1).
pub fn differences(opts: &SynthOptions) -> Result<Vec<String>, SynthError> {
    use serde_json::Value;
    let path = super::manifest_path(&opts.out);
    let text = autoneural_io::read::read_to_string(&path, autoneural_io::read::CONFIG)?;
    let manifest: Value = serde_json::from_str(&text)
        .map_err(|e| SynthError::Options(format!("{}: not a synthesis manifest: {e}", path.display())))?;
    let unordered = |v: &Value| match v.as_array() {
        Some(items) => {
            let mut items = items.clone();
            items.sort_by_key(|i| i.to_string());
            Value::Array(items)
        }
        None => v.clone(),
    };
    let wanted =
        serde_json::to_value(OptionsOut::of(opts)).map_err(|source| SynthError::Json { path: path.clone(), source })?;
    let mut checks: Vec<(String, Value, Value)> = wanted
        .as_object()
        .into_iter()
        .flatten()
        .map(|(key, want)| (key.clone(), unordered(&manifest["options"][key]), unordered(want)))
        .collect();
    let version = manifest.get("render_version").cloned().unwrap_or(1.into());
    checks.push(("render_version".into(), version, RENDER_VERSION.into()));
    Ok(checks
        .into_iter()
        .filter(|(_, found, want)| found != want)
        .map(|(k, f, w)| format!("{k} {f} (asked: {w})"))
        .collect())
}

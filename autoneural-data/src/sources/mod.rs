//! Where records come from: a source is a list of files in one format (JSONL, Hugging Face
//! Parquet, WebDataset tar shards), read as one stream of records in one of the
//! conversation layouts of [`crate::layouts`], optionally shuffled by a seeded block buffer.
//!
//! Every stream knows its position (the file, the record or byte within it, how many times
//! it started over, where in its shuffle block it is), and can be put back there: a resumed
//! training run opens each source at the position its checkpoint recorded and sees the same
//! records as an uninterrupted one, without reading what came before.
//!
//! ```toml
//! [[data.source]]
//! name = "docvqa"                         # the mixture's name for it (and the task label)
//! format = "parquet"                      # jsonl | parquet | webdataset (default: by extension)
//! path = "hf/docvqa/train-*.parquet"      # a file or a glob, relative to the experiment file
//! layout = "messages"                     # auto | messages | conversations | texts | qa
//! shuffle = 1000                          # records per shuffle block (0: file order)
//! ```

pub mod config;
pub mod files;
pub mod jsonl;
pub mod parquet;
pub mod shuffle;
pub mod webdataset;
pub mod write;

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::layouts::Layout;
use crate::records::{DataError, OnBadRecord, Record, Skipped};

pub use config::{Catalog, SourceConfig, Split};
pub use shuffle::Shuffled;

/// How a source's files are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    Jsonl,
    Parquet,
    /// Tar shards of `key.json` + `key.{jpg,png,webp}` samples.
    Webdataset,
}

impl Format {
    /// By extension: `.jsonl`/`.json`, `.parquet`, `.tar`.
    pub fn of(path: &Path) -> Option<Self> {
        match path.extension()?.to_str()? {
            "jsonl" | "json" => Some(Self::Jsonl),
            "parquet" => Some(Self::Parquet),
            "tar" => Some(Self::Webdataset),
            _ => None,
        }
    }
}

/// Where a stream reads next: how many times the source started over, the file (an index
/// into the source's files), and the place in it: `offset` is where a reader seeks to
/// (JSONL and WebDataset: a byte offset; Parquet: a row), `records` the lines, rows or
/// samples before it (for the 1-based numbers in messages).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReadPosition {
    pub epoch: u64,
    pub file: usize,
    pub offset: u64,
    pub records: u64,
}

/// A format's reader over a source's files, in file order.
pub trait Reader: Send {
    /// The next record; `None` after the last file.
    fn next_record(&mut self) -> Option<Result<Record, DataError>>;
    fn position(&self) -> ReadPosition;
    /// Opens the file and goes to the place `at` names.
    fn seek(&mut self, at: ReadPosition) -> Result<(), DataError>;
    /// Bad records passed over so far (with `on_bad_record = "skip"`).
    fn skipped(&self) -> Skipped;
    fn set_skipped(&mut self, skipped: Skipped);
}

/// How to read one source.
#[derive(Debug, Clone, PartialEq)]
pub struct SourceSpec {
    pub files: Vec<PathBuf>,
    pub format: Format,
    pub layout: Layout,
    /// The task label of records that carry none.
    pub task: Option<String>,
    pub policy: OnBadRecord,
    /// Records per shuffle block (0: in file order).
    pub shuffle: usize,
    pub seed: u64,
}

impl SourceSpec {
    /// The files `pattern` names (a path, or a glob: `shards/train-*.parquet`), sorted, each
    /// a regular file; an error when it names none.
    pub fn files(pattern: &Path) -> Result<Vec<PathBuf>, DataError> {
        let text = pattern.to_string_lossy();
        let glob_error = |message: String| DataError::Format { path: pattern.to_path_buf(), message };
        let mut files: Vec<PathBuf> = if text.contains(['*', '?', '[']) {
            glob::glob(&text)
                .map_err(|e| glob_error(format!("not a valid glob: {e}")))?
                .collect::<Result<_, _>>()
                .map_err(|e| glob_error(e.to_string()))?
        } else {
            vec![pattern.to_path_buf()]
        };
        files.sort();
        if files.is_empty() {
            return Err(glob_error("no file matches".into()));
        }
        for f in &files {
            autoneural_io::read::check(f, autoneural_io::read::DATA)?;
        }
        Ok(files)
    }

    /// One file, its format by its extension.
    pub fn file(path: &Path, policy: OnBadRecord) -> Result<Self, DataError> {
        // Checked first: `/dev/zero` is "not a regular file" before it is "no known extension".
        let files = Self::files(path)?;
        let format = Format::of(path).ok_or_else(|| DataError::Format {
            path: path.to_path_buf(),
            message: "unknown format: expected .jsonl, .parquet or .tar (WebDataset)".into(),
        })?;
        Ok(Self { files, format, layout: Layout::Auto, task: None, policy, shuffle: 0, seed: 0 })
    }

    /// Records in the files (JSONL: non-blank lines; Parquet: rows, from the footers;
    /// WebDataset: samples, from the member headers), bad ones included: for stages
    /// counted in epochs.
    pub fn count(&self) -> Result<u64, DataError> {
        let mut n = 0;
        for f in &self.files {
            n += match self.format {
                Format::Jsonl => {
                    let mut lines = 0;
                    for line in autoneural_io::read::Lines::open(f, autoneural_io::read::LINE_LIMIT)? {
                        lines += u64::from(!matches!(line?, autoneural_io::read::Line::Text(t) if t.trim().is_empty()));
                    }
                    lines
                }
                Format::Parquet => parquet::ParquetRows::count(f)?,
                Format::Webdataset => webdataset::count_samples(f)?,
            };
        }
        Ok(n)
    }

    /// The source's stream, at its start.
    pub fn open(&self) -> Result<Source, DataError> {
        let reader: Box<dyn Reader> = match self.format {
            Format::Jsonl => Box::new(jsonl::JsonlReader::new(self)),
            Format::Parquet => Box::new(parquet::ParquetReader::new(self)),
            Format::Webdataset => Box::new(webdataset::TarReader::new(self)),
        };
        Source::new(reader, self.shuffle, self.seed)
    }
}

/// Where a source stands, as a checkpoint records it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct SourcePosition {
    /// The reader's position at the start of the current shuffle block (or the next
    /// record's, unshuffled).
    pub read: ReadPosition,
    /// Shuffle blocks started in this epoch, and records taken from the current one.
    pub block: u64,
    pub taken: usize,
    /// Bad records the reader passed over so far.
    pub skipped: Skipped,
}

/// A source's stream of records: its reader, shuffled by blocks when asked.
pub struct Source {
    inner: Shuffled,
}

impl Source {
    fn new(reader: Box<dyn Reader>, shuffle: usize, seed: u64) -> Result<Self, DataError> {
        Ok(Self { inner: Shuffled::new(reader, shuffle, seed) })
    }

    /// The next record; `None` at the end of the epoch.
    pub fn next_record(&mut self) -> Option<Result<Record, DataError>> {
        self.inner.next_record()
    }

    /// Starts the next epoch from the first file (a new shuffle order).
    pub fn restart(&mut self) -> Result<(), DataError> {
        let epoch = self.inner.position().read.epoch + 1;
        self.inner.seek(&SourcePosition {
            read: ReadPosition { epoch, ..Default::default() },
            skipped: self.inner.skipped(),
            ..Default::default()
        })
    }

    pub fn position(&self) -> SourcePosition {
        self.inner.position()
    }

    /// Puts the stream where `at` says (what `position` returned, in an earlier process).
    pub fn seek(&mut self, at: &SourcePosition) -> Result<(), DataError> {
        self.inner.seek(at)
    }

    pub fn skipped(&self) -> Skipped {
        self.inner.skipped()
    }
}

/// Every record of one file of any format, in order (evaluation, calibration, tokenizer
/// training): an iterator.
pub struct FileRecords {
    source: Source,
}

impl FileRecords {
    pub fn open(path: &Path, policy: OnBadRecord) -> Result<Self, DataError> {
        Ok(Self { source: SourceSpec::file(path, policy)?.open()? })
    }

    pub fn skipped(&self) -> Skipped {
        self.source.skipped()
    }
}

impl Iterator for FileRecords {
    type Item = Result<Record, DataError>;

    fn next(&mut self) -> Option<Self::Item> {
        self.source.next_record()
    }
}

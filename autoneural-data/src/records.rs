//! Conversation records: the turns, the images (files or bytes carried by the data), the
//! task label. JSONL lines are read here, in the layouts of [`crate::layouts`]:
//!
//! - messages: `{"messages": [{"role": "user", "content": "<image>What is it?"},
//!   {"role": "assistant", "content": "A car."}], "images": ["img/1.png"], "task": "vqa"}`
//! - LLaVA / ShareGPT: `{"conversations": [{"from": "human", "value": "..."},
//!   {"from": "gpt", "value": "..."}], "image": "img/1.png"}`
//!
//! Image paths are relative to the JSONL file. Files are streamed line by line, so a large
//! set is never held whole. A bad line (malformed JSON, unknown role, missing image) is an
//! error naming the file and line; [`OnBadRecord::Skip`] counts and skips it instead.
//! Parquet and WebDataset sources ([`crate::sources`]) make the same records.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use autoneural_io::read::Line;
use autoneural_model::images::{LoadedImage, decode_image, load_image};
use serde_json::{Map, Value};

use crate::layouts::{IMAGE_TAG, Layout};

/// Who speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    System,
    User,
    Assistant,
}

impl Role {
    /// Both vocabularies: `system/user/assistant` and ShareGPT's `system/human/gpt`.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "system" => Some(Self::System),
            "user" | "human" => Some(Self::User),
            "assistant" | "gpt" | "model" => Some(Self::Assistant),
            _ => None,
        }
    }

    /// The name chat templates use.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::System => "system",
            Self::User => "user",
            Self::Assistant => "assistant",
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Message {
    pub role: Role,
    pub content: String,
}

/// An image of a record: a file, or encoded bytes the data carries.
#[derive(Debug, Clone, PartialEq)]
pub enum ImageRef {
    /// A file (a JSONL record's path, resolved against the file's directory).
    Path(PathBuf),
    /// PNG, JPEG or WebP bytes (a Parquet image cell, a WebDataset member); `name` says
    /// where they came from (`shard.parquet:12`, `shard.tar:key.png`).
    Bytes { name: String, data: Arc<[u8]> },
}

impl ImageRef {
    /// Decodes the image (see [`load_image`]).
    pub fn load(&self) -> autoneural_model::Result<LoadedImage> {
        match self {
            Self::Path(p) => load_image(p),
            Self::Bytes { name, data } => decode_image(data, Path::new(name)),
        }
    }
}

/// One training conversation.
#[derive(Debug, Clone, PartialEq)]
pub struct Record {
    pub messages: Vec<Message>,
    /// In `<image>` order.
    pub images: Vec<ImageRef>,
    /// Task family label (e.g. `vqa`, `document`), for mixtures and per-task metrics.
    pub task: Option<String>,
    /// 1-based position in its file: the line (JSONL), the row (Parquet), the sample
    /// (WebDataset).
    pub line: usize,
    /// What `line` counts: `line`, `row` or `sample`, for messages.
    pub unit: &'static str,
}

impl Record {
    /// Where the record is in its file, in its file's terms: `line 3`, `row 7`, `sample 2`.
    pub fn place(&self) -> String {
        format!("{} {}", self.unit, self.line)
    }

    /// The record a row describes in `layout`, with its images; a row's own string `task`
    /// wins over `task`. `<image>` tags must match the images (or be absent: the images
    /// then come before the first user text).
    pub fn from_row(
        row: &Map<String, Value>,
        layout: Layout,
        images: Vec<ImageRef>,
        task: Option<&str>,
        line: usize,
    ) -> Result<Self, String> {
        let messages = crate::layouts::messages(row, layout)?;
        let tags: usize = messages.iter().map(|m| m.content.matches(IMAGE_TAG).count()).sum();
        if tags != 0 && tags != images.len() {
            return Err(format!("{tags} `<image>` tags but {} images", images.len()));
        }
        let task = match row.get("task") {
            None | Some(Value::Null) => task.map(str::to_string),
            Some(Value::String(s)) => Some(s.clone()),
            Some(_) => return Err("`task` must be a string".into()),
        };
        Ok(Record { messages, images, task, line, unit: "line" })
    }
}

#[derive(Debug, thiserror::Error)]
pub enum DataError {
    #[error("{}: {source}", path.display())]
    Io { path: PathBuf, source: std::io::Error },
    /// Not a regular file, or unreadable.
    #[error(transparent)]
    File(#[from] autoneural_io::Error),
    #[error("{}:{line}: {message}", path.display())]
    Record { path: PathBuf, line: usize, message: String },
    /// A file that is not what its source says it is (not Parquet, a broken tar).
    #[error("{}: {message}", path.display())]
    Format { path: PathBuf, message: String },
}

/// What to do with a record that cannot be used.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum OnBadRecord {
    /// Stop with the error (the default).
    #[default]
    Fail,
    /// Skip it and count it.
    Skip,
}

/// Parses one JSONL line (`line` is 1-based) of a file in `dir`.
pub fn parse_record(text: &str, dir: &Path, path: &Path, line: usize) -> Result<Record, DataError> {
    parse_record_as(text, dir, path, line, Layout::Auto, None)
}

/// [`parse_record`] in a given layout, with a default task label.
pub fn parse_record_as(
    text: &str,
    dir: &Path,
    path: &Path,
    line: usize,
    layout: Layout,
    task: Option<&str>,
) -> Result<Record, DataError> {
    let err = |message: String| DataError::Record { path: path.to_path_buf(), line, message };
    let v: Value = serde_json::from_str(text).map_err(|e| err(format!("malformed JSON: {e}")))?;
    let obj = v.as_object().ok_or_else(|| err("expected a JSON object".into()))?;
    let images = image_paths(obj, dir).map_err(err)?;
    Record::from_row(obj, layout, images, task, line).map_err(err)
}

/// A JSONL record's images: `images` (a list of paths) or `image` (one), relative to `dir`;
/// each must exist.
fn image_paths(obj: &Map<String, Value>, dir: &Path) -> Result<Vec<ImageRef>, String> {
    let names: Vec<&str> = match (obj.get("images"), obj.get("image")) {
        (Some(Value::Array(a)), _) => {
            a.iter().map(|x| x.as_str().ok_or("`images` must hold path strings")).collect::<Result<_, _>>()?
        }
        (Some(_), _) => return Err("`images` must be a list of paths".into()),
        (None, Some(Value::String(s))) => vec![s.as_str()],
        (None, Some(_)) => return Err("`image` must be a path".into()),
        (None, None) => Vec::new(),
    };
    let paths: Vec<PathBuf> = names.iter().map(|p| dir.join(p)).collect();
    if let Some(missing) = paths.iter().find(|p| !p.is_file()) {
        return Err(format!("image {} does not exist", missing.display()));
    }
    Ok(paths.into_iter().map(ImageRef::Path).collect())
}

/// Streams the records of one JSONL file (blank lines are ignored). Only a regular file is
/// read, and no line is held beyond [`autoneural_io::read::LINE_LIMIT`] bytes: a line
/// longer than that is a bad record.
pub struct JsonlRecords {
    path: PathBuf,
    dir: PathBuf,
    lines: autoneural_io::read::Lines,
    policy: OnBadRecord,
    layout: Layout,
    task: Option<String>,
    /// Records skipped under [`OnBadRecord::Skip`].
    pub skipped: Skipped,
}

/// Records skipped under `on_bad_record = "skip"`: how many, and the first few reasons
/// (file, line, what was wrong) for the log and the run report. Bounded, however many
/// lines are bad.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Skipped {
    pub count: usize,
    pub first: Vec<String>,
}

impl Skipped {
    const SHOWN: usize = 5;

    pub fn add(&mut self, reason: impl std::fmt::Display) {
        self.count += 1;
        if self.first.len() < Self::SHOWN {
            self.first.push(reason.to_string());
        }
    }

    pub fn merge(&mut self, other: &Skipped) {
        self.count += other.count;
        for r in &other.first {
            if self.first.len() < Self::SHOWN && !self.first.contains(r) {
                self.first.push(r.clone());
            }
        }
    }
}

impl JsonlRecords {
    pub fn open(path: &Path, policy: OnBadRecord) -> Result<Self, DataError> {
        Self::open_as(path, policy, Layout::Auto, None)
    }

    /// Records of `layout`, labelled `task` unless a line says otherwise.
    pub fn open_as(path: &Path, policy: OnBadRecord, layout: Layout, task: Option<&str>) -> Result<Self, DataError> {
        Self::open_at(path, policy, layout, task, 0, 0)
    }

    /// [`Self::open_as`] from byte `offset`, where line `line + 1` starts (what
    /// [`Self::offset`] and [`Self::consumed`] said in an earlier process).
    pub fn open_at(
        path: &Path,
        policy: OnBadRecord,
        layout: Layout,
        task: Option<&str>,
        offset: u64,
        line: usize,
    ) -> Result<Self, DataError> {
        let lines = autoneural_io::read::Lines::open_at(path, autoneural_io::read::LINE_LIMIT, offset, line)?;
        let dir = path.parent().map(Path::to_path_buf).unwrap_or_default();
        Ok(Self {
            path: path.to_path_buf(),
            dir,
            lines,
            policy,
            layout,
            task: task.map(str::to_string),
            skipped: Skipped::default(),
        })
    }

    /// Lines read so far (blank and skipped ones included).
    pub fn consumed(&self) -> usize {
        self.lines.line
    }

    /// Where the next line starts, in bytes.
    pub fn offset(&self) -> u64 {
        self.lines.offset
    }
}

impl Iterator for JsonlRecords {
    type Item = Result<Record, DataError>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            let line = match self.lines.next()? {
                Ok(l) => l,
                Err(e) => return Some(Err(e.into())),
            };
            let n = self.lines.line;
            let parsed = match line {
                Line::Text(text) if text.trim().is_empty() => continue,
                Line::Text(text) => parse_record_as(&text, &self.dir, &self.path, n, self.layout, self.task.as_deref()),
                Line::Bad(message) => Err(DataError::Record { path: self.path.clone(), line: n, message }),
            };
            match parsed {
                Ok(r) => return Some(Ok(r)),
                Err(e) if self.policy == OnBadRecord::Skip => self.skipped.add(e),
                Err(e) => return Some(Err(e)),
            }
        }
    }
}

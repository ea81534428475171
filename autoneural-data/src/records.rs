//! Conversation records in JSONL, in the two shapes the field uses:
//!
//! - messages: `{"messages": [{"role": "user", "content": "<image>What is it?"},
//!   {"role": "assistant", "content": "A car."}], "images": ["img/1.png"], "task": "vqa"}`
//! - LLaVA / ShareGPT: `{"conversations": [{"from": "human", "value": "..."},
//!   {"from": "gpt", "value": "..."}], "image": "img/1.png"}`
//!
//! Image paths are relative to the JSONL file. Files are streamed line by line, so a large
//! set is never held whole. A bad line (malformed JSON, unknown role, missing image) is an
//! error naming the file and line; [`OnBadRecord::Skip`] counts and skips it instead.

use autoneural_io::read::Line;
use std::path::{Path, PathBuf};

use serde_json::Value;

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

/// One training conversation.
#[derive(Debug, Clone, PartialEq)]
pub struct Record {
    pub messages: Vec<Message>,
    /// Absolute (resolved against the JSONL file's directory), in `<image>` order.
    pub images: Vec<PathBuf>,
    /// Task family label (e.g. `vqa`, `document`), for mixtures and per-task metrics.
    pub task: Option<String>,
    /// 1-based line in its file.
    pub line: usize,
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
    let err = |message: String| DataError::Record { path: path.to_path_buf(), line, message };
    let v: Value = serde_json::from_str(text).map_err(|e| err(format!("malformed JSON: {e}")))?;
    let obj = v.as_object().ok_or_else(|| err("expected a JSON object".into()))?;
    let (list, role_key, content_key, field) = if let Some(m) = obj.get("messages") {
        (m, "role", "content", "messages")
    } else if let Some(c) = obj.get("conversations") {
        (c, "from", "value", "conversations")
    } else {
        return Err(err("no `messages` (role/content) or `conversations` (from/value) list".into()));
    };
    let items = list.as_array().ok_or_else(|| err(format!("`{field}` must be a list")))?;
    let mut messages = Vec::with_capacity(items.len());
    for (i, item) in items.iter().enumerate() {
        let role = item
            .get(role_key)
            .and_then(Value::as_str)
            .ok_or_else(|| err(format!("`{field}[{i}]` has no string `{role_key}`")))?;
        let role = Role::parse(role).ok_or_else(|| {
            err(format!("`{field}[{i}].{role_key}` is {role:?}; expected system, user/human or assistant/gpt"))
        })?;
        let content = item
            .get(content_key)
            .and_then(Value::as_str)
            .ok_or_else(|| err(format!("`{field}[{i}]` has no string `{content_key}`")))?;
        messages.push(Message { role, content: content.to_string() });
    }
    if !messages.iter().any(|m| m.role == Role::Assistant) {
        return Err(err("no assistant turn: nothing to learn from".into()));
    }
    let images: Vec<&str> = match (obj.get("images"), obj.get("image")) {
        (Some(Value::Array(a)), _) => a
            .iter()
            .map(|x| x.as_str().ok_or_else(|| err("`images` must hold path strings".into())))
            .collect::<Result<_, _>>()?,
        (Some(_), _) => return Err(err("`images` must be a list of paths".into())),
        (None, Some(Value::String(s))) => vec![s.as_str()],
        (None, Some(_)) => return Err(err("`image` must be a path".into())),
        (None, None) => Vec::new(),
    };
    let images: Vec<PathBuf> = images.iter().map(|p| dir.join(p)).collect();
    if let Some(missing) = images.iter().find(|p| !p.is_file()) {
        return Err(err(format!("image {} does not exist", missing.display())));
    }
    let tags: usize = messages.iter().map(|m| m.content.matches("<image>").count()).sum();
    if tags != 0 && tags != images.len() {
        return Err(err(format!("{tags} `<image>` tags but {} images", images.len())));
    }
    let task = match obj.get("task") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => Some(s.clone()),
        Some(_) => return Err(err("`task` must be a string".into())),
    };
    Ok(Record { messages, images, task, line })
}

/// Streams the records of one JSONL file (blank lines are ignored). Only a regular file is
/// read, and no line is held beyond [`autoneural_io::read::LINE_LIMIT`] bytes: a line
/// longer than that is a bad record.
pub struct JsonlRecords {
    path: PathBuf,
    dir: PathBuf,
    lines: autoneural_io::read::Lines,
    policy: OnBadRecord,
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
        let lines = autoneural_io::read::Lines::open(path, autoneural_io::read::LINE_LIMIT)?;
        let dir = path.parent().map(Path::to_path_buf).unwrap_or_default();
        Ok(Self { path: path.to_path_buf(), dir, lines, policy, skipped: Skipped::default() })
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
                Line::Text(text) => parse_record(&text, &self.dir, &self.path, n),
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

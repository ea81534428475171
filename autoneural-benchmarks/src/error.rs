use std::fmt;
use std::path::{Path, PathBuf};

/// What went wrong with a benchmark file: the file, and where known the 1-based data row
/// (the header is row 0) and the column.
#[derive(Debug)]
pub struct Error {
    pub path: PathBuf,
    pub row: Option<u64>,
    pub column: Option<String>,
    pub message: String,
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub fn file(path: &Path, message: impl Into<String>) -> Self {
        Self { path: path.to_path_buf(), row: None, column: None, message: message.into() }
    }

    pub fn row(path: &Path, row: u64, message: impl Into<String>) -> Self {
        Self { path: path.to_path_buf(), row: Some(row), column: None, message: message.into() }
    }

    pub fn cell(path: &Path, row: u64, column: &str, message: impl Into<String>) -> Self {
        Self { path: path.to_path_buf(), row: Some(row), column: Some(column.to_string()), message: message.into() }
    }

    pub fn io(path: &Path, e: std::io::Error) -> Self {
        Self::file(path, e.to_string())
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.path.display())?;
        if let Some(r) = self.row {
            write!(f, ": row {r}")?;
        }
        if let Some(c) = &self.column {
            write!(f, ", column `{c}`")?;
        }
        write!(f, ": {}", self.message)
    }
}

impl std::error::Error for Error {}

impl From<autoneural_io::Error> for Error {
    fn from(e: autoneural_io::Error) -> Self {
        let path = match &e {
            autoneural_io::Error::Io { path, .. }
            | autoneural_io::Error::NotRegular { path, .. }
            | autoneural_io::Error::TooLarge { path, .. }
            | autoneural_io::Error::Refused { path, .. }
            | autoneural_io::Error::Locked { path, .. }
            | autoneural_io::Error::Corrupt { path, .. } => path.clone(),
        };
        let message = e.to_string();
        let prefix = format!("{}: ", path.display());
        let message = message.strip_prefix(&prefix).map(str::to_string).unwrap_or(message);
        Self { path, row: None, column: None, message }
    }
}

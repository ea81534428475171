//! Errors that name the file, the key and what was expected.

use std::fmt;
use std::path::PathBuf;

pub type Result<T, E = ModelError> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    #[error("{}: {source}", path.display())]
    Io { path: PathBuf, source: std::io::Error },
    #[error("{}: malformed JSON: {source}", path.display())]
    Json { path: PathBuf, source: serde_json::Error },
    #[error("{}: field `{field}`: {message}", path.display())]
    Config { path: PathBuf, field: String, message: String },
    #[error("{}: {message}", path.display())]
    Weights { path: PathBuf, message: String },
    #[error("checkpoint {} does not fit the model it describes:\n{report}", dir.display())]
    Checkpoint { dir: PathBuf, report: KeyReport },
    #[error("{}: tokenizer: {message}", path.display())]
    Tokenizer { path: PathBuf, message: String },
    #[error("{}: chat template: {message}", path.display())]
    Template { path: PathBuf, message: String },
    #[error("{}: {message}", path.display())]
    Image { path: PathBuf, message: String },
    #[error("{0}")]
    Invalid(String),
    /// A file that is not a regular file, too large, or corrupt (see `autoneural_io::read`).
    #[error(transparent)]
    File(#[from] autoneural_io::Error),
}

impl ModelError {
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Self::Io { path: path.into(), source }
    }
    pub fn config(path: impl Into<PathBuf>, field: impl Into<String>, message: impl Into<String>) -> Self {
        Self::Config { path: path.into(), field: field.into(), message: message.into() }
    }
}

/// Every way a checkpoint's tensors can disagree with the model, listed in full.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct KeyReport {
    /// Keys the model needs that no file provides.
    pub missing: Vec<String>,
    /// Keys in the files that the model has no place for.
    pub unexpected: Vec<String>,
    /// Keys present with the wrong shape: (key, expected, found), in checkpoint order.
    pub mismatched: Vec<(String, Vec<usize>, Vec<usize>)>,
}

impl KeyReport {
    pub fn is_empty(&self) -> bool {
        self.missing.is_empty() && self.unexpected.is_empty() && self.mismatched.is_empty()
    }
}

/// Lines shown per kind of problem; a config that is wrong everywhere (a million layers)
/// gives a readable report, with the count of the rest.
const SHOWN: usize = 24;

impl fmt::Display for KeyReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let more = |f: &mut fmt::Formatter<'_>, n: usize, what: &str| {
            if n > SHOWN { writeln!(f, "  ... and {} more {what}", n - SHOWN) } else { Ok(()) }
        };
        for key in self.missing.iter().take(SHOWN) {
            writeln!(f, "  missing key: {key}")?;
        }
        more(f, self.missing.len(), "missing keys")?;
        for (key, expected, found) in self.mismatched.iter().take(SHOWN) {
            writeln!(f, "  wrong shape: {key}: expected {expected:?}, found {found:?}")?;
        }
        more(f, self.mismatched.len(), "wrong shapes")?;
        for key in self.unexpected.iter().take(SHOWN) {
            writeln!(f, "  unexpected key: {key}")?;
        }
        more(f, self.unexpected.len(), "unexpected keys")
    }
}

#[cfg(test)]
mod tests {
    use super::KeyReport;

    #[test]
    fn a_report_of_a_million_keys_stays_readable() {
        let report =
            KeyReport { missing: (0..1_000_000).map(|i| format!("layers.{i}.w")).collect(), ..Default::default() };
        let text = report.to_string();
        assert_eq!(text.lines().count(), 25);
        assert!(text.ends_with("  ... and 999976 more missing keys\n"), "{text}");
    }
}

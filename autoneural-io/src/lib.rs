//! The files AutoNeural touches, handled so that a user's work is never lost and no input
//! exhausts the machine (docs/reliability.md):
//!
//! - [`output`]: every directory a command writes is marked as its own (which command, from
//!   which inputs, which files); a directory it did not create, or created from other
//!   inputs, is refused unless the user says `--force`, and a rewrite removes only the
//!   files the earlier one wrote.
//! - [`lock`]: one process at a time per output or run directory.
//! - [`checksum`]: SHA-256 of a checkpoint's files, so corruption is named at load.
//! - [`memory`]: what the process may allocate, so a model too large for it is refused
//!   before allocation.
//! - [`read`]: user files are read only when they are regular files under a size limit,
//!   and text lines only up to a length limit.

pub mod checksum;
pub mod lock;
pub mod memory;
pub mod output;
pub mod read;

use std::path::PathBuf;

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{}: {source}", path.display())]
    Io { path: PathBuf, source: std::io::Error },
    /// A device, FIFO, directory or socket where a file was expected (a symlink to
    /// `/dev/zero` would otherwise be read forever).
    #[error("{}: not a regular file (it is {kind}), where {what} was expected", path.display())]
    NotRegular { path: PathBuf, kind: &'static str, what: &'static str },
    #[error("{}: {size} bytes, more than the {limit} that {what} may have", path.display())]
    TooLarge { path: PathBuf, size: u64, limit: u64, what: &'static str },
    /// An output directory that is not this command's to write.
    #[error("{}: {message}", path.display())]
    Refused { path: PathBuf, message: String },
    #[error("{}: {message}", path.display())]
    Locked { path: PathBuf, message: String },
    #[error("{}: {message}", path.display())]
    Corrupt { path: PathBuf, message: String },
}

impl Error {
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Self::Io { path: path.into(), source }
    }
}

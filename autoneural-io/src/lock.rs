//! One writer per directory: an advisory lock (`flock`) on the directory itself, held for
//! as long as the [`DirLock`] lives. The kernel drops it when the process ends, however it
//! ends (a `kill -9` leaves no stale lock to clean up), and no lock file is left behind.

use std::fs::{File, TryLockError};
use std::path::{Path, PathBuf};

use crate::{Error, Result};

/// Held while a process writes into `path`.
#[derive(Debug)]
pub struct DirLock {
    path: PathBuf,
    _handle: File,
}

impl DirLock {
    /// Locks `dir` (which must exist) or says who holds it: `holder` describes the other
    /// process when the caller knows it (e.g. the pid its marker records).
    pub fn acquire(dir: &Path, holder: impl FnOnce() -> Option<String>) -> Result<Self> {
        let handle = File::open(dir).map_err(|e| Error::io(dir, e))?;
        match handle.try_lock() {
            Ok(()) => Ok(Self { path: dir.into(), _handle: handle }),
            Err(TryLockError::WouldBlock) => {
                let who = holder().map(|h| format!(" ({h})")).unwrap_or_default();
                Err(Error::Locked {
                    path: dir.into(),
                    message: format!(
                        "another autoneural process is writing here{who}; wait for it to finish or stop it \
                         (two writers would corrupt each other's files)"
                    ),
                })
            }
            // A file system without locks (some network mounts): go on unlocked rather
            // than refuse to work at all.
            Err(TryLockError::Error(e)) if e.kind() == std::io::ErrorKind::Unsupported => {
                Ok(Self { path: dir.into(), _handle: handle })
            }
            Err(TryLockError::Error(e)) => Err(Error::io(dir, e)),
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_lock_is_refused_until_the_first_is_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let first = DirLock::acquire(dir.path(), || None).unwrap();
        let err = DirLock::acquire(dir.path(), || Some("pid 42".into())).unwrap_err().to_string();
        assert!(err.contains("another autoneural process is writing here (pid 42)"), "{err}");
        drop(first);
        DirLock::acquire(dir.path(), || None).unwrap();
    }
}

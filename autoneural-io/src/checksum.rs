//! `checksums.json`: the SHA-256 of every file of a directory (a training checkpoint), so a
//! file damaged on disk or in a copy is named as corrupt when it is loaded, rather than
//! surfacing steps later as a NaN. The digests are those `sha256sum` prints.

use std::collections::BTreeMap;
use std::io::Read;
use std::path::Path;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::{Error, Result};

pub const FILE: &str = "checksums.json";

#[derive(Debug, Serialize, Deserialize)]
struct Checksums {
    algorithm: String,
    /// File name -> lowercase hex digest.
    files: BTreeMap<String, String>,
}

/// The SHA-256 of a file, as lowercase hex, read in 1 MiB chunks.
pub fn sha256(path: &Path) -> Result<String> {
    let (mut file, _) = crate::read::open(path, crate::read::WEIGHTS)?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = file.read(&mut buf).map_err(|e| Error::io(path, e))?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok(hasher.finalize().iter().map(|b| format!("{b:02x}")).collect())
}

/// Writes `dir/checksums.json` over every regular file directly in `dir`.
pub fn write(dir: &Path) -> Result<()> {
    let mut files = BTreeMap::new();
    for entry in std::fs::read_dir(dir).map_err(|e| Error::io(dir, e))? {
        let entry = entry.map_err(|e| Error::io(dir, e))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if name == FILE || !entry.file_type().map_err(|e| Error::io(entry.path(), e))?.is_file() {
            continue;
        }
        files.insert(name, sha256(&entry.path())?);
    }
    let text =
        serde_json::to_string_pretty(&Checksums { algorithm: "sha256".into(), files }).expect("checksums serialize");
    let path = dir.join(FILE);
    std::fs::write(&path, text).map_err(|e| Error::io(&path, e))
}

/// Whether `dir` had checksums to check.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verified {
    /// Every file listed matches.
    Yes,
    /// No `checksums.json` (written before checksums existed).
    NoChecksums,
}

/// Checks every file `dir/checksums.json` lists; a missing or changed one is an error
/// naming it.
pub fn verify(dir: &Path) -> Result<Verified> {
    let path = dir.join(FILE);
    if !path.exists() {
        return Ok(Verified::NoChecksums);
    }
    let text = crate::read::read_to_string(&path, crate::read::CONFIG)?;
    let sums: Checksums = serde_json::from_str(&text)
        .map_err(|e| Error::Corrupt { path: path.clone(), message: format!("unreadable checksums: {e}") })?;
    if sums.algorithm != "sha256" {
        return Err(Error::Corrupt { path, message: format!("unknown algorithm {:?}", sums.algorithm) });
    }
    for (name, want) in &sums.files {
        let file = dir.join(name);
        if !file.is_file() {
            return Err(Error::Corrupt { path: file, message: format!("missing (listed in {FILE})") });
        }
        let found = sha256(&file)?;
        if &found != want {
            return Err(Error::Corrupt {
                path: file,
                message: format!("corrupt: its SHA-256 is {found}, {FILE} recorded {want} when it was written"),
            });
        }
    }
    Ok(Verified::Yes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_changed_byte_is_named() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("a.bin"), b"abc").unwrap();
        std::fs::write(dir.path().join("b.json"), b"{}").unwrap();
        assert_eq!(verify(dir.path()).unwrap(), Verified::NoChecksums);
        write(dir.path()).unwrap();
        assert_eq!(verify(dir.path()).unwrap(), Verified::Yes);
        // sha256("abc"), as sha256sum prints it
        let text = std::fs::read_to_string(dir.path().join(FILE)).unwrap();
        assert!(text.contains("ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"), "{text}");
        std::fs::write(dir.path().join("a.bin"), b"abd").unwrap();
        let err = verify(dir.path()).unwrap_err().to_string();
        assert!(err.contains("a.bin: corrupt"), "{err}");
        std::fs::remove_file(dir.path().join("a.bin")).unwrap();
        let err = verify(dir.path()).unwrap_err().to_string();
        assert!(err.contains("a.bin: missing"), "{err}");
    }
}

//! Reading user files with bounds: only regular files (a symlink to one is fine; a device,
//! FIFO or directory is refused before any read), never more bytes than the kind of file
//! may hold, and text lines no longer than a limit (a JSONL file without newlines is not
//! read into memory whole).

use std::fs::{File, Metadata};
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};

use crate::{Error, Result};

/// A kind of file: its name in messages (with its article) and the most bytes it may have.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Kind {
    pub what: &'static str,
    pub limit: u64,
}

const MIB: u64 = 1 << 20;

/// `config.json`, `tokenizer_config.json`, experiment and recipe TOML, policies, manifests.
pub const CONFIG: Kind = Kind { what: "a config file", limit: 64 * MIB };
/// `tokenizer.json` (a 256K vocabulary with its merges is ~30 MB).
pub const TOKENIZER: Kind = Kind { what: "a tokenizer file", limit: 1024 * MIB };
/// An encoded image (PNG, JPEG, WebP); its pixel count is bounded separately.
pub const IMAGE: Kind = Kind { what: "an image file", limit: 256 * MIB };
/// `quantization.json`: per-block scales of every weight (a few hundred MB at 1B parameters).
pub const QUANTIZATION: Kind = Kind { what: "a quantization file", limit: 8192 * MIB };
/// Weights and other memory-mapped files: any size, but a regular file.
pub const WEIGHTS: Kind = Kind { what: "a weights file", limit: u64::MAX };
/// Data read line by line (JSONL): any size, streamed, but a regular file.
pub const DATA: Kind = Kind { what: "a data file", limit: u64::MAX };
/// A JSONL line (one conversation).
pub const LINE_LIMIT: usize = 64 << 20;

fn kind_of(meta: &Metadata) -> &'static str {
    let t = meta.file_type();
    #[cfg(unix)]
    {
        use std::os::unix::fs::FileTypeExt;
        if t.is_char_device() {
            return "a character device";
        }
        if t.is_block_device() {
            return "a block device";
        }
        if t.is_fifo() {
            return "a FIFO";
        }
        if t.is_socket() {
            return "a socket";
        }
    }
    if t.is_dir() { "a directory" } else { "not a file" }
}

/// The metadata of `path` (symlinks followed) when it is a regular file of `kind`'s size.
pub fn check(path: &Path, kind: Kind) -> Result<Metadata> {
    let meta = std::fs::metadata(path).map_err(|e| Error::io(path, e))?;
    check_meta(path, &meta, kind)?;
    Ok(meta)
}

fn check_meta(path: &Path, meta: &Metadata, kind: Kind) -> Result<()> {
    if !meta.is_file() {
        return Err(Error::NotRegular { path: path.into(), kind: kind_of(meta), what: kind.what });
    }
    if meta.len() > kind.limit {
        return Err(Error::TooLarge { path: path.into(), size: meta.len(), limit: kind.limit, what: kind.what });
    }
    Ok(())
}

/// Opens a regular file of `kind` (checked again on the open handle, so a path swapped
/// between the check and the open is caught). Returns the file and its length.
pub fn open(path: &Path, kind: Kind) -> Result<(File, u64)> {
    check(path, kind)?;
    let file = File::open(path).map_err(|e| Error::io(path, e))?;
    let meta = file.metadata().map_err(|e| Error::io(path, e))?;
    check_meta(path, &meta, kind)?;
    Ok((file, meta.len()))
}

/// The whole file, at most `kind.limit` bytes (a file that grows while read is cut there
/// and refused).
pub fn read(path: &Path, kind: Kind) -> Result<Vec<u8>> {
    let (file, len) = open(path, kind)?;
    let mut out = Vec::with_capacity(len as usize);
    file.take(kind.limit.saturating_add(1)).read_to_end(&mut out).map_err(|e| Error::io(path, e))?;
    if out.len() as u64 > kind.limit {
        return Err(Error::TooLarge { path: path.into(), size: out.len() as u64, limit: kind.limit, what: kind.what });
    }
    Ok(out)
}

/// The whole file as UTF-8 text.
pub fn read_to_string(path: &Path, kind: Kind) -> Result<String> {
    String::from_utf8(read(path, kind)?).map_err(|e| {
        Error::io(path, std::io::Error::new(std::io::ErrorKind::InvalidData, format!("not UTF-8 text: {e}")))
    })
}

/// One line of a text file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Line {
    Text(String),
    /// A line that cannot be a record: longer than the limit (skipped unread to its end),
    /// or not UTF-8. The message says which.
    Bad(String),
}

/// The lines of a file, each at most `limit` bytes held in memory.
pub struct Lines {
    path: PathBuf,
    reader: BufReader<File>,
    limit: usize,
    /// 1-based number of the last line returned.
    pub line: usize,
    /// Bytes consumed: where the next line starts.
    pub offset: u64,
}

impl Lines {
    /// The lines of the regular file `path`.
    pub fn open(path: &Path, limit: usize) -> Result<Self> {
        Self::open_at(path, limit, 0, 0)
    }

    /// The lines of `path` from byte `offset`, the start of line `line + 1` (a reader
    /// returning to a place it recorded, without reading what comes before).
    pub fn open_at(path: &Path, limit: usize, offset: u64, line: usize) -> Result<Self> {
        use std::io::{Seek, SeekFrom};
        let (mut file, size) = open(path, DATA)?;
        if offset > size {
            return Err(Error::io(
                path,
                std::io::Error::new(
                    std::io::ErrorKind::UnexpectedEof,
                    format!("byte {offset} is past the end of the file ({size} bytes): was it changed?"),
                ),
            ));
        }
        file.seek(SeekFrom::Start(offset)).map_err(|e| Error::io(path, e))?;
        Ok(Self { path: path.into(), reader: BufReader::with_capacity(1 << 16, file), limit, line, offset })
    }
}

impl Iterator for Lines {
    type Item = Result<Line>;

    fn next(&mut self) -> Option<Self::Item> {
        let mut buf = Vec::new();
        let mut total = 0usize;
        let mut any = false;
        loop {
            let chunk = match self.reader.fill_buf() {
                Ok(c) => c,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => return Some(Err(Error::io(&self.path, e))),
            };
            if chunk.is_empty() {
                if !any {
                    return None;
                }
                break;
            }
            any = true;
            let (take, end) = match chunk.iter().position(|&b| b == b'\n') {
                Some(i) => (i, true),
                None => (chunk.len(), false),
            };
            if total + take <= self.limit {
                buf.extend_from_slice(&chunk[..take]);
            }
            total += take;
            self.reader.consume(take + usize::from(end));
            self.offset += (take + usize::from(end)) as u64;
            if end {
                break;
            }
        }
        self.line += 1;
        if total > self.limit {
            return Some(Ok(Line::Bad(format!("line is {total} bytes long, more than the limit of {}", self.limit))));
        }
        if buf.last() == Some(&b'\r') {
            buf.pop();
        }
        Some(Ok(match String::from_utf8(buf) {
            Ok(s) => Line::Text(s),
            Err(e) => Line::Bad(format!("not UTF-8 text: {e}")),
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn devices_and_directories_are_refused_before_reading() {
        let err = read(Path::new("/dev/zero"), CONFIG).unwrap_err().to_string();
        assert!(err.contains("/dev/zero: not a regular file (it is a character device)"), "{err}");
        let dir = tempfile::tempdir().unwrap();
        let link = dir.path().join("config.json");
        #[cfg(unix)]
        {
            std::os::unix::fs::symlink("/dev/zero", &link).unwrap();
            let err = read_to_string(&link, CONFIG).unwrap_err().to_string();
            assert!(err.contains("config.json: not a regular file") && err.contains("config file"), "{err}");
        }
        let err = read(dir.path(), CONFIG).unwrap_err().to_string();
        assert!(err.contains("a directory"), "{err}");
    }

    #[test]
    fn size_limits_are_checked_before_reading() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("big");
        std::fs::write(&p, vec![b'x'; 100]).unwrap();
        let kind = Kind { what: "a test file", limit: 99 };
        let err = read(&p, kind).unwrap_err().to_string();
        assert!(err.contains("100 bytes, more than the 99 that a test file may have"), "{err}");
        assert_eq!(read(&p, Kind { what: "t", limit: 100 }).unwrap().len(), 100);
    }

    #[test]
    fn long_lines_are_skipped_without_holding_them() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("a.jsonl");
        let mut text = b"first\r\n".to_vec();
        text.extend(vec![b'y'; 5000]);
        text.extend(b"\n\xff\xfe\nlast");
        std::fs::write(&p, text).unwrap();
        let lines: Vec<Line> = Lines::open(&p, 100).unwrap().map(|l| l.unwrap()).collect();
        assert_eq!(lines[0], Line::Text("first".into()));
        assert!(matches!(&lines[1], Line::Bad(m) if m.contains("5000 bytes")), "{:?}", lines[1]);
        assert!(matches!(&lines[2], Line::Bad(m) if m.contains("UTF-8")));
        assert_eq!(lines[3], Line::Text("last".into()));
        assert_eq!(lines.len(), 4);
    }
}

//! WebDataset tar shards, streamed: consecutive members that share a key (the member path up
//! to the first dot of its file name: `000123.json`, `000123.jpg`) are one sample. The
//! sample's `.json` member is the row (in any layout of [`crate::layouts`]); its `.jpg`,
//! `.jpeg`, `.png` and `.webp` members are its images, numbered ones in number order
//! (`0.png`, `1.png`, ..., `10.png`). A position is the byte offset where a sample's first header starts, so a
//! resumed reader opens the shard there and reads on.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{BufReader, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde_json::Value;

use super::files::{FileStream, FilesReader, RowRules};
use crate::layouts::Layout;
use crate::records::{DataError, ImageRef, Record};

const IMAGE_EXTENSIONS: [&str; 4] = ["jpg", "jpeg", "png", "webp"];

/// One member read whole: the sample key, the extension (lower-case), the bytes, and the
/// byte offset where the member's headers begin.
struct Member {
    key: String,
    extension: String,
    data: Vec<u8>,
    start: u64,
}

/// The members of one sample, and where it started.
pub struct Sample {
    pub key: String,
    /// Extension -> bytes, in extension order.
    pub members: BTreeMap<String, Vec<u8>>,
    pub start: u64,
}

/// One shard's samples in order. The tar stream is read header by header (ustar, GNU long
/// names, pax `path` records), so a reader can start at any header a position recorded.
pub struct TarSamples {
    path: PathBuf,
    file: BufReader<File>,
    /// Where the next header starts.
    end: u64,
    /// A member read ahead: the first of the next sample.
    pending: Option<Member>,
    /// Samples returned so far, counted from the file's start.
    pub samples: u64,
    done: bool,
}

impl TarSamples {
    /// Opens `path` at byte `offset` (a sample's start, or 0), `samples` samples before it.
    pub fn open(path: &Path, offset: u64, samples: u64) -> Result<Self, DataError> {
        let (mut file, size) = autoneural_io::read::open(path, autoneural_io::read::DATA)?;
        if offset > size || offset % 512 != 0 {
            return Err(DataError::Format {
                path: path.to_path_buf(),
                message: format!("byte {offset} is not a member's start in this {size}-byte shard: was it changed?"),
            });
        }
        file.seek(SeekFrom::Start(offset)).map_err(|source| DataError::Io { path: path.to_path_buf(), source })?;
        Ok(Self {
            path: path.to_path_buf(),
            file: BufReader::with_capacity(1 << 16, file),
            end: offset,
            pending: None,
            samples,
            done: false,
        })
    }

    fn error(&self, message: impl std::fmt::Display) -> DataError {
        DataError::Format {
            path: self.path.clone(),
            message: format!("not a tar shard this reader can read: {message}"),
        }
    }

    /// Reads `n` bytes of member data and the padding to the next 512-byte block.
    fn read_data(&mut self, n: u64, what: &str) -> Result<Vec<u8>, DataError> {
        let mut data = Vec::with_capacity(n as usize);
        (&mut self.file).take(n).read_to_end(&mut data).map_err(|e| self.error(format!("member {what}: {e}")))?;
        if (data.len() as u64) < n {
            return Err(self.error(format!("member {what} is cut short (truncated shard?)")));
        }
        let pad = n.next_multiple_of(512) - n;
        let padded = std::io::copy(&mut (&mut self.file).take(pad), &mut std::io::sink())
            .map_err(|e| self.error(format!("member {what}: {e}")))?;
        if padded < pad {
            return Err(self.error(format!("member {what} is cut short (truncated shard?)")));
        }
        self.end += 512 + n.next_multiple_of(512);
        Ok(data)
    }

    /// The next regular-file member, read whole.
    fn next_member(&mut self) -> Result<Option<Member>, DataError> {
        let start = self.end;
        let mut long_name: Option<String> = None;
        loop {
            if self.done {
                return Ok(None);
            }
            let mut block = [0u8; 512];
            let mut filled = 0;
            while filled < 512 {
                match self.file.read(&mut block[filled..]) {
                    Ok(0) => break,
                    Ok(n) => filled += n,
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                    Err(e) => return Err(self.error(e)),
                }
            }
            match filled {
                // A shard that ends without the two zero blocks ends all the same.
                0 => {
                    self.done = true;
                    return Ok(None);
                }
                512 => {}
                _ => return Err(self.error(format!("a header at byte {} is cut short (truncated shard?)", self.end))),
            }
            if block.iter().all(|&b| b == 0) {
                self.done = true;
                return Ok(None);
            }
            let header = tar::Header::from_byte_slice(&block);
            let sum: u32 =
                block.iter().enumerate().map(|(i, &b)| if (148..156).contains(&i) { 32 } else { u32::from(b) }).sum();
            if header.cksum().map_err(|e| self.error(e))? != sum {
                return Err(self.error(format!("bad header checksum at byte {}", self.end)));
            }
            let size = header.entry_size().map_err(|e| self.error(e))?;
            let kind = header.entry_type();
            let name = || -> String { String::from_utf8_lossy(&header.path_bytes()).into_owned() };
            // Names and pax records are small; a member is bounded by its kind below.
            if kind.is_gnu_longname() || kind.is_pax_local_extensions() {
                if size > 1 << 20 {
                    return Err(self.error(format!("a {size}-byte name record")));
                }
                let data = self.read_data(size, "name record")?;
                long_name = if kind.is_gnu_longname() {
                    Some(String::from_utf8_lossy(&data).trim_end_matches('\0').to_string())
                } else {
                    pax_path(&data).or(long_name)
                };
                continue;
            }
            let name = long_name.take().unwrap_or_else(name);
            if !(kind.is_file() || kind.is_contiguous()) {
                self.read_data(size, &name)?;
                continue;
            }
            let (key, extension) = split_key(&name);
            let limit = if IMAGE_EXTENSIONS.iter().any(|i| extension == *i || extension.ends_with(&format!(".{i}"))) {
                autoneural_io::read::IMAGE.limit
            } else {
                autoneural_io::read::CONFIG.limit
            };
            if size > limit {
                return Err(self.error(format!("member {name} is {size} bytes, more than the limit of {limit}")));
            }
            let data = self.read_data(size, &name)?;
            return Ok(Some(Member { key, extension, data, start }));
        }
    }

    /// The next sample: the members up to the first of another key.
    pub fn next_sample(&mut self) -> Result<Option<Sample>, DataError> {
        let first = match self.pending.take() {
            Some(m) => m,
            None => match self.next_member()? {
                Some(m) => m,
                None => return Ok(None),
            },
        };
        let mut sample = Sample { key: first.key.clone(), members: BTreeMap::new(), start: first.start };
        sample.members.insert(first.extension, first.data);
        while let Some(m) = self.next_member()? {
            if m.key != sample.key {
                self.pending = Some(m);
                break;
            }
            if sample.members.insert(m.extension.clone(), m.data).is_some() {
                return Err(self.error(format!("sample {} has two .{} members", sample.key, m.extension)));
            }
        }
        self.samples += 1;
        Ok(Some(sample))
    }

    /// Where the next sample starts.
    pub fn offset(&self) -> u64 {
        self.pending.as_ref().map_or(self.end, |m| m.start)
    }
}

/// Samples in a shard: runs of members with one key, read from the headers alone (member
/// data is seeked over).
pub fn count_samples(path: &Path) -> Result<u64, DataError> {
    let error = |e: std::io::Error| DataError::Format {
        path: path.to_path_buf(),
        message: format!("not a tar shard this reader can read: {e}"),
    };
    let (file, _) = autoneural_io::read::open(path, autoneural_io::read::DATA)?;
    let mut archive = tar::Archive::new(BufReader::new(file));
    let (mut n, mut last) = (0, None::<String>);
    for entry in archive.entries_with_seek().map_err(error)? {
        let entry = entry.map_err(error)?;
        if !entry.header().entry_type().is_file() {
            continue;
        }
        let name = entry.path().map_err(error)?.to_string_lossy().into_owned();
        let (key, _) = split_key(&name);
        if last.as_deref() != Some(key.as_str()) {
            n += 1;
            last = Some(key);
        }
    }
    Ok(n)
}

/// The `path` of a pax extended header's records (`"<len> path=<name>\n"`).
fn pax_path(data: &[u8]) -> Option<String> {
    let text = String::from_utf8_lossy(data);
    text.lines().find_map(|l| l.split_once(' ').and_then(|(_, kv)| kv.strip_prefix("path=")).map(str::to_string))
}

/// WebDataset's rule: the key is the path up to the first dot of the file name; the rest,
/// lower-cased, is the extension.
fn split_key(name: &str) -> (String, String) {
    let file_start = name.rfind('/').map_or(0, |i| i + 1);
    match name[file_start..].find('.') {
        Some(dot) => (name[..file_start + dot].to_string(), name[file_start + dot + 1..].to_lowercase()),
        None => (name.to_string(), String::new()),
    }
}

/// The record of `sample`: its `.json` row with its images.
fn record_of(sample: Sample, shard: &Path, layout: Layout, task: Option<&str>, line: usize) -> Result<Record, String> {
    let json = sample.members.get("json").ok_or_else(|| format!("sample {} has no .json member", sample.key))?;
    let row: Value = serde_json::from_slice(json).map_err(|e| format!("{}.json is not JSON: {e}", sample.key))?;
    let row = row.as_object().ok_or_else(|| format!("{}.json is not a JSON object", sample.key))?;
    let mut images: Vec<(&String, &Vec<u8>)> = sample
        .members
        .iter()
        .filter(|(ext, _)| IMAGE_EXTENSIONS.iter().any(|i| ext.as_str() == *i || ext.ends_with(&format!(".{i}"))))
        .collect();
    // `key.2.png` before `key.10.png`: numbered images in their numbers' order.
    images.sort_by_key(|(ext, _)| (ext.split('.').next().and_then(|n| n.parse::<u64>().ok()), ext.to_string()));
    let images = images
        .into_iter()
        .map(|(ext, data)| ImageRef::Bytes {
            name: format!("{}:{}.{ext}", shard.display(), sample.key),
            data: Arc::from(data.as_slice()),
        })
        .collect();
    Record::from_row(row, layout, images, task, line).map(|r| Record { unit: "sample", ..r })
}

/// A source's shards as one stream of records.
pub type TarReader = FilesReader<TarSamples>;

/// A position is the byte offset of the next member and the samples before it.
impl FileStream for TarSamples {
    fn open(path: &Path, _: &RowRules, offset: u64, samples: u64) -> Result<Self, DataError> {
        TarSamples::open(path, offset, samples)
    }

    fn next(&mut self, path: &Path, rules: &RowRules) -> Option<Result<Record, DataError>> {
        let sample = match self.next_sample() {
            Ok(Some(s)) => s,
            Ok(None) => return None,
            Err(e) => return Some(Err(e)),
        };
        let line = self.samples as usize;
        Some(record_of(sample, path, rules.layout, rules.task.as_deref(), line).map_err(|message| DataError::Record {
            path: path.to_path_buf(),
            line,
            message,
        }))
    }

    fn position(&self) -> (u64, u64) {
        (self.offset(), self.samples)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_split_at_the_first_dot_of_the_file_name() {
        assert_eq!(split_key("shard/00012.json"), ("shard/00012".into(), "json".into()));
        assert_eq!(split_key("a.b/00012.0.PNG"), ("a.b/00012".into(), "0.png".into()));
        assert_eq!(split_key("plain"), ("plain".into(), String::new()));
    }
}

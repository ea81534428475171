//! A source's files as one stream, whatever their format: the files in order, each opened
//! when the reader reaches it, bad records skipped or returned as the source's policy says,
//! and a position (epoch, file, the format's place in it) to seek back to.

use std::path::{Path, PathBuf};

use super::{ReadPosition, Reader, SourceSpec};
use crate::layouts::Layout;
use crate::records::{DataError, OnBadRecord, Record, Skipped};

/// How a source's records are read from a row, in any of its files.
pub struct RowRules {
    pub layout: Layout,
    /// The task label of records that carry none.
    pub task: Option<String>,
    pub policy: OnBadRecord,
}

/// One file's records in one format (JSONL lines, Parquet rows, WebDataset samples).
pub trait FileStream: Send + Sized {
    /// `path` at a place [`FileStream::position`] gave (`0, 0`: its start).
    fn open(path: &Path, rules: &RowRules, offset: u64, records: u64) -> Result<Self, DataError>;
    /// The next record; `None` at the end of the file. A record that cannot be used is a
    /// [`DataError::Record`], which the reader skips under `on_bad_record = "skip"`.
    fn next(&mut self, path: &Path, rules: &RowRules) -> Option<Result<Record, DataError>>;
    /// Where the next record is: the format's offset and the records read before it.
    fn position(&self) -> (u64, u64);
    /// Bad records the stream skipped itself (JSONL's lines).
    fn skipped(&self) -> Option<&Skipped> {
        None
    }
}

/// The files of a source as one [`Reader`].
pub struct FilesReader<S> {
    files: Vec<PathBuf>,
    rules: RowRules,
    epoch: u64,
    file: usize,
    current: Option<S>,
    /// Bad records of the files already closed, and those this reader skipped.
    skipped: Skipped,
}

impl<S: FileStream> FilesReader<S> {
    pub fn new(spec: &SourceSpec) -> Self {
        Self {
            files: spec.files.clone(),
            rules: RowRules { layout: spec.layout, task: spec.task.clone(), policy: spec.policy },
            epoch: 0,
            file: 0,
            current: None,
            skipped: Skipped::default(),
        }
    }

    /// Closes the current file, keeping the count of what its stream skipped.
    fn close(&mut self) {
        if let Some(s) = self.current.take()
            && let Some(k) = s.skipped()
        {
            self.skipped.merge(k);
        }
    }
}

impl<S: FileStream> Reader for FilesReader<S> {
    fn next_record(&mut self) -> Option<Result<Record, DataError>> {
        loop {
            if self.current.is_none() {
                if self.file >= self.files.len() {
                    return None;
                }
                match S::open(&self.files[self.file], &self.rules, 0, 0) {
                    Ok(s) => self.current = Some(s),
                    Err(e) => return Some(Err(e)),
                }
            }
            match self.current.as_mut()?.next(&self.files[self.file], &self.rules) {
                Some(Err(e @ DataError::Record { .. })) if self.rules.policy == OnBadRecord::Skip => {
                    self.skipped.add(e)
                }
                Some(r) => return Some(r),
                None => {
                    self.close();
                    self.file += 1;
                }
            }
        }
    }

    fn position(&self) -> ReadPosition {
        let (offset, records) = self.current.as_ref().map_or((0, 0), S::position);
        ReadPosition { epoch: self.epoch, file: self.file, offset, records }
    }

    fn seek(&mut self, at: ReadPosition) -> Result<(), DataError> {
        self.current = None;
        self.epoch = at.epoch;
        self.file = at.file;
        if at.file < self.files.len() {
            self.current = Some(S::open(&self.files[at.file], &self.rules, at.offset, at.records)?);
        }
        Ok(())
    }

    fn skipped(&self) -> Skipped {
        let mut all = self.skipped.clone();
        if let Some(k) = self.current.as_ref().and_then(S::skipped) {
            all.merge(k);
        }
        all
    }

    fn set_skipped(&mut self, skipped: Skipped) {
        self.skipped = skipped;
    }
}

//! JSONL files as one stream: each file line by line ([`JsonlRecords`]); a position is the
//! byte offset of the next line in the current file (and the lines before it).

use std::path::PathBuf;

use super::{ReadPosition, Reader, SourceSpec};
use crate::layouts::Layout;
use crate::records::{DataError, JsonlRecords, OnBadRecord, Record, Skipped};

pub struct JsonlReader {
    files: Vec<PathBuf>,
    layout: Layout,
    task: Option<String>,
    policy: OnBadRecord,
    epoch: u64,
    file: usize,
    current: Option<JsonlRecords>,
    /// Bad lines of the files already closed.
    skipped: Skipped,
}

impl JsonlReader {
    pub fn new(spec: &SourceSpec) -> Self {
        Self {
            files: spec.files.clone(),
            layout: spec.layout,
            task: spec.task.clone(),
            policy: spec.policy,
            epoch: 0,
            file: 0,
            current: None,
            skipped: Skipped::default(),
        }
    }

    fn open(&mut self, file: usize, offset: u64, lines: usize) -> Result<(), DataError> {
        let r =
            JsonlRecords::open_at(&self.files[file], self.policy, self.layout, self.task.as_deref(), offset, lines)?;
        self.file = file;
        self.current = Some(r);
        Ok(())
    }

    /// Closes the current file, keeping the count of its bad lines.
    fn close(&mut self) {
        if let Some(r) = self.current.take() {
            self.skipped.merge(&r.skipped);
        }
    }
}

impl Reader for JsonlReader {
    fn next_record(&mut self) -> Option<Result<Record, DataError>> {
        loop {
            if self.current.is_none() {
                if self.file >= self.files.len() {
                    return None;
                }
                if let Err(e) = self.open(self.file, 0, 0) {
                    return Some(Err(e));
                }
            }
            match self.current.as_mut()?.next() {
                Some(r) => return Some(r),
                None => {
                    self.close();
                    self.file += 1;
                }
            }
        }
    }

    fn position(&self) -> ReadPosition {
        let (offset, records) = self.current.as_ref().map_or((0, 0), |r| (r.offset(), r.consumed() as u64));
        ReadPosition { epoch: self.epoch, file: self.file, offset, records }
    }

    fn seek(&mut self, at: ReadPosition) -> Result<(), DataError> {
        self.current = None;
        self.epoch = at.epoch;
        self.file = at.file;
        if at.file < self.files.len() {
            self.open(at.file, at.offset, at.records as usize)?;
        }
        Ok(())
    }

    fn skipped(&self) -> Skipped {
        let mut all = self.skipped.clone();
        if let Some(r) = &self.current {
            all.merge(&r.skipped);
        }
        all
    }

    fn set_skipped(&mut self, skipped: Skipped) {
        self.skipped = skipped;
    }
}

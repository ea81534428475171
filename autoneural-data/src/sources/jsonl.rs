//! JSONL files as one stream: each file line by line ([`JsonlRecords`]); a position is the
//! byte offset of the next line in the current file (and the lines before it).

use std::path::Path;

use super::files::{FileStream, FilesReader, RowRules};
use crate::records::{DataError, JsonlRecords, Record, Skipped};

pub type JsonlReader = FilesReader<JsonlRecords>;

impl FileStream for JsonlRecords {
    fn open(path: &Path, rules: &RowRules, offset: u64, records: u64) -> Result<Self, DataError> {
        JsonlRecords::open_at(path, rules.policy, rules.layout, rules.task.as_deref(), offset, records as usize)
    }

    fn next(&mut self, _: &Path, _: &RowRules) -> Option<Result<Record, DataError>> {
        Iterator::next(self)
    }

    fn position(&self) -> (u64, u64) {
        (self.offset(), self.consumed() as u64)
    }

    /// JSONL skips its bad lines itself (they are counted in its `skipped`).
    fn skipped(&self) -> Option<&Skipped> {
        Some(&self.skipped)
    }
}

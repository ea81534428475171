//! Training data: conversation records read from JSONL, one record per line.

pub mod records;

pub use records::{DataError, JsonlRecords, Message, OnBadRecord, Record, Role};

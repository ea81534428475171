//! Training data: conversation records read from JSONL, one record per line, encoded into
//! padded next-token batches whose loss covers assistant turns only.

pub mod encode;
pub mod records;

pub use encode::{Batch, Encoded, encode_record, pad_batch};
pub use records::{DataError, JsonlRecords, Message, OnBadRecord, Record, Role};

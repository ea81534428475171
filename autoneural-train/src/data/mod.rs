//! Training data: conversation records read from JSONL, one record per line, mixed by a
//! recipe, encoded into padded next-token batches whose loss covers assistant turns only.

pub mod encode;
pub mod mixture;
pub mod records;

pub use encode::{Batch, Encoded, encode_record, pad_batch};
pub use mixture::{MixtureSampler, PAPER_MIXTURE, Recipe, RecipeError};
pub use records::{DataError, JsonlRecords, Message, OnBadRecord, Record, Role, Skipped};

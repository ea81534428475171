//! Data for training and evaluation: conversation records read from JSONL, one record per
//! line (`records`), mixed by a recipe (`mixture`), encoded into padded next-token
//! sequences whose loss covers assistant turns only (`encode`); the synthetic multimodal
//! task families (`synth`) and byte-level BPE training on them (`tokenizer_train`).

pub mod encode;
pub mod mixture;
pub mod records;
pub mod synth;
pub mod tokenizer_train;

pub use encode::{Batch, Encoded, encode_record, pad_batch};
pub use mixture::{MixtureSampler, PAPER_MIXTURE, Recipe, RecipeError};
pub use records::{DataError, JsonlRecords, Message, OnBadRecord, Record, Role, Skipped};

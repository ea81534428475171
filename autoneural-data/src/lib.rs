//! Data for training and evaluation: conversation records (`records`) in the field's
//! layouts (`layouts`), read from JSONL, Hugging Face Parquet and WebDataset shards as
//! resumable, shuffled streams (`sources`), mixed by a recipe (`mixture`), encoded into
//! padded next-token sequences whose loss covers assistant turns only (`encode`); the
//! synthetic multimodal task families (`synth`) and byte-level BPE training on them
//! (`tokenizer_train`).

pub mod encode;
pub mod layouts;
pub mod mixture;
pub mod records;
pub mod sources;
pub mod synth;
pub mod tokenizer_train;

pub use encode::{Batch, Encoded, encode_record, pad_batch};
pub use layouts::Layout;
pub use mixture::{MixtureSampler, PAPER_MIXTURE, Recipe, RecipeError, SamplerState};
pub use records::{DataError, ImageRef, JsonlRecords, Message, OnBadRecord, Record, Role, Skipped};
pub use sources::{Catalog, FileRecords, Format, SourceConfig, SourcePosition, SourceSpec, Split};

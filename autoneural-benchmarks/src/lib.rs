//! Benchmark scores as VLMEvalKit and lmms-eval compute them, offline, from the files the
//! user downloads:
//!
//! - [`load`]: a VLMEvalKit TSV ([`tsv`]: base64 images, reused by index, lists of several)
//!   or an lmms-eval Parquet ([`parquet`], mapped to VLMEvalKit's columns) into [`Item`]s,
//!   whose images stay in the file until a batch needs them ([`ImageLoader`]);
//! - [`Benchmark`]: the registry by name (AI2D, MMStar, OCRBench, ChartQA, DocVQA, TextVQA,
//!   MathVista, and the generic `mcq` and `vqa`);
//! - [`prompt`]: each benchmark's prompt in either toolkit's style ([`PromptStyle`]);
//! - [`rules`]: each scoring rule as a function; [`score`] totals them into [`Scores`]
//!   (JSON, markdown) and [`compare`] sets runs side by side (fp32, w8a16, ...);
//! - [`predictions`]: the predictions file in VLMEvalKit's layout, resumable;
//! - [`run`]: the loop, given a function that answers a batch of prompts ([`answer`]: a
//!   model's, batched).
//!
//! `docs/evaluation.md` says where each file comes from and how each score is computed.

pub mod answer;
pub mod bench;
pub mod error;
pub mod item;
pub mod parquet;
pub mod predictions;
pub mod prompt;
pub mod pylit;
pub mod read;
pub mod registry;
pub mod rules;
pub mod run;
pub mod scores;
pub mod tsv;

pub use error::{Error, Result};
pub use item::{ImageLoader, ImageSource, Item};
pub use predictions::{PredictionsFile, read_scored};
pub use prompt::{Prompt, PromptStyle, prompt, prompt_text};
pub use read::{load, load_records};
pub use registry::{BENCHMARKS, Benchmark, BenchmarkId, Metric};
pub use run::run;
pub use scores::{CategoryScore, Judgement, Scores, compare, judge, score, score_file};
pub use tsv::Loaded;

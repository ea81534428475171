//! Training: conversation data streamed from JSONL and mixed by recipe (`data`), synthetic
//! multimodal task families (`synth`), tokenizer training (`tokenizer_train`), experiment
//! files (`config`) and the staged training loop with exact resumption (`train`).

pub mod config;
pub mod data;
pub mod sweep;
pub mod synth;
pub mod tokenizer_train;
pub mod train;

//! Training: datasets, synthetic data, the four-stage recipe (see issue "Training").
//! So far: conversation records streamed from JSONL (`data`).

pub mod data;

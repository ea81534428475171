//! Evaluation: task accuracy (exact match, ANLS) against baselines and the scorer that
//! produces it (`accuracy`, `evaluate`), benchmarks of latency, throughput and memory
//! (`bench_lm`, `bench_vision`, `bench_train`, `membw`, `peak_alloc`), and the plots reports
//! draw with (`plot`).

pub mod accuracy;
pub mod bench_lm;
pub mod bench_train;
pub mod bench_vision;
pub mod evaluate;
pub mod membw;
pub mod peak_alloc;
pub mod plot;

//! Evaluation: task accuracy (exact match, ANLS) against baselines and the scorer that
//! produces it (`accuracy`, `evaluate`), benchmarks of latency, throughput and memory
//! (`bench_lm`, `bench_vision`, `bench_train`, `bench_data`, `membw`, `peak_alloc`; `host`
//! names the machine beside each table), and the plots reports
//! draw with (`plot`).

pub mod accuracy;
pub mod bench_data;
pub mod bench_lm;
pub mod bench_train;
pub mod bench_vision;
pub mod evaluate;
pub mod host;
pub mod membw;
pub mod peak_alloc;
pub mod plot;

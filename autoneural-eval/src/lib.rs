//! Evaluation: task accuracy (exact match, ANLS) against baselines, the experiment runner
//! and its report, and benchmarks of latency, throughput and memory.

pub mod accuracy;
pub mod bench_lm;
pub mod bench_train;
pub mod bench_vision;
pub mod evaluate;
pub mod membw;
pub mod npu;
pub mod peak_alloc;
pub mod plot;
pub mod quant_compare;
pub mod quant_report;
pub mod quantize;
pub mod report;
pub mod runner;
pub mod sweep;

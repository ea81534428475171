//! Evaluation: benchmarks of latency, throughput and memory (and, as the project grows,
//! metrics, quantization-error analysis and the NPU cost model).

pub mod bench_lm;
pub mod bench_vision;
pub mod membw;
pub mod peak_alloc;

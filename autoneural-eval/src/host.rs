//! The machine a benchmark ran on, written beside every table: the CPU model, the SIMD
//! flags the kernels choose between, the threads used, and the kernel paths that ran.

use serde::Serialize;

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Host {
    pub cpu: String,
    /// Of avx2, fma, avx512f, avx512bw, avx512_vnni, avx_vnni, avx512_bf16 (Linux x86).
    pub flags: Vec<String>,
    pub threads: usize,
    /// The kernel paths that ran: this project's own kernels, and the f32 GEMM.
    pub kernels: String,
    pub gemm: String,
}

const FLAGS: [&str; 7] = ["avx2", "fma", "avx512f", "avx512bw", "avx512_vnni", "avx_vnni", "avx512_bf16"];

impl Host {
    pub fn detect() -> Self {
        let info = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        let field = |name: &str| {
            info.lines()
                .find(|l| l.starts_with(name))
                .and_then(|l| l.split_once(':'))
                .map(|(_, v)| v.trim().to_string())
        };
        let cpu = field("model name").unwrap_or_else(|| std::env::consts::ARCH.to_string());
        let present = field("flags").unwrap_or_default();
        let present: Vec<&str> = present.split_whitespace().collect();
        let flags = FLAGS.iter().filter(|f| present.contains(f)).map(|f| f.to_string()).collect();
        Self {
            cpu,
            flags,
            threads: rayon::current_num_threads(),
            kernels: autoneural_model::kernels::isa().to_string(),
            gemm: autoneural_model::kernels::gemm_isa().to_string(),
        }
    }

    /// One line: `CPU: <model> (<flags>), <n> threads; kernels: <ours>; f32 GEMM: <path>`.
    pub fn line(&self) -> String {
        let flags = if self.flags.is_empty() { "no AVX2".to_string() } else { self.flags.join(" ") };
        format!(
            "CPU: {} ({flags}), {} threads; kernels: {}; f32 GEMM: {}",
            self.cpu, self.threads, self.kernels, self.gemm
        )
    }
}

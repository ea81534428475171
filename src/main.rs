//! `autoneural`: the command line of the AutoNeural research codebase.

mod cmd;

use autoneural_eval::peak_alloc::PeakAlloc;
use clap::Parser;

/// Counts heap bytes so benchmarks can report peak memory.
#[global_allocator]
static ALLOC: PeakAlloc = PeakAlloc::new();

fn main() -> std::process::ExitCode {
    ALLOC.install();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("AUTONEURAL_LOG").unwrap_or_else(|_| "warn".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = cmd::Cli::parse();
    match cmd::run(cli) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {}", error_chain(&e));
            std::process::ExitCode::FAILURE
        }
    }
}

/// The error and its causes joined by ": ", leaving out a cause whose text the message
/// already holds (the crates' errors put their I/O cause in their own message: "path: No
/// such file or directory" would otherwise repeat it).
fn error_chain(e: &anyhow::Error) -> String {
    let mut out = String::new();
    for cause in e.chain() {
        let text = cause.to_string();
        if !out.contains(&text) {
            if !out.is_empty() {
                out += ": ";
            }
            out += &text;
        }
    }
    out
}

//! A training run stops cleanly on SIGTERM or SIGUSR1: at the end of the optimizer step in
//! progress, with a checkpoint, as `q` on the dashboard does. These are what a cluster
//! scheduler sends before it ends a job: Slurm sends SIGTERM on `scancel`, on preemption
//! and at the time limit (then SIGKILL after its `KillWait`), and a chosen signal some time
//! before the limit with `sbatch --signal=B:USR1@120`. The requeued or resubmitted run
//! resumes from that checkpoint instead of the last periodic one.
//!
//! Only the process that trains installs this (`autoneural run`); a sweep's parent process
//! does not, so a signal to it ends it as before.

use std::sync::Arc;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicUsize, Ordering};

use signal_hook::consts::{SIGTERM, SIGUSR1};

/// The signal that asked the run to stop (0: none).
fn received() -> &'static Arc<AtomicUsize> {
    static RECEIVED: OnceLock<Arc<AtomicUsize>> = OnceLock::new();
    RECEIVED.get_or_init(|| Arc::new(AtomicUsize::new(0)))
}

/// From now on SIGTERM and SIGUSR1 ask the training loop to stop at its next step instead
/// of ending the process.
pub fn stop_on_signals() -> std::io::Result<()> {
    for signal in [SIGTERM, SIGUSR1] {
        signal_hook::flag::register_usize(signal, Arc::clone(received()), signal as usize)?;
    }
    Ok(())
}

/// The signal that asked the run to stop, once one has.
pub fn stop_requested() -> Option<i32> {
    match received().load(Ordering::Relaxed) {
        0 => None,
        s => Some(s as i32),
    }
}

/// A signal's name, for messages.
pub fn name(signal: i32) -> &'static str {
    match signal {
        SIGTERM => "SIGTERM",
        SIGUSR1 => "SIGUSR1",
        _ => "a signal",
    }
}

//! The learning-rate schedule: linear warmup to the peak, then cosine decay to the floor.
//! A pure function of the step, so a resumed run needs no scheduler state to continue
//! exactly where it stopped.

/// Learning rate for optimizer step `step` (0-based) of `total`.
///
/// Warmup rises linearly from `peak / warmup` (never 0: the first step already moves) to
/// `peak` at step `warmup - 1`; the remaining steps follow half a cosine from `peak` to
/// `floor`, reaching `floor` at the last step.
pub fn learning_rate(step: usize, total: usize, warmup: usize, peak: f64, floor: f64) -> f64 {
    if step < warmup {
        return peak * (step + 1) as f64 / warmup as f64;
    }
    let decay_steps = total.saturating_sub(warmup);
    if decay_steps <= 1 {
        return peak;
    }
    let progress = ((step - warmup) as f64 / (decay_steps - 1) as f64).min(1.0);
    floor + 0.5 * (peak - floor) * (1.0 + (std::f64::consts::PI * progress).cos())
}

#[cfg(test)]
mod tests {
    use super::learning_rate;

    #[test]
    fn warmup_then_cosine() {
        let lr = |s| learning_rate(s, 10, 4, 1.0, 0.1);
        assert_eq!(lr(0), 0.25);
        assert_eq!(lr(3), 1.0);
        assert!((lr(4) - 1.0).abs() < 1e-12);
        assert!((lr(9) - 0.1).abs() < 1e-12);
        let mid = lr(4 + 5 / 2);
        assert!(mid < 1.0 && mid > 0.1);
        // monotone after warmup
        assert!((4..9).all(|s| lr(s + 1) <= lr(s)));
    }

    #[test]
    fn no_warmup_single_step() {
        assert_eq!(learning_rate(0, 1, 0, 2e-3, 0.0), 2e-3);
    }
}

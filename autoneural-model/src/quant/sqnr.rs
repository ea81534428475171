//! Quantization error measures, as the paper reports them: SQNR in dB with AIMET's
//! definition `10 log10(E[x^2] / E[(x - xq)^2])`, and the relative RMS error
//! `sqrt(E[(x - xq)^2]) / sqrt(E[x^2])`. Sums are in f64.

/// Signal and noise energy of `xq` against `x`.
fn energies(x: &[f32], xq: &[f32]) -> (f64, f64) {
    assert_eq!(x.len(), xq.len(), "SQNR of tensors of different sizes");
    x.iter().zip(xq).fold((0.0, 0.0), |(s, n), (&a, &b)| {
        let (a, b) = (f64::from(a), f64::from(b));
        (s + a * a, n + (a - b) * (a - b))
    })
}

/// SQNR in dB; infinite when `xq == x`.
pub fn sqnr_db(x: &[f32], xq: &[f32]) -> f64 {
    let (signal, noise) = energies(x, xq);
    if noise == 0.0 { f64::INFINITY } else { 10.0 * (signal / noise).log10() }
}

/// Relative RMS error (0.00562 is the paper's 0.562%).
pub fn relative_rms(x: &[f32], xq: &[f32]) -> f64 {
    let (signal, noise) = energies(x, xq);
    if signal == 0.0 { if noise == 0.0 { 0.0 } else { f64::INFINITY } } else { (noise / signal).sqrt() }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn closed_forms() {
        // x = (3, 4): E[x^2] = 12.5; noise (0.3, 0.4): E = 0.125 -> 10 log10(100) = 20 dB.
        let x = [3.0, 4.0];
        let xq = [2.7, 3.6];
        assert!((sqnr_db(&x, &xq) - 20.0).abs() < 1e-5);
        assert!((relative_rms(&x, &xq) - 0.1).abs() < 1e-6);
        assert_eq!(sqnr_db(&x, &x), f64::INFINITY);
        // A uniform quantizer's noise on a uniform signal: 6.02 dB per bit.
        let n = 1 << 16;
        let x: Vec<f32> = (0..n).map(|i| (i as f32 + 0.5) / n as f32 * 2.0 - 1.0).collect();
        let step = 2.0 / 256.0;
        let xq: Vec<f32> = x.iter().map(|v| ((v / step).floor() + 0.5) * step).collect();
        assert!((sqnr_db(&x, &xq) - 20.0 * 256f64.log10()).abs() < 0.01);
    }
}

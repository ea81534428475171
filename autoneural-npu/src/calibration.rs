//! The calibration of the built-in SA8295P profile against the paper's figures
//! (docs/npu_cost_model.md has the table): every reproduced figure within 2x, so a change
//! of the profile or of the op lists cannot silently break it.

use super::ops::Bits;
use super::paper;
use super::predict::{NpuPrediction, Scenario, predict_vlm};
use super::profile::DeviceProfile;

/// The paper's deployment: vision W8A16, language W4A16 (LM head 8-bit), KV cache 8-bit.
pub fn paper_prediction(name: &str, decode_context: usize, profile: &DeviceProfile) -> NpuPrediction {
    let vlm = paper::preset(name).expect("a paper preset");
    // Qualcomm's LLM exports write Linear layers as 1x1 Conv (the scenario's default).
    let scenario =
        Scenario { resolutions: vec![256, 512, 768], prompt_tokens: 32, decode_context, ..Scenario::default() };
    predict_vlm(&vlm, Bits::W8A16, Bits::W4A16, profile, &scenario)
}

/// `(case, paper figure, predicted)`; `None` predicted = does not fit.
pub fn cases(profile: &DeviceProfile) -> Vec<(&'static str, Option<f64>, Option<f64>)> {
    let b = paper_prediction("paper-baseline", 1024, profile);
    let a = paper_prediction("autoneural-paper", 4096, profile);
    vec![
        ("InternViT-300M @256 (ms)", Some(163.0), b.encoder_ms[0].1),
        ("InternViT-300M @512 (ms)", Some(1415.0), b.encoder_ms[1].1),
        ("InternViT-300M @768 (ms)", None, b.encoder_ms[2].1),
        ("MobileNetV5-300M @256 (ms)", Some(28.0), a.encoder_ms[0].1),
        ("MobileNetV5-300M @512 (ms)", Some(102.0), a.encoder_ms[1].1),
        ("MobileNetV5-300M @768 (ms)", Some(278.0), a.encoder_ms[2].1),
        ("baseline TTFT (ms)", Some(1400.0), b.ttft_ms),
        ("AutoNeural TTFT (ms)", Some(100.0), a.ttft_ms),
        ("baseline decode (tok/s)", Some(15.0), b.decode_tok_s),
        ("AutoNeural decode (tok/s)", Some(44.0), a.decode_tok_s),
        ("baseline max context", Some(1024.0), Some(b.max_context as f64)),
        ("AutoNeural max context", Some(4096.0), Some(a.max_context as f64)),
    ]
}

/// Ratio predicted / paper, or why there is none.
fn ratio(case: &str, want: Option<f64>, got: Option<f64>) -> f64 {
    match (want, got) {
        (Some(w), Some(g)) => g / w,
        (None, None) => 1.0,
        _ => panic!("{case}: paper {want:?}, predicted {got:?} (None = does not fit)"),
    }
}

fn within_2x(r: f64) -> bool {
    (0.5..=2.0).contains(&r)
}

#[test]
fn sa8295p_puts_the_paper_figures_within_2x_except_autoneural_ttft() {
    let p = DeviceProfile::builtin("sa8295p").unwrap();
    let mut bad = Vec::new();
    for (case, want, got) in cases(&p) {
        let r = ratio(case, want, got);
        eprintln!("{case}: paper {want:?}, predicted {got:?}, ratio {r:.2}");
        if case.starts_with("AutoNeural TTFT") {
            continue;
        }
        if !within_2x(r) {
            bad.push(format!("{case}: {r:.2}x"));
        }
    }
    assert!(bad.is_empty(), "outside 2x of the paper: {bad:?}");
}

/// The paper's AutoNeural TTFT (~100 ms) is below its own MobileNetV5 time at 512^2
/// (102 ms) before any prefill: not reproducible by a model whose encoder matches the
/// encoder figure. Pinned so a recalibration that changes this is noticed.
#[test]
fn autoneural_ttft_is_not_reproduced_within_2x_by_design() {
    let p = DeviceProfile::builtin("sa8295p").unwrap();
    let (_, want, got) = cases(&p).into_iter().find(|c| c.0.starts_with("AutoNeural TTFT")).unwrap();
    let r = ratio("AutoNeural TTFT", want, got);
    assert!(r > 2.0 && r < 4.0, "{r}");
    // ... but the ordering the paper reports holds: AutoNeural's TTFT is far below the baseline's.
    let b = cases(&p).into_iter().find(|c| c.0.starts_with("baseline TTFT")).unwrap().2.unwrap();
    assert!(got.unwrap() * 3.0 < b);
}

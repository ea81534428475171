//! Our rules against VLMEvalKit's own functions: the cases in
//! tests/fixtures/benchmarks/vlmevalkit_rules.json were decided by VLMEvalKit's `can_infer`,
//! `process_line` (`vqa_score`, `anls`), `process_answer` and `relaxed_correctness`
//! (scripts/vlmevalkit_rule_cases.py), and every one must come out the same here.

use std::path::Path;

use autoneural_benchmarks::rules::{self, OptionMatch};
use serde_json::Value;

fn cases() -> Value {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/benchmarks/vlmevalkit_rules.json");
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

fn text(v: &Value) -> &str {
    v.as_str().unwrap()
}

fn texts(v: &Value) -> Vec<String> {
    v.as_array().unwrap().iter().map(|x| text(x).to_string()).collect()
}

#[test]
fn option_matching_agrees_with_can_infer() {
    let cases = cases();
    let all = cases["mcq"].as_array().unwrap();
    assert!(all.len() > 500);
    let mut matched = 0;
    for c in all {
        let options: Vec<(char, String)> =
            texts(&c["options"]).into_iter().enumerate().map(|(i, t)| (char::from(b'A' + i as u8), t)).collect();
        let ours = match rules::match_option(text(&c["prediction"]), &options) {
            OptionMatch::Option(o) => o.to_string(),
            OptionMatch::Refused => "Z".to_string(),
            OptionMatch::Unmatched => String::new(),
        };
        assert_eq!(ours, text(&c["option"]), "{:?} with {options:?}", c["prediction"]);
        matched += usize::from(!ours.is_empty());
    }
    // Both outcomes are exercised.
    assert!(matched > all.len() / 5 && matched < all.len() * 4 / 5, "{matched}");
}

#[test]
fn vqa_accuracy_and_normalisation_agree_with_process_line() {
    for c in cases()["vqa"].as_array().unwrap() {
        let p = text(&c["prediction"]);
        assert_eq!(rules::vqa_normalize(p), text(&c["normalized"]), "{p:?}");
        let ours = rules::vqa_accuracy(p, &texts(&c["answers"]));
        assert!((ours - c["accuracy"].as_f64().unwrap()).abs() < 1e-9, "{p:?}: {ours} vs {}", c["accuracy"]);
    }
}

#[test]
fn anls_agrees_with_process_line() {
    for c in cases()["anls"].as_array().unwrap() {
        let p = text(&c["prediction"]);
        let ours = rules::anls(p, &texts(&c["answers"]));
        assert!((ours - c["anls"].as_f64().unwrap()).abs() < 1e-12, "{p:?}: {ours} vs {}", c["anls"]);
    }
}

#[test]
fn relaxed_accuracy_agrees_with_relaxed_correctness() {
    for c in cases()["relaxed"].as_array().unwrap() {
        let (p, t) = (text(&c["prediction"]), text(&c["target"]));
        assert_eq!(rules::relaxed_correct(p, t), c["correct"].as_bool().unwrap(), "{p:?} for {t:?}");
    }
}

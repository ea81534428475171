//! Answer metrics for the task families: normalized exact match (VQA-style normalisation)
//! and ANLS (average normalized Levenshtein similarity, the DocVQA metric, threshold 0.5)
//! for document and OCR answers, plus two baselines they are judged against: the family's
//! majority answer, and a blind model that knows each question's most frequent answer.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// Lowercase, punctuation dropped (a decimal point between digits is kept), articles
/// removed, number words zero..twenty as digits, whitespace collapsed.
pub fn normalize(answer: &str) -> String {
    const NUMBERS: [&str; 21] = [
        "zero",
        "one",
        "two",
        "three",
        "four",
        "five",
        "six",
        "seven",
        "eight",
        "nine",
        "ten",
        "eleven",
        "twelve",
        "thirteen",
        "fourteen",
        "fifteen",
        "sixteen",
        "seventeen",
        "eighteen",
        "nineteen",
        "twenty",
    ];
    let lower = answer.to_lowercase();
    let chars: Vec<char> = lower.chars().collect();
    let mut cleaned = String::with_capacity(lower.len());
    for (i, &c) in chars.iter().enumerate() {
        let between_digits =
            i > 0 && i + 1 < chars.len() && chars[i - 1].is_ascii_digit() && chars[i + 1].is_ascii_digit();
        if c.is_alphanumeric() || c.is_whitespace() || (c == '.' && between_digits) {
            cleaned.push(c);
        } else if c == '-' || c == '/' {
            cleaned.push(' ');
        }
    }
    cleaned
        .split_whitespace()
        .filter(|w| !matches!(*w, "a" | "an" | "the"))
        .map(|w| NUMBERS.iter().position(|n| *n == w).map_or_else(|| w.to_string(), |k| k.to_string()))
        .collect::<Vec<_>>()
        .join(" ")
}

pub fn exact_match(predicted: &str, gold: &str) -> bool {
    normalize(predicted) == normalize(gold)
}

fn levenshtein(a: &[char], b: &[char]) -> usize {
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    let mut cur = vec![0; b.len() + 1];
    for (i, ca) in a.iter().enumerate() {
        cur[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            cur[j + 1] = (prev[j] + usize::from(ca != cb)).min(prev[j + 1] + 1).min(cur[j] + 1);
        }
        std::mem::swap(&mut prev, &mut cur);
    }
    prev[b.len()]
}

/// ANLS of one answer: `1 - NL` when the normalized Levenshtein distance `NL` (on trimmed,
/// lowercased text) is below 0.5, else 0.
pub fn anls(predicted: &str, gold: &str) -> f64 {
    let p: Vec<char> =
        predicted.trim().to_lowercase().split_whitespace().collect::<Vec<_>>().join(" ").chars().collect();
    let g: Vec<char> = gold.trim().to_lowercase().split_whitespace().collect::<Vec<_>>().join(" ").chars().collect();
    let longest = p.len().max(g.len());
    if longest == 0 {
        return 1.0;
    }
    let nl = levenshtein(&p, &g) as f64 / longest as f64;
    if nl < 0.5 { 1.0 - nl } else { 0.0 }
}

/// Families whose answers are read off the image, scored with ANLS as well.
pub fn uses_anls(task: &str) -> bool {
    matches!(task, "document" | "ocr")
}

/// One scored answer.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Scored {
    pub task: String,
    pub question: String,
    pub gold: String,
    pub predicted: String,
    pub exact: bool,
    pub anls: f64,
}

/// Per-family results.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct TaskScore {
    pub answers: usize,
    pub exact_match: f64,
    /// Present for document and OCR.
    pub anls: Option<f64>,
    /// Accuracy of always giving the family's most frequent gold answer.
    pub majority_baseline: f64,
    pub majority_answer: String,
    /// Accuracy of a model that never looks at the image but knows, for each exact
    /// question, its most frequent answer in this set: what answer priors alone reach.
    pub blind_baseline: f64,
}

/// Most frequent normalized answer and its count; ties go to the alphabetically first, so
/// the figure is reproducible.
fn majority<'a>(answers: impl Iterator<Item = &'a str>) -> (String, usize) {
    let mut counts: BTreeMap<String, usize> = BTreeMap::new();
    for a in answers {
        *counts.entry(normalize(a)).or_default() += 1;
    }
    counts.into_iter().fold((String::new(), 0), |best, (a, c)| if c > best.1 { (a, c) } else { best })
}

/// Aggregates scored answers by family (sorted by name), plus `"overall"` figures.
pub fn summarize(scored: &[Scored]) -> BTreeMap<String, TaskScore> {
    let mut by_task: BTreeMap<&str, Vec<&Scored>> = BTreeMap::new();
    for s in scored {
        by_task.entry(&s.task).or_default().push(s);
    }
    by_task
        .into_iter()
        .map(|(task, items)| {
            let n = items.len() as f64;
            let (majority_answer, majority_count) = majority(items.iter().map(|s| s.gold.as_str()));
            let mut by_question: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
            for s in &items {
                by_question.entry(&s.question).or_default().push(&s.gold);
            }
            let blind: usize = by_question.values().map(|golds| majority(golds.iter().copied()).1).sum();
            let score = TaskScore {
                answers: items.len(),
                exact_match: items.iter().filter(|s| s.exact).count() as f64 / n,
                anls: uses_anls(task).then(|| items.iter().map(|s| s.anls).sum::<f64>() / n),
                majority_baseline: majority_count as f64 / n,
                majority_answer,
                blind_baseline: blind as f64 / n,
            };
            (task.to_string(), score)
        })
        .collect()
}

/// The markdown table of a summary.
pub fn markdown_table(summary: &BTreeMap<String, TaskScore>) -> String {
    let mut out = String::from(
        "| task | answers | exact match | ANLS | majority baseline (answer) | blind baseline |\n|---|---:|---:|---:|---|---:|\n",
    );
    for (task, s) in summary {
        let anls = s.anls.map_or_else(|| "-".to_string(), |a| format!("{:.1}%", 100.0 * a));
        out.push_str(&format!(
            "| {task} | {} | {:.1}% | {anls} | {:.1}% ({:?}) | {:.1}% |\n",
            s.answers,
            100.0 * s.exact_match,
            100.0 * s.majority_baseline,
            s.majority_answer,
            100.0 * s.blind_baseline
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalization() {
        assert_eq!(normalize("  The Red circle. "), "red circle");
        assert_eq!(normalize("Three"), "3");
        assert_eq!(normalize("3.5%"), "3.5");
        assert_eq!(normalize("rear-left"), "rear left");
        assert!(exact_match("Blue.", "blue"));
        assert!(!exact_match("blue", "green"));
    }

    #[test]
    fn anls_threshold() {
        assert_eq!(anls("ROME", "rome"), 1.0);
        assert!((anls("ROMA", "ROME") - 0.75).abs() < 1e-12);
        assert_eq!(anls("PARIS", "ROME"), 0.0);
        assert_eq!(anls("", ""), 1.0);
    }

    #[test]
    fn summary_and_baseline() {
        let s = |task: &str, gold: &str, pred: &str| Scored {
            task: task.into(),
            question: "q".into(),
            gold: gold.into(),
            predicted: pred.into(),
            exact: exact_match(pred, gold),
            anls: anls(pred, gold),
        };
        let sum = summarize(&[
            s("vqa", "red", "red"),
            s("vqa", "red", "blue"),
            s("vqa", "blue", "blue"),
            s("ocr", "CAT", "CAT"),
        ]);
        assert_eq!(sum["vqa"].answers, 3);
        assert!((sum["vqa"].exact_match - 2.0 / 3.0).abs() < 1e-12);
        assert!((sum["vqa"].majority_baseline - 2.0 / 3.0).abs() < 1e-12);
        assert_eq!(sum["vqa"].majority_answer, "red");
        assert_eq!(sum["vqa"].anls, None);
        assert_eq!(sum["ocr"].anls, Some(1.0));
        // Every question is "q": the blind baseline equals the majority here.
        assert!((sum["vqa"].blind_baseline - 2.0 / 3.0).abs() < 1e-12);
        assert!(markdown_table(&sum).contains("| ocr | 1 | 100.0% | 100.0% |"));
    }
}

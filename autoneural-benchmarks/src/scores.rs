//! From predictions to scores: each item judged by its benchmark's rule ([`judge`]), then
//! totals overall and per category as VLMEvalKit reports them ([`score`]), as JSON and as
//! markdown, and several runs of a benchmark side by side ([`compare`]).
//!
//! Scores are percentages (0-100), except OCRBench's, which is the count of items correct
//! (VLMEvalKit's `Final Score`, out of the 1,000 of the full set; `final_score_norm` in
//! `extra` is that count / 10).

use std::collections::BTreeMap;
use std::fmt::Write;

use anyhow::{Context, bail};
use serde::{Deserialize, Serialize};

use crate::item::Item;
use crate::prompt::PromptStyle;
use crate::pylit;
use crate::registry::{Benchmark, BenchmarkId, Metric};
use crate::rules::{self, OptionMatch, Verdict};

/// A total over some items.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CategoryScore {
    pub score: f64,
    pub n: usize,
    #[serde(default)]
    pub unmatched: usize,
}

/// A benchmark's scores.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Scores {
    /// VLMEvalKit's name of the benchmark.
    pub benchmark: String,
    pub metric: Metric,
    /// The headline number (see the module documentation for its unit).
    pub score: f64,
    pub n: usize,
    /// Predictions no rule could read (counted wrong).
    pub unmatched: usize,
    /// The benchmark's main breakdown: `category` (MCQ, VQA sets without splits), `split`
    /// (VQA sets with splits, as VLMEvalKit reports them), `l2-category` (MMStar), OCRBench's
    /// five reported groups, MathVista's `task`.
    pub categories: BTreeMap<String, CategoryScore>,
    /// Other breakdowns, by column (`l2-category`, `category`, `skills`, ...).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub groups: BTreeMap<String, BTreeMap<String, CategoryScore>>,
    /// Other numbers: MMStar's `overall_vlmevalkit` (the mean over items), OCRBench's
    /// `final_score_norm`.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub extra: BTreeMap<String, f64>,
    /// The prompts the predictions answered (`null` for predictions made elsewhere).
    pub prompt_style: Option<PromptStyle>,
}

/// One prediction judged: its score (0..1: 1 correct, or a partial credit) and whether a
/// rule could read it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Judgement {
    pub score: f64,
    pub matched: bool,
}

impl Judgement {
    fn hit(ok: bool) -> Self {
        Self { score: if ok { 1.0 } else { 0.0 }, matched: true }
    }
}

/// Judges one prediction by `bench`'s rule; an error when the item's answer cannot be used
/// (a MathVista answer that is none of its choices, ...).
pub fn judge(bench: &Benchmark, item: &Item, prediction: &str) -> anyhow::Result<Judgement> {
    let answers = || pylit::answers(&item.answer);
    Ok(match bench.id {
        BenchmarkId::Ai2d | BenchmarkId::MmStar | BenchmarkId::Mcq => {
            let gold = item.answer.trim();
            match rules::match_option(prediction, &item.options) {
                OptionMatch::Option(c) => Judgement::hit(gold.len() == 1 && gold.starts_with(c)),
                OptionMatch::Refused | OptionMatch::Unmatched => Judgement { score: 0.0, matched: false },
            }
        }
        BenchmarkId::OcrBench => {
            Judgement::hit(rules::ocrbench_correct(prediction, &answers(), item.category.as_deref().unwrap_or("")))
        }
        BenchmarkId::DocVqa => Judgement { score: rules::anls(prediction, &answers()), matched: true },
        BenchmarkId::ChartQa => Judgement::hit(answers().iter().any(|a| rules::relaxed_correct(prediction, a))),
        BenchmarkId::TextVqa => Judgement { score: rules::vqa_accuracy(prediction, &answers()), matched: true },
        BenchmarkId::Vqa => {
            let answers = answers();
            if answers.len() >= 2 {
                Judgement { score: rules::vqa_accuracy(prediction, &answers), matched: true }
            } else {
                Judgement::hit(rules::exact_match(prediction, &answers))
            }
        }
        BenchmarkId::MathVista => {
            let q = mathvista_question(item)?;
            match rules::mathvista(prediction, &q).map_err(anyhow::Error::msg)? {
                Verdict::Correct => Judgement::hit(true),
                Verdict::Wrong => Judgement::hit(false),
                Verdict::Unmatched => Judgement { score: 0.0, matched: false },
            }
        }
    })
}

/// A MathVista item's fields for [`rules::mathvista`].
pub fn mathvista_question(item: &Item) -> anyhow::Result<rules::MathVistaQuestion> {
    let get = |k: &str| item.present(k).unwrap_or("").to_string();
    let question_type = get("question_type");
    let answer_type = get("answer_type");
    if question_type.is_empty() || answer_type.is_empty() {
        bail!("no question_type or answer_type");
    }
    Ok(rules::MathVistaQuestion {
        question_type,
        answer_type,
        choices: item.present("choices").map(pylit::answers).unwrap_or_default(),
        answer: item.answer.clone(),
        answer_option: item.present("answer_option").and_then(|a| a.trim().chars().next()),
        precision: item.present("precision").and_then(pylit::py_float).filter(|p| *p >= 0.0).map(|p| p as u32),
    })
}

#[derive(Default, Clone)]
struct Tally {
    sum: f64,
    n: usize,
    unmatched: usize,
}

impl Tally {
    fn add(&mut self, j: Judgement) {
        self.sum += j.score;
        self.n += 1;
        self.unmatched += usize::from(!j.matched);
    }

    fn percent(&self) -> CategoryScore {
        let score = if self.n == 0 { 0.0 } else { 100.0 * self.sum / self.n as f64 };
        CategoryScore { score, n: self.n, unmatched: self.unmatched }
    }

    fn count(&self) -> CategoryScore {
        CategoryScore { score: self.sum, n: self.n, unmatched: self.unmatched }
    }
}

fn tally_by<'a>(judged: &'a [(&'a Item, Judgement)], key: impl Fn(&'a Item) -> Vec<String>) -> BTreeMap<String, Tally> {
    let mut out: BTreeMap<String, Tally> = BTreeMap::new();
    for (item, j) in judged {
        for k in key(item) {
            out.entry(k).or_default().add(*j);
        }
    }
    out
}

fn percents(t: &BTreeMap<String, Tally>) -> BTreeMap<String, CategoryScore> {
    t.iter().map(|(k, v)| (k.clone(), v.percent())).collect()
}

fn one(v: Option<&String>) -> Vec<String> {
    v.cloned().into_iter().collect()
}

fn column(item: &Item, name: &str) -> Vec<String> {
    item.present(name).map(|s| vec![s.to_string()]).unwrap_or_default()
}

/// OCRBench's reported groups: the six recognition categories add up to `Text Recognition`.
fn ocrbench_group(category: &str) -> String {
    const RECOGNITION: [&str; 6] = [
        "Regular Text Recognition",
        "Irregular Text Recognition",
        "Artistic Text Recognition",
        "Handwriting Recognition",
        "Digit String Recognition",
        "Non-Semantic Text Recognition",
    ];
    if RECOGNITION.contains(&category) { "Text Recognition".to_string() } else { category.to_string() }
}

/// Scores `bench` on items with their predictions (from [`crate::run`], or a predictions
/// file made elsewhere: [`crate::predictions::read_scored`]). `style` is recorded.
pub fn score<'a>(
    bench: &Benchmark,
    rows: impl IntoIterator<Item = (&'a Item, &'a str)>,
    style: Option<PromptStyle>,
) -> anyhow::Result<Scores> {
    let mut judged = Vec::new();
    for (item, prediction) in rows {
        let j = judge(bench, item, prediction).with_context(|| format!("{} item `{}`", bench.name, item.index))?;
        judged.push((item, j));
    }
    let mut all = Tally::default();
    for (_, j) in &judged {
        all.add(*j);
    }
    let mut s = Scores {
        benchmark: bench.name.to_string(),
        metric: bench.metric,
        score: all.percent().score,
        n: all.n,
        unmatched: all.unmatched,
        categories: BTreeMap::new(),
        groups: BTreeMap::new(),
        extra: BTreeMap::new(),
        prompt_style: style,
    };
    let by_category = tally_by(&judged, |i| one(i.category.as_ref()));
    let by_l2 = tally_by(&judged, |i| one(i.l2_category.as_ref()));
    let by_split = tally_by(&judged, |i| one(i.split.as_ref()));
    match bench.id {
        BenchmarkId::Ai2d | BenchmarkId::Mcq => {
            s.categories = percents(&by_category);
            s.groups.insert("l2-category".into(), percents(&by_l2));
            s.groups.insert("split".into(), percents(&by_split));
        }
        BenchmarkId::MmStar => {
            // lmms-eval: the mean over l2-categories; each category the mean of its l2s.
            let l2 = percents(&by_l2);
            if !l2.is_empty() {
                s.score = l2.values().map(|c| c.score).sum::<f64>() / l2.len() as f64;
                s.extra.insert("overall_vlmevalkit".into(), all.percent().score);
                let mut parents: BTreeMap<String, Vec<&CategoryScore>> = BTreeMap::new();
                for (item, _) in &judged {
                    if let (Some(c), Some(l)) = (&item.category, &item.l2_category) {
                        let list = parents.entry(c.clone()).or_default();
                        let entry = &l2[l];
                        if !list.iter().any(|e| std::ptr::eq(*e, entry)) {
                            list.push(entry);
                        }
                    }
                }
                let means = parents
                    .into_iter()
                    .map(|(c, list)| {
                        let n = list.iter().map(|e| e.n).sum();
                        let unmatched = list.iter().map(|e| e.unmatched).sum();
                        let score = list.iter().map(|e| e.score).sum::<f64>() / list.len() as f64;
                        (c, CategoryScore { score, n, unmatched })
                    })
                    .collect();
                s.groups.insert("category".into(), means);
            } else {
                s.groups.insert("category".into(), percents(&by_category));
            }
            s.categories = l2;
        }
        BenchmarkId::OcrBench => {
            s.score = all.sum;
            s.extra.insert("final_score_norm".into(), all.sum / 10.0);
            let groups = tally_by(&judged, |i| vec![ocrbench_group(i.category.as_deref().unwrap_or(""))]);
            s.categories = groups.iter().map(|(k, v)| (k.clone(), v.count())).collect();
            s.groups.insert("category".into(), by_category.iter().map(|(k, v)| (k.clone(), v.count())).collect());
        }
        BenchmarkId::ChartQa | BenchmarkId::DocVqa | BenchmarkId::TextVqa | BenchmarkId::Vqa => {
            // VLMEvalKit reports splits when the file has them, else categories.
            if by_split.is_empty() {
                s.categories = percents(&by_category);
            } else {
                s.categories = percents(&by_split);
                s.groups.insert("category".into(), percents(&by_category));
            }
        }
        BenchmarkId::MathVista => {
            s.categories = percents(&tally_by(&judged, |i| column(i, "task")));
            let skills = tally_by(&judged, |i| i.present("skills").map(pylit::answers).unwrap_or_default());
            s.groups.insert("skills".into(), percents(&skills));
            s.groups.insert("question_type".into(), percents(&tally_by(&judged, |i| column(i, "question_type"))));
            s.groups.insert("answer_type".into(), percents(&tally_by(&judged, |i| column(i, "answer_type"))));
        }
    }
    s.groups.retain(|_, g| !g.is_empty());
    Ok(s)
}

/// Scores a predictions TSV made anywhere (ours, or VLMEvalKit's with `PRED_FORMAT=tsv`):
/// its rows with their `prediction`s, by `bench`'s rule; `prompt_style` is unknown (`None`).
pub fn score_file(bench: &Benchmark, path: &std::path::Path) -> anyhow::Result<Scores> {
    let rows = crate::predictions::read_scored(bench, path)?;
    score(bench, rows.iter().map(|(i, p)| (i, p.as_str())), None)
}

fn unit(metric: Metric) -> &'static str {
    match metric {
        Metric::Accuracy => "accuracy, %",
        Metric::OcrBenchCount => "items correct, of 1000",
        Metric::Anls => "ANLS, %",
        Metric::RelaxedAccuracy => "relaxed accuracy, %",
        Metric::VqaAccuracy => "VQA accuracy, %",
    }
}

fn number(metric: Metric, v: f64) -> String {
    if metric == Metric::OcrBenchCount { format!("{v:.0}") } else { format!("{v:.2}") }
}

impl Scores {
    /// A markdown section: the headline, then each breakdown as a table.
    pub fn to_markdown(&self) -> String {
        let mut out = String::new();
        let style = self.prompt_style.map_or("unknown (predictions made elsewhere)".to_string(), |s| s.to_string());
        let _ = writeln!(out, "### {}\n", self.benchmark);
        let _ = writeln!(out, "Prompt style: {style}.\n");
        let _ = writeln!(out, "| | score | n | unmatched |\n| --- | ---: | ---: | ---: |");
        let _ = writeln!(
            out,
            "| **overall** ({}) | **{}** | {} | {} |",
            unit(self.metric),
            number(self.metric, self.score),
            self.n,
            self.unmatched
        );
        for (k, v) in &self.extra {
            let _ = writeln!(out, "| {k} | {:.2} | | |", v);
        }
        let mut section = |title: &str, rows: &BTreeMap<String, CategoryScore>| {
            if rows.is_empty() {
                return;
            }
            let _ = writeln!(out, "\n| {title} | score | n | unmatched |\n| --- | ---: | ---: | ---: |");
            for (k, v) in rows {
                let _ = writeln!(out, "| {k} | {} | {} | {} |", number(self.metric, v.score), v.n, v.unmatched);
            }
        };
        section("category", &self.categories);
        for (g, rows) in &self.groups {
            section(g, rows);
        }
        out
    }
}

/// Runs of benchmarks side by side (`(label, scores)`, e.g. `fp32`, `w8a16`): per benchmark,
/// the overall score and every category in each run, and the change from the benchmark's
/// first run. Runs of one benchmark with other prompt styles are refused: their scores do
/// not compare.
pub fn compare(runs: &[(&str, &Scores)]) -> anyhow::Result<String> {
    let mut order: Vec<&str> = Vec::new();
    for (_, s) in runs {
        if !order.contains(&s.benchmark.as_str()) {
            order.push(&s.benchmark);
        }
    }
    let mut out = String::new();
    if order.len() > 1 {
        let _ = writeln!(out, "| benchmark | run | score | change |\n| --- | --- | ---: | ---: |");
        for b in &order {
            let of: Vec<&(&str, &Scores)> = runs.iter().filter(|(_, s)| s.benchmark == *b).collect();
            let base = of[0].1.score;
            for (label, s) in &of {
                let _ = writeln!(out, "| {b} | {label} | {} | {:+.2} |", number(s.metric, s.score), s.score - base);
            }
        }
        out.push('\n');
    }
    for b in order {
        let of: Vec<&(&str, &Scores)> = runs.iter().filter(|(_, s)| s.benchmark == b).collect();
        let first = of[0].1;
        if let Some((label, s)) = of.iter().find(|(_, s)| s.prompt_style != first.prompt_style) {
            bail!(
                "{b}: run `{label}` used prompt style {:?}, run `{}` {:?}: scores of different prompts do not compare",
                s.prompt_style,
                of[0].0,
                first.prompt_style
            );
        }
        let _ = writeln!(out, "### {b} ({})\n", unit(first.metric));
        let labels: Vec<&str> = of.iter().map(|(l, _)| *l).collect();
        let _ = writeln!(out, "| | {} |", labels.join(" | "));
        let _ = writeln!(out, "| --- |{}", " ---: |".repeat(labels.len()));
        let row = |name: &str, get: &dyn Fn(&Scores) -> Option<f64>| {
            let base = get(first);
            let cells: Vec<String> = of
                .iter()
                .enumerate()
                .map(|(i, (_, s))| match (get(s), base) {
                    (Some(v), Some(b)) if i > 0 => format!("{} ({:+.2})", number(s.metric, v), v - b),
                    (Some(v), _) => number(s.metric, v),
                    (None, _) => "-".to_string(),
                })
                .collect();
            format!("| {name} | {} |\n", cells.join(" | "))
        };
        out.push_str(&row("**overall**", &|s: &Scores| Some(s.score)));
        let mut names: Vec<&String> = Vec::new();
        for (_, s) in &of {
            for k in s.categories.keys() {
                if !names.contains(&k) {
                    names.push(k);
                }
            }
        }
        for name in names {
            out.push_str(&row(name, &|s: &Scores| s.categories.get(name).map(|c| c.score)));
        }
        out.push('\n');
    }
    Ok(out)
}

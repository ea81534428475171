//! The benchmarks by name: VLMEvalKit's dataset names (`AI2D_TEST`, `MMStar`, `OCRBench`,
//! `ChartQA_TEST`, `DocVQA_VAL`, `TextVQA_VAL`, `MathVista_MINI`), lmms-eval's task names and
//! short names as aliases, matched case-insensitively; and two generic kinds for any other
//! VLMEvalKit TSV: `mcq` (option columns) and `vqa`.

use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// Which benchmark (and so which prompt, column mapping and scoring rule).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum BenchmarkId {
    Ai2d,
    MmStar,
    OcrBench,
    ChartQa,
    DocVqa,
    TextVqa,
    MathVista,
    /// Any multiple-choice TSV (`A`, `B`, ... columns).
    Mcq,
    /// Any open-answer TSV.
    Vqa,
}

/// How answers are scored (each rule is a function of [`crate::rules`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Metric {
    /// Option matching, percent of items correct.
    Accuracy,
    /// OCRBench: the count of items correct (out of the 1,000 of the full set).
    OcrBenchCount,
    /// Average normalized Levenshtein similarity with threshold 0.5, percent.
    Anls,
    /// ChartQA's relaxed accuracy, percent.
    RelaxedAccuracy,
    /// VQA accuracy over ten annotators' answers, percent.
    VqaAccuracy,
}

/// A benchmark: its names, its files, how it is scored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Benchmark {
    pub id: BenchmarkId,
    /// VLMEvalKit's dataset name (what its `run.py --data` takes and its file names carry).
    pub name: &'static str,
    /// Other names accepted (lmms-eval task names, short names).
    pub aliases: &'static [&'static str],
    pub metric: Metric,
    /// Where VLMEvalKit downloads the TSV from.
    pub tsv_url: Option<&'static str>,
    /// lmms-eval's Hugging Face dataset (`dataset_path`, config) and split.
    pub hf_dataset: Option<&'static str>,
    pub hf_config: Option<&'static str>,
    pub hf_split: Option<&'static str>,
}

/// Every benchmark, the suite first.
pub const BENCHMARKS: &[Benchmark] = &[
    Benchmark {
        id: BenchmarkId::Ai2d,
        name: "AI2D_TEST",
        aliases: &["ai2d", "ai2d_test"],
        metric: Metric::Accuracy,
        tsv_url: Some("https://opencompass.openxlab.space/utils/VLMEval/AI2D_TEST.tsv"),
        hf_dataset: Some("lmms-lab-encoder/ai2d"),
        hf_config: None,
        hf_split: Some("test"),
    },
    Benchmark {
        id: BenchmarkId::MmStar,
        name: "MMStar",
        aliases: &["mmstar"],
        metric: Metric::Accuracy,
        tsv_url: Some("https://opencompass.openxlab.space/utils/VLMEval/MMStar.tsv"),
        hf_dataset: Some("Lin-Chen/MMStar"),
        hf_config: None,
        hf_split: Some("val"),
    },
    Benchmark {
        id: BenchmarkId::OcrBench,
        name: "OCRBench",
        aliases: &["ocrbench"],
        metric: Metric::OcrBenchCount,
        tsv_url: Some("https://opencompass.openxlab.space/utils/VLMEval/OCRBench.tsv"),
        hf_dataset: Some("echo840/OCRBench"),
        hf_config: None,
        hf_split: Some("test"),
    },
    Benchmark {
        id: BenchmarkId::ChartQa,
        name: "ChartQA_TEST",
        aliases: &["chartqa", "chartqa_test"],
        metric: Metric::RelaxedAccuracy,
        tsv_url: Some("https://opencompass.openxlab.space/utils/VLMEval/ChartQA_TEST.tsv"),
        hf_dataset: Some("lmms-lab-encoder/ChartQA"),
        hf_config: None,
        hf_split: Some("test"),
    },
    Benchmark {
        id: BenchmarkId::DocVqa,
        name: "DocVQA_VAL",
        aliases: &["docvqa", "docvqa_val"],
        metric: Metric::Anls,
        tsv_url: Some("https://opencompass.openxlab.space/utils/VLMEval/DocVQA_VAL.tsv"),
        hf_dataset: Some("lmms-lab-encoder/DocVQA"),
        hf_config: Some("DocVQA"),
        hf_split: Some("validation"),
    },
    Benchmark {
        id: BenchmarkId::TextVqa,
        name: "TextVQA_VAL",
        aliases: &["textvqa", "textvqa_val"],
        metric: Metric::VqaAccuracy,
        tsv_url: Some("https://opencompass.openxlab.space/utils/VLMEval/TextVQA_VAL.tsv"),
        hf_dataset: Some("lmms-lab-encoder/textvqa"),
        hf_config: None,
        hf_split: Some("validation"),
    },
    Benchmark {
        id: BenchmarkId::MathVista,
        name: "MathVista_MINI",
        aliases: &["mathvista", "mathvista_testmini", "mathvista_testmini_format"],
        metric: Metric::Accuracy,
        tsv_url: Some("https://opencompass.openxlab.space/utils/VLMEval/MathVista_MINI.tsv"),
        hf_dataset: Some("AI4Math/MathVista"),
        hf_config: None,
        hf_split: Some("testmini"),
    },
    Benchmark {
        id: BenchmarkId::Mcq,
        name: "mcq",
        aliases: &[],
        metric: Metric::Accuracy,
        tsv_url: None,
        hf_dataset: None,
        hf_config: None,
        hf_split: None,
    },
    Benchmark {
        id: BenchmarkId::Vqa,
        name: "vqa",
        aliases: &[],
        metric: Metric::VqaAccuracy,
        tsv_url: None,
        hf_dataset: None,
        hf_config: None,
        hf_split: None,
    },
];

impl Benchmark {
    /// The benchmark `name` names (its VLMEvalKit name or an alias, any case).
    pub fn by_name(name: &str) -> Option<&'static Benchmark> {
        let n = name.trim();
        BENCHMARKS
            .iter()
            .find(|b| b.name.eq_ignore_ascii_case(n) || b.aliases.iter().any(|a| a.eq_ignore_ascii_case(n)))
    }

    /// `by_name`, as an error listing the names when none matches.
    pub fn named(name: &str) -> Result<&'static Benchmark, String> {
        Self::by_name(name).ok_or_else(|| {
            let names: Vec<&str> = BENCHMARKS.iter().map(|b| b.name).collect();
            format!("no benchmark `{name}`: one of {} (or an alias: ai2d, chartqa, docvqa, ...)", names.join(", "))
        })
    }

    /// The benchmark a file holds when the user named none: a file named after one
    /// (`MMStar.tsv`, `OCRBench_predictions.tsv` does not count), else `mcq` when its columns
    /// hold options (`A` and `B`, or an `options`/`choices` list in Parquet), else `vqa`.
    pub fn infer(path: &Path) -> Result<&'static Benchmark> {
        if let Some(b) = path.file_stem().and_then(|s| s.to_str()).and_then(Self::by_name)
            && !matches!(b.id, BenchmarkId::Mcq | BenchmarkId::Vqa)
        {
            return Ok(b);
        }
        let columns = crate::read::columns(path)?;
        let has = |c: &str| columns.iter().any(|h| h == c);
        let mcq = (has("A") && has("B")) || has("options") || has("choices");
        Ok(Self::by_name(if mcq { "mcq" } else { "vqa" }).expect("generic kinds are registered"))
    }

    /// The file `path` is not this benchmark's when it lacks a column the rule needs.
    pub fn check_columns(&self, path: &Path, columns: &[String]) -> Result<()> {
        let needed: &[&str] = match self.id {
            BenchmarkId::Ai2d | BenchmarkId::MmStar | BenchmarkId::Mcq => &["question", "answer", "A", "B"],
            BenchmarkId::OcrBench => &["question", "answer", "category"],
            BenchmarkId::MathVista => &["question", "answer", "question_type", "answer_type"],
            _ => &["question", "answer"],
        };
        let missing: Vec<&str> = needed.iter().copied().filter(|n| !columns.iter().any(|c| c == n)).collect();
        if missing.is_empty() {
            Ok(())
        } else {
            Err(Error::row(
                path,
                0,
                format!("no column {} that {} needs: is it this benchmark's file?", missing.join(", "), self.name),
            ))
        }
    }
}

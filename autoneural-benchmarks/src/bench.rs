//! `bench eval`: questions per second of a model answering a benchmark, one question at a
//! time against several decoded together, in the same process, on the same prompts, and
//! whether the batched answers are the ones answered alone.

use std::time::Instant;

use anyhow::bail;
use serde::Serialize;

use crate::answer::ModelAnswerer;
use crate::item::{ImageLoader, Item};
use crate::prompt::{Prompt, PromptStyle, prompt};
use crate::registry::Benchmark;

/// One batch size's timing.
#[derive(Debug, Clone, Serialize)]
pub struct EvalBenchRow {
    pub batch: usize,
    pub seconds: f64,
    pub questions_per_s: f64,
    /// Questions per second over the first row's.
    pub speedup: f64,
    /// Answers that differ from the first row's.
    pub differing_answers: usize,
}

#[derive(Debug, Clone, Serialize)]
pub struct EvalBenchResult {
    pub benchmark: String,
    pub questions: usize,
    pub max_new_tokens: usize,
    pub rows: Vec<EvalBenchRow>,
}

impl EvalBenchResult {
    pub fn markdown(&self) -> String {
        let mut md = format!(
            "{}: {} questions, at most {} new tokens each\n\n| batch | seconds | questions/s | vs batch {} | answers differing |\n|---:|---:|---:|---:|---:|\n",
            self.benchmark,
            self.questions,
            self.max_new_tokens,
            self.rows.first().map_or(1, |r| r.batch)
        );
        for r in &self.rows {
            md += &format!(
                "| {} | {:.2} | {:.2} | {:.2}x | {} |\n",
                r.batch, r.seconds, r.questions_per_s, r.speedup, r.differing_answers
            );
        }
        md
    }
}

/// Answers `items` (their prompts in `style`) at each batch size of `batches`, the first
/// being the baseline; a warm-up batch runs first.
pub fn bench_eval(
    answerer: &ModelAnswerer,
    bench: &Benchmark,
    items: &[Item],
    style: PromptStyle,
    batches: &[usize],
) -> anyhow::Result<EvalBenchResult> {
    if items.is_empty() || batches.is_empty() || batches.contains(&0) {
        bail!("bench eval needs items and batch sizes of at least 1");
    }
    let mut loader = ImageLoader::new();
    let prompts: Vec<Prompt> =
        items.iter().map(|i| Ok(prompt(bench, i, style, loader.load(i)?))).collect::<anyhow::Result<_>>()?;
    let warm = batches.iter().copied().max().unwrap_or(1).min(prompts.len());
    answerer.answer(&prompts[..warm])?;
    let mut rows: Vec<EvalBenchRow> = Vec::new();
    let mut baseline: Option<(f64, Vec<String>)> = None;
    for &batch in batches {
        let start = Instant::now();
        let mut answers = Vec::with_capacity(prompts.len());
        for chunk in prompts.chunks(batch) {
            answers.extend(answerer.answer(chunk)?);
        }
        let seconds = start.elapsed().as_secs_f64();
        let qps = prompts.len() as f64 / seconds;
        let (base_qps, base_answers) = baseline.get_or_insert_with(|| (qps, answers.clone()));
        let differing = answers.iter().zip(base_answers.iter()).filter(|(a, b)| a != b).count();
        rows.push(EvalBenchRow {
            batch,
            seconds,
            questions_per_s: qps,
            speedup: qps / *base_qps,
            differing_answers: differing,
        });
    }
    Ok(EvalBenchResult {
        benchmark: bench.name.to_string(),
        questions: prompts.len(),
        max_new_tokens: answerer.max_new_tokens,
        rows,
    })
}

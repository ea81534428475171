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

/// One batch size's timing: the median of its rounds.
#[derive(Debug, Clone, Serialize)]
pub struct EvalBenchRow {
    pub batch: usize,
    /// Groups a batch was answered in, side by side
    /// ([`autoneural_model::vlm::VisionLanguageModel::answer_groups`]).
    pub groups: usize,
    pub seconds: f64,
    pub questions_per_s: f64,
    /// Questions per second of each round.
    pub rounds: Vec<f64>,
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

fn median(v: &[f64]) -> f64 {
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    let n = s.len();
    if n % 2 == 1 { s[n / 2] } else { (s[n / 2 - 1] + s[n / 2]) / 2.0 }
}

impl EvalBenchResult {
    pub fn markdown(&self) -> String {
        let mut md = format!(
            "{}: {} questions, at most {} new tokens each, {} alternating rounds (medians)\n\n| batch | groups | seconds | questions/s | each round | vs batch {} | answers differing |\n|---:|---:|---:|---:|---|---:|---:|\n",
            self.benchmark,
            self.questions,
            self.max_new_tokens,
            self.rows.first().map_or(0, |r| r.rounds.len()),
            self.rows.first().map_or(1, |r| r.batch)
        );
        for r in &self.rows {
            let each: Vec<String> = r.rounds.iter().map(|q| format!("{q:.1}")).collect();
            md += &format!(
                "| {} | {} | {:.2} | {:.2} | {} | {:.2}x | {} |\n",
                r.batch,
                r.groups,
                r.seconds,
                r.questions_per_s,
                each.join(", "),
                r.speedup,
                r.differing_answers
            );
        }
        md
    }
}

/// Answers `items` (their prompts in `style`) at each batch size of `batches`, the first
/// being the baseline, `rounds` times, the batch sizes alternating within each round (so a
/// noisy minute of a shared machine falls on all of them); a warm-up batch runs first. Each
/// row is the median of its rounds.
pub fn bench_eval(
    answerer: &ModelAnswerer,
    bench: &Benchmark,
    items: &[Item],
    style: PromptStyle,
    batches: &[usize],
    rounds: usize,
) -> anyhow::Result<EvalBenchResult> {
    if items.is_empty() || batches.is_empty() || batches.contains(&0) || rounds == 0 {
        bail!("bench eval needs items, batch sizes of at least 1 and at least one round");
    }
    let mut loader = ImageLoader::new();
    let prompts: Vec<Prompt> =
        items.iter().map(|i| Ok(prompt(bench, i, style, loader.load(i)?))).collect::<anyhow::Result<_>>()?;
    let warm = batches.iter().copied().max().unwrap_or(1).min(prompts.len());
    answerer.answer(&prompts[..warm])?;
    let mut qps: Vec<Vec<f64>> = vec![Vec::new(); batches.len()];
    let mut answers: Vec<Vec<String>> = vec![Vec::new(); batches.len()];
    for _ in 0..rounds {
        for (k, &batch) in batches.iter().enumerate() {
            let start = Instant::now();
            let mut got = Vec::with_capacity(prompts.len());
            for chunk in prompts.chunks(batch) {
                got.extend(answerer.answer(chunk)?);
            }
            qps[k].push(prompts.len() as f64 / start.elapsed().as_secs_f64());
            answers[k] = got;
        }
    }
    let base = median(&qps[0]);
    let rows = batches
        .iter()
        .enumerate()
        .map(|(k, &batch)| {
            let q = median(&qps[k]);
            EvalBenchRow {
                batch,
                groups: answerer.model.answer_groups(batch.min(prompts.len())),
                seconds: prompts.len() as f64 / q,
                questions_per_s: q,
                rounds: qps[k].clone(),
                speedup: q / base,
                differing_answers: answers[k].iter().zip(&answers[0]).filter(|(a, b)| a != b).count(),
            }
        })
        .collect();
    Ok(EvalBenchResult {
        benchmark: bench.name.to_string(),
        questions: prompts.len(),
        max_new_tokens: answerer.max_new_tokens,
        rows,
    })
}

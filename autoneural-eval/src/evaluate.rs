//! Scoring a vision-language model on held-out conversations: each assistant turn is
//! generated greedily from the conversation so far (earlier turns with their reference
//! answers, as in multi-turn benchmarks) and compared with the reference.

use std::collections::BTreeMap;
use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use autoneural_data::{Record, Role, SourceSpec};
use autoneural_model::generate::{GenerateOptions, Sampler, SamplingConfig, generate_from};
use autoneural_model::tokenizer::{ChatMessage, TextTokenizer};
use autoneural_model::vlm::{IMAGE_TAG, VisionLanguageModel};
use serde::{Deserialize, Serialize};

use crate::accuracy::{Scored, TaskScore, anls, exact_match, markdown_table, summarize};

#[derive(Debug, Clone)]
pub struct EvalOptions {
    pub max_new_tokens: usize,
    /// Records per task family (0: all).
    pub max_per_task: usize,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct EvalReport {
    pub files: Vec<PathBuf>,
    pub tasks: BTreeMap<String, TaskScore>,
    /// Exact match over all answers.
    pub overall_exact_match: f64,
    pub answers: usize,
    pub seconds: f64,
    /// The first few answers per family, to read.
    pub examples: Vec<Scored>,
    /// Task families of the training data with no file of the evaluated split: named, so a
    /// missing family is seen rather than dropped from the table.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub not_evaluated: Vec<String>,
}

impl EvalReport {
    pub fn markdown(&self) -> String {
        let missing = if self.not_evaluated.is_empty() {
            String::new()
        } else {
            format!("Not evaluated (no file of the split): {}.\n", self.not_evaluated.join(", "))
        };
        format!(
            "{}\nOverall exact match: {:.1}% over {} answers ({:.1} s).\n{missing}",
            markdown_table(&self.tasks),
            100.0 * self.overall_exact_match,
            self.answers,
            self.seconds
        )
    }
}

/// Answers every assistant turn of `record`.
fn score_record(
    model: &VisionLanguageModel,
    tok: &TextTokenizer,
    record: &Record,
    max_new: usize,
) -> Result<Vec<Scored>> {
    let images = record.images.iter().map(|i| i.load()).collect::<Result<Vec<_>, _>>()?;
    let (features, counts) = model.features_of(&images);
    let mut history: Vec<ChatMessage> = Vec::new();
    let tags: usize = record.messages.iter().map(|m| m.content.matches(IMAGE_TAG).count()).sum();
    let options = GenerateOptions { max_new_tokens: max_new, stop_ids: tok.stop_ids().to_vec(), ignore_eos: false };
    let mut out = Vec::new();
    for m in &record.messages {
        if m.role == Role::Assistant {
            let rendered = tok.render_chat(&history, true)?;
            let ids = model.image_tokens().encode(tok, &rendered, false, &counts)?;
            let embeds = model.merge(&ids, features.clone())?;
            let mut sampler = Sampler::new(SamplingConfig::default())?;
            let g = generate_from(&model.language, &ids, Some(embeds), &options, &mut sampler, |_| Ok(()))?;
            let predicted = tok.decode(&g.new_ids, true)?.trim().to_string();
            let question = history.last().map(|h| h.content.replace(IMAGE_TAG, "")).unwrap_or_default();
            out.push(Scored {
                task: record.task.clone().unwrap_or_else(|| "unlabelled".into()),
                question: question.trim().to_string(),
                exact: exact_match(&predicted, &m.content),
                anls: anls(&predicted, &m.content),
                gold: m.content.clone(),
                predicted,
            });
        }
        let mut content = m.content.clone();
        // Images without tags go before the first user text, as in training.
        if tags == 0 && !record.images.is_empty() && m.role == Role::User && !history.iter().any(|h| h.role == "user") {
            content = format!("{}{content}", IMAGE_TAG.repeat(record.images.len()));
        }
        history.push(ChatMessage { role: m.role.as_str().into(), content });
    }
    Ok(out)
}

/// Scores `model` on every record of `sources` (any format and layout), in file order.
pub fn evaluate(
    model: &VisionLanguageModel,
    tok: &TextTokenizer,
    sources: &[SourceSpec],
    options: &EvalOptions,
) -> Result<EvalReport> {
    let t0 = std::time::Instant::now();
    let mut scored = Vec::new();
    let mut per_task: BTreeMap<String, usize> = BTreeMap::new();
    for source in sources {
        let mut records = 0;
        let file = source.files.first().cloned().unwrap_or_default();
        let mut stream = SourceSpec { shuffle: 0, ..source.clone() }.open()?;
        while let Some(record) = stream.next_record() {
            let record = record?;
            records += 1;
            let task = record.task.clone().unwrap_or_else(|| "unlabelled".into());
            let seen = per_task.entry(task).or_default();
            if options.max_per_task > 0 && *seen >= options.max_per_task {
                continue;
            }
            *seen += 1;
            let s = score_record(model, tok, &record, options.max_new_tokens)
                .with_context(|| format!("{}:{}", file.display(), record.line))?;
            scored.extend(s);
        }
        if records == 0 {
            // An empty file scores nothing; a 0% (or a missing row) would pass for a result.
            bail!("{}: no conversations to evaluate (the file is empty)", file.display());
        }
    }
    let tasks = summarize(&scored);
    let answers = scored.len();
    let overall_exact_match = scored.iter().filter(|s| s.exact).count() as f64 / answers.max(1) as f64;
    let mut shown: BTreeMap<String, usize> = BTreeMap::new();
    let examples = scored
        .into_iter()
        .filter(|s| {
            let n = shown.entry(s.task.clone()).or_default();
            *n += 1;
            *n <= 3
        })
        .collect();
    Ok(EvalReport {
        files: sources.iter().flat_map(|s| s.files.clone()).collect(),
        tasks,
        overall_exact_match,
        answers,
        seconds: t0.elapsed().as_secs_f64(),
        examples,
        not_evaluated: Vec::new(),
    })
}

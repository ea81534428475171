//! The loop the CLI calls: prompts in batches to whatever produces answers, each batch's
//! predictions on disk before the next, then the scores.

use std::collections::HashSet;
use std::path::Path;

use anyhow::{Context, bail};

use crate::item::{ImageLoader, Item};
use crate::predictions::{PredictionsFile, header};
use crate::prompt::{Prompt, PromptStyle, prompt};
use crate::registry::Benchmark;
use crate::scores::{Scores, score};

/// Answers every item of `bench` not yet in the predictions file at `predictions`, `batch`
/// prompts at a time (`answer` gets a batch of prompts and returns one answer per prompt),
/// appends each batch to the file, and scores all the items. `progress(done, total)` is
/// called before the first batch and after each. A file of other columns is refused (see
/// [`crate::predictions`]); rows already in it are not asked again, so a killed run resumes
/// where it stopped (with the same prompt style: the file does not record it).
pub fn run(
    bench: &Benchmark,
    items: Vec<Item>,
    style: PromptStyle,
    predictions: &Path,
    batch: usize,
    mut answer: impl FnMut(&[Prompt]) -> anyhow::Result<Vec<String>>,
    mut progress: impl FnMut(usize, usize),
) -> anyhow::Result<Scores> {
    if batch == 0 {
        bail!("a batch of 0 prompts");
    }
    let mut seen = HashSet::new();
    if let Some(dup) = items.iter().find(|i| !seen.insert(i.index.as_str())) {
        bail!("two items have the index `{}`", dup.index);
    }
    let mut file = PredictionsFile::open(predictions, &header(&items))?;
    file.check_rows(&items)?;
    let pending: Vec<&Item> = items.iter().filter(|i| !file.done().contains_key(&i.index)).collect();
    let total = items.len();
    let mut done = total - pending.len();
    progress(done, total);
    let mut loader = ImageLoader::new();
    for chunk in pending.chunks(batch) {
        let mut prompts = Vec::with_capacity(chunk.len());
        for item in chunk {
            let images = loader.load(item)?;
            prompts.push(prompt(bench, item, style, images));
        }
        let answers = answer(&prompts).with_context(|| format!("answering items {}..", chunk[0].index))?;
        if answers.len() != chunk.len() {
            bail!("{} answers for a batch of {} prompts", answers.len(), chunk.len());
        }
        let rows: Vec<(&Item, &str)> = chunk.iter().copied().zip(answers.iter().map(String::as_str)).collect();
        file.append(&rows)?;
        done += chunk.len();
        progress(done, total);
    }
    let predicted = file.done().clone();
    file.finish(&items)?;
    let rows = items.iter().map(|i| (i, predicted[&i.index].as_str()));
    score(bench, rows, Some(style))
}

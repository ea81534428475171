//! Answers from a model: a batch of prompts decoded together
//! ([`VisionLanguageModel::generate_batch`]), greedily, each answer the new tokens up to the
//! stop token, without special tokens, trimmed. Images are decoded on all cores first.

use anyhow::Context;
use autoneural_model::generate::{GenerateOptions, SamplingConfig};
use autoneural_model::generate_batch::VlmRequest;
use autoneural_model::images::LoadedImage;
use autoneural_model::tokenizer::TextTokenizer;
use autoneural_model::vlm::VisionLanguageModel;
use rayon::prelude::*;

use crate::prompt::Prompt;

pub struct ModelAnswerer<'a> {
    pub model: &'a VisionLanguageModel,
    pub tokenizer: &'a TextTokenizer,
    pub max_new_tokens: usize,
}

impl ModelAnswerer<'_> {
    /// One answer per prompt, in order.
    pub fn answer(&self, prompts: &[Prompt]) -> anyhow::Result<Vec<String>> {
        let images: Vec<Vec<LoadedImage>> = prompts
            .par_iter()
            .map(|p| p.images.iter().map(|i| i.load().context("an image of the benchmark")).collect())
            .collect::<anyhow::Result<_>>()?;
        let requests: Vec<VlmRequest> =
            prompts.iter().zip(&images).map(|(p, imgs)| VlmRequest { prompt: &p.text, images: imgs }).collect();
        let options = GenerateOptions {
            max_new_tokens: self.max_new_tokens,
            stop_ids: self.tokenizer.stop_ids().to_vec(),
            ignore_eos: false,
        };
        let generations =
            self.model.generate_batch(self.tokenizer, &requests, false, &options, &SamplingConfig::default())?;
        generations
            .into_iter()
            .map(|g| Ok(self.tokenizer.decode(&g.generation.new_ids, true)?.trim().to_string()))
            .collect()
    }
}

//! Micro-batches for training: records drawn from a mixture, encoded with the chat
//! template (loss on assistant tokens only), padded, and their images decoded and
//! preprocessed the way inference does it.

use anyhow::{Context, Result};
use autoneural_model::images::{Preprocess, load_image};
use autoneural_model::tokenizer::TextTokenizer;
use autoneural_model::vlm::ImageTokens;
use burn::tensor::{Device, Tensor};

use crate::data::{MixtureSampler, Record, encode_record, pad_batch};
use crate::train::loss::DeviceBatch;

/// Turns records into device batches for one model.
pub struct Batcher {
    pub tokenizer: TextTokenizer,
    pub image_tokens: ImageTokens,
    pub tokens_per_image: usize,
    pub preprocess: Preprocess,
    pub pad_id: u32,
    pub device: Device,
}

impl Batcher {
    /// Encodes and pads `records`, loading their images; errors name the file and line.
    pub fn batch(&self, records: &[(String, Record)]) -> Result<DeviceBatch> {
        let mut seqs = Vec::with_capacity(records.len());
        let mut pixels = Vec::new();
        for (name, r) in records {
            let at = || format!("source {name:?}, line {}", r.line);
            let enc = encode_record(&self.tokenizer, r, self.image_tokens, self.tokens_per_image)
                .map_err(anyhow::Error::msg)
                .with_context(at)?;
            for path in &r.images {
                let img = load_image(path).with_context(at)?;
                pixels.push(self.preprocess.apply(&img, &self.device));
            }
            seqs.push(enc);
        }
        let batch = pad_batch(&seqs, self.pad_id);
        let pixels = (!pixels.is_empty()).then(|| Tensor::cat(pixels, 0));
        Ok(DeviceBatch { batch, pixels, records: records.len(), weights: Default::default() })
    }

    /// Draws `n` records from `sampler` and batches them.
    pub fn next_batch(&self, sampler: &mut MixtureSampler, n: usize) -> Result<DeviceBatch> {
        let records = (0..n).map(|_| sampler.next_record()).collect::<Result<Vec<_>, _>>()?;
        self.batch(&records)
    }
}

//! Micro-batches for training: records drawn from a mixture, encoded with the chat
//! template (loss on assistant tokens only), padded, and their images decoded and
//! preprocessed the way inference does it.

use anyhow::{Context, Result};
use autoneural_model::images::{Preprocess, load_image};
use autoneural_model::tokenizer::TextTokenizer;
use autoneural_model::vlm::ImageTokens;
use burn::tensor::{Device, Tensor};

use crate::train::loss::DeviceBatch;
use autoneural_data::{Encoded, MixtureSampler, Record, encode_record, pad_batch};

/// Turns records into device batches for one model.
pub struct Batcher {
    pub tokenizer: TextTokenizer,
    pub image_tokens: ImageTokens,
    pub tokens_per_image: usize,
    pub preprocess: Preprocess,
    pub pad_id: u32,
    pub device: Device,
    /// The longest sequence (tokens, image tokens included) a record may encode to
    /// (`data.max_seq_len`); a longer one is a bad record: attention's memory grows with
    /// the square of it.
    pub max_seq_len: usize,
}

/// A record ready to batch: its tokens, its images' encoder inputs and where it came from.
struct Prepared {
    encoded: Encoded,
    pixels: Vec<Tensor<4>>,
    origin: String,
}

/// Consecutive refused records after which skipping gives up: the data is not usable.
const MAX_REFUSED_IN_A_ROW: usize = 1000;

impl Batcher {
    /// Encodes one record and loads its images; errors name the source and line.
    fn prepare(&self, name: &str, r: &Record) -> Result<Prepared> {
        let at = || format!("source {name:?}, line {}", r.line);
        let encoded = encode_record(&self.tokenizer, r, self.image_tokens, self.tokens_per_image)
            .map_err(anyhow::Error::msg)
            .with_context(at)?;
        if encoded.ids.len() > self.max_seq_len {
            return Err(anyhow::anyhow!(
                "the conversation is {} tokens, more than data.max_seq_len = {}",
                encoded.ids.len(),
                self.max_seq_len
            ))
            .with_context(at);
        }
        let mut pixels = Vec::with_capacity(r.images.len());
        for path in &r.images {
            let img = load_image(path).with_context(at)?;
            pixels.push(self.preprocess.apply(&img, &self.device));
        }
        Ok(Prepared { encoded, pixels, origin: at() })
    }

    fn assemble(&self, prepared: Vec<Prepared>) -> DeviceBatch {
        let records = prepared.len();
        let mut seqs = Vec::with_capacity(records);
        let mut pixels = Vec::new();
        let mut origins = Vec::with_capacity(records);
        for p in prepared {
            seqs.push(p.encoded);
            pixels.extend(p.pixels);
            origins.push(p.origin);
        }
        let batch = pad_batch(&seqs, self.pad_id);
        let pixels = (!pixels.is_empty()).then(|| Tensor::cat(pixels, 0));
        DeviceBatch { batch, pixels, records, weights: Default::default(), origins }
    }

    /// Encodes and pads `records`, loading their images; errors name the file and line.
    pub fn batch(&self, records: &[(String, Record)]) -> Result<DeviceBatch> {
        let prepared = records.iter().map(|(name, r)| self.prepare(name, r)).collect::<Result<Vec<_>>>()?;
        Ok(self.assemble(prepared))
    }

    /// Draws records from `sampler` until `n` are usable and batches them. A record that
    /// cannot be used (too long, an image that does not decode) stops training, or under
    /// `on_bad_record = "skip"` is counted in the sampler and replaced by the next one.
    pub fn next_batch(&self, sampler: &mut MixtureSampler, n: usize) -> Result<DeviceBatch> {
        let mut prepared = Vec::with_capacity(n);
        let mut refused = 0;
        while prepared.len() < n {
            let (name, record) = sampler.next_record()?;
            match self.prepare(&name, &record) {
                Ok(p) => {
                    prepared.push(p);
                    refused = 0;
                }
                Err(e) if sampler.skips_bad_records() && refused < MAX_REFUSED_IN_A_ROW => {
                    sampler.refused.add(format!("{e:#}"));
                    refused += 1;
                }
                Err(e) if sampler.skips_bad_records() => {
                    return Err(e.context(format!("{MAX_REFUSED_IN_A_ROW} records in a row could not be used")));
                }
                Err(e) => return Err(e),
            }
        }
        Ok(self.assemble(prepared))
    }
}

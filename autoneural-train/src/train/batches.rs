//! Micro-batches for training: records drawn from a mixture, encoded with the chat
//! template (loss on assistant tokens only), padded, and their images decoded and
//! preprocessed the way inference does it. The host work (tokenizing, decoding,
//! resizing) is done for a batch's records in parallel, and by [`Prefetcher`] on a worker
//! thread ahead of the training step; only the copy to the device is left to the step.

use std::sync::mpsc::{Receiver, SyncSender, sync_channel};
use std::thread::JoinHandle;

use anyhow::{Context, Result, anyhow};
use autoneural_data::{Encoded, MixtureSampler, Record, SamplerState, encode_record, pad_batch};
use autoneural_model::images::{Planar, Preprocess};
use autoneural_model::tokenizer::TextTokenizer;
use autoneural_model::vlm::{ImageTokenCount, ImageTokens};
use burn::tensor::{Device, Tensor};
use rayon::prelude::*;

use crate::train::loss::DeviceBatch;

/// Turns records into device batches for one model.
#[derive(Clone)]
pub struct Batcher {
    pub tokenizer: TextTokenizer,
    pub image_tokens: ImageTokens,
    /// Each image's token count, from its encoder input's size.
    pub tokens_per_image: ImageTokenCount,
    pub preprocess: Preprocess,
    pub pad_id: u32,
    pub device: Device,
    /// The longest sequence (tokens, image tokens included) a record may encode to
    /// (`data.max_seq_len`); a longer one is a bad record: attention's memory grows with
    /// the square of it.
    pub max_seq_len: usize,
}

/// A record ready to batch, on the host: its tokens, its images' encoder inputs and where
/// it came from.
pub struct Prepared {
    encoded: Encoded,
    pixels: Vec<Planar>,
    origin: String,
}

/// Consecutive refused records after which skipping gives up: the data is not usable.
const MAX_REFUSED_IN_A_ROW: usize = 1000;

impl Batcher {
    /// Encodes one record and decodes and preprocesses its images; errors name the source
    /// and the record.
    pub fn prepare(&self, name: &str, r: &Record) -> Result<Prepared> {
        let at = || format!("source {name:?}, {}", r.place());
        // The images first: their sizes decide their token counts.
        let mut pixels = Vec::with_capacity(r.images.len());
        for image in &r.images {
            let img = image.load().with_context(at)?;
            pixels.push(self.preprocess.planar(&img));
        }
        let counts: Vec<usize> = pixels.iter().map(|p| self.tokens_per_image.at(p.height, p.width)).collect();
        let encoded = encode_record(&self.tokenizer, r, self.image_tokens, &counts)
            .map_err(anyhow::Error::msg)
            .with_context(at)?;
        if encoded.ids.len() > self.max_seq_len {
            return Err(anyhow!(
                "the conversation is {} tokens, more than data.max_seq_len = {}",
                encoded.ids.len(),
                self.max_seq_len
            ))
            .with_context(at);
        }
        Ok(Prepared { encoded, pixels, origin: at() })
    }

    /// The device batch of `prepared` records. Its images go through the encoder as one
    /// stack, so they must share a size: a processor that keeps each image's aspect
    /// (LFM2-VL's, LFM3-VL's) trains and calibrates on one image per batch, or on images of
    /// one size.
    pub fn assemble(&self, prepared: Vec<Prepared>) -> Result<DeviceBatch> {
        let sizes = |p: &Prepared| p.pixels.iter().map(|x| (x.height, x.width)).collect::<Vec<_>>();
        let mut all = prepared.iter().flat_map(|p| sizes(p).into_iter().map(move |s| (s, &p.origin)));
        if let Some(((h, w), first)) = all.next()
            && let Some(((h2, w2), other)) = all.find(|(s, _)| *s != (h, w))
        {
            return Err(anyhow!(
                "images of {w}x{h} ({first}) and {w2}x{h2} ({other}) in one batch: this model's processor keeps each \
                 image's size and a batch stacks them; use micro_batch = 1 with one image per record, or images of \
                 one size"
            ));
        }
        let records = prepared.len();
        let mut seqs = Vec::with_capacity(records);
        let mut pixels = Vec::new();
        let mut origins = Vec::with_capacity(records);
        for p in prepared {
            seqs.push(p.encoded);
            pixels.extend(p.pixels.into_iter().map(|x| x.to_device(&self.device)));
            origins.push(p.origin);
        }
        let batch = pad_batch(&seqs, self.pad_id);
        let pixels = (!pixels.is_empty()).then(|| Tensor::cat(pixels, 0));
        Ok(DeviceBatch { batch, pixels, records, weights: Default::default(), origins })
    }

    /// Encodes and pads `records`, loading their images; errors name the source and record.
    pub fn batch(&self, records: &[(String, Record)]) -> Result<DeviceBatch> {
        let prepared = records.par_iter().map(|(name, r)| self.prepare(name, r)).collect::<Result<Vec<_>>>()?;
        self.assemble(prepared)
    }

    /// Draws records from `sampler` until `n` are usable and prepares them (in parallel).
    /// A record that cannot be used (too long, an image that does not decode) stops
    /// training, or under `on_bad_record = "skip"` is counted in the sampler and replaced
    /// by the next one: the records used are those a one-by-one loop would use.
    pub fn draw(&self, sampler: &mut MixtureSampler, n: usize) -> Result<Vec<Prepared>> {
        let mut prepared = Vec::with_capacity(n);
        let mut refused = 0;
        while prepared.len() < n {
            let drawn = (prepared.len()..n).map(|_| sampler.next_record()).collect::<Result<Vec<_>, _>>()?;
            let results: Vec<Result<Prepared>> = drawn.par_iter().map(|(name, r)| self.prepare(name, r)).collect();
            for result in results {
                match result {
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
        }
        Ok(prepared)
    }

    /// [`Self::draw`] and [`Self::assemble`]: the next batch of `n` usable records.
    pub fn next_batch(&self, sampler: &mut MixtureSampler, n: usize) -> Result<DeviceBatch> {
        let prepared = self.draw(sampler, n)?;
        self.assemble(prepared)
    }
}

/// A micro-batch prepared ahead, and the sampler's state right after it was drawn (what a
/// checkpoint taken after its step records).
struct Ahead {
    prepared: Vec<Prepared>,
    state: SamplerState,
}

/// Draws and prepares micro-batches on a worker thread, up to `depth` ahead of the training
/// step: the sizes repeat `pattern` (one step's micro-batches), so the records, their order
/// and the skips are exactly those of drawing in the step itself.
pub struct Prefetcher {
    rx: Option<Receiver<Result<Ahead>>>,
    worker: Option<JoinHandle<()>>,
    batcher: Batcher,
}

impl Prefetcher {
    pub fn start(batcher: &Batcher, mut sampler: MixtureSampler, pattern: Vec<usize>, depth: usize) -> Self {
        let (tx, rx): (SyncSender<Result<Ahead>>, _) = sync_channel(depth.max(1));
        let worker_batcher = batcher.clone();
        let worker = std::thread::Builder::new()
            .name("autoneural-data".into())
            .spawn(move || {
                for &n in pattern.iter().cycle() {
                    let next =
                        worker_batcher.draw(&mut sampler, n).map(|prepared| Ahead { prepared, state: sampler.state() });
                    let failed = next.is_err();
                    // A closed channel: the stage ended (or stopped); nothing more is wanted.
                    if tx.send(next).is_err() || failed {
                        return;
                    }
                }
            })
            .expect("spawning the data worker thread");
        Self { rx: Some(rx), worker: Some(worker), batcher: batcher.clone() }
    }

    /// The next micro-batch on the device, and the sampler state after it.
    pub fn next(&mut self) -> Result<(DeviceBatch, SamplerState)> {
        let rx = self.rx.as_ref().ok_or_else(|| anyhow!("the data worker stopped after an error"))?;
        match rx.recv() {
            Ok(Ok(ahead)) => Ok((self.batcher.assemble(ahead.prepared)?, ahead.state)),
            Ok(Err(e)) => {
                self.rx = None;
                Err(e)
            }
            Err(_) => Err(anyhow!("the data worker thread ended unexpectedly")),
        }
    }
}

impl Drop for Prefetcher {
    fn drop(&mut self) {
        // Closing the channel ends the worker at its next send.
        self.rx = None;
        if let Some(w) = self.worker.take() {
            let _ = w.join();
        }
    }
}

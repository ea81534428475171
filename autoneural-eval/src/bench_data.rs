//! `bench data`: how fast the training data path delivers records (read, shuffled, images
//! decoded and preprocessed on the worker thread, tokenized, batched onto the device),
//! against how fast the experiment's model trains on them, measured in the same process:
//! the reader must never be what a run waits for.

use std::time::Instant;

use anyhow::{Result, bail};
use autoneural_data::mixture::BadRecordPolicy;
use autoneural_data::{MixtureSampler, SourceSpec};
use autoneural_train::train::Batcher;
use autoneural_train::train::batches::Prefetcher;
use burn::tensor::Device;
use serde::Serialize;

use crate::bench_train::{TrainBenchOptions, TrainBenchSpec, pick_stage};
use crate::host::Host;

#[derive(Debug, Clone)]
pub struct DataBenchOptions {
    /// Records to stream (timed), after one untimed micro-batch.
    pub records: usize,
    /// Records per shuffle block.
    pub shuffle: usize,
    /// Timed training steps of the baseline.
    pub train_steps: usize,
}

#[derive(Debug, Clone, Serialize)]
pub struct DataBenchResult {
    pub files: Vec<String>,
    pub format: String,
    pub records: usize,
    pub images: usize,
    pub shuffle: usize,
    pub micro_batch: usize,
    pub seconds: f64,
    pub records_per_s: f64,
    /// The experiment's training throughput on the same devices (`bench train`, the stage's
    /// micro-batch), samples per second.
    pub train_samples_per_s: f64,
    /// Streaming over training: above 1, the data path keeps up.
    pub ratio: f64,
    pub host: Host,
}

/// Streams `options.records` records of `spec` through the training data path (the
/// sampler, the prefetch worker, the batcher) and trains the experiment's model for
/// `train_steps` steps on `devices` as the baseline.
pub fn run(
    spec: &SourceSpec,
    batcher: &Batcher,
    exp: &TrainBenchSpec,
    devices: &[Device],
    options: &DataBenchOptions,
) -> Result<DataBenchResult> {
    let stage = pick_stage(exp, None)?;
    let micro_batch = stage.micro_batch;
    if options.records < micro_batch {
        bail!("--records {} is fewer than one micro-batch of {micro_batch}", options.records);
    }
    let named = vec![("bench".to_string(), 1.0, SourceSpec { shuffle: options.shuffle, ..spec.clone() })];
    let sampler = MixtureSampler::from_specs(named, BadRecordPolicy::Skip)?;
    let mut data = Prefetcher::start(batcher, sampler, vec![micro_batch], 2);
    // One untimed batch: the worker starts, the first block is read.
    data.next()?;
    let batches = options.records / micro_batch;
    let t0 = Instant::now();
    let mut images = 0;
    for _ in 0..batches {
        let (b, _) = data.next()?;
        images += b.pixels.as_ref().map_or(0, |p| p.dims()[0]);
    }
    let seconds = t0.elapsed().as_secs_f64();
    drop(data);
    let records = batches * micro_batch;
    let records_per_s = records as f64 / seconds;
    let train = crate::bench_train::run(
        exp,
        &TrainBenchOptions { batch: micro_batch, steps: options.train_steps, warmup: 1, ..Default::default() },
        devices,
    )?;
    Ok(DataBenchResult {
        files: spec.files.iter().map(|f| f.display().to_string()).collect(),
        format: format!("{:?}", spec.format).to_lowercase(),
        records,
        images,
        shuffle: options.shuffle,
        micro_batch,
        seconds,
        records_per_s,
        train_samples_per_s: train.samples_per_s,
        ratio: records_per_s / train.samples_per_s,
        host: Host::detect(),
    })
}

impl DataBenchResult {
    pub fn text(&self) -> String {
        format!(
            "{} ({}, {} file(s)), shuffle {}: {} records, {} images in {:.2} s\n\
             | path | samples/s |\n|---|---:|\n\
             | data: read + decode + preprocess + tokenize + batch | {:.1} |\n\
             | training step ({} per micro-batch) | {:.1} |\n\
             streaming / training: {:.2}x\n{}\n",
            self.files.first().map(String::as_str).unwrap_or(""),
            self.format,
            self.files.len(),
            self.shuffle,
            self.records,
            self.images,
            self.seconds,
            self.records_per_s,
            self.micro_batch,
            self.train_samples_per_s,
            self.ratio,
            self.host.line()
        )
    }
}

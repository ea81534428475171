//! Several prompts generated together, each with its own state: the prompts are
//! left-padded to one length with zero embeddings and prefilled as one batch, then every
//! decode step runs all unfinished sequences at once; a sequence that stops leaves the
//! batch. The weights are read once per step for the whole batch, which is where decoding
//! spends its time.
//!
//! Why left padding is exact for LFM2 (without `conv_bias`): a zero embedding stays zero
//! through every layer (RMSNorm, the bias-free projections and MLP map 0 to 0), so the
//! causal convolution of a real token sees zeros before the prompt, as an unpadded one
//! sees its zero initial state; attention hides pad keys from real queries and gives each
//! row its own positions (`DecodeState::pads`). A model with conv biases is generated one
//! prompt at a time instead.

use std::time::Instant;

use burn::module::Module;
use burn::tensor::{Device, Int, Tensor, TensorData};
use rayon::prelude::*;

use crate::error::{ModelError, Result};
use crate::generate::{GenerateOptions, Generation, Sampler, SamplingConfig, StopReason, generate_from};
use crate::images::LoadedImage;
use crate::text::model::PREFILL_CHUNK;
use crate::text::{Lfm2ForCausalLM, Logits};
use crate::tokenizer::TextTokenizer;
use crate::vlm::{ImageLayout, VisionLanguageModel, VlmGeneration};

/// One prompt of a batch: its ids, and its input embeddings `[1, t, hidden]` when they
/// are not the ids' (image features at image-token positions).
pub struct BatchPrompt {
    pub ids: Vec<u32>,
    pub embeds: Option<Tensor<3>>,
}

/// KV slots reserved up front beyond the longest prompt (the caches grow past it).
const RESERVE: usize = 1024;

/// Why a prompt cannot be generated from, or how many new tokens its context leaves.
fn room(model: &Lfm2ForCausalLM, ids: &[u32], max_new: usize) -> Result<usize> {
    if ids.is_empty() {
        return Err(ModelError::Invalid("the prompt encodes to no tokens".into()));
    }
    let vocab = model.config.vocab_size;
    if let Some(bad) = ids.iter().find(|&&id| id as usize >= vocab) {
        return Err(ModelError::Invalid(format!("prompt token id {bad} is outside the model's vocabulary of {vocab}")));
    }
    let context = model.config.max_position_embeddings;
    if ids.len() > context {
        return Err(ModelError::Invalid(format!(
            "the prompt is {} tokens, more than the model's context of {context} (max_position_embeddings)",
            ids.len()
        )));
    }
    Ok(max_new.min(context - ids.len()))
}

/// Rows of `logits` (`[n, 1, vocab]`) as vectors.
fn rows(logits: Tensor<3>) -> Vec<Vec<f32>> {
    let [n, _, v] = logits.dims();
    let flat = logits.into_data().try_into_vec_as::<f32>().expect("float logits");
    (0..n).map(|r| flat[r * v..(r + 1) * v].to_vec()).collect()
}

/// Generates from every prompt (each sampled as [`generate_from`] would, with its own
/// sampler of `sampling`). The results are in prompt order; timings are the batch's.
pub fn generate_batch(
    model: &Lfm2ForCausalLM,
    prompts: Vec<BatchPrompt>,
    options: &GenerateOptions,
    sampling: &SamplingConfig,
) -> Result<Vec<Generation>> {
    let limits = prompts.iter().map(|p| room(model, &p.ids, options.max_new_tokens)).collect::<Result<Vec<_>>>()?;
    if prompts.len() <= 1 || model.config.conv_bias {
        // One at a time: a single prompt needs no padding, and conv biases make pads nonzero.
        return prompts
            .into_iter()
            .map(|p| {
                let mut sampler = Sampler::new(sampling.clone())?;
                generate_from(model, &p.ids, p.embeds, options, &mut sampler, |_| Ok(()))
            })
            .collect();
    }
    let device = model.device();
    let n = prompts.len();
    let longest = prompts.iter().map(|p| p.ids.len()).max().unwrap_or(0);
    let pads: Vec<usize> = prompts.iter().map(|p| longest - p.ids.len()).collect();
    let hidden = model.config.hidden_size;
    let embeds: Vec<Tensor<3>> = prompts
        .iter()
        .zip(&pads)
        .map(|(p, &pad)| {
            let e = p.embeds.clone().unwrap_or_else(|| model.embed_ids(&p.ids));
            if pad == 0 { e } else { Tensor::cat(vec![Tensor::zeros([1, pad, hidden], &device), e], 1) }
        })
        .collect();
    let most = limits.iter().copied().max().unwrap_or(0);
    let mut samplers = (0..n).map(|_| Sampler::new(sampling.clone())).collect::<Result<Vec<_>>>()?;
    let mut new_ids: Vec<Vec<u32>> = vec![Vec::new(); n];
    let mut stop: Vec<StopReason> = (0..n)
        .map(|r| if limits[r] < options.max_new_tokens { StopReason::ContextFull } else { StopReason::MaxNewTokens })
        .collect();
    let t0 = Instant::now();
    let mut ttft = 0.0;
    let mut state = model.new_state(n, longest + most.min(RESERVE), &device);
    state.pads = pads;
    // Rows of the batch still generating, as indices into `prompts`.
    let mut active: Vec<usize> = (0..n).filter(|&r| limits[r] > 0).collect();
    if active.len() < n {
        state.retain(&active);
    }
    if !active.is_empty() {
        let kept: Vec<Tensor<3>> = active.iter().map(|&r| embeds[r].clone()).collect();
        let mut logits = rows(model.prefill_embeds(Tensor::cat(kept, 0), &mut state, PREFILL_CHUNK));
        ttft = t0.elapsed().as_secs_f64();
        loop {
            let mut next = Vec::with_capacity(active.len());
            let mut still = Vec::with_capacity(active.len());
            for (k, &r) in active.iter().enumerate() {
                let id = samplers[r].sample(&logits[k]);
                new_ids[r].push(id);
                if !options.ignore_eos && options.stop_ids.contains(&id) {
                    stop[r] = StopReason::StopToken;
                } else if new_ids[r].len() < limits[r] {
                    still.push(k);
                    next.push(id);
                }
            }
            if still.is_empty() {
                break;
            }
            if still.len() < active.len() {
                state.retain(&still);
                active = still.iter().map(|&k| active[k]).collect();
            }
            let ids = Tensor::<2, Int>::from_data(
                TensorData::new(next.iter().map(|&x| x as i64).collect::<Vec<_>>(), [next.len(), 1]),
                &device,
            );
            logits = rows(model.forward(ids, Some(&mut state), Logits::Last));
        }
    }
    let total = t0.elapsed().as_secs_f64();
    let produced: usize = new_ids.iter().map(Vec::len).sum();
    let decoded = produced.saturating_sub(new_ids.iter().filter(|v| !v.is_empty()).count());
    let prompt_tokens: usize = prompts.iter().map(|p| p.ids.len()).sum();
    Ok(prompts
        .into_iter()
        .zip(new_ids)
        .zip(stop)
        .map(|((p, ids), stop_reason)| Generation {
            prompt_ids: p.ids,
            new_ids: ids,
            stop_reason,
            ttft_ms: ttft * 1e3,
            prefill_tok_s: if ttft > 0.0 { prompt_tokens as f64 / ttft } else { 0.0 },
            decode_tok_s: if decoded > 0 { decoded as f64 / (total - ttft) } else { 0.0 },
            state_bytes: state.bytes(),
        })
        .collect())
}

/// One question of a batch to a vision-language model: the prompt (with `<image>` tags,
/// or images first) and its images.
pub struct VlmRequest<'a> {
    pub prompt: &'a str,
    pub images: &'a [LoadedImage],
}

/// Weights (f32 bytes) up to which a CPU batch is answered as one group per core. A small
/// model's ops are too small for the cores to share one without waiting on each other, and
/// its weights are cheap to read once per group; a large model decodes at the speed memory
/// delivers its weights, which one group reads once per step for all its rows. Measured
/// with `bench eval` at batch 8 on 2 cores (`docs/benchmarks.md`): the quickstart model
/// (4.5 MB) and models of 22 MB and 84 MB answer 1.2-1.6x faster in two groups than in one;
/// at 502 MB the two are equal within noise.
pub const GROUP_PER_CORE_BYTES: usize = 128 << 20;

/// A batch needs at least this many sequences per core before it is split.
const ROWS_PER_GROUP: usize = 2;

impl VisionLanguageModel {
    /// Into how many groups [`VisionLanguageModel::generate_batch`] splits `n` questions: one
    /// per core for a small model on the CPU (with at least [`ROWS_PER_GROUP`] each), else 1.
    pub fn answer_groups(&self, n: usize) -> usize {
        let split = rayon::current_num_threads().min(n / ROWS_PER_GROUP);
        // The parameter count (a walk over the modules) only where a split is possible.
        if split < 2 || self.language.device() != Device::flex() || self.num_params() * 4 > GROUP_PER_CORE_BYTES {
            return 1;
        }
        split
    }

    /// Answers several questions together ([`generate_batch`]); `raw` skips the chat
    /// template, as in [`VisionLanguageModel::generate`]. A small model on the CPU answers
    /// the batch as [`VisionLanguageModel::answer_groups`] groups side by side, each on its
    /// own core under this thread's quantization context; every answer is the one the
    /// question gets alone (padding is exact), so the grouping changes speed only.
    pub fn generate_batch(
        &self,
        tok: &TextTokenizer,
        requests: &[VlmRequest],
        raw: bool,
        options: &GenerateOptions,
        sampling: &SamplingConfig,
    ) -> Result<Vec<VlmGeneration>> {
        let groups = self.answer_groups(requests.len());
        let shared = if groups > 1 { crate::quant::context::share() } else { None };
        let Some(shared) = shared else {
            return self.generate_group(tok, requests, raw, options, sampling);
        };
        let size = requests.len().div_ceil(groups);
        let answers: Vec<Result<Vec<VlmGeneration>>> = requests
            .par_chunks(size)
            .map(|group| {
                let _context = shared.enter();
                self.generate_group(tok, group, raw, options, sampling)
            })
            .collect();
        let mut all = Vec::with_capacity(requests.len());
        for group in answers {
            all.extend(group?);
        }
        Ok(all)
    }

    /// One group of [`VisionLanguageModel::generate_batch`], decoded as one batch.
    fn generate_group(
        &self,
        tok: &TextTokenizer,
        requests: &[VlmRequest],
        raw: bool,
        options: &GenerateOptions,
        sampling: &SamplingConfig,
    ) -> Result<Vec<VlmGeneration>> {
        let t0 = Instant::now();
        let mut prompts = Vec::with_capacity(requests.len());
        let mut counts = Vec::with_capacity(requests.len());
        let images: Vec<&[LoadedImage]> = requests.iter().map(|r| r.images).collect();
        for (r, (features, n)) in requests.iter().zip(self.features_of_many(&images)) {
            let ids = self.prompt_ids(tok, r.prompt, raw, &n)?;
            let embeds = self.merge(&ids, features)?;
            prompts.push(BatchPrompt { ids, embeds: Some(embeds) });
            counts.push(n.iter().map(ImageLayout::tokens).collect::<Vec<_>>());
        }
        let vision_ms = t0.elapsed().as_secs_f64() * 1e3;
        let generations = generate_batch(&self.language, prompts, options, sampling)?;
        Ok(generations
            .into_iter()
            .zip(counts)
            .map(|(mut generation, image_tokens)| {
                generation.ttft_ms += vision_ms;
                VlmGeneration { generation, vision_ms, image_tokens }
            })
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::text::config::Lfm2Config;

    /// Small random hybrids: LFM2 (conv and attention layers) and LFM3 (conv, sliding
    /// attention over 4 positions, full attention), so prompts and answers cross the window.
    fn models() -> Vec<Lfm2ForCausalLM> {
        let device = Device::flex();
        ["lfm2-nano", "lfm3-nano"]
            .iter()
            .map(|name| {
                device.seed(5);
                let mut c = Lfm2Config::preset(name).expect("a preset");
                c.max_position_embeddings = 64;
                if let Some(o) = c.lfm3.as_mut() {
                    o.sliding_window = 4;
                }
                c.init(&device)
            })
            .collect()
    }

    #[test]
    fn a_batch_generates_what_each_prompt_generates_alone() {
        for m in models() {
            batch_equals_alone(&m);
        }
    }

    fn batch_equals_alone(m: &Lfm2ForCausalLM) {
        let prompts: Vec<Vec<u32>> = vec![vec![1, 5, 9, 2, 7, 7, 30], vec![1, 44], vec![1, 3, 3, 100, 6], vec![1; 12]];
        let options = GenerateOptions { max_new_tokens: 6, stop_ids: vec![], ignore_eos: false };
        let greedy = SamplingConfig::default();
        // Each prompt alone, and all of them as one batch.
        let both = |options: &GenerateOptions| {
            let alone: Vec<Vec<u32>> = prompts
                .iter()
                .map(|p| {
                    let mut s = Sampler::new(greedy.clone()).unwrap();
                    generate_from(m, p, None, options, &mut s, |_| Ok(())).unwrap().new_ids
                })
                .collect();
            let batch = prompts.iter().map(|p| BatchPrompt { ids: p.clone(), embeds: None }).collect();
            let together: Vec<Vec<u32>> =
                generate_batch(m, batch, options, &greedy).unwrap().into_iter().map(|g| g.new_ids).collect();
            (alone, together)
        };
        let (alone, together) = both(&options);
        assert_eq!(together, alone);

        // Rows that stop early leave the batch; the others go on as alone.
        let stop = alone[1][2];
        let (alone, together) = both(&GenerateOptions { stop_ids: vec![stop], ..options });
        assert_eq!(together, alone);
        assert!(together[1].len() <= 3);
    }

    #[test]
    fn padded_prefill_logits_match_unpadded() {
        for m in models() {
            padded_prefill_matches(&m);
        }
    }

    fn padded_prefill_matches(m: &Lfm2ForCausalLM) {
        let device = m.device();
        let (short, long) = (vec![1u32, 8, 3], vec![1u32, 4, 4, 9, 12, 2, 5]);
        let alone = |ids: &[u32]| {
            let mut st = m.new_state(1, 16, &device);
            m.prefill_embeds(m.embed_ids(ids), &mut st, PREFILL_CHUNK).into_data().try_to_vec::<f32>().unwrap()
        };
        let mut st = m.new_state(2, 16, &device);
        st.pads = vec![long.len() - short.len(), 0];
        let pad = Tensor::<3>::zeros([1, long.len() - short.len(), m.config.hidden_size], &device);
        let embeds = Tensor::cat(vec![Tensor::cat(vec![pad, m.embed_ids(&short)], 1), m.embed_ids(&long)], 0);
        let both = m.prefill_embeds(embeds, &mut st, 3).into_data().try_to_vec::<f32>().unwrap();
        let v = m.config.vocab_size;
        for (row, want) in [alone(&short), alone(&long)].iter().enumerate() {
            let got = &both[row * v..(row + 1) * v];
            let d = got.iter().zip(want).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);
            assert!(d < 1e-4, "row {row}: max difference {d}");
        }
    }
}

//! Autoregressive generation: one prefill over the prompt, then one decode step per token
//! with per-layer state; greedy or sampled (temperature, top-k, top-p, seeded).

use std::time::Instant;

use burn::tensor::Tensor;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::Serialize;

use crate::error::{ModelError, Result};
use crate::text::model::{PREFILL_CHUNK, ids_tensor};
use crate::text::{DecodeState, Lfm2ForCausalLM, Logits, StateBytes};

/// How the next token is chosen.
#[derive(Debug, Clone, PartialEq)]
pub struct SamplingConfig {
    /// `<= 0` means greedy (argmax).
    pub temperature: f32,
    pub top_k: Option<usize>,
    pub top_p: Option<f32>,
    pub seed: u64,
}

impl Default for SamplingConfig {
    fn default() -> Self {
        Self { temperature: 0.0, top_k: None, top_p: None, seed: 0 }
    }
}

impl SamplingConfig {
    pub fn validate(&self) -> Result<()> {
        if !self.temperature.is_finite() || self.temperature < 0.0 {
            return Err(ModelError::Invalid(format!(
                "temperature must be a finite number >= 0, got {}",
                self.temperature
            )));
        }
        if self.top_k == Some(0) {
            return Err(ModelError::Invalid("top-k must be at least 1".into()));
        }
        if let Some(p) = self.top_p {
            if !(p > 0.0 && p <= 1.0) {
                return Err(ModelError::Invalid(format!("top-p must be in (0, 1], got {p}")));
            }
        }
        Ok(())
    }
}

pub struct Sampler {
    config: SamplingConfig,
    rng: StdRng,
}

impl Sampler {
    pub fn new(config: SamplingConfig) -> Result<Self> {
        config.validate()?;
        let rng = StdRng::seed_from_u64(config.seed);
        Ok(Self { config, rng })
    }

    /// The next token id from one row of logits.
    pub fn sample(&mut self, logits: &[f32]) -> u32 {
        if self.config.temperature <= 0.0 {
            return argmax(logits);
        }
        let t = self.config.temperature;
        let mut cand: Vec<(u32, f32)> = logits.iter().enumerate().map(|(i, &l)| (i as u32, l / t)).collect();
        // descending by logit, ties to the lower id, so runs are reproducible
        cand.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
        if let Some(k) = self.config.top_k {
            cand.truncate(k.max(1));
        }
        let max = cand[0].1;
        let mut probs: Vec<f32> = cand.iter().map(|&(_, l)| (l - max).exp()).collect();
        let total: f32 = probs.iter().sum();
        probs.iter_mut().for_each(|p| *p /= total);
        if let Some(top_p) = self.config.top_p {
            // smallest prefix whose mass reaches top_p (always at least one token)
            let mut mass = 0.0;
            let mut keep = probs.len();
            for (i, p) in probs.iter().enumerate() {
                mass += p;
                if mass >= top_p {
                    keep = i + 1;
                    break;
                }
            }
            probs.truncate(keep);
            cand.truncate(keep);
            let total: f32 = probs.iter().sum();
            probs.iter_mut().for_each(|p| *p /= total);
        }
        let r: f32 = self.rng.random();
        let mut acc = 0.0;
        for (i, p) in probs.iter().enumerate() {
            acc += p;
            if r < acc {
                return cand[i].0;
            }
        }
        cand[cand.len() - 1].0
    }
}

/// Index of the largest value; the first one on ties (as torch.argmax).
pub fn argmax(values: &[f32]) -> u32 {
    let mut best = 0;
    for (i, &v) in values.iter().enumerate() {
        if v > values[best] {
            best = i;
        }
    }
    best as u32
}

#[derive(Debug, Clone)]
pub struct GenerateOptions {
    pub max_new_tokens: usize,
    pub stop_ids: Vec<u32>,
    /// Keep generating past stop tokens (as llama.cpp's `--ignore-eos`).
    pub ignore_eos: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum StopReason {
    StopToken,
    MaxNewTokens,
    /// The model's context (`max_position_embeddings`) is full.
    ContextFull,
}

/// KV slots reserved up front beyond the prompt; the caches grow past it as needed, so a
/// large `max_new_tokens` does not allocate a cache it may never fill.
const RESERVE: usize = 1024;

#[derive(Debug, Clone, Serialize)]
pub struct Generation {
    pub prompt_ids: Vec<u32>,
    pub new_ids: Vec<u32>,
    pub stop_reason: StopReason,
    /// Prompt in, first token out.
    pub ttft_ms: f64,
    pub prefill_tok_s: f64,
    /// Tokens produced by decode steps (all but the first) per second.
    pub decode_tok_s: f64,
    pub state_bytes: StateBytes,
}

fn last_row(logits: Tensor<3>) -> Vec<f32> {
    logits.into_data().try_into_vec_as::<f32>().expect("float logits")
}

/// Generates from `prompt_ids` (batch of one), calling `on_token` with each new id as soon
/// as it is chosen.
pub fn generate(
    model: &Lfm2ForCausalLM,
    prompt_ids: &[u32],
    options: &GenerateOptions,
    sampler: &mut Sampler,
    on_token: impl FnMut(u32) -> Result<()>,
) -> Result<Generation> {
    generate_from(model, prompt_ids, None, options, sampler, on_token)
}

/// [`generate`] with the prompt given as input embeddings `[1, t, hidden]` (one per prompt
/// id; e.g. image features at image-token positions). `prompt_ids` are only reported.
pub fn generate_from(
    model: &Lfm2ForCausalLM,
    prompt_ids: &[u32],
    prompt_embeds: Option<Tensor<3>>,
    options: &GenerateOptions,
    sampler: &mut Sampler,
    mut on_token: impl FnMut(u32) -> Result<()>,
) -> Result<Generation> {
    if prompt_ids.is_empty() {
        return Err(ModelError::Invalid("the prompt encodes to no tokens".into()));
    }
    let vocab = model.config.vocab_size;
    if let Some(bad) = prompt_ids.iter().find(|&&id| id as usize >= vocab) {
        return Err(ModelError::Invalid(format!("prompt token id {bad} is outside the model's vocabulary of {vocab}")));
    }
    // Positions beyond the context are outside what the model was built for (and an
    // unbounded request would grow the caches until memory runs out).
    let context = model.config.max_position_embeddings;
    if prompt_ids.len() > context {
        return Err(ModelError::Invalid(format!(
            "the prompt is {} tokens, more than the model's context of {context} (max_position_embeddings)",
            prompt_ids.len()
        )));
    }
    let room = context - prompt_ids.len();
    let max_new = options.max_new_tokens.min(room);
    if max_new < options.max_new_tokens {
        tracing::warn!(
            "{} new tokens asked, but the model's context of {context} tokens (max_position_embeddings) leaves \
             room for {room} after the {}-token prompt: generating at most {room}",
            options.max_new_tokens,
            prompt_ids.len()
        );
    }
    let device = model.device();
    let ids = |v: &[u32]| ids_tensor(v, &device);
    let mut state: DecodeState = model.new_state(1, prompt_ids.len() + max_new.min(RESERVE), &device);
    let t0 = Instant::now();
    let mut new_ids = Vec::new();
    let mut stop_reason =
        if max_new < options.max_new_tokens { StopReason::ContextFull } else { StopReason::MaxNewTokens };
    let mut ttft = 0.0;
    if max_new > 0 {
        let embeds = prompt_embeds.unwrap_or_else(|| model.embed_ids(prompt_ids));
        let logits = last_row(model.prefill_embeds(embeds, &mut state, PREFILL_CHUNK));
        let mut next = sampler.sample(&logits);
        ttft = t0.elapsed().as_secs_f64();
        loop {
            new_ids.push(next);
            on_token(next)?;
            if !options.ignore_eos && options.stop_ids.contains(&next) {
                stop_reason = StopReason::StopToken;
                break;
            }
            if new_ids.len() >= max_new {
                break;
            }
            let logits = last_row(model.forward(ids(&[next]), Some(&mut state), Logits::Last));
            next = sampler.sample(&logits);
        }
    }
    let total = t0.elapsed().as_secs_f64();
    let decode_steps = new_ids.len().saturating_sub(1);
    Ok(Generation {
        prompt_ids: prompt_ids.to_vec(),
        stop_reason,
        ttft_ms: ttft * 1e3,
        prefill_tok_s: if ttft > 0.0 { prompt_ids.len() as f64 / ttft } else { 0.0 },
        decode_tok_s: if decode_steps > 0 { decode_steps as f64 / (total - ttft) } else { 0.0 },
        state_bytes: state.bytes(),
        new_ids,
    })
}

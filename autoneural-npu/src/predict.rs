//! What the experiment report asks of the cost model: per VLM configuration and device,
//! encoder latency per resolution, time to first token, decode speed and the largest
//! context that fits. Every rendering says it is a prediction of the roofline model.

use std::fmt::Write;

use autoneural_model::text::Lfm2Config;
use autoneural_model::vlm::VlmConfig;
use serde::{Deserialize, Serialize};

use super::ops::{Bits, OpCost};
use super::profile::DeviceProfile;
use super::roofline::{footprint, graph_time};
use super::text::{Step, state_bytes, step_ops};
use super::vision::vision_ops;

/// What to predict.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Scenario {
    /// Encoder input sides to time (square images).
    pub resolutions: Vec<usize>,
    /// Text tokens of the prompt besides the image's.
    pub prompt_tokens: usize,
    /// Cache slots the decode graph is built for (static shapes: every step reads them all).
    pub decode_context: usize,
    /// The language model's Linear layers exported as 1x1 Conv (`--linear-as-conv`), as
    /// Qualcomm's LLM exports do (the default); false: as MatMul.
    #[serde(default = "yes")]
    pub linear_as_conv: bool,
    /// Positions per prefill call: the static prefill graph's length (`autoneural export
    /// --prefill-len`, 128 as in Qualcomm's LLM exports). A prompt takes
    /// `ceil(n / prefill_len)` calls of `prefill_len` positions (padded), each attending to
    /// the positions before it; the largest context must fit one call next to the full
    /// cache. 0: one call of exactly the prompt's length.
    #[serde(default = "default_prefill_len")]
    pub prefill_len: usize,
}

fn default_prefill_len() -> usize {
    128
}

fn yes() -> bool {
    true
}

impl Default for Scenario {
    fn default() -> Self {
        Self {
            resolutions: vec![256, 512, 768],
            prompt_tokens: 32,
            decode_context: 1024,
            linear_as_conv: true,
            prefill_len: default_prefill_len(),
        }
    }
}

/// The prediction. Times are model outputs, not measurements.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NpuPrediction {
    pub profile: String,
    /// `(resolution, milliseconds)`; `None` = the encoder does not fit the session memory.
    pub encoder_ms: Vec<(usize, Option<f64>)>,
    /// Encoder at the model's own image size + connector + prefill of the image and prompt
    /// tokens (`None` when the encoder or the prefill does not fit).
    pub ttft_ms: Option<f64>,
    /// One decode step over `decode_context` slots (`None` when it does not fit).
    pub decode_tok_s: Option<f64>,
    /// The largest power-of-two context (>= 128) whose prefill and decode fit; 0 if none.
    pub max_context: usize,
    pub decode_context: usize,
    pub prompt_tokens: usize,
}

/// The label every rendering carries.
pub fn label(profile: &str) -> String {
    format!("predicted (roofline model, {profile})")
}

/// The smallest context [`NpuPrediction::max_context`] reports.
pub const MIN_CONTEXT: usize = 128;

/// Time of an op list in ms, or `None` when its session does not fit `profile`.
fn run_ms(ops: &[OpCost], state: u64, bits: Bits, profile: &DeviceProfile) -> Option<f64> {
    (footprint(ops, state) <= profile.session_memory_bytes)
        .then(|| graph_time(ops, bits.activation, profile).total_s * 1e3)
}

/// The language model's prefill of `tokens` positions (last logits only) over `context` slots.
fn prefill(text: &Lfm2Config, tokens: usize, context: usize, bits: Bits, conv: bool) -> Option<Vec<OpCost>> {
    step_ops(text, Step { tokens, context, all_logits: false, linear_as_conv: conv }, bits).ok()
}

/// Whether a prompt of `tokens` and decoding fit with a cache of `context` slots.
fn fits(text: &Lfm2Config, tokens: usize, context: usize, bits: Bits, profile: &DeviceProfile, conv: bool) -> bool {
    let state = state_bytes(text, context, bits);
    let decode = step_ops(text, Step { tokens: 1, context, all_logits: false, linear_as_conv: conv }, bits);
    [prefill(text, tokens.min(context), context, bits, conv), decode.ok()]
        .iter()
        .all(|ops| ops.as_ref().is_some_and(|ops| footprint(ops, state) <= profile.session_memory_bytes))
}

/// Predicts `vlm` on `profile`: vision (encoder + connector) at `vision_bits`, language at
/// `lm_bits`.
pub fn predict_vlm(
    vlm: &VlmConfig,
    vision_bits: Bits,
    lm_bits: Bits,
    profile: &DeviceProfile,
    scenario: &Scenario,
) -> NpuPrediction {
    let encoder = |s: usize| {
        let (ops, tokens) = vision_ops(&vlm.encoder, &vlm.projector, s, vision_bits).ok()?;
        Some((run_ms(&ops, 0, vision_bits, profile)?, tokens))
    };
    let encoder_ms = scenario.resolutions.iter().map(|&s| (s, encoder(s).map(|e| e.0))).collect();
    let text = &vlm.text;
    let c = scenario.decode_context;
    let state = state_bytes(text, c, lm_bits);
    // The first prompt of a session: nothing cached yet, so its prefill attends to its own
    // positions only.
    let conv = scenario.linear_as_conv;
    let ttft_ms = encoder(vlm.encoder.image_size()).and_then(|(ms, image_tokens)| {
        let n = image_tokens + scenario.prompt_tokens;
        let call = if scenario.prefill_len == 0 {
            // one call of exactly n positions, nothing cached yet
            run_ms(&prefill(text, n, 0, lm_bits, conv)?, state_bytes(text, n, lm_bits), lm_bits, profile)?
        } else {
            // chunk i attends to the i * prefill_len positions before it (the runtime's
            // cache holds what was consumed; a session's first prompt starts empty)
            let p = scenario.prefill_len;
            let mut total = 0.0;
            for i in 0..n.div_ceil(p) {
                total += run_ms(&prefill(text, p, i * p, lm_bits, conv)?, state, lm_bits, profile)?;
            }
            total
        };
        Some(ms + call)
    });
    let decode_step = Step { tokens: 1, context: c, all_logits: false, linear_as_conv: scenario.linear_as_conv };
    let decode_tok_s = step_ops(text, decode_step, lm_bits)
        .ok()
        .and_then(|ops| run_ms(&ops, state, lm_bits, profile))
        .map(|ms| 1e3 / ms);
    let image_tokens = vlm.tokens_per_image(vlm.encoder.image_size(), vlm.encoder.image_size());
    // What one prefill call holds: a chunk of the static graph's length, or the whole prompt.
    let prompt = match scenario.prefill_len {
        0 => image_tokens + scenario.prompt_tokens,
        p => p,
    };
    let mut max_context = 0;
    let mut ctx = MIN_CONTEXT;
    while ctx <= text.max_position_embeddings && fits(text, prompt, ctx, lm_bits, profile, conv) {
        max_context = ctx;
        ctx *= 2;
    }
    NpuPrediction {
        profile: profile.name.clone(),
        encoder_ms,
        ttft_ms,
        decode_tok_s,
        max_context,
        decode_context: c,
        prompt_tokens: scenario.prompt_tokens,
    }
}

fn ms(v: Option<f64>) -> String {
    v.map_or("does not fit".into(), |x| format!("{x:.1} ms"))
}

impl NpuPrediction {
    /// What every rendering calls these numbers.
    pub fn kind(&self) -> String {
        label(&self.profile)
    }

    /// A markdown section, labelled as predicted.
    pub fn markdown(&self) -> String {
        let mut s = String::new();
        let _ = writeln!(s, "### NPU cost: {}\n", self.kind());
        let _ = writeln!(s, "| quantity | {} |\n|---|---|", self.kind());
        for (r, v) in &self.encoder_ms {
            let _ = writeln!(s, "| vision encoder + connector @ {r}x{r} | {} |", ms(*v));
        }
        let _ = writeln!(
            s,
            "| time to first token ({} prompt tokens + image) | {} |",
            self.prompt_tokens,
            ms(self.ttft_ms)
        );
        let decode = self.decode_tok_s.map_or("does not fit".into(), |t| format!("{t:.1} tok/s"));
        let _ = writeln!(s, "| decode @ {} context | {decode} |", self.decode_context);
        let _ = writeln!(s, "| largest context that fits | {} |", self.max_context);
        let _ = writeln!(s, "\nA model of the device (docs/npu_cost_model.md), not a measurement.");
        s
    }

    /// JSON with `kind` = "predicted (roofline model, <profile>)".
    pub fn to_json(&self) -> serde_json::Value {
        let mut v = serde_json::to_value(self).expect("plain data serializes");
        v["kind"] = serde_json::Value::String(self.kind());
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::paper;

    #[test]
    fn renderings_say_predicted() {
        let p = DeviceProfile::builtin("sa8295p").unwrap();
        let vlm = paper::preset("autoneural-paper").unwrap();
        let pred = predict_vlm(&vlm, Bits::W8A16, Bits::W4A16, &p, &Scenario::default());
        let md = pred.markdown();
        assert!(md.contains(&format!("predicted (roofline model, {})", p.name)), "{md}");
        assert_eq!(pred.to_json()["kind"], format!("predicted (roofline model, {})", p.name));
        assert_eq!(pred.encoder_ms.len(), 3);
    }
}

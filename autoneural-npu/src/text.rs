//! Analytic op lists of the LFM2 language model, from its config alone: one step of `t`
//! positions over a static cache of `context` slots, as `autoneural_export::lm` writes the
//! `prefill` (t = chunk) and `decode` (t = 1) graphs. Attention layers read the whole
//! cache (a static-shape graph cannot skip empty slots), LFM3's sliding layers a cache of
//! at most their window; conv layers read `kernel - 1` rows of state.

use autoneural_model::text::{LayerKind, Lfm2Config};

use super::builder::Builder;
use super::ops::{Bits, FLOAT_PARAM_BITS, OpCost, OpKind};

/// One language-model step.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Step {
    /// Positions computed in this call.
    pub tokens: usize,
    /// Cache slots attended besides this step's own keys.
    pub context: usize,
    /// Logits for every position (what the exported graphs compute) or only the last (what
    /// a host needs to pick the next token).
    pub all_logits: bool,
    /// Linear layers exported as 1x1 Conv (`--linear-as-conv`), which the HTP runs at its
    /// convolution efficiency.
    pub linear_as_conv: bool,
}

/// The ops of one step.
pub fn step_ops(c: &Lfm2Config, step: Step, bits: Bits) -> Result<Vec<OpCost>, String> {
    if step.tokens == 0 {
        return Err("a language-model step needs at least one position".into());
    }
    if c.num_key_value_heads == 0 || !c.num_attention_heads.is_multiple_of(c.num_key_value_heads) {
        return Err(format!("{} heads do not group over {} KV heads", c.num_attention_heads, c.num_key_value_heads));
    }
    let mut b = Builder::new(bits);
    if step.linear_as_conv {
        b.linear_kind = OpKind::Conv;
    }
    let (t, d, w) = (step.tokens, c.hidden_size, bits.weight);
    let td = (t * d) as u64;
    let (hd, h, kvh) = (c.head_dim, c.num_attention_heads, c.num_key_value_heads);
    let lfm3 = c.lfm3.as_ref();
    let (sandwich, gated) = (lfm3.is_some_and(|o| o.use_sandwich_norm), lfm3.is_some_and(|o| o.use_attention_gate));
    if c.layer_types.iter().any(|k| k.is_attention()) {
        // RoPE rows for this step's positions, gathered from float32 tables.
        for table in ["rope.cos", "rope.sin"] {
            let op = b.simple(table, OpKind::Gather, t as u64, (t * hd) as u64);
            op.weight_bytes = Bits::bytes((t * hd) as u64, FLOAT_PARAM_BITS);
        }
    }
    for (i, kind) in c.layer_types.iter().enumerate() {
        let n = |x: &str| format!("layers.{i}.{x}");
        b.norm(&n("operator_norm"), td, d as u64);
        match kind {
            LayerKind::Conv => {
                let k = c.conv_kernel;
                b.linear(&n("conv.in_proj"), t, d, 3 * d, c.conv_bias, w);
                b.pointwise(&n("conv.gate_b"), td, 2);
                let state = b.simple(&n("conv.window"), OpKind::DataMovement, td, ((t + k - 1) * d) as u64);
                state.state_bytes = Bits::bytes(((k - 1) * d) as u64, bits.kv);
                let conv = b.simple(&n("conv.conv"), OpKind::Depthwise, ((t + k - 1) * d) as u64, td);
                conv.macs = (t * d * k) as u64;
                conv.weight_bytes = Bits::bytes((d * k) as u64, w)
                    + if c.conv_bias { Bits::bytes(d as u64, FLOAT_PARAM_BITS) } else { 0 };
                b.pointwise(&n("conv.gate_c"), td, 2);
                b.linear(&n("conv.out_proj"), t, d, d, c.conv_bias, w);
            }
            LayerKind::Attention | LayerKind::SlidingAttention => {
                // A sliding layer's static cache is its window, whatever the context.
                let context = match kind {
                    LayerKind::SlidingAttention => step.context.min(c.sliding_window().unwrap_or(step.context)),
                    _ => step.context,
                };
                let (q, kv) = ((t * h * hd) as u64, (t * kvh * hd) as u64);
                b.linear(&n("self_attn.q_proj"), t, d, h * hd, false, w);
                b.linear(&n("self_attn.k_proj"), t, d, kvh * hd, false, w);
                b.linear(&n("self_attn.v_proj"), t, d, kvh * hd, false, w);
                b.norm(&n("self_attn.q_layernorm"), q, hd as u64);
                b.norm(&n("self_attn.k_layernorm"), kv, hd as u64);
                b.pointwise(&n("self_attn.rope_q"), q, 3);
                b.pointwise(&n("self_attn.rope_k"), kv, 3);
                let keys = (context + t) as u64;
                let cache = Bits::bytes((kvh * context * hd) as u64, bits.kv);
                let rows = (h * t) as u64;
                let scores = b.simple(&n("self_attn.scores"), OpKind::Attention, q + kv, rows * keys);
                scores.macs = rows * keys * hd as u64;
                scores.state_bytes = cache;
                b.pointwise(&n("self_attn.mask"), rows * keys, 2);
                b.simple(&n("self_attn.softmax"), OpKind::Softmax, rows * keys, rows * keys);
                let av = b.simple(&n("self_attn.probs_v"), OpKind::Attention, rows * keys + kv, q);
                av.macs = rows * keys * hd as u64;
                av.state_bytes = cache;
                // This step's keys and values go back to the host's cache.
                av.act_write_bytes += 2 * Bits::bytes(kv, bits.kv);
                if gated {
                    b.linear(&n("self_attn.g_proj"), t, d, h, false, w);
                    b.pointwise(&n("self_attn.gate_sigmoid"), (t * h) as u64, 1);
                    b.pointwise(&n("self_attn.gate_mul"), q, 2);
                }
                b.linear(&n("self_attn.out_proj"), t, h * hd, d, false, w);
            }
        }
        if sandwich {
            b.norm(&n("post_operator_norm"), td, d as u64);
        }
        b.pointwise(&n("residual1"), td, 2);
        b.norm(&n("ffn_norm"), td, d as u64);
        let f = c.mlp_width();
        let tf = (t * f) as u64;
        b.linear(&n("feed_forward.w1"), t, d, f, false, w);
        b.pointwise(&n("feed_forward.silu"), tf, 1);
        b.linear(&n("feed_forward.w3"), t, d, f, false, w);
        b.pointwise(&n("feed_forward.mul"), tf, 2);
        b.linear(&n("feed_forward.w2"), t, f, d, false, w);
        if sandwich {
            b.norm(&n("post_ffn_norm"), td, d as u64);
        }
        b.pointwise(&n("residual2"), td, 2);
    }
    b.norm("embedding_norm", td, d as u64);
    let rows = if step.all_logits { t } else { 1 };
    b.linear("lm_head", rows, d, c.vocab_size, false, bits.head_weight());
    Ok(b.ops)
}

/// Bytes of decode state at a context: every attention layer's K and V cache (a sliding
/// layer's bounded by its window) plus every conv layer's `kernel - 1` rows, at `bits.kv`.
pub fn state_bytes(c: &Lfm2Config, context: usize, bits: Bits) -> u64 {
    let kv = |positions: usize| 2 * Bits::bytes((c.num_key_value_heads * positions * c.head_dim) as u64, bits.kv);
    c.layer_types
        .iter()
        .map(|k| match k {
            LayerKind::Attention => kv(context),
            LayerKind::SlidingAttention => kv(context.min(c.sliding_window().unwrap_or(context))),
            LayerKind::Conv => Bits::bytes(((c.conv_kernel - 1) * c.hidden_size) as u64, bits.kv),
        })
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::totals;

    #[test]
    fn lfm2_1_2b_decode_reads_its_parameters_once() {
        let c = Lfm2Config::preset("lfm2-1.2b").unwrap();
        let ops =
            step_ops(&c, Step { tokens: 1, context: 0, all_logits: false, linear_as_conv: false }, Bits::FP32).unwrap();
        let params = totals(&ops).weight_bytes / 4;
        // 1.17B parameters, the tied head counted once (the gather table is not in the graph).
        assert!((1_160_000_000..1_180_000_000).contains(&params), "{params}");
        let macs = totals(&ops).macs;
        assert!(macs > params - 1_000_000 && macs < params + 1_000_000, "{macs} vs {params}");
    }

    #[test]
    fn the_cache_is_read_by_attention_layers_only() {
        let c = Lfm2Config::preset("lfm2-1.2b").unwrap();
        let a = step_ops(&c, Step { tokens: 1, context: 4096, all_logits: false, linear_as_conv: false }, Bits::W4A16)
            .unwrap();
        assert_eq!(totals(&a).state_bytes, state_bytes(&c, 4096, Bits::W4A16));
        // 6 layers x K and V x 8 heads x 64 x 1 byte per position, + 10 x 2 rows of 2048.
        assert_eq!(state_bytes(&c, 4096, Bits::W4A16), 6 * 2 * 8 * 64 * 4096 + 10 * 2 * 2048);
        assert!(
            step_ops(&c, Step { tokens: 0, context: 1, all_logits: true, linear_as_conv: false }, Bits::W4A16).is_err()
        );
    }
}

//! LFM2 configuration: the Hugging Face `config.json` in both of its styles, presets, and
//! the deterministic placement of attention layers used by the SSM:attention ablations.

use std::path::Path;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

use crate::checkpoint::json::Fields;
use crate::error::Result;

/// What mixes tokens in one decoder layer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum LayerKind {
    /// Gated short convolution (`"conv"` in `layer_types`).
    #[serde(rename = "conv")]
    Conv,
    /// Grouped-query attention over every earlier position (`"full_attention"`).
    #[serde(rename = "full_attention")]
    Attention,
    /// LFM3's grouped-query attention over the last `sliding_window` positions
    /// (`"sliding_attention"`), with its own RoPE; its KV cache never outgrows the window.
    #[serde(rename = "sliding_attention")]
    SlidingAttention,
}

impl LayerKind {
    /// Attention of either reach (full or sliding).
    pub fn is_attention(self) -> bool {
        matches!(self, Self::Attention | Self::SlidingAttention)
    }
}

/// How a layer kind's rotary frequencies are made (transformers' `rope_type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RopeType {
    /// `theta^(-2i/head_dim)` over the whole head.
    Default,
    /// `theta^(-2i/head_dim)` for the first `partial_rotary_factor * head_dim / 2` pairs and
    /// 0 (no rotation) for the rest, so part of each head carries no position.
    Proportional,
}

/// One layer kind's RoPE (an entry of LFM3's per-type `rope_parameters`).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct RopeSpec {
    pub rope_type: RopeType,
    pub theta: f64,
    /// The share of each head's pairs that rotate (`Proportional` only).
    pub partial_rotary_factor: f64,
    /// Frequencies are divided by it (`Proportional`'s `factor`, 1 by default).
    pub factor: f64,
}

impl RopeSpec {
    pub fn default_theta(theta: f64) -> Self {
        Self { rope_type: RopeType::Default, theta, partial_rotary_factor: 1.0, factor: 1.0 }
    }
}

/// What LFM3 (`model_type: lfm3`, transformers' `Lfm3Config`) adds to an LFM2 stack: sliding
/// attention layers over `sliding_window` positions, RoPE per layer kind (LFM3-1.7B: sliding
/// `default` at theta 1e4, full `proportional` at 1e6 rotating half of each head), RMSNorms
/// on each operator's and feed-forward's output before the residual (`use_sandwich_norm`:
/// `post_operator_norm`, `post_ffn_norm`), a sigmoid gate per head on attention's output
/// computed from the layer input (`use_attention_gate`: `self_attn.g_proj`, published as
/// `gate_proj`), and Qwen3-style attention keys (`o_proj`, `q_norm`, `k_norm`). Its MLP
/// width is `intermediate_size` as it is.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Lfm3Options {
    pub sliding_window: usize,
    pub sliding_rope: RopeSpec,
    pub full_rope: RopeSpec,
    pub use_sandwich_norm: bool,
    pub use_attention_gate: bool,
    pub attention_bias: bool,
}

/// The LFM2 hyper-parameters, normalised from whichever config style a checkpoint uses.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Lfm2Config {
    pub vocab_size: usize,
    pub hidden_size: usize,
    /// The raw `intermediate_size` (`block_ff_dim`); the MLP width is [`Self::mlp_width`].
    pub intermediate_size: usize,
    pub num_attention_heads: usize,
    pub num_key_value_heads: usize,
    pub head_dim: usize,
    pub max_position_embeddings: usize,
    pub norm_eps: f64,
    pub rope_theta: f64,
    /// Kernel length of the short convolution (`conv_L_cache`).
    pub conv_kernel: usize,
    pub conv_bias: bool,
    pub block_multiple_of: usize,
    pub block_ffn_dim_multiplier: Option<f64>,
    pub block_auto_adjust_ff_dim: bool,
    pub layer_types: Vec<LayerKind>,
    pub tie_word_embeddings: bool,
    pub bos_token_id: Option<u32>,
    pub eos_token_ids: Vec<u32>,
    pub pad_token_id: Option<u32>,
    /// LFM2-MoE (`model_type: lfm2_moe`): the layers from `num_dense_layers` on route each
    /// token to a few experts instead of one dense MLP.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub moe: Option<MoeConfig>,
    /// LFM3 (`model_type: lfm3`): sliding attention, per-kind RoPE, sandwich norms, gates.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lfm3: Option<Lfm3Options>,
}

/// LFM2-MoE's feed-forward (transformers' `Lfm2MoeSparseMoeBlock`): a sigmoid router over
/// `num_experts` SwiGLU experts of width `moe_intermediate_size`, the top
/// `num_experts_per_tok` chosen by score plus `expert_bias` (when `use_expert_bias`),
/// weighted by their sigmoid scores, normalised to sum to 1 (`norm_topk_prob`) and scaled
/// by `routed_scaling_factor`. The first `num_dense_layers` layers keep a dense MLP of
/// width `intermediate_size` (used as it is: no LFM2 width adjustment).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MoeConfig {
    pub num_experts: usize,
    pub num_experts_per_tok: usize,
    pub moe_intermediate_size: usize,
    pub num_dense_layers: usize,
    pub use_expert_bias: bool,
    pub routed_scaling_factor: f64,
    pub norm_topk_prob: bool,
}

impl Lfm2Config {
    /// Whether layer `i` routes to experts.
    pub fn is_moe_layer(&self, i: usize) -> bool {
        self.moe.as_ref().is_some_and(|m| i >= m.num_dense_layers)
    }

    pub fn num_layers(&self) -> usize {
        self.layer_types.len()
    }

    /// The layers that attend (full or sliding).
    pub fn attention_layers(&self) -> Vec<usize> {
        (0..self.num_layers()).filter(|&i| self.layer_types[i].is_attention()).collect()
    }

    /// How many layers are of `kind`.
    pub fn count(&self, kind: LayerKind) -> usize {
        self.layer_types.iter().filter(|&&k| k == kind).count()
    }

    /// The window of sliding attention layers (`None` without LFM3 options).
    pub fn sliding_window(&self) -> Option<usize> {
        self.lfm3.as_ref().map(|o| o.sliding_window)
    }

    /// The RoPE of attention layers of `kind`: LFM3's per-kind parameters, or LFM2's one
    /// `rope_theta`.
    pub fn rope_for(&self, kind: LayerKind) -> RopeSpec {
        match (&self.lfm3, kind) {
            (Some(o), LayerKind::SlidingAttention) => o.sliding_rope,
            (Some(o), _) => o.full_rope,
            (None, _) => RopeSpec::default_theta(self.rope_theta),
        }
    }

    /// The SwiGLU width, computed exactly as transformers' `Lfm2MLP` does.
    pub fn mlp_width(&self) -> usize {
        let mut d = self.intermediate_size;
        if self.block_auto_adjust_ff_dim {
            d = (2 * d) / 3;
            if let Some(mult) = self.block_ffn_dim_multiplier {
                d = (mult * d as f64) as usize;
                d = self.block_multiple_of * d.div_ceil(self.block_multiple_of);
            }
        }
        d
    }

    /// Reads a Hugging Face LFM2 `config.json`: the hub style (`full_attn_idxs`,
    /// `block_ff_dim`, `tie_embedding`, `rope_theta`) or the transformers-5 style
    /// (`layer_types`, `intermediate_size`, `rope_parameters`), and LFM2-MoE's
    /// (`model_type: lfm2_moe`). Unknown fields are ignored.
    pub fn from_hf_json(path: &Path, map: &Map<String, Value>) -> Result<Self> {
        let f = Fields::new(path, map);
        let model_type = map.get("model_type").and_then(|v| v.as_str());
        let is_moe = model_type == Some("lfm2_moe");
        let is_lfm3 = model_type == Some("lfm3");
        let moe = if is_moe {
            Some(MoeConfig {
                num_experts: f.usize_opt(&["num_experts"])?.unwrap_or(32),
                num_experts_per_tok: f.usize_opt(&["num_experts_per_tok"])?.unwrap_or(4),
                moe_intermediate_size: f.usize_opt(&["moe_intermediate_size"])?.unwrap_or(1792),
                num_dense_layers: f.usize_opt(&["num_dense_layers"])?.unwrap_or(2),
                use_expert_bias: f.bool_opt(&["use_expert_bias"])?.unwrap_or(true),
                routed_scaling_factor: f.f64_opt(&["routed_scaling_factor"])?.unwrap_or(1.0),
                norm_topk_prob: f.bool_opt(&["norm_topk_prob"])?.unwrap_or(true),
            })
        } else {
            None
        };
        let hidden_size = f.usize_req(&["hidden_size", "block_dim"])?;
        let num_attention_heads = f.usize_req(&["num_attention_heads", "num_heads"])?;
        let num_key_value_heads = f.usize_opt(&["num_key_value_heads"])?.unwrap_or(num_attention_heads);
        let default_head_dim = if is_lfm3 { 128 } else { hidden_size / num_attention_heads.max(1) };
        let head_dim = f.usize_opt(&["head_dim"])?.unwrap_or(default_head_dim);
        let num_layers = f.usize_req(&["num_hidden_layers"])?;
        if num_layers > MAX_LAYERS {
            return Err(f.invalid("num_hidden_layers", format!("{num_layers} is more than {MAX_LAYERS} layers")));
        }
        let layer_types = match (f.str_list_opt(&["layer_types"])?, f.usize_list_opt(&["full_attn_idxs"])?) {
            (Some(types), _) => {
                let kinds = types
                    .iter()
                    .map(|t| match *t {
                        "conv" => Ok(LayerKind::Conv),
                        "full_attention" | "attention" => Ok(LayerKind::Attention),
                        "sliding_attention" if is_lfm3 => Ok(LayerKind::SlidingAttention),
                        other => Err(f.invalid(
                            "layer_types",
                            if is_lfm3 {
                                format!(
                                    "unknown layer type {other:?} (expected \"conv\", \"sliding_attention\" or \
                                     \"full_attention\")"
                                )
                            } else {
                                format!("unknown layer type {other:?} (expected \"conv\" or \"full_attention\")")
                            },
                        )),
                    })
                    .collect::<Result<Vec<_>>>()?;
                if kinds.len() != num_layers {
                    return Err(f.invalid(
                        "layer_types",
                        format!("has {} entries but num_hidden_layers is {num_layers}", kinds.len()),
                    ));
                }
                kinds
            }
            (None, _) if is_lfm3 => LayerKind::lfm3_pattern(num_layers),
            (None, Some(idxs)) => {
                if let Some(bad) = idxs.iter().find(|&&i| i >= num_layers) {
                    return Err(
                        f.invalid("full_attn_idxs", format!("index {bad} is out of range for {num_layers} layers"))
                    );
                }
                LayerKind::with_attention_at(num_layers, &idxs)
            }
            // transformers' rule: with neither field every layer is attention
            (None, None) => vec![LayerKind::Attention; num_layers],
        };
        let lfm3 = if is_lfm3 { Some(lfm3_options(path, &f)?) } else { None };
        let rope_theta = match (&lfm3, f.object_opt("rope_parameters")?) {
            (Some(o), _) => Some(o.full_rope.theta),
            (None, Some(rp)) => Fields::new(path, rp).f64_opt(&["rope_theta"])?,
            (None, None) => None,
        };
        let rope_theta = match rope_theta {
            Some(t) => t,
            None => f.f64_opt(&["rope_theta"])?.unwrap_or(1_000_000.0),
        };
        let cfg = Self {
            vocab_size: f.usize_req(&["vocab_size"])?,
            hidden_size,
            intermediate_size: f.usize_req(&["intermediate_size", "block_ff_dim"])?,
            num_attention_heads,
            num_key_value_heads,
            head_dim,
            max_position_embeddings: f.usize_opt(&["max_position_embeddings"])?.unwrap_or(128_000),
            norm_eps: f.f64_opt(&["norm_eps", "block_norm_eps"])?.unwrap_or(1e-5),
            rope_theta,
            conv_kernel: f.usize_opt(&["conv_L_cache"])?.unwrap_or(if is_lfm3 { 7 } else { 3 }),
            conv_bias: f.bool_opt(&["conv_bias"])?.unwrap_or(false),
            block_multiple_of: f.usize_opt(&["block_multiple_of"])?.unwrap_or(256),
            block_ffn_dim_multiplier: match f.get(&["block_ffn_dim_multiplier"]) {
                Some(_) => f.f64_opt(&["block_ffn_dim_multiplier"])?,
                None if map.contains_key("block_ffn_dim_multiplier") => None, // explicit null
                None => Some(1.0),
            },
            // Lfm2MoeMLP and Lfm3MLP use `intermediate_size` as it is.
            block_auto_adjust_ff_dim: f.bool_opt(&["block_auto_adjust_ff_dim"])?.unwrap_or(!is_moe && !is_lfm3),
            layer_types,
            tie_word_embeddings: f.bool_opt(&["tie_word_embeddings", "tie_embedding"])?.unwrap_or(true),
            bos_token_id: f.ids_opt(&["bos_token_id"])?.and_then(|v| v.first().copied()),
            eos_token_ids: f.ids_opt(&["eos_token_id"])?.unwrap_or_default(),
            pad_token_id: f.ids_opt(&["pad_token_id"])?.and_then(|v| v.first().copied()),
            moe,
            lfm3,
        };
        cfg.check().map_err(|(field, message)| f.invalid(field, message))?;
        Ok(cfg)
    }

    /// Every size within bounds and consistent, by `config.json` field name: a mistyped or
    /// hostile size is refused here, before anything is allocated for it. The bounds are
    /// far above every published model.
    pub fn check(&self) -> std::result::Result<(), (&'static str, String)> {
        let bounded = [
            ("vocab_size", self.vocab_size, 1 << 22),
            ("hidden_size", self.hidden_size, 1 << 16),
            ("intermediate_size", self.intermediate_size, 1 << 20),
            ("num_attention_heads", self.num_attention_heads, 1024),
            ("num_key_value_heads", self.num_key_value_heads, 1024),
            ("head_dim", self.head_dim, 4096),
            ("max_position_embeddings", self.max_position_embeddings, 1 << 24),
            ("conv_L_cache", self.conv_kernel, 64),
            ("block_multiple_of", self.block_multiple_of, 1 << 16),
            ("num_hidden_layers", self.num_layers(), MAX_LAYERS),
        ];
        for (name, v, max) in bounded {
            if v > max {
                return Err((name, format!("{v} is more than {max}")));
            }
        }
        let positive = [
            ("vocab_size", self.vocab_size),
            ("hidden_size", self.hidden_size),
            ("num_attention_heads", self.num_attention_heads),
            ("num_key_value_heads", self.num_key_value_heads),
            ("head_dim", self.head_dim),
            ("conv_L_cache", self.conv_kernel),
            ("block_multiple_of", self.block_multiple_of),
            ("max_position_embeddings", self.max_position_embeddings),
        ];
        for (name, v) in positive {
            if v == 0 {
                return Err((name, "must be positive".into()));
            }
        }
        if let Some(m) = self.block_ffn_dim_multiplier
            && !(m.is_finite() && m > 0.0 && m <= 64.0)
        {
            return Err(("block_ffn_dim_multiplier", format!("{m} is not a number in (0, 64]")));
        }
        if self.mlp_width() == 0 {
            return Err(("intermediate_size", format!("{} gives an MLP of width 0", self.intermediate_size)));
        }
        if !(self.norm_eps.is_finite() && self.norm_eps >= 0.0) {
            return Err(("norm_eps", format!("{} is not a non-negative number", self.norm_eps)));
        }
        if !(self.rope_theta.is_finite() && self.rope_theta > 0.0) {
            return Err(("rope_theta", format!("{} is not a positive number", self.rope_theta)));
        }
        if !self.num_attention_heads.is_multiple_of(self.num_key_value_heads) {
            return Err((
                "num_key_value_heads",
                format!(
                    "{} does not divide num_attention_heads {}",
                    self.num_key_value_heads, self.num_attention_heads
                ),
            ));
        }
        if !self.head_dim.is_multiple_of(2) {
            return Err(("head_dim", format!("{} must be even for rotary embeddings", self.head_dim)));
        }
        if self.lfm3.is_none() && self.layer_types.contains(&LayerKind::SlidingAttention) {
            return Err((
                "layer_types",
                "sliding_attention layers are LFM3's (model_type \"lfm3\"); start from an lfm3 preset".into(),
            ));
        }
        if let Some(o) = &self.lfm3 {
            if !(1..=1 << 24).contains(&o.sliding_window) {
                return Err(("sliding_window", format!("{} is not 1 to {}", o.sliding_window, 1 << 24)));
            }
            for spec in [o.sliding_rope, o.full_rope] {
                if !(spec.theta.is_finite() && spec.theta > 0.0) {
                    return Err(("rope_parameters", format!("rope_theta {} is not a positive number", spec.theta)));
                }
                if !(0.0..=1.0).contains(&spec.partial_rotary_factor) {
                    return Err((
                        "rope_parameters",
                        format!("partial_rotary_factor {} is not in [0, 1]", spec.partial_rotary_factor),
                    ));
                }
                if !(spec.factor.is_finite() && spec.factor > 0.0) {
                    return Err(("rope_parameters", format!("factor {} is not a positive number", spec.factor)));
                }
            }
        }
        if let Some(m) = &self.moe {
            if !(1..=1024).contains(&m.num_experts) {
                return Err(("num_experts", format!("{} is not 1 to 1024", m.num_experts)));
            }
            if !(1..=m.num_experts).contains(&m.num_experts_per_tok) {
                return Err((
                    "num_experts_per_tok",
                    format!("{} is not 1 to num_experts ({})", m.num_experts_per_tok, m.num_experts),
                ));
            }
            if !(1..=1 << 20).contains(&m.moe_intermediate_size) {
                return Err(("moe_intermediate_size", format!("{} is not 1 to {}", m.moe_intermediate_size, 1 << 20)));
            }
            if !m.routed_scaling_factor.is_finite() {
                return Err(("routed_scaling_factor", format!("{} is not a number", m.routed_scaling_factor)));
            }
        }
        Ok(())
    }

    /// The transformers-5 style `config.json` for this configuration (what we save).
    pub fn to_hf_json(&self) -> Value {
        if let Some(o) = &self.lfm3 {
            return self.lfm3_json(o);
        }
        let mut v = self.lfm2_json();
        if let (Some(m), Some(obj)) = (&self.moe, v.as_object_mut()) {
            obj.insert("architectures".into(), json!(["Lfm2MoeForCausalLM"]));
            obj.insert("model_type".into(), json!("lfm2_moe"));
            for (k, x) in [
                ("num_experts", json!(m.num_experts)),
                ("num_experts_per_tok", json!(m.num_experts_per_tok)),
                ("moe_intermediate_size", json!(m.moe_intermediate_size)),
                ("num_dense_layers", json!(m.num_dense_layers)),
                ("use_expert_bias", json!(m.use_expert_bias)),
                ("routed_scaling_factor", json!(m.routed_scaling_factor)),
                ("norm_topk_prob", json!(m.norm_topk_prob)),
            ] {
                obj.insert(k.into(), x);
            }
        }
        v
    }

    fn lfm3_json(&self, o: &Lfm3Options) -> Value {
        let rope = |r: RopeSpec| {
            let mut v = json!({"rope_type": r.rope_type, "rope_theta": r.theta});
            if r.rope_type == RopeType::Proportional {
                v["partial_rotary_factor"] = json!(r.partial_rotary_factor);
                if r.factor != 1.0 {
                    v["factor"] = json!(r.factor);
                }
            }
            v
        };
        self.common_json_with(json!({
            "architectures": ["Lfm3ForCausalLM"],
            "model_type": "lfm3",
            "rope_parameters": {"sliding_attention": rope(o.sliding_rope), "full_attention": rope(o.full_rope)},
            "sliding_window": o.sliding_window,
            "use_sandwich_norm": o.use_sandwich_norm,
            "use_attention_gate": o.use_attention_gate,
            "attention_bias": o.attention_bias,
        }))
    }

    fn lfm2_json(&self) -> Value {
        self.common_json_with(json!({
            "architectures": ["Lfm2ForCausalLM"],
            "model_type": "lfm2",
            "rope_parameters": {"rope_type": "default", "rope_theta": self.rope_theta},
            "block_multiple_of": self.block_multiple_of,
            "block_ffn_dim_multiplier": self.block_ffn_dim_multiplier,
            "block_auto_adjust_ff_dim": self.block_auto_adjust_ff_dim,
        }))
    }

    /// The fields every LFM text config.json has, and a family's own (`extra`, an object).
    fn common_json_with(&self, extra: Value) -> Value {
        let mut v = json!({
            "vocab_size": self.vocab_size,
            "hidden_size": self.hidden_size,
            "intermediate_size": self.intermediate_size,
            "num_hidden_layers": self.num_layers(),
            "num_attention_heads": self.num_attention_heads,
            "num_key_value_heads": self.num_key_value_heads,
            "head_dim": self.head_dim,
            "max_position_embeddings": self.max_position_embeddings,
            "norm_eps": self.norm_eps,
            "conv_L_cache": self.conv_kernel,
            "conv_bias": self.conv_bias,
            "layer_types": self.layer_types,
            "tie_word_embeddings": self.tie_word_embeddings,
            "bos_token_id": self.bos_token_id,
            "eos_token_id": self.eos_token_ids,
            "pad_token_id": self.pad_token_id,
        });
        if let (Some(obj), Value::Object(extra)) = (v.as_object_mut(), extra) {
            obj.extend(extra);
        }
        v
    }

    /// Re-places attention: `count` attention layers by [`attention_placement`].
    pub fn with_attention_layers(mut self, count: usize) -> Self {
        let n = self.num_layers();
        self.layer_types = LayerKind::with_attention_at(n, &attention_placement(n, count.min(n)));
        self
    }

    /// Named shapes, one constructor each: the public LFM2 checkpoints, and small ones for
    /// tests and CPU runs with LFM2's 10:6 conv:attention mix scaled down.
    pub const PRESETS: &'static [(&'static str, fn() -> Self)] = &[
        ("lfm2-350m", || Self::shape(65536, 1024, 6656, 16, 8, 16, &LFM2_ATTENTION)),
        ("lfm2-700m", || Self::shape(65536, 1536, 10240, 24, 8, 16, &LFM2_ATTENTION)),
        ("lfm2-1.2b", || Self::shape(65536, 2048, 12288, 32, 8, 16, &LFM2_ATTENTION)),
        ("lfm2-tiny", || Self::shape(8192, 256, 1152, 4, 2, 8, &attention_placement(8, 3))),
        ("lfm2-nano", || Self::shape(512, 64, 288, 4, 2, 4, &attention_placement(4, 2))),
        // LFM2-8B-A1B: 24 layers (attention at 2, 6, 10, 14, 18, 21), 32 experts of width
        // 1792 with 4 per token past two dense layers; 8.3B parameters, 1.5B active.
        ("lfm2-8b-a1b", || Self::lfm2_moe_shape()),
        // LFM3-1.7B (13 conv : 5 sliding : 6 full over 24 layers, window 256), and small
        // ones with the same pattern.
        ("lfm3-1.7b", || Self::lfm3_shape(128_000, 2048, 7680, 16, 4, 128, 24, 256)),
        ("lfm3-tiny", || Self::lfm3_shape(8192, 256, 768, 4, 2, 64, 8, 64)),
        ("lfm3-nano", || Self::lfm3_shape(512, 64, 192, 4, 2, 16, 6, 16)),
    ];

    /// A preset by name.
    pub fn preset(name: &str) -> Option<Self> {
        Self::PRESETS.iter().find(|(n, _)| *n == name).map(|(_, make)| make())
    }

    pub fn preset_names() -> Vec<&'static str> {
        Self::PRESETS.iter().map(|(n, _)| *n).collect()
    }

    /// An LFM2 of these sizes with attention at `attention` (the rest as the published
    /// checkpoints have it).
    fn shape(
        vocab: usize,
        hidden: usize,
        ff: usize,
        heads: usize,
        kv: usize,
        layers: usize,
        attention: &[usize],
    ) -> Self {
        Self {
            vocab_size: vocab,
            hidden_size: hidden,
            intermediate_size: ff,
            num_attention_heads: heads,
            num_key_value_heads: kv,
            head_dim: hidden / heads,
            max_position_embeddings: 128_000,
            norm_eps: 1e-5,
            rope_theta: 1_000_000.0,
            conv_kernel: 3,
            conv_bias: false,
            block_multiple_of: if hidden >= 1024 { 256 } else { 32 },
            block_ffn_dim_multiplier: Some(1.0),
            block_auto_adjust_ff_dim: true,
            moe: None,
            lfm3: None,
            layer_types: LayerKind::with_attention_at(layers, attention),
            tie_word_embeddings: true,
            bos_token_id: Some(1),
            eos_token_ids: vec![7],
            pad_token_id: Some(0),
        }
    }
}

impl Lfm2Config {
    /// LFM2-8B-A1B's shapes (its published config).
    fn lfm2_moe_shape() -> Self {
        Self {
            block_auto_adjust_ff_dim: false,
            moe: Some(MoeConfig {
                num_experts: 32,
                num_experts_per_tok: 4,
                moe_intermediate_size: 1792,
                num_dense_layers: 2,
                use_expert_bias: true,
                routed_scaling_factor: 1.0,
                norm_topk_prob: true,
            }),
            ..Self::shape(65536, 2048, 7168, 32, 8, 24, &[2, 6, 10, 14, 18, 21])
        }
    }

    /// An LFM3 of these sizes with transformers' defaults: the layer pattern of
    /// [`LayerKind::lfm3_pattern`], 7-tap convolutions, sandwich norms, attention gates,
    /// sliding RoPE at theta 1e4 and proportional full RoPE at 1e6 on half of each head.
    #[allow(clippy::too_many_arguments)]
    fn lfm3_shape(
        vocab: usize,
        hidden: usize,
        ff: usize,
        heads: usize,
        kv: usize,
        head_dim: usize,
        layers: usize,
        window: usize,
    ) -> Self {
        Self {
            head_dim,
            conv_kernel: 7,
            // Unused by LFM3 (its MLP is `intermediate_size` wide) and not in its config.json:
            // what reading one back gives.
            block_multiple_of: 256,
            block_auto_adjust_ff_dim: false,
            layer_types: LayerKind::lfm3_pattern(layers),
            bos_token_id: Some(1),
            eos_token_ids: vec![7],
            lfm3: Some(Lfm3Options {
                sliding_window: window,
                sliding_rope: RopeSpec::default_theta(10_000.0),
                full_rope: LFM3_FULL_ROPE,
                use_sandwich_norm: true,
                use_attention_gate: true,
                attention_bias: false,
            }),
            ..Self::shape(vocab, hidden, ff, heads, kv, layers, &[])
        }
    }
}

/// Where the published LFM2 checkpoints (350M to 1.2B, 16 layers) have attention.
const LFM2_ATTENTION: [usize; 6] = [2, 5, 8, 10, 12, 14];

impl LayerKind {
    /// LFM3's default mix (transformers' `Lfm3Config`): full attention at `i % 4 == 2`,
    /// sliding at `i % 4 == 0` past the first layer, convolutions elsewhere (LFM3-1.7B's
    /// 13 : 5 : 6 over 24 layers).
    pub fn lfm3_pattern(n: usize) -> Vec<Self> {
        (0..n)
            .map(|i| match i % 4 {
                2 => Self::Attention,
                0 if i > 0 => Self::SlidingAttention,
                _ => Self::Conv,
            })
            .collect()
    }

    /// `n` layers of which `full + sliding` attend, placed by [`attention_placement`], the
    /// `full` ones evenly among those (ending at the last) and the rest sliding: with no
    /// sliding layers, `with_attention_at(n, attention_placement(n, full))`.
    pub fn with_full_and_sliding(n: usize, full: usize, sliding: usize) -> Vec<Self> {
        let attending = attention_placement(n, full + sliding);
        let full_at = attention_placement(attending.len(), full);
        let mut kinds = vec![Self::Conv; n];
        for (j, &i) in attending.iter().enumerate() {
            kinds[i] = if full_at.contains(&j) { Self::Attention } else { Self::SlidingAttention };
        }
        kinds
    }

    /// `n` layers, attention at the indices in `attention` and gated convolutions elsewhere.
    pub fn with_attention_at(n: usize, attention: &[usize]) -> Vec<Self> {
        (0..n).map(|i| if attention.contains(&i) { Self::Attention } else { Self::Conv }).collect()
    }
}

/// LFM3's fields of a `config.json`, with transformers' defaults for those absent.
fn lfm3_options(path: &Path, f: &Fields) -> Result<Lfm3Options> {
    let per_kind = f.object_opt("rope_parameters")?;
    let spec = |kind: &str, default: RopeSpec| -> Result<RopeSpec> {
        let Some(entry) = per_kind.and_then(|rp| rp.get(kind)) else { return Ok(default) };
        let Some(obj) = entry.as_object() else {
            return Err(f.invalid("rope_parameters", format!("{kind:?} is not an object of RoPE parameters")));
        };
        let e = Fields::new(path, obj);
        let rope_type = match e.str_opt(&["rope_type", "type"])?.unwrap_or("default") {
            "default" => RopeType::Default,
            "proportional" => RopeType::Proportional,
            other => {
                return Err(f.invalid(
                    "rope_parameters",
                    format!("{kind}: rope_type {other:?} is not supported (expected \"default\" or \"proportional\")"),
                ));
            }
        };
        Ok(RopeSpec {
            rope_type,
            theta: e.f64_opt(&["rope_theta"])?.unwrap_or(default.theta),
            partial_rotary_factor: e.f64_opt(&["partial_rotary_factor"])?.unwrap_or(1.0),
            factor: e.f64_opt(&["factor"])?.unwrap_or(1.0),
        })
    };
    Ok(Lfm3Options {
        sliding_window: f.usize_opt(&["sliding_window"])?.unwrap_or(256),
        sliding_rope: spec("sliding_attention", RopeSpec::default_theta(10_000.0))?,
        full_rope: spec("full_attention", LFM3_FULL_ROPE)?,
        use_sandwich_norm: f.bool_opt(&["use_sandwich_norm"])?.unwrap_or(true),
        use_attention_gate: f.bool_opt(&["use_attention_gate"])?.unwrap_or(true),
        attention_bias: f.bool_opt(&["attention_bias"])?.unwrap_or(false),
    })
}

/// LFM3's full-attention RoPE when a config gives none.
const LFM3_FULL_ROPE: RopeSpec =
    RopeSpec { rope_type: RopeType::Proportional, theta: 1_000_000.0, partial_rotary_factor: 0.5, factor: 1.0 };

/// The most decoder layers a config may have (published LFM2 models have 16 to 24).
pub const MAX_LAYERS: usize = 1024;

/// Where `count` attention layers go among `num_layers`: evenly spaced and ending at the
/// last layer, `idx_i = ceil((i + 1) * num_layers / count) - 1` for `i in 0..count`.
///
/// Deterministic and nested in spirit: 0 gives a pure-conv stack, `num_layers` a pure
/// transformer, and 6 of 16 gives {2, 5, 7, 10, 13, 15} (LFM2 ships {2, 5, 8, 10, 12, 14}).
pub fn attention_placement(num_layers: usize, count: usize) -> Vec<usize> {
    let count = count.min(num_layers);
    (0..count).map(|i| ((i + 1) * num_layers).div_ceil(count) - 1).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mlp_width_matches_published_checkpoints() {
        assert_eq!(Lfm2Config::preset("lfm2-1.2b").unwrap().mlp_width(), 8192);
        assert_eq!(Lfm2Config::preset("lfm2-350m").unwrap().mlp_width(), 4608);
    }

    #[test]
    fn placement_covers_the_whole_ratio_sweep() {
        for n in [1usize, 4, 7, 16] {
            assert!(attention_placement(n, 0).is_empty());
            assert_eq!(attention_placement(n, n), (0..n).collect::<Vec<_>>());
            for c in 0..=n {
                let p = attention_placement(n, c);
                assert_eq!(p.len(), c);
                assert!(p.windows(2).all(|w| w[0] < w[1]), "{p:?}");
                if c > 0 {
                    assert_eq!(*p.last().unwrap(), n - 1);
                }
            }
        }
        assert_eq!(attention_placement(16, 6), vec![2, 5, 7, 10, 13, 15]);
    }
}

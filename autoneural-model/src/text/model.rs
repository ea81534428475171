//! The LFM2 hybrid decoder: embedding -> layers (conv or attention, each followed by a
//! SwiGLU MLP, both pre-norm residual) -> `embedding_norm` -> LM head (tied or not).
//! Field names mirror the Hugging Face keys so checkpoints load without remapping.

use burn::module::Module;
use burn::nn::{Embedding, EmbeddingConfig, Initializer};
use burn::tensor::{Bool, Device, Int, Tensor, TensorData};

use crate::kernels::WeightLayout;
use crate::nn::{Linear, LinearConfig, RmsNorm, RmsNormConfig, weight_product};
use crate::quant::Axes;
use crate::quant::activations::current_qat;
use crate::quant::qat::weight_value;
use crate::text::attention::{Attention, AttentionConfig, hidden_keys, sliding_hidden_keys};
use crate::text::config::{LayerKind, Lfm2Config};
use crate::text::mlp::{Mlp, MlpConfig};
use crate::text::moe::SparseMoe;
use crate::text::rope::Rope;
use crate::text::shortconv::{ShortConv, ShortConvConfig};
use crate::text::state::{DecodeState, LayerState};

/// One decoder layer: `h += op(operator_norm(h)); h += feed_forward(ffn_norm(h))`, where
/// `op` is a gated short convolution (`conv`) or attention (`self_attn`, full or sliding),
/// as `layer_types` says. LFM3's sandwich norms normalise each branch's output before the
/// residual: `h += post_operator_norm(op(..))`, `h += post_ffn_norm(feed_forward(..))`.
/// The variant adds no segment to checkpoint keys (`layers.N.conv.*`).
#[derive(Module, Debug)]
pub enum DecoderLayer {
    Conv(ConvLayer),
    Attention(AttentionLayer),
}

/// A layer's feed-forward: LFM2's SwiGLU, or LFM2-MoE's routed experts. The variant adds
/// no segment to checkpoint keys (`layers.N.feed_forward.w1`, `...feed_forward.experts.E.w1`).
#[derive(Module, Debug)]
pub enum FeedForward {
    Dense(Mlp),
    Moe(SparseMoe),
}

impl FeedForward {
    /// `[b, t, hidden] -> [b, t, hidden]`
    pub fn forward(&self, x: Tensor<3>) -> Tensor<3> {
        match self {
            Self::Dense(m) => m.forward(x),
            Self::Moe(m) => m.forward(x),
        }
    }

    /// The dense MLP (`None` for routed experts).
    pub fn dense(&self) -> Option<&Mlp> {
        match self {
            Self::Dense(m) => Some(m),
            Self::Moe(_) => None,
        }
    }

    /// Parameters one token's pass reads.
    pub fn active_params(&self) -> usize {
        match self {
            Self::Dense(m) => m.num_params(),
            Self::Moe(m) => m.active_params(),
        }
    }
}

/// Keys `operator_norm`, `ffn_norm`, `feed_forward`, `conv` (LFM3: `post_operator_norm`,
/// `post_ffn_norm`).
#[derive(Module, Debug)]
pub struct ConvLayer {
    pub operator_norm: RmsNorm,
    pub ffn_norm: RmsNorm,
    pub feed_forward: FeedForward,
    pub conv: ShortConv,
    pub post_operator_norm: Option<RmsNorm>,
    pub post_ffn_norm: Option<RmsNorm>,
}

/// Keys `operator_norm`, `ffn_norm`, `feed_forward`, `self_attn` (LFM3:
/// `post_operator_norm`, `post_ffn_norm`).
#[derive(Module, Debug)]
pub struct AttentionLayer {
    pub operator_norm: RmsNorm,
    pub ffn_norm: RmsNorm,
    pub feed_forward: FeedForward,
    pub self_attn: Attention,
    pub post_operator_norm: Option<RmsNorm>,
    pub post_ffn_norm: Option<RmsNorm>,
}

/// What mixes the tokens of a layer.
pub enum Mixer<'a> {
    Conv(&'a ShortConv),
    Attention(&'a Attention),
}

/// A [`DecoderLayer`] of `kind` with `config`'s sizes.
#[derive(Debug, Clone)]
pub struct DecoderLayerConfig<'a> {
    pub config: &'a Lfm2Config,
    pub kind: LayerKind,
    /// Routed experts instead of the dense MLP (LFM2-MoE past `num_dense_layers`).
    pub moe: bool,
}

impl DecoderLayerConfig<'_> {
    pub fn init(&self, device: &Device) -> DecoderLayer {
        let c = self.config;
        let d = c.hidden_size;
        // Field by field in checkpoint order: a seed draws the same weights in every layout.
        let operator_norm = RmsNormConfig::new(d, c.norm_eps).init(device);
        let ffn_norm = RmsNormConfig::new(d, c.norm_eps).init(device);
        let feed_forward = match (&c.moe, self.moe) {
            (Some(m), true) => FeedForward::Moe(m.init(d, device)),
            _ => FeedForward::Dense(MlpConfig::new(d, c.mlp_width()).init(device)),
        };
        let sandwich = || {
            c.lfm3.as_ref().is_some_and(|o| o.use_sandwich_norm).then(|| RmsNormConfig::new(d, c.norm_eps).init(device))
        };
        let (post_operator_norm, post_ffn_norm) = (sandwich(), sandwich());
        match self.kind {
            LayerKind::Conv => DecoderLayer::Conv(ConvLayer {
                operator_norm,
                ffn_norm,
                feed_forward,
                conv: ShortConvConfig::new(d, c.conv_kernel, c.conv_bias).init(device),
                post_operator_norm,
                post_ffn_norm,
            }),
            LayerKind::Attention | LayerKind::SlidingAttention => DecoderLayer::Attention(AttentionLayer {
                operator_norm,
                ffn_norm,
                feed_forward,
                self_attn: AttentionConfig {
                    hidden: d,
                    heads: c.num_attention_heads,
                    kv_heads: c.num_key_value_heads,
                    head_dim: c.head_dim,
                    eps: c.norm_eps,
                    gate: c.lfm3.as_ref().is_some_and(|o| o.use_attention_gate),
                    bias: c.lfm3.as_ref().is_some_and(|o| o.attention_bias),
                }
                .init(device),
                post_operator_norm,
                post_ffn_norm,
            }),
        }
    }
}

impl DecoderLayer {
    pub fn operator_norm(&self) -> &RmsNorm {
        match self {
            Self::Conv(l) => &l.operator_norm,
            Self::Attention(l) => &l.operator_norm,
        }
    }

    pub fn ffn_norm(&self) -> &RmsNorm {
        match self {
            Self::Conv(l) => &l.ffn_norm,
            Self::Attention(l) => &l.ffn_norm,
        }
    }

    pub fn feed_forward(&self) -> &FeedForward {
        match self {
            Self::Conv(l) => &l.feed_forward,
            Self::Attention(l) => &l.feed_forward,
        }
    }

    /// LFM3's sandwich norms on the operator's and the feed-forward's output.
    pub fn post_norms(&self) -> (Option<&RmsNorm>, Option<&RmsNorm>) {
        match self {
            Self::Conv(l) => (l.post_operator_norm.as_ref(), l.post_ffn_norm.as_ref()),
            Self::Attention(l) => (l.post_operator_norm.as_ref(), l.post_ffn_norm.as_ref()),
        }
    }

    pub fn mixer(&self) -> Mixer<'_> {
        match self {
            Self::Conv(l) => Mixer::Conv(&l.conv),
            Self::Attention(l) => Mixer::Attention(&l.self_attn),
        }
    }

    /// `step`: the inputs its attention kind shares this step (`None` for a conv layer).
    fn forward(
        &self,
        h: Tensor<3>,
        step: Option<&StepInputs>,
        start: usize,
        state: Option<&mut LayerState>,
    ) -> Tensor<3> {
        let normed = self.operator_norm().forward(h.clone());
        let mixed = match self.mixer() {
            Mixer::Conv(conv) => conv.forward(normed, state.map(LayerState::conv)),
            Mixer::Attention(attn) => {
                let step = step.expect("an attention layer's step inputs");
                attn.forward(normed, (&step.cos, &step.sin), start, state.map(LayerState::kv), step.hidden.as_ref())
            }
        };
        let (post_op, post_ffn) = self.post_norms();
        let mixed = match post_op {
            Some(n) => n.forward(mixed),
            None => mixed,
        };
        let h = h + mixed;
        let ff = self.feed_forward().forward(self.ffn_norm().forward(h.clone()));
        let ff = match post_ffn {
            Some(n) => n.forward(ff),
            None => ff,
        };
        h + ff
    }
}

/// What the attention layers of one kind share in a step: RoPE tables `[rows, 1, t,
/// head_dim]` and the mask of hidden keys, built once for all of them.
pub struct StepInputs {
    pub cos: Tensor<4>,
    pub sin: Tensor<4>,
    pub hidden: Option<Tensor<3, Bool>>,
}

/// Key prefix `model.`: `embed_tokens`, `layers.N`, `embedding_norm`.
#[derive(Module, Debug)]
pub struct Lfm2Model {
    pub embed_tokens: Embedding,
    pub layers: Vec<DecoderLayer>,
    pub embedding_norm: RmsNorm,
}

/// Prompts are prefilled in chunks of at most this many positions.
pub const PREFILL_CHUNK: usize = 512;

/// Which positions need logits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Logits {
    All,
    /// Only the last position (generation): the LM head runs on one row.
    Last,
}

/// One sequence of token ids as a `[1, t]` tensor.
pub fn ids_tensor(ids: &[u32], device: &Device) -> Tensor<2, Int> {
    Tensor::from_data(TensorData::new(ids.iter().map(|&x| x as i64).collect::<Vec<_>>(), [1, ids.len()]), device)
}

/// LFM2 with its LM head. `lm_head` is absent when the embedding is tied.
#[derive(Module, Debug)]
pub struct Lfm2ForCausalLM {
    pub model: Lfm2Model,
    pub lm_head: Option<Linear>,
    #[module(skip)]
    pub config: Lfm2Config,
    #[module(skip)]
    rope: Rope,
    /// Sliding attention's RoPE (LFM3; for LFM2 the same as `rope`, unused).
    #[module(skip)]
    sliding_rope: Rope,
}

impl Lfm2Config {
    /// A randomly initialised model (lazy: parameters materialise on first use or are
    /// replaced by a checkpoint without ever being drawn).
    pub fn init(&self, device: &Device) -> Lfm2ForCausalLM {
        let config = self;
        let layers = config
            .layer_types
            .iter()
            .enumerate()
            .map(|(i, &kind)| DecoderLayerConfig { config, kind, moe: config.is_moe_layer(i) }.init(device))
            .collect();
        let embed_tokens = EmbeddingConfig::new(config.vocab_size, config.hidden_size)
            .with_initializer(Initializer::Normal { mean: 0.0, std: 0.02 })
            .init(device);
        Lfm2ForCausalLM {
            model: Lfm2Model {
                embed_tokens,
                layers,
                embedding_norm: RmsNormConfig::new(config.hidden_size, config.norm_eps).init(device),
            },
            lm_head: (!config.tie_word_embeddings)
                .then(|| LinearConfig::new(config.hidden_size, config.vocab_size).with_bias(false).init(device)),
            config: config.clone(),
            rope: Rope::from_spec(config.head_dim, &config.rope_for(LayerKind::Attention)),
            sliding_rope: Rope::from_spec(config.head_dim, &config.rope_for(LayerKind::SlidingAttention)),
        }
    }
}

impl Lfm2ForCausalLM {
    /// The device the model's weights live on.
    pub fn device(&self) -> Device {
        self.model.embed_tokens.weight.val().device()
    }

    /// Embeddings of one sequence: `[1, t, hidden]`.
    pub fn embed_ids(&self, ids: &[u32]) -> Tensor<3> {
        self.embed(ids_tensor(ids, &self.device()))
    }

    /// The embedding table `[vocab, hidden]` as the model reads it: under QAT as deployment
    /// stores it (quantized with the tied head).
    pub fn embedding_table(&self) -> Tensor<2> {
        weight_value(&self.model.embed_tokens.weight, Axes::OUT_IN)
    }

    /// `ids: [b, t]` -> embeddings `[b, t, hidden]`.
    pub fn embed(&self, ids: Tensor<2, Int>) -> Tensor<3> {
        match current_qat() {
            // QAT: the table is looked up as deployment stores it (quantized with the head).
            Some(_) => {
                let [b, t] = ids.dims();
                self.embedding_table().select(0, ids.reshape([b * t])).reshape([b, t, self.config.hidden_size])
            }
            None => self.model.embed_tokens.forward(ids),
        }
    }

    /// Runs the decoder stack on input embeddings and returns the normalised hidden states
    /// `[b, t, hidden]`. With a state, positions continue from `state.position` and the
    /// state is advanced; without one the sequence starts at position 0.
    pub fn hidden_states(&self, embeds: Tensor<3>, mut state: Option<&mut DecodeState>) -> Tensor<3> {
        let [_, t, _] = embeds.dims();
        let start = state.as_ref().map_or(0, |s| s.position);
        let [b, _, _] = embeds.dims();
        let device = embeds.device();
        let pads: &[usize] = state.as_ref().map_or(&[], |s| &s.pads);
        let tables = |rope: &Rope| {
            if pads.iter().any(|&p| p > 0) {
                rope.padded_tables(start, t, pads, &device)
            } else {
                rope.tables(start, t, &device)
            }
        };
        let kinds = &self.config.layer_types;
        // One set of tables and one mask for every attention layer of a kind in this step
        // (a full cache holds `start` slots; a sliding one, its ring).
        let full = kinds.contains(&LayerKind::Attention).then(|| {
            let (cos, sin) = tables(&self.rope);
            StepInputs { cos, sin, hidden: hidden_keys(b, t, start + t, start, pads, &device) }
        });
        let sliding = match (kinds.contains(&LayerKind::SlidingAttention), self.config.sliding_window()) {
            (true, Some(w)) => {
                let (cos, sin) = tables(&self.sliding_rope);
                let hidden = sliding_hidden_keys(t, start, w, state.is_some(), pads, &device);
                Some(StepInputs { cos, sin, hidden })
            }
            _ => None,
        };
        let mut h = embeds;
        for (i, layer) in self.model.layers.iter().enumerate() {
            let layer_state = state.as_mut().map(|s| &mut s.layers[i]);
            let step = match kinds[i] {
                LayerKind::SlidingAttention => sliding.as_ref(),
                LayerKind::Attention => full.as_ref(),
                LayerKind::Conv => None,
            };
            h = layer.forward(h, step, start, layer_state);
        }
        if let Some(s) = state {
            s.position += t;
        }
        self.model.embedding_norm.forward(h)
    }

    /// Hidden states `[b, t, hidden]` -> logits `[b, t', vocab]`.
    pub fn logits(&self, hidden: Tensor<3>, which: Logits) -> Tensor<3> {
        let [b, t, d] = hidden.dims();
        let hidden = match which {
            Logits::All => hidden,
            Logits::Last => hidden.slice([0..b, t - 1..t, 0..d]),
        };
        match &self.lm_head {
            Some(head) => head.forward(hidden),
            // The tied head: the same weight op, on the embedding table `[vocab, hidden]` as
            // its `[out, in]` weight.
            None => weight_product(&self.model.embed_tokens.weight, WeightLayout::OutIn, hidden),
        }
    }

    /// Token ids `[b, t]` -> logits, continuing `state` when given.
    pub fn forward(&self, ids: Tensor<2, Int>, state: Option<&mut DecodeState>, which: Logits) -> Tensor<3> {
        let hidden = self.hidden_states(self.embed(ids), state);
        self.logits(hidden, which)
    }

    /// Runs a prompt through the model in chunks of at most `chunk` positions (bounding the
    /// attention score memory for long prompts) and returns the last position's logits
    /// `[b, 1, vocab]`.
    pub fn prefill(&self, ids: Tensor<2, Int>, state: &mut DecodeState, chunk: usize) -> Tensor<3> {
        self.prefill_embeds(self.embed(ids), state, chunk)
    }

    /// [`Self::prefill`] from input embeddings `[b, t, hidden]` (e.g. text with image
    /// features spliced in).
    pub fn prefill_embeds(&self, embeds: Tensor<3>, state: &mut DecodeState, chunk: usize) -> Tensor<3> {
        let [b, t, d] = embeds.dims();
        let chunk = chunk.max(1);
        let mut start = 0;
        loop {
            let end = (start + chunk).min(t);
            let hidden = self.hidden_states(embeds.clone().slice([0..b, start..end, 0..d]), Some(state));
            if end == t {
                return self.logits(hidden, Logits::Last);
            }
            start = end;
        }
    }

    /// A fresh decode state for `batch` sequences, KV caches pre-sized to `capacity`.
    pub fn new_state(&self, batch: usize, capacity: usize, device: &Device) -> DecodeState {
        DecodeState::new(&self.config, batch, capacity, device)
    }

    /// Bytes of weights one decode step reads (f32): every parameter once, except that an
    /// untied model reads a single row of its embedding table and an LFM2-MoE layer only
    /// its router and the `num_experts_per_tok` experts a token is routed to.
    pub fn decode_weight_bytes(&self) -> usize {
        // LFM2-MoE: a token reads its `top_k` experts, not all of them.
        let unread: usize =
            self.model.layers.iter().map(|l| l.feed_forward().num_params() - l.feed_forward().active_params()).sum();
        let params = self.num_params() - unread;
        let table = self.config.vocab_size * self.config.hidden_size;
        4 * if self.lm_head.is_some() { params - table + self.config.hidden_size } else { params }
    }
}

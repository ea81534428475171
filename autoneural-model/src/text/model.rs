//! The LFM2 hybrid decoder: embedding -> layers (conv or attention, each followed by a
//! SwiGLU MLP, both pre-norm residual) -> `embedding_norm` -> LM head (tied or not).
//! Field names mirror the Hugging Face keys so checkpoints load without remapping.

use burn::module::Module;
use burn::nn::{Embedding, EmbeddingConfig, Initializer, Linear, LinearConfig};
use burn::tensor::{Device, Int, Tensor, TensorData};

use crate::kernels::{WeightLayout, matmul_weight};
use crate::quant::Axes;
use crate::quant::activations::{at_weight_input, current_qat};
use crate::quant::packed::packed_product;
use crate::quant::qat::weight_value;
use crate::text::attention::Attention;
use crate::text::config::{LayerKind, Lfm2Config};
use crate::text::linear::project;
use crate::text::mlp::Mlp;
use crate::text::norm::RmsNorm;
use crate::text::rope::Rope;
use crate::text::shortconv::ShortConv;
use crate::text::state::{DecodeState, LayerState};

/// One decoder layer: `h += op(operator_norm(h)); h += feed_forward(ffn_norm(h))`, where
/// `op` is `conv` or `self_attn` (exactly one is present).
#[derive(Module, Debug)]
pub struct DecoderLayer {
    pub operator_norm: RmsNorm,
    pub ffn_norm: RmsNorm,
    pub feed_forward: Mlp,
    pub conv: Option<ShortConv>,
    pub self_attn: Option<Attention>,
}

impl DecoderLayer {
    pub fn new(config: &Lfm2Config, kind: LayerKind, device: &Device) -> Self {
        let d = config.hidden_size;
        Self {
            operator_norm: RmsNorm::new(d, config.norm_eps, device),
            ffn_norm: RmsNorm::new(d, config.norm_eps, device),
            feed_forward: Mlp::new(d, config.mlp_width(), device),
            conv: (kind == LayerKind::Conv).then(|| ShortConv::new(d, config.conv_kernel, config.conv_bias, device)),
            self_attn: (kind == LayerKind::Attention).then(|| {
                Attention::new(
                    d,
                    config.num_attention_heads,
                    config.num_key_value_heads,
                    config.head_dim,
                    config.norm_eps,
                    device,
                )
            }),
        }
    }

    fn forward(
        &self,
        h: Tensor<3>,
        rope: (&Tensor<4>, &Tensor<4>),
        start: usize,
        state: Option<&mut LayerState>,
    ) -> Tensor<3> {
        let normed = self.operator_norm.forward(h.clone());
        let mixed = match (&self.conv, &self.self_attn, state) {
            (Some(conv), _, Some(LayerState::Conv(s))) => conv.forward(normed, Some(s)),
            (Some(conv), _, None) => conv.forward(normed, None),
            (_, Some(attn), Some(LayerState::Attention(kv))) => attn.forward(normed, rope, start, Some(kv)),
            (_, Some(attn), None) => attn.forward(normed, rope, start, None),
            _ => panic!("decode state does not match the layer types of the model"),
        };
        let h = h + mixed;
        h.clone() + self.feed_forward.forward(self.ffn_norm.forward(h))
    }
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
}

impl Lfm2ForCausalLM {
    /// A randomly initialised model (lazy: parameters materialise on first use or are
    /// replaced by a checkpoint without ever being drawn).
    pub fn new(config: &Lfm2Config, device: &Device) -> Self {
        let layers = config.layer_types.iter().map(|&k| DecoderLayer::new(config, k, device)).collect();
        let embed_tokens = EmbeddingConfig::new(config.vocab_size, config.hidden_size)
            .with_initializer(Initializer::Normal { mean: 0.0, std: 0.02 })
            .init(device);
        Self {
            model: Lfm2Model {
                embed_tokens,
                layers,
                embedding_norm: RmsNorm::new(config.hidden_size, config.norm_eps, device),
            },
            lm_head: (!config.tie_word_embeddings)
                .then(|| LinearConfig::new(config.hidden_size, config.vocab_size).with_bias(false).init(device)),
            config: config.clone(),
            rope: Rope::new(config.head_dim, config.rope_theta),
        }
    }

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
        let (cos, sin) = self.rope.tables(start, t, &embeds.device());
        let mut h = embeds;
        for (i, layer) in self.model.layers.iter().enumerate() {
            let layer_state = state.as_mut().map(|s| &mut s.layers[i]);
            h = layer.forward(h, (&cos, &sin), start, layer_state);
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
            Some(head) => project(head, hidden),
            None => {
                // The tied head: the embedding table `[vocab, hidden]` is the `[out, in]` weight.
                let table = &self.model.embed_tokens.weight;
                let hidden = at_weight_input(table.id, hidden);
                match packed_product(table.id, &hidden) {
                    Some(y) => y,
                    None => matmul_weight(hidden, &weight_value(table, Axes::OUT_IN), WeightLayout::OutIn),
                }
            }
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
    /// untied model reads a single row of its embedding table.
    pub fn decode_weight_bytes(&self) -> usize {
        let params = self.num_params();
        let table = self.config.vocab_size * self.config.hidden_size;
        4 * if self.lm_head.is_some() { params - table + self.config.hidden_size } else { params }
    }
}

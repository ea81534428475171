//! LFM2 grouped-query attention: per-head RMSNorm on q and k before rotate-half RoPE,
//! no biases, scale `1/sqrt(head_dim)`, causal.

use burn::module::Module;
use burn::tensor::activation::softmax;
use burn::tensor::{Bool, Device, Tensor, TensorData};

use crate::nn::{Linear, LinearConfig, RmsNorm, RmsNormConfig};
use crate::quant::kv::at_cache_input;
use crate::text::rope::Rope;
use crate::text::state::KvCache;

/// Keys: `self_attn.{q_proj,k_proj,v_proj,out_proj}.weight`, `self_attn.{q,k}_layernorm.weight`.
#[derive(Module, Debug)]
pub struct Attention {
    pub q_proj: Linear,
    pub k_proj: Linear,
    pub v_proj: Linear,
    pub out_proj: Linear,
    pub q_layernorm: RmsNorm,
    pub k_layernorm: RmsNorm,
    pub num_heads: usize,
    pub num_kv_heads: usize,
    pub head_dim: usize,
}

/// An [`Attention`] of `heads` query heads sharing `kv_heads` key/value heads.
#[derive(Debug, Clone, Copy)]
pub struct AttentionConfig {
    pub hidden: usize,
    pub heads: usize,
    pub kv_heads: usize,
    pub head_dim: usize,
    /// The q/k norms' epsilon.
    pub eps: f64,
}

impl AttentionConfig {
    pub fn init(&self, device: &Device) -> Attention {
        let &Self { hidden, heads, kv_heads, head_dim, eps } = self;
        let lin = |i, o| LinearConfig::new(i, o).with_bias(false).init(device);
        Attention {
            q_proj: lin(hidden, heads * head_dim),
            k_proj: lin(hidden, kv_heads * head_dim),
            v_proj: lin(hidden, kv_heads * head_dim),
            out_proj: lin(heads * head_dim, hidden),
            q_layernorm: RmsNormConfig::new(head_dim, eps).init(device),
            k_layernorm: RmsNormConfig::new(head_dim, eps).init(device),
            num_heads: heads,
            num_kv_heads: kv_heads,
            head_dim,
        }
    }
}

impl Attention {
    /// `x: [b, t, hidden]` at slots `start..start + t` -> `[b, t, hidden]`.
    /// With a cache, keys and values are appended and queries attend to all of it.
    /// `hidden` is [`hidden_keys`]' mask for this step, built once for all the layers.
    pub fn forward(
        &self,
        x: Tensor<3>,
        rope: (&Tensor<4>, &Tensor<4>),
        start: usize,
        cache: Option<&mut KvCache>,
        hidden: Option<&Tensor<3, Bool>>,
    ) -> Tensor<3> {
        let [b, t, _] = x.dims();
        let (h, kvh, hd) = (self.num_heads, self.num_kv_heads, self.head_dim);
        let heads = |y: Tensor<3>, n: usize| y.reshape([b, t, n, hd]);
        let q = self.q_layernorm.forward(heads(self.q_proj.forward(x.clone()), h)).swap_dims(1, 2);
        let k = self.k_layernorm.forward(heads(self.k_proj.forward(x.clone()), kvh)).swap_dims(1, 2);
        let v = heads(self.v_proj.forward(x), kvh).swap_dims(1, 2);
        let q = Rope::apply(q, rope.0, rope.1);
        // What the cache holds (an NPU's past_key / past_value state), quantized at the
        // policy's KV-cache bits when a quantization context says so.
        let k = at_cache_input(self.k_proj.weight.id, Rope::apply(k, rope.0, rope.1));
        let v = at_cache_input(self.v_proj.weight.id, v);
        let (k, v) = match cache {
            Some(c) => c.append(k, v),
            None => (k, v),
        };
        let s = k.dims()[2]; // keys visible: everything cached, or this chunk
        let past = s - t; // == start when a cache is used from position 0
        debug_assert!(cache_consistent(start, past));
        debug_assert!(
            hidden.is_none_or(|m| m.dims()[1..] == [t, s]),
            "the step's mask is for {t} queries over {s} keys"
        );
        // Query heads that share a kv head are stacked on the row axis, so K and V are
        // multiplied as they are, never repeated per head: [b, kvh, g*t, hd].
        let g = h / kvh;
        let q = q.reshape([b, kvh, g * t, hd]);
        let scores = q.matmul(k.swap_dims(2, 3)) * (1.0 / (hd as f64).sqrt()); // [b, kvh, g*t, s]
        let scores = match hidden {
            Some(mask) => {
                let rows = mask.dims()[0];
                let scores = scores.reshape([b, kvh, g, t, s]);
                scores
                    .mask_fill(mask.clone().reshape([rows, 1, 1, t, s]).expand([b, kvh, g, t, s]), f32::NEG_INFINITY)
                    .reshape([b, kvh, g * t, s])
            }
            None => scores,
        };
        let probs = softmax(scores, 3);
        let out = probs.matmul(v).reshape([b, h, t, hd]).swap_dims(1, 2).reshape([b, t, h * hd]);
        self.out_proj.forward(out)
    }
}

fn cache_consistent(start: usize, past: usize) -> bool {
    past == 0 || past == start
}

/// `mask[r, i, j]` is true where query `i` (slot `past + i`) of row `r` must not see key
/// `j`: a later key, or a pad key seen from a real query (`pads[r]` pad slots lead row `r`,
/// in a batch of prompts of different lengths; a pad query, whose value rows are zero, sees
/// only pads, so pad slots stay zero). `[1, t, s]` without pads; `None` when nothing is
/// hidden (one query, no pads).
pub fn hidden_keys(
    b: usize,
    t: usize,
    s: usize,
    past: usize,
    pads: &[usize],
    device: &Device,
) -> Option<Tensor<3, Bool>> {
    let padded = pads.iter().any(|&p| p > 0);
    if t == 1 && !padded {
        return None;
    }
    let rows = if padded { b } else { 1 };
    let mut data = Vec::with_capacity(rows * t * s);
    for r in 0..rows {
        let pad = if padded { pads[r] } else { 0 };
        for i in 0..t {
            let real = past + i >= pad;
            data.extend((0..s).map(|j| j > past + i || (real && j < pad)));
        }
    }
    Some(Tensor::from_data(TensorData::new(data, [rows, t, s]), device))
}

//! LFM2-MoE's sparse feed-forward (transformers' `Lfm2MoeSparseMoeBlock`, LFM2-8B-A1B):
//! a sigmoid router picks `num_experts_per_tok` of `num_experts` SwiGLU experts per token,
//! and only those experts run.
//!
//! For each token `x`: `s = sigmoid(gate(x))` (one score per expert); the experts are the
//! top-k of `s + expert_bias` (the bias steers the choice, not the weights); their weights
//! are their `s`, divided by their sum (+1e-6) when `norm_topk_prob`, times
//! `routed_scaling_factor`; the output is `sum_e w_e * expert_e(x)`.
//!
//! The choice is made on the host (a few floats per token); the tokens of each chosen
//! expert are gathered, run through it as one batch, weighted and added back, so a decode
//! step reads the weights of its `k` experts only. The weights are gathered from the score
//! tensor, so the router gets its gradient as in transformers.

use burn::module::{Module, Param};
use burn::tensor::{Device, IndexingUpdateOp, Int, Tensor, TensorData};

use crate::nn::{Linear, LinearConfig};
use crate::text::config::MoeConfig;
use crate::text::mlp::{Mlp, MlpConfig};

/// Keys `feed_forward.gate.weight` (`[num_experts, hidden]`), `feed_forward.expert_bias`
/// (`[num_experts]`, when `use_expert_bias`), `feed_forward.experts.E.{w1,w2,w3}.weight`
/// (the published per-expert layout).
#[derive(Module, Debug)]
pub struct SparseMoe {
    pub gate: Linear,
    pub experts: Vec<Mlp>,
    pub expert_bias: Option<Param<Tensor<1>>>,
    pub top_k: usize,
    pub norm_topk_prob: bool,
    pub routed_scaling_factor: f64,
}

impl MoeConfig {
    /// The sparse block of a `hidden`-wide model.
    pub fn init(&self, hidden: usize, device: &Device) -> SparseMoe {
        let gate = LinearConfig::new(hidden, self.num_experts).with_bias(false).init(device);
        let experts =
            (0..self.num_experts).map(|_| MlpConfig::new(hidden, self.moe_intermediate_size).init(device)).collect();
        let expert_bias = self.use_expert_bias.then(|| Param::from_tensor(Tensor::zeros([self.num_experts], device)));
        SparseMoe {
            gate,
            experts,
            expert_bias,
            top_k: self.num_experts_per_tok,
            norm_topk_prob: self.norm_topk_prob,
            routed_scaling_factor: self.routed_scaling_factor,
        }
    }
}

/// Each token's chosen experts, best first, by `score + bias` (ties to the lower index, as
/// `torch.topk` on CPU keeps them).
fn choose(scores: &[f32], bias: Option<&[f32]>, experts: usize, k: usize) -> Vec<u32> {
    let mut chosen = Vec::with_capacity(scores.len() / experts * k);
    let mut order: Vec<usize> = Vec::with_capacity(experts);
    for row in scores.chunks(experts) {
        let key = |e: usize| row[e] + bias.map_or(0.0, |b| b[e]);
        order.clear();
        order.extend(0..experts);
        order.sort_by(|&a, &b| key(b).total_cmp(&key(a)).then(a.cmp(&b)));
        chosen.extend(order[..k].iter().map(|&e| e as u32));
    }
    chosen
}

impl SparseMoe {
    /// `[b, t, hidden] -> [b, t, hidden]`
    pub fn forward(&self, x: Tensor<3>) -> Tensor<3> {
        let [b, t, d] = x.dims();
        let n = b * t;
        let experts = self.experts.len();
        let device = x.device();
        let flat = x.reshape([n, d]);
        let scores = burn::tensor::activation::sigmoid(self.gate.forward(flat.clone()));
        let host: Vec<f32> = scores.clone().into_data().convert::<f32>().try_to_vec::<f32>().expect("converted to f32");
        let bias: Option<Vec<f32>> = self
            .expert_bias
            .as_ref()
            .map(|p| p.val().into_data().convert::<f32>().try_to_vec::<f32>().expect("converted to f32"));
        let k = self.top_k;
        let chosen = choose(&host, bias.as_deref(), experts, k);
        let index = |v: Vec<i64>, shape: Vec<usize>| Tensor::<2, Int>::from_data(TensorData::new(v, shape), &device);
        // [n, k]: each token's weights, gathered from the scores (differentiable).
        let mut weights = scores.gather(1, index(chosen.iter().map(|&e| e as i64).collect(), vec![n, k]));
        if self.norm_topk_prob {
            weights = weights.clone() / (weights.sum_dim(1) + 1e-6);
        }
        let weights = (weights * self.routed_scaling_factor).reshape([n * k]);
        // The (token, slot) pairs of each expert, in token order.
        let mut routed: Vec<Vec<usize>> = vec![Vec::new(); experts];
        for (slot, &e) in chosen.iter().enumerate() {
            routed[e as usize].push(slot);
        }
        let mut out = Tensor::<2>::zeros([n, d], &device);
        for (e, slots) in routed.iter().enumerate().filter(|(_, s)| !s.is_empty()) {
            let m = slots.len();
            let tokens = Tensor::<1, Int>::from_data(
                TensorData::new(slots.iter().map(|&s| (s / k) as i64).collect::<Vec<_>>(), [m]),
                &device,
            );
            let slot_ids =
                Tensor::<1, Int>::from_data(TensorData::new(slots.iter().map(|&s| s as i64).collect(), [m]), &device);
            let xs = flat.clone().select(0, tokens.clone()).reshape([1, m, d]);
            let ys = self.experts[e].forward(xs).reshape([m, d]);
            let w = weights.clone().select(0, slot_ids).reshape([m, 1]);
            out = out.select_assign(0, tokens, ys * w, IndexingUpdateOp::Add);
        }
        out.reshape([b, t, d])
    }

    /// Parameters one token reads: the router, the bias and `top_k` experts.
    pub fn active_params(&self) -> usize {
        let expert = self.experts.first().map_or(0, Module::num_params);
        self.gate.num_params() + self.expert_bias.as_ref().map_or(0, |p| p.val().dims()[0]) + self.top_k * expert
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn experts_are_chosen_by_score_plus_bias_best_first() {
        let scores = [0.1, 0.9, 0.5, 0.4, /* */ 0.3, 0.3, 0.2, 0.8];
        assert_eq!(choose(&scores, None, 4, 2), vec![1, 2, 3, 0]);
        // The bias moves expert 3 up for the first token; ties go to the lower index.
        assert_eq!(choose(&scores, Some(&[0.0, 0.0, 0.0, 0.6]), 4, 2), vec![3, 1, 3, 0]);
    }
}

//! Shared helpers for the model crate's integration tests.
#![allow(dead_code)]

use std::path::PathBuf;

use autoneural_model::checkpoint::apply::{Identity, collect_tensors};
use burn::module::{Module, ModuleMapper, Param};
use burn::tensor::{Device, Distribution, Gradients, Int, Tensor, TensorData};

pub fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/lfm2")
}

pub const FIXTURES: &[&str] = &[
    "hybrid-hub-bf16",
    "hybrid-t5-f32-sharded",
    "attention-only-f16",
    "conv-only-hub-f32",
    "hybrid-short-prompt",
    // LFM2-MoE (scripts/make_lfm2_moe_fixture.py): a dense layer, then routed experts.
    "moe-f32",
    // LFM3 (scripts/make_lfm3_fixtures.py): conv, sliding (window 8) and full attention,
    // a 50-token prompt and 16 greedy tokens, with and without sandwich norms and gates.
    "lfm3-f32",
    "lfm3-plain-f32",
];

pub struct Golden {
    pub rendered_prompt: String,
    pub raw_prompt: Option<String>,
    /// The user's message of a chat prompt.
    pub user_message: Option<String>,
    pub prompt_ids: Vec<u32>,
    pub logits_shape: Vec<usize>,
    pub logits: Vec<f32>,
    pub greedy_new_ids: Vec<u32>,
}

pub fn golden(name: &str) -> Golden {
    let text = std::fs::read_to_string(fixtures().join(name).join("golden.json")).unwrap();
    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
    let nums = |k: &str| v[k].as_array().unwrap().iter().map(|x| x.as_f64().unwrap()).collect::<Vec<_>>();
    Golden {
        rendered_prompt: v["rendered_prompt"].as_str().unwrap().to_string(),
        raw_prompt: v["raw_prompt"].as_str().map(str::to_string),
        user_message: v["prompt_messages"][0]["content"].as_str().map(str::to_string),
        prompt_ids: nums("prompt_ids").into_iter().map(|x| x as u32).collect(),
        logits_shape: nums("logits_shape").into_iter().map(|x| x as usize).collect(),
        logits: nums("logits").into_iter().map(|x| x as f32).collect(),
        greedy_new_ids: nums("greedy_new_ids").into_iter().map(|x| x as u32).collect(),
    }
}

pub fn ids(v: &[u32], device: &Device) -> Tensor<2, Int> {
    Tensor::from_data(TensorData::new(v.iter().map(|&x| x as i64).collect::<Vec<_>>(), [1, v.len()]), device)
}

pub fn values<const D: usize>(t: Tensor<D>) -> Vec<f32> {
    t.into_data().try_into_vec_as::<f32>().unwrap()
}

/// max |a - b| / max |b|: the relative error of a whole tensor.
pub fn rel_err(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    let scale = b.iter().fold(0f32, |m, x| m.max(x.abs())).max(1e-12);
    a.iter().zip(b).fold(0f32, |m, (x, y)| m.max((x - y).abs())) / scale
}

/// Every float parameter's values by key, in visiting order.
pub fn snapshot<M: Module>(m: &M) -> Vec<(String, Vec<f32>)> {
    collect_tensors(m, &Identity).into_iter().map(|(key, _, values)| (key, values)).collect()
}

/// `p <- p - lr * grad(p)`; records parameters that got no gradient.
struct Sgd<'a> {
    grads: &'a Gradients,
    lr: f64,
    missing: usize,
}

impl ModuleMapper for Sgd<'_> {
    fn map_float<const D: usize>(&mut self, p: Param<Tensor<D>>) -> Param<Tensor<D>> {
        let id = p.id;
        let v = p.val();
        match v.grad(self.grads) {
            Some(g) => Param::initialized(id, (v.inner() - g * self.lr).autodiff().require_grad()),
            None => {
                self.missing += 1;
                p
            }
        }
    }
}

pub fn step_changes_everything<M: Module>(model: M, loss_of: impl Fn(&M) -> Tensor<1>) {
    let before = snapshot(&model);
    let loss = loss_of(&model);
    let grads = loss.backward();
    let mut sgd = Sgd { grads: &grads, lr: 1e-1, missing: 0 };
    let model = model.map(&mut sgd);
    assert_eq!(sgd.missing, 0, "parameters without a gradient");
    let after = snapshot(&model);
    assert_eq!(before.len(), after.len());
    let unchanged: Vec<&str> =
        before.iter().zip(&after).filter(|(a, b)| a.1 == b.1).map(|(a, _)| a.0.as_str()).collect();
    assert!(unchanged.is_empty(), "a training step left these unchanged: {unchanged:?}");
}

pub fn weighted_sum(y: Tensor<3>) -> Tensor<1> {
    // A fixed random projection of the output, so no symmetry hides a gradient.
    let w = Tensor::<3>::random(y.dims(), Distribution::Normal(0.0, 1.0), &y.device());
    (y * w).sum()
}

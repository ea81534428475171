//! Shared helpers for the model crate's integration tests.
#![allow(dead_code)]

use std::path::PathBuf;

use burn::tensor::{Device, Int, Tensor, TensorData};

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
];

pub struct Golden {
    pub rendered_prompt: String,
    pub raw_prompt: Option<String>,
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

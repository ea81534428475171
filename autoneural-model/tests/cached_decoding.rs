//! Cached decoding (prefill + one step per token, with KV caches and conv windows) must
//! give the logits of the uncached forward pass over the whole sequence.

mod common;

use autoneural_model::checkpoint::load_lfm2;
use autoneural_model::text::{Lfm2Config, Lfm2ForCausalLM, Logits};
use burn::module::Module;
use burn::tensor::Device;
use common::*;

/// Logits of every position, computed with `prefill_len` positions prefilled (in chunks of
/// `chunk`) and the rest one token at a time.
fn cached_logits(model: &Lfm2ForCausalLM, seq: &[u32], prefill_len: usize, chunk: usize, device: &Device) -> Vec<f32> {
    let mut state = model.new_state(1, 4, device); // small capacity: exercises cache growth
    let mut out = Vec::new();
    let mut pos = 0;
    while pos < prefill_len {
        let end = (pos + chunk).min(prefill_len);
        out.extend(values(model.forward(ids(&seq[pos..end], device), Some(&mut state), Logits::All)));
        pos = end;
    }
    for &t in &seq[prefill_len..] {
        out.extend(values(model.forward(ids(&[t], device), Some(&mut state), Logits::All)));
    }
    assert_eq!(state.position, seq.len());
    out
}

fn check(model: &Lfm2ForCausalLM, seq: &[u32], label: &str) {
    let device = Device::flex();
    let full = values(model.forward(ids(seq, &device), None, Logits::All));
    for &(prefill_len, chunk) in &[
        (1, 1),
        (2, 2),
        (seq.len(), seq.len()),
        (seq.len() / 2 + 1, 3),
        (seq.len(), 2),
        (seq.len(), 9),
        (seq.len().saturating_sub(5).max(1), 13),
    ] {
        let prefill_len = prefill_len.min(seq.len());
        let cached = cached_logits(model, seq, prefill_len, chunk, &device);
        let err = rel_err(&cached, &full);
        assert!(err < 1e-5, "{label}: prefill {prefill_len} chunk {chunk}: relative error {err:e}");
    }
}

#[test]
fn cached_equals_uncached_on_every_fixture() {
    let device = Device::flex();
    for name in FIXTURES {
        let model = load_lfm2(&fixtures().join(name), &device).unwrap();
        let mut seq = golden(name).prompt_ids;
        seq.extend([5, 17, 3, 99]);
        check(&model, &seq, name);
    }
}

#[test]
fn single_token_and_shorter_than_kernel_prompts() {
    let device = Device::flex();
    let model = load_lfm2(&fixtures().join("hybrid-hub-bf16"), &device).unwrap();
    // kernel 3: prompts of 1 and 2 tokens never fill the conv window from the prompt alone
    for seq in [&[1u32][..], &[1, 6], &[1, 6, 92, 90, 11]] {
        check(&model, seq, &format!("prompt {seq:?}"));
    }
}

#[test]
fn every_attention_ratio_decodes_consistently() {
    let device = Device::flex();
    let base = Lfm2Config::preset("lfm2-nano").unwrap();
    for attn in 0..=base.num_layers() {
        let model = base.clone().with_attention_layers(attn).init(&device).materialize();
        check(&model, &[1, 2, 3, 4, 5, 6, 7, 8, 9], &format!("{attn} attention layers"));
    }
}

#[test]
fn decode_state_bytes_follow_the_layer_mix() {
    let device = Device::flex();
    let cfg = Lfm2Config::preset("lfm2-nano").unwrap(); // 4 layers, 2 attention
    let model = cfg.init(&device);
    let mut state = model.new_state(1, 16, &device);
    let _ = model.forward(ids(&[1, 2, 3, 4, 5], &device), Some(&mut state), Logits::Last);
    let b = state.bytes();
    // KV: 2 layers * (k + v) * kv_heads * 5 positions * head_dim * 4 bytes
    assert_eq!(b.kv, 2 * 2 * cfg.num_key_value_heads * 5 * cfg.head_dim * 4);
    // conv: 2 layers * (kernel - 1) * hidden * 4 bytes, independent of the context
    assert_eq!(b.conv, 2 * (cfg.conv_kernel - 1) * cfg.hidden_size * 4);
}

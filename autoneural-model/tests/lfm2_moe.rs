//! LFM2-MoE beyond the golden logits (`golden_lfm2.rs` runs the `moe-f32` fixture with the
//! others): the published per-expert keys round-trip through `save_lfm2`, a decode step
//! counts only the experts a token reads, and configs are checked by key.

mod common;

use autoneural_model::checkpoint::{load_lfm2, save_lfm2};
use autoneural_model::text::Logits;
use autoneural_model::text::model::FeedForward;
use burn::module::Module;
use burn::tensor::Device;
use common::*;

#[test]
fn moe_checkpoints_round_trip_and_count_active_experts_only() {
    let device = Device::flex();
    let dir = fixtures().join("moe-f32");
    let model = load_lfm2(&dir, &device).unwrap();
    let moe = model.config.moe.clone().expect("an lfm2_moe config");
    assert_eq!((moe.num_experts, moe.num_experts_per_tok, moe.num_dense_layers), (8, 3, 1));
    assert!(matches!(model.model.layers[0].feed_forward(), FeedForward::Dense(_)));
    assert!(model.model.layers[1..].iter().all(|l| matches!(l.feed_forward(), FeedForward::Moe(_))));

    let tmp = tempfile::tempdir().unwrap();
    save_lfm2(&model, tmp.path()).unwrap();
    let config: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(tmp.path().join("config.json")).unwrap()).unwrap();
    assert_eq!(config["model_type"], "lfm2_moe");
    let again = load_lfm2(tmp.path(), &device).unwrap();
    let g = golden("moe-f32");
    let a = values(model.forward(ids(&g.prompt_ids, &device), None, Logits::All));
    let b = values(again.forward(ids(&g.prompt_ids, &device), None, Logits::All));
    assert_eq!(a, b);

    // A decode step reads the router and 3 of 8 experts in each routed layer.
    let expert = 3 * 64 * 32;
    let unread = 4 * (8 - 3) * expert;
    assert_eq!(model.decode_weight_bytes(), 4 * (model.num_params() - unread));
}

#[test]
fn moe_configs_are_checked_by_key() {
    let tmp = tempfile::tempdir().unwrap();
    let src = fixtures().join("moe-f32");
    for (key, value, message) in [
        ("num_experts_per_tok", serde_json::json!(9), "num_experts_per_tok"),
        ("num_experts", serde_json::json!(0), "num_experts"),
        ("model_type", serde_json::json!("lfm2_moe_v9"), "is not an LFM2 text model"),
    ] {
        let dir = tmp.path().join(key);
        std::fs::create_dir_all(&dir).unwrap();
        for f in ["model.safetensors", "tokenizer.json", "tokenizer_config.json"] {
            std::fs::copy(src.join(f), dir.join(f)).unwrap();
        }
        let mut config: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(src.join("config.json")).unwrap()).unwrap();
        config[key] = value;
        std::fs::write(dir.join("config.json"), config.to_string()).unwrap();
        let err = load_lfm2(&dir, &Device::flex()).err().expect("refused").to_string();
        assert!(err.contains("config.json") && err.contains(message), "{key}: {err}");
    }
}

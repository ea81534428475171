//! LFM3 beyond the golden logits (`golden_lfm2.rs` and `cached_decoding.rs` run the
//! `lfm3-*` fixtures with the others): the published keys round-trip through `save_lfm2`
//! and transformers' in-memory spelling of the gate loads too; a sliding layer's decode
//! state stops growing at its window; configs are checked by key; training reaches every
//! parameter of every new module.

mod common;

use autoneural_model::checkpoint::{load_lfm2, save_lfm2};
use autoneural_model::text::{LayerKind, Lfm2Config, Logits};
use burn::tensor::{Device, Int, Tensor, TensorData};
use common::*;

/// A copy of fixture `name` with its `config.json` edited by `edit` and its weights'
/// keys renamed by `rename`.
fn edited_copy(
    name: &str,
    dir: &std::path::Path,
    edit: impl Fn(&mut serde_json::Value),
    rename: impl Fn(&str) -> String,
) {
    let src = fixtures().join(name);
    std::fs::create_dir_all(dir).unwrap();
    for f in ["tokenizer.json", "tokenizer_config.json"] {
        std::fs::copy(src.join(f), dir.join(f)).unwrap();
    }
    let mut config: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(src.join("config.json")).unwrap()).unwrap();
    edit(&mut config);
    std::fs::write(dir.join("config.json"), config.to_string()).unwrap();
    let bytes = std::fs::read(src.join("model.safetensors")).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let renamed: Vec<(String, safetensors::tensor::TensorView)> =
        st.tensors().into_iter().map(|(k, v)| (rename(&k), v)).collect();
    safetensors::serialize_to_file(renamed, None, &dir.join("model.safetensors")).unwrap();
}

#[test]
fn lfm3_checkpoints_round_trip_with_published_keys() {
    let device = Device::flex();
    let model = load_lfm2(&fixtures().join("lfm3-f32"), &device).unwrap();
    let o = model.config.lfm3.clone().expect("an lfm3 config");
    assert_eq!((o.sliding_window, o.use_sandwich_norm, o.use_attention_gate), (8, true, true));
    assert_eq!(model.config.conv_kernel, 7);
    assert_eq!(model.config.count(LayerKind::SlidingAttention), 2);

    let tmp = tempfile::tempdir().unwrap();
    save_lfm2(&model, tmp.path()).unwrap();
    let config: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(tmp.path().join("config.json")).unwrap()).unwrap();
    assert_eq!(config["model_type"], "lfm3");
    assert_eq!(config["rope_parameters"]["full_attention"]["rope_type"], "proportional");
    let bytes = std::fs::read(tmp.path().join("model.safetensors")).unwrap();
    let keys: Vec<String> =
        safetensors::SafeTensors::deserialize(&bytes).unwrap().names().into_iter().map(str::to_string).collect();
    for key in [
        "model.layers.1.self_attn.gate_proj.weight",
        "model.layers.1.self_attn.o_proj.weight",
        "model.layers.1.self_attn.q_norm.weight",
        "model.layers.0.post_ffn_norm.weight",
    ] {
        assert!(keys.iter().any(|k| k == key), "{key} not written: {keys:?}");
    }
    let again = load_lfm2(tmp.path(), &device).unwrap();
    assert_eq!(again.config, model.config);
    let g = golden("lfm3-f32");
    let a = values(model.forward(ids(&g.prompt_ids, &device), None, Logits::All));
    let b = values(again.forward(ids(&g.prompt_ids, &device), None, Logits::All));
    assert_eq!(a, b);

    // transformers' in-memory name for the gate (`g_proj`) loads as well.
    let dir = tmp.path().join("g_proj");
    edited_copy("lfm3-f32", &dir, |_| {}, |k| k.replace(".gate_proj.", ".g_proj."));
    let renamed = load_lfm2(&dir, &device).unwrap();
    assert_eq!(values(renamed.forward(ids(&g.prompt_ids, &device), None, Logits::All)), a);
}

#[test]
fn sliding_state_stops_growing_at_the_window() {
    let device = Device::flex();
    let model = load_lfm2(&fixtures().join("lfm3-f32"), &device).unwrap();
    let c = &model.config;
    let mut state = model.new_state(1, 4, &device);
    let kv_row = 2 * c.num_key_value_heads * c.head_dim * 4; // K and V of one position, f32
    let (full, sliding, w) = (c.count(LayerKind::Attention), c.count(LayerKind::SlidingAttention), 8);
    for pos in 0..40u32 {
        let ids: Tensor<2, Int> = Tensor::from_data(TensorData::new(vec![(pos % 300) as i64 + 3], [1, 1]), &device);
        model.forward(ids, Some(&mut state), Logits::Last);
        let n = pos as usize + 1;
        assert_eq!(state.bytes().kv, kv_row * (full * n + sliding * n.min(w)), "after {n} positions");
    }
}

#[test]
fn lfm3_configs_are_checked_by_key() {
    let tmp = tempfile::tempdir().unwrap();
    type Edit = fn(&mut serde_json::Value);
    let cases: [(&str, Edit, &str); 4] = [
        ("sliding_window", |c| c["sliding_window"] = serde_json::json!(0), "sliding_window"),
        (
            "rope_type",
            |c| c["rope_parameters"]["full_attention"]["rope_type"] = serde_json::json!("yarn"),
            "rope_type \"yarn\" is not supported",
        ),
        (
            "partial",
            |c| c["rope_parameters"]["full_attention"]["partial_rotary_factor"] = serde_json::json!(1.5),
            "partial_rotary_factor",
        ),
        (
            "lfm2_with_sliding",
            |c| c["model_type"] = serde_json::json!("lfm2"),
            "unknown layer type \"sliding_attention\"",
        ),
    ];
    for (name, edit, message) in cases {
        let dir = tmp.path().join(name);
        edited_copy("lfm3-f32", &dir, edit, str::to_string);
        let err = load_lfm2(&dir, &Device::flex()).err().expect("refused").to_string();
        assert!(err.contains("config.json") && err.contains(message), "{name}: {err}");
    }
    // An LFM2 config given sliding layers by hand (an experiment's override) is refused too.
    let mut c = Lfm2Config::preset("lfm2-nano").unwrap();
    c.layer_types[1] = LayerKind::SlidingAttention;
    let (field, message) = c.check().unwrap_err();
    assert_eq!(field, "layer_types");
    assert!(message.contains("lfm3 preset"), "{message}");
}

#[test]
fn lfm3_trains_end_to_end() {
    let device = Device::flex().autodiff();
    device.seed(3);
    let mut c = Lfm2Config::preset("lfm3-nano").unwrap();
    c.lfm3.as_mut().unwrap().sliding_window = 3;
    let model = c.init(&device);
    let ids: Vec<i64> = (0..20).map(|i| (i * 37 % 500) as i64).collect();
    step_changes_everything(model, |m| {
        let x: Tensor<2, Int> = Tensor::from_data(TensorData::new(ids.clone(), [2, 10]), &device);
        weighted_sum(m.forward(x, None, Logits::All))
    });
}

#[test]
fn an_autoneural_vlm_with_an_lfm3_language_model_saves_and_loads() {
    use autoneural_model::checkpoint::apply::{Identity, collect_tensors};
    use autoneural_model::checkpoint::{load_vlm, save_vlm};
    use autoneural_model::images::Preprocess;
    use autoneural_model::vision::EncoderConfig;
    use autoneural_model::vlm::VlmConfig;

    let device = Device::flex();
    device.seed(4);
    let encoder = EncoderConfig::preset("mobilenetv5_tiny").unwrap();
    let text = Lfm2Config::preset("lfm3-nano").unwrap();
    let config = VlmConfig::autoneural(encoder, text, Preprocess::Fixed { size: 64, mean: [0.0; 3], std: [1.0; 3] });
    let model = config.init(&device).unwrap();
    let tmp = tempfile::tempdir().unwrap();
    save_vlm(&model, tmp.path()).unwrap();
    let bytes = std::fs::read(tmp.path().join("model.safetensors")).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    assert!(st.names().contains(&"model.language_model.layers.4.self_attn.gate_proj.weight"));
    assert!(st.names().contains(&"model.language_model.layers.2.self_attn.o_proj.weight"));
    let again = load_vlm(tmp.path(), &device).unwrap();
    assert_eq!(again.config.text, model.config.text);
    assert_eq!(collect_tensors(&again, &Identity), collect_tensors(&model, &Identity));
}

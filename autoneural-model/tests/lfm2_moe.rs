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
        ("model_type", serde_json::json!("lfm2_moe_v9"), "is not an LFM text model"),
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

/// A model too large for f32 decodes from weights packed as they are drawn: the logits are
/// the packed model's, and each decode token reads exactly the packed bytes of the matrices
/// it runs (every dense one, and 3 of the 8 experts in each routed layer), as counted by the
/// kernels.
#[test]
fn experts_packed_as_drawn_decode_and_read_only_the_chosen_ones() {
    use autoneural_model::kernels::gemv::MAX_ROWS;
    use autoneural_model::quant::PrecisionPolicy;
    use autoneural_model::quant::packed::{pack_dropping_floats, quantize_and_pack, with_packed};
    use std::sync::Arc;

    let device = Device::flex();
    let dir = fixtures().join("moe-f32");
    let policy = PrecisionPolicy::preset("w4a16").unwrap();
    let g = golden("moe-f32");
    let (prompt, next) = (&g.prompt_ids[..], [5u32, 71, 9, 200]);
    let decode = |model: &autoneural_model::text::Lfm2ForCausalLM| {
        let mut state = model.new_state(1, 64, &device);
        let mut out = values(model.prefill(ids(prompt, &device), &mut state, MAX_ROWS));
        for &t in &next {
            out.extend(values(model.forward(ids(&[t], &device), Some(&mut state), Logits::Last)));
        }
        out
    };
    let (quantized, packed) = quantize_and_pack(load_lfm2(&dir, &device).unwrap(), &policy).unwrap();
    let want = with_packed(Arc::new(packed), || decode(&quantized));

    let (model, packed) = pack_dropping_floats(load_lfm2(&dir, &device).unwrap(), &policy).unwrap();
    // Only the embedding table (looked up) keeps f32 values among the packed matrices.
    let float_left: usize = model.num_params();
    assert!(float_left < model.config.vocab_size * 64 + 20_000, "{float_left} f32 parameters left");
    let (active, _) = packed.active_bytes(Some((3, 8)));
    let packed = Arc::new(packed);
    let got = with_packed(packed.clone(), || decode(&model));
    let err = rel_err(&got, &want);
    assert!(err < 1e-3, "packed-as-drawn logits differ by {err:e}");

    let before = packed.bytes_read();
    with_packed(packed.clone(), || {
        let mut state = model.new_state(1, 64, &device);
        model.prefill(ids(&prompt[..4], &device), &mut state, MAX_ROWS);
        let start = packed.bytes_read();
        for &t in &next {
            model.forward(ids(&[t], &device), Some(&mut state), Logits::Last);
        }
        let per_token = (packed.bytes_read() - start) as f64 / next.len() as f64;
        assert!((per_token - active).abs() < 0.5, "read {per_token} bytes per token, formula {active}");
        assert!(per_token < 0.75 * packed.packed_bytes as f64, "routed experts all read? {per_token}");
    });
    assert!(packed.bytes_read() > before);
}

/// Training reaches every parameter a token uses: every dense one, the routers (through the
/// weights of the chosen experts' outputs) and every expert some token is routed to (the
/// experts no token chose get none, as in transformers; the expert bias steers the choice
/// and carries no gradient: transformers keeps it as a buffer, updated outside the
/// optimizer).
#[test]
fn moe_layers_train_end_to_end() {
    use burn::module::{ModuleVisitor, Param};
    use burn::tensor::{Gradients, Tensor, TensorData};

    /// Whether each float parameter, in visiting order, got a gradient.
    struct Reached<'a> {
        grads: &'a Gradients,
        flags: Vec<bool>,
    }
    impl ModuleVisitor for Reached<'_> {
        fn visit_float<const D: usize>(&mut self, p: &Param<Tensor<D>>) {
            self.flags.push(p.val().grad(self.grads).is_some());
        }
    }
    let device = Device::flex().autodiff();
    let model = load_lfm2(&fixtures().join("moe-f32"), &device).unwrap();
    let ids: Vec<i64> = (0..96).map(|i| ((i * 37 + 11) % 300) as i64).collect();
    let x = Tensor::from_data(TensorData::new(ids, [2, 48]), &device);
    let grads = weighted_sum(model.forward(x, None, Logits::All)).backward();
    let mut reached = Reached { grads: &grads, flags: Vec::new() };
    model.visit(&mut reached);
    let keys: Vec<String> = snapshot(&model).into_iter().map(|(k, _)| k).collect();
    assert_eq!(keys.len(), reached.flags.len());
    let without: Vec<&String> = keys.iter().zip(&reached.flags).filter(|(_, r)| !**r).map(|(k, _)| k).collect();
    // Every dense parameter and router learns; of the experts, those tokens chose (at least
    // the 3 a token takes in each routed layer), whose three matrices learn together.
    assert!(without.iter().all(|k| k.ends_with("expert_bias") || k.contains(".experts.")), "no gradient: {without:?}");
    for layer in 1..5 {
        let learned = |e: usize| {
            let prefix = format!("model.layers.{layer}.feed_forward.experts.{e}.");
            let mine: Vec<bool> =
                keys.iter().zip(&reached.flags).filter(|(k, _)| k.starts_with(&prefix)).map(|(_, &r)| r).collect();
            assert_eq!(mine.len(), 3);
            assert!(mine.iter().all(|&r| r == mine[0]), "layer {layer} expert {e}: w1, w2, w3 disagree");
            mine[0]
        };
        let chosen = (0..8).filter(|&e| learned(e)).count();
        assert!(chosen >= 3, "layer {layer}: {chosen} experts learned");
    }
}

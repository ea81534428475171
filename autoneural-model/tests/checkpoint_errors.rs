//! Bad input gets an error that names the file, the key and what was expected; a good
//! model survives a save -> load round trip.

mod common;

use std::path::Path;

use autoneural_model::ModelError;
use autoneural_model::checkpoint::apply::collect_tensors;
use autoneural_model::checkpoint::{load_lfm2, save_lfm2};
use autoneural_model::text::{Lfm2Config, Logits};
use autoneural_model::tokenizer::TextTokenizer;
use burn::module::Module;
use burn::tensor::Device;
use common::*;

/// A copy of a fixture in a temporary directory, to break on purpose.
fn scratch(name: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for entry in std::fs::read_dir(fixtures().join(name)).unwrap() {
        let p = entry.unwrap().path();
        std::fs::copy(&p, dir.path().join(p.file_name().unwrap())).unwrap();
    }
    dir
}

/// Rewrites `model.safetensors` of `dir` after `edit` changes the tensor list.
fn edit_weights(dir: &Path, edit: impl FnOnce(&mut Vec<(String, Vec<usize>, Vec<f32>)>)) {
    let model = load_lfm2(dir, &Device::flex()).unwrap();
    let mut tensors = collect_tensors(&model, &autoneural_model::checkpoint::apply::Identity);
    edit(&mut tensors);
    autoneural_model::checkpoint::safetensors::write_f32(&dir.join("model.safetensors"), &tensors).unwrap();
}

fn load_err(dir: &Path) -> String {
    match load_lfm2(dir, &Device::flex()) {
        Ok(_) => panic!("loading {} should fail", dir.display()),
        Err(e) => e.to_string(),
    }
}

#[test]
fn missing_unexpected_and_misshaped_keys_are_all_named() {
    let dir = scratch("conv-only-hub-f32");
    edit_weights(dir.path(), |t| {
        t.retain(|(k, _, _)| k != "model.layers.1.feed_forward.w3.weight" && k != "model.embedding_norm.weight");
        t.push(("model.layers.9.conv.bogus".into(), vec![2], vec![0.0, 1.0]));
        let w = t.iter_mut().find(|(k, _, _)| k == "model.layers.0.conv.conv.weight").unwrap();
        w.1 = vec![w.1[0], 1, 2];
        w.2.truncate(w.1.iter().product());
    });
    let err = load_err(dir.path());
    for needle in [
        "missing key: model.layers.1.feed_forward.w3.weight",
        "missing key: model.embedding_norm.weight",
        "unexpected key: model.layers.9.conv.bogus",
        "wrong shape: model.layers.0.conv.conv.weight: expected [64, 1, 3], found [64, 1, 2]",
    ] {
        assert!(err.contains(needle), "error lacks {needle:?}:\n{err}");
    }
}

#[test]
fn linear_weights_report_pytorch_shapes() {
    let dir = scratch("conv-only-hub-f32");
    edit_weights(dir.path(), |t| {
        let w = t.iter_mut().find(|(k, _, _)| k == "model.layers.2.conv.in_proj.weight").unwrap();
        w.1 = vec![w.1[1], w.1[0]]; // transposed by mistake
    });
    let err = load_err(dir.path());
    assert!(
        err.contains("wrong shape: model.layers.2.conv.in_proj.weight: expected [192, 64], found [64, 192]"),
        "{err}"
    );
}

#[test]
fn malformed_config_names_the_file_and_field() {
    let dir = scratch("hybrid-hub-bf16");
    let cfg = dir.path().join("config.json");
    std::fs::write(&cfg, "{\"hidden_size\": 64,").unwrap();
    let err = load_err(dir.path());
    assert!(err.contains("config.json") && err.contains("malformed JSON"), "{err}");

    std::fs::write(&cfg, r#"{"model_type": "lfm2", "vocab_size": 320, "hidden_size": "wide", "num_hidden_layers": 2, "num_attention_heads": 4, "intermediate_size": 192}"#).unwrap();
    let err = load_err(dir.path());
    assert!(
        err.contains("config.json") && err.contains("field `hidden_size`") && err.contains("non-negative integer"),
        "{err}"
    );

    std::fs::write(&cfg, r#"{"model_type": "lfm2", "vocab_size": 320, "hidden_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4, "intermediate_size": 192, "layer_types": ["conv", "mamba"]}"#).unwrap();
    let err = load_err(dir.path());
    assert!(err.contains("field `layer_types`") && err.contains("mamba"), "{err}");

    std::fs::write(&cfg, r#"{"model_type": "lfm2", "vocab_size": 320, "hidden_size": 64, "num_attention_heads": 4, "intermediate_size": 192}"#).unwrap();
    let err = load_err(dir.path());
    assert!(err.contains("field `num_hidden_layers`: missing"), "{err}");
}

#[test]
fn missing_tokenizer_and_weights_are_clear() {
    let dir = scratch("hybrid-hub-bf16");
    std::fs::remove_file(dir.path().join("tokenizer.json")).unwrap();
    let err = TextTokenizer::from_dir(dir.path(), &[]).err().unwrap().to_string();
    assert!(err.contains("tokenizer.json") && err.contains("not found"), "{err}");

    std::fs::remove_file(dir.path().join("model.safetensors")).unwrap();
    let err = load_err(dir.path());
    assert!(err.contains("no model.safetensors"), "{err}");

    std::fs::write(dir.path().join("model.safetensors"), b"\x08\x00\x00\x00\x00\x00\x00\x00{garbage").unwrap();
    let err = load_err(dir.path());
    assert!(err.contains("model.safetensors") && err.contains("not a valid safetensors file"), "{err}");
}

#[test]
fn errors_are_typed() {
    let dir = scratch("hybrid-hub-bf16");
    std::fs::remove_file(dir.path().join("config.json")).unwrap();
    assert!(matches!(load_lfm2(dir.path(), &Device::flex()), Err(ModelError::Io { .. })));
}

#[test]
fn save_then_load_round_trips() {
    let device = Device::flex();
    for (tied, attn) in [(true, 2), (false, 1)] {
        let mut cfg = Lfm2Config::preset("lfm2-nano").unwrap().with_attention_layers(attn);
        cfg.tie_word_embeddings = tied;
        let model = cfg.init(&device).materialize();
        let dir = tempfile::tempdir().unwrap();
        save_lfm2(&model, dir.path()).unwrap();
        let back = load_lfm2(dir.path(), &device).unwrap();
        assert_eq!(back.config, model.config);
        let seq = ids(&[1, 5, 9, 2], &device);
        let a = values(model.forward(seq.clone(), None, Logits::All));
        let b = values(back.forward(seq, None, Logits::All));
        assert_eq!(a, b, "tied={tied}");
    }
}

/// A copy of the AutoNeural fixture with `config.json` edited by `edit`.
fn autoneural_with(edit: impl FnOnce(&mut serde_json::Value)) -> tempfile::TempDir {
    let src = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/vision/autoneural-tiny");
    let dir = tempfile::tempdir().unwrap();
    for f in std::fs::read_dir(&src).unwrap() {
        let f = f.unwrap();
        std::fs::copy(f.path(), dir.path().join(f.file_name())).unwrap();
    }
    let path = dir.path().join("config.json");
    let mut cfg: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    edit(&mut cfg);
    std::fs::write(&path, serde_json::to_string(&cfg).unwrap()).unwrap();
    dir
}

#[test]
fn vlm_config_errors_name_file_and_field() {
    use autoneural_model::checkpoint::load_vlm;
    let cases: Vec<(Box<dyn FnOnce(&mut serde_json::Value)>, &str, &str)> = vec![
        (
            Box::new(|c| c["vision_config"]["block_args"][0][0] = "zz_r1_k3_s2_c8".into()),
            "block_args",
            "unknown block type",
        ),
        (Box::new(|c| c["vision_config"]["pad_type"] = "reflect".into()), "pad_type", "expected \"same\""),
        (
            Box::new(|c| c["vision_config"] = serde_json::json!({"architecture": "mobilenetv9"})),
            "architecture",
            "unknown preset",
        ),
        (
            Box::new(|c| {
                c.as_object_mut().unwrap().remove("projector_hidden_size");
            }),
            "projector_hidden_size",
            "missing",
        ),
        (Box::new(|c| c["image_token_id"] = 100000.into()), "image_token_id", "outside the vocabulary"),
        (Box::new(|c| c["model_type"] = "llava".into()), "model_type", "not a VLM"),
    ];
    for (edit, field, what) in cases {
        let dir = autoneural_with(edit);
        let err = load_vlm(dir.path(), &burn::tensor::Device::flex()).unwrap_err().to_string();
        assert!(err.contains("config.json") && err.contains(field) && err.contains(what), "{err}");
    }
    // A weight that does not fit: the key report names it with both shapes.
    let dir = autoneural_with(|c| c["projector_hidden_size"] = 95.into());
    let err = load_vlm(dir.path(), &burn::tensor::Device::flex()).unwrap_err().to_string();
    assert!(err.contains("model.multi_modal_projector.linear_1.weight"), "{err}");
}

//! The Genie / AI Hub layout of an LFM2 hybrid: parts under the limit (embedding first,
//! head last), AR-N and AR-1 graphs reading one shared weights file, keys transposed, only
//! the new KV out, cos/sin and a `[1, 1, T, context]` mask in, conv states in and out, Linear
//! as 1x1 Conv; `scripts/verify_onnx.py` chains the parts in onnxruntime for the Burn
//! model's greedy tokens when `AUTONEURAL_PYTHON` names a Python with onnxruntime (CI does).

use std::collections::HashMap;
use std::path::Path;

mod common;

use autoneural_export::export::{ExportOptions, export_language};
use autoneural_export::genie::GenieOptions;
use autoneural_model::checkpoint::load_lfm2;
use autoneural_model::text::Lfm2Config;
use burn::tensor::Device;
use common::verify_onnx;
use onnx_protobuf::{Message, ModelProto};

fn opts(genie: u64) -> ExportOptions {
    ExportOptions {
        prefill_len: 4,
        context: 16,
        reference_tokens: 5,
        linear_as_conv: false,
        quantization: None,
        encodings_version: Default::default(),
        genie: Some(GenieOptions { part_max_bytes: genie }),
        calibration: Vec::new(),
    }
}

#[test]
fn a_hybrid_exports_in_parts_that_chain_to_its_tokens() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/lfm2/hybrid-hub-bf16");
    let lm = load_lfm2(&dir, &Device::flex()).unwrap();
    let out = tempfile::tempdir().unwrap();
    // Small enough for a part per layer or two.
    let limit = 360 << 10;
    let manifest = export_language(&lm, "", out.path(), &opts(limit)).unwrap();
    let genie = manifest.genie.as_ref().unwrap();
    assert!(manifest.graphs.is_empty() && manifest.linear_as_conv);
    assert_eq!(genie.ar, [4, 1]);
    let kinds: Vec<&str> = genie.parts.iter().map(|p| p.kind).collect();
    assert_eq!((kinds[0], kinds[kinds.len() - 1]), ("embedding", "head"));
    assert!(kinds.len() > 3, "several layer parts under {limit} bytes: {kinds:?}");
    let covered: usize = genie.parts.iter().filter_map(|p| p.layers).map(|[a, b]| b - a).sum();
    assert_eq!(covered, lm.config.layer_types.len());
    let (kv, hd, d) = (lm.config.num_key_value_heads, lm.config.head_dim, lm.config.hidden_size);
    for part in &genie.parts {
        assert!(part.bytes <= limit, "part {} is {} bytes", part.index, part.bytes);
        // Both AR graphs read every large weight from the part's one file, at the same place.
        let mut places: HashMap<String, Vec<(String, String)>> = HashMap::new();
        for (ar, entry) in &part.graphs {
            let model = ModelProto::parse_from_bytes(&std::fs::read(out.path().join(&entry.file)).unwrap()).unwrap();
            for t in &model.graph.initializer {
                if let [loc, off, _] = &t.external_data[..] {
                    assert_eq!(loc.value, part.data);
                    places.entry(t.name.clone()).or_default().push((ar.clone(), off.value.clone()));
                }
            }
            assert!(
                !model
                    .graph
                    .node
                    .iter()
                    .any(|n| n.op_type == "MatMul" && n.input.iter().any(|i| i.ends_with(".weight")))
            );
            let t: usize = ar.trim_start_matches("ar").parse().unwrap();
            let port = |name: &str| {
                entry.inputs.iter().chain(&entry.outputs).find(|p| p.name == name).map(|p| p.shape.clone())
            };
            for layer in part.layers.map_or(0..0, |[a, b]| a..b) {
                if let Some(shape) = port(&format!("past_key_{layer}")) {
                    assert_eq!(shape, [1, kv, hd, 16 - t], "keys transposed, the past context - T");
                    assert_eq!(port(&format!("past_value_{layer}")).unwrap(), [1, kv, 16 - t, hd]);
                    assert_eq!(port(&format!("present_key_{layer}")).unwrap(), [1, kv, hd, t], "only the new keys");
                    assert_eq!(port("attention_mask").unwrap(), [1, 1, t, 16]);
                    assert_eq!(port("position_ids_cos").unwrap(), [1, 1, t, hd / 2]);
                } else {
                    assert_eq!(port(&format!("conv_state_{layer}")).unwrap(), [1, lm.config.conv_kernel - 1, d]);
                    assert!(port(&format!("new_conv_state_{layer}")).is_some());
                }
            }
        }
        for (name, at) in places {
            assert_eq!(at.len(), 2, "{name}: in both AR graphs");
            assert_eq!(at[0].1, at[1].1, "{name}: one copy, shared");
        }
    }
    verify_onnx(out.path(), "Genie layout", &["5 greedy tokens equal the Burn model's"]);
}

/// LFM3: sliding layers keep their ring of `window` slots (keys transposed), with their own
/// mask and RoPE rows; full layers their proportional RoPE; prompt and answer cross the window.
#[test]
fn lfm3_sliding_layers_chain_as_rings() {
    let device = Device::flex();
    device.seed(3);
    let mut c = Lfm2Config::preset("lfm3-nano").unwrap();
    c.max_position_embeddings = 64;
    c.lfm3.as_mut().unwrap().sliding_window = 4;
    let lm = c.init(&device);
    let out = tempfile::tempdir().unwrap();
    let manifest = export_language(&lm, "", out.path(), &opts(1 << 30)).unwrap();
    assert_eq!(manifest.sliding_window, Some(4));
    let (kv, hd) = (lm.config.num_key_value_heads, lm.config.head_dim);
    let rings: Vec<usize> = manifest.state.iter().filter(|s| s.kind == "sliding_attention").map(|s| s.layer).collect();
    assert!(!rings.is_empty());
    let part = &manifest.genie.as_ref().unwrap().parts[1];
    for (ar, entry) in &part.graphs {
        let t: usize = ar.trim_start_matches("ar").parse().unwrap();
        let port = |name: &str| entry.inputs.iter().find(|p| p.name == name).map(|p| p.shape.clone()).unwrap();
        assert_eq!(port(&format!("past_key_{}", rings[0])), [1, kv, hd, 4]);
        assert_eq!(port("sliding_attention_mask"), [1, 1, t, 4 + t]);
        assert_eq!(port("position_ids_cos_sliding"), [1, 1, t, hd / 2]);
    }
    verify_onnx(out.path(), "Genie layout", &["5 greedy tokens equal the Burn model's"]);
}

#[test]
fn what_the_layout_cannot_hold_is_refused_before_writing() {
    let device = Device::flex();
    let out = tempfile::tempdir().unwrap();
    let lm = Lfm2Config::preset("lfm2-nano").unwrap().init(&device);
    let err = export_language(&lm, "", out.path(), &opts(1 << 10)).unwrap_err().to_string();
    assert!(err.contains("alone is") && err.contains("over --part-max-mb"), "{err}");
    let err = export_language(&lm, "", out.path(), &ExportOptions { prefill_len: 16, ..opts(1 << 30) })
        .unwrap_err()
        .to_string();
    assert!(err.contains("must be below --context"), "{err}");
    assert!(std::fs::read_dir(out.path()).unwrap().next().is_none(), "nothing written");
}

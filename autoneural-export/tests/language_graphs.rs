//! The exported language-model graphs, read back through the protobuf binding: opset and
//! IR version, every node input defined before use, checkpoint-named initializers, the
//! state inputs and outputs the manifest promises, and the reference generation. Running
//! them (onnxruntime against the Burn model) is `scripts/verify_onnx.py`, driven from
//! `tests/cli.rs` when `AUTONEURAL_PYTHON` names a Python with onnx and onnxruntime.

use std::collections::HashSet;
use std::path::Path;

use autoneural_export::export::{ExportOptions, export_language};
use autoneural_export::graph::{IR_VERSION, OPSET};
use autoneural_model::checkpoint::load_lfm2;
use burn::tensor::Device;
use onnx_protobuf::{Message, ModelProto};

#[test]
fn hybrid_model_exports_consistent_graphs() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/lfm2/hybrid-hub-bf16");
    let lm = load_lfm2(&dir, &Device::flex()).unwrap();
    let out = tempfile::tempdir().unwrap();
    let opts = ExportOptions { prefill_len: 4, context: 16, reference_tokens: 3, ..Default::default() };
    let manifest = export_language(&lm, "", out.path(), &opts).unwrap();
    assert_eq!(manifest.graphs.keys().collect::<Vec<_>>(), ["decode", "embed_tokens", "prefill"]);
    let layers = lm.config.layer_types.len();
    assert_eq!(manifest.state.len(), layers);
    for (name, entry) in &manifest.graphs {
        let model = ModelProto::parse_from_bytes(&std::fs::read(out.path().join(&entry.file)).unwrap()).unwrap();
        assert_eq!((model.ir_version, model.opset_import[0].version), (IR_VERSION, OPSET), "{name}");
        let g = &model.graph;
        let mut defined: HashSet<&str> = g.input.iter().map(|v| v.name.as_str()).collect();
        defined.extend(g.initializer.iter().map(|t| t.name.as_str()));
        for node in &g.node {
            for i in &node.input {
                assert!(defined.contains(i.as_str()), "{name}: {} reads {i} before it is defined", node.name);
            }
            defined.extend(node.output.iter().map(String::as_str));
        }
        let inputs: Vec<&str> = g.input.iter().map(|v| v.name.as_str()).collect();
        let outputs: Vec<&str> = g.output.iter().map(|v| v.name.as_str()).collect();
        assert_eq!(inputs, entry.inputs.iter().map(|p| p.name.as_str()).collect::<Vec<_>>());
        assert_eq!(outputs, entry.outputs.iter().map(|p| p.name.as_str()).collect::<Vec<_>>());
        if name != "embed_tokens" {
            for s in &manifest.state {
                for port in s.inputs.iter().chain(&s.outputs) {
                    assert!(inputs.contains(&port.as_str()) || outputs.contains(&port.as_str()), "{name}: {port}");
                }
            }
            assert!(g.initializer.iter().any(|t| t.name == "model.layers.0.operator_norm.weight"));
        }
    }
    let prefill = &manifest.graphs["prefill"];
    let embeds = prefill.inputs.iter().find(|p| p.name == "inputs_embeds").unwrap();
    assert_eq!(embeds.shape, [1, 4, lm.config.hidden_size]);
    let mask = prefill.inputs.iter().find(|p| p.name == "attention_mask").unwrap();
    assert_eq!(mask.shape, [1, 1, 4, 16 + 4]);
    let reference = std::fs::read(out.path().join("reference.safetensors")).unwrap();
    let tensors = safetensors::SafeTensors::deserialize(&reference).unwrap();
    assert_eq!(tensors.tensor("step_logits").unwrap().shape(), [3, lm.config.vocab_size]);
    assert_eq!(tensors.tensor("prompt_ids").unwrap().shape(), [2 * 4 + 3]);
}

#[test]
fn bad_shapes_are_clear_errors() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/lfm2/conv-only-hub-f32");
    let lm = load_lfm2(&dir, &Device::flex()).unwrap();
    let out = tempfile::tempdir().unwrap();
    let err = export_language(
        &lm,
        "",
        out.path(),
        &ExportOptions { prefill_len: 32, context: 16, reference_tokens: 0, ..Default::default() },
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("--prefill-len 32") && err.contains("--context 16"), "{err}");
    let opts = ExportOptions { prefill_len: 4, context: 8, reference_tokens: 4, ..Default::default() };
    let err = export_language(&lm, "", out.path(), &opts).unwrap_err().to_string();
    assert!(err.contains("reference needs 15 positions"), "{err}");
}

/// The exporter's own interpreter (which calibrates the quantizers Qualcomm's tools add)
/// computes what the Burn model does: the hybrid fixture's prefill graph, driven by the
/// calibration host over two chunks (the second over a filled state), gives the Burn
/// model's logits.
#[test]
fn the_interpreter_runs_the_step_graph_as_the_burn_model() {
    use autoneural_export::calibrate::{Host, Ranges};
    use autoneural_export::graph::Build;
    use autoneural_export::interpret::{Interpreter, Value};
    use autoneural_export::lm::step_graph;
    use autoneural_model::text::Logits;
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/lfm2/hybrid-hub-bf16");
    let device = Device::flex();
    let lm = load_lfm2(&dir, &device).unwrap();
    let (t, context, d) = (4, 16, lm.config.hidden_size);
    let g = step_graph(&lm, "prefill", t, context, "", &Build::default()).unwrap();
    let interp = Interpreter::new(g.nodes(), g.initializers(), &device).unwrap();
    let state = autoneural_export::export::state_entries(&lm, context, autoneural_export::lm::KvLayout::Plain);
    let mut host = Host::new(context, state, None, &device);
    let ids: Vec<u32> = (0..2 * t as u32).map(|i| (i * 37 + 5) % lm.config.vocab_size as u32).collect();
    let embeds = lm.embed_ids(&ids);
    let mut burn_state = lm.new_state(1, context, &device);
    let mut ranges = Ranges::default();
    for chunk in 0..2 {
        let rows = embeds.clone().slice([0..1, chunk * t..(chunk + 1) * t, 0..d]);
        let want = lm.logits(lm.hidden_states(rows.clone(), Some(&mut burn_state)), Logits::All);
        let want: Vec<f32> = want.into_data().try_into_vec_as().unwrap();
        let rows = Value::float(rows.into_data().try_into_vec_as().unwrap(), &[1, t, d], &device);
        let mut outputs = ranges.run(&interp, host.feeds(rows).unwrap()).unwrap();
        host.advance(&outputs, t).unwrap();
        let got = outputs.remove("logits").unwrap().to_vec().unwrap();
        let err = got.iter().zip(&want).map(|(a, b)| (a - b).powi(2)).sum::<f32>().sqrt()
            / want.iter().map(|b| b * b).sum::<f32>().sqrt();
        assert!(err < 1e-5, "chunk {chunk}: logits {err:.2e} from the Burn model's");
    }
}

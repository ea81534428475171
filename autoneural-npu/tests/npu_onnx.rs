//! The analytic op lists (from configs) against the ONNX reader on graphs
//! `autoneural_export` writes for a small random VLM: MACs and weight bytes of
//! `vision_encoder`, `prefill` and `decode` agree exactly (op counts and activation peaks
//! differ: the graphs spell norms out op by op and add transposes).

use autoneural_export::export::{ExportOptions, export_vlm};
use autoneural_model::images::Preprocess;
use autoneural_model::text::Lfm2Config;
use autoneural_model::vision::{EncoderConfig, NormKind};
use autoneural_model::vlm::VlmConfig;
use autoneural_npu::onnx::read_onnx;
use autoneural_npu::text::{Step, step_ops};
use autoneural_npu::vision::vision_ops;
use autoneural_npu::{Bits, OpCost, totals};
use burn::tensor::Device;

fn tiny_config(norm: NormKind) -> VlmConfig {
    let mut encoder = EncoderConfig::preset("mobilenetv5_tiny").unwrap();
    if let EncoderConfig::MobileNetV5(a) = &mut encoder {
        a.norm = norm;
        a.msfa_output_resolution = 4;
    }
    let text = Lfm2Config::preset("lfm2-nano").unwrap();
    VlmConfig::autoneural(encoder, text, Preprocess::Fixed { size: 64, mean: [0.0; 3], std: [1.0; 3] })
}

fn agree(what: &str, analytic: &[OpCost], onnx: &[OpCost]) {
    let (a, o) = (totals(analytic), totals(onnx));
    eprintln!("{what}: analytic {a:?}\n{what}: onnx     {o:?}");
    // Exact (the brief allows 1%): both enumerate the same ops.
    assert_eq!(a.macs, o.macs, "{what}: MACs");
    assert_eq!(a.weight_bytes, o.weight_bytes, "{what}: weight bytes");
    assert_eq!(a.state_bytes, o.state_bytes, "{what}: state bytes");
}

#[test]
fn analytic_op_lists_match_the_exported_graphs() {
    for (norm, linear_as_conv) in [(NormKind::Rms, false), (NormKind::Batch, true)] {
        let config = tiny_config(norm);
        let device = Device::flex();
        let model = config.init(&device).unwrap();
        let out = tempfile::tempdir().unwrap();
        let (prefill_len, context) = (8, 48);
        let opts = ExportOptions { prefill_len, context, reference_tokens: 0, linear_as_conv, ..Default::default() };
        export_vlm(&model, out.path(), &opts).unwrap();
        let bits = Bits::FP32;
        let read = |f: &str| read_onnx(&out.path().join(f), bits).unwrap();
        let (vision, tokens) = vision_ops(&config.encoder, &config.projector, 64, bits).unwrap();
        assert_eq!(tokens, 16);
        agree(&format!("{norm:?} vision_encoder"), &vision, &read("vision_encoder.onnx"));
        let step = |t| {
            step_ops(&config.text, Step { tokens: t, context, all_logits: true, linear_as_conv: false }, bits).unwrap()
        };
        agree(&format!("{norm:?} prefill"), &step(prefill_len), &read("prefill.onnx"));
        agree(&format!("{norm:?} decode"), &step(1), &read("decode.onnx"));
    }
}

#[test]
fn unknown_ops_and_missing_files_are_errors_naming_them() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("nope.onnx");
    let e = format!("{:#}", read_onnx(&missing, Bits::FP32).unwrap_err());
    assert!(e.contains("nope.onnx"), "{e}");
    let mut g = autoneural_export::graph::Graph::new("bad");
    let x = g.input("x", autoneural_export::graph::DType::Float32, &[1, 4]);
    let y = g.op("Einsum", &[&x], vec![]);
    g.output(&y, "y", autoneural_export::graph::DType::Float32, &[1, 4]);
    let path = dir.path().join("bad.onnx");
    autoneural_export::graph::write_model(g.into_model("test"), &path).unwrap();
    let e = format!("{:#}", read_onnx(&path, Bits::FP32).unwrap_err());
    assert!(e.contains("Einsum") && e.contains("bad.onnx") && e.contains("Einsum_1"), "{e}");
}

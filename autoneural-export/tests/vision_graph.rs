//! `export_vlm` on small random VLMs (MobileNetV5-tiny with RMSNorm2d, and with batch norm
//! as the quickstart's and Linear layers written as 1x1 Conv): `vision_encoder.onnx` beside the language graphs, the manifest's
//! vision entry, and a reference generation whose prompt holds the image. With
//! `AUTONEURAL_PYTHON` set (CI), `scripts/verify_onnx.py` replays it through onnxruntime:
//! image features and logits against the Burn model, the same greedy tokens.

mod common;

use autoneural_export::export::{ExportOptions, export_vlm};
use autoneural_export::qdq::EncodingsVersion;
use autoneural_model::checkpoint::apply::{Identity, collect_tensors};
use autoneural_model::connector::ProjectorConfig;
use autoneural_model::images::Preprocess;
use autoneural_model::quant::PrecisionPolicy;
use autoneural_model::quant::activations::observe;
use autoneural_model::quant::apply::{activation_encodings, quantize_weights};
use autoneural_model::quant::kv::activation_keys;
use autoneural_model::quant::saved::QuantizationFile;
use autoneural_model::text::Lfm2Config;
use autoneural_model::text::Logits;
use autoneural_model::vision::siglip::VitConfig;
use autoneural_model::vision::{EncoderConfig, NormKind};
use autoneural_model::vlm::{VisionLanguageModel, VlmConfig, VlmFormat};
use burn::tensor::{Device, Int, Tensor, TensorData};
use common::verify_onnx;

fn tiny_vlm(norm: NormKind) -> VisionLanguageModel {
    tiny_vlm_at(norm, 4)
}

/// `msfa_output_resolution` = `grid` (4 pools the 4x4 map; 3 resizes it bilinearly).
fn tiny_vlm_at(norm: NormKind, grid: usize) -> VisionLanguageModel {
    let mut encoder = EncoderConfig::preset("mobilenetv5_tiny").unwrap();
    if let EncoderConfig::MobileNetV5(a) = &mut encoder {
        a.norm = norm;
        a.msfa_output_resolution = grid;
        a.layer_scale_init_value = Some(1.0);
    }
    let text = Lfm2Config::preset("lfm2-nano").unwrap();
    seeded(VlmConfig::autoneural(encoder, text, Preprocess::Fixed { size: 64, mean: [0.0; 3], std: [1.0; 3] }), 5)
}

/// A model of `config` with every weight drawn from `seed`. One generator per process,
/// parameters drawn on first read: seed and draw under one lock, or the tests running in
/// parallel interleave their draws and the models (and the quantized graphs' error) change
/// from run to run.
fn seeded(config: VlmConfig, seed: u64) -> VisionLanguageModel {
    static SEEDED: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _guard = SEEDED.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    let device = Device::flex();
    device.seed(seed);
    let model = config.init(&device).unwrap();
    collect_tensors(&model, &Identity);
    model
}

/// LFM2-VL's layout at small size: a SigLIP2-shaped ViT (Linear patch embedding, or
/// SigLIP's strided conv) whose 8x8 position table is resized to a 6x6 grid, then the
/// connector's pixel-unshuffle by 2 and layer norm: 9 image tokens.
fn tiny_vit_vlm(linear_patches: bool) -> VisionLanguageModel {
    let mut vit = VitConfig::preset("vit_mini").unwrap();
    vit.image_size = 48;
    vit.linear_patch_embedding = linear_patches;
    let text = Lfm2Config::preset("lfm2-nano").unwrap();
    let projector = ProjectorConfig {
        vision_dim: 64,
        hidden: 96,
        text_dim: text.hidden_size,
        bias: true,
        downsample: 2,
        layer_norm: true,
        merge_blocks: false,
    };
    let preprocess = Preprocess::Fixed { size: 48, mean: [0.5; 3], std: [0.5; 3] };
    let image_token = (text.vocab_size - 1) as u32;
    let config =
        VlmConfig::new(VlmFormat::Lfm2Vl, EncoderConfig::Vit(vit), projector, text, image_token, preprocess, None);
    seeded(config, 7)
}

#[test]
fn vit_vlms_with_lfm2_vl_connectors_export_their_vision_encoder() {
    for (linear_patches, linear_as_conv) in [(true, false), (false, true)] {
        let model = tiny_vit_vlm(linear_patches);
        let out = tempfile::tempdir().unwrap();
        let opts =
            ExportOptions { prefill_len: 12, context: 48, reference_tokens: 4, linear_as_conv, ..Default::default() };
        let manifest = export_vlm(&model, out.path(), &opts).unwrap();
        let vision = manifest.vision.as_ref().unwrap();
        assert_eq!((vision.image_size, vision.tokens_per_image), (48, 9));
        assert_eq!(manifest.graphs["vision_encoder"].outputs[0].shape, [1, 9, model.language.config.hidden_size]);
        verify_onnx(out.path(), &format!("ViT, linear patches {linear_patches}"), &["image features within"]);
    }
}

/// LFM3-VL's hybrid tower as an AutoNeural encoder at a fixed 64-pixel size: patches cut by
/// reshapes, gated depthwise convolutions on the grid, attention with axial RoPE, its
/// projector merging 2x2 blocks: 16 image tokens, replayed through onnxruntime in float and,
/// quantized by the `autoneural` policy, as QDQ graphs with AIMET encodings.
#[test]
fn an_lfm3_vl_tower_exports_at_a_fixed_size() {
    let model = || {
        let encoder = EncoderConfig::preset("lfm3_vl_tiny").unwrap();
        let text = Lfm2Config::preset("lfm2-nano").unwrap();
        seeded(VlmConfig::autoneural(encoder, text, Preprocess::Fixed { size: 64, mean: [0.0; 3], std: [1.0; 3] }), 9)
    };
    let (qmodel, file) = quantized(model());
    for (model, quantization, expect) in
        [(model(), None, "image features within"), (qmodel, Some(file), "QDQ generation with the image")]
    {
        let out = tempfile::tempdir().unwrap();
        let opts =
            ExportOptions { prefill_len: 12, context: 48, reference_tokens: 3, quantization, ..Default::default() };
        let manifest = export_vlm(&model, out.path(), &opts).unwrap();
        assert_eq!(manifest.vision.as_ref().unwrap().tokens_per_image, 16);
        verify_onnx(out.path(), "LFM3-VL tower", &[expect]);
    }
}

#[test]
fn a_fusion_adapter_that_resizes_bilinearly_exports() {
    let model = tiny_vlm_at(NormKind::Rms, 3);
    let out = tempfile::tempdir().unwrap();
    let opts = ExportOptions { prefill_len: 12, context: 48, reference_tokens: 3, ..Default::default() };
    let manifest = export_vlm(&model, out.path(), &opts).unwrap();
    assert_eq!(manifest.vision.as_ref().unwrap().tokens_per_image, 9);
    verify_onnx(out.path(), "MSFA 4x4 -> 3x3 bilinear", &["image features within"]);
}

#[test]
fn mobilenet_vlms_export_their_vision_encoder_and_a_reference_with_an_image() {
    // The second also writes every Linear as a 1x1 Conv (--linear-as-conv).
    for (norm, linear_as_conv) in [(NormKind::Rms, false), (NormKind::Batch, true)] {
        let model = tiny_vlm(norm);
        let out = tempfile::tempdir().unwrap();
        let opts =
            ExportOptions { prefill_len: 8, context: 48, reference_tokens: 5, linear_as_conv, ..Default::default() };
        let manifest = export_vlm(&model, out.path(), &opts).unwrap();
        let vision = manifest.vision.as_ref().unwrap();
        assert_eq!((vision.image_size, vision.tokens_per_image), (64, 16));
        let entry = &manifest.graphs["vision_encoder"];
        assert_eq!(entry.inputs[0].shape, [1, 3, 64, 64]);
        assert_eq!(entry.outputs[0].shape, [1, 16, model.language.config.hidden_size]);
        let text = std::fs::read_to_string(out.path().join("manifest.json")).unwrap();
        assert!(text.contains("\"image_token_id\"") && text.contains("\"loop\""), "{text}");
        let reference = std::fs::read(out.path().join("reference.safetensors")).unwrap();
        let tensors = safetensors::SafeTensors::deserialize(&reference).unwrap();
        assert_eq!(tensors.tensor("pixels").unwrap().shape(), [1, 3, 64, 64]);
        verify_onnx(out.path(), &format!("{norm:?}"), &["image features within"]);
    }
}

/// PTQ at the `autoneural` preset (vision W8A16, language W4 LPBQ-64 A16, head W8, KV cache
/// 8-bit) on one image and prompt, as `autoneural quantize` does it, into the file the
/// exporter reads.
fn quantized(model: VisionLanguageModel) -> (VisionLanguageModel, QuantizationFile) {
    let policy = PrecisionPolicy::preset("autoneural").unwrap();
    let device = Device::flex();
    let pattern: Vec<f32> = (0..3 * 64 * 64).map(|i| 0.5 + 0.5 * (i as f32 * 0.031).cos()).collect();
    let pixels = Tensor::<4>::from_data(TensorData::new(pattern, [1, 3, 64, 64]), &device);
    let ids: Vec<i64> = (0..12).map(|i| (i * 37 + 5) % 500).collect();
    let ids = Tensor::<2, Int>::from_data(TensorData::new(ids, [1, 12]), &device);
    let ((), ranges) = observe(|| {
        model.image_features(pixels.clone());
        model.language.forward(ids.clone(), None, Logits::All);
    });
    let activations = activation_encodings(&model, &policy, &ranges).unwrap();
    let (model, weights) = quantize_weights(model, &policy).unwrap();
    let mut file = QuantizationFile::new(&policy);
    for w in weights {
        file.weights.insert(w.key, w.encoding);
    }
    let keys: std::collections::HashMap<_, _> = activation_keys(&model).into_iter().map(|(k, id)| (id, k)).collect();
    for (id, enc) in activations {
        file.activations.insert(keys[&id].clone(), enc);
    }
    (model, file)
}

/// A quantized checkpoint exports in both deployment forms: float graphs with AIMET
/// encodings and QDQ graphs, with a second reference (op inputs and KV caches
/// fake-quantized); `verify_onnx.py` checks the encodings against the graphs and the QDQ
/// graphs against the Burn fake-quant model (1e-3) and the same greedy tokens.
#[test]
fn a_quantized_vlm_exports_qdq_graphs_and_aimet_encodings() {
    let (model, file) = quantized(tiny_vlm(NormKind::Batch));
    let kv = file.activations.keys().filter(|k| k.ends_with("_cache")).count();
    assert!(kv > 0, "the autoneural preset quantizes the KV cache");
    // A foreign or hand-edited file is a clear error before anything is written.
    let out = tempfile::tempdir().unwrap();
    let opts = |file| ExportOptions {
        prefill_len: 8,
        context: 48,
        reference_tokens: 5,
        quantization: Some(file),
        ..Default::default()
    };
    let mut bad = file.clone();
    let (key, enc) = bad.weights.iter_mut().next().unwrap();
    let key = key.clone();
    enc.shape = vec![3, 5];
    let err = export_vlm(&model, out.path(), &opts(bad)).unwrap_err().to_string();
    assert!(err.contains(&key) && err.contains("does not fit"), "{err}");
    let mut bad = file.clone();
    let enc = bad.weights.remove(&key).unwrap();
    bad.weights.insert("vision_tower.nothing.weight".into(), enc);
    let err = export_vlm(&model, out.path(), &opts(bad)).unwrap_err().to_string();
    assert!(err.contains("\"vision_tower.nothing.weight\": the model has no such weight"), "{err}");
    assert!(std::fs::read_dir(out.path()).unwrap().next().is_none(), "nothing written");
    let opts = opts(file);
    let manifest = export_vlm(&model, out.path(), &opts).unwrap();
    for (name, entry) in &manifest.graphs {
        let (enc, qdq) = (entry.encodings.as_ref().unwrap(), entry.qdq.as_ref().unwrap());
        let aimet: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(out.path().join(enc)).unwrap()).unwrap();
        assert_eq!(aimet["version"], "1.0.0", "{name}");
        if name == "embed_tokens" {
            // A Gather's table is an activation to AIMET and QNN: on its weight grid, with a
            // 16-bit activation encoding.
            assert!(aimet["param_encodings"].as_array().unwrap().is_empty());
            let acts = aimet["activation_encodings"].as_array().unwrap();
            assert!(acts.iter().any(|e| e["name"] == "language.model.embed_tokens.weight" && e["bw"] == 16));
        } else {
            assert!(!aimet["param_encodings"].as_array().unwrap().is_empty(), "{name}");
        }
        assert!(out.path().join(qdq).is_file());
    }
    let dec: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.path().join("decode.encodings")).unwrap()).unwrap();
    let lpbq = dec["param_encodings"].as_array().unwrap().iter().filter(|e| e["enc_type"] == "PER_BLOCK").count();
    assert!(lpbq > 0, "LPBQ language weights are written with their block scales");
    assert!(out.path().join("reference.qdq.safetensors").is_file());
    let v1_out = out;
    let out = tempfile::tempdir().unwrap();
    let v2 = ExportOptions { encodings_version: EncodingsVersion::V2, ..opts.clone() };
    let manifest = export_vlm(&model, out.path(), &v2).unwrap();
    for (name, entry) in &manifest.graphs {
        encodings_agree(
            name,
            &v1_out.path().join(entry.encodings.as_ref().unwrap()),
            &out.path().join(entry.encodings.as_ref().unwrap()),
        );
        no_encoding_on_a_data_move(
            &out.path().join(&entry.file),
            &v1_out.path().join(entry.encodings.as_ref().unwrap()),
        );
        let config: serde_json::Value = serde_json::from_str(
            &std::fs::read_to_string(out.path().join(entry.quantsim_config.as_ref().unwrap())).unwrap(),
        )
        .unwrap();
        assert_eq!(config["defaults"]["ops"]["is_output_quantized"], "True", "{name}: AIMET refuses anything else");
    }
    for (out, version) in [(&v1_out, "1.0.0"), (&out, "2.0.0")] {
        verify_onnx(out.path(), version, &["QDQ language graphs", "AIMET encodings"]);
    }
}

/// The 2.0.0 file holds the 1.0.0 file's encodings in ONNX's terms: the same names, each
/// scale the same, zero points `-offset` for unsigned activations and 0 (omitted) for
/// symmetric weights, and LPBQ weights as integer block scales of float channel scales whose
/// products are the 1.0.0 block scales.
fn encodings_agree(name: &str, v1: &std::path::Path, v2: &std::path::Path) {
    let read = |p: &std::path::Path| -> serde_json::Value {
        serde_json::from_str(&std::fs::read_to_string(p).unwrap()).unwrap()
    };
    let (v1, v2) = (read(v1), read(v2));
    assert_eq!(v2["version"], "2.0.0", "{name}");
    let by_name: std::collections::HashMap<String, &serde_json::Value> =
        v2["encodings"].as_array().unwrap().iter().map(|e| (e["name"].as_str().unwrap().to_string(), e)).collect();
    let floats = |v: &serde_json::Value| -> Vec<f64> {
        fn walk(v: &serde_json::Value, out: &mut Vec<f64>) {
            match v {
                serde_json::Value::Array(a) => a.iter().for_each(|x| walk(x, out)),
                x => out.push(x.as_f64().unwrap()),
            }
        }
        let mut out = Vec::new();
        walk(v, &mut out);
        out
    };
    let (mut lpbq, mut n) = (0, 0);
    for e1 in v1["activation_encodings"].as_array().unwrap() {
        let e2 = by_name[e1["name"].as_str().unwrap()];
        // Symmetric activations (HTP's 16-bit second MatMul input) are signed, zero point 0.
        let signed = e1["is_sym"] == true;
        assert_eq!(e2["output_dtype"], format!("{}int{}", if signed { "" } else { "u" }, e1["bw"]), "{name}");
        assert_eq!(floats(&e2["y_scale"]), floats(&e1["scale"]), "{name}");
        let zp = e2.get("y_zero_point").map_or(0.0, |z| z.as_f64().unwrap());
        let shift = if signed { f64::from(1u32 << (e1["bw"].as_u64().unwrap() - 1)) } else { 0.0 };
        assert_eq!(zp, -floats(&e1["offset"])[0] - shift, "{name}: {}", e1["name"]);
        n += 1;
    }
    for e1 in v1["param_encodings"].as_array().unwrap() {
        let e2 = by_name[e1["name"].as_str().unwrap()];
        assert_eq!(e2["output_dtype"], format!("int{}", e1["bw"]), "{name}");
        assert!(e2.get("y_zero_point").is_none(), "{name}: symmetric weights");
        let mut want = floats(&e1["scale"]);
        let mut got = if e2.get("per_block_int_scale").is_some() {
            lpbq += 1;
            // [1, out] channel scales, [blocks, out] multipliers (a Linear stored [in, out]).
            let (c, m) = (floats(&e2["per_channel_float_scale"]), floats(&e2["per_block_int_scale"]));
            assert!(m.iter().all(|&k| (1.0..=16.0).contains(&k) && k.fract() == 0.0), "{name}: int4 LPBQ multipliers");
            (0..m.len()).map(|i| c[i % c.len()] * m[i]).collect()
        } else {
            floats(&e2["y_scale"])
        };
        if e1["enc_type"] == "PER_BLOCK" {
            // 1.0.0 lists blocks channel by channel; 2.0.0 as the stored tensor's [blocks, out].
            let blocks = got.len() / floats(&e2["per_channel_float_scale"]).len().max(1);
            if e2.get("per_block_int_scale").is_some() {
                let out_ch = got.len() / blocks;
                got = (0..out_ch)
                    .flat_map(|o| (0..blocks).map(move |k| (o, k)))
                    .map(|(o, k)| got[k * out_ch + o])
                    .collect();
            }
        }
        for v in [&mut want, &mut got] {
            v.iter_mut().for_each(|x| *x = (*x as f32) as f64);
        }
        let worst = want.iter().zip(&got).map(|(a, b)| ((a - b) / a).abs()).fold(0.0, f64::max);
        assert!(want.len() == got.len() && worst < 1e-6, "{name}: {}: scales differ ({worst})", e1["name"]);
        n += 1;
    }
    assert_eq!(n, by_name.len(), "{name}: 2.0.0 holds exactly the 1.0.0 entries");
    if name == "decode" {
        assert!(lpbq > 0, "LPBQ weights have integer block scales in 2.0.0");
    }
}

/// AIMET places no quantizer on the output of a Transpose or Reshape: an activation encoding
/// is on the tensor the data-movement op reads.
fn no_encoding_on_a_data_move(graph: &std::path::Path, encodings: &std::path::Path) {
    use onnx_protobuf::{Message, ModelProto};
    let model = ModelProto::parse_from_bytes(&std::fs::read(graph).unwrap()).unwrap();
    let moved: std::collections::HashSet<&str> = model
        .graph
        .node
        .iter()
        .filter(|n| ["Transpose", "Reshape"].contains(&n.op_type.as_str()))
        .flat_map(|n| n.output.iter().map(String::as_str))
        .collect();
    let v1: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(encodings).unwrap()).unwrap();
    for e in v1["activation_encodings"].as_array().unwrap() {
        assert!(
            !moved.contains(e["name"].as_str().unwrap()),
            "{}: {} is a data-movement output",
            graph.display(),
            e["name"]
        );
    }
}

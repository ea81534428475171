//! `export_vlm` on small random VLMs (MobileNetV5-tiny with RMSNorm2d, and with batch norm
//! as the quickstart's and Linear layers written as 1x1 Conv): `vision_encoder.onnx` beside the language graphs, the manifest's
//! vision entry, and a reference generation whose prompt holds the image. With
//! `AUTONEURAL_PYTHON` set (CI), `scripts/verify_onnx.py` replays it through onnxruntime:
//! image features and logits against the Burn model, the same greedy tokens.

use std::process::Command;

use autoneural_export::export::{ExportOptions, export_vlm};
use autoneural_model::connector::ProjectorConfig;
use autoneural_model::images::Preprocess;
use autoneural_model::text::Lfm2Config;
use autoneural_model::vision::{EncoderConfig, NormKind};
use autoneural_model::vlm::{VisionLanguageModel, VlmConfig, VlmFormat};
use burn::tensor::Device;

fn tiny_vlm(norm: NormKind) -> VisionLanguageModel {
    let mut encoder = EncoderConfig::preset("mobilenetv5_tiny").unwrap();
    if let EncoderConfig::MobileNetV5(a) = &mut encoder {
        a.norm = norm;
        a.msfa_output_resolution = 4;
        a.layer_scale_init_value = Some(1.0);
    }
    let text = Lfm2Config::preset("lfm2-nano").unwrap();
    let (_, _, vision_dim) = encoder.token_grid(64, 64);
    let projector = ProjectorConfig {
        vision_dim,
        hidden: text.hidden_size,
        text_dim: text.hidden_size,
        bias: true,
        downsample: 1,
        layer_norm: false,
    };
    let preprocess = Preprocess::Fixed { size: 64, mean: [0.0; 3], std: [1.0; 3] };
    let image_token = (text.vocab_size - 1) as u32;
    let config = VlmConfig::new(VlmFormat::AutoNeural, encoder, projector, text, image_token, preprocess, None);
    let device = Device::flex();
    device.seed(5);
    VisionLanguageModel::new(&config, &device).unwrap()
}

#[test]
fn mobilenet_vlms_export_their_vision_encoder_and_a_reference_with_an_image() {
    // The second also writes every Linear as a 1x1 Conv (--linear-as-conv).
    for (norm, linear_as_conv) in [(NormKind::Rms, false), (NormKind::Batch, true)] {
        let model = tiny_vlm(norm);
        let out = tempfile::tempdir().unwrap();
        let opts = ExportOptions { prefill_len: 8, context: 48, reference_tokens: 5, linear_as_conv };
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
        if let Ok(python) = std::env::var("AUTONEURAL_PYTHON") {
            let script = concat!(env!("CARGO_MANIFEST_DIR"), "/../scripts/verify_onnx.py");
            let o = Command::new(python).arg(script).arg(out.path()).output().unwrap();
            let text = format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr));
            assert!(o.status.success() && text.contains("image features within"), "{norm:?}: {text}");
            eprintln!("{norm:?}: {text}");
        }
    }
}

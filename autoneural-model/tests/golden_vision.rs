//! Golden tests against timm and transformers for the vision side, on fixtures written by
//! `scripts/make_vision_fixtures.py`: MobileNetV5 (every block kind, both paddings, odd
//! sizes), the full MobileNetV5-300M layout, SigLIP and SigLIP2 towers (position table
//! resized up and down), and whole VLMs (LFM2-VL and AutoNeural) from image file to greedy ids.

mod common;

use std::collections::BTreeMap;
use std::path::PathBuf;

use autoneural_model::checkpoint::apply::{collect_tensors, param_shapes};
use autoneural_model::checkpoint::{load_mobilenetv5, load_siglip_vision, load_vlm, save_vlm};
use autoneural_model::generate::{GenerateOptions, Sampler, SamplingConfig};
use autoneural_model::images::load_image;
use autoneural_model::tokenizer::TextTokenizer;
use autoneural_model::vision::MobileNetV5Arch;
use burn::module::Module;
use burn::tensor::{Device, Tensor, TensorData};
use common::*;

fn vision_fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/vision")
}

fn json(path: PathBuf) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap()
}

fn floats(v: &serde_json::Value) -> Vec<f32> {
    v.as_array().unwrap().iter().map(|x| x.as_f64().unwrap() as f32).collect()
}

fn dims(v: &serde_json::Value) -> Vec<usize> {
    v.as_array().unwrap().iter().map(|x| x.as_u64().unwrap() as usize).collect()
}

fn input4(case: &serde_json::Value, device: &Device) -> Tensor<4> {
    let s = dims(&case["input_shape"]);
    Tensor::from_data(TensorData::new(floats(&case["input"]), [s[0], s[1], s[2], s[3]]), device)
}

#[test]
fn mobilenetv5_matches_timm() {
    let device = Device::flex();
    for name in ["mnv5-tiny-same", "mnv5-tiny-sym", "mnv5-tiny-bn"] {
        let dir = vision_fixtures().join(name);
        let arch: MobileNetV5Arch = serde_json::from_value(json(dir.join("arch.json"))).unwrap();
        let model = load_mobilenetv5(&dir.join("model.safetensors"), Some(&arch), &device).unwrap();
        let g = json(dir.join("golden.json"));
        let y = model.forward(input4(&g, &device));
        assert_eq!(y.dims().to_vec(), dims(&g["output_shape"]), "{name}");
        let err = rel_err(&values(y), &floats(&g["output"]));
        assert!(err < 1e-4, "{name}: relative error {err:e}");
    }
}

#[test]
fn mobilenetv5_300m_layout_matches_timm() {
    let g = json(vision_fixtures().join("mnv5-300m-keys.json"));
    let arch = MobileNetV5Arch::preset("mobilenetv5_300m_enc").unwrap();
    let model = arch.init(&Device::flex()).unwrap();
    assert_eq!(model.num_params() as u64, g["num_params"].as_u64().unwrap());
    assert_eq!(model.num_params(), 294_126_912);
    let ours: BTreeMap<String, Vec<usize>> = param_shapes(&model, &NoMap).into_iter().collect();
    let theirs: BTreeMap<String, Vec<usize>> =
        g["keys"].as_object().unwrap().iter().map(|(k, v)| (k.clone(), dims(v))).collect();
    assert_eq!(ours, theirs);
    // timm's mobilenetv5_base without its classifier.
    let base = MobileNetV5Arch::preset("mobilenetv5_base").unwrap().init(&Device::flex()).unwrap();
    assert_eq!(base.num_params(), 80_598_976);
    // Output grid: 768 -> 16x16 tokens of 2048 channels (from the arch, without running 300M params).
    let resolved = arch.resolve().unwrap();
    assert_eq!(resolved.stages.iter().map(Vec::len).sum::<usize>(), 84);
    assert_eq!((arch.msfa_output_resolution, arch.num_features), (16, 2048));
}

#[test]
fn siglip_towers_match_transformers() {
    let device = Device::flex();
    for name in ["siglip2-tiny", "siglip-tiny"] {
        let dir = vision_fixtures().join(name);
        let model = load_siglip_vision(&dir, &device).unwrap();
        for (i, case) in json(dir.join("golden.json"))["cases"].as_array().unwrap().iter().enumerate() {
            let y = model.tokens(input4(case, &device));
            assert_eq!(y.dims().to_vec(), dims(&case["output_shape"]), "{name} case {i}");
            let err = rel_err(&values(y), &floats(&case["output"]));
            assert!(err < 1e-4, "{name} case {i}: relative error {err:e}");
        }
    }
}

#[test]
fn vlms_match_reference_from_image_file() {
    let device = Device::flex();
    for name in ["lfm2-vl-tiny", "autoneural-tiny", "lfm3-vl-tiny"] {
        let dir = vision_fixtures().join(name);
        let g = json(dir.join("golden.json"));
        let model = load_vlm(&dir, &device).unwrap();
        let tok = TextTokenizer::from_dir(&dir, &model.config.text.eos_token_ids).unwrap();
        let image = load_image(&dir.join("image.png")).unwrap();
        let pixels = model.config.preprocess.apply(&image, &device);
        let [_, _, h, w] = pixels.dims();
        let count = model.config.tokens_per_image(h, w);
        let ids = model.prompt_ids(&tok, g["prompt"].as_str().unwrap(), false, &[count]).unwrap();
        let want: Vec<u32> = dims(&g["prompt_ids"]).into_iter().map(|x| x as u32).collect();
        assert_eq!(ids, want, "{name}: prompt ids");

        let feats = model.image_features(pixels);
        let [_, n, d] = feats.dims();
        let embeds = model.merge(&ids, Some(feats.reshape([n, d]))).unwrap();
        let hidden = model.language.hidden_states(embeds, None);
        let logits = model.language.logits(hidden, autoneural_model::text::Logits::Last);
        let err = rel_err(&values(logits), &floats(&g["last_logits"]));
        assert!(err < 1e-4, "{name}: relative logit error {err:e}");

        let greedy: Vec<u32> = dims(&g["greedy_ids"]).into_iter().map(|x| x as u32).collect();
        let opts = GenerateOptions { max_new_tokens: greedy.len(), stop_ids: vec![], ignore_eos: true };
        let mut sampler = Sampler::new(SamplingConfig::default()).unwrap();
        let out = model
            .generate(&tok, g["prompt"].as_str().unwrap(), false, &[image], &opts, &mut sampler, |_| Ok(()))
            .unwrap();
        assert_eq!(out.generation.new_ids, greedy, "{name}: greedy continuation");
    }
}

#[test]
fn vlm_save_load_round_trip() {
    let device = Device::flex();
    for name in ["lfm2-vl-tiny", "autoneural-tiny", "lfm3-vl-tiny"] {
        let dir = vision_fixtures().join(name);
        let model = load_vlm(&dir, &device).unwrap();
        let tmp = tempfile::tempdir().unwrap();
        save_vlm(&model, tmp.path()).unwrap();
        let again = load_vlm(tmp.path(), &device).unwrap();
        let a = collect_tensors(&model, &NoMap);
        let b = collect_tensors(&again, &NoMap);
        assert_eq!(a.len(), b.len());
        for (x, y) in a.iter().zip(&b) {
            assert_eq!(x, y, "{name}: {}", x.0);
        }
    }
}

struct NoMap;
impl autoneural_model::checkpoint::apply::KeyMap for NoMap {
    fn key_for(&self, p: &str) -> String {
        p.to_string()
    }
}

#[test]
fn gemma3n_prefixed_weights_load_as_a_standalone_encoder() {
    // The AutoNeural fixture stores its encoder under Gemma 3n's prefix, next to other keys.
    let device = Device::flex();
    let dir = vision_fixtures().join("autoneural-tiny");
    let vlm = load_vlm(&dir, &device).unwrap();
    let autoneural_model::vision::EncoderConfig::MobileNetV5(arch) = &vlm.config.encoder else { panic!("mnv5") };
    let enc = load_mobilenetv5(&dir.join("model.safetensors"), Some(arch), &device).unwrap();
    let x = Tensor::<4>::random([1, 3, 64, 64], burn::tensor::Distribution::Uniform(0.0, 1.0), &device);
    let a = values(enc.tokens(x.clone()));
    let b = values(vlm.vision_tower.tokens(x));
    assert_eq!(a, b);
}

#[test]
fn the_projector_norm_follows_the_weights_not_the_config() {
    // Published LFM2-VL / LFM2.5-VL configs that say `projector_use_layernorm: false` over
    // weights that hold the norm load with the norm (llama.cpp decides the same way).
    let device = Device::flex();
    let src = vision_fixtures().join("lfm2-vl-tiny");
    let tmp = tempfile::tempdir().unwrap();
    for e in std::fs::read_dir(&src).unwrap() {
        let p = e.unwrap().path();
        std::fs::copy(&p, tmp.path().join(p.file_name().unwrap())).unwrap();
    }
    let config = tmp.path().join("config.json");
    let text = std::fs::read_to_string(&config).unwrap();
    assert!(text.contains("\"projector_use_layernorm\": true"));
    std::fs::write(&config, text.replace("\"projector_use_layernorm\": true", "\"projector_use_layernorm\": false"))
        .unwrap();
    let wrong = load_vlm(tmp.path(), &device).unwrap();
    assert!(wrong.multi_modal_projector.layer_norm.is_some());
    let right = load_vlm(&src, &device).unwrap();
    let x = Tensor::<4>::random([1, 3, 64, 64], burn::tensor::Distribution::Uniform(0.0, 1.0), &device);
    assert_eq!(values(wrong.image_features(x.clone())), values(right.image_features(x)));
}

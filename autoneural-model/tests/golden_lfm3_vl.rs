//! LFM3-VL's vision tower and projector against transformers 5.25
//! (`scripts/make_lfm3_vl_fixture.py`): a 70x45 image as Qwen2-VL's processor prepares it
//! (a 10 x 14 patch grid in spatial-merge order), through every layer kind.

mod common;

use std::path::PathBuf;

use autoneural_model::checkpoint::load_lfm3_vl_vision;
use burn::tensor::{Device, Tensor, TensorData};
use common::{rel_err, values};

fn fixture() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/vision/lfm3-vl-tiny")
}

/// A golden tensor's values and shape.
fn golden(name: &str) -> (Vec<f32>, Vec<usize>) {
    let bytes = std::fs::read(fixture().join("golden.safetensors")).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let t = st.tensor(name).unwrap();
    let shape = t.shape().to_vec();
    let values = match t.dtype() {
        safetensors::Dtype::F32 => t.data().chunks(4).map(|b| f32::from_le_bytes(b.try_into().unwrap())).collect(),
        safetensors::Dtype::I64 => {
            t.data().chunks(8).map(|b| i64::from_le_bytes(b.try_into().unwrap()) as f32).collect()
        }
        other => panic!("{name}: {other:?}"),
    };
    (values, shape)
}

#[test]
fn tower_and_projector_match_transformers() {
    let device = Device::flex();
    let model = load_lfm3_vl_vision(&fixture(), &device).unwrap();
    let (grid, _) = golden("image_grid_thw");
    let (t, h, w) = (grid[0] as usize, grid[1] as usize, grid[2] as usize);
    assert_eq!((t, h, w), (1, 10, 14));
    let (pixels, shape) = golden("pixel_values");
    let patches = Tensor::<2>::from_data(TensorData::new(pixels, [shape[0], shape[1]]), &device);
    let tower = values(model.vision_tower.forward(patches.clone(), h, w));
    let err = rel_err(&tower, &golden("tower").0);
    assert!(err < 1e-4, "tower: relative error {err:e}");
    println!("tower: relative error {err:e}");
    let features = model.features(patches, h, w);
    assert_eq!(features.dims(), [35, 48]);
    let err = rel_err(&values(features), &golden("features").0);
    assert!(err < 1e-4, "features: relative error {err:e}");
}

/// Downscaled (70x45 and a tall 23x90) and upscaled to the minimum (5x7): the pixel values
/// equal the processor's (bicubic antialiased resize, fused normalisation, temporal repeat,
/// merge order) and so do the grids.
#[test]
fn images_are_prepared_as_the_processor_prepares_them() {
    use autoneural_model::images::load_image;
    use autoneural_model::vision::lfm3_vl_processor::Lfm3VlProcessorConfig;

    let config = Lfm3VlProcessorConfig::from_dir(&fixture()).unwrap();
    assert_eq!((config.min_pixels, config.max_pixels, config.patch_size), (256, 2560, 4));
    for (file, suffix, grid) in
        [("image.png", "", (10, 14)), ("image_tall.png", "_tall", (22, 6)), ("image_tiny.png", "_tiny", (6, 4))]
    {
        let img = load_image(&fixture().join(file)).unwrap();
        let out = config.process(&img.rgb);
        let (g, _) = golden(&format!("image_grid_thw{suffix}"));
        assert_eq!((out.grid_h, out.grid_w), (g[1] as usize, g[2] as usize), "{file}");
        assert_eq!((out.grid_h, out.grid_w), grid, "{file}");
        let (h, w) = (img.rgb.height() as usize, img.rgb.width() as usize);
        assert_eq!(config.tokens(h, w), grid.0 * grid.1 / 4, "{file}");
        let (want, shape) = golden(&format!("pixel_values{suffix}"));
        assert_eq!(shape, [grid.0 * grid.1, 96], "{file}");
        let differ = out.patches.iter().zip(&want).filter(|(a, b)| (*a - *b).abs() > 1e-5).count();
        assert_eq!(differ, 0, "{file}: {differ} of {} pixel values differ from the processor's", want.len());
    }
}

/// transformers' in-memory names (`patch_embed`, `q_norm`, `k_norm`), as a checkpoint saved
/// without its conversion mapping has them, load to the same model.
#[test]
fn transformers_key_names_load_too() {
    let device = Device::flex();
    let tmp = tempfile::tempdir().unwrap();
    for f in ["config.json", "preprocessor_config.json"] {
        std::fs::copy(fixture().join(f), tmp.path().join(f)).unwrap();
    }
    let bytes = std::fs::read(fixture().join("model.safetensors")).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let renamed: Vec<(String, safetensors::tensor::TensorView)> = st
        .tensors()
        .into_iter()
        .map(|(k, v)| {
            let k = k.replace(".patchifier.", ".patch_embed.").replace("_layernorm.", "_norm.");
            (k, v)
        })
        .collect();
    assert!(renamed.iter().any(|(k, _)| k.contains(".q_norm.")));
    safetensors::serialize_to_file(renamed, None, &tmp.path().join("model.safetensors")).unwrap();
    let (a, b) = (load_lfm3_vl_vision(&fixture(), &device).unwrap(), load_lfm3_vl_vision(tmp.path(), &device).unwrap());
    let (pixels, shape) = golden("pixel_values");
    let patches = Tensor::<2>::from_data(TensorData::new(pixels, [shape[0], shape[1]]), &device);
    assert_eq!(values(a.features(patches.clone(), 10, 14)), values(b.features(patches, 10, 14)));
}

/// A broken LFM3-VL directory is refused naming the file and the field: an unknown vision
/// layer type, a processor whose patches differ from the tower's, an activation other than
/// GELU, a vision token outside the vocabulary.
#[test]
fn broken_lfm3_vl_configs_name_the_field() {
    use autoneural_model::checkpoint::load_vlm;
    type Edit = fn(&mut serde_json::Value, &mut serde_json::Value);
    let cases: [(&str, Edit, &str); 4] = [
        ("layer", |c, _| c["vision_config"]["layer_types"][0] = "mamba".into(), "unknown vision layer type \"mamba\""),
        ("patch", |_, p| p["patch_size"] = 8.into(), "differ from the image processor's"),
        ("act", |c, _| c["projector_hidden_act"] = "relu".into(), "projector_hidden_act"),
        ("start", |c, _| c["vision_start_token_id"] = 100_000.into(), "vision_start_token_id"),
    ];
    let tmp = tempfile::tempdir().unwrap();
    for (name, edit, message) in cases {
        let dir = tmp.path().join(name);
        std::fs::create_dir_all(&dir).unwrap();
        for f in ["model.safetensors", "tokenizer.json", "tokenizer_config.json"] {
            std::fs::copy(fixture().join(f), dir.join(f)).unwrap();
        }
        let read = |f: &str| -> serde_json::Value {
            serde_json::from_str(&std::fs::read_to_string(fixture().join(f)).unwrap()).unwrap()
        };
        let (mut config, mut processor) = (read("config.json"), read("preprocessor_config.json"));
        edit(&mut config, &mut processor);
        std::fs::write(dir.join("config.json"), config.to_string()).unwrap();
        std::fs::write(dir.join("preprocessor_config.json"), processor.to_string()).unwrap();
        let err = load_vlm(&dir, &Device::flex()).err().expect("refused").to_string();
        assert!(err.contains("config.json") && err.contains(message), "{name}: {err}");
    }
}

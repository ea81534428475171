//! LFM2-VL's image processor against transformers 5.25 (fixtures written by
//! `scripts/make_lfm2_vl_processor_fixtures.py`): the tile grid, resize, pixel values, NaFlex
//! spatial shapes and expanded prompt ids at the real defaults (512 px tiles, 16 px patches)
//! and at a tiny checkpoint's 64 px tiles, for a large, a small, a wide and a tall picture;
//! then greedy decoding of that checkpoint with two tiled pictures.
//!
//! Pixel values are compared with tolerance 1e-6: our resize reproduces PyTorch's uint8
//! arithmetic and transformers' fused normalisation, so they are expected to be equal.

mod common;

use std::path::{Path, PathBuf};

use autoneural_model::checkpoint::{load_vlm, save_vlm};
use autoneural_model::generate::{GenerateOptions, Sampler, SamplingConfig};
use autoneural_model::images::{LoadedImage, Preprocess, load_image};
use autoneural_model::tokenizer::{ChatMessage, TextTokenizer};
use autoneural_model::vision::lfm2_vl_processor::{ImageLayout, Lfm2VlProcessorConfig, target_ratios};
use autoneural_model::vlm::ImageTokens;
use burn::tensor::Device;
use common::*;
use serde_json::Value;

const IMAGES: [&str; 4] = ["large", "small", "wide", "tall"];
/// Pixel values are k/127.5 - 1: one 8-bit level is 0.0078; equal arithmetic gives 0.
const PIXEL_TOL: f32 = 1e-6;

fn dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/vision/lfm2-vl-tiles")
}

fn golden() -> Value {
    serde_json::from_str(&std::fs::read_to_string(dir().join("golden.json")).unwrap()).unwrap()
}

fn image(name: &str) -> LoadedImage {
    load_image(&dir().join("images").join(format!("{name}.png"))).unwrap()
}

fn usizes(v: &Value) -> Vec<usize> {
    v.as_array().unwrap().iter().map(|x| x.as_u64().unwrap() as usize).collect()
}

fn ids(v: &Value) -> Vec<u32> {
    usizes(v).into_iter().map(|x| x as u32).collect()
}

fn pairs(v: &Value) -> Vec<(usize, usize)> {
    v.as_array().unwrap().iter().map(|p| (p[0].as_u64().unwrap() as usize, p[1].as_u64().unwrap() as usize)).collect()
}

fn tokenizer(dir: &Path) -> TextTokenizer {
    TextTokenizer::from_dir(dir, &[7]).unwrap()
}

fn rendered(tok: &TextTokenizer, prompt: &str) -> String {
    tok.render_chat(&[ChatMessage::user(prompt)], true).unwrap()
}

/// The grid, resized size and spatial shapes of `name` under `cfg` against `g`.
fn check_layout(
    cfg: &Lfm2VlProcessorConfig,
    name: &str,
    g: &Value,
) -> autoneural_model::vision::lfm2_vl_processor::ProcessedImage {
    let img = image(name);
    let size = usizes(&g["size"]);
    assert_eq!((img.rgb.height() as usize, img.rgb.width() as usize), (size[0], size[1]), "{name}: decoded size");
    let processed = cfg.process(&img.rgb);
    let s = processed.split;
    let resized = usizes(&g["resized"]);
    assert_eq!(s.split, g["split"].as_bool().unwrap(), "{name}: split");
    assert_eq!((s.rows, s.cols), (g["rows"].as_u64().unwrap() as usize, g["cols"].as_u64().unwrap() as usize));
    assert_eq!(s.resized, (resized[0], resized[1]), "{name}: smart-resize size");
    let shapes: Vec<(usize, usize)> = processed.tiles.iter().map(|t| t.spatial_shape(cfg.encoder_patch_size)).collect();
    assert_eq!(shapes, pairs(&g["spatial_shapes"]), "{name}: spatial shapes");
    assert_eq!(processed.layout.tokens(), shapes.iter().map(|(h, w)| (h / 2) * (w / 2)).sum::<usize>());
    processed
}

#[test]
fn default_processor_matches_transformers() {
    let g = golden();
    let cfg = Lfm2VlProcessorConfig::default();
    // transformers' defaults, as it saves them, read back as our defaults.
    let tmp = tempfile::tempdir().unwrap();
    std::fs::write(tmp.path().join("preprocessor_config.json"), g["default_config"].to_string()).unwrap();
    assert_eq!(Lfm2VlProcessorConfig::from_dir(tmp.path(), &Default::default(), 14, 4).unwrap(), cfg);
    for (key, want) in g["target_ratios"].as_object().unwrap() {
        let (a, b) = key.split_once('-').unwrap();
        assert_eq!(target_ratios(a.parse().unwrap(), b.parse().unwrap()), pairs(want), "grid order {key}");
    }

    let tok = tokenizer(&dir());
    let text = rendered(&tok, g["prompt"].as_str().unwrap());
    let images = ImageTokens { image_token_id: tok.token_id("<image>").unwrap(), wrap: true, bounds: None };
    let mut worst = 0f32;
    let mut compared = 0;
    for name in IMAGES {
        let want = &g["default"][name];
        let processed = check_layout(&cfg, name, want);
        let prompt = images.encode(&tok, &text, false, &[processed.layout]).unwrap();
        assert_eq!(prompt, ids(&want["prompt_ids"]), "{name}: prompt ids");
        for (k, (tile, digest)) in processed.tiles.iter().zip(want["tiles"].as_array().unwrap()).enumerate() {
            let px = cfg.pixel_values(tile);
            let patches = usizes(&digest["patches"]);
            assert_eq!(px.len(), patches[0] * patches[1], "{name} tile {k}: pixel values shape");
            let sum: f64 = px.iter().map(|&x| x as f64).sum();
            let sum_sq: f64 = px.iter().map(|&x| (x as f64).powi(2)).sum();
            let (ws, wq) = (digest["sum"].as_f64().unwrap(), digest["sum_sq"].as_f64().unwrap());
            assert!((sum - ws).abs() <= 1e-6 * wq.max(1.0), "{name} tile {k}: sum {sum} vs {ws}");
            assert!((sum_sq - wq).abs() <= 1e-6 * wq, "{name} tile {k}: sum of squares {sum_sq} vs {wq}");
            for s in digest["samples"].as_array().unwrap() {
                let (i, v) = (s[0].as_u64().unwrap() as usize, s[1].as_f64().unwrap() as f32);
                worst = worst.max((px[i] - v).abs());
                compared += 1;
            }
        }
    }
    eprintln!("default processor: {compared} sampled pixel values, max abs difference {worst:e}");
    assert!(worst <= PIXEL_TOL, "max abs pixel difference {worst:e}");
}

#[test]
fn markers_missing_from_the_vocabulary_are_tokenized_as_text() {
    // lfm2-vl-tiny's tokenizer has <image>, <|image_start|>, <|image_end|> but no markers.
    let g = golden();
    let plain = dir().join("../lfm2-vl-tiny");
    let tok = tokenizer(&plain);
    assert!(tok.token_id("<|img_row_1_col_1|>").is_none());
    let text = rendered(&tok, g["prompt"].as_str().unwrap());
    let images = ImageTokens { image_token_id: tok.token_id("<image>").unwrap(), wrap: true, bounds: None };
    let cfg = Lfm2VlProcessorConfig::default();
    for name in IMAGES {
        let img = image(name);
        let layout = cfg.layout(img.rgb.height() as usize, img.rgb.width() as usize);
        let prompt = images.encode(&tok, &text, false, &[layout]).unwrap();
        assert_eq!(prompt, ids(&g["no_markers"][name]), "{name}");
    }
}

#[test]
fn tiny_checkpoint_processor_matches_transformers() {
    let g = golden();
    let device = Device::flex();
    let model = load_vlm(&dir(), &device).unwrap();
    let Preprocess::Lfm2Vl(cfg) = &model.config.preprocess else { panic!("an LFM2-VL processor") };
    // Read from processor_config.json's nested image_processor (transformers 5's layout).
    assert_eq!((cfg.tile_size, cfg.encoder_patch_size, cfg.min_image_tokens, cfg.max_image_tokens), (64, 8, 4, 16));
    assert!(cfg.do_image_splitting && cfg.use_thumbnail);
    let bytes = std::fs::read(dir().join("pixels.safetensors")).unwrap();
    let pixels = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let tok = tokenizer(&dir());
    let mut worst = 0f32;
    let mut level_diffs = 0usize;
    let mut compared = 0;
    for name in IMAGES {
        let want = &g["tiny"][name];
        let processed = check_layout(cfg, name, want);
        let prompt = model.prompt_ids(&tok, g["prompt"].as_str().unwrap(), false, &[processed.layout]).unwrap();
        assert_eq!(prompt, ids(&want["prompt_ids"]), "{name}: prompt ids");
        for (k, tile) in processed.tiles.iter().enumerate() {
            let stored = pixels.tensor(&format!("{name}.{k}")).unwrap();
            let ours = tile.patches(cfg.encoder_patch_size);
            assert_eq!(stored.shape(), &[ours.len() / 192, 192], "{name} tile {k}: patches");
            level_diffs += ours.iter().zip(stored.data()).filter(|(a, b)| a != b).count();
            let theirs: Vec<f32> = stored.data().iter().map(|&u| (u as f32 - 127.5) / 127.5).collect();
            for (a, b) in cfg.pixel_values(tile).iter().zip(&theirs) {
                worst = worst.max((a - b).abs());
                compared += 1;
            }
        }
    }
    eprintln!("tiny processor: {compared} pixel values, max abs difference {worst:e}, {level_diffs} differ in 8 bits");
    assert!(worst <= PIXEL_TOL, "max abs pixel difference {worst:e}");
    assert_eq!(level_diffs, 0);
}

#[test]
fn tiled_greedy_decoding_matches_transformers() {
    let g = &golden()["greedy"];
    let device = Device::flex();
    let model = load_vlm(&dir(), &device).unwrap();
    let tok = tokenizer(&dir());
    let prompt = g["prompt"].as_str().unwrap();
    let images: Vec<LoadedImage> = g["images"].as_array().unwrap().iter().map(|n| image(n.as_str().unwrap())).collect();
    let (features, layouts) = model.features_of(&images);
    assert!(matches!(layouts[0], ImageLayout::Tiled { rows: 3, cols: 3, per_tile: 16, thumbnail: Some(12) }));
    assert!(matches!(layouts[1], ImageLayout::Tiled { rows: 1, cols: 5, per_tile: 16, thumbnail: Some(9) }));
    let ids_ = model.prompt_ids(&tok, prompt, false, &layouts).unwrap();
    assert_eq!(ids_, ids(&g["prompt_ids"]), "prompt ids");

    let embeds = model.merge(&ids_, features).unwrap();
    let hidden = model.language.hidden_states(embeds, None);
    let logits = values(model.language.logits(hidden, autoneural_model::text::Logits::Last));
    let want: Vec<f32> = g["last_logits"].as_array().unwrap().iter().map(|x| x.as_f64().unwrap() as f32).collect();
    let err = rel_err(&logits, &want);
    eprintln!("tiled prompt: last-position logits relative error {err:e}");
    assert!(err < 1e-4, "relative logit error {err:e}");

    let greedy = ids(&g["greedy_ids"]);
    let opts = GenerateOptions { max_new_tokens: greedy.len(), stop_ids: vec![], ignore_eos: true };
    let mut sampler = Sampler::new(SamplingConfig::default()).unwrap();
    let out = model.generate(&tok, prompt, false, &images, &opts, &mut sampler, |_| Ok(())).unwrap();
    assert_eq!(out.generation.new_ids, greedy, "greedy continuation");
    assert_eq!(out.image_tokens, vec![3 * 3 * 16 + 12, 5 * 16 + 9]);
}

/// Every default-config tile, when the fixture script was run with `--full-pixels PATH` and
/// `AUTONEURAL_LFM2_VL_FULL_PIXELS=PATH` (the tiles are too large to commit).
#[test]
fn all_default_pixels_match_when_provided() {
    let Ok(path) = std::env::var("AUTONEURAL_LFM2_VL_FULL_PIXELS") else {
        eprintln!("AUTONEURAL_LFM2_VL_FULL_PIXELS not set: only the sampled digests are compared");
        return;
    };
    let bytes = std::fs::read(path).unwrap();
    let full = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let cfg = Lfm2VlProcessorConfig::default();
    let (mut values, mut differ, mut worst) = (0usize, 0usize, 0i32);
    for name in IMAGES {
        for (k, tile) in cfg.process(&image(name).rgb).tiles.iter().enumerate() {
            let stored = full.tensor(&format!("{name}.{k}")).unwrap();
            let ours = tile.patches(16);
            assert_eq!(ours.len(), stored.data().len(), "{name} tile {k}");
            for (a, b) in ours.iter().zip(stored.data()) {
                values += 1;
                differ += usize::from(a != b);
                worst = worst.max((*a as i32 - *b as i32).abs());
            }
        }
    }
    eprintln!("default processor, every tile: {values} values, {differ} differ, max {worst} levels");
    assert_eq!(differ, 0);
}

#[test]
fn splitting_off_keeps_one_smart_resized_tile() {
    let cfg = Lfm2VlProcessorConfig { do_image_splitting: false, ..Default::default() };
    let processed = cfg.process(&image("large").rgb);
    assert_eq!(processed.tiles.len(), 1);
    assert_eq!(processed.layout, ImageLayout::Single(14 * 17));
    assert_eq!(processed.tiles[0].spatial_shape(16), (28, 34));
    // The tile is what Preprocess::apply gives (the single-tile input older code used).
    let device = Device::flex();
    let pre = Preprocess::Lfm2Vl(cfg.clone());
    let a = values(pre.apply(&image("large"), &device));
    let b = values(cfg.tensor(&processed.tiles[0], &device));
    assert_eq!(a, b);
}

#[test]
fn processor_config_round_trips_through_save() {
    let device = Device::flex();
    let model = load_vlm(&dir(), &device).unwrap();
    let tmp = tempfile::tempdir().unwrap();
    save_vlm(&model, tmp.path()).unwrap();
    let again = load_vlm(tmp.path(), &device).unwrap();
    assert_eq!(again.config.preprocess, model.config.preprocess);
}

/// A copy of the tiny checkpoint's config files with `processor` as its processor config.
fn with_processor(processor: Value, config_edit: impl FnOnce(&mut Value)) -> tempfile::TempDir {
    let tmp = tempfile::tempdir().unwrap();
    let mut config: Value = serde_json::from_str(&std::fs::read_to_string(dir().join("config.json")).unwrap()).unwrap();
    config_edit(&mut config);
    std::fs::write(tmp.path().join("config.json"), config.to_string()).unwrap();
    std::fs::write(tmp.path().join("preprocessor_config.json"), processor.to_string()).unwrap();
    tmp
}

#[test]
fn bad_processor_configs_are_refused_with_file_and_key() {
    use autoneural_model::checkpoint::read_vlm_config;
    let base = serde_json::json!({"image_processor_type": "Lfm2VlImageProcessor", "encoder_patch_size": 8,
        "tile_size": 64, "min_image_tokens": 4, "max_image_tokens": 16});
    let cases: [(&str, Value, &str); 7] = [
        ("tile_size", serde_json::json!(60), "multiple of"),
        ("max_tiles", serde_json::json!(1000), "between"),
        ("min_tiles", serde_json::json!(12), "between"),
        ("resample", serde_json::json!(3), "bilinear"),
        ("max_image_tokens", serde_json::json!(2), "between"),
        ("image_std", serde_json::json!([0.5, 0.0, 0.5]), "zero"),
        ("max_pixels_tolerance", serde_json::json!(-1.0), "(0, 1000]"),
    ];
    for (key, value, says) in cases {
        let mut p = base.clone();
        p[key] = value;
        let tmp = with_processor(p, |_| {});
        let err = read_vlm_config(tmp.path()).unwrap_err().to_string();
        assert!(err.contains("preprocessor_config.json") && err.contains(key) && err.contains(says), "{key}: {err}");
    }
    // The processor's patches must be the tower's.
    let mut p = base.clone();
    p["encoder_patch_size"] = serde_json::json!(16);
    p["tile_size"] = serde_json::json!(64);
    let err = read_vlm_config(with_processor(p, |_| {}).path()).unwrap_err().to_string();
    assert!(err.contains("config.json") && err.contains("encoder_patch_size 16"), "{err}");
    // A string where a number belongs.
    let mut p = base.clone();
    p["max_tiles"] = serde_json::json!("ten");
    let err = read_vlm_config(with_processor(p, |_| {}).path()).unwrap_err().to_string();
    assert!(err.contains("max_tiles") && err.contains("integer"), "{err}");
}

#[test]
fn legacy_checkpoints_keep_tiling_keys_in_config_json() {
    use autoneural_model::checkpoint::read_vlm_config;
    // LFM2-VL's first hub release: a SigLIP2 preprocessor, tiling keys in config.json.
    let pre = serde_json::json!({"image_processor_type": "Siglip2ImageProcessor", "patch_size": 8,
        "max_num_patches": 64, "image_mean": [0.5, 0.5, 0.5], "image_std": [0.5, 0.5, 0.5]});
    let tmp = with_processor(pre, |c| {
        for (k, v) in [("tile_size", 64), ("encoder_patch_size", 8), ("min_image_tokens", 4), ("max_image_tokens", 16)]
        {
            c[k] = serde_json::json!(v);
        }
        c["use_thumbnail"] = serde_json::json!(false);
        c["use_image_special_tokens"] = serde_json::json!(true);
    });
    let cfg = read_vlm_config(tmp.path()).unwrap();
    let Preprocess::Lfm2Vl(p) = cfg.preprocess else { panic!("an LFM2-VL processor") };
    assert_eq!((p.tile_size, p.use_thumbnail, p.max_image_tokens), (64, false, 16));
}

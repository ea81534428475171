//! Building the model an experiment starts from: presets at random (seeded), parts from
//! public checkpoints (a timm / Gemma 3n MobileNetV5, a Hugging Face LFM2), or a whole
//! AutoNeural / LFM2-VL checkpoint.

use anyhow::{Context, Result, anyhow, bail};
use autoneural_model::checkpoint::{load_lfm2, load_mobilenetv5, load_vlm};
use autoneural_model::connector::ProjectorConfig;
use autoneural_model::images::Preprocess;
use autoneural_model::text::config::MAX_LAYERS;
use autoneural_model::text::{LayerKind, Lfm2Config};
use autoneural_model::tokenizer::TextTokenizer;
use autoneural_model::vision::{EncoderConfig, VisionEncoder};
use autoneural_model::vlm::{IMAGE_TAG, VisionLanguageModel, VlmConfig, VlmFormat};
use burn::module::{Module, ModuleVisitor, Param};
use burn::tensor::{Device, Tensor};

use crate::config::{LanguageInit, ModelConfig};

/// The language model's shape: a preset with the experiment's overrides.
pub fn text_config(init: &LanguageInit, vocab_size: usize) -> Result<Lfm2Config> {
    let name = init.preset.as_deref().context("model.language.preset is missing")?;
    let mut c = Lfm2Config::preset(name).with_context(|| {
        format!("model.language.preset: unknown preset {name:?} (known: {})", Lfm2Config::preset_names().join(", "))
    })?;
    c.vocab_size = vocab_size;
    if let Some(h) = init.hidden_size {
        c.hidden_size = h;
    }
    if let Some(f) = init.intermediate_size {
        c.intermediate_size = f;
    }
    if let Some(n) = init.num_attention_heads {
        c.num_attention_heads = n;
    }
    if let Some(n) = init.num_key_value_heads {
        c.num_key_value_heads = n;
    }
    if c.hidden_size % c.num_attention_heads != 0 || c.num_attention_heads % c.num_key_value_heads != 0 {
        bail!(
            "model.language: hidden_size {} must divide into num_attention_heads {}, which must divide into \
             num_key_value_heads {}",
            c.hidden_size,
            c.num_attention_heads,
            c.num_key_value_heads
        );
    }
    c.head_dim = c.hidden_size / c.num_attention_heads;
    if let Some(w) = init.sliding_window {
        match c.lfm3.as_mut() {
            Some(o) => o.sliding_window = w,
            None => bail!("model.language.sliding_window: sliding attention is LFM3's; use an lfm3 preset"),
        }
    }
    c.layer_types = layer_types(init, &c)?;
    if let Err((field, message)) = c.check() {
        bail!("model.language ({field}): {message}");
    }
    Ok(c)
}

/// The experiment's stack of layer kinds over preset `c`'s.
fn layer_types(init: &LanguageInit, c: &Lfm2Config) -> Result<Vec<LayerKind>> {
    if let Some(kinds) = &init.layer_types {
        if init.num_layers.is_some()
            || init.attention_layers.is_some()
            || init.attention_at.is_some()
            || init.sliding_layers.is_some()
        {
            bail!(
                "model.language.layer_types gives every layer's kind; drop num_layers, attention_layers, \
                 attention_at and sliding_layers"
            );
        }
        if kinds.is_empty() || kinds.len() > MAX_LAYERS {
            bail!("model.language.layer_types: {} layers (expected 1 to {})", kinds.len(), MAX_LAYERS);
        }
        return Ok(kinds.clone());
    }
    let lfm3 = c.lfm3.is_some();
    if init.sliding_layers.is_some() && !lfm3 {
        bail!("model.language.sliding_layers: sliding attention is LFM3's; use an lfm3 preset");
    }
    let n = match init.num_layers {
        Some(n) if n > MAX_LAYERS => bail!("model.language.num_layers: {n} is more than {MAX_LAYERS}"),
        Some(n) => n,
        None => c.num_layers(),
    };
    if let Some(at) = &init.attention_at {
        // explicit placement: these layers are attention, the others gated convolutions
        if let Some(i) = at.iter().find(|&&i| i >= n) {
            bail!("model.language.attention_at: layer {i} does not exist (layers 0..{n})");
        }
        if init.attention_layers.is_some_and(|a| a != at.len()) {
            bail!("model.language: attention_layers and attention_at disagree; give one of them");
        }
        if init.sliding_layers.is_some() {
            bail!("model.language: attention_at places full attention only; give layer_types for sliding layers");
        }
        return Ok(LayerKind::with_attention_at(n, at));
    }
    // An LFM3 preset keeps its own pattern (over its depth) unless the counts are given.
    if lfm3 && init.attention_layers.is_none() && init.sliding_layers.is_none() {
        return Ok(LayerKind::lfm3_pattern(n));
    }
    let full = init.attention_layers.unwrap_or_else(|| c.count(LayerKind::Attention));
    let sliding = init
        .sliding_layers
        .unwrap_or_else(|| if init.num_layers.is_some() { 0 } else { c.count(LayerKind::SlidingAttention) });
    if full + sliding > n {
        bail!("model.language: {full} attention_layers and {sliding} sliding_layers are more than the {n} layers");
    }
    Ok(LayerKind::with_full_and_sliding(n, full, sliding))
}

/// The VLM config an experiment's presets describe, for a vocabulary of `vocab_size` with
/// the image token at `image_token_id`.
pub fn vlm_config(config: &ModelConfig, vocab_size: usize, image_token_id: u32) -> Result<VlmConfig> {
    let mut encoder = EncoderConfig::preset(&config.vision.preset).with_context(|| {
        format!(
            "model.vision.preset: unknown preset {:?} (known: {})",
            config.vision.preset,
            EncoderConfig::preset_names().join(", ")
        )
    })?;
    if let Some(size) = config.image_size {
        match &mut encoder {
            EncoderConfig::MobileNetV5(a) => a.image_size = size,
            EncoderConfig::Vit(v) => v.image_size = size,
            EncoderConfig::Lfm3Vl(v) => v.image_size = size,
        }
    }
    if let Some(side) = config.vision.msfa_output_resolution {
        match &mut encoder {
            EncoderConfig::MobileNetV5(a) if side > 0 => a.msfa_output_resolution = side,
            _ => bail!("model.vision.msfa_output_resolution: needs a MobileNetV5 preset and a side of at least 1"),
        }
    }
    let v = &config.vision;
    if v.norm.is_some()
        || v.layer_scale_init.is_some()
        || v.blocks.is_some()
        || v.stem_size.is_some()
        || v.num_features.is_some()
    {
        let EncoderConfig::MobileNetV5(a) = &mut encoder else {
            bail!(
                "model.vision: `norm`, `layer_scale_init`, `blocks`, `stem_size` and `num_features` need a MobileNetV5 preset"
            );
        };
        a.norm = v.norm.unwrap_or(a.norm);
        a.layer_scale_init_value = v.layer_scale_init.or(a.layer_scale_init_value);
        if let Some(blocks) = &v.blocks {
            a.block_args = blocks.clone();
        }
        a.stem_size = v.stem_size.unwrap_or(a.stem_size);
        a.num_features = v.num_features.unwrap_or(a.num_features);
        if a.stem_size == 0 || a.num_features == 0 {
            bail!("model.vision: `stem_size` and `num_features` must be at least 1");
        }
        a.resolve().map_err(|e| anyhow!("model.vision.blocks: {e}"))?;
    }
    let text = match &config.language.checkpoint {
        Some(dir) => autoneural_model::checkpoint::read_config(dir).with_context(|| format!("{}", dir.display()))?,
        None => text_config(&config.language, vocab_size)?,
    };
    if image_token_id as usize >= text.vocab_size {
        bail!("the tokenizer's {IMAGE_TAG} id {image_token_id} is outside the language model's vocabulary");
    }
    let size = encoder.image_size();
    let (gh, gw, vision_dim) = encoder.token_grid(size, size);
    let hidden = config.projector_hidden_size.unwrap_or(text.hidden_size);
    let projector = match &encoder {
        // LFM3-VL's tower brings its projector: tokens normalised, merge blocks concatenated.
        EncoderConfig::Lfm3Vl(v) => {
            let m = v.spatial_merge_size;
            if config.projector_downsample.is_some_and(|d| d != m) {
                bail!(
                    "model.projector_downsample: LFM3-VL's projector merges its {m}x{m} blocks; give {m} or leave it out"
                );
            }
            if !size.is_multiple_of(v.patch_size * m) {
                bail!(
                    "model.image_size: {size} is not a multiple of LFM3-VL's {}-pixel merge blocks",
                    v.patch_size * m
                );
            }
            v.projector(hidden, text.hidden_size, true)
        }
        _ => {
            let downsample = config.projector_downsample.unwrap_or(1);
            if downsample == 0 || gh % downsample != 0 || gw % downsample != 0 {
                bail!(
                    "model.projector_downsample: {downsample} must divide the encoder's {gh}x{gw} token grid (at \
                     image size {size})"
                );
            }
            ProjectorConfig {
                vision_dim,
                hidden,
                text_dim: text.hidden_size,
                bias: true,
                downsample,
                layer_norm: false,
                merge_blocks: false,
            }
        }
    };
    let preprocess = Preprocess::Fixed { size, mean: [0.0; 3], std: [1.0; 3] };
    let config = VlmConfig::new(VlmFormat::AutoNeural, encoder, projector, text, image_token_id, preprocess, None);
    // The same bounds a checkpoint's config.json meets, before anything is allocated.
    config.check().map_err(|(field, message)| {
        anyhow!("[model]: the model it describes has {field} {message} (fields as the saved config.json names them)")
    })?;
    Ok(config)
}

/// The experiment's starting model on `device`, seeded by `seed`. `tokenizer` decides the
/// vocabulary and the image token of a model built from presets.
pub fn build_model(
    config: &ModelConfig,
    tokenizer: &TextTokenizer,
    seed: u64,
    device: &Device,
) -> Result<VisionLanguageModel> {
    if let Some(dir) = &config.checkpoint {
        return load_vlm(dir, device).with_context(|| format!("model.checkpoint {}", dir.display()));
    }
    let image_token_id = tokenizer.token_id(IMAGE_TAG).with_context(|| {
        format!("the tokenizer has no {IMAGE_TAG} token; a VLM needs one (train one with `autoneural data tokenizer`)")
    })?;
    let vlm = vlm_config(config, tokenizer.vocab_size(), image_token_id)?;
    // The backend's generator is global to the process: hold it from the seed until every
    // parameter has drawn its values, so models built on other threads cannot interleave.
    static SEEDED_INIT: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let guard = SEEDED_INIT.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    // The initial values are drawn on the CPU backend whatever the device, then moved: each
    // backend has its own generator (the same seed draws other values on wgpu than on
    // flex), so `seed` is one model on every backend. A flex device, with or without
    // autodiff, draws in place.
    let on_cpu = device.clone().without_autodiff() == Device::flex();
    let draw_on = match (on_cpu, device.is_autodiff()) {
        (true, _) => device.clone(),
        (false, true) => Device::flex().autodiff(),
        (false, false) => Device::flex(),
    };
    draw_on.seed(seed);
    let mut model = vlm.init(&draw_on)?;
    if let Some(dir) = &config.language.checkpoint {
        model.language =
            load_lfm2(dir, &draw_on).with_context(|| format!("model.language.checkpoint {}", dir.display()))?;
    }
    if let Some(path) = &config.vision.checkpoint {
        let EncoderConfig::MobileNetV5(arch) = &vlm.encoder else {
            bail!("model.vision.checkpoint: only MobileNetV5 encoders load from timm / Gemma 3n files");
        };
        let tower = load_mobilenetv5(path, Some(arch), &draw_on)
            .with_context(|| format!("model.vision.checkpoint {}", path.display()))?;
        model.vision_tower = VisionEncoder::MobileNetV5(tower);
    }
    // After the parts from checkpoints replaced theirs, which then never draw values.
    initialise_now(&model);
    drop(guard);
    // `fork`, not `to_device`: the parameters stay trainable leaves on the new device.
    Ok(if on_cpu { model } else { model.fork(device) })
}

/// Draws every still-lazy parameter's initial values now, in module order. Burn initialises
/// a parameter when it is first read, so without this the weights would depend on which
/// code touched them first (a forward pass, a data-parallel fork, a checkpoint).
fn initialise_now(model: &VisionLanguageModel) {
    struct Touch;
    impl ModuleVisitor for Touch {
        fn visit_float<const D: usize>(&mut self, p: &Param<Tensor<D>>) {
            let _ = p.val();
        }
    }
    model.visit(&mut Touch);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn model_config(extra: &str) -> ModelConfig {
        let text = format!(
            "{extra}\n[vision]\npreset = \"vit_mini\"\n[language]\npreset = \"lfm2-nano\"\nhidden_size = 64\nnum_layers = 2\n"
        );
        toml::from_str(&text).unwrap()
    }

    #[test]
    fn the_vit_baseline_pixel_unshuffles_to_the_quickstart_token_count() {
        let config = vlm_config(&model_config("projector_downsample = 2"), 64, 3).unwrap();
        // An 8x8 patch grid on 64-pixel images, unshuffled by 2: MobileNetV5-tiny's 16 tokens.
        assert_eq!(config.tokens_per_image(64, 64), 16);
        assert_eq!(vlm_config(&model_config(""), 64, 3).unwrap().tokens_per_image(64, 64), 64);
        let err = vlm_config(&model_config("projector_downsample = 3"), 64, 3).unwrap_err().to_string();
        assert!(err.contains("model.projector_downsample") && err.contains("8x8"), "{err}");
    }

    #[test]
    fn attention_layers_go_where_attention_at_says() {
        let lang = |extra: &str| -> LanguageInit {
            toml::from_str(&format!("preset = \"lfm2-nano\"\nnum_layers = 6\n{extra}")).unwrap()
        };
        let kinds = |c: Lfm2Config| c.attention_layers();
        assert_eq!(kinds(text_config(&lang("attention_at = [0, 1]"), 64).unwrap()), [0, 1]);
        assert_eq!(kinds(text_config(&lang("attention_at = []"), 64).unwrap()), Vec::<usize>::new());
        assert_eq!(kinds(text_config(&lang("attention_layers = 2"), 64).unwrap()), [2, 5]);
        let err = text_config(&lang("attention_at = [6]"), 64).unwrap_err().to_string();
        assert!(err.contains("attention_at: layer 6 does not exist (layers 0..6)"), "{err}");
        let err = text_config(&lang("attention_at = [1]\nattention_layers = 2"), 64).unwrap_err().to_string();
        assert!(err.contains("disagree"), "{err}");
    }

    #[test]
    fn lfm3_stacks_are_conv_sliding_full_mixes() {
        use LayerKind::{Attention as F, Conv as C, SlidingAttention as S};
        let lang =
            |extra: &str| -> LanguageInit { toml::from_str(&format!("preset = \"lfm3-nano\"\n{extra}")).unwrap() };
        let kinds = |extra: &str| text_config(&lang(extra), 64).map(|c| c.layer_types);
        // The preset's own pattern, over another depth too.
        assert_eq!(kinds("").unwrap(), [C, C, F, C, S, C]);
        assert_eq!(kinds("num_layers = 9").unwrap(), [C, C, F, C, S, C, F, C, S]);
        // conv : sliding : full by counts: 4 attending layers placed evenly, 2 of them full.
        assert_eq!(
            kinds("num_layers = 8\nattention_layers = 2\nsliding_layers = 2").unwrap(),
            [C, S, C, F, C, S, C, F]
        );
        assert_eq!(kinds("attention_layers = 0\nsliding_layers = 6").unwrap(), [S; 6]);
        assert_eq!(kinds("layer_types = [\"conv\", \"sliding_attention\"]").unwrap(), [C, S]);
        let c = text_config(&lang("sliding_window = 5"), 64).unwrap();
        assert_eq!(c.sliding_window(), Some(5));
        for (extra, message) in [
            ("attention_layers = 4\nsliding_layers = 3", "more than the 6 layers"),
            ("layer_types = [\"conv\"]\nnum_layers = 2", "drop num_layers"),
            ("sliding_window = 0", "sliding_window"),
        ] {
            let err = kinds(extra).unwrap_err().to_string();
            assert!(err.contains(message), "{extra}: {err}");
        }
        // Sliding layers need LFM3's options: an LFM2 preset refuses them by key.
        let lfm2 =
            |extra: &str| -> LanguageInit { toml::from_str(&format!("preset = \"lfm2-nano\"\n{extra}")).unwrap() };
        let err = text_config(&lfm2("sliding_layers = 1"), 64).unwrap_err().to_string();
        assert!(err.contains("model.language.sliding_layers") && err.contains("lfm3 preset"), "{err}");
        let err = text_config(&lfm2("layer_types = [\"sliding_attention\"]"), 64).unwrap_err().to_string();
        assert!(err.contains("layer_types") && err.contains("lfm3 preset"), "{err}");
    }

    #[test]
    fn mobilenet_width_and_depth_come_from_block_strings() {
        let text = |vision: &str| -> ModelConfig {
            toml::from_str(&format!(
                "[vision]\npreset = \"mobilenetv5_tiny\"\nmsfa_output_resolution = 4\n{vision}\n\
                 [language]\npreset = \"lfm2-nano\"\nhidden_size = 64\nnum_layers = 2\n"
            ))
            .unwrap()
        };
        let wide = "stem_size = 16\nnum_features = 96\nblocks = [[\"er_r1_k3_s2_e4_c24\"], \
                    [\"uir_r1_a3_k5_s2_e4_c48\"], [\"uir_r1_a3_k3_s2_e4_c64\"]]";
        let config = vlm_config(&text(wide), 64, 3).unwrap();
        let EncoderConfig::MobileNetV5(a) = &config.encoder else { panic!("not a MobileNetV5") };
        assert_eq!((a.stem_size, a.num_features, a.block_args.len()), (16, 96, 3));
        assert_eq!(config.projector.vision_dim, 96);
        assert_eq!(config.tokens_per_image(64, 64), 16);
        let err = vlm_config(&text("blocks = [[\"xx_r1\"]]"), 64, 3).unwrap_err().to_string();
        assert!(err.contains("model.vision.blocks"), "{err}");
        let vit: ModelConfig = toml::from_str(
            "[vision]\npreset = \"vit_mini\"\nstem_size = 8\n[language]\npreset = \"lfm2-nano\"\nnum_layers = 2\n",
        )
        .unwrap();
        let err = vlm_config(&vit, 64, 3).unwrap_err().to_string();
        assert!(err.contains("need a MobileNetV5 preset"), "{err}");
    }
}

//! The paper's two deployed configurations as [`VlmConfig`]s (shapes only, never weights):
//! `paper-baseline` (InternViT-300M + InternVL's MLP projector + an InternLM2-1.8B-shaped
//! transformer) and `autoneural-paper` (MobileNetV5-300M + normalization-free MLP +
//! LFM2-1.2B).

use autoneural_model::connector::ProjectorConfig;
use autoneural_model::images::Preprocess;
use autoneural_model::text::{LayerKind, Lfm2Config};
use autoneural_model::vision::{EncoderConfig, VitConfig};
use autoneural_model::vlm::{VlmConfig, VlmFormat};

/// Preset names [`preset`] knows.
pub const PRESETS: [&str; 2] = ["paper-baseline", "autoneural-paper"];

/// The resolution both time-to-first-token figures are read at (the paper compares the
/// encoders at 256/512/768; 512 is the one both encoders run at and TTFT sums with).
pub const TTFT_RESOLUTION: usize = 512;

/// InternLM2-1.8B's shapes as an all-attention [`Lfm2Config`]: 24 layers, hidden 2048, 16
/// heads, 8 KV heads of 128, SwiGLU 8192, vocab 92544, untied head. (Its norms and RoPE
/// differ from LFM2's only in ways a cost model does not see.)
pub fn internlm2_1_8b() -> Lfm2Config {
    let mut c = Lfm2Config::preset("lfm2-1.2b").expect("preset");
    c.vocab_size = 92544;
    c.hidden_size = 2048;
    c.intermediate_size = 8192;
    c.block_auto_adjust_ff_dim = false;
    c.num_attention_heads = 16;
    c.num_key_value_heads = 8;
    c.head_dim = 128;
    c.layer_types = vec![LayerKind::Attention; 24];
    c.tie_word_embeddings = false;
    c.max_position_embeddings = 32768;
    c
}

/// InternViT-300M (ViT-L/14 shapes: 24 layers, 1024 wide, 16 heads, MLP 4096, LayerNorm,
/// GELU) at `image_size`.
pub fn intern_vit_300m(image_size: usize) -> VitConfig {
    VitConfig { image_size, ..VitConfig::preset("vit_300m_p14").expect("preset") }
}

fn vlm(encoder: EncoderConfig, projector: ProjectorConfig, text: Lfm2Config, size: usize) -> VlmConfig {
    let preprocess = Preprocess::Fixed { size, mean: [0.5; 3], std: [0.5; 3] };
    let image_token = (text.vocab_size - 1) as u32;
    VlmConfig::new(VlmFormat::AutoNeural, encoder, projector, text, image_token, preprocess, None)
}

/// The paper's AutoNeural: MobileNetV5-300M at `image_size` -> the normalization-free MLP
/// connector -> LFM2-1.2B.
pub fn autoneural_paper(image_size: usize) -> VlmConfig {
    let text = Lfm2Config::preset("lfm2-1.2b").expect("preset");
    let mut encoder = EncoderConfig::preset("mobilenetv5_300m_enc").expect("preset");
    if let EncoderConfig::MobileNetV5(a) = &mut encoder {
        a.image_size = image_size;
    }
    let preprocess = Preprocess::Fixed { size: image_size, mean: [0.5; 3], std: [0.5; 3] };
    VlmConfig::autoneural(encoder, text, preprocess)
}

/// A paper configuration by name, its encoder used at [`TTFT_RESOLUTION`].
pub fn preset(name: &str) -> Option<VlmConfig> {
    let s = TTFT_RESOLUTION;
    match name {
        "paper-baseline" => {
            let text = internlm2_1_8b();
            // InternVL: pixel shuffle 0.5, LayerNorm, Linear(4096, 2048), GELU, Linear(2048, 2048).
            let projector = ProjectorConfig {
                vision_dim: 1024,
                hidden: text.hidden_size,
                text_dim: text.hidden_size,
                bias: true,
                downsample: 2,
                layer_norm: true,
                merge_blocks: false,
            };
            Some(vlm(EncoderConfig::Vit(intern_vit_300m(s)), projector, text, s))
        }
        "autoneural-paper" => Some(autoneural_paper(s)),
        _ => None,
    }
}

//! A batch of questions answered in groups side by side (one per core, for a small model on
//! the CPU) gets the answers each question gets alone, also under a quantized model's
//! context, which every group's thread must run under.

use std::path::PathBuf;

use autoneural_model::checkpoint::vlm::load_vlm;
use autoneural_model::generate::{GenerateOptions, Sampler, SamplingConfig};
use autoneural_model::generate_batch::VlmRequest;
use autoneural_model::images::{LoadedImage, load_image};
use autoneural_model::quant::Encoding;
use autoneural_model::quant::activations::{observe, quantize_with};
use autoneural_model::tokenizer::TextTokenizer;
use autoneural_model::vlm::VisionLanguageModel;
use burn::tensor::Device;

fn fixture() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/vision")
}

const PROMPTS: [&str; 5] = [
    "<image>Describe the image.",
    "<image>What is written?",
    "<image>Name the colour.",
    "<image>Count.",
    "<image>Why?",
];

fn alone(
    model: &VisionLanguageModel,
    tok: &TextTokenizer,
    images: &[Vec<LoadedImage>],
    opts: &GenerateOptions,
) -> Vec<Vec<u32>> {
    PROMPTS
        .iter()
        .zip(images)
        .map(|(p, imgs)| {
            let mut sampler = Sampler::new(SamplingConfig::default()).unwrap();
            model.generate(tok, p, false, imgs, opts, &mut sampler, |_| Ok(())).unwrap().generation.new_ids
        })
        .collect()
}

fn together(
    model: &VisionLanguageModel,
    tok: &TextTokenizer,
    images: &[Vec<LoadedImage>],
    opts: &GenerateOptions,
) -> Vec<Vec<u32>> {
    let requests: Vec<VlmRequest> =
        PROMPTS.iter().zip(images).map(|(p, imgs)| VlmRequest { prompt: p, images: imgs }).collect();
    let out = model.generate_batch(tok, &requests, false, opts, &SamplingConfig::default()).unwrap();
    out.into_iter().map(|g| g.generation.new_ids).collect()
}

#[test]
fn groups_answer_as_each_question_alone_under_the_callers_quantization() {
    let device = Device::flex();
    let dir = fixture().join("autoneural-tiny");
    let model = load_vlm(&dir, &device).unwrap();
    let tok = TextTokenizer::from_dir(&dir, &model.config.text.eos_token_ids).unwrap();
    // Two image sizes, so the groups also encode different tiles.
    let (big, small) =
        (load_image(&dir.join("image.png")).unwrap(), load_image(&fixture().join("images/small.png")).unwrap());
    let images: Vec<Vec<LoadedImage>> =
        (0..PROMPTS.len()).map(|i| vec![if i % 2 == 0 { big.clone() } else { small.clone() }]).collect();
    let opts = GenerateOptions { max_new_tokens: 6, stop_ids: vec![], ignore_eos: true };

    // Two cores' worth of groups, whatever this machine has.
    let pool = rayon::ThreadPoolBuilder::new().num_threads(2).build().unwrap();
    pool.install(|| {
        assert_eq!(model.answer_groups(PROMPTS.len()), 2, "a small CPU model splits a batch of 5 over 2 cores");
        assert_eq!(model.answer_groups(3), 1, "fewer than two questions per core stay one group");
        let float = alone(&model, &tok, &images, &opts);
        assert_eq!(together(&model, &tok, &images, &opts), float);

        // Every weight op's input squeezed into [-0.01, 0.01]: answers far from float's, which
        // a group running on a thread without the caller's context would give instead.
        let (_, ranges) = observe(|| alone(&model, &tok, &images[..1], &opts));
        assert!(!ranges.is_empty());
        let squeeze = Encoding::activation(-0.01, 0.01, 8).unwrap();
        let encodings = || ranges.keys().map(|&id| (id, squeeze.clone())).collect();
        let squeezed = quantize_with(encodings(), || alone(&model, &tok, &images, &opts));
        assert_ne!(squeezed, float, "the squeezed context changes the answers");
        assert_eq!(quantize_with(encodings(), || together(&model, &tok, &images, &opts)), squeezed);
    });
}

//! Golden tests against transformers: logits and greedy continuations of small random LFM2
//! checkpoints written by `scripts/make_lfm2_fixtures.py` (several layer mixes, both config
//! styles, f32/bf16/f16, single and sharded safetensors).

mod common;

use autoneural_model::checkpoint::load_lfm2;
use autoneural_model::generate::{GenerateOptions, Sampler, SamplingConfig, generate};
use autoneural_model::text::Logits;
use autoneural_model::tokenizer::{ChatMessage, TextTokenizer};
use burn::tensor::Device;
use common::*;

#[test]
fn logits_match_transformers() {
    let device = Device::flex();
    for name in FIXTURES {
        let g = golden(name);
        let model = load_lfm2(&fixtures().join(name), &device).unwrap();
        let logits = model.forward(ids(&g.prompt_ids, &device), None, Logits::All);
        assert_eq!(logits.dims().to_vec(), [vec![1], g.logits_shape.clone()].concat(), "{name}");
        let err = rel_err(&values(logits), &g.logits);
        assert!(err < 1e-4, "{name}: relative logit error {err:e}");
    }
}

#[test]
fn greedy_continuation_matches_transformers() {
    let device = Device::flex();
    for name in FIXTURES {
        let g = golden(name);
        let model = load_lfm2(&fixtures().join(name), &device).unwrap();
        let opts = GenerateOptions { max_new_tokens: g.greedy_new_ids.len(), stop_ids: vec![], ignore_eos: true };
        let mut sampler = Sampler::new(SamplingConfig::default()).unwrap();
        let out = generate(&model, &g.prompt_ids, &opts, &mut sampler, |_| Ok(())).unwrap();
        assert_eq!(out.new_ids, g.greedy_new_ids, "{name}");
    }
}

#[test]
fn prompts_tokenize_as_transformers() {
    for name in FIXTURES {
        let g = golden(name);
        let dir = fixtures().join(name);
        let tok = TextTokenizer::from_dir(&dir, &[7]).unwrap();
        assert!(tok.stop_ids().contains(&7), "{name}: <|im_end|> stops generation");
        match &g.raw_prompt {
            Some(raw) => assert_eq!(tok.encode_prompt(raw, true).unwrap(), g.prompt_ids, "{name}"),
            None => {
                let user = g.user_message.as_deref().expect("a chat fixture's user message");
                let rendered = tok.render_chat(&[ChatMessage::user(user)], true).unwrap();
                assert_eq!(rendered, g.rendered_prompt, "{name}: chat template rendering");
                assert_eq!(tok.encode_prompt(user, false).unwrap(), g.prompt_ids, "{name}");
            }
        }
    }
}

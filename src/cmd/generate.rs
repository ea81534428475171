//! `autoneural generate`: prompt in, tokens streamed out.

use std::io::Write;
use std::path::PathBuf;

use anyhow::Context;
use autoneural_model::checkpoint::load_lfm2;
use autoneural_model::device::parse_device;
use autoneural_model::generate::{GenerateOptions, Sampler, SamplingConfig, generate};
use autoneural_model::tokenizer::{StreamDecoder, TextTokenizer};
use clap::Args;
use serde_json::json;

use super::Format;

#[derive(Args, Debug)]
pub struct GenerateArgs {
    /// Checkpoint directory (config.json, safetensors, tokenizer.json).
    #[arg(long)]
    pub model: PathBuf,
    /// The user message (or, with --raw, the exact text).
    #[arg(long)]
    pub prompt: String,
    /// Skip the chat template; the tokenizer's own post-processor (e.g. BOS) still applies.
    #[arg(long)]
    pub raw: bool,
    #[arg(long, default_value_t = 128)]
    pub max_new_tokens: usize,
    /// 0 is greedy decoding.
    #[arg(long, default_value_t = 0.0)]
    pub temperature: f32,
    #[arg(long)]
    pub top_k: Option<usize>,
    #[arg(long)]
    pub top_p: Option<f32>,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Keep generating past end-of-sequence tokens.
    #[arg(long)]
    pub ignore_eos: bool,
    /// flex (CPU) or wgpu (needs the `wgpu` cargo feature).
    #[arg(long, default_value = "flex")]
    pub device: String,
    #[arg(long, value_enum, default_value_t = Format::Text)]
    pub format: Format,
}

pub fn run(args: GenerateArgs) -> anyhow::Result<()> {
    let device = parse_device(&args.device)?;
    let sampler = Sampler::new(SamplingConfig {
        temperature: args.temperature,
        top_k: args.top_k,
        top_p: args.top_p,
        seed: args.seed,
    });
    let mut sampler = sampler?;
    let model = load_lfm2(&args.model, &device).with_context(|| format!("loading {}", args.model.display()))?;
    let tokenizer = TextTokenizer::from_dir(&args.model, &model.config.eos_token_ids)?;
    let prompt_ids = tokenizer.encode_prompt(&args.prompt, args.raw)?;
    let options = GenerateOptions {
        max_new_tokens: args.max_new_tokens,
        stop_ids: tokenizer.stop_ids().to_vec(),
        ignore_eos: args.ignore_eos,
    };

    let mut stream = StreamDecoder::new(&tokenizer);
    let stdout = std::io::stdout();
    let streaming = args.format == Format::Text;
    let result = generate(&model, &prompt_ids, &options, &mut sampler, |id| {
        if streaming {
            let piece = stream.push(id)?;
            let mut out = stdout.lock();
            let _ = out.write_all(piece.as_bytes());
            let _ = out.flush();
        }
        Ok(())
    })?;
    let text = tokenizer.decode(&result.new_ids, true)?;
    match args.format {
        Format::Text => {
            println!();
            eprintln!(
                "[{} prompt tokens, {} new; ttft {:.1} ms, prefill {:.1} tok/s, decode {:.2} tok/s; stop: {:?}]",
                result.prompt_ids.len(),
                result.new_ids.len(),
                result.ttft_ms,
                result.prefill_tok_s,
                result.decode_tok_s,
                result.stop_reason
            );
        }
        Format::Json => {
            let obj = json!({
                "prompt_ids": result.prompt_ids,
                "new_ids": result.new_ids,
                "text": text,
                "ttft_ms": result.ttft_ms,
                "prefill_tok_s": result.prefill_tok_s,
                "decode_tok_s": result.decode_tok_s,
                "stop_reason": result.stop_reason,
            });
            println!("{}", serde_json::to_string(&obj)?);
        }
    }
    Ok(())
}

//! `autoneural generate`: prompt in, tokens streamed out.

use std::io::Write;
use std::path::PathBuf;

use anyhow::{Context, bail};
use autoneural_model::checkpoint::{is_vlm_type, load_lfm2, load_vlm, model_type};
use autoneural_model::device::parse_device;
use autoneural_model::generate::{GenerateOptions, Generation, Sampler, SamplingConfig, generate};
use autoneural_model::images::load_image;
use autoneural_model::quant::runtime::QuantizedRuntime;
use autoneural_model::tokenizer::{StreamDecoder, TextTokenizer};
use clap::Args;
use serde_json::json;

use super::Format;

#[derive(Args, Debug)]
pub struct GenerateArgs {
    /// Checkpoint directory (config.json, safetensors, tokenizer.json): LFM2, LFM2-VL or
    /// AutoNeural.
    #[arg(long)]
    pub model: PathBuf,
    /// The user message (or, with --raw, the exact text). Each `<image>` marks where an
    /// image goes; without any, the images come before the text.
    #[arg(long)]
    pub prompt: String,
    /// An image (PNG, JPEG or WebP) for a vision-language model; repeat for several.
    #[arg(long = "image")]
    pub images: Vec<PathBuf>,
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
    /// Quantize the weights by this precision (w8a16, w4a16, autoneural or a policy file)
    /// and decode from int8/int4 on the CPU. A checkpoint written by `autoneural quantize`
    /// decodes from its own encodings without this flag.
    #[arg(long)]
    pub precision: Option<String>,
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
    let kind = model_type(&args.model).with_context(|| format!("loading {}", args.model.display()))?;
    let vlm = is_vlm_type(&kind);
    if !vlm && !args.images.is_empty() {
        bail!(
            "{} is a text-only model (model_type {kind:?}); --image needs an LFM2-VL or AutoNeural checkpoint",
            args.model.display()
        );
    }
    let streaming = args.format == Format::Text;
    let (tokenizer, result, vision): (TextTokenizer, Generation, Option<(f64, Vec<usize>)>) = if vlm {
        let images = args.images.iter().map(|p| load_image(p)).collect::<Result<Vec<_>, _>>()?;
        let model = load_vlm(&args.model, &device).with_context(|| format!("loading {}", args.model.display()))?;
        let tokenizer = TextTokenizer::from_dir(&args.model, &model.config.text.eos_token_ids)?;
        let options = options_for(&args, &tokenizer);
        let (model, quantized) = QuantizedRuntime::for_checkpoint(model, &args.model, args.precision.as_deref())?;
        announce(&quantized);
        let mut sink = sink(&tokenizer, streaming);
        let out = quantized
            .run(|| model.generate(&tokenizer, &args.prompt, args.raw, &images, &options, &mut sampler, &mut sink))?;
        drop(sink);
        (tokenizer, out.generation, Some((out.vision_ms, out.image_tokens)))
    } else {
        let model = load_lfm2(&args.model, &device).with_context(|| format!("loading {}", args.model.display()))?;
        let tokenizer = TextTokenizer::from_dir(&args.model, &model.config.eos_token_ids)?;
        let prompt_ids = tokenizer.encode_prompt(&args.prompt, args.raw)?;
        let options = options_for(&args, &tokenizer);
        let (model, quantized) = QuantizedRuntime::for_checkpoint(model, &args.model, args.precision.as_deref())?;
        announce(&quantized);
        let mut sink = sink(&tokenizer, streaming);
        let out = quantized.run(|| generate(&model, &prompt_ids, &options, &mut sampler, &mut sink))?;
        drop(sink);
        (tokenizer, out, None)
    };
    let text = tokenizer.decode(&result.new_ids, true)?;
    match args.format {
        Format::Text => {
            println!();
            if let Some((ms, tokens)) = &vision {
                eprintln!("[{} image(s), {tokens:?} image tokens, vision {ms:.1} ms]", tokens.len());
            }
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
                "vision_ms": vision.as_ref().map(|v| v.0),
                "image_tokens": vision.as_ref().map(|v| v.1.clone()),
            });
            println!("{}", serde_json::to_string(&obj)?);
        }
    }
    Ok(())
}

fn announce(quantized: &QuantizedRuntime) {
    if let Some(line) = quantized.summary() {
        eprintln!("[{line}]");
    }
}

fn options_for(args: &GenerateArgs, tokenizer: &TextTokenizer) -> GenerateOptions {
    GenerateOptions {
        max_new_tokens: args.max_new_tokens,
        stop_ids: tokenizer.stop_ids().to_vec(),
        ignore_eos: args.ignore_eos,
    }
}

/// Prints each token's text as soon as it is whole (text format), or nothing (JSON).
fn sink(tokenizer: &TextTokenizer, streaming: bool) -> impl FnMut(u32) -> autoneural_model::Result<()> + '_ {
    let mut stream = StreamDecoder::new(tokenizer);
    move |id| {
        if streaming {
            let piece = stream.push(id)?;
            let mut out = std::io::stdout().lock();
            let _ = out.write_all(piece.as_bytes());
            let _ = out.flush();
        }
        Ok(())
    }
}

//! `autoneural bench`: the arguments of each benchmark, passed to `autoneural_eval`'s
//! benchmark modules, whose reports are printed as text or JSON.

use anyhow::{Context, bail};
use autoneural_eval::bench_lm::{ContextComparison, LmBenchOptions, LmComparison};
use autoneural_eval::bench_train::{self, TrainBenchOptions};
use autoneural_eval::bench_vision::{self, VisionComparison};
use autoneural_eval::membw::measure_read_bandwidth;
use autoneural_experiments::experiment::Experiment;
use autoneural_experiments::sweep::{Expansion, parse_overrides};
use autoneural_model::device::{parse_device, parse_devices};
use autoneural_model::quant::PrecisionPolicy;
use autoneural_model::text::Lfm2Config;
use autoneural_model::vision::EncoderConfig;
use clap::{Args, Subcommand};
use serde_json::json;

use super::Format;

#[derive(Subcommand, Debug)]
pub enum BenchCommand {
    /// LFM2 prefill/decode tokens/s and decode-state bytes.
    Lm(LmArgs),
    /// Decode speed and state memory against context length: the preset's layer mix next to
    /// a baseline mix (default: all attention), in the same process.
    Context(ContextArgs),
    /// Vision-encoder latency and peak memory per resolution; several encoders are timed in
    /// the same process and compared with the first.
    Vision(VisionArgs),
    /// Training throughput of an experiment's model: optimizer steps (forward + loss,
    /// backward, clipping, AdamW) on one synthetic batch of training shapes, per phase.
    Train(TrainArgs),
    /// The training data path (reading, shuffling, decoding and preprocessing images on the
    /// worker thread, tokenizing, batching) against the experiment's training step, in
    /// samples per second, in the same process.
    Data(DataArgs),
    /// Questions per second answering a benchmark: one question at a time against several
    /// decoded together (batched generation), in the same process, answers compared.
    Eval(super::bench_eval::EvalBenchArgs),
    /// Memory read bandwidth of this machine (all threads).
    Membw {
        #[arg(long, default_value_t = 1024)]
        mib: usize,
        #[arg(long, value_enum, default_value_t = Format::Text)]
        format: Format,
    },
}

#[derive(Args, Debug)]
pub struct LmArgs {
    /// lfm2-350m, lfm2-700m, lfm2-1.2b, lfm2-8b-a1b (MoE), lfm3-1.7b, lfm2-tiny, lfm2-nano, lfm3-tiny, lfm3-nano
    #[arg(long, default_value = "lfm2-350m")]
    pub preset: String,
    /// Re-place attention: this many attention layers, the rest conv (0 = pure conv,
    /// all = pure transformer), evenly spaced and ending at the last layer.
    #[arg(long)]
    pub attention_layers: Option<usize>,
    #[arg(long, default_value_t = 128)]
    pub prompt_len: usize,
    #[arg(long, default_value_t = 64)]
    pub new_tokens: usize,
    /// Positions already in the decode state (synthetic) before the prompt.
    #[arg(long, default_value_t = 0)]
    pub context: usize,
    #[arg(long, default_value_t = 1)]
    pub batch: usize,
    #[arg(long, default_value = "flex")]
    pub device: String,
    /// Skip the memory-bandwidth measurement (and the bound it gives).
    #[arg(long)]
    pub no_bandwidth: bool,
    /// Precisions, comma-separated, each run on the same random weights in this process
    /// (the first is the baseline of the ratios): fp32, w8a16, w4a16, autoneural or a policy
    /// file. Quantized weights decode through the int8/int4 kernels.
    #[arg(long, default_value = "fp32")]
    pub precision: String,
    /// JSON prints one line per precision.
    #[arg(long, value_enum, default_value_t = Format::Text)]
    pub format: Format,
}

#[derive(Args, Debug)]
pub struct ContextArgs {
    /// Presets whose layer mixes are measured, comma-separated (e.g. lfm2-1.2b,lfm3-1.7b).
    #[arg(long, value_delimiter = ',', default_value = "lfm2-350m")]
    pub preset: Vec<String>,
    /// Attention layers of the baseline mix, the first preset's shapes re-mixed (default:
    /// every layer, full attention).
    #[arg(long)]
    pub baseline_attention_layers: Option<usize>,
    #[arg(long, value_delimiter = ',', default_value = "1024,4096,16384")]
    pub contexts: Vec<usize>,
    #[arg(long, default_value_t = 16)]
    pub new_tokens: usize,
    #[arg(long, default_value = "flex")]
    pub device: String,
    #[arg(long, value_enum, default_value_t = Format::Text)]
    pub format: Format,
}

#[derive(Args, Debug)]
pub struct VisionArgs {
    /// Encoder presets, comma-separated (the first is the baseline of the ratios):
    /// mobilenetv5_300m_enc, mobilenetv5_base, mobilenetv5_tiny, siglip2_base_p16,
    /// siglip2_large_p16, vit_300m_p14, vit_tiny.
    #[arg(long, value_delimiter = ',', default_value = "mobilenetv5_300m_enc")]
    pub encoder: Vec<String>,
    #[arg(long, value_delimiter = ',', default_value = "256,512,768")]
    pub resolution: Vec<usize>,
    /// Timed runs per resolution (the median is reported).
    #[arg(long, default_value_t = 3)]
    pub runs: usize,
    #[arg(long, default_value = "flex")]
    pub device: String,
    #[arg(long, value_enum, default_value_t = Format::Text)]
    pub format: Format,
}

#[derive(Args, Debug)]
pub struct TrainArgs {
    /// The experiment file whose model (and stage optimizer settings) is benchmarked, read
    /// as `run` reads it (`extends` included).
    #[arg(long)]
    pub experiment: std::path::PathBuf,
    /// Override a key of the experiment file, as `run --set` does:
    /// `--set model.vision.msfa_output_resolution=6`. Repeatable.
    #[arg(long = "set", value_name = "KEY=VALUE")]
    pub set: Vec<String>,
    /// For a file with a `[sweep]`: the run to benchmark (by id, as `run --dry-run` lists them).
    #[arg(long)]
    pub only: Option<String>,
    /// Stage whose trained parts and optimizer are used (default: the first stage that trains
    /// every part on the language-model loss).
    #[arg(long)]
    pub stage: Option<String>,
    /// Sequences per step.
    #[arg(long, default_value_t = 16)]
    pub batch: usize,
    /// Timed optimizer steps.
    #[arg(long, default_value_t = 10)]
    pub steps: usize,
    /// Untimed steps first.
    #[arg(long, default_value_t = 2)]
    pub warmup: usize,
    /// Text positions per sequence besides the image tokens.
    #[arg(long, default_value_t = 40)]
    pub text_tokens: usize,
    /// Trained positions at the end of each sequence.
    #[arg(long, default_value_t = 8)]
    pub loss_tokens: usize,
    /// Also time the vision half (encoder + connector) and the language half (LM + loss)
    /// as separate graphs, forward and backward.
    #[arg(long)]
    pub breakdown: bool,
    /// A device, or a comma-separated list for data-parallel training (`flex,flex`: two
    /// replicas sharing the CPU; `wgpu:0,wgpu:1`: two GPUs); the batch is split over them.
    #[arg(long, default_value = "flex")]
    pub device: String,
    #[arg(long, value_enum, default_value_t = Format::Text)]
    pub format: Format,
}

#[derive(Args, Debug)]
pub struct DataArgs {
    /// The experiment whose model and first full stage (micro-batch) set the baseline.
    #[arg(long)]
    pub experiment: std::path::PathBuf,
    /// Records to stream: a JSONL, Parquet or WebDataset file, or a glob of them.
    #[arg(long)]
    pub data: std::path::PathBuf,
    /// A tokenizer directory (default: the experiment's `data.tokenizer`, else one trained on
    /// the first records of --data).
    #[arg(long)]
    pub tokenizer: Option<std::path::PathBuf>,
    /// Records streamed (timed).
    #[arg(long, default_value_t = 1024)]
    pub records: usize,
    /// Records per shuffle block.
    #[arg(long, default_value_t = 256)]
    pub shuffle: usize,
    /// Timed training steps of the baseline.
    #[arg(long, default_value_t = 5)]
    pub train_steps: usize,
    /// Training devices (default: the experiment's `device`).
    #[arg(long)]
    pub device: Option<String>,
    #[arg(long, value_enum, default_value_t = Format::Text)]
    pub format: Format,
}

/// `bench data`: the batcher of the experiment's model (its image size, token count,
/// preprocessing) with a tokenizer, and the stream of `--data` through it.
fn data(args: DataArgs) -> anyhow::Result<()> {
    use autoneural_data::{OnBadRecord, SourceSpec};
    use autoneural_eval::bench_data::{self, DataBenchOptions};
    use autoneural_model::tokenizer::TextTokenizer;
    use autoneural_model::vlm::ImageTokens;
    let exp = Experiment::from_file(&args.experiment)?;
    let spec = SourceSpec::file(&args.data, OnBadRecord::Skip)?;
    let bench = exp.bench_spec();
    let cfg = bench_train::model_config(&bench)?;
    let scratch = tempfile::tempdir()?;
    let tok_dir = match (&args.tokenizer, &exp.data.tokenizer) {
        (Some(d), _) | (None, Some(d)) => d.clone(),
        (None, None) => {
            // BPE on a few hundred records: the cost of tokenizing is what is measured.
            let mut sample = SourceSpec { ..spec.clone() }.open()?;
            let mut text = Vec::new();
            while let Some(r) = sample.next_record() {
                text.push(r?);
                if text.len() >= 500 {
                    break;
                }
            }
            let jsonl = scratch.path().join("sample.jsonl");
            let lines: Vec<String> =
                text.iter().map(|r| autoneural_data::sources::write::row_json(r).to_string()).collect();
            std::fs::write(&jsonl, lines.join("\n"))?;
            let dir = scratch.path().join("tokenizer");
            let sample = SourceSpec::file(&jsonl, OnBadRecord::Fail)?;
            autoneural_data::tokenizer_train::train_tokenizer(&[sample], exp.data.vocab_size, &dir)?;
            dir
        }
    };
    let tokenizer = TextTokenizer::from_dir(&tok_dir, &cfg.text.eos_token_ids)?;
    let devices = parse_devices(args.device.as_deref().unwrap_or(&exp.device))?;
    let batcher = autoneural_train::train::Batcher {
        image_tokens: ImageTokens {
            image_token_id: tokenizer.token_id("<image>").unwrap_or(cfg.image_token_id),
            wrap: false,
            bounds: None,
        },
        tokens_per_image: cfg.image_token_count(),
        preprocess: cfg.preprocess.clone(),
        pad_id: 0,
        device: devices[0].clone(),
        max_seq_len: exp.data.max_seq_len,
        tokenizer,
    };
    let options = DataBenchOptions { records: args.records, shuffle: args.shuffle, train_steps: args.train_steps };
    let r = bench_data::run(&spec, &batcher, &bench, &devices, &options)?;
    match args.format {
        Format::Json => println!("{}", serde_json::to_string(&r)?),
        Format::Text => print!("{}", r.text()),
    }
    Ok(())
}

/// The experiment `bench train` measures: the file with its `extends` and `--set`s, and for
/// a sweep the run `--only` names.
fn experiment(args: &TrainArgs) -> anyhow::Result<Experiment> {
    let expansion = Expansion::from_file(&args.experiment, &parse_overrides(&args.set).map_err(anyhow::Error::msg)?)?;
    let point = match &args.only {
        Some(id) => expansion.point(id)?,
        None if !expansion.is_sweep => &expansion.points[0],
        None => {
            bail!("{} is a sweep: choose one run with --only (`run --dry-run` lists them)", args.experiment.display())
        }
    };
    Ok(point.experiment.clone())
}

fn train(args: TrainArgs) -> anyhow::Result<()> {
    let exp = experiment(&args)?;
    let devices = parse_devices(&args.device)?;
    let opts = TrainBenchOptions {
        batch: args.batch,
        steps: args.steps,
        warmup: args.warmup,
        text_tokens: args.text_tokens,
        loss_tokens: args.loss_tokens,
        stage: args.stage,
        breakdown: args.breakdown,
    };
    let r = bench_train::run(&exp.bench_spec(), &opts, &devices)?;
    match args.format {
        Format::Json => {
            let mut v = serde_json::to_value(&r)?;
            v["device"] = json!(args.device);
            v["host"] = json!(autoneural_eval::host::Host::detect());
            println!("{}", serde_json::to_string(&v)?);
        }
        Format::Text => print!("{}\n\n{}", autoneural_eval::host::Host::detect().line(), r.text(&args.device)),
    }
    Ok(())
}

fn vision(args: VisionArgs) -> anyhow::Result<()> {
    let device = parse_device(&args.device)?;
    let max = autoneural_model::vision::arch::MAX_IMAGE_SIDE;
    if args.resolution.iter().any(|&r| !(32..=max).contains(&r)) {
        bail!("--resolution values must be between 32 and {max} pixels");
    }
    let mut rows = Vec::new();
    for name in &args.encoder {
        let config = EncoderConfig::preset(name).with_context(|| {
            format!("unknown encoder {name:?} (expected one of {})", EncoderConfig::preset_names().join(", "))
        })?;
        rows.extend(bench_vision::run(name, &config, &args.resolution, args.runs, &device)?);
    }
    let report = VisionComparison { rows, device: args.device, runs: args.runs };
    match args.format {
        Format::Json => {
            // One object per encoder and resolution, each with the host it ran on.
            let mut v = report.json();
            let host = json!(autoneural_eval::host::Host::detect());
            for row in v.as_array_mut().into_iter().flatten() {
                row["host"] = host.clone();
            }
            println!("{}", serde_json::to_string(&v)?)
        }
        Format::Text => print!("{}\n\n{}", autoneural_eval::host::Host::detect().line(), report.text()),
    }
    Ok(())
}

fn preset(name: &str) -> anyhow::Result<Lfm2Config> {
    Lfm2Config::preset(name)
        .with_context(|| format!("unknown preset {name:?} (expected one of {})", Lfm2Config::preset_names().join(", ")))
}

fn context(args: ContextArgs) -> anyhow::Result<()> {
    let mut mixes =
        args.preset.iter().map(|name| Ok((name.clone(), preset(name)?))).collect::<anyhow::Result<Vec<_>>>()?;
    let Some((first, shapes)) = mixes.first().cloned() else { bail!("--preset names no preset") };
    let n = shapes.num_layers();
    let base_n = args.baseline_attention_layers.unwrap_or(n);
    if base_n > n {
        bail!("--baseline-attention-layers {base_n} is more than the {n} layers of {first}");
    }
    let label = if base_n == n {
        format!("all-attention ({first} shapes)")
    } else {
        format!("{base_n} attention ({first} shapes)")
    };
    mixes.push((label, shapes.with_attention_layers(base_n)));
    let device = parse_device(&args.device)?;
    let report = ContextComparison::run(&mixes, &args.contexts, args.new_tokens, &device)?;
    match args.format {
        Format::Json => println!("{}", serde_json::to_string(&report.json())?),
        Format::Text => {
            println!("{}\n", autoneural_eval::host::Host::detect().line());
            print!("{}", report.markdown());
        }
    }
    Ok(())
}

pub fn run(cmd: BenchCommand) -> anyhow::Result<()> {
    match cmd {
        BenchCommand::Lm(args) => lm(args),
        BenchCommand::Context(args) => context(args),
        BenchCommand::Vision(args) => vision(args),
        BenchCommand::Train(args) => train(args),
        BenchCommand::Data(args) => data(args),
        BenchCommand::Eval(args) => super::bench_eval::run(args),
        BenchCommand::Membw { mib, format } => {
            let bw = measure_read_bandwidth(mib << 20, 9);
            match format {
                Format::Json => println!("{}", serde_json::to_string(&bw)?),
                Format::Text => println!("{}", bw.text()),
            }
            Ok(())
        }
    }
}

fn lm(args: LmArgs) -> anyhow::Result<()> {
    let mut config = preset(&args.preset)?;
    if let Some(n) = args.attention_layers {
        if n > config.num_layers() {
            bail!("--attention-layers {n} is more than the {} layers of {}", config.num_layers(), args.preset);
        }
        config = config.with_attention_layers(n);
    }
    if args.prompt_len == 0 {
        bail!("--prompt-len must be at least 1");
    }
    let policies = args
        .precision
        .split(',')
        .map(|p| PrecisionPolicy::load(p.trim()).with_context(|| format!("--precision {p}")))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let device = parse_device(&args.device)?;
    let opts = LmBenchOptions {
        prompt_len: args.prompt_len,
        new_tokens: args.new_tokens,
        context: args.context,
        batch: args.batch,
    };
    let report =
        LmComparison::run(&args.preset, &config, &policies, &opts, (&device, &args.device), !args.no_bandwidth)?;
    let host = autoneural_eval::host::Host::detect();
    match args.format {
        Format::Json => {
            for mut line in report.json_lines() {
                line["host"] = json!(host);
                println!("{}", serde_json::to_string(&line)?);
            }
        }
        Format::Text => print!("{}\n\n{}", host.line(), report.text()),
    }
    Ok(())
}

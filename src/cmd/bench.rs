//! `autoneural bench lm`: throughput and decode-state memory of LFM2 shapes on random
//! weights, next to this machine's memory-bandwidth bound measured in the same process.

use anyhow::{Context, bail};
use autoneural_eval::bench_lm::{LmBenchOptions, random_model, run as run_bench, run_at};
use autoneural_eval::bench_train::{self, TrainBenchOptions};
use autoneural_eval::bench_vision;
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
    /// lfm2-350m, lfm2-700m, lfm2-1.2b, lfm2-tiny, lfm2-nano
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
    #[arg(long, default_value = "lfm2-350m")]
    pub preset: String,
    /// Attention layers of the baseline mix (default: every layer).
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
            println!("{}", serde_json::to_string(&v)?);
        }
        Format::Text => {
            println!(
                "{} stage {:?} (training {}): {} params = vision {} + projector {} + language {}",
                r.experiment,
                r.stage,
                r.trained_parts.join(", "),
                r.params_total,
                r.params_vision,
                r.params_projector,
                r.params_language
            );
            println!(
                "image {}px -> {} tokens of {}; LM hidden {}, MLP {}, {} layers (attention at {:?}), vocab {}",
                r.image_size,
                r.image_tokens,
                r.vision_dim,
                r.text_hidden,
                r.text_mlp_width,
                r.text_layers,
                r.attention_layers,
                r.vocab_size
            );
            println!(
                "batch {} x {} positions ({} trained per row), {} timed steps after {} warm-up",
                r.batch, r.seq_len, r.loss_tokens_per_row, r.steps, r.warmup
            );
            let p = &r.phases_ms;
            println!(
                "step: {:.1} ms mean ({:.1} median, {:.1} min) = {:.2} samples/s",
                r.ms_per_step, r.median_ms, r.min_ms, r.samples_per_s
            );
            println!(
                "phases: forward {:.1} ms, backward {:.1} ms, grads + clip {:.1} ms, optimizer {:.1} ms",
                p.forward, p.backward, p.clip, p.optimizer
            );
            if let Some(b) = &r.breakdown_ms {
                println!(
                    "halves: vision forward {:.1} + backward {:.1} ms, language forward {:.1} + backward {:.1} ms",
                    b.vision_forward, b.vision_backward, b.language_forward, b.language_backward
                );
            }
            println!(
                "last loss {:.3}, peak step heap {}, {} threads, device {}",
                r.last_loss,
                r.peak_step_mib.map_or("n/a".into(), |m| format!("{m:.0} MiB")),
                r.threads,
                args.device
            );
        }
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
    let baseline =
        |r: usize| rows.iter().find(|x| x.encoder == args.encoder[0] && x.resolution == r).map(|x| x.latency_ms);
    match args.format {
        Format::Json => {
            let out: Vec<_> = rows
                .iter()
                .map(|r| {
                    let mut v = serde_json::to_value(r).expect("row serialises");
                    v["device"] = json!(args.device);
                    v["latency_vs_first"] = json!(baseline(r.resolution).map(|b| r.latency_ms / b));
                    v
                })
                .collect();
            println!("{}", serde_json::to_string(&out)?);
        }
        Format::Text => {
            println!(
                "{:<22} {:>6} {:>9} {:>7} {:>11} {:>11} {:>13} {:>8}",
                "encoder", "res", "params", "tokens", "median ms", "min ms", "peak act MiB", "x first"
            );
            for r in &rows {
                println!(
                    "{:<22} {:>6} {:>8.1}M {:>7} {:>11.1} {:>11.1} {:>13} {:>8.2}",
                    r.encoder,
                    r.resolution,
                    r.params as f64 / 1e6,
                    r.tokens,
                    r.latency_ms,
                    r.min_ms,
                    r.peak_activation_mib.map_or("n/a".into(), |m| format!("{m:.0}")),
                    baseline(r.resolution).map_or(f64::NAN, |b| r.latency_ms / b),
                );
            }
            println!(
                "({} threads, device {}, {} timed runs each after one warm-up)",
                rows.first().map_or(0, |r| r.threads),
                args.device,
                args.runs
            );
        }
    }
    Ok(())
}

fn preset(name: &str) -> anyhow::Result<Lfm2Config> {
    Lfm2Config::preset(name)
        .with_context(|| format!("unknown preset {name:?} (expected one of {})", Lfm2Config::PRESETS.join(", ")))
}

fn context(args: ContextArgs) -> anyhow::Result<()> {
    let hybrid = preset(&args.preset)?;
    let n = hybrid.num_layers();
    let base_n = args.baseline_attention_layers.unwrap_or(n);
    if base_n > n {
        bail!("--baseline-attention-layers {base_n} is more than the {n} layers of {}", args.preset);
    }
    let baseline = hybrid.clone().with_attention_layers(base_n);
    let device = parse_device(&args.device)?;
    let mut rows = Vec::new();
    for (label, cfg) in [("hybrid", &hybrid), ("baseline", &baseline)] {
        for &ctx in &args.contexts {
            let opts = LmBenchOptions { prompt_len: 1, new_tokens: args.new_tokens, context: ctx, batch: 1 };
            opts.check(cfg).map_err(anyhow::Error::msg)?;
        }
        let model = random_model(cfg, &device);
        for &ctx in &args.contexts {
            let opts = LmBenchOptions { prompt_len: 1, new_tokens: args.new_tokens, context: ctx, batch: 1 };
            let r = run_bench(&model, &device, &opts);
            rows.push((label, ctx, r));
        }
    }
    if args.format == Format::Json {
        let out: Vec<_> = rows
            .iter()
            .map(|(label, ctx, r)| {
                let mut v = serde_json::to_value(r).expect("serialisable");
                v["mix"] = json!(label);
                v["requested_context"] = json!(ctx);
                v
            })
            .collect();
        println!("{}", serde_json::to_string(&out)?);
        return Ok(());
    }
    println!(
        "{}: hybrid = attention at {:?}; baseline = attention at {:?} ({} of {n} layers)",
        args.preset,
        hybrid.attention_layers(),
        baseline.attention_layers(),
        base_n
    );
    println!(
        "| context | hybrid tok/s | baseline tok/s | speed ratio | hybrid state MiB | baseline state MiB | memory ratio |"
    );
    println!("| ---: | ---: | ---: | ---: | ---: | ---: | ---: |");
    for &ctx in &args.contexts {
        let h = &rows.iter().find(|(l, c, _)| *l == "hybrid" && *c == ctx).expect("ran").2;
        let b = &rows.iter().find(|(l, c, _)| *l == "baseline" && *c == ctx).expect("ran").2;
        let mib = |x: usize| x as f64 / 1048576.0;
        println!(
            "| {ctx} | {:.2} | {:.2} | {:.2}x | {:.2} | {:.2} | {:.2}x |",
            h.decode_tok_s,
            b.decode_tok_s,
            h.decode_tok_s / b.decode_tok_s,
            mib(h.state_total_bytes),
            mib(b.state_total_bytes),
            b.state_total_bytes as f64 / h.state_total_bytes as f64
        );
    }
    Ok(())
}

pub fn run(cmd: BenchCommand) -> anyhow::Result<()> {
    match cmd {
        BenchCommand::Lm(args) => lm(args),
        BenchCommand::Context(args) => context(args),
        BenchCommand::Vision(args) => vision(args),
        BenchCommand::Train(args) => train(args),
        BenchCommand::Membw { mib, format } => {
            let bw = measure_read_bandwidth(mib << 20, 9);
            match format {
                Format::Json => println!("{}", serde_json::to_string(&bw)?),
                Format::Text => println!(
                    "memory read bandwidth: {:.2} GB/s median, {:.2} GB/s best ({} threads, {} MiB buffer)",
                    bw.gb_per_s, bw.best_gb_per_s, bw.threads, mib
                ),
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
    opts.check(&config).map_err(anyhow::Error::msg)?;
    let model = random_model(&config, &device);
    let mut results = Vec::new();
    for policy in &policies {
        results.push(run_at(&model, policy, &device, &opts)?);
    }
    // measured after the model runs so both see the same machine state
    let bw = (!args.no_bandwidth).then(|| measure_read_bandwidth(1 << 30, 9));
    let base = &results[0];
    for r in &results {
        let bound = bw.map(|b| b.gb_per_s * 1e9 / r.decode_weight_bytes as f64);
        let speedup = r.decode_tok_s / base.decode_tok_s;
        match args.format {
            Format::Json => {
                let mut obj = serde_json::to_value(r)?;
                obj["preset"] = json!(args.preset);
                obj["device"] = json!(args.device);
                obj["bandwidth_gb_s"] = json!(bw.map(|b| b.gb_per_s));
                obj["decode_bound_tok_s"] = json!(bound);
                obj["decode_fraction_of_bound"] = json!(bound.map(|b| r.decode_tok_s / (b * r.batch as f64)));
                obj["decode_speedup"] = json!(speedup);
                println!("{}", serde_json::to_string(&obj)?);
            }
            Format::Text => {
                println!(
                    "{} at {} ({} layers, attention at {:?}), {} params, {} threads, device {}",
                    args.preset, r.precision, r.num_layers, r.attention_layers, r.params, r.threads, args.device
                );
                if r.packed_matrices > 0 {
                    println!("weights: {} matrices decode from int8/int4", r.packed_matrices);
                }
                println!(
                    "prefill: {} tokens in {:.1} ms = {:.1} tok/s",
                    r.prompt_len * r.batch,
                    r.prefill_ms,
                    r.prefill_tok_s
                );
                println!(
                    "decode:  {} tokens, {:.2} ms/token = {:.2} tok/s ({:.2}x {})",
                    r.new_tokens * r.batch,
                    r.decode_ms_per_token,
                    r.decode_tok_s,
                    speedup,
                    base.precision
                );
                println!(
                    "state at context {}: KV {:.2} MiB + conv {:.3} MiB = {:.2} MiB",
                    r.final_context,
                    r.state_kv_bytes as f64 / 1048576.0,
                    r.state_conv_bytes as f64 / 1048576.0,
                    r.state_total_bytes as f64 / 1048576.0
                );
                if let (Some(bw), Some(bound)) = (bw, bound) {
                    println!(
                        "bound:   {:.2} GB/s (median read bandwidth) / {:.1} MB per token = {:.2} tok/s; decode reaches {:.0}% of it",
                        bw.gb_per_s,
                        r.decode_weight_bytes as f64 / 1e6,
                        bound,
                        100.0 * r.decode_tok_s / (bound * r.batch as f64)
                    );
                }
            }
        }
    }
    Ok(())
}

//! `autoneural data`: generate the synthetic task families, train a tokenizer on them.

use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use autoneural_data::synth::{Family, SynthOptions, synthesize_into};
use autoneural_data::tokenizer_train::train_tokenizer;
use clap::{Args, Subcommand};

#[derive(Subcommand, Debug)]
pub enum DataCommand {
    /// Render a deterministic synthetic dataset: DIR/<family>/{train,val,test}.jsonl, the
    /// images beside them, and DIR/manifest.json (counts, majority-answer baselines).
    Synth(SynthArgs),
    /// Train a byte-level BPE tokenizer (LFM2 specials, `<image>`, LFM2 chat template) on
    /// DIR/*/SPLIT.jsonl.
    Tokenizer(TokenizerArgs),
    /// Write a set of records (JSONL, Parquet or WebDataset, any layout) as Hugging Face
    /// Parquet files or WebDataset shards in OUT: PREFIX-00000.parquet|tar, ...
    Convert(ConvertArgs),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum ConvertTo {
    Parquet,
    Webdataset,
}

#[derive(Args, Debug)]
pub struct ConvertArgs {
    /// The records: a file or a glob (`shards/*.tar`); the format by the extension.
    #[arg(long)]
    pub data: PathBuf,
    /// The layout of the input rows (auto, messages, conversations, texts, qa).
    #[arg(long, default_value = "auto")]
    pub layout: String,
    #[arg(long, value_enum)]
    pub to: ConvertTo,
    /// Output directory (owned by this command: see docs/reliability.md).
    #[arg(long)]
    pub out: PathBuf,
    /// File names: PREFIX-00000.parquet, ... (default: the input's file stem).
    #[arg(long)]
    pub prefix: Option<String>,
    /// Records per output file.
    #[arg(long, default_value_t = 10_000)]
    pub per_file: usize,
    /// Records per Parquet row group (what a reader decodes at once at most).
    #[arg(long, default_value_t = 256)]
    pub row_group: usize,
    #[command(flatten)]
    pub output: super::OutputPolicy,
}

#[derive(Args, Debug)]
pub struct SynthArgs {
    /// Output directory.
    #[arg(long)]
    pub out: PathBuf,
    /// Training records per family; validation and test get max(N/10, 20) each.
    #[arg(long, default_value_t = 1000)]
    pub samples: usize,
    /// Side of the square images in pixels (64 to 2048).
    #[arg(long, default_value_t = 64)]
    pub image_size: u32,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Comma-separated families (vqa, document, chart, ocr, multi_turn, parking); all by default.
    #[arg(long, value_delimiter = ',')]
    pub families: Vec<Family>,
    #[command(flatten)]
    pub output: super::OutputPolicy,
}

#[derive(Args, Debug)]
pub struct TokenizerArgs {
    /// A synthesized (or any) directory holding <family>/<split>.jsonl files.
    #[arg(long)]
    pub data: PathBuf,
    #[arg(long, default_value = "train")]
    pub split: String,
    /// BPE vocabulary size including the 8 LFM2 specials and 256 byte symbols (at least
    /// 264); the 3 image specials come on top.
    #[arg(long, default_value_t = 512)]
    pub vocab_size: usize,
    /// Output directory for tokenizer.json, tokenizer_config.json, chat_template.jinja.
    #[arg(long)]
    pub out: PathBuf,
    #[command(flatten)]
    pub output: super::OutputPolicy,
}

pub fn run(cmd: DataCommand) -> anyhow::Result<()> {
    match cmd {
        DataCommand::Synth(args) => synth(args),
        DataCommand::Tokenizer(args) => tokenizer(args),
        DataCommand::Convert(args) => convert(args),
    }
}

fn convert(args: ConvertArgs) -> anyhow::Result<()> {
    use autoneural_data::sources::write::{ParquetSink, TarSink};
    use autoneural_data::{Layout, OnBadRecord, SourceSpec};
    let layout: Layout = serde_json::from_value(serde_json::Value::String(args.layout.clone())).map_err(|_| {
        anyhow::anyhow!("--layout {:?}: expected auto, messages, conversations, texts or qa", args.layout)
    })?;
    if args.per_file == 0 || args.row_group == 0 {
        bail!("--per-file and --row-group must be at least 1");
    }
    let mut spec = SourceSpec::file(&args.data, OnBadRecord::Fail)?;
    spec.layout = layout;
    let prefix = args.prefix.clone().unwrap_or_else(|| {
        args.data.file_stem().map(|s| s.to_string_lossy().replace(['*', '?'], "")).unwrap_or_else(|| "records".into())
    });
    let inputs = serde_json::json!({
        "data": autoneural_io::output::canonical(&args.data),
        "layout": args.layout,
        "to": format!("{:?}", args.to).to_lowercase(),
        "prefix": prefix,
        "per_file": args.per_file,
        "row_group": args.row_group,
    });
    let claim = args.output.spec("data convert", inputs);
    let mut out = autoneural_io::output::Output::claim(&args.out, claim)?;
    let staging = out.staging()?;
    let ext = match args.to {
        ConvertTo::Parquet => "parquet",
        ConvertTo::Webdataset => "tar",
    };
    enum Sink {
        Parquet(ParquetSink),
        Tar(TarSink),
    }
    let open = |n: usize| -> anyhow::Result<Sink> {
        let path = staging.join(format!("{prefix}-{n:05}.{ext}"));
        Ok(match args.to {
            ConvertTo::Parquet => Sink::Parquet(ParquetSink::create(&path, args.row_group)?),
            ConvertTo::Webdataset => Sink::Tar(TarSink::create(&path)?),
        })
    };
    let finish = |sink: Sink| -> anyhow::Result<usize> {
        Ok(match sink {
            Sink::Parquet(s) => s.finish()?,
            Sink::Tar(s) => s.finish()?,
        })
    };
    let start = std::time::Instant::now();
    let mut stream = spec.open()?;
    let (mut total, mut files, mut sink) = (0usize, 1usize, open(0)?);
    while let Some(record) = stream.next_record() {
        let record = record?;
        if total > 0 && total % args.per_file == 0 {
            finish(std::mem::replace(&mut sink, open(files)?))?;
            files += 1;
        }
        match &mut sink {
            Sink::Parquet(s) => s.push(record)?,
            Sink::Tar(s) => s.push(&format!("{total:09}"), &record)?,
        }
        total += 1;
    }
    finish(sink)?;
    if total == 0 {
        bail!("{}: no records to convert", args.data.display());
    }
    out.commit()?;
    println!(
        "{total} records -> {files} {ext} file(s) in {} ({:.1} s)",
        args.out.display(),
        start.elapsed().as_secs_f64()
    );
    Ok(())
}

fn synth(args: SynthArgs) -> anyhow::Result<()> {
    let families = if args.families.is_empty() { Family::ALL.to_vec() } else { args.families };
    let opts =
        SynthOptions { out: args.out, samples: args.samples, image_size: args.image_size, seed: args.seed, families };
    let start = std::time::Instant::now();
    let summary = synthesize_into(&opts, args.output.force, super::WAY_OUT)?;
    println!("{:<11} {:<5} {:>8} {:>8}  {:<12} {:>6}", "family", "split", "records", "turns", "majority", "share");
    for s in &summary.splits {
        println!(
            "{:<11} {:<5} {:>8} {:>8}  {:<12} {:>6.3}",
            s.family.name(),
            s.split.name(),
            s.records,
            s.turns,
            s.majority_answer,
            s.majority_share
        );
    }
    println!("manifest: {} ({:.1} s)", summary.manifest.display(), start.elapsed().as_secs_f64());
    Ok(())
}

/// `dir/<family>/<split>.jsonl` for every subdirectory that has one, sorted by name.
fn split_files(dir: &Path, split: &str) -> anyhow::Result<Vec<PathBuf>> {
    let entries = std::fs::read_dir(dir).with_context(|| format!("reading {}", dir.display()))?;
    let mut files = Vec::new();
    for entry in entries {
        let path = entry.with_context(|| format!("reading {}", dir.display()))?.path().join(format!("{split}.jsonl"));
        if path.is_file() {
            files.push(path);
        }
    }
    files.sort();
    Ok(files)
}

fn tokenizer(args: TokenizerArgs) -> anyhow::Result<()> {
    let files = split_files(&args.data, &args.split)?;
    if files.is_empty() {
        bail!("{}: no <family>/{}.jsonl files", args.data.display(), args.split);
    }
    let inputs = serde_json::json!({
        "data": autoneural_io::output::canonical(&args.data),
        "split": args.split,
        "vocab_size": args.vocab_size,
    });
    let spec = args.output.spec("data tokenizer", inputs);
    let mut out = autoneural_io::output::Output::claim(&args.out, spec)?;
    let sources = files
        .iter()
        .map(|f| autoneural_data::SourceSpec::file(f, autoneural_data::OnBadRecord::Fail))
        .collect::<Result<Vec<_>, _>>()?;
    let mut summary = train_tokenizer(&sources, args.vocab_size, &out.staging()?)?;
    out.commit()?;
    summary.out_dir = args.out.clone();
    println!("trained on {} records from {} files", summary.records, files.len());
    println!("vocabulary: {} tokens (<image> = {})", summary.vocab_size, summary.image_token_id);
    let specials: Vec<String> = summary.special_ids.iter().map(|(t, id)| format!("{t}={id}")).collect();
    println!("specials: {}", specials.join(" "));
    println!("written: {}", summary.out_dir.display());
    Ok(())
}

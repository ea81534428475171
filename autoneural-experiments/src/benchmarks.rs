//! A checkpoint scored on benchmarks, at one or several precisions: what `autoneural eval
//! --benchmark` and an experiment's `[eval] benchmarks` share.
//!
//! A precision is the checkpoint as it is (`fp32`, or its own `quantization.json`), or a
//! policy applied here: calibrated post-training quantization when calibration data is
//! given (as `autoneural quantize` does it, op inputs fake-quantized at their ranges), else
//! weights only (op inputs stay float). The predictions of each precision go to their own
//! file, so a killed run resumes each where it stopped.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use autoneural_benchmarks::answer::ModelAnswerer;
use autoneural_benchmarks::{Benchmark, Loaded, PromptStyle, Scores};
use autoneural_data::SourceSpec;
use autoneural_model::checkpoint::load_vlm;
use autoneural_model::quant::PrecisionPolicy;
use autoneural_model::quant::runtime::QuantizedRuntime;
use autoneural_model::tokenizer::TextTokenizer;
use autoneural_model::vlm::VisionLanguageModel;
use autoneural_quant::ptq::{batcher_for, calibration_records, post_training_quantize};
use burn::tensor::Device;
use serde::{Deserialize, Serialize};

/// One benchmark of an experiment's `[eval] benchmarks`:
/// `{ name = "OCRBench", data = "benchmarks/OCRBench.tsv" }`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BenchmarkConfig {
    /// A benchmark's VLMEvalKit name or alias (`ai2d`, `MMStar`, `mcq`, `vqa`, ...).
    pub name: String,
    /// Its file: a VLMEvalKit TSV, an lmms-eval Parquet, or a conversations file (JSONL,
    /// Parquet of conversations, WebDataset) scored as `vqa`.
    pub data: PathBuf,
    /// `vlmevalkit`, `lmms-eval` or `question` (default: `question` for a conversations
    /// file, `vlmevalkit` otherwise).
    #[serde(default)]
    pub prompt_style: Option<PromptStyle>,
    /// The first `limit` items (0: all).
    #[serde(default)]
    pub limit: usize,
    /// Prompts decoded together.
    #[serde(default = "default_batch")]
    pub batch: usize,
}

fn default_batch() -> usize {
    8
}

impl BenchmarkConfig {
    pub fn benchmark(&self) -> Result<&'static Benchmark> {
        Benchmark::named(&self.name).map_err(anyhow::Error::msg)
    }

    pub fn style(&self) -> PromptStyle {
        self.prompt_style.unwrap_or_else(|| default_style(&self.data))
    }
}

/// The prompt style of a file when none is given: a conversations file is asked its own
/// questions (the model was trained on those, not on a toolkit's instructions); a
/// benchmark file as VLMEvalKit asks it.
pub fn default_style(path: &Path) -> PromptStyle {
    if is_records(path) { PromptStyle::Question } else { PromptStyle::Vlmevalkit }
}

/// Whether `path` holds conversations (scored as `vqa`) rather than a benchmark's table.
fn is_records(path: &Path) -> bool {
    use autoneural_data::Format;
    matches!(Format::of(path), Some(Format::Jsonl | Format::Webdataset))
}

/// The items of `bench` in `path`, the first `limit` of them (0: all).
pub fn load_items(bench: &Benchmark, path: &Path, limit: usize) -> Result<Loaded> {
    let mut loaded = if is_records(path) {
        autoneural_benchmarks::load_records(path)?
    } else {
        autoneural_benchmarks::load(bench, path)?
    };
    if loaded.items.is_empty() {
        bail!("{}: no items", path.display());
    }
    if limit > 0 {
        loaded.items.truncate(limit);
    }
    Ok(loaded)
}

/// The model of checkpoint `dir` at `precision` (`None`: as it is, float or as its own
/// `quantization.json` says; a preset or policy file: quantized here, calibrated on `calib`
/// when given, else weights only), with how it runs. A checkpoint that is quantized already
/// runs only as it is.
pub fn model_at(
    dir: &Path,
    precision: Option<&str>,
    calib: &[SourceSpec],
    samples: usize,
    device: &Device,
) -> Result<(VisionLanguageModel, QuantizedRuntime)> {
    let model = load_vlm(dir, device)?;
    let Some(precision) = precision else {
        return Ok(QuantizedRuntime::for_checkpoint(model, dir, None)?);
    };
    let policy = PrecisionPolicy::load(precision)?;
    if calib.is_empty() || policy.name == "fp32" {
        return Ok(QuantizedRuntime::for_checkpoint(model, dir, Some(precision))?);
    }
    if autoneural_model::quant::saved::QuantizationFile::read(dir)?.is_some() {
        bail!(
            "{} is quantized already: score it as it is (no --precision), or quantize the float checkpoint",
            dir.display()
        );
    }
    let records = calibration_records(calib, samples)?;
    let batcher = batcher_for(&model, dir)?;
    let (model, file, _) = post_training_quantize(model, &batcher, &records, &policy)
        .with_context(|| format!("calibrating {precision}"))?;
    let runtime = QuantizedRuntime::from_file(&model, &file)?;
    Ok((model, runtime))
}

/// What one benchmark run needs besides the model.
pub struct BenchmarkRun<'a> {
    pub bench: &'static Benchmark,
    pub items: &'a Loaded,
    pub style: PromptStyle,
    /// The predictions file (created, or resumed when it is an earlier one of these items).
    pub predictions: &'a Path,
    pub batch: usize,
    pub max_new_tokens: usize,
    /// A progress bar on stderr (hidden when it is not a terminal).
    pub progress: bool,
}

/// Scores `model` (run as `runtime` says) on `run`'s items, answering the ones its
/// predictions file does not hold yet.
pub fn score_model(
    model: &VisionLanguageModel,
    runtime: &QuantizedRuntime,
    tokenizer: &TextTokenizer,
    run: &BenchmarkRun,
) -> Result<Scores> {
    let answerer = ModelAnswerer { model, tokenizer, max_new_tokens: run.max_new_tokens };
    let bar = run.progress.then(|| {
        let bar = indicatif::ProgressBar::new(run.items.items.len() as u64);
        bar.set_style(
            indicatif::ProgressStyle::with_template("{prefix} [{bar:30}] {pos}/{len} questions  {per_sec}  eta {eta}")
                .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
                .progress_chars("=> "),
        );
        bar.set_prefix(run.bench.name);
        bar
    });
    let scores = runtime.run(|| {
        autoneural_benchmarks::run(
            run.bench,
            run.items.items.clone(),
            run.style,
            run.predictions,
            run.batch,
            |prompts| answerer.answer(prompts),
            |done, _| {
                if let Some(b) = &bar {
                    b.set_position(done as u64);
                }
            },
        )
    });
    if let Some(b) = bar {
        b.finish_and_clear();
    }
    scores.with_context(|| format!("{} on {}", run.bench.name, run.predictions.display()))
}

/// `base` with `.{precision}` before its extension: `m_OCRBench.w4a16.tsv`.
pub fn precision_path(base: &Path, precision: &str) -> PathBuf {
    let stem = base.file_stem().and_then(|s| s.to_str()).unwrap_or("predictions");
    let ext = base.extension().and_then(|s| s.to_str()).unwrap_or("tsv");
    base.with_file_name(format!("{stem}.{}.{ext}", precision_label(precision)))
}

/// A precision as a file-name part: a preset's name, a policy file's stem.
pub fn precision_label(precision: &str) -> String {
    let p = Path::new(precision);
    if p.extension().is_some_and(|e| e == "toml") {
        p.file_stem().and_then(|s| s.to_str()).unwrap_or(precision).to_string()
    } else {
        precision.to_string()
    }
}

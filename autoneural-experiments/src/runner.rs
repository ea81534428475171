//! `autoneural run EXPERIMENT.toml`: synthetic data (when missing), a tokenizer (when none is
//! given), the training stages, evaluation on the held-out split, and a run directory with
//! the resolved config, metrics, the final checkpoint and a markdown report.
//!
//! ```text
//! runs/<name>/
//!   experiment.json       the experiment as resolved (absolute paths, defaults filled in)
//!   tokenizer/            trained BPE tokenizer (unless the experiment names one)
//!   metrics.jsonl         one line per step and per validation
//!   checkpoints/          step-NNNNNN/ (+ `latest`), for --resume
//!   stages.json           one report per finished stage
//!   final/                the trained model: `autoneural generate --model runs/<name>/final`
//!                         (quantized, with quantization.json, when the last stage is QAT)
//!   eval.json, eval.md    per-task accuracy with the majority-answer baseline
//!   quantization_comparison.json   a QAT run: float and PTQ before QAT, QAT after
//!   before_qat/           a QAT run: the float model before the QAT stage
//!   report.md             all of the above in one page
//! ```

use std::path::{Path, PathBuf};

use crate::experiment::Experiment;
use crate::sweep::Expansion;
use anyhow::{Context, Result, bail};
use autoneural_data::sources::config::families_in;
use autoneural_data::synth::{Family, SynthOptions, differences, manifest_path, synthesize_into, up_to_date};
use autoneural_data::tokenizer_train::train_tokenizer;
use autoneural_data::{Catalog, SourceSpec, Split};
use autoneural_io::output::{Output, Spec};
use autoneural_model::device::parse_devices;
use autoneural_model::quant::apply::quantize_weights;
use autoneural_model::quant::qat::Qat;
use autoneural_model::quant::runtime::QuantizedRuntime;
use autoneural_model::tokenizer::TextTokenizer;
use autoneural_model::vlm::VisionLanguageModel;
use autoneural_train::train::{
    Batcher, MetricsLog, StageReport, StageRun, TrainerState, build_model, latest_checkpoint, load_checkpoint,
    run_stage, save_model_dir, validate,
};
use burn::module::Module;
use burn::tensor::Device;

use autoneural_eval::evaluate::{EvalOptions, EvalReport, evaluate};
use autoneural_quant::compare::QuantComparison;
use autoneural_quant::ptq::quantization_file;

/// A QAT run's float model before its QAT stage (under the run directory).
pub const BEFORE_QAT: &str = "before_qat";

#[derive(Debug, Clone, Default)]
pub struct RunOptions {
    /// Continue from the run's latest checkpoint.
    pub resume: bool,
    /// Overrides the experiment's `device`.
    pub device: Option<String>,
    /// Stop after this many optimizer steps in total (for tests of interruption).
    pub stop_after_steps: Option<usize>,
    /// Print progress to stderr.
    pub quiet: bool,
    /// burn-train's dashboard while training when stdout and stderr are a terminal
    /// (`q` stops with a checkpoint); otherwise a progress bar or plain lines.
    pub dashboard: bool,
    /// `--set key=value` overrides of the experiment file.
    pub overrides: Vec<(String, toml::Value)>,
}

/// What a finished run produced.
pub struct RunOutcome {
    pub run_dir: PathBuf,
    pub final_dir: PathBuf,
    pub stages: Vec<StageReport>,
    pub eval: Option<EvalReport>,
    /// `[eval] benchmarks`, in the file's order.
    pub benchmarks: Vec<autoneural_benchmarks::Scores>,
}

/// How a run's `data.dir` is refused when it is not a synthetic set the run may write.
const DATA_WAY_OUT: &str = "point data.dir elsewhere, move this directory away to regenerate it here, or drop \
                            [data.synth] to train on the files it holds";

/// Generates the synthetic set when the experiment asks for one and it is not there yet.
/// `data.dir` is written only when it is new, empty, or an earlier synthesis of the same
/// options (`autoneural_io::output`): a user's own dataset there is refused, never
/// overwritten.
pub fn ensure_data(exp: &Experiment, quiet: bool) -> Result<()> {
    let (Some(dir), Some(synth)) = (&exp.data.dir, &exp.data.synth) else {
        if let Some(dir) = &exp.data.dir
            && families_in(dir).is_empty()
            && exp.data.sources.is_empty()
        {
            bail!("data.dir {}: no <family>/train.jsonl files and no [data.synth] to generate them", dir.display());
        }
        return Ok(());
    };
    let families = if synth.families.is_empty() {
        Family::ALL.to_vec()
    } else {
        synth
            .families
            .iter()
            .map(|name| name.parse::<Family>().map_err(|e| anyhow::anyhow!("data.synth.families: {e}")))
            .collect::<Result<_>>()?
    };
    let opts = SynthOptions {
        out: dir.clone(),
        samples: synth.samples,
        image_size: synth.image_size,
        seed: synth.seed,
        families,
    };
    if up_to_date(&opts)? {
        return Ok(());
    }
    if autoneural_io::output::marker(dir).is_none() && manifest_path(dir).is_file() {
        // A set written before ownership markers, from other options: training on it would
        // be silent, rendering over it would lose it.
        let differs = differences(&opts)?;
        bail!(
            "data.dir {} holds a synthetic set other than [data.synth] asks for: {}; {DATA_WAY_OUT}",
            dir.display(),
            differs.join(", ")
        );
    }
    if !quiet {
        eprintln!("generating synthetic data in {} ({} samples per family)", dir.display(), synth.samples);
    }
    synthesize_into(&opts, false, DATA_WAY_OUT).with_context(|| "data.dir, with [data.synth]".to_string())?;
    Ok(())
}

/// The command a run directory's marker records.
pub const RUN_COMMAND: &str = "run";

/// Claims `dir` as a run directory (created when missing) and locks it for as long as the
/// result lives: a directory holding anything but a run is refused, and a second process
/// on the same run is turned away.
pub fn claim_run_dir(dir: &Path) -> Result<Output> {
    // A run from before ownership markers: its experiment, or a sweep point's config.
    let legacy = |d: &Path| d.join("experiment.json").is_file() || d.join(crate::sweep::CONFIG).is_file();
    let spec = Spec {
        command: RUN_COMMAND,
        inputs: serde_json::Map::new(),
        force: false,
        way_out: "give the experiment another name or out_dir, or move the directory away",
        legacy: Some(&legacy),
    };
    Ok(Output::claim(dir, spec)?)
}

/// The experiment a run started with (its `experiment.json`).
fn started_experiment(run_dir: &Path) -> Result<Experiment> {
    let path = run_dir.join("experiment.json");
    let text = autoneural_io::read::read_to_string(&path, autoneural_io::read::CONFIG)
        .with_context(|| "the run's experiment, needed to check that --resume continues the same run")?;
    serde_json::from_str(&text).with_context(|| format!("{}: not an experiment this version reads", path.display()))
}

/// The tokenizer directory: the experiment's, or one trained on the training split.
fn ensure_tokenizer(exp: &Experiment, run_dir: &Path, quiet: bool) -> Result<PathBuf> {
    if let Some(dir) = &exp.data.tokenizer {
        return Ok(dir.clone());
    }
    if let Some(dir) = &exp.model.language.checkpoint {
        return Ok(dir.clone());
    }
    if let Some(dir) = &exp.model.checkpoint {
        return Ok(dir.clone());
    }
    let dir = run_dir.join("tokenizer");
    if !dir.join("tokenizer.json").is_file() {
        let catalog = exp.catalog()?;
        let (sources, _) = catalog.split(Split::Train, exp.data.on_bad_record.reading())?;
        if !quiet {
            let names: Vec<&str> = catalog.sources.iter().map(|s| s.name.as_str()).collect();
            eprintln!("training a {}-token BPE tokenizer on {}", exp.data.vocab_size, names.join(", "));
        }
        train_tokenizer(&sources, exp.data.vocab_size, &dir)?;
    }
    Ok(dir)
}

/// Runs an experiment file (without a `[sweep]`; see `crate::sweep` for those) end to end.
pub fn run_experiment(path: &Path, options: &RunOptions) -> Result<RunOutcome> {
    run_single(Expansion::from_file(path, &options.overrides)?, options)
}

/// Runs an expanded experiment file that has no `[sweep]` (its one point).
pub fn run_single(expansion: Expansion, options: &RunOptions) -> Result<RunOutcome> {
    if expansion.is_sweep {
        bail!(
            "{} has a [sweep] of {} runs: run it with `autoneural run` (sweep::run_sweep)",
            expansion.file.display(),
            expansion.points.len()
        );
    }
    let exp = expansion.points.into_iter().next().expect("one point without a sweep").experiment;
    run_resolved(exp, &expansion.file, options)
}

/// Runs one resolved experiment (`path` is its file, for messages) in `<out_dir>/<name>`:
/// the run directory claimed and checked, the data and tokenizer, the starting model, the
/// stages, then the final model, its evaluation and the report.
pub fn run_resolved(mut exp: Experiment, path: &Path, options: &RunOptions) -> Result<RunOutcome> {
    if let Some(d) = &options.device {
        exp.device = d.clone();
    }
    let run_dir = exp.out_dir.join(&exp.name);
    // Held until the run returns: one process per run directory.
    let _owner = claim_run_dir(&run_dir)?;
    let latest = check_resume(&exp, path, &run_dir, options.resume)?;
    autoneural_io::output::write_file(
        &run_dir.join("experiment.json"),
        serde_json::to_string_pretty(&exp)?.as_bytes(),
    )?;
    ensure_data(&exp, options.quiet).with_context(|| path.display().to_string())?;
    let tokenizer_dir = ensure_tokenizer(&exp, &run_dir, options.quiet)?;
    let devices = training_devices(&exp, path)?;
    let (model, resume_state) = starting_model(&exp, path, latest.as_deref(), &tokenizer_dir, &devices[0], options)?;
    if !options.quiet {
        warn_about_moot_keys(&exp, &model);
    }
    let batcher = batcher_for_run(&exp, &model, &tokenizer_dir, &devices[0])?;
    let mut log = MetricsLog::open(&run_dir, resume_state.as_ref().map_or(0, |(s, _)| s.global_step))?;
    log.echo = !options.quiet;
    if options.dashboard {
        log.open_dashboard();
    }
    let catalog = exp.catalog()?;
    let split = Split::parse(&exp.eval.split)
        .ok_or_else(|| anyhow::anyhow!("eval.split = {:?}: expected train, val or test", exp.eval.split))?;
    let (test, not_evaluated) = catalog.split(split, autoneural_data::OnBadRecord::Fail)?;
    // Checked before training: a missing benchmark file found after hours of it is lost time.
    for (i, b) in exp.eval.benchmarks.iter().enumerate() {
        autoneural_io::read::check(&b.data, autoneural_io::read::DATA)
            .with_context(|| format!("eval.benchmarks[{i}].data"))?;
    }
    let run = Run {
        test,
        not_evaluated,
        catalog: &catalog,
        eval_opts: EvalOptions { max_new_tokens: exp.eval.max_new_tokens, max_per_task: exp.eval.max_per_task },
        exp: &exp,
        run_dir: &run_dir,
        tokenizer_dir: &tokenizer_dir,
        batcher: &batcher,
        devices: &devices,
        options,
    };
    if !run.not_evaluated.is_empty() {
        log.say(format!(
            "no {} split for {}: not evaluated (they still train)",
            exp.eval.split,
            run.not_evaluated.join(", ")
        ));
    }
    let mut reports = run.earlier_reports(resume_state.as_ref().map(|(s, _)| s))?;
    let Some((model, global)) = run.train_stages(model, resume_state, &mut reports, &mut log)? else {
        // Stopped on request (`stop_after_steps`, or `q` in the dashboard): the checkpoint
        // is written (and dropping `log` gives the terminal back).
        return Ok(RunOutcome {
            final_dir: run_dir.join("final"),
            run_dir: run_dir.clone(),
            stages: reports,
            eval: None,
            benchmarks: Vec::new(),
        });
    };
    log.close_dashboard();
    run.finish(model, reports, global)
}

/// The latest checkpoint of the run, when `--resume` may continue it: refused when a run
/// with checkpoints is started again without `--resume`, when `--resume` has nothing to
/// continue, or when the experiment changed since the run started.
fn check_resume(exp: &Experiment, path: &Path, run_dir: &Path, resume: bool) -> Result<Option<PathBuf>> {
    let latest = latest_checkpoint(run_dir)?;
    match (&latest, resume) {
        (Some(_), false) => bail!(
            "{} already holds checkpoints of an earlier run: pass --resume to continue it, or remove the \
             directory (or rename the experiment) to start over",
            run_dir.display()
        ),
        (None, true) => bail!(
            "--resume: {} has no checkpoint to continue from (no checkpoints/latest); run without --resume to \
             start it",
            run_dir.display()
        ),
        (Some(_), true) => {
            // Continuing a run under a changed experiment would train a model no file describes.
            let differs = exp.resume_differences(&started_experiment(run_dir)?);
            if !differs.is_empty() {
                bail!(
                    "--resume: {} differs from the experiment {} started with:\n  {}\nRestore those keys to \
                     continue the run, or start a new run (another name or out_dir). Keys that may change on \
                     resume: {}",
                    path.display(),
                    run_dir.display(),
                    differs.join("\n  "),
                    crate::experiment::RESUME_SAFE.join(", ")
                );
            }
        }
        (None, false) => {}
    }
    Ok(latest.filter(|_| resume))
}

/// The experiment's devices, on autodiff; every stage's micro-batch gives each a row.
fn training_devices(exp: &Experiment, path: &Path) -> Result<Vec<Device>> {
    let mut devices: Vec<Device> = parse_devices(&exp.device)?;
    // A run across machines (rank 0 here; the other ranks serve theirs): their devices
    // follow this machine's.
    if let Some(node) = crate::launch::nodes::Node::from_env()? {
        devices.extend(crate::launch::nodes::remote_devices(&node)?);
    }
    let devices: Vec<Device> = devices.into_iter().map(|d| d.autodiff()).collect();
    if let Some(s) = exp.stages.iter().find(|s| s.micro_batch < devices.len()) {
        bail!(
            "{}: stage {:?} has micro_batch {}, fewer rows than the {} devices of device = {:?} (each device \
             takes a shard of every micro-batch)",
            path.display(),
            s.name,
            s.micro_batch,
            devices.len(),
            exp.device
        );
    }
    Ok(devices)
}

/// The model the stages start from: the checkpoint `latest` (with its state and optimizer
/// file) when resuming, else the experiment's initialisation.
fn starting_model(
    exp: &Experiment,
    path: &Path,
    latest: Option<&Path>,
    tokenizer_dir: &Path,
    device: &Device,
    options: &RunOptions,
) -> Result<(VisionLanguageModel, Option<(TrainerState, PathBuf)>)> {
    let Some(dir) = latest else {
        let plain = TextTokenizer::from_dir(tokenizer_dir, &[])?;
        let model = build_model(&exp.model, &plain, exp.seed, device).with_context(|| path.display().to_string())?;
        return Ok((model, None));
    };
    let r = load_checkpoint(dir, device)?;
    let st = &r.state;
    let fits = exp.stages.get(st.stage).is_some_and(|s| s.name == st.stage_name) && st.step <= st.global_step;
    if !fits {
        bail!(
            "{}: the checkpoint is at stage {} ({:?}), step {}, which {} does not have (stages: {})",
            dir.display(),
            st.stage,
            st.stage_name,
            st.step,
            path.display(),
            exp.stages.iter().map(|s| format!("{:?}", s.name)).collect::<Vec<_>>().join(", ")
        );
    }
    if !options.quiet {
        eprintln!("resuming from {} (stage {:?}, step {})", dir.display(), r.state.stage_name, r.state.step);
    }
    Ok((r.model, Some((r.state, r.optimizer_file))))
}

/// Keys of the experiment that do not do what they seem to, said before training starts.
fn warn_about_moot_keys(exp: &Experiment, model: &VisionLanguageModel) {
    let size = model.config.encoder.image_size();
    if let Some(synth) = &exp.data.synth
        && synth.image_size as usize != size
    {
        eprintln!(
            "warning: data.synth.image_size is {} but the encoder reads {size}x{size} ([model] image_size or the \
             preset's): every image is resized to {size} px",
            synth.image_size
        );
    }
    if let Some(dir) = &exp.model.checkpoint {
        let moot = exp.model.shape_keys_set();
        if !moot.is_empty() {
            eprintln!(
                "warning: the model is model.checkpoint {}, with its own config; these keys do not change it: {}",
                dir.display(),
                moot.join(", ")
            );
        }
    }
}

/// The batcher of the run's model and tokenizer.
fn batcher_for_run(
    exp: &Experiment,
    model: &VisionLanguageModel,
    tokenizer_dir: &Path,
    device: &Device,
) -> Result<Batcher> {
    Ok(Batcher {
        pad_id: model.language.config.pad_token_id.unwrap_or(0),
        tokens_per_image: model.config.image_token_count(),
        image_tokens: model.image_tokens(),
        preprocess: model.config.preprocess.clone(),
        tokenizer: TextTokenizer::from_dir(tokenizer_dir, &model.language.config.eos_token_ids)?,
        device: device.clone(),
        max_seq_len: exp.data.max_seq_len.min(model.language.config.max_position_embeddings),
    })
}

/// What the steps of one run share.
struct Run<'a> {
    exp: &'a Experiment,
    run_dir: &'a Path,
    tokenizer_dir: &'a Path,
    batcher: &'a Batcher,
    devices: &'a [Device],
    options: &'a RunOptions,
    /// The sources stages mix.
    catalog: &'a Catalog,
    /// The evaluated split of every source, and the sources that have none.
    test: Vec<SourceSpec>,
    not_evaluated: Vec<String>,
    eval_opts: EvalOptions,
}

impl Run<'_> {
    fn stages_path(&self) -> PathBuf {
        self.run_dir.join("stages.json")
    }

    /// Stage `index`, its steps counted from `global_step_base`.
    fn stage(&self, index: usize, global_step_base: usize) -> StageRun<'_> {
        StageRun {
            run_dir: self.run_dir,
            catalog: self.catalog,
            tokenizer_dir: self.tokenizer_dir,
            batcher: self.batcher,
            devices: self.devices,
            index,
            count: self.exp.stages.len(),
            stage: &self.exp.stages[index],
            on_bad_record: self.exp.data.on_bad_record,
            global_step_base,
            keep: 2,
            stop_after: self.options.stop_after_steps,
        }
    }

    /// The reports of the stages a resumed checkpoint had finished (a later report would
    /// describe training the checkpoint does not hold); none for a fresh run.
    fn earlier_reports(&self, resumed: Option<&TrainerState>) -> Result<Vec<StageReport>> {
        let path = self.stages_path();
        let Some(state) = resumed.filter(|_| path.is_file()) else { return Ok(Vec::new()) };
        let mut reports: Vec<StageReport> =
            serde_json::from_str(&autoneural_io::read::read_to_string(&path, autoneural_io::read::CONFIG)?)
                .with_context(|| format!("{}: unreadable", path.display()))?;
        reports.truncate(state.stage + usize::from(state.stage_done));
        Ok(reports)
    }

    /// Trains every stage not finished yet, from `model` (continuing `resume_state`'s stage),
    /// appending each stage's report; `None` when training stopped on request.
    fn train_stages(
        &self,
        mut model: VisionLanguageModel,
        resume_state: Option<(TrainerState, PathBuf)>,
        reports: &mut Vec<StageReport>,
        log: &mut MetricsLog,
    ) -> Result<Option<(VisionLanguageModel, usize)>> {
        let mut global = 0;
        for (i, stage) in self.exp.stages.iter().enumerate() {
            let mut resume = None;
            if let Some((state, opt)) = &resume_state {
                if i < state.stage || (i == state.stage && state.stage_done) {
                    global = state.global_step.max(global);
                    continue;
                }
                if i == state.stage {
                    resume = Some((state.clone(), opt.clone()));
                    global = state.global_step - state.step;
                }
            }
            let run = self.stage(i, global);
            if let (Some(q), None, false) = (&stage.quantization, &resume, self.test.is_empty()) {
                self.before_qat(&model, &run, q, log)?;
            }
            let (m, report) = run_stage(model, &run, resume, log)?;
            model = m;
            global += report.steps;
            if !report.complete {
                return Ok(None);
            }
            reports.push(report);
            let path = self.stages_path();
            std::fs::write(&path, serde_json::to_string_pretty(&reports)?)
                .with_context(|| format!("writing {}", path.display()))?;
        }
        Ok(Some((model, global)))
    }

    /// Before a QAT stage starts: the model in float and after PTQ at the stage's policy,
    /// for the report's PTQ-against-QAT table, and the float model QAT starts from (what
    /// `quant-report` and `quantize` measure) in `before_qat/`.
    fn before_qat(
        &self,
        model: &VisionLanguageModel,
        run: &StageRun,
        q: &autoneural_train::config::QatConfig,
        log: &mut MetricsLog,
    ) -> Result<()> {
        let policy = q.load_policy().with_context(|| format!("stage {:?}: quantization.policy", run.stage.name))?;
        log.say(format!("evaluating float and PTQ at {} before quantization-aware training", policy.name));
        let (calib, _) = self.catalog.split(Split::Train, autoneural_data::OnBadRecord::Fail)?;
        let valid = model.clone().valid();
        let cmp = QuantComparison::before_qat(&valid, run, &policy, &calib, &self.test, &self.eval_opts)?;
        cmp.write(self.run_dir)?;
        save_model_dir(&valid, self.tokenizer_dir, &self.run_dir.join(BEFORE_QAT))
    }

    /// The trained model as `final/` (quantized, after a QAT stage), its evaluation on the
    /// held-out split, the PTQ-against-QAT comparison, and the run report.
    fn finish(&self, model: VisionLanguageModel, reports: Vec<StageReport>, global: usize) -> Result<RunOutcome> {
        let final_dir = self.run_dir.join("final");
        let (model, runtime) = self.save_final(model.valid(), &reports, &final_dir)?;
        let eval = self.evaluate(&model, &runtime)?;
        let comparison = match (QuantComparison::read(self.run_dir), &eval, &runtime.name) {
            (Some(mut c), Some(e), Some(_)) => {
                c.qat = Some(e.clone());
                let last = self.stage(self.exp.stages.len() - 1, global);
                c.qat_val = runtime.run(|| validate(&model, &last))?;
                c.write(self.run_dir)?;
                Some(c)
            }
            _ => None,
        };
        let benchmarks = self.score_benchmarks(&model, &runtime)?;
        let mut report =
            crate::report::render(self.exp, &model, &reports, eval.as_ref(), comparison.as_ref(), &final_dir);
        if !benchmarks.is_empty() {
            report +=
                "\n## Benchmarks\n\nPredictions in `benchmarks/` (VLMEvalKit's layout); scores in `benchmarks.json`.\n";
            for s in &benchmarks {
                report += "\n";
                report += &s.to_markdown();
            }
        }
        let path = self.run_dir.join("report.md");
        std::fs::write(&path, report).with_context(|| format!("writing {}", path.display()))?;
        Ok(RunOutcome { run_dir: self.run_dir.to_path_buf(), final_dir, stages: reports, eval, benchmarks })
    }

    /// Writes `final/`. After QAT it is the quantized model, as `autoneural quantize` writes
    /// one: QDQ weights and quantization.json (op-input ranges from training); returns the
    /// model and how it runs.
    fn save_final(
        &self,
        model: VisionLanguageModel,
        reports: &[StageReport],
        final_dir: &Path,
    ) -> Result<(VisionLanguageModel, QuantizedRuntime)> {
        let Some(q) = self.exp.stages.last().and_then(|s| s.quantization.as_ref()) else {
            save_model_dir(&model, self.tokenizer_dir, final_dir)?;
            return Ok((model, QuantizedRuntime::default()));
        };
        let policy = q.load_policy()?;
        let qat = Qat::new(&model, policy.clone(), q.range_momentum);
        if let Some(r) = reports.last().and_then(|r| r.qat_ranges.as_ref()) {
            qat.restore_ranges(r)?;
        }
        let activations = qat.activation_encodings()?;
        let (quantized, weights) = quantize_weights(model, &policy)?;
        let file = quantization_file(&quantized, &policy, &weights, &activations);
        save_model_dir(&quantized, self.tokenizer_dir, final_dir)?;
        file.write(final_dir)?;
        let runtime = QuantizedRuntime::from_file(&quantized, &file)?;
        Ok((quantized, runtime))
    }

    /// The final model on `[eval] benchmarks`: predictions in `benchmarks/<name>.tsv`
    /// (resumed when the run is), scores in `benchmarks.json`.
    fn score_benchmarks(
        &self,
        model: &VisionLanguageModel,
        runtime: &QuantizedRuntime,
    ) -> Result<Vec<autoneural_benchmarks::Scores>> {
        let configs = &self.exp.eval.benchmarks;
        if configs.is_empty() || self.exp.stages.is_empty() {
            return Ok(Vec::new());
        }
        let dir = self.run_dir.join("benchmarks");
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        let mut all = Vec::new();
        for c in configs {
            let bench = c.benchmark()?;
            let items = crate::benchmarks::load_items(bench, &c.data, c.limit)?;
            if !self.options.quiet {
                eprintln!("benchmark {} ({} items, {} prompts)", bench.name, items.items.len(), c.style());
            }
            let predictions = dir.join(format!("{}.tsv", bench.name));
            let run = crate::benchmarks::BenchmarkRun {
                bench,
                items: &items,
                style: c.style(),
                predictions: &predictions,
                batch: c.batch,
                max_new_tokens: self.exp.eval.max_new_tokens,
                progress: !self.options.quiet,
            };
            all.push(crate::benchmarks::score_model(model, runtime, &self.batcher.tokenizer, &run)?);
        }
        let path = self.run_dir.join("benchmarks.json");
        std::fs::write(&path, serde_json::to_string_pretty(&all)?)
            .with_context(|| format!("writing {}", path.display()))?;
        Ok(all)
    }

    /// Per-task accuracy on the held-out split (`eval.json`, `eval.md`); none without test
    /// files or stages (an untrained model's answers measure nothing).
    fn evaluate(&self, model: &VisionLanguageModel, runtime: &QuantizedRuntime) -> Result<Option<EvalReport>> {
        if self.test.is_empty() || self.exp.stages.is_empty() {
            return Ok(None);
        }
        if !self.options.quiet {
            eprintln!("evaluating on {} ({} sources)", self.exp.eval.split, self.test.len());
        }
        let mut report = runtime.run(|| evaluate(model, &self.batcher.tokenizer, &self.test, &self.eval_opts))?;
        report.not_evaluated = self.not_evaluated.clone();
        std::fs::write(self.run_dir.join("eval.json"), serde_json::to_string_pretty(&report)?)?;
        std::fs::write(self.run_dir.join("eval.md"), report.markdown())?;
        Ok(Some(report))
    }
}

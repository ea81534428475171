//! Training checkpoints: everything a run needs to continue exactly where it stopped.
//!
//! `<run>/checkpoints/step-000120/` holds the model in the AutoNeural format (`generate`
//! loads it as it is), its tokenizer, the AdamW state (`optimizer.bpk`, Burn's burnpack),
//! `param_ids.json` (the optimizer keys its state by parameter id, so a resumed model gets
//! its old ids back) and `trainer_state.json` (stage, step, records drawn). A checkpoint is
//! written into a temporary directory and renamed into place, then `<run>/checkpoints/latest`
//! is replaced the same way: a crash at any moment leaves the previous checkpoint intact.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use autoneural_model::checkpoint::{load_vlm, save_vlm};
use autoneural_model::vlm::VisionLanguageModel;
use burn::module::{Module, ModuleMapper, ModuleVisitor, Param, ParamId};
use burn::optim::ModuleOptimizer;
use burn::tensor::{Device, Tensor};
use serde::{Deserialize, Serialize};

/// Where training stands.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrainerState {
    /// Index of the stage in the experiment.
    pub stage: usize,
    pub stage_name: String,
    /// Optimizer steps completed in this stage.
    pub step: usize,
    /// Steps completed over all stages.
    pub global_step: usize,
    /// Records the stage's sampler has handed out (the sampler is a deterministic schedule,
    /// so drawing this many again puts it where it was).
    pub records_drawn: usize,
    /// The stage ran to its last step.
    pub stage_done: bool,
    /// A QAT stage's running activation ranges by op (its weight's key).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub qat_ranges: Option<BTreeMap<String, (f32, f32)>>,
    /// Records drawn and then refused under `on_bad_record = "skip"` (bad lines the readers
    /// skip are found again when the draws are replayed; these are not).
    #[serde(default)]
    pub refused: autoneural_data::Skipped,
    /// The sampler's draws and each source's read position after the last step: a resumed
    /// stage opens each source there. (Older checkpoints lack it and replay
    /// `records_drawn`.)
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sampler: Option<autoneural_data::SamplerState>,
}

/// Tokenizer files copied next to the weights, so the checkpoint is self-contained.
pub const TOKENIZER_FILES: &[&str] =
    &["tokenizer.json", "tokenizer_config.json", "chat_template.jinja", "special_tokens_map.json"];

/// A parameter's dotted module path, as `param_ids.json` keys it: without enum variants
/// (as checkpoint keys), and as checkpoints before that wrote it, with them.
#[derive(Default)]
struct ModulePath {
    /// (segment, is an enum variant)
    segments: Vec<(String, bool)>,
}

impl ModulePath {
    fn enter(&mut self, name: &str, container: &str) {
        self.segments.push((name.into(), container.starts_with("Enum:")));
    }
    fn exit(&mut self) {
        self.segments.pop();
    }
    fn key(&self) -> String {
        self.segments.iter().filter(|(_, variant)| !variant).map(|(s, _)| s.as_str()).collect::<Vec<_>>().join(".")
    }
    fn legacy_key(&self) -> String {
        self.segments.iter().map(|(s, _)| s.as_str()).collect::<Vec<_>>().join(".")
    }
}

/// Dotted module path -> parameter id, for every float parameter.
pub fn param_ids<M: Module>(model: &M) -> BTreeMap<String, u64> {
    struct Ids {
        path: ModulePath,
        out: BTreeMap<String, u64>,
    }
    impl ModuleVisitor for Ids {
        fn enter_module(&mut self, name: &str, container: &str) {
            self.path.enter(name, container);
        }
        fn exit_module(&mut self, _: &str, _: &str) {
            self.path.exit();
        }
        fn visit_float<const D: usize>(&mut self, p: &Param<Tensor<D>>) {
            self.out.insert(self.path.key(), p.id.val());
        }
    }
    let mut v = Ids { path: ModulePath::default(), out: BTreeMap::new() };
    model.visit(&mut v);
    v.out
}

/// Gives every parameter the id `ids` records for its path (values untouched).
pub fn restore_param_ids<M: Module>(model: M, ids: &BTreeMap<String, u64>) -> Result<M> {
    struct Restore<'a> {
        path: ModulePath,
        ids: &'a BTreeMap<String, u64>,
        missing: Vec<String>,
    }
    impl ModuleMapper for Restore<'_> {
        fn enter_module(&mut self, name: &str, container: &str) {
            self.path.enter(name, container);
        }
        fn exit_module(&mut self, _: &str, _: &str) {
            self.path.exit();
        }
        fn map_float<const D: usize>(&mut self, p: Param<Tensor<D>>) -> Param<Tensor<D>> {
            let path = self.path.key();
            match self.ids.get(&path).or_else(|| self.ids.get(&self.path.legacy_key())) {
                Some(&id) => {
                    let value = p.val();
                    p.transform_for_load(value, ParamId::from(id))
                }
                None => {
                    self.missing.push(path);
                    p
                }
            }
        }
    }
    let mut r = Restore { path: ModulePath::default(), ids, missing: Vec::new() };
    let model = model.map(&mut r);
    if !r.missing.is_empty() {
        bail!("param_ids.json has no id for {} parameters (first: {})", r.missing.len(), r.missing[0]);
    }
    Ok(model)
}

fn write_json<T: Serialize>(path: &Path, value: &T) -> Result<()> {
    let text = serde_json::to_string_pretty(value).expect("serialisable");
    std::fs::write(path, text).with_context(|| format!("writing {}", path.display()))
}

fn read_json<T: for<'de> Deserialize<'de>>(path: &Path) -> Result<T> {
    let text = autoneural_io::read::read_to_string(path, autoneural_io::read::CONFIG)?;
    serde_json::from_str(&text).with_context(|| format!("{}: not a valid checkpoint file", path.display()))
}

/// Writes `name` in `dir` via a temporary file and a rename.
fn replace_file(dir: &Path, name: &str, contents: &str) -> Result<()> {
    let tmp = dir.join(format!(".{name}.tmp"));
    std::fs::write(&tmp, contents).with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, dir.join(name)).with_context(|| format!("renaming {}", tmp.display()))
}

/// Copies the tokenizer files that exist in `from` into `to`.
pub fn copy_tokenizer(from: &Path, to: &Path) -> Result<()> {
    for f in TOKENIZER_FILES {
        let src = from.join(f);
        if src.is_file() {
            std::fs::copy(&src, to.join(f)).with_context(|| format!("copying {}", src.display()))?;
        }
    }
    Ok(())
}

/// Writes a model (AutoNeural format) with its tokenizer into `dir`, atomically: into a
/// sibling temporary directory first, renamed over `dir` at the end.
pub fn save_model_dir(model: &VisionLanguageModel, tokenizer_dir: &Path, dir: &Path) -> Result<()> {
    save_dir_atomically(dir, |tmp| write_model(model, tokenizer_dir, tmp))
}

/// The weights, config and tokenizer: what `generate` needs.
fn write_model(model: &VisionLanguageModel, tokenizer_dir: &Path, dir: &Path) -> Result<()> {
    save_vlm(model, dir)?;
    copy_tokenizer(tokenizer_dir, dir)
}

fn save_dir_atomically(dir: &Path, fill: impl FnOnce(&Path) -> Result<()>) -> Result<()> {
    let parent = dir.parent().context("checkpoint directory has no parent")?;
    std::fs::create_dir_all(parent).with_context(|| format!("creating {}", parent.display()))?;
    let name = dir.file_name().context("checkpoint directory has no name")?.to_string_lossy();
    let tmp = parent.join(format!(".{name}.tmp"));
    if tmp.exists() {
        std::fs::remove_dir_all(&tmp).with_context(|| format!("removing {}", tmp.display()))?;
    }
    std::fs::create_dir_all(&tmp).with_context(|| format!("creating {}", tmp.display()))?;
    fill(&tmp)?;
    if dir.exists() {
        std::fs::remove_dir_all(dir).with_context(|| format!("replacing {}", dir.display()))?;
    }
    std::fs::rename(&tmp, dir).with_context(|| format!("renaming {} to {}", tmp.display(), dir.display()))
}

/// Saves a training checkpoint under `<run>/checkpoints/` and points `latest` at it;
/// keeps the newest `keep` checkpoints.
pub fn save_checkpoint(
    run_dir: &Path,
    model: &VisionLanguageModel,
    optim: &ModuleOptimizer,
    state: &TrainerState,
    tokenizer_dir: &Path,
    keep: usize,
) -> Result<PathBuf> {
    let root = run_dir.join("checkpoints");
    let name = format!("step-{:06}", state.global_step);
    let dir = root.join(&name);
    save_dir_atomically(&dir, |tmp| {
        write_model(model, tokenizer_dir, tmp)?;
        optim.save(tmp.join("optimizer.bpk")).map_err(|e| anyhow::anyhow!("saving the optimizer state: {e:?}"))?;
        write_json(&tmp.join("param_ids.json"), &param_ids(model))?;
        write_json(&tmp.join("trainer_state.json"), state)?;
        // Last: the digests of everything above, checked when the checkpoint is loaded.
        Ok(autoneural_io::checksum::write(tmp)?)
    })?;
    replace_file(&root, "latest", &name)?;
    prune(&root, keep)?;
    Ok(dir)
}

fn prune(root: &Path, keep: usize) -> Result<()> {
    let mut steps: Vec<PathBuf> = std::fs::read_dir(root)
        .with_context(|| format!("listing {}", root.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_dir() && p.file_name().is_some_and(|n| n.to_string_lossy().starts_with("step-")))
        .collect();
    steps.sort();
    let n = steps.len().saturating_sub(keep.max(1));
    for old in &steps[..n] {
        std::fs::remove_dir_all(old).with_context(|| format!("removing {}", old.display()))?;
    }
    Ok(())
}

/// The checkpoint `latest` points at, if the run has one.
pub fn latest_checkpoint(run_dir: &Path) -> Result<Option<PathBuf>> {
    let root = run_dir.join("checkpoints");
    let pointer = root.join("latest");
    if !pointer.is_file() {
        return Ok(None);
    }
    let name = autoneural_io::read::read_to_string(&pointer, autoneural_io::read::CONFIG)?;
    let name = name.trim();
    // `latest` names a checkpoint beside it, never a path elsewhere.
    if !name.starts_with("step-") || name.contains(['/', '\\']) {
        bail!("{}: names {name:?}, which is not a checkpoint of this run", pointer.display());
    }
    let dir = root.join(name);
    if !dir.join("trainer_state.json").is_file() {
        bail!("{} points at {}, which is not a complete checkpoint", pointer.display(), dir.display());
    }
    Ok(Some(dir))
}

/// A checkpoint loaded back: model (with its old parameter ids), optimizer file and state.
pub struct Restored {
    pub model: VisionLanguageModel,
    pub state: TrainerState,
    pub optimizer_file: PathBuf,
}

/// The stage and step a checkpoint directory was written at.
pub fn trainer_state(dir: &Path) -> Result<TrainerState> {
    read_json(&dir.join("trainer_state.json"))
}

/// Loads a checkpoint after checking every file against its `checksums.json`: a file
/// damaged on disk or in a copy is named as corrupt here, not found later as a NaN.
pub fn load_checkpoint(dir: &Path, device: &Device) -> Result<Restored> {
    autoneural_io::checksum::verify(dir).with_context(|| format!("checking the checkpoint {}", dir.display()))?;
    let model = load_vlm(dir, device).with_context(|| format!("loading the model of {}", dir.display()))?;
    let ids: BTreeMap<String, u64> = read_json(&dir.join("param_ids.json"))?;
    let model = restore_param_ids(model, &ids)?;
    let state = trainer_state(dir)?;
    Ok(Restored { model, state, optimizer_file: dir.join("optimizer.bpk") })
}

//! Sweeps: an experiment file with a `[sweep]` table stands for one experiment per point of
//! its axes, each run in `<out_dir>/<experiment>/<run-id>/`.
//!
//! ```toml
//! [sweep]
//! mode = "product"                                   # default; or "zip" (i-th values together)
//! [sweep.axes]
//! "model.language.attention_layers" = [0, 2, 6]      # any key of the experiment, dotted
//! "stage.qat.quantization.policy" = ["w8a16", "w4a16"] # a stage by name (or by index)
//! seed = [0, 1]
//! ```
//!
//! `extends = "quickstart.toml"` starts from another experiment file (same directory
//! recommended: relative paths resolve against the file that is run): its tables merge with
//! this file's key by key, other values (the `stage` list too) are replaced.
//!
//! An axis replaces the value at its key (a table value replaces the whole table). Overrides
//! (`--set key=value`, TOML values) are applied to the file first, so they may change the
//! base configuration or the axes themselves (`--set sweep.axes.seed=[0]`).

use std::path::{Path, PathBuf};

use toml::{Table, Value};

use crate::experiment::{ConfigError, Experiment};

/// An experiment file's text: a regular file of at most 64 MiB.
fn read_config_text(path: &Path) -> Result<String, ConfigError> {
    autoneural_io::read::read_to_string(path, autoneural_io::read::CONFIG).map_err(|e| match e {
        autoneural_io::Error::Io { path, source } => ConfigError::Io { path, source },
        other => ConfigError::File(other),
    })
}

/// How the axes combine.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SweepMode {
    /// Every combination (cartesian product), the first axis slowest.
    Product,
    /// The i-th value of every axis together; all axes have the same length.
    Zip,
}

/// One run of an experiment file: its id, the axis values that make it, and the resolved
/// configuration.
#[derive(Debug, Clone)]
pub struct SweepPoint {
    /// `attention_layers=2,seed=0`; the experiment's name for a file without `[sweep]`.
    pub id: String,
    /// (key, value) per axis, in the file's order.
    pub values: Vec<(String, Value)>,
    /// The point's configuration as TOML (no `[sweep]`; paths as written).
    pub table: Table,
    /// The same, checked, with paths resolved; `name` is `id` and `out_dir` is
    /// `<out_dir>/<experiment>` for a sweep, so the runner's `<out_dir>/<name>` is the run's
    /// directory.
    pub experiment: Experiment,
}

/// An experiment file expanded.
#[derive(Debug, Clone)]
pub struct Expansion {
    pub file: PathBuf,
    /// The experiment's name (the file's `name`).
    pub name: String,
    /// `<out_dir>/<name>`: holds every run of a sweep (or is the run, without one).
    pub dir: PathBuf,
    /// Whether the file has a `[sweep]` table.
    pub is_sweep: bool,
    pub mode: SweepMode,
    pub axes: Vec<String>,
    pub points: Vec<SweepPoint>,
}

fn invalid(path: &Path, message: impl Into<String>) -> ConfigError {
    ConfigError::Invalid { path: path.into(), message: message.into() }
}

/// Every `--set KEY=VALUE` of a command line, parsed as [`parse_override`] does.
pub fn parse_overrides(set: &[String]) -> Result<Vec<(String, Value)>, String> {
    set.iter().map(|s| parse_override(s)).collect()
}

/// Parses `key=value` (the value as TOML; a bare word that is not TOML is a string).
pub fn parse_override(text: &str) -> Result<(String, Value), String> {
    let (key, value) =
        text.split_once('=').ok_or_else(|| format!("--set {text:?}: expected key=value, e.g. seed=1"))?;
    let key = key.trim();
    if key.is_empty() {
        return Err(format!("--set {text:?}: empty key"));
    }
    let value = value.trim();
    let parsed = format!("v = {value}")
        .parse::<Table>()
        .ok()
        .and_then(|mut t| t.remove("v"))
        .unwrap_or_else(|| Value::String(value.to_string()));
    Ok((key.to_string(), parsed))
}

/// Splits a dotted key; `sweep.axes.<rest>` keeps `<rest>` whole (an axis names a key).
fn segments(key: &str) -> Vec<String> {
    if let Some(rest) = key.strip_prefix("sweep.axes.") {
        return vec!["sweep".into(), "axes".into(), rest.into()];
    }
    key.split('.').map(str::to_string).collect()
}

/// Sets `key` (dotted) in `table`, creating tables on the way. Inside the `stage` array a
/// segment is a stage's `name` or its index.
pub fn set_key(table: &mut Table, key: &str, value: Value) -> Result<(), String> {
    let segs = segments(key);
    set_in(table, &segs, value).map_err(|e| format!("{key}: {e}"))
}

fn set_in(table: &mut Table, segs: &[String], value: Value) -> Result<(), String> {
    let (head, rest) = segs.split_first().ok_or("empty key")?;
    if rest.is_empty() {
        table.insert(head.clone(), value);
        return Ok(());
    }
    let slot = table.entry(head.clone()).or_insert_with(|| Value::Table(Table::new()));
    match slot {
        Value::Table(t) => set_in(t, rest, value),
        Value::Array(items) => {
            let (sel, rest2) = rest.split_first().expect("rest is not empty");
            let index = match sel.parse::<usize>() {
                Ok(i) if i < items.len() => i,
                Ok(i) => return Err(format!("{head} has {} entries, no index {i}", items.len())),
                Err(_) => items
                    .iter()
                    .position(|it| it.get("name").and_then(Value::as_str) == Some(sel.as_str()))
                    .ok_or_else(|| {
                        let names: Vec<&str> =
                            items.iter().filter_map(|it| it.get("name").and_then(Value::as_str)).collect();
                        format!("no {head} named {sel:?} (names: {})", names.join(", "))
                    })?,
            };
            match &mut items[index] {
                Value::Table(t) if !rest2.is_empty() => set_in(t, rest2, value),
                item if rest2.is_empty() => {
                    *item = value;
                    Ok(())
                }
                _ => Err(format!("{head}.{sel} is not a table")),
            }
        }
        other => Err(format!("{head} is a {}, not a table", other.type_str())),
    }
}

/// `[sweep.axes]` as (key, values): quoted dotted keys as written, nested tables flattened.
fn flatten_axes(prefix: &str, table: &Table, out: &mut Vec<(String, Vec<Value>)>) -> Result<(), String> {
    for (k, v) in table {
        let key = if prefix.is_empty() { k.clone() } else { format!("{prefix}.{k}") };
        match v {
            Value::Array(values) if values.is_empty() => return Err(format!("sweep.axes.{key}: empty list")),
            Value::Array(values) => out.push((key, values.clone())),
            Value::Table(t) => flatten_axes(&key, t, out)?,
            other => {
                return Err(format!("sweep.axes.{key}: expected a list of values, found a {}", other.type_str()));
            }
        }
    }
    Ok(())
}

/// A value as it appears in a run id: a path's file stem, a table's `preset`/`name`, else
/// its text; characters outside `[A-Za-z0-9._+-]` become `_`.
fn label(value: &Value, index: usize) -> String {
    let text = match value {
        Value::String(s) if s.contains('/') || s.ends_with(".toml") => {
            Path::new(s).file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_else(|| s.clone())
        }
        Value::String(s) => s.clone(),
        Value::Table(t) => t
            .get("preset")
            .or_else(|| t.get("name"))
            .and_then(Value::as_str)
            .map(str::to_string)
            .unwrap_or_else(|| format!("#{index}")),
        Value::Array(items) if items.iter().all(|v| !matches!(v, Value::Array(_) | Value::Table(_))) => {
            if items.is_empty() {
                "none".into()
            } else {
                items
                    .iter()
                    .map(|v| v.as_str().map(str::to_string).unwrap_or_else(|| v.to_string()))
                    .collect::<Vec<_>>()
                    .join("-")
            }
        }
        Value::Array(_) => format!("#{index}"),
        other => other.to_string(),
    };
    id_safe(&text)
}

/// `text` with characters outside `[A-Za-z0-9._+-]` replaced by `_`, for run ids.
fn id_safe(text: &str) -> String {
    text.chars().map(|c| if c.is_ascii_alphanumeric() || "._+-".contains(c) { c } else { '_' }).collect()
}

/// The labels of one axis's values. Tables that share a `preset`/`name` label (two
/// configurations of one encoder) are told apart by the keys whose values differ among them:
/// `mobilenetv5_tiny+msfa_output_resolution-8`.
fn axis_labels(values: &[Value]) -> Vec<String> {
    let base: Vec<String> = values.iter().enumerate().map(|(i, v)| label(v, i)).collect();
    let mut out = base.clone();
    for (i, v) in values.iter().enumerate() {
        let Value::Table(t) = v else { continue };
        let same: Vec<&Table> =
            (0..values.len()).filter(|&j| j != i && base[j] == base[i]).filter_map(|j| values[j].as_table()).collect();
        if same.is_empty() {
            continue;
        }
        let mut keys: Vec<&String> = t.keys().chain(same.iter().flat_map(|o| o.keys())).collect();
        keys.sort();
        keys.dedup();
        for k in keys {
            if same.iter().any(|o| o.get(k.as_str()) != t.get(k.as_str())) {
                let value = t.get(k.as_str()).map_or_else(|| "none".to_string(), |x| label(x, i));
                out[i].push_str(&format!("+{k}-{value}"));
            }
        }
    }
    out.iter().map(|l| id_safe(l)).collect()
}

/// Short names for the axes: the last segment of each key, with more segments where two
/// axes would share one.
fn short_names(keys: &[String]) -> Vec<String> {
    let parts: Vec<Vec<&str>> = keys.iter().map(|k| k.split('.').collect()).collect();
    let tail = |p: &Vec<&str>, n: usize| p[p.len().saturating_sub(n)..].join(".");
    let mut n = vec![1; keys.len()];
    loop {
        let names: Vec<String> = parts.iter().zip(&n).map(|(p, &n)| tail(p, n)).collect();
        let mut changed = false;
        for i in 0..names.len() {
            if names.iter().filter(|m| **m == names[i]).count() > 1 && n[i] < parts[i].len() {
                n[i] += 1;
                changed = true;
            }
        }
        if !changed {
            return names;
        }
    }
}

impl Expansion {
    /// Reads `path`, applies `overrides` and expands its `[sweep]` (one point without one).
    pub fn from_file(path: &Path, overrides: &[(String, Value)]) -> Result<Self, ConfigError> {
        let text = read_config_text(path)?;
        let (mut table, extended) = read_with_base(path, &text, 0)?;
        for (k, v) in overrides {
            set_key(&mut table, k, v.clone()).map_err(|e| invalid(path, format!("--set {e}")))?;
        }
        let sweep = match table.remove("sweep") {
            None => None,
            Some(Value::Table(t)) => Some(t),
            Some(other) => return Err(invalid(path, format!("sweep: expected a table, found a {}", other.type_str()))),
        };
        let dir = path.parent().unwrap_or(Path::new("."));
        let (mode, axes) = match &sweep {
            None => (SweepMode::Product, Vec::new()),
            Some(s) => parse_sweep(s).map_err(|e| invalid(path, e))?,
        };
        let combos = combinations(mode, &axes).map_err(|e| invalid(path, e))?;
        let keys: Vec<String> = axes.iter().map(|(k, _)| k.clone()).collect();
        let short = short_names(&keys);
        let labels: Vec<Vec<String>> = axes.iter().map(|(_, vals)| axis_labels(vals)).collect();
        // The file parsed from its own text (when no override changed it), so errors name
        // the file's lines.
        let check = |text: &str, id: Option<&str>| {
            let mut exp = Experiment::from_toml(text).map_err(|e| match id {
                Some(id) => invalid(path, format!("run {id}: {e}")),
                None => invalid(path, e),
            })?;
            exp.resolve_paths(dir);
            Ok::<_, ConfigError>(exp)
        };
        let base_text = if overrides.is_empty() && !extended {
            text.clone()
        } else {
            toml::to_string(&table).expect("a parsed table serializes")
        };
        let first = check(&base_text, None).or_else(|e| {
            if sweep.is_none() {
                return Err(e);
            }
            // A sweep's base may be incomplete where every axis fills it in: the name and
            // out_dir come from the first point then.
            let mut t = table.clone();
            for ((key, vals), &i) in axes.iter().zip(&combos[0]) {
                set_key(&mut t, key, vals[i].clone()).map_err(|m| invalid(path, format!("sweep.axes.{m}")))?;
            }
            check(&toml::to_string(&t).expect("a table serializes"), None).map_err(|_| e)
        })?;
        let name = first.name.clone();
        let out_dir = first.out_dir.clone();
        let mut points = Vec::new();
        for combo in combos {
            let mut t = table.clone();
            let mut values = Vec::new();
            let mut id_parts = Vec::new();
            for (((key, vals), labels), (&i, short)) in axes.iter().zip(&labels).zip(combo.iter().zip(&short)) {
                set_key(&mut t, key, vals[i].clone()).map_err(|e| invalid(path, format!("sweep.axes.{e}")))?;
                values.push((key.clone(), vals[i].clone()));
                id_parts.push(format!("{short}={}", labels[i]));
            }
            let id = if sweep.is_some() { id_parts.join(",") } else { name.clone() };
            let mut exp = if sweep.is_none() {
                first.clone()
            } else {
                check(&toml::to_string(&t).expect("a table serializes"), Some(&id))?
            };
            if sweep.is_some() {
                exp.out_dir = out_dir.join(&name);
                exp.name = id.clone();
            }
            points.push(SweepPoint { id, values, table: t, experiment: exp });
        }
        let mut ids: Vec<&str> = points.iter().map(|p| p.id.as_str()).collect();
        ids.sort();
        if let Some(w) = ids.windows(2).find(|w| w[0] == w[1]) {
            return Err(invalid(
                path,
                format!("sweep: two runs would share the id {:?}; make the axis values differ", w[0]),
            ));
        }
        if sweep.is_some() && points.is_empty() {
            return Err(invalid(path, "sweep: no axes ([sweep.axes] lists the keys to vary)"));
        }
        Ok(Self {
            file: path.into(),
            dir: out_dir.join(&name),
            name,
            is_sweep: sweep.is_some(),
            mode,
            axes: keys,
            points,
        })
    }

    /// The run with `id`; otherwise an error that lists the runs there are.
    pub fn point(&self, id: &str) -> Result<&SweepPoint, ConfigError> {
        self.points.iter().find(|p| p.id == id).ok_or_else(|| {
            let ids: Vec<&str> = self.points.iter().map(|p| p.id.as_str()).collect();
            invalid(&self.file, format!("no run {id:?} (runs: {})", ids.join(", ")))
        })
    }
}

/// The file's table over its `extends` file's (recursively): tables merge key by key, any
/// other value (a list such as `stage`, too) replaces the base's. Returns whether there was
/// a base.
fn read_with_base(path: &Path, text: &str, depth: usize) -> Result<(Table, bool), ConfigError> {
    let mut table: Table = text.parse().map_err(|e: toml::de::Error| invalid(path, e.to_string()))?;
    let Some(base) = table.remove("extends") else { return Ok((table, false)) };
    let Value::String(base) = base else {
        return Err(invalid(path, format!("extends: expected a file name, found a {}", base.type_str())));
    };
    if depth > 8 {
        return Err(invalid(path, "extends: more than 8 levels (a cycle?)"));
    }
    let base_path = path.parent().unwrap_or(Path::new(".")).join(&base);
    let base_text = autoneural_io::read::read_to_string(&base_path, autoneural_io::read::CONFIG)
        .map_err(|e| invalid(path, format!("extends = {base:?}: {e}")))?;
    let (mut merged, _) = read_with_base(&base_path, &base_text, depth + 1)?;
    merge(&mut merged, table);
    Ok((merged, true))
}

fn merge(base: &mut Table, over: Table) {
    for (k, v) in over {
        match (base.get_mut(&k), v) {
            (Some(Value::Table(b)), Value::Table(o)) => merge(b, o),
            (_, v) => {
                base.insert(k, v);
            }
        }
    }
}

/// (key, values) per axis.
type Axes = Vec<(String, Vec<Value>)>;

fn parse_sweep(s: &Table) -> Result<(SweepMode, Axes), String> {
    let mut mode = SweepMode::Product;
    let mut axes = Vec::new();
    for (k, v) in s {
        match (k.as_str(), v) {
            ("mode", Value::String(m)) if m == "product" => mode = SweepMode::Product,
            ("mode", Value::String(m)) if m == "zip" => mode = SweepMode::Zip,
            ("mode", other) => return Err(format!("sweep.mode: expected \"product\" or \"zip\", found {other}")),
            ("axes", Value::Table(t)) => flatten_axes("", t, &mut axes)?,
            ("axes", other) => return Err(format!("sweep.axes: expected a table, found a {}", other.type_str())),
            (other, _) => return Err(format!("sweep: unknown key {other:?} (expected `mode` and `[sweep.axes]`)")),
        }
    }
    Ok((mode, axes))
}

/// Index tuples, one per run.
fn combinations(mode: SweepMode, axes: &[(String, Vec<Value>)]) -> Result<Vec<Vec<usize>>, String> {
    if axes.is_empty() {
        return Ok(vec![Vec::new()]);
    }
    match mode {
        SweepMode::Zip => {
            let n = axes[0].1.len();
            if let Some((k, v)) = axes.iter().find(|(_, v)| v.len() != n) {
                return Err(format!(
                    "sweep.axes.{k}: {} values, but mode = \"zip\" needs every axis to have {n} (as {})",
                    v.len(),
                    axes[0].0
                ));
            }
            Ok((0..n).map(|i| vec![i; axes.len()]).collect())
        }
        SweepMode::Product => {
            let mut out = vec![Vec::new()];
            for (_, vals) in axes {
                out = out
                    .into_iter()
                    .flat_map(|c: Vec<usize>| (0..vals.len()).map(move |i| [c.clone(), vec![i]].concat()))
                    .collect();
            }
            Ok(out)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BASE: &str = r#"
name = "abl"
out_dir = "runs"
[data]
dir = "data"
[model.vision]
preset = "mobilenetv5_tiny"
[model.language]
preset = "lfm2-nano"
attention_layers = 2
[[stage]]
name = "full"
train = ["language"]
steps = 10
lr = 1e-3
[[stage]]
name = "qat"
train = ["language"]
steps = 5
lr = 1e-4
[stage.quantization]
policy = "w8a16"
"#;

    fn expand(extra: &str, overrides: &[&str]) -> Result<Expansion, String> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("exp.toml");
        std::fs::write(&path, format!("{BASE}\n{extra}")).unwrap();
        let o: Vec<(String, Value)> = overrides.iter().map(|s| parse_override(s).unwrap()).collect();
        Expansion::from_file(&path, &o).map_err(|e| e.to_string())
    }

    #[test]
    fn a_file_without_a_sweep_is_one_run_named_like_the_experiment() {
        let e = expand("", &[]).unwrap();
        assert!(!e.is_sweep);
        assert_eq!(e.points.len(), 1);
        assert_eq!(e.points[0].id, "abl");
        assert_eq!(e.points[0].experiment.name, "abl");
        assert!(e.dir.ends_with("runs/abl"));
    }

    #[test]
    fn product_expands_every_combination_first_axis_slowest() {
        let e = expand(
            "[sweep.axes]\n\"model.language.attention_layers\" = [0, 3, 6]\n\"stage.qat.quantization.policy\" = [\"w8a16\", \"policies/w4.toml\"]\n",
            &[],
        )
        .unwrap();
        assert!(e.is_sweep && e.mode == SweepMode::Product);
        let ids: Vec<&str> = e.points.iter().map(|p| p.id.as_str()).collect();
        assert_eq!(
            ids,
            [
                "attention_layers=0,policy=w8a16",
                "attention_layers=0,policy=w4",
                "attention_layers=3,policy=w8a16",
                "attention_layers=3,policy=w4",
                "attention_layers=6,policy=w8a16",
                "attention_layers=6,policy=w4"
            ]
        );
        let p = &e.points[3];
        assert_eq!(p.experiment.model.language.attention_layers, Some(3));
        // the stage named "qat" changed, the policy path resolved against the file
        assert!(p.experiment.stages[1].quantization.as_ref().unwrap().policy.ends_with("policies/w4.toml"));
        assert_eq!(p.experiment.stages[0].quantization, None);
        // each run in runs/<experiment>/<id>
        assert_eq!(p.experiment.name, p.id);
        assert!(p.experiment.out_dir.ends_with("runs/abl"));
    }

    #[test]
    fn zip_pairs_values_and_needs_equal_lengths() {
        let e = expand("[sweep]\nmode = \"zip\"\n[sweep.axes]\nseed = [1, 2]\nstage.0.lr = [0.1, 0.2]\n", &[]).unwrap();
        assert_eq!(e.points.len(), 2);
        assert_eq!((e.points[1].experiment.seed, e.points[1].experiment.stages[0].lr), (2, 0.2));
        assert_eq!(e.points[1].id, "seed=2,lr=0.2");
        let err =
            expand("[sweep]\nmode = \"zip\"\n[sweep.axes]\nseed = [1, 2]\nstage.0.lr = [0.1]\n", &[]).unwrap_err();
        assert!(err.contains("sweep.axes.stage.0.lr: 1 values") && err.contains("needs every axis to have 2"), "{err}");
    }

    #[test]
    fn overrides_change_the_base_and_the_axes() {
        let e = expand(
            "[sweep.axes]\n\"model.language.attention_layers\" = [0, 6]\n",
            &["stage.full.steps=3", "sweep.axes.model.language.attention_layers=[1]", "seed=7"],
        )
        .unwrap();
        assert_eq!(e.points.len(), 1);
        let x = &e.points[0].experiment;
        assert_eq!((x.stages[0].steps, x.model.language.attention_layers, x.seed), (Some(3), Some(1), 7));
        // a table value replaces the whole table
        let e = expand(
            "[sweep.axes]\n\"model.vision\" = [{ preset = \"vit_mini\" }, { preset = \"mobilenetv5_tiny\" }]\n",
            &[],
        )
        .unwrap();
        assert_eq!(e.points[0].id, "vision=vit_mini");
        assert_eq!(e.points[0].experiment.model.vision.preset, "vit_mini");
        // tables of one preset are told apart by the keys that differ
        let e = expand(
            "[sweep.axes]\n\"model.vision\" = [{ preset = \"mobilenetv5_tiny\" }, \
             { preset = \"mobilenetv5_tiny\", msfa_output_resolution = 8, norm = \"batch\" }, { preset = \"vit_mini\" }]\n",
            &[],
        )
        .unwrap();
        let ids: Vec<&str> = e.points.iter().map(|p| p.id.as_str()).collect();
        assert_eq!(
            ids,
            [
                "vision=mobilenetv5_tiny+msfa_output_resolution-none+norm-none",
                "vision=mobilenetv5_tiny+msfa_output_resolution-8+norm-batch",
                "vision=vit_mini"
            ]
        );
        // a list value (attention placement) is named by its items
        let e = expand("[sweep.axes]\n\"model.language.attention_at\" = [[0, 1], [2, 3], []]\n", &[]).unwrap();
        let ids: Vec<&str> = e.points.iter().map(|p| p.id.as_str()).collect();
        assert_eq!(ids, ["attention_at=0-1", "attention_at=2-3", "attention_at=none"]);
        assert_eq!(e.points[1].experiment.model.language.attention_at, Some(vec![2, 3]));
    }

    #[test]
    fn errors_name_the_key_and_what_was_expected() {
        let err = |extra: &str, o: &[&str]| expand(extra, o).unwrap_err();
        assert!(err("[sweep]\nmode = \"grid\"\n", &[]).contains("sweep.mode: expected \"product\" or \"zip\""));
        assert!(err("[sweep]\nfoo = 1\n", &[]).contains("unknown key \"foo\""));
        assert!(err("[sweep.axes]\nseed = []\n", &[]).contains("sweep.axes.seed: empty list"));
        assert!(err("[sweep.axes]\nseed = 3\n", &[]).contains("sweep.axes.seed: expected a list"));
        let e = err("[sweep.axes]\n\"stage.warmup.lr\" = [1.0]\n", &[]);
        assert!(e.contains("no stage named \"warmup\" (names: full, qat)"), "{e}");
        let e = err("[sweep.axes]\n\"model.language.attention_layerz\" = [1, 2]\n", &[]);
        assert!(e.contains("run attention_layerz=1") && e.contains("attention_layerz"), "{e}");
        assert!(err("[sweep.axes]\nseed = [1, 1]\n", &[]).contains("share the id \"seed=1\""));
        assert!(parse_override("seed").unwrap_err().contains("expected key=value"));
        assert_eq!(parse_override("stage.qat.quantization.policy=w4a16").unwrap().1, Value::String("w4a16".into()));
    }

    #[test]
    fn extends_merges_tables_and_replaces_lists() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("base.toml"), BASE).unwrap();
        let path = dir.path().join("abl.toml");
        std::fs::write(
            &path,
            "extends = \"base.toml\"\nname = \"child\"\n[model.language]\nnum_layers = 6\n[[stage]]\nname = \"only\"\ntrain = [\"language\"]\nsteps = 1\nlr = 1e-3\n",
        )
        .unwrap();
        let e = Expansion::from_file(&path, &[]).unwrap();
        let x = &e.points[0].experiment;
        assert_eq!(x.name, "child");
        // the base's other model.language keys stay; the stage list is replaced
        assert_eq!((x.model.language.preset.as_deref(), x.model.language.num_layers), (Some("lfm2-nano"), Some(6)));
        assert_eq!(x.stages.len(), 1);
        std::fs::write(&path, "extends = \"missing.toml\"\n").unwrap();
        let err = Expansion::from_file(&path, &[]).unwrap_err().to_string();
        assert!(err.contains("abl.toml: extends = \"missing.toml\"") && err.contains("missing.toml"), "{err}");
    }
}

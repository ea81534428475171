//! Output directories a command owns.
//!
//! Every command that writes a directory (`quantize`, `export`, `data synth`, `data
//! tokenizer`, `quant-report`, `run` and sweeps) first *claims* it: a directory that does
//! not exist or is empty becomes its own; one holding `.autoneural-output.json` (the marker:
//! which command wrote it, from which inputs, which files) is its own again when the same
//! command wrote it from the same inputs, or was interrupted before it finished. Anything
//! else (a user's directory, another command's output, this command's output from other
//! inputs) is refused with the path and the way out, unless the user passed `--force`.
//!
//! A claimed directory is written through a staging directory inside it and committed at
//! the end: each new file replaces the one of the same name, the files the earlier output
//! listed and this one did not write are removed (no stale graphs beside a new manifest),
//! and nothing else is touched: a user's `notes.md` next to our files stays.
//!
//! ```json
//! {"format": "autoneural-output/1", "command": "quantize", "complete": true, "pid": 4242,
//!  "inputs": {"model": "/abs/runs/q/final", "precision": "w8a16", ...},
//!  "files": ["config.json", "model.safetensors", "quantization.json", "tokenizer.json"]}
//! ```

use std::collections::BTreeSet;
use std::path::{Component, Path, PathBuf};

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::lock::DirLock;
use crate::{Error, Result};

pub const MARKER: &str = ".autoneural-output.json";
pub const FORMAT: &str = "autoneural-output/1";
/// Where a command writes before its commit (inside the output, so the commit is renames).
pub const STAGING: &str = ".autoneural-staging";

/// What an output directory records about its writer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Marker {
    pub format: String,
    /// The subcommand, as typed: `quantize`, `data synth`, `run`.
    pub command: String,
    /// What the output was made from (absolute paths, options).
    pub inputs: Map<String, Value>,
    /// Entries of the directory this command wrote (names directly in it).
    pub files: Vec<String>,
    /// False while the command runs (or after it was interrupted).
    pub complete: bool,
    /// The process that wrote the marker last.
    pub pid: u32,
    pub version: String,
}

/// Reads `dir`'s marker: `None` when it has none, or one that is not ours to read.
pub fn marker(dir: &Path) -> Option<Marker> {
    let text = crate::read::read_to_string(&dir.join(MARKER), crate::read::CONFIG).ok()?;
    serde_json::from_str::<Marker>(&text).ok().filter(|m| m.format == FORMAT)
}

/// A command's claim on a directory.
pub struct Spec<'a> {
    pub command: &'a str,
    pub inputs: Map<String, Value>,
    /// The user said `--force`: write even where the claim would be refused (same-named
    /// files are replaced, others kept).
    pub force: bool,
    /// How to get past a refusal, in the command's terms: "choose another --out, or pass
    /// --force to replace it".
    pub way_out: &'a str,
    /// Recognises what this command wrote before markers existed (e.g. a synthetic set's
    /// `manifest.json`), so an older output is not mistaken for a user's files.
    pub legacy: Option<&'a dyn Fn(&Path) -> bool>,
}

/// A claimed output directory, locked until dropped. A staged output dropped before
/// [`Output::commit`] (the command failed) removes its staging directory, and the directory
/// itself when the claim created it and nothing else was put there.
pub struct Output {
    dir: PathBuf,
    marker: Marker,
    /// The files the earlier output of this command listed.
    previous: Vec<String>,
    created: bool,
    /// [`Output::staging`] was called: the output is written there and committed at the end.
    staged: bool,
    committed: bool,
    _lock: DirLock,
}

impl Drop for Output {
    fn drop(&mut self) {
        if self.committed || !self.staged {
            return;
        }
        // Best effort: the error that stopped the command matters more.
        let _ = remove_entry(&self.dir.join(STAGING));
        if self.created && entries(&self.dir).is_ok_and(|e| e.is_empty()) {
            let _ = std::fs::remove_file(self.dir.join(MARKER));
            let _ = std::fs::remove_dir(&self.dir);
        }
    }
}

/// The entries of `dir` other than our own bookkeeping, sorted.
fn entries(dir: &Path) -> Result<Vec<String>> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).map_err(|e| Error::io(dir, e))? {
        let name = e.map_err(|e| Error::io(dir, e))?.file_name().to_string_lossy().into_owned();
        if name != MARKER && name != STAGING && !name.starts_with(&format!("{MARKER}.")) {
            out.push(name);
        }
    }
    out.sort();
    Ok(out)
}

/// `a, b, c and 4 more`.
fn some_of(names: &[String]) -> String {
    let shown: Vec<&str> = names.iter().take(4).map(String::as_str).collect();
    let more = names.len().saturating_sub(shown.len());
    if more > 0 { format!("{} and {more} more", shown.join(", ")) } else { shown.join(", ") }
}

fn short(v: Option<&Value>) -> String {
    let s = v.map_or("(none)".to_string(), |v| v.to_string());
    if s.chars().count() > 80 { format!("{}...", s.chars().take(77).collect::<String>()) } else { s }
}

/// The keys whose values differ, as `key: old then, new now`.
pub fn differences(old: &Map<String, Value>, new: &Map<String, Value>) -> Vec<String> {
    let keys: BTreeSet<&String> = old.keys().chain(new.keys()).collect();
    keys.into_iter()
        .filter(|k| old.get(*k) != new.get(*k))
        .map(|k| format!("{k}: {} then, {} now", short(old.get(k)), short(new.get(k))))
        .collect()
}

/// A name directly inside a directory (a hand-edited marker cannot point elsewhere).
fn is_plain_name(name: &str) -> bool {
    let mut parts = Path::new(name).components();
    matches!((parts.next(), parts.next()), (Some(Component::Normal(_)), None))
}

fn remove_entry(path: &Path) -> Result<()> {
    let meta = match std::fs::symlink_metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(Error::io(path, e)),
    };
    let r = if meta.is_dir() { std::fs::remove_dir_all(path) } else { std::fs::remove_file(path) };
    r.map_err(|e| Error::io(path, e))
}

impl Output {
    /// Claims `dir` for `spec.command` (creating it when missing) and locks it, or refuses
    /// with the path, the reason and `spec.way_out`. Nothing in the directory changes
    /// before the claim succeeds.
    pub fn claim(dir: &Path, spec: Spec) -> Result<Self> {
        let refuse = |message: String| Error::Refused { path: dir.into(), message };
        let created = match std::fs::metadata(dir) {
            Ok(m) if !m.is_dir() => {
                return Err(refuse(format!("exists and is not a directory; {}", spec.way_out)));
            }
            Ok(_) => false,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
                true
            }
            Err(e) => return Err(Error::io(dir, e)),
        };
        let lock = DirLock::acquire(dir, || marker(dir).map(|m| format!("pid {}, `autoneural {}`", m.pid, m.command)))?;
        let previous = match marker(dir) {
            Some(m) if m.command != spec.command && !spec.force => {
                return Err(refuse(format!(
                    "holds the output of `autoneural {}`, not of `autoneural {}`; {}",
                    m.command, spec.command, spec.way_out
                )));
            }
            // forced over another command's output: its files stay (only same names change)
            Some(m) if m.command != spec.command => Vec::new(),
            Some(m) if !m.complete => m.files,
            Some(m) => {
                let differ = differences(&m.inputs, &spec.inputs);
                if !differ.is_empty() && !spec.force {
                    return Err(refuse(format!(
                        "holds the output of an earlier `autoneural {}` from other inputs ({}); {}",
                        spec.command,
                        differ.join("; "),
                        spec.way_out
                    )));
                }
                m.files
            }
            None => {
                let found = entries(dir)?;
                let legacy = spec.legacy.is_some_and(|f| f(dir));
                if !found.is_empty() && !legacy && !spec.force {
                    return Err(refuse(format!(
                        "holds files autoneural did not write ({}); {}",
                        some_of(&found),
                        spec.way_out
                    )));
                }
                Vec::new()
            }
        };
        let previous: Vec<String> = previous.into_iter().filter(|n| is_plain_name(n)).collect();
        let marker = Marker {
            format: FORMAT.into(),
            command: spec.command.into(),
            inputs: spec.inputs,
            files: previous.clone(),
            complete: false,
            pid: std::process::id(),
            version: env!("CARGO_PKG_VERSION").into(),
        };
        let out = Self { dir: dir.into(), marker, previous, created, staged: false, committed: false, _lock: lock };
        out.write_marker()?;
        Ok(out)
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn write_marker(&self) -> Result<()> {
        let path = self.dir.join(MARKER);
        let tmp = self.dir.join(format!("{MARKER}.tmp"));
        let text = serde_json::to_string_pretty(&self.marker).expect("a marker serializes");
        std::fs::write(&tmp, text).map_err(|e| Error::io(&tmp, e))?;
        std::fs::rename(&tmp, &path).map_err(|e| Error::io(&path, e))
    }

    /// An empty staging directory to write the whole output into (an interrupted earlier
    /// attempt's is cleared first).
    pub fn staging(&mut self) -> Result<PathBuf> {
        self.staged = true;
        let path = self.dir.join(STAGING);
        remove_entry(&path)?;
        std::fs::create_dir(&path).map_err(|e| Error::io(&path, e))?;
        Ok(path)
    }

    /// Moves what the staging directory holds into place, removes the earlier output's
    /// files that were not written again, and marks the output complete. Returns the
    /// names written.
    pub fn commit(mut self) -> Result<Vec<String>> {
        let staging = self.dir.join(STAGING);
        let mut written = Vec::new();
        if staging.is_dir() {
            for e in std::fs::read_dir(&staging).map_err(|e| Error::io(&staging, e))? {
                written.push(e.map_err(|e| Error::io(&staging, e))?.file_name().to_string_lossy().into_owned());
            }
        }
        written.sort();
        for name in &written {
            let target = self.dir.join(name);
            remove_entry(&target)?;
            std::fs::rename(staging.join(name), &target).map_err(|e| Error::io(&target, e))?;
        }
        remove_entry(&staging)?;
        self.finish(written.clone())?;
        self.committed = true;
        Ok(written)
    }

    /// Marks the output complete with `files` (written in place, not staged), removing the
    /// earlier output's files that are not among them.
    pub fn finish(&mut self, files: Vec<String>) -> Result<()> {
        for stale in self.previous.iter().filter(|p| !files.contains(p)) {
            remove_entry(&self.dir.join(stale))?;
        }
        self.previous = files.clone();
        self.marker.files = files;
        self.marker.complete = true;
        self.committed = true;
        self.write_marker()
    }

    /// Adds `names` to the files the marker records, while the command still runs (a run
    /// directory grows as it trains).
    pub fn record(&mut self, names: &[&str]) -> Result<()> {
        let mut changed = false;
        for n in names {
            if !self.marker.files.iter().any(|f| f == n) {
                self.marker.files.push((*n).to_string());
                changed = true;
            }
        }
        if changed {
            self.marker.files.sort();
            self.write_marker()?;
        }
        Ok(())
    }
}

/// `path` made absolute (symlinks resolved) when it exists, as a marker records an input:
/// the same input named two ways is the same input.
pub fn canonical(path: &Path) -> String {
    path.canonicalize().unwrap_or_else(|_| path.to_path_buf()).display().to_string()
}

/// Checks that `path` may be written by a command that writes one file: it is absent, or
/// `is_ours` recognises its contents as what this command writes, or the user forced it.
pub fn check_file(path: &Path, is_ours: impl Fn(&[u8]) -> bool, force: bool, way_out: &str) -> Result<()> {
    match std::fs::symlink_metadata(path) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(Error::io(path, e)),
        Ok(m) if m.is_dir() => Err(Error::Refused { path: path.into(), message: format!("is a directory; {way_out}") }),
        Ok(_) if force => Ok(()),
        Ok(_) => {
            let ours = crate::read::read(path, crate::read::CONFIG).map(|b| is_ours(&b)).unwrap_or(false);
            if ours {
                Ok(())
            } else {
                Err(Error::Refused {
                    path: path.into(),
                    message: format!("exists and is not a file this command wrote; {way_out}"),
                })
            }
        }
    }
}

/// Writes `bytes` to `path` through a temporary file beside it, synced, then renamed over
/// `path`. The temporary file gets a fresh name and is created exclusively, so no file of
/// the user's (whatever its name) is opened or replaced but `path`; if anything fails it is
/// removed.
pub fn write_file(path: &Path, bytes: &[u8]) -> Result<()> {
    use std::io::Write;
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let mut tmp = tempfile::Builder::new()
        .prefix(&format!(".{name}."))
        .suffix(".tmp")
        .tempfile_in(dir)
        .map_err(|e| Error::io(dir, e))?;
    tmp.write_all(bytes).map_err(|e| Error::io(tmp.path(), e))?;
    tmp.as_file().sync_all().map_err(|e| Error::io(tmp.path(), e))?;
    tmp.persist(path).map_err(|e| Error::io(path, e.error))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn spec<'a>(command: &'a str, inputs: Value, force: bool) -> Spec<'a> {
        Spec {
            command,
            inputs: inputs.as_object().unwrap().clone(),
            force,
            way_out: "choose another --out, or pass --force",
            legacy: None,
        }
    }

    fn write_output(dir: &Path, inputs: Value, files: &[&str]) -> Vec<String> {
        let mut out = Output::claim(dir, spec("quantize", inputs, false)).unwrap();
        let staging = out.staging().unwrap();
        for f in files {
            std::fs::write(staging.join(f), f.as_bytes()).unwrap();
        }
        out.commit().unwrap()
    }

    #[test]
    fn a_users_directory_is_refused_and_left_as_it_was() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("project");
        std::fs::create_dir(&dir).unwrap();
        std::fs::write(dir.join("quantization.json"), "{}").unwrap();
        std::fs::write(dir.join("notes.md"), "mine").unwrap();
        let err = Output::claim(&dir, spec("quantize", json!({"a": 1}), false)).err().unwrap().to_string();
        assert!(err.contains("project: holds files autoneural did not write (notes.md, quantization.json)"), "{err}");
        assert!(err.contains("--force"), "{err}");
        assert!(!dir.join(MARKER).exists());
        assert_eq!(std::fs::read_to_string(dir.join("quantization.json")).unwrap(), "{}");
        // forced: same names replaced, the rest kept
        let mut out = Output::claim(&dir, spec("quantize", json!({"a": 1}), true)).unwrap();
        std::fs::write(out.staging().unwrap().join("quantization.json"), "new").unwrap();
        out.commit().unwrap();
        assert_eq!(std::fs::read_to_string(dir.join("quantization.json")).unwrap(), "new");
        assert_eq!(std::fs::read_to_string(dir.join("notes.md")).unwrap(), "mine");
    }

    #[test]
    fn a_rewrite_removes_only_the_stale_files_of_the_earlier_output() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("out");
        write_output(&dir, json!({"p": "w8"}), &["a.onnx", "b.onnx", "manifest.json"]);
        std::fs::write(dir.join("notes.md"), "mine").unwrap();
        // same inputs: replaced; b.onnx was not written again and goes
        let written = write_output(&dir, json!({"p": "w8"}), &["a.onnx", "manifest.json"]);
        assert_eq!(written, ["a.onnx", "manifest.json"]);
        assert!(!dir.join("b.onnx").exists() && dir.join("notes.md").exists());
        assert_eq!(marker(&dir).unwrap().files, ["a.onnx", "manifest.json"]);
        // other inputs: refused, naming what differs
        let err = Output::claim(&dir, spec("quantize", json!({"p": "w4"}), false)).err().unwrap().to_string();
        assert!(err.contains("from other inputs (p: \"w8\" then, \"w4\" now)"), "{err}");
        // another command's output
        let err = Output::claim(&dir, spec("export", json!({"p": "w8"}), false)).err().unwrap().to_string();
        assert!(err.contains("holds the output of `autoneural quantize`, not of `autoneural export`"), "{err}");
    }

    #[test]
    fn an_interrupted_output_is_its_commands_again_and_a_second_writer_waits() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("out");
        let first = Output::claim(&dir, spec("quantize", json!({"p": 1}), false)).unwrap();
        let err = Output::claim(&dir, spec("quantize", json!({"p": 1}), false)).err().unwrap().to_string();
        assert!(err.contains("another autoneural process is writing here") && err.contains("pid"), "{err}");
        drop(first); // never committed: interrupted
        Output::claim(&dir, spec("quantize", json!({"p": 2}), false)).unwrap();
    }

    #[test]
    fn a_failed_command_leaves_no_trace_where_there_was_nothing() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("new");
        let mut out = Output::claim(&dir, spec("export", json!({}), false)).unwrap();
        std::fs::write(out.staging().unwrap().join("half.onnx"), "x").unwrap();
        drop(out);
        assert!(!dir.exists());
        // an existing output keeps its files and loses only the staging directory
        write_output(&dir, json!({}), &["a"]);
        let mut out = Output::claim(&dir, spec("quantize", json!({}), false)).unwrap();
        std::fs::write(out.staging().unwrap().join("a"), "new").unwrap();
        drop(out);
        assert_eq!(std::fs::read_to_string(dir.join("a")).unwrap(), "a");
        assert!(!dir.join(STAGING).exists());
    }

    #[test]
    fn a_hand_edited_marker_cannot_remove_files_outside() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("out");
        std::fs::write(tmp.path().join("precious"), "x").unwrap();
        write_output(&dir, json!({}), &["a"]);
        let mut m = marker(&dir).unwrap();
        m.files = vec!["../precious".into(), "/etc".into(), "a".into()];
        std::fs::write(dir.join(MARKER), serde_json::to_string(&m).unwrap()).unwrap();
        write_output(&dir, json!({}), &["b"]);
        assert!(tmp.path().join("precious").exists() && !dir.join("a").exists());
    }

    #[test]
    fn single_file_outputs() {
        let tmp = tempfile::tempdir().unwrap();
        let p = tmp.path().join("report.json");
        let ours = |b: &[u8]| b.starts_with(b"{\"tasks\"");
        check_file(&p, ours, false, "x").unwrap();
        std::fs::write(&p, "user data").unwrap();
        let err = check_file(&p, ours, false, "pass --force").unwrap_err().to_string();
        assert!(err.contains("report.json: exists and is not a file this command wrote; pass --force"), "{err}");
        check_file(&p, ours, true, "x").unwrap();
        // A user's file named as the temporary file once was is never opened.
        std::fs::write(tmp.path().join(".report.json.tmp"), "mine").unwrap();
        write_file(&p, b"{\"tasks\": 1}").unwrap();
        check_file(&p, ours, false, "x").unwrap();
        assert_eq!(std::fs::read_to_string(tmp.path().join(".report.json.tmp")).unwrap(), "mine");
        assert_eq!(std::fs::read_dir(tmp.path()).unwrap().count(), 2, "no temporary file left");
    }
}

//! Careless and hostile inputs through the `autoneural` binary (docs/reliability.md): every
//! one is a clear error naming the file, key or flag (never a panic or an abort), leaves the
//! user's files byte for byte as they were, and stays within a memory cap (`ulimit -v`).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;

const TINY_VLM: &str = "tests/fixtures/vision/autoneural-tiny";

fn bin() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_autoneural"));
    c.env("XDG_RUNTIME_DIR", "/tmp").env_remove("AUTONEURAL_MAX_IMAGE_PIXELS");
    c
}

fn autoneural(args: &[&str]) -> Output {
    bin().args(args).output().unwrap()
}

/// The binary under an address-space cap of `mib` MiB (`ulimit -v`): an input that made
/// it allocate without bound would abort it instead of returning an error.
fn capped(mib: usize, args: &[&str]) -> Output {
    let quoted: Vec<String> = args.iter().map(|a| format!("'{}'", a.replace('\'', "'\\''"))).collect();
    let script = format!("ulimit -v {}; exec '{}' {}", mib * 1024, env!("CARGO_BIN_EXE_autoneural"), quoted.join(" "));
    Command::new("bash")
        .args(["-c", &script])
        .env("XDG_RUNTIME_DIR", "/tmp")
        .env_remove("AUTONEURAL_MAX_IMAGE_PIXELS")
        .output()
        .unwrap()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Failed with exit code 1 (an error, not a panic's 101 or an abort's signal), and its
/// message holds every one of `needles`.
#[track_caller]
fn refused(o: &Output, needles: &[&str]) -> String {
    let err = stderr(o);
    assert_eq!(o.status.code(), Some(1), "expected a clean error, got {:?}:\n{err}", o.status);
    assert!(!err.contains("panicked"), "{err}");
    for n in needles {
        assert!(err.contains(n), "missing {n:?} in:\n{err}");
    }
    err
}

/// `dir` holds exactly what `before` recorded (the paths that differ are listed).
#[track_caller]
fn unchanged(dir: &Path, before: &BTreeMap<PathBuf, Vec<u8>>) {
    let now = snapshot(dir);
    let differ: Vec<&PathBuf> = now.keys().chain(before.keys()).filter(|k| now.get(*k) != before.get(*k)).collect();
    assert!(differ.is_empty(), "changed under {}: {differ:?}", dir.display());
}

#[track_caller]
fn succeeded(o: &Output) -> String {
    let err = stderr(o);
    assert!(o.status.success(), "{err}");
    err
}

/// Every file under `dir` with its bytes (symlinks by target), to show nothing changed.
/// Our ownership marker is left out: it records the pid of the last process that claimed
/// the directory.
fn snapshot(dir: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    let mut out = BTreeMap::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.file_name().is_some_and(|n| n == ".autoneural-output.json") {
                continue;
            }
            let meta = std::fs::symlink_metadata(&p).unwrap();
            if meta.file_type().is_symlink() {
                out.insert(p.clone(), std::fs::read_link(&p).unwrap().into_os_string().into_encoded_bytes());
            } else if meta.is_dir() {
                out.insert(p.clone(), Vec::new());
                stack.push(p);
            } else {
                out.insert(p.clone(), std::fs::read(&p).unwrap());
            }
        }
    }
    out
}

/// A directory of a user's own work: files autoneural did not write.
fn users_project(dir: &Path, files: &[(&str, &str)]) -> BTreeMap<PathBuf, Vec<u8>> {
    std::fs::create_dir_all(dir).unwrap();
    for (name, text) in files {
        let p = dir.join(name);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, text).unwrap();
    }
    snapshot(dir)
}

/// A copy of the tiny AutoNeural checkpoint, edited by `edit` (its config as JSON).
fn tiny_vlm(dir: &Path, edit: impl FnOnce(&mut serde_json::Value)) -> PathBuf {
    std::fs::create_dir_all(dir).unwrap();
    for e in std::fs::read_dir(TINY_VLM).unwrap() {
        let p = e.unwrap().path();
        std::fs::copy(&p, dir.join(p.file_name().unwrap())).unwrap();
    }
    let path = dir.join("config.json");
    let mut config: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    edit(&mut config);
    std::fs::write(&path, serde_json::to_string(&config).unwrap()).unwrap();
    dir.to_path_buf()
}

/// One conversation about the tiny checkpoint's image, as `n` lines of JSONL.
fn conversations(dir: &Path, n: usize) -> PathBuf {
    std::fs::create_dir_all(dir).unwrap();
    std::fs::copy(format!("{TINY_VLM}/image.png"), dir.join("image.png")).unwrap();
    let line = r#"{"messages": [{"role": "user", "content": "<image>Describe the image."}, {"role": "assistant", "content": "a shape"}], "images": ["image.png"], "task": "describe"}"#;
    let path = dir.join("conversations.jsonl");
    std::fs::write(&path, format!("{line}\n").repeat(n)).unwrap();
    path
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// Synthetic OCR data and a tokenizer, made once and only read by the tests.
fn shared_data() -> &'static (tempfile::TempDir, PathBuf, PathBuf) {
    static DATA: OnceLock<(tempfile::TempDir, PathBuf, PathBuf)> = OnceLock::new();
    DATA.get_or_init(|| {
        let tmp = tempfile::tempdir().unwrap();
        let (data, tok) = (tmp.path().join("data"), tmp.path().join("tok"));
        let args =
            ["data", "synth", "--out", s(&data), "--samples", "8", "--image-size", "64", "--families", "ocr,vqa"];
        succeeded(&autoneural(&args));
        succeeded(&autoneural(&["data", "tokenizer", "--data", s(&data), "--vocab-size", "300", "--out", s(&tok)]));
        (tmp, data, tok)
    })
}

/// A two-step experiment on the shared data, in `dir` (runs in `dir/runs/t`).
fn experiment(dir: &Path, stage_extra: &str, top_extra: &str) -> PathBuf {
    let (_, data, tok) = shared_data();
    let text = format!(
        "name = \"t\"\nout_dir = \"runs\"\n{top_extra}\n[data]\ndir = \"{}\"\ntokenizer = \"{}\"\n\
         [model.vision]\npreset = \"mobilenetv5_tiny\"\n[model.language]\npreset = \"lfm2-nano\"\n\
         [[stage]]\nname = \"all\"\ntrain = [\"vision\", \"projector\", \"language\"]\nsteps = 4\nlr = 1e-3\n\
         micro_batch = 2\nmixture = {{ ocr = 1 }}\nval_batches = 1\n{stage_extra}\n[eval]\nmax_per_task = 1\n\
         max_new_tokens = 2\n",
        data.display(),
        tok.display()
    );
    std::fs::create_dir_all(dir).unwrap();
    let path = dir.join("exp.toml");
    std::fs::write(&path, text).unwrap();
    path
}

// 1. The tool deletes or overwrites only what it created.

#[test]
fn quantize_never_replaces_a_directory_it_did_not_write() {
    let tmp = tempfile::tempdir().unwrap();
    let calib = conversations(&tmp.path().join("calib"), 2);
    let project = tmp.path().join("project");
    // A user's project with a `{}` quantization.json: today's `quantize` took it for its own.
    let before = users_project(&project, &[("quantization.json", "{}"), ("notes.md", "three weeks of notes")]);
    let quantize = |out: &Path, precision: &str, extra: &[&str]| {
        let mut a = vec!["quantize", "--model", TINY_VLM, "--precision", precision, "--calib", s(&calib)];
        a.extend(["--samples", "2", "--out", s(out)]);
        a.extend(extra);
        autoneural(&a)
    };
    refused(&quantize(&project, "w8a16", &[]), &[s(&project), "did not write", "notes.md", "--force", "--out"]);
    unchanged(&project, &before);
    // Its own output is rewritten from the same inputs; other inputs are refused by name.
    let out = tmp.path().join("q");
    succeeded(&quantize(&out, "w8a16", &[]));
    std::fs::write(out.join("mine.txt"), "kept").unwrap();
    succeeded(&quantize(&out, "w8a16", &[]));
    let kept = snapshot(&out);
    refused(&quantize(&out, "w4a16", &[]), &["from other inputs", "policy", "--force"]);
    unchanged(&out, &kept);
    // --force writes the quantization's files and leaves the user's others.
    succeeded(&quantize(&project, "w8a16", &["--force"]));
    assert!(project.join("model.safetensors").is_file());
    assert_eq!(std::fs::read_to_string(project.join("notes.md")).unwrap(), "three weeks of notes");
    // An LFM3-VL checkpoint (its processor keeps each image's size, so the calibration
    // image's own token count) adds its preprocessor_config.json the same way.
    let lfm3 = tmp.path().join("lfm3");
    users_project(&lfm3, &[("notes.md", "mine")]);
    let a = ["quantize", "--model", "tests/fixtures/vision/lfm3-vl-tiny", "--precision", "w8a16", "--calib"];
    let a = [&a[..], &[s(&calib), "--samples", "1", "--out", s(&lfm3), "--force"]].concat();
    succeeded(&autoneural(&a));
    assert!(lfm3.join("preprocessor_config.json").is_file() && lfm3.join("model.safetensors").is_file());
    assert_eq!(std::fs::read_to_string(lfm3.join("notes.md")).unwrap(), "mine");
}

/// The fixture generators (`scripts/make_*_fixture*.py`) regenerate a fixture directory
/// through `scripts/fixture_dir.py`: they remove only the files its marker lists as theirs,
/// and refuse a directory whose files no marker accounts for. Runs when `AUTONEURAL_PYTHON`
/// names a Python (CI sets it; the helper needs nothing beyond the standard library).
#[test]
fn fixture_generators_remove_only_their_own_files() {
    let Ok(python) = std::env::var("AUTONEURAL_PYTHON") else {
        eprintln!("AUTONEURAL_PYTHON is not set: scripts/fixture_dir.py not run");
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let run = |dir: &Path| {
        let code = format!(
            "import sys; sys.path.insert(0, 'scripts'); import fixture_dir as f; \
             import os; users = f.claim({dir:?}, 'scripts/make_x.py'); open({model:?}, 'w').write('new'); \
             os.makedirs({images:?}, exist_ok=True); open({png:?}, 'w').write('png'); \
             f.record({dir:?}, 'scripts/make_x.py', users); print(sorted(users))",
            dir = s(dir),
            model = s(&dir.join("model.safetensors")),
            images = s(&dir.join("images")),
            png = s(&dir.join("images").join("a.png")),
        );
        Command::new(&python).args(["-c", &code]).output().unwrap()
    };
    // A user's directory (no marker): refused, untouched.
    let mine = tmp.path().join("mine");
    let before = users_project(&mine, &[("model.safetensors", "my weights"), ("notes.md", "mine")]);
    let o = run(&mine);
    assert!(!o.status.success() && stderr(&o).contains("did not write"), "{}", stderr(&o));
    unchanged(&mine, &before);
    // Its own directory: the files it listed are replaced, a user's file beside them stays
    // and is not listed as the script's.
    let fixture = tmp.path().join("fixture");
    assert!(run(&fixture).status.success());
    std::fs::write(fixture.join("notes.md"), "kept").unwrap();
    std::fs::write(fixture.join("images").join("mine.txt"), "kept too").unwrap();
    std::fs::create_dir(fixture.join("drafts")).unwrap(); // a user's empty folder
    let o = run(&fixture);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(fixture.join("drafts").is_dir(), "a folder the script never wrote into stays, empty or not");
    assert_eq!(std::fs::read_to_string(fixture.join("notes.md")).unwrap(), "kept");
    assert_eq!(std::fs::read_to_string(fixture.join("images").join("mine.txt")).unwrap(), "kept too");
    let marker = std::fs::read_to_string(fixture.join(".generated.json")).unwrap();
    assert!(marker.contains("model.safetensors") && marker.contains("images/a.png"), "{marker}");
    assert!(!marker.contains("notes.md") && !marker.contains("mine.txt"), "{marker}");
    // A marker naming a path outside the directory removes nothing there.
    let outside = tmp.path().join("outside.txt");
    std::fs::write(&outside, "not the script's").unwrap();
    let forged = "{\"script\": \"scripts/make_x.py\", \"files\": [\"../outside.txt\", \"model.safetensors\"]}";
    std::fs::write(fixture.join(".generated.json"), forged).unwrap();
    assert!(run(&fixture).status.success());
    assert_eq!(std::fs::read_to_string(&outside).unwrap(), "not the script's");
}

#[test]
fn data_commands_never_overwrite_a_users_dataset_or_tokenizer() {
    let tmp = tempfile::tempdir().unwrap();
    let mine = tmp.path().join("mine");
    let before = users_project(&mine, &[("ocr/train.jsonl", "{\"my\": \"data\"}\n"), ("tokenizer.json", "{}")]);
    let synth = ["data", "synth", "--out", s(&mine), "--samples", "4", "--image-size", "64", "--families", "ocr"];
    refused(&autoneural(&synth), &[s(&mine), "did not write", "--force"]);
    let tok = ["data", "tokenizer", "--data", s(&shared_data().1), "--vocab-size", "300", "--out", s(&mine)];
    refused(&autoneural(&tok), &[s(&mine), "did not write", "--force"]);
    let convert =
        ["data", "convert", "--data", "tests/fixtures/data/records.jsonl", "--to", "parquet", "--out", s(&mine)];
    refused(&autoneural(&convert), &[s(&mine), "did not write", "--force"]);
    unchanged(&mine, &before);
    // Forced, `data convert` adds its files and leaves the user's as they were.
    succeeded(&autoneural(&[&convert[..], &["--force"]].concat()));
    let after = snapshot(&mine);
    assert!(before.iter().all(|(k, v)| after.get(k) == Some(v)), "a user's file changed");
    assert!(after.keys().any(|k| k.to_string_lossy().ends_with(".parquet")), "{:?}", after.keys());
    // A set of other options is refused too, naming what differs; the same options reuse it.
    let set = tmp.path().join("set");
    let args = |n: &str| {
        ["data", "synth", "--out", s(&set), "--samples", n, "--image-size", "64", "--families", "ocr"].map(String::from)
    };
    let run = |a: [String; 10]| autoneural(&a.iter().map(String::as_str).collect::<Vec<_>>());
    succeeded(&run(args("4")));
    let set_before = snapshot(&set);
    refused(&run(args("5")), &["from other inputs", "samples: 4 then, 5 now"]);
    unchanged(&set, &set_before);
    succeeded(&run(args("4")));
}

#[test]
fn a_run_never_renders_synthetic_data_over_a_users_dataset() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("mydata");
    let before = users_project(&data, &[("ocr/train.jsonl", "{\"mine\": 1}\n"), ("README", "collected by hand")]);
    let exp = experiment(tmp.path(), "", "");
    let text = std::fs::read_to_string(&exp).unwrap();
    let (_, shared, _) = shared_data();
    let text = text.replace(&format!("dir = \"{}\"", shared.display()), "dir = \"mydata\"")
        + "[data.synth]\nsamples = 4\nimage_size = 64\nfamilies = [\"ocr\"]\n";
    // [data.synth] in the file itself, and inherited through `extends`
    let base = tmp.path().join("base.toml");
    std::fs::write(&base, text).unwrap();
    std::fs::write(&exp, "extends = \"base.toml\"\nname = \"child\"\n").unwrap();
    for file in [&base, &exp] {
        let o = autoneural(&["run", s(file), "--no-dashboard"]);
        refused(&o, &[s(&data), "did not write", "point data.dir elsewhere"]);
        unchanged(&data, &before);
    }
}

#[test]
fn export_replaces_its_own_output_without_leaving_stale_graphs() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("onnx");
    let export = |extra: &[&str]| {
        let mut a = vec!["export", "--model", TINY_VLM, "--out", s(&out), "--prefill-len", "4", "--context", "64"];
        a.extend(extra);
        autoneural(&a)
    };
    succeeded(&export(&["--reference-tokens", "2"]));
    assert!(out.join("reference.safetensors").is_file());
    std::fs::write(out.join("deploy-notes.md"), "mine").unwrap();
    // Other options are refused; forced, the earlier export's files that are not written
    // again go (no reference beside a manifest that has none), the user's file stays.
    refused(&export(&[]), &["from other inputs", "reference_tokens: 2 then, 0 now"]);
    succeeded(&export(&["--force"]));
    assert!(!out.join("reference.safetensors").exists() && out.join("manifest.json").is_file());
    assert_eq!(std::fs::read_to_string(out.join("deploy-notes.md")).unwrap(), "mine");
    // The Genie layout over it (quantized, so with encodings and QuantSim configurations):
    // its parts, shared weights and RoPE rows replace the default layout's graphs, which go;
    // the user's file stays.
    let calib = conversations(&tmp.path().join("calib"), 2);
    let genie = ["--layout", "genie", "--part-max-mb", "1", "--precision", "w8a16", "--calib", s(&calib), "--force"];
    succeeded(&export(&genie));
    for file in ["part0.data", "part1_ar4.onnx", "part1_ar1.encodings", "part1_ar4.quantsim.json", "rope.safetensors"] {
        assert!(out.join(file).is_file(), "{file}");
    }
    assert!(!out.join("prefill.onnx").exists() && !out.join("decode.onnx").exists());
    assert_eq!(std::fs::read_to_string(out.join("deploy-notes.md")).unwrap(), "mine");
    // Into a user's directory that holds a file of a part's name: refused, untouched.
    let theirs = tmp.path().join("theirs");
    let before = users_project(&theirs, &[("part0.data", "my weights"), ("notes.md", "mine")]);
    let a = ["export", "--model", TINY_VLM, "--out", s(&theirs), "--prefill-len", "4", "--context", "64"];
    refused(&autoneural(&[&a[..], &["--layout", "genie"]].concat()), &["did not write", "part0.data"]);
    unchanged(&theirs, &before);
    // A populated directory that is not an export is refused.
    let mine = tmp.path().join("mine");
    let before = users_project(&mine, &[("decode.onnx", "my own graph")]);
    let a = ["export", "--model", TINY_VLM, "--out", s(&mine), "--prefill-len", "4", "--context", "64"];
    refused(&autoneural(&a), &["did not write", "decode.onnx"]);
    unchanged(&mine, &before);
    // A failed export leaves no directory where there was none.
    let never = tmp.path().join("never");
    let a = ["export", "--model", "does/not/exist", "--out", s(&never)];
    refused(&autoneural(&a), &["does/not/exist"]);
    assert!(!never.exists());
}

#[test]
fn eval_out_never_replaces_a_file_it_did_not_write() {
    let tmp = tempfile::tempdir().unwrap();
    let data = conversations(&tmp.path().join("d"), 1);
    let report = tmp.path().join("results.json");
    std::fs::write(&report, "my spreadsheet").unwrap();
    let a = ["eval", "--model", TINY_VLM, "--data", s(&data), "--max-new-tokens", "2", "--out", s(&report)];
    refused(&autoneural(&a), &["results.json", "not a file this command wrote", "--force"]);
    assert_eq!(std::fs::read_to_string(&report).unwrap(), "my spreadsheet");
    succeeded(&autoneural(&[&a[..], &["--force"]].concat()));
    succeeded(&autoneural(&a)); // its own report: replaced
}

#[test]
fn a_run_never_writes_into_a_directory_that_is_not_a_run() {
    let tmp = tempfile::tempdir().unwrap();
    let exp = experiment(tmp.path(), "", "");
    let taken = tmp.path().join("runs/t");
    let before = users_project(&taken, &[("thesis.tex", "chapter 1")]);
    refused(
        &autoneural(&["run", s(&exp), "--no-dashboard"]),
        &["runs/t", "did not write", "thesis.tex", "another name"],
    );
    unchanged(&taken, &before);
}

// 2. Resume continues the run it was, or refuses.

#[test]
fn resume_continues_the_same_run_or_refuses() {
    let tmp = tempfile::tempdir().unwrap();
    let exp = experiment(tmp.path(), "checkpoint_every = 1", "");
    let run_dir = tmp.path().join("runs/t");
    // --resume without a checkpoint says so.
    refused(&autoneural(&["run", s(&exp), "--resume", "--no-dashboard"]), &["no checkpoint to continue from"]);
    succeeded(&autoneural(&["run", s(&exp), "--no-dashboard", "--stop-after-steps", "2"]));
    // As if the process died after logging step 3 but before its checkpoint.
    let metrics = run_dir.join("metrics.jsonl");
    let mut text = std::fs::read_to_string(&metrics).unwrap();
    text += "{\"kind\":\"train\",\"stage\":\"all\",\"step\":3,\"global_step\":3,\"lr\":0.001,\"grad_norm\":1.0,\"samples_per_s\":1.0}\n";
    std::fs::write(&metrics, text).unwrap();
    // A changed experiment is refused with the keys; the safe ones may change.
    let changed = std::fs::read_to_string(&exp).unwrap().replace("lr = 1e-3", "lr = 2e-3");
    std::fs::write(&exp, &changed).unwrap();
    let before = snapshot(&run_dir);
    let o = autoneural(&["run", s(&exp), "--resume", "--no-dashboard"]);
    refused(&o, &["differs from the experiment", "stage[0].lr: 0.001 then, 0.002 now", "log_every"]);
    unchanged(&run_dir, &before);
    std::fs::write(&exp, changed.replace("lr = 2e-3", "lr = 1e-3\nlog_every = 1")).unwrap();
    // Two processes on one run: the second is turned away while the first holds it.
    let lock = autoneural_io::lock::DirLock::acquire(&run_dir, || None).unwrap();
    refused(&autoneural(&["run", s(&exp), "--resume", "--no-dashboard"]), &["another autoneural process"]);
    drop(lock);
    succeeded(&autoneural(&["run", s(&exp), "--resume", "--no-dashboard"]));
    let steps: Vec<u64> = std::fs::read_to_string(&metrics)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .filter(|v| v["kind"] == "train")
        .map(|v| v["global_step"].as_u64().unwrap())
        .collect();
    assert_eq!(steps, [1, 2, 3, 4], "each step once, after a resume over a lost step");
}

#[test]
fn a_corrupt_or_foreign_checkpoint_is_named() {
    let tmp = tempfile::tempdir().unwrap();
    let exp = experiment(tmp.path(), "", "");
    succeeded(&autoneural(&["run", s(&exp), "--no-dashboard", "--stop-after-steps", "1"]));
    let ckpt = tmp.path().join("runs/t/checkpoints/step-000001");
    // One flipped byte in the optimizer state: named as corrupt, not found later as NaN.
    let opt = ckpt.join("optimizer.bpk");
    let mut bytes = std::fs::read(&opt).unwrap();
    let i = bytes.len() / 2;
    bytes[i] ^= 0x40;
    std::fs::write(&opt, &bytes).unwrap();
    refused(&autoneural(&["run", s(&exp), "--resume", "--no-dashboard"]), &["optimizer.bpk: corrupt", "SHA-256"]);
    bytes[i] ^= 0x40;
    std::fs::write(&opt, &bytes).unwrap();
    // A checkpoint (without checksums, as older ones are) whose stage the experiment lacks.
    std::fs::remove_file(ckpt.join("checksums.json")).unwrap();
    let state = ckpt.join("trainer_state.json");
    let text = std::fs::read_to_string(&state).unwrap().replace("\"stage\": 0", "\"stage\": 3");
    std::fs::write(&state, text).unwrap();
    refused(&autoneural(&["run", s(&exp), "--resume", "--no-dashboard"]), &["is at stage 3", "does not have"]);
}

// 3. Bounded memory for every input.

#[test]
fn generation_stops_at_the_models_context() {
    let tmp = tempfile::tempdir().unwrap();
    let model = tiny_vlm(&tmp.path().join("m"), |c| c["text_config"]["max_position_embeddings"] = 40.into());
    let image = format!("{TINY_VLM}/image.png");
    let a = ["generate", "--model", s(&model), "--image", &image, "--prompt", "hi"];
    let o =
        capped(4096, &[&a[..], &["--max-new-tokens", "1000000000000000", "--ignore-eos", "--format", "json"]].concat());
    let err = succeeded(&o);
    assert!(err.contains("context of 40 tokens") && err.contains("generating at most"), "{err}");
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["stop_reason"], "context_full");
    let total = v["prompt_ids"].as_array().unwrap().len() + v["new_ids"].as_array().unwrap().len();
    assert_eq!(total, 40);
    // A prompt longer than the context is refused.
    let long = "word ".repeat(60);
    let a = ["generate", "--model", s(&model), "--image", &image, "--prompt", &long];
    refused(&autoneural(&a), &["more than the model's context of 40"]);
}

#[test]
fn images_are_bounded_before_they_are_decoded() {
    let tmp = tempfile::tempdir().unwrap();
    // A 100000 x 100000 PNG: a header and a few rows of zeros, 30 GB once decoded.
    let bomb = tmp.path().join("bomb.png");
    std::fs::write(&bomb, png_header_only(100_000, 100_000)).unwrap();
    let a = ["generate", "--model", TINY_VLM, "--image", s(&bomb), "--prompt", "hi"];
    refused(&capped(3072, &a), &["bomb.png", "10000000000 pixels", "--max-image-pixels"]);
    // The limit is the user's to set, by flag or variable.
    let o = autoneural(&[
        "--max-image-pixels",
        "100",
        "generate",
        "--model",
        TINY_VLM,
        "--image",
        &format!("{TINY_VLM}/image.png"),
        "--prompt",
        "hi",
    ]);
    refused(&o, &["4096 pixels, more than the limit of 100"]);
    let o = bin()
        .env("AUTONEURAL_MAX_IMAGE_PIXELS", "100")
        .args(["generate", "--model", TINY_VLM, "--image", &format!("{TINY_VLM}/image.png"), "--prompt", "hi"])
        .output()
        .unwrap();
    refused(&o, &["limit of 100"]);
}

/// A PNG declaring `w x h` RGB pixels with an empty image stream.
fn png_header_only(w: u32, h: u32) -> Vec<u8> {
    fn chunk(kind: &[u8], data: &[u8]) -> Vec<u8> {
        let mut c = (data.len() as u32).to_be_bytes().to_vec();
        c.extend(kind);
        c.extend(data);
        let crc = crc32(&[kind, data].concat());
        c.extend(crc.to_be_bytes());
        c
    }
    fn crc32(bytes: &[u8]) -> u32 {
        let mut crc = !0u32;
        for &b in bytes {
            crc ^= u32::from(b);
            for _ in 0..8 {
                crc = if crc & 1 != 0 { (crc >> 1) ^ 0xEDB8_8320 } else { crc >> 1 };
            }
        }
        !crc
    }
    let mut ihdr = w.to_be_bytes().to_vec();
    ihdr.extend(h.to_be_bytes());
    ihdr.extend([8, 2, 0, 0, 0]);
    let mut png = b"\x89PNG\r\n\x1a\n".to_vec();
    png.extend(chunk(b"IHDR", &ihdr));
    png.extend(chunk(b"IDAT", &[0x78, 0x9c, 0x03, 0x00, 0x00, 0x00, 0x00, 0x01]));
    png.extend(chunk(b"IEND", &[]));
    png
}

#[test]
fn absurd_config_sizes_are_refused_by_field_before_allocation() {
    let tmp = tempfile::tempdir().unwrap();
    let image = format!("{TINY_VLM}/image.png");
    type Edit = fn(&mut serde_json::Value);
    let cases: [(&str, Edit, &str); 8] = [
        ("hidden", |c| c["text_config"]["hidden_size"] = 1_000_000.into(), "`hidden_size`: 1000000 is more than 65536"),
        ("vocab", |c| c["text_config"]["vocab_size"] = 1_000_000_000u64.into(), "`vocab_size`"),
        ("layers", |c| c["text_config"]["num_hidden_layers"] = 1_000_000_000u64.into(), "`num_hidden_layers`"),
        ("image", |c| c["vision_config"]["image_size"] = 1_000_000.into(), "`vision_config.image_size`"),
        ("image0", |c| c["vision_config"]["image_size"] = 0.into(), "`vision_config.image_size`: 0 is not between 32"),
        (
            "grid0",
            |c| c["vision_config"]["msfa_output_resolution"] = 0.into(),
            "`vision_config.msfa_output_resolution`",
        ),
        ("stem0", |c| c["vision_config"]["stem_size"] = 0.into(), "`vision_config.stem_size`"),
        ("channels0", |c| c["vision_config"]["block_args"][0][0] = "er_r1_k3_s2_e4_c0".into(), "channels (`c`)"),
    ];
    for (name, edit, message) in cases {
        let model = tiny_vlm(&tmp.path().join(name), edit);
        let a = ["generate", "--model", s(&model), "--image", &image, "--prompt", "hi", "--max-new-tokens", "1"];
        refused(&capped(3072, &a), &["config.json", message]);
    }
    // Within every field's bounds but larger than the machine: refused with its size.
    let model = tiny_vlm(&tmp.path().join("huge"), |c| {
        c["text_config"]["hidden_size"] = 16384.into();
        c["text_config"]["vocab_size"] = 4_000_000.into();
    });
    let a = ["generate", "--model", s(&model), "--image", &image, "--prompt", "hi", "--max-new-tokens", "1"];
    refused(&capped(3072, &a), &["parameters", "more than this process can hold"]);
    // Benchmarks: positions past the model's context, a batch past 1024.
    let a = ["bench", "lm", "--preset", "lfm2-nano", "--context", "1000000000000", "--prompt-len", "1"];
    refused(&capped(3072, &a), &["--context + --prompt-len + --new-tokens", "more than the model's context"]);
    refused(&capped(3072, &["bench", "lm", "--preset", "lfm2-nano", "--batch", "100000"]), &["--batch 100000"]);
    // The same bounds for a model an experiment builds from presets.
    let exp = experiment(tmp.path(), "", "");
    let text = std::fs::read_to_string(&exp)
        .unwrap()
        .replace("preset = \"lfm2-nano\"", "preset = \"lfm2-nano\"\nhidden_size = 4000000");
    std::fs::write(&exp, text).unwrap();
    refused(&capped(3072, &["run", s(&exp), "--no-dashboard"]), &["hidden_size", "4000000 is more than 65536"]);
}

#[test]
fn only_regular_files_are_read_and_shards_stay_in_their_directory() {
    let tmp = tempfile::tempdir().unwrap();
    let image = format!("{TINY_VLM}/image.png");
    for file in ["config.json", "tokenizer.json", "model.safetensors"] {
        let model = tiny_vlm(&tmp.path().join(file), |_| {});
        std::fs::remove_file(model.join(file)).unwrap();
        std::os::unix::fs::symlink("/dev/zero", model.join(file)).unwrap();
        let a = ["generate", "--model", s(&model), "--image", &image, "--prompt", "hi"];
        refused(&capped(3072, &a), &[file, "not a regular file (it is a character device)"]);
    }
    let zero = tmp.path().join("zero.png");
    std::os::unix::fs::symlink("/dev/zero", &zero).unwrap();
    refused(
        &autoneural(&["generate", "--model", TINY_VLM, "--image", s(&zero), "--prompt", "hi"]),
        &["zero.png", "not a regular file"],
    );
    refused(&autoneural(&["eval", "--model", TINY_VLM, "--data", "/dev/zero"]), &["/dev/zero: not a regular file"]);
    // A shard index naming a file outside the checkpoint.
    for target in ["/etc/passwd", "../outside.safetensors"] {
        let model = tiny_vlm(&tmp.path().join(format!("sharded{}", target.len())), |_| {});
        std::fs::rename(model.join("model.safetensors"), model.join("part.safetensors")).unwrap();
        let index = serde_json::json!({"weight_map": {"model.multi_modal_projector.linear_1.weight": target}});
        std::fs::write(model.join("model.safetensors.index.json"), index.to_string()).unwrap();
        let a = ["generate", "--model", s(&model), "--image", &image, "--prompt", "hi"];
        refused(&autoneural(&a), &["model.safetensors.index.json", "is not a file inside the checkpoint directory"]);
    }
}

#[test]
fn over_long_and_bad_records_follow_on_bad_record_and_are_counted() {
    let tmp = tempfile::tempdir().unwrap();
    // Every OCR conversation is longer than 20 tokens (16 image tokens and the question).
    let exp = experiment(tmp.path(), "", "");
    let text = std::fs::read_to_string(&exp).unwrap().replace("[data]\n", "[data]\nmax_seq_len = 20\n");
    std::fs::write(&exp, &text).unwrap();
    refused(&autoneural(&["run", s(&exp), "--no-dashboard"]), &["data.max_seq_len = 20", "source \"ocr\", line 1"]);
    // Skipped: a copy of the data with one bad line and one black image, counted in the log,
    // the metrics and the report, and training goes on without a NaN.
    let data = tmp.path().join("data");
    copy_dir(&shared_data().1, &data);
    let train = data.join("ocr/train.jsonl");
    let lines = std::fs::read_to_string(&train).unwrap();
    std::fs::write(&train, format!("{{not json\n{lines}")).unwrap();
    let black = image::RgbImage::new(64, 64);
    black.save(data.join("ocr/images/train-0.png")).unwrap();
    let text = text
        .replace("max_seq_len = 20\n", "on_bad_record = \"skip\"\n")
        .replace(&format!("dir = \"{}\"", shared_data().1.display()), &format!("dir = \"{}\"", data.display()))
        .replace("[model.vision]\n", "[model.vision]\nnorm = \"rms\"\n");
    std::fs::write(&exp, text).unwrap();
    let err = succeeded(&autoneural(&["run", s(&exp), "--no-dashboard"]));
    assert!(err.contains("skipped a bad record") && err.contains("train.jsonl:1: malformed JSON"), "{err}");
    let report = std::fs::read_to_string(tmp.path().join("runs/t/report.md")).unwrap();
    assert!(report.contains("## Skipped records") && report.contains("malformed JSON"), "{report}");
    let metrics = std::fs::read_to_string(tmp.path().join("runs/t/metrics.jsonl")).unwrap();
    assert!(metrics.contains("\"skipped_records\":1"), "{metrics}");
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            copy_dir(&p, &to.join(p.file_name().unwrap()));
        } else {
            std::fs::copy(&p, to.join(p.file_name().unwrap())).unwrap();
        }
    }
}

// 4. No silent wrong results.

#[test]
fn non_finite_weights_are_named_at_load() {
    let tmp = tempfile::tempdir().unwrap();
    let model = tiny_vlm(&tmp.path().join("nan"), |_| {});
    let path = model.join("model.safetensors");
    let mut bytes = std::fs::read(&path).unwrap();
    let header = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    let meta: serde_json::Value = serde_json::from_slice(&bytes[8..8 + header]).unwrap();
    let key = "model.multi_modal_projector.linear_1.weight";
    let start = meta[key]["data_offsets"][0].as_u64().unwrap() as usize + 8 + header;
    bytes[start..start + 4].copy_from_slice(&f32::NAN.to_le_bytes());
    std::fs::write(&path, bytes).unwrap();
    let a = ["generate", "--model", s(&model), "--image", &format!("{TINY_VLM}/image.png"), "--prompt", "hi"];
    refused(&autoneural(&a), &["NaN or infinite", key, "(1 of"]);
}

#[test]
fn evaluation_names_what_it_did_not_score() {
    let tmp = tempfile::tempdir().unwrap();
    let empty = tmp.path().join("empty.jsonl");
    std::fs::write(&empty, "").unwrap();
    refused(&autoneural(&["eval", "--model", TINY_VLM, "--data", s(&empty)]), &["empty.jsonl", "no conversations"]);
    // A family without a test split is named by `run`, in its output and its report.
    let data = tmp.path().join("data");
    copy_dir(&shared_data().1, &data);
    std::fs::remove_file(data.join("vqa/test.jsonl")).unwrap();
    let exp = experiment(tmp.path(), "", "");
    let text = std::fs::read_to_string(&exp).unwrap();
    let text =
        text.replace(&format!("dir = \"{}\"", shared_data().1.display()), &format!("dir = \"{}\"", data.display()));
    std::fs::write(&exp, text.replace("steps = 4", "steps = 1")).unwrap();
    let o = autoneural(&["run", s(&exp), "--no-dashboard"]);
    let err = succeeded(&o);
    assert!(err.contains("no test split for vqa: not evaluated"), "{err}");
    let report = std::fs::read_to_string(tmp.path().join("runs/t/report.md")).unwrap();
    assert!(report.contains("Not evaluated (no file of the split): vqa."), "{report}");
}

#[test]
fn a_quantization_file_that_does_not_apply_is_an_error_everywhere() {
    let tmp = tempfile::tempdir().unwrap();
    let data = conversations(&tmp.path().join("d"), 1);
    let image = format!("{TINY_VLM}/image.png");
    let encoding = |key: &str, bits: u32, scales: usize| {
        serde_json::json!({key: {"grid": {"bits": bits, "signed": true}, "granularity": {"granularity": "per_channel"},
            "shape": [96, 64], "axes": {"channel": 0, "block": 1}, "scales": vec![0.1; scales],
            "zero_points": vec![0.0; scales], "lpbq": null}})
    };
    let w = "multi_modal_projector.linear_1.weight";
    let cases = [
        (encoding("no.such.weight", 8, 96), "the model has no such weight"),
        (encoding(w, 3000, 96), "3000-bit integers are not supported"),
        (encoding(w, 8, 5), "5 scales and 5 zero points where its granularity needs 96"),
        (serde_json::json!({}), "holds no encodings"),
    ];
    for (i, (weights, message)) in cases.into_iter().enumerate() {
        let model = tiny_vlm(&tmp.path().join(format!("q{i}")), |_| {});
        let file = serde_json::json!({"format": "autoneural-quantization/1", "policy": {"name": "w8a16"},
            "weights": weights, "activations": {}});
        std::fs::write(model.join("quantization.json"), file.to_string()).unwrap();
        let a = ["generate", "--model", s(&model), "--image", &image, "--prompt", "hi", "--max-new-tokens", "1"];
        refused(&autoneural(&a), &["quantization.json", message]);
        refused(&autoneural(&["eval", "--model", s(&model), "--data", s(&data)]), &["quantization.json", message]);
    }
}

// 5. No panics on user input.

#[test]
fn broken_tokenizers_templates_and_flags_are_errors_naming_the_file() {
    let tmp = tempfile::tempdir().unwrap();
    let image = format!("{TINY_VLM}/image.png");
    let model = tiny_vlm(&tmp.path().join("tok"), |_| {});
    std::fs::write(model.join("tokenizer.json"), r#"{"model": {"type": "BPE", "vocab": {"a": 0}, "merges": ["a b"]}}"#)
        .unwrap();
    let a = ["generate", "--model", s(&model), "--image", &image, "--prompt", "hi"];
    refused(&autoneural(&a), &["tokenizer.json", "tokenizer:"]);
    let model = tiny_vlm(&tmp.path().join("template"), |_| {});
    std::fs::write(model.join("chat_template.jinja"), "  \n").unwrap();
    let a = ["generate", "--model", s(&model), "--image", &image, "--prompt", "hi"];
    refused(&autoneural(&a), &["chat_template.jinja", "is empty", "--raw"]);
    // `--sweep ""` means no sweep, as the help says; a bad width is named.
    let o = autoneural(&["quant-report", "--model", TINY_VLM, "--precision", "w8a16", "--sweep", ""]);
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success() && !out.contains("## Bit-width sweep"), "{}{out}", stderr(&o));
    refused(&autoneural(&["quant-report", "--model", TINY_VLM, "--sweep", "4,x"]), &["--sweep", "\"x\""]);
    // Inconsistent vision configs: heads that do not divide, a kv stride of 0.
    let model = tiny_vlm(&tmp.path().join("mqa"), |c| {
        c["vision_config"]["block_args"][2][1] = "mqa_r1_k3_h2_v0_s1_d8_c32".into();
    });
    let a = ["generate", "--model", s(&model), "--image", &image, "--prompt", "hi"];
    refused(&autoneural(&a), &["config.json", "block_args", "mqa_r1_k3_h2_v0_s1_d8_c32"]);
}

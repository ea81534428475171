//! `autoneural eval --benchmark` and `bench eval` end to end on the committed benchmark
//! fixtures: predictions in VLMEvalKit's layout, resumed by index, made elsewhere and scored
//! here, refused when they are not this benchmark's, several precisions in one command.

use std::path::Path;
use std::process::{Command, Output};

const TINY_VLM: &str = "tests/fixtures/vision/autoneural-tiny";
const MCQ: &str = "tests/fixtures/benchmarks/mcq.tsv";

fn autoneural(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_autoneural")).args(args).env("XDG_RUNTIME_DIR", "/tmp").output().unwrap()
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

#[track_caller]
fn json_of(o: &Output) -> serde_json::Value {
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    serde_json::from_slice(&o.stdout).unwrap()
}

#[track_caller]
fn refused(o: &Output, needles: &[&str]) {
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "expected a clean error:\n{err}");
    assert!(!err.contains("panicked"), "{err}");
    for n in needles {
        assert!(err.contains(n), "missing {n:?} in:\n{err}");
    }
}

/// The predictions file's rows as (index, prediction).
fn predictions(path: &Path) -> Vec<(String, String)> {
    let mut r = csv::ReaderBuilder::new().delimiter(b'\t').from_path(path).unwrap();
    let h = r.headers().unwrap().clone();
    let (i, p) = (h.iter().position(|c| c == "index").unwrap(), h.iter().position(|c| c == "prediction").unwrap());
    r.records().map(|rec| rec.unwrap()).map(|rec| (rec[i].to_string(), rec[p].to_string())).collect()
}

fn eval(predictions: &Path, extra: &[&str]) -> Output {
    let mut a = vec!["eval", "--model", TINY_VLM, "--benchmark", "mcq", "--data", MCQ, "--predictions", s(predictions)];
    a.extend_from_slice(&["--batch", "4", "--max-new-tokens", "4", "--format", "json"]);
    a.extend_from_slice(extra);
    autoneural(&a)
}

#[test]
fn a_benchmark_is_answered_scored_and_resumed_by_index() {
    let tmp = tempfile::tempdir().unwrap();
    let file = tmp.path().join("tiny_mcq.tsv");
    // Files of the user's beside the predictions file, one named as a temporary file of it
    // might be: none is opened or replaced.
    let theirs = [(".tiny_mcq.tsv.tmp", "mine"), ("notes.txt", "also mine")];
    for (name, text) in theirs {
        std::fs::write(tmp.path().join(name), text).unwrap();
    }
    let v = json_of(&eval(&file, &[]));
    assert_eq!(v["benchmark"], "mcq");
    assert_eq!(v["n"], 6);
    assert_eq!(v["prompt_style"], "vlmevalkit");
    assert!(v["categories"].as_object().is_some_and(|c| !c.is_empty()), "{v}");
    let rows = predictions(&file);
    assert_eq!(rows.len(), 6);
    // Predictions made elsewhere (here: every answer right) are not generated again but
    // scored: the resumed run gives 100%.
    let answers: Vec<String> = {
        let mut r = csv::ReaderBuilder::new().delimiter(b'\t').from_path(MCQ).unwrap();
        let h = r.headers().unwrap().clone();
        let a = h.iter().position(|c| c == "answer").unwrap();
        r.records().map(|rec| rec.unwrap()[a].to_string()).collect()
    };
    // Every prediction set to the answer, and the last row dropped: only it is generated again.
    let mut r = csv::ReaderBuilder::new().delimiter(b'\t').from_path(&file).unwrap();
    let header = r.headers().unwrap().clone();
    let p = header.iter().position(|c| c == "prediction").unwrap();
    let records: Vec<csv::StringRecord> = r.records().map(|x| x.unwrap()).collect();
    let mut w =
        csv::WriterBuilder::new().delimiter(b'\t').quote_style(csv::QuoteStyle::Always).from_path(&file).unwrap();
    w.write_record(&header).unwrap();
    for (rec, answer) in records.iter().zip(&answers).take(5) {
        let fields: Vec<&str> = rec.iter().enumerate().map(|(i, f)| if i == p { answer.as_str() } else { f }).collect();
        w.write_record(&fields).unwrap();
    }
    w.flush().unwrap();
    drop(w);
    let v = json_of(&eval(&file, &[]));
    let rows = predictions(&file);
    assert_eq!(rows.len(), 6);
    for ((_, p), a) in rows.iter().zip(&answers).take(5) {
        assert_eq!(p, a, "a prediction in the file was generated again");
    }
    assert!(v["score"].as_f64().unwrap() >= 5.0 / 6.0 * 100.0 - 1e-9, "{v}");
    for (name, text) in theirs {
        assert_eq!(std::fs::read_to_string(tmp.path().join(name)).unwrap(), text, "{name}");
    }
    let mut names: Vec<String> =
        std::fs::read_dir(tmp.path()).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
    names.sort();
    assert_eq!(names, [".tiny_mcq.tsv.tmp", "notes.txt", "tiny_mcq.tsv"], "no temporary file is left behind");
}

#[test]
fn a_predictions_file_of_something_else_is_refused_and_left_as_it_is() {
    let tmp = tempfile::tempdir().unwrap();
    // Not a predictions file.
    let notes = tmp.path().join("notes.tsv");
    std::fs::write(&notes, "my notes\n").unwrap();
    refused(&eval(&notes, &[]), &["notes.tsv", "not a predictions file", "left as it is"]);
    assert_eq!(std::fs::read_to_string(&notes).unwrap(), "my notes\n");
    // Another file's predictions with the same columns: the questions differ by index.
    let other = tmp.path().join("other.tsv");
    json_of(&eval(&other, &[]));
    let text = std::fs::read_to_string(&other).unwrap();
    let q = {
        let mut r = csv::ReaderBuilder::new().delimiter(b'\t').from_path(MCQ).unwrap();
        let h = r.headers().unwrap().clone();
        let i = h.iter().position(|c| c == "question").unwrap();
        r.records().next().unwrap().unwrap()[i].to_string()
    };
    let changed = text.replacen(&q, "Another question entirely?", 1);
    std::fs::write(&other, &changed).unwrap();
    refused(&eval(&other, &[]), &["other.tsv", "another `question`", "left as it is"]);
    assert_eq!(std::fs::read_to_string(&other).unwrap(), changed);
    // Predictions of another benchmark (other columns).
    let foreign = tmp.path().join("ocr.tsv");
    std::fs::copy("tests/fixtures/benchmarks/predictions_mcq.tsv", &foreign).unwrap();
    let before = std::fs::read(&foreign).unwrap();
    let a =
        ["eval", "--model", TINY_VLM, "--benchmark", "ocrbench", "--data", "tests/fixtures/benchmarks/ocrbench.tsv"];
    let o = autoneural(&[&a[..], &["--predictions", s(&foreign)]].concat());
    refused(&o, &["ocr.tsv", "other columns", "left as it is"]);
    assert_eq!(std::fs::read(&foreign).unwrap(), before);
}

#[test]
fn several_precisions_are_scored_side_by_side() {
    let tmp = tempfile::tempdir().unwrap();
    let file = tmp.path().join("p.tsv");
    let v = json_of(&eval(&file, &["--precision", "fp32,w8a16"]));
    let by = v["precisions"].as_object().unwrap();
    assert_eq!(by.keys().collect::<Vec<_>>(), ["fp32", "w8a16"]);
    assert!(tmp.path().join("p.fp32.tsv").exists() && tmp.path().join("p.w8a16.tsv").exists());
    // The markdown output sets them side by side with the change from the first.
    let mut a = vec!["eval", "--model", TINY_VLM, "--benchmark", "mcq", "--data", MCQ, "--predictions", s(&file)];
    a.extend_from_slice(&["--precision", "fp32,w8a16", "--max-new-tokens", "4"]);
    let o = autoneural(&a);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(out.contains("fp32") && out.contains("w8a16"), "{out}");
    // Calibrated: the op inputs are quantized too (the predictions of each precision resume).
    let calib = "tests/fixtures/data/records.jsonl";
    let file = tmp.path().join("c.tsv");
    let v = json_of(&eval(&file, &["--precision", "w8a16", "--calib", calib, "--samples", "2"]));
    assert_eq!(v["n"], 6);
    refused(&eval(&file, &["--precision", "w3x"]), &["--precision w3x"]);
}

#[test]
fn conversations_are_scored_as_vqa_and_bench_eval_compares_batches() {
    let tmp = tempfile::tempdir().unwrap();
    let file = tmp.path().join("records.tsv");
    let a = ["eval", "--model", TINY_VLM, "--benchmark", "vqa", "--data", "tests/fixtures/data/records.jsonl"];
    let v = json_of(&autoneural(&[&a[..], &["--predictions", s(&file), "--format", "json"]].concat()));
    assert_eq!(v["benchmark"], "vqa");
    assert!(v["n"].as_u64().unwrap() > 0);
    // A conversations file is asked its own questions unless a toolkit's prompts are asked for.
    assert_eq!(v["prompt_style"], "question");
    let o = autoneural(&[
        "bench",
        "eval",
        "--model",
        TINY_VLM,
        "--benchmark",
        "mcq",
        "--data",
        MCQ,
        "--batch",
        "1,4",
        "--limit",
        "6",
        "--max-new-tokens",
        "4",
        "--format",
        "json",
    ]);
    let v = json_of(&o);
    let rows = v["rows"].as_array().unwrap();
    assert_eq!(rows.len(), 2);
    assert_eq!(rows[0]["speedup"], 1.0);
    // Batched decoding answers as decoding alone does, also in groups side by side (one per
    // core: two groups of two on a machine with two cores or more).
    assert_eq!(rows[1]["differing_answers"], 0, "{v}");
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    assert_eq!(rows[1]["groups"], cores.min(2), "{v}");
}

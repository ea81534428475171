//! Predictions files: VLMEvalKit's layout both ways, resume after a kill, and a file that is
//! not ours refused and left as it was.

use std::path::{Path, PathBuf};

use autoneural_benchmarks::predictions::{self, PredictionsFile};
use autoneural_benchmarks::{
    Benchmark, Item, Prompt, PromptStyle, Scores, compare, load, read_scored, run, score, score_file,
};

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/benchmarks").join(name)
}

fn mcq() -> (&'static Benchmark, Vec<Item>) {
    let bench = Benchmark::by_name("mcq").unwrap();
    (bench, load(bench, &fixture("mcq.tsv")).unwrap().items)
}

/// The fixture's predictions: what the pandas-written predictions file holds, by index.
const ANSWERS: [&str; 6] = ["A", "(B)", "B. no", "The answer is E", "the first", "I \"think\"\tC\nor D"];

fn answer_of(p: &Prompt) -> String {
    let (_, items) = mcq();
    let i = items.iter().position(|i| p.text.contains(&i.question)).expect("a fixture question");
    ANSWERS[i].to_string()
}

#[test]
fn a_predictions_file_written_by_pandas_scores() {
    let bench = Benchmark::by_name("mcq").unwrap();
    let rows = read_scored(bench, &fixture("predictions_mcq.tsv")).unwrap();
    assert_eq!(rows.len(), 6);
    assert_eq!(rows[5].1, ANSWERS[5]);
    let s = score_file(bench, &fixture("predictions_mcq.tsv")).unwrap();
    // A right; (B), "B. no" wrong; E right; "the first" is option A's text, right; the last
    // names C and D: unmatched.
    assert_eq!((s.score, s.n, s.unmatched), (50.0, 6, 1));
    assert_eq!(s.categories["instance reasoning"].score, 100.0);
    assert_eq!(s.groups["split"]["dev"].score, 100.0 / 3.0);
    assert_eq!(s.prompt_style, None);
}

#[test]
fn a_run_writes_vlmevalkits_layout_and_reads_back() {
    let (bench, items) = mcq();
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("autoneural_mcq.tsv");
    let mut batches = Vec::new();
    let mut progress = Vec::new();
    let scores = run(
        bench,
        items.clone(),
        PromptStyle::Vlmevalkit,
        &out,
        4,
        |prompts| {
            batches.push(prompts.len());
            assert!(prompts.iter().all(|p| !p.images.is_empty()));
            Ok(prompts.iter().map(answer_of).collect())
        },
        |done, total| progress.push((done, total)),
    )
    .unwrap();
    assert_eq!(batches, [4, 2]);
    assert_eq!(progress, [(0, 6), (4, 6), (6, 6)]);
    assert_eq!((scores.score, scores.unmatched, scores.prompt_style), (50.0, 1, Some(PromptStyle::Vlmevalkit)));
    // The same bytes pandas writes with QUOTE_ALL (VLMEvalKit's dump): every field quoted,
    // the image dropped, the prediction last.
    assert_eq!(std::fs::read(&out).unwrap(), std::fs::read(fixture("predictions_mcq.tsv")).unwrap());
    let back = read_scored(bench, &out).unwrap();
    let again = score(bench, back.iter().map(|(i, p)| (i, p.as_str())), Some(PromptStyle::Vlmevalkit)).unwrap();
    assert_eq!(again, scores);
    // JSON with the fields the CLI prints.
    let json: serde_json::Value = serde_json::to_value(&scores).unwrap();
    for k in ["benchmark", "score", "n", "unmatched", "categories", "prompt_style"] {
        assert!(json.get(k).is_some(), "{k}");
    }
    assert_eq!(json["prompt_style"], "vlmevalkit");
    assert_eq!(json["categories"]["math"]["n"], 1);
    let back: Scores = serde_json::from_value(json).unwrap();
    assert_eq!(back, scores);
    assert!(scores.to_markdown().contains("| **overall** (accuracy, %) | **50.00** | 6 | 1 |"));
}

#[test]
fn a_killed_run_resumes_without_asking_again() {
    let (bench, items) = mcq();
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("p.tsv");
    // The second batch fails (the process "dies" there): the first is on disk.
    let mut calls = 0;
    let err = run(
        bench,
        items.clone(),
        PromptStyle::LmmsEval,
        &out,
        2,
        |prompts| {
            calls += 1;
            if calls == 2 {
                anyhow::bail!("killed");
            }
            Ok(prompts.iter().map(answer_of).collect())
        },
        |_, _| {},
    )
    .unwrap_err();
    assert!(format!("{err:#}").contains("killed"));
    let done = PredictionsFile::open(&out, &predictions::header(&items)).unwrap().done().clone();
    assert_eq!(done.len(), 2);
    // A write cut short after them: half a record at the end.
    let mut bytes = std::fs::read(&out).unwrap();
    let whole = bytes.len();
    bytes.extend_from_slice(b"\"3\"\t\"Is the squ");
    std::fs::write(&out, &bytes).unwrap();

    let mut asked = Vec::new();
    let scores = run(
        bench,
        items.clone(),
        PromptStyle::LmmsEval,
        &out,
        3,
        |prompts| {
            asked.extend(prompts.iter().map(|p| p.text.clone()));
            Ok(prompts.iter().map(answer_of).collect())
        },
        |_, _| {},
    )
    .unwrap();
    assert_eq!(asked.len(), 4, "rows 1 and 2 are not asked again");
    assert!(asked[0].starts_with("Is the square dark?"));
    assert_eq!(scores.n, 6);
    let table = predictions::read_table(&out).unwrap();
    let order: Vec<&str> = table.rows.iter().map(|r| r[0].as_str()).collect();
    assert_eq!(order, ["1", "2", "3", "4", "5", "6"]);
    assert!(std::fs::read(&out).unwrap().len() > whole);

    // Everything there: a third run asks nothing.
    let s = run(bench, items, PromptStyle::LmmsEval, &out, 3, |_| panic!("nothing to ask"), |_, _| {}).unwrap();
    assert_eq!(s, scores);
}

#[test]
fn a_file_that_is_not_these_predictions_is_refused_and_left_as_it_was() {
    let (bench, items) = mcq();
    let dir = tempfile::tempdir().unwrap();
    let cases: [(&str, Vec<u8>); 3] = [
        // Another benchmark's predictions (VLMEvalKit's, for OCRBench).
        ("ocr.tsv", b"\"index\"\t\"question\"\t\"answer\"\t\"category\"\t\"prediction\"\n\"0\"\t\"q\"\t\"['a']\"\t\"c\"\t\"a\"\n".to_vec()),
        // A dataset TSV, not predictions.
        ("data.tsv", std::fs::read(fixture("mcq.tsv")).unwrap()),
        // Anything else.
        ("notes.tsv", b"my notes\n".to_vec()),
    ];
    for (name, bytes) in cases {
        let path = dir.path().join(name);
        std::fs::write(&path, &bytes).unwrap();
        let e = run(bench, items.clone(), PromptStyle::Vlmevalkit, &path, 4, |_| panic!("not asked"), |_, _| {})
            .unwrap_err();
        assert!(format!("{e:#}").contains("left as it is"), "{name}: {e:#}");
        assert_eq!(std::fs::read(&path).unwrap(), bytes, "{name} untouched");
    }
}

#[test]
fn runs_at_several_precisions_compare() {
    let (bench, items) = mcq();
    let fp32 = score(bench, items.iter().zip(["A", "A", "A", "E", "A", "C"]), Some(PromptStyle::Vlmevalkit)).unwrap();
    let w8 = score(bench, items.iter().zip(["A", "A", "B", "E", "A", "C"]), Some(PromptStyle::Vlmevalkit)).unwrap();
    let table = compare(&[("fp32", &fp32), ("w8a16", &w8)]).unwrap();
    // 5 of 6 (83.33) against 4 of 6 (66.67).
    assert!(table.contains("| **overall** | 83.33 | 66.67 (-16.67) |"), "{table}");
    assert!(table.contains("| fine-grained perception | 100.00 | 50.00 (-50.00) |"), "{table}");
    assert!(table.contains("| coarse perception | 100.00 | 100.00 (+0.00) |"), "{table}");
    let mut other = w8.clone();
    other.prompt_style = Some(PromptStyle::LmmsEval);
    assert!(compare(&[("fp32", &fp32), ("lmms", &other)]).is_err());
    // Two benchmarks: a summary first.
    let mut textvqa = fp32.clone();
    textvqa.benchmark = "TextVQA_VAL".into();
    let both = compare(&[("fp32", &fp32), ("w8a16", &w8), ("fp32", &textvqa)]).unwrap();
    assert!(both.starts_with("| benchmark | run | score | change |"), "{both}");
    assert!(both.contains("| mcq | w8a16 | 66.67 | -16.67 |"), "{both}");
}

//! The synthetic dataset generator and the tokenizer trainer: determinism, record validity,
//! answer vocabularies and balance, and a tokenizer the model crate loads and the training
//! encoder accepts.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use autoneural_data::synth::{
    Family, RENDER_VERSION, Split, SynthError, SynthOptions, SynthSummary, differences, synthesize,
};
use autoneural_data::tokenizer_train::{IMAGE_SPECIALS, LFM2_SPECIALS, TokenizerTrainError, train_tokenizer};
use autoneural_data::{Format, JsonlRecords, Layout, OnBadRecord, Record, Role, SourceSpec, encode_record};
use autoneural_model::tokenizer::{ChatMessage, TextTokenizer};
use autoneural_model::vlm::ImageTokens;
use serde_json::Value;

const SAMPLES: usize = 20;
const SIZE: u32 = 64;

fn options(out: &Path, seed: u64, families: &[Family]) -> SynthOptions {
    SynthOptions { out: out.to_path_buf(), samples: SAMPLES, image_size: SIZE, seed, families: families.to_vec() }
}

fn synth(out: &Path, seed: u64, families: &[Family]) -> SynthSummary {
    synthesize(&options(out, seed, families)).expect("synthesis succeeds")
}

fn read(path: &Path) -> Vec<u8> {
    std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn records(path: &Path) -> Vec<Record> {
    JsonlRecords::open(path, OnBadRecord::Fail).unwrap().collect::<Result<_, _>>().unwrap()
}

/// The (question, answer) pairs of a record.
fn turns(r: &Record) -> Vec<(&str, &str)> {
    r.messages.chunks(2).map(|p| (p[0].content.as_str(), p[1].content.as_str())).collect()
}

#[test]
fn same_seed_same_bytes_other_seed_other_data() {
    let (a, b, c) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    synth(a.path(), 7, &Family::ALL);
    synth(b.path(), 7, &Family::ALL);
    synth(c.path(), 8, &Family::ALL);
    let mut differ = 0;
    for f in Family::ALL {
        for split in Split::ALL {
            let rel = Path::new(f.name()).join(format!("{}.jsonl", split.name()));
            assert_eq!(read(&a.path().join(&rel)), read(&b.path().join(&rel)), "{}", rel.display());
            differ += usize::from(read(&a.path().join(&rel)) != read(&c.path().join(&rel)));
        }
        let png = Path::new(f.name()).join("images/train-3.png");
        assert_eq!(read(&a.path().join(&png)), read(&b.path().join(&png)), "{}", png.display());
        assert_ne!(read(&a.path().join(&png)), read(&c.path().join(&png)), "{}", png.display());
    }
    assert_eq!(differ, Family::ALL.len() * Split::ALL.len(), "another seed must change every split");
    // The manifest does not record where it was written.
    assert_eq!(read(&a.path().join("manifest.json")), read(&b.path().join("manifest.json")));
}

#[test]
fn families_do_not_depend_on_each_other() {
    let (all, one) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    synth(all.path(), 3, &Family::ALL);
    synth(one.path(), 3, &[Family::Ocr]);
    let rel = Path::new("ocr/val.jsonl");
    assert_eq!(read(&all.path().join(rel)), read(&one.path().join(rel)));
    assert!(!one.path().join("vqa").exists());
}

#[test]
fn records_parse_images_decode_answers_are_closed_and_balanced() {
    let dir = tempfile::tempdir().unwrap();
    let summary = synth(dir.path(), 0, &Family::ALL);
    assert_eq!(summary.manifest, dir.path().join("manifest.json"));
    assert_eq!(summary.splits.len(), Family::ALL.len() * Split::ALL.len());
    for family in Family::ALL {
        let vocabulary = family.answers();
        let mut by_answer: BTreeMap<String, usize> = BTreeMap::new();
        for split in Split::ALL {
            let path = dir.path().join(family.name()).join(format!("{}.jsonl", split.name()));
            let recs = records(&path);
            assert_eq!(recs.len(), if split == Split::Train { SAMPLES } else { 20 }, "{}", path.display());
            for r in &recs {
                assert_eq!(r.task.as_deref(), Some(family.name()));
                assert_eq!(r.images.len(), 1);
                let img = r.images[0].load().unwrap();
                assert_eq!(img.rgb.dimensions(), (SIZE, SIZE));
                let n = turns(r).len();
                assert_eq!(r.messages.len(), 2 * n);
                if family == Family::MultiTurn {
                    assert!((2..=3).contains(&n), "line {}: {n} turns", r.line);
                } else {
                    assert_eq!(n, 1);
                }
                for (i, m) in r.messages.iter().enumerate() {
                    assert_eq!(m.role, if i % 2 == 0 { Role::User } else { Role::Assistant });
                    assert_eq!(m.content.contains("<image>"), i == 0, "line {}: {:?}", r.line, m.content);
                }
                for (question, answer) in turns(r) {
                    assert!(vocabulary.iter().any(|a| a == answer), "{family}: {question:?} -> {answer:?}");
                    if split == Split::Train {
                        *by_answer.entry(answer.to_string()).or_default() += 1;
                    }
                }
            }
        }
        let total: usize = by_answer.values().sum();
        let top = by_answer.values().max().copied().unwrap_or(0);
        assert!((top as f64) < 0.5 * total as f64, "{family}: one answer has {top} of {total} turns");
    }
}

#[test]
fn answers_follow_the_question_types() {
    let dir = tempfile::tempdir().unwrap();
    synth(dir.path(), 11, &Family::ALL);
    let colors = ["red", "green", "blue", "yellow", "purple"];
    let shapes = ["circle", "square", "triangle"];
    for family in Family::ALL {
        for r in records(&dir.path().join(family.name()).join("train.jsonl")) {
            for (q, a) in turns(&r) {
                let q = q.trim_start_matches("<image>");
                let ok = match q {
                    "How many shapes are there?" => ["1", "2", "3", "4"].contains(&a),
                    "Where is the circle?" | "Where is the square?" | "Where is the triangle?" => {
                        ["left", "right", "top", "bottom"].contains(&a)
                    }
                    "Which bar is highest?" => a.len() == 1 && a.chars().all(|c| c.is_ascii_uppercase()),
                    "Is the line going up or down?" => a == "up" || a == "down",
                    "What word is written?" => (3..=5).contains(&a.len()) && a.chars().all(|c| c.is_ascii_uppercase()),
                    "Which parking level?" => a.parse::<u32>().is_ok_and(|v| (1..=6).contains(&v)),
                    "Which seat is occupied?" => ["driver", "passenger", "rear left", "rear right"].contains(&a),
                    "How many seats are occupied?" => a.parse::<u32>().is_ok_and(|v| v <= 4),
                    "What is the CODE?" => a.len() == 2 && a.parse::<u32>().is_ok(),
                    _ if q.starts_with("What color is the ") => colors.contains(&a),
                    _ if q.starts_with("What shape is ") => shapes.contains(&a),
                    _ if q.starts_with("What is the value of bar ") => {
                        a.parse::<u32>().is_ok_and(|v| (1..=9).contains(&v))
                    }
                    _ if q.starts_with("What is the ") || q == "Which slot?" => !a.is_empty(),
                    _ => false,
                };
                assert!(ok, "{family} line {}: {q:?} -> {a:?}", r.line);
            }
        }
    }
}

#[test]
fn manifest_reports_counts_and_majority_baselines() {
    let dir = tempfile::tempdir().unwrap();
    let summary = synth(dir.path(), 5, &[Family::Vqa, Family::Chart]);
    let m: Value = serde_json::from_slice(&read(&summary.manifest)).unwrap();
    assert_eq!(m["format_version"], 1);
    assert_eq!(m["options"]["samples"], SAMPLES);
    assert_eq!(m["options"]["families"], serde_json::json!(["vqa", "chart"]));
    for s in &summary.splits {
        let entry = &m["families"][s.family.name()][s.split.name()];
        assert_eq!(entry["records"], s.records);
        assert_eq!(entry["majority_answer"], s.majority_answer.as_str());
        assert_eq!(entry["jsonl"], format!("{}/{}.jsonl", s.family.name(), s.split.name()));
        assert!(s.majority_share > 0.0 && s.majority_share < 0.5, "{s:?}");
        assert!(entry["by_kind"].as_object().is_some_and(|k| k.len() >= 3));
    }
}

/// A directory is reused only for the options and renderer that made it: each difference is
/// named, and a manifest from before the render version counts as version 1.
#[test]
fn an_existing_set_is_compared_with_the_options_that_would_remake_it() {
    let dir = tempfile::tempdir().unwrap();
    let summary = synth(dir.path(), 5, &[Family::Vqa, Family::Chart]);
    let same = options(dir.path(), 5, &[Family::Chart, Family::Vqa]);
    assert_eq!(differences(&same).unwrap(), Vec::<String>::new());
    let other = SynthOptions { image_size: 96, ..options(dir.path(), 6, &[Family::Vqa]) };
    let d = differences(&other).unwrap();
    assert_eq!(d.len(), 3, "{d:?}");
    assert!(d[0].starts_with("families [\"chart\",\"vqa\"]"), "{d:?}");
    assert!(d[1].starts_with("image_size 64 (asked: 96)"), "{d:?}");
    assert!(d[2].starts_with("seed 5 (asked: 6)"), "{d:?}");

    let mut m: Value = serde_json::from_slice(&read(&summary.manifest)).unwrap();
    assert_eq!(m["render_version"], RENDER_VERSION);
    m.as_object_mut().unwrap().remove("render_version");
    std::fs::write(&summary.manifest, m.to_string()).unwrap();
    assert_eq!(differences(&same).unwrap(), vec![format!("render_version 1 (asked: {RENDER_VERSION})")]);
}

#[test]
fn bad_options_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let bad = [
        SynthOptions { image_size: 16, ..options(dir.path(), 0, &Family::ALL) },
        SynthOptions { samples: 0, ..options(dir.path(), 0, &Family::ALL) },
        options(dir.path(), 0, &[]),
        options(dir.path(), 0, &[Family::Ocr, Family::Ocr]),
    ];
    for opts in bad {
        assert!(matches!(synthesize(&opts), Err(SynthError::Options(_))), "{opts:?}");
    }
    // The output path is a file: the error names it.
    let file = dir.path().join("taken");
    std::fs::write(&file, "x").unwrap();
    let err = synthesize(&options(&file, 0, &[Family::Ocr])).unwrap_err();
    assert!(err.to_string().contains("taken"), "{err}");
    assert!("plot".parse::<Family>().unwrap_err().contains("multi_turn"));
    assert_eq!("multi_turn".parse::<Family>(), Ok(Family::MultiTurn));
}

fn train_files(dir: &Path) -> Vec<SourceSpec> {
    Family::ALL.iter().map(|f| jsonl(dir.join(f.name()).join("train.jsonl"))).collect()
}

/// A JSONL source of one file, unchecked (so a missing file fails when it is read).
fn jsonl(path: PathBuf) -> SourceSpec {
    SourceSpec {
        files: vec![path],
        format: Format::Jsonl,
        layout: Layout::Auto,
        task: None,
        policy: OnBadRecord::Fail,
        shuffle: 0,
        seed: 0,
    }
}

#[test]
fn trained_tokenizer_loads_and_round_trips() {
    let data = tempfile::tempdir().unwrap();
    let tok_dir = tempfile::tempdir().unwrap();
    synth(data.path(), 0, &Family::ALL);
    let summary = train_tokenizer(&train_files(data.path()), 400, tok_dir.path()).unwrap();
    assert!(summary.vocab_size > LFM2_SPECIALS.len() + 256 && summary.vocab_size <= 403, "{summary:?}");
    assert_eq!(summary.records, Family::ALL.len() * SAMPLES);

    let tok = TextTokenizer::from_dir(tok_dir.path(), &[]).unwrap();
    assert_eq!(tok.vocab_size(), summary.vocab_size);
    for (id, special) in LFM2_SPECIALS.iter().enumerate() {
        assert_eq!(tok.token_id(special), Some(id as u32), "{special}");
    }
    let image_id = tok.token_id("<image>").unwrap();
    assert_eq!(image_id, summary.image_token_id);
    for (i, special) in IMAGE_SPECIALS.iter().enumerate() {
        assert_eq!(tok.token_id(special), Some(image_id + i as u32));
    }
    assert_eq!(tok.stop_ids(), &[7], "EOS is <|im_end|>");

    // The post-processor prepends <|startoftext|>; the chat template renders LFM2's format.
    let text = "<image>What color is the circle?";
    assert_eq!(tok.encode(text, true).unwrap()[0], 1);
    let ids = tok.encode(text, false).unwrap();
    assert_eq!(ids[0], image_id);
    assert_eq!(tok.decode(&ids, false).unwrap(), text);
    let chat = tok.render_chat(&[ChatMessage::user(text)], true).unwrap();
    assert_eq!(chat, format!("<|startoftext|><|im_start|>user\n{text}<|im_end|>\n<|im_start|>assistant\n"));

    // Every record round-trips and encodes for training.
    let images = ImageTokens { image_token_id: image_id, wrap: true, bounds: None };
    for f in Family::ALL {
        for r in records(&data.path().join(f.name()).join("val.jsonl")) {
            let messages: Vec<ChatMessage> = r
                .messages
                .iter()
                .map(|m| ChatMessage { role: m.role.as_str().into(), content: m.content.clone() })
                .collect();
            let rendered = tok.render_chat(&messages, false).unwrap();
            assert_eq!(tok.decode(&tok.encode(&rendered, false).unwrap(), false).unwrap(), rendered);
            let enc = encode_record(&tok, &r, images, &vec![4; r.images.len()]).unwrap();
            assert!(enc.loss_mask.iter().any(|&m| m), "{f} line {}: nothing to learn", r.line);
        }
    }
    // Merges were learnt from the records: the role names are single tokens.
    for word in ["user", "assistant"] {
        assert_eq!(tok.encode(word, false).unwrap().len(), 1, "{word}");
    }
}

#[test]
fn tokenizer_errors_name_the_problem() {
    let out = tempfile::tempdir().unwrap();
    assert!(matches!(train_tokenizer(&[], 400, out.path()), Err(TokenizerTrainError::NoFiles)));
    let missing = out.path().join("nope.jsonl");
    assert!(matches!(
        train_tokenizer(&[jsonl(missing.clone())], 100, out.path()),
        Err(TokenizerTrainError::VocabSize(100))
    ));
    let err = train_tokenizer(&[jsonl(missing)], 400, out.path()).unwrap_err();
    assert!(err.to_string().contains("nope.jsonl"), "{err}");
}

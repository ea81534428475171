//! Sources read the fixture set (scripts/make_data_fixtures.py) the same in every format and
//! layout, return to any recorded position exactly (shuffled or not, across files and
//! epochs), and refuse broken files naming the file and what is wrong.

use std::path::{Path, PathBuf};

use autoneural_data::sources::{Source, SourceConfig};
use autoneural_data::{DataError, Format, Layout, OnBadRecord, Record, SourceSpec, Split};

fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/data")
}

fn spec(pattern: &str, format: Format) -> SourceSpec {
    SourceSpec {
        files: SourceSpec::files(&fixtures().join(pattern)).unwrap(),
        format,
        layout: Layout::Auto,
        task: Some("shapes".into()),
        policy: OnBadRecord::Fail,
        shuffle: 0,
        seed: 0,
    }
}

/// Every format and layout of the fixture set.
fn all_formats() -> Vec<(&'static str, SourceSpec)> {
    vec![
        ("jsonl", spec("records.jsonl", Format::Jsonl)),
        ("parquet messages", spec("records.parquet", Format::Parquet)),
        ("parquet conversations", spec("records-conversations.parquet", Format::Parquet)),
        ("parquet texts", spec("records-texts.parquet", Format::Parquet)),
        ("parquet qa", spec("records-qa.parquet", Format::Parquet)),
        ("webdataset", spec("shards/records-*.tar", Format::Webdataset)),
    ]
}

/// What training sees of a record: its turns (image tags placed as training places them),
/// its task and its decoded images.
fn seen(r: &Record) -> (Vec<(String, String)>, Option<String>, Vec<Vec<u8>>) {
    let tagged = r.messages.iter().any(|m| m.content.contains("<image>"));
    let turns = r
        .messages
        .iter()
        .enumerate()
        .map(|(i, m)| {
            let content = if !tagged && i == 0 { format!("<image>{}", m.content) } else { m.content.clone() };
            (m.role.as_str().to_string(), content)
        })
        .collect();
    let images = r.images.iter().map(|i| i.load().unwrap().rgb.into_raw()).collect();
    (turns, r.task.clone(), images)
}

fn drain(s: &mut Source) -> Vec<Record> {
    std::iter::from_fn(|| s.next_record()).collect::<Result<_, _>>().unwrap()
}

#[test]
fn every_format_and_layout_reads_the_same_records() {
    let mut reference = None;
    for (name, spec) in all_formats() {
        assert_eq!(spec.count().unwrap(), 12, "{name}");
        let records = drain(&mut spec.open().unwrap());
        assert_eq!(records.len(), 12, "{name}");
        // Numbered within each file: the shards hold 7 and 5 samples.
        let lines: Vec<usize> = if name == "webdataset" { (1..=7).chain(1..=5).collect() } else { (1..=12).collect() };
        assert_eq!(records.iter().map(|r| r.line).collect::<Vec<_>>(), lines, "{name}");
        let seen: Vec<_> = records.iter().map(seen).collect();
        match &reference {
            None => reference = Some(seen),
            Some(want) => assert!(&seen == want, "{name} differs from the JSONL records"),
        }
    }
}

#[test]
fn a_recorded_position_resumes_the_same_stream() {
    for (name, mut spec) in all_formats() {
        for shuffle in [0, 5] {
            spec.shuffle = shuffle;
            spec.seed = 7;
            // Two epochs uninterrupted.
            let mut s = spec.open().unwrap();
            let mut all = drain(&mut s);
            s.restart().unwrap();
            all.extend(drain(&mut s));
            if shuffle > 0 {
                let order = |v: &[Record]| v.iter().map(|r| seen(r)).collect::<Vec<_>>();
                let (first, second) = (order(&all[..12]), order(&all[12..]));
                let unshuffled = drain(&mut SourceSpec { shuffle: 0, ..spec.clone() }.open().unwrap());
                assert_ne!(first, order(&unshuffled), "{name}: shuffled");
                assert_ne!(first, second, "{name}: each epoch its own order");
            }
            // Stopped after k records (across a shuffle block, a row group, a shard, an
            // epoch), resumed in a fresh stream.
            for k in [0, 3, 7, 8, 12, 13, 20] {
                let mut s = spec.open().unwrap();
                let mut got = Vec::new();
                while got.len() < k {
                    match s.next_record() {
                        Some(r) => got.push(r.unwrap()),
                        None => s.restart().unwrap(),
                    }
                }
                let at = s.position();
                let json = serde_json::to_string(&at).unwrap();
                let mut resumed = spec.open().unwrap();
                resumed.seek(&serde_json::from_str(&json).unwrap()).unwrap();
                while got.len() < 24 {
                    match resumed.next_record() {
                        Some(r) => got.push(r.unwrap()),
                        None => resumed.restart().unwrap(),
                    }
                }
                let lines =
                    |v: &[Record]| v.iter().map(|r| (r.line, r.messages[1].content.clone())).collect::<Vec<_>>();
                assert_eq!(lines(&got), lines(&all), "{name}, shuffle {shuffle}, resumed after {k}");
                assert!(got == all, "{name}, shuffle {shuffle}, resumed after {k}: other records");
            }
        }
    }
}

#[test]
fn declared_sources_resolve_their_splits_and_formats() {
    let text = r#"
name = "shapes"
path = "shards/records-*.tar"
val = "records.parquet"
"#;
    let mut c: SourceConfig = toml::from_str(text).unwrap();
    c.resolve(&fixtures());
    let train = c.spec(Split::Train, OnBadRecord::Fail).unwrap().unwrap();
    assert_eq!((train.format, train.files.len(), train.task.as_deref()), (Format::Webdataset, 2, Some("shapes")));
    assert_eq!(c.spec(Split::Val, OnBadRecord::Fail).unwrap().unwrap().format, Format::Parquet);
    assert!(c.spec(Split::Test, OnBadRecord::Fail).is_none());

    c.path = fixtures().join("nothing-*.parquet");
    let err = c.spec(Split::Train, OnBadRecord::Fail).unwrap().unwrap_err().to_string();
    assert!(err.contains("nothing-*.parquet") && err.contains("no file matches") && err.contains("shapes"), "{err}");
    let err = toml::from_str::<SourceConfig>("name = \"x\"\npath = \"a\"\nshufle = 3\n").unwrap_err().to_string();
    assert!(err.contains("shufle"), "{err}");
}

/// A copy of fixture `name` in a temporary directory, changed by `edit`.
fn broken(name: &str, edit: impl Fn(&mut Vec<u8>)) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let mut bytes = std::fs::read(fixtures().join(name)).unwrap();
    edit(&mut bytes);
    let path = dir.path().join(Path::new(name).file_name().unwrap());
    std::fs::write(&path, bytes).unwrap();
    (dir, path)
}

fn read_all(path: &Path, policy: OnBadRecord) -> Result<Vec<Record>, DataError> {
    let mut s = SourceSpec::file(path, policy)?.open()?;
    std::iter::from_fn(|| s.next_record()).collect()
}

#[test]
fn broken_files_are_refused_naming_the_file() {
    // Not Parquet at all, and a Parquet file cut short.
    let (_d, path) = broken("records.parquet", |b| b.truncate(b.len() / 2));
    let err = read_all(&path, OnBadRecord::Fail).unwrap_err().to_string();
    assert!(err.contains("records.parquet") && err.contains("Parquet"), "{err}");
    // A tar whose header checksum is wrong.
    let (_d, path) = broken("shards/records-0.tar", |b| b[600] ^= 0xff);
    let err = read_all(&path, OnBadRecord::Fail).unwrap_err().to_string();
    assert!(err.contains("records-0.tar"), "{err}");
    // A tar cut inside a member.
    let (_d, path) = broken("shards/records-0.tar", |b| b.truncate(3000));
    let err = read_all(&path, OnBadRecord::Fail).unwrap_err().to_string();
    assert!(err.contains("records-0.tar") && err.contains("cut short"), "{err}");
    // A JSONL record whose image is not an image: found when the image is loaded.
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("x.png"), b"not a png").unwrap();
    let line = r#"{"messages": [{"role": "user", "content": "<image>q"}, {"role": "assistant", "content": "a"}], "image": "x.png"}"#;
    std::fs::write(dir.path().join("d.jsonl"), format!("{line}\n")).unwrap();
    let records = read_all(&dir.path().join("d.jsonl"), OnBadRecord::Fail).unwrap();
    let err = records[0].images[0].load().unwrap_err().to_string();
    assert!(err.contains("x.png") && err.contains("not a PNG"), "{err}");
    // An unknown extension.
    std::fs::write(dir.path().join("d.csv"), "a,b\n").unwrap();
    let err = SourceSpec::file(&dir.path().join("d.csv"), OnBadRecord::Fail).unwrap_err().to_string();
    assert!(err.contains("d.csv") && err.contains(".parquet"), "{err}");
}

#[test]
fn a_sample_without_a_row_is_a_bad_record() {
    // A shard with one image and no .json: refused, or under "skip" counted and passed.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s.tar");
    {
        let mut b = tar::Builder::new(std::fs::File::create(&path).unwrap());
        let png = std::fs::read(fixtures().join("images/00.png")).unwrap();
        let mut h = tar::Header::new_gnu();
        h.set_size(png.len() as u64);
        h.set_cksum();
        b.append_data(&mut h, "lonely.png", png.as_slice()).unwrap();
        let json = std::fs::read(fixtures().join("records.jsonl")).unwrap();
        let first = json.split(|&c| c == b'\n').next().unwrap().to_vec();
        let row = String::from_utf8(first).unwrap().replace(r#""images": ["images/00.png"], "#, "");
        let mut h = tar::Header::new_gnu();
        h.set_size(row.len() as u64);
        h.set_cksum();
        b.append_data(&mut h, "ok.json", row.as_bytes()).unwrap();
        b.finish().unwrap();
    }
    let err = read_all(&path, OnBadRecord::Fail).unwrap_err().to_string();
    assert!(err.contains("s.tar:1") && err.contains("lonely") && err.contains("no .json"), "{err}");
    let mut s = SourceSpec::file(&path, OnBadRecord::Skip).unwrap().open().unwrap();
    let ok: Vec<Record> = std::iter::from_fn(|| s.next_record()).collect::<Result<_, _>>().unwrap();
    assert_eq!(ok.len(), 0, "the text-only sample has a tag but no image");
    assert_eq!(s.skipped().count, 2);
}

#[test]
fn written_parquet_and_shards_read_back_the_same_records() {
    use autoneural_data::sources::write::{ParquetSink, TarSink};
    let dir = tempfile::tempdir().unwrap();
    let source = drain(&mut spec("records.jsonl", Format::Jsonl).open().unwrap());
    let parquet = dir.path().join("out.parquet");
    let mut sink = ParquetSink::create(&parquet, 5).unwrap();
    let tar = dir.path().join("out.tar");
    let mut shard = TarSink::create(&tar).unwrap();
    for (i, r) in source.iter().enumerate() {
        sink.push(r.clone()).unwrap();
        shard.push(&format!("{i:05}"), r).unwrap();
    }
    assert_eq!(sink.finish().unwrap(), 12);
    assert_eq!(shard.finish().unwrap(), 12);
    let want: Vec<_> = source.iter().map(seen).collect();
    for path in [parquet, tar] {
        let s = SourceSpec::file(&path, OnBadRecord::Fail).unwrap();
        assert_eq!(s.count().unwrap(), 12, "{}", path.display());
        let back = drain(&mut s.open().unwrap());
        assert!(back.iter().map(seen).collect::<Vec<_>>() == want, "{}", path.display());
    }
}

#[test]
fn the_paper_mixture_recipe_reads_with_the_papers_shares() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../datasets/paper_mixture.toml");
    let recipe = autoneural_data::Recipe::from_file(&path).unwrap();
    let shares: Vec<(&str, f64)> = recipe.sources.iter().map(|s| (s.name.as_str(), s.weight)).collect();
    assert_eq!(shares, [("vqa", 0.35), ("document", 0.25), ("chart", 0.20), ("ocr", 0.15), ("multi_turn", 0.05)]);
    // Paths resolve against the recipe's directory.
    assert!(recipe.sources.iter().all(|s| s.path.is_absolute() && s.path.to_string_lossy().contains("datasets")));
}

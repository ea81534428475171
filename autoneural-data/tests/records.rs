//! JSONL conversation records: both shapes parse, image paths resolve against the file,
//! and bad lines are errors with file and line (or skipped and counted).

use autoneural_data::{DataError, ImageRef, JsonlRecords, OnBadRecord, Role};

fn write(dir: &std::path::Path, name: &str, lines: &[&str]) -> std::path::PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, lines.join("\n")).unwrap();
    path
}

#[test]
fn both_shapes_parse_and_images_resolve() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("img")).unwrap();
    std::fs::write(dir.path().join("img/a.png"), b"").unwrap();
    let path = write(
        dir.path(),
        "train.jsonl",
        &[
            r#"{"messages": [{"role": "user", "content": "<image>How many cars?"}, {"role": "assistant", "content": "Two."}], "images": ["img/a.png"], "task": "vqa"}"#,
            "",
            r#"{"conversations": [{"from": "system", "value": "Be brief."}, {"from": "human", "value": "<image>\nColour?"}, {"from": "gpt", "value": "Red."}], "image": "img/a.png"}"#,
        ],
    );
    let records: Vec<_> = JsonlRecords::open(&path, OnBadRecord::Fail).unwrap().collect::<Result<_, _>>().unwrap();
    assert_eq!(records.len(), 2);
    assert_eq!(records[0].task.as_deref(), Some("vqa"));
    assert_eq!(records[0].images, vec![ImageRef::Path(dir.path().join("img/a.png"))]);
    assert_eq!(records[0].line, 1);
    assert_eq!(records[1].line, 3);
    let roles: Vec<Role> = records[1].messages.iter().map(|m| m.role).collect();
    assert_eq!(roles, [Role::System, Role::User, Role::Assistant]);
    assert_eq!(records[1].messages[2].content, "Red.");
}

#[test]
fn bad_lines_name_file_and_line_or_are_skipped() {
    let dir = tempfile::tempdir().unwrap();
    let good = r#"{"messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello"}]}"#;
    let cases = [
        ("{not json", "malformed JSON"),
        (r#"{"messages": [{"role": "robot", "content": "x"}]}"#, "expected system, user/human or assistant/gpt"),
        (r#"{"messages": [{"role": "user", "content": "x"}]}"#, "no assistant turn"),
        (r#"{"text": "x"}"#, "no `messages`"),
        (
            r#"{"messages": [{"role": "user", "content": "<image>x"}, {"role": "assistant", "content": "y"}], "images": ["nope.png"]}"#,
            "does not exist",
        ),
        (
            r#"{"messages": [{"role": "user", "content": "<image><image>x"}, {"role": "assistant", "content": "y"}], "images": []}"#,
            "2 `<image>` tags but 0 images",
        ),
    ];
    for (bad, what) in cases {
        let path = write(dir.path(), "d.jsonl", &[good, bad, good]);
        let mut it = JsonlRecords::open(&path, OnBadRecord::Fail).unwrap();
        assert!(it.next().unwrap().is_ok());
        let err = it.next().unwrap().unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("d.jsonl:2:") && msg.contains(what), "{msg}");
        assert!(matches!(err, DataError::Record { line: 2, .. }));
        // Skipping: the two good records come through, the bad one is counted.
        let mut it = JsonlRecords::open(&path, OnBadRecord::Skip).unwrap();
        assert_eq!(it.by_ref().filter(|r| r.is_ok()).count(), 2);
        assert_eq!(it.skipped.count, 1);
        assert!(it.skipped.first[0].contains("d.jsonl:2:"));
    }
    let missing = JsonlRecords::open(&dir.path().join("missing.jsonl"), OnBadRecord::Fail);
    let err = missing.err().unwrap().to_string();
    assert!(err.contains("missing.jsonl") && err.contains("No such file"), "{err}");
}

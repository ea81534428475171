//! Mixtures follow their recipe's weights exactly and reproducibly, restart exhausted
//! sources, and report bad recipes with the file and key.

use autoneural_data::{MixtureSampler, PAPER_MIXTURE, Recipe, RecipeError, Split};

fn source(dir: &std::path::Path, name: &str, n: usize) {
    std::fs::create_dir_all(dir.join(name)).unwrap();
    let lines: Vec<String> = (0..n)
        .map(|i| {
            format!(
                r#"{{"messages": [{{"role": "user", "content": "q{i}"}}, {{"role": "assistant", "content": "{name} {i}"}}], "task": "{name}"}}"#
            )
        })
        .collect();
    std::fs::write(dir.join(name).join("train.jsonl"), lines.join("\n")).unwrap();
}

#[test]
fn paper_mixture_proportions_are_followed_reproducibly() {
    let dir = tempfile::tempdir().unwrap();
    for &(name, _) in PAPER_MIXTURE {
        source(dir.path(), name, 7); // small sources: they restart many times
    }
    let draw = || {
        let mut s = MixtureSampler::new(&Recipe::paper(dir.path()), Split::Train).unwrap();
        let names: Vec<String> = (0..1000).map(|_| s.next_record().unwrap().0).collect();
        (names, s.drawn.clone())
    };
    let (a, counts) = draw();
    let (b, _) = draw();
    assert_eq!(a, b, "same recipe, same order");
    for (i, &(_, w)) in PAPER_MIXTURE.iter().enumerate() {
        let want = 1000.0 * w / 100.0;
        assert!((counts[i] as f64 - want).abs() <= 1.0, "{counts:?}");
    }
    // The first 20 draws already hold the mixture to within one record per source.
    let head = &a[..20];
    assert_eq!(head.iter().filter(|n| *n == "vqa").count(), 7);
    assert_eq!(head.iter().filter(|n| *n == "multi_turn").count(), 1);
}

#[test]
fn recipe_files_resolve_paths_and_report_errors() {
    let dir = tempfile::tempdir().unwrap();
    source(dir.path(), "a", 3);
    source(dir.path(), "b", 3);
    let write = |text: &str| {
        let p = dir.path().join("recipe.toml");
        std::fs::write(&p, text).unwrap();
        p
    };
    let ok = write(
        "[[source]]\nname = \"a\"\npath = \"a/train.jsonl\"\nweight = 3\n[[source]]\nname = \"b\"\npath = \"b/train.jsonl\"\nweight = 1\n",
    );
    let recipe = Recipe::from_file(&ok).unwrap();
    assert_eq!(recipe.fractions(), vec![0.75, 0.25]);
    let mut s = MixtureSampler::new(&recipe, Split::Train).unwrap();
    let names: Vec<String> = (0..8).map(|_| s.next_record().unwrap().0).collect();
    assert_eq!(names.iter().filter(|n| *n == "a").count(), 6);

    for (text, what) in [
        ("[[source]]\nname = \"a\"\npath = \"a/train.jsonl\"\nweight = -1\n", "weight: must be a positive number"),
        ("[[source]]\nname = \"a\"\npath = \"a/train.jsonl\"\nwieght = 1\n", "wieght"),
        ("[[source]\nname = \"a\"", "recipe.toml"),
        ("on_bad_record = \"fail\"\nsource = []\n", "no [[source]]"),
    ] {
        let err = Recipe::from_file(&write(text)).unwrap_err().to_string();
        assert!(err.contains("recipe.toml") && err.contains(what), "{err}");
    }
    let missing = write("[[source]]\nname = \"z\"\npath = \"z/train.jsonl\"\nweight = 1\n");
    let err = MixtureSampler::new(&Recipe::from_file(&missing).unwrap(), Split::Train).err().unwrap();
    assert!(matches!(err, RecipeError::Data(_)) && err.to_string().contains("z/train.jsonl"), "{err}");
}

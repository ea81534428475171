//! Benchmark files as VLMEvalKit and lmms-eval ship them (fixtures written by
//! scripts/make_benchmark_fixtures.py with pandas and `datasets`).

use std::path::{Path, PathBuf};

use autoneural_benchmarks::{Benchmark, BenchmarkId, ImageLoader, ImageSource, Item, PromptStyle, load, prompt_text};
use autoneural_data::ImageRef;

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/benchmarks").join(name)
}

fn bytes(r: &ImageRef) -> Vec<u8> {
    match r {
        ImageRef::Bytes { data, .. } => data.to_vec(),
        ImageRef::Path(p) => std::fs::read(p).unwrap(),
    }
}

fn mcq() -> Vec<Item> {
    let bench = Benchmark::by_name("mcq").unwrap();
    let loaded = load(bench, &fixture("mcq.tsv")).unwrap();
    assert_eq!(loaded.without_image, 0);
    loaded.items
}

#[test]
fn tsv_rows_read_with_quoting_options_and_hints() {
    let items = mcq();
    assert_eq!(items.len(), 6);
    let q4 = &items[3];
    assert_eq!(q4.index, "4");
    // pandas quoted this cell: a tab, a newline and doubled quotes inside.
    assert_eq!(q4.question, "Read the label:\t\"tab\"\nand \"quotes\"");
    assert_eq!(q4.hint.as_deref(), Some("He said \"hi\""));
    assert_eq!(q4.options.len(), 5);
    assert_eq!(q4.options[4], ('E', "five".to_string()));
    assert_eq!(q4.answer, "E");
    assert_eq!(q4.l2_category.as_deref(), Some("single-instance reasoning"));
    // Two options: the empty C, D, E cells are no options; no hint is None.
    assert_eq!(items[1].options.len(), 2);
    assert_eq!(items[0].hint, None);
    assert_eq!(items[0].split.as_deref(), Some("dev"));
    // Every column but the image is kept, in file order.
    let names: Vec<&str> = items[0].columns.iter().map(|(k, _)| k.as_str()).collect();
    assert_eq!(
        names,
        ["index", "question", "hint", "A", "B", "C", "D", "E", "answer", "category", "l2-category", "split"]
    );
}

#[test]
fn tsv_images_reuse_by_index_and_lists_hold_several() {
    let items = mcq();
    let mut loader = ImageLoader::new();
    let first = loader.load(&items[0]).unwrap();
    let reused = loader.load(&items[2]).unwrap();
    assert_eq!(first.len(), 1);
    assert_eq!(bytes(&first[0]), bytes(&reused[0]), "row 3's image is `1`: row 1's");
    assert!(matches!(items[2].images[0], ImageSource::Tsv { row: 1, .. }));
    let two = loader.load(&items[4]).unwrap();
    assert_eq!(two.len(), 2);
    assert_ne!(bytes(&two[0]), bytes(&two[1]));
    // Every image decodes to the 12x12 PNG it was.
    for item in &items {
        for image in loader.load(item).unwrap() {
            let loaded = image.load().unwrap();
            assert_eq!(loaded.rgb.dimensions(), (12, 12), "{}", item.index);
        }
    }
}

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p
}

#[test]
fn a_malformed_row_is_named_in_the_error() {
    let dir = tempfile::tempdir().unwrap();
    let image = "iVBORw0KGgoAAAANSUhEUgAAAAwAAAAMCAIAAADZF8uwAAAALUlEQVR4nGO8o6HBQAgwEVTBwMDAAqH0Hj2CC12SkyPHJOopYsHlDtpYR2dFADYBBVZObhDVAAAAAElFTkSuQmCC";
    let vqa = Benchmark::by_name("vqa").unwrap();
    // Row 2 has an unquoted tab inside its question: one cell too many.
    let p = write(
        dir.path(),
        "bad.tsv",
        &format!("index\timage\tquestion\tanswer\n1\t{image}\tWhat?\tyes\n2\t1\tWhat\tnow?\tno\n"),
    );
    let e = load(vqa, &p).unwrap_err().to_string();
    assert!(e.contains("bad.tsv") && e.contains("row 2") && e.contains("5 cells where the header has 4"), "{e}");
    // An image reused from an index no row has: the row and the column.
    let p = write(dir.path(), "reuse.tsv", &format!("index\timage\tquestion\tanswer\n1\t{image}\tq\ta\n2\t7\tq\ta\n"));
    let e = load(vqa, &p).unwrap_err().to_string();
    assert!(e.contains("row 2, column `image`") && e.contains("index `7`"), "{e}");
    // Duplicate indices.
    let p = write(dir.path(), "dup.tsv", &format!("index\timage\tquestion\tanswer\n1\t{image}\tq\ta\n1\t1\tq\ta\n"));
    let e = load(vqa, &p).unwrap_err().to_string();
    assert!(e.contains("row 2, column `index`") && e.contains("row 1"), "{e}");
    // No index column at all.
    let p = write(dir.path(), "noindex.tsv", "question\tanswer\nq\ta\n");
    assert!(load(vqa, &p).unwrap_err().to_string().contains("no `index` column"));
    // A file of another benchmark: AI2D needs options.
    let p = write(dir.path(), "vqa.tsv", &format!("index\timage\tquestion\tanswer\n1\t{image}\tq\ta\n"));
    let e = load(Benchmark::by_name("AI2D_TEST").unwrap(), &p).unwrap_err().to_string();
    assert!(e.contains("no column A, B"), "{e}");
    // A row without an image is dropped, as VLMEvalKit drops it.
    let p = write(dir.path(), "noimg.tsv", &format!("index\timage\tquestion\tanswer\n1\t{image}\tq\ta\n2\t\tq\ta\n"));
    let loaded = load(vqa, &p).unwrap();
    assert_eq!((loaded.items.len(), loaded.without_image), (1, 1));
}

#[test]
fn parquet_rows_map_to_vlmevalkit_columns() {
    let ai2d = Benchmark::by_name("ai2d").unwrap();
    let items = load(ai2d, &fixture("ai2d.parquet")).unwrap().items;
    let tsv = mcq();
    assert_eq!(items.len(), 5);
    // Row 4 of the Parquet is TSV index 6 ("How many shapes?", answer B = position 1).
    let q = &items[4];
    assert_eq!(q.index, "4", "no index column: the row number");
    assert_eq!(q.question, "How many shapes?");
    assert_eq!(q.options, tsv[5].options);
    assert_eq!(q.answer, "B");
    let mut loader = ImageLoader::new();
    let parquet_image = loader.load(q).unwrap();
    let tsv_image = loader.load(&tsv[5]).unwrap();
    assert_eq!(bytes(&parquet_image[0]), bytes(&tsv_image[0]));
    // Reading backwards reopens the file.
    assert_eq!(bytes(&loader.load(&items[0]).unwrap()[0]), bytes(&loader.load(&tsv[0]).unwrap()[0]));

    let mmstar = Benchmark::by_name("mmstar").unwrap();
    let items = load(mmstar, &fixture("mmstar.parquet")).unwrap().items;
    assert_eq!(items.len(), 5);
    let q = &items[3];
    assert_eq!(q.index, "4");
    assert_eq!(q.question, tsv[3].question, "the stem, options split off");
    assert_eq!(q.options, tsv[3].options);
    assert_eq!(q.l2_category.as_deref(), Some("single-instance reasoning"));
    assert_eq!(q.column("bench"), Some("fixture"));
    assert_eq!(q.column("meta_info"), Some(r#"{"source":"fixture","split":"test"}"#));
    // The two sources give the same prompts (for a question without a hint: MMStar's
    // Parquet has none).
    for style in [PromptStyle::Vlmevalkit, PromptStyle::LmmsEval] {
        assert_eq!(prompt_text(mmstar, &items[0], style), prompt_text(mmstar, &tsv[0], style));
    }
}

#[test]
fn benchmarks_by_name_alias_or_columns() {
    assert_eq!(Benchmark::by_name("ai2d").unwrap().name, "AI2D_TEST");
    assert_eq!(Benchmark::by_name("MMSTAR").unwrap().id, BenchmarkId::MmStar);
    assert_eq!(Benchmark::by_name("docvqa_val").unwrap().name, "DocVQA_VAL");
    assert_eq!(Benchmark::by_name("MathVista_MINI").unwrap().id, BenchmarkId::MathVista);
    assert!(Benchmark::named("coco").unwrap_err().contains("AI2D_TEST"));
    assert_eq!(Benchmark::infer(&fixture("mcq.tsv")).unwrap().id, BenchmarkId::Mcq);
    assert_eq!(Benchmark::infer(&fixture("chartqa.tsv")).unwrap().id, BenchmarkId::ChartQa);
    assert_eq!(Benchmark::infer(&fixture("ai2d.parquet")).unwrap().id, BenchmarkId::Ai2d);
    let dir = tempfile::tempdir().unwrap();
    let other = dir.path().join("my_set.tsv");
    std::fs::copy(fixture("docvqa.tsv"), &other).unwrap();
    assert_eq!(Benchmark::infer(&other).unwrap().id, BenchmarkId::Vqa);
    let other = dir.path().join("my_choices.tsv");
    std::fs::copy(fixture("mcq.tsv"), &other).unwrap();
    assert_eq!(Benchmark::infer(&other).unwrap().id, BenchmarkId::Mcq);
}

#[test]
fn every_fixture_reads_as_its_benchmark() {
    for (name, file, n) in [
        ("OCRBench", "ocrbench.tsv", 4),
        ("TextVQA_VAL", "textvqa.tsv", 3),
        ("DocVQA_VAL", "docvqa.tsv", 3),
        ("ChartQA_TEST", "chartqa.tsv", 4),
        ("MathVista_MINI", "mathvista.tsv", 4),
    ] {
        let bench = Benchmark::by_name(name).unwrap();
        let items = load(bench, &fixture(file)).unwrap().items;
        assert_eq!(items.len(), n, "{file}");
        let mut loader = ImageLoader::new();
        for item in &items {
            assert_eq!(loader.load(item).unwrap().len(), 1, "{file} {}", item.index);
        }
    }
}

#[test]
fn prompts_in_each_style() {
    let items = mcq();
    let mcq = Benchmark::by_name("mcq").unwrap();
    let ai2d = Benchmark::by_name("AI2D_TEST").unwrap();
    assert_eq!(
        prompt_text(mcq, &items[1], PromptStyle::Vlmevalkit),
        "Hint: The image shows one shape.\nQuestion: Which shape is drawn?\nOptions:\nA. a square\nB. a circle\n\
         Please select the correct answer from the options above. \n"
    );
    assert_eq!(
        prompt_text(ai2d, &items[1], PromptStyle::LmmsEval),
        "Which shape is drawn?\nA. a square\nB. a circle\nAnswer with the option's letter from the given choices directly."
    );
    let mmstar = Benchmark::by_name("MMStar").unwrap();
    assert_eq!(
        prompt_text(mmstar, &items[0], PromptStyle::LmmsEval),
        "What colour is the background?\nOptions: A: red, B: green, C: blue, D: yellow\n\
         Answer with the option's letter from the given choices directly"
    );

    let textvqa = Benchmark::by_name("textvqa").unwrap();
    let t = load(textvqa, &fixture("textvqa.tsv")).unwrap().items;
    assert_eq!(
        prompt_text(textvqa, &t[0], PromptStyle::Vlmevalkit),
        "what is the brand of this camera?\nAnswer the question using a single word or phrase."
    );
    assert_eq!(
        prompt_text(textvqa, &t[0], PromptStyle::LmmsEval),
        "What is the brand of this camera?\nAnswer the question using a single word or phrase."
    );
    let chartqa = Benchmark::by_name("chartqa").unwrap();
    let c = load(chartqa, &fixture("chartqa.tsv")).unwrap().items;
    assert_eq!(
        prompt_text(chartqa, &c[0], PromptStyle::LmmsEval),
        "What is the value of the red bar?\nAnswer the question with a single word."
    );
    let ocr = Benchmark::by_name("ocrbench").unwrap();
    let o = load(ocr, &fixture("ocrbench.tsv")).unwrap().items;
    assert_eq!(prompt_text(ocr, &o[0], PromptStyle::Vlmevalkit), "what is written in the image?");

    let mathvista = Benchmark::by_name("mathvista").unwrap();
    let m = load(mathvista, &fixture("mathvista.tsv")).unwrap().items;
    // VLMEvalKit: the query as it is.
    assert!(prompt_text(mathvista, &m[0], PromptStyle::Vlmevalkit).starts_with("Hint: Please answer"));
    // lmms-eval's format prompt, rebuilt from the query.
    assert_eq!(
        prompt_text(mathvista, &m[0], PromptStyle::LmmsEval),
        "What fraction of the shape is blue?\nA. 3/11\nB. 8/11\nC. 6/11\nD. 3/5\n\
         Answer with the option's letter from the given choices directly."
    );
    assert_eq!(
        prompt_text(mathvista, &m[1], PromptStyle::LmmsEval),
        "How many objects are left? (Unit: objects)\nAnswer the question using a single integer number."
    );
    assert_eq!(
        prompt_text(mathvista, &m[2], PromptStyle::LmmsEval),
        "How much money does Luca need? (Unit: $)\n\
         Answer the question using a single floating-point number with two decimal places."
    );
}

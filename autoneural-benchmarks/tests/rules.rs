//! Every scoring rule on fixed predictions, with the expected scores worked out by hand.

use autoneural_benchmarks::rules::{self, MathVistaQuestion, OptionMatch, Verdict};
use autoneural_benchmarks::{Benchmark, Item, score};

fn options(texts: &[&str]) -> Vec<(char, String)> {
    texts.iter().enumerate().map(|(i, t)| (char::from(b'A' + i as u8), t.to_string())).collect()
}

fn strings(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| s.to_string()).collect()
}

#[test]
fn mcq_option_matching_reads_letters_then_texts() {
    let o = options(&["cat", "dog", "bird", "fish"]);
    let m = |p: &str| rules::match_option(p, &o);
    assert_eq!(m("B"), OptionMatch::Option('B'));
    assert_eq!(m("(B)"), OptionMatch::Option('B'));
    assert_eq!(m("B. dog"), OptionMatch::Option('B'));
    assert_eq!(m("The answer is B"), OptionMatch::Option('B'));
    assert_eq!(m("**B**"), OptionMatch::Option('B'));
    // The option's text alone: no letter, one option's text inside.
    assert_eq!(m("Dog"), OptionMatch::Option('B'));
    // Two letters: neither; and no text either.
    assert_eq!(m("A or B"), OptionMatch::Unmatched);
    // Nothing that names an option.
    assert_eq!(m("I am not sure"), OptionMatch::Unmatched);
    assert_eq!(m(""), OptionMatch::Unmatched);
    // Two option texts: ambiguous.
    assert_eq!(m("a cat and a dog"), OptionMatch::Unmatched);
}

#[test]
fn mcq_matching_keeps_vlmevalkits_conditions() {
    let o = options(&["cat", "dog", "bird", "fish"]);
    let m = |p: &str| rules::match_option(p, &o);
    // The letter must be among the last four words (`index > len - 5`): here it is the first
    // of six, so the letter step gives up and the text step finds "dog".
    assert_eq!(m("B because it is a dog"), OptionMatch::Option('B'));
    assert_eq!(m("B because it is clearly visible"), OptionMatch::Unmatched);
    // ... unless an `answer is X` phrase names it (any case, letters A-D only).
    assert_eq!(m("B because the answer is b"), OptionMatch::Option('B'));
    // A lone `Z` or a refusal phrase declines.
    assert_eq!(m("Z"), OptionMatch::Refused);
    assert_eq!(m("Cannot determine the answer from the image"), OptionMatch::Refused);
    // The text step only reads predictions at most twice as long as all options together.
    assert_eq!(m("it is a dog, as anyone can see"), OptionMatch::Unmatched);
    // Letters are upper-case words: `a` is an article, not option A.
    assert_eq!(m("a"), OptionMatch::Unmatched);
}

#[test]
fn ocrbench_matches_substrings_and_formulas_without_spaces() {
    let stop = strings(&["STOP"]);
    assert!(rules::ocrbench_correct("The sign says stop.", &stop, "Regular Text Recognition"));
    assert!(!rules::ocrbench_correct("The sign says go.", &stop, "Regular Text Recognition"));
    // Any of the answers.
    assert!(rules::ocrbench_correct(
        "hello  world!",
        &strings(&["Hello World", "hello  world"]),
        "Scene Text-centric VQA"
    ));
    // The formula category: spaces and newlines removed from both, case kept.
    let frac = strings(&["\\frac { a } { b }"]);
    assert!(rules::ocrbench_correct("$\\frac{a}\n{b}$", &frac, rules::HMER));
    assert!(!rules::ocrbench_correct("$\\frac{A}{B}$", &frac, rules::HMER));
    // The same prediction outside that category is compared with spaces.
    assert!(!rules::ocrbench_correct("$\\frac{a}{b}$", &frac, "Regular Text Recognition"));
}

#[test]
fn ocrbench_scores_the_count_by_category() {
    let bench = Benchmark::by_name("ocrbench").unwrap();
    let mk = |i: usize, answer: &str, cat: &str| {
        let mut item = Item::new(&i.to_string());
        item.answer = answer.into();
        item.category = Some(cat.into());
        item
    };
    let items = [
        mk(0, "['STOP']", "Regular Text Recognition"),
        mk(1, "['abc']", "Digit String Recognition"),
        mk(2, "['x^2']", rules::HMER),
        mk(3, "['Tokyo']", "Scene Text-centric VQA"),
    ];
    let preds = ["stop", "abd", "x ^ 2", "It is in tokyo"];
    let s = score(bench, items.iter().zip(preds), None).unwrap();
    assert_eq!(s.score, 3.0);
    assert_eq!(s.extra["final_score_norm"], 0.3);
    assert_eq!(s.categories["Text Recognition"].score, 1.0);
    assert_eq!(s.categories["Text Recognition"].n, 2);
    assert_eq!(s.categories[rules::HMER].score, 1.0);
    assert_eq!(s.groups["category"]["Digit String Recognition"].score, 0.0);
}

#[test]
fn anls_at_and_around_the_threshold() {
    let gold = strings(&["abcd"]);
    // 2 edits over 4 characters: similarity exactly 0.5 counts.
    assert_eq!(rules::anls("abxy", &gold), 0.5);
    // 3 of 4: 0.25 is below the threshold, so 0.
    assert_eq!(rules::anls("axyz", &gold), 0.0);
    assert_eq!(rules::anls("abcx", &gold), 0.75);
    // Case and surrounding space do not count as edits...
    assert_eq!(rules::anls(" ABCD ", &gold), 1.0);
    // ... but the length divided by is the raw prediction's: 1 edit over 6 characters.
    assert!((rules::anls("abcx  ", &gold) - (1.0 - 1.0 / 6.0)).abs() < 1e-12);
    // The best of several answers.
    assert_eq!(rules::anls("abcd", &strings(&["zzzz", "abcd"])), 1.0);
    assert_eq!(rules::anls("anything", &[]), 0.0);
}

#[test]
fn relaxed_accuracy_at_exactly_five_percent() {
    assert!(rules::relaxed_correct("105", "100"));
    assert!(rules::relaxed_correct("95", "100"));
    assert!(!rules::relaxed_correct("105.01", "100"));
    assert!(!rules::relaxed_correct("94.99", "100"));
    assert!(rules::relaxed_correct(" 100 ", "100"));
    // A percentage is its fraction.
    assert!(rules::relaxed_correct("12%", "0.12"));
    assert!(rules::relaxed_correct("0.12", "12%"));
    // Not numbers: equal texts, any case.
    assert!(rules::relaxed_correct("Japan", "japan"));
    assert!(!rules::relaxed_correct("Japan.", "japan"));
    // A target of 0 is compared as text.
    assert!(rules::relaxed_correct("0", "0"));
    assert!(!rules::relaxed_correct("0.0", "0"));

    let bench = Benchmark::by_name("ChartQA_TEST").unwrap();
    let mk = |i: usize, answer: &str, split: &str| {
        let mut item = Item::new(&i.to_string());
        item.answer = answer.into();
        item.split = Some(split.into());
        item
    };
    let items = [mk(0, "100", "human"), mk(1, "2019", "augmented"), mk(2, "12%", "human"), mk(3, "Japan", "augmented")];
    // 2018 for 2019 is within 5%: years are numbers to the rule.
    let s = score(bench, items.iter().zip(["104", "2018", "0.121", "Korea"]), None).unwrap();
    assert_eq!(s.score, 75.0);
    assert_eq!(s.categories["human"].score, 100.0);
    assert_eq!(s.categories["augmented"].score, 50.0);
}

#[test]
fn vqa_accuracy_with_zero_to_ten_matching_annotators() {
    for m in 0..=10usize {
        let mut answers = vec!["yes".to_string(); m];
        answers.extend(vec!["no".to_string(); 10 - m]);
        // For each annotator left out: matches among the other nine, over 3, at most 1.
        let matched = (m as f64 - 1.0).max(0.0) / 3.0;
        let unmatched = m as f64 / 3.0;
        let expected = (m as f64 * matched.min(1.0) + (10 - m) as f64 * unmatched.min(1.0)) / 10.0;
        let got = rules::vqa_accuracy("Yes.", &answers);
        assert!((got - expected).abs() < 1e-12, "m = {m}: {got} != {expected}");
    }
    let two = |m| {
        let mut a = vec!["2".to_string(); m];
        a.extend(vec!["3".to_string(); 10 - m]);
        a
    };
    assert!((rules::vqa_accuracy("yes", &two(0))).abs() < 1e-12);
    assert!((rules::vqa_accuracy("two", &two(1)) - 0.3).abs() < 1e-12);
    assert!((rules::vqa_accuracy("Two", &two(2)) - 0.6).abs() < 1e-12);
    assert!((rules::vqa_accuracy("two.", &two(3)) - 0.9).abs() < 1e-12);
    assert_eq!(rules::vqa_accuracy("2", &two(4)), 1.0);
}

#[test]
fn vqa_normalisation_as_the_vqa_evaluation() {
    assert_eq!(rules::vqa_normalize("Two dogs."), "2 dogs");
    assert_eq!(rules::vqa_normalize("The Dog"), "dog");
    assert_eq!(rules::vqa_normalize("dont"), "don't");
    assert_eq!(rules::vqa_normalize("1,000"), "1000");
    assert_eq!(rules::vqa_normalize("3.5"), "3.5");
    assert_eq!(rules::vqa_normalize("yes!"), "yes");
    assert_eq!(rules::vqa_normalize("black-and-white"), "black and white");
    assert_eq!(rules::vqa_normalize("black - white"), "black white");
    assert_eq!(rules::vqa_normalize("new\tyork\n"), "new york");
}

#[test]
fn mmstar_averages_its_l2_categories() {
    let bench = Benchmark::by_name("MMStar").unwrap();
    let mk = |i: usize, cat: &str, l2: &str| {
        let mut item = Item::new(&i.to_string());
        item.options = options(&["x", "y"]);
        item.answer = "A".into();
        item.category = Some(cat.into());
        item.l2_category = Some(l2.into());
        item
    };
    let items = [
        mk(0, "math", "geometry"),
        mk(1, "math", "geometry"),
        mk(2, "math", "statistical reasoning"),
        mk(3, "coarse perception", "image emotion"),
        mk(4, "coarse perception", "image emotion"),
        mk(5, "coarse perception", "image emotion"),
        mk(6, "coarse perception", "image emotion"),
    ];
    // geometry 1 of 2, statistical reasoning 1 of 1, image emotion 1 of 4 (one unmatched).
    let preds = ["A", "B", "A", "A", "B", "B", "no idea"];
    let s = score(bench, items.iter().zip(preds), None).unwrap();
    assert_eq!(s.categories["geometry"].score, 50.0);
    assert_eq!(s.categories["statistical reasoning"].score, 100.0);
    assert_eq!(s.categories["image emotion"].score, 25.0);
    assert_eq!(s.categories["image emotion"].unmatched, 1);
    assert!((s.score - (50.0 + 100.0 + 25.0) / 3.0).abs() < 1e-9);
    // Each category: the mean of its l2-categories.
    assert_eq!(s.groups["category"]["math"].score, 75.0);
    assert_eq!(s.groups["category"]["math"].n, 3);
    assert_eq!(s.groups["category"]["coarse perception"].score, 25.0);
    // VLMEvalKit's overall, the mean over items: 3 of 7.
    assert!((s.extra["overall_vlmevalkit"] - 300.0 / 7.0).abs() < 1e-9);
    assert_eq!((s.n, s.unmatched), (7, 1));
}

fn mv(question_type: &str, answer_type: &str, answer: &str, precision: Option<u32>) -> MathVistaQuestion {
    MathVistaQuestion {
        question_type: question_type.into(),
        answer_type: answer_type.into(),
        choices: if question_type == "multi_choice" { strings(&["3/11", "8/11", "6/11", "3/5"]) } else { vec![] },
        answer: answer.into(),
        answer_option: None,
        precision,
    }
}

#[test]
fn mathvista_by_rule() {
    let v = |p: &str, q: &MathVistaQuestion| rules::mathvista(p, q).unwrap();
    let float = mv("free_form", "float", "1.45", Some(2));
    assert_eq!(v("Luca needs $1.449 in total.", &float), Verdict::Correct);
    assert_eq!(v("1.45", &float), Verdict::Correct);
    assert_eq!(v("It costs 1.44", &float), Verdict::Wrong);
    assert_eq!(v("about a dollar and a half", &float), Verdict::Unmatched);
    // One decimal: 1.45 and 1.5 round the same way... 1.4 does not.
    let one = mv("free_form", "float", "1.5", Some(1));
    assert_eq!(v("1.46", &one), Verdict::Correct);
    assert_eq!(v("1.44", &one), Verdict::Wrong);
    // Without a precision, the answer's decimals.
    assert_eq!(v("0.604", &mv("free_form", "float", "0.6", None)), Verdict::Correct);
    let int = mv("free_form", "integer", "14", None);
    assert_eq!(v("There are 3 rows, so 14 objects are left.", &int), Verdict::Correct);
    assert_eq!(v("1,014", &mv("free_form", "integer", "1014", None)), Verdict::Correct);
    assert_eq!(v("-2", &mv("free_form", "integer", "-2", None)), Verdict::Correct);
    assert_eq!(v("13", &int), Verdict::Wrong);
    assert_eq!(v("fourteen", &int), Verdict::Unmatched);
    let list = mv("free_form", "list", "[2007, 2008]", None);
    assert_eq!(v("The peak is between [2007, 2008].", &list), Verdict::Correct);
    assert_eq!(v("[2008, 2009]", &list), Verdict::Wrong);
    assert_eq!(v("2007 and 2008", &list), Verdict::Unmatched);
    // Free-form text a rule cannot read: unmatched, not guessed.
    let text = mv("free_form", "text", "Tokyo", None);
    assert_eq!(v("tokyo", &text), Verdict::Correct);
    assert_eq!(v("The largest city is Tokyo", &text), Verdict::Unmatched);
    // Multiple choice: option matching over the choices.
    let mc = mv("multi_choice", "text", "8/11", None);
    assert_eq!(v("The correct answer is (B) 8/11.", &mc), Verdict::Correct);
    assert_eq!(v("8/11", &mc), Verdict::Correct);
    assert_eq!(v("C", &mc), Verdict::Wrong);
    assert_eq!(v("none of them", &mc), Verdict::Unmatched);
    assert!(rules::mathvista("A", &mv("multi_choice", "text", "7/11", None)).is_err());
}

#[test]
fn mathvista_scores_count_unmatched() {
    let bench = Benchmark::by_name("MathVista_MINI").unwrap();
    let mk = |i: usize, qt: &str, at: &str, answer: &str, task: &str| {
        let mut item = Item::new(&i.to_string());
        item.answer = answer.into();
        item.set_column("question_type", qt.into());
        item.set_column("answer_type", at.into());
        item.set_column("task", task.into());
        item.set_column("skills", "['arithmetic reasoning', 'algebraic reasoning']".into());
        if qt == "multi_choice" {
            item.set_column("choices", "['3/11', '8/11']".into());
            item.set_column("answer_option", "B".into());
        }
        item
    };
    let items = [
        mk(0, "multi_choice", "text", "8/11", "figure question answering"),
        mk(1, "free_form", "integer", "14", "math word problem"),
        mk(2, "free_form", "integer", "3", "math word problem"),
        mk(3, "free_form", "text", "blue", "math word problem"),
    ];
    let s = score(bench, items.iter().zip(["B", "14", "three", "It is blue"]), None).unwrap();
    assert_eq!((s.n, s.unmatched), (4, 2));
    assert_eq!(s.score, 50.0);
    assert_eq!(s.categories["math word problem"].score, 100.0 / 3.0);
    assert_eq!(s.groups["skills"]["algebraic reasoning"].n, 4);
}

#[test]
fn generic_vqa_uses_vqa_accuracy_for_annotator_lists_else_exact_match() {
    let bench = Benchmark::by_name("vqa").unwrap();
    let mut one = Item::new("0");
    one.answer = "Red".into();
    let mut many = Item::new("1");
    many.answer = "['red', 'red', 'red', 'blue']".into();
    let s = score(bench, [(&one, " red "), (&many, "red")], None).unwrap();
    // exact match 1; VQA accuracy over 4 answers, 3 matching: (3 * 2/3 + 1 * 1) / 4 = 0.75.
    assert!((s.score - 87.5).abs() < 1e-9);
}

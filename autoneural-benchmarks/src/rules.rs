//! Each scoring rule as one function, written from VLMEvalKit's sources
//! (`vlmeval/utils/matching_util.py`, `vlmeval/dataset/utils/vqa_eval.py`,
//! `vlmeval/dataset/image_vqa.py`, `vlmeval/smp/misc.py`); lmms-eval's versions of ANLS,
//! relaxed accuracy, VQA accuracy and OCRBench's match are the same rules. Where VLMEvalKit
//! has a quirk, it is kept and said.

use crate::pylit::{self, py_float};

/// What option matching read from a prediction.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OptionMatch {
    /// The prediction names this option.
    Option(char),
    /// It declines (a refusal phrase, or the word `Z`): VLMEvalKit's answer `Z`, never
    /// correct. Counted as unmatched here.
    Refused,
    /// No rule reads an option from it: wrong, and counted as unmatched.
    Unmatched,
}

/// VLMEvalKit's `can_infer` without a judge (`exact_matching`): the option letter a free-text
/// prediction names, else the one option whose text it contains.
///
/// 1. Letters ([`option_letter`]): the characters `.()[],:;!*#{}` become spaces and the text
///    splits on whitespace; if exactly one option letter is among the words, and its first
///    occurrence is among the last four words, that option. No letter but the word `Z`, or
///    a refusal phrase: refused. Else the first `answer is <letter>` (any case, `**`
///    allowed; letters A-D only) names the option.
/// 2. Text ([`option_text`]): when the prediction is at most twice as long as all options
///    together, the one option whose lower-cased text is a substring of the lower-cased
///    prediction.
///
/// The rule is 1 without the position, phrase and length conditions; VLMEvalKit's
/// conditions are kept so that scores agree with its `exact_matching` scores.
pub fn match_option(prediction: &str, options: &[(char, String)]) -> OptionMatch {
    option_letter(prediction, options).unwrap_or_else(|| option_text(prediction, options))
}

const API_FAILURE: &str = "Failed to obtain answer via API";
const REFUSALS: [&str; 4] = [
    "Sorry, I can't help with images of people yet.",
    "I can't process this file.",
    "I'm sorry, but without the image provided",
    "Cannot determine the answer",
];

/// VLMEvalKit's `can_infer_option` (step 1 of [`match_option`]); `None` where it gives up.
pub fn option_letter(prediction: &str, options: &[(char, String)]) -> Option<OptionMatch> {
    if prediction.contains(API_FAILURE) {
        return None;
    }
    if REFUSALS.iter().any(|r| prediction.contains(r)) {
        return Some(OptionMatch::Refused);
    }
    let spaced: String = prediction.chars().map(|c| if ".()[],:;!*#{}".contains(c) { ' ' } else { c }).collect();
    let words: Vec<&str> = spaced.split_whitespace().collect();
    let is_word = |c: char| {
        let mut buf = [0u8; 4];
        let s: &str = c.encode_utf8(&mut buf);
        words.iter().position(|w| *w == s)
    };
    let present: Vec<(char, usize)> = options.iter().filter_map(|(c, _)| is_word(*c).map(|p| (*c, p))).collect();
    if let [(c, first)] = present[..] {
        // Python: `splits.index(ch) > len(splits) - 5`.
        if first as i64 > words.len() as i64 - 5 {
            return Some(OptionMatch::Option(c));
        }
    } else if present.is_empty() && words.contains(&"Z") {
        return Some(OptionMatch::Refused);
    }
    let letter = verbose_answer(prediction)?;
    options.iter().any(|(c, _)| *c == letter).then_some(OptionMatch::Option(letter))
}

/// The letter of the first `(correct )answer is **X**` (case-insensitive, X in A-D, no word
/// boundary after it: VLMEvalKit's `_VERBOSE_ANSWER_RE`), upper-cased.
fn verbose_answer(text: &str) -> Option<char> {
    let lower = text.to_ascii_lowercase();
    let b = lower.as_bytes();
    let ws = |i: usize| lower[i..].chars().next().filter(|c| c.is_whitespace()).map(char::len_utf8);
    let mut from = 0;
    while let Some(p) = lower[from..].find("answer") {
        let start = from + p;
        from = start + 1;
        let mut i = start + "answer".len();
        let mut spaces = 0;
        while let Some(n) = ws(i) {
            i += n;
            spaces += 1;
        }
        if spaces == 0 || !lower[i..].starts_with("is") {
            continue;
        }
        i += 2;
        spaces = 0;
        while let Some(n) = ws(i) {
            i += n;
            spaces += 1;
        }
        if spaces == 0 {
            continue;
        }
        while b.get(i) == Some(&b'*') {
            i += 1;
        }
        if let Some(&c) = b.get(i)
            && (b'a'..=b'd').contains(&c)
        {
            return Some(char::from(c.to_ascii_uppercase()));
        }
    }
    None
}

/// VLMEvalKit's `can_infer_text` (step 2 of [`match_option`]).
pub fn option_text(prediction: &str, options: &[(char, String)]) -> OptionMatch {
    let lower = prediction.to_lowercase();
    let total: usize = options.iter().map(|(_, t)| t.chars().count()).sum();
    if lower.chars().count() > 2 * total {
        return OptionMatch::Unmatched;
    }
    let hits: Vec<char> = options.iter().filter(|(_, t)| lower.contains(&t.to_lowercase())).map(|(c, _)| *c).collect();
    match hits[..] {
        [c] => OptionMatch::Option(c),
        _ => OptionMatch::Unmatched,
    }
}

/// OCRBench's category whose answers are LaTeX: compared without spaces, case kept.
pub const HMER: &str = "Handwritten Mathematical Expression Recognition";

/// OCRBench: correct when any answer is a substring of the prediction. Both are stripped and
/// newlines become spaces; for [`HMER`] every space is then removed and case counts,
/// otherwise both are lower-cased (VLMEvalKit's `OCRBench.evaluate`; lmms-eval decides HMER by
/// `dataset == "HME100k"`, the same rows, and folds full-width ASCII first).
pub fn ocrbench_correct(prediction: &str, answers: &[String], category: &str) -> bool {
    if category == HMER {
        let squash = |s: &str| s.trim().replace('\n', " ").replace(' ', "");
        let p = squash(prediction);
        answers.iter().any(|a| p.contains(&squash(a)))
    } else {
        let norm = |s: &str| s.to_lowercase().trim().replace('\n', " ");
        let p = norm(prediction);
        answers.iter().any(|a| p.contains(&norm(a)))
    }
}

/// Levenshtein distance over characters.
pub fn levenshtein(a: &str, b: &str) -> usize {
    let a: Vec<char> = a.chars().collect();
    let b: Vec<char> = b.chars().collect();
    let (a, b) = if a.len() > b.len() { (b, a) } else { (a, b) };
    let mut prev: Vec<usize> = (0..=a.len()).collect();
    for (j, cb) in b.iter().enumerate() {
        let mut cur = Vec::with_capacity(a.len() + 1);
        cur.push(j + 1);
        for (i, ca) in a.iter().enumerate() {
            let v = if ca == cb { prev[i] } else { 1 + prev[i].min(prev[i + 1]).min(cur[i]) };
            cur.push(v);
        }
        prev = cur;
    }
    prev[a.len()]
}

/// The normalized Levenshtein distance of VLMEvalKit's `anls_compute`: both texts stripped,
/// lower-cased and their whitespace collapsed for the distance, which is divided by the
/// longer of the two texts *as given* (upper-cased length, as the reference code measures).
pub fn anls_distance(answer: &str, prediction: &str) -> f64 {
    let norm = |s: &str| s.trim().to_lowercase().split_whitespace().collect::<Vec<_>>().join(" ");
    let dist = levenshtein(&norm(answer), &norm(prediction));
    let len = answer.to_uppercase().chars().count().max(prediction.to_uppercase().chars().count());
    if len == 0 { 0.0 } else { dist as f64 / len as f64 }
}

/// ANLS of one question: `1 - min` distance over its answers, or 0 when that is below the
/// threshold 0.5 (a similarity of exactly 0.5 counts).
pub fn anls(prediction: &str, answers: &[String]) -> f64 {
    let best = answers.iter().map(|a| anls_distance(a, prediction)).fold(f64::INFINITY, f64::min);
    if answers.is_empty() {
        return 0.0;
    }
    let s = 1.0 - best;
    if s < 0.5 { 0.0 } else { s }
}

/// ChartQA's relaxed correctness (pix2struct's, as VLMEvalKit and lmms-eval copy it): when
/// both prediction (stripped) and target read as numbers (Python `float()`; a trailing `%`
/// divides by 100) and the target is not 0, correct within 5% relative change (exactly 5%
/// counts); otherwise the lower-cased texts must be equal. `5%` and `0.05` are the same
/// number. A question with several targets is correct when any is (VLMEvalKit's `max`).
pub fn relaxed_correct(prediction: &str, target: &str) -> bool {
    let prediction = prediction.trim();
    let number = |t: &str| {
        if t.ends_with('%') { py_float(t.trim_end_matches('%')).map(|v| v / 100.0) } else { py_float(t) }
    };
    match (number(prediction), number(target)) {
        (Some(p), Some(t)) if t != 0.0 => (p - t).abs() / t.abs() <= 0.05,
        _ => prediction.to_lowercase() == target.to_lowercase(),
    }
}

const PUNCT: [char; 21] =
    [';', '/', '[', ']', '"', '{', '}', '(', ')', '=', '+', '\\', '_', '-', '>', '<', '@', '`', ',', '?', '!'];

fn is_digit(c: char) -> bool {
    c.is_ascii_digit() || (!c.is_ascii() && c.is_numeric())
}

/// The VQA evaluation's `processPunctuation` (VLMEvalKit's `process_punctuation`): each of
/// `;/[]"{}()=+\_-><@`,?!` is deleted when the text has it next to a space (or has a
/// digit-comma-digit anywhere), else replaced by a space; then periods not next to a digit
/// are deleted, at most 32 of them (the reference passes `re.UNICODE` where `sub` takes its
/// count).
pub fn process_punctuation(text: &str) -> String {
    let chars: Vec<char> = text.chars().collect();
    let comma_between_digits = chars.windows(3).any(|w| is_digit(w[0]) && w[1] == ',' && is_digit(w[2]));
    let mut out = text.to_string();
    for p in PUNCT {
        let near_space = text.contains(&format!("{p} ")) || text.contains(&format!(" {p}"));
        out = out.replace(p, if near_space || comma_between_digits { "" } else { " " });
    }
    let chars: Vec<char> = out.chars().collect();
    let mut result = String::with_capacity(out.len());
    let mut removed = 0;
    for (i, &c) in chars.iter().enumerate() {
        let after_digit = i > 0 && is_digit(chars[i - 1]);
        let before_digit = chars.get(i + 1).is_some_and(|&n| is_digit(n));
        if c == '.' && !after_digit && !before_digit && removed < 32 {
            removed += 1;
            continue;
        }
        result.push(c);
    }
    result
}

const NUMBERS: [(&str, &str); 12] = [
    ("none", "0"),
    ("zero", "0"),
    ("one", "1"),
    ("two", "2"),
    ("three", "3"),
    ("four", "4"),
    ("five", "5"),
    ("six", "6"),
    ("seven", "7"),
    ("eight", "8"),
    ("nine", "9"),
    ("ten", "10"),
];

/// The VQA evaluation's contractions table (keys with capitals never match: the words are
/// lower-cased first, in the reference too).
const CONTRACTIONS: &[(&str, &str)] = &[
    ("aint", "ain't"),
    ("arent", "aren't"),
    ("cant", "can't"),
    ("couldve", "could've"),
    ("couldnt", "couldn't"),
    ("couldn'tve", "couldn't've"),
    ("couldnt've", "couldn't've"),
    ("didnt", "didn't"),
    ("doesnt", "doesn't"),
    ("dont", "don't"),
    ("hadnt", "hadn't"),
    ("hadnt've", "hadn't've"),
    ("hadn'tve", "hadn't've"),
    ("hasnt", "hasn't"),
    ("havent", "haven't"),
    ("hed", "he'd"),
    ("hed've", "he'd've"),
    ("he'dve", "he'd've"),
    ("hes", "he's"),
    ("howd", "how'd"),
    ("howll", "how'll"),
    ("hows", "how's"),
    ("Id've", "I'd've"),
    ("I'dve", "I'd've"),
    ("Im", "I'm"),
    ("Ive", "I've"),
    ("isnt", "isn't"),
    ("itd", "it'd"),
    ("itd've", "it'd've"),
    ("it'dve", "it'd've"),
    ("itll", "it'll"),
    ("let's", "let's"),
    ("maam", "ma'am"),
    ("mightnt", "mightn't"),
    ("mightnt've", "mightn't've"),
    ("mightn'tve", "mightn't've"),
    ("mightve", "might've"),
    ("mustnt", "mustn't"),
    ("mustve", "must've"),
    ("neednt", "needn't"),
    ("notve", "not've"),
    ("oclock", "o'clock"),
    ("oughtnt", "oughtn't"),
    ("ow's'at", "'ow's'at"),
    ("'ows'at", "'ow's'at"),
    ("'ow'sat", "'ow's'at"),
    ("shant", "shan't"),
    ("shed've", "she'd've"),
    ("she'dve", "she'd've"),
    ("she's", "she's"),
    ("shouldve", "should've"),
    ("shouldnt", "shouldn't"),
    ("shouldnt've", "shouldn't've"),
    ("shouldn'tve", "shouldn't've"),
    ("somebody'd", "somebodyd"),
    ("somebodyd've", "somebody'd've"),
    ("somebody'dve", "somebody'd've"),
    ("somebodyll", "somebody'll"),
    ("somebodys", "somebody's"),
    ("someoned", "someone'd"),
    ("someoned've", "someone'd've"),
    ("someone'dve", "someone'd've"),
    ("someonell", "someone'll"),
    ("someones", "someone's"),
    ("somethingd", "something'd"),
    ("somethingd've", "something'd've"),
    ("something'dve", "something'd've"),
    ("somethingll", "something'll"),
    ("thats", "that's"),
    ("thered", "there'd"),
    ("thered've", "there'd've"),
    ("there'dve", "there'd've"),
    ("therere", "there're"),
    ("theres", "there's"),
    ("theyd", "they'd"),
    ("theyd've", "they'd've"),
    ("they'dve", "they'd've"),
    ("theyll", "they'll"),
    ("theyre", "they're"),
    ("theyve", "they've"),
    ("twas", "'twas"),
    ("wasnt", "wasn't"),
    ("wed've", "we'd've"),
    ("we'dve", "we'd've"),
    ("weve", "we've"),
    ("werent", "weren't"),
    ("whatll", "what'll"),
    ("whatre", "what're"),
    ("whats", "what's"),
    ("whatve", "what've"),
    ("whens", "when's"),
    ("whered", "where'd"),
    ("wheres", "where's"),
    ("whereve", "where've"),
    ("whod", "who'd"),
    ("whod've", "who'd've"),
    ("who'dve", "who'd've"),
    ("wholl", "who'll"),
    ("whos", "who's"),
    ("whove", "who've"),
    ("whyll", "why'll"),
    ("whyre", "why're"),
    ("whys", "why's"),
    ("wont", "won't"),
    ("wouldve", "would've"),
    ("wouldnt", "wouldn't"),
    ("wouldnt've", "wouldn't've"),
    ("wouldn'tve", "wouldn't've"),
    ("yall", "y'all"),
    ("yall'll", "y'all'll"),
    ("y'allll", "y'all'll"),
    ("yall'd've", "y'all'd've"),
    ("y'alld've", "y'all'd've"),
    ("y'all'dve", "y'all'd've"),
    ("youd", "you'd"),
    ("youd've", "you'd've"),
    ("you'dve", "you'd've"),
    ("youll", "you'll"),
    ("youre", "you're"),
    ("youve", "you've"),
];

/// The VQA evaluation's `processDigitArticle`: lower-cased words, number words `none`..`ten`
/// as digits, `a`/`an`/`the` dropped, contractions given their apostrophes.
pub fn process_digit_article(text: &str) -> String {
    let lower = text.to_lowercase();
    let mut words: Vec<&str> = Vec::new();
    for w in lower.split_whitespace() {
        let w = NUMBERS.iter().find(|(k, _)| *k == w).map_or(w, |(_, v)| *v);
        if !matches!(w, "a" | "an" | "the") {
            words.push(w);
        }
    }
    let words: Vec<&str> =
        words.into_iter().map(|w| CONTRACTIONS.iter().find(|(k, _)| *k == w).map_or(w, |(_, v)| *v)).collect();
    words.join(" ")
}

/// VLMEvalKit's `process_answer`: newlines and tabs to spaces, stripped, punctuation, then
/// digits and articles.
pub fn vqa_normalize(text: &str) -> String {
    let t = text.replace(['\n', '\t'], " ");
    process_digit_article(&process_punctuation(t.trim()))
}

/// VQA accuracy: for each of the annotators' answers, `min(1, matches among the other
/// answers / 3)`, averaged over the answers (the official evaluation's average over the ten
/// subsets of nine annotators, as VLMEvalKit and lmms-eval compute it), after
/// [`vqa_normalize`] on the prediction and every answer. With ten answers of which `m` equal
/// the prediction: 0, 0.3, 0.6, 0.9, then 1 from `m = 4`.
pub fn vqa_accuracy(prediction: &str, answers: &[String]) -> f64 {
    if answers.is_empty() {
        return 0.0;
    }
    let pred = vqa_normalize(prediction);
    let gts: Vec<String> = answers.iter().map(|a| vqa_normalize(a)).collect();
    let matching = gts.iter().filter(|g| **g == pred).count();
    let total: f64 = gts
        .iter()
        .map(|g| {
            let others = matching - usize::from(*g == pred);
            (others as f64 / 3.0).min(1.0)
        })
        .sum();
    total / gts.len() as f64
}

/// VLMEvalKit's `accuracy` method (OCRVQA, GQA): the stripped, lower-cased prediction equals
/// a stripped, lower-cased answer.
pub fn exact_match(prediction: &str, answers: &[String]) -> bool {
    let p = prediction.trim().to_lowercase();
    answers.iter().any(|a| a.trim().to_lowercase() == p)
}

/// The numbers in a text, in order: digits with an optional `-` (not after a letter or
/// digit), `,` thousands groups and a decimal part (`1,234.5`, `-3`, `.25`).
pub fn numbers(text: &str) -> Vec<f64> {
    let b = text.as_bytes();
    let digit = |i: usize| b.get(i).is_some_and(u8::is_ascii_digit);
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        if !(digit(i) || (b[i] == b'.' && digit(i + 1))) {
            i += 1;
            continue;
        }
        let start = i;
        while digit(i) {
            i += 1;
        }
        while i > start && b.get(i) == Some(&b',') && digit(i + 1) && digit(i + 2) && digit(i + 3) && !digit(i + 4) {
            i += 4;
        }
        if b.get(i) == Some(&b'.') && digit(i + 1) {
            i += 1;
            while digit(i) {
                i += 1;
            }
        }
        let negative = start > 0 && b[start - 1] == b'-' && (start < 2 || !b[start - 2].is_ascii_alphanumeric());
        let text: String = text[start..i].chars().filter(|c| *c != ',').collect();
        if let Ok(v) = text.parse::<f64>() {
            out.push(if negative { -v } else { v });
        }
    }
    out
}

/// What the MathVista rule decides for one prediction.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Correct,
    Wrong,
    /// No rule reads an answer from the prediction: counted wrong, and reported.
    Unmatched,
}

/// A MathVista question's fields (VLMEvalKit's TSV columns, or the Hugging Face ones mapped
/// to them).
#[derive(Debug, Clone, PartialEq)]
pub struct MathVistaQuestion {
    /// `multi_choice` or `free_form`.
    pub question_type: String,
    /// `text`, `integer`, `float` or `list`.
    pub answer_type: String,
    pub choices: Vec<String>,
    pub answer: String,
    /// The letter of the correct choice (`answer_option`), for multiple choice.
    pub answer_option: Option<char>,
    /// Decimal places of a float answer.
    pub precision: Option<u32>,
}

/// MathVista by rule, where VLMEvalKit and lmms-eval ask a GPT judge to extract the answer:
///
/// - multiple choice: [`match_option`] over the choices (what VLMEvalKit's prefetch does
///   before it calls the judge); no option read is unmatched;
/// - `integer`: the last number of the prediction, truncated to an integer (MathVista's
///   `int(float(x))`), equals the answer;
/// - `float`: the last number rounded to `precision` decimals (else the answer's decimals)
///   equals the answer rounded the same way;
/// - `list`: the last `[...]` of the prediction holds the answer's numbers in order;
/// - a numeric answer without a number (a list without brackets) in the prediction, and a
///   free-form `text` answer that is not the prediction itself (trimmed, any case), are
///   unmatched: reported, not guessed.
pub fn mathvista(prediction: &str, q: &MathVistaQuestion) -> Result<Verdict, String> {
    let verdict = |ok: bool| if ok { Verdict::Correct } else { Verdict::Wrong };
    if q.question_type == "multi_choice" {
        let options: Vec<(char, String)> =
            q.choices.iter().enumerate().map(|(i, c)| (char::from(b'A' + i as u8), c.clone())).collect();
        let gold = q
            .answer_option
            .or_else(|| q.choices.iter().position(|c| *c == q.answer).map(|i| char::from(b'A' + i as u8)))
            .ok_or_else(|| format!("answer `{}` is none of the choices and there is no answer_option", q.answer))?;
        return Ok(match match_option(prediction, &options) {
            OptionMatch::Option(c) => verdict(c == gold),
            _ => Verdict::Unmatched,
        });
    }
    match q.answer_type.as_str() {
        "integer" => {
            let gold = py_float(&q.answer).ok_or_else(|| format!("answer `{}` is not an integer", q.answer))?;
            Ok(match numbers(prediction).last() {
                Some(v) => verdict(v.trunc() == gold.trunc()),
                None => Verdict::Unmatched,
            })
        }
        "float" => {
            let gold = py_float(&q.answer).ok_or_else(|| format!("answer `{}` is not a number", q.answer))?;
            let places = q.precision.unwrap_or_else(|| {
                q.answer
                    .trim()
                    .split_once('.')
                    .map_or(0, |(_, d)| d.chars().take_while(char::is_ascii_digit).count() as u32)
            });
            let round = |v: f64| {
                let s = 10f64.powi(places as i32);
                (v * s).round() / s
            };
            Ok(match numbers(prediction).last() {
                Some(v) => verdict((round(*v) - round(gold)).abs() <= 1e-9 * gold.abs().max(1.0)),
                None => Verdict::Unmatched,
            })
        }
        "list" => {
            let gold: Vec<f64> = pylit::parse_list(&q.answer)
                .map(|l| l.iter().filter_map(|v| py_float(&v.to_text())).collect())
                .unwrap_or_else(|| numbers(&q.answer));
            let Some(open) = prediction.rfind('[') else { return Ok(Verdict::Unmatched) };
            let Some(close) = prediction[open..].find(']') else { return Ok(Verdict::Unmatched) };
            let got = numbers(&prediction[open..open + close]);
            Ok(verdict(got == gold))
        }
        _ => Ok(if prediction.trim().to_lowercase() == q.answer.trim().to_lowercase() {
            Verdict::Correct
        } else {
            Verdict::Unmatched
        }),
    }
}

//! The question a model is asked, in the style of either toolkit (their default prompts;
//! model-specific prompts of either are not reproduced). Both put the images before the
//! text: a [`Prompt`]'s text carries no `<image>` tags, and its images come first, as
//! VLMEvalKit's message lists and lmms-eval's `doc_to_visual` + `doc_to_text` give them.
//!
//! | benchmark | `vlmevalkit` | `lmms-eval` |
//! | --- | --- | --- |
//! | AI2D, MMStar, mcq | `Hint: {hint}\n` (if any) `Question: {q}\nOptions:\nA. {a}\n...Please select the correct answer from the options above. \n` | AI2D/mcq: `{q}\nA. {a}\nB. {b}...\nAnswer with the option's letter from the given choices directly.`; MMStar: `{q}\nOptions: A: {a}, B: {b}, ...\nAnswer with the option's letter from the given choices directly` (no period) |
//! | OCRBench | `{q}` | `{q.strip()}` |
//! | ChartQA | `{q}\nAnswer the question using a single word or phrase.` | `{q}\nAnswer the question with a single word.` |
//! | DocVQA, vqa | `{q}\nAnswer the question using a single word or phrase.` | the same |
//! | TextVQA | `{q}\nAnswer the question using a single word or phrase.` | `{q.capitalize()}\nAnswer the question using a single word or phrase.` |
//! | MathVista | `{q}` (the TSV's question is MathVista's `query`: hint, question, choices) | the `format-prompt` task: `{question}[ (Unit: {unit})]\n[A. {c1}\nB. {c2}...\n]{instruction}` |

use std::str::FromStr;

use autoneural_data::ImageRef;
use serde::{Deserialize, Serialize};

use crate::item::Item;
use crate::pylit;
use crate::registry::{Benchmark, BenchmarkId};

/// Whose prompts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum PromptStyle {
    #[serde(rename = "vlmevalkit")]
    Vlmevalkit,
    #[serde(rename = "lmms-eval")]
    LmmsEval,
    /// The question alone, as the file asks it: a conversations file's first user turn
    /// (the default for `.jsonl` / `.tar` conversations, which no toolkit prompt was
    /// trained on).
    #[serde(rename = "question")]
    Question,
}

impl PromptStyle {
    pub fn name(self) -> &'static str {
        match self {
            Self::Vlmevalkit => "vlmevalkit",
            Self::LmmsEval => "lmms-eval",
            Self::Question => "question",
        }
    }
}

impl std::fmt::Display for PromptStyle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for PromptStyle {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s.to_ascii_lowercase().replace('_', "-").as_str() {
            "vlmevalkit" => Ok(Self::Vlmevalkit),
            "lmms-eval" | "lmmseval" => Ok(Self::LmmsEval),
            "question" => Ok(Self::Question),
            _ => Err(format!("no prompt style `{s}`: vlmevalkit, lmms-eval or question")),
        }
    }
}

/// One request to the model: the images (first), then the text.
#[derive(Debug, Clone, PartialEq)]
pub struct Prompt {
    pub text: String,
    pub images: Vec<ImageRef>,
}

const MCQ_VLMEVALKIT: &str = "Please select the correct answer from the options above. \n";
const MCQ_LMMS: &str = "Answer with the option's letter from the given choices directly";
const SHORT: &str = "Answer the question using a single word or phrase.";

/// The prompt text of `item` in `style` for `bench`.
pub fn prompt_text(bench: &Benchmark, item: &Item, style: PromptStyle) -> String {
    match style {
        PromptStyle::Vlmevalkit => vlmevalkit(bench, item),
        PromptStyle::LmmsEval => lmms_eval(bench, item),
        PromptStyle::Question => item.question.clone(),
    }
}

/// [`prompt_text`] with the item's images.
pub fn prompt(bench: &Benchmark, item: &Item, style: PromptStyle, images: Vec<ImageRef>) -> Prompt {
    Prompt { text: prompt_text(bench, item, style), images }
}

fn vlmevalkit(bench: &Benchmark, item: &Item) -> String {
    match bench.id {
        BenchmarkId::Ai2d | BenchmarkId::MmStar | BenchmarkId::Mcq => {
            // ImageMCQDataset.build_prompt
            let mut p = String::new();
            if let Some(h) = &item.hint {
                p.push_str(&format!("Hint: {h}\n"));
            }
            p.push_str(&format!("Question: {}\n", item.question));
            if !item.options.is_empty() {
                p.push_str("Options:\n");
                for (c, o) in &item.options {
                    p.push_str(&format!("{c}. {o}\n"));
                }
                p.push_str(MCQ_VLMEVALKIT);
            }
            p
        }
        // ImageVQADataset.build_prompt
        BenchmarkId::ChartQa | BenchmarkId::DocVqa | BenchmarkId::TextVqa | BenchmarkId::Vqa => {
            format!("{}\n{SHORT}", item.question)
        }
        // ImageBaseDataset.build_prompt: the question alone.
        BenchmarkId::OcrBench | BenchmarkId::MathVista => item.question.clone(),
    }
}

fn lmms_eval(bench: &Benchmark, item: &Item) -> String {
    match bench.id {
        BenchmarkId::Ai2d | BenchmarkId::Mcq => {
            // ai2d_doc_to_text, prompt_format "mcq"
            let choices: Vec<String> = item.options.iter().map(|(c, o)| format!("{c}. {o}")).collect();
            // A generic MCQ's hint goes first (lmms-eval's AI2D has none).
            let hint = match (bench.id, &item.hint) {
                (BenchmarkId::Mcq, Some(h)) => format!("{h}\n"),
                _ => String::new(),
            };
            format!("{hint}{}\n{}\n{MCQ_LMMS}.", item.question, choices.join("\n"))
        }
        BenchmarkId::MmStar => {
            // mmstar_doc_to_text: the question with its options inline, stripped; the
            // yes/no instruction removed; the post-prompt.
            let q = crate::parquet::inline_question(&item.question, &item.options);
            let q = q.trim().replace(" Please answer yes or no.", "");
            format!("{q}\n{MCQ_LMMS}")
        }
        BenchmarkId::OcrBench => item.question.trim().to_string(),
        BenchmarkId::ChartQa => format!("{}\nAnswer the question with a single word.", item.question),
        BenchmarkId::DocVqa | BenchmarkId::Vqa => format!("{}\n{SHORT}", item.question),
        BenchmarkId::TextVqa => format!("{}\n{SHORT}", pylit::capitalize(&item.question)),
        BenchmarkId::MathVista => mathvista_format_prompt(item),
    }
}

/// lmms-eval's `mathvista_testmini_format` query (shot 0, `format-prompt`).
fn mathvista_format_prompt(item: &Item) -> String {
    let parsed = parse_query(&item.question);
    // The query's question already carries its unit.
    let question_text = match item.present("question_only") {
        Some(q) => match item.present("unit").filter(|u| !u.is_empty()) {
            Some(unit) => format!("{q} (Unit: {unit})"),
            None => q.to_string(),
        },
        None => parsed.question,
    };
    let choices: Vec<String> = match item.present("choices") {
        Some(c) => pylit::answers(c),
        None => parsed.choices,
    };
    let choices_text: Vec<String> =
        choices.iter().enumerate().map(|(i, c)| format!("{}. {c}", char::from(b'A' + i as u8))).collect();
    let precision = item.present("precision").and_then(pylit::py_float).map(|p| p as i64);
    let hint = match (item.column("question_type").unwrap_or(""), item.column("answer_type").unwrap_or("")) {
        ("multi_choice", _) => "Answer with the option's letter from the given choices directly.",
        (_, "integer") => "Answer the question using a single integer number.",
        (_, "float") if precision == Some(1) => {
            "Answer the question using a single floating-point number with one decimal place."
        }
        (_, "float") if precision == Some(2) => {
            "Answer the question using a single floating-point number with two decimal places."
        }
        (_, "list") => "Answer the question using a Python list.",
        // lmms-eval has no instruction for other precisions (its code fails there).
        _ => "",
    };
    let parts = [question_text, choices_text.join("\n"), hint.to_string()];
    let parts: Vec<&str> = parts.iter().map(String::as_str).filter(|p| !p.is_empty()).collect();
    parts.join("\n").trim().to_string()
}

struct ParsedQuery {
    question: String,
    choices: Vec<String>,
}

/// MathVista's `query` (`Hint: ...\nQuestion: ...[ (Unit: u)]\nChoices:\n(A) ...`) taken apart,
/// for a TSV that has no separate question: the question (with its unit) and the choices.
fn parse_query(query: &str) -> ParsedQuery {
    let body = match query.find("Question:") {
        Some(p) => query[p + "Question:".len()..].trim_start(),
        None => query,
    };
    let (question, choices) = match body.find("\nChoices:") {
        Some(p) => (&body[..p], &body[p + "\nChoices:".len()..]),
        None => (body, ""),
    };
    let choices = choices
        .lines()
        .filter_map(|l| {
            let l = l.trim();
            let rest = l.strip_prefix('(')?;
            let (_, text) = rest.split_once(')')?;
            Some(text.trim().to_string())
        })
        .collect();
    ParsedQuery { question: question.trim().to_string(), choices }
}

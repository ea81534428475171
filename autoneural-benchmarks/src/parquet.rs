//! lmms-eval's benchmark files: the Hugging Face Parquet of each set, read with
//! [`ParquetRows`] and mapped to VLMEvalKit's column names, so that one prompt builder, one
//! scorer and one predictions layout serve both sources.
//!
//! | benchmark | Parquet columns | mapped to |
//! | --- | --- | --- |
//! | AI2D (`lmms-lab/ai2d`) | `question`, `options` (list), `answer` (index as text) | `question`, `A`..; `answer` the letter |
//! | MMStar (`Lin-Chen/MMStar`) | `index`, `question` (options inline: `\nOptions: A: .., B: ..`), `answer` (letter), `category`, `l2_category` | `question` the stem, `A`..`D`, `l2-category` |
//! | OCRBench (`echo840/OCRBench`) | `question`, `answer` (list), `question_type`, `dataset` | `answer` a Python list, `category` = `question_type` |
//! | ChartQA (`lmms-lab/ChartQA`) | `question`, `answer`, `type` | `split` = `type` |
//! | DocVQA (`lmms-lab/DocVQA`) | `questionId`, `question`, `answers` (list) | `index` = `questionId`, `answer` a Python list |
//! | TextVQA (`lmms-lab/textvqa`) | `question_id`, `question`, `answers` (10) | `index` = `question_id`, `answer` a Python list |
//! | MathVista (`AI4Math/MathVista` testmini) | `pid`, `question`, `query`, `choices`, `answer`, `answer_type`, `precision`, `question_type`, `unit`, `metadata` | `index` = `pid`, `question` = `query` (VLMEvalKit's), `question_only` = `question`, `answer_option` the letter of a choice answer, `metadata` fields as columns |
//!
//! Other columns are kept (lists as Python list literals); an `image` column that is not an
//! image (MathVista's file name) becomes `image_file`. A row's index is its `index` column
//! when it has one, else its 0-based row number.

use std::path::Path;
use std::sync::Arc;

use autoneural_data::sources::parquet::ParquetRows;
use serde_json::{Map, Value};

use crate::error::{Error, Result};
use crate::item::{ImageSource, Item};
use crate::pylit;
use crate::registry::{Benchmark, BenchmarkId};
use crate::tsv::Loaded;

/// A cell as VLMEvalKit's TSV would hold it: strings as they are, lists as Python list
/// literals, `null` empty.
pub fn cell_text(v: &Value) -> String {
    match v {
        Value::Null => String::new(),
        Value::String(s) => s.clone(),
        Value::Bool(b) => if *b { "True" } else { "False" }.to_string(),
        Value::Number(n) => n.to_string(),
        Value::Array(items) => {
            let parts: Vec<String> = items
                .iter()
                .map(|x| match x {
                    Value::String(s) => pylit::repr_str(s),
                    other => cell_text(other),
                })
                .collect();
            format!("[{}]", parts.join(", "))
        }
        Value::Object(_) => v.to_string(),
    }
}

/// The column names of a Parquet file's rows (not its image columns), from its first row.
pub fn columns(path: &Path) -> Result<Vec<String>> {
    let mut rows = ParquetRows::open(path, 0).map_err(|e| Error::file(path, e.to_string()))?;
    match rows.next() {
        Some(Ok((row, _))) => Ok(row.keys().cloned().collect()),
        Some(Err(e)) => Err(Error::row(path, 1, e.to_string())),
        None => Ok(Vec::new()),
    }
}

/// Reads an lmms-eval Parquet file of `bench` into items (see the module documentation).
pub fn read_parquet(bench: &Benchmark, path: &Path) -> Result<Loaded> {
    let rows = ParquetRows::open(path, 0).map_err(|e| Error::file(path, e.to_string()))?;
    let shared = Arc::new(path.to_path_buf());
    let mut items = Vec::new();
    let mut seen = std::collections::HashMap::new();
    for r in rows {
        let number = items.len() as u64 + 1;
        let (row, images) = r.map_err(|e| Error::row(path, number, e.to_string()))?;
        let sources = (0..images.len())
            .map(|element| ImageSource::Parquet { path: shared.clone(), row: number - 1, element })
            .collect();
        let columns = map_row(bench, row, number).map_err(|(column, message)| match column {
            Some(c) => Error::cell(path, number, &c, message),
            None => Error::row(path, number, message),
        })?;
        let index = columns[0].1.clone();
        if let Some(first) = seen.insert(index.clone(), number) {
            return Err(Error::cell(path, number, "index", format!("`{index}` is also the index of row {first}")));
        }
        items.push(Item::from_columns(index, columns, sources));
    }
    Ok(Loaded { items, without_image: 0 })
}

type MapError = (Option<String>, String);

fn text(row: &Map<String, Value>, name: &str) -> Option<String> {
    row.get(name).filter(|v| !v.is_null()).map(cell_text)
}

fn need(row: &Map<String, Value>, name: &str) -> Result<String, MapError> {
    text(row, name).ok_or_else(|| (Some(name.to_string()), "missing (this benchmark's Parquet has it)".to_string()))
}

fn strings(row: &Map<String, Value>, name: &str) -> Result<Vec<String>, MapError> {
    match row.get(name) {
        Some(Value::Array(a)) => Ok(a.iter().map(cell_text).collect()),
        Some(Value::String(s)) => Ok(pylit::answers(s)),
        _ => Err((Some(name.to_string()), "missing or not a list".to_string())),
    }
}

fn take(row: &mut Map<String, Value>, names: &[&str]) {
    for n in names {
        row.remove(*n);
    }
}

fn letter(i: usize) -> String {
    char::from(b'A' + i as u8).to_string()
}

/// One row in VLMEvalKit's columns, `index` first.
fn map_row(bench: &Benchmark, mut row: Map<String, Value>, number: u64) -> Result<Vec<(String, String)>, MapError> {
    let mut out: Vec<(String, String)> = Vec::new();
    let row_index = (number - 1).to_string();
    match bench.id {
        BenchmarkId::Ai2d | BenchmarkId::Mcq | BenchmarkId::Vqa => {
            let index = ["index", "question_id", "questionId", "id"].iter().find_map(|k| text(&row, k));
            out.push(("index".into(), index.unwrap_or(row_index)));
            out.push(("question".into(), need(&row, "question")?));
            if let Some(h) = text(&row, "hint") {
                out.push(("hint".into(), h));
            }
            let list = ["options", "choices"].into_iter().find(|k| matches!(row.get(*k), Some(Value::Array(_))));
            let mut answer = text(&row, "answer").or_else(|| text(&row, "answers")).unwrap_or_default();
            if let Some(k) = list {
                let options = strings(&row, k)?;
                if options.len() > 26 {
                    return Err((Some(k.into()), "more than 26 options".into()));
                }
                for (i, o) in options.iter().enumerate() {
                    out.push((letter(i), o.clone()));
                }
                // lmms-eval's AI2D answer is the option's position.
                if let Ok(i) = answer.trim().parse::<usize>()
                    && i < options.len()
                {
                    answer = letter(i);
                }
                take(&mut row, &[k]);
            }
            out.push(("answer".into(), answer));
            if let Some(c) = text(&row, "category") {
                out.push(("category".into(), c));
            }
            if let Some(c) = text(&row, "l2_category").or_else(|| text(&row, "l2-category")) {
                out.push(("l2-category".into(), c));
            }
            take(
                &mut row,
                &["index", "question", "hint", "answer", "answers", "category", "l2_category", "l2-category"],
            );
        }
        BenchmarkId::MmStar => {
            out.push(("index".into(), text(&row, "index").unwrap_or(row_index)));
            let q = need(&row, "question")?;
            let (stem, options) = inline_options(&q).ok_or_else(|| {
                (Some("question".to_string()), "no `Options: A: .., B: ..` in the question".to_string())
            })?;
            out.push(("question".into(), stem));
            for (c, o) in options {
                out.push((c.to_string(), o));
            }
            out.push(("answer".into(), need(&row, "answer")?));
            if let Some(c) = text(&row, "category") {
                out.push(("category".into(), c));
            }
            if let Some(c) = text(&row, "l2_category") {
                out.push(("l2-category".into(), c));
            }
            take(&mut row, &["index", "question", "answer", "category", "l2_category"]);
        }
        BenchmarkId::OcrBench => {
            out.push(("index".into(), text(&row, "index").unwrap_or(row_index)));
            out.push(("question".into(), need(&row, "question")?));
            out.push(("answer".into(), pylit::repr_list(&strings(&row, "answer")?)));
            out.push(("category".into(), need(&row, "question_type")?));
            take(&mut row, &["index", "question", "answer", "question_type"]);
        }
        BenchmarkId::ChartQa => {
            out.push(("index".into(), text(&row, "index").unwrap_or(row_index)));
            out.push(("question".into(), need(&row, "question")?));
            out.push(("answer".into(), need(&row, "answer")?));
            if let Some(t) = text(&row, "type") {
                out.push(("split".into(), t));
            }
            take(&mut row, &["index", "question", "answer", "type"]);
        }
        BenchmarkId::DocVqa | BenchmarkId::TextVqa => {
            let id = if bench.id == BenchmarkId::DocVqa { "questionId" } else { "question_id" };
            out.push(("index".into(), text(&row, id).unwrap_or(row_index)));
            out.push(("question".into(), need(&row, "question")?));
            out.push(("answer".into(), pylit::repr_list(&strings(&row, "answers")?)));
            take(&mut row, &[id, "question", "answers"]);
        }
        BenchmarkId::MathVista => {
            out.push(("index".into(), text(&row, "pid").unwrap_or(row_index)));
            out.push(("question".into(), need(&row, "query")?));
            out.push(("question_only".into(), need(&row, "question")?));
            let answer = need(&row, "answer")?;
            let choices = match row.get("choices") {
                Some(Value::Array(_)) => strings(&row, "choices")?,
                _ => Vec::new(),
            };
            out.push(("answer".into(), answer.clone()));
            out.push(("choices".into(), if choices.is_empty() { String::new() } else { pylit::repr_list(&choices) }));
            if let Some(i) = choices.iter().position(|c| *c == answer) {
                out.push(("answer_option".into(), letter(i)));
            }
            for k in ["question_type", "answer_type", "precision", "unit"] {
                out.push((k.into(), text(&row, k).unwrap_or_default()));
            }
            if let Some(Value::Object(meta)) = row.remove("metadata") {
                for (k, v) in meta {
                    if !row.contains_key(&k) && !out.iter().any(|(o, _)| *o == k) {
                        row.insert(k, v);
                    }
                }
            }
            take(
                &mut row,
                &["pid", "query", "question", "answer", "choices", "question_type", "answer_type", "precision", "unit"],
            );
        }
    }
    for (k, v) in row {
        let name = if k == "image" { "image_file".to_string() } else { k };
        if !out.iter().any(|(o, _)| *o == name) {
            out.push((name, cell_text(&v)));
        }
    }
    Ok(out)
}

/// MMStar's question with its options inline (`stem\nOptions: A: x, B: y, C: z, D: w`):
/// the stem and the options, or `None` when the text has no such list.
pub fn inline_options(question: &str) -> Option<(String, Vec<(char, String)>)> {
    let at = question.rfind("Options:")?;
    let stem = question[..at].trim_end().to_string();
    let rest = question[at + "Options:".len()..].trim_start();
    let mut rest = rest.strip_prefix("A:")?;
    let mut options = Vec::new();
    let mut letter = b'A';
    loop {
        let next = char::from(letter + 1);
        let sep = format!(", {next}:");
        match rest.find(&sep) {
            Some(p) if letter < b'Z' => {
                options.push((char::from(letter), rest[..p].trim().to_string()));
                rest = &rest[p + sep.len()..];
                letter += 1;
            }
            _ => {
                options.push((char::from(letter), rest.trim().to_string()));
                break;
            }
        }
    }
    (options.len() >= 2).then_some((stem, options))
}

/// MMStar's inline form of `question` and `options` (what its Parquet holds).
pub fn inline_question(question: &str, options: &[(char, String)]) -> String {
    let list: Vec<String> = options.iter().map(|(c, o)| format!("{c}: {o}")).collect();
    format!("{question}\nOptions: {}", list.join(", "))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mmstar_options_split_from_the_question() {
        let q = "Which option describe the object relationship in the image correctly?\nOptions: A: The suitcase is on the book., B: The suitcase is beneath the cat., C: The suitcase is beneath the bed., D: The suitcase is beneath the book.";
        let (stem, options) = inline_options(q).unwrap();
        assert_eq!(stem, "Which option describe the object relationship in the image correctly?");
        assert_eq!(options.len(), 4);
        assert_eq!(options[1], ('B', "The suitcase is beneath the cat.".to_string()));
        assert_eq!(options[3], ('D', "The suitcase is beneath the book.".to_string()));
        assert_eq!(inline_question(&stem, &options), q);
        assert!(inline_options("no options here").is_none());
    }

    #[test]
    fn cells_read_as_the_tsv_would_hold_them() {
        assert_eq!(cell_text(&serde_json::json!(["a", "it's"])), "['a', \"it's\"]");
        assert_eq!(cell_text(&serde_json::json!(null)), "");
        assert_eq!(cell_text(&serde_json::json!(3)), "3");
        assert_eq!(cell_text(&serde_json::json!(1.5)), "1.5");
    }
}

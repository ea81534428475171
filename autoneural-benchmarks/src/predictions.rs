//! Predictions files in VLMEvalKit's layout: the benchmark's input columns without `image`,
//! then `prediction`, as a TSV with every field quoted (VLMEvalKit's `dump` writes TSVs with
//! pandas' `QUOTE_ALL`), so that VLMEvalKit's own scorer reads ours and we read its.
//!
//! A run appends each batch's rows and syncs them to disk before the next batch, so a run
//! killed at any moment loses at most the batch in flight; a record cut short by the kill
//! is removed when the run resumes. On resume the rows already present (by `index`) are not
//! asked again. A file whose header is not exactly the header this run would write (another
//! benchmark's predictions, any other file) is refused and left as it is. When the run ends,
//! the file is rewritten in the benchmark's order through a temporary file and a rename.

use std::collections::{HashMap, HashSet};
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};
use crate::item::Item;
use crate::registry::Benchmark;

/// Largest predictions file read back (it holds no images).
const LIMIT: autoneural_io::read::Kind = autoneural_io::read::Kind { what: "a predictions file", limit: 4 << 30 };

/// One field quoted as pandas' `QUOTE_ALL` quotes it.
fn quote(field: &str, out: &mut String) {
    out.push('"');
    out.push_str(&field.replace('"', "\"\""));
    out.push('"');
}

/// One TSV record (fields quoted, tab-separated, `\n`-terminated).
pub fn format_row<S: AsRef<str>>(fields: &[S]) -> String {
    let mut out = String::new();
    for (i, f) in fields.iter().enumerate() {
        if i > 0 {
            out.push('\t');
        }
        quote(f.as_ref(), &mut out);
    }
    out.push('\n');
    out
}

/// The length of the complete records at the start of `bytes` (a record ends at a newline
/// outside quotes): what is left of a file after a write cut short.
pub fn complete_prefix(bytes: &[u8]) -> usize {
    let mut quoted = false;
    let mut end = 0;
    for (i, &b) in bytes.iter().enumerate() {
        match b {
            b'"' => quoted = !quoted,
            b'\n' if !quoted => end = i + 1,
            _ => {}
        }
    }
    end
}

/// The header a run over `items` writes: every input column (in first-seen order, without
/// `image` and any earlier `prediction`), then `prediction`.
pub fn header(items: &[Item]) -> Vec<String> {
    let mut names: Vec<String> = Vec::new();
    let mut seen = HashSet::new();
    for item in items {
        for (k, _) in &item.columns {
            if k != "prediction" && k != "image" && seen.insert(k.clone()) {
                names.push(k.clone());
            }
        }
    }
    names.push("prediction".into());
    names
}

/// A predictions TSV as read back: its header and rows (all text).
#[derive(Debug, Clone, PartialEq)]
pub struct Table {
    pub header: Vec<String>,
    pub rows: Vec<Vec<String>>,
}

impl Table {
    /// The predictions by index.
    pub fn predictions(&self) -> HashMap<String, String> {
        let (Some(i), Some(p)) = (self.column("index"), self.column("prediction")) else { return HashMap::new() };
        self.rows.iter().map(|r| (r[i].clone(), r[p].clone())).collect()
    }

    pub fn column(&self, name: &str) -> Option<usize> {
        self.header.iter().position(|h| h == name)
    }
}

/// Parses complete TSV records.
fn parse(path: &Path, bytes: &[u8]) -> Result<Table> {
    let mut reader = crate::tsv::reader_builder().has_headers(true).from_reader(bytes);
    let header: Vec<String> =
        reader.headers().map_err(|e| Error::row(path, 0, e.to_string()))?.iter().map(str::to_string).collect();
    let mut rows = Vec::new();
    for (i, r) in reader.records().enumerate() {
        let r = r.map_err(|e| crate::tsv::csv_error(path, i as u64 + 1, &header, e))?;
        rows.push(r.iter().map(str::to_string).collect());
    }
    Ok(Table { header, rows })
}

/// Reads a predictions TSV (ours, or VLMEvalKit's with `PRED_FORMAT=tsv`).
pub fn read_table(path: &Path) -> Result<Table> {
    let bytes = autoneural_io::read::read(path, LIMIT)?;
    parse(path, &bytes)
}

/// Items and their predictions from a predictions TSV made anywhere (VLMEvalKit's
/// `{model}_{dataset}.tsv`, or ours), to score with [`crate::score`].
pub fn read_scored(bench: &Benchmark, path: &Path) -> Result<Vec<(Item, String)>> {
    if path.extension().and_then(|e| e.to_str()).is_some_and(|e| e.eq_ignore_ascii_case("xlsx")) {
        return Err(Error::file(path, "an Excel file: have VLMEvalKit write TSV (PRED_FORMAT=tsv), or save it as TSV"));
    }
    let loaded = crate::tsv::read_tsv(path)?;
    let mut out = Vec::with_capacity(loaded.items.len());
    for (row, item) in loaded.items.into_iter().enumerate() {
        if row == 0 {
            let names: Vec<String> = item.columns.iter().map(|(k, _)| k.clone()).collect();
            bench.check_columns(path, &names)?;
        }
        let prediction = item
            .column("prediction")
            .ok_or_else(|| Error::row(path, 0, "no `prediction` column: not a predictions file"))?
            .to_string();
        out.push((item, prediction));
    }
    Ok(out)
}

/// The predictions file of a run, open for appending.
pub struct PredictionsFile {
    path: PathBuf,
    header: Vec<String>,
    file: File,
    done: HashMap<String, String>,
    /// The rows found on opening, for [`Self::check_rows`].
    existing: Vec<Vec<String>>,
}

impl PredictionsFile {
    /// Opens `path` for a run whose rows have `header` ([`header`]): creates it (header
    /// only) when absent or empty; when present it must have exactly this header, or it is
    /// refused and left untouched. A record cut short at its end is removed.
    pub fn open(path: &Path, header: &[String]) -> Result<Self> {
        let exists = match std::fs::metadata(path) {
            Ok(m) => m.len() > 0,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => false,
            Err(e) => return Err(Error::io(path, e)),
        };
        let mut done = HashMap::new();
        let mut existing = Vec::new();
        if exists {
            let bytes = autoneural_io::read::read(path, LIMIT)?;
            let complete = complete_prefix(&bytes);
            let refuse = |why: String| {
                Error::file(
                    path,
                    format!("{why}; it is left as it is: name another predictions file, or move this one away"),
                )
            };
            let first_line = bytes.iter().position(|&b| b == b'\n').map_or(&bytes[..], |p| &bytes[..p]);
            if !first_line.starts_with(b"\"") || complete == 0 {
                return Err(refuse("exists and is not a predictions file this run writes".into()));
            }
            let table = parse(path, &bytes[..complete])
                .map_err(|e| refuse(format!("exists and does not read as a predictions file ({})", e.message)))?;
            if table.header != header {
                return Err(refuse(format!(
                    "exists with other columns ({}) than this benchmark's predictions ({})",
                    table.header.join(", "),
                    header.join(", ")
                )));
            }
            done = table.predictions();
            existing = table.rows;
            if complete < bytes.len() {
                let f = OpenOptions::new().write(true).open(path).map_err(|e| Error::io(path, e))?;
                f.set_len(complete as u64).map_err(|e| Error::io(path, e))?;
                f.sync_all().map_err(|e| Error::io(path, e))?;
            }
        } else {
            autoneural_io::output::write_file(path, format_row(header).as_bytes())?;
        }
        let file = OpenOptions::new().append(true).open(path).map_err(|e| Error::io(path, e))?;
        Ok(Self { path: path.to_path_buf(), header: header.to_vec(), file, done, existing })
    }

    /// The rows found on opening are rows of `items`: each input column as the item has it
    /// (a file of the same columns made from another benchmark file, whose indices mean
    /// other questions, would otherwise be resumed and scored as if it answered these).
    pub fn check_rows(&self, items: &[Item]) -> Result<()> {
        let by_index: HashMap<&str, &Item> = items.iter().map(|i| (i.index.as_str(), i)).collect();
        let inputs = &self.header[..self.header.len() - 1];
        for (n, row) in self.existing.iter().enumerate() {
            let Some(index) = inputs.iter().position(|h| h == "index").map(|i| row[i].as_str()) else { continue };
            let Some(item) = by_index.get(index) else { continue };
            for (h, cell) in inputs.iter().zip(row) {
                if item.column(h).unwrap_or("") != cell {
                    return Err(Error::row(
                        &self.path,
                        n as u64 + 1,
                        format!(
                            "index {index} has another `{h}` than the benchmark file's: these predictions answer \
                             another file; it is left as it is: name another predictions file, or move this one away"
                        ),
                    ));
                }
            }
        }
        Ok(())
    }

    /// Predictions already in the file, by index.
    pub fn done(&self) -> &HashMap<String, String> {
        &self.done
    }

    /// Appends rows and syncs them to disk.
    pub fn append(&mut self, rows: &[(&Item, &str)]) -> Result<()> {
        let mut text = String::new();
        for (item, prediction) in rows {
            let fields: Vec<&str> = self.header[..self.header.len() - 1]
                .iter()
                .map(|h| item.column(h).unwrap_or(""))
                .chain(std::iter::once(*prediction))
                .collect();
            text.push_str(&format_row(&fields));
        }
        self.file.write_all(text.as_bytes()).map_err(|e| Error::io(&self.path, e))?;
        self.file.sync_data().map_err(|e| Error::io(&self.path, e))?;
        for (item, prediction) in rows {
            self.done.insert(item.index.clone(), prediction.to_string());
        }
        Ok(())
    }

    /// Rewrites the file with its rows in `items`' order (rows of other indices after them,
    /// as they were), through a temporary file and a rename.
    pub fn finish(self, items: &[Item]) -> Result<()> {
        let table = read_table(&self.path)?;
        let index = table.column("index").ok_or_else(|| Error::row(&self.path, 0, "no `index` column"))?;
        let mut rows: HashMap<&str, &Vec<String>> = HashMap::new();
        for r in &table.rows {
            rows.insert(r[index].as_str(), r);
        }
        let mut text = format_row(&table.header);
        let mut written = HashSet::new();
        for item in items {
            if let Some(r) = rows.get(item.index.as_str())
                && written.insert(item.index.as_str())
            {
                text.push_str(&format_row(r));
            }
        }
        for r in &table.rows {
            if written.insert(r[index].as_str()) {
                text.push_str(&format_row(r));
            }
        }
        drop(self.file);
        Ok(autoneural_io::output::write_file(&self.path, text.as_bytes())?)
    }
}

//! Benchmark files by extension: `.tsv` (VLMEvalKit) or `.parquet` (lmms-eval).

use std::path::Path;

use crate::error::{Error, Result};
use crate::item::{ImageSource, Item};
use crate::registry::Benchmark;
use crate::tsv::Loaded;

/// Reads `path` as `bench`'s file: a VLMEvalKit TSV or an lmms-eval Parquet. The columns the
/// benchmark's rule needs must be there (a file of another benchmark is refused).
pub fn load(bench: &Benchmark, path: &Path) -> Result<Loaded> {
    let loaded =
        if is_parquet(path) { crate::parquet::read_parquet(bench, path)? } else { crate::tsv::read_tsv(path)? };
    if let Some(first) = loaded.items.first() {
        let names: Vec<String> = first.columns.iter().map(|(k, _)| k.clone()).collect();
        bench.check_columns(path, &names)?;
    }
    Ok(loaded)
}

/// A conversation file (JSONL, Parquet or WebDataset in any layout of `autoneural_data`)
/// as `vqa` items: each record's first question and its reference answer, its images (the
/// synthetic test splits, scored as a benchmark). The index is the record's number.
pub fn load_records(path: &Path) -> anyhow::Result<Loaded> {
    use autoneural_data::{FileRecords, OnBadRecord, Role};
    let mut items = Vec::new();
    let mut without_image = 0;
    for (n, record) in FileRecords::open(path, OnBadRecord::Fail)?.enumerate() {
        let record = record?;
        let question = record.messages.iter().find(|m| m.role == Role::User);
        let answer = record.messages.iter().find(|m| m.role == Role::Assistant);
        let (Some(q), Some(a)) = (question, answer) else { continue };
        let mut item = Item::new(&n.to_string());
        let q = q.content.replace(autoneural_data::layouts::IMAGE_TAG, "").trim().to_string();
        item.set_column("question", q.clone());
        item.set_column("answer", a.content.clone());
        if let Some(t) = &record.task {
            item.set_column("category", t.clone());
            item.category = Some(t.clone());
        }
        item.question = q;
        item.answer = a.content.clone();
        without_image += usize::from(record.images.is_empty());
        item.images = record.images.into_iter().map(ImageSource::Ref).collect();
        items.push(item);
    }
    if items.is_empty() {
        anyhow::bail!("{}: no conversations with a question and an answer", path.display());
    }
    Ok(Loaded { items, without_image })
}

fn is_parquet(path: &Path) -> bool {
    path.extension().and_then(|e| e.to_str()).is_some_and(|e| e.eq_ignore_ascii_case("parquet"))
}

/// A file's column names: a TSV's header, a Parquet file's (non-image) columns.
pub fn columns(path: &Path) -> Result<Vec<String>> {
    if is_parquet(path) {
        return crate::parquet::columns(path);
    }
    let (file, _) = autoneural_io::read::open(path, autoneural_io::read::DATA)?;
    let bounded = crate::tsv::Bounded::new(std::io::BufReader::new(file), crate::item::RECORD_LIMIT);
    let mut reader = crate::tsv::reader_builder().has_headers(true).from_reader(bounded);
    let header = reader.headers().map_err(|e| Error::row(path, 0, e.to_string()))?;
    Ok(header.iter().map(str::to_string).collect())
}

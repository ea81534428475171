//! VLMEvalKit's TSV files, as pandas writes them (a field holding a tab, a newline or a quote
//! is quoted, quotes doubled), read one record at a time with the `csv` crate.
//!
//! - `index`: the row's id (required, unique).
//! - `image`: base64 PNG/JPEG; a value of 64 characters or fewer is the `index` of the row
//!   whose image this row reuses; a Python list literal of base64 strings is several images.
//!   A row whose `image` is empty is dropped, as VLMEvalKit drops it. Images are not decoded
//!   here: an item remembers where its record starts and [`crate::ImageLoader`] reads it again
//!   when a batch needs it, so memory holds one record at a time, each at most
//!   [`crate::item::RECORD_LIMIT`] bytes.
//! - `image_path` (when there is no `image` column): image files, relative to the TSV.
//! - Every other column is kept as text, in file order (`question`, `hint`, `A`..`Z`,
//!   `answer`, `category`, `l2-category`, `split`, and any others).

use std::cell::Cell;
use std::collections::HashMap;
use std::io::{BufReader, Read};
use std::path::Path;
use std::rc::Rc;
use std::sync::Arc;

use autoneural_data::ImageRef;
use base64::Engine;

use crate::error::{Error, Result};
use crate::item::{ImageSource, Item, RECORD_LIMIT};
use crate::pylit;

/// What a benchmark file gave: its items, and how many rows VLMEvalKit's rule dropped for
/// having no image.
#[derive(Debug, Clone, PartialEq)]
pub struct Loaded {
    pub items: Vec<Item>,
    pub without_image: usize,
}

/// The reader settings for pandas' TSVs.
pub(crate) fn reader_builder() -> csv::ReaderBuilder {
    let mut b = csv::ReaderBuilder::new();
    b.delimiter(b'\t').quote(b'"').double_quote(true).flexible(false);
    b
}

/// A reader that refuses to give more than `limit` bytes past the start of the current
/// record (the csv reader would otherwise grow one field without bound on a file with an
/// unclosed quote, or a cell of gigabytes).
pub(crate) struct Bounded<R> {
    inner: R,
    read: u64,
    start: Rc<Cell<u64>>,
    limit: u64,
}

impl<R: Read> Bounded<R> {
    pub(crate) fn new(inner: R, limit: u64) -> Self {
        Self { inner, read: 0, start: Rc::new(Cell::new(0)), limit }
    }

    /// Where the caller says the current record starts.
    pub(crate) fn start(&self) -> Rc<Cell<u64>> {
        self.start.clone()
    }
}

impl<R: Read> Read for Bounded<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if self.read.saturating_sub(self.start.get()) > self.limit {
            return Err(std::io::Error::other(format!(
                "a record longer than {} MiB (an unclosed quote?)",
                self.limit >> 20
            )));
        }
        let n = self.inner.read(buf)?;
        self.read += n as u64;
        Ok(n)
    }
}

/// Base64 as Python's `b64decode` takes it: whitespace ignored, padding optional.
pub(crate) fn decode_base64(text: &str) -> std::result::Result<Vec<u8>, String> {
    let engine = base64::engine::GeneralPurpose::new(
        &base64::alphabet::STANDARD,
        base64::engine::GeneralPurposeConfig::new()
            .with_decode_padding_mode(base64::engine::DecodePaddingMode::Indifferent)
            .with_decode_allow_trailing_bits(true),
    );
    let compact: String = text.chars().filter(|c| !c.is_whitespace()).collect();
    engine.decode(compact.as_bytes()).map_err(|e| format!("not base64 ({e})"))
}

/// A row read, its images not yet resolved.
struct Row {
    index: String,
    columns: Vec<(String, String)>,
    image: ImageCell,
    row: u64,
}

enum ImageCell {
    None,
    /// Refers to the row with this index.
    Reuse(String),
    Own(Vec<ImageSource>),
}

/// Reads a VLMEvalKit TSV into items (see the module documentation for the columns).
pub fn read_tsv(path: &Path) -> Result<Loaded> {
    let (file, _) = autoneural_io::read::open(path, autoneural_io::read::DATA)?;
    let bounded = Bounded::new(BufReader::with_capacity(1 << 16, file), RECORD_LIMIT);
    let start = bounded.start();
    let mut reader = reader_builder().has_headers(true).from_reader(bounded);
    let header: Vec<String> = {
        let h = reader.byte_headers().map_err(|e| Error::row(path, 0, e.to_string()))?;
        h.iter()
            .enumerate()
            .map(|(i, c)| {
                String::from_utf8(c.to_vec())
                    .map_err(|_| Error::cell(path, 0, &format!("column {}", i + 1), "header not UTF-8"))
            })
            .collect::<Result<_>>()?
    };
    let position = |name: &str| header.iter().position(|h| h == name);
    for (i, h) in header.iter().enumerate() {
        if header[..i].contains(h) {
            return Err(Error::cell(path, 0, h, "appears twice in the header"));
        }
    }
    let index_col =
        position("index").ok_or_else(|| Error::row(path, 0, "no `index` column: not a VLMEvalKit benchmark TSV"))?;
    let image_col = position("image");
    let image_path_col = position("image_path").filter(|_| image_col.is_none());
    let shared = Arc::new(path.to_path_buf());
    let dir = path.parent().unwrap_or(Path::new("."));

    let mut rows: Vec<Row> = Vec::new();
    let mut rows_of: HashMap<String, usize> = HashMap::new();
    let mut without_image = 0;
    let mut record = csv::ByteRecord::new();
    let mut row = 0u64;
    loop {
        let offset = reader.position().byte();
        start.set(offset);
        row += 1;
        match reader.read_byte_record(&mut record) {
            Ok(true) => {}
            Ok(false) => break,
            Err(e) => return Err(csv_error(path, row, &header, e)),
        }
        let mut columns = Vec::with_capacity(header.len());
        let mut image = ImageCell::None;
        for (c, raw) in record.iter().enumerate() {
            let text = std::str::from_utf8(raw).map_err(|_| Error::cell(path, row, &header[c], "not UTF-8 text"))?;
            if Some(c) == image_col {
                image = image_cell(path, row, text, offset, c, &shared)?;
            } else {
                if Some(c) == image_path_col && !pylit::is_pandas_na(text) {
                    let files = match pylit::parse_list(text) {
                        Some(list) => list.iter().map(pylit::PyValue::to_text).collect(),
                        None => vec![text.to_string()],
                    };
                    let images = files.iter().map(|f| ImageSource::Ref(ImageRef::Path(dir.join(f)))).collect();
                    image = ImageCell::Own(images);
                }
                columns.push((header[c].clone(), text.to_string()));
            }
        }
        let index = columns.iter().find(|(k, _)| k == "index").map(|(_, v)| v.clone()).unwrap_or_default();
        if index.is_empty() {
            return Err(Error::cell(path, row, &header[index_col], "empty: every row needs an index"));
        }
        if image_col.is_some() && matches!(image, ImageCell::None) {
            without_image += 1;
            continue;
        }
        if let Some(&first) = rows_of.get(&index) {
            let first_row = rows[first].row;
            return Err(Error::cell(path, row, "index", format!("`{index}` is also the index of row {first_row}")));
        }
        rows_of.insert(index.clone(), rows.len());
        rows.push(Row { index, columns, image, row });
    }

    let own: HashMap<&str, &Vec<ImageSource>> = rows
        .iter()
        .filter_map(|r| match &r.image {
            ImageCell::Own(v) => Some((r.index.as_str(), v)),
            _ => None,
        })
        .collect();
    let mut items = Vec::with_capacity(rows.len());
    for Row { index, columns, image, row } in &rows {
        let images = match image {
            ImageCell::None => Vec::new(),
            ImageCell::Own(v) => v.clone(),
            ImageCell::Reuse(target) => match own.get(target.as_str()) {
                Some(v) => (*v).clone(),
                None => {
                    let why = if rows_of.contains_key(target) {
                        "whose image is itself a reference"
                    } else {
                        "which no row has"
                    };
                    return Err(Error::cell(
                        path,
                        *row,
                        "image",
                        format!("reuses the image of index `{target}`, {why}"),
                    ));
                }
            },
        };
        items.push(Item::from_columns(index.clone(), columns.clone(), images));
    }
    Ok(Loaded { items, without_image })
}

fn image_cell(
    path: &Path,
    row: u64,
    text: &str,
    offset: u64,
    column: usize,
    shared: &Arc<std::path::PathBuf>,
) -> Result<ImageCell> {
    if pylit::is_pandas_na(text) {
        return Ok(ImageCell::None);
    }
    if text.chars().count() <= 64 {
        return Ok(ImageCell::Reuse(text.to_string()));
    }
    let source = |element| ImageSource::Tsv { path: shared.clone(), offset, row, column, element };
    if text.starts_with('[') && text.ends_with(']') {
        let list = pylit::parse_list(text)
            .ok_or_else(|| Error::cell(path, row, "image", "starts with `[` but is not a list of base64 strings"))?;
        if list.is_empty() {
            return Ok(ImageCell::None);
        }
        return Ok(ImageCell::Own((0..list.len()).map(|i| source(Some(i))).collect()));
    }
    Ok(ImageCell::Own(vec![source(None)]))
}

/// A csv error as this crate's, with the row and (for a wrong number of cells) what was
/// expected.
pub(crate) fn csv_error(path: &Path, row: u64, header: &[String], e: csv::Error) -> Error {
    match e.kind() {
        csv::ErrorKind::UnequalLengths { len, .. } => Error::row(
            path,
            row,
            format!("{len} cells where the header has {} (a tab or newline in an unquoted cell?)", header.len()),
        ),
        csv::ErrorKind::Io(io) => Error::row(path, row, io.to_string()),
        _ => Error::row(path, row, e.to_string()),
    }
}

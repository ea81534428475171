//! One benchmark question, whichever file it came from, and where its images are: images stay
//! in the file until a batch needs them ([`ImageLoader`]), so a benchmark of thousands of
//! page scans is never held in memory at once.

use std::collections::HashMap;
use std::fs::File;
use std::io::{BufReader, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use autoneural_data::ImageRef;
use autoneural_data::sources::parquet::ParquetRows;

use crate::error::{Error, Result};

/// A question as VLMEvalKit names its parts. `columns` holds every input column except the
/// images, in file order and in VLMEvalKit's column names (an lmms-eval Parquet row is mapped
/// to them): the predictions file repeats them, so VLMEvalKit can score it.
#[derive(Debug, Clone, PartialEq)]
pub struct Item {
    /// VLMEvalKit's `index` (unique in a file), as text.
    pub index: String,
    pub question: String,
    pub hint: Option<String>,
    /// The options present (`A`..`Z`, in order; an empty cell is no option).
    pub options: Vec<(char, String)>,
    /// The `answer` cell as written: a letter (MCQ), a text, or a Python list of answers.
    pub answer: String,
    pub category: Option<String>,
    pub l2_category: Option<String>,
    pub split: Option<String>,
    pub images: Vec<ImageSource>,
    pub columns: Vec<(String, String)>,
}

impl Item {
    /// An item with only an index (its other fields set by the caller).
    pub fn new(index: &str) -> Self {
        Self::from_columns(index.to_string(), vec![("index".to_string(), index.to_string())], Vec::new())
    }

    /// A column's cell (`None` when the file has no such column).
    pub fn column(&self, name: &str) -> Option<&str> {
        self.columns.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
    }

    /// A column's cell unless absent or a pandas NaN.
    pub fn present(&self, name: &str) -> Option<&str> {
        self.column(name).filter(|v| !crate::pylit::is_pandas_na(v))
    }

    /// Sets (or adds) a column.
    pub fn set_column(&mut self, name: &str, value: String) {
        match self.columns.iter_mut().find(|(k, _)| k == name) {
            Some((_, v)) => *v = value,
            None => self.columns.push((name.to_string(), value)),
        }
    }

    /// Fills the typed fields from `columns` (VLMEvalKit's names): `question`, `hint`,
    /// `A`..`Z`, `answer`, `category`, `l2-category`, `split`.
    pub(crate) fn from_columns(index: String, columns: Vec<(String, String)>, images: Vec<ImageSource>) -> Self {
        let mut item = Item {
            index,
            question: String::new(),
            hint: None,
            options: Vec::new(),
            answer: String::new(),
            category: None,
            l2_category: None,
            split: None,
            images,
            columns,
        };
        item.question = item.column("question").unwrap_or_default().to_string();
        item.answer = item.column("answer").unwrap_or_default().to_string();
        item.hint = item.present("hint").map(str::to_string);
        item.category = item.present("category").map(str::to_string);
        item.l2_category = item.present("l2-category").map(str::to_string);
        item.split = item.present("split").map(str::to_string);
        item.options = ('A'..='Z').filter_map(|c| item.present(&c.to_string()).map(|v| (c, v.to_string()))).collect();
        item
    }
}

/// Where one image of an item is.
#[derive(Debug, Clone, PartialEq)]
pub enum ImageSource {
    /// Already in memory, or a file.
    Ref(ImageRef),
    /// A base64 cell of a VLMEvalKit TSV: the record starting at byte `offset` (data row
    /// `row`), column `column`, and the list element when the cell is a list of images.
    Tsv { path: Arc<PathBuf>, offset: u64, row: u64, column: usize, element: Option<usize> },
    /// An image of a Parquet row (0-based), the `element`-th of its images.
    Parquet { path: Arc<PathBuf>, row: u64, element: usize },
}

/// Largest record a TSV reader holds (an image cell of a page scan is a few MB).
pub const RECORD_LIMIT: u64 = 256 << 20;

/// Brings images in from their files, keeping the files open: TSV records are read by
/// seeking to them; Parquet rows are read forward from the last one read (items come in
/// file order), reopening only to go back.
#[derive(Default)]
pub struct ImageLoader {
    tsv: HashMap<PathBuf, File>,
    parquet: Option<(PathBuf, ParquetRows)>,
    /// The last Parquet row read and its images.
    row_cache: Option<(PathBuf, u64, Vec<ImageRef>)>,
    /// The last TSV image cell read (a list of several images is read once).
    cell_cache: Option<(PathBuf, u64, String)>,
}

impl ImageLoader {
    pub fn new() -> Self {
        Self::default()
    }

    /// The item's images, decoded from their cells (not yet into pixels: [`ImageRef::load`]).
    pub fn load(&mut self, item: &Item) -> Result<Vec<ImageRef>> {
        item.images.iter().map(|s| self.load_one(s)).collect()
    }

    fn load_one(&mut self, source: &ImageSource) -> Result<ImageRef> {
        match source {
            ImageSource::Ref(r) => Ok(r.clone()),
            ImageSource::Tsv { path, offset, row, column, element } => {
                self.tsv_image(path, *offset, *row, *column, *element)
            }
            ImageSource::Parquet { path, row, element } => self.parquet_image(path, *row, *element),
        }
    }

    fn tsv_image(
        &mut self,
        path: &Path,
        offset: u64,
        row: u64,
        column: usize,
        element: Option<usize>,
    ) -> Result<ImageRef> {
        let cached = matches!(&self.cell_cache, Some((p, o, _)) if p == path && *o == offset);
        if !cached {
            let cell = self.tsv_cell(path, offset, row, column)?;
            self.cell_cache = Some((path.to_path_buf(), offset, cell));
        }
        let cell = &self.cell_cache.as_ref().expect("filled above").2;
        let data = match element {
            None => cell.to_string(),
            Some(i) => {
                let items = crate::pylit::parse_list(cell)
                    .ok_or_else(|| Error::cell(path, row, "image", "not a list of base64 images any more"))?;
                items
                    .get(i)
                    .map(crate::pylit::PyValue::to_text)
                    .ok_or_else(|| Error::cell(path, row, "image", format!("has no image {i}")))?
            }
        };
        let bytes = crate::tsv::decode_base64(&data).map_err(|m| Error::cell(path, row, "image", m))?;
        let suffix = element.map(|i| format!("[{i}]")).unwrap_or_default();
        Ok(ImageRef::Bytes { name: format!("{}:{row}{suffix}", path.display()), data: Arc::from(bytes) })
    }

    /// The text of cell `column` of the record at byte `offset`.
    fn tsv_cell(&mut self, path: &Path, offset: u64, row: u64, column: usize) -> Result<String> {
        if !self.tsv.contains_key(path) {
            let (file, _) = autoneural_io::read::open(path, autoneural_io::read::DATA)?;
            self.tsv.insert(path.to_path_buf(), file);
        }
        let file = self.tsv.get_mut(path).expect("inserted above");
        file.seek(SeekFrom::Start(offset)).map_err(|e| Error::io(path, e))?;
        let bounded = crate::tsv::Bounded::new(BufReader::new(&*file), RECORD_LIMIT);
        let mut reader = crate::tsv::reader_builder().has_headers(false).from_reader(bounded);
        let mut record = csv::ByteRecord::new();
        let found = reader.read_byte_record(&mut record).map_err(|e| Error::row(path, row, e.to_string()))?;
        if !found {
            return Err(Error::row(path, row, "the file ended before this row: was it changed since it was read?"));
        }
        let cell = record
            .get(column)
            .ok_or_else(|| Error::cell(path, row, "image", "the row has fewer cells than when it was read"))?;
        let cell = std::str::from_utf8(cell)
            .map_err(|_| Error::cell(path, row, "image", "not UTF-8 text (base64 expected)"))?;
        Ok(cell.to_string())
    }

    fn parquet_image(&mut self, path: &Path, row: u64, element: usize) -> Result<ImageRef> {
        if let Some((p, r, images)) = &self.row_cache
            && p == path
            && *r == row
        {
            return pick(images, path, row, element);
        }
        let reopen = match &self.parquet {
            Some((p, rows)) => p != path || rows.row() > row,
            None => true,
        };
        if reopen {
            let rows = ParquetRows::open(path, row).map_err(|e| Error::file(path, e.to_string()))?;
            self.parquet = Some((path.to_path_buf(), rows));
        }
        let (_, rows) = self.parquet.as_mut().expect("opened above");
        loop {
            let at = rows.row();
            let (_, images) = match rows.next() {
                Some(r) => r.map_err(|e| Error::row(path, at + 1, e.to_string()))?,
                None => return Err(Error::row(path, row + 1, "the file ended before this row: was it changed?")),
            };
            if at == row {
                let image = pick(&images, path, row, element);
                self.row_cache = Some((path.to_path_buf(), row, images));
                return image;
            }
        }
    }
}

fn pick(images: &[ImageRef], path: &Path, row: u64, element: usize) -> Result<ImageRef> {
    images.get(element).cloned().ok_or_else(|| Error::row(path, row + 1, format!("has no image {element}")))
}

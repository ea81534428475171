//! Parquet as Hugging Face `datasets` writes it, read through arrow one batch of rows at a
//! time (a row group's column chunks at most, never a whole file): every column becomes a
//! JSON value of the row, except image columns, whose `{bytes, path}` structs (one, or a
//! list) become the record's images in column order. A position is the number of rows read
//! in the current file; a resumed reader starts at that row's row group and skips the rest.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow_array::cast::AsArray;
use arrow_array::types::{
    Float32Type, Float64Type, Int8Type, Int16Type, Int32Type, Int64Type, UInt8Type, UInt16Type, UInt32Type, UInt64Type,
};
use arrow_array::{Array, ArrayRef, RecordBatch, StructArray};
use arrow_schema::DataType;
use parquet::arrow::arrow_reader::{
    ParquetRecordBatchReader, ParquetRecordBatchReaderBuilder, RowSelection, RowSelector,
};
use serde_json::{Map, Value};

use super::files::{FileStream, FilesReader, RowRules};
use crate::records::{DataError, ImageRef, Record};

/// Rows decoded at a time: images make rows large, so batches stay small.
const BATCH_ROWS: usize = 16;

/// One Parquet file's rows, in order, each as JSON columns plus the images of its image
/// columns (also what benchmark files in the lmms-eval layout are read with).
pub struct ParquetRows {
    path: PathBuf,
    reader: ParquetRecordBatchReader,
    batch: Option<RecordBatch>,
    /// The next row of `batch`.
    batch_row: usize,
    /// Rows of the file read so far.
    row: u64,
}

impl ParquetRows {
    /// `path` from row `row` on: from the row group that holds it, skipping the rows before
    /// it, so nothing earlier is decoded.
    pub fn open(path: &Path, row: u64) -> Result<Self, DataError> {
        let format_error = |message: String| DataError::Format { path: path.to_path_buf(), message };
        let (handle, _) = autoneural_io::read::open(path, autoneural_io::read::DATA)?;
        let builder = ParquetRecordBatchReaderBuilder::try_new(handle)
            .map_err(|e| format_error(format!("not a Parquet file this reader can read: {e}")))?;
        let groups: Vec<u64> = builder.metadata().row_groups().iter().map(|g| g.num_rows().max(0) as u64).collect();
        let total: u64 = groups.iter().sum();
        if row > total {
            return Err(format_error(format!("row {row} is past the end of the file ({total} rows): was it changed?")));
        }
        let (mut first, mut start) = (0, 0u64);
        while first < groups.len() && start + groups[first] <= row {
            start += groups[first];
            first += 1;
        }
        let (skip, rest) = ((row - start) as usize, (total - row) as usize);
        let reader = builder
            .with_batch_size(BATCH_ROWS)
            .with_row_groups((first..groups.len()).collect())
            .with_row_selection(RowSelection::from(vec![RowSelector::skip(skip), RowSelector::select(rest)]))
            .build()
            .map_err(|e| format_error(format!("not a Parquet file this reader can read: {e}")))?;
        Ok(Self { path: path.to_path_buf(), reader, batch: None, batch_row: 0, row })
    }

    /// Rows in `path`, from its footer.
    pub fn count(path: &Path) -> Result<u64, DataError> {
        let (handle, _) = autoneural_io::read::open(path, autoneural_io::read::DATA)?;
        let builder = ParquetRecordBatchReaderBuilder::try_new(handle).map_err(|e| DataError::Format {
            path: path.to_path_buf(),
            message: format!("not a Parquet file this reader can read: {e}"),
        })?;
        Ok(builder.metadata().file_metadata().num_rows().max(0) as u64)
    }

    /// Rows read so far (the 1-based number of the last one returned).
    pub fn row(&self) -> u64 {
        self.row
    }
}

impl Iterator for ParquetRows {
    /// A row as (JSON columns, images).
    type Item = Result<(Map<String, Value>, Vec<ImageRef>), DataError>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            if let Some(b) = &self.batch
                && self.batch_row < b.num_rows()
            {
                let i = self.batch_row;
                self.batch_row += 1;
                self.row += 1;
                let name = format!("{}:{}", self.path.display(), self.row);
                return Some(Ok(row_of(b, i, &name)));
            }
            match self.reader.next()? {
                Ok(b) => {
                    self.batch = Some(b);
                    self.batch_row = 0;
                }
                Err(e) => {
                    let message = format!("row {}: {e}", self.row + 1);
                    return Some(Err(DataError::Format { path: self.path.clone(), message }));
                }
            }
        }
    }
}

/// A source's Parquet files as one stream of records.
pub type ParquetReader = FilesReader<ParquetRows>;

/// A position is the row (as offset and as count).
impl FileStream for ParquetRows {
    fn open(path: &Path, _: &RowRules, row: u64, _: u64) -> Result<Self, DataError> {
        ParquetRows::open(path, row)
    }

    fn next(&mut self, path: &Path, rules: &RowRules) -> Option<Result<Record, DataError>> {
        let (row, images) = match Iterator::next(self)? {
            Ok(r) => r,
            Err(e) => return Some(Err(e)),
        };
        let line = self.row() as usize;
        Some(match Record::from_row(&row, rules.layout, images, rules.task.as_deref(), line) {
            Ok(r) => Ok(Record { unit: "row", ..r }),
            Err(message) => Err(DataError::Record { path: path.to_path_buf(), line, message }),
        })
    }

    fn position(&self) -> (u64, u64) {
        (self.row(), self.row())
    }
}

/// Row `i` of `batch`: its columns as JSON, and the images of its image columns.
fn row_of(batch: &RecordBatch, i: usize, name: &str) -> (Map<String, Value>, Vec<ImageRef>) {
    let mut row = Map::new();
    let mut images = Vec::new();
    for (field, col) in batch.schema().fields().iter().zip(batch.columns()) {
        if image_column(col.data_type()) {
            images.extend(image_cells(col, i, name));
        } else {
            row.insert(field.name().clone(), cell(col.as_ref(), i));
        }
    }
    (row, images)
}

/// `datasets`' `Image` feature: a struct with a binary `bytes` field (and a `path`), alone
/// or in a list.
fn image_column(t: &DataType) -> bool {
    match t {
        DataType::Struct(fields) => fields
            .iter()
            .any(|f| f.name() == "bytes" && matches!(f.data_type(), DataType::Binary | DataType::LargeBinary)),
        DataType::List(f) | DataType::LargeList(f) => image_column(f.data_type()),
        _ => false,
    }
}

/// The images in cell `i` of an image column.
fn image_cells(col: &ArrayRef, i: usize, name: &str) -> Vec<ImageRef> {
    if col.is_null(i) {
        return Vec::new();
    }
    match col.data_type() {
        DataType::Struct(_) => image_struct(col.as_struct(), i, name).into_iter().collect(),
        DataType::List(_) => {
            let items = col.as_list::<i32>().value(i);
            (0..items.len()).filter_map(|j| image_struct(items.as_struct(), j, &format!("{name}[{j}]"))).collect()
        }
        DataType::LargeList(_) => {
            let items = col.as_list::<i64>().value(i);
            (0..items.len()).filter_map(|j| image_struct(items.as_struct(), j, &format!("{name}[{j}]"))).collect()
        }
        _ => Vec::new(),
    }
}

fn image_struct(s: &StructArray, i: usize, name: &str) -> Option<ImageRef> {
    if s.is_null(i) {
        return None;
    }
    let bytes = s.column_by_name("bytes")?;
    if bytes.is_null(i) {
        return None;
    }
    let data: &[u8] = match bytes.data_type() {
        DataType::Binary => bytes.as_binary::<i32>().value(i),
        DataType::LargeBinary => bytes.as_binary::<i64>().value(i),
        _ => return None,
    };
    Some(ImageRef::Bytes { name: name.to_string(), data: Arc::from(data) })
}

/// A cell as JSON: strings, numbers, booleans, lists and structs; anything else is null.
fn cell(a: &dyn Array, i: usize) -> Value {
    if a.is_null(i) {
        return Value::Null;
    }
    macro_rules! num {
        ($t:ty) => {
            Value::from(a.as_primitive::<$t>().value(i))
        };
    }
    match a.data_type() {
        DataType::Utf8 => Value::String(a.as_string::<i32>().value(i).into()),
        DataType::LargeUtf8 => Value::String(a.as_string::<i64>().value(i).into()),
        DataType::Utf8View => Value::String(a.as_string_view().value(i).into()),
        DataType::Boolean => Value::Bool(a.as_boolean().value(i)),
        DataType::Int8 => num!(Int8Type),
        DataType::Int16 => num!(Int16Type),
        DataType::Int32 => num!(Int32Type),
        DataType::Int64 => num!(Int64Type),
        DataType::UInt8 => num!(UInt8Type),
        DataType::UInt16 => num!(UInt16Type),
        DataType::UInt32 => num!(UInt32Type),
        DataType::UInt64 => num!(UInt64Type),
        DataType::Float32 => num!(Float32Type),
        DataType::Float64 => num!(Float64Type),
        DataType::List(_) => list(a.as_list::<i32>().value(i).as_ref()),
        DataType::LargeList(_) => list(a.as_list::<i64>().value(i).as_ref()),
        DataType::Struct(fields) => {
            let s = a.as_struct();
            let map = fields.iter().zip(s.columns()).map(|(f, c)| (f.name().clone(), cell(c.as_ref(), i))).collect();
            Value::Object(map)
        }
        _ => Value::Null,
    }
}

fn list(items: &dyn Array) -> Value {
    Value::Array((0..items.len()).map(|j| cell(items, j)).collect())
}

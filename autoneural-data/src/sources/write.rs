//! Records written in the formats [`super`] reads: Parquet as Hugging Face `datasets`
//! writes it (a `messages` column of role/content structs, an `images` column of
//! `{bytes, path}` Image structs, `task`; the `huggingface` schema metadata, so `datasets`
//! decodes the images), and WebDataset shards (`key.json` + `key.png`, or `key.0.png`,
//! `key.1.jpg` for several images). Images are copied as their encoded bytes.
//! `autoneural data convert` uses these to turn a JSONL set into shards.

use std::fs::File;
use std::io::BufWriter;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow_array::builder::{BinaryBuilder, ListBuilder, StringBuilder, StructBuilder};
use arrow_array::{ArrayRef, RecordBatch};
use arrow_schema::{DataType, Field, Fields, Schema};
use parquet::arrow::ArrowWriter;
use parquet::basic::{Compression, ZstdLevel};
use parquet::file::properties::WriterProperties;
use serde_json::json;

use crate::records::{DataError, ImageRef, Record};

/// The encoded bytes of an image, and a file name for it.
fn image_bytes(image: &ImageRef) -> Result<(Vec<u8>, String), DataError> {
    match image {
        ImageRef::Path(p) => {
            let bytes = autoneural_io::read::read(p, autoneural_io::read::IMAGE)?;
            let name = p.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
            Ok((bytes, name))
        }
        ImageRef::Bytes { name, data } => {
            let short = name.rsplit(['/', ':']).next().unwrap_or(name).to_string();
            Ok((data.to_vec(), short))
        }
    }
}

/// The extension an image's bytes are written under: their format, sniffed.
fn extension(bytes: &[u8]) -> &'static str {
    match image::guess_format(bytes) {
        Ok(image::ImageFormat::Jpeg) => "jpg",
        Ok(image::ImageFormat::WebP) => "webp",
        _ => "png",
    }
}

/// A record as the JSON row of the `messages` layout (without its images).
pub fn row_json(r: &Record) -> serde_json::Value {
    let messages: Vec<_> = r.messages.iter().map(|m| json!({"role": m.role.as_str(), "content": m.content})).collect();
    let mut row = json!({ "messages": messages });
    if let Some(t) = &r.task {
        row["task"] = json!(t);
    }
    row
}

fn image_struct_fields() -> Fields {
    Fields::from(vec![Field::new("bytes", DataType::Binary, true), Field::new("path", DataType::Utf8, true)])
}

fn message_fields() -> Fields {
    Fields::from(vec![Field::new("role", DataType::Utf8, true), Field::new("content", DataType::Utf8, true)])
}

/// The Parquet schema, with `datasets`' feature description in the `huggingface` metadata.
fn schema() -> Arc<Schema> {
    let features = json!({"info": {"features": {
        "messages": {"feature": {"role": {"dtype": "string", "_type": "Value"},
                                 "content": {"dtype": "string", "_type": "Value"}}, "_type": "List"},
        "images": {"feature": {"_type": "Image"}, "_type": "List"},
        "task": {"dtype": "string", "_type": "Value"},
    }}});
    let fields = vec![
        Field::new(
            "messages",
            DataType::List(Arc::new(Field::new("item", DataType::Struct(message_fields()), true))),
            true,
        ),
        Field::new(
            "images",
            DataType::List(Arc::new(Field::new("item", DataType::Struct(image_struct_fields()), true))),
            true,
        ),
        Field::new("task", DataType::Utf8, true),
    ];
    Arc::new(Schema::new(fields).with_metadata([("huggingface", features.to_string())]))
}

/// Writes records to one Parquet file, a row group per `rows_per_group` records.
pub struct ParquetSink {
    path: PathBuf,
    writer: ArrowWriter<BufWriter<File>>,
    pending: Vec<Record>,
    rows_per_group: usize,
    pub written: usize,
}

impl ParquetSink {
    pub fn create(path: &Path, rows_per_group: usize) -> Result<Self, DataError> {
        let io = |source| DataError::Io { path: path.to_path_buf(), source };
        let file = File::create(path).map_err(io)?;
        // zstd as `datasets` users commonly set it; snappy would do as well.
        let props = WriterProperties::builder()
            .set_compression(Compression::ZSTD(ZstdLevel::default()))
            .set_max_row_group_row_count(Some(rows_per_group.max(1)))
            .build();
        let writer = ArrowWriter::try_new(BufWriter::new(file), schema(), Some(props))
            .map_err(|e| DataError::Format { path: path.to_path_buf(), message: e.to_string() })?;
        Ok(Self {
            path: path.to_path_buf(),
            writer,
            pending: Vec::new(),
            rows_per_group: rows_per_group.max(1),
            written: 0,
        })
    }

    pub fn push(&mut self, record: Record) -> Result<(), DataError> {
        self.pending.push(record);
        if self.pending.len() >= self.rows_per_group {
            self.flush()?;
        }
        Ok(())
    }

    fn flush(&mut self) -> Result<(), DataError> {
        if self.pending.is_empty() {
            return Ok(());
        }
        let err = |e: &dyn std::fmt::Display| DataError::Format { path: self.path.clone(), message: e.to_string() };
        let mut messages = ListBuilder::new(StructBuilder::from_fields(message_fields(), 0))
            .with_field(Arc::new(Field::new("item", DataType::Struct(message_fields()), true)));
        let mut images = ListBuilder::new(StructBuilder::from_fields(image_struct_fields(), 0))
            .with_field(Arc::new(Field::new("item", DataType::Struct(image_struct_fields()), true)));
        let mut tasks = StringBuilder::new();
        for r in self.pending.drain(..) {
            let m = messages.values();
            for msg in &r.messages {
                m.field_builder::<StringBuilder>(0).expect("role").append_value(msg.role.as_str());
                m.field_builder::<StringBuilder>(1).expect("content").append_value(&msg.content);
                m.append(true);
            }
            messages.append(true);
            for image in &r.images {
                let (bytes, name) = image_bytes(image)?;
                let s = images.values();
                s.field_builder::<BinaryBuilder>(0).expect("bytes").append_value(&bytes);
                s.field_builder::<StringBuilder>(1).expect("path").append_value(&name);
                s.append(true);
            }
            images.append(true);
            tasks.append_option(r.task.as_deref());
            self.written += 1;
        }
        let columns: Vec<ArrayRef> =
            vec![Arc::new(messages.finish()), Arc::new(images.finish()), Arc::new(tasks.finish())];
        let batch = RecordBatch::try_new(schema(), columns).map_err(|e| err(&e))?;
        self.writer.write(&batch).map_err(|e| err(&e))?;
        self.writer.flush().map_err(|e| err(&e))
    }

    /// Writes what is pending and the footer.
    pub fn finish(mut self) -> Result<usize, DataError> {
        self.flush()?;
        let path = self.path.clone();
        self.writer.close().map_err(|e| DataError::Format { path, message: e.to_string() })?;
        Ok(self.written)
    }
}

/// Writes records to one WebDataset shard.
pub struct TarSink {
    path: PathBuf,
    builder: tar::Builder<BufWriter<File>>,
    pub written: usize,
}

impl TarSink {
    pub fn create(path: &Path) -> Result<Self, DataError> {
        let file = File::create(path).map_err(|source| DataError::Io { path: path.to_path_buf(), source })?;
        Ok(Self { path: path.to_path_buf(), builder: tar::Builder::new(BufWriter::new(file)), written: 0 })
    }

    fn append(&mut self, name: &str, data: &[u8]) -> Result<(), DataError> {
        let mut header = tar::Header::new_ustar();
        header.set_size(data.len() as u64);
        header.set_mode(0o644);
        header.set_mtime(0);
        header.set_cksum();
        self.builder
            .append_data(&mut header, name, data)
            .map_err(|source| DataError::Io { path: self.path.clone(), source })
    }

    /// Appends `record` as sample `key`.
    pub fn push(&mut self, key: &str, record: &Record) -> Result<(), DataError> {
        let row = serde_json::to_vec(&row_json(record)).expect("JSON values serialize");
        self.append(&format!("{key}.json"), &row)?;
        let several = record.images.len() > 1;
        for (i, image) in record.images.iter().enumerate() {
            let (bytes, _) = image_bytes(image)?;
            let ext = extension(&bytes);
            let name = if several { format!("{key}.{i}.{ext}") } else { format!("{key}.{ext}") };
            self.append(&name, &bytes)?;
        }
        self.written += 1;
        Ok(())
    }

    pub fn finish(self) -> Result<usize, DataError> {
        let path = self.path.clone();
        let mut inner = self.builder.into_inner().map_err(|source| DataError::Io { path: path.clone(), source })?;
        std::io::Write::flush(&mut inner).map_err(|source| DataError::Io { path, source })?;
        Ok(self.written)
    }
}

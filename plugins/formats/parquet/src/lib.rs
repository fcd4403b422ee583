//! Parquet: the format most datasets on the Hugging Face hub (and many on
//! ModelScope) are stored in. A binary format: the host hands the plugin an
//! `input-file` and the plugin reads what it needs through it, the footer
//! first and then one row group per `next` call, so a file of any size is
//! parsed in memory bounded by its largest row group.
//!
//! Rows go through the record API of the `parquet` crate (no Arrow) into
//! JSON values (strings, numbers, booleans, nulls; lists as arrays; structs
//! and maps as objects), and from there through the same layout detection
//! as JSON records (`layouts`): a `messages: list<struct<role, content>>`
//! column reads as OpenAI messages. Page codecs: uncompressed, snappy, gzip
//! and zstd. A record's location is its row: `line` is the 1-based row
//! number, `index` the 0-based one.

use std::io::Read;

use bytes::Bytes;
use layouts::{Normaliser, with_shared_settings};
use parquet_rs::errors::ParquetError;
use parquet_rs::file::reader::{ChunkReader, FileReader, Length, SerializedFileReader};
use parquet_rs::record::{Field, Row};
use serde_json::{Map, Number, Value};
use tuner_sdk::format::*;

struct Parquet;

impl FormatPlugin for Parquet {
    type Parser = BytesOnly;

    fn info() -> PluginInfo {
        tuner_sdk::plugin_info!(Format, "Parquet training data, a row group at a time")
    }

    fn extensions() -> Vec<String> {
        vec!["parquet".into()]
    }

    fn detect(file_name: &str, head: &str) -> f32 {
        let by_name = file_name.to_ascii_lowercase().ends_with(".parquet");
        // Every Parquet file starts (and ends) with the magic `PAR1`.
        match (by_name, head.starts_with("PAR1")) {
            (true, true) => 1.0,
            (false, true) => 0.9,
            (true, false) => 0.3,
            (false, false) => 0.0,
        }
    }

    fn settings() -> Vec<Setting> {
        with_shared_settings(Vec::new())
    }

    fn check_options(options: &ParseOptions) -> Result<(), PluginError> {
        Normaliser::new(options.layout.as_deref(), &options.columns)
            .map(drop)
            .map_err(|e| PluginError {
                field: e.field,
                message: e.message,
            })
    }
}

impl BinaryFormatPlugin for Parquet {
    type ByteParser = RowGroups;
}

/// The rows of one file, a row group per `next`.
struct RowGroups {
    reader: SerializedFileReader<HostFile>,
    normaliser: Normaliser,
    next_group: usize,
    next_row: u64,
}

impl ByteRecordParser for RowGroups {
    fn new(options: ParseOptions, file: InputFile) -> Result<Self, FatalError> {
        let normaliser = Normaliser::new(options.layout.as_deref(), &options.columns)
            .map_err(|e| FatalError::new(None, e.message))?;
        let reader = SerializedFileReader::new(HostFile::new(file))
            .map_err(|e| FatalError::new(None, format!("not a readable Parquet file: {e}")))?;
        Ok(Self {
            reader,
            normaliser,
            next_group: 0,
            next_row: 0,
        })
    }

    fn next(&mut self) -> Result<Option<Vec<RecordOutcome>>, FatalError> {
        if self.next_group >= self.reader.num_row_groups() {
            return Ok(None);
        }
        let group = self.next_group;
        self.next_group += 1;
        let fatal = |e: ParquetError| {
            FatalError::new(
                Some(Location {
                    line: self.next_row + 1,
                    index: self.next_row,
                }),
                format!("row group {group}: {e}"),
            )
        };
        let group_reader = self.reader.get_row_group(group).map_err(fatal)?;
        let rows = group_reader.get_row_iter(None).map_err(fatal)?;
        let mut out = Vec::new();
        for row in rows {
            let at = Location {
                line: self.next_row + 1,
                index: self.next_row,
            };
            let row =
                row.map_err(|e| FatalError::new(Some(at), format!("row group {group}: {e}")))?;
            self.next_row += 1;
            out.push(match self.normaliser.normalise_record(&row_to_json(&row)) {
                Ok(normalised) => normalised.into_outcome(at),
                Err(e) => RecordOutcome::rejected(at, e.field.as_deref(), e.message),
            });
        }
        Ok(Some(out))
    }
}

/// A row as a JSON object, columns in file order.
fn row_to_json(row: &Row) -> Value {
    let mut object = Map::new();
    for (name, field) in row.get_column_iter() {
        object.insert(name.clone(), field_to_json(field));
    }
    Value::Object(object)
}

fn field_to_json(field: &Field) -> Value {
    let number = |n: f64| Number::from_f64(n).map_or(Value::Null, Value::Number);
    match field {
        Field::Null => Value::Null,
        Field::Bool(b) => Value::Bool(*b),
        Field::Byte(n) => Value::from(*n),
        Field::Short(n) => Value::from(*n),
        Field::Int(n) => Value::from(*n),
        Field::Long(n) => Value::from(*n),
        Field::UByte(n) => Value::from(*n),
        Field::UShort(n) => Value::from(*n),
        Field::UInt(n) => Value::from(*n),
        Field::ULong(n) => Value::from(*n),
        Field::Float16(n) => number(f64::from(*n)),
        Field::Float(n) => number(f64::from(*n)),
        Field::Double(n) => number(*n),
        Field::Str(s) => Value::String(s.clone()),
        // Binary columns holding text (some writers never mark UTF-8).
        Field::Bytes(b) => Value::String(String::from_utf8_lossy(b.data()).into_owned()),
        Field::Group(row) => row_to_json(row),
        Field::ListInternal(list) => {
            Value::Array(list.elements().iter().map(field_to_json).collect())
        }
        Field::MapInternal(map) => {
            let mut object = Map::new();
            for (key, value) in map.entries() {
                let key = match key {
                    Field::Str(s) => s.clone(),
                    other => other.to_string(),
                };
                object.insert(key, field_to_json(value));
            }
            Value::Object(object)
        }
        // Decimals, dates, timestamps, times: as the crate displays them.
        other => Value::String(other.to_string()),
    }
}

/// The file, read through the host in the ranges the Parquet reader asks
/// for: the footer, then each column chunk of the row group at hand.
#[derive(Clone)]
struct HostFile {
    file: std::rc::Rc<InputFile>,
    size: u64,
}

impl HostFile {
    fn new(file: InputFile) -> Self {
        let size = file.size();
        Self {
            file: std::rc::Rc::new(file),
            size,
        }
    }

    /// `len` bytes from `offset`, in reads of at most 16 MiB.
    fn bytes(&self, offset: u64, len: usize) -> Result<Bytes, ParquetError> {
        const MAX: usize = 16 << 20;
        let mut out = Vec::with_capacity(len);
        while out.len() < len {
            let want = (len - out.len()).min(MAX);
            let part = self
                .file
                .read(offset + out.len() as u64, want as u32)
                .map_err(ParquetError::General)?;
            if part.is_empty() {
                return Err(ParquetError::EOF(format!(
                    "{len} bytes at offset {offset} run past the end of the file ({} bytes)",
                    self.size
                )));
            }
            out.extend_from_slice(&part);
        }
        Ok(Bytes::from(out))
    }
}

// `ChunkReader` asks for `Send + Sync`. A wasm32-unknown-unknown component
// has one thread, so the handle is never shared across threads.
unsafe impl Send for HostFile {}
unsafe impl Sync for HostFile {}

impl Length for HostFile {
    fn len(&self) -> u64 {
        self.size
    }
}

impl ChunkReader for HostFile {
    type T = PageHeaders;

    fn get_read(&self, start: u64) -> Result<PageHeaders, ParquetError> {
        Ok(PageHeaders {
            file: self.clone(),
            pos: start,
            buf: Bytes::new(),
        })
    }

    fn get_bytes(&self, start: u64, length: usize) -> Result<Bytes, ParquetError> {
        self.bytes(start, length)
    }
}

/// A reader from an offset, fetching 8 KiB at a time (for page headers,
/// which the reader parses without knowing their length).
struct PageHeaders {
    file: HostFile,
    pos: u64,
    buf: Bytes,
}

impl Read for PageHeaders {
    fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
        if self.buf.is_empty() {
            let n = self.file.size.saturating_sub(self.pos).min(8 << 10) as usize;
            if n == 0 {
                return Ok(0);
            }
            self.buf = self
                .file
                .bytes(self.pos, n)
                .map_err(std::io::Error::other)?;
            self.pos += n as u64;
        }
        let n = out.len().min(self.buf.len());
        out[..n].copy_from_slice(&self.buf[..n]);
        self.buf = self.buf.slice(n..);
        Ok(n)
    }
}

tuner_sdk::export_plugin!(binary_format: Parquet);

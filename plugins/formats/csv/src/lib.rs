//! CSV and TSV: the first row names the fields, every other row is a record.
//!
//! Parsing is csv-core's (RFC 4180 quoting: fields with embedded delimiters,
//! newlines and doubled quotes), fed chunk by chunk. The delimiter is the
//! `delimiter` setting, else Excel's `sep=;` first line, else `\t` for
//! `.tsv`, else the most frequent of `,` `\t` `;` `|` in the header row.
//! Empty cells count as absent. A cell for a field that holds a list
//! (`messages`, `conversations`, `history`, `chosen`, ...) may carry JSON.

use csv_core::{ReadRecordResult, Reader, ReaderBuilder};
use layouts::{FieldError, Normaliser, human_bytes, max_record_bytes, with_shared_settings};
use serde_json::{Map, Value};
use tuner_sdk::format::*;

struct Csv;

impl FormatPlugin for Csv {
    type Parser = CsvParser;

    fn info() -> PluginInfo {
        tuner_sdk::plugin_info!(Format, "CSV/TSV training data (header row)")
    }

    fn extensions() -> Vec<String> {
        vec!["csv".into(), "tsv".into()]
    }

    fn detect(file_name: &str, head: &str) -> f32 {
        let name = file_name.to_ascii_lowercase();
        if name.ends_with(".csv") || name.ends_with(".tsv") {
            return 1.0;
        }
        let first = head.lines().next().unwrap_or("");
        if first.starts_with("sep=") {
            return 0.8;
        }
        let trimmed = first.trim_start();
        if trimmed.starts_with('{') || trimmed.starts_with('[') {
            return 0.0;
        }
        // A header row of a few short names separated by one delimiter.
        let delimiter = sniff(first);
        let names: Vec<&str> = first.split(delimiter as char).collect();
        if names.len() >= 2 && names.iter().all(|n| n.len() < 64) {
            0.4
        } else {
            0.0
        }
    }

    fn settings() -> Vec<Setting> {
        with_shared_settings(vec![
            Setting::text("delimiter", "")
                .no_default()
                .describe(
                    "Field delimiter: one ASCII character, or `tab`; unset: Excel's `sep=` line, \
                     else tab for .tsv, else sniffed from the header row",
                )
                .zh("字段分隔符：一个 ASCII 字符或 `tab`；不设置时依次取 Excel 的 `sep=` 行、.tsv 用制表符、否则从表头行推断"),
        ])
    }

    fn check_options(options: &ParseOptions) -> Result<(), PluginError> {
        Config::new(options).map(drop).map_err(|e| PluginError {
            field: e.field,
            message: e.message,
        })
    }
}

/// The parse options, checked.
struct Config {
    normaliser: Normaliser,
    max: usize,
    delimiter: Option<u8>,
    tsv: bool,
    structured: Vec<String>,
}

impl Config {
    fn new(options: &ParseOptions) -> Result<Self, FieldError> {
        let settings = &options.settings;
        let delimiter = match settings.text("delimiter") {
            None => None,
            Some("\\t" | "tab") => Some(b'\t'),
            Some(d) if d.len() == 1 && d.is_ascii() => Some(d.as_bytes()[0]),
            Some(d) => {
                return Err(FieldError::new(
                    "delimiter",
                    format!("expected one ASCII character (or `tab`), found `{d}`"),
                ));
            }
        };
        let normaliser = Normaliser::new(options.layout.as_deref(), &options.columns)?;
        Ok(Self {
            structured: normaliser.structured_fields(),
            normaliser,
            max: max_record_bytes(settings),
            delimiter,
            tsv: options.file_name.to_ascii_lowercase().ends_with(".tsv"),
        })
    }
}

/// The most frequent candidate delimiter outside quotes.
fn sniff(line: &str) -> u8 {
    let mut counts = [0usize; 4];
    let candidates = [b',', b'\t', b';', b'|'];
    let mut quoted = false;
    for b in line.bytes() {
        if b == b'"' {
            quoted = !quoted;
        } else if !quoted && let Some(i) = candidates.iter().position(|c| *c == b) {
            counts[i] += 1;
        }
    }
    let best = (0..4)
        .max_by_key(|i| (counts[*i], usize::from(*i == 0)))
        .unwrap_or(0);
    if counts[best] == 0 {
        b','
    } else {
        candidates[best]
    }
}

struct CsvParser {
    config: Config,
    /// Text held until the first line is complete (to choose the delimiter).
    head: String,
    reader: Option<Reader>,
    output: Vec<u8>,
    out_len: usize,
    ends: Vec<usize>,
    ends_len: usize,
    /// The record being read is over the cap; its bytes are being dropped.
    too_large: Option<u64>,
    header: Option<Vec<String>>,
    /// Line on which the next record starts, and the current line.
    record_line: u64,
    /// Between records (blank lines there are skipped, not part of a field).
    at_record_start: bool,
    line: u64,
    index: u64,
}

const MAX_FIELDS: usize = 100_000;

impl CsvParser {
    fn start(&mut self, text: &str) -> usize {
        let first = text.split('\n').next().unwrap_or("");
        let (delimiter, skip) = match (self.config.delimiter, first.strip_prefix("sep=")) {
            (Some(d), _) => (d, 0),
            (None, Some(rest)) if rest.trim_end().len() == 1 => {
                (rest.as_bytes()[0], first.len() + 1)
            }
            (None, _) if self.config.tsv => (b'\t', 0),
            (None, _) => (sniff(first), 0),
        };
        self.reader = Some(ReaderBuilder::new().delimiter(delimiter).build());
        if skip > 0 {
            self.line += 1;
            self.record_line = self.line;
        }
        skip.min(text.len())
    }

    fn read(&mut self, input: &[u8], out: &mut Vec<RecordOutcome>) -> Result<(), FatalError> {
        let mut pos = 0;
        loop {
            if self.at_record_start {
                // Blank lines between records: skip them here so the next
                // record's line number is where its first byte is.
                while pos < input.len() && matches!(input[pos], b'\n' | b'\r') {
                    if input[pos] == b'\n' {
                        self.line += 1;
                    }
                    pos += 1;
                }
                if pos == input.len() && !input.is_empty() {
                    return Ok(());
                }
                self.record_line = self.line;
            }
            let reader = self.reader.as_mut().expect("started");
            let (res, nin, nout, nend) = reader.read_record(
                &input[pos..],
                &mut self.output[self.out_len..],
                &mut self.ends[self.ends_len..],
            );
            self.line += input[pos..pos + nin]
                .iter()
                .filter(|b| **b == b'\n')
                .count() as u64;
            pos += nin;
            if nin > 0 {
                self.at_record_start = false;
            }
            self.out_len += nout;
            self.ends_len += nend;
            match res {
                ReadRecordResult::InputEmpty => return Ok(()),
                ReadRecordResult::OutputFull => self.grow_output(),
                ReadRecordResult::OutputEndsFull => {
                    if self.ends.len() >= MAX_FIELDS {
                        self.too_large.get_or_insert(self.out_len as u64);
                        self.ends_len = 0;
                    } else {
                        self.ends.resize(self.ends.len() * 2, 0);
                    }
                }
                ReadRecordResult::Record => {
                    self.record(out)?;
                    self.out_len = 0;
                    self.ends_len = 0;
                    self.at_record_start = true;
                }
                ReadRecordResult::End => return Ok(()),
            }
        }
    }

    fn grow_output(&mut self) {
        if let Some(n) = &mut self.too_large {
            *n += self.out_len as u64;
            self.out_len = 0;
        } else if self.output.len() >= self.config.max {
            self.too_large = Some(self.out_len as u64);
            self.out_len = 0;
        } else {
            let size = (self.output.len() * 2).min(self.config.max);
            self.output.resize(size.max(self.output.len() + 1), 0);
        }
    }

    fn record(&mut self, out: &mut Vec<RecordOutcome>) -> Result<(), FatalError> {
        let at = Location {
            line: self.record_line,
            index: self.index,
        };
        if let Some(len) = self.too_large.take() {
            self.index += 1;
            out.push(RecordOutcome::rejected(
                at,
                None,
                format!(
                    "record too large ({} > max_record_bytes {}); skipped",
                    human_bytes(len + self.out_len as u64),
                    human_bytes(self.config.max as u64)
                ),
            ));
            return Ok(());
        }
        let mut fields = Vec::with_capacity(self.ends_len);
        let mut from = 0;
        for &end in &self.ends[..self.ends_len] {
            let bytes = &self.output[from..end];
            // The host hands us UTF-8, and csv-core only splits on ASCII.
            fields.push(String::from_utf8_lossy(bytes).into_owned());
            from = end;
        }
        let Some(header) = &self.header else {
            return self.set_header(fields, at);
        };
        if fields.iter().all(|f| f.trim().is_empty()) {
            return Ok(());
        }
        self.index += 1;
        let extra = fields
            .iter()
            .enumerate()
            .skip(header.len())
            .find(|(_, f)| !f.trim().is_empty());
        if let Some((i, _)) = extra {
            out.push(RecordOutcome::rejected(
                at,
                None,
                format!(
                    "row has a value in column {} but the header names only {} columns",
                    i + 1,
                    header.len()
                ),
            ));
            return Ok(());
        }
        let mut object = Map::new();
        for (name, value) in header.iter().zip(fields) {
            if name.is_empty() || value.is_empty() {
                continue;
            }
            let structured = self.config.structured.iter().any(|s| s == name);
            let trimmed = value.trim_start();
            let parsed = if structured && (trimmed.starts_with('[') || trimmed.starts_with('{')) {
                serde_json::from_str(&value).ok()
            } else {
                None
            };
            object.insert(name.clone(), parsed.unwrap_or(Value::String(value)));
        }
        out.push(
            match self
                .config
                .normaliser
                .normalise_record(&Value::Object(object))
            {
                Ok(normalised) => normalised.into_outcome(at),
                Err(e) => RecordOutcome::rejected(at, e.field.as_deref(), e.message),
            },
        );
        Ok(())
    }

    fn set_header(&mut self, fields: Vec<String>, at: Location) -> Result<(), FatalError> {
        let names: Vec<String> = fields.into_iter().map(|f| f.trim().to_string()).collect();
        for (i, name) in names.iter().enumerate() {
            if !name.is_empty() && names[..i].contains(name) {
                return Err(FatalError::new(
                    Some(at),
                    format!("the header names column `{name}` twice"),
                ));
            }
        }
        if names.iter().all(String::is_empty) {
            return Err(FatalError::new(Some(at), "the header row is empty"));
        }
        self.header = Some(names);
        Ok(())
    }
}

impl RecordParser for CsvParser {
    fn new(options: ParseOptions) -> Result<Self, FatalError> {
        let config = Config::new(&options).map_err(|e| {
            let field = e.field.map(|f| format!("{f}: ")).unwrap_or_default();
            FatalError::new(None, format!("{field}{}", e.message))
        })?;
        Ok(Self {
            config,
            head: String::new(),
            reader: None,
            output: vec![0; 4096],
            out_len: 0,
            ends: vec![0; 64],
            ends_len: 0,
            too_large: None,
            header: None,
            record_line: 1,
            at_record_start: true,
            line: 1,
            index: 0,
        })
    }

    fn feed(&mut self, chunk: &str, out: &mut Vec<RecordOutcome>) -> Result<(), FatalError> {
        if chunk.is_empty() {
            // csv-core reads an empty input as the end of the data.
            return Ok(());
        }
        if self.reader.is_some() {
            return self.read(chunk.as_bytes(), out);
        }
        self.head.push_str(chunk);
        if !self.head.contains('\n') && self.head.len() < 64 << 10 {
            return Ok(());
        }
        let head = std::mem::take(&mut self.head);
        let skip = self.start(&head);
        self.read(&head.as_bytes()[skip..], out)
    }

    fn finish(&mut self, out: &mut Vec<RecordOutcome>) -> Result<(), FatalError> {
        if self.reader.is_none() {
            let head = std::mem::take(&mut self.head);
            if head.trim().is_empty() {
                return Err(FatalError::new(None, "empty file: no header row"));
            }
            let skip = self.start(&head);
            self.read(&head.as_bytes()[skip..], out)?;
        }
        // An empty input tells csv-core the data has ended.
        self.read(&[], out)?;
        if self.header.is_none() {
            return Err(FatalError::new(None, "empty file: no header row"));
        }
        Ok(())
    }
}

tuner_sdk::export_plugin!(format: Csv);

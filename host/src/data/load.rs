//! Loading a data file: decode, choose a format plugin, stream the text
//! through it, collect samples and rejected records.
//!
//! Memory stays bounded: text goes to the plugin one chunk at a time and
//! samples go to a caller-supplied sink as they arrive. Only the first
//! [`LoadOptions::keep_errors`] rejected records are kept for the report;
//! the rest are counted.

use std::collections::BTreeMap;
use std::fmt;
use std::path::Path;

use serde::Serialize;
use utoipa::ToSchema;

use super::decode::{self, Chunks, DecodeError, TextEncoding};
use crate::plugins::format::{FatalError, FormatPlugin, InputKind, Record};
use crate::plugins::imports::input::InputFile;
use crate::plugins::{CallError, HostParseOptions, PluginHost};
use crate::sample::Sample;

/// How many rejected records a report lists by default.
pub const DEFAULT_KEEP_ERRORS: usize = 20;

/// How to load a file.
#[derive(Debug, Clone)]
pub struct LoadOptions {
    /// Force a format plugin by name instead of detecting it.
    pub format: Option<String>,
    /// Force a record layout (`alpaca`, `sharegpt`, ...).
    pub layout: Option<String>,
    /// Column mapping: (layout field, field in the file).
    pub columns: Vec<(String, String)>,
    /// Format-specific settings, e.g. (`delimiter`, `;`).
    pub settings: Vec<(String, String)>,
    /// Settings applied only when the chosen format declares the key and
    /// `settings` does not set it: a training config's `text_split` is the
    /// `text` format's `split`, and must not trouble a JSON file of the
    /// same job.
    pub format_defaults: Vec<(String, String)>,
    /// Fail on the first rejected record's load instead of skipping it.
    pub strict: bool,
    /// Rejected records listed in the report.
    pub keep_errors: usize,
}

impl Default for LoadOptions {
    fn default() -> Self {
        Self {
            format: None,
            layout: None,
            columns: Vec::new(),
            settings: Vec::new(),
            format_defaults: Vec::new(),
            strict: false,
            keep_errors: DEFAULT_KEEP_ERRORS,
        }
    }
}

/// A record that did not become a sample.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Rejected {
    /// The file name as the user gave it.
    pub file: String,
    /// 1-based line where the record starts.
    pub line: u64,
    /// 0-based record index.
    pub index: u64,
    /// The field at fault, when known (`conversations[2].from`).
    pub field: Option<String>,
    pub message: String,
}

impl fmt::Display for Rejected {
    /// `train.jsonl:1834: field "output": expected string, found number`
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.field {
            Some(field) => write!(
                f,
                "{}:{}: field \"{field}\": {}",
                self.file, self.line, self.message
            ),
            None => write!(f, "{}:{}: {}", self.file, self.line, self.message),
        }
    }
}

/// What a load found.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct LoadReport {
    pub file: String,
    /// The format plugin used.
    pub format: String,
    pub encoding: TextEncoding,
    /// Samples accepted.
    pub samples: u64,
    /// Samples by kind (`chat`, `preference`, `unpaired`, `prompt`, `text`).
    pub kinds: BTreeMap<String, u64>,
    /// Samples by recognised layout (`alpaca`, `sharegpt`, ...).
    pub layouts: BTreeMap<String, u64>,
    /// Fields of accepted records that no part of their sample came from
    /// (an `id`, a column no layout reads), with the number of records
    /// that had each: reported, since they are not trained on.
    pub ignored_fields: BTreeMap<String, u64>,
    /// Records rejected.
    pub rejected: u64,
    /// The first rejected records (up to 20 by default).
    pub errors: Vec<Rejected>,
}

impl LoadReport {
    /// The most common layout (`mixed` never: the dominant one is named).
    pub fn main_layout(&self) -> String {
        self.layouts
            .iter()
            .max_by_key(|(_, n)| **n)
            .map(|(l, _)| l.clone())
            .unwrap_or_else(|| "none".into())
    }
}

/// Why a load failed as a whole.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error(transparent)]
    Decode(#[from] DecodeError),
    #[error("{file}: the file is empty")]
    EmptyFile { file: String },
    #[error("{file}: no format plugin recognises this file; choose one with --format ({known})")]
    NoFormat { file: String, known: String },
    #[error("no format plugin named `{name}`; installed: {known}")]
    UnknownFormat { name: String, known: String },
    #[error("{file}{}: {message}", line.map(|l| format!(":{l}")).unwrap_or_default())]
    Fatal {
        file: String,
        line: Option<u64>,
        message: String,
    },
    #[error("{}: {} record(s) rejected in strict mode, nothing stored; first: {}",
        .report.file, .report.rejected,
        .report.errors.first().map(ToString::to_string).unwrap_or_default())]
    Strict { report: Box<LoadReport> },
    #[error("{file}: no samples in the file{}", first_error(report))]
    Empty {
        file: String,
        report: Box<LoadReport>,
    },
    #[error(transparent)]
    Plugin(#[from] CallError),
    #[error("writing samples: {0}")]
    Sink(std::io::Error),
}

fn first_error(report: &LoadReport) -> String {
    match report.errors.first() {
        Some(e) => format!(" ({} rejected; first: {e})", report.rejected),
        None => String::new(),
    }
}

impl LoadError {
    /// The report, for failures that have one.
    pub fn report(&self) -> Option<&LoadReport> {
        match self {
            LoadError::Strict { report } | LoadError::Empty { report, .. } => Some(report),
            _ => None,
        }
    }
}

/// Loads `path` (shown to users as `display_name`), handing every sample to
/// `sink` in file order.
pub fn load(
    host: &PluginHost,
    path: &Path,
    display_name: &str,
    options: &LoadOptions,
    sink: impl FnMut(Sample) -> std::io::Result<()>,
) -> Result<LoadReport, LoadError> {
    if let Some(plugin) = binary_format(host, path, display_name, options.format.as_deref())? {
        return load_bytes(&plugin, path, display_name, options, sink);
    }
    let encoding = decode::sniff(path)?;
    let mut chunks = Chunks::file(path, encoding)?;
    let first = chunks.next().unwrap_or_default();
    if let Some(err) = chunks.error.take() {
        return Err(err.into());
    }
    if first.is_empty() {
        return Err(LoadError::EmptyFile {
            file: display_name.to_string(),
        });
    }
    let plugin = choose_format(host, display_name, &first, options.format.as_deref())?;
    let parse_options = checked_options(&plugin, display_name, options)?;
    let mut tally = Tally::new(display_name, plugin.name(), encoding, options, sink);
    let text = std::iter::once(first).chain(chunks.by_ref());
    let fatal = plugin.parse_stream(&parse_options, text, |records| tally.add(records))?;
    // A decoding error ends the chunk stream early: it, not the plugin's
    // view of a cut-off input, is the real problem.
    if let Some(err) = chunks.error.take() {
        return Err(err.into());
    }
    tally.finish(fatal)
}

/// A binary file (Parquet): its bytes go to the plugin's byte parser, which
/// reads them through the host a row group at a time.
fn load_bytes(
    plugin: &FormatPlugin,
    path: &Path,
    display_name: &str,
    options: &LoadOptions,
    sink: impl FnMut(Sample) -> std::io::Result<()>,
) -> Result<LoadReport, LoadError> {
    let io = |source| DecodeError::Io {
        path: display_name.to_string(),
        source,
    };
    let file = InputFile::open(path).map_err(io)?;
    if file.is_empty() {
        return Err(LoadError::EmptyFile {
            file: display_name.to_string(),
        });
    }
    let parse_options = checked_options(plugin, display_name, options)?;
    let mut tally = Tally::new(
        display_name,
        plugin.name(),
        TextEncoding::Binary,
        options,
        sink,
    );
    let fatal = plugin.parse_bytes(&parse_options, file, |records| tally.add(records))?;
    tally.finish(fatal)
}

/// The options for `plugin`: the format defaults it declares added, the
/// settings checked against its schema and the whole checked by the plugin,
/// before any parsing.
fn checked_options(
    plugin: &FormatPlugin,
    display_name: &str,
    options: &LoadOptions,
) -> Result<HostParseOptions, LoadError> {
    let refused = |message: String| LoadError::Fatal {
        file: display_name.to_string(),
        line: None,
        message,
    };
    let mut settings = options.settings.clone();
    for (key, value) in &options.format_defaults {
        if !settings.iter().any(|(k, _)| k == key) && plugin.declares_setting(key)? {
            settings.push((key.clone(), value.clone()));
        }
    }
    let parse_options = HostParseOptions {
        file_name: display_name.to_string(),
        layout: options.layout.clone(),
        columns: options.columns.clone(),
        settings: plugin.format_values(&settings)?.map_err(refused)?,
    };
    if let Err(e) = plugin.check_options(&parse_options)? {
        return Err(refused(match e.field {
            Some(field) => format!(
                "format plugin `{}`: `{field}`: {}",
                plugin.name(),
                e.message
            ),
            None => format!("format plugin `{}`: {}", plugin.name(), e.message),
        }));
    }
    Ok(parse_options)
}

/// The report of a load in progress: counts every record the plugin
/// returns and hands samples to the sink.
struct Tally<'a, S> {
    report: LoadReport,
    options: &'a LoadOptions,
    sink: S,
    sink_error: Option<std::io::Error>,
}

impl<'a, S: FnMut(Sample) -> std::io::Result<()>> Tally<'a, S> {
    fn new(
        display_name: &str,
        format: &str,
        encoding: TextEncoding,
        options: &'a LoadOptions,
        sink: S,
    ) -> Self {
        Tally {
            report: LoadReport {
                file: display_name.to_string(),
                format: format.to_string(),
                encoding,
                samples: 0,
                kinds: BTreeMap::new(),
                layouts: BTreeMap::new(),
                ignored_fields: BTreeMap::new(),
                rejected: 0,
                errors: Vec::new(),
            },
            options,
            sink,
            sink_error: None,
        }
    }

    fn add(&mut self, records: Vec<Record>) {
        let report = &mut self.report;
        for record in records {
            match record {
                Record::Sample {
                    sample,
                    layout,
                    ignored_fields,
                    ..
                } => {
                    report.samples += 1;
                    count(&mut report.layouts, &layout);
                    for field in &ignored_fields {
                        count(&mut report.ignored_fields, field);
                    }
                    count(&mut report.kinds, sample.kind().as_str());
                    if self.sink_error.is_none()
                        && let Err(e) = (self.sink)(sample)
                    {
                        self.sink_error = Some(e);
                    }
                }
                Record::Rejected {
                    location,
                    field,
                    message,
                } => {
                    report.rejected += 1;
                    if report.errors.len() < self.options.keep_errors {
                        report.errors.push(Rejected {
                            file: report.file.clone(),
                            line: location.line,
                            index: location.index,
                            field,
                            message,
                        });
                    }
                }
            }
        }
    }

    /// The report, or why the load failed as a whole: the plugin's fatal
    /// error, the sink's, a rejected record in strict mode, no samples.
    fn finish(self, fatal: Result<(), FatalError>) -> Result<LoadReport, LoadError> {
        let report = self.report;
        if let Err(fatal) = fatal {
            return Err(LoadError::Fatal {
                file: report.file,
                line: fatal.location.map(|l| l.line),
                message: fatal.message,
            });
        }
        if let Some(e) = self.sink_error {
            return Err(LoadError::Sink(e));
        }
        if self.options.strict && report.rejected > 0 {
            return Err(LoadError::Strict {
                report: Box::new(report),
            });
        }
        if report.samples == 0 {
            return Err(LoadError::Empty {
                file: report.file.clone(),
                report: Box::new(report),
            });
        }
        Ok(report)
    }
}

/// A format plugin that reads bytes and takes this file: the one named by
/// `--format` (when it reads bytes), else the most confident one (at least
/// 0.5) given the name and the first 16 KiB. `None`: the file is text.
fn binary_format(
    host: &PluginHost,
    path: &Path,
    display_name: &str,
    forced: Option<&str>,
) -> Result<Option<FormatPlugin>, LoadError> {
    let readers: Vec<FormatPlugin> = host
        .formats()
        .into_iter()
        .filter(|p| p.input_kind().is_ok_and(|k| k == InputKind::Bytes))
        .collect();
    if let Some(name) = forced {
        return Ok(readers.into_iter().find(|p| p.name() == name));
    }
    if readers.is_empty() {
        return Ok(None);
    }
    let mut head = Vec::with_capacity(16 << 10);
    std::fs::File::open(path)
        .and_then(|f| std::io::Read::read_to_end(&mut std::io::Read::take(f, 16 << 10), &mut head))
        .map_err(|source| DecodeError::Io {
            path: display_name.to_string(),
            source,
        })?;
    let head = String::from_utf8_lossy(&head);
    let best = readers
        .into_iter()
        .filter_map(|p| Some((p.detect(display_name, &head).ok()?, p)))
        .filter(|(score, _)| *score >= 0.5)
        .max_by(|a, b| a.0.total_cmp(&b.0));
    Ok(best.map(|(_, p)| p))
}

/// Adds one to `key`'s count, allocating the key only the first time (this
/// runs once per record).
fn count(counts: &mut BTreeMap<String, u64>, key: &str) {
    match counts.get_mut(key) {
        Some(n) => *n += 1,
        None => {
            counts.insert(key.to_string(), 1);
        }
    }
}

/// The named format plugin, or the one most confident about the file
/// (`detect` over the first KiB of text; the file extension breaks ties).
fn choose_format(
    host: &PluginHost,
    file_name: &str,
    first_chunk: &str,
    forced: Option<&str>,
) -> Result<FormatPlugin, LoadError> {
    // Binary formats were asked first (`binary_format`); text goes to the others.
    let formats: Vec<FormatPlugin> = host
        .formats()
        .into_iter()
        .filter(|p| p.input_kind().is_ok_and(|k| k == InputKind::Text))
        .collect();
    let known = formats
        .iter()
        .map(|p| p.name().to_string())
        .collect::<Vec<_>>()
        .join(", ");
    if let Some(name) = forced {
        return formats
            .into_iter()
            .find(|p| p.name() == name)
            .ok_or_else(|| LoadError::UnknownFormat {
                name: name.to_string(),
                known,
            });
    }
    let mut cut = first_chunk.len().min(16 << 10);
    while !first_chunk.is_char_boundary(cut) {
        cut -= 1;
    }
    let head = &first_chunk[..cut];
    let extension = Path::new(file_name)
        .extension()
        .and_then(|e| e.to_str())
        .map(str::to_ascii_lowercase);
    // Every plugin is asked at once, each under the short detection
    // deadline, so a slow one costs that deadline once, not once per plugin.
    // A plugin that fails to answer (or is degraded after failing before) is
    // skipped, not fatal: another may fit.
    let answers: Vec<_> = std::thread::scope(|scope| {
        let asks: Vec<_> = formats
            .into_iter()
            .map(|plugin| {
                let extension = extension.as_deref();
                scope.spawn(move || {
                    let score = plugin.detect(file_name, head).ok()?;
                    let by_ext = extension.is_some_and(|e| {
                        plugin
                            .extensions()
                            .is_ok_and(|list| list.iter().any(|x| x.eq_ignore_ascii_case(e)))
                    });
                    Some((score, by_ext, plugin))
                })
            })
            .collect();
        asks.into_iter()
            .filter_map(|ask| ask.join().ok().flatten())
            .collect()
    });
    let mut best: Option<(f32, bool, FormatPlugin)> = None;
    for (score, by_ext, plugin) in answers {
        let better = match &best {
            None => true,
            Some((s, e, _)) => (score, by_ext) > (*s, *e),
        };
        if score > 0.0 && better {
            best = Some((score, by_ext, plugin));
        }
    }
    best.map(|(_, _, p)| p).ok_or_else(|| LoadError::NoFormat {
        file: file_name.to_string(),
        known,
    })
}

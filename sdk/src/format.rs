//! Format plugins: read a data file format and produce training samples.
//!
//! The host decodes the file's bytes to text and feeds it to your
//! [`RecordParser`] in chunks; you return each record as a sample or as a
//! rejected record (with the field and reason). Records never need the whole
//! file in memory. For line-oriented formats, [`Lines`] does the
//! chunk-to-line bookkeeping, and [`ByLine`] turns a one-line parser
//! ([`LineParser`]) into a full one.
//!
//! A format's own `--set key=value` options are declared by
//! [`FormatPlugin::settings`]; the host checks the user's values against
//! that schema and passes them, typed and with defaults filled in, in
//! [`ParseOptions::settings`].

use std::cell::RefCell;
use std::fmt;

pub use crate::__bindings::format::exports::tuner::plugin::format_plugin::{
    InputKind, Location, ParsedSample, RecordOutcome, RejectedRecord,
};
/// The file a binary format's [`ByteRecordParser`] reads: `size()` and
/// `read(offset, len)` (at most 64 MiB per read), served by the host.
pub use crate::__bindings::format::tuner::plugin::input::InputFile;
pub use crate::{
    ChatSample, Lines, Message, PluginError, PluginInfo, PluginKind, PreferenceSample,
    PromptSample, Sample, Setting, SettingValue, Settings, UnpairedSample,
};

use crate::__bindings::format::exports::tuner::plugin::format_plugin as wit;

/// A data format. Every function but `info` has a default.
///
/// ```no_run
/// use tuner_sdk::format::*;
///
/// struct Tsv;
///
/// impl FormatPlugin for Tsv {
///     type Parser = ByLine<TsvLine>;
///
///     fn info() -> PluginInfo {
///         tuner_sdk::plugin_info!(Format, "prompt<TAB>answer pairs")
///     }
///     fn extensions() -> Vec<String> {
///         vec!["tsv".into()]
///     }
///     fn detect(file_name: &str, head: &str) -> f32 {
///         match (file_name.ends_with(".tsv"), head.contains('\t')) {
///             (true, _) => 0.9,
///             (false, true) => 0.3,
///             _ => 0.0,
///         }
///     }
///     fn settings() -> Vec<Setting> {
///         vec![Setting::text("system", "").no_default().describe("System prompt for every sample")]
///     }
///     fn check_options(options: &ParseOptions) -> Result<(), PluginError> {
///         match options.layout.as_deref() {
///             None | Some("openai") => Ok(()),
///             Some(other) => Err(PluginError::field("layout", format!("only `openai`, not `{other}`"))),
///         }
///     }
/// }
///
/// struct TsvLine { system: Option<String> }
///
/// impl LineParser for TsvLine {
///     fn new(options: ParseOptions) -> Result<Self, FatalError> {
///         Ok(TsvLine { system: options.settings.text("system").map(str::to_string) })
///     }
///     fn parse_line(&mut self, at: Location, line: &str) -> RecordOutcome {
///         let Some((prompt, answer)) = line.split_once('\t') else {
///             return RecordOutcome::rejected(at, None, "expected prompt<TAB>answer");
///         };
///         let mut messages: Vec<Message> = self.system.iter().map(|s| Message::new("system", s.as_str())).collect();
///         messages.push(Message::new("user", prompt));
///         messages.push(Message::new("assistant", answer));
///         RecordOutcome::sample(at, Sample::Chat(ChatSample { messages, tools: None }), "openai")
///     }
/// }
///
/// tuner_sdk::export_plugin!(format: Tsv);
/// ```
pub trait FormatPlugin {
    /// The streaming parser for one file.
    type Parser: RecordParser;

    /// Name, version, description. Use [`plugin_info!`](crate::plugin_info).
    ///
    /// ```
    /// let info = tuner_sdk::plugin_info!(Format, "One text sample per line");
    /// # assert_eq!(info.description, "One text sample per line");
    /// ```
    fn info() -> PluginInfo;

    /// File extensions this format reads, without the dot.
    ///
    /// ```
    /// fn extensions() -> Vec<String> { vec!["jsonl".into(), "ndjson".into()] }
    /// # assert_eq!(extensions().len(), 2);
    /// ```
    fn extensions() -> Vec<String> {
        Vec::new()
    }

    /// Confidence from 0.0 to 1.0 that a file is in this format, given its
    /// name and first few KiB of text. The default says "not mine". Keep it
    /// quick: the host gives detection 2 seconds.
    ///
    /// ```
    /// fn detect(file_name: &str, head: &str) -> f32 {
    ///     if file_name.ends_with(".lines") { 0.9 } else if head.is_empty() { 0.0 } else { 0.05 }
    /// }
    /// # assert_eq!(detect("a.lines", ""), 0.9);
    /// ```
    fn detect(file_name: &str, head: &str) -> f32 {
        let _ = (file_name, head);
        0.0
    }

    /// The format's own settings (`--set key=value`), e.g. a delimiter. The
    /// host refuses keys outside this list and values that do not fit it,
    /// and fills in the defaults. The default: none.
    ///
    /// ```
    /// use tuner_sdk::Setting;
    /// fn settings() -> Vec<Setting> {
    ///     vec![Setting::choice("split", &["file", "line"], "file").describe("What one sample is")]
    /// }
    /// # assert_eq!(settings()[0].name, "split");
    /// ```
    fn settings() -> Vec<Setting> {
        Vec::new()
    }

    /// Rejects options before any parsing: a layout the format cannot
    /// produce, a bad column mapping, a combination of settings the schema
    /// cannot express. The host calls it before every parse. The default
    /// accepts everything.
    ///
    /// ```
    /// use tuner_sdk::format::{ParseOptions, PluginError};
    /// fn check_options(options: &ParseOptions) -> Result<(), PluginError> {
    ///     match options.settings.text("delimiter") {
    ///         Some(d) if d.chars().count() != 1 => Err(PluginError::field("delimiter", "expected one character")),
    ///         _ => Ok(()),
    ///     }
    /// }
    /// let mut options = ParseOptions::new("data.csv");
    /// options.settings = options.settings.with("delimiter", ";;");
    /// assert_eq!(check_options(&options).unwrap_err().to_string(), "`delimiter`: expected one character");
    /// ```
    fn check_options(options: &ParseOptions) -> Result<(), PluginError> {
        let _ = options;
        Ok(())
    }
}

/// How to parse one file.
///
/// ```
/// use tuner_sdk::format::ParseOptions;
/// let mut options = ParseOptions::new("train.csv");
/// options.columns.push(("instruction".into(), "question".into()));
/// options.settings = options.settings.with("delimiter", ";");
/// assert_eq!(options.settings.text("delimiter"), Some(";"));
/// ```
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ParseOptions {
    /// Name of the file, for messages and extension-based choices.
    pub file_name: String,
    /// A record layout to force instead of detecting it (`alpaca`, ...).
    pub layout: Option<String>,
    /// Column mapping: (layout field, field in the file), like
    /// LLaMA-Factory's `columns`.
    pub columns: Vec<(String, String)>,
    /// The format's settings, checked against
    /// [`FormatPlugin::settings`] and completed with its defaults.
    pub settings: Settings,
}

impl ParseOptions {
    /// Options for `file_name` with nothing else set (for tests).
    ///
    /// ```
    /// let options = tuner_sdk::format::ParseOptions::new("a.jsonl");
    /// assert!(options.layout.is_none() && options.columns.is_empty());
    /// ```
    pub fn new(file_name: &str) -> ParseOptions {
        ParseOptions {
            file_name: file_name.to_string(),
            ..ParseOptions::default()
        }
    }
}

impl From<wit::ParseOptions> for ParseOptions {
    fn from(options: wit::ParseOptions) -> Self {
        ParseOptions {
            file_name: options.file_name,
            layout: options.layout,
            columns: options.columns,
            settings: options.settings.into(),
        }
    }
}

/// A failure that ends the whole parse: the input is not in this format at
/// all, or is cut off. Displays as `line N: message`.
///
/// ```
/// use tuner_sdk::format::{FatalError, Location};
/// let err = FatalError::new(Some(Location { line: 3, index: 2 }), "unterminated string");
/// assert_eq!(err.to_string(), "line 3: unterminated string");
/// assert_eq!(FatalError::new(None, "empty file").to_string(), "empty file");
/// ```
#[derive(Clone, Debug, PartialEq)]
pub struct FatalError {
    /// Where, if known.
    pub location: Option<Location>,
    /// What is wrong.
    pub message: String,
}

impl FatalError {
    /// A fatal error at an optional location.
    ///
    /// ```
    /// let err = tuner_sdk::format::FatalError::new(None, "no header row");
    /// assert!(err.location.is_none());
    /// ```
    pub fn new(location: Option<Location>, message: impl Into<String>) -> Self {
        Self {
            location,
            message: message.into(),
        }
    }
}

impl fmt::Display for FatalError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.location {
            Some(at) => write!(f, "line {}: {}", at.line, self.message),
            None => f.write_str(&self.message),
        }
    }
}

impl std::error::Error for FatalError {}

/// Parses one file, chunk by chunk. One parser per file; the host calls
/// `new`, then `feed` once per chunk, then `finish`.
///
/// ```no_run
/// use tuner_sdk::format::*;
///
/// /// Every blank-line-separated block is a text sample.
/// struct Paragraphs { lines: Lines, block: String, start: u64, index: u64 }
///
/// impl Paragraphs {
///     fn on_line(&mut self, line_no: u64, line: &str, out: &mut Vec<RecordOutcome>) {
///         if line.trim().is_empty() {
///             self.flush(out);
///         } else {
///             if self.block.is_empty() { self.start = line_no; } else { self.block.push('\n'); }
///             self.block.push_str(line);
///         }
///     }
///     fn flush(&mut self, out: &mut Vec<RecordOutcome>) {
///         if self.block.is_empty() { return; }
///         let at = Location { line: self.start, index: self.index };
///         self.index += 1;
///         out.push(RecordOutcome::sample(at, Sample::Text(std::mem::take(&mut self.block)), "text"));
///     }
/// }
///
/// impl RecordParser for Paragraphs {
///     fn new(_options: ParseOptions) -> Result<Self, FatalError> {
///         Ok(Paragraphs { lines: Lines::new(), block: String::new(), start: 1, index: 0 })
///     }
///     fn feed(&mut self, chunk: &str, out: &mut Vec<RecordOutcome>) -> Result<(), FatalError> {
///         let mut lines = std::mem::take(&mut self.lines);
///         lines.feed(chunk, |n, line| self.on_line(n, line, out));
///         self.lines = lines;
///         Ok(())
///     }
///     fn finish(&mut self, out: &mut Vec<RecordOutcome>) -> Result<(), FatalError> {
///         let mut lines = std::mem::take(&mut self.lines);
///         lines.finish(|n, line| self.on_line(n, line, out));
///         self.flush(out);
///         Ok(())
///     }
/// }
/// # struct P;
/// # impl FormatPlugin for P { type Parser = Paragraphs; fn info() -> PluginInfo { tuner_sdk::plugin_info!(Format, "") } }
/// # tuner_sdk::export_plugin!(format: P);
/// ```
pub trait RecordParser: Sized + 'static {
    /// Starts a parse with the user's options (already accepted by
    /// [`FormatPlugin::check_options`]). An error here is reported by the
    /// first `feed`, since WIT constructors cannot fail.
    fn new(options: ParseOptions) -> Result<Self, FatalError>;

    /// Consumes the next chunk of text (which may end mid-record) and pushes
    /// every record it completes onto `out`.
    fn feed(&mut self, chunk: &str, out: &mut Vec<RecordOutcome>) -> Result<(), FatalError>;

    /// The input has ended: push the remaining records.
    fn finish(&mut self, out: &mut Vec<RecordOutcome>) -> Result<(), FatalError>;
}

impl RecordOutcome {
    /// A sample found at `location` in `layout`.
    ///
    /// ```
    /// use tuner_sdk::format::*;
    /// let at = Location { line: 1, index: 0 };
    /// let outcome = RecordOutcome::sample(at, Sample::Text("hello".into()), "text");
    /// assert!(matches!(outcome, RecordOutcome::Sample(_)));
    /// ```
    pub fn sample(location: Location, sample: Sample, layout: &str) -> Self {
        RecordOutcome::Sample(ParsedSample {
            location,
            sample,
            layout: layout.to_string(),
            ignored_fields: Vec::new(),
        })
    }

    /// Names the record's fields that the sample was not made from (an
    /// `id`, a column no layout reads), so the host can report them. Does
    /// nothing to a rejected record.
    ///
    /// ```
    /// use tuner_sdk::format::*;
    /// let at = Location { line: 1, index: 0 };
    /// let outcome = RecordOutcome::sample(at, Sample::Text("t".into()), "text")
    ///     .ignoring(vec!["id".into()]);
    /// let RecordOutcome::Sample(parsed) = outcome else { unreachable!() };
    /// assert_eq!(parsed.ignored_fields, ["id"]);
    /// ```
    pub fn ignoring(mut self, fields: Vec<String>) -> Self {
        if let RecordOutcome::Sample(parsed) = &mut self {
            parsed.ignored_fields = fields;
        }
        self
    }

    /// A record rejected at `location`, naming the field at fault.
    ///
    /// ```
    /// use tuner_sdk::format::*;
    /// let at = Location { line: 4, index: 3 };
    /// let outcome = RecordOutcome::rejected(at, Some("output"), "expected string, found number");
    /// let RecordOutcome::Rejected(r) = outcome else { panic!() };
    /// assert_eq!(r.field.as_deref(), Some("output"));
    /// ```
    pub fn rejected(location: Location, field: Option<&str>, message: impl Into<String>) -> Self {
        RecordOutcome::Rejected(RejectedRecord {
            location,
            field: field.map(str::to_string),
            message: message.into(),
        })
    }
}

/// A line-oriented format: one record per non-empty line (JSON Lines, CSV
/// without multi-line fields, plain text). Use it as
/// `type Parser = ByLine<MyLineParser>;` and only parse single lines.
///
/// ```no_run
/// use tuner_sdk::format::*;
///
/// struct Upper;
/// impl LineParser for Upper {
///     fn new(_options: ParseOptions) -> Result<Self, FatalError> { Ok(Upper) }
///     fn parse_line(&mut self, at: Location, line: &str) -> RecordOutcome {
///         RecordOutcome::sample(at, Sample::Text(line.to_uppercase()), "text")
///     }
/// }
///
/// struct Shout;
/// impl FormatPlugin for Shout {
///     type Parser = ByLine<Upper>;
///     fn info() -> PluginInfo { tuner_sdk::plugin_info!(Format, "Loud lines") }
/// }
/// tuner_sdk::export_plugin!(format: Shout);
/// ```
pub trait LineParser: Sized + 'static {
    /// Starts a parse with the user's options.
    fn new(options: ParseOptions) -> Result<Self, FatalError>;

    /// The outcome for one non-empty line found at `at`.
    fn parse_line(&mut self, at: Location, line: &str) -> RecordOutcome;
}

/// Turns a [`LineParser`] into a [`RecordParser`]: splits the streamed text
/// into lines, skips blank ones, numbers lines and records.
///
/// ```
/// use tuner_sdk::format::*;
///
/// struct Echo;
/// impl LineParser for Echo {
///     fn new(_: ParseOptions) -> Result<Self, FatalError> { Ok(Echo) }
///     fn parse_line(&mut self, at: Location, line: &str) -> RecordOutcome {
///         RecordOutcome::sample(at, Sample::Text(line.into()), "text")
///     }
/// }
///
/// let mut parser = <ByLine<Echo> as RecordParser>::new(ParseOptions::new("a.txt")).unwrap();
/// let mut out = Vec::new();
/// parser.feed("one\n\ntw", &mut out).unwrap();
/// parser.feed("o\n", &mut out).unwrap();
/// parser.finish(&mut out).unwrap();
/// let RecordOutcome::Sample(second) = &out[1] else { panic!() };
/// assert_eq!((second.location.line, second.location.index), (3, 1));
/// ```
pub struct ByLine<P: LineParser> {
    parser: P,
    lines: Lines,
    index: u64,
}

impl<P: LineParser> ByLine<P> {
    fn emit(parser: &mut P, index: &mut u64, line: u64, text: &str, out: &mut Vec<RecordOutcome>) {
        if text.trim().is_empty() {
            return;
        }
        out.push(parser.parse_line(
            Location {
                line,
                index: *index,
            },
            text,
        ));
        *index += 1;
    }
}

impl<P: LineParser> RecordParser for ByLine<P> {
    fn new(options: ParseOptions) -> Result<Self, FatalError> {
        Ok(Self {
            parser: P::new(options)?,
            lines: Lines::new(),
            index: 0,
        })
    }

    fn feed(&mut self, chunk: &str, out: &mut Vec<RecordOutcome>) -> Result<(), FatalError> {
        let (parser, index) = (&mut self.parser, &mut self.index);
        self.lines.feed(chunk, |line, text| {
            Self::emit(parser, index, line, text, out)
        });
        Ok(())
    }

    fn finish(&mut self, out: &mut Vec<RecordOutcome>) -> Result<(), FatalError> {
        let (parser, index) = (&mut self.parser, &mut self.index);
        self.lines
            .finish(|line, text| Self::emit(parser, index, line, text, out));
        Ok(())
    }
}

/// A binary format (Parquet, Arrow): the host hands it the file's bytes
/// through an [`InputFile`] instead of decoded text. Implement
/// [`FormatPlugin`] too, with `type Parser = BytesOnly;`, and export with
/// `export_plugin!(binary_format: MyFormat)`.
pub trait BinaryFormatPlugin: FormatPlugin {
    /// The parser over one file's bytes.
    type ByteParser: ByteRecordParser;
}

/// Parses one binary file. The host calls `new`, then `next` until it
/// answers `None`; each call should return a bounded batch (one row group),
/// so that neither side holds the whole file.
pub trait ByteRecordParser: Sized + 'static {
    /// Starts a parse of `file` with the user's options. An error here is
    /// reported by the first `next`.
    fn new(options: ParseOptions, file: InputFile) -> Result<Self, FatalError>;

    /// The next records, or `None` when the file has no more.
    fn next(&mut self) -> Result<Option<Vec<RecordOutcome>>, FatalError>;
}

/// The text parser of a binary format: never used by the host, which
/// hands binary formats their bytes. Refuses text if called.
pub struct BytesOnly;

impl RecordParser for BytesOnly {
    fn new(_: ParseOptions) -> Result<Self, FatalError> {
        Err(FatalError::new(None, "this format reads bytes, not text"))
    }
    fn feed(&mut self, _: &str, _: &mut Vec<RecordOutcome>) -> Result<(), FatalError> {
        Ok(())
    }
    fn finish(&mut self, _: &mut Vec<RecordOutcome>) -> Result<(), FatalError> {
        Ok(())
    }
}

/// The byte parser of a text format: never used by the host. Refuses bytes
/// if called.
#[doc(hidden)]
pub struct TextOnly;

impl ByteRecordParser for TextOnly {
    fn new(_: ParseOptions, _: InputFile) -> Result<Self, FatalError> {
        Err(FatalError::new(None, "this format reads text, not bytes"))
    }
    fn next(&mut self) -> Result<Option<Vec<RecordOutcome>>, FatalError> {
        Ok(None)
    }
}

/// Adapts a [`ByteRecordParser`] to the WIT `byte-parser` resource.
#[doc(hidden)]
pub struct ByteParserResource<P: ByteRecordParser> {
    state: RefCell<Result<P, FatalError>>,
}

impl<P: ByteRecordParser> wit::GuestByteParser for ByteParserResource<P> {
    fn new(options: wit::ParseOptions, file: InputFile) -> Self {
        Self {
            state: RefCell::new(P::new(options.into(), file)),
        }
    }

    fn next(&self) -> Result<Option<Vec<RecordOutcome>>, FatalError> {
        let mut state = self.state.borrow_mut();
        state.as_mut().map_err(|e| e.clone())?.next()
    }
}

/// Adapts a [`RecordParser`] to the WIT `parser` resource. A constructor
/// error is kept and reported by the first `feed`, since WIT constructors
/// cannot fail.
#[doc(hidden)]
pub struct ParserResource<P: RecordParser> {
    state: RefCell<Result<P, FatalError>>,
}

impl<P: RecordParser> ParserResource<P> {
    fn with(
        &self,
        f: impl FnOnce(&mut P, &mut Vec<RecordOutcome>) -> Result<(), FatalError>,
    ) -> Result<Vec<RecordOutcome>, FatalError> {
        let mut state = self.state.borrow_mut();
        let parser = state.as_mut().map_err(|e| e.clone())?;
        let mut out = Vec::new();
        f(parser, &mut out)?;
        Ok(out)
    }
}

impl<P: RecordParser> wit::GuestParser for ParserResource<P> {
    fn new(options: wit::ParseOptions) -> Self {
        Self {
            state: RefCell::new(P::new(options.into())),
        }
    }

    fn feed(&self, chunk: String) -> Result<Vec<RecordOutcome>, FatalError> {
        self.with(|p, out| p.feed(&chunk, out))
    }

    fn finish(&self) -> Result<Vec<RecordOutcome>, FatalError> {
        self.with(|p, out| p.finish(out))
    }
}

#[doc(hidden)]
pub fn __check_options<T: FormatPlugin>(options: wit::ParseOptions) -> Result<(), PluginError> {
    T::check_options(&options.into())
}

#[doc(hidden)]
#[macro_export]
macro_rules! __format_glue {
    ($export:ident, $ty:ty, $bytes:ty, $kind:ident) => {
        impl $crate::__bindings::format::exports::tuner::plugin::format_plugin::Guest for $export {
            type Parser =
                $crate::format::ParserResource<<$ty as $crate::format::FormatPlugin>::Parser>;
            type ByteParser = $crate::format::ByteParserResource<$bytes>;
            fn info() -> $crate::PluginInfo {
                <$ty as $crate::format::FormatPlugin>::info()
            }
            fn reads() -> $crate::format::InputKind {
                $crate::format::InputKind::$kind
            }
            fn extensions() -> Vec<String> {
                <$ty as $crate::format::FormatPlugin>::extensions()
            }
            fn detect(file_name: String, head: String) -> f32 {
                <$ty as $crate::format::FormatPlugin>::detect(&file_name, &head)
            }
            fn settings() -> Vec<$crate::Setting> {
                <$ty as $crate::format::FormatPlugin>::settings()
            }
            fn check_options(
                options: $crate::__bindings::format::exports::tuner::plugin::format_plugin::ParseOptions,
            ) -> Result<(), $crate::PluginError> {
                $crate::format::__check_options::<$ty>(options)
            }
        }
    };
}

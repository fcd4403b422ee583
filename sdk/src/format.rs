//! Format plugins: read a data file format and produce training samples.
//!
//! The host decodes the file's bytes to text and feeds it to your
//! [`RecordParser`] in chunks; you return each record as a sample or as a
//! rejected record (with the field and reason). Records never need the whole
//! file in memory. For line-oriented formats, [`Lines`](crate::Lines) does the
//! chunk-to-line bookkeeping, and [`ByLine`] turns a one-line parser
//! ([`LineParser`]) into a full one.

use std::cell::RefCell;

pub use crate::__bindings::format::exports::tuner::plugin::format_plugin::{
    FatalError, Location, ParseOptions, ParsedSample, RecordOutcome, RejectedRecord,
};
pub use crate::{
    ChatSample, Lines, Message, PluginError, PluginInfo, PluginKind, PreferenceSample,
    PromptSample, Sample,
};

use crate::__bindings::format::exports::tuner::plugin::format_plugin as wit;

/// A data format. Every method but `info` has a default.
pub trait FormatPlugin {
    /// The streaming parser for one file.
    type Parser: RecordParser;

    /// Name, version, description. Use [`plugin_info!`](crate::plugin_info).
    fn info() -> PluginInfo;

    /// File extensions this format reads, without the dot.
    fn extensions() -> Vec<String> {
        Vec::new()
    }

    /// Confidence from 0.0 to 1.0 that a file is in this format, given its
    /// name and first few KiB of text. The default says "not mine".
    fn detect(file_name: &str, head: &str) -> f32 {
        let _ = (file_name, head);
        0.0
    }

    /// Rejects options the parser does not understand before any parsing.
    fn check_options(options: &ParseOptions) -> Result<(), PluginError> {
        let _ = options;
        Ok(())
    }
}

/// Parses one file, chunk by chunk.
pub trait RecordParser: Sized + 'static {
    /// Starts a parse with the user's options.
    fn new(options: ParseOptions) -> Result<Self, FatalError>;

    /// Consumes the next chunk of text (which may end mid-record) and pushes
    /// every record it completes onto `out`.
    fn feed(&mut self, chunk: &str, out: &mut Vec<RecordOutcome>) -> Result<(), FatalError>;

    /// The input has ended: push the remaining records.
    fn finish(&mut self, out: &mut Vec<RecordOutcome>) -> Result<(), FatalError>;
}

impl RecordOutcome {
    /// A sample found at `location` in `layout`.
    pub fn sample(location: Location, sample: Sample, layout: &str) -> Self {
        RecordOutcome::Sample(ParsedSample {
            location,
            sample,
            layout: layout.to_string(),
        })
    }

    /// A record rejected at `location`, naming the field at fault.
    pub fn rejected(location: Location, field: Option<&str>, message: impl Into<String>) -> Self {
        RecordOutcome::Rejected(RejectedRecord {
            location,
            field: field.map(str::to_string),
            message: message.into(),
        })
    }
}

impl FatalError {
    /// A fatal error at an optional location.
    pub fn new(location: Option<Location>, message: impl Into<String>) -> Self {
        Self {
            location,
            message: message.into(),
        }
    }
}

/// A line-oriented format: one record per non-empty line (JSON Lines, CSV
/// without multi-line fields, plain text). Use it as
/// `type Parser = ByLine<MyLineParser>;` and only parse single lines.
pub trait LineParser: Sized + 'static {
    /// Starts a parse with the user's options.
    fn new(options: ParseOptions) -> Result<Self, FatalError>;

    /// The outcome for one non-empty line found at `at`.
    fn parse_line(&mut self, at: Location, line: &str) -> RecordOutcome;
}

/// Turns a [`LineParser`] into a [`RecordParser`]: splits the streamed text
/// into lines, skips blank ones, numbers lines and records.
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
    fn new(options: ParseOptions) -> Self {
        Self {
            state: RefCell::new(P::new(options)),
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
#[macro_export]
macro_rules! __format_glue {
    ($export:ident, $ty:ty) => {
        impl $crate::__bindings::format::exports::tuner::plugin::format_plugin::Guest for $export {
            type Parser =
                $crate::format::ParserResource<<$ty as $crate::format::FormatPlugin>::Parser>;
            fn info() -> $crate::PluginInfo {
                <$ty as $crate::format::FormatPlugin>::info()
            }
            fn extensions() -> Vec<String> {
                <$ty as $crate::format::FormatPlugin>::extensions()
            }
            fn detect(file_name: String, head: String) -> f32 {
                <$ty as $crate::format::FormatPlugin>::detect(&file_name, &head)
            }
            fn check_options(
                options: $crate::format::ParseOptions,
            ) -> Result<(), $crate::PluginError> {
                <$ty as $crate::format::FormatPlugin>::check_options(&options)
            }
        }
    };
}

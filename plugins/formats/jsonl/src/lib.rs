//! JSON Lines: one JSON object per line, in any layout the `layouts` crate
//! recognises. Blank lines are skipped; a line longer than
//! `max_record_bytes` (default 64 MiB) is rejected without being buffered.

use layouts::{
    BoundedLines, LineEvent, Normaliser, human_bytes, max_record_bytes, with_shared_settings,
};
use serde_json::Value;
use tuner_sdk::format::*;

// Every record allocates and frees the same few small blocks: recycle them
// instead of going through dlmalloc each time (see `layouts::SizeClassAlloc`).
#[cfg(target_arch = "wasm32")]
#[global_allocator]
static ALLOC: layouts::SizeClassAlloc = layouts::SizeClassAlloc::new();

struct Jsonl;

impl FormatPlugin for Jsonl {
    type Parser = JsonlParser;

    fn info() -> PluginInfo {
        tuner_sdk::plugin_info!(Format, "JSON Lines training data")
    }

    fn extensions() -> Vec<String> {
        vec!["jsonl".into(), "ndjson".into()]
    }

    fn detect(file_name: &str, head: &str) -> f32 {
        let name = file_name.to_ascii_lowercase();
        let by_name = name.ends_with(".jsonl") || name.ends_with(".ndjson");
        let is_object = |l: &str| {
            l.trim_start().starts_with('{')
                && serde_json::from_str::<Value>(l).is_ok_and(|v| v.is_object())
        };
        let mut lines = head.lines().filter(|l| !l.trim().is_empty());
        let first = lines.next().is_some_and(is_object);
        // The last line of the head may be cut off: only look at the second.
        let second = lines.next().is_some_and(is_object);
        match (by_name, first, second) {
            (true, true, _) => 1.0,
            // `.json` holding one object per line: JSON Lines misnamed. One
            // object alone is more likely a JSON document (the json plugin).
            (false, true, true) => 0.8,
            (false, true, false) if name.ends_with(".json") => 0.3,
            (false, true, false) => 0.7,
            (true, false, _) => 0.4,
            (false, false, _) => 0.0,
        }
    }

    fn settings() -> Vec<Setting> {
        with_shared_settings(Vec::new())
    }

    fn check_options(options: &ParseOptions) -> Result<(), PluginError> {
        JsonlParser::configure(options)
            .map(drop)
            .map_err(|e| PluginError {
                field: e.field,
                message: e.message,
            })
    }
}

struct JsonlParser {
    normaliser: Normaliser,
    lines: BoundedLines,
    max: usize,
    index: u64,
}

impl JsonlParser {
    fn configure(options: &ParseOptions) -> Result<Self, layouts::FieldError> {
        let max = max_record_bytes(&options.settings);
        Ok(Self {
            normaliser: Normaliser::new(options.layout.as_deref(), &options.columns)?,
            lines: BoundedLines::new(max),
            max,
            index: 0,
        })
    }

    fn record(
        normaliser: &Normaliser,
        max: usize,
        index: &mut u64,
        event: LineEvent<'_>,
        out: &mut Vec<RecordOutcome>,
    ) {
        let (line, outcome) = match event {
            LineEvent::Line(_, text) if text.trim().is_empty() => return,
            LineEvent::Line(line, text) => (line, Ok(text)),
            LineEvent::TooLong(line, len) => (line, Err(len)),
        };
        let at = Location {
            line,
            index: *index,
        };
        *index += 1;
        out.push(match outcome {
            Err(len) => RecordOutcome::rejected(
                at,
                None,
                format!(
                    "record too large ({} > max_record_bytes {}); skipped",
                    human_bytes(len),
                    human_bytes(max as u64)
                ),
            ),
            Ok(text) => match normaliser.normalise_common(text) {
                // Most records: typed, borrowing parse (see `layouts::fast`).
                Some((sample, layout)) => RecordOutcome::sample(at, sample, layout.name()),
                // The rest, and every error: the general path.
                None => match serde_json::from_str::<Value>(text) {
                    Err(e) => RecordOutcome::rejected(at, None, format!("invalid JSON: {e}")),
                    Ok(value) => match normaliser.normalise_record(&value) {
                        Ok(normalised) => normalised.into_outcome(at),
                        Err(e) => RecordOutcome::rejected(at, e.field.as_deref(), e.message),
                    },
                },
            },
        });
    }
}

impl RecordParser for JsonlParser {
    fn new(options: ParseOptions) -> Result<Self, FatalError> {
        Self::configure(&options).map_err(|e| {
            let field = e.field.map(|f| format!("{f}: ")).unwrap_or_default();
            FatalError::new(None, format!("{field}{}", e.message))
        })
    }

    fn feed(&mut self, chunk: &str, out: &mut Vec<RecordOutcome>) -> Result<(), FatalError> {
        let (n, max, index) = (&self.normaliser, self.max, &mut self.index);
        self.lines
            .feed(chunk, |e| Self::record(n, max, index, e, out));
        Ok(())
    }

    fn finish(&mut self, out: &mut Vec<RecordOutcome>) -> Result<(), FatalError> {
        let (n, max, index) = (&self.normaliser, self.max, &mut self.index);
        self.lines.finish(|e| Self::record(n, max, index, e, out));
        Ok(())
    }
}

tuner_sdk::export_plugin!(format: Jsonl);

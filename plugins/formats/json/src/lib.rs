//! JSON: a top-level array of records (`[{...}, {...}]`), or an object
//! holding one such array (`{"version": 1, "data": [...]}`).
//!
//! The file is never parsed as a whole: a small scanner follows strings and
//! brackets to find where each element of the array starts and ends, and
//! only that element's text is buffered and handed to serde_json. A 2 GB
//! array therefore needs memory for one record, and an element larger than
//! `max_record_bytes` is rejected while it streams past. Setting
//! `array_key` picks the array when the wrapper object holds several.

use layouts::{FieldError, Normaliser, human_bytes, max_record_bytes, with_shared_settings};
use serde_json::Value;
use tuner_sdk::format::*;

struct Json;

impl FormatPlugin for Json {
    type Parser = JsonParser;

    fn info() -> PluginInfo {
        tuner_sdk::plugin_info!(Format, "JSON training data (array of records)")
    }

    fn extensions() -> Vec<String> {
        vec!["json".into()]
    }

    fn detect(file_name: &str, head: &str) -> f32 {
        let by_name = file_name.to_ascii_lowercase().ends_with(".json");
        match (by_name, head.trim_start().as_bytes().first()) {
            (true, Some(b'[')) => 1.0,
            (false, Some(b'[')) => 0.7,
            // `{` may also be JSON Lines; jsonl claims it more strongly when
            // the first line is a whole object.
            (true, Some(b'{')) => 0.6,
            (false, Some(b'{')) => 0.3,
            (true, _) => 0.2,
            (false, _) => 0.0,
        }
    }

    fn settings() -> Vec<Setting> {
        with_shared_settings(vec![
            Setting::text("array_key", "")
                .no_default()
                .describe(
                    "Key of the array of records when the file is an object holding several arrays",
                )
                .zh("文件为包含多个数组的对象时，记录数组所在的键"),
        ])
    }

    fn check_options(options: &ParseOptions) -> Result<(), PluginError> {
        JsonParser::configure(options)
            .map(drop)
            .map_err(|e| PluginError {
                field: e.field,
                message: e.message,
            })
    }
}

/// Where the scanner is in the document.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Before the first non-blank character.
    Start,
    /// Inside the top-level object, looking for the array of records.
    Wrapper,
    /// Inside the array of records (at bracket depth `array_depth`).
    Elements,
    /// The array is closed; scanning the rest of the wrapper object.
    AfterArray,
    /// The document is complete; only whitespace may follow.
    Done,
}

/// Layout fields that hold arrays: a wrapper key with one of these names is
/// a single record (or JSON Lines), not a data set.
const RECORD_ARRAYS: &[&str] = &[
    "conversations",
    "messages",
    "history",
    "chosen",
    "rejected",
    "tools",
    "prompt",
];

struct JsonParser {
    normaliser: Normaliser,
    max: usize,
    array_key: Option<String>,
    phase: Phase,
    /// Current 1-based line.
    line: u64,
    /// Open brackets outside strings.
    depth: usize,
    in_string: bool,
    escape: bool,
    /// Depth inside the array of records.
    array_depth: usize,
    /// Last string seen directly in the wrapper object (the key of the next value).
    last_key: String,
    capturing_key: bool,
    found_key: Option<String>,
    /// The current element: its text so far, start line, and whether it is
    /// being skipped (too large; then `skipped` counts its bytes).
    elem: String,
    elem_active: bool,
    elem_line: u64,
    skipped: Option<u64>,
    index: u64,
}

impl JsonParser {
    fn configure(options: &ParseOptions) -> Result<Self, FieldError> {
        let settings = &options.settings;
        Ok(Self {
            normaliser: Normaliser::new(options.layout.as_deref(), &options.columns)?,
            max: max_record_bytes(settings),
            array_key: settings.text("array_key").map(str::to_string),
            phase: Phase::Start,
            line: 1,
            depth: 0,
            in_string: false,
            escape: false,
            array_depth: 0,
            last_key: String::new(),
            capturing_key: false,
            found_key: None,
            elem: String::new(),
            elem_active: false,
            elem_line: 0,
            skipped: None,
            index: 0,
        })
    }

    fn fatal(&self, message: impl Into<String>) -> FatalError {
        FatalError::new(
            Some(Location {
                line: self.line,
                index: self.index,
            }),
            message,
        )
    }

    /// Appends element text, switching to skipping once past the cap.
    fn keep(&mut self, text: &str) {
        if let Some(n) = &mut self.skipped {
            *n += text.len() as u64;
        } else if self.elem.len() + text.len() > self.max {
            self.skipped = Some((self.elem.len() + text.len()) as u64);
            self.elem = String::new();
        } else {
            self.elem.push_str(text);
        }
    }

    fn end_element(&mut self, out: &mut Vec<RecordOutcome>) {
        let at = Location {
            line: self.elem_line,
            index: self.index,
        };
        self.index += 1;
        self.elem_active = false;
        if let Some(len) = self.skipped.take() {
            out.push(RecordOutcome::rejected(
                at,
                None,
                format!(
                    "record too large ({} > max_record_bytes {}); skipped",
                    human_bytes(len),
                    human_bytes(self.max as u64)
                ),
            ));
            return;
        }
        let text = std::mem::take(&mut self.elem);
        out.push(match serde_json::from_str::<Value>(text.trim()) {
            Err(e) => {
                let mut message = e.to_string();
                if let Some(pos) = message.rfind(" at line ") {
                    message.truncate(pos);
                }
                let line = self.elem_line + e.line().saturating_sub(1) as u64;
                RecordOutcome::rejected(
                    at,
                    None,
                    format!(
                        "invalid JSON: {message} (line {line}, column {})",
                        e.column()
                    ),
                )
            }
            Ok(value) => match self.normaliser.normalise_record(&value) {
                Ok(normalised) => normalised.into_outcome(at),
                Err(e) => RecordOutcome::rejected(at, e.field.as_deref(), e.message),
            },
        });
        // Keep small buffers for reuse, give big ones back.
        if text.capacity() <= 1 << 20 {
            self.elem = text;
            self.elem.clear();
        }
    }

    fn scan(&mut self, chunk: &str, out: &mut Vec<RecordOutcome>) -> Result<(), FatalError> {
        let bytes = chunk.as_bytes();
        // Start of the element's text within this chunk, while one is open.
        let mut elem_from: Option<usize> = self.elem_active.then_some(0);
        let mut key_from: Option<usize> = self.capturing_key.then_some(0);
        let mut i = 0;
        while i < bytes.len() {
            let b = bytes[i];
            if b == b'\n' {
                self.line += 1;
            }
            if self.in_string {
                if self.escape {
                    self.escape = false;
                } else if b == b'\\' {
                    self.escape = true;
                } else if b == b'"' {
                    self.in_string = false;
                    if let Some(from) = key_from.take() {
                        self.last_key.push_str(&chunk[from..i]);
                        self.capturing_key = false;
                    }
                }
                i += 1;
                continue;
            }
            match self.phase {
                Phase::Start => match b {
                    b'[' => {
                        self.depth = 1;
                        self.array_depth = 1;
                        self.phase = Phase::Elements;
                    }
                    b'{' => {
                        self.depth = 1;
                        self.phase = Phase::Wrapper;
                    }
                    _ if b.is_ascii_whitespace() => {}
                    _ => {
                        let c = chunk[i..].chars().next().unwrap_or('?');
                        return Err(self.fatal(format!(
                            "not a JSON array of records: the file starts with `{c}`, expected `[` \
                             (or an object holding an array)"
                        )));
                    }
                },
                Phase::Wrapper | Phase::AfterArray => match b {
                    b'"' => {
                        self.in_string = true;
                        if self.depth == 1 {
                            self.last_key.clear();
                            self.capturing_key = true;
                            key_from = Some(i + 1);
                        }
                    }
                    b'[' if self.depth == 1 => {
                        let key = self.last_key.clone();
                        let wanted = match &self.array_key {
                            Some(k) => *k == key,
                            None => true,
                        };
                        self.depth += 1;
                        if wanted && self.phase == Phase::AfterArray {
                            let first = self.found_key.clone().unwrap_or_default();
                            return Err(self.fatal(format!(
                                "the top-level object holds more than one array (`{first}` and \
                                 `{key}`); choose one with the setting array_key"
                            )));
                        }
                        if wanted {
                            if self.array_key.is_none() && RECORD_ARRAYS.contains(&key.as_str()) {
                                return Err(self.fatal(format!(
                                    "the top-level object looks like a single record (it has \
                                     `{key}`), not a data set: put records in an array, or one \
                                     per line as JSON Lines (.jsonl)"
                                )));
                            }
                            self.found_key = Some(key);
                            self.array_depth = self.depth;
                            self.phase = Phase::Elements;
                        }
                    }
                    b'[' | b'{' => self.depth += 1,
                    b']' | b'}' => {
                        self.depth = self.depth.saturating_sub(1);
                        if self.depth == 0 {
                            if self.phase == Phase::Wrapper {
                                return Err(self.fatal(
                                    "the top-level object holds no array of records".to_string(),
                                ));
                            }
                            self.phase = Phase::Done;
                        }
                    }
                    _ => {}
                },
                Phase::Elements => {
                    if !self.elem_active {
                        match b {
                            b']' => {
                                self.depth -= 1;
                                self.phase = if self.depth == 0 {
                                    Phase::Done
                                } else {
                                    Phase::AfterArray
                                };
                            }
                            b',' => {
                                return Err(self.fatal("empty element in the array (two commas)"));
                            }
                            _ if b.is_ascii_whitespace() => {}
                            _ => {
                                self.elem_active = true;
                                self.elem_line = self.line;
                                elem_from = Some(i);
                                // Re-read this byte as part of the element.
                                continue;
                            }
                        }
                        i += 1;
                        continue;
                    }
                    match b {
                        b'"' => self.in_string = true,
                        b'[' | b'{' => self.depth += 1,
                        b',' | b']' if self.depth == self.array_depth => {
                            let from = elem_from.take().unwrap_or(0);
                            self.keep(&chunk[from..i]);
                            self.end_element(out);
                            if b == b']' {
                                self.depth -= 1;
                                self.phase = if self.depth == 0 {
                                    Phase::Done
                                } else {
                                    Phase::AfterArray
                                };
                            }
                        }
                        b'}' if self.depth == self.array_depth => {
                            return Err(self.fatal("unbalanced `}` in the array"));
                        }
                        b']' | b'}' => self.depth -= 1,
                        _ => {}
                    }
                }
                Phase::Done => {
                    if !b.is_ascii_whitespace() {
                        return Err(self.fatal(
                            "unexpected content after the end of the JSON document".to_string(),
                        ));
                    }
                }
            }
            i += 1;
        }
        if let Some(from) = elem_from {
            self.keep(&chunk[from..]);
        }
        if let Some(from) = key_from {
            // Keys are short; cap anyway so a runaway string cannot grow it.
            if self.last_key.len() < 4096 {
                self.last_key.push_str(&chunk[from..]);
            }
        }
        Ok(())
    }
}

impl RecordParser for JsonParser {
    fn new(options: ParseOptions) -> Result<Self, FatalError> {
        Self::configure(&options).map_err(|e| {
            let field = e.field.map(|f| format!("{f}: ")).unwrap_or_default();
            FatalError::new(None, format!("{field}{}", e.message))
        })
    }

    fn feed(&mut self, chunk: &str, out: &mut Vec<RecordOutcome>) -> Result<(), FatalError> {
        self.scan(chunk, out)
    }

    fn finish(&mut self, _out: &mut Vec<RecordOutcome>) -> Result<(), FatalError> {
        match self.phase {
            Phase::Done => Ok(()),
            Phase::Start => Err(FatalError::new(None, "empty file: no JSON array")),
            _ if self.elem_active => Err(FatalError::new(
                Some(Location {
                    line: self.elem_line,
                    index: self.index,
                }),
                format!(
                    "truncated: the file ends inside record {} (which starts on line {})",
                    self.index, self.elem_line
                ),
            )),
            _ => Err(self.fatal("truncated: the file ends before the array is closed (`]`)")),
        }
    }
}

tuner_sdk::export_plugin!(format: Json);

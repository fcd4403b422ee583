//! Plain text for continued pre-training. Every sample is `text`.
//!
//! The `split` setting decides what a sample is: `file` (default, the whole
//! file), `paragraph` (blocks separated by blank lines) or `line` (each
//! non-blank line). A sample larger than `max_record_bytes` is rejected.

use layouts::{
    BoundedLines, FieldError, LineEvent, human_bytes, max_record_bytes, with_shared_settings,
};
use tuner_sdk::format::*;

struct Text;

impl FormatPlugin for Text {
    type Parser = TextParser;

    fn info() -> PluginInfo {
        tuner_sdk::plugin_info!(Format, "Plain text for pre-training")
    }

    fn extensions() -> Vec<String> {
        vec!["txt".into(), "text".into(), "md".into()]
    }

    fn detect(file_name: &str, head: &str) -> f32 {
        let name = file_name.to_ascii_lowercase();
        if [".txt", ".text", ".md"].iter().any(|e| name.ends_with(e)) {
            0.9
        } else if head.trim().is_empty() {
            0.0
        } else {
            // Anything is text: the last resort when no format claims a file.
            0.05
        }
    }

    fn settings() -> Vec<Setting> {
        with_shared_settings(vec![
            Setting::choice("split", &["file", "paragraph", "line"], "file")
                .describe(
                    "What one sample is: the whole file, a block between blank lines, or one line",
                )
                .zh("一个样本的范围：整个文件、空行分隔的段落，或单独一行"),
        ])
    }

    fn check_options(options: &ParseOptions) -> Result<(), PluginError> {
        Split::from_options(options)
            .map(drop)
            .map_err(|e| PluginError {
                field: e.field,
                message: e.message,
            })
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Split {
    File,
    Paragraph,
    Line,
}

impl Split {
    fn from_options(options: &ParseOptions) -> Result<(Split, usize), FieldError> {
        let settings = &options.settings;
        if let Some(layout) = options
            .layout
            .as_deref()
            .filter(|l| !matches!(*l, "text" | "auto"))
        {
            return Err(FieldError::new(
                "layout",
                format!("plain text files only have the `text` layout, not `{layout}`"),
            ));
        }
        let split = match settings.text("split").unwrap_or("file") {
            "file" => Split::File,
            "paragraph" => Split::Paragraph,
            "line" => Split::Line,
            other => {
                return Err(FieldError::new(
                    "split",
                    format!("unknown split `{other}`; expected file, paragraph or line"),
                ));
            }
        };
        Ok((split, max_record_bytes(settings)))
    }
}

struct TextParser {
    split: Split,
    max: usize,
    lines: BoundedLines,
    /// The sample being built, its first line, and its skipped size when
    /// it outgrew the cap.
    current: String,
    start_line: u64,
    too_large: Option<u64>,
    index: u64,
}

impl TextParser {
    fn emit(&mut self, out: &mut Vec<RecordOutcome>) {
        let at = Location {
            line: self.start_line,
            index: self.index,
        };
        let text = std::mem::take(&mut self.current);
        if let Some(len) = self.too_large.take() {
            self.index += 1;
            out.push(RecordOutcome::rejected(
                at,
                None,
                format!(
                    "text too large ({} > max_record_bytes {}); skipped (use split=paragraph or \
                     split=line for big files)",
                    human_bytes(len),
                    human_bytes(self.max as u64)
                ),
            ));
        } else if !text.trim().is_empty() {
            self.index += 1;
            out.push(RecordOutcome::sample(at, Sample::Text(text), "text"));
        }
    }

    fn append(&mut self, text: &str) {
        if let Some(n) = &mut self.too_large {
            *n += text.len() as u64;
        } else if self.current.len() + text.len() > self.max {
            self.too_large = Some((self.current.len() + text.len()) as u64);
            self.current = String::new();
        } else {
            self.current.push_str(text);
        }
    }

    fn on_line(&mut self, event: LineEvent<'_>, out: &mut Vec<RecordOutcome>) {
        let (number, line) = match event {
            LineEvent::Line(n, l) => (n, Some(l)),
            LineEvent::TooLong(n, len) => {
                if self.current.is_empty() && self.too_large.is_none() {
                    self.start_line = n;
                }
                self.too_large = Some(self.too_large.unwrap_or(0) + len);
                (n, None)
            }
        };
        match (self.split, line) {
            (Split::Line, Some(l)) => {
                self.start_line = number;
                self.current.push_str(l);
                self.emit(out);
            }
            (Split::Line, None) => self.emit(out),
            (Split::Paragraph, Some(l)) if l.trim().is_empty() => self.emit(out),
            (Split::Paragraph, Some(l)) => {
                if self.current.is_empty() && self.too_large.is_none() {
                    self.start_line = number;
                } else if self.too_large.is_none() {
                    self.current.push('\n');
                }
                self.append(l);
            }
            (Split::Paragraph, None) => {}
            (Split::File, _) => unreachable!("whole files do not go through lines"),
        }
    }
}

impl RecordParser for TextParser {
    fn new(options: ParseOptions) -> Result<Self, FatalError> {
        let (split, max) = Split::from_options(&options).map_err(|e| {
            let field = e.field.map(|f| format!("{f}: ")).unwrap_or_default();
            FatalError::new(None, format!("{field}{}", e.message))
        })?;
        Ok(Self {
            split,
            max,
            lines: BoundedLines::new(max),
            current: String::new(),
            start_line: 1,
            too_large: None,
            index: 0,
        })
    }

    fn feed(&mut self, chunk: &str, out: &mut Vec<RecordOutcome>) -> Result<(), FatalError> {
        if self.split == Split::File {
            self.append(chunk);
            return Ok(());
        }
        let mut lines = std::mem::replace(&mut self.lines, BoundedLines::new(0));
        lines.feed(chunk, |e| self.on_line(e, out));
        self.lines = lines;
        Ok(())
    }

    fn finish(&mut self, out: &mut Vec<RecordOutcome>) -> Result<(), FatalError> {
        if self.split != Split::File {
            let mut lines = std::mem::replace(&mut self.lines, BoundedLines::new(0));
            lines.finish(|e| self.on_line(e, out));
            self.lines = lines;
        }
        self.emit(out);
        Ok(())
    }
}

tuner_sdk::export_plugin!(format: Text);

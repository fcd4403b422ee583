//! JSON Lines: one JSON object per line.
//!
//! Preview: recognises OpenAI-style `{"messages": [{"role", "content"}]}` and
//! raw `{"text": ...}` records. The full set of layouts (Alpaca, ShareGPT,
//! preference pairs, prompts) comes with the training-data work.

use serde_json::Value;
use tuner_sdk::format::*;

struct Jsonl;

impl FormatPlugin for Jsonl {
    type Parser = ByLine<JsonlLine>;

    fn info() -> PluginInfo {
        tuner_sdk::plugin_info!(Format, "JSON Lines training data (preview)")
    }

    fn extensions() -> Vec<String> {
        vec!["jsonl".into(), "ndjson".into()]
    }

    fn detect(file_name: &str, head: &str) -> f32 {
        let by_name = file_name.ends_with(".jsonl") || file_name.ends_with(".ndjson");
        let first = head.lines().find(|l| !l.trim().is_empty()).unwrap_or("");
        let by_content = first.trim_start().starts_with('{')
            && serde_json::from_str::<Value>(first).is_ok_and(|v| v.is_object());
        match (by_name, by_content) {
            (true, true) => 1.0,
            (false, true) => 0.7,
            (true, false) => 0.3,
            (false, false) => 0.0,
        }
    }
}

struct JsonlLine;

impl LineParser for JsonlLine {
    fn new(_options: ParseOptions) -> Result<Self, FatalError> {
        Ok(JsonlLine)
    }

    fn parse_line(&mut self, at: Location, line: &str) -> RecordOutcome {
        match serde_json::from_str::<Value>(line) {
            Err(e) => RecordOutcome::rejected(at, None, format!("invalid JSON: {e}")),
            Ok(record) => match to_sample(&record) {
                Ok((sample, layout)) => RecordOutcome::sample(at, sample, layout),
                Err((field, msg)) => RecordOutcome::rejected(at, Some(&field), msg),
            },
        }
    }
}

fn to_sample(record: &Value) -> Result<(Sample, &'static str), (String, String)> {
    if let Some(messages) = record.get("messages") {
        let list = messages.as_array().ok_or(("messages".into(), "expected an array".into()))?;
        let mut turns = Vec::with_capacity(list.len());
        for (i, m) in list.iter().enumerate() {
            let field = |name: &str| -> Result<String, (String, String)> {
                m.get(name).and_then(Value::as_str).map(str::to_string).ok_or_else(|| {
                    (format!("messages[{i}].{name}"), "expected a string".to_string())
                })
            };
            turns.push(Message::new(field("role")?, field("content")?));
        }
        return Ok((Sample::Chat(ChatSample { messages: turns, tools: None }), "openai"));
    }
    if let Some(text) = record.get("text") {
        let text = text.as_str().ok_or(("text".into(), "expected a string".into()))?;
        return Ok((Sample::Text(text.to_string()), "text"));
    }
    Err(("messages".into(), "no `messages` or `text` field (preview layouts only)".into()))
}

tuner_sdk::export_plugin!(format: Jsonl);

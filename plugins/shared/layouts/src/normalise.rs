//! Layout detection and normalisation of one record.
//!
//! The record is a JSON object. Field names are looked up through the column
//! mapping (layout field → field in the file), so errors are reported with
//! the name the user wrote. `null` counts as absent: exports often write
//! `"system": null`.

use std::cell::RefCell;
use std::collections::BTreeMap;

use serde_json::{Map, Value};
use tuner_sdk::{ChatSample, Message, PreferenceSample, PromptSample, Sample, UnpairedSample};

use crate::type_name;

/// The record layouts tuner recognises.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Layout {
    /// `instruction`, `input`, `output`, optional `system`, `history`.
    Alpaca,
    /// `conversations` of `{from, value}`, optional `system`, `tools`.
    ShareGpt,
    /// `messages` of `{role, content}`.
    OpenAi,
    /// `chosen` / `rejected` with a prompt.
    Preference,
    /// One answer with a boolean `label` (KTO): TRL's `prompt` /
    /// `completion` / `label`, or a conversation (`messages`,
    /// `conversations`, Alpaca) whose last assistant turn is the judged
    /// answer, as LLaMA-Factory's `kto_tag` datasets are.
    Unpaired,
    /// A prompt (`prompt`, `messages`, `question`, `problem`, `instruction`)
    /// with an optional reference `answer` / `solution`.
    Prompt,
    /// `prompt` + `completion` (TRL's prompt-completion SFT shape).
    PromptCompletion,
    /// `text`.
    Text,
}

impl Layout {
    /// Every layout, in the order documented.
    pub const ALL: [Layout; 8] = [
        Layout::Alpaca,
        Layout::ShareGpt,
        Layout::OpenAi,
        Layout::Preference,
        Layout::Unpaired,
        Layout::Prompt,
        Layout::PromptCompletion,
        Layout::Text,
    ];

    /// The name reported and accepted by `ParseOptions.layout`.
    pub fn name(self) -> &'static str {
        match self {
            Layout::Alpaca => "alpaca",
            Layout::ShareGpt => "sharegpt",
            Layout::OpenAi => "openai",
            Layout::Preference => "preference",
            Layout::Unpaired => "unpaired",
            Layout::Prompt => "prompt",
            Layout::PromptCompletion => "prompt-completion",
            Layout::Text => "text",
        }
    }

    /// Parses a layout name (a few common aliases included).
    pub fn from_name(name: &str) -> Option<Layout> {
        Some(match name.trim().to_ascii_lowercase().as_str() {
            "alpaca" => Layout::Alpaca,
            "sharegpt" => Layout::ShareGpt,
            "openai" | "messages" => Layout::OpenAi,
            "preference" | "dpo" | "pairwise" | "ranking" => Layout::Preference,
            "unpaired" | "kto" | "feedback" => Layout::Unpaired,
            "prompt" | "prompt-only" | "grpo" => Layout::Prompt,
            "prompt-completion" | "completion" => Layout::PromptCompletion,
            "text" | "raw" => Layout::Text,
            _ => return None,
        })
    }
}

/// A record that cannot become a sample: the field at fault (as spelled in
/// the file) and what is wrong with it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldError {
    pub field: Option<String>,
    pub message: String,
}

impl FieldError {
    /// An error about `field`.
    pub fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            field: Some(field.into()),
            message: message.into(),
        }
    }

    /// An error about the record as a whole.
    pub fn record(message: impl Into<String>) -> Self {
        Self {
            field: None,
            message: message.into(),
        }
    }

    fn expected(field: impl Into<String>, what: &str, found: &Value) -> Self {
        Self::new(
            field,
            format!("expected {what}, found {}", type_name(found)),
        )
    }
}

/// Layout fields a column mapping may rename, plus LLaMA-Factory's ShareGPT
/// tags (`role_tag`, `content_tag`, `user_tag`, ...).
const COLUMN_KEYS: &[&str] = &[
    "instruction",
    "input",
    "output",
    "system",
    "history",
    "conversations",
    "messages",
    "tools",
    "chosen",
    "rejected",
    "prompt",
    "completion",
    "question",
    "problem",
    "answer",
    "solution",
    "text",
    "label",
];
const TAG_KEYS: &[(&str, &str)] = &[
    ("role_tag", "from"),
    ("content_tag", "value"),
    ("user_tag", "human"),
    ("assistant_tag", "gpt"),
    ("system_tag", "system"),
    ("observation_tag", "observation"),
    ("function_tag", "function_call"),
];

/// Layout fields that hold lists or objects (a CSV cell for them may carry JSON).
const STRUCTURED_KEYS: &[&str] = &[
    "history",
    "conversations",
    "messages",
    "tools",
    "chosen",
    "rejected",
    "prompt",
    "completion",
];

/// Detects layouts and normalises records, with an optional forced layout
/// and column mapping.
#[derive(Debug, Clone)]
pub struct Normaliser {
    forced: Option<Layout>,
    columns: BTreeMap<String, String>,
    tags: BTreeMap<&'static str, String>,
}

impl Normaliser {
    /// `layout` forces a layout by name; `columns` maps layout fields (and
    /// ShareGPT tags) to the file's names. Unknown names are an error.
    pub fn new(layout: Option<&str>, columns: &[(String, String)]) -> Result<Self, FieldError> {
        let forced = match layout.map(str::trim).filter(|l| !l.is_empty()) {
            None | Some("auto") => None,
            Some(name) => Some(Layout::from_name(name).ok_or_else(|| {
                let names: Vec<_> = Layout::ALL.iter().map(|l| l.name()).collect();
                FieldError::new(
                    "layout",
                    format!("unknown layout `{name}`; known: auto, {}", names.join(", ")),
                )
            })?),
        };
        let mut mapped = BTreeMap::new();
        let mut tags: BTreeMap<&'static str, String> =
            TAG_KEYS.iter().map(|(k, v)| (*k, v.to_string())).collect();
        for (key, value) in columns {
            // LLaMA-Factory's dataset_info.json calls the label column `kto_tag`.
            let key = if key == "kto_tag" {
                "label"
            } else {
                key.as_str()
            };
            if let Some((tag, _)) = TAG_KEYS.iter().find(|(t, _)| *t == key) {
                tags.insert(tag, value.clone());
            } else if COLUMN_KEYS.contains(&key) {
                mapped.insert(key.to_string(), value.clone());
            } else {
                let tag_names: Vec<_> = TAG_KEYS.iter().map(|(t, _)| *t).collect();
                return Err(FieldError::new(
                    format!("columns.{key}"),
                    format!(
                        "unknown layout field; known: {}, and the ShareGPT tags {}",
                        COLUMN_KEYS.join(", "),
                        tag_names.join(", ")
                    ),
                ));
            }
        }
        Ok(Self {
            forced,
            columns: mapped,
            tags,
        })
    }

    /// The file's names of fields that hold lists or objects.
    pub fn structured_fields(&self) -> Vec<String> {
        STRUCTURED_KEYS
            .iter()
            .map(|k| self.col(k).to_string())
            .collect()
    }

    /// Normalises a record: the sample, the layout used, and the record's
    /// fields the sample was not made from.
    pub fn normalise_record(&self, record: &Value) -> Result<Normalised, FieldError> {
        let Value::Object(map) = record else {
            return Err(FieldError::record(format!(
                "expected a JSON object, found {}",
                type_name(record)
            )));
        };
        let r = Record {
            map,
            n: self,
            used: RefCell::new(Vec::new()),
        };
        let layout = match self.forced {
            Some(layout) => layout,
            None => r.detect()?,
        };
        // Detection looks at fields the layout may not use: only what the
        // layout itself reads counts as used.
        r.used.borrow_mut().clear();
        let sample = r.sample(layout)?;
        let used = r.used.into_inner();
        let ignored = map
            .iter()
            .filter(|(k, v)| !v.is_null() && !used.contains(&k.as_str()))
            .map(|(k, _)| k.clone())
            .collect();
        Ok(Normalised {
            sample,
            layout,
            ignored,
        })
    }

    /// [`Self::normalise_record`] without the ignored fields (tests).
    #[cfg(test)]
    pub(crate) fn normalise(&self, record: &Value) -> Result<(Sample, Layout), FieldError> {
        self.normalise_record(record).map(|n| (n.sample, n.layout))
    }

    /// No column mapping and the default ShareGPT tags.
    pub(crate) fn plain_columns(&self) -> bool {
        self.columns.is_empty()
            && self
                .tags
                .iter()
                .all(|(k, v)| TAG_KEYS.iter().any(|(tk, tv)| tk == k && tv == v))
    }

    /// The layout forced by the options, if any.
    pub(crate) fn forced(&self) -> Option<Layout> {
        self.forced
    }

    fn col<'a>(&'a self, key: &'a str) -> &'a str {
        self.columns.get(key).map(String::as_str).unwrap_or(key)
    }
}

/// What [`Normaliser::normalise_record`] made of a record.
#[derive(Debug, Clone, PartialEq)]
pub struct Normalised {
    pub sample: Sample,
    pub layout: Layout,
    /// The record's fields (as the file names them) that no part of the
    /// sample came from, `null`s aside, in the record's order: the host
    /// reports them, so no field is dropped without a word.
    pub ignored: Vec<String>,
}

impl Normalised {
    /// The record outcome a format plugin returns for this record at `at`.
    pub fn into_outcome(self, at: tuner_sdk::format::Location) -> tuner_sdk::format::RecordOutcome {
        tuner_sdk::format::RecordOutcome::sample(at, self.sample, self.layout.name())
            .ignoring(self.ignored)
    }
}

/// One record under a normaliser's mapping.
struct Record<'a> {
    map: &'a Map<String, Value>,
    n: &'a Normaliser,
    /// The record's fields read so far (their names in the file).
    used: RefCell<Vec<&'a str>>,
}

impl<'a> Record<'a> {
    /// The sample of `layout` made from this record.
    fn sample(&self, layout: Layout) -> Result<Sample, FieldError> {
        Ok(match layout {
            Layout::Alpaca => self.alpaca()?,
            Layout::ShareGpt => self.sharegpt()?,
            Layout::OpenAi => self.openai()?,
            Layout::Preference => self.preference()?,
            Layout::Unpaired => self.unpaired()?,
            Layout::Prompt => self.prompt()?,
            Layout::PromptCompletion => self.prompt_completion()?,
            Layout::Text => Sample::Text(self.required_str("text")?),
        })
    }

    /// The value of a layout field (`null` counts as absent) and its name in the file.
    fn get(&self, key: &'a str) -> Option<(&'a str, &'a Value)> {
        let name = self.n.col(key);
        let found = self.map.get_key_value(name).or_else(|| {
            // LLaMA-Factory v1 preference samples name the two sides
            // `chosen_messages` and `rejected_messages`.
            let v1 = match key {
                "chosen" if name == key => "chosen_messages",
                "rejected" if name == key => "rejected_messages",
                _ => return None,
            };
            self.map.get_key_value(v1)
        });
        let (name, value) = found.filter(|(_, v)| !v.is_null())?;
        self.used.borrow_mut().push(name.as_str());
        Some((name.as_str(), value))
    }

    fn has(&self, key: &'a str) -> bool {
        self.get(key).is_some()
    }

    fn missing(&self, key: &str) -> FieldError {
        FieldError::new(self.n.col(key), "missing required field")
    }

    fn optional_str(&self, key: &'a str) -> Result<Option<String>, FieldError> {
        match self.get(key) {
            None => Ok(None),
            Some((_, Value::String(s))) => Ok(Some(s.clone())),
            Some((name, other)) => Err(FieldError::expected(name, "string", other)),
        }
    }

    fn required_str(&self, key: &'a str) -> Result<String, FieldError> {
        self.optional_str(key)?.ok_or_else(|| self.missing(key))
    }

    fn detect(&self) -> Result<Layout, FieldError> {
        let has_answer = self.has("answer") || self.has("solution");
        match (self.has("chosen"), self.has("rejected")) {
            (true, true) => return Ok(Layout::Preference),
            (true, false) => {
                return Err(FieldError::new(
                    self.n.col("rejected"),
                    "missing: a preference pair needs `rejected` beside `chosen`",
                ));
            }
            (false, true) => {
                return Err(FieldError::new(
                    self.n.col("chosen"),
                    "missing: a preference pair needs `chosen` beside `rejected`",
                ));
            }
            (false, false) => {}
        }
        if self.label_if_boolean().is_some() {
            return Ok(Layout::Unpaired);
        }
        if self.has("conversations") {
            return Ok(Layout::ShareGpt);
        }
        if let Some((_, messages)) = self.get("messages") {
            let has_assistant = messages.as_array().is_some_and(|list| {
                list.iter()
                    .any(|m| m.get("role").and_then(Value::as_str) == Some("assistant"))
            });
            return Ok(if has_answer || (messages.is_array() && !has_assistant) {
                Layout::Prompt
            } else {
                Layout::OpenAi
            });
        }
        if self.has("instruction") {
            return Ok(if !self.has("output") && has_answer {
                Layout::Prompt
            } else {
                Layout::Alpaca
            });
        }
        if self.has("prompt") {
            return Ok(if self.has("completion") {
                Layout::PromptCompletion
            } else {
                Layout::Prompt
            });
        }
        if (self.has("question") || self.has("problem")) && has_answer {
            return Ok(Layout::Prompt);
        }
        if self.has("text") {
            return Ok(Layout::Text);
        }
        let mut keys: Vec<&str> = self.map.keys().map(String::as_str).take(8).collect();
        if self.map.len() > 8 {
            keys.push("...");
        }
        Err(FieldError::record(format!(
            "unrecognised layout: expected `messages`, `conversations`, `instruction`/`output`, \
             `chosen`/`rejected`, `prompt` or `text`, found fields [{}]; map yours with a \
             column mapping (e.g. --column output=response) or force one with --layout",
            keys.join(", ")
        )))
    }

    fn system_turn(&self) -> Result<Option<Message>, FieldError> {
        Ok(self
            .optional_str("system")?
            .filter(|s| !s.is_empty())
            .map(|s| Message::new("system", s)))
    }

    /// `system` + `history` + `instruction`/`input` as the user turn.
    fn alpaca_prompt(&self) -> Result<Vec<Message>, FieldError> {
        let mut turns: Vec<Message> = self.system_turn()?.into_iter().collect();
        if let Some((name, history)) = self.get("history") {
            let pairs = history
                .as_array()
                .ok_or_else(|| FieldError::expected(name, "array of [prompt, answer]", history))?;
            for (i, pair) in pairs.iter().enumerate() {
                let field = format!("{name}[{i}]");
                let items = pair
                    .as_array()
                    .filter(|a| a.len() == 2)
                    .ok_or_else(|| FieldError::expected(&field, "[prompt, answer]", pair))?;
                for (j, (role, item)) in ["user", "assistant"].iter().zip(items).enumerate() {
                    let text = item.as_str().ok_or_else(|| {
                        FieldError::expected(format!("{field}[{j}]"), "string", item)
                    })?;
                    turns.push(Message::new(*role, text));
                }
            }
        }
        let instruction = self.required_str("instruction")?;
        let input = self.optional_str("input")?.unwrap_or_default();
        let user = match (instruction.is_empty(), input.is_empty()) {
            (_, true) => instruction,
            (true, false) => input,
            (false, false) => format!("{instruction}\n{input}"),
        };
        if user.is_empty() {
            return Err(FieldError::new(
                self.n.col("instruction"),
                "empty instruction and input",
            ));
        }
        turns.push(Message::new("user", user));
        Ok(turns)
    }

    fn alpaca(&self) -> Result<Sample, FieldError> {
        let mut messages = self.alpaca_prompt()?;
        messages.push(Message::new("assistant", self.required_str("output")?));
        Ok(Sample::Chat(ChatSample {
            messages,
            tools: None,
        }))
    }

    fn tools(&self) -> Result<Option<String>, FieldError> {
        match self.get("tools") {
            None => Ok(None),
            Some((name, Value::String(s))) => {
                if s.trim().is_empty() {
                    return Ok(None);
                }
                let parsed: Value = serde_json::from_str(s).map_err(|e| {
                    FieldError::new(name, format!("expected a JSON array of tools: {e}"))
                })?;
                if !parsed.is_array() && !parsed.is_object() {
                    return Err(FieldError::expected(name, "a JSON array of tools", &parsed));
                }
                Ok(Some(to_array_json(parsed)))
            }
            Some((_, v @ (Value::Array(_) | Value::Object(_)))) => {
                Ok(Some(to_array_json(v.clone())))
            }
            Some((name, other)) => Err(FieldError::expected(name, "array of tools", other)),
        }
    }

    fn sharegpt(&self) -> Result<Sample, FieldError> {
        let (name, list) = self
            .get("conversations")
            .ok_or_else(|| self.missing("conversations"))?;
        let mut messages: Vec<Message> = self.system_turn()?.into_iter().collect();
        messages.extend(self.n.sharegpt_turns(name, list)?);
        require_assistant(name, &messages)?;
        Ok(Sample::Chat(ChatSample {
            messages,
            tools: self.tools()?,
        }))
    }

    fn openai(&self) -> Result<Sample, FieldError> {
        let (name, list) = self
            .get("messages")
            .ok_or_else(|| self.missing("messages"))?;
        let mut messages = openai_turns(name, list)?;
        if let Some(system) = self.system_turn()?
            && messages.first().is_none_or(|m| m.role != "system")
        {
            messages.insert(0, system);
        }
        require_assistant(name, &messages)?;
        Ok(Sample::Chat(ChatSample {
            messages,
            tools: self.tools()?,
        }))
    }

    /// A conversation given as a string (one user turn) or a message list.
    fn prompt_turns(&self, key: &'a str) -> Result<Option<Vec<Message>>, FieldError> {
        let Some((name, value)) = self.get(key) else {
            return Ok(None);
        };
        let turns = match value {
            Value::String(s) => vec![Message::new("user", s.as_str())],
            Value::Array(_) => self.n.any_turns(name, value)?,
            other => return Err(FieldError::expected(name, "string or message list", other)),
        };
        Ok(Some(turns))
    }

    /// The prompt of a preference pair or a prompt-only record.
    fn any_prompt(&self) -> Result<Option<Vec<Message>>, FieldError> {
        let mut turns = if let Some(t) = self.prompt_turns("prompt")? {
            t
        } else if let Some((name, list)) = self.get("conversations") {
            self.n.sharegpt_turns(name, list)?
        } else if let Some((name, list)) = self.get("messages") {
            openai_turns(name, list)?
        } else if self.has("instruction") {
            return self.alpaca_prompt().map(Some);
        } else if let Some(t) = self.prompt_turns("question")? {
            t
        } else if let Some(t) = self.prompt_turns("problem")? {
            t
        } else {
            return Ok(None);
        };
        if let Some(system) = self.system_turn()?
            && turns.first().is_none_or(|m| m.role != "system")
        {
            turns.insert(0, system);
        }
        Ok(Some(turns))
    }

    /// `chosen` / `rejected`: a string, one message or a message list.
    fn answer_turns(&self, key: &'a str) -> Result<Vec<Message>, FieldError> {
        let (name, value) = self.get(key).ok_or_else(|| self.missing(key))?;
        let turns = match value {
            Value::String(s) => vec![Message::new("assistant", s.as_str())],
            Value::Object(_) => self.n.any_turns(name, &Value::Array(vec![value.clone()]))?,
            Value::Array(_) => self.n.any_turns(name, value)?,
            other => {
                return Err(FieldError::expected(
                    name,
                    "string, message or message list",
                    other,
                ));
            }
        };
        if turns.is_empty() {
            return Err(FieldError::new(name, "empty: no answer"));
        }
        Ok(turns)
    }

    fn preference(&self) -> Result<Sample, FieldError> {
        let mut chosen = self.answer_turns("chosen")?;
        let mut rejected = self.answer_turns("rejected")?;
        let prompt = match self.any_prompt()? {
            Some(prompt) => prompt,
            None => {
                // TRL's implicit prompt: both lists start with the same turns.
                let shared = chosen
                    .iter()
                    .zip(&rejected)
                    .take_while(|(a, b)| a.role == b.role && a.content == b.content)
                    .count();
                if shared == 0 {
                    return Err(FieldError::new(
                        self.n.col("prompt"),
                        "missing: no prompt in `prompt`, `instruction`, `conversations` or \
                         `messages`, and `chosen`/`rejected` share no leading turns",
                    ));
                }
                rejected.drain(..shared);
                chosen.drain(..shared).collect()
            }
        };
        for (key, turns) in [("chosen", &chosen), ("rejected", &rejected)] {
            if turns.is_empty() {
                return Err(FieldError::new(
                    self.n.col(key),
                    "empty after the shared prompt",
                ));
            }
        }
        Ok(Sample::Preference(PreferenceSample {
            prompt,
            chosen,
            rejected,
        }))
    }

    /// The `label` field when it reads as a boolean: `true`/`false`, or
    /// the words `true`/`false` in any case (CSV cells are text). `None`
    /// when absent or anything else, so a classification column such as
    /// `"label": 3` is not taken for a KTO label.
    fn label_if_boolean(&self) -> Option<bool> {
        match self.get("label")?.1 {
            Value::Bool(b) => Some(*b),
            Value::String(s) if s.trim().eq_ignore_ascii_case("true") => Some(true),
            Value::String(s) if s.trim().eq_ignore_ascii_case("false") => Some(false),
            _ => None,
        }
    }

    /// An unpaired answer: TRL's `prompt` + `completion`, or a whole
    /// conversation whose last turn (an assistant turn) is the completion.
    fn unpaired(&self) -> Result<Sample, FieldError> {
        let label = match self.get("label") {
            None => return Err(self.missing("label")),
            Some((name, value)) => self.label_if_boolean().ok_or_else(|| {
                FieldError::expected(name, "boolean (true: desirable, false: undesirable)", value)
            })?,
        };
        let (prompt, completion) = if self.has("completion") {
            let prompt = self.any_prompt()?.ok_or_else(|| self.missing("prompt"))?;
            (prompt, self.answer_turns("completion")?)
        } else {
            let (field, conversation) = if self.has("conversations") {
                (self.n.col("conversations"), self.sharegpt()?)
            } else if self.has("messages") {
                (self.n.col("messages"), self.openai()?)
            } else if self.has("instruction") {
                (self.n.col("output"), self.alpaca()?)
            } else {
                return Err(FieldError::new(
                    self.n.col("completion"),
                    "missing: a labelled (KTO) record needs `prompt` + `completion`, \
                     `messages`, `conversations` or `instruction`/`output`",
                ));
            };
            let Sample::Chat(ChatSample {
                mut messages,
                tools,
            }) = conversation
            else {
                unreachable!("sharegpt, openai and alpaca records are chats")
            };
            if tools.is_some() {
                return Err(FieldError::new(
                    self.n.col("tools"),
                    "tools are not supported on labelled (KTO) records yet",
                ));
            }
            if messages.last().is_none_or(|m| m.role != "assistant") {
                return Err(FieldError::new(
                    field,
                    "the last turn must be the assistant's answer the label judges",
                ));
            }
            let completion = messages.split_off(messages.len() - 1);
            (messages, completion)
        };
        if prompt.is_empty() {
            return Err(FieldError::new(self.n.col("prompt"), "empty prompt"));
        }
        Ok(Sample::Unpaired(UnpairedSample {
            prompt,
            completion,
            label,
        }))
    }

    fn prompt(&self) -> Result<Sample, FieldError> {
        let prompt = self.any_prompt()?.ok_or_else(|| {
            FieldError::new(
                self.n.col("prompt"),
                "missing: expected `prompt`, `messages`, `question`, `problem` or `instruction`",
            )
        })?;
        if prompt.is_empty() {
            return Err(FieldError::new(self.n.col("prompt"), "empty prompt"));
        }
        let mut answer = None;
        for key in ["answer", "solution"] {
            if let Some((name, value)) = self.get(key) {
                answer = Some(match value {
                    Value::String(s) => s.clone(),
                    Value::Number(n) => n.to_string(),
                    other => return Err(FieldError::expected(name, "string or number", other)),
                });
                break;
            }
        }
        Ok(Sample::Prompt(PromptSample { prompt, answer }))
    }

    fn prompt_completion(&self) -> Result<Sample, FieldError> {
        let mut messages = self.any_prompt()?.ok_or_else(|| self.missing("prompt"))?;
        messages.extend(self.answer_turns("completion")?);
        Ok(Sample::Chat(ChatSample {
            messages,
            tools: self.tools()?,
        }))
    }
}

impl Normaliser {
    /// ShareGPT turns (`{from, value}` under the configured tags).
    fn sharegpt_turns(&self, name: &str, list: &Value) -> Result<Vec<Message>, FieldError> {
        let items = list
            .as_array()
            .ok_or_else(|| FieldError::expected(name, "array", list))?;
        let (role_tag, content_tag) = (&self.tags["role_tag"], &self.tags["content_tag"]);
        let mut turns = Vec::with_capacity(items.len());
        for (i, item) in items.iter().enumerate() {
            let field = format!("{name}[{i}]");
            let obj = item
                .as_object()
                .ok_or_else(|| FieldError::expected(&field, "object", item))?;
            let from = match obj.get(role_tag.as_str()) {
                Some(Value::String(s)) => s.as_str(),
                Some(other) => {
                    return Err(FieldError::expected(
                        format!("{field}.{role_tag}"),
                        "string",
                        other,
                    ));
                }
                None => {
                    return Err(FieldError::new(
                        format!("{field}.{role_tag}"),
                        "missing required field",
                    ));
                }
            };
            let value = match obj.get(content_tag.as_str()) {
                Some(Value::String(s)) => s.clone(),
                Some(Value::Null) => String::new(),
                Some(other) => {
                    return Err(FieldError::expected(
                        format!("{field}.{content_tag}"),
                        "string",
                        other,
                    ));
                }
                None => {
                    return Err(FieldError::new(
                        format!("{field}.{content_tag}"),
                        "missing required field",
                    ));
                }
            };
            let role = self.sharegpt_role(from).ok_or_else(|| {
                FieldError::new(
                    format!("{field}.{role_tag}"),
                    format!(
                        "unknown role `{from}`; expected {}, {}, {}, {} or {}",
                        self.tags["user_tag"],
                        self.tags["assistant_tag"],
                        self.tags["system_tag"],
                        self.tags["function_tag"],
                        self.tags["observation_tag"]
                    ),
                )
            })?;
            let content = if from == self.tags["function_tag"] {
                sharegpt_tool_calls(&value)
            } else {
                value
            };
            let mut message = Message::new(role, content);
            message.loss_weight = loss_weight(&field, obj)?;
            turns.push(message);
        }
        Ok(turns)
    }

    fn sharegpt_role(&self, from: &str) -> Option<&'static str> {
        let t = &self.tags;
        if from == t["user_tag"] || from == "user" || from == "human" {
            Some("user")
        } else if from == t["assistant_tag"] || from == "assistant" || from == "gpt" {
            Some("assistant")
        } else if from == t["system_tag"] {
            Some("system")
        } else if from == t["function_tag"] {
            Some("assistant")
        } else if from == t["observation_tag"] || from == "tool" {
            Some("tool")
        } else {
            None
        }
    }

    /// A message list in either spelling: OpenAI (`role`/`content`) or
    /// ShareGPT (`from`/`value`), decided by the first message.
    fn any_turns(&self, name: &str, list: &Value) -> Result<Vec<Message>, FieldError> {
        let sharegpt = list
            .as_array()
            .and_then(|l| l.first())
            .and_then(Value::as_object)
            .is_some_and(|m| {
                m.contains_key(self.tags["role_tag"].as_str()) && !m.contains_key("role")
            });
        if sharegpt {
            self.sharegpt_turns(name, list)
        } else {
            openai_turns(name, list)
        }
    }
}

/// OpenAI `messages`: `{role, content}` with content a string, `null` (an
/// assistant turn that only calls tools) or a list of text parts.
fn openai_turns(name: &str, list: &Value) -> Result<Vec<Message>, FieldError> {
    let items = list
        .as_array()
        .ok_or_else(|| FieldError::expected(name, "array", list))?;
    let mut turns = Vec::with_capacity(items.len());
    for (i, item) in items.iter().enumerate() {
        let field = format!("{name}[{i}]");
        let obj = item
            .as_object()
            .ok_or_else(|| FieldError::expected(&field, "object", item))?;
        let role = match obj.get("role") {
            Some(Value::String(r)) => match r.as_str() {
                "system" | "developer" => "system",
                "user" => "user",
                "assistant" => "assistant",
                "tool" | "function" | "ipython" => "tool",
                other => {
                    return Err(FieldError::new(
                        format!("{field}.role"),
                        format!("unknown role `{other}`; expected system, user, assistant or tool"),
                    ));
                }
            },
            Some(other) => {
                return Err(FieldError::expected(
                    format!("{field}.role"),
                    "string",
                    other,
                ));
            }
            None => {
                return Err(FieldError::new(
                    format!("{field}.role"),
                    "missing required field",
                ));
            }
        };
        let mut parts = match obj.get("content") {
            Some(Value::String(s)) => Parts {
                text: s.clone(),
                ..Parts::default()
            },
            None | Some(Value::Null) => Parts::default(),
            Some(Value::Array(list)) => content_parts(&format!("{field}.content"), list)?,
            Some(other) => {
                return Err(FieldError::expected(
                    format!("{field}.content"),
                    "string or list of parts",
                    other,
                ));
            }
        };
        // DeepSeek-R1-style exports keep the thinking beside the answer.
        match obj.get("reasoning_content") {
            None | Some(Value::Null) => {}
            Some(Value::String(r)) => parts.reasoning.get_or_insert_default().push_str(r),
            Some(other) => {
                return Err(FieldError::expected(
                    format!("{field}.reasoning_content"),
                    "string",
                    other,
                ));
            }
        }
        if parts.reasoning.is_some() && role != "assistant" {
            return Err(FieldError::new(
                format!("{field}.content"),
                format!("reasoning belongs to assistant turns, not to a `{role}` turn"),
            ));
        }
        let mut content = with_reasoning(parts.text, parts.reasoning.as_deref());
        for call in parts.calls {
            if !content.is_empty() {
                content.push('\n');
            }
            content.push_str(&call);
        }
        if let Some(calls) = obj.get("tool_calls").filter(|v| !v.is_null()) {
            let calls_field = format!("{field}.tool_calls");
            let calls = calls
                .as_array()
                .ok_or_else(|| FieldError::expected(&calls_field, "array", calls))?;
            for (j, call) in calls.iter().enumerate() {
                let function = call.get("function").unwrap_or(call);
                let fname = function
                    .get("name")
                    .and_then(Value::as_str)
                    .ok_or_else(|| {
                        FieldError::new(
                            format!("{calls_field}[{j}].function.name"),
                            "expected string",
                        )
                    })?;
                let arguments = function
                    .get("arguments")
                    .cloned()
                    .unwrap_or_else(|| Value::Object(Map::new()));
                if !content.is_empty() {
                    content.push('\n');
                }
                content.push_str(&qwen_tool_call(fname, &arguments));
            }
        }
        if obj.get("content").is_none_or(Value::is_null) && content.is_empty() {
            return Err(FieldError::new(
                format!("{field}.content"),
                "missing required field",
            ));
        }
        let mut message = Message::new(role, content);
        message.loss_weight = loss_weight(&field, obj)?;
        turns.push(message);
    }
    Ok(turns)
}

/// What a message's content list holds.
#[derive(Debug, Default)]
struct Parts {
    /// The text parts, joined.
    text: String,
    /// The reasoning parts (LLaMA-Factory v1 `reasoning`), joined; `None`
    /// when there were none.
    reasoning: Option<String>,
    /// Tool calls (LLaMA-Factory v1 `tool_call` parts), as Qwen3 writes them.
    calls: Vec<String>,
}

/// Reads a content list: OpenAI's text parts (`{"type": "text", "text":
/// ...}`) and LLaMA-Factory v1's parts (`{"type": "text" | "reasoning" |
/// "tool_call", "value": ...}`). Other part types (images, audio) are
/// refused rather than dropped.
fn content_parts(field: &str, list: &[Value]) -> Result<Parts, FieldError> {
    let mut parts = Parts::default();
    for (i, part) in list.iter().enumerate() {
        let obj = match part {
            Value::String(s) => {
                parts.text.push_str(s);
                continue;
            }
            Value::Object(obj) => obj,
            other => {
                return Err(FieldError::expected(
                    format!("{field}[{i}]"),
                    "object",
                    other,
                ));
            }
        };
        let kind = match obj.get("type") {
            None | Some(Value::Null) => "text",
            Some(Value::String(kind)) => kind.as_str(),
            Some(other) => {
                return Err(FieldError::expected(
                    format!("{field}[{i}].type"),
                    "string",
                    other,
                ));
            }
        };
        if !matches!(kind, "text" | "reasoning" | "thinking" | "tool_call") {
            return Err(FieldError::new(
                format!("{field}[{i}].type"),
                format!(
                    "unsupported content part `{kind}`: text, reasoning and tool_call parts are \
                     supported"
                ),
            ));
        }
        // OpenAI names the payload `text`, LLaMA-Factory v1 `value`.
        let (key, value) = match (obj.get("text"), obj.get("value")) {
            (Some(v), _) if kind == "text" => ("text", v),
            (_, Some(v)) => ("value", v),
            (Some(v), None) => ("text", v),
            (None, None) => {
                let key = if kind == "text" { "text" } else { "value" };
                return Err(FieldError::new(
                    format!("{field}[{i}].{key}"),
                    "missing required field",
                ));
            }
        };
        let at = format!("{field}[{i}].{key}");
        match (kind, value) {
            ("text", Value::String(s)) => parts.text.push_str(s),
            ("reasoning" | "thinking", Value::String(s)) => {
                parts.reasoning.get_or_insert_default().push_str(s)
            }
            ("tool_call", call) => parts.calls.push(v1_tool_call(&at, call)?),
            (_, other) => return Err(FieldError::expected(at, "string", other)),
        }
    }
    Ok(parts)
}

/// A LLaMA-Factory v1 `tool_call` part: `{"name", "arguments"}` as JSON
/// text (or as an object).
fn v1_tool_call(field: &str, value: &Value) -> Result<String, FieldError> {
    let parsed;
    let call = match value {
        Value::String(s) => {
            parsed = serde_json::from_str::<Value>(s)
                .map_err(|e| FieldError::new(field, format!("expected a JSON tool call: {e}")))?;
            &parsed
        }
        other => other,
    };
    let name = call
        .get("name")
        .and_then(Value::as_str)
        .ok_or_else(|| FieldError::new(field, "expected a tool call with a string `name`"))?;
    let arguments = call
        .get("arguments")
        .cloned()
        .unwrap_or_else(|| Value::Object(Map::new()));
    Ok(qwen_tool_call(name, &arguments))
}

/// An assistant text with its reasoning in front, as Qwen3's chat template
/// writes a turn with `reasoning_content` (and as it reads one back: the
/// template splits content at `</think>`).
fn with_reasoning(text: String, reasoning: Option<&str>) -> String {
    match reasoning {
        None => text,
        Some(r) => format!(
            "<think>\n{}\n</think>\n\n{}",
            r.trim_matches('\n'),
            text.trim_start_matches('\n')
        ),
    }
}

/// A tool call exactly as Qwen3's chat template renders one from OpenAI
/// `tool_calls`: `{"name": "NAME", "arguments": ARGS}` where ARGS is a
/// string argument as written, or anything else through the template's
/// `tojson` (Python's `json.dumps`: `", "` and `": "` separators, keys in
/// the record's order, non-ASCII kept).
fn qwen_tool_call(name: &str, arguments: &Value) -> String {
    let arguments = match arguments {
        Value::String(s) => s.clone(),
        other => python_json(other),
    };
    format!("<tool_call>\n{{\"name\": \"{name}\", \"arguments\": {arguments}}}\n</tool_call>")
}

/// `json.dumps(value, ensure_ascii=False)`.
fn python_json(value: &Value) -> String {
    match value {
        Value::Array(items) => {
            let items: Vec<String> = items.iter().map(python_json).collect();
            format!("[{}]", items.join(", "))
        }
        Value::Object(map) => {
            let items: Vec<String> = map
                .iter()
                .map(|(k, v)| format!("{}: {}", Value::String(k.clone()), python_json(v)))
                .collect();
            format!("{{{}}}", items.join(", "))
        }
        scalar => scalar.to_string(),
    }
}

/// An optional per-turn `weight` (0 or 1 in axolotl / LLaMA-Factory exports).
fn loss_weight(field: &str, obj: &Map<String, Value>) -> Result<Option<f32>, FieldError> {
    match obj.get("weight").or_else(|| obj.get("loss_weight")) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Number(n)) => Ok(n.as_f64().map(|w| w as f32)),
        Some(Value::Bool(b)) => Ok(Some(if *b { 1.0 } else { 0.0 })),
        Some(other) => Err(FieldError::expected(
            format!("{field}.weight"),
            "number",
            other,
        )),
    }
}

/// A ShareGPT `function_call` turn's value (one call, or a list of them,
/// as JSON text) as Qwen3 writes tool calls, as LLaMA-Factory's Qwen
/// formatter renders it; text that is not such JSON is wrapped as written.
fn sharegpt_tool_calls(value: &str) -> String {
    let call_of = |v: &Value| -> Option<String> {
        let name = v.get("name")?.as_str()?;
        let arguments = v
            .get("arguments")
            .cloned()
            .unwrap_or_else(|| Value::Object(Map::new()));
        Some(qwen_tool_call(name, &arguments))
    };
    let calls = match serde_json::from_str::<Value>(value) {
        Ok(Value::Array(list)) => list.iter().map(call_of).collect::<Option<Vec<_>>>(),
        Ok(one) => call_of(&one).map(|c| vec![c]),
        Err(_) => None,
    };
    match calls {
        Some(calls) if !calls.is_empty() => calls.join("\n"),
        _ => format!("<tool_call>\n{}\n</tool_call>", value.trim()),
    }
}

fn to_array_json(value: Value) -> String {
    match value {
        Value::Array(_) => value.to_string(),
        other => Value::Array(vec![other]).to_string(),
    }
}

fn require_assistant(field: &str, messages: &[Message]) -> Result<(), FieldError> {
    if messages.is_empty() {
        return Err(FieldError::new(field, "empty conversation"));
    }
    if !messages.iter().any(|m| m.role == "assistant") {
        return Err(FieldError::new(
            field,
            "no assistant turn, so nothing to train on (for prompts without answers use \
             the `prompt` layout)",
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn auto(record: Value) -> Result<(Sample, Layout), FieldError> {
        Normaliser::new(None, &[]).unwrap().normalise(&record)
    }

    fn chat(record: Value) -> (Vec<(String, String)>, Option<String>, Layout) {
        match auto(record).unwrap() {
            (Sample::Chat(c), layout) => (
                c.messages
                    .into_iter()
                    .map(|m| (m.role, m.content))
                    .collect(),
                c.tools,
                layout,
            ),
            (other, _) => panic!("not chat: {other:?}"),
        }
    }

    fn turns(t: &[(&str, &str)]) -> Vec<(String, String)> {
        t.iter()
            .map(|(r, c)| (r.to_string(), c.to_string()))
            .collect()
    }

    fn err(record: Value) -> (Option<String>, String) {
        let e = auto(record).unwrap_err();
        (e.field, e.message)
    }

    #[test]
    fn alpaca_with_system_history_and_input() {
        let (messages, _, layout) = chat(json!({
            "system": "be brief", "instruction": "翻译", "input": "hello", "output": "你好",
            "history": [["hi", "hey"]]
        }));
        assert_eq!(layout, Layout::Alpaca);
        assert_eq!(
            messages,
            turns(&[
                ("system", "be brief"),
                ("user", "hi"),
                ("assistant", "hey"),
                ("user", "翻译\nhello"),
                ("assistant", "你好")
            ])
        );
    }

    #[test]
    fn alpaca_output_of_the_wrong_type_names_the_field() {
        assert_eq!(
            err(json!({"instruction": "x", "output": 5})),
            (
                Some("output".into()),
                "expected string, found number".into()
            )
        );
        assert_eq!(
            err(json!({"instruction": "x", "output": "y", "history": [["a", 1]]})).0,
            Some("history[0][1]".into())
        );
    }

    #[test]
    fn sharegpt_roles_tools_and_function_calls() {
        let (messages, tools, layout) = chat(json!({
            "system": "sys",
            "tools": "[{\"name\": \"f\"}]",
            "conversations": [
                {"from": "human", "value": "q"},
                {"from": "function_call", "value": "{\"name\": \"f\", \"arguments\": {}}"},
                {"from": "observation", "value": "42"},
                {"from": "gpt", "value": "a"}
            ]
        }));
        assert_eq!(layout, Layout::ShareGpt);
        assert_eq!(tools.as_deref(), Some("[{\"name\":\"f\"}]"));
        assert_eq!(messages[0], ("system".into(), "sys".into()));
        assert_eq!(messages[2].0, "assistant");
        assert!(messages[2].1.starts_with("<tool_call>\n{"));
        assert_eq!(messages[3], ("tool".into(), "42".into()));
    }

    #[test]
    fn sharegpt_errors_name_the_turn() {
        let conv = json!({"conversations": [
            {"from": "human", "value": "q"}, {"from": "gpt", "value": "a"}, {"from": 3, "value": "x"}
        ]});
        assert_eq!(
            err(conv),
            (
                Some("conversations[2].from".into()),
                "expected string, found number".into()
            )
        );
        let (field, message) = err(json!({"conversations": [{"from": "bot", "value": "q"}]}));
        assert_eq!(field.as_deref(), Some("conversations[0].from"));
        assert!(message.contains("unknown role `bot`"), "{message}");
    }

    #[test]
    fn sharegpt_tags_follow_the_column_mapping() {
        let columns = [
            ("conversations".to_string(), "dialog".to_string()),
            ("role_tag".to_string(), "role".to_string()),
            ("content_tag".to_string(), "content".to_string()),
            ("user_tag".to_string(), "user".to_string()),
            ("assistant_tag".to_string(), "assistant".to_string()),
        ];
        let n = Normaliser::new(Some("sharegpt"), &columns).unwrap();
        let (sample, _) = n
            .normalise(&json!({"dialog": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]}))
            .unwrap();
        let Sample::Chat(c) = sample else { panic!() };
        assert_eq!(c.messages[1].role, "assistant");
    }

    /// LLaMA-Factory v1 records: content parts with `value`, reasoning and
    /// tool-call parts, per-message `loss_weight`; rendered as Qwen3's
    /// template writes them (LLaMA-Factory's v1 Qwen3 renderer agrees).
    #[test]
    fn llama_factory_v1_parts_reasoning_tool_calls_and_loss_weights() {
        let (s, layout) = auto(json!({"messages": [
            {"role": "system", "content": [{"type": "text", "value": "Be brief."}], "loss_weight": 0.0},
            {"role": "user", "content": [{"type": "text", "value": "Weather in 北京?"}], "loss_weight": 0.0},
            {"role": "assistant", "content": [
                {"type": "reasoning", "value": "\nNeed the tool.\n"},
                {"type": "text", "value": "Checking."},
                {"type": "tool_call", "value": "{\"name\": \"weather\", \"arguments\": {\"city\": \"北京\", \"days\": 2}}"}
            ], "loss_weight": 1.0},
            {"role": "tool", "content": [{"type": "text", "value": "晴"}]},
            {"role": "assistant", "content": [{"type": "text", "value": "Sunny."}], "loss_weight": 0.5}
        ]}))
        .unwrap();
        assert_eq!(layout, Layout::OpenAi);
        let Sample::Chat(c) = s else { panic!() };
        let m = &c.messages;
        assert_eq!(
            (m[1].content.as_str(), m[1].loss_weight),
            ("Weather in 北京?", Some(0.0))
        );
        assert_eq!(
            m[2].content,
            "<think>\nNeed the tool.\n</think>\n\nChecking.\n<tool_call>\n\
             {\"name\": \"weather\", \"arguments\": {\"city\": \"北京\", \"days\": 2}}\n</tool_call>"
        );
        assert_eq!((m[3].role.as_str(), m[3].content.as_str()), ("tool", "晴"));
        assert_eq!(m[4].loss_weight, Some(0.5));
        // `reasoning_content` beside the answer (DeepSeek-R1 exports).
        let (messages, _, _) = chat(json!({"messages": [
            {"role": "user", "content": "q"},
            {"role": "assistant", "content": "a", "reasoning_content": "think"}
        ]}));
        assert_eq!(messages[1].1, "<think>\nthink\n</think>\n\na");
        // Errors name the part.
        let (field, message) = err(json!({"messages": [
            {"role": "user", "content": [{"type": "reasoning", "value": "x"}]},
            {"role": "assistant", "content": "a"}
        ]}));
        assert_eq!(field.as_deref(), Some("messages[0].content"));
        assert!(message.contains("assistant turns"), "{message}");
        let (field, message) = err(json!({"messages": [
            {"role": "user", "content": "q"},
            {"role": "assistant", "content": [{"type": "tool_call", "value": "not json"}]}
        ]}));
        assert_eq!(field.as_deref(), Some("messages[1].content[0].value"));
        assert!(message.contains("JSON tool call"), "{message}");
        let (field, _) = err(json!({"messages": [
            {"role": "user", "content": [{"type": "image_url", "value": "x.png"}]},
            {"role": "assistant", "content": "a"}
        ]}));
        assert_eq!(field.as_deref(), Some("messages[0].content[0].type"));
    }

    #[test]
    fn llama_factory_v1_preference_samples() {
        let turn = |role: &str, text: &str| json!({"role": role, "content": [{"type": "text", "value": text}]});
        let (s, layout) = auto(json!({
            "chosen_messages": [turn("user", "2+2?"), turn("assistant", "4")],
            "rejected_messages": [turn("user", "2+2?"), turn("assistant", "5")],
            "extra_info": "{}"
        }))
        .unwrap();
        assert_eq!(layout, Layout::Preference);
        let Sample::Preference(p) = s else { panic!() };
        assert_eq!(
            (
                p.prompt[0].content.as_str(),
                p.chosen[0].content.as_str(),
                p.rejected[0].content.as_str()
            ),
            ("2+2?", "4", "5")
        );
        let (field, _) = err(json!({
            "chosen_messages": [turn("user", "q"), turn("assistant", "a")]
        }));
        assert_eq!(field.as_deref(), Some("rejected"));
    }

    #[test]
    fn openai_content_parts_and_tool_calls() {
        let (messages, _, layout) = chat(json!({"messages": [
            {"role": "user", "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]},
            {"role": "assistant", "content": null, "tool_calls": [
                {"type": "function", "function": {"name": "f", "arguments": "{\"x\": 1}"}}
            ]},
            {"role": "tool", "content": "1"},
            {"role": "assistant", "content": "done"}
        ]}));
        assert_eq!(layout, Layout::OpenAi);
        assert_eq!(messages[0], ("user".into(), "ab".into()));
        // As Qwen3's chat template renders `tool_calls`: string arguments
        // as written.
        assert_eq!(
            messages[1].1,
            "<tool_call>\n{\"name\": \"f\", \"arguments\": {\"x\": 1}}\n</tool_call>"
        );
        let (field, message) = err(json!({"messages": [
            {"role": "user", "content": [{"type": "image_url", "image_url": {}}]},
            {"role": "assistant", "content": "x"}
        ]}));
        assert_eq!(field.as_deref(), Some("messages[0].content[0].type"));
        assert!(message.contains("image_url"));
    }

    #[test]
    fn messages_without_an_answer_are_prompts() {
        let (sample, layout) =
            auto(json!({"messages": [{"role": "user", "content": "2+2?"}], "answer": 4})).unwrap();
        assert_eq!(layout, Layout::Prompt);
        let Sample::Prompt(p) = sample else { panic!() };
        assert_eq!(p.answer.as_deref(), Some("4"));
        assert_eq!(
            auto(json!({"prompt": "q", "solution": "s"})).unwrap().1,
            Layout::Prompt
        );
        assert_eq!(
            auto(json!({"problem": "q", "solution": "s"})).unwrap().1,
            Layout::Prompt
        );
    }

    #[test]
    fn preference_shapes_trl_and_llama_factory() {
        // TRL explicit prompt, string answers.
        let (s, l) = auto(json!({"prompt": "q", "chosen": "good", "rejected": "bad"})).unwrap();
        assert_eq!(l, Layout::Preference);
        let Sample::Preference(p) = s else { panic!() };
        assert_eq!(
            (p.prompt.len(), p.chosen[0].role.as_str()),
            (1, "assistant")
        );
        // TRL implicit prompt: message lists sharing the prompt.
        let user = json!({"role": "user", "content": "q"});
        let (s, _) = auto(json!({
            "chosen": [user, {"role": "assistant", "content": "good"}],
            "rejected": [user, {"role": "assistant", "content": "bad"}]
        }))
        .unwrap();
        let Sample::Preference(p) = s else { panic!() };
        assert_eq!(
            (
                p.prompt.len(),
                p.chosen.len(),
                p.rejected[0].content.as_str()
            ),
            (1, 1, "bad")
        );
        // LLaMA-Factory ShareGPT: conversations + single messages.
        let (s, _) = auto(json!({
            "conversations": [{"from": "human", "value": "q"}],
            "chosen": {"from": "gpt", "value": "good"},
            "rejected": {"from": "gpt", "value": "bad"}
        }))
        .unwrap();
        let Sample::Preference(p) = s else { panic!() };
        assert_eq!(p.chosen[0].content, "good");
        // LLaMA-Factory Alpaca.
        let (s, _) =
            auto(json!({"instruction": "q", "input": "", "chosen": "a", "rejected": "b"})).unwrap();
        let Sample::Preference(p) = s else { panic!() };
        assert_eq!(p.prompt[0].content, "q");
        assert_eq!(
            err(json!({"prompt": "q", "chosen": "a"})).0,
            Some("rejected".into())
        );
    }

    #[test]
    fn labelled_records_are_unpaired_samples_in_llama_factory_and_trl_shapes() {
        // LLaMA-Factory's kto_en_demo: messages + label.
        let (s, l) = auto(json!({"messages": [
            {"role": "user", "content": "q"},
            {"role": "assistant", "content": "bad answer"}
        ], "label": false}))
        .unwrap();
        assert_eq!(l, Layout::Unpaired);
        let Sample::Unpaired(u) = s else { panic!() };
        assert_eq!(
            (u.prompt.len(), u.completion[0].content.as_str(), u.label),
            (1, "bad answer", false)
        );
        // TRL's unpaired preference: prompt / completion / label.
        let (s, _) = auto(json!({"prompt": "q", "completion": "good", "label": true})).unwrap();
        let Sample::Unpaired(u) = s else { panic!() };
        assert_eq!(
            (
                u.prompt[0].role.as_str(),
                u.completion[0].role.as_str(),
                u.label
            ),
            ("user", "assistant", true)
        );
        // ShareGPT and Alpaca with a label; a CSV cell's "TRUE".
        let (s, _) = auto(json!({"conversations": [
            {"from": "human", "value": "q"}, {"from": "gpt", "value": "a"}
        ], "label": "TRUE"}))
        .unwrap();
        assert!(matches!(
            s,
            Sample::Unpaired(UnpairedSample { label: true, .. })
        ));
        let (s, _) = auto(json!({"instruction": "q", "output": "a", "label": false})).unwrap();
        assert!(matches!(
            s,
            Sample::Unpaired(UnpairedSample { label: false, .. })
        ));
        // LLaMA-Factory's column name `kto_tag` maps the label.
        let n = Normaliser::new(None, &[("kto_tag".into(), "tag".into())]).unwrap();
        let (s, _) = n
            .normalise(&json!({"prompt": "q", "completion": "a", "tag": true}))
            .unwrap();
        assert!(matches!(s, Sample::Unpaired(_)));
    }

    #[test]
    fn labels_that_are_not_booleans_are_not_kto_and_bad_ones_are_named() {
        // A classification label is not a KTO label: the record stays text.
        let (_, l) = auto(json!({"text": "t", "label": 3})).unwrap();
        assert_eq!(l, Layout::Text);
        let n = Normaliser::new(Some("kto"), &[]).unwrap();
        let e = n
            .normalise(&json!({"prompt": "q", "completion": "a", "label": 1}))
            .unwrap_err();
        assert_eq!(e.field.as_deref(), Some("label"));
        assert!(e.message.contains("expected boolean"), "{}", e.message);
        let (field, message) = err(json!({"messages": [
            {"role": "assistant", "content": "a"}, {"role": "user", "content": "q"}
        ], "label": true}));
        assert_eq!(field.as_deref(), Some("messages"));
        assert!(message.contains("last turn"), "{message}");
        let (field, _) = err(json!({"text": "t", "label": true}));
        assert_eq!(field.as_deref(), Some("completion"));
    }

    #[test]
    fn text_prompt_completion_and_unknown_shapes() {
        assert_eq!(auto(json!({"text": "abc"})).unwrap().1, Layout::Text);
        assert_eq!(
            err(json!({"text": 1})),
            (Some("text".into()), "expected string, found number".into())
        );
        let (messages, _, layout) = chat(json!({"prompt": "q", "completion": "a"}));
        assert_eq!(layout, Layout::PromptCompletion);
        assert_eq!(messages, turns(&[("user", "q"), ("assistant", "a")]));
        let (field, message) = err(json!({"foo": 1}));
        assert_eq!(field, None);
        assert!(message.contains("found fields [foo]"), "{message}");
        assert!(auto(json!([1])).is_err());
    }

    #[test]
    fn column_mapping_renames_fields_and_errors_use_the_file_names() {
        let columns = [
            ("instruction".to_string(), "q".to_string()),
            ("output".to_string(), "a".to_string()),
        ];
        let n = Normaliser::new(None, &columns).unwrap();
        assert_eq!(
            n.normalise(&json!({"q": "x", "a": "y"})).unwrap().1,
            Layout::Alpaca
        );
        let e = n.normalise(&json!({"q": "x", "a": 1})).unwrap_err();
        assert_eq!(e.field.as_deref(), Some("a"));
        let e = Normaliser::new(None, &[("outptu".into(), "x".into())]).unwrap_err();
        assert_eq!(e.field.as_deref(), Some("columns.outptu"));
        let e = Normaliser::new(Some("alpacca"), &[]).unwrap_err();
        assert_eq!(e.field.as_deref(), Some("layout"));
    }

    #[test]
    fn a_forced_layout_overrides_detection() {
        let n = Normaliser::new(Some("text"), &[]).unwrap();
        let (_, layout) = n.normalise(&json!({"text": "t", "messages": []})).unwrap();
        assert_eq!(layout, Layout::Text);
        let n = Normaliser::new(Some("openai"), &[]).unwrap();
        let e = n
            .normalise(&json!({"messages": [{"role": "user", "content": "q"}]}))
            .unwrap_err();
        assert!(e.message.contains("no assistant turn"), "{}", e.message);
    }

    #[test]
    fn fields_no_part_of_the_sample_came_from_are_reported() {
        let n = Normaliser::new(None, &[]).unwrap();
        let ignored = |record: Value| n.normalise_record(&record).unwrap().ignored;
        // A numeric label is no KTO label: the record is Alpaca, and both
        // `id` and `label` are reported, in the record's order.
        assert_eq!(
            ignored(json!({"id": 7, "instruction": "q", "output": "a", "label": 3})),
            ["id", "label"]
        );
        // A boolean label is read.
        assert!(ignored(json!({"prompt": "q", "completion": "a", "label": true})).is_empty());
        // Detection looked at `system`; the text layout does not use it.
        assert_eq!(ignored(json!({"text": "t", "system": "s"})), ["system"]);
        // The first prompt field found is the prompt; a second one is not.
        assert_eq!(
            ignored(json!({"prompt": "p", "question": "q", "chosen": "c", "rejected": "r"})),
            ["question"]
        );
        // `null` holds nothing to lose.
        assert!(ignored(json!({"text": "t", "meta": null})).is_empty());
        // Mapped columns count under their names in the file.
        let mapped = Normaliser::new(None, &[("output".into(), "answer_zh".into())]).unwrap();
        let out = mapped
            .normalise_record(&json!({"instruction": "q", "answer_zh": "a", "answer_en": "b"}))
            .unwrap();
        assert_eq!(out.ignored, ["answer_en"]);
    }
}

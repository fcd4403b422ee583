//! Chat templates: a model's own Jinja `chat_template`, rendered the way
//! Hugging Face transformers renders it.
//!
//! Models are trained on the exact text their template produces, so tuner
//! does not hand-write per-model formats (as LLaMA-Factory and ms-swift do);
//! it runs the template shipped in `tokenizer_config.json` with MiniJinja set
//! up like transformers' Jinja2 environment: `trim_blocks` and
//! `lstrip_blocks`, Python string methods (`.strip()`, `.startswith()`,
//! `.split()`, … via `minijinja-contrib`'s pycompat), a `raise_exception`
//! function, `tojson` as `json.dumps(ensure_ascii=False)`, the loop controls
//! extension, and the special tokens (`bos_token`, `eos_token`, …) as
//! variables. Renders are checked against Jinja2's in tests/tests/template.rs.

use std::fs;
use std::path::{Path, PathBuf};

use minijinja::syntax::SyntaxConfig;
use minijinja::value::Value;
use minijinja::{Environment, Error as JinjaError, ErrorKind as JinjaErrorKind};
use serde::Deserialize;

use super::python;
use crate::sample::Message;

/// The name the template is registered under in its environment; it shows
/// up in error messages (`chat_template:12`).
const TEMPLATE_NAME: &str = "chat_template";

/// What can go wrong loading or rendering a chat template.
#[derive(Debug, thiserror::Error)]
pub enum TemplateError {
    /// A model file could not be read.
    #[error("{}: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// `tokenizer_config.json` (or `chat_template.json`) is not valid JSON
    /// of the expected shape.
    #[error("{}: {source}", path.display())]
    Config {
        /// The file.
        path: PathBuf,
        /// Why, with line and column.
        source: serde_json::Error,
    },
    /// The model ships no chat template.
    #[error(
        "{}: no chat template: neither tokenizer_config.json \"chat_template\" nor chat_template.jinja nor chat_template.json has one (base models often have none: use a chat model's tokenizer or pass a template)",
        path.display()
    )]
    Missing {
        /// The model directory or config file that was searched.
        path: PathBuf,
    },
    /// The template does not parse.
    #[error("chat template does not parse: {0}")]
    Syntax(String),
    /// The template called `raise_exception(...)`, i.e. refused the input
    /// (for example roles out of order).
    #[error("chat template rejected the conversation: {0}")]
    Raised(String),
    /// Rendering failed for another reason.
    #[error("rendering chat template: {0}")]
    Render(String),
    /// The sample's tool definitions are not JSON.
    #[error("field \"tools\": not valid JSON: {0}")]
    Tools(serde_json::Error),
    /// A message that should be trained does not appear in the rendered
    /// text, so its tokens cannot be found.
    #[error(
        "message {index} (role \"{role}\") has loss weight {weight} but the chat template does not render its content, so its trained tokens cannot be located"
    )]
    MessageNotRendered {
        /// Position of the message in the conversation.
        index: usize,
        /// Its role.
        role: String,
        /// Its loss weight.
        weight: f32,
    },
}

/// Options for one render.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RenderOptions {
    /// Append the header that opens the next assistant turn
    /// (`<|im_start|>assistant\n` for Qwen), as for inference.
    pub add_generation_prompt: bool,
    /// Qwen3 hybrid thinking: `Some(false)` closes the thinking block in the
    /// generation prompt (`<think>\n\n</think>\n\n`), so the model answers
    /// without reasoning; `Some(true)` or `None` leaves it open. Passed as the
    /// `enable_thinking` template variable only when set, as transformers does.
    pub enable_thinking: Option<bool>,
}

impl RenderOptions {
    /// The options training renders samples with: no generation prompt,
    /// and Qwen3 thinking passed explicitly (the training config's
    /// `enable_thinking`, `false` by default). The data commands and routes
    /// render with these too, so the tokens they count as trained are the
    /// tokens training trains.
    pub fn training(enable_thinking: bool) -> Self {
        RenderOptions {
            add_generation_prompt: false,
            enable_thinking: Some(enable_thinking),
        }
    }
}

/// The special tokens of `tokenizer_config.json`, passed to the template as
/// variables and used to find where a turn ends.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SpecialTokens {
    /// `bos_token` (Qwen: none).
    pub bos: Option<String>,
    /// `eos_token` (Qwen3 chat models: `<|im_end|>`).
    pub eos: Option<String>,
    /// `pad_token`.
    pub pad: Option<String>,
    /// `unk_token`.
    pub unk: Option<String>,
    /// `additional_special_tokens`.
    pub additional: Vec<String>,
}

/// A token in `tokenizer_config.json`: a plain string or an `AddedToken`
/// object with a `content` field.
#[derive(Deserialize)]
#[serde(untagged)]
enum ConfigToken {
    Plain(String),
    Added { content: String },
}

/// `chat_template` is a string, or (older multi-template configs) a list of
/// named templates.
#[derive(Deserialize)]
#[serde(untagged)]
enum ConfigTemplate {
    Single(String),
    Named(Vec<NamedTemplate>),
}

#[derive(Deserialize)]
struct NamedTemplate {
    name: String,
    template: String,
}

/// The fields of `tokenizer_config.json` the template needs.
#[derive(Deserialize)]
struct TokenizerConfig {
    #[serde(default)]
    chat_template: Option<ConfigTemplate>,
    #[serde(default)]
    bos_token: Option<ConfigToken>,
    #[serde(default)]
    eos_token: Option<ConfigToken>,
    #[serde(default)]
    pad_token: Option<ConfigToken>,
    #[serde(default)]
    unk_token: Option<ConfigToken>,
    #[serde(default)]
    additional_special_tokens: Vec<ConfigToken>,
}

/// A compiled chat template with the model's special tokens.
pub struct ChatTemplate {
    env: Environment<'static>,
    /// The template used when the conversation has tools, if the config named
    /// one (`tool_use`); otherwise the main template serves both.
    has_tool_template: bool,
    special: SpecialTokens,
    source: String,
}

impl std::fmt::Debug for ChatTemplate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChatTemplate")
            .field("special", &self.special)
            .field("source_len", &self.source.len())
            .finish()
    }
}

const TOOL_TEMPLATE_NAME: &str = "chat_template.tool_use";

impl ChatTemplate {
    /// Compiles `source` with the given special tokens.
    ///
    /// Fails with [`TemplateError::Syntax`] (line included) when the template
    /// does not parse.
    pub fn new(source: impl Into<String>, special: SpecialTokens) -> Result<Self, TemplateError> {
        let source = source.into();
        let mut env = environment()?;
        env.add_template_owned(TEMPLATE_NAME, source.clone())
            .map_err(|e| TemplateError::Syntax(describe(&e)))?;
        Ok(ChatTemplate {
            env,
            has_tool_template: false,
            special,
            source,
        })
    }

    /// Loads the template of a model directory: `tokenizer_config.json`'s
    /// `chat_template`, else `chat_template.jinja`, else
    /// `chat_template.json` (the places transformers saves it), with the
    /// special tokens of `tokenizer_config.json`.
    pub fn from_model_dir(dir: &Path) -> Result<Self, TemplateError> {
        let config_path = dir.join("tokenizer_config.json");
        let config: TokenizerConfig = read_json(&config_path)?;
        let special = special_tokens(&config);
        if config.chat_template.is_some() {
            return Self::from_config(config, special);
        }
        let jinja_path = dir.join("chat_template.jinja");
        if jinja_path.is_file() {
            let source = fs::read_to_string(&jinja_path).map_err(|source| TemplateError::Read {
                path: jinja_path.clone(),
                source,
            })?;
            return Self::new(source, special);
        }
        let json_path = dir.join("chat_template.json");
        if json_path.is_file() {
            #[derive(Deserialize)]
            struct ChatTemplateJson {
                chat_template: String,
            }
            let file: ChatTemplateJson = read_json(&json_path)?;
            return Self::new(file.chat_template, special);
        }
        Err(TemplateError::Missing {
            path: dir.to_path_buf(),
        })
    }

    /// Loads the template and special tokens from a `tokenizer_config.json`.
    pub fn from_tokenizer_config(path: &Path) -> Result<Self, TemplateError> {
        let config: TokenizerConfig = read_json(path)?;
        let special = special_tokens(&config);
        if config.chat_template.is_none() {
            return Err(TemplateError::Missing {
                path: path.to_path_buf(),
            });
        }
        Self::from_config(config, special)
    }

    fn from_config(config: TokenizerConfig, special: SpecialTokens) -> Result<Self, TemplateError> {
        match config.chat_template {
            Some(ConfigTemplate::Single(source)) => Self::new(source, special),
            Some(ConfigTemplate::Named(named)) => {
                // transformers: "default" normally, "tool_use" when tools are
                // passed and such a template exists.
                let main = named
                    .iter()
                    .find(|t| t.name == "default")
                    .or(named.first())
                    .map(|t| t.template.clone())
                    .unwrap_or_default();
                let mut template = Self::new(main, special)?;
                if let Some(tool) = named.iter().find(|t| t.name == "tool_use") {
                    template
                        .env
                        .add_template_owned(TOOL_TEMPLATE_NAME, tool.template.clone())
                        .map_err(|e| TemplateError::Syntax(describe(&e)))?;
                    template.has_tool_template = true;
                }
                Ok(template)
            }
            None => unreachable!("callers check that a template is present"),
        }
    }

    /// The model's special tokens.
    pub fn special_tokens(&self) -> &SpecialTokens {
        &self.special
    }

    /// The template source.
    pub fn source(&self) -> &str {
        &self.source
    }

    /// Parses a sample's `tools` (a JSON array of tool definitions) into a
    /// template value, keeping key order so `tojson` writes it back as the
    /// dataset had it.
    pub fn parse_tools(tools: &str) -> Result<Value, TemplateError> {
        serde_json::from_str::<Value>(tools).map_err(TemplateError::Tools)
    }

    /// Renders a conversation: `messages` (role and content), optional tool
    /// definitions (JSON text), and the options.
    pub fn render(
        &self,
        messages: &[Message],
        tools: Option<&str>,
        options: &RenderOptions,
    ) -> Result<String, TemplateError> {
        self.render_with_variables(messages, tools, options, [])
    }

    /// [`Self::render`] with extra template variables (keyword arguments of
    /// `apply_chat_template`, such as a template's own `date_string`); they
    /// cannot replace the standard ones.
    pub fn render_with_variables(
        &self,
        messages: &[Message],
        tools: Option<&str>,
        options: &RenderOptions,
        variables: impl IntoIterator<Item = (&'static str, Value)>,
    ) -> Result<String, TemplateError> {
        let tools = tools.map(Self::parse_tools).transpose()?;
        let values: Vec<Value> = messages.iter().map(message_value).collect();
        let extra: Vec<(&'static str, Value)> = variables.into_iter().collect();
        self.render_full(&values, tools.as_ref(), options, &extra)
    }

    /// Renders already converted messages; the loss-mask code calls this many
    /// times per conversation with one message changed.
    pub(crate) fn render_values(
        &self,
        messages: &[Value],
        tools: Option<&Value>,
        options: &RenderOptions,
    ) -> Result<String, TemplateError> {
        self.render_full(messages, tools, options, &[])
    }

    fn render_full(
        &self,
        messages: &[Value],
        tools: Option<&Value>,
        options: &RenderOptions,
        extra: &[(&'static str, Value)],
    ) -> Result<String, TemplateError> {
        let name = if tools.is_some() && self.has_tool_template {
            TOOL_TEMPLATE_NAME
        } else {
            TEMPLATE_NAME
        };
        let template = self
            .env
            .get_template(name)
            .map_err(|e| TemplateError::Render(describe(&e)))?;
        let special = &self.special;
        let mut context = vec![
            ("messages", Value::from(messages.to_vec())),
            ("tools", tools.cloned().unwrap_or(Value::from(()))),
            (
                "add_generation_prompt",
                Value::from(options.add_generation_prompt),
            ),
            ("bos_token", token_value(&special.bos)),
            ("eos_token", token_value(&special.eos)),
            ("pad_token", token_value(&special.pad)),
            ("unk_token", token_value(&special.unk)),
            (
                "additional_special_tokens",
                Value::from(special.additional.clone()),
            ),
        ];
        if let Some(thinking) = options.enable_thinking {
            context.push(("enable_thinking", Value::from(thinking)));
        }
        let mut context: std::collections::BTreeMap<&'static str, Value> =
            context.into_iter().collect();
        for (name, value) in extra {
            context.entry(name).or_insert_with(|| value.clone());
        }
        let context = Value::from_object(context);
        template.render(context).map_err(|e| {
            if is_raised(&e) {
                TemplateError::Raised(e.detail().unwrap_or_default().to_owned())
            } else {
                TemplateError::Render(describe(&e))
            }
        })
    }
}

/// Marks errors that come from the template's own `raise_exception`.
const RAISED: &str = "raise_exception";

/// A MiniJinja environment configured like transformers' Jinja2 one.
fn environment() -> Result<Environment<'static>, TemplateError> {
    let mut env = Environment::new();
    let syntax = SyntaxConfig::builder()
        .trim_blocks(true)
        .lstrip_blocks(true)
        .build()
        .map_err(|e| TemplateError::Syntax(describe(&e)))?;
    env.set_syntax(syntax);
    env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
    env.add_filter("tojson", python::tojson_filter);
    env.add_function(
        "raise_exception",
        |message: String| -> Result<Value, JinjaError> {
            Err(JinjaError::new(JinjaErrorKind::InvalidOperation, message).with_source(Raised))
        },
    );
    Ok(env)
}

/// Source attached to `raise_exception` errors so rendering can tell them
/// from template bugs.
#[derive(Debug)]
struct Raised;

impl std::fmt::Display for Raised {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(RAISED)
    }
}

impl std::error::Error for Raised {}

/// Whether an error comes from the template's `raise_exception`.
fn is_raised(e: &JinjaError) -> bool {
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        if s.is::<Raised>() {
            return true;
        }
        source = s.source();
    }
    false
}

/// A MiniJinja error with its template line, on one line.
fn describe(e: &JinjaError) -> String {
    let mut out = e.kind().to_string();
    if let Some(detail) = e.detail() {
        out.push_str(": ");
        out.push_str(detail);
    }
    if let (Some(name), Some(line)) = (e.name(), e.line()) {
        out.push_str(&format!(" ({name}:{line})"));
    }
    out
}

/// A message as the template sees it: a map with `role` and `content`.
pub(crate) fn message_value(message: &Message) -> Value {
    message_value_with_content(message, &message.content)
}

/// A message with its content replaced (the loss mask's probe renders).
pub(crate) fn message_value_with_content(message: &Message, content: &str) -> Value {
    // Serialized from a struct so the map keeps `role`, `content` order, as
    // a Python dict would (it shows in `messages | tojson`).
    #[derive(serde::Serialize)]
    struct View<'a> {
        role: &'a str,
        content: &'a str,
    }
    Value::from(minijinja::value::Serde(View {
        role: &message.role,
        content,
    }))
}

fn token_value(token: &Option<String>) -> Value {
    match token {
        Some(t) => Value::from(t.as_str()),
        None => Value::from(()),
    }
}

fn special_tokens(config: &TokenizerConfig) -> SpecialTokens {
    let token = |t: &Option<ConfigToken>| {
        t.as_ref().map(|t| match t {
            ConfigToken::Plain(s) | ConfigToken::Added { content: s } => s.clone(),
        })
    };
    SpecialTokens {
        bos: token(&config.bos_token),
        eos: token(&config.eos_token),
        pad: token(&config.pad_token),
        unk: token(&config.unk_token),
        additional: config
            .additional_special_tokens
            .iter()
            .map(|t| match t {
                ConfigToken::Plain(s) | ConfigToken::Added { content: s } => s.clone(),
            })
            .collect(),
    }
}

fn read_json<T: serde::de::DeserializeOwned>(path: &Path) -> Result<T, TemplateError> {
    let bytes = fs::read(path).map_err(|source| TemplateError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    // Some tools write a UTF-8 BOM; serde_json rejects it.
    let bytes = bytes.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(&bytes);
    serde_json::from_slice(bytes).map_err(|source| TemplateError::Config {
        path: path.to_path_buf(),
        source,
    })
}

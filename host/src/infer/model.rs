//! A model loaded for generation: the network, its tokenizer and chat
//! template, the tokens that end a turn, and its context length.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use candle_core::{DType, Device};
use serde_json::Value;

use super::reasoning::prompt_opens_thinking;
use crate::model::qwen3::{LoadOptions, Quant, Qwen3, TrainMode};
use crate::sample::Message;
use crate::text::{ChatTemplate, RenderOptions, TemplateError, Tokenizer};

/// How to load the base weights.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ModelOptions {
    /// Dtype of weights and activations (f32 on the CPU by default).
    pub dtype: DType,
    /// NF4 / int8 storage of the decoder linears (QLoRA bases).
    pub quantization: Quant,
}

impl Default for ModelOptions {
    fn default() -> Self {
        ModelOptions {
            dtype: DType::F32,
            quantization: Quant::None,
        }
    }
}

/// A model ready to generate.
pub struct ServedModel {
    /// The name requests select it by (`model` in the OpenAI API).
    pub name: String,
    pub dir: PathBuf,
    pub model: Qwen3,
    pub tokenizer: Tokenizer,
    /// None when the model has no `chat_template` (a base model: raw
    /// completions only).
    pub template: Option<ChatTemplate>,
    /// Tokens that end a turn: `generation_config.json`'s `eos_token_id`
    /// (one or a list) and `tokenizer_config.json`'s `eos_token`.
    pub end_tokens: Vec<u32>,
    /// Positions the model was trained for (`max_position_embeddings`).
    pub context_len: usize,
}

/// A rendered chat prompt.
#[derive(Debug, Clone)]
pub struct ChatPrompt {
    pub text: String,
    pub ids: Vec<u32>,
    /// The prompt ends inside an open `<think>` block (the model's reply
    /// starts with reasoning).
    pub opens_thinking: bool,
}

impl ServedModel {
    /// Loads the model folder `dir` (config, safetensors, tokenizer files).
    pub fn load(name: &str, dir: &Path, options: ModelOptions, device: &Device) -> Result<Self> {
        let load = LoadOptions {
            dtype: options.dtype,
            train: TrainMode::Frozen,
            quantization: options.quantization,
            gradient_checkpointing: false,
        };
        let model = Qwen3::load(dir, device, &load)?;
        let tokenizer = Tokenizer::from_model_dir(dir)?;
        let template = match ChatTemplate::from_model_dir(dir) {
            Ok(t) => Some(t),
            // A base model without a template still serves completions.
            Err(TemplateError::Missing { .. }) => None,
            Err(TemplateError::Read { source, .. })
                if source.kind() == std::io::ErrorKind::NotFound =>
            {
                None
            }
            Err(e) => return Err(e).context(format!("{}", dir.display())),
        };
        let end_tokens = end_tokens(dir, &tokenizer, template.as_ref())?;
        let context_len = model.config().max_position_embeddings;
        Ok(ServedModel {
            name: name.to_string(),
            dir: dir.to_path_buf(),
            model,
            tokenizer,
            template,
            end_tokens,
            context_len,
        })
    }

    /// Renders `messages` with the model's template and the generation
    /// prompt, and tokenizes it. `enable_thinking` is passed to the template
    /// when set (Qwen3: `false` answers without reasoning).
    pub fn chat_prompt(
        &self,
        messages: &[Message],
        tools: Option<&str>,
        enable_thinking: Option<bool>,
    ) -> Result<ChatPrompt> {
        chat_prompt(
            self.template.as_ref(),
            &self.tokenizer,
            messages,
            tools,
            enable_thinking,
        )
    }
}

/// [`ServedModel::chat_prompt`] for a template and tokenizer held apart.
pub fn chat_prompt(
    template: Option<&ChatTemplate>,
    tokenizer: &Tokenizer,
    messages: &[Message],
    tools: Option<&str>,
    enable_thinking: Option<bool>,
) -> Result<ChatPrompt> {
    let template = template.context(
        "this model has no chat template (tokenizer_config.json has no chat_template): \
         use plain completions instead",
    )?;
    let options = RenderOptions {
        add_generation_prompt: true,
        enable_thinking,
    };
    let text = template.render(messages, tools, &options)?;
    let ids = tokenizer.encode(&text)?.ids;
    Ok(ChatPrompt {
        opens_thinking: prompt_opens_thinking(&text),
        text,
        ids,
    })
}

/// The tokens that end a turn for the model in `dir` (see
/// [`ServedModel::end_tokens`]).
pub fn end_tokens(
    dir: &Path,
    tokenizer: &Tokenizer,
    template: Option<&ChatTemplate>,
) -> Result<Vec<u32>> {
    let mut ids = Vec::new();
    let path = dir.join("generation_config.json");
    if path.is_file() {
        let text = std::fs::read_to_string(&path)
            .with_context(|| format!("reading {}", path.display()))?;
        let config: Value = serde_json::from_str(&text)
            .with_context(|| format!("{}: not valid JSON", path.display()))?;
        match config.get("eos_token_id") {
            Some(Value::Number(n)) => ids.extend(n.as_u64().map(|n| n as u32)),
            Some(Value::Array(list)) => {
                ids.extend(list.iter().filter_map(|v| v.as_u64()).map(|n| n as u32))
            }
            _ => {}
        }
    }
    if let Some(eos) = template.and_then(|t| t.special_tokens().eos.as_deref())
        && let Some(id) = tokenizer.token_id(eos)
    {
        ids.push(id);
    }
    ids.sort_unstable();
    ids.dedup();
    Ok(ids)
}

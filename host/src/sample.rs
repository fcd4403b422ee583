//! The normalised training sample: the one shape every file layout becomes.
//!
//! Format plugins produce the WIT `sample` variant; the host converts it once
//! (in [`crate::plugins::bindings`]) into these plain serde types, which
//! everything else uses: stored datasets are JSON Lines of them
//! (`{"kind": "chat", "messages": [...]}`), `--json` output and the API show
//! them, and the chat template, tokenizer and statistics read them. This
//! module depends on nothing else in the crate, so no layer has to import
//! another to agree on what a sample is.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// One turn of a conversation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Message {
    /// `system`, `user`, `assistant` or `tool`.
    pub role: String,
    /// The text of the turn.
    pub content: String,
    /// Weight of this turn in the loss; absent means the default: 1.0 for
    /// `assistant` turns, 0.0 for all others.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub loss_weight: Option<f32>,
}

impl Message {
    /// A turn with the default loss weight.
    pub fn new(role: impl Into<String>, content: impl Into<String>) -> Self {
        Message {
            role: role.into(),
            content: content.into(),
            loss_weight: None,
        }
    }

    /// The weight this turn gets in the loss: `loss_weight`, or 1.0 for an
    /// assistant turn and 0.0 for any other.
    pub fn effective_loss_weight(&self) -> f32 {
        self.loss_weight
            .unwrap_or(if self.role == "assistant" { 1.0 } else { 0.0 })
    }
}

/// A normalised training sample.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Sample {
    /// A conversation to imitate (supervised fine-tuning).
    Chat {
        /// The turns, in order; a leading `system` turn is the system prompt.
        messages: Vec<Message>,
        /// Tool definitions (a JSON array), when the record had them. A
        /// string that is not JSON is kept as a string, and rendering it
        /// fails with a message naming the field.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        #[schema(value_type = Option<Object>)]
        tools: Option<serde_json::Value>,
    },
    /// A preference pair (DPO and friends).
    Preference {
        /// The conversation up to the answer.
        prompt: Vec<Message>,
        /// The preferred continuation.
        chosen: Vec<Message>,
        /// The dispreferred continuation.
        rejected: Vec<Message>,
    },
    /// One answer labelled desirable or undesirable (KTO).
    Unpaired {
        /// The conversation up to the answer.
        prompt: Vec<Message>,
        /// The judged continuation.
        completion: Vec<Message>,
        /// True for a desirable answer.
        label: bool,
    },
    /// A prompt without an answer to imitate (GRPO and other online methods).
    Prompt {
        /// The conversation the model continues.
        prompt: Vec<Message>,
        /// A reference answer reward functions may compare against.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        answer: Option<String>,
    },
    /// Raw text for continued pre-training.
    Text {
        /// The text.
        text: String,
    },
}

/// The five sample kinds.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, ToSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum SampleKind {
    /// [`Sample::Text`].
    Text,
    /// [`Sample::Chat`].
    Chat,
    /// [`Sample::Preference`].
    Preference,
    /// [`Sample::Prompt`].
    Prompt,
    /// [`Sample::Unpaired`].
    Unpaired,
}

impl SampleKind {
    /// Every kind, in the order counts are shown.
    pub const ALL: [SampleKind; 5] = [
        SampleKind::Chat,
        SampleKind::Preference,
        SampleKind::Unpaired,
        SampleKind::Prompt,
        SampleKind::Text,
    ];

    /// The lowercase name used in JSON and messages.
    pub fn as_str(self) -> &'static str {
        match self {
            SampleKind::Text => "text",
            SampleKind::Chat => "chat",
            SampleKind::Preference => "preference",
            SampleKind::Prompt => "prompt",
            SampleKind::Unpaired => "unpaired",
        }
    }
}

impl std::fmt::Display for SampleKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Sample {
    /// Which of the five shapes this is.
    pub fn kind(&self) -> SampleKind {
        match self {
            Sample::Text { .. } => SampleKind::Text,
            Sample::Chat { .. } => SampleKind::Chat,
            Sample::Preference { .. } => SampleKind::Preference,
            Sample::Prompt { .. } => SampleKind::Prompt,
            Sample::Unpaired { .. } => SampleKind::Unpaired,
        }
    }

    /// Every message of the sample, in order (prompt, chosen, rejected for a
    /// preference pair; prompt, completion for an unpaired answer). Empty
    /// for text.
    pub fn messages(&self) -> impl Iterator<Item = &Message> {
        let parts: [&[Message]; 3] = match self {
            Sample::Text { .. } => [&[], &[], &[]],
            Sample::Chat { messages, .. } => [messages, &[], &[]],
            Sample::Preference {
                prompt,
                chosen,
                rejected,
            } => [prompt, chosen, rejected],
            Sample::Prompt { prompt, .. } => [prompt, &[], &[]],
            Sample::Unpaired {
                prompt, completion, ..
            } => [prompt, completion, &[]],
        };
        parts.into_iter().flatten()
    }

    /// The sample with `system` as its system prompt when it is a chat
    /// without one (the training config's `system`); anything else unchanged.
    pub fn with_default_system(self, system: Option<&str>) -> Sample {
        let Some(system) = system else { return self };
        match self {
            Sample::Chat {
                mut messages,
                tools,
            } => {
                if messages.first().is_none_or(|m| m.role != "system") {
                    messages.insert(0, Message::new("system", system));
                }
                Sample::Chat { messages, tools }
            }
            other => other,
        }
    }

    /// The tool definitions as the text the chat template parses: a string
    /// is taken as written, any other JSON value as its serialisation.
    pub fn tools_text(&self) -> Option<String> {
        match self {
            Sample::Chat {
                tools: Some(tools), ..
            } => Some(match tools {
                serde_json::Value::String(text) => text.clone(),
                other => other.to_string(),
            }),
            _ => None,
        }
    }

    /// The sample as one OpenAI-messages record (`tuner data convert`).
    /// Preference pairs become `{prompt, chosen, rejected}` (TRL's
    /// conversational shape); unpaired answers `{prompt, completion, label}`
    /// (TRL's unpaired preference shape); prompts `{messages, answer}`; text
    /// `{text}`.
    pub fn to_openai(&self) -> serde_json::Value {
        use serde_json::json;
        let msgs = |turns: &[Message]| -> Vec<serde_json::Value> {
            turns
                .iter()
                .map(|t| json!({"role": t.role, "content": t.content}))
                .collect()
        };
        match self {
            Sample::Chat { messages, tools } => {
                let mut v = json!({"messages": msgs(messages)});
                if let Some(tools) = tools {
                    v["tools"] = tools.clone();
                }
                v
            }
            Sample::Preference {
                prompt,
                chosen,
                rejected,
            } => json!({
                "prompt": msgs(prompt),
                "chosen": msgs(chosen),
                "rejected": msgs(rejected),
            }),
            Sample::Unpaired {
                prompt,
                completion,
                label,
            } => json!({
                "prompt": msgs(prompt),
                "completion": msgs(completion),
                "label": label,
            }),
            Sample::Prompt { prompt, answer } => {
                let mut v = json!({"messages": msgs(prompt)});
                if let Some(a) = answer {
                    v["answer"] = json!(a);
                }
                v
            }
            Sample::Text { text } => json!({"text": text}),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// transformers hands tool schemas to the template in the dataset's key
    /// order; a stored sample read back must not sort them.
    #[test]
    fn tools_keep_their_key_order_through_a_stored_sample() {
        let tools = r#"[{"type": "function", "function": {"name": "f", "description": "d", "parameters": {"type": "object", "properties": {"b": {"type": "string"}, "a": {"type": "integer"}}}}}]"#;
        let line = format!(
            r#"{{"kind": "chat", "messages": [{{"role": "user", "content": "q"}}], "tools": {tools}}}"#
        );
        let sample: Sample = serde_json::from_str(&line).unwrap();
        let compact: serde_json::Value = serde_json::from_str(tools).unwrap();
        let expected = r#"[{"type":"function","function":{"name":"f","description":"d","parameters":{"type":"object","properties":{"b":{"type":"string"},"a":{"type":"integer"}}}}}]"#;
        assert_eq!(compact.to_string(), expected);
        assert_eq!(sample.tools_text().as_deref(), Some(expected));
        let again: Sample = serde_json::from_str(&serde_json::to_string(&sample).unwrap()).unwrap();
        assert_eq!(again.tools_text().as_deref(), Some(expected));
    }
}

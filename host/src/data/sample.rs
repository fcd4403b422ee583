//! The normalised sample as the host stores, shows and exports it.
//!
//! Mirrors the WIT `sample` variant with serde: stored datasets are JSON
//! Lines of these (`{"kind": "chat", "messages": [...]}`), and `--json`
//! output and the API use the same shape.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::plugins::bindings::format::tuner::plugin::types as wit;

/// One turn of a conversation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Turn {
    /// `system`, `user`, `assistant` or `tool`.
    pub role: String,
    pub content: String,
    /// Loss weight; absent means the default (1 for assistant turns, 0 otherwise).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub loss_weight: Option<f32>,
}

/// A normalised training sample.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum Sample {
    /// A conversation to imitate.
    Chat {
        messages: Vec<Turn>,
        /// Tool definitions (a JSON array), when the record had them.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        #[schema(value_type = Option<Object>)]
        tools: Option<serde_json::Value>,
    },
    /// A preference pair.
    Preference {
        prompt: Vec<Turn>,
        chosen: Vec<Turn>,
        rejected: Vec<Turn>,
    },
    /// A prompt with an optional reference answer.
    Prompt {
        prompt: Vec<Turn>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        answer: Option<String>,
    },
    /// Raw text.
    Text { text: String },
}

/// The four sample kinds, for counts.
pub const KINDS: [&str; 4] = ["chat", "preference", "prompt", "text"];

impl Sample {
    /// `chat`, `preference`, `prompt` or `text`.
    pub fn kind(&self) -> &'static str {
        match self {
            Sample::Chat { .. } => "chat",
            Sample::Preference { .. } => "preference",
            Sample::Prompt { .. } => "prompt",
            Sample::Text { .. } => "text",
        }
    }

    /// Every turn, in order (prompt, then chosen, then rejected for pairs).
    pub fn turns(&self) -> Vec<&Turn> {
        match self {
            Sample::Chat { messages, .. } => messages.iter().collect(),
            Sample::Preference {
                prompt,
                chosen,
                rejected,
            } => prompt.iter().chain(chosen).chain(rejected).collect(),
            Sample::Prompt { prompt, .. } => prompt.iter().collect(),
            Sample::Text { .. } => Vec::new(),
        }
    }

    /// The sample as one OpenAI-messages record (`tuner data convert`).
    /// Preference pairs become `{messages: prompt + chosen, rejected: [...]}`
    /// (TRL's conversational shape); prompts `{messages, answer}`; text
    /// `{text}`.
    pub fn to_openai(&self) -> serde_json::Value {
        use serde_json::json;
        let msgs = |turns: &[Turn]| -> Vec<serde_json::Value> {
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

fn turns(list: Vec<wit::Message>) -> Vec<Turn> {
    list.into_iter()
        .map(|m| Turn {
            role: m.role,
            content: m.content,
            loss_weight: m.loss_weight,
        })
        .collect()
}

impl From<wit::Sample> for Sample {
    fn from(s: wit::Sample) -> Self {
        match s {
            wit::Sample::Text(text) => Sample::Text { text },
            wit::Sample::Chat(c) => Sample::Chat {
                messages: turns(c.messages),
                tools: c
                    .tools
                    .map(|t| serde_json::from_str(&t).unwrap_or(serde_json::Value::String(t))),
            },
            wit::Sample::Preference(p) => Sample::Preference {
                prompt: turns(p.prompt),
                chosen: turns(p.chosen),
                rejected: turns(p.rejected),
            },
            wit::Sample::Prompt(p) => Sample::Prompt {
                prompt: turns(p.prompt),
                answer: p.answer,
            },
        }
    }
}

fn model_turns(turns: &[Turn]) -> Vec<crate::model::Message> {
    turns
        .iter()
        .map(|t| crate::model::Message {
            role: t.role.clone(),
            content: t.content.clone(),
            loss_weight: t.loss_weight,
        })
        .collect()
}

impl From<&Sample> for crate::model::Sample {
    /// The sample as the chat template and tokenizer take it.
    fn from(s: &Sample) -> Self {
        use crate::model::Sample as M;
        match s {
            Sample::Chat { messages, tools } => M::Chat {
                messages: model_turns(messages),
                tools: tools.as_ref().map(|t| match t {
                    serde_json::Value::String(s) => s.clone(),
                    other => other.to_string(),
                }),
            },
            Sample::Preference {
                prompt,
                chosen,
                rejected,
            } => M::Preference {
                prompt: model_turns(prompt),
                chosen: model_turns(chosen),
                rejected: model_turns(rejected),
            },
            Sample::Prompt { prompt, answer } => M::Prompt {
                prompt: model_turns(prompt),
                answer: answer.clone(),
            },
            Sample::Text { text } => M::Text { text: text.clone() },
        }
    }
}

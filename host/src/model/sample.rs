//! The normalised training sample, host side.
//!
//! Mirrors the WIT `sample` variant of `tuner:plugin/types` (what format
//! plugins produce) as plain serde types, so the template, tokenizer and
//! statistics code does not depend on generated bindings and samples can be
//! stored and sent as JSON. `From` converts the bindings type.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::plugins::bindings::format::tuner::plugin::types as wit;

/// One turn of a conversation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Message {
    /// `system`, `user`, `assistant` or `tool`.
    pub role: String,
    /// The text of the turn.
    pub content: String,
    /// Weight of this turn in the loss; `None` means the default: 1.0 for
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

/// A normalised training sample: one of the four shapes every file layout is
/// turned into.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Sample {
    /// Raw text for continued pre-training.
    Text {
        /// The text.
        text: String,
    },
    /// A conversation (supervised fine-tuning).
    Chat {
        /// The turns, in order; a leading `system` turn is the system prompt.
        messages: Vec<Message>,
        /// Tool definitions as a JSON array, when the record carried them.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        tools: Option<String>,
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
    /// A prompt without an answer to imitate (GRPO and other online methods).
    Prompt {
        /// The conversation the model continues.
        prompt: Vec<Message>,
        /// A reference answer reward functions may compare against.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        answer: Option<String>,
    },
}

/// The four sample kinds, for counting.
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
}

impl SampleKind {
    /// The lowercase name used in JSON and messages.
    pub fn as_str(self) -> &'static str {
        match self {
            SampleKind::Text => "text",
            SampleKind::Chat => "chat",
            SampleKind::Preference => "preference",
            SampleKind::Prompt => "prompt",
        }
    }
}

impl Sample {
    /// Which of the four shapes this is.
    pub fn kind(&self) -> SampleKind {
        match self {
            Sample::Text { .. } => SampleKind::Text,
            Sample::Chat { .. } => SampleKind::Chat,
            Sample::Preference { .. } => SampleKind::Preference,
            Sample::Prompt { .. } => SampleKind::Prompt,
        }
    }

    /// Every message of the sample, in order (prompt, chosen, rejected for a
    /// preference pair). Empty for text.
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
        };
        parts.into_iter().flatten()
    }
}

impl From<wit::Message> for Message {
    fn from(m: wit::Message) -> Self {
        Message {
            role: m.role,
            content: m.content,
            loss_weight: m.loss_weight,
        }
    }
}

impl From<wit::Sample> for Sample {
    fn from(sample: wit::Sample) -> Self {
        let convert =
            |messages: Vec<wit::Message>| messages.into_iter().map(Message::from).collect();
        match sample {
            wit::Sample::Text(text) => Sample::Text { text },
            wit::Sample::Chat(chat) => Sample::Chat {
                messages: convert(chat.messages),
                tools: chat.tools,
            },
            wit::Sample::Preference(p) => Sample::Preference {
                prompt: convert(p.prompt),
                chosen: convert(p.chosen),
                rejected: convert(p.rejected),
            },
            wit::Sample::Prompt(p) => Sample::Prompt {
                prompt: convert(p.prompt),
                answer: p.answer,
            },
        }
    }
}

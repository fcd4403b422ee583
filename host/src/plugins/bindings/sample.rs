//! The one conversion from the WIT `sample` to the host's
//! [`crate::sample::Sample`]; nothing outside `plugins/` sees the generated
//! type.

use super::format::tuner::plugin::types as wit;
use crate::sample::{Message, Sample};

impl From<wit::Message> for Message {
    fn from(m: wit::Message) -> Self {
        Message {
            role: m.role,
            content: m.content,
            loss_weight: m.loss_weight,
        }
    }
}

fn messages(list: Vec<wit::Message>) -> Vec<Message> {
    list.into_iter().map(Message::from).collect()
}

impl From<wit::Sample> for Sample {
    fn from(sample: wit::Sample) -> Self {
        match sample {
            wit::Sample::Text(text) => Sample::Text { text },
            wit::Sample::Chat(chat) => Sample::Chat {
                messages: messages(chat.messages),
                // Tools arrive as JSON text; they are stored as JSON. Text
                // that does not parse is kept as a string, so the template
                // reports it against the field instead of losing it here.
                tools: chat.tools.map(|text| {
                    serde_json::from_str(&text).unwrap_or(serde_json::Value::String(text))
                }),
            },
            wit::Sample::Preference(p) => Sample::Preference {
                prompt: messages(p.prompt),
                chosen: messages(p.chosen),
                rejected: messages(p.rejected),
            },
            wit::Sample::Prompt(p) => Sample::Prompt {
                prompt: messages(p.prompt),
                answer: p.answer,
            },
            wit::Sample::Unpaired(u) => Sample::Unpaired {
                prompt: messages(u.prompt),
                completion: messages(u.completion),
                label: u.label,
            },
        }
    }
}

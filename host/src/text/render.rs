//! Rendering a normalised sample with the chat template, trained spans
//! included: the one place that decides what each sample kind looks like to
//! the model. Tokenization ([`super::encode`]), statistics and previews build
//! on it, so all three agree with what training sees.

use serde::Serialize;
use utoipa::ToSchema;

use super::spans::{RenderedConversation, TrainedSpan};
use super::template::{ChatTemplate, RenderOptions, TemplateError};
use crate::sample::{Message, Sample};

/// A sample as text for the model.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct RenderedSample {
    /// The sequence trained on: the conversation (chat), prompt + chosen
    /// answer (preference), prompt + the judged answer (unpaired), the
    /// prompt with the generation header (prompt:
    /// nothing trained), or the text followed by `eos_token` (text).
    pub main: RenderedConversation,
    /// Prompt + rejected answer, for a preference pair.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rejected: Option<RenderedConversation>,
}

/// Renders a sample; see [`RenderedSample`] for what each kind becomes.
///
/// Preference pairs and unpaired answers never train their prompt, even when
/// it holds assistant turns: only the chosen (and rejected) or judged
/// continuation counts. Text samples get
/// `eos_token` appended so documents end, as LLaMA-Factory does for
/// pre-training.
pub fn render_sample(
    template: &ChatTemplate,
    sample: &Sample,
    options: &RenderOptions,
) -> Result<RenderedSample, TemplateError> {
    match sample {
        Sample::Chat { messages, .. } => Ok(RenderedSample {
            main: template.render_trained(messages, sample.tools_text().as_deref(), options, 0)?,
            rejected: None,
        }),
        Sample::Preference {
            prompt,
            chosen,
            rejected,
        } => {
            let pair = |answer: &[Message]| {
                let messages: Vec<Message> = prompt.iter().chain(answer).cloned().collect();
                template.render_trained(&messages, None, options, prompt.len())
            };
            Ok(RenderedSample {
                main: pair(chosen)?,
                rejected: Some(pair(rejected)?),
            })
        }
        Sample::Unpaired {
            prompt, completion, ..
        } => {
            let messages: Vec<Message> = prompt.iter().chain(completion).cloned().collect();
            Ok(RenderedSample {
                main: template.render_trained(&messages, None, options, prompt.len())?,
                rejected: None,
            })
        }
        Sample::Prompt { prompt, .. } => {
            let generation = RenderOptions {
                add_generation_prompt: true,
                ..options.clone()
            };
            let text = template.render(prompt, None, &generation)?;
            Ok(RenderedSample {
                main: RenderedConversation {
                    text,
                    spans: Vec::new(),
                },
                rejected: None,
            })
        }
        Sample::Text { text } => {
            let eos = template.special_tokens().eos.as_deref().unwrap_or("");
            let text = format!("{text}{eos}");
            let spans = if text.is_empty() {
                Vec::new()
            } else {
                vec![TrainedSpan {
                    start: 0,
                    end: text.len(),
                    weight: 1.0,
                    message: 0,
                }]
            };
            Ok(RenderedSample {
                main: RenderedConversation { text, spans },
                rejected: None,
            })
        }
    }
}

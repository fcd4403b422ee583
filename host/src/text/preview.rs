//! What the model will see: a sample rendered with the chat template, cut
//! into trained and untrained segments for display (`tuner data preview`,
//! `GET /api/data/{name}/preview`).

use serde::Serialize;
use utoipa::ToSchema;

use super::render::render_sample;
use super::spans::{RenderedConversation, TrainedSpan};
use super::template::{ChatTemplate, RenderOptions, TemplateError};
use crate::sample::Sample;

/// A piece of rendered text that is either all trained or all not.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct PreviewSegment {
    /// The text.
    pub text: String,
    /// Loss weight of the segment; 0.0 = prompt/context, not trained.
    pub weight: f32,
}

/// One rendered sequence, whole and in segments.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct PreviewSequence {
    /// `conversation` (chat), `chosen`/`rejected` (preference), `prompt`,
    /// or `text`.
    pub label: String,
    /// The full rendered text.
    pub text: String,
    /// Trained byte ranges of `text`.
    pub trained_spans: Vec<TrainedSpan>,
    /// `text` cut at span edges; concatenated they give `text` back.
    pub segments: Vec<PreviewSegment>,
}

/// A sample's preview: one sequence, two for a preference pair.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct RenderPreview {
    /// The rendered sequences.
    pub sequences: Vec<PreviewSequence>,
}

impl PreviewSequence {
    /// The text with trained segments wrapped in `open` … `close` markers,
    /// for terminals (`[[` `]]`, or colours).
    pub fn marked(&self, open: &str, close: &str) -> String {
        let mut out = String::with_capacity(self.text.len() + 16);
        for segment in &self.segments {
            if segment.weight > 0.0 {
                out.push_str(open);
                out.push_str(&segment.text);
                out.push_str(close);
            } else {
                out.push_str(&segment.text);
            }
        }
        out
    }
}

/// Renders a sample and marks what is trained.
pub fn render_preview(
    template: &ChatTemplate,
    sample: &Sample,
    options: &RenderOptions,
) -> Result<RenderPreview, TemplateError> {
    let rendered = render_sample(template, sample, options)?;
    let main_label = match sample {
        Sample::Chat { .. } => "conversation",
        Sample::Preference { .. } => "chosen",
        Sample::Unpaired { label: true, .. } => "desirable",
        Sample::Unpaired { label: false, .. } => "undesirable",
        Sample::Prompt { .. } => "prompt",
        Sample::Text { .. } => "text",
    };
    let mut sequences = vec![sequence(main_label, rendered.main)];
    if let Some(rejected) = rendered.rejected {
        sequences.push(sequence("rejected", rejected));
    }
    Ok(RenderPreview { sequences })
}

fn sequence(label: &str, rendered: RenderedConversation) -> PreviewSequence {
    let mut segments = Vec::new();
    let mut at = 0;
    let text = &rendered.text;
    for span in &rendered.spans {
        if span.start > at {
            segments.push(PreviewSegment {
                text: text[at..span.start].to_owned(),
                weight: 0.0,
            });
        }
        if span.end > span.start {
            segments.push(PreviewSegment {
                text: text[span.start..span.end].to_owned(),
                weight: span.weight,
            });
        }
        at = span.end;
    }
    if at < text.len() {
        segments.push(PreviewSegment {
            text: text[at..].to_owned(),
            weight: 0.0,
        });
    }
    PreviewSequence {
        label: label.to_owned(),
        text: rendered.text,
        trained_spans: rendered.spans,
        segments,
    }
}

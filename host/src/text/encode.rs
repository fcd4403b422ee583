//! Token ids and per-token loss weights of a sample: what a training batch
//! is built from.
//!
//! The rendered text is tokenized in one piece (exactly the sequence the
//! model will see), and each token gets the weight of the trained span it
//! overlaps, 0.0 outside every span. A token that straddles a span edge is
//! trained, so every trained character is covered by the loss; with Qwen's
//! tokenizer the edges are special tokens and newlines, so straddling does
//! not occur in practice.

use serde::Serialize;
use utoipa::ToSchema;

use super::ModelError;
use super::render::render_sample;
use super::spans::{RenderedConversation, TrainedSpan};
use super::template::{ChatTemplate, RenderOptions};
use super::tokenizer::Tokenizer;
use crate::sample::Sample;

/// One token sequence with its loss weights.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct TokenizedSequence {
    /// Token ids of the rendered text.
    pub ids: Vec<u32>,
    /// Loss weight per token (same length as `ids`); 0.0 = not trained.
    pub weights: Vec<f32>,
}

impl TokenizedSequence {
    /// Number of tokens.
    pub fn len(&self) -> usize {
        self.ids.len()
    }

    /// Whether the sequence has no tokens.
    pub fn is_empty(&self) -> bool {
        self.ids.is_empty()
    }

    /// Number of tokens with a positive weight.
    pub fn trained_tokens(&self) -> usize {
        self.weights.iter().filter(|w| **w > 0.0).count()
    }
}

/// A tokenized sample: the trained sequence, plus the rejected one of a
/// preference pair.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct TokenizedSample {
    /// See [`super::render::RenderedSample::main`].
    pub main: TokenizedSequence,
    /// Prompt + rejected answer, for a preference pair.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rejected: Option<TokenizedSequence>,
}

/// Loss weight per token: the weight of the span a token overlaps, else 0.
pub fn token_weights(offsets: &[(usize, usize)], spans: &[TrainedSpan]) -> Vec<f32> {
    // Spans are sorted and disjoint and offsets ascend, so one pass suffices.
    let mut weights = Vec::with_capacity(offsets.len());
    let mut span = 0;
    for &(start, end) in offsets {
        while span < spans.len() && spans[span].end <= start {
            span += 1;
        }
        let mut weight: f32 = 0.0;
        let mut s = span;
        while s < spans.len() && spans[s].start < end.max(start + 1) {
            if spans[s].end > start {
                weight = weight.max(spans[s].weight);
            }
            s += 1;
        }
        weights.push(weight);
    }
    weights
}

/// Tokenizes a rendered conversation and weights its tokens.
pub fn tokenize_rendered(
    tokenizer: &Tokenizer,
    rendered: &RenderedConversation,
) -> Result<TokenizedSequence, ModelError> {
    let encoded = tokenizer.encode(&rendered.text)?;
    let weights = token_weights(&encoded.offsets, &rendered.spans);
    Ok(TokenizedSequence {
        ids: encoded.ids,
        weights,
    })
}

/// Renders and tokenizes a sample.
pub fn tokenize_sample(
    template: &ChatTemplate,
    tokenizer: &Tokenizer,
    sample: &Sample,
    options: &RenderOptions,
) -> Result<TokenizedSample, ModelError> {
    let rendered = render_sample(template, sample, options)?;
    Ok(TokenizedSample {
        main: tokenize_rendered(tokenizer, &rendered.main)?,
        rejected: rendered
            .rejected
            .as_ref()
            .map(|r| tokenize_rendered(tokenizer, r))
            .transpose()?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn span(start: usize, end: usize, weight: f32) -> TrainedSpan {
        TrainedSpan {
            start,
            end,
            weight,
            message: 0,
        }
    }

    #[test]
    fn tokens_take_the_weight_of_the_span_they_overlap() {
        let offsets = [(0, 3), (3, 5), (5, 8), (8, 10), (10, 12)];
        let spans = [span(3, 8, 1.0), span(11, 20, 0.5)];
        assert_eq!(
            token_weights(&offsets, &spans),
            vec![0.0, 1.0, 1.0, 0.0, 0.5]
        );
    }

    #[test]
    fn no_spans_means_nothing_trained() {
        assert_eq!(token_weights(&[(0, 1), (1, 2)], &[]), vec![0.0, 0.0]);
    }
}

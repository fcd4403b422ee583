//! Which characters of a rendered conversation are trained.
//!
//! The loss mask has to work for any model's template, including ones that
//! rewrite history: Qwen3 drops the `<think>` block of assistant turns before
//! the last user query, so rendering growing prefixes of a conversation does
//! not produce prefixes of the full render. Instead each trained message is
//! located by a *probe render*: the same conversation with only that
//! message's content replaced by a sentinel. Everything before the first
//! difference and after the last one is template text that does not depend on
//! the message; what lies between is the message's content as the template
//! wrote it (including reasoning the template reformatted).
//!
//! A trained assistant span then starts right after the assistant header, the
//! text `add_generation_prompt` would append at that point (for Qwen3
//! `<|im_start|>assistant\n`, or with `enable_thinking=false`
//! `<|im_start|>assistant\n<think>\n\n</think>\n\n`), so whatever the model
//! must produce itself after that header is trained; and it ends after the
//! end-of-turn token that follows the content (`<|im_end|>`), so the model
//! learns to stop. Other roles with a positive loss weight train their content
//! and end-of-turn token only.

use minijinja::Value;
use serde::Serialize;
use utoipa::ToSchema;

use super::template::{
    ChatTemplate, RenderOptions, TemplateError, message_value, message_value_with_content,
};
use crate::sample::Message;

/// A trained range of a rendered text, in bytes.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct TrainedSpan {
    /// First byte (inclusive).
    pub start: usize,
    /// Last byte (exclusive).
    pub end: usize,
    /// Loss weight of every token in the range.
    pub weight: f32,
    /// Index of the message the span belongs to.
    pub message: usize,
}

/// A rendered conversation and the spans that are trained.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct RenderedConversation {
    /// The template's output.
    pub text: String,
    /// Trained byte ranges, in order, not overlapping.
    pub spans: Vec<TrainedSpan>,
}

/// Tokens that end a turn in the templates tuner knows; one of them counts as
/// an end-of-turn marker when the tokenizer config lists it as `eos_token` or
/// an additional special token.
const KNOWN_END_OF_TURN: &[&str] = &[
    "<|im_end|>",
    "<|eot_id|>",
    "<|end|>",
    "<end_of_turn>",
    "<|endoftext|>",
    "</s>",
];

/// Private-use characters for the probe content; one that does not occur in
/// the message is chosen so the diff stops exactly at the content's edges.
const SENTINELS: &[char] = &['\u{E000}', '\u{E001}', '\u{E002}', '\u{E003}'];

impl ChatTemplate {
    /// The end-of-turn markers of this model: `eos_token`, plus the known
    /// end-of-turn tokens among the additional special tokens.
    pub fn end_of_turn_tokens(&self) -> Vec<String> {
        let special = self.special_tokens();
        let mut tokens: Vec<String> = special.eos.iter().cloned().collect();
        for known in KNOWN_END_OF_TURN {
            let listed = special.additional.iter().any(|t| t == known)
                || special.eos.as_deref() == Some(*known);
            if listed && !tokens.iter().any(|t| t == known) {
                tokens.push((*known).to_owned());
            }
        }
        tokens
    }

    /// Renders a conversation for training (no generation prompt) and finds
    /// the trained span of every message whose loss weight is positive
    /// ([`Message::effective_loss_weight`]). Messages before `trainable_from`
    /// are never trained (the prompt of a preference pair).
    pub fn render_trained(
        &self,
        messages: &[Message],
        tools: Option<&str>,
        options: &RenderOptions,
        trainable_from: usize,
    ) -> Result<RenderedConversation, TemplateError> {
        let tools = tools.map(ChatTemplate::parse_tools).transpose()?;
        let tools = tools.as_ref();
        let values: Vec<Value> = messages.iter().map(message_value).collect();
        let training = RenderOptions {
            add_generation_prompt: false,
            ..options.clone()
        };
        let text = self.render_values(&values, tools, &training)?;
        let end_of_turn = self.end_of_turn_tokens();

        let mut spans = Vec::new();
        let mut previous_end = 0;
        for (index, message) in messages.iter().enumerate().skip(trainable_from) {
            let weight = message.effective_loss_weight();
            if weight <= 0.0 {
                continue;
            }
            let sentinel = sentinel_for(&message.content);
            let mut probe = values.clone();
            probe[index] = message_value_with_content(message, &sentinel);
            let probe_text = self.render_values(&probe, tools, &training)?;
            let Some((content_start, content_end)) = changed_range(&text, &probe_text) else {
                return Err(TemplateError::MessageNotRendered {
                    index,
                    role: message.role.clone(),
                    weight,
                });
            };
            let content_start = content_start.max(previous_end);
            let start = if message.role == "assistant" {
                let header = self.generation_header(&values[..index], tools, options);
                header_end(&text, previous_end, content_start, &header).unwrap_or(content_start)
            } else {
                content_start
            };
            let end = content_end.max(start)
                + end_of_turn_len(&text[content_end.max(start)..], &end_of_turn);
            spans.push(TrainedSpan {
                start,
                end,
                weight,
                message: index,
            });
            previous_end = end;
        }
        Ok(RenderedConversation { text, spans })
    }

    /// The text `add_generation_prompt` appends after `history`: the header
    /// of the next assistant turn. Empty when the template refuses to render
    /// the history on its own (some templates demand a final user turn).
    fn generation_header(
        &self,
        history: &[Value],
        tools: Option<&Value>,
        options: &RenderOptions,
    ) -> String {
        let without = RenderOptions {
            add_generation_prompt: false,
            ..options.clone()
        };
        let with = RenderOptions {
            add_generation_prompt: true,
            ..options.clone()
        };
        match (
            self.render_values(history, tools, &without),
            self.render_values(history, tools, &with),
        ) {
            (Ok(a), Ok(b)) => {
                let common = common_prefix(&a, &b);
                b[common..].to_owned()
            }
            _ => String::new(),
        }
    }
}

/// Picks a probe content that shares no character with `content` at its
/// edges, so the first and last differences are exactly at the content.
fn sentinel_for(content: &str) -> String {
    let first = content.chars().next();
    let last = content.chars().last();
    let c = SENTINELS
        .iter()
        .copied()
        .find(|c| Some(*c) != first && Some(*c) != last)
        .unwrap_or(SENTINELS[0]);
    c.to_string()
}

/// The byte range of `a` that differs from `b` (common prefix and common
/// suffix removed), on character boundaries; `None` when they are equal.
fn changed_range(a: &str, b: &str) -> Option<(usize, usize)> {
    if a == b {
        return None;
    }
    let prefix = common_prefix(a, b);
    let max_suffix = (a.len() - prefix).min(b.len() - prefix);
    let suffix = a.as_bytes()[prefix..]
        .iter()
        .rev()
        .zip(b.as_bytes()[prefix..].iter().rev())
        .take(max_suffix)
        .take_while(|(x, y)| x == y)
        .count();
    let mut end = a.len() - suffix;
    while !a.is_char_boundary(end) {
        end += 1;
    }
    Some((prefix, end))
}

/// Length in bytes of the common prefix of `a` and `b`, on a character
/// boundary.
fn common_prefix(a: &str, b: &str) -> usize {
    let mut n = a.bytes().zip(b.bytes()).take_while(|(x, y)| x == y).count();
    while !a.is_char_boundary(n) {
        n -= 1;
    }
    n
}

/// Where the assistant header ends, searching `text[lo..hi]` for its last
/// occurrence. When the full header is not there (a history turn whose
/// reasoning contradicts `enable_thinking=false`), shorter headers cut at a
/// line end are tried, longest first.
fn header_end(text: &str, lo: usize, hi: usize, header: &str) -> Option<usize> {
    if header.is_empty() || lo > hi {
        return None;
    }
    let window = &text[lo..hi];
    let mut candidates: Vec<&str> = vec![header];
    candidates.extend(
        header
            .match_indices('\n')
            .rev()
            .map(|(i, _)| &header[..=i])
            .filter(|c| c.len() < header.len()),
    );
    candidates
        .into_iter()
        .find_map(|candidate| window.rfind(candidate).map(|at| lo + at + candidate.len()))
}

/// Length of the end-of-turn marker at the start of `rest` (after optional
/// spaces and newlines), or 0 when there is none.
fn end_of_turn_len(rest: &str, end_of_turn: &[String]) -> usize {
    let trimmed = rest.trim_start_matches([' ', '\n']);
    let skipped = rest.len() - trimmed.len();
    end_of_turn
        .iter()
        .find(|token| trimmed.starts_with(token.as_str()))
        .map(|token| skipped + token.len())
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn changed_range_is_the_differing_middle() {
        assert_eq!(
            changed_range("<a>hello</a>", "<a>\u{E000}</a>"),
            Some((3, 8))
        );
        assert_eq!(changed_range("<a></a>", "<a>\u{E000}</a>"), Some((3, 3)));
        assert_eq!(changed_range("same", "same"), None);
        // Multi-byte characters sharing leading bytes never split.
        let (s, e) = changed_range("x中y", "x丰y").unwrap();
        assert_eq!(&"x中y"[s..e], "中");
    }

    #[test]
    fn header_end_prefers_the_full_header_then_shorter_lines() {
        let text = "<s>user\nq</s>\n<s>assistant\n<think>\nr";
        let full = "<s>assistant\n<think>\n\n</think>\n\n";
        let at = header_end(text, 0, text.len() - 1, full).unwrap();
        assert_eq!(&text[at..], "r");
        assert_eq!(header_end(text, 0, text.len(), "<x>"), None);
    }

    #[test]
    fn end_of_turn_skips_only_blank_space() {
        let eot = vec!["<|im_end|>".to_owned()];
        assert_eq!(end_of_turn_len("<|im_end|>\n", &eot), 10);
        assert_eq!(end_of_turn_len("\n<|im_end|>", &eot), 11);
        assert_eq!(end_of_turn_len("x<|im_end|>", &eot), 0);
    }
}

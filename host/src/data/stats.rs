//! Statistics over a set of samples: counts by kind and role, turns, and
//! prompt / response / total lengths (min, mean, p50, p95, max).
//!
//! Lengths come from a [`Measure`]: [`Chars`] counts characters; a tokenizer
//! measure (tokens of the rendered chat template) plugs in through the same
//! trait, and then `max_seq_len` counts the samples that would be truncated.

use std::collections::BTreeMap;

use serde::Serialize;
use utoipa::ToSchema;

use crate::sample::Sample;

/// Measures the prompt and response length of a sample.
pub trait Measure {
    /// The unit reported (`chars`, `tokens`).
    fn unit(&self) -> &'static str;
    /// (prompt, response) lengths. Text samples are all prompt.
    fn lengths(&self, sample: &Sample) -> (u64, u64);
}

/// Lengths in characters: assistant turns (the chosen answer for pairs, the
/// reference answer for prompts) are the response, the rest the prompt.
pub struct Chars;

impl Measure for Chars {
    fn unit(&self) -> &'static str {
        "chars"
    }

    fn lengths(&self, sample: &Sample) -> (u64, u64) {
        let count = |s: &str| s.chars().count() as u64;
        let split = |turns: &[crate::sample::Message]| {
            turns.iter().fold((0, 0), |(p, r), t| {
                if t.role == "assistant" {
                    (p, r + count(&t.content))
                } else {
                    (p + count(&t.content), r)
                }
            })
        };
        match sample {
            Sample::Chat { messages, .. } => split(messages),
            Sample::Preference { prompt, chosen, .. } => {
                let (p, _) = split(prompt);
                let (_, r) = split(chosen);
                (p, r)
            }
            Sample::Unpaired {
                prompt, completion, ..
            } => (split(prompt).0, split(completion).1),
            Sample::Prompt { prompt, answer } => {
                (split(prompt).0, answer.as_deref().map(count).unwrap_or(0))
            }
            Sample::Text { text } => (count(text), 0),
        }
    }
}

/// Summary of a distribution.
#[derive(Debug, Clone, Serialize, ToSchema, PartialEq)]
pub struct Summary {
    pub min: u64,
    pub mean: f64,
    pub p50: u64,
    pub p95: u64,
    pub max: u64,
}

impl Summary {
    fn of(mut values: Vec<u64>) -> Option<Summary> {
        if values.is_empty() {
            return None;
        }
        values.sort_unstable();
        let at = |q: f64| values[((values.len() - 1) as f64 * q).round() as usize];
        Some(Summary {
            min: values[0],
            mean: values.iter().sum::<u64>() as f64 / values.len() as f64,
            p50: at(0.5),
            p95: at(0.95),
            max: values[values.len() - 1],
        })
    }
}

/// Statistics of a data set (`tuner data stats`, `GET /api/data/{name}/stats`).
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct DataStats {
    pub samples: u64,
    /// Samples by kind.
    pub kinds: BTreeMap<String, u64>,
    /// Turns by role, over all conversations.
    pub roles: BTreeMap<String, u64>,
    /// Turns per sample (absent for text-only sets).
    pub turns: Option<Summary>,
    /// `chars` or `tokens`.
    pub unit: String,
    pub prompt_length: Option<Summary>,
    pub response_length: Option<Summary>,
    pub total_length: Option<Summary>,
    /// The limit checked, when one was given.
    pub max_seq_len: Option<u64>,
    /// Samples longer than `max_seq_len` (would be truncated); text samples
    /// are not counted, as training cuts them into blocks.
    pub over_max_seq_len: Option<u64>,
    /// Token statistics through the model's chat template and tokenizer,
    /// when a tokenizer was given (`tuner data stats --tokenizer DIR`).
    pub tokens: Option<crate::text::TokenStats>,
}

/// Computes statistics of `samples` with `measure`.
pub fn compute<'a>(
    samples: impl IntoIterator<Item = &'a Sample>,
    measure: &dyn Measure,
    max_seq_len: Option<u64>,
) -> DataStats {
    let mut kinds = BTreeMap::new();
    let mut roles = BTreeMap::new();
    let (mut turns, mut prompts, mut responses, mut totals) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let mut cut_by_max = Vec::new();
    for sample in samples {
        *kinds.entry(sample.kind().to_string()).or_insert(0u64) += 1;
        let t: Vec<_> = sample.messages().collect();
        if !matches!(sample, Sample::Text { .. }) {
            turns.push(t.len() as u64);
        }
        for turn in t {
            *roles.entry(turn.role.clone()).or_insert(0u64) += 1;
        }
        let (p, r) = measure.lengths(sample);
        prompts.push(p);
        responses.push(r);
        totals.push(p + r);
        if !matches!(sample, Sample::Text { .. }) {
            cut_by_max.push(p + r);
        }
    }
    // Text samples are not truncated: training cuts them into blocks.
    let over = max_seq_len.map(|max| cut_by_max.iter().filter(|t| **t > max).count() as u64);
    DataStats {
        samples: totals.len() as u64,
        kinds,
        roles,
        turns: Summary::of(turns),
        unit: measure.unit().to_string(),
        prompt_length: Summary::of(prompts),
        response_length: Summary::of(responses),
        total_length: Summary::of(totals),
        max_seq_len,
        over_max_seq_len: over,
        tokens: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sample::Message;

    fn turn(role: &str, content: &str) -> Message {
        Message {
            role: role.into(),
            content: content.into(),
            loss_weight: None,
        }
    }

    #[test]
    fn lengths_split_prompt_and_response_and_count_overlong_samples() {
        let samples = vec![
            Sample::Chat {
                messages: vec![turn("user", "你好"), turn("assistant", "hello")],
                tools: None,
            },
            Sample::Text {
                text: "abcdefghij".into(),
            },
        ];
        // The chat sample (7 chars) is over; the text sample (10) is not
        // counted: training cuts text into blocks instead of truncating it.
        let s = compute(&samples, &Chars, Some(6));
        assert_eq!(s.samples, 2);
        assert_eq!(s.roles["assistant"], 1);
        assert_eq!(s.prompt_length.as_ref().unwrap().max, 10);
        assert_eq!(s.response_length.as_ref().unwrap().max, 5);
        assert_eq!(s.total_length.as_ref().unwrap().min, 7);
        assert_eq!(s.over_max_seq_len, Some(1));
        assert_eq!(s.turns.as_ref().unwrap().max, 2);
    }
}

//! Token statistics of a set of samples, measured with the model's tokenizer
//! on the text its chat template renders (`tuner data stats`,
//! `GET /api/data/{name}/stats`).
//!
//! Definitions (per sample):
//! - `total_tokens`: length of the rendered sequence; for a preference pair
//!   the longer of chosen and rejected.
//! - `response_tokens`: tokens with a positive loss weight (the trained
//!   ones); for a preference pair those of the chosen sequence; 0 for prompt
//!   samples (nothing is imitated); all of a text sample.
//! - `prompt_tokens`: `total_tokens` of the main sequence minus
//!   `response_tokens`: the context (system, user, tool turns, template
//!   headers) the model reads but is not trained on.
//! - `turns`: assistant messages (prompt + chosen for a preference pair).
//!
//! Percentiles use the nearest-rank method: p50 and p95 are values some
//! sample actually has.

use std::collections::BTreeMap;

use serde::Serialize;
use utoipa::ToSchema;

use super::ModelError;
use super::encode::tokenize_sample;
use super::template::{ChatTemplate, RenderOptions};
use super::tokenizer::Tokenizer;
use crate::sample::{Sample, SampleKind};

/// How many per-sample errors a [`TokenStats`] keeps.
pub const MAX_REPORTED_ERRORS: usize = 20;

/// Token counts of one sample.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct SampleTokens {
    /// The sample's kind.
    pub kind: SampleKind,
    /// Context tokens, not trained.
    pub prompt_tokens: usize,
    /// Trained tokens (chosen answer for a preference pair).
    pub response_tokens: usize,
    /// Trained tokens of the rejected answer (preference pairs only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rejected_response_tokens: Option<usize>,
    /// Sequence length; the longer sequence of a preference pair.
    pub total_tokens: usize,
    /// Assistant messages.
    pub turns: usize,
    /// All messages.
    pub messages: usize,
}

/// Counts the tokens of one sample.
pub fn sample_tokens(
    template: &ChatTemplate,
    tokenizer: &Tokenizer,
    sample: &Sample,
    options: &RenderOptions,
) -> Result<SampleTokens, ModelError> {
    let tokenized = tokenize_sample(template, tokenizer, sample, options)?;
    let response_tokens = if matches!(sample, Sample::Prompt { .. }) {
        0
    } else {
        tokenized.main.trained_tokens()
    };
    let total_tokens = tokenized
        .main
        .len()
        .max(tokenized.rejected.as_ref().map_or(0, |r| r.len()));
    let turns = match sample {
        Sample::Preference { prompt, chosen, .. } => prompt
            .iter()
            .chain(chosen)
            .filter(|m| m.role == "assistant")
            .count(),
        other => other.messages().filter(|m| m.role == "assistant").count(),
    };
    Ok(SampleTokens {
        kind: sample.kind(),
        prompt_tokens: tokenized.main.len() - response_tokens,
        response_tokens,
        rejected_response_tokens: tokenized.rejected.as_ref().map(|r| r.trained_tokens()),
        total_tokens,
        turns,
        messages: sample.messages().count(),
    })
}

/// Summary of one length measure over all samples.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct Distribution {
    /// Smallest value.
    pub min: usize,
    /// Arithmetic mean.
    pub mean: f64,
    /// Median (nearest rank).
    pub p50: usize,
    /// 95th percentile (nearest rank).
    pub p95: usize,
    /// Largest value.
    pub max: usize,
    /// Sum over all samples.
    pub sum: u64,
}

impl Distribution {
    /// Summarises `values`; `None` when there are none.
    pub fn of(values: &mut [usize]) -> Option<Distribution> {
        if values.is_empty() {
            return None;
        }
        values.sort_unstable();
        let sum: u64 = values.iter().map(|v| *v as u64).sum();
        let rank = |p: f64| {
            let n = values.len();
            let k = ((p * n as f64).ceil() as usize).clamp(1, n);
            values[k - 1]
        };
        Some(Distribution {
            min: values[0],
            mean: sum as f64 / values.len() as f64,
            p50: rank(0.50),
            p95: rank(0.95),
            max: values[values.len() - 1],
            sum,
        })
    }
}

/// A sample that could not be measured.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct SampleError {
    /// Position of the sample in the set (0-based).
    pub index: usize,
    /// What went wrong.
    pub message: String,
}

/// Token statistics of a sample set.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct TokenStats {
    /// Samples measured.
    pub samples: usize,
    /// Samples that failed to render or tokenize (not in the figures).
    pub failed: usize,
    /// The first [`MAX_REPORTED_ERRORS`] failures.
    pub errors: Vec<SampleError>,
    /// Assistant messages over all samples.
    pub turns: usize,
    /// Messages over all samples.
    pub messages: usize,
    /// Context tokens per sample; `null` when no sample was measured.
    pub prompt_tokens: Option<Distribution>,
    /// Trained tokens per sample.
    pub response_tokens: Option<Distribution>,
    /// Sequence length per sample.
    pub total_tokens: Option<Distribution>,
    /// The limit `over_max_seq_len` counts against.
    pub max_seq_len: usize,
    /// Samples whose `total_tokens` exceed `max_seq_len` (they would be
    /// truncated). Text samples are not counted: training joins them and
    /// cuts them into blocks instead (`text_blocks`).
    pub over_max_seq_len: usize,
    /// Tokens of the text samples, EOS included.
    pub text_tokens: usize,
    /// The `max_seq_len` blocks training cuts the text samples into (the
    /// last one may be shorter); 0 without text samples.
    pub text_blocks: usize,
    /// Messages per role (`system`, `user`, `assistant`, `tool`, …).
    pub roles: BTreeMap<String, usize>,
    /// Samples per kind (`chat`, `preference`, `unpaired`, `prompt`, `text`).
    pub kinds: BTreeMap<SampleKind, usize>,
}

/// Accumulates samples one at a time (so a large dataset streams through)
/// and produces [`TokenStats`].
#[derive(Debug, Clone)]
pub struct TokenStatsBuilder {
    max_seq_len: usize,
    next_index: usize,
    failed: usize,
    errors: Vec<SampleError>,
    turns: usize,
    messages: usize,
    prompt: Vec<usize>,
    response: Vec<usize>,
    total: Vec<usize>,
    over: usize,
    text_tokens: usize,
    roles: BTreeMap<String, usize>,
    kinds: BTreeMap<SampleKind, usize>,
}

impl TokenStatsBuilder {
    /// An empty builder counting sequences longer than `max_seq_len`.
    pub fn new(max_seq_len: usize) -> Self {
        TokenStatsBuilder {
            max_seq_len,
            next_index: 0,
            failed: 0,
            errors: Vec::new(),
            turns: 0,
            messages: 0,
            prompt: Vec::new(),
            response: Vec::new(),
            total: Vec::new(),
            over: 0,
            text_tokens: 0,
            roles: BTreeMap::new(),
            kinds: BTreeMap::new(),
        }
    }

    /// Measures the next sample and adds it; a failure is counted and kept
    /// (up to [`MAX_REPORTED_ERRORS`]) instead of stopping the run. Returns
    /// the counts when the sample could be measured.
    pub fn add(
        &mut self,
        template: &ChatTemplate,
        tokenizer: &Tokenizer,
        sample: &Sample,
        options: &RenderOptions,
    ) -> Option<SampleTokens> {
        let index = self.next_index;
        match sample_tokens(template, tokenizer, sample, options) {
            Ok(counts) => {
                for message in sample.messages() {
                    *self.roles.entry(message.role.clone()).or_default() += 1;
                }
                self.add_counts(&counts);
                Some(counts)
            }
            Err(e) => {
                self.add_error(index, e.to_string());
                None
            }
        }
    }

    /// Adds counts measured elsewhere (for example in parallel). Role counts
    /// are not known from counts alone; add them with [`Self::add_roles`].
    pub fn add_counts(&mut self, counts: &SampleTokens) {
        self.next_index += 1;
        self.turns += counts.turns;
        self.messages += counts.messages;
        self.prompt.push(counts.prompt_tokens);
        self.response.push(counts.response_tokens);
        self.total.push(counts.total_tokens);
        if counts.kind == SampleKind::Text {
            self.text_tokens += counts.total_tokens;
        } else if counts.total_tokens > self.max_seq_len {
            self.over += 1;
        }
        *self.kinds.entry(counts.kind).or_default() += 1;
    }

    /// Counts the roles of a sample's messages.
    pub fn add_roles(&mut self, sample: &Sample) {
        for message in sample.messages() {
            *self.roles.entry(message.role.clone()).or_default() += 1;
        }
    }

    /// Records a sample that could not be measured.
    pub fn add_error(&mut self, index: usize, message: String) {
        self.next_index = self.next_index.max(index + 1);
        self.failed += 1;
        if self.errors.len() < MAX_REPORTED_ERRORS {
            self.errors.push(SampleError { index, message });
        }
    }

    /// Adds the samples another builder measured; its sample indices are
    /// kept as they were.
    pub fn merge(&mut self, other: TokenStatsBuilder) {
        self.next_index = self.next_index.max(other.next_index);
        self.failed += other.failed;
        for error in other.errors {
            if self.errors.len() < MAX_REPORTED_ERRORS {
                self.errors.push(error);
            }
        }
        self.errors.sort_by_key(|e| e.index);
        self.turns += other.turns;
        self.messages += other.messages;
        self.prompt.extend(other.prompt);
        self.response.extend(other.response);
        self.total.extend(other.total);
        self.over += other.over;
        self.text_tokens += other.text_tokens;
        for (role, n) in other.roles {
            *self.roles.entry(role).or_default() += n;
        }
        for (kind, n) in other.kinds {
            *self.kinds.entry(kind).or_default() += n;
        }
    }

    /// The statistics so far.
    pub fn finish(mut self) -> TokenStats {
        TokenStats {
            samples: self.total.len(),
            failed: self.failed,
            errors: self.errors,
            turns: self.turns,
            messages: self.messages,
            prompt_tokens: Distribution::of(&mut self.prompt),
            response_tokens: Distribution::of(&mut self.response),
            total_tokens: Distribution::of(&mut self.total),
            max_seq_len: self.max_seq_len,
            over_max_seq_len: self.over,
            text_tokens: self.text_tokens,
            text_blocks: self.text_tokens.div_ceil(self.max_seq_len.max(1)),
            roles: self.roles,
            kinds: self.kinds,
        }
    }
}

/// Statistics of a sample set held in memory, measured on all cores
/// (rendering and tokenizing dominate; each thread takes a contiguous chunk,
/// so error indices stay those of `samples`).
pub fn token_stats_parallel(
    template: &ChatTemplate,
    tokenizer: &Tokenizer,
    samples: &[Sample],
    options: &RenderOptions,
    max_seq_len: usize,
) -> TokenStats {
    let never = std::sync::atomic::AtomicBool::new(false);
    token_stats_parallel_until(template, tokenizer, samples, options, max_seq_len, &never)
        .expect("not cancelled")
}

/// [`token_stats_parallel`] that stops soon after `cancel` becomes true
/// (each worker checks it before every sample) and then returns None: the
/// HTTP API sets it when the client that asked has gone away.
pub fn token_stats_parallel_until(
    template: &ChatTemplate,
    tokenizer: &Tokenizer,
    samples: &[Sample],
    options: &RenderOptions,
    max_seq_len: usize,
    cancel: &std::sync::atomic::AtomicBool,
) -> Option<TokenStats> {
    use std::sync::atomic::Ordering;
    let threads = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .min(samples.len().max(1));
    let chunk = samples.len().div_ceil(threads).max(1);
    let builders: Vec<TokenStatsBuilder> = std::thread::scope(|scope| {
        let handles: Vec<_> = samples
            .chunks(chunk)
            .enumerate()
            .map(|(i, part)| {
                scope.spawn(move || {
                    let mut builder = TokenStatsBuilder::new(max_seq_len);
                    builder.next_index = i * chunk;
                    for sample in part {
                        if cancel.load(Ordering::Relaxed) {
                            break;
                        }
                        builder.add(template, tokenizer, sample, options);
                    }
                    builder
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("stats worker panicked"))
            .collect()
    });
    if cancel.load(Ordering::Relaxed) {
        return None;
    }
    let mut all = TokenStatsBuilder::new(max_seq_len);
    for builder in builders {
        all.merge(builder);
    }
    Some(all.finish())
}

/// Statistics of a whole sample set, one sample at a time.
pub fn token_stats<'a>(
    template: &ChatTemplate,
    tokenizer: &Tokenizer,
    samples: impl IntoIterator<Item = &'a Sample>,
    options: &RenderOptions,
    max_seq_len: usize,
) -> TokenStats {
    let mut builder = TokenStatsBuilder::new(max_seq_len);
    for sample in samples {
        builder.add(template, tokenizer, sample, options);
    }
    builder.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn distribution_uses_nearest_rank() {
        let mut values: Vec<usize> = (1..=20).rev().collect();
        let d = Distribution::of(&mut values).unwrap();
        assert_eq!((d.min, d.p50, d.p95, d.max, d.sum), (1, 10, 19, 20, 210));
        assert!((d.mean - 10.5).abs() < 1e-9);
        assert_eq!(Distribution::of(&mut []), None);
        let one = Distribution::of(&mut [7]).unwrap();
        assert_eq!((one.p50, one.p95), (7, 7));
    }
}

#[cfg(test)]
mod schema_tests {
    use utoipa::PartialSchema;

    /// The types the CLI `--json` and the HTTP API return must produce an
    /// OpenAPI schema that names their fields.
    #[test]
    fn stats_preview_and_sample_schemas_list_their_fields() {
        let stats = serde_json::to_string(&super::TokenStats::schema()).unwrap();
        for field in [
            "over_max_seq_len",
            "response_tokens",
            "kinds",
            "roles",
            "errors",
        ] {
            assert!(
                stats.contains(field),
                "TokenStats schema lacks {field}: {stats}"
            );
        }
        let preview = serde_json::to_string(&crate::text::RenderPreview::schema()).unwrap();
        assert!(preview.contains("sequences"), "{preview}");
        let sample = serde_json::to_string(&crate::sample::Sample::schema()).unwrap();
        for field in ["kind", "messages", "chosen", "answer"] {
            assert!(
                sample.contains(field),
                "Sample schema lacks {field}: {sample}"
            );
        }
    }
}

//! What a caller may ask of one generation: sampling, stopping, logprobs.
//!
//! The names and ranges follow the OpenAI API and vLLM's `SamplingParams`
//! (the two places users learn them), so the `/v1` server maps its request
//! fields one to one and the CLI flags read the same.

use serde::{Deserialize, Serialize};

/// The most alternatives `logprobs` may ask for per token (OpenAI's limit).
pub const MAX_TOP_LOGPROBS: usize = 20;

/// Sampling and stopping settings for one generated sequence.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SamplingParams {
    /// Upper bound on new tokens.
    pub max_new_tokens: usize,
    /// Softmax temperature; 0 means greedy (argmax).
    pub temperature: f32,
    /// Nucleus sampling: keep the smallest set of most likely tokens whose
    /// probability sums to at least `top_p`, in `(0, 1]`.
    pub top_p: f32,
    /// Keep only the `top_k` most likely tokens; 0 disables.
    pub top_k: usize,
    /// Drop tokens less likely than `min_p` times the most likely one, in `[0, 1]`.
    pub min_p: f32,
    /// transformers' repetition penalty (> 0; 1 disables): a logit of a token
    /// already in the prompt or the output is divided by it when positive,
    /// multiplied when negative.
    pub repetition_penalty: f32,
    /// OpenAI's presence penalty in `[-2, 2]`: subtracted once from the logit
    /// of every token that appeared in the output.
    pub presence_penalty: f32,
    /// OpenAI's frequency penalty in `[-2, 2]`: subtracted per occurrence in
    /// the output.
    pub frequency_penalty: f32,
    /// Seed of the sampler; the same seed, prompt and settings give the same
    /// tokens. None draws one.
    pub seed: Option<u64>,
    /// Token ids that end the sequence, besides the model's own end tokens.
    pub stop_token_ids: Vec<u32>,
    /// Strings that end the sequence; the text is cut before the match and
    /// the stop string is not returned.
    pub stop: Vec<String>,
    /// Keep going past the model's end tokens (benchmarks).
    pub ignore_eos: bool,
    /// Return the chosen token's log-probability and this many alternatives
    /// per position (`Some(0)`: the chosen token only).
    pub logprobs: Option<usize>,
}

impl Default for SamplingParams {
    fn default() -> Self {
        SamplingParams {
            max_new_tokens: 512,
            temperature: 1.0,
            top_p: 1.0,
            top_k: 0,
            min_p: 0.0,
            repetition_penalty: 1.0,
            presence_penalty: 0.0,
            frequency_penalty: 0.0,
            seed: None,
            stop_token_ids: Vec::new(),
            stop: Vec::new(),
            ignore_eos: false,
            logprobs: None,
        }
    }
}

impl SamplingParams {
    /// Greedy decoding of at most `max_new_tokens` tokens.
    pub fn greedy(max_new_tokens: usize) -> Self {
        SamplingParams {
            max_new_tokens,
            temperature: 0.0,
            ..SamplingParams::default()
        }
    }

    /// Checks every range; the error names the offending field.
    pub fn validate(&self) -> Result<(), ParamError> {
        let check = |ok: bool, param: &'static str, message: String| {
            if ok {
                Ok(())
            } else {
                Err(ParamError { param, message })
            }
        };
        check(
            self.temperature.is_finite() && (0.0..=2.0).contains(&self.temperature),
            "temperature",
            format!("temperature must be in [0, 2], got {}", self.temperature),
        )?;
        check(
            self.top_p.is_finite() && self.top_p > 0.0 && self.top_p <= 1.0,
            "top_p",
            format!("top_p must be in (0, 1], got {}", self.top_p),
        )?;
        check(
            self.min_p.is_finite() && (0.0..=1.0).contains(&self.min_p),
            "min_p",
            format!("min_p must be in [0, 1], got {}", self.min_p),
        )?;
        check(
            self.repetition_penalty.is_finite() && self.repetition_penalty > 0.0,
            "repetition_penalty",
            format!(
                "repetition_penalty must be > 0 (1 disables it), got {}",
                self.repetition_penalty
            ),
        )?;
        for (param, value) in [
            ("presence_penalty", self.presence_penalty),
            ("frequency_penalty", self.frequency_penalty),
        ] {
            check(
                value.is_finite() && (-2.0..=2.0).contains(&value),
                param,
                format!("{param} must be in [-2, 2], got {value}"),
            )?;
        }
        check(
            self.max_new_tokens >= 1,
            "max_new_tokens",
            "max_new_tokens must be at least 1".to_string(),
        )?;
        if let Some(k) = self.logprobs {
            check(
                k <= MAX_TOP_LOGPROBS,
                "top_logprobs",
                format!("top_logprobs must be at most {MAX_TOP_LOGPROBS}, got {k}"),
            )?;
        }
        check(
            self.stop.iter().all(|s| !s.is_empty()),
            "stop",
            "stop strings must not be empty".to_string(),
        )?;
        Ok(())
    }

    /// True when the next token is the argmax, whatever the seed.
    pub fn is_greedy(&self) -> bool {
        self.temperature == 0.0
    }
}

/// A sampling setting out of range, naming the field as the request spells it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct ParamError {
    /// The request field (OpenAI's name where there is one).
    pub param: &'static str,
    pub message: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_out_of_range_values_name_their_field() {
        SamplingParams::default().validate().unwrap();
        SamplingParams::greedy(4).validate().unwrap();
        let cases: Vec<(SamplingParams, &str)> = vec![
            (
                SamplingParams {
                    temperature: -0.1,
                    ..Default::default()
                },
                "temperature",
            ),
            (
                SamplingParams {
                    top_p: 0.0,
                    ..Default::default()
                },
                "top_p",
            ),
            (
                SamplingParams {
                    min_p: 1.5,
                    ..Default::default()
                },
                "min_p",
            ),
            (
                SamplingParams {
                    repetition_penalty: 0.0,
                    ..Default::default()
                },
                "repetition_penalty",
            ),
            (
                SamplingParams {
                    frequency_penalty: 2.5,
                    ..Default::default()
                },
                "frequency_penalty",
            ),
            (
                SamplingParams {
                    max_new_tokens: 0,
                    ..Default::default()
                },
                "max_new_tokens",
            ),
            (
                SamplingParams {
                    logprobs: Some(21),
                    ..Default::default()
                },
                "top_logprobs",
            ),
            (
                SamplingParams {
                    stop: vec![String::new()],
                    ..Default::default()
                },
                "stop",
            ),
        ];
        for (params, field) in cases {
            assert_eq!(params.validate().unwrap_err().param, field);
        }
    }
}

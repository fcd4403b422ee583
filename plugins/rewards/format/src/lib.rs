//! `format`: 1.0 when the completion matches a regular expression, else 0.0.
//!
//! The default asks for Qwen3's thinking structure: a `<think>…</think>`
//! block, then a non-empty answer. Set `pattern` for another structure (the
//! regex must match the whole completion; `.` matches newlines), e.g.
//! `<think>.*</think>\s*<answer>.*</answer>` as in DeepSeek-R1's recipe.

use regex::Regex;
use tuner_sdk::reward::*;

/// `<think>…</think>` then at least one non-space character.
const DEFAULT_PATTERN: &str = r"\s*<think>.*?</think>\s*\S.*";

struct Format;

impl RewardPlugin for Format {
    fn info() -> PluginInfo {
        tuner_sdk::plugin_info!(
            Reward,
            "1 when the completion has the expected structure (a regex; default: <think>…</think> then an answer)"
        )
    }

    fn settings() -> Vec<Setting> {
        vec![
            Setting::text("pattern", DEFAULT_PATTERN)
                .describe("Regular expression the whole completion must match (. matches newlines)")
                .zh("整个回答须匹配的正则表达式（. 可匹配换行）"),
        ]
    }

    fn score(inputs: &[RewardInput], settings: &Settings) -> Result<Vec<f64>, PluginError> {
        let pattern = settings.text("pattern").unwrap_or(DEFAULT_PATTERN);
        // Anchored on both ends, so the pattern describes the whole answer.
        let regex = Regex::new(&format!("(?s)^(?:{pattern})$"))
            .map_err(|e| PluginError::field("pattern", format!("not a valid regex: {e}")))?;
        Ok(inputs
            .iter()
            .map(|i| {
                if regex.is_match(&i.completion) {
                    1.0
                } else {
                    0.0
                }
            })
            .collect())
    }
}

tuner_sdk::export_plugin!(reward: Format);

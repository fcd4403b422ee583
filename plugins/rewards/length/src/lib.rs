//! `length`: DAPO's soft overlong punishment (Yu et al. 2025, "DAPO", eq. 13).
//!
//! With `L_max` the generation's token limit (`max_completion_length`) and a
//! buffer of `L_cache = buffer_fraction × L_max` tokens before it:
//!
//! ```text
//! R(y) = 0                              if |y| ≤ L_max − L_cache
//!      = ((L_max − L_cache) − |y|) / L_cache   if L_max − L_cache < |y| ≤ L_max
//!      = −1                             if |y| > L_max
//! ```
//!
//! A completion cut off at the limit scores −1; one that ends inside the
//! buffer is penalised in proportion to how far into it it ran. DAPO used
//! `L_max` = 20,480 and `L_cache` = 4,096 (a fraction of 0.2, the default).

use tuner_sdk::reward::*;

struct Length;

impl RewardPlugin for Length {
    fn info() -> PluginInfo {
        tuner_sdk::plugin_info!(
            Reward,
            "DAPO's soft overlong penalty: 0 up to a buffer before the token limit, then down to -1 at the limit"
        )
    }

    fn settings() -> Vec<Setting> {
        vec![
            Setting::number("buffer_fraction", 0.2)
                .above(0)
                .max(1)
                .describe("Share of the token limit, before it, over which the penalty grows from 0 to -1")
                .zh("在长度上限之前、惩罚从 0 增至 -1 的区间占上限的比例"),
        ]
    }

    fn score(inputs: &[RewardInput], settings: &Settings) -> Result<Vec<f64>, PluginError> {
        let fraction = settings.number("buffer_fraction").unwrap_or(0.2);
        Ok(inputs
            .iter()
            .map(|i| {
                let max = i.max_completion_tokens as f64;
                let len = i.completion_tokens as f64;
                let buffer = (fraction * max).max(1.0);
                let free = max - buffer;
                if len <= free {
                    0.0
                } else if len <= max && i.finished {
                    (free - len) / buffer
                } else {
                    // At the limit without an end token: cut off.
                    -1.0
                }
            })
            .collect())
    }
}

tuner_sdk::export_plugin!(reward: Length);

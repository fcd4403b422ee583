//! Hostile reward: misbehaves as its `mode` setting says — `loop` never
//! returns, `trap` panics, `nan` scores NaN, `short` returns one score too
//! few — and otherwise (`ok`) scores every completion 1.
use tuner_sdk::reward::*;

struct HostileReward;

impl RewardPlugin for HostileReward {
    fn info() -> PluginInfo {
        tuner_sdk::plugin_info!(Reward, "misbehaves in score as its mode setting says")
    }

    fn settings() -> Vec<Setting> {
        vec![
            Setting::choice("mode", &["ok", "loop", "trap", "nan", "short"], "loop")
                .describe("How to misbehave")
                .zh("如何出错"),
        ]
    }

    fn score(inputs: &[RewardInput], settings: &Settings) -> Result<Vec<f64>, PluginError> {
        match settings.text("mode").unwrap_or("loop") {
            "loop" => {
                let mut n: u64 = 0;
                loop {
                    n = std::hint::black_box(n.wrapping_add(1));
                }
            }
            "trap" => panic!("the hostile reward panics"),
            "nan" => Ok(vec![f64::NAN; inputs.len()]),
            "short" => Ok(vec![1.0; inputs.len().saturating_sub(1)]),
            _ => Ok(vec![1.0; inputs.len()]),
        }
    }
}

tuner_sdk::export_plugin!(reward: HostileReward);

//! Reward plugins: score generated completions for RL methods (GRPO).
//!
//! A reward sees text only — the prompt, the completion, its length and the
//! sample's reference answer — and returns one number per completion. It
//! runs in the same sandbox as every plugin (memory cap, deadline, no
//! network), so a reward written by anyone can be dropped into the plugin
//! folder without trusting it. The job names its rewards in the training
//! config (`reward_funcs = ["accuracy", "my_reward"]`, with optional
//! `reward_weights` and `[reward_settings.my_reward]`).
//!
//! A complete reward plugin:
//!
//! ```no_run
//! use tuner_sdk::reward::*;
//!
//! struct EndsWithPeriod;
//!
//! impl RewardPlugin for EndsWithPeriod {
//!     fn info() -> PluginInfo {
//!         tuner_sdk::plugin_info!(Reward, "1 when the answer ends with a period")
//!     }
//!     fn score(inputs: &[RewardInput], _settings: &Settings) -> Result<Vec<f64>, PluginError> {
//!         Ok(inputs
//!             .iter()
//!             .map(|i| if i.completion.trim_end().ends_with('.') { 1.0 } else { 0.0 })
//!             .collect())
//!     }
//! }
//!
//! tuner_sdk::export_plugin!(reward: EndsWithPeriod);
//! ```

pub use crate::{Message, PluginError, PluginInfo, PluginKind, Setting, SettingValue, Settings};

/// One completion to score, with what it answers.
///
/// ```
/// use tuner_sdk::{Message, reward::RewardInput};
/// let input = RewardInput {
///     prompt: vec![Message::new("user", "2+3=")],
///     completion: "5".into(),
///     completion_tokens: 1,
///     max_completion_tokens: 64,
///     finished: true,
///     answer: Some("5".into()),
/// };
/// assert_eq!(input.last_user_text(), Some("2+3="));
/// ```
pub use crate::__bindings::reward::exports::tuner::plugin::reward_plugin::RewardInput;

impl RewardInput {
    /// The text of the last `user` turn of the prompt, if any.
    pub fn last_user_text(&self) -> Option<&str> {
        self.prompt
            .iter()
            .rev()
            .find(|m| m.role == "user")
            .map(|m| m.content.as_str())
    }
}

/// A reward function.
pub trait RewardPlugin {
    /// Name, version and description. Use
    /// [`plugin_info!`](crate::plugin_info)`(Reward, "…")`.
    fn info() -> PluginInfo;

    /// The reward's own settings (`[reward_settings.NAME]` in the training
    /// config). None by default.
    ///
    /// ```
    /// use tuner_sdk::Setting;
    /// fn settings() -> Vec<Setting> {
    ///     vec![Setting::number("bonus", 1.0).describe("Score of a correct answer")]
    /// }
    /// # assert_eq!(settings().len(), 1);
    /// ```
    fn settings() -> Vec<Setting> {
        Vec::new()
    }

    /// One finite score per input, in order. `settings` hold the checked
    /// values, defaults filled in. An `Err` fails the training step with
    /// this plugin named (the job can be resumed after a fix).
    fn score(inputs: &[RewardInput], settings: &Settings) -> Result<Vec<f64>, PluginError>;
}

#[doc(hidden)]
#[macro_export]
macro_rules! __reward_glue {
    ($export:ident, $ty:ty) => {
        impl $crate::__bindings::reward::exports::tuner::plugin::reward_plugin::Guest for $export {
            fn info() -> $crate::PluginInfo {
                <$ty as $crate::reward::RewardPlugin>::info()
            }
            fn settings() -> Vec<$crate::Setting> {
                <$ty as $crate::reward::RewardPlugin>::settings()
            }
            fn score(
                inputs: Vec<$crate::reward::RewardInput>,
                settings: Vec<(String, $crate::SettingValue)>,
            ) -> Result<Vec<f64>, $crate::PluginError> {
                <$ty as $crate::reward::RewardPlugin>::score(
                    &inputs,
                    &$crate::Settings::from(settings),
                )
            }
        }
    };
}

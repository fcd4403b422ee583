//! The handle of a reward plugin: it scores generated completions for RL
//! methods (GRPO). Text in, one number per completion out; the plugin sees
//! no tensors, files or network.
//!
//! [`RewardPlugin`] is what [`super::PluginHost::reward`] hands out. The
//! answer is checked here — one finite score per input — so a reward that
//! returns too few numbers or a NaN fails the step with its name instead of
//! poisoning the advantages.

use std::ops::Deref;
use std::sync::Arc;

use super::bindings::v0_2_0::{self as new, wit_values};
use super::settings::Values;
use super::{CallError, Plugin};
use crate::sample::Message;

use new::reward::exports::tuner::plugin::reward_plugin as wit;
use new::reward::tuner::plugin::types as wit_types;

/// A loaded reward plugin.
#[derive(Clone)]
pub struct RewardPlugin(Arc<Plugin>);

/// One completion to score, with what it answers.
#[derive(Debug, Clone, PartialEq)]
pub struct RewardInput {
    /// The conversation the model continued.
    pub prompt: Arc<Vec<Message>>,
    /// The generated text.
    pub completion: String,
    /// Number of generated tokens.
    pub completion_tokens: u32,
    /// The generation's token limit.
    pub max_completion_tokens: u32,
    /// Ended at an end-of-turn token (not at the limit).
    pub finished: bool,
    /// The sample's reference answer.
    pub answer: Option<String>,
}

impl RewardInput {
    fn to_wit(&self) -> wit::RewardInput {
        wit::RewardInput {
            prompt: self
                .prompt
                .iter()
                .map(|m| wit_types::Message {
                    role: m.role.clone(),
                    content: m.content.clone(),
                    loss_weight: m.loss_weight,
                })
                .collect(),
            completion: self.completion.clone(),
            completion_tokens: self.completion_tokens,
            max_completion_tokens: self.max_completion_tokens,
            finished: self.finished,
            answer: self.answer.clone(),
        }
    }
}

impl Deref for RewardPlugin {
    type Target = Plugin;
    fn deref(&self) -> &Plugin {
        &self.0
    }
}

impl RewardPlugin {
    /// Wraps a plugin already known to be a reward ([`Plugin::as_reward`]).
    pub(super) fn new(plugin: Arc<Plugin>) -> Self {
        Self(plugin)
    }

    /// Scores `inputs` with the checked `values` of the reward's settings:
    /// one finite number per input, in order. A trap, a deadline, a refusal
    /// or a malformed answer is a [`CallError`] naming the plugin.
    pub fn score(&self, inputs: &[RewardInput], values: &Values) -> Result<Vec<f64>, CallError> {
        let wit_inputs: Vec<wit::RewardInput> = inputs.iter().map(RewardInput::to_wit).collect();
        let settings = wit_values(values);
        let answer = self.0.call_reward("score", self.0.timeout(), |store, b| {
            b.tuner_plugin_reward_plugin()
                .call_score(store, &wit_inputs, &settings)
        })?;
        let scores = answer.map_err(|e| self.0.refused("score", e))?;
        let bad = |message: String| CallError::BadResult {
            plugin: self.0.name().to_string(),
            call: "score".into(),
            message,
        };
        if scores.len() != inputs.len() {
            return Err(bad(format!(
                "it returned {} scores for {} completions",
                scores.len(),
                inputs.len()
            )));
        }
        if let Some(i) = scores.iter().position(|s| !s.is_finite()) {
            return Err(bad(format!(
                "the score of completion {} is {}, not a finite number",
                i + 1,
                scores[i]
            )));
        }
        Ok(scores)
    }
}

//! The job's reward functions (`reward_funcs`): sandboxed reward plugins
//! that score the completions of a rollout for `policy.score`.
//!
//! Each reward plugin is looked up once when the job starts, its settings
//! (`[reward_settings.NAME]`) checked against its schema, and its weight
//! (`reward_weights`, 1.0 each by default) kept beside it. Scoring turns a
//! rollout batch's rows into [`RewardInput`]s and asks each plugin in turn;
//! any failure names the plugin and fails the step.

use std::sync::Arc;

use anyhow::{Context, Result, bail};
use serde_json::{Map, Value};

use crate::plugins::imports::model::{MethodBatch, RewardScores};
use crate::plugins::reward::RewardInput;
use crate::plugins::settings::{self, Values};
use crate::plugins::{PluginHost, RewardPlugin};

/// One reward function of the job.
struct RewardFn {
    plugin: RewardPlugin,
    weight: f64,
    values: Values,
}

/// The job's reward functions, in `reward_funcs` order.
pub struct RewardSet {
    functions: Vec<RewardFn>,
}

impl RewardSet {
    /// Looks up each of `names` among the reward plugins of `host`, pairs it
    /// with its weight and checks its settings. `weights`, when given, has
    /// one entry per name (the config check makes sure).
    pub fn load(
        host: &PluginHost,
        names: &[String],
        weights: Option<&[f64]>,
        settings_by_name: &Map<String, Value>,
    ) -> Result<Self> {
        if let Some(extra) = settings_by_name
            .keys()
            .find(|k| !names.iter().any(|n| n == *k))
        {
            bail!(
                "reward_settings.{extra}: `{extra}` is not one of reward_funcs ({})",
                names.join(", ")
            );
        }
        let mut functions = Vec::with_capacity(names.len());
        for (i, name) in names.iter().enumerate() {
            let plugin = host.reward(name).with_context(|| {
                let installed: Vec<String> = host
                    .rewards()
                    .iter()
                    .map(|r| r.name().to_string())
                    .collect();
                format!(
                    "reward_funcs: no reward plugin named `{name}` is installed (installed: {})",
                    if installed.is_empty() {
                        "none".to_string()
                    } else {
                        installed.join(", ")
                    }
                )
            })?;
            let schema = plugin
                .settings()
                .with_context(|| format!("reward plugin `{name}`: reading its settings"))?;
            let given = match settings_by_name.get(name) {
                None => Map::new(),
                Some(Value::Object(map)) => map.clone(),
                Some(other) => bail!(
                    "reward_settings.{name} must be a table of the reward's settings, not {other}"
                ),
            };
            if let Some(key) = given.keys().find(|k| !schema.iter().any(|s| &s.name == *k)) {
                let hint = settings::closest(key, schema.iter().map(|s| s.name.as_str()))
                    .map(|c| format!("; did you mean `{c}`?"))
                    .unwrap_or_default();
                bail!("reward_settings.{name}.{key}: reward `{name}` has no setting `{key}`{hint}");
            }
            let values = settings::check(&schema, &given).map_err(|bad| {
                let lines: Vec<String> = bad
                    .into_iter()
                    .map(|p| format!("reward_settings.{name}.{}: {}", p.key, p.message))
                    .collect();
                anyhow::anyhow!(lines.join("\n"))
            })?;
            functions.push(RewardFn {
                plugin,
                weight: weights.map_or(1.0, |w| w[i]),
                values,
            });
        }
        Ok(Self { functions })
    }

    /// Scores the rows of a rollout batch with every reward function (the
    /// trainer builds a set only for a job with `reward_funcs`).
    pub fn score(&self, rollout: &MethodBatch) -> Result<Vec<RewardScores>> {
        let inputs = reward_inputs(rollout)?;
        self.functions
            .iter()
            .map(|f| {
                let scores = f.plugin.score(&inputs, &f.values)?;
                Ok(RewardScores {
                    name: f.plugin.name().to_string(),
                    weight: f.weight,
                    scores,
                })
            })
            .collect()
    }
}

/// One [`RewardInput`] per row of a rollout batch.
fn reward_inputs(batch: &MethodBatch) -> Result<Vec<RewardInput>> {
    let rows = batch
        .rollout
        .as_ref()
        .context("policy.score needs the batch of a rollout from policy.generate")?;
    let empty: Arc<Vec<crate::sample::Message>> = Arc::new(Vec::new());
    Ok(rows
        .completions
        .iter()
        .enumerate()
        .map(|(i, c)| RewardInput {
            prompt: batch
                .prompts
                .get(i)
                .cloned()
                .flatten()
                .unwrap_or_else(|| empty.clone()),
            completion: c.text.clone(),
            completion_tokens: c.tokens,
            max_completion_tokens: rows.max_new_tokens,
            finished: c.finished,
            answer: batch.answers.get(i).cloned().flatten(),
        })
        .collect())
}

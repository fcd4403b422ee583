//! GRPO: group relative policy optimisation (Shao et al. 2024,
//! "DeepSeekMath"), with the DAPO (Yu et al. 2025) and Dr. GRPO (Liu et al.
//! 2025, "Understanding R1-Zero-Like Training") variants, as TRL's
//! `GRPOTrainer` computes them.
//!
//! Each step, for every prompt of the batch the host samples
//! `num_generations` completions with the current weights
//! (`policy.generate`), the job's reward plugins score them
//! (`policy.score`), and the weighted sum of the scores is each completion's
//! reward `r_i`. Advantages are group-relative:
//!
//! ```text
//! A_i = r_i − mean(r_group)                      (scale_rewards = false, Dr. GRPO)
//! A_i = (r_i − mean(r_group)) / (std(r_group) + 1e-4)   (scale_rewards = true)
//! ```
//!
//! The per-token objective on the completion tokens is the clipped ratio,
//! plus the k3 KL estimator to the reference when `beta > 0`:
//!
//! ```text
//! ρ_t = π(o_t) / π_old(o_t)
//! ℓ_t = −min(ρ_t A, clip(ρ_t, 1 − ε, 1 + ε_high) A) + β (e^{ref_t − logp_t} − (ref_t − logp_t) − 1)
//! ```
//!
//! and `loss_type` says how the token terms are averaged: `grpo` per
//! sequence then over sequences, `bnpo`/`dapo` over all completion tokens of
//! the batch, `dr_grpo` summed and divided by rows × `max_completion_length`.
//! One optimisation step is taken per generation batch (TRL's
//! `num_iterations = 1`), so `π_old` is the current policy detached: the
//! ratio is 1 in value and carries the policy gradient; clipping starts to
//! matter only with several steps per batch, which tuner does not do yet.

use method_common::{finetuning_type_setting, lora_settings, trainable_plan};
use tuner_sdk::method::*;

const LOSS_TYPES: [&str; 4] = ["grpo", "bnpo", "dapo", "dr_grpo"];

#[derive(Clone, Copy, Debug, PartialEq)]
enum LossType {
    Grpo,
    Bnpo,
    Dapo,
    DrGrpo,
}

struct Grpo {
    plan: Plan,
    sampling: Sampling,
    beta: f64,
    epsilon: f64,
    epsilon_high: f64,
    scale_rewards: bool,
    loss_type: LossType,
}

impl MethodPlugin for Grpo {
    fn info() -> PluginInfo {
        tuner_sdk::plugin_info!(
            Method,
            "GRPO (and DAPO, Dr. GRPO): online RL from sampled completions scored by reward plugins"
        )
    }

    fn settings() -> Vec<Setting> {
        let mut settings = vec![
            Setting::integer("num_generations", 8)
                .range(2, 256)
                .describe("Completions sampled per prompt (the group)")
                .zh("每个提示采样的回答数（一组）"),
            Setting::integer("max_completion_length", 256)
                .range(1, 65536)
                .describe("Token limit of each sampled completion")
                .zh("每个采样回答的最大 token 数"),
            Setting::number("temperature", 1.0)
                .min(0)
                .describe("Sampling temperature of the completions")
                .zh("采样温度"),
            Setting::number("top_p", 1.0)
                .above(0)
                .max(1)
                .describe("Nucleus sampling threshold")
                .zh("核采样阈值 top-p"),
            Setting::integer("top_k", 0)
                .range(0, 1_000_000)
                .describe("Sample only among the k most likely tokens (0 = all)")
                .zh("只在概率最高的 k 个 token 中采样（0 表示不限）"),
            Setting::number("beta", 0.0)
                .min(0)
                .describe("Weight of the KL penalty to the reference model (0 = none, and no reference is kept)")
                .zh("到参考模型的 KL 惩罚系数（0 表示不加，也不保留参考模型）"),
            Setting::number("epsilon", 0.2)
                .above(0)
                .below(1)
                .describe("Clipping range of the probability ratio (lower side, and upper unless epsilon_high is set)")
                .zh("概率比的裁剪范围（下界；未设 epsilon_high 时也是上界）"),
            Setting::number("epsilon_high", 0.2)
                .no_default()
                .above(0)
                .describe("Upper clipping range, as DAPO's clip-higher (default: epsilon)")
                .zh("上界裁剪范围，即 DAPO 的 clip-higher（默认等于 epsilon）"),
            Setting::boolean("scale_rewards", true)
                .describe("Divide advantages by the group's reward std (Dr. GRPO recommends false)")
                .zh("优势是否除以组内奖励的标准差（Dr. GRPO 建议设为 false）"),
            Setting::choice("loss_type", &LOSS_TYPES, "dapo")
                .describe("How token terms are averaged: grpo (per sequence), bnpo/dapo (per token), dr_grpo (fixed length)")
                .zh("token 项的平均方式：grpo（按序列）、bnpo/dapo（按 token）、dr_grpo（按固定长度）"),
            finetuning_type_setting(),
        ];
        settings.extend(lora_settings(false));
        settings
    }

    fn configure(settings: &Settings, job: &Job) -> Result<Self, PluginError> {
        let has_rewards = serde_json::from_str::<serde_json::Value>(job.json())
            .ok()
            .and_then(|j| {
                j.get("reward_funcs")
                    .and_then(|r| r.as_array())
                    .map(|a| !a.is_empty())
            })
            .unwrap_or(false);
        if !has_rewards {
            return Err(PluginError::field(
                "reward_funcs",
                "grpo needs reward functions to score its completions, e.g. reward_funcs = [\"accuracy\", \"format\"]",
            ));
        }
        let beta = settings.number("beta").unwrap_or(0.0);
        let mut plan = trainable_plan(settings, vec![BatchKind::Prompt], beta > 0.0)?;
        plan.needs_generation = true;
        let epsilon = settings.number("epsilon").unwrap_or(0.2);
        let loss_type = match settings.text("loss_type").unwrap_or("dapo") {
            "grpo" => LossType::Grpo,
            "bnpo" => LossType::Bnpo,
            "dapo" => LossType::Dapo,
            "dr_grpo" => LossType::DrGrpo,
            other => {
                return Err(PluginError::field(
                    "loss_type",
                    format!("`{other}` is not one of {}", LOSS_TYPES.join(", ")),
                ));
            }
        };
        Ok(Grpo {
            plan,
            sampling: Sampling {
                max_new_tokens: settings.integer("max_completion_length").unwrap_or(256) as u32,
                temperature: settings.number("temperature").unwrap_or(1.0) as f32,
                top_p: settings.number("top_p").unwrap_or(1.0) as f32,
                top_k: settings.integer("top_k").unwrap_or(0) as u32,
                samples_per_prompt: settings.integer("num_generations").unwrap_or(8) as u32,
            },
            beta,
            epsilon,
            epsilon_high: settings.number("epsilon_high").unwrap_or(epsilon),
            scale_rewards: settings.bool("scale_rewards").unwrap_or(true),
            loss_type,
        })
    }

    fn plan(&self) -> Plan {
        self.plan.clone()
    }

    fn loss(&self, batch: &Batch, policy: &Policy, _step: u64) -> Result<Tensor, PluginError> {
        let rollout = policy.generate(batch, self.sampling)?;
        let scored = &rollout.batch;
        let rows = scored.rows() as usize;
        let group = self.sampling.samples_per_prompt as usize;
        let per_function = policy.score(scored).map_err(PluginError::msg)?;
        let rewards = weighted_rewards(&per_function, rows)?;
        let (advantages, stats) = group_advantages(&rewards, group, self.scale_rewards);

        let logp = policy.token_logprobs(scored, true)?;
        let mask = scored.loss_mask()?;
        // One step per generation batch: the old policy is this one, detached.
        let ratio = logp.sub(&logp.detach()?)?.exp()?;
        let adv = from_list(&advantages, &[rows as u32, 1], Dtype::F32)?;
        let unclipped = ratio.mul(&adv)?;
        let clipped = ratio
            .clamp(1.0 - self.epsilon, 1.0 + self.epsilon_high)?
            .mul(&adv)?;
        let objective = unclipped.minimum(&clipped)?;
        let mut per_token = objective.neg()?;
        let mut kl_mean = None;
        if self.beta > 0.0 {
            let reference = policy.token_logprobs(scored, false)?;
            let d = reference.sub(&logp)?;
            let kl = d.exp()?.sub(&d)?.add_scalar(-1.0)?;
            kl_mean = Some(kl.detach()?.weighted_mean(&mask)?.to_scalar()?);
            per_token = per_token.add(&kl.scale(self.beta)?)?;
        }
        let loss = self.aggregate(&per_token, &mask, rows)?;

        // Where the clipped term won the minimum (0 whenever the ratio is 1).
        let gap = unclipped.sub(&objective)?.detach()?;
        let clipped_share = gap
            .div(&gap.add_scalar(1e-12)?)?
            .weighted_mean(&mask)?
            .to_scalar()?;

        report_metric("reward", stats.mean_reward);
        report_metric("reward_std", stats.mean_group_std);
        report_metric("frac_reward_zero_std", stats.zero_std_share);
        for f in &per_function {
            let (mean, std) = mean_std(&f.scores);
            report_metric(&format!("rewards/{}/mean", f.name), mean);
            report_metric(&format!("rewards/{}/std", f.name), std);
        }
        let lengths: Vec<f64> = rollout
            .completions
            .iter()
            .map(|c| c.tokens as f64)
            .collect();
        report_metric("completion_length", mean_std(&lengths).0);
        report_metric("clip_ratio", clipped_share);
        if let Some(kl) = kl_mean {
            report_metric("kl", kl);
        }
        Ok(loss)
    }
}

impl Grpo {
    /// Averages the token terms as `loss_type` says (see the crate docs).
    fn aggregate(
        &self,
        per_token: &Tensor,
        mask: &Tensor,
        rows: usize,
    ) -> Result<Tensor, TensorError> {
        let masked = per_token.mul(mask)?;
        match self.loss_type {
            LossType::Grpo => {
                let per_row = masked.sum(&[1], false)?;
                let lengths = mask.sum(&[1], false)?.clamp(1.0, f64::MAX)?;
                per_row.div(&lengths)?.mean_all()
            }
            // TRL's dapo normalises by the active tokens of the whole global
            // batch; with one process that is this batch, as bnpo.
            LossType::Bnpo | LossType::Dapo => masked
                .sum_all()?
                .div(&mask.sum_all()?.clamp(1.0, f64::MAX)?),
            LossType::DrGrpo => masked
                .sum_all()?
                .scale(1.0 / (rows as f64 * self.sampling.max_new_tokens as f64)),
        }
    }
}

/// Each completion's reward: the weighted sum over the reward functions.
fn weighted_rewards(per_function: &[RewardScores], rows: usize) -> Result<Vec<f64>, PluginError> {
    let mut rewards = vec![0.0; rows];
    for f in per_function {
        if f.scores.len() != rows {
            return Err(PluginError::msg(format!(
                "reward `{}` gave {} scores for {rows} completions",
                f.name,
                f.scores.len()
            )));
        }
        for (r, s) in rewards.iter_mut().zip(&f.scores) {
            *r += f.weight * s;
        }
    }
    Ok(rewards)
}

/// Reward statistics of one step.
struct GroupStats {
    mean_reward: f64,
    /// Mean over groups of the group's reward std.
    mean_group_std: f64,
    /// Share of groups whose rewards are all equal (no learning signal).
    zero_std_share: f64,
}

/// Group-relative advantages: rows `g*size .. (g+1)*size` are one prompt's
/// completions. The std is the unbiased one, as `torch.std`.
fn group_advantages(rewards: &[f64], size: usize, scale: bool) -> (Vec<f64>, GroupStats) {
    let mut advantages = Vec::with_capacity(rewards.len());
    let (mut std_sum, mut zero_std, mut groups) = (0.0, 0usize, 0usize);
    for group in rewards.chunks(size) {
        let mean = group.iter().sum::<f64>() / group.len() as f64;
        let std = unbiased_std(group, mean);
        groups += 1;
        std_sum += std;
        if std < 1e-8 {
            zero_std += 1;
        }
        for r in group {
            let a = r - mean;
            advantages.push(if scale { a / (std + 1e-4) } else { a });
        }
    }
    let groups_f = groups.max(1) as f64;
    let stats = GroupStats {
        mean_reward: mean_std(rewards).0,
        mean_group_std: std_sum / groups_f,
        zero_std_share: zero_std as f64 / groups_f,
    };
    (advantages, stats)
}

fn unbiased_std(values: &[f64], mean: f64) -> f64 {
    if values.len() < 2 {
        return 0.0;
    }
    let ss: f64 = values.iter().map(|v| (v - mean) * (v - mean)).sum();
    (ss / (values.len() - 1) as f64).sqrt()
}

/// Mean and (unbiased) std of a list; (0, 0) for an empty one.
fn mean_std(values: &[f64]) -> (f64, f64) {
    if values.is_empty() {
        return (0.0, 0.0);
    }
    let mean = values.iter().sum::<f64>() / values.len() as f64;
    (mean, unbiased_std(values, mean))
}

tuner_sdk::export_plugin!(method: Grpo);

//! The DPO family: preference training on chosen/rejected pairs, with the
//! loss chosen by `loss_type` as in TRL's `DPOConfig.loss_type` (one plugin:
//! the same data, metrics and settings for every variant).
//!
//! A preference batch holds rows `0 .. pairs` (the chosen answers) and
//! `pairs .. 2·pairs` (the rejected answers to the same prompts). With
//! `lp` the policy's per-token log-probabilities and `mask` the batch's loss
//! mask (the answer tokens), a row's *sequence* log-probability is
//! `Σ_t lp·mask` and its *average* log-probability that divided by `Σ_t mask`.
//! `π_c`, `π_r` are the policy's for the chosen and rejected rows,
//! `ref_c`, `ref_r` the frozen reference's (`policy.token_logprobs(batch,
//! false)`: the base without adapters for LoRA, a frozen copy for full
//! fine-tuning), `β` is `beta`, `ls` is `label_smoothing`, `σ` the logistic
//! function. Each pair's loss, then the mean over pairs:
//!
//! - `sigmoid` (DPO; Rafailov et al. 2023, "Direct Preference Optimization:
//!   Your Language Model is Secretly a Reward Model"; with `ls > 0`,
//!   conservative DPO, Mitchell 2023): with
//!   `logits = (π_c − π_r) − (ref_c − ref_r)` over sequence log-probs,
//!   `−log σ(β·logits)·(1 − ls) − log σ(−β·logits)·ls`.
//! - `ipo` (Azar et al. 2023, "A General Theoretical Paradigm to Understand
//!   Learning from Human Preferences"): the same `logits` over *average*
//!   log-probs (as TRL does), `(logits − 1/(2β))²`.
//! - `hinge` (SLiC; Zhao et al. 2023, "SLiC-HF: Sequence Likelihood
//!   Calibration with Human Feedback"): sequence log-probs,
//!   `relu(1 − β·logits)`.
//! - `simpo` (Meng et al. 2024, "SimPO: Simple Preference Optimization with
//!   a Reference-Free Reward"; TRL's `CPOTrainer`): no reference; with the
//!   average log-probs `a_c`, `a_r` and `γ` = `simpo_gamma`,
//!   `z = β·(a_c − a_r) − γ`, `−log σ(z)·(1 − ls) − log σ(−z)·ls`.
//! - `orpo` (Hong et al. 2024, "ORPO: Monolithic Preference Optimization
//!   without Reference Model"; TRL's `ORPOTrainer`, where `β` is the paper's
//!   λ): no reference; with the average log-probs,
//!   `log_odds = (a_c − a_r) − (log(1 − e^{a_c}) − log(1 − e^{a_r}))` and
//!   the loss `NLL_chosen − β·mean(log σ(log_odds))`. Before
//!   `log(1 − e^a)`, `a` is clamped to at most −1e-6 so an answer the model
//!   is certain of gives a large finite value, not `log 0` (TRL does not
//!   clamp; below that bound the two agree).
//!
//! `rpo_alpha` (RPO, Pang et al. 2024, "Iterative Reasoning Preference
//! Optimization"), when set, adds `rpo_alpha · NLL_chosen`, where
//! `NLL_chosen` is the mean negative log-probability over all chosen answer
//! tokens of the batch (TRL's `nll_loss`).
//!
//! Metrics, with TRL's names (means over the batch's pairs):
//! `rewards/chosen`, `rewards/rejected` (detached; `β(π_c − ref_c)` and
//! `β(π_r − ref_r)` with a reference, `β·a_c` and `β·a_r` for `simpo` and
//! `orpo`), `rewards/accuracies` (the fraction of pairs whose chosen reward
//! is above the rejected one), `rewards/margins` (chosen minus rejected
//! reward), `logps/chosen`, `logps/rejected` (the policy's log-probs as the
//! loss type uses them: sums, or averages for `ipo`, `simpo`, `orpo`);
//! `nll_loss` with `orpo` or `rpo_alpha`; `log_odds_ratio`
//! (`mean(log σ(log_odds))`) and `log_odds_chosen` (`mean(log_odds)`) with
//! `orpo`.
//!
//! Training: `finetuning_type = "lora"` (default; the LoRA settings of
//! `lora`, and `load_in_4bit = true` for QLoRA) or `"full"` (every weight;
//! the host keeps a frozen reference copy when the loss type needs one).

use method_common::{finetuning_type_setting, lora_settings, trainable_plan};
use tuner_sdk::method::*;

/// The loss types, as TRL names them.
pub const LOSS_TYPES: [&str; 5] = ["sigmoid", "ipo", "hinge", "simpo", "orpo"];
pub const DEFAULT_BETA: f64 = 0.1;
pub const DEFAULT_SIMPO_GAMMA: f64 = 0.5;
/// `log(1 − e^a)` is taken with `a` clamped to at most this (ORPO).
pub const ORPO_MAX_AVG_LOGP: f64 = -1e-6;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum LossType {
    Sigmoid,
    Ipo,
    Hinge,
    Simpo,
    Orpo,
}

impl LossType {
    fn parse(name: &str) -> Result<LossType, PluginError> {
        Ok(match name {
            "sigmoid" => LossType::Sigmoid,
            "ipo" => LossType::Ipo,
            "hinge" => LossType::Hinge,
            "simpo" => LossType::Simpo,
            "orpo" => LossType::Orpo,
            other => {
                return Err(PluginError::field(
                    "loss_type",
                    format!("`{other}` is not one of {}", LOSS_TYPES.join(", ")),
                ));
            }
        })
    }

    fn name(self) -> &'static str {
        match self {
            LossType::Sigmoid => "sigmoid",
            LossType::Ipo => "ipo",
            LossType::Hinge => "hinge",
            LossType::Simpo => "simpo",
            LossType::Orpo => "orpo",
        }
    }

    /// Compares the policy with a frozen reference.
    fn needs_reference(self) -> bool {
        matches!(self, LossType::Sigmoid | LossType::Ipo | LossType::Hinge)
    }

    /// Uses per-token average log-probs instead of sums.
    fn averages(self) -> bool {
        matches!(self, LossType::Ipo | LossType::Simpo | LossType::Orpo)
    }

    /// Has a use for `label_smoothing`.
    fn smooths(self) -> bool {
        matches!(self, LossType::Sigmoid | LossType::Simpo)
    }
}

struct Dpo {
    loss_type: LossType,
    beta: f64,
    label_smoothing: f64,
    rpo_alpha: Option<f64>,
    simpo_gamma: f64,
    plan: Plan,
}

/// The chosen and the rejected rows' log-probs, `[pairs]` each.
struct PairLogps {
    chosen: Tensor,
    rejected: Tensor,
}

/// Each row's sequence log-prob `Σ lp·mask` (or, with `average`, that over
/// `Σ mask`), split into chosen and rejected.
fn pair_logps(
    lp: &Tensor,
    mask: &Tensor,
    pairs: u32,
    average: bool,
) -> Result<PairLogps, TensorError> {
    let mut seq = lp.mul(mask)?.sum(&[1], false)?;
    if average {
        // The floor only matters for a row with no trained token (cut off
        // by max_length): 0 / tiny = 0 rather than NaN.
        let len = mask.sum(&[1], false)?.clamp(1e-12, f64::MAX)?;
        seq = seq.div(&len)?;
    }
    Ok(PairLogps {
        chosen: seq.narrow(0, 0, pairs)?,
        rejected: seq.narrow(0, pairs, pairs)?,
    })
}

/// The mean negative log-prob over all chosen answer tokens of the batch.
fn chosen_nll(lp: &Tensor, mask: &Tensor, pairs: u32) -> Result<Tensor, TensorError> {
    lp.narrow(0, 0, pairs)?
        .weighted_mean(&mask.narrow(0, 0, pairs)?)?
        .neg()
}

/// `−log σ(z)·(1 − ls) − log σ(−z)·ls`, elementwise.
fn smoothed_sigmoid_loss(z: &Tensor, ls: f64) -> Result<Tensor, TensorError> {
    let loss = z.log_sigmoid()?.scale(-(1.0 - ls))?;
    if ls > 0.0 {
        loss.add(&z.neg()?.log_sigmoid()?.scale(-ls)?)
    } else {
        Ok(loss)
    }
}

/// `log(1 − e^a)` for `a ≤ 0`, with `a` clamped to at most
/// [`ORPO_MAX_AVG_LOGP`].
fn log1m_exp(a: &Tensor) -> Result<Tensor, TensorError> {
    a.clamp(-1e30, ORPO_MAX_AVG_LOGP)?
        .exp()?
        .neg()?
        .add_scalar(1.0)?
        .log()
}

fn mean(values: &[f64]) -> f64 {
    if values.is_empty() {
        0.0
    } else {
        values.iter().sum::<f64>() / values.len() as f64
    }
}

impl MethodPlugin for Dpo {
    fn info() -> PluginInfo {
        tuner_sdk::plugin_info!(
            Method,
            "DPO family: preference training from chosen/rejected pairs (sigmoid DPO, IPO, hinge, SimPO, ORPO)"
        )
    }

    fn settings() -> Vec<Setting> {
        let mut settings = vec![
            Setting::choice("loss_type", &LOSS_TYPES, "sigmoid")
                .describe("Preference loss: sigmoid (DPO), ipo, hinge (SLiC), simpo or orpo (these two need no reference model)")
                .zh("偏好损失：sigmoid（DPO）、ipo、hinge（SLiC）、simpo 或 orpo（后两者无需参考模型）"),
            Setting::number("beta", DEFAULT_BETA)
                .above(0)
                .describe("β: how far the policy may move from the reference (sigmoid, ipo, hinge), the reward scale (simpo), or the odds-ratio weight λ (orpo)")
                .zh("β：策略偏离参考模型的约束强度（sigmoid、ipo、hinge），奖励缩放（simpo），或赔率比项的权重 λ（orpo）"),
            Setting::number("label_smoothing", 0.0)
                .min(0)
                .below(0.5)
                .describe("Probability that a pair's preference label is flipped (conservative DPO); sigmoid and simpo only")
                .zh("偏好标签被翻转的概率（保守 DPO）；仅用于 sigmoid 和 simpo"),
            Setting::number("rpo_alpha", 0.0)
                .min(0)
                .no_default()
                .describe("When set, adds rpo_alpha × the mean NLL of the chosen answers (RPO); unset: off")
                .zh("设置后加上 rpo_alpha × 被选回答的平均负对数似然（RPO）；不设置则关闭"),
            Setting::number("simpo_gamma", DEFAULT_SIMPO_GAMMA)
                .min(0)
                .describe("Target reward margin γ of simpo")
                .zh("simpo 的目标奖励间隔 γ"),
            finetuning_type_setting(),
        ];
        settings.extend(lora_settings(false));
        settings
    }

    fn configure(settings: &Settings, _job: &Job) -> Result<Self, PluginError> {
        let loss_type = LossType::parse(settings.text("loss_type").unwrap_or("sigmoid"))?;
        let beta = settings.number("beta").unwrap_or(DEFAULT_BETA);
        let label_smoothing = settings.number("label_smoothing").unwrap_or(0.0);
        let rpo_alpha = settings.number("rpo_alpha");
        let simpo_gamma = settings
            .number("simpo_gamma")
            .unwrap_or(DEFAULT_SIMPO_GAMMA);
        if !(beta > 0.0 && beta.is_finite()) {
            return Err(PluginError::field(
                "beta",
                "must be a finite number above 0",
            ));
        }
        if !(0.0..0.5).contains(&label_smoothing) {
            return Err(PluginError::field("label_smoothing", "must be in [0, 0.5)"));
        }
        if label_smoothing > 0.0 && !loss_type.smooths() {
            return Err(PluginError::field(
                "label_smoothing",
                format!(
                    "loss_type = \"{}\" has no use for label smoothing (sigmoid and simpo do); remove it or set it to 0",
                    loss_type.name()
                ),
            ));
        }
        if rpo_alpha.is_some() && loss_type == LossType::Orpo {
            return Err(PluginError::field(
                "rpo_alpha",
                "orpo already adds the chosen answers' NLL (beta weighs its odds-ratio term); remove rpo_alpha",
            ));
        }
        let plan = trainable_plan(
            settings,
            vec![BatchKind::Preference],
            loss_type.needs_reference(),
        )?;
        Ok(Dpo {
            loss_type,
            beta,
            label_smoothing,
            rpo_alpha,
            simpo_gamma,
            plan,
        })
    }

    fn plan(&self) -> Plan {
        self.plan.clone()
    }

    fn loss(&self, batch: &Batch, policy: &Policy, _step: u64) -> Result<Tensor, PluginError> {
        if !matches!(batch.kind(), BatchKind::Preference) {
            return Err(PluginError::msg(
                "dpo trains on preference pairs (records with chosen and rejected); this batch holds other samples",
            ));
        }
        let pairs = batch.pairs();
        if pairs == 0 || batch.rows() != 2 * pairs {
            return Err(PluginError::msg(format!(
                "a preference batch of {} rows with {pairs} pairs; expected 2 rows per pair",
                batch.rows()
            )));
        }
        let (beta, ls) = (self.beta, self.label_smoothing);
        let mask = batch.loss_mask()?;
        let lp = policy.token_logprobs(batch, true)?;
        let pol = pair_logps(&lp, &mask, pairs, self.loss_type.averages())?;

        let mut orpo_metrics = None;
        let (losses, chosen_rewards, rejected_rewards) = match self.loss_type {
            LossType::Sigmoid | LossType::Ipo | LossType::Hinge => {
                let ref_lp = policy.token_logprobs(batch, false)?.detach()?;
                let reference = pair_logps(&ref_lp, &mask, pairs, self.loss_type.averages())?;
                let chosen_ratio = pol.chosen.sub(&reference.chosen)?;
                let rejected_ratio = pol.rejected.sub(&reference.rejected)?;
                let logits = chosen_ratio.sub(&rejected_ratio)?;
                let losses = match self.loss_type {
                    LossType::Sigmoid => smoothed_sigmoid_loss(&logits.scale(beta)?, ls)?,
                    LossType::Ipo => logits.add_scalar(-1.0 / (2.0 * beta))?.sqr()?,
                    _ => logits.scale(-beta)?.add_scalar(1.0)?.relu()?,
                };
                (
                    losses,
                    chosen_ratio.scale(beta)?.detach()?,
                    rejected_ratio.scale(beta)?.detach()?,
                )
            }
            LossType::Simpo => {
                let z = pol
                    .chosen
                    .sub(&pol.rejected)?
                    .scale(beta)?
                    .add_scalar(-self.simpo_gamma)?;
                (
                    smoothed_sigmoid_loss(&z, ls)?,
                    pol.chosen.scale(beta)?.detach()?,
                    pol.rejected.scale(beta)?.detach()?,
                )
            }
            LossType::Orpo => {
                let log_odds = pol
                    .chosen
                    .sub(&pol.rejected)?
                    .sub(&log1m_exp(&pol.chosen)?.sub(&log1m_exp(&pol.rejected)?)?)?;
                let ratio = log_odds.log_sigmoid()?;
                orpo_metrics = Some((
                    ratio.mean_all()?.to_scalar()?,
                    log_odds.mean_all()?.to_scalar()?,
                ));
                (
                    ratio.scale(-beta)?,
                    pol.chosen.scale(beta)?.detach()?,
                    pol.rejected.scale(beta)?.detach()?,
                )
            }
        };

        let mut loss = losses.mean_all()?;
        let nll_weight = match self.loss_type {
            LossType::Orpo => Some(1.0),
            _ => self.rpo_alpha,
        };
        if let Some(weight) = nll_weight {
            let nll = chosen_nll(&lp, &mask, pairs)?;
            report_metric("nll_loss", nll.to_scalar()?);
            loss = loss.add(&nll.scale(weight)?)?;
        }

        let chosen = chosen_rewards.to_list()?;
        let rejected = rejected_rewards.to_list()?;
        let wins = chosen.iter().zip(&rejected).filter(|(c, r)| c > r).count();
        let margins: Vec<f64> = chosen.iter().zip(&rejected).map(|(c, r)| c - r).collect();
        report_metric("rewards/chosen", mean(&chosen));
        report_metric("rewards/rejected", mean(&rejected));
        report_metric(
            "rewards/accuracies",
            wins as f64 / chosen.len().max(1) as f64,
        );
        report_metric("rewards/margins", mean(&margins));
        report_metric("logps/chosen", mean(&pol.chosen.to_list()?));
        report_metric("logps/rejected", mean(&pol.rejected.to_list()?));
        if let Some((ratio, log_odds)) = orpo_metrics {
            report_metric("log_odds_ratio", ratio);
            report_metric("log_odds_chosen", log_odds);
        }
        Ok(loss)
    }
}

tuner_sdk::export_plugin!(method: Dpo);

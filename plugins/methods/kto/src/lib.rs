//! KTO (Ethayarajh et al. 2024, "KTO: Model Alignment as Prospect Theoretic
//! Optimization"): alignment from single answers labelled desirable or
//! undesirable, as TRL's `KTOTrainer` and LLaMA-Factory's `stage: kto` train
//! it. No pairs are needed, so thumbs-up/thumbs-down feedback trains as is.
//!
//! An unpaired batch of `n` samples holds rows `0 .. n` (each prompt with its
//! own answer; `batch.labels()` says which answers are desirable) and rows
//! `n .. 2n`, the *KL rows*: the same prompts with a mismatched answer (the
//! host pairs each sample with another one, fixed per dataset). With `lp`
//! the per-token log-probs and `mask` the answer tokens, a row's log-prob is
//! `Σ_t lp·mask` (a sum, as TRL). `π`, `ref` are the policy's and the frozen
//! reference's log-probs of a sample's answer, `r = π − ref` its log-ratio,
//! `β` is `beta`, `σ` the logistic function:
//!
//! - `kto` (the paper's loss, TRL's `loss_type="kto"`): the reference point
//!   `z₀ = max(0, mean over the KL rows of (π_KL − ref_KL))`, an estimate of
//!   the KL divergence between policy and reference, carrying no gradient
//!   (the policy's KL log-probs are computed and detached). A desirable
//!   answer's loss is `λ_D·(1 − σ(β(r − z₀)))`, an undesirable one's
//!   `λ_U·(1 − σ(β(z₀ − r)))`, with `λ_D` = `desirable_weight`, `λ_U` =
//!   `undesirable_weight`.
//! - `apo_zero_unpaired` (D'Oosterlinck et al. 2024, "Anchored Preference
//!   Optimization", eq. 7; TRL's loss type of that name): the same with
//!   `z₀ = 0` (no KL rows are scored): desirable `1 − σ(β·r)`, undesirable
//!   `σ(β·r)`. For answers better than what the model writes now.
//!
//! The loss is the mean over the batch's samples (TRL's `nanmean` over the
//! concatenated desirable and undesirable losses).
//!
//! Metrics, with TRL's names: `kl` (`z₀`, for `kto`), `rewards/chosen` and
//! `rewards/rejected` (the mean `β·r` over the desirable and the
//! undesirable answers), `rewards/margins` (their difference, when the batch
//! has both), `logps/chosen`, `logps/rejected` (the mean `π`), and
//! `count/chosen`, `count/rejected` (how many of each the batch held). A
//! side the batch does not have is not reported for that micro-batch.
//!
//! The KTO paper advises weights such that
//! `λ_D·n_D / (λ_U·n_U)` lies in `[1, 4/3]` (`n_D`, `n_U`: the numbers of
//! desirable and undesirable samples); TRL warns when it does not. The
//! weights are the user's to set.
//!
//! Training: `finetuning_type = "lora"` (default; the LoRA settings of
//! `lora`, and `load_in_4bit = true` for QLoRA) or `"full"` (every weight;
//! the host keeps a frozen reference copy).

use method_common::{finetuning_type_setting, lora_settings, trainable_plan};
use tuner_sdk::method::*;

/// The loss types, as TRL names them.
pub const LOSS_TYPES: [&str; 2] = ["kto", "apo_zero_unpaired"];
pub const DEFAULT_BETA: f64 = 0.1;

struct Kto {
    /// `apo_zero_unpaired`: no KL reference point.
    apo_zero: bool,
    beta: f64,
    desirable_weight: f64,
    undesirable_weight: f64,
    plan: Plan,
}

/// Each row's answer log-prob `Σ_t lp·mask`, `[rows]`.
fn answer_logps(lp: &Tensor, mask: &Tensor) -> Result<Tensor, TensorError> {
    lp.mul(mask)?.sum(&[1], false)
}

fn mean(values: &[f64]) -> f64 {
    values.iter().sum::<f64>() / values.len().max(1) as f64
}

/// The KL reference point `max(0, mean(π_KL − ref_KL))` from the KL rows
/// (`n .. 2n`), without gradients.
fn kl_estimate(batch: &Batch, policy: &Policy, n: u32) -> Result<f64, TensorError> {
    let kl_rows = batch.narrow_rows(n, n)?;
    let mask = kl_rows.loss_mask()?;
    let policy_kl = answer_logps(&policy.token_logprobs(&kl_rows, true)?.detach()?, &mask)?;
    let reference_kl = answer_logps(&policy.token_logprobs(&kl_rows, false)?, &mask)?;
    Ok(mean(&policy_kl.sub(&reference_kl)?.to_list()?).max(0.0))
}

/// Reports `name/chosen` and `name/rejected`: the mean of `values` over the
/// desirable and over the undesirable samples (each only when there are
/// any). Returns the two means.
fn report_sides(name: &str, values: &[f64], labels: &[bool]) -> (Option<f64>, Option<f64>) {
    let side = |want: bool| -> Option<f64> {
        let picked: Vec<f64> = values
            .iter()
            .zip(labels)
            .filter(|(_, l)| **l == want)
            .map(|(v, _)| *v)
            .collect();
        (!picked.is_empty()).then(|| mean(&picked))
    };
    let (chosen, rejected) = (side(true), side(false));
    if let Some(v) = chosen {
        report_metric(&format!("{name}/chosen"), v);
    }
    if let Some(v) = rejected {
        report_metric(&format!("{name}/rejected"), v);
    }
    (chosen, rejected)
}

impl MethodPlugin for Kto {
    fn info() -> PluginInfo {
        tuner_sdk::plugin_info!(
            Method,
            "KTO: alignment from answers labelled desirable or undesirable, no pairs needed"
        )
    }

    fn settings() -> Vec<Setting> {
        let mut settings = vec![
            Setting::choice("loss_type", &LOSS_TYPES, "kto")
                .describe("kto (with the KL reference point from mismatched answers) or apo_zero_unpaired (no KL term)")
                .zh("kto（以错配回答估计 KL 作为参考点）或 apo_zero_unpaired（无 KL 项）"),
            Setting::number("beta", DEFAULT_BETA)
                .above(0)
                .describe("β: how far the policy may move from the reference")
                .zh("β：策略偏离参考模型的约束强度"),
            Setting::number("desirable_weight", 1.0)
                .above(0)
                .describe("Weight λ_D of the desirable answers' losses")
                .zh("理想回答损失的权重 λ_D"),
            Setting::number("undesirable_weight", 1.0)
                .above(0)
                .describe("Weight λ_U of the undesirable answers' losses")
                .zh("非理想回答损失的权重 λ_U"),
            finetuning_type_setting(),
        ];
        settings.extend(lora_settings(false));
        settings
    }

    fn configure(settings: &Settings, _job: &Job) -> Result<Self, PluginError> {
        let apo_zero = match settings.text("loss_type").unwrap_or("kto") {
            "kto" => false,
            "apo_zero_unpaired" => true,
            other => {
                return Err(PluginError::field(
                    "loss_type",
                    format!("`{other}` is not one of {}", LOSS_TYPES.join(", ")),
                ));
            }
        };
        let positive = |key: &str, default: f64| -> Result<f64, PluginError> {
            let v = settings.number(key).unwrap_or(default);
            if v > 0.0 && v.is_finite() {
                Ok(v)
            } else {
                Err(PluginError::field(key, "must be a finite number above 0"))
            }
        };
        Ok(Kto {
            apo_zero,
            beta: positive("beta", DEFAULT_BETA)?,
            desirable_weight: positive("desirable_weight", 1.0)?,
            undesirable_weight: positive("undesirable_weight", 1.0)?,
            plan: trainable_plan(settings, vec![BatchKind::Unpaired], true)?,
        })
    }

    fn plan(&self) -> Plan {
        self.plan.clone()
    }

    fn loss(&self, batch: &Batch, policy: &Policy, _step: u64) -> Result<Tensor, PluginError> {
        if !matches!(batch.kind(), BatchKind::Unpaired) {
            return Err(PluginError::msg(
                "kto trains on answers labelled desirable or undesirable (records with a boolean `label`); this batch holds other samples",
            ));
        }
        let n = batch.pairs();
        let labels = batch.labels();
        if n == 0 || batch.rows() != 2 * n || labels.len() != n as usize {
            return Err(PluginError::msg(format!(
                "an unpaired batch of {} rows with {n} samples and {} labels; expected 2 rows and 1 label per sample",
                batch.rows(),
                labels.len()
            )));
        }
        let kl = if self.apo_zero {
            0.0
        } else {
            kl_estimate(batch, policy, n)?
        };

        let samples = batch.narrow_rows(0, n)?;
        let mask = samples.loss_mask()?;
        let logps = answer_logps(&policy.token_logprobs(&samples, true)?, &mask)?;
        let reference = answer_logps(&policy.token_logprobs(&samples, false)?, &mask)?;
        let ratio = logps.sub(&reference)?;
        // z = β(r − z₀): a desirable answer's loss is 1 − σ(z) = σ(−z), an
        // undesirable one's 1 − σ(−z) = σ(z); the label picks per sample.
        let z = ratio.add_scalar(-kl)?.scale(self.beta)?;
        let weights = |desirable: bool, weight: f64| -> Result<Tensor, TensorError> {
            let values: Vec<f64> = labels
                .iter()
                .map(|&l| if l == desirable { weight } else { 0.0 })
                .collect();
            from_list(&values, &[n], Dtype::F32)
        };
        let losses = z
            .neg()?
            .sigmoid()?
            .mul(&weights(true, self.desirable_weight)?)?
            .add(
                &z.sigmoid()?
                    .mul(&weights(false, self.undesirable_weight)?)?,
            )?;
        let loss = losses.mean_all()?;

        if !self.apo_zero {
            report_metric("kl", kl);
        }
        let rewards: Vec<f64> = ratio
            .to_list()?
            .into_iter()
            .map(|r| self.beta * r)
            .collect();
        if let (Some(chosen), Some(rejected)) = report_sides("rewards", &rewards, &labels) {
            report_metric("rewards/margins", chosen - rejected);
        }
        report_sides("logps", &logps.to_list()?, &labels);
        let desirable = labels.iter().filter(|l| **l).count();
        report_metric("count/chosen", desirable as f64);
        report_metric("count/rejected", (labels.len() - desirable) as f64);
        Ok(loss)
    }
}

tuner_sdk::export_plugin!(method: Kto);

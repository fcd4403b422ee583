//! A method with a setting of its own and a loss over the whole vocabulary:
//! label smoothing, for the method suites.
//!
//! Setting `smoothing` (ε, a number in `[0, 1)`, default 0.1). Full
//! fine-tuning on chat and text batches. At each trained position, with
//! `logp` the log-softmax over the vocabulary (`policy.vocab_logprobs`):
//!
//! `loss_i = (1 - ε) · (-logp[target]) + ε · (-mean_v logp[v])`
//!
//! and the loss is the mean of `loss_i` weighted by the positions' loss
//! weights. Metric `nll`: the same mean of `-logp[target]` alone.
use tuner_sdk::method::*;

const DEFAULT_SMOOTHING: f64 = 0.1;

struct LabelSmoothing {
    smoothing: f64,
}

impl MethodPlugin for LabelSmoothing {
    fn info() -> PluginInfo {
        tuner_sdk::plugin_info!(Method, "label-smoothed full fine-tuning")
    }

    fn settings() -> Vec<Setting> {
        vec![
            Setting::number("smoothing", DEFAULT_SMOOTHING)
                .min(0)
                .below(1)
                .describe("Share of the target probability spread evenly over the vocabulary")
                .zh("从目标词的概率中均匀分给整个词表的比例"),
        ]
    }

    fn configure(settings: &Settings, _job: &Job) -> Result<Self, PluginError> {
        Ok(LabelSmoothing {
            smoothing: settings.number("smoothing").unwrap_or(DEFAULT_SMOOTHING),
        })
    }

    fn plan(&self) -> Plan {
        Plan {
            trains: Trainable::Full,
            adapter: None,
            base_quantization: Quantization::None,
            needs_reference: false,
            needs_generation: false,
            accepts: vec![BatchKind::Chat, BatchKind::Text],
        }
    }

    fn loss(&self, batch: &Batch, policy: &Policy, _step: u64) -> Result<Tensor, PluginError> {
        let dist = policy.vocab_logprobs(batch, true)?;
        if dist.targets.numel() == 0 {
            // Nothing to train in this batch: 0, still tied to the graph.
            return Ok(dist.logprobs.sum_all()?.scale(0.0)?);
        }
        let nll = dist.target_logprobs()?.neg()?; // [n]
        let uniform = dist.logprobs.mean(&[1], false)?.neg()?; // [n]
        let e = self.smoothing;
        let per_position = nll.scale(1.0 - e)?.add(&uniform.scale(e)?)?;
        report_metric(
            "nll",
            nll.detach()?.weighted_mean(&dist.weights)?.to_scalar()?,
        );
        Ok(per_position.weighted_mean(&dist.weights)?)
    }
}

tuner_sdk::export_plugin!(method: LabelSmoothing);

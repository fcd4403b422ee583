//! A method plugin that misbehaves in `loss` on purpose; `step` picks how:
//! 0 returns the per-token log-probs (not a scalar), 1 panics, 2 holds
//! tensors until the host refuses more, 3 returns an integer scalar, 4 fails
//! a tensor op (shapes that do not broadcast), 5 reports metrics and returns
//! a good loss, 6 asks for generation.
use tuner_sdk::method::*;

struct BadLoss;

impl MethodPlugin for BadLoss {
    fn info() -> PluginInfo {
        tuner_sdk::plugin_info!(Method, "misbehaves in loss, by step")
    }

    fn configure(_settings: &Settings, _job: &Job) -> Result<Self, PluginError> {
        Ok(BadLoss)
    }

    fn plan(&self) -> Plan {
        Plan {
            trains: Trainable::Full,
            adapter: None,
            base_quantization: Quantization::None,
            needs_reference: false,
            needs_generation: false,
            accepts: vec![BatchKind::Chat],
        }
    }

    fn loss(&self, batch: &Batch, policy: &Policy, step: u64) -> Result<Tensor, PluginError> {
        match step {
            0 => Ok(policy.token_logprobs(batch, true)?),
            1 => panic!("asked to panic"),
            2 => {
                let mut held = Vec::new();
                loop {
                    match full(0.0, &[1], Dtype::F32) {
                        Ok(t) => held.push(t),
                        Err(e) => {
                            return Err(PluginError::msg(format!(
                                "refused after {}: {}",
                                held.len(),
                                e
                            )));
                        }
                    }
                }
            }
            3 => Ok(batch.input_ids()?.sum_all()?),
            4 => {
                let lp = policy.token_logprobs(batch, true)?;
                let ids = batch.input_ids()?.to_dtype(Dtype::F32)?;
                Ok(lp.add(&ids)?.sum_all()?)
            }
            5 => {
                report_metric("rows", batch.rows() as f64);
                report_metric("answer", 41.0);
                report_metric("answer", 42.0);
                Ok(masked_nll(batch, policy)?)
            }
            _ => {
                let sampling = Sampling {
                    max_new_tokens: 4,
                    temperature: 1.0,
                    top_p: 1.0,
                    top_k: 0,
                    samples_per_prompt: 1,
                };
                policy.generate(batch, sampling)?;
                Err(PluginError::msg("generate answered"))
            }
        }
    }
}

tuner_sdk::export_plugin!(method: BadLoss);

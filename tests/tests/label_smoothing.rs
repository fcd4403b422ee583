//! An objective over the whole next-token distribution, written as a plugin:
//! the `label-smoothing` test method (`tests/plugins/label-smoothing`), run
//! through `policy.vocab-logprobs` and the softmax ops of
//! `tuner:plugin@0.2.0`, against an f64 reference computed here by hand —
//! the loss and its gradient with respect to the logits.
//!
//! The policy is a fake whose logits are a candle `Var`, so the gradient the
//! host's autograd computes through the plugin's ops can be compared with the
//! closed form.

use std::sync::Arc;

use candle_core::{Device, Tensor, Var};
use tuner::plugins::imports::model::{Distribution, MethodBatch, PolicyBackend};
use tuner::plugins::imports::tensors::ops;
use tuner::plugins::settings::SettingValue;
use tuner::sample::SampleKind;
use tuner_tests::{TestHome, install, test_limits};

/// Logits of the trained positions, `[n, vocab]`.
const LOGITS: [[f32; 5]; 3] = [
    [2.0, -1.0, 0.5, 0.0, 3.5],
    [-0.5, 0.25, 1.75, -2.0, 0.0],
    [10.0, 9.5, -4.0, 0.0, 1.0],
];
const TARGETS: [u32; 3] = [4, 2, 1];
const WEIGHTS: [f32; 3] = [1.0, 0.5, 2.0];

/// A policy whose distribution is the log-softmax of a variable.
struct FakePolicy {
    logits: Var,
}

impl PolicyBackend for FakePolicy {
    fn token_logprobs(&self, _batch: &MethodBatch, _adapters: bool) -> anyhow::Result<Tensor> {
        anyhow::bail!("the label-smoothing method reads vocab_logprobs only")
    }

    fn vocab_logprobs(
        &self,
        _batch: &MethodBatch,
        _adapters: bool,
    ) -> anyhow::Result<Distribution> {
        let device = Device::Cpu;
        Ok(Distribution {
            logprobs: ops::log_softmax(self.logits.as_tensor(), 1)
                .map_err(|e| anyhow::anyhow!("{e:?}"))?,
            targets: Tensor::new(&TARGETS, &device)?,
            weights: Tensor::new(&WEIGHTS, &device)?,
        })
    }
}

/// The batch itself is not read by this method; it only has to exist.
fn batch() -> Arc<MethodBatch> {
    let ids = Tensor::new(&[[1u32, 2, 3, 4]], &Device::Cpu).unwrap();
    let mask = Tensor::new(&[[1f32, 1.0, 1.0]], &Device::Cpu).unwrap();
    Arc::new(MethodBatch::new(SampleKind::Chat, ids, mask).unwrap())
}

/// `(loss, d loss / d logits)` in f64, from the definitions:
/// `loss = Σ_i w_i [(1-ε)(-lp_i[t_i]) + ε(-mean_v lp_i[v])] / Σ_i w_i`, and
/// since `d lp_i[k] / d z_i[j] = δ_kj - p_i[j]`, the gradient is
/// `w_i / W · ((1-ε)(p_i[j] - δ_{j t_i}) + ε(p_i[j] - 1/V))`.
fn reference(eps: f64) -> (f64, Vec<Vec<f64>>) {
    let total_w: f64 = WEIGHTS.iter().map(|&w| w as f64).sum();
    let mut loss = 0.0;
    let mut grad = Vec::new();
    for (i, row) in LOGITS.iter().enumerate() {
        let z: Vec<f64> = row.iter().map(|&v| v as f64).collect();
        let m = z.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
        let lse = m + z.iter().map(|v| (v - m).exp()).sum::<f64>().ln();
        let lp: Vec<f64> = z.iter().map(|v| v - lse).collect();
        let v = lp.len() as f64;
        let t = TARGETS[i] as usize;
        let w = WEIGHTS[i] as f64;
        let term = (1.0 - eps) * -lp[t] + eps * -(lp.iter().sum::<f64>() / v);
        loss += w * term / total_w;
        grad.push(
            lp.iter()
                .enumerate()
                .map(|(j, l)| {
                    let p = l.exp();
                    let delta = if j == t { 1.0 } else { 0.0 };
                    w / total_w * ((1.0 - eps) * (p - delta) + eps * (p - 1.0 / v))
                })
                .collect(),
        );
    }
    (loss, grad)
}

#[test]
fn label_smoothing_as_a_plugin_matches_the_f64_reference_in_value_and_gradient() {
    let home = TestHome::new();
    install(home.plugin_dir(), "label-smoothing", "label-smoothing");
    let host = home.start(test_limits());
    let plugin = host
        .method("label-smoothing")
        .expect("the test method is installed");

    // Its own setting, declared with a default and a range.
    let schema = plugin.settings().unwrap();
    assert_eq!(schema.len(), 1);
    assert_eq!(schema[0].name, "smoothing");
    assert_eq!(schema[0].default, Some(SettingValue::Number(0.1)));

    for eps in [0.0, 0.1, 0.35] {
        let logits = Var::from_tensor(&Tensor::new(&LOGITS, &Device::Cpu).unwrap()).unwrap();
        let policy: Arc<dyn PolicyBackend> = Arc::new(FakePolicy {
            logits: logits.clone(),
        });
        let values = vec![("smoothing".to_string(), SettingValue::Number(eps))];
        let mut session = plugin.start_method(&values, "{}").unwrap();
        let out = session.loss(batch(), policy, 0).unwrap();

        let (want_loss, want_grad) = reference(eps);
        let got = out.loss.to_scalar::<f32>().unwrap() as f64;
        assert!(
            (got - want_loss).abs() <= 1e-5 * (1.0 + want_loss.abs()),
            "ε = {eps}: loss {got}, reference {want_loss}"
        );

        let grads = out.loss.backward().unwrap();
        let got_grad = grads
            .get(logits.as_tensor())
            .expect("the loss reaches the logits")
            .to_vec2::<f32>()
            .unwrap();
        for (i, (got_row, want_row)) in got_grad.iter().zip(&want_grad).enumerate() {
            for (j, (g, w)) in got_row.iter().zip(want_row).enumerate() {
                assert!(
                    (*g as f64 - w).abs() <= 1e-5,
                    "ε = {eps}: d loss / d z[{i}][{j}] is {g}, reference {w}"
                );
            }
        }

        // The plugin's own metric: the unsmoothed NLL, beside the loss.
        let nll = out
            .metrics
            .iter()
            .find(|(name, _)| name == "nll")
            .map(|(_, v)| *v)
            .expect("an nll metric");
        let (want_nll, _) = reference(0.0);
        assert!(
            (nll - want_nll).abs() <= 1e-5 * (1.0 + want_nll),
            "nll {nll} vs {want_nll}"
        );
    }
}

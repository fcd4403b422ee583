//! Exercises every tensor operation through the WIT, for the method suite.
//!
//! `loss` expects a batch of 2 rows and 5 positions (so log-probs are
//! `[2, 4]`). Each operation's result is summed and reported as a metric
//! named after it; the loss is the sum of those sums, so one `backward`
//! checks every operation's gradient. The suite recomputes each metric and
//! the gradient independently.
//!
//! From step 1 on, four more terms join (the ops WIT 0.2.0 added), each over
//! dimension 1 of the log-probs `lp`: `log_softmax` (sum of
//! `log_softmax(lp)`), `softmax` (sum of `softmax(lp)^2`), `logsumexp` (sum
//! of the per-row `logsumexp`) and `entropy` (sum of the per-row entropy of
//! `log_softmax(lp)`). Step 0 is the 0.1.0 set alone.
use tuner_sdk::method::*;

struct Probe;

struct Terms(Vec<Tensor>);

impl Terms {
    /// Reports `sum(t)` as `name` and keeps it for the loss.
    fn add(&mut self, name: &str, t: Tensor) -> Result<(), TensorError> {
        let s = t.sum_all()?;
        report_metric(name, s.to_scalar()?);
        self.0.push(s);
        Ok(())
    }
}

impl MethodPlugin for Probe {
    fn info() -> PluginInfo {
        tuner_sdk::plugin_info!(Method, "calls every tensor operation")
    }

    fn configure(_settings: &Settings, _job: &Job) -> Result<Self, PluginError> {
        Ok(Probe)
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
        let lp = policy.token_logprobs(batch, true)?;
        let mask = batch.loss_mask()?;
        let ok = lp.shape() == [2, 4] && lp.dtype() == Dtype::F32 && mask.dtype() == Dtype::F32;
        report_metric("shape_ok", if ok { 1.0 } else { 0.0 });
        let ids = batch.input_ids()?;
        report_metric("ids_u32", if ids.dtype() == Dtype::U32 { 1.0 } else { 0.0 });
        report_metric("ids_sum", ids.to_dtype(Dtype::F32)?.sum_all()?.to_scalar()?);
        report_metric("to_list", lp.to_list()?.iter().sum());

        let mut t = Terms(Vec::new());
        t.add("add", lp.add(&mask)?)?;
        t.add("sub", lp.sub(&mask)?)?;
        t.add("mul", lp.mul(&mask)?)?;
        t.add("div", lp.div(&mask.add_scalar(1.0)?)?)?;
        t.add("minimum", lp.minimum(&full(-1.0, &[1], Dtype::F32)?)?)?;
        let row = from_list(&[-1.0, -0.5, -2.0, -0.2], &[4], Dtype::F32)?;
        t.add("maximum", lp.maximum(&row)?)?;
        t.add("add_scalar", lp.add_scalar(2.5)?)?;
        t.add("scale", lp.scale(-3.0)?)?;
        t.add("neg", lp.neg()?)?;
        t.add("exp", lp.exp()?)?;
        t.add("log", lp.neg()?.log()?)?;
        t.add("sigmoid", lp.scale(2.0)?.sigmoid()?)?;
        t.add("sigmoid_far", lp.scale(100.0)?.sigmoid()?)?;
        t.add("log_sigmoid", lp.log_sigmoid()?)?;
        t.add("log_sigmoid_far", lp.scale(100.0)?.log_sigmoid()?)?;
        t.add("log_sigmoid_zero", lp.sub(&lp.detach()?)?.log_sigmoid()?)?;
        t.add("relu", lp.add_scalar(1.0)?.relu()?)?;
        t.add("sqr", lp.sqr()?)?;
        t.add("sqrt", lp.neg()?.sqrt()?)?;
        t.add("abs", lp.abs()?)?;
        t.add("clamp", lp.clamp(-1.5, -0.5)?)?;
        t.add("sum_dim", lp.sum(&[1], false)?.sqr()?)?;
        let mean = lp.mean(&[0], true)?;
        report_metric("mean_dim_rank", mean.shape().len() as f64);
        t.add("mean_dim", mean.sqr()?)?;
        t.add("max", lp.max(1, false)?)?;
        t.add("mean_all", lp.mean_all()?)?;
        let index = from_list(&[0.0, 2.0, 3.0, 1.0], &[2, 2], Dtype::U32)?;
        t.add("gather", lp.gather(1, &index)?)?;
        t.add("narrow", lp.narrow(1, 1, 2)?)?;
        t.add("reshape", lp.reshape(&[8])?.narrow(0, 3, 2)?)?;
        t.add("where_else", lp.where_else(&mask, &Tensor::scalar(0.25)?)?)?;
        t.add("to_dtype", lp.to_dtype(Dtype::Bf16)?.to_dtype(Dtype::F32)?)?;
        t.add("detach", lp.detach()?.mul(&lp)?)?;
        // Without adapters the host answers without a gradient.
        t.add("reference", policy.token_logprobs(batch, false)?.mul(&lp)?)?;
        if step >= 1 {
            // The softmax family (WIT 0.2.0), over the positions of each row.
            t.add("log_softmax", lp.log_softmax(1)?)?;
            t.add("softmax", lp.softmax(1)?.sqr()?)?;
            t.add("logsumexp", lp.logsumexp(1, false)?)?;
            t.add("entropy", lp.log_softmax(1)?.entropy(1, false)?)?;
        }

        let mut terms = t.0.into_iter();
        let mut loss = terms.next().expect("terms");
        for term in terms {
            loss = loss.add(&term)?;
        }
        Ok(loss)
    }
}

tuner_sdk::export_plugin!(method: Probe);

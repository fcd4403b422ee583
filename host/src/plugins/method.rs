//! The handle of a method plugin, and the session a training job holds.
//!
//! [`MethodPlugin`] is what [`super::PluginHost::method`] hands out, so only
//! a method plugin can be configured for a job. A job talks to its method
//! through a [`MethodSession`]: `configure` and every `loss` of the job run
//! in one instance, leased from the plugin's pool for the session's
//! lifetime, so the plugin's configured `method` (a resource in
//! `tuner:plugin@0.2.0`) lives where it was made.

use std::ops::Deref;
use std::sync::Arc;
use std::time::Duration;

use wasmtime::component::{Resource, ResourceAny};

use super::bindings::v0_1_0::{self as old, Convert};
use super::bindings::v0_2_0 as new;
use super::imports::model::{
    BatchHandle, MethodBatch, MethodLoss, Plan, PolicyBackend, PolicyHandle,
};
use super::plugin::{Live, MethodBindings};
use super::settings::Values;
use super::{CallError, Plugin};

use new::method::exports::tuner::plugin::method_plugin as wit;

/// A loaded method plugin.
///
/// Only a method can be configured for a job, and a method cannot be asked
/// to parse: the format calls are not there to call.
///
/// ```compile_fail
/// fn ask(method: &tuner::plugins::MethodPlugin) {
///     let _ = method.detect("train.jsonl", "{}");
/// }
/// ```
#[derive(Clone)]
pub struct MethodPlugin(Arc<Plugin>);

impl Deref for MethodPlugin {
    type Target = Plugin;
    fn deref(&self) -> &Plugin {
        &self.0
    }
}

impl MethodPlugin {
    /// Wraps a plugin already known to be a method ([`Plugin::as_method`]).
    pub(super) fn new(plugin: Arc<Plugin>) -> Self {
        Self(plugin)
    }

    /// The plugin behind the handle.
    pub fn plugin(&self) -> &Arc<Plugin> {
        &self.0
    }

    /// Configures the method for one job and keeps it, in one instance of
    /// the plugin, for the job's `loss` calls.
    ///
    /// `values` are the method's checked settings (every key of
    /// [`Plugin::settings`], defaults filled in); `job_json` is the host's
    /// part of the training config as a JSON object. A
    /// `tuner:plugin@0.2.0` plugin gets both through `configure` and keeps a
    /// `method` resource; a 0.1.0 plugin gets one flat JSON object, the job
    /// with the values laid over it ([`old::legacy_config_json`]).
    ///
    /// The plugin's refusal and an inconsistent plan are errors naming the
    /// plugin (and the key the plugin names).
    pub fn start_method(
        &self,
        values: &Values,
        job_json: &str,
    ) -> Result<MethodSession, CallError> {
        let (instance, plan) = self.configure_instance(values, job_json)?;
        Ok(MethodSession {
            plugin: self.clone(),
            values: values.clone(),
            job_json: job_json.to_string(),
            plan,
            instance: Some(instance),
        })
    }

    /// An instance with the method configured in it, and its checked plan.
    fn configure_instance(
        &self,
        values: &Values,
        job_json: &str,
    ) -> Result<(SessionInstance, Plan), CallError> {
        let deadline = self.timeout();
        let mut live = self.lease_instance(deadline)?;
        let configured = self.run_method(&mut live, "configure", deadline, |store, b| match b {
            MethodBindings::V0_2(b) => Ok(b
                .tuner_plugin_method_plugin()
                .call_configure(store, &new::wit_values(values), job_json)?
                .map(Configured::Method)),
            MethodBindings::V0_1(b) => Ok(b
                .tuner_plugin_method_plugin()
                .call_configure(store, &old::legacy_config_json(values, job_json))?
                .map(|plan| Configured::Plan(plan.convert()))
                .map_err(Convert::convert)),
        });
        let configured = match configured {
            Ok(Ok(c)) => c,
            Ok(Err(e)) => {
                self.return_instance(live);
                return Err(self.refused("configure", e));
            }
            Err(err) => {
                self.release_slot();
                return Err(err);
            }
        };
        let (method, plan) = match configured {
            Configured::Plan(plan) => (None, plan),
            Configured::Method(method) => {
                self.count_call();
                let plan = self.run_method(&mut live, "plan", deadline, |store, b| match b {
                    MethodBindings::V0_2(b) => b
                        .tuner_plugin_method_plugin()
                        .method()
                        .call_plan(store, method),
                    // Only a 0.2.0 plugin configures a `method` resource.
                    MethodBindings::V0_1(_) => {
                        Err(wasmtime::format_err!("a 0.1.0 method has no `plan`"))
                    }
                });
                match plan {
                    Ok(plan) => (Some(method), plan),
                    Err(err) => {
                        self.release_slot();
                        return Err(err);
                    }
                }
            }
        };
        let instance = SessionInstance { live, method };
        match Plan::from_wit(plan) {
            Ok(plan) => Ok((instance, plan)),
            Err(message) => {
                self.close_instance(instance);
                Err(CallError::BadResult {
                    plugin: self.meta.name.clone(),
                    call: "configure".into(),
                    message: format!("the plan is inconsistent: {message}"),
                })
            }
        }
    }

    /// Ends a session's instance: drops the method in the guest and returns
    /// the instance to the pool, or discards it if that fails.
    fn close_instance(&self, mut instance: SessionInstance) {
        if let Some(method) = instance.method.take() {
            let dropped = self.run_on(&mut instance.live, "drop", self.timeout(), |store, _| {
                method.resource_drop(store)
            });
            if dropped.is_err() {
                self.release_slot();
                return;
            }
        }
        self.return_instance(instance.live);
    }
}

/// What `configure` made: a 0.2.0 `method` resource, or a 0.1.0 plan.
enum Configured {
    Method(ResourceAny),
    Plan(wit::Plan),
}

/// The instance a [`MethodSession`] runs in.
struct SessionInstance {
    live: Live,
    /// `tuner:plugin@0.2.0`: the configured `method` resource in the guest.
    method: Option<ResourceAny>,
}

/// One job's method: configured once ([`MethodPlugin::start_method`]), then asked
/// for the loss of every batch, all in one instance of the plugin that the
/// session holds (leased from the plugin's pool) until it is dropped, when
/// the guest's `method` is dropped and the instance returned.
///
/// A call that traps, runs out of time or hits the memory cap discards the
/// instance, as any plugin call does; the next call builds a new one and
/// configures the method again with the same settings.
pub struct MethodSession {
    plugin: MethodPlugin,
    values: Values,
    job_json: String,
    plan: Plan,
    /// `None` after a failure, until the next call.
    instance: Option<SessionInstance>,
}

impl MethodSession {
    /// What the method asked the host to prepare.
    pub fn plan(&self) -> &Plan {
        &self.plan
    }

    /// The method plugin.
    pub fn plugin(&self) -> &MethodPlugin {
        &self.plugin
    }

    /// The checked settings the method was configured with.
    pub fn values(&self) -> &Values {
        &self.values
    }

    /// The loss for one batch, built by the plugin from host tensors (so it
    /// is on the autograd tape), with the metrics it reported during the
    /// call. The loss is a 0-d float tensor; anything else is a
    /// [`CallError::BadResult`] naming the plugin.
    pub fn loss(
        &mut self,
        batch: Arc<MethodBatch>,
        policy: Arc<dyn PolicyBackend>,
        step: u64,
    ) -> Result<MethodLoss, CallError> {
        let plugin = self.plugin.clone();
        if self.instance.is_none() {
            let (instance, plan) = plugin.configure_instance(&self.values, &self.job_json)?;
            if plan != self.plan {
                plugin.close_instance(instance);
                return Err(CallError::BadResult {
                    plugin: plugin.meta.name.clone(),
                    call: "configure".into(),
                    message: "configured again after a failure, it returned another plan \
                              for the same settings"
                        .into(),
                });
            }
            self.instance = Some(instance);
        }
        let instance = self.instance.as_mut().expect("configured above");
        plugin.count_call();
        let device = batch.ids.device().clone();
        let method = instance.method;
        let outcome =
            plugin.run_method(&mut instance.live, "loss", plugin.timeout(), |store, b| {
                let state = store.data_mut();
                state.method.device = device;
                state.method.metrics.clear();
                state.method.host_time = Duration::ZERO;
                let batch = state.table.push(BatchHandle::new(batch))?;
                let policy = state.table.push(PolicyHandle::new(policy))?;
                // Lent, not given: the plugin sees borrows, the table keeps them.
                let (batch_arg, policy_arg) = (
                    Resource::new_borrow(batch.rep()),
                    Resource::new_borrow(policy.rep()),
                );
                let result = match b {
                    MethodBindings::V0_2(b) => match method {
                        Some(method) => b.tuner_plugin_method_plugin().method().call_loss(
                            &mut *store,
                            method,
                            batch_arg,
                            policy_arg,
                            step,
                        ),
                        None => Err(wasmtime::format_err!(
                            "a 0.2.0 session holds its configured method"
                        )),
                    },
                    MethodBindings::V0_1(b) => b
                        .tuner_plugin_method_plugin()
                        .call_loss(&mut *store, batch_arg, policy_arg, step)
                        .map(|r| r.map_err(Convert::convert)),
                };
                let state = store.data_mut();
                state.table.delete(batch)?;
                state.table.delete(policy)?;
                let metrics = std::mem::take(&mut state.method.metrics);
                Ok(match result? {
                    Ok(loss) => Ok((state.take_tensor(loss)?, metrics)),
                    Err(e) => Err(e),
                })
            });
        let outcome = match outcome {
            Ok(outcome) => outcome,
            Err(err) => {
                // Never reuse an instance after a trap.
                self.instance = None;
                plugin.release_slot();
                return Err(err);
            }
        };
        let (loss, metrics) = outcome.map_err(|e| plugin.refused("loss", e))?;
        let bad = |message: String| CallError::BadResult {
            plugin: plugin.meta.name.clone(),
            call: "loss".into(),
            message,
        };
        if loss.elem_count() != 1 || !loss.dtype().is_float() {
            return Err(bad(format!(
                "the loss must be a single-element float tensor, got shape {:?} of {}",
                loss.dims(),
                loss.dtype().as_str()
            )));
        }
        let loss = loss
            .reshape(())
            .map_err(|e| bad(format!("cannot read the loss as a scalar: {e}")))?;
        Ok(MethodLoss { loss, metrics })
    }
}

impl Drop for MethodSession {
    fn drop(&mut self) {
        if let Some(instance) = self.instance.take() {
            self.plugin.close_instance(instance);
        }
    }
}

impl std::fmt::Debug for MethodSession {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MethodSession")
            .field("plugin", &self.plugin.meta.name)
            .field("plan", &self.plan)
            .field("values", &self.values)
            .finish_non_exhaustive()
    }
}

//! `tuner:plugin/model`: the batch and the policy as a method plugin sees
//! them, plus the Rust side of a method's plan.
//!
//! The host objects sit behind small seams so the plugin side can be tested
//! without the real network: a [`MethodBatch`] is the tokenised batch (ids,
//! positions and segments, and the loss mask, as candle tensors), a
//! [`PolicyBackend`] answers `token-logprobs` and `vocab-logprobs` (and,
//! later, `generate`) from the batch it is handed. The trainer wraps its
//! model in a `PolicyBackend` and hands both to [`MethodSession::loss`].
//!
//! [`MethodSession::loss`]: crate::plugins::plugin::MethodSession::loss

use std::sync::Arc;
use std::time::{Duration, Instant};

use candle_core::{DType, Device, Tensor};
use wasmtime::component::Resource;

use super::tensors::ops;
use crate::model::qwen3::ModelInput;
use crate::plugins::bindings::v0_2_0::method::exports::tuner::plugin::method_plugin as wit_method;
/// `policy.generate`'s sampling settings (a plain WIT record).
pub use crate::plugins::bindings::v0_2_0::method::tuner::plugin::model::Sampling;
use crate::plugins::bindings::v0_2_0::method::tuner::plugin::model::{self, BatchKind, Rollout};
use crate::plugins::bindings::v0_2_0::method::tuner::plugin::tensors::TensorError;
use crate::plugins::state::PluginState;
use crate::sample::{Message, SampleKind};

/// Most metrics one `loss` call may report; later ones are dropped.
pub const MAX_METRICS: usize = 256;
/// Longest metric name kept, in bytes.
pub const MAX_METRIC_NAME: usize = 128;

/// Method-plugin state kept in the store: where new tensors go, how many
/// the plugin holds, and the metrics reported during the current call.
pub struct MethodState {
    /// Device for `from-list` and `full` (the batch's device during `loss`).
    pub device: Device,
    /// Tensors in the resource table.
    pub live_tensors: usize,
    /// The most the plugin may hold (plugin limit `max_resources`).
    pub max_tensors: usize,
    /// `report-metric` calls of the current `loss` call, by name (last wins).
    pub metrics: Vec<(String, f64)>,
    /// Time spent in the model for the plugin (`token-logprobs`,
    /// `generate`) since the deadline was last extended. The call deadline
    /// limits the plugin's own work: when it passes, it is extended by this
    /// much (see [`Plugin`](crate::plugins::Plugin)'s epoch callback), so a
    /// slow forward pass of a large model does not stop the plugin.
    pub host_time: Duration,
}

impl MethodState {
    pub fn new(max_tensors: usize) -> Self {
        Self {
            device: Device::Cpu,
            live_tensors: 0,
            max_tensors,
            metrics: Vec::new(),
            host_time: Duration::ZERO,
        }
    }
}

/// A tokenised, padded training batch as method plugins see it.
///
/// It carries the batch's positions and segments (sequence packing) with
/// its ids, so a [`PolicyBackend`] builds the model input from the batch it
/// is handed ([`MethodBatch::model_input`]), whichever batch that is.
#[derive(Debug, Clone)]
pub struct MethodBatch {
    pub kind: SampleKind,
    /// `[rows, seq]`, u32.
    pub ids: Tensor,
    /// `[rows, seq - 1]`, f32: weight of predicting token `t + 1` at `t`.
    pub loss_mask: Tensor,
    /// Preference batches: the number of chosen/rejected pairs; unpaired
    /// batches: the number of samples (each has a mismatched KL row).
    pub pairs: usize,
    /// Unpaired batches: per sample, true when its answer is desirable.
    pub labels: Vec<bool>,
    /// Prompt batches: each row's reference answer.
    pub answers: Vec<Option<String>>,
    /// Prompt batches and rollouts: each row's prompt conversation (what
    /// reward functions see as the prompt).
    pub prompts: Vec<Option<Arc<Vec<Message>>>>,
    /// Rollout batches (from `policy.generate`): what was generated per row,
    /// for `policy.score`.
    pub rollout: Option<Arc<RolloutRows>>,
    /// `[rows, seq]` u32 rotary positions, restarting at 0 per packed
    /// sequence.
    positions: Tensor,
    /// `[rows, seq]` u32: 0 = padding, k > 0 = packed sequence k (see
    /// [`ModelInput::segments`]).
    segments: Tensor,
}

impl MethodBatch {
    /// A batch of `kind` with no pairs or answers and unpacked rows
    /// (positions `0..seq`, one segment per row, every token attended);
    /// checks that the shapes agree.
    pub fn new(kind: SampleKind, ids: Tensor, loss_mask: Tensor) -> anyhow::Result<Self> {
        let (rows, seq) = check_shapes(&ids, &loss_mask)?;
        let device = ids.device();
        let positions = Tensor::arange(0u32, seq as u32, device)?
            .unsqueeze(0)?
            .repeat((rows, 1))?;
        let segments = Tensor::ones((rows, seq), DType::U32, device)?;
        Ok(Self {
            kind,
            ids,
            loss_mask,
            pairs: 0,
            labels: Vec::new(),
            answers: Vec::new(),
            prompts: Vec::new(),
            rollout: None,
            positions,
            segments,
        })
    }

    /// A batch of `kind` with the ids, positions and segments of `input`
    /// (packed rows), no pairs or answers; checks that the shapes agree.
    pub fn packed(kind: SampleKind, input: ModelInput, loss_mask: Tensor) -> anyhow::Result<Self> {
        let (rows, seq) = check_shapes(&input.ids, &loss_mask)?;
        for (name, t) in [
            ("positions", &input.positions),
            ("segments", &input.segments),
        ] {
            anyhow::ensure!(
                t.dims() == [rows, seq],
                "batch {name} must be [{rows}, {seq}] like its ids, got {:?}",
                t.dims()
            );
        }
        Ok(Self {
            kind,
            ids: input.ids,
            loss_mask,
            pairs: 0,
            labels: Vec::new(),
            answers: Vec::new(),
            prompts: Vec::new(),
            rollout: None,
            positions: input.positions.to_dtype(DType::U32)?,
            segments: input.segments.to_dtype(DType::U32)?,
        })
    }

    /// Rows `start .. start + len` as a batch of their own: same kind and
    /// sequence length, `pairs` 0 and no labels (a slice no longer holds
    /// both halves of a pair), answers and prompts sliced, not a rollout.
    pub fn narrow_rows(&self, start: usize, len: usize) -> anyhow::Result<Self> {
        let rows = self.rows();
        anyhow::ensure!(
            len > 0 && start.checked_add(len).is_some_and(|end| end <= rows),
            "rows {start}..{} are not within a batch of {rows} rows",
            start.saturating_add(len)
        );
        fn slice<T: Clone>(v: &[T], start: usize, len: usize) -> Vec<T> {
            v.get(start..start + len)
                .map(<[T]>::to_vec)
                .unwrap_or_default()
        }
        Ok(Self {
            kind: self.kind,
            ids: self.ids.narrow(0, start, len)?,
            loss_mask: self.loss_mask.narrow(0, start, len)?,
            pairs: 0,
            labels: Vec::new(),
            answers: slice(&self.answers, start, len),
            prompts: slice(&self.prompts, start, len),
            rollout: None,
            positions: self.positions.narrow(0, start, len)?,
            segments: self.segments.narrow(0, start, len)?,
        })
    }

    /// `[rows, seq]` u32: each token's rotary position.
    pub fn positions(&self) -> &Tensor {
        &self.positions
    }

    /// `[rows, seq]` u32: each token's packed sequence (0 = padding).
    pub fn segments(&self) -> &Tensor {
        &self.segments
    }

    /// The model's input for this batch: its ids, positions and segments.
    /// Fails when `ids` was replaced by ids of another shape.
    pub fn model_input(&self) -> anyhow::Result<ModelInput> {
        anyhow::ensure!(
            self.positions.dims() == self.ids.dims(),
            "batch ids {:?} do not match its positions and segments {:?}",
            self.ids.dims(),
            self.positions.dims()
        );
        Ok(ModelInput {
            ids: self.ids.clone(),
            positions: self.positions.clone(),
            segments: self.segments.clone(),
        })
    }

    pub fn rows(&self) -> usize {
        self.ids.dims().first().copied().unwrap_or(0)
    }

    pub fn seq_len(&self) -> usize {
        self.ids.dims().get(1).copied().unwrap_or(0)
    }

    /// The trained positions (non-zero loss weight), in row-major order of
    /// (row, position): their indices into the flattened `[rows * (seq -
    /// 1)]` positions (u32), their target tokens (u32) and their weights
    /// (f32), each `[n]`, on the batch's device.
    pub fn trained_positions(&self) -> candle_core::Result<TrainedPositions> {
        let device = self.ids.device();
        let weights: Vec<f32> = self
            .loss_mask
            .to_dtype(candle_core::DType::F32)?
            .flatten_all()?
            .to_vec1()?;
        let index: Vec<u32> = (0..weights.len() as u32)
            .filter(|&i| weights[i as usize] != 0.0)
            .collect();
        let n = index.len();
        let index = Tensor::from_vec(index, n, device)?;
        let seq = self.seq_len();
        let targets = self
            .ids
            .narrow(1, 1, seq.saturating_sub(1))?
            .to_dtype(candle_core::DType::U32)?
            .flatten_all()?
            .index_select(&index, 0)?;
        let weights = Tensor::from_vec(weights, self.loss_mask.elem_count(), device)?
            .index_select(&index, 0)?;
        Ok(TrainedPositions {
            index,
            targets,
            weights,
        })
    }
}

/// `ids` is `[rows, seq]` with `seq >= 2` and `loss_mask` `[rows, seq - 1]`.
fn check_shapes(ids: &Tensor, loss_mask: &Tensor) -> anyhow::Result<(usize, usize)> {
    let (rows, seq) = ids
        .dims2()
        .map_err(|_| anyhow::anyhow!("batch ids must be [rows, seq], got {:?}", ids.dims()))?;
    anyhow::ensure!(seq >= 2, "batch ids need at least 2 positions, got {seq}");
    anyhow::ensure!(
        loss_mask.dims() == [rows, seq - 1],
        "batch loss mask must be [{rows}, {}], got {:?}",
        seq - 1,
        loss_mask.dims()
    );
    Ok((rows, seq))
}

/// Where a batch trains: see [`MethodBatch::trained_positions`].
#[derive(Debug, Clone)]
pub struct TrainedPositions {
    /// `[n]` u32: indices into the flattened `[rows * (seq - 1)]` positions.
    pub index: Tensor,
    /// `[n]` u32: the token to predict at each.
    pub targets: Tensor,
    /// `[n]` f32: its loss weight.
    pub weights: Tensor,
}

/// The model's next-token distribution at a batch's trained positions.
#[derive(Debug, Clone)]
pub struct Distribution {
    /// `[n, vocab]` f32 log-softmax.
    pub logprobs: Tensor,
    /// `[n]` u32 target tokens.
    pub targets: Tensor,
    /// `[n]` f32 loss weights.
    pub weights: Tensor,
}

/// The operation is not available in this build. A [`PolicyBackend`]
/// returns it (inside `anyhow::Error`) for what it cannot do yet; plugins
/// see `tensor-error::not-implemented`.
#[derive(Debug, thiserror::Error)]
#[error("{0} is not implemented yet in this tuner build")]
pub struct NotImplemented(pub &'static str);

/// The model under training, as the `policy` resource exposes it.
pub trait PolicyBackend: Send + Sync {
    /// `log p(ids[t + 1] | ids[..=t])`, `[rows, seq - 1]` f32, with the
    /// trained adapters applied or not. The model reads `batch`'s own
    /// positions and segments ([`MethodBatch::model_input`]). Part of the autograd graph when
    /// `use_adapters` (the host detaches the other case).
    fn token_logprobs(&self, batch: &MethodBatch, use_adapters: bool) -> anyhow::Result<Tensor>;

    /// The whole log-softmax over the vocabulary at the trained positions
    /// (non-zero loss weight, [`MethodBatch::trained_positions`]), with their
    /// targets and weights. Differentiable like `token_logprobs`.
    fn vocab_logprobs(
        &self,
        _batch: &MethodBatch,
        _use_adapters: bool,
    ) -> anyhow::Result<Distribution> {
        Err(NotImplemented("policy.vocab-logprobs").into())
    }

    /// Samples `samples_per_prompt` completions for each prompt row of
    /// `batch` with the current weights (adapters on).
    fn generate(
        &self,
        _batch: &MethodBatch,
        _sampling: &Sampling,
    ) -> anyhow::Result<GeneratedRollout> {
        Err(NotImplemented("policy.generate").into())
    }

    /// Scores the completions of a rollout batch with the job's reward
    /// functions. The error names the reward plugin that failed.
    fn score(&self, _rollout: &MethodBatch) -> anyhow::Result<Vec<RewardScores>> {
        anyhow::bail!(NO_REWARD_FUNCTIONS)
    }
}

/// One completion of `policy.generate`.
#[derive(Debug, Clone, PartialEq)]
pub struct GeneratedCompletion {
    /// The prompt row it continues.
    pub prompt_row: u32,
    /// Decoded text of the new tokens (end token left out).
    pub text: String,
    /// New tokens, the end token included when one ended it.
    pub tokens: u32,
    /// Ended at an end-of-turn token rather than the length limit.
    pub finished: bool,
}

/// Why `policy.score` fails for a job without reward functions.
pub const NO_REWARD_FUNCTIONS: &str =
    "this job has no reward functions: set reward_funcs in the training config";

/// What a rollout batch's rows hold besides tokens: the completion of each
/// row (in row order) and the generation's token limit.
#[derive(Debug, Clone, PartialEq)]
pub struct RolloutRows {
    pub completions: Vec<GeneratedCompletion>,
    pub max_new_tokens: u32,
}

/// The scores of one reward function over a rollout (the host side of the
/// WIT `reward-scores`).
#[derive(Debug, Clone, PartialEq)]
pub struct RewardScores {
    pub name: String,
    pub weight: f64,
    pub scores: Vec<f64>,
}

/// What `policy.generate` hands back: the completions, and a batch of
/// prompt + completion rows (in the same order) whose loss mask covers the
/// completion tokens.
pub struct GeneratedRollout {
    pub completions: Vec<GeneratedCompletion>,
    pub batch: MethodBatch,
}

/// What a method plugin's `loss` produced.
#[derive(Debug, Clone)]
pub struct MethodLoss {
    /// 0-d float tensor on the autograd tape: call `backward` on it.
    pub loss: Tensor,
    /// `report-metric` values of this call, in first-reported order.
    pub metrics: Vec<(String, f64)>,
}

/// A batch handed to the plugin.
pub struct BatchHandle {
    batch: Arc<MethodBatch>,
}

impl BatchHandle {
    pub fn new(batch: Arc<MethodBatch>) -> Self {
        Self { batch }
    }

    /// The batch it holds.
    pub fn batch(&self) -> &Arc<MethodBatch> {
        &self.batch
    }
}

/// The policy handed to the plugin.
pub struct PolicyHandle {
    policy: Arc<dyn PolicyBackend>,
}

impl PolicyHandle {
    pub fn new(policy: Arc<dyn PolicyBackend>) -> Self {
        Self { policy }
    }
}

type TensorResult = wasmtime::Result<Result<Resource<super::tensors::TensorHandle>, TensorError>>;

impl PluginState {
    fn batch(&self, handle: &Resource<BatchHandle>) -> wasmtime::Result<Arc<MethodBatch>> {
        Ok(self.table.get(handle)?.batch.clone())
    }

    /// Admits a host tensor and stores it for the plugin.
    fn push_host_tensor(
        &mut self,
        tensor: Tensor,
    ) -> Result<Resource<super::tensors::TensorHandle>, TensorError> {
        ops::admit(tensor).and_then(|t| self.push_tensor(t))
    }
}

impl model::HostBatch for PluginState {
    fn kind(&mut self, handle: Resource<BatchHandle>) -> wasmtime::Result<BatchKind> {
        Ok(match self.batch(&handle)?.kind {
            SampleKind::Chat => BatchKind::Chat,
            SampleKind::Preference => BatchKind::Preference,
            SampleKind::Prompt => BatchKind::Prompt,
            SampleKind::Text => BatchKind::Text,
            SampleKind::Unpaired => BatchKind::Unpaired,
        })
    }

    fn rows(&mut self, handle: Resource<BatchHandle>) -> wasmtime::Result<u32> {
        Ok(self.batch(&handle)?.rows() as u32)
    }

    fn seq_len(&mut self, handle: Resource<BatchHandle>) -> wasmtime::Result<u32> {
        Ok(self.batch(&handle)?.seq_len() as u32)
    }

    fn pairs(&mut self, handle: Resource<BatchHandle>) -> wasmtime::Result<u32> {
        Ok(self.batch(&handle)?.pairs as u32)
    }

    fn input_ids(&mut self, handle: Resource<BatchHandle>) -> TensorResult {
        let ids = self.batch(&handle)?.ids.clone();
        Ok(self.push_host_tensor(ids))
    }

    fn loss_mask(&mut self, handle: Resource<BatchHandle>) -> TensorResult {
        let mask = self.batch(&handle)?.loss_mask.clone();
        Ok(self.push_host_tensor(mask))
    }

    fn answers(&mut self, handle: Resource<BatchHandle>) -> wasmtime::Result<Vec<Option<String>>> {
        Ok(self.batch(&handle)?.answers.clone())
    }

    fn labels(&mut self, handle: Resource<BatchHandle>) -> wasmtime::Result<Vec<bool>> {
        Ok(self.batch(&handle)?.labels.clone())
    }

    fn narrow_rows(
        &mut self,
        handle: Resource<BatchHandle>,
        start: u32,
        len: u32,
    ) -> wasmtime::Result<Result<Resource<BatchHandle>, TensorError>> {
        let batch = self.batch(&handle)?;
        match batch.narrow_rows(start as usize, len as usize) {
            Ok(rows) => Ok(Ok(self.table.push(BatchHandle::new(Arc::new(rows)))?)),
            Err(e) => Ok(Err(TensorError::Invalid(format!(
                "batch.narrow-rows: {e:#}"
            )))),
        }
    }

    fn drop(&mut self, handle: Resource<BatchHandle>) -> wasmtime::Result<()> {
        self.table.delete(handle)?;
        Ok(())
    }
}

/// Maps a backend failure to what the plugin sees.
fn backend_error(op: &str, e: anyhow::Error) -> TensorError {
    if let Some(ni) = e.downcast_ref::<NotImplemented>() {
        return TensorError::NotImplemented(ni.to_string());
    }
    TensorError::Device(format!("{op}: {e:#}"))
}

impl model::HostPolicy for PluginState {
    fn token_logprobs(
        &mut self,
        handle: Resource<PolicyHandle>,
        batch: Resource<BatchHandle>,
        use_adapters: bool,
    ) -> TensorResult {
        let policy = self.table.get(&handle)?.policy.clone();
        let batch = self.batch(&batch)?;
        let started = Instant::now();
        let answer = policy.token_logprobs(&batch, use_adapters);
        self.method.host_time += started.elapsed();
        let logprobs = match answer {
            Ok(t) => t,
            Err(e) => return Ok(Err(backend_error("policy.token-logprobs", e))),
        };
        let want = [batch.rows(), batch.seq_len().saturating_sub(1)];
        if logprobs.dims() != want {
            // A host defect, reported rather than handed on.
            return Ok(Err(TensorError::Shape(format!(
                "policy.token-logprobs: the model returned shape {:?}, expected {want:?}",
                logprobs.dims()
            ))));
        }
        // The WIT promises the reference answer carries no gradient.
        let logprobs = if use_adapters {
            logprobs
        } else {
            logprobs.detach()
        };
        Ok(self.push_host_tensor(logprobs))
    }

    fn vocab_logprobs(
        &mut self,
        handle: Resource<PolicyHandle>,
        batch: Resource<BatchHandle>,
        use_adapters: bool,
    ) -> wasmtime::Result<Result<model::Distribution, TensorError>> {
        let policy = self.table.get(&handle)?.policy.clone();
        let batch = self.batch(&batch)?;
        let started = Instant::now();
        let answer = policy.vocab_logprobs(&batch, use_adapters);
        self.method.host_time += started.elapsed();
        let d = match answer {
            Ok(d) => d,
            Err(e) => return Ok(Err(backend_error("policy.vocab-logprobs", e))),
        };
        let n = d.targets.dims().first().copied().unwrap_or(0);
        let shapes_agree = d.targets.rank() == 1
            && d.weights.dims() == [n]
            && d.logprobs.rank() == 2
            && d.logprobs.dims()[0] == n;
        if !shapes_agree {
            // A host defect, reported rather than handed on.
            return Ok(Err(TensorError::Shape(format!(
                "policy.vocab-logprobs: the model returned logprobs {:?}, targets {:?}, \
                 weights {:?}; expected [n, vocab], [n], [n]",
                d.logprobs.dims(),
                d.targets.dims(),
                d.weights.dims()
            ))));
        }
        // The WIT promises the reference answer carries no gradient.
        let logprobs = if use_adapters {
            d.logprobs
        } else {
            d.logprobs.detach()
        };
        let logprobs = match self.push_host_tensor(logprobs) {
            Ok(t) => t,
            Err(e) => return Ok(Err(e)),
        };
        let targets = match self.push_host_tensor(d.targets) {
            Ok(t) => t,
            Err(e) => {
                self.take_tensor(logprobs)?;
                return Ok(Err(e));
            }
        };
        let weights = match self.push_host_tensor(d.weights.detach()) {
            Ok(t) => t,
            Err(e) => {
                self.take_tensor(logprobs)?;
                self.take_tensor(targets)?;
                return Ok(Err(e));
            }
        };
        Ok(Ok(model::Distribution {
            logprobs,
            targets,
            weights,
        }))
    }

    fn generate(
        &mut self,
        handle: Resource<PolicyHandle>,
        batch: Resource<BatchHandle>,
        sampling: Sampling,
    ) -> wasmtime::Result<Result<Rollout, TensorError>> {
        let policy = self.table.get(&handle)?.policy.clone();
        let batch = self.batch(&batch)?;
        let started = Instant::now();
        let answer = policy.generate(&batch, &sampling);
        self.method.host_time += started.elapsed();
        let rollout = match answer {
            Ok(r) => r,
            Err(e) => return Ok(Err(backend_error("policy.generate", e))),
        };
        let batch = self.table.push(BatchHandle::new(Arc::new(rollout.batch)))?;
        let completions = rollout
            .completions
            .into_iter()
            .map(|c| model::Completion {
                prompt_row: c.prompt_row,
                text: c.text,
                tokens: c.tokens,
                finished: c.finished,
            })
            .collect();
        Ok(Ok(Rollout { completions, batch }))
    }

    fn score(
        &mut self,
        handle: Resource<PolicyHandle>,
        rollout: Resource<BatchHandle>,
    ) -> wasmtime::Result<Result<Vec<model::RewardScores>, String>> {
        let policy = self.table.get(&handle)?.policy.clone();
        let batch = self.batch(&rollout)?;
        // Reward plugins run under their own deadlines; the time is the
        // host's, not the method's.
        let started = Instant::now();
        let answer = policy.score(&batch);
        self.method.host_time += started.elapsed();
        Ok(answer
            .map(|all| {
                all.into_iter()
                    .map(|r| model::RewardScores {
                        name: r.name,
                        weight: r.weight,
                        scores: r.scores,
                    })
                    .collect()
            })
            .map_err(|e| format!("{e:#}")))
    }

    fn drop(&mut self, handle: Resource<PolicyHandle>) -> wasmtime::Result<()> {
        self.table.delete(handle)?;
        Ok(())
    }
}

impl model::Host for PluginState {
    fn report_metric(&mut self, name: String, value: f64) -> wasmtime::Result<()> {
        tracing::debug!(target: "tuner::plugin", plugin = &*self.plugin, metric = %name, value);
        let mut name = name;
        if name.len() > MAX_METRIC_NAME {
            let mut cut = MAX_METRIC_NAME;
            while !name.is_char_boundary(cut) {
                cut -= 1;
            }
            name.truncate(cut);
        }
        let metrics = &mut self.method.metrics;
        if let Some(slot) = metrics.iter_mut().find(|(n, _)| *n == name) {
            slot.1 = value;
        } else if metrics.len() < MAX_METRICS {
            metrics.push((name, value));
        }
        Ok(())
    }
}

/// Which weights train (the Rust side of the WIT `trainable`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Trainable {
    Full,
    Adapters,
}

/// How the frozen base is stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Quantization {
    None,
    Nf4,
    Int8,
}

/// LoRA adapter shape asked for by the plan.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct AdapterPlan {
    pub rank: usize,
    pub alpha: f64,
    pub dropout: f32,
    /// Module names (`q_proj`, ...) or `all-linear`.
    pub target_modules: Vec<String>,
    /// Scale `alpha / sqrt(rank)` instead of `alpha / rank`.
    pub rslora: bool,
}

/// What a method plugin asks the host to prepare, checked.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Plan {
    pub trains: Trainable,
    /// Present exactly when `trains` is `Adapters`.
    pub adapter: Option<AdapterPlan>,
    pub base_quantization: Quantization,
    pub needs_reference: bool,
    pub needs_generation: bool,
    /// Sample kinds the method trains on.
    pub accepts: Vec<SampleKind>,
}

impl Plan {
    /// Checks a plan as the plugin returned it. The error says what is
    /// inconsistent, for a "plugin returned an unusable plan" message.
    pub fn from_wit(plan: wit_method::Plan) -> Result<Plan, String> {
        let trains = match plan.trains {
            wit_method::Trainable::Full => Trainable::Full,
            wit_method::Trainable::Adapters => Trainable::Adapters,
        };
        let base_quantization = match plan.base_quantization {
            wit_method::Quantization::None => Quantization::None,
            wit_method::Quantization::Nf4 => Quantization::Nf4,
            wit_method::Quantization::Int8 => Quantization::Int8,
        };
        let adapter = match (trains, plan.adapter) {
            (Trainable::Adapters, None) => {
                return Err("it trains adapters but gives no adapter spec".into());
            }
            (Trainable::Full, Some(_)) => {
                return Err("it trains all weights but also gives an adapter spec".into());
            }
            (Trainable::Full, None) => None,
            (Trainable::Adapters, Some(a)) => {
                if a.rank == 0 {
                    return Err("adapter rank is 0".into());
                }
                if !(a.alpha.is_finite() && a.alpha > 0.0) {
                    return Err(format!(
                        "adapter alpha {} is not a positive number",
                        a.alpha
                    ));
                }
                if !(0.0..1.0).contains(&a.dropout) {
                    return Err(format!("adapter dropout {} is outside [0, 1)", a.dropout));
                }
                if a.target_modules.is_empty()
                    || a.target_modules.iter().any(|m| m.trim().is_empty())
                {
                    return Err("adapter target modules are empty".into());
                }
                Some(AdapterPlan {
                    rank: a.rank as usize,
                    alpha: a.alpha as f64,
                    dropout: a.dropout,
                    target_modules: a.target_modules,
                    rslora: a.rslora,
                })
            }
        };
        if trains == Trainable::Full && base_quantization != Quantization::None {
            return Err(
                "it trains all weights of a quantised base, which cannot be trained".into(),
            );
        }
        if plan.accepts.is_empty() {
            return Err("it accepts no kind of sample".into());
        }
        let accepts = plan
            .accepts
            .into_iter()
            .map(|k| match k {
                BatchKind::Chat => SampleKind::Chat,
                BatchKind::Preference => SampleKind::Preference,
                BatchKind::Prompt => SampleKind::Prompt,
                BatchKind::Text => SampleKind::Text,
                BatchKind::Unpaired => SampleKind::Unpaired,
            })
            .collect();
        Ok(Plan {
            trains,
            adapter,
            base_quantization,
            needs_reference: plan.needs_reference,
            needs_generation: plan.needs_generation,
            accepts,
        })
    }
}

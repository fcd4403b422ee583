//! The training loop: one job from config to outputs.
//!
//! 1. The method plugin `configure`s a plan from the job's config.
//! 2. The model folder is found (a local folder, the cache, else pulled), the
//!    data specs resolved, rendered with the model's chat template and
//!    tokenised; batches come from [`Batcher`].
//! 3. The model loads as the plan asks (frozen or trainable base, NF4/int8,
//!    LoRA attached); a checkpoint is loaded when resuming.
//! 4. Per optimiser step, for each micro-batch the plugin's `loss` builds the
//!    objective from host tensors; the host runs backward, accumulates,
//!    clips, steps AdamW with the scheduled rate, and reports an event.
//! 5. Checkpoints every `save_steps`; at the end a PEFT adapter folder (or a
//!    full HF model folder for full fine-tuning) in the output folder.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use anyhow::{Context, Result, bail};
use candle_core::{DType, Device, Tensor};

use super::TrainerServices;
use super::batch::{BatchConfig, BatchSample, Batcher, TrainBatch};
use super::blocks::cut_text_into_blocks;
use super::checkpoint::{self, TrainerState};
use super::config::{DeviceChoice, DtypeChoice, LrScheduler, TrainConfig};
use super::jobs::{JobContext, JobOutcome, TrainEvent, Trainer};
use super::optim::{AdamW, AdamWConfig, GradAccumulator, clip_grad_norm};
use super::reference::ReferenceLogProbs;
use super::rewards::RewardSet;
use super::rollout::PolicyGeneration;
use super::schedule::{self, Schedule};
use crate::model::linear::Mode;
use crate::model::lora::{self, LoraSpec};
use crate::model::qwen3::{self, ModelInput, Qwen3};
use crate::plugins::MethodSession;
use crate::plugins::imports::model::{
    Distribution, GeneratedRollout, MethodBatch, MethodLoss, NO_REWARD_FUNCTIONS, Plan,
    PolicyBackend, Quantization, RewardScores, Sampling, Trainable,
};
use crate::sample::Sample;
use crate::text::{ModelFiles, TrainingRender};

/// The real trainer: candle on the CPU (or CUDA in CUDA builds).
pub struct Engine {
    /// Plugins, model folders and data, as the process resolves them.
    services: Arc<dyn TrainerServices>,
}

impl Engine {
    pub fn new(services: Arc<dyn TrainerServices>) -> Self {
        Self { services }
    }
}

impl Trainer for Engine {
    fn run(&self, job: &JobContext) -> Result<JobOutcome> {
        match Run::prepare(self, job)? {
            Some(run) => run.train(job),
            // A stop request during preparation (the precompute pass).
            None => Ok(JobOutcome::Stopped),
        }
    }
}

/// The model as the `policy` resource shows it to a method plugin. The
/// model input (ids, positions, segments) comes from the batch each call is
/// handed, never from the trainer's state.
struct ModelPolicy {
    model: Arc<Qwen3>,
    /// The frozen reference for `use_adapters = false` when every weight
    /// trains (a plan with `needs_reference` and `trains = full`): a second,
    /// frozen copy of the base as loaded. `None` when the base with adapters
    /// off is the reference (LoRA), or the method needs none, or the
    /// reference log-probs were precomputed under full fine-tuning.
    reference: Option<Arc<Qwen3>>,
    /// The reference log-probs of the data, computed before training
    /// (`precompute_ref_log_probs`).
    precomputed: Option<Arc<Precomputed>>,
    /// Tokenizer and end tokens for `policy.generate` (None in tests that
    /// only score).
    generation: Option<Arc<PolicyGeneration>>,
    /// The job's reward functions, for `policy.score`.
    rewards: Option<Arc<RewardSet>>,
    /// Time spent in `generate` and `score` since the last step report.
    timing: StepTiming,
}

/// Host time of the parts of a step that are not forward/backward, so the
/// step events can say where an RL step goes (`time/generation_s`,
/// `time/rewards_s`).
#[derive(Default)]
struct StepTiming {
    generation_nanos: std::sync::atomic::AtomicU64,
    rewards_nanos: std::sync::atomic::AtomicU64,
}

impl StepTiming {
    fn add(counter: &std::sync::atomic::AtomicU64, since: Instant) {
        let nanos = since.elapsed().as_nanos().min(u64::MAX as u128) as u64;
        counter.fetch_add(nanos, std::sync::atomic::Ordering::Relaxed);
    }

    /// The step's timings as metrics (only those that were spent), reset.
    fn take_metrics(&self) -> Vec<(&'static str, f64)> {
        let take = |c: &std::sync::atomic::AtomicU64| {
            c.swap(0, std::sync::atomic::Ordering::Relaxed) as f64 / 1e9
        };
        let mut out = Vec::new();
        for (name, counter) in [
            ("time/generation_s", &self.generation_nanos),
            ("time/rewards_s", &self.rewards_nanos),
        ] {
            let secs = take(counter);
            if secs > 0.0 {
                out.push((name, secs));
            }
        }
        out
    }
}

/// How the reference runs: no dropout, adapters off (the base, under LoRA).
const REFERENCE_MODE: Mode = Mode {
    training: false,
    adapters: false,
};

/// The reference's `[rows, seq - 1]` token log-probs of `input`, without
/// gradients: what `token_logprobs(batch, false)` answers, and what the
/// precompute pass stores.
fn reference_token_logprobs(reference: &Qwen3, input: &ModelInput) -> Result<Tensor> {
    Ok(reference.token_logprobs(input, REFERENCE_MODE)?.detach())
}

impl PolicyBackend for ModelPolicy {
    fn token_logprobs(&self, batch: &MethodBatch, use_adapters: bool) -> Result<Tensor> {
        let input = batch.model_input()?;
        if use_adapters {
            return Ok(self.model.token_logprobs(&input, Mode::TRAIN)?);
        }
        if let Some(precomputed) = &self.precomputed
            && let Some(lp) = precomputed.rows.lookup(&input)?
        {
            return Ok(lp);
        }
        let Some(reference) = self.reference_model() else {
            bail!(
                "precompute_ref_log_probs: a row of this batch was not in the precomputed \
                 reference log-probs (only the training and validation rows are), and under full \
                 fine-tuning no reference model is kept to compute it"
            );
        };
        reference_token_logprobs(reference, &input)
    }

    /// Never from the precomputed reference log-probs, which hold only the
    /// log-probs of each row's own next tokens, not whole distributions:
    /// without adapters this runs the reference, and fails when full
    /// fine-tuning with `precompute_ref_log_probs` kept no reference model.
    fn vocab_logprobs(&self, batch: &MethodBatch, use_adapters: bool) -> Result<Distribution> {
        let input = batch.model_input()?;
        let mode = Mode {
            training: use_adapters,
            adapters: use_adapters,
        };
        let trained = batch.trained_positions()?;
        let answering = match (use_adapters, self.reference_model()) {
            (true, _) => &self.model,
            (false, Some(reference)) => reference,
            (false, None) => bail!(
                "precompute_ref_log_probs: the reference's whole distributions \
                 (vocab-logprobs without adapters) are not precomputed, and under full \
                 fine-tuning no reference model is kept to compute them"
            ),
        };
        let lp = answering.vocab_logprobs(&input, &trained.index, mode)?;
        Ok(Distribution {
            logprobs: if use_adapters { lp } else { lp.detach() },
            targets: trained.targets,
            weights: trained.weights,
        })
    }

    fn generate(&self, batch: &MethodBatch, sampling: &Sampling) -> Result<GeneratedRollout> {
        let generation = self
            .generation
            .as_ref()
            .context("this policy was set up without a tokenizer for generation")?;
        let started = Instant::now();
        let rollout = generation.generate(&self.model, batch, sampling);
        StepTiming::add(&self.timing.generation_nanos, started);
        rollout
    }

    fn score(&self, rollout: &MethodBatch) -> Result<Vec<RewardScores>> {
        match &self.rewards {
            Some(rewards) => {
                let started = Instant::now();
                let scores = rewards.score(rollout);
                StepTiming::add(&self.timing.rewards_nanos, started);
                scores
            }
            None => bail!(NO_REWARD_FUNCTIONS),
        }
    }
}

impl ModelPolicy {
    /// The model that answers `use_adapters = false`: the frozen reference
    /// copy when there is one, else the trained model with adapters off
    /// (under LoRA the base is the reference). None under full fine-tuning
    /// with precomputed reference log-probs: the trained weights have moved
    /// and the copy was never kept.
    fn reference_model(&self) -> Option<&Qwen3> {
        match (&self.reference, &self.precomputed) {
            (Some(reference), _) => Some(reference),
            (None, Some(p)) if !p.model_is_reference => None,
            (None, _) => Some(&self.model),
        }
    }
}

/// Reference log-probs computed before training (`precompute_ref_log_probs`).
struct Precomputed {
    rows: ReferenceLogProbs,
    /// Whether the trained model with adapters off is still the reference,
    /// so a row missing from `rows` can be computed (LoRA); false under full
    /// fine-tuning, whose weights move.
    model_is_reference: bool,
}

/// Refuses `precompute_ref_log_probs` for a method it cannot serve.
fn check_precompute(config: &TrainConfig, plan: &Plan, plugin_name: &str) -> Result<()> {
    if !config.precompute_ref_log_probs {
        return Ok(());
    }
    // A generating method scores new completions every step: there is no
    // fixed data whose reference log-probs could be computed in advance.
    if plan.needs_generation {
        bail!(
            "precompute_ref_log_probs is set, but method `{plugin_name}` generates new completions \
             every step, so there is nothing to compute before training; remove \
             precompute_ref_log_probs"
        );
    }
    if !plan.needs_reference {
        bail!(
            "precompute_ref_log_probs is set, but method `{plugin_name}` (as configured) uses no \
             reference model, so there are no reference log-probs to precompute; remove \
             precompute_ref_log_probs"
        );
    }
    Ok(())
}

/// The precompute pass: the reference log-probs of every row of the
/// training and validation data, from `model` as loaded. It must run before
/// a checkpoint is restored into `model`, so that on resume too it is the
/// reference (the base as loaded) that answers. Under full fine-tuning no
/// frozen copy is loaded at all then: that is the memory saving.
fn precompute_reference(
    job: &JobContext,
    model: &Qwen3,
    trains: Trainable,
    batchers: [Option<&mut Batcher>; 2],
    device: &Device,
) -> Result<Option<Precomputed>> {
    let started = Instant::now();
    let mut rows = ReferenceLogProbs::default();
    let should_stop = || job.should_stop();
    for batcher in batchers.into_iter().flatten() {
        let finished = rows.add_epoch(batcher, device, &should_stop, |input| {
            reference_token_logprobs(model, input)
        })?;
        if !finished {
            job.log("stopped while precomputing the reference log-probs");
            return Ok(None);
        }
    }
    let model_is_reference = trains == Trainable::Adapters;
    let saving = if model_is_reference {
        "training steps run no reference forward pass"
    } else {
        "no frozen reference copy of the model is loaded (one model less in memory), \
         and training steps run no reference forward pass"
    };
    job.log(format!(
        "precomputed reference log-probs for {} rows in {:.1} s; {saving}",
        rows.len(),
        started.elapsed().as_secs_f64()
    ));
    Ok(Some(Precomputed {
        rows,
        model_is_reference,
    }))
}

/// Runs the method plugin's `loss` on `batch` (its ids, positions and
/// segments travel with the batch), then returns the loss and its value.
fn method_loss(
    session: &mut MethodSession,
    policy: &Arc<ModelPolicy>,
    batch: &TrainBatch,
    step: u64,
) -> Result<(MethodLoss, f64)> {
    let mut mb = MethodBatch::packed(batch.kind, batch.input.clone(), batch.loss_mask.clone())?;
    mb.pairs = batch.pairs;
    mb.labels = batch.labels.clone();
    mb.answers = batch.answers.clone();
    mb.prompts = batch.prompts.clone();
    let out = session
        .loss(Arc::new(mb), policy.clone(), step)
        .map_err(|e| anyhow::anyhow!("method plugin `{}`: {e}", session.plugin().name()))?;
    let value = out
        .loss
        .to_dtype(DType::F32)?
        .flatten_all()?
        .to_vec1::<f32>()?[0] as f64;
    Ok((out, value))
}

/// Where the rollout positions of evaluation batches start
/// ([`PolicyGeneration::set_position`]); training uses those below.
const EVAL_POSITIONS: u64 = 1 << 62;

/// Everything a job needs, loaded.
struct Run {
    /// Tokenizer and end tokens for `policy.generate`.
    generation: Arc<PolicyGeneration>,
    /// The job's reward functions (`reward_funcs`), for `policy.score`.
    rewards: Option<Arc<RewardSet>>,
    config: TrainConfig,
    plan: Plan,
    plugin: String,
    /// The configured method, for every `loss` of the job.
    session: MethodSession,
    device: Device,
    model: Arc<Qwen3>,
    /// See [`ModelPolicy::reference`].
    reference: Option<Arc<Qwen3>>,
    /// See [`ModelPolicy::precomputed`].
    precomputed: Option<Arc<Precomputed>>,
    model_dir: PathBuf,
    lora: Option<LoraSpec>,
    batcher: Batcher,
    /// Held-out batches (`val_size`), scored at each checkpoint and at the end.
    validation: Option<Batcher>,
    optimizer: AdamW,
    state: TrainerState,
    warmup: usize,
    output_dir: PathBuf,
}

fn device_for(choice: &DeviceChoice) -> Result<Device> {
    match choice {
        DeviceChoice::Cpu => Ok(Device::Cpu),
        DeviceChoice::Auto => Ok(Device::cuda_if_available(0).unwrap_or(Device::Cpu)),
        DeviceChoice::Cuda(n) => Device::new_cuda(*n).with_context(|| {
            format!("device cuda:{n} is not available (this build of tuner may lack CUDA support)")
        }),
    }
}

fn dtype_for(choice: DtypeChoice, device: &Device) -> DType {
    match choice {
        DtypeChoice::F32 => DType::F32,
        DtypeChoice::Bf16 => DType::BF16,
        DtypeChoice::Auto if device.is_cuda() => DType::BF16,
        DtypeChoice::Auto => DType::F32,
    }
}

/// Renders and tokenises samples for the method's plan; refuses sample kinds
/// the method does not train on.
fn prepare_samples(
    samples: Vec<Sample>,
    files: &ModelFiles,
    render: &TrainingRender,
    plan: &Plan,
    plugin_name: &str,
) -> Result<Vec<BatchSample>> {
    let options = render.options();
    let mut out = Vec::with_capacity(samples.len());
    let mut refused: std::collections::BTreeMap<&'static str, usize> = Default::default();
    for (i, sample) in samples.into_iter().enumerate() {
        let sample = render.prepare(sample);
        let kind = sample.kind();
        if !plan.accepts.contains(&kind) {
            *refused.entry(kind.as_str()).or_default() += 1;
            continue;
        }
        let (answer, prompt) = match &sample {
            Sample::Prompt { answer, prompt } => (answer.clone(), Some(Arc::new(prompt.clone()))),
            _ => (None, None),
        };
        let label = match &sample {
            Sample::Unpaired { label, .. } => Some(*label),
            _ => None,
        };
        let tokens = files
            .tokenize(&sample, &options)
            .with_context(|| format!("rendering sample {} with the chat template", i + 1))?;
        out.push(BatchSample {
            tokens,
            kind,
            answer,
            prompt,
            label,
        });
    }
    if !refused.is_empty() {
        let counts: Vec<String> = refused.iter().map(|(k, n)| format!("{n} {k}")).collect();
        bail!(
            "method `{plugin_name}` does not train on {} samples; use a dataset of {:?} samples \
             or another training_method",
            counts.join(", "),
            plan.accepts
        );
    }
    Ok(out)
}

fn schedule_of(s: &LrScheduler) -> Schedule {
    match s {
        LrScheduler::Cosine => Schedule::Cosine,
        LrScheduler::Linear => Schedule::Linear,
        LrScheduler::Constant => Schedule::Constant,
    }
}

impl Run {
    /// Everything a run needs before its first step; `None` when the job
    /// was asked to stop meanwhile.
    fn prepare(engine: &Engine, job: &JobContext) -> Result<Option<Run>> {
        let config = job.config().clone();
        let plugin_name = config.method_plugin().to_string();
        let plugin = engine
            .services
            .plugins()?
            .method(&plugin_name)
            .with_context(|| {
                format!(
                    "training_method `{}`: no method plugin named `{plugin_name}` is installed",
                    config.training_method
                )
            })?;
        // CONFIG: the checked method settings; the config refactor may hand
        // them over ready-made.
        let schema = plugin.settings()?;
        let values = config.method_values(&schema)?;
        let session = plugin
            .start_method(&values, &config.to_job_json())
            .with_context(|| format!("method plugin `{plugin_name}` rejected the config"))?;
        let plan = session.plan().clone();
        check_precompute(&config, &plan, &plugin_name)?;
        let rewards = if config.reward_funcs.is_empty() {
            None
        } else {
            if !plan.needs_generation {
                bail!(
                    "reward_funcs is set, but method `{plugin_name}` does not generate completions \
                     to score; reward functions are for methods such as grpo"
                );
            }
            let set = RewardSet::load(
                engine.services.plugins()?.as_ref(),
                &config.reward_funcs,
                config.reward_weights.as_deref(),
                &config.reward_settings,
            )?;
            Some(Arc::new(set))
        };
        let device = device_for(&config.device)?;
        let dtype = dtype_for(config.dtype, &device);

        job.log(format!("resolving model {}", config.model_name));
        let model_dir = engine
            .services
            .model_dir(&config.model_name, &|line| job.log(line))?;
        let files = ModelFiles::from_dir(&model_dir)
            .with_context(|| format!("reading the tokenizer of {}", model_dir.display()))?;

        job.log("loading data");
        let samples = engine.services.resolve_data(
            &config.dataset,
            &config.data_load_options(),
            config.seed,
        )?;
        let (train, validation) = crate::data::spec::split(samples, config.val_size, config.seed);
        let render = config.training_render();
        let batch_samples = prepare_samples(train, &files, &render, &plan, &plugin_name)?;
        let (batch_samples, text) = cut_text_into_blocks(batch_samples, config.max_seq_length);
        if text.documents > 0 {
            job.log(format!(
                "{} text samples ({} tokens) cut into {} blocks of max_seq_length {} tokens",
                text.documents, text.tokens, text.blocks, config.max_seq_length
            ));
        }
        if batch_samples.is_empty() {
            bail!("the dataset has no samples to train on");
        }
        let val_samples = prepare_samples(validation, &files, &render, &plan, &plugin_name)?;
        let (val_samples, _) = cut_text_into_blocks(val_samples, config.max_seq_length);
        let pad_id = files.tokenizer.token_id("<|endoftext|>").unwrap_or(0);
        let mut batcher = Batcher::new(
            batch_samples,
            BatchConfig {
                batch_size: config.per_device_train_batch_size,
                max_seq_len: config.max_seq_length,
                packing: config.packing,
                group_by_length: config.group_by_length,
                seed: config.seed,
                pad_id,
            },
        )?;
        // Validation batches: no shuffle needed, but the same shapes and truncation.
        let mut validation = if val_samples.is_empty() {
            None
        } else {
            let v = Batcher::new(
                val_samples,
                BatchConfig {
                    batch_size: config.per_device_train_batch_size,
                    max_seq_len: config.max_seq_length,
                    packing: false,
                    group_by_length: false,
                    seed: config.seed,
                    pad_id,
                },
            )?;
            (v.stats().kept > 0).then_some(v)
        };
        let stats = batcher.stats().clone();
        if stats.kept == 0 {
            bail!(
                "no sample has a trained token within max_seq_length {} ({} samples given)",
                config.max_seq_length,
                stats.samples
            );
        }
        job.log(format!(
            "{} samples ({} truncated to {} tokens, {} without trained tokens left out), {} batches per epoch",
            stats.samples, stats.truncated_samples, config.max_seq_length, stats.dropped_empty,
            stats.batches_per_epoch
        ));

        job.log(format!(
            "loading {} on {:?} as {:?}",
            model_dir.display(),
            device,
            dtype
        ));
        let load = qwen3::LoadOptions {
            dtype,
            train: match plan.trains {
                Trainable::Full => qwen3::TrainMode::Full,
                Trainable::Adapters => qwen3::TrainMode::Frozen,
            },
            quantization: match plan.base_quantization {
                Quantization::None => qwen3::Quant::None,
                Quantization::Nf4 => qwen3::Quant::Nf4,
                Quantization::Int8 => qwen3::Quant::Int8,
            },
            gradient_checkpointing: config.gradient_checkpointing,
        };
        let mut model = Qwen3::load(&model_dir, &device, &load)?;
        let lora = match &plan.adapter {
            Some(a) => {
                let spec = LoraSpec {
                    rank: a.rank,
                    alpha: a.alpha,
                    dropout: a.dropout,
                    target_modules: a.target_modules.clone(),
                    rslora: a.rslora,
                };
                let n = lora::attach_lora(&mut model, &spec, config.seed)?;
                job.log(format!("LoRA r={} on {n} modules", spec.rank));
                Some(spec)
            }
            None => None,
        };
        let model = Arc::new(model);
        // Before a checkpoint is restored below: `model` is still the base.
        let precomputed = if config.precompute_ref_log_probs {
            let batchers = [Some(&mut batcher), validation.as_mut()];
            let Some(p) = precompute_reference(job, &model, plan.trains, batchers, &device)? else {
                return Ok(None);
            };
            Some(Arc::new(p))
        } else {
            None
        };
        // Full fine-tuning moves every weight, so a reference for
        // `use_adapters = false` must be a copy of the base as loaded. It is
        // frozen (constants, no gradients) and costs one more model in memory;
        // precomputed reference log-probs make it unnecessary.
        let reference =
            if plan.needs_reference && plan.trains == Trainable::Full && precomputed.is_none() {
                job.log("loading a frozen reference copy of the model");
                let frozen = qwen3::LoadOptions {
                    train: qwen3::TrainMode::Frozen,
                    gradient_checkpointing: false,
                    ..load.clone()
                };
                Some(Arc::new(Qwen3::load(&model_dir, &device, &frozen)?))
            } else {
                None
            };
        let vars = model.trainable_vars();
        let trainable: usize = vars.iter().map(|(_, v)| v.elem_count()).sum();
        job.log(format!("{trainable} trainable parameters"));
        let mut optimizer = AdamW::new(
            vars.clone(),
            AdamWConfig {
                lr: config.learning_rate,
                weight_decay: config.weight_decay,
                ..AdamWConfig::default()
            },
        )?;

        let per_epoch = stats
            .batches_per_epoch
            .div_ceil(config.gradient_accumulation_steps.max(1))
            .max(1) as u64;
        let total_steps = match config.max_steps {
            Some(n) if n > 0 => n,
            _ => ((per_epoch as f64) * config.num_train_epochs)
                .ceil()
                .max(1.0) as u64,
        };
        let warmup = config
            .warmup_steps
            .map(|w| w as usize)
            .unwrap_or_else(|| schedule::warmup_steps(total_steps as usize, config.warmup_ratio));
        let output_dir = job.output_dir().to_path_buf();
        let mut state = TrainerState {
            step: 0,
            total_steps,
            cursor: batcher.cursor(),
            losses: Vec::new(),
            eval_losses: Vec::new(),
            method: plugin_name.clone(),
            model: config.model_name.clone(),
        };
        if let Some(spec) = &config.resume_from_checkpoint {
            let dir = checkpoint::resolve(spec, &output_dir)?;
            let loaded = checkpoint::load(&dir, &vars, &device)?;
            if loaded.state.method != plugin_name {
                bail!(
                    "{} was written by method `{}`, not `{plugin_name}`",
                    dir.display(),
                    loaded.state.method
                );
            }
            optimizer.load_state(&loaded.optimizer)?;
            batcher.seek(loaded.state.cursor)?;
            state = TrainerState {
                total_steps,
                ..loaded.state
            };
            job.log(format!(
                "resumed from {} at step {}",
                dir.display(),
                state.step
            ));
        }
        job.set_total_steps(total_steps);
        let end_tokens =
            crate::infer::model::end_tokens(&model_dir, &files.tokenizer, Some(&files.template))?;
        let generation = Arc::new(PolicyGeneration::new(
            files.tokenizer.clone(),
            end_tokens,
            config.seed,
        ));
        Ok(Some(Run {
            generation,
            rewards,
            config,
            plan,
            plugin: plugin_name,
            session,
            device,
            model,
            reference,
            precomputed,
            model_dir,
            lora,
            batcher,
            validation,
            optimizer,
            state,
            warmup,
            output_dir,
        }))
    }

    fn train(mut self, job: &JobContext) -> Result<JobOutcome> {
        let policy = Arc::new(ModelPolicy {
            model: self.model.clone(),
            reference: self.reference.clone(),
            precomputed: self.precomputed.clone(),
            generation: Some(self.generation.clone()),
            rewards: self.rewards.clone(),
            timing: StepTiming::default(),
        });
        let vars: Vec<candle_core::Var> = self
            .model
            .trainable_vars()
            .into_iter()
            .map(|(_, v)| v)
            .collect();
        let accum = self.config.gradient_accumulation_steps.max(1);
        let per_epoch = self.batcher.batches_per_epoch().max(1) as f64;
        let schedule = schedule_of(&self.config.lr_scheduler_type);
        let logging = self.config.logging_steps.max(1);
        let mut window_tokens = 0usize;
        let mut window_start = Instant::now();
        let mut outcome = JobOutcome::Completed;

        while self.state.step < self.state.total_steps {
            if job.should_stop() {
                outcome = JobOutcome::Stopped;
                break;
            }
            let step = self.state.step;
            let mut acc = GradAccumulator::new();
            let mut loss_sum = 0.0;
            // Each metric the method reports is averaged over the step's
            // micro-batches, as the loss is.
            let mut metric_sums: Vec<(String, f64, u32)> = Vec::new();
            for micro in 0..accum {
                // A fresh dropout mask per micro-batch, a function of the
                // position in the run only, so a resumed run draws the same.
                let position = step * accum as u64 + micro as u64;
                crate::model::lora::set_dropout_step(self.model.linears(), position);
                // Rollouts, like dropout, are a function of the position.
                self.generation.set_position(position);
                let batch = self.batcher.next_batch(&self.device)?;
                window_tokens += batch.tokens;
                let (out, value) = method_loss(&mut self.session, &policy, &batch, step)?;
                if !value.is_finite() {
                    bail!(
                        "step {}: the loss of method plugin `{}` is {value}; lower learning_rate or check the data",
                        step + 1,
                        self.plugin
                    );
                }
                loss_sum += value;
                for (name, v) in out.metrics {
                    match metric_sums.iter_mut().find(|(n, _, _)| *n == name) {
                        Some((_, sum, count)) => {
                            *sum += v;
                            *count += 1;
                        }
                        None => metric_sums.push((name, v, 1)),
                    }
                }
                let scaled = (out.loss.to_dtype(DType::F32)? / accum as f64)?;
                let grads = self.model.backward(&scaled)?;
                acc.add(&grads, &vars)?;
            }
            let mut grads = acc.take_sum()?;
            let norm = clip_grad_norm(&mut grads, &vars, self.config.max_grad_norm)?;
            if !norm.is_finite() {
                bail!(
                    "step {}: the gradient norm is {norm}; nothing was updated. Lower learning_rate \
                     or check the data (the last checkpoint is intact)",
                    step + 1
                );
            }
            let lr = schedule::lr_at(
                step as usize,
                self.state.total_steps as usize,
                self.warmup,
                self.config.learning_rate,
                schedule,
            );
            self.optimizer.step(&grads, lr)?;
            drop(grads);
            let loss = loss_sum / accum as f64;
            let mut metrics: serde_json::Map<String, serde_json::Value> = metric_sums
                .into_iter()
                .map(|(name, sum, count)| (name, serde_json::json!(sum / count as f64)))
                .collect();
            // Totals over the step's micro-batches, not means.
            for (name, secs) in policy.timing.take_metrics() {
                metrics.insert(name.into(), serde_json::json!(secs));
            }
            self.state.step += 1;
            self.state.losses.push(loss);
            self.state.cursor = self.batcher.cursor();

            let step = self.state.step;
            if step.is_multiple_of(logging) || step == self.state.total_steps || step == 1 {
                let secs = window_start.elapsed().as_secs_f64().max(1e-9);
                job.report(TrainEvent {
                    step,
                    epoch: (step as f64 * accum as f64) / per_epoch,
                    loss: Some(loss),
                    lr: Some(lr),
                    grad_norm: Some(norm),
                    tokens_per_s: Some(window_tokens as f64 / secs),
                    memory_bytes: peak_rss_bytes(),
                    metrics,
                });
                window_tokens = 0;
                window_start = Instant::now();
            }
            if self.config.save_steps > 0
                && step.is_multiple_of(self.config.save_steps)
                && step < self.state.total_steps
            {
                self.evaluate(job, &policy)?;
                self.save_checkpoint(job)?;
            }
        }
        if outcome == JobOutcome::Stopped && self.state.step > 0 {
            self.save_checkpoint(job)?;
        }
        if outcome == JobOutcome::Completed {
            self.evaluate(job, &policy)?;
            self.save_outputs(job)?;
        }
        Ok(outcome)
    }

    /// The method's mean loss over the held-out batches (no update), reported
    /// as `eval_loss`.
    fn evaluate(&mut self, job: &JobContext, policy: &Arc<ModelPolicy>) -> Result<()> {
        let Some(validation) = self.validation.as_mut() else {
            return Ok(());
        };
        validation.seek(Default::default())?;
        let batches = validation.batches_per_epoch();
        let mut total = 0.0;
        for i in 0..batches {
            // Evaluation rollouts get positions of their own, apart from
            // the training micro-batches'.
            let position = EVAL_POSITIONS + self.state.step * batches as u64 + i as u64;
            self.generation.set_position(position);
            let batch = validation.next_batch(&self.device)?;
            total += method_loss(&mut self.session, policy, &batch, self.state.step)?.1;
        }
        let eval_loss = total / batches.max(1) as f64;
        let mut metrics = serde_json::Map::new();
        metrics.insert("eval_loss".into(), serde_json::json!(eval_loss));
        job.report(TrainEvent {
            step: self.state.step,
            epoch: self.state.step as f64 * self.config.gradient_accumulation_steps.max(1) as f64
                / self.batcher.batches_per_epoch().max(1) as f64,
            metrics,
            ..Default::default()
        });
        self.state.eval_losses.push((self.state.step, eval_loss));
        Ok(())
    }

    fn save_checkpoint(&self, job: &JobContext) -> Result<()> {
        let vars = self.model.trainable_vars();
        let opt = self.optimizer.state_tensors()?;
        let model = &self.model;
        let lora = self.lora.clone();
        let base = self.config.model_name.clone();
        let dir = checkpoint::save(&self.output_dir, &self.state, &vars, &opt, |tmp| {
            if let Some(spec) = &lora {
                crate::train::peft::save_adapter(model, spec, &base, tmp)?;
            }
            Ok(())
        })?;
        job.checkpoint_saved(&dir, self.state.step);
        for old in checkpoint::prune(&self.output_dir, self.config.save_total_limit)? {
            tracing::debug!("removed old checkpoint {}", old.display());
        }
        Ok(())
    }

    /// The final outputs: a PEFT adapter folder in `output_dir` (adapters),
    /// or a full HF model folder (full fine-tuning).
    fn save_outputs(&self, job: &JobContext) -> Result<()> {
        match &self.lora {
            Some(spec) => {
                crate::train::peft::save_adapter(
                    &self.model,
                    spec,
                    &self.config.model_name,
                    &self.output_dir,
                )?;
                job.log(format!("adapter written to {}", self.output_dir.display()));
            }
            None => {
                crate::train::peft::export_merged(
                    &self.model,
                    &self.model_dir,
                    &self.output_dir,
                    4 << 30,
                )?;
                job.log(format!("model written to {}", self.output_dir.display()));
            }
        }
        let report = serde_json::json!({
            "method": self.plugin,
            "model": self.config.model_name,
            "steps": self.state.step,
            "losses": self.state.losses,
            "eval_losses": self.state.eval_losses,
            "data": self.batcher.stats(),
            "plan": self.plan,
        });
        std::fs::write(
            self.output_dir.join("train_report.json"),
            serde_json::to_vec_pretty(&report)?,
        )?;
        Ok(())
    }
}

/// Peak resident memory of this process (Linux), for the step events.
pub fn peak_rss_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

#[cfg(test)]
mod policy_tests {
    use super::*;
    use crate::model::qwen3::ModelInput;
    use crate::sample::SampleKind;

    /// The tiny random Qwen3 of the model tests, every weight trainable.
    fn tiny(checkpointing: bool, chunk_elems: usize) -> Arc<Qwen3> {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../tests/fixtures/tiny-qwen3/tied");
        let options = qwen3::LoadOptions {
            dtype: DType::F32,
            train: qwen3::TrainMode::Full,
            quantization: qwen3::Quant::None,
            gradient_checkpointing: checkpointing,
        };
        let mut model = Qwen3::load(&dir, &Device::Cpu, &options).unwrap();
        model.set_logits_chunk_elems(chunk_elems);
        Arc::new(model)
    }

    fn batch() -> MethodBatch {
        let ids = Tensor::new(&[[1u32, 5, 9, 3, 7], [2, 4, 6, 8, 10]], &Device::Cpu).unwrap();
        let mask =
            Tensor::new(&[[0f32, 1.0, 1.0, 0.0], [1.0, 0.0, 0.5, 1.0]], &Device::Cpu).unwrap();
        MethodBatch::new(SampleKind::Chat, ids, mask).unwrap()
    }

    #[test]
    fn vocab_logprobs_at_the_targets_are_the_token_logprobs_with_the_same_gradients() {
        // One chunk, and chunks of two positions (three for five positions),
        // with and without checkpointing.
        for (checkpointing, chunk) in [(false, 1 << 26), (false, 2 * 128), (true, 2 * 128)] {
            let model = tiny(checkpointing, chunk);
            let vocab = model.config().vocab_size;
            let policy = ModelPolicy {
                model: model.clone(),
                reference: None,
                precomputed: None,
                generation: None,
                rewards: None,
                timing: StepTiming::default(),
            };
            let batch = batch();
            let d = policy.vocab_logprobs(&batch, true).unwrap();
            assert_eq!(d.logprobs.dims(), [5, vocab]);
            assert_eq!(d.targets.to_vec1::<u32>().unwrap(), [9, 3, 4, 8, 10]);
            assert_eq!(
                d.weights.to_vec1::<f32>().unwrap(),
                [1.0, 1.0, 1.0, 0.5, 1.0]
            );
            // Each row is a distribution.
            let mass: Vec<f32> = d.logprobs.exp().unwrap().sum(1).unwrap().to_vec1().unwrap();
            assert!(mass.iter().all(|m| (m - 1.0).abs() < 1e-5), "{mass:?}");

            let gathered = d
                .logprobs
                .gather(&d.targets.unsqueeze(1).unwrap(), 1)
                .unwrap()
                .squeeze(1)
                .unwrap();
            let tokens = policy.token_logprobs(&batch, true).unwrap();
            let at = [(0, 1), (0, 2), (1, 0), (1, 2), (1, 3)];
            let want: Vec<f32> = at
                .iter()
                .map(|&(r, t)| {
                    tokens
                        .get(r)
                        .unwrap()
                        .get(t)
                        .unwrap()
                        .to_scalar::<f32>()
                        .unwrap()
                })
                .collect();
            let got: Vec<f32> = gathered.to_vec1().unwrap();
            for (g, w) in got.iter().zip(&want) {
                assert!(
                    (g - w).abs() < 1e-5,
                    "{checkpointing} {chunk}: {got:?} vs {want:?}"
                );
            }

            // The same weighted loss through either path: the same gradients.
            let weighted = |t: &Tensor| (t * &d.weights).unwrap().sum_all().unwrap();
            let from_vocab = model.backward(&weighted(&gathered)).unwrap();
            let mask = batch.loss_mask.clone();
            let from_tokens = model
                .backward(&(tokens * mask).unwrap().sum_all().unwrap())
                .unwrap();
            for (name, var) in model.trainable_vars() {
                let a = from_vocab.get(var.as_tensor()).expect("a gradient");
                let b = from_tokens.get(var.as_tensor()).expect("a gradient");
                let diff = crate::model::qwen3::ops::testing::max_abs_diff(a, b);
                assert!(
                    diff < 1e-4,
                    "{checkpointing} {chunk}: {name} differs by {diff}"
                );
            }

            // Without adapters the answer carries no gradient.
            let frozen = policy.vocab_logprobs(&batch, false).unwrap();
            assert!(!frozen.logprobs.track_op());
        }
    }

    #[test]
    fn a_batch_without_trained_positions_has_an_empty_distribution() {
        let policy = ModelPolicy {
            model: tiny(false, 1 << 26),
            reference: None,
            precomputed: None,
            generation: None,
            rewards: None,
            timing: StepTiming::default(),
        };
        let ids = Tensor::new(&[[1u32, 2, 3]], &Device::Cpu).unwrap();
        let mask = Tensor::zeros((1, 2), DType::F32, &Device::Cpu).unwrap();
        let batch = MethodBatch::new(SampleKind::Text, ids, mask).unwrap();
        let d = policy.vocab_logprobs(&batch, true).unwrap();
        assert_eq!(d.logprobs.dims(), [0, 128]);
        assert_eq!(d.targets.dims(), [0]);
        assert_eq!(d.weights.dims(), [0]);
    }

    /// Two packed batches of the same shape: `[rows, seq]` ids, positions
    /// and segments.
    fn packed_inputs() -> (ModelInput, ModelInput) {
        let t = |v: [[u32; 6]; 2]| Tensor::new(&v, &Device::Cpu).unwrap();
        let a = ModelInput {
            ids: t([[1, 5, 9, 3, 7, 2], [2, 4, 6, 8, 10, 12]]),
            positions: t([[0, 1, 2, 0, 1, 2], [0, 1, 2, 3, 0, 1]]),
            segments: t([[1, 1, 1, 2, 2, 2], [1, 1, 1, 1, 2, 2]]),
        };
        let b = ModelInput {
            ids: t([[11, 12, 13, 14, 15, 16], [17, 18, 19, 20, 21, 22]]),
            positions: t([[0, 1, 0, 1, 2, 3], [0, 1, 2, 3, 4, 5]]),
            segments: t([[1, 1, 2, 2, 2, 2], [1, 1, 1, 1, 1, 1]]),
        };
        (a, b)
    }

    /// `input`'s ids with `other`'s positions and segments.
    fn ids_of_with_packing_of(input: &ModelInput, other: &ModelInput) -> ModelInput {
        ModelInput {
            ids: input.ids.clone(),
            positions: other.positions.clone(),
            segments: other.segments.clone(),
        }
    }

    #[test]
    fn each_packed_batch_is_scored_with_its_own_positions_and_segments() {
        use crate::model::qwen3::ops::testing::max_abs_diff;
        let model = tiny(false, 1 << 26);
        let policy: Arc<dyn PolicyBackend> = Arc::new(ModelPolicy {
            model: model.clone(),
            reference: None,
            precomputed: None,
            generation: None,
            rewards: None,
            timing: StepTiming::default(),
        });
        let (a, b) = packed_inputs();
        assert_eq!(a.ids.dims(), b.ids.dims());
        // No weight across a packing boundary, as the batcher writes them.
        let mask = |v: [[f32; 5]; 2]| Tensor::new(&v, &Device::Cpu).unwrap();
        let mask_a = mask([[1.0, 1.0, 0.0, 1.0, 1.0], [1.0, 1.0, 1.0, 0.0, 0.5]]);
        let mask_b = mask([[1.0, 0.0, 1.0, 1.0, 1.0], [1.0, 1.0, 1.0, 1.0, 1.0]]);
        let batch_a = MethodBatch::packed(SampleKind::Chat, a.clone(), mask_a).unwrap();
        let batch_b = MethodBatch::packed(SampleKind::Text, b.clone(), mask_b).unwrap();
        let frozen = Mode {
            training: false,
            adapters: false,
        };

        // What each batch's own input gives, and what the other batch's
        // packing (or none) would give: the test tells them apart.
        let own_a = model.token_logprobs(&a, frozen).unwrap();
        let own_b = model.token_logprobs(&b, frozen).unwrap();
        let wrong = [
            (
                &own_a,
                model.token_logprobs(&ids_of_with_packing_of(&a, &b), frozen),
            ),
            (&own_a, model.token_logprobs(&plain_input_of(&a), frozen)),
            (
                &own_b,
                model.token_logprobs(&ids_of_with_packing_of(&b, &a), frozen),
            ),
            (&own_b, model.token_logprobs(&plain_input_of(&b), frozen)),
        ];
        for (own, other) in wrong {
            let diff = max_abs_diff(own, &other.unwrap());
            assert!(
                diff > 1e-3,
                "the packing changes the log-probs by only {diff}"
            );
        }

        // Interleaved, as two batches of one step may reach the policy.
        for (batch, own) in [(&batch_a, &own_a), (&batch_b, &own_b), (&batch_a, &own_a)] {
            for use_adapters in [false, true] {
                let got = policy.token_logprobs(batch, use_adapters).unwrap();
                let diff = max_abs_diff(&got, own);
                assert!(diff < 1e-5, "token log-probs differ by {diff}");

                let d = policy.vocab_logprobs(batch, use_adapters).unwrap();
                let index = batch.trained_positions().unwrap().index;
                let want = model
                    .vocab_logprobs(&batch.model_input().unwrap(), &index, frozen)
                    .unwrap();
                let diff = max_abs_diff(&d.logprobs, &want);
                assert!(diff < 1e-5, "vocab log-probs differ by {diff}");
                // At the targets, the token log-probs at the trained positions.
                let gathered = d
                    .logprobs
                    .gather(&d.targets.unsqueeze(1).unwrap(), 1)
                    .unwrap()
                    .squeeze(1)
                    .unwrap();
                let at = own.flatten_all().unwrap().index_select(&index, 0).unwrap();
                let diff = max_abs_diff(&gathered, &at);
                assert!(
                    diff < 1e-5,
                    "vocab log-probs at the targets differ by {diff}"
                );
            }
        }
    }

    /// What a plugin gets from `policy.token-logprobs(batch, false)` (the
    /// 0.2.0 or the 0.1.0 import) for each batch resource in turn.
    #[test]
    fn the_wit_policy_reads_the_packing_of_the_batch_resource_it_is_handed() {
        use crate::model::qwen3::ops::testing::max_abs_diff;
        use crate::plugins::bindings::v0_1_0::method::tuner::plugin::model as old_model;
        use crate::plugins::bindings::v0_2_0::method::tuner::plugin::model as new_model;
        use crate::plugins::imports::model::{BatchHandle, PolicyHandle};
        use crate::plugins::state::PluginState;
        use wasmtime::component::Resource;

        let model = tiny(false, 1 << 26);
        let frozen = Mode {
            training: false,
            adapters: false,
        };
        let (a, b) = packed_inputs();
        let mask = Tensor::ones((2, 5), DType::F32, &Device::Cpu).unwrap();
        let mut state = PluginState::new("test".into(), &Default::default(), None);
        let policy = state
            .table
            .push(PolicyHandle::new(Arc::new(ModelPolicy {
                model: model.clone(),
                reference: None,
                precomputed: None,
                generation: None,
                rewards: None,
                timing: StepTiming::default(),
            })))
            .unwrap();
        let mut batches = Vec::new();
        for input in [&a, &b] {
            let batch = MethodBatch::packed(SampleKind::Chat, input.clone(), mask.clone()).unwrap();
            let handle = state.table.push(BatchHandle::new(Arc::new(batch))).unwrap();
            batches.push((handle.rep(), model.token_logprobs(input, frozen).unwrap()));
        }
        for old in [false, true] {
            for (rep, want) in batches.iter().chain(&batches[..1]) {
                let p = Resource::<PolicyHandle>::new_borrow(policy.rep());
                let b = Resource::<BatchHandle>::new_borrow(*rep);
                let lp = if old {
                    old_model::HostPolicy::token_logprobs(&mut state, p, b, false)
                        .unwrap()
                        .unwrap()
                } else {
                    new_model::HostPolicy::token_logprobs(&mut state, p, b, false)
                        .unwrap()
                        .unwrap()
                };
                let got = state.take_tensor(lp).unwrap();
                let diff = max_abs_diff(&got, want);
                assert!(diff < 1e-5, "old import {old}: log-probs differ by {diff}");
            }
        }
    }

    #[test]
    fn policy_generate_samples_each_prompt_and_returns_a_scorable_batch() {
        use crate::plugins::bindings::v0_2_0::method::tuner::plugin::model as new_model;
        use crate::plugins::imports::model::{BatchHandle, PolicyHandle};
        use crate::plugins::state::PluginState;
        use wasmtime::component::Resource;

        let model = tiny(false, 1 << 26); // full fine-tuning: weights are variables
        let tokenizer = crate::text::Tokenizer::from_file(
            &std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("../tests/fixtures/qwen3/tokenizer.json"),
        )
        .unwrap();
        let generation = Arc::new(PolicyGeneration::new(tokenizer, Vec::new(), 7));
        let mut state = PluginState::new("test".into(), &Default::default(), None);
        let policy = state
            .table
            .push(PolicyHandle::new(Arc::new(ModelPolicy {
                model: model.clone(),
                reference: None,
                precomputed: None,
                generation: Some(generation),
                rewards: None,
                timing: StepTiming::default(),
            })))
            .unwrap();
        // Two right-padded prompts of 3 and 2 tokens.
        let input = ModelInput::from_rows(&[vec![5, 6, 7], vec![8, 9]], &Device::Cpu).unwrap();
        let mask = Tensor::zeros((2, 2), DType::F32, &Device::Cpu).unwrap();
        let mut prompts = MethodBatch::packed(SampleKind::Prompt, input, mask).unwrap();
        prompts.answers = vec![Some("a".into()), None];
        let prompts = state
            .table
            .push(BatchHandle::new(Arc::new(prompts)))
            .unwrap();
        let sampling = Sampling {
            max_new_tokens: 6,
            temperature: 1.0,
            top_p: 1.0,
            top_k: 0,
            samples_per_prompt: 3,
        };
        let rollout = new_model::HostPolicy::generate(
            &mut state,
            Resource::new_borrow(policy.rep()),
            Resource::new_borrow(prompts.rep()),
            sampling,
        )
        .unwrap()
        .unwrap();
        let rows: Vec<u32> = rollout.completions.iter().map(|c| c.prompt_row).collect();
        assert_eq!(rows, [0, 0, 0, 1, 1, 1]);
        assert!(
            rollout
                .completions
                .iter()
                .all(|c| c.tokens == 6 && !c.finished)
        );
        let batch = state.table.get(&rollout.batch).unwrap();
        let b = batch.batch().clone();
        assert_eq!(b.answers[0], Some("a".into()));
        assert_eq!(b.answers[5], None);
        let ids: Vec<Vec<u32>> = b.ids.to_vec2().unwrap();
        let mask: Vec<Vec<f32>> = b.loss_mask.to_vec2().unwrap();
        assert_eq!(ids.len(), 6);
        assert_eq!(&ids[0][..3], &[5, 6, 7]);
        assert_eq!(&ids[4][..2], &[8, 9]);
        // The mask covers the 6 completion tokens of each row, nothing else.
        assert_eq!(mask[0], [0.0, 0.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0]);
        assert_eq!(mask[3], [0.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 0.0]);
        // Samples of one prompt differ (seeded per sample), and the batch scores.
        assert!(ids[0] != ids[1] || ids[1] != ids[2]);
        let lp = model
            .token_logprobs(&b.model_input().unwrap(), Mode::EVAL)
            .unwrap();
        assert_eq!(lp.dims(), [6, 8]);
    }

    /// Right-padded rows, every prediction trained (mask 1 up to each
    /// row's end), as the batcher writes them.
    fn padded(rows: &[&[u32]]) -> MethodBatch {
        let seqs: Vec<crate::text::TokenizedSequence> = rows
            .iter()
            .map(|ids| crate::text::TokenizedSequence {
                ids: ids.to_vec(),
                weights: vec![1.0; ids.len()],
            })
            .collect();
        let b = TrainBatch::from_rows(&seqs, 0, &Device::Cpu).unwrap();
        MethodBatch::packed(SampleKind::Preference, b.input, b.loss_mask).unwrap()
    }

    /// The reference log-probs of `batches`' rows, as the precompute pass
    /// stores them.
    fn precomputed(
        model: &Qwen3,
        batches: &[&MethodBatch],
        model_is_reference: bool,
    ) -> Precomputed {
        let mut rows = ReferenceLogProbs::default();
        for batch in batches {
            let input = batch.model_input().unwrap();
            let lp = reference_token_logprobs(model, &input).unwrap();
            rows.insert(&input, &lp).unwrap();
        }
        Precomputed {
            rows,
            model_is_reference,
        }
    }

    fn policy_with(model: &Arc<Qwen3>, precomputed: Precomputed) -> ModelPolicy {
        ModelPolicy {
            model: model.clone(),
            reference: None,
            precomputed: Some(Arc::new(precomputed)),
            generation: None,
            rewards: None,
            timing: StepTiming::default(),
        }
    }

    #[test]
    fn precomputed_reference_log_probs_answer_as_the_reference_computes_them() {
        use crate::model::qwen3::ops::testing::max_abs_diff;
        let model = tiny(true, 2 * 128);
        let stored = padded(&[&[1, 5, 9, 3, 7, 8, 2], &[2, 4, 6], &[1, 5, 9, 3, 7]]);
        // Full fine-tuning: only the stored rows can be answered.
        let policy = policy_with(&model, precomputed(&model, &[&stored], false));
        // Two of the rows in another batch: swapped, padded to another length.
        let again = padded(&[&[2, 4, 6], &[1, 5, 9, 3, 7]]);
        let got = policy.token_logprobs(&again, false).unwrap();
        assert!(!got.track_op());
        assert_eq!(got.dims(), [2, 4]);
        let want = model
            .token_logprobs(&again.model_input().unwrap(), REFERENCE_MODE)
            .unwrap();
        let mask = &again.loss_mask;
        let diff = max_abs_diff(&(&got * mask).unwrap(), &(&want * mask).unwrap());
        assert!(diff < 1e-5, "cached and computed differ by {diff}");
        // Zeros past each row's end, where the mask is 0 too.
        let rows: Vec<Vec<f32>> = got.to_vec2().unwrap();
        assert_eq!(rows[0][2..], [0.0, 0.0]);
        assert!(rows[1].iter().all(|v| *v < 0.0), "{rows:?}");
        // The policy with adapters is untouched by the cache.
        let trained = policy.token_logprobs(&again, true).unwrap();
        assert!(max_abs_diff(&(&trained * mask).unwrap(), &(&want * mask).unwrap()) < 1e-5);
    }

    #[test]
    fn a_row_not_precomputed_is_computed_under_lora_and_refused_under_full_fine_tuning() {
        use crate::model::qwen3::ops::testing::max_abs_diff;
        let model = tiny(false, 1 << 26);
        let stored = padded(&[&[1, 5, 9, 3, 7], &[2, 4, 6, 8]]);
        let unknown = padded(&[&[1, 5, 9, 3, 7], &[3, 3, 3]]);
        let want = model
            .token_logprobs(&unknown.model_input().unwrap(), REFERENCE_MODE)
            .unwrap();

        // LoRA: the model with adapters off is the reference and answers.
        let lora = policy_with(&model, precomputed(&model, &[&stored], true));
        let got = lora.token_logprobs(&unknown, false).unwrap();
        assert!(!got.track_op());
        let mask = &unknown.loss_mask;
        let diff = max_abs_diff(&(&got * mask).unwrap(), &(&want * mask).unwrap());
        assert!(diff < 1e-6, "{diff}");
        assert!(lora.vocab_logprobs(&unknown, false).is_ok());

        // Full fine-tuning: no model is the reference any more.
        let full = policy_with(&model, precomputed(&model, &[&stored], false));
        assert!(full.token_logprobs(&stored, false).is_ok());
        let e = full
            .token_logprobs(&unknown, false)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("precompute_ref_log_probs") && e.contains("was not in the precomputed"),
            "{e}"
        );
        // Whole distributions are never precomputed.
        let e = full.vocab_logprobs(&stored, false).unwrap_err().to_string();
        assert!(
            e.contains("precompute_ref_log_probs") && e.contains("not precomputed"),
            "{e}"
        );
        // With adapters, the trained model answers as ever.
        assert!(full.token_logprobs(&unknown, true).is_ok());
        assert!(full.vocab_logprobs(&unknown, true).is_ok());
    }

    /// A plan as a method plugin might return it.
    fn plan(needs_reference: bool, needs_generation: bool) -> Plan {
        Plan {
            trains: Trainable::Full,
            adapter: None,
            base_quantization: Quantization::None,
            needs_reference,
            needs_generation,
            accepts: vec![SampleKind::Preference],
        }
    }

    #[test]
    fn precompute_is_refused_for_methods_without_a_reference_or_that_generate() {
        let catalog = crate::train::config::MethodCatalog::new().with("m", Ok(Vec::new()));
        let config = |on: bool| {
            TrainConfig::from_json(
                serde_json::json!({"model_name": "x", "dataset": "d", "training_method": "m",
                                   "precompute_ref_log_probs": on}),
                &catalog,
            )
            .unwrap()
        };
        assert!(check_precompute(&config(true), &plan(true, false), "m").is_ok());
        for (p, words) in [
            (plan(false, false), "uses no reference model"),
            (plan(true, true), "generates new completions"),
            (plan(false, true), "generates new completions"),
        ] {
            let e = check_precompute(&config(true), &p, "m")
                .unwrap_err()
                .to_string();
            assert!(
                e.starts_with("precompute_ref_log_probs") && e.contains(words),
                "{e}"
            );
            // Off, nothing is checked.
            assert!(check_precompute(&config(false), &p, "m").is_ok());
        }
    }

    /// `input`'s ids as unpacked rows.
    fn plain_input_of(input: &ModelInput) -> ModelInput {
        let mask = Tensor::zeros((2, 5), DType::F32, &Device::Cpu).unwrap();
        MethodBatch::new(SampleKind::Chat, input.ids.clone(), mask)
            .unwrap()
            .model_input()
            .unwrap()
    }

    #[test]
    fn an_unpacked_batch_has_positions_from_zero_and_one_segment_per_row() {
        let b = batch();
        assert_eq!(
            b.positions().to_vec2::<u32>().unwrap(),
            [[0, 1, 2, 3, 4], [0, 1, 2, 3, 4]]
        );
        assert_eq!(b.segments().to_vec2::<u32>().unwrap(), [[1u32; 5]; 2]);
        let input = b.model_input().unwrap();
        assert_eq!(
            input.ids.to_vec2::<u32>().unwrap(),
            b.ids.to_vec2::<u32>().unwrap()
        );
        // Shapes that disagree are refused, not guessed at.
        let (a, _) = packed_inputs();
        let mask = Tensor::zeros((2, 5), DType::F32, &Device::Cpu).unwrap();
        let short = ModelInput {
            positions: a.positions.narrow(1, 0, 5).unwrap(),
            ..a.clone()
        };
        assert!(MethodBatch::packed(SampleKind::Chat, short, mask.clone()).is_err());
        let mut replaced = MethodBatch::packed(SampleKind::Chat, a, mask).unwrap();
        replaced.ids = replaced.ids.narrow(1, 0, 5).unwrap();
        assert!(replaced.model_input().is_err());
    }
}

#[cfg(test)]
mod data_view_tests {
    use std::path::Path;
    use std::sync::atomic::AtomicBool;

    use super::*;
    use crate::app::{App, StatsRequest};
    use crate::config::{ConfigFile, Settings};
    use crate::home::Home;
    use crate::sample::{Message, SampleKind};
    use crate::train::config::MethodCatalog;

    fn chat(turns: &[(&str, &str)]) -> Sample {
        Sample::Chat {
            messages: turns.iter().map(|(r, c)| Message::new(*r, *c)).collect(),
            tools: None,
        }
    }

    /// The tokens training trains: the samples through `prepare_samples`
    /// (the trainer's rendering and tokenisation for `config`) and the
    /// batcher, which reports them.
    fn trained_by_training(samples: &[Sample], files: &ModelFiles, config: &TrainConfig) -> u64 {
        let plan = Plan {
            trains: Trainable::Full,
            adapter: None,
            base_quantization: Quantization::None,
            needs_reference: false,
            needs_generation: false,
            accepts: vec![SampleKind::Chat],
        };
        let prepared = prepare_samples(
            samples.to_vec(),
            files,
            &config.training_render(),
            &plan,
            "sft",
        )
        .unwrap();
        let batch = BatchConfig {
            batch_size: 1,
            max_seq_len: 4096,
            packing: false,
            group_by_length: false,
            seed: 0,
            pad_id: 0,
        };
        // The first token of a sequence is never predicted; a chat's first
        // token (`<|im_start|>`) is never trained either, so the batcher's
        // count and the statistics' count the same tokens.
        Batcher::new(prepared, batch)
            .unwrap()
            .stats()
            .trained_tokens as u64
    }

    /// `tuner data stats --tokenizer` (and `GET /api/data/{name}/stats?model=`)
    /// count as trained exactly what training trains: with the defaults of
    /// both (training `enable_thinking = false`: the empty think block of
    /// the last turn is prompt), and with the same settings given to both.
    #[test]
    fn data_stats_count_as_trained_what_training_trains() {
        let fixture = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/qwen3");
        let files = ModelFiles::from_dir(&fixture).unwrap();
        let samples = vec![
            chat(&[("user", "你好"), ("assistant", "你好！有什么可以帮你？")]),
            chat(&[
                ("system", "Be brief."),
                ("user", "2+2?"),
                ("assistant", "<think>\nadd\n</think>\n\n4"),
            ]),
            chat(&[
                ("user", "a"),
                ("assistant", "b"),
                ("user", "c"),
                ("assistant", "d"),
            ]),
        ];
        let home = tempfile::tempdir().unwrap();
        let home = Home::at(home.path());
        let settings = Settings::resolve(&home, &ConfigFile::default()).unwrap();
        let app = App::new(home, settings);
        let catalog = MethodCatalog::new().with("sft", Ok(Vec::new()));
        let config = |extra: serde_json::Value| {
            let mut json = serde_json::json!({
                "model_name": "m", "dataset": "d", "training_method": "sft"});
            json.as_object_mut()
                .unwrap()
                .extend(extra.as_object().unwrap().clone());
            TrainConfig::from_json(json, &catalog).unwrap()
        };
        let counted = |samples: &[Sample], render: TrainingRender| -> u64 {
            let request = StatsRequest {
                model: Some(fixture.display().to_string()),
                max_seq_len: None,
                render,
            };
            let stats = app
                .dataset_stats(samples, &request, &AtomicBool::new(false))
                .unwrap();
            let tokens = stats.tokens.unwrap();
            assert_eq!(tokens.failed, 0, "{:?}", tokens.errors);
            tokens.response_tokens.unwrap().sum
        };

        // The defaults: what the data commands do without flags, and what a
        // config without `enable_thinking` trains.
        let defaults = config(serde_json::json!({}));
        assert_eq!(defaults.training_render(), TrainingRender::default());
        let trained = trained_by_training(&samples, &files, &defaults);
        assert_eq!(counted(&samples, TrainingRender::default()), trained);

        // The same settings on both sides (--enable-thinking --system).
        let thinking = config(serde_json::json!({"enable_thinking": true, "system": "Be kind."}));
        let on = TrainingRender {
            enable_thinking: true,
            system: Some("Be kind.".into()),
        };
        let trained_thinking = trained_by_training(&samples, &files, &thinking);
        assert_eq!(counted(&samples, on.clone()), trained_thinking);

        // The difference is the empty think block of a final answer without
        // reasoning: `<think>`, `\n\n`, `</think>`, `\n\n` train with
        // thinking on, and are prompt with it off.
        let first = &samples[..1];
        assert_eq!(
            counted(first, on),
            counted(first, TrainingRender::default()) + 4
        );
    }
}

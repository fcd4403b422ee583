//! AdamW, gradient clipping by global norm and gradient accumulation.
//!
//! [`AdamW`] follows `torch.optim.AdamW` (non-amsgrad) term by term, so a
//! run ported from HF Trainer takes the same steps:
//! ```text
//! p ← p · (1 − lr·wd)                       decoupled weight decay
//! m ← β1·m + (1 − β1)·g ;  v ← β2·v + (1 − β2)·g²
//! p ← p − lr/(1 − β1ᵗ) · m / (√v / √(1 − β2ᵗ) + ε)
//! ```
//! with `t` counted per parameter (a parameter without a gradient in a step
//! is left alone and its `t` does not advance, as in torch). `m` and `v` are
//! f32 whatever the parameter's dtype; a bf16/f16 parameter also keeps an f32
//! master copy that takes the update and is cast back into the [`Var`], so
//! updates smaller than a bf16 ulp still accumulate.

use std::collections::{HashMap, HashSet};

use candle_core::backprop::GradStore;
use candle_core::{DType, Device, Result, Tensor, TensorId, Var};

/// AdamW hyper-parameters. The learning rate of each step is passed to
/// [`AdamW::step`] (it comes from the schedule); `lr` here is the base rate.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AdamWConfig {
    /// Base learning rate.
    pub lr: f64,
    /// Decay of the first moment.
    pub beta1: f64,
    /// Decay of the second moment.
    pub beta2: f64,
    /// Added to `√v̂` in the denominator.
    pub eps: f64,
    /// Decoupled weight decay, applied to parameters the decay filter accepts.
    pub weight_decay: f64,
}

impl Default for AdamWConfig {
    /// HF `TrainingArguments` defaults: lr 5e-5, betas (0.9, 0.999), eps
    /// 1e-8, weight decay 0.
    fn default() -> Self {
        AdamWConfig {
            lr: 5e-5,
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            weight_decay: 0.0,
        }
    }
}

/// Whether a parameter gets weight decay by default: every parameter except
/// biases and normalisation weights, the grouping HF Trainer's
/// `get_decay_parameter_names` makes (names containing `bias`, `layernorm`,
/// `rmsnorm`, a `norm` path segment or a `_norm` suffix — for Qwen3
/// `input_layernorm`, `post_attention_layernorm`, `q_norm`, `k_norm` and
/// `model.norm`). LoRA `A`/`B` matrices are decayed, as with PEFT + Trainer.
pub fn default_decay(name: &str) -> bool {
    let name = name.to_ascii_lowercase();
    if name.contains("bias") || name.contains("layernorm") || name.contains("rmsnorm") {
        return false;
    }
    !name
        .split('.')
        .any(|segment| segment == "norm" || segment.ends_with("_norm"))
}

/// One parameter and its optimiser state.
struct Param {
    name: String,
    var: Var,
    /// f32 copy that takes the updates when the Var is bf16/f16.
    master: Option<Tensor>,
    exp_avg: Tensor,
    exp_avg_sq: Tensor,
    step: u64,
    decay: bool,
}

impl Param {
    /// The f32 value the update applies to.
    fn value_f32(&self) -> Result<Tensor> {
        match &self.master {
            Some(master) => Ok(master.clone()),
            None => Ok(self.var.as_detached_tensor()),
        }
    }
}

/// AdamW with f32 state. See the module docs for the update.
pub struct AdamW {
    params: Vec<Param>,
    config: AdamWConfig,
}

/// Suffixes of the per-parameter entries of [`AdamW::state_tensors`].
const EXP_AVG: &str = "exp_avg";
const EXP_AVG_SQ: &str = "exp_avg_sq";
const STEP: &str = "step";
const MASTER: &str = "master";

impl AdamW {
    /// An optimiser over named parameters, decaying those [`default_decay`]
    /// accepts.
    pub fn new(vars: Vec<(String, Var)>, config: AdamWConfig) -> Result<Self> {
        Self::with_decay_filter(vars, config, default_decay)
    }

    /// An optimiser that decays the parameters whose name `decay` accepts.
    pub fn with_decay_filter(
        vars: Vec<(String, Var)>,
        config: AdamWConfig,
        decay: impl Fn(&str) -> bool,
    ) -> Result<Self> {
        let mut seen = HashSet::new();
        let mut params = Vec::with_capacity(vars.len());
        for (name, var) in vars {
            if !seen.insert(name.clone()) {
                candle_core::bail!("AdamW: parameter `{name}` is listed twice");
            }
            let master = match var.dtype() {
                DType::F32 => None,
                DType::BF16 | DType::F16 => Some(var.as_tensor().to_dtype(DType::F32)?),
                other => candle_core::bail!(
                    "AdamW: parameter `{name}` has dtype {other:?}; expected f32, bf16 or f16"
                ),
            };
            let zeros = Tensor::zeros(var.shape(), DType::F32, var.device())?;
            params.push(Param {
                decay: decay(&name),
                name,
                master,
                exp_avg: zeros.clone(),
                exp_avg_sq: zeros,
                step: 0,
                var,
            });
        }
        Ok(AdamW { params, config })
    }

    /// The hyper-parameters.
    pub fn config(&self) -> &AdamWConfig {
        &self.config
    }

    /// The parameters, in the order given (for [`clip_grad_norm`] and
    /// [`GradAccumulator`]).
    pub fn vars(&self) -> Vec<Var> {
        self.params.iter().map(|p| p.var.clone()).collect()
    }

    /// Whether the parameter `name` is decayed (`None`: no such parameter).
    pub fn decays(&self, name: &str) -> Option<bool> {
        self.params.iter().find(|p| p.name == name).map(|p| p.decay)
    }

    /// Steps taken by the parameter that stepped most (all of them, unless
    /// some had no gradient in some steps).
    pub fn steps(&self) -> u64 {
        self.params.iter().map(|p| p.step).max().unwrap_or(0)
    }

    /// One update with learning rate `lr` from the gradients in `grads`
    /// (any float dtype; they are read as f32). Parameters without a
    /// gradient are skipped.
    pub fn step(&mut self, grads: &GradStore, lr: f64) -> Result<()> {
        let AdamWConfig {
            beta1,
            beta2,
            eps,
            weight_decay,
            ..
        } = self.config;
        for param in &mut self.params {
            let Some(grad) = grads.get(param.var.as_tensor()) else {
                continue;
            };
            if grad.shape() != param.var.shape() {
                candle_core::bail!(
                    "AdamW: gradient of `{}` has shape {:?}, the parameter {:?}",
                    param.name,
                    grad.shape(),
                    param.var.shape()
                );
            }
            let grad = grad.detach().to_dtype(DType::F32)?;
            param.step += 1;
            let t = param.step as f64;

            let mut value = param.value_f32()?;
            if param.decay && weight_decay != 0.0 {
                value = value.affine(1.0 - lr * weight_decay, 0.0)?;
            }
            param.exp_avg = (param.exp_avg.affine(beta1, 0.0)? + grad.affine(1.0 - beta1, 0.0)?)?;
            param.exp_avg_sq =
                (param.exp_avg_sq.affine(beta2, 0.0)? + grad.sqr()?.affine(1.0 - beta2, 0.0)?)?;
            let bias_correction1 = 1.0 - beta1.powf(t);
            let bias_correction2_sqrt = (1.0 - beta2.powf(t)).sqrt();
            let denom = param
                .exp_avg_sq
                .sqrt()?
                .affine(1.0 / bias_correction2_sqrt, eps)?;
            let update = (&param.exp_avg / denom)?.affine(lr / bias_correction1, 0.0)?;
            let value = (value - update)?;

            match &mut param.master {
                Some(master) => {
                    param.var.set(&value.to_dtype(param.var.dtype())?)?;
                    *master = value;
                }
                None => param.var.set(&value)?,
            }
        }
        Ok(())
    }

    /// The state a checkpoint needs to resume exactly: per parameter
    /// `NAME.exp_avg`, `NAME.exp_avg_sq` (f32), `NAME.step` (i64 `[1]`, on
    /// the CPU) and, for bf16/f16 parameters, `NAME.master` (f32).
    pub fn state_tensors(&self) -> Result<HashMap<String, Tensor>> {
        let mut state = HashMap::with_capacity(self.params.len() * 3);
        for p in &self.params {
            state.insert(format!("{}.{EXP_AVG}", p.name), p.exp_avg.clone());
            state.insert(format!("{}.{EXP_AVG_SQ}", p.name), p.exp_avg_sq.clone());
            state.insert(
                format!("{}.{STEP}", p.name),
                Tensor::new(&[p.step as i64], &Device::Cpu)?,
            );
            if let Some(master) = &p.master {
                state.insert(format!("{}.{MASTER}", p.name), master.clone());
            }
        }
        Ok(state)
    }

    /// Restores what [`AdamW::state_tensors`] saved, for the same parameter
    /// names and shapes; a missing or extra entry is an error naming it.
    pub fn load_state(&mut self, state: &HashMap<String, Tensor>) -> Result<()> {
        let mut used = HashSet::new();
        for p in &mut self.params {
            let device = p.var.device().clone();
            let mut take = |suffix: &str, shape: &candle_core::Shape| -> Result<Tensor> {
                let key = format!("{}.{suffix}", p.name);
                let Some(tensor) = state.get(&key) else {
                    candle_core::bail!("optimiser state: missing `{key}`");
                };
                if tensor.shape() != shape {
                    candle_core::bail!(
                        "optimiser state: `{key}` has shape {:?}, expected {:?}",
                        tensor.shape(),
                        shape
                    );
                }
                used.insert(key);
                tensor.to_dtype(DType::F32)?.to_device(&device)
            };
            let shape = p.var.shape().clone();
            let exp_avg = take(EXP_AVG, &shape)?;
            let exp_avg_sq = take(EXP_AVG_SQ, &shape)?;
            let step = take(STEP, &candle_core::Shape::from(1))?;
            let master = match p.master {
                Some(_) => Some(take(MASTER, &shape)?),
                None => None,
            };
            // f32 holds step counts exactly up to 2^24, far beyond any run.
            let step = step.to_vec1::<f32>()?[0];
            if !(step >= 0.0 && step.fract() == 0.0) {
                candle_core::bail!("optimiser state: `{}.{STEP}` is {step}", p.name);
            }
            p.exp_avg = exp_avg;
            p.exp_avg_sq = exp_avg_sq;
            p.step = step as u64;
            if let Some(master) = master {
                p.var.set(&master.to_dtype(p.var.dtype())?)?;
                p.master = Some(master);
            }
        }
        if let Some(extra) = state.keys().filter(|k| !used.contains(*k)).min() {
            candle_core::bail!("optimiser state: `{extra}` matches no trained parameter");
        }
        Ok(())
    }
}

/// Scales the gradients of `vars` so their global L2 norm is at most
/// `max_norm`, like `torch.nn.utils.clip_grad_norm_` (factor
/// `max_norm / (norm + 1e-6)` when below 1), and returns the norm before
/// clipping, computed in f32. `max_norm <= 0` only measures. A non-finite
/// norm (an overflow or NaN somewhere) is returned with the gradients left
/// as they are, so the caller can report it and skip the step rather than
/// poison the weights.
pub fn clip_grad_norm(grads: &mut GradStore, vars: &[Var], max_norm: f64) -> Result<f64> {
    // One device-side sum and a single read back, however many parameters.
    let mut total: Option<Tensor> = None;
    for var in vars {
        if let Some(grad) = grads.get(var.as_tensor()) {
            let squares = grad.detach().to_dtype(DType::F32)?.sqr()?.sum_all()?;
            total = Some(match total {
                Some(t) => (t + squares)?,
                None => squares,
            });
        }
    }
    let Some(total) = total else {
        return Ok(0.0);
    };
    let norm = total.to_scalar::<f32>()?.sqrt() as f64;
    if !norm.is_finite() || max_norm <= 0.0 {
        return Ok(norm);
    }
    let coef = max_norm / (norm + 1e-6);
    if coef < 1.0 {
        for var in vars {
            if let Some(grad) = grads.get(var.as_tensor()) {
                let scaled = grad.affine(coef, 0.0)?;
                grads.insert(var.as_tensor(), scaled);
            }
        }
    }
    Ok(norm)
}

/// Sums gradients over micro-batches (gradient accumulation).
///
/// Scaling, for a loss that is a mean over the micro-batch's tokens
/// (`sum(logp·mask) / sum(mask)`):
/// - [`GradAccumulator::take`] averages the micro-batch gradients (HF
///   Trainer's division of each loss by `gradient_accumulation_steps`). This
///   equals the gradient of the mean over all the accumulated tokens when the
///   micro-batches hold equally many trained tokens (e.g. a per-sample mean
///   with equal sample counts).
/// - For the exact token mean with unequal micro-batches, add each with
///   [`GradAccumulator::add_scaled`] at `sum(mask_i) / Σ sum(mask)` and finish
///   with [`GradAccumulator::take_sum`].
///
/// Sums are kept in f32 and handed back in f32.
#[derive(Default)]
pub struct GradAccumulator {
    sums: Vec<(Var, Tensor)>,
    index: HashMap<TensorId, usize>,
    micro_batches: usize,
}

impl GradAccumulator {
    /// An empty accumulator.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds one micro-batch's gradients of `vars` (vars without a gradient
    /// contribute nothing).
    pub fn add(&mut self, grads: &GradStore, vars: &[Var]) -> Result<()> {
        self.add_scaled(grads, vars, 1.0)
    }

    /// Adds one micro-batch's gradients times `scale`.
    pub fn add_scaled(&mut self, grads: &GradStore, vars: &[Var], scale: f64) -> Result<()> {
        for var in vars {
            let Some(grad) = grads.get(var.as_tensor()) else {
                continue;
            };
            let mut grad = grad.detach().to_dtype(DType::F32)?;
            if scale != 1.0 {
                grad = grad.affine(scale, 0.0)?;
            }
            match self.index.get(&var.id()) {
                Some(&i) => {
                    let sum = (&self.sums[i].1 + grad)?;
                    self.sums[i].1 = sum;
                }
                None => {
                    self.index.insert(var.id(), self.sums.len());
                    self.sums.push((var.clone(), grad));
                }
            }
        }
        self.micro_batches += 1;
        Ok(())
    }

    /// Micro-batches added since the last take.
    pub fn micro_batches(&self) -> usize {
        self.micro_batches
    }

    /// The mean of the added gradients (sum / micro-batches), emptying the
    /// accumulator.
    pub fn take(&mut self) -> Result<GradStore> {
        let scale = 1.0 / self.micro_batches.max(1) as f64;
        self.finish(scale)
    }

    /// The sum of the added gradients, emptying the accumulator.
    pub fn take_sum(&mut self) -> Result<GradStore> {
        self.finish(1.0)
    }

    fn finish(&mut self, scale: f64) -> Result<GradStore> {
        let mut store = GradStore::default();
        for (var, sum) in std::mem::take(&mut self.sums) {
            let grad = if scale == 1.0 {
                sum
            } else {
                sum.affine(scale, 0.0)?
            };
            store.insert(var.as_tensor(), grad);
        }
        self.index.clear();
        self.micro_batches = 0;
        Ok(store)
    }
}

#[cfg(test)]
// The reference numbers are torch's printed f32 values, kept verbatim.
#[allow(clippy::excessive_precision)]
mod tests {
    use super::*;

    // Printed by tests/fixtures/optim/make_expected.py (torch 2.x
    // torch.optim.AdamW, lr 1e-2 / 5e-3 / 2e-3, betas (0.9, 0.95), eps 1e-8,
    // weight decay 0.1 on `w`, none on the bias `b`).
    const TORCH_W: [[f32; 6]; 3] = [
        [
            0.4895000159740448,
            -0.30970001220703125,
            0.7892000079154968,
            0.08990000188350677,
            -0.8891000151634216,
            0.40959998965263367,
        ],
        [
            0.48433271050453186,
            -0.3139592707157135,
            0.7890926003456116,
            0.09156020730733871,
            -0.8903487920761108,
            0.409181147813797,
        ],
        [
            0.4822542667388916,
            -0.3141118884086609,
            0.7890070080757141,
            0.09090989083051682,
            -0.8895436525344849,
            0.4089966416358948,
        ],
    ];
    const TORCH_B: [[f32; 3]; 3] = [
        [
            0.1899999976158142,
            -0.10999999940395355,
            0.03999999910593033,
        ],
        [
            0.18507744371891022,
            -0.11441411823034286,
            0.04028723016381264,
        ],
        [
            0.18309584259986877,
            -0.11462951451539993,
            0.040359433740377426,
        ],
    ];
    // torch.nn.utils.clip_grad_norm_(max_norm=1.0) on 2·grad(w, 0), 2·grad(b, 1).
    const TORCH_CLIP_NORM: f64 = 4.458313941955566;
    const TORCH_CLIPPED_W: [f32; 6] = [
        0.28899604082107544,
        0.4420727491378784,
        0.38723573088645935,
        0.15027567744255066,
        -0.15736135840415955,
        -0.39098888635635376,
    ];
    const TORCH_CLIPPED_B: [f32; 3] = [
        0.4420727491378784,
        0.15027567744255066,
        -0.39098888635635376,
    ];

    fn cpu() -> Device {
        Device::Cpu
    }

    fn init(dtype: DType) -> (Var, Var) {
        let w = Tensor::new(&[[0.5f32, -0.3, 0.8], [0.1, -0.9, 0.4]], &cpu()).unwrap();
        let b = Tensor::new(&[0.2f32, -0.1, 0.05], &cpu()).unwrap();
        (
            Var::from_tensor(&w.to_dtype(dtype).unwrap()).unwrap(),
            Var::from_tensor(&b.to_dtype(dtype).unwrap()).unwrap(),
        )
    }

    /// The script's gradient: sin(0.7 (k + 1) (i + 1)) at step k, index i.
    fn grad(shape: &[usize], k: usize) -> Tensor {
        let n: usize = shape.iter().product();
        let values: Vec<f32> = (0..n)
            .map(|i| (0.7 * (k as f64 + 1.0) * (i as f64 + 1.0)).sin() as f32)
            .collect();
        Tensor::from_vec(values, shape, &cpu()).unwrap()
    }

    fn values(t: &Tensor) -> Vec<f32> {
        t.to_dtype(DType::F32)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1()
            .unwrap()
    }

    fn assert_close(got: &[f32], want: &[f32], tol: f32, what: &str) {
        for (i, (g, w)) in got.iter().zip(want).enumerate() {
            assert!((g - w).abs() <= tol, "{what}[{i}]: {g} vs {w}");
        }
        assert_eq!(got.len(), want.len(), "{what}");
    }

    fn config() -> AdamWConfig {
        AdamWConfig {
            lr: 1e-2,
            beta1: 0.9,
            beta2: 0.95,
            eps: 1e-8,
            weight_decay: 0.1,
        }
    }

    fn named(w: &Var, b: &Var) -> Vec<(String, Var)> {
        vec![
            ("model.layers.0.mlp.up_proj.weight".into(), w.clone()),
            ("model.layers.0.mlp.up_proj.bias".into(), b.clone()),
        ]
    }

    fn grads_for(w: &Var, b: &Var, k: usize) -> GradStore {
        let mut grads = GradStore::default();
        grads.insert(w.as_tensor(), grad(&[2, 3], k));
        grads.insert(b.as_tensor(), grad(&[3], k));
        grads
    }

    #[test]
    fn three_steps_match_torch_adamw() {
        let (w, b) = init(DType::F32);
        let mut opt = AdamW::new(named(&w, &b), config()).unwrap();
        assert_eq!(opt.decays("model.layers.0.mlp.up_proj.weight"), Some(true));
        assert_eq!(opt.decays("model.layers.0.mlp.up_proj.bias"), Some(false));
        for (k, lr) in [1e-2, 5e-3, 2e-3].into_iter().enumerate() {
            opt.step(&grads_for(&w, &b, k), lr).unwrap();
            assert_close(
                &values(w.as_tensor()),
                &TORCH_W[k],
                2e-7,
                &format!("w step {}", k + 1),
            );
            assert_close(
                &values(b.as_tensor()),
                &TORCH_B[k],
                2e-7,
                &format!("b step {}", k + 1),
            );
        }
        assert_eq!(opt.steps(), 3);
    }

    #[test]
    fn resuming_from_saved_state_continues_exactly() {
        let (w, b) = init(DType::F32);
        let mut opt = AdamW::new(named(&w, &b), config()).unwrap();
        opt.step(&grads_for(&w, &b, 0), 1e-2).unwrap();
        let saved: HashMap<String, Tensor> = opt
            .state_tensors()
            .unwrap()
            .into_iter()
            .map(|(k, t)| (k, t.copy().unwrap()))
            .collect();
        assert_eq!(saved.len(), 6);
        let (w_saved, b_saved) = (w.as_tensor().copy().unwrap(), b.as_tensor().copy().unwrap());

        // A new optimiser over restored weights takes the same steps 2 and 3.
        let w2 = Var::from_tensor(&w_saved).unwrap();
        let b2 = Var::from_tensor(&b_saved).unwrap();
        let mut resumed = AdamW::new(named(&w2, &b2), config()).unwrap();
        resumed.load_state(&saved).unwrap();
        assert_eq!(resumed.steps(), 1);
        for (k, lr) in [(1, 5e-3), (2, 2e-3)] {
            opt.step(&grads_for(&w, &b, k), lr).unwrap();
            resumed.step(&grads_for(&w2, &b2, k), lr).unwrap();
        }
        assert_eq!(values(w.as_tensor()), values(w2.as_tensor()));
        assert_eq!(values(b.as_tensor()), values(b2.as_tensor()));

        // Mismatches name the key.
        let mut missing = saved.clone();
        missing.remove("model.layers.0.mlp.up_proj.weight.exp_avg_sq");
        let err = resumed.load_state(&missing).unwrap_err().to_string();
        assert!(err.contains("up_proj.weight.exp_avg_sq"), "{err}");
        let mut extra = saved.clone();
        extra.insert(
            "lm_head.weight.exp_avg".into(),
            Tensor::zeros(1, DType::F32, &cpu()).unwrap(),
        );
        let err = resumed.load_state(&extra).unwrap_err().to_string();
        assert!(err.contains("lm_head.weight.exp_avg"), "{err}");
    }

    #[test]
    fn bf16_parameters_update_through_an_f32_master_copy() {
        let one = Tensor::ones(4, DType::BF16, &cpu()).unwrap();
        let p = Var::from_tensor(&one).unwrap();
        let cfg = AdamWConfig {
            weight_decay: 0.0,
            ..config()
        };
        let mut opt = AdamW::new(vec![("x.weight".into(), p.clone())], cfg).unwrap();
        // Each step moves the value by ~lr = 1e-4, far below bf16's spacing
        // at 1.0 (2^-7): only a master copy accumulates them.
        for _ in 0..100 {
            let mut grads = GradStore::default();
            grads.insert(p.as_tensor(), Tensor::ones(4, DType::BF16, &cpu()).unwrap());
            opt.step(&grads, 1e-4).unwrap();
        }
        let state = opt.state_tensors().unwrap();
        let master = values(&state["x.weight.master"]);
        assert_close(&master, &[0.99; 4], 1e-5, "master");
        assert_eq!(p.dtype(), DType::BF16);
        // The Var holds the master rounded to bf16.
        let expected = values(&state["x.weight.master"].to_dtype(DType::BF16).unwrap());
        assert_eq!(values(p.as_tensor()), expected);
        assert!(values(p.as_tensor())[0] < 1.0);
    }

    #[test]
    fn parameters_without_a_gradient_are_left_alone() {
        let (w, b) = init(DType::F32);
        let mut opt = AdamW::new(named(&w, &b), config()).unwrap();
        let mut grads = GradStore::default();
        grads.insert(w.as_tensor(), grad(&[2, 3], 0));
        opt.step(&grads, 1e-2).unwrap();
        assert_eq!(values(b.as_tensor()), vec![0.2, -0.1, 0.05]);
        assert_close(&values(w.as_tensor()), &TORCH_W[0], 2e-7, "w");
    }

    #[test]
    fn default_decay_skips_biases_and_norms_like_hf() {
        for name in [
            "model.layers.0.input_layernorm.weight",
            "model.layers.0.post_attention_layernorm.weight",
            "model.layers.0.self_attn.q_norm.weight",
            "model.layers.0.self_attn.k_norm.weight",
            "model.norm.weight",
            "model.layers.0.self_attn.q_proj.bias",
        ] {
            assert!(!default_decay(name), "{name}");
        }
        for name in [
            "model.embed_tokens.weight",
            "model.layers.0.self_attn.q_proj.weight",
            "lm_head.weight",
            "base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight",
        ] {
            assert!(default_decay(name), "{name}");
        }
    }

    #[test]
    fn clipping_matches_torch_and_reports_the_norm_before() {
        let (w, b) = init(DType::F32);
        let mut grads = GradStore::default();
        grads.insert(w.as_tensor(), grad(&[2, 3], 0).affine(2.0, 0.0).unwrap());
        grads.insert(b.as_tensor(), grad(&[3], 1).affine(2.0, 0.0).unwrap());
        let vars = [w.clone(), b.clone()];
        let norm = clip_grad_norm(&mut grads, &vars, 1.0).unwrap();
        assert!((norm - TORCH_CLIP_NORM).abs() < 1e-5, "{norm}");
        assert_close(
            &values(grads.get(w.as_tensor()).unwrap()),
            &TORCH_CLIPPED_W,
            1e-6,
            "w.grad",
        );
        assert_close(
            &values(grads.get(b.as_tensor()).unwrap()),
            &TORCH_CLIPPED_B,
            1e-6,
            "b.grad",
        );

        // Below the threshold nothing changes; the norm is still reported.
        let before = values(grads.get(w.as_tensor()).unwrap());
        let norm = clip_grad_norm(&mut grads, &vars, 10.0).unwrap();
        assert!((norm - 1.0).abs() < 1e-5, "{norm}");
        assert_eq!(values(grads.get(w.as_tensor()).unwrap()), before);
    }

    #[test]
    fn a_non_finite_norm_is_reported_and_gradients_kept() {
        let (w, b) = init(DType::F32);
        let mut grads = GradStore::default();
        let bad = Tensor::new(&[1.0f32, f32::NAN, 2.0], &cpu()).unwrap();
        grads.insert(b.as_tensor(), bad);
        grads.insert(w.as_tensor(), grad(&[2, 3], 0));
        let norm = clip_grad_norm(&mut grads, &[w.clone(), b.clone()], 1.0).unwrap();
        assert!(norm.is_nan());
        assert_eq!(
            values(grads.get(w.as_tensor()).unwrap()),
            values(&grad(&[2, 3], 0))
        );
    }

    /// Loss `mean_i (x_i·w - y_i)²` over the rows of `x`.
    fn mse_grads(w: &Var, x: &[[f32; 3]], y: &[f32]) -> GradStore {
        let rows = x.len();
        let x = Tensor::from_vec(x.concat(), (rows, 3), &cpu()).unwrap();
        let y = Tensor::new(y, &cpu()).unwrap();
        let pred = x
            .matmul(&w.as_tensor().unsqueeze(1).unwrap())
            .unwrap()
            .squeeze(1)
            .unwrap();
        let loss = (pred - y).unwrap().sqr().unwrap().mean_all().unwrap();
        loss.backward().unwrap()
    }

    const X: [[f32; 3]; 4] = [
        [1.0, 2.0, 0.5],
        [-1.0, 0.3, 2.0],
        [0.7, -0.2, 1.1],
        [0.0, 1.5, -0.4],
    ];
    const Y: [f32; 4] = [1.0, -2.0, 0.5, 3.0];

    #[test]
    fn two_accumulated_micro_batches_equal_one_batch() {
        let w = Var::new(&[0.3f32, -0.2, 0.1], &cpu()).unwrap();
        let vars = [w.clone()];
        let full = mse_grads(&w, &X, &Y);

        let mut acc = GradAccumulator::new();
        acc.add(&mse_grads(&w, &X[..2], &Y[..2]), &vars).unwrap();
        acc.add(&mse_grads(&w, &X[2..], &Y[2..]), &vars).unwrap();
        assert_eq!(acc.micro_batches(), 2);
        let accumulated = acc.take().unwrap();
        assert_close(
            &values(accumulated.get(w.as_tensor()).unwrap()),
            &values(full.get(w.as_tensor()).unwrap()),
            1e-6,
            "mean of equal micro-batches",
        );
        assert_eq!(acc.micro_batches(), 0);

        // Unequal micro-batches (1 + 3 samples): weight each by its share.
        acc.add_scaled(&mse_grads(&w, &X[..1], &Y[..1]), &vars, 0.25)
            .unwrap();
        acc.add_scaled(&mse_grads(&w, &X[1..], &Y[1..]), &vars, 0.75)
            .unwrap();
        let accumulated = acc.take_sum().unwrap();
        assert_close(
            &values(accumulated.get(w.as_tensor()).unwrap()),
            &values(full.get(w.as_tensor()).unwrap()),
            1e-6,
            "weighted unequal micro-batches",
        );
    }
}

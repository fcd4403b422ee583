//! LoRA adapters: `y = W x + scale * B A dropout(x)`, initialised, scaled,
//! targeted and named the way PEFT does it, so adapters trained here load in
//! PEFT and the other way round.
//!
//! * Initialisation (`init_lora_weights=True`): `A` `[r, in]` from
//!   `kaiming_uniform_(a=sqrt(5))`, i.e. `U(-1/sqrt(in), 1/sqrt(in))`; `B`
//!   `[out, r]` zero, so training starts exactly at the base model. The
//!   values come from a seeded [`StdRng`] on the CPU (not candle's device
//!   rng), so the same seed gives the same adapter on every device.
//! * Scale: `alpha / r`, or `alpha / sqrt(r)` with rsLoRA.
//! * Dropout (training mode only) is a mask over the input drawn from a
//!   seeded rng keyed by the adapter's seed and its *dropout step*
//!   ([`Lora::set_dropout_step`]). The mask is a pure function of (seed,
//!   step, input shape): a run is reproducible, and a forward pass recomputed
//!   by gradient checkpointing sees the very same mask. The trainer advances
//!   the step once per micro-batch ([`set_dropout_step`]); forward passes
//!   within one step share the mask.
//! * Targets: PEFT's rule for a list — a module matches a target if its name
//!   equals it or ends with `.target`; `all-linear` is every linear but
//!   `lm_head`.

use std::sync::atomic::{AtomicU64, Ordering};

use anyhow::bail;
use candle_core::{DType, Device, Result, Tensor, Var};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::model::linear::Linear;

/// What to adapt and how (PEFT's `LoraConfig` fields that matter here).
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct LoraSpec {
    /// `r`.
    pub rank: usize,
    /// `lora_alpha`.
    pub alpha: f64,
    /// `lora_dropout`, probability of zeroing an input element in training.
    pub dropout: f32,
    /// Module names or suffixes (`q_proj`), or `["all-linear"]`.
    pub target_modules: Vec<String>,
    /// `use_rslora`: scale by `alpha / sqrt(r)` instead of `alpha / r`.
    pub rslora: bool,
}

/// PEFT's shorthand for every linear layer except the output head.
pub const ALL_LINEAR: &str = "all-linear";

/// The linear modules of a Qwen3 decoder layer, in model order; what
/// `all-linear` expands to.
pub const QWEN3_LINEARS: [&str; 7] = [
    "q_proj",
    "k_proj",
    "v_proj",
    "o_proj",
    "gate_proj",
    "up_proj",
    "down_proj",
];

impl LoraSpec {
    /// The multiplier of `B A x`.
    pub fn scale(&self) -> f64 {
        if self.rslora {
            self.alpha / (self.rank as f64).sqrt()
        } else {
            self.alpha / self.rank as f64
        }
    }

    /// Checks the numbers and the target list.
    pub fn validate(&self) -> anyhow::Result<()> {
        if self.rank == 0 {
            bail!("lora_rank must be at least 1");
        }
        if !(0.0..1.0).contains(&self.dropout) {
            bail!("lora_dropout must be in [0, 1), got {}", self.dropout);
        }
        if !self.alpha.is_finite() {
            bail!("lora_alpha must be a finite number, got {}", self.alpha);
        }
        if self.target_modules.is_empty() {
            bail!("target_modules is empty: name modules such as q_proj, v_proj or use all-linear");
        }
        Ok(())
    }
}

/// One low-rank adapter on a linear layer.
pub struct Lora {
    /// `[rank, in_features]`.
    pub a: Var,
    /// `[out_features, rank]`, zero at start so training begins at the base model.
    pub b: Var,
    /// `alpha / rank` (or `alpha / sqrt(rank)` with rsLoRA).
    pub scale: f64,
    /// Dropout probability on the input in training mode.
    pub dropout: f32,
    /// Seed of the initialisation and of the dropout masks.
    pub seed: u64,
    /// Key of the current dropout mask; see the module docs.
    dropout_step: AtomicU64,
}

impl Lora {
    /// A fresh f32 adapter initialised like PEFT (`A` kaiming-uniform, `B` zero).
    pub fn new(
        in_f: usize,
        out_f: usize,
        spec: &LoraSpec,
        seed: u64,
        device: &Device,
    ) -> Result<Lora> {
        let mut rng = StdRng::seed_from_u64(seed);
        // kaiming_uniform_(a=sqrt(5)) on [r, in]: gain sqrt(2/(1+5)), bound
        // gain * sqrt(3/fan_in) = 1/sqrt(in).
        let bound = 1.0 / (in_f as f32).sqrt();
        let a: Vec<f32> = (0..spec.rank * in_f)
            .map(|_| rng.random_range(-bound..bound))
            .collect();
        let a = Tensor::from_vec(a, (spec.rank, in_f), device)?;
        let b = Tensor::zeros((out_f, spec.rank), DType::F32, device)?;
        Lora::from_tensors(a, b, spec.scale(), spec.dropout, seed)
    }

    /// An adapter with given weights (e.g. loaded from a PEFT folder).
    pub fn from_tensors(a: Tensor, b: Tensor, scale: f64, dropout: f32, seed: u64) -> Result<Lora> {
        let (r, _) = a.dims2()?;
        let (_, rb) = b.dims2()?;
        if r != rb {
            candle_core::bail!(
                "lora: A is {:?} and B is {:?}, ranks differ",
                a.dims(),
                b.dims()
            );
        }
        Ok(Lora {
            a: Var::from_tensor(&a)?,
            b: Var::from_tensor(&b)?,
            scale,
            dropout,
            seed,
            dropout_step: AtomicU64::new(0),
        })
    }

    /// `rank`.
    pub fn rank(&self) -> usize {
        self.a.dim(0).unwrap_or(0)
    }

    /// Sets the key of the dropout mask for the following training passes.
    pub fn set_dropout_step(&self, step: u64) {
        self.dropout_step.store(step, Ordering::Relaxed);
    }

    /// The adapter's contribution `scale * dropout(x) A^T B^T` for `x` `[.., in]`,
    /// in `x`'s dtype (the adapter's own dtype is used for the products).
    pub fn forward(&self, x: &Tensor, training: bool) -> Result<Tensor> {
        let a = self.a.as_tensor();
        let b = self.b.as_tensor();
        let xa = x.to_dtype(a.dtype())?;
        let xa = if training && self.dropout > 0.0 {
            (xa * self.dropout_mask(x.dims(), a.dtype(), x.device())?)?
        } else {
            xa
        };
        let dims = x.dims().to_vec();
        let Some((&in_f, lead)) = dims.split_last() else {
            candle_core::bail!("lora: input is a scalar")
        };
        let rows: usize = lead.iter().product();
        let h = xa.reshape((rows, in_f))?.matmul(&a.t()?)?;
        let y = (h.matmul(&b.t()?)? * self.scale)?;
        let mut out = dims;
        *out.last_mut().expect("checked above") = b.dim(0)?;
        y.reshape(out)?.to_dtype(x.dtype())
    }

    /// Inverted-dropout mask: 0 with probability `p`, else `1/(1-p)`.
    fn dropout_mask(&self, dims: &[usize], dtype: DType, device: &Device) -> Result<Tensor> {
        let step = self.dropout_step.load(Ordering::Relaxed);
        let mut rng = StdRng::seed_from_u64(mix(self.seed ^ 0x6c6f_7261_6472_6f70, step));
        let keep = 1.0 / (1.0 - self.dropout);
        let n: usize = dims.iter().product();
        let mask: Vec<f32> = (0..n)
            .map(|_| {
                if rng.random::<f32>() < self.dropout {
                    0.0
                } else {
                    keep
                }
            })
            .collect();
        Tensor::from_vec(mask, dims, device)?.to_dtype(dtype)
    }

    /// `scale * B A` `[out, in]` in f32: what a merge adds to the base weight.
    pub fn delta_weight(&self) -> Result<Tensor> {
        let a = self.a.as_tensor().to_dtype(DType::F32)?;
        let b = self.b.as_tensor().to_dtype(DType::F32)?;
        b.matmul(&a)? * self.scale
    }
}

/// SplitMix64 of `a` combined with `b`: well-spread seeds from structured inputs.
fn mix(a: u64, b: u64) -> u64 {
    let mut z = a ^ b.wrapping_mul(0x9e37_79b9_7f4a_7c15);
    z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// FNV-1a of a module name, so each module's seed depends on its name and
/// not on the order modules are visited.
fn name_hash(name: &str) -> u64 {
    name.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ b as u64).wrapping_mul(0x0100_0000_01b3)
    })
}

/// The seed of the adapter on `module_name` for a run seeded with `seed`.
pub fn module_seed(seed: u64, module_name: &str) -> u64 {
    mix(seed, name_hash(module_name))
}

/// Whether `module_name` (an HF module path) is adapted under `spec`.
pub fn matches_target(spec: &LoraSpec, module_name: &str) -> bool {
    spec.target_modules
        .iter()
        .any(|t| target_matches(t, module_name))
}

fn target_matches(target: &str, module_name: &str) -> bool {
    if target == ALL_LINEAR {
        return short_name(module_name) != "lm_head";
    }
    module_name == target
        || module_name
            .strip_suffix(target)
            .is_some_and(|head| head.ends_with('.'))
}

/// The last component of a module path (`q_proj` of `model.layers.0.self_attn.q_proj`).
pub fn short_name(module_name: &str) -> &str {
    module_name.rsplit('.').next().unwrap_or(module_name)
}

/// PEFT's tensor names of the adapter on `module_name`:
/// `base_model.model.{module}.lora_A.weight` and `...lora_B.weight`.
pub fn peft_names(module_name: &str) -> (String, String) {
    (
        format!("base_model.model.{module_name}.lora_A.weight"),
        format!("base_model.model.{module_name}.lora_B.weight"),
    )
}

/// Attaches a fresh adapter to every linear matched by `spec` (replacing
/// any adapter there) and returns how many were attached. A target that
/// matches no linear is an error naming it and the valid names.
pub fn attach_lora_to<'a>(
    linears: impl IntoIterator<Item = &'a mut Linear>,
    spec: &LoraSpec,
    seed: u64,
) -> anyhow::Result<usize> {
    spec.validate()?;
    let mut linears: Vec<&mut Linear> = linears.into_iter().collect();
    check_targets(linears.iter().map(|l| l.name.as_str()), spec)?;
    let mut count = 0;
    for lin in linears.iter_mut().filter(|l| matches_target(spec, &l.name)) {
        let (out_f, in_f) = lin.shape();
        let device = base_device(lin);
        lin.lora = Some(Lora::new(
            in_f,
            out_f,
            spec,
            module_seed(seed, &lin.name),
            &device,
        )?);
        count += 1;
    }
    Ok(count)
}

/// [`attach_lora_to`] over all linears of a Qwen3 model.
pub fn attach_lora(
    model: &mut crate::model::qwen3::Qwen3,
    spec: &LoraSpec,
    seed: u64,
) -> anyhow::Result<usize> {
    attach_lora_to(model.linears_mut(), spec, seed)
}

/// Errors unless every target in `spec` matches at least one of `names`.
pub fn check_targets<'a>(
    names: impl IntoIterator<Item = &'a str> + Clone,
    spec: &LoraSpec,
) -> anyhow::Result<()> {
    for target in &spec.target_modules {
        if !names.clone().into_iter().any(|n| target_matches(target, n)) {
            let mut valid: Vec<&str> = Vec::new();
            for n in names.clone() {
                let s = short_name(n);
                if s != "lm_head" && !valid.contains(&s) {
                    valid.push(s);
                }
            }
            valid.push(ALL_LINEAR);
            bail!(
                "target module \"{target}\" matches no linear layer of the model; valid names: {}",
                valid.join(", ")
            );
        }
    }
    Ok(())
}

/// The device of a linear's base weight.
fn base_device(lin: &Linear) -> Device {
    use crate::model::linear::LinearBase;
    match &lin.base {
        LinearBase::Trainable(w) => w.device().clone(),
        LinearBase::Frozen(w) => w.device().clone(),
        LinearBase::Quantized(q) => q.device().clone(),
    }
}

/// Sets the dropout step of every adapter among `linears`.
pub fn set_dropout_step<'a>(linears: impl IntoIterator<Item = &'a Linear>, step: u64) {
    for lin in linears {
        if let Some(lora) = &lin.lora {
            lora.set_dropout_step(step);
        }
    }
}

/// The adapter variables among `linears` with their PEFT names, A before B,
/// in model order.
pub fn lora_vars<'a>(linears: impl IntoIterator<Item = &'a Linear>) -> Vec<(String, Var)> {
    let mut out = Vec::new();
    for lin in linears {
        if let Some(lora) = &lin.lora {
            let (a, b) = peft_names(&lin.name);
            out.push((a, lora.a.clone()));
            out.push((b, lora.b.clone()));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::linear::{LinearBase, Mode};

    fn spec(targets: &[&str]) -> LoraSpec {
        LoraSpec {
            rank: 4,
            alpha: 8.0,
            dropout: 0.0,
            target_modules: targets.iter().map(|s| s.to_string()).collect(),
            rslora: false,
        }
    }

    fn model_linears() -> Vec<Linear> {
        let mut v = Vec::new();
        for layer in 0..2 {
            for (m, s) in QWEN3_LINEARS.iter().enumerate() {
                let group = if m < 4 { "self_attn" } else { "mlp" };
                let w = Tensor::ones((6 + m, 5), DType::F32, &Device::Cpu).unwrap();
                v.push(Linear::new(
                    format!("model.layers.{layer}.{group}.{s}"),
                    LinearBase::Frozen(w),
                ));
            }
        }
        let head = Tensor::ones((11, 5), DType::F32, &Device::Cpu).unwrap();
        v.push(Linear::new("lm_head", LinearBase::Frozen(head)));
        v
    }

    #[test]
    fn targets_match_like_peft() {
        let s = spec(&["q_proj", "v_proj"]);
        assert!(matches_target(&s, "model.layers.0.self_attn.q_proj"));
        assert!(matches_target(&s, "q_proj"));
        assert!(!matches_target(&s, "model.layers.0.self_attn.k_proj"));
        // A suffix must start at a component boundary.
        assert!(!matches_target(&s, "model.layers.0.self_attn.xq_proj"));
        let full = spec(&["self_attn.q_proj"]);
        assert!(matches_target(&full, "model.layers.3.self_attn.q_proj"));
        let all = spec(&[ALL_LINEAR]);
        assert!(matches_target(&all, "model.layers.0.mlp.down_proj"));
        assert!(!matches_target(&all, "lm_head"));
    }

    #[test]
    fn init_is_kaiming_uniform_and_zero_and_seeded() {
        let s = spec(&["q_proj"]);
        let l = Lora::new(64, 32, &s, 7, &Device::Cpu).unwrap();
        assert_eq!(l.a.dims(), &[4, 64]);
        assert_eq!(l.b.dims(), &[32, 4]);
        let a =
            l.a.as_tensor()
                .flatten_all()
                .unwrap()
                .to_vec1::<f32>()
                .unwrap();
        let bound = 1.0 / 8.0;
        assert!(a.iter().all(|v| v.abs() <= bound));
        // Spread over the interval, not a constant.
        let max = a.iter().fold(0f32, |m, v| m.max(v.abs()));
        assert!(max > 0.9 * bound);
        assert_eq!(
            l.b.as_tensor()
                .abs()
                .unwrap()
                .sum_all()
                .unwrap()
                .to_scalar::<f32>()
                .unwrap(),
            0.0
        );
        assert_eq!(l.scale, 2.0);
        let again = Lora::new(64, 32, &s, 7, &Device::Cpu).unwrap();
        assert_eq!(
            a,
            again
                .a
                .as_tensor()
                .flatten_all()
                .unwrap()
                .to_vec1::<f32>()
                .unwrap()
        );
        let other = Lora::new(64, 32, &s, 8, &Device::Cpu).unwrap();
        assert_ne!(
            a,
            other
                .a
                .as_tensor()
                .flatten_all()
                .unwrap()
                .to_vec1::<f32>()
                .unwrap()
        );
    }

    #[test]
    fn rslora_scales_by_sqrt_rank() {
        let mut s = spec(&["q_proj"]);
        s.rank = 16;
        s.alpha = 32.0;
        assert_eq!(s.scale(), 2.0);
        s.rslora = true;
        assert_eq!(s.scale(), 8.0);
    }

    #[test]
    fn forward_is_scaled_low_rank_product() {
        let s = spec(&["q_proj"]);
        let a = Tensor::from_vec(
            (0..12).map(|i| i as f32 * 0.1).collect::<Vec<_>>(),
            (4, 3),
            &Device::Cpu,
        )
        .unwrap();
        let b = Tensor::from_vec(
            (0..8).map(|i| 1.0 - i as f32 * 0.2).collect::<Vec<_>>(),
            (2, 4),
            &Device::Cpu,
        )
        .unwrap();
        let l = Lora::from_tensors(a.clone(), b.clone(), s.scale(), 0.0, 1).unwrap();
        let x = Tensor::from_vec(
            (0..9).map(|i| i as f32 - 4.0).collect::<Vec<_>>(),
            (1, 3, 3),
            &Device::Cpu,
        )
        .unwrap();
        let y = l.forward(&x, true).unwrap();
        let want = (x
            .broadcast_matmul(&a.t().unwrap())
            .unwrap()
            .broadcast_matmul(&b.t().unwrap())
            .unwrap()
            * 2.0)
            .unwrap();
        let diff = (y - want)
            .unwrap()
            .abs()
            .unwrap()
            .max_all()
            .unwrap()
            .to_scalar::<f32>()
            .unwrap();
        assert!(diff < 1e-5);
        // delta_weight is scale * B A.
        let d = l.delta_weight().unwrap();
        let want = (b.matmul(&a).unwrap() * 2.0).unwrap();
        assert_eq!(d.to_vec2::<f32>().unwrap(), want.to_vec2::<f32>().unwrap());
    }

    #[test]
    fn dropout_is_seeded_per_step_and_off_in_eval() {
        let mut s = spec(&["q_proj"]);
        s.dropout = 0.5;
        let a = Tensor::ones((4, 8), DType::F32, &Device::Cpu).unwrap();
        let b = Tensor::ones((1, 4), DType::F32, &Device::Cpu).unwrap();
        let l = Lora::from_tensors(a, b, 1.0, 0.5, 3).unwrap();
        let x = Tensor::ones((2, 5, 8), DType::F32, &Device::Cpu).unwrap();
        let run = |step: u64, training: bool| {
            l.set_dropout_step(step);
            l.forward(&x, training)
                .unwrap()
                .flatten_all()
                .unwrap()
                .to_vec1::<f32>()
                .unwrap()
        };
        // Eval: no dropout: each output is 4 * 8.
        assert!(run(0, false).iter().all(|&v| v == 32.0));
        let s0 = run(0, true);
        assert_eq!(
            s0,
            run(0, true),
            "same step, same mask (checkpoint recompute)"
        );
        assert_ne!(s0, run(1, true), "next step, new mask");
        // Kept inputs are scaled by 2, so outputs are 4 * 2 * kept.
        assert!(s0.iter().all(|v| (v / 8.0).fract() == 0.0));
        let mean = s0.iter().sum::<f32>() / s0.len() as f32;
        assert!(
            (mean - 32.0).abs() < 16.0,
            "inverted dropout keeps the mean: {mean}"
        );
    }

    #[test]
    fn attach_matches_targets_and_names_unknown_ones() {
        let mut linears = model_linears();
        let n = attach_lora_to(linears.iter_mut(), &spec(&["q_proj", "v_proj"]), 1).unwrap();
        assert_eq!(n, 4);
        let names: Vec<String> = lora_vars(linears.iter())
            .into_iter()
            .map(|(n, _)| n)
            .collect();
        assert_eq!(
            names[0],
            "base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight"
        );
        assert_eq!(
            names[1],
            "base_model.model.model.layers.0.self_attn.q_proj.lora_B.weight"
        );
        assert_eq!(names.len(), 8);
        // Adapters start at zero: the output is the base output.
        let x = Tensor::ones((1, 2, 5), DType::F32, &Device::Cpu).unwrap();
        let q = &linears[0];
        assert_eq!(
            q.forward(&x, Mode::TRAIN)
                .unwrap()
                .to_vec3::<f32>()
                .unwrap(),
            q.forward(
                &x,
                Mode {
                    training: true,
                    adapters: false
                }
            )
            .unwrap()
            .to_vec3::<f32>()
            .unwrap()
        );
        // Seeds follow the module name: layer 0 and layer 1 differ.
        let a0 = linears[0]
            .lora
            .as_ref()
            .unwrap()
            .a
            .as_tensor()
            .to_vec2::<f32>()
            .unwrap();
        let a1 = linears[7]
            .lora
            .as_ref()
            .unwrap()
            .a
            .as_tensor()
            .to_vec2::<f32>()
            .unwrap();
        assert_ne!(a0, a1);

        let mut linears = model_linears();
        assert_eq!(
            attach_lora_to(linears.iter_mut(), &spec(&[ALL_LINEAR]), 1).unwrap(),
            14
        );
        assert!(
            linears.last().unwrap().lora.is_none(),
            "lm_head is not adapted"
        );

        let err = attach_lora_to(model_linears().iter_mut(), &spec(&["q_proj", "qproj"]), 1)
            .unwrap_err()
            .to_string();
        assert!(err.contains("\"qproj\""), "{err}");
        assert!(
            err.contains("q_proj, k_proj, v_proj, o_proj, gate_proj, up_proj, down_proj"),
            "{err}"
        );
    }

    #[test]
    fn bad_specs_are_refused() {
        let mut s = spec(&["q_proj"]);
        s.rank = 0;
        assert!(s.validate().unwrap_err().to_string().contains("lora_rank"));
        let mut s = spec(&["q_proj"]);
        s.dropout = 1.0;
        assert!(
            s.validate()
                .unwrap_err()
                .to_string()
                .contains("lora_dropout")
        );
        assert!(
            spec(&[])
                .validate()
                .unwrap_err()
                .to_string()
                .contains("target_modules")
        );
    }
}

//! Method plugins and the tensor API: the bundled `sft`, `lora` and `qlora`
//! plans and losses, every tensor operation through the WIT (values and
//! gradients against an independent reference), and plugins that return a
//! bad loss, trap or hoard tensors. Every call goes through a
//! [`MethodSession`], as the trainer's do.
//!
//! The policy is a fake whose log-probs are a candle `Var`, so gradients can
//! be checked without a model.

use std::sync::Arc;

use candle_core::{DType, Device, Tensor, Var};
use tuner::plugins::bindings::WitVersion;
use tuner::plugins::bindings::method::exports::tuner::plugin::method_plugin as wit;
use tuner::plugins::bindings::method::tuner::plugin::tensors::{Dtype, TensorError};
use tuner::plugins::imports::model::{
    AdapterPlan, MethodBatch, Plan, PolicyBackend, Quantization, Trainable,
};
use tuner::plugins::imports::tensors::ops;
use tuner::plugins::settings;
use tuner::plugins::{CallError, MethodSession, PluginHost, PluginLimits};
use tuner::sample::SampleKind;
use tuner_tests::{TestHome, install, test_limits};

const LP: [[f32; 4]; 2] = [[-0.3, -1.2, -2.5, -0.7], [-1.9, -0.15, -0.9, -2.2]];
const MASK: [[f32; 4]; 2] = [[1.0, 1.0, 0.0, 0.5], [0.0, 1.0, 1.0, 1.0]];
const IDS: [[u32; 5]; 2] = [[1, 2, 3, 4, 5], [6, 7, 8, 9, 10]];

/// Log-probs straight from a variable, so `backward` reaches it.
struct FakePolicy {
    logprobs: Var,
}

impl PolicyBackend for FakePolicy {
    fn token_logprobs(&self, _batch: &MethodBatch, _use_adapters: bool) -> anyhow::Result<Tensor> {
        Ok(self.logprobs.as_tensor().clone())
    }
}

fn policy(values: &[[f32; 4]; 2]) -> (Var, Arc<dyn PolicyBackend>) {
    let var = Var::from_tensor(&Tensor::new(values, &Device::Cpu).unwrap()).unwrap();
    (var.clone(), Arc::new(FakePolicy { logprobs: var }))
}

fn batch(mask: &[[f32; 4]; 2]) -> Arc<MethodBatch> {
    let ids = Tensor::new(&IDS, &Device::Cpu).unwrap();
    let mask = Tensor::new(mask, &Device::Cpu).unwrap();
    Arc::new(MethodBatch::new(SampleKind::Chat, ids, mask).unwrap())
}

fn flat(t: &Tensor) -> Vec<f32> {
    t.flatten_all().unwrap().to_vec1::<f32>().unwrap()
}

fn close(a: f64, b: f64, tol: f64) -> bool {
    (a - b).abs() <= tol * (1.0 + a.abs().max(b.abs()))
}

/// A host with the bundled plugins and the given test plugins installed.
fn host_with(limits: PluginLimits, test_plugins: &[&str]) -> (TestHome, PluginHost) {
    let home = TestHome::new();
    for name in test_plugins {
        install(home.plugin_dir(), name, name);
    }
    let host = home.start(limits);
    (home, host)
}

// ---------------------------------------------------------------- plans

/// Configures `method` as the trainer does: the config's keys checked
/// against the method's settings, then `start_method` with the values and
/// the whole config as the job. A refused value reads `` `key`: message ``.
fn start(host: &PluginHost, method: &str, config: &str) -> Result<MethodSession, String> {
    let plugin = host.method(method).unwrap();
    let given = serde_json::from_str::<serde_json::Value>(config)
        .ok()
        .and_then(|v| v.as_object().cloned())
        .unwrap_or_default();
    let schema = plugin.settings().map_err(|e| e.to_string())?;
    let values = settings::check(&schema, &given)
        .map_err(|p| format!("`{}`: {}", p[0].key, p[0].message))?;
    plugin
        .start_method(&values, config)
        .map_err(|e| e.to_string())
}

fn configure(host: &PluginHost, method: &str, config: &str) -> Result<Plan, String> {
    start(host, method, config).map(|s| s.plan().clone())
}

/// A session with the method's defaults.
fn session(host: &PluginHost, method: &str) -> MethodSession {
    start(host, method, "{}").unwrap()
}

fn adapter(rank: usize, alpha: f64, dropout: f32, targets: &[&str], rslora: bool) -> AdapterPlan {
    AdapterPlan {
        rank,
        alpha,
        dropout,
        target_modules: targets.iter().map(|s| s.to_string()).collect(),
        rslora,
    }
}

#[test]
fn bundled_methods_plan_from_the_job_config() {
    let host = TestHome::new().start(test_limits());

    let sft = configure(&host, "sft", r#"{"learning_rate": 1e-5}"#).unwrap();
    assert_eq!(sft.trains, Trainable::Full);
    assert_eq!(sft.adapter, None);
    assert_eq!(sft.base_quantization, Quantization::None);
    assert_eq!(sft.accepts, vec![SampleKind::Chat, SampleKind::Text]);
    assert!(!sft.needs_reference && !sft.needs_generation);

    // Defaults: rank 8, alpha 32 (ms-swift), dropout 0.05, all-linear.
    let lora = configure(&host, "lora", "{}").unwrap();
    assert_eq!(lora.trains, Trainable::Adapters);
    let default = adapter(8, 32.0, 0.05, &["all-linear"], false);
    assert_eq!(lora.adapter, Some(default.clone()));
    assert_eq!(lora.base_quantization, Quantization::None);

    // Unset options may arrive as null: defaults again. Keys of other
    // methods and of the trainer are ignored.
    let lora = configure(
        &host,
        "lora",
        r#"{"lora_rank": null, "target_modules": null, "load_in_4bit": false, "num_train_epochs": 3}"#,
    )
    .unwrap();
    assert_eq!(lora.adapter, Some(default.clone()));

    let lora = configure(
        &host,
        "lora",
        r#"{"lora_rank": 16, "lora_alpha": 8, "lora_dropout": 0, "target_modules": ["q_proj", "v_proj"], "use_rslora": true}"#,
    )
    .unwrap();
    assert_eq!(
        lora.adapter,
        Some(adapter(16, 8.0, 0.0, &["q_proj", "v_proj"], true))
    );

    // target_modules as one string, as on a command line.
    let lora = configure(&host, "lora", r#"{"target_modules": "q_proj, k_proj"}"#).unwrap();
    assert_eq!(
        lora.adapter.unwrap().target_modules,
        vec!["q_proj", "k_proj"]
    );

    // A quantised base under lora is QLoRA.
    let lora = configure(&host, "lora", r#"{"load_in_4bit": true}"#).unwrap();
    assert_eq!(lora.base_quantization, Quantization::Nf4);

    let qlora = configure(&host, "qlora", r#"{"load_in_4bit": false, "lora_rank": 4}"#).unwrap();
    assert_eq!(qlora.trains, Trainable::Adapters);
    assert_eq!(qlora.base_quantization, Quantization::Nf4);
    assert_eq!(qlora.adapter.unwrap().rank, 4);
    let qlora8 = configure(&host, "qlora", r#"{"load_in_8bit": true}"#).unwrap();
    assert_eq!(qlora8.base_quantization, Quantization::Int8);
    assert_eq!(qlora8.adapter, Some(default));
}

#[test]
fn bad_method_configs_name_the_plugin_and_the_key() {
    let host = TestHome::new().start(test_limits());
    // Values the schema rules out: refused by the host before the plugin
    // is called.
    let by_schema = [
        (
            "lora",
            r#"{"lora_rank": 0}"#,
            "`lora_rank`: must be at least 1, found 0",
        ),
        (
            "qlora",
            r#"{"lora_rank": 2.5}"#,
            "`lora_rank`: expected a whole number, found 2.5",
        ),
        (
            "lora",
            r#"{"lora_alpha": -1}"#,
            "`lora_alpha`: must be greater than 0, found -1",
        ),
        (
            "lora",
            r#"{"lora_alpha": "big"}"#,
            "`lora_alpha`: expected a number, found \"big\"",
        ),
        (
            "lora",
            r#"{"lora_dropout": 1}"#,
            "`lora_dropout`: must be below 1, found 1",
        ),
        (
            "lora",
            r#"{"target_modules": []}"#,
            "`target_modules`: the list of names is empty",
        ),
        (
            "lora",
            r#"{"target_modules": [3]}"#,
            "`target_modules`: expected names (strings), found 3",
        ),
        (
            "lora",
            r#"{"use_rslora": "maybe"}"#,
            "`use_rslora`: expected true or false, found \"maybe\"",
        ),
    ];
    for (method, config, message) in by_schema {
        let err = configure(&host, method, config).unwrap_err();
        assert_eq!(err, message, "{method} {config}");
    }
    // What the schema cannot express: refused by the plugin, named.
    let by_plugin = [
        (
            "lora",
            r#"{"target_modules": ["all-linear", "q_proj"]}"#,
            "`target_modules`: `all-linear` already covers every linear layer; give it alone",
        ),
        (
            "lora",
            r#"{"load_in_4bit": true, "load_in_8bit": true}"#,
            "`load_in_8bit`: load_in_4bit and load_in_8bit are both true; choose one",
        ),
    ];
    for (method, config, message) in by_plugin {
        let err = configure(&host, method, config).unwrap_err();
        assert_eq!(
            err,
            format!("plugin `{method}` failed in `configure`: {message}"),
            "{method} {config}"
        );
    }
}

#[test]
fn inconsistent_plans_are_refused() {
    let spec = wit::AdapterSpec {
        rank: 8,
        alpha: 16.0,
        dropout: 0.0,
        target_modules: vec!["q_proj".into()],
        rslora: false,
    };
    let plan = |trains, adapter: Option<wit::AdapterSpec>, q| wit::Plan {
        trains,
        adapter,
        base_quantization: q,
        needs_reference: false,
        needs_generation: false,
        accepts: vec![wit::BatchKind::Chat],
    };
    use wit::{Quantization as Q, Trainable as T};
    assert!(Plan::from_wit(plan(T::Adapters, Some(spec.clone()), Q::Nf4)).is_ok());
    let bad = [
        (plan(T::Adapters, None, Q::None), "no adapter spec"),
        (
            plan(T::Full, Some(spec.clone()), Q::None),
            "also gives an adapter spec",
        ),
        (plan(T::Full, None, Q::Int8), "quantised base"),
        (
            plan(
                T::Adapters,
                Some(wit::AdapterSpec {
                    rank: 0,
                    ..spec.clone()
                }),
                Q::None,
            ),
            "rank is 0",
        ),
        (
            plan(
                T::Adapters,
                Some(wit::AdapterSpec {
                    dropout: 1.0,
                    ..spec.clone()
                }),
                Q::None,
            ),
            "dropout",
        ),
        (
            plan(
                T::Adapters,
                Some(wit::AdapterSpec {
                    target_modules: vec![],
                    ..spec
                }),
                Q::None,
            ),
            "target",
        ),
    ];
    for (p, needle) in bad {
        let err = Plan::from_wit(p).unwrap_err();
        assert!(err.contains(needle), "{err}");
    }
}

// ---------------------------------------------------------------- losses

#[test]
fn bundled_losses_are_the_weighted_nll_and_differentiate() {
    let host = TestHome::new().start(test_limits());
    let weight: f32 = MASK.iter().flatten().sum();
    let expected: f32 = -LP
        .iter()
        .flatten()
        .zip(MASK.iter().flatten())
        .map(|(l, m)| l * m)
        .sum::<f32>()
        / weight;
    for method in ["sft", "lora", "qlora"] {
        let (var, policy) = policy(&LP);
        let out = session(&host, method)
            .loss(batch(&MASK), policy, 7)
            .unwrap();
        assert_eq!(out.loss.dims(), &[] as &[usize], "{method}: a 0-d loss");
        let loss = out.loss.to_scalar::<f32>().unwrap();
        assert!(
            (loss - expected).abs() < 1e-6,
            "{method}: {loss} vs {expected}"
        );
        assert!(out.metrics.is_empty());

        let grads = out.loss.backward().unwrap();
        let grad = flat(
            grads
                .get(var.as_tensor())
                .expect("gradient reaches the log-probs"),
        );
        let want: Vec<f32> = MASK.iter().flatten().map(|m| -m / weight).collect();
        for (g, w) in grad.iter().zip(&want) {
            assert!(
                (g - w).abs() < 1e-6,
                "{method}: gradient {grad:?} vs {want:?}"
            );
        }
    }
}

#[test]
fn an_all_zero_mask_gives_a_zero_loss_not_nan() {
    let host = TestHome::new().start(test_limits());
    let (var, policy) = policy(&LP);
    let out = session(&host, "lora")
        .loss(batch(&[[0.0; 4]; 2]), policy, 0)
        .unwrap();
    assert_eq!(out.loss.to_scalar::<f32>().unwrap(), 0.0);
    let grads = out.loss.backward().unwrap();
    assert!(
        flat(grads.get(var.as_tensor()).unwrap())
            .iter()
            .all(|g| *g == 0.0)
    );
}

// ---------------------------------------------------------------- every op

fn log_sigmoid(x: f64) -> f64 {
    -(1.0 + (-x).exp()).ln()
}

/// Each metric of the `tensor-probe` plugin, recomputed in f64 from the
/// log-probs `lp` (and `c`, the detached copy used by `detach` and
/// `log_sigmoid_zero`).
fn reference_terms(lp: &[f64], c: &[f64], step: u64) -> Vec<(&'static str, f64)> {
    let m: Vec<f64> = MASK.iter().flatten().map(|&v| v as f64).collect();
    let sum = |f: &dyn Fn(usize, f64) -> f64| -> f64 {
        lp.iter().enumerate().map(|(i, &x)| f(i, x)).sum()
    };
    let row = [-1.0, -0.5, -2.0, -0.2];
    let rows: Vec<&[f64]> = lp.chunks(4).collect();
    let mut terms = vec![
        ("add", sum(&|i, x| x + m[i])),
        ("sub", sum(&|i, x| x - m[i])),
        ("mul", sum(&|i, x| x * m[i])),
        ("div", sum(&|i, x| x / (m[i] + 1.0))),
        ("minimum", sum(&|_, x| x.min(-1.0))),
        ("maximum", sum(&|i, x| x.max(row[i % 4]))),
        ("add_scalar", sum(&|_, x| x + 2.5)),
        ("scale", sum(&|_, x| -3.0 * x)),
        ("neg", sum(&|_, x| -x)),
        ("exp", sum(&|_, x| x.exp())),
        ("log", sum(&|_, x| (-x).ln())),
        ("sigmoid", sum(&|_, x| 1.0 / (1.0 + (-2.0 * x).exp()))),
        ("sigmoid_far", sum(&|_, x| 1.0 / (1.0 + (-100.0 * x).exp()))),
        ("log_sigmoid", sum(&|_, x| log_sigmoid(x))),
        // log(sigmoid(-100 x)) for x < 0 is about 100 x: the naive formula
        // overflows to -inf in f32 here.
        (
            "log_sigmoid_far",
            sum(&|_, x| 100.0 * x - (1.0 + (100.0 * x).exp()).ln()),
        ),
        ("log_sigmoid_zero", sum(&|i, x| log_sigmoid(x - c[i]))),
        ("relu", sum(&|_, x| (x + 1.0).max(0.0))),
        ("sqr", sum(&|_, x| x * x)),
        ("sqrt", sum(&|_, x| (-x).sqrt())),
        ("abs", sum(&|_, x| x.abs())),
        ("clamp", sum(&|_, x| x.clamp(-1.5, -0.5))),
        (
            "sum_dim",
            rows.iter().map(|r| r.iter().sum::<f64>().powi(2)).sum(),
        ),
        (
            "mean_dim",
            (0..4).map(|j| ((lp[j] + lp[4 + j]) / 2.0).powi(2)).sum(),
        ),
        (
            "max",
            rows.iter()
                .map(|r| r.iter().cloned().fold(f64::MIN, f64::max))
                .sum(),
        ),
        ("mean_all", lp.iter().sum::<f64>() / 8.0),
        ("gather", lp[0] + lp[2] + lp[4 + 3] + lp[4 + 1]),
        ("narrow", lp[1] + lp[2] + lp[5] + lp[6]),
        ("reshape", lp[3] + lp[4]),
        (
            "where_else",
            sum(&|i, x| if m[i] != 0.0 { x } else { 0.25 }),
        ),
        ("to_dtype", lp.iter().sum()),
        ("detach", sum(&|i, x| c[i] * x)),
        ("reference", sum(&|i, x| c[i] * x)),
    ];
    if step >= 1 {
        // The softmax family (tuner:plugin@0.2.0), along each row.
        let lse = |r: &[f64]| {
            let m = r.iter().cloned().fold(f64::MIN, f64::max);
            m + r.iter().map(|x| (x - m).exp()).sum::<f64>().ln()
        };
        let lsm = |r: &[f64]| -> Vec<f64> { r.iter().map(|x| x - lse(r)).collect() };
        terms.extend([
            ("log_softmax", rows.iter().flat_map(|r| lsm(r)).sum()),
            (
                "softmax",
                rows.iter()
                    .flat_map(|r| lsm(r))
                    .map(|l| (2.0 * l).exp())
                    .sum(),
            ),
            ("logsumexp", rows.iter().map(|r| lse(r)).sum()),
            (
                "entropy",
                rows.iter().flat_map(|r| lsm(r)).map(|l| -l.exp() * l).sum(),
            ),
        ]);
    }
    terms
}

#[test]
fn every_tensor_op_through_the_wit_matches_an_independent_reference() {
    let (_home, host) = host_with(test_limits(), &["tensor-probe"]);
    // Step 0: the 0.1.0 ops; step 1 adds the softmax family (a probe built
    // for 0.2.0 only), in the same session.
    let mut probe = session(&host, "tensor-probe");
    let steps = match host.get("tensor-probe").unwrap().wit() {
        WitVersion::V0_1_0 => 0..1,
        _ => 0..2,
    };
    for step in steps {
        check_probe(&mut probe, step);
    }
}

fn check_probe(probe: &mut MethodSession, step: u64) {
    let (var, policy) = policy(&LP);
    let out = probe.loss(batch(&MASK), policy, step).unwrap();
    let metric = |name: &str| -> f64 {
        out.metrics
            .iter()
            .find(|(n, _)| n == name)
            .unwrap_or_else(|| panic!("metric {name} missing from {:?}", out.metrics))
            .1
    };
    let lp: Vec<f64> = LP.iter().flatten().map(|&v| v as f64).collect();
    assert_eq!(metric("shape_ok"), 1.0);
    assert_eq!(metric("ids_u32"), 1.0);
    assert_eq!(metric("ids_sum"), 55.0);
    assert_eq!(metric("mean_dim_rank"), 2.0);
    assert!(close(metric("to_list"), lp.iter().sum(), 1e-6));

    let terms = reference_terms(&lp, &lp, step);
    for (name, want) in &terms {
        // bf16 keeps 8 bits of mantissa.
        let tol = if *name == "to_dtype" { 1e-2 } else { 1e-5 };
        assert!(
            close(metric(name), *want, tol),
            "step {step}, {name}: {} vs {want}",
            metric(name)
        );
    }
    let total: f64 = terms.iter().map(|(_, v)| v).sum();
    let loss = out.loss.to_scalar::<f32>().unwrap() as f64;
    assert!(close(loss, total, 1e-4), "loss {loss} vs {total}");

    // Gradient: central differences of the f64 reference (the detached copy
    // held fixed), against candle's backward through the plugin's graph.
    let grads = out.loss.backward().unwrap();
    let grad = flat(
        grads
            .get(var.as_tensor())
            .expect("gradient reaches the log-probs"),
    );
    let f = |x: &[f64]| -> f64 { reference_terms(x, &lp, step).iter().map(|(_, v)| v).sum() };
    for i in 0..8 {
        let h = 1e-6;
        let (mut up, mut down) = (lp.clone(), lp.clone());
        up[i] += h;
        down[i] -= h;
        let want = (f(&up) - f(&down)) / (2.0 * h);
        assert!(
            close(grad[i] as f64, want, 2e-4),
            "d loss / d lp[{i}]: {} vs {want}",
            grad[i]
        );
    }
}

#[test]
fn log_sigmoid_has_the_right_gradient_at_zero_and_far_out() {
    let x =
        Var::from_tensor(&Tensor::new(&[0f32, -200.0, 200.0, 3.0], &Device::Cpu).unwrap()).unwrap();
    for (op, want_value, want_grad) in [
        (
            ops::log_sigmoid as fn(&Tensor) -> ops::OpResult,
            [-(2f64.ln()), -200.0, 0.0, log_sigmoid(3.0)],
            [0.5, 1.0, 0.0, 1.0 - 1.0 / (1.0 + (-3f64).exp())],
        ),
        (
            ops::sigmoid,
            [0.5, 0.0, 1.0, 1.0 / (1.0 + (-3f64).exp())],
            [0.25, 0.0, 0.0, {
                let s = 1.0 / (1.0 + (-3f64).exp());
                s * (1.0 - s)
            }],
        ),
    ] {
        let y = op(x.as_tensor()).unwrap();
        let values = flat(&y);
        let grad = flat(
            y.sum_all()
                .unwrap()
                .backward()
                .unwrap()
                .get(x.as_tensor())
                .unwrap(),
        );
        for i in 0..4 {
            assert!(
                close(values[i] as f64, want_value[i], 1e-6),
                "{values:?} vs {want_value:?}"
            );
            assert!(
                close(grad[i] as f64, want_grad[i], 1e-6),
                "{grad:?} vs {want_grad:?}"
            );
        }
    }
}

#[test]
fn tensor_ops_refuse_bad_input_with_clear_errors() {
    let dev = Device::Cpu;
    let a = Tensor::zeros((2, 3), DType::F32, &dev).unwrap();
    let b = Tensor::zeros((4,), DType::F32, &dev).unwrap();
    let u = Tensor::zeros((2, 3), DType::U32, &dev).unwrap();
    let msg = |e: TensorError| {
        format!("{e:?}")
            .trim_start_matches("TensorError::")
            .to_string()
    };

    let e = msg(ops::binary(ops::Binary::Add, &a, &b).unwrap_err());
    assert_eq!(
        e,
        "Shape(\"add: shapes [2, 3] and [4] do not broadcast (dimension 1: 3 vs 4)\")"
    );
    let e = msg(ops::binary(ops::Binary::Mul, &a, &u).unwrap_err());
    assert!(
        e.starts_with("Dtype(\"mul: the operands' dtypes differ (f32 and u32)"),
        "{e}"
    );
    // Broadcasting works both ways: [2, 1] + [3] is [2, 3].
    let col = Tensor::new(&[[1f32], [2.0]], &dev).unwrap();
    let row = Tensor::new(&[10f32, 20.0, 30.0], &dev).unwrap();
    let sum = ops::binary(ops::Binary::Add, &col, &row).unwrap();
    assert_eq!(
        sum.to_vec2::<f32>().unwrap(),
        vec![vec![11.0, 21.0, 31.0], vec![12.0, 22.0, 32.0]]
    );

    assert!(msg(ops::exp(&u).unwrap_err()).starts_with("Dtype(\"exp needs a float tensor"));
    assert!(msg(ops::neg(&u).unwrap_err()).starts_with("Dtype("));
    assert!(
        msg(ops::sum(&a, &[2], false).unwrap_err())
            .contains("dimension 2 is out of range for a tensor of shape [2, 3]")
    );
    assert!(msg(ops::sum(&a, &[1, 1], false).unwrap_err()).contains("listed twice"));
    assert!(msg(ops::mean(&a, &[], false).unwrap_err()).starts_with("Invalid("));
    assert!(
        msg(ops::narrow(&a, 1, 2, 2).unwrap_err())
            .contains("2 .. 4 is outside dimension 1 of size 3")
    );
    assert!(
        msg(ops::reshape(&a, &[4, 2]).unwrap_err())
            .contains("cannot view [2, 3] (6 elements) as [4, 2]")
    );
    assert!(msg(ops::clamp(&a, 1.0, 0.0).unwrap_err()).starts_with("Invalid("));

    let idx = Tensor::new(&[[0u32, 3]], &dev).unwrap();
    assert!(
        msg(ops::gather(&a, 1, &idx).unwrap_err())
            .contains("index 3 is out of range for dimension 1 of size 3")
    );
    let fidx = Tensor::new(&[[0f32]], &dev).unwrap();
    assert!(
        msg(ops::gather(&a, 1, &fidx).unwrap_err())
            .starts_with("Dtype(\"gather: the index must be u32 or i64")
    );

    let e = msg(ops::from_list(&[1.0, 2.0, 3.0], &[2, 2], Dtype::F32, &dev).unwrap_err());
    assert_eq!(
        e,
        "Shape(\"from-list: 3 values do not fill shape [2, 2] (4 elements)\")"
    );
    let e = msg(ops::from_list(&[1.0, -2.0], &[2], Dtype::U32, &dev).unwrap_err());
    assert_eq!(
        e,
        "Invalid(\"from-list: value -2 (index 1) is not a valid u32\")"
    );
    assert!(
        msg(ops::full(0.0, &[1 << 14, 1 << 14], Dtype::F32, &dev).unwrap_err())
            .starts_with("Limit(")
    );
    let f = ops::full(1.5, &[2, 2], Dtype::Bf16, &dev).unwrap();
    assert_eq!(
        (f.dtype(), ops::to_list(&f).unwrap()),
        (DType::BF16, vec![1.5; 4])
    );

    // to-list copies out at most 65,536 elements.
    let big = Tensor::zeros((65_537,), DType::F32, &dev).unwrap();
    assert!(
        msg(ops::to_list(&big).unwrap_err())
            .starts_with("Limit(\"to-list: the tensor has 65537 elements")
    );
    let ok = Tensor::zeros((65_536,), DType::F32, &dev).unwrap();
    assert_eq!(ops::to_list(&ok).unwrap().len(), 65_536);

    // where-else broadcasts the mask.
    let mask = Tensor::new(&[1f32, 0.0, 1.0], &dev).unwrap();
    let ones = Tensor::ones((2, 3), DType::F32, &dev).unwrap();
    let w = ops::where_else(&ones, &mask, &a).unwrap();
    assert_eq!(w.to_vec2::<f32>().unwrap(), vec![vec![1.0, 0.0, 1.0]; 2]);
}

// ---------------------------------------------------------------- failures

#[test]
fn a_non_scalar_loss_fails_naming_the_plugin() {
    let (_home, host) = host_with(test_limits(), &["bad-loss"]);
    let mut session = session(&host, "bad-loss");
    let (_var, p) = policy(&LP);
    let err = session.loss(batch(&MASK), p.clone(), 0).unwrap_err();
    assert!(matches!(err, CallError::BadResult { .. }), "{err:?}");
    assert_eq!(
        err.to_string(),
        "plugin `bad-loss` returned an unusable result from `loss`: the loss must be a \
         single-element float tensor, got shape [2, 4] of f32"
    );
    let err = session.loss(batch(&MASK), p, 3).unwrap_err();
    assert_eq!(
        err.to_string(),
        "plugin `bad-loss` returned an unusable result from `loss`: the loss must be a \
         single-element float tensor, got shape [] of u32"
    );
}

#[test]
fn a_trapping_method_fails_naming_the_plugin_and_the_next_call_works() {
    let (_home, host) = host_with(test_limits(), &["bad-loss"]);
    let plugin = host.method("bad-loss").unwrap();
    let mut session = session(&host, "bad-loss");
    let (_var, p) = policy(&LP);
    let err = session.loss(batch(&MASK), p.clone(), 1).unwrap_err();
    assert!(matches!(err, CallError::Trap { .. }), "{err:?}");
    let text = err.to_string();
    assert!(
        text.starts_with("plugin `bad-loss` crashed in `loss`:"),
        "{text}"
    );
    // A fresh instance, configured again, serves the next step.
    let out = session.loss(batch(&MASK), p, 5).unwrap();
    assert_eq!(
        out.metrics,
        vec![("rows".to_string(), 2.0), ("answer".to_string(), 42.0)]
    );
    assert_eq!(plugin.stats().instances, 2);
}

#[test]
fn a_failing_tensor_op_reaches_the_host_as_the_plugins_error() {
    let (_home, host) = host_with(test_limits(), &["bad-loss"]);
    let mut session = session(&host, "bad-loss");
    let (_var, p) = policy(&LP);
    let err = session.loss(batch(&MASK), p.clone(), 4).unwrap_err();
    assert_eq!(
        err.to_string(),
        "plugin `bad-loss` failed in `loss`: shape: add: shapes [2, 4] and [2, 5] do not \
         broadcast (dimension 1: 4 vs 5)"
    );
    let err = session.loss(batch(&MASK), p, 6).unwrap_err();
    assert_eq!(
        err.to_string(),
        "plugin `bad-loss` failed in `loss`: not implemented: policy.generate is not \
         implemented yet in this tuner build"
    );
}

#[test]
fn the_live_tensor_cap_is_enforced_and_released() {
    let limits = PluginLimits {
        max_resources: 40,
        ..test_limits()
    };
    let (_home, host) = host_with(limits, &["bad-loss"]);
    let plugin = host.method("bad-loss").unwrap();
    let mut session = session(&host, "bad-loss");
    let (_var, p) = policy(&LP);
    for _ in 0..2 {
        // The same instance twice: the dropped handles were given back.
        let err = session
            .loss(batch(&MASK), p.clone(), 2)
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with(
                "plugin `bad-loss` failed in `loss`: refused after 40: limit: the plugin holds \
                 40 live tensors, the most allowed"
            ),
            "{err}"
        );
    }
    assert_eq!(plugin.stats().instances, 1);
    session.loss(batch(&MASK), p, 5).unwrap();
}

#[test]
fn a_session_keeps_one_instance_and_gives_it_back_when_dropped() {
    let limits = PluginLimits {
        max_instances: 1,
        ..test_limits()
    };
    let host = TestHome::new().start(limits);
    let plugin = host.method("lora").unwrap();
    let (_var, p) = policy(&LP);
    let mut first = start(&host, "lora", r#"{"lora_rank": 16}"#).unwrap();
    assert_eq!(first.plan().adapter.as_ref().unwrap().rank, 16);
    let calls = plugin.stats().calls;
    for step in 0..3 {
        first.loss(batch(&MASK), p.clone(), step).unwrap();
    }
    assert_eq!(plugin.stats().instances, 1);
    assert_eq!(plugin.stats().calls, calls + 3);
    // With a pool of one, the next session can only start once the first
    // gave its instance back; it reuses it.
    drop(first);
    let mut second = session(&host, "lora");
    second.loss(batch(&MASK), p, 0).unwrap();
    assert_eq!(plugin.stats().instances, 1);
}

/// A model that takes longer than the plugin call deadline.
struct SlowPolicy(Arc<dyn PolicyBackend>);

impl PolicyBackend for SlowPolicy {
    fn token_logprobs(&self, batch: &MethodBatch, use_adapters: bool) -> anyhow::Result<Tensor> {
        std::thread::sleep(std::time::Duration::from_millis(1500));
        self.0.token_logprobs(batch, use_adapters)
    }
}

#[test]
fn time_in_the_model_does_not_count_against_the_plugin_deadline() {
    // test_limits() gives calls 1 s; the forward pass alone takes 1.5 s.
    let host = TestHome::new().start(test_limits());
    let (_var, p) = policy(&LP);
    let out = session(&host, "sft")
        .loss(batch(&MASK), Arc::new(SlowPolicy(p)), 0)
        .unwrap();
    assert!(out.loss.to_scalar::<f32>().unwrap() > 0.0);
}

#[test]
fn no_method_session_can_start_on_a_plugin_of_another_kind() {
    // A method session needs a method handle, which the registry makes only
    // for method plugins.
    let host = TestHome::new().start(test_limits());
    assert!(host.method("jsonl").is_none());
    assert!(host.get("jsonl").unwrap().as_method().is_none());
}

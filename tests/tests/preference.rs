//! The bundled `dpo` method (the DPO family: sigmoid, ipo, hinge, simpo,
//! orpo): its plan for each loss type, the combinations it refuses, its
//! loss and metrics on fixed log-probs against TRL's formulas
//! (`tests/fixtures/preference/losses.json`, written by `make_losses.py`
//! there) and against an independent f64 reference written here, the
//! gradient against finite differences of that reference, `tuner train`
//! on preference pairs with LoRA and with full fine-tuning, and
//! `precompute_ref_log_probs` (the same losses, no frozen copy, resume,
//! refusal for methods without a reference).

use std::path::{Path, PathBuf};
use std::process::Output;
use std::sync::Arc;

use candle_core::{Device, Tensor, Var};
use serde_json::Value;
use tuner::plugins::imports::model::{MethodBatch, Plan, PolicyBackend, Quantization, Trainable};
use tuner::plugins::settings;
use tuner::plugins::{MethodSession, PluginHost};
use tuner::sample::SampleKind;
use tuner_tests::loss_check::{
    assert_gradient_matches, assert_matches_case, close, f32_matrix, read_fixture, tensor_of,
};
use tuner_tests::{TestHome, TunerCommand, test_limits};

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

// ------------------------------------------------------------- sessions

/// Configures `dpo` as the trainer does: the config's keys checked against
/// the method's settings, then `start_method` with the whole config as the
/// job. A refusal reads `` `key`: message ``.
fn start(host: &PluginHost, config: &Value) -> Result<MethodSession, String> {
    let plugin = host.method("dpo").expect("dpo is bundled");
    let given = config.as_object().cloned().unwrap_or_default();
    let schema = plugin.settings().map_err(|e| e.to_string())?;
    let values = settings::check(&schema, &given)
        .map_err(|p| format!("`{}`: {}", p[0].key, p[0].message))?;
    plugin
        .start_method(&values, &config.to_string())
        .map_err(|e| e.to_string())
}

fn plan(host: &PluginHost, config: Value) -> Result<Plan, String> {
    start(host, &config).map(|s| s.plan().clone())
}

#[test]
fn the_plan_follows_the_loss_type_and_finetuning_type() {
    let host = TestHome::new().start(test_limits());

    // Default: sigmoid DPO with LoRA adapters against the base.
    let p = plan(&host, serde_json::json!({})).unwrap();
    assert_eq!(p.trains, Trainable::Adapters);
    let adapter = p.adapter.as_ref().expect("an adapter");
    assert_eq!((adapter.rank, adapter.alpha), (8, 32.0));
    assert_eq!(p.base_quantization, Quantization::None);
    assert!(p.needs_reference && !p.needs_generation);
    assert_eq!(p.accepts, vec![SampleKind::Preference]);

    for (loss_type, reference) in [
        ("sigmoid", true),
        ("ipo", true),
        ("hinge", true),
        ("simpo", false),
        ("orpo", false),
    ] {
        for finetuning in ["lora", "full"] {
            let p = plan(
                &host,
                serde_json::json!({"loss_type": loss_type, "finetuning_type": finetuning}),
            )
            .unwrap();
            assert_eq!(p.needs_reference, reference, "{loss_type} {finetuning}");
            let full = finetuning == "full";
            assert_eq!(p.trains == Trainable::Full, full);
            assert_eq!(p.adapter.is_none(), full);
        }
    }

    // QLoRA: LoRA over a 4-bit base.
    let p = plan(
        &host,
        serde_json::json!({"load_in_4bit": true, "lora_rank": 16}),
    )
    .unwrap();
    assert_eq!(p.base_quantization, Quantization::Nf4);
    assert_eq!(p.adapter.unwrap().rank, 16);
}

#[test]
fn combinations_the_schema_cannot_rule_out_are_refused_by_name() {
    let host = TestHome::new().start(test_limits());
    let refused = |config: Value| match start(&host, &config) {
        Ok(_) => panic!("{config} was accepted"),
        Err(e) => e,
    };
    // By the schema (the host, before the plugin).
    assert!(refused(serde_json::json!({"beta": 0})).contains("`beta`"));
    assert!(refused(serde_json::json!({"label_smoothing": 0.5})).contains("`label_smoothing`"));
    assert!(refused(serde_json::json!({"loss_type": "kto"})).contains("`loss_type`"));
    assert!(refused(serde_json::json!({"rpo_alpha": -1})).contains("`rpo_alpha`"));
    // By the plugin.
    for (config, field, words) in [
        (
            serde_json::json!({"loss_type": "ipo", "label_smoothing": 0.1}),
            "label_smoothing",
            "has no use for label smoothing",
        ),
        (
            serde_json::json!({"loss_type": "hinge", "label_smoothing": 0.1}),
            "label_smoothing",
            "has no use for label smoothing",
        ),
        (
            serde_json::json!({"loss_type": "orpo", "rpo_alpha": 1.0}),
            "rpo_alpha",
            "already adds the chosen answers' NLL",
        ),
        (
            serde_json::json!({"finetuning_type": "full", "load_in_4bit": true}),
            "load_in_4bit",
            "full fine-tuning trains every weight",
        ),
        (
            serde_json::json!({"finetuning_type": "full", "load_in_8bit": true}),
            "load_in_8bit",
            "full fine-tuning trains every weight",
        ),
    ] {
        let err = refused(config.clone());
        assert!(
            err.contains(&format!("`{field}`")) && err.contains(words),
            "{config}: {err}"
        );
    }
    // Smoothing where it means something is accepted.
    for loss_type in ["sigmoid", "simpo"] {
        start(
            &host,
            &serde_json::json!({"loss_type": loss_type, "label_smoothing": 0.25}),
        )
        .unwrap();
    }
}

// ------------------------------------------------------ fixed log-probs

struct Fixture {
    pairs: usize,
    policy: Vec<Vec<f64>>,
    reference: Vec<Vec<f64>>,
    mask: Vec<Vec<f64>>,
    cases: Vec<Value>,
}

/// The fixture, its inputs rounded to f32 as the tensors hold them.
fn fixture() -> Fixture {
    let json = read_fixture("tests/fixtures/preference/losses.json");
    Fixture {
        pairs: json["pairs"].as_u64().unwrap() as usize,
        policy: f32_matrix(&json, "policy"),
        reference: f32_matrix(&json, "reference"),
        mask: f32_matrix(&json, "mask"),
        cases: json["cases"].as_array().unwrap().clone(),
    }
}

/// With adapters: the trained policy (a variable, so the gradient can be
/// read); without: the frozen reference.
struct FakePolicy {
    policy: Var,
    reference: Tensor,
}

impl PolicyBackend for FakePolicy {
    fn token_logprobs(&self, _batch: &MethodBatch, use_adapters: bool) -> anyhow::Result<Tensor> {
        Ok(if use_adapters {
            self.policy.as_tensor().clone()
        } else {
            self.reference.clone()
        })
    }
}

fn preference_batch(f: &Fixture) -> Arc<MethodBatch> {
    let (rows, positions) = (f.mask.len(), f.mask[0].len());
    let ids: Vec<u32> = (0..rows * (positions + 1)).map(|i| i as u32 + 1).collect();
    let ids = Tensor::from_vec(ids, (rows, positions + 1), &Device::Cpu).unwrap();
    let mut batch = MethodBatch::new(SampleKind::Preference, ids, tensor_of(&f.mask)).unwrap();
    batch.pairs = f.pairs;
    Arc::new(batch)
}

/// The settings of a case, with what the plugin's defaults would be.
struct Case {
    loss_type: String,
    beta: f64,
    label_smoothing: f64,
    rpo_alpha: Option<f64>,
    simpo_gamma: f64,
}

impl Case {
    fn of(settings: &Value) -> Case {
        Case {
            loss_type: settings["loss_type"].as_str().unwrap().to_string(),
            beta: settings["beta"].as_f64().unwrap_or(0.1),
            label_smoothing: settings["label_smoothing"].as_f64().unwrap_or(0.0),
            rpo_alpha: settings["rpo_alpha"].as_f64(),
            simpo_gamma: settings["simpo_gamma"].as_f64().unwrap_or(0.5),
        }
    }
}

fn ln_sigmoid(x: f64) -> f64 {
    x.min(0.0) - (-x.abs()).exp().ln_1p()
}

fn mean(v: &[f64]) -> f64 {
    v.iter().sum::<f64>() / v.len() as f64
}

/// The DPO family in f64, written from the papers' definitions (see the
/// plugin's documentation): `(loss, metrics)` for `policy` log-probs.
fn reference(c: &Case, f: &Fixture, policy: &[Vec<f64>]) -> (f64, Vec<(String, f64)>) {
    let p = f.pairs;
    let average = matches!(c.loss_type.as_str(), "ipo" | "simpo" | "orpo");
    let logps = |lp: &[Vec<f64>]| -> Vec<f64> {
        lp.iter()
            .zip(&f.mask)
            .map(|(row, mask)| {
                let total: f64 = row.iter().zip(mask).map(|(l, m)| l * m).sum();
                let len: f64 = mask.iter().sum();
                if average { total / len } else { total }
            })
            .collect()
    };
    let pol = logps(policy);
    let nll = {
        let (mut total, mut count) = (0.0, 0.0);
        for (row, mask) in policy.iter().zip(&f.mask).take(p) {
            for (l, m) in row.iter().zip(mask) {
                total -= l * m;
                count += m;
            }
        }
        total / count
    };
    let (b, ls) = (c.beta, c.label_smoothing);
    let smoothed = |z: f64| -ln_sigmoid(z) * (1.0 - ls) - ln_sigmoid(-z) * ls;
    let mut metrics = Vec::new();
    let mut losses = Vec::new();
    let mut chosen = Vec::new();
    let mut rejected = Vec::new();
    match c.loss_type.as_str() {
        "sigmoid" | "ipo" | "hinge" => {
            let refs = logps(&f.reference);
            for i in 0..p {
                let (dc, dr) = (pol[i] - refs[i], pol[p + i] - refs[p + i]);
                let logits = dc - dr;
                losses.push(match c.loss_type.as_str() {
                    "sigmoid" => smoothed(b * logits),
                    "ipo" => (logits - 1.0 / (2.0 * b)).powi(2),
                    _ => (1.0 - b * logits).max(0.0),
                });
                chosen.push(b * dc);
                rejected.push(b * dr);
            }
        }
        "simpo" => {
            for i in 0..p {
                losses.push(smoothed(b * (pol[i] - pol[p + i]) - c.simpo_gamma));
                chosen.push(b * pol[i]);
                rejected.push(b * pol[p + i]);
            }
        }
        "orpo" => {
            let log1m_exp = |a: f64| (-a.min(-1e-6).exp()).ln_1p();
            let mut ratios = Vec::new();
            let mut odds = Vec::new();
            for i in 0..p {
                let (ac, ar) = (pol[i], pol[p + i]);
                let log_odds = (ac - ar) - (log1m_exp(ac) - log1m_exp(ar));
                odds.push(log_odds);
                ratios.push(ln_sigmoid(log_odds));
                losses.push(-b * ln_sigmoid(log_odds));
                chosen.push(b * ac);
                rejected.push(b * ar);
            }
            metrics.push(("log_odds_ratio".to_string(), mean(&ratios)));
            metrics.push(("log_odds_chosen".to_string(), mean(&odds)));
        }
        other => panic!("loss type {other}"),
    }
    let mut loss = mean(&losses);
    let nll_weight = if c.loss_type == "orpo" {
        Some(1.0)
    } else {
        c.rpo_alpha
    };
    if let Some(w) = nll_weight {
        loss += w * nll;
        metrics.push(("nll_loss".to_string(), nll));
    }
    let wins = chosen.iter().zip(&rejected).filter(|(c, r)| c > r).count();
    let margins: Vec<f64> = chosen.iter().zip(&rejected).map(|(c, r)| c - r).collect();
    metrics.extend([
        ("rewards/chosen".to_string(), mean(&chosen)),
        ("rewards/rejected".to_string(), mean(&rejected)),
        ("rewards/accuracies".to_string(), wins as f64 / p as f64),
        ("rewards/margins".to_string(), mean(&margins)),
        ("logps/chosen".to_string(), mean(&pol[..p])),
        ("logps/rejected".to_string(), mean(&pol[p..])),
    ]);
    (loss, metrics)
}

#[test]
fn every_loss_type_matches_trl_and_the_f64_reference_in_loss_metrics_and_gradient() {
    let f = fixture();
    assert!(f.cases.len() >= 10);
    let host = TestHome::new().start(test_limits());
    let mut seen = std::collections::BTreeSet::new();
    for case in &f.cases {
        let name = case["name"].as_str().unwrap();
        let settings = &case["settings"];
        let c = Case::of(settings);
        seen.insert(c.loss_type.clone());

        let policy = Var::from_tensor(&tensor_of(&f.policy)).unwrap();
        let backend: Arc<dyn PolicyBackend> = Arc::new(FakePolicy {
            policy: policy.clone(),
            reference: tensor_of(&f.reference),
        });
        let mut session = start(&host, settings).unwrap();
        let out = session.loss(preference_batch(&f), backend, 0).unwrap();
        let loss = out.loss.to_scalar::<f32>().unwrap() as f64;

        let got = assert_matches_case(name, loss, &out.metrics, case);

        // The independent f64 reference.
        let (ref_loss, ref_metrics) = reference(&c, &f, &f.policy);
        assert!(
            close(loss, ref_loss, 1e-5),
            "{name}: loss {loss}, reference {ref_loss}"
        );
        for (metric, w) in &ref_metrics {
            let g = got[metric.as_str()];
            assert!(close(g, *w, 1e-5), "{name}: {metric} {g}, reference {w}");
        }

        // The gradient reaches the policy's log-probs (never the reference)
        // and agrees with central differences of the reference loss.
        assert_gradient_matches(
            name,
            &out.loss,
            &policy,
            &f.policy,
            0..f.policy.len(),
            &f.mask,
            |p| reference(&c, &f, p).0,
        );
    }
    let all: Vec<&str> = seen.iter().map(String::as_str).collect();
    assert_eq!(all, ["hinge", "ipo", "orpo", "sigmoid", "simpo"]);
}

#[test]
fn a_batch_that_is_not_preference_pairs_is_refused() {
    let f = fixture();
    let host = TestHome::new().start(test_limits());
    let mut session = start(&host, &serde_json::json!({})).unwrap();
    let ids = Tensor::zeros((6, 7), candle_core::DType::U32, &Device::Cpu).unwrap();
    let chat = Arc::new(MethodBatch::new(SampleKind::Chat, ids, tensor_of(&f.mask)).unwrap());
    let backend: Arc<dyn PolicyBackend> = Arc::new(FakePolicy {
        policy: Var::from_tensor(&tensor_of(&f.policy)).unwrap(),
        reference: tensor_of(&f.reference),
    });
    let err = session.loss(chat, backend, 0).unwrap_err().to_string();
    assert!(err.contains("preference pairs"), "{err}");
}

// ------------------------------------------------------------ end to end

/// `tuner` offline, with `home` as `TUNER_HOME` and no plugin folder from
/// the environment.
fn tuner(home: &Path, args: &[&str]) -> Output {
    TunerCommand::new(home)
        .args(args)
        .env("TUNER_OFFLINE", "1")
        .env_remove("TUNER_PLUGIN_DIR")
        .output()
}

/// A fresh home with a tiny random Qwen3 (`model/`).
fn tiny_model() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let model = dir.path().join("model");
    let tokenizer = repo().join("tests/fixtures/qwen3");
    let out = tuner(
        dir.path(),
        &[
            "init-model",
            model.to_str().unwrap(),
            "--tokenizer",
            tokenizer.to_str().unwrap(),
        ],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    dir
}

/// A `dpo` job on the eight pairs of `tests/fixtures/preference/pairs.jsonl`
/// (all in one batch, so every step's metrics cover every pair) in `home`,
/// writing to `home/name`, with `extra` keys on top.
fn dpo_config(home: &Path, name: &str, extra: Value) -> Value {
    let mut config = serde_json::json!({
        "model_name": home.join("model"),
        "training_method": "dpo",
        "dataset": [repo().join("tests/fixtures/preference/pairs.jsonl")],
        "per_device_train_batch_size": 8,
        "gradient_accumulation_steps": 1,
        "lr_scheduler_type": "constant",
        "warmup_ratio": 0.0,
        "max_seq_length": 64,
        "logging_steps": 1,
        "save_steps": 0,
        "device": "cpu",
        "seed": 7,
        "output_dir": home.join(name),
    });
    for (k, v) in extra.as_object().unwrap() {
        config[k] = v.clone();
    }
    config
}

/// Runs `tuner train CONFIG --json` in `home`: its exit status and the
/// JSON events it printed, with stderr for messages.
fn train_json(home: &Path, name: &str, config: &Value) -> (bool, Vec<Value>, String) {
    let path = home.join(format!("{name}.json"));
    std::fs::write(&path, serde_json::to_vec_pretty(config).unwrap()).unwrap();
    let out = tuner(home, &["train", path.to_str().unwrap(), "--json"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let events = stdout
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .collect();
    let text = format!("{}\n{stdout}", String::from_utf8_lossy(&out.stderr));
    (out.status.success(), events, text)
}

/// Like [`train_json`], failing the test when the job fails; the events.
fn train_ok(home: &Path, name: &str, config: &Value) -> Vec<Value> {
    let (ok, events, text) = train_json(home, name, config);
    assert!(ok, "{name}: {text}");
    events
}

/// The step events that carry DPO's metrics (not the `eval_loss` ones).
fn dpo_steps(events: &[Value]) -> Vec<&Value> {
    events
        .iter()
        .filter(|e| e["event"] == "step" && e["metrics"]["rewards/accuracies"].is_number())
        .collect()
}

/// Trains `dpo` (see [`dpo_config`]) on a fresh tiny model; returns each
/// step's metrics.
fn train_dpo(name: &str, extra: Value) -> Vec<serde_json::Map<String, Value>> {
    let dir = tiny_model();
    let config = dpo_config(dir.path(), name, extra);
    dpo_steps(&train_ok(dir.path(), name, &config))
        .into_iter()
        .map(|e| e["metrics"].as_object().unwrap().clone())
        .collect()
}

/// The policy learns to prefer the chosen answers: by the last steps the
/// chosen reward is above the rejected one for (nearly) every pair, and the
/// margin has grown from where it started.
fn assert_learns_the_preferences(name: &str, steps: &[serde_json::Map<String, Value>]) {
    let metric = |s: &serde_json::Map<String, Value>, k: &str| s[k].as_f64().unwrap();
    assert!(steps.len() >= 3, "{name}: {} steps", steps.len());
    let accuracies: Vec<f64> = steps
        .iter()
        .map(|s| metric(s, "rewards/accuracies"))
        .collect();
    let margins: Vec<f64> = steps.iter().map(|s| metric(s, "rewards/margins")).collect();
    let last = &accuracies[accuracies.len() - 3..];
    assert!(
        last.iter().all(|&a| a >= 0.9),
        "{name}: accuracies {accuracies:?}"
    );
    let first = margins[0];
    assert!(
        margins[margins.len() - 3..].iter().all(|&m| m > first),
        "{name}: margins {margins:?}"
    );
    for s in steps {
        for k in [
            "rewards/chosen",
            "rewards/rejected",
            "logps/chosen",
            "logps/rejected",
        ] {
            assert!(metric(s, k).is_finite(), "{name}: {k} in {s:?}");
        }
    }
}

#[test]
fn dpo_with_lora_learns_the_preferences() {
    let steps = train_dpo(
        "dpo-lora",
        serde_json::json!({
            "max_steps": 6,
            "learning_rate": 1e-2,
            "lora_rank": 16,
            "lora_alpha": 32,
            "lora_dropout": 0.0,
        }),
    );
    // Adapters start at zero: the policy is the reference, every reward 0.
    let first = steps[0]["rewards/margins"].as_f64().unwrap();
    assert!(first.abs() < 1e-4, "{:?}", steps[0]);
    assert_learns_the_preferences("lora", &steps);
}

#[test]
fn dpo_with_full_fine_tuning_learns_the_preferences_against_a_frozen_copy() {
    let steps = train_dpo(
        "dpo-full",
        serde_json::json!({
            "max_steps": 6,
            "learning_rate": 1e-3,
            "finetuning_type": "full",
        }),
    );
    // The reference is a copy of the starting weights: at step 1 the policy
    // equals it, every reward 0.
    let first = steps[0]["rewards/margins"].as_f64().unwrap();
    assert!(first.abs() < 1e-4, "{:?}", steps[0]);
    assert_learns_the_preferences("full", &steps);
}

// ------------------------------------------- precompute_ref_log_probs

/// Each step's loss.
fn step_losses(events: &[Value]) -> Vec<f64> {
    dpo_steps(events)
        .iter()
        .map(|e| e["loss"].as_f64().unwrap())
        .collect()
}

/// Each step's loss, and the `eval_loss` of the held-out pairs at the end.
fn losses(events: &[Value]) -> (Vec<f64>, f64) {
    let steps = step_losses(events);
    let eval = events
        .iter()
        .rev()
        .find_map(|e| e["metrics"]["eval_loss"].as_f64())
        .expect("an eval_loss");
    (steps, eval)
}

fn assert_close(name: &str, got: &[f64], want: &[f64]) {
    assert_eq!(got.len(), want.len(), "{name}: {got:?} vs {want:?}");
    for (g, w) in got.iter().zip(want) {
        assert!(
            (g - w).abs() <= 1e-5 * w.abs().max(1e-3),
            "{name}: losses {got:?}, expected {want:?}"
        );
    }
}

/// The log line of the precompute pass.
fn precompute_line(events: &[Value]) -> Option<String> {
    events
        .iter()
        .filter(|e| e["event"] == "log")
        .filter_map(|e| e["message"].as_str())
        .find(|m| m.starts_with("precomputed reference log-probs"))
        .map(str::to_string)
}

/// The same DPO job with and without `precompute_ref_log_probs`: the same
/// losses step by step, and the same `eval_loss` (the held-out pairs are
/// precomputed too). Returns the precompute pass's log line and the events
/// of the job with it.
fn same_losses_with_precomputed_reference(name: &str, extra: Value) -> (String, Vec<Value>) {
    let dir = tiny_model();
    let mut extra = extra;
    extra["max_steps"] = 4.into();
    extra["val_size"] = 0.25.into();
    let plain = dpo_config(dir.path(), &format!("{name}-plain"), extra.clone());
    let events = train_ok(dir.path(), &format!("{name}-plain"), &plain);
    assert!(precompute_line(&events).is_none());
    let (want, want_eval) = losses(&events);

    extra["precompute_ref_log_probs"] = true.into();
    let pre = dpo_config(dir.path(), &format!("{name}-pre"), extra);
    let events = train_ok(dir.path(), &format!("{name}-pre"), &pre);
    let (got, got_eval) = losses(&events);
    assert_eq!(want.len(), 4, "{name}: {want:?}");
    assert_close(name, &got, &want);
    assert_close(&format!("{name} eval_loss"), &[got_eval], &[want_eval]);
    let line = precompute_line(&events).expect("the precompute pass logs a line");
    // 6 training pairs and 2 held-out ones, two rows each.
    assert!(line.contains("for 16 rows"), "{line}");
    (line, events)
}

#[test]
fn precomputed_reference_log_probs_give_the_same_dpo_losses_with_lora() {
    let (line, _) = same_losses_with_precomputed_reference(
        "lora",
        serde_json::json!({"learning_rate": 1e-2, "lora_rank": 16}),
    );
    assert!(line.contains("no reference forward pass"), "{line}");
    assert!(!line.contains("frozen reference copy"), "{line}");
}

#[test]
fn precomputed_reference_log_probs_give_the_same_dpo_losses_with_full_fine_tuning_and_no_copy() {
    let (line, events) = same_losses_with_precomputed_reference(
        "full",
        serde_json::json!({"learning_rate": 1e-3, "finetuning_type": "full"}),
    );
    assert!(
        line.contains("no frozen reference copy of the model is loaded"),
        "{line}"
    );
    let logs: Vec<&str> = events
        .iter()
        .filter_map(|e| e["message"].as_str())
        .collect();
    assert!(
        !logs
            .iter()
            .any(|m| m.contains("loading a frozen reference copy")),
        "{logs:?}"
    );
}

/// Resuming full fine-tuning recomputes the reference log-probs from the
/// base as loaded, not from the checkpoint's trained weights: the resumed
/// steps repeat the uninterrupted run's losses.
#[test]
fn a_resumed_full_fine_tuning_job_precomputes_the_reference_from_the_base() {
    let dir = tiny_model();
    let extra = serde_json::json!({
        "learning_rate": 1e-3,
        "finetuning_type": "full",
        "precompute_ref_log_probs": true,
        "max_steps": 4,
        "save_steps": 2,
    });
    let whole = dpo_config(dir.path(), "whole", extra.clone());
    let want = step_losses(&train_ok(dir.path(), "whole", &whole));
    let mut resumed = dpo_config(dir.path(), "resumed", extra);
    resumed["resume_from_checkpoint"] = dir
        .path()
        .join("whole/checkpoint-2")
        .to_str()
        .unwrap()
        .into();
    let events = train_ok(dir.path(), "resumed", &resumed);
    assert!(precompute_line(&events).is_some());
    assert_eq!(want.len(), 4, "{want:?}");
    assert_close("resumed", &step_losses(&events), &want[2..]);
}

#[test]
fn precompute_ref_log_probs_is_refused_for_methods_without_a_reference() {
    let dir = tiny_model();
    for (name, extra) in [
        (
            "simpo",
            serde_json::json!({"loss_type": "simpo", "precompute_ref_log_probs": true}),
        ),
        (
            "sft",
            serde_json::json!({"training_method": "sft", "precompute_ref_log_probs": true}),
        ),
    ] {
        let config = dpo_config(dir.path(), name, extra);
        let (ok, _, text) = train_json(dir.path(), name, &config);
        assert!(!ok, "{name} was accepted: {text}");
        assert!(
            text.contains("precompute_ref_log_probs is set")
                && text.contains("uses no reference model"),
            "{name}: {text}"
        );
    }
}

//! The bundled `kto` method (KTO and its `apo_zero_unpaired` variant) and
//! the unpaired sample kind it trains on: its plan, its loss and metrics on
//! fixed log-probs against TRL's formulas
//! (`tests/fixtures/preference/kto_losses.json`, written by
//! `make_kto_losses.py` there) and against an independent f64 reference
//! written here, the gradient against finite differences of that reference,
//! LLaMA-Factory's and TRL's labelled records read as their own kind, and
//! `tuner train` with LoRA and with full fine-tuning.

use std::sync::Arc;

use candle_core::{DType, Device, IndexOp, Tensor, Var};
use serde_json::{Value, json};
use tuner::plugins::imports::model::{MethodBatch, PolicyBackend, Trainable};
use tuner::plugins::settings;
use tuner::plugins::{MethodSession, PluginHost};
use tuner::sample::SampleKind;
use tuner_tests::loss_check::{
    assert_gradient_matches, assert_matches_case, close, f32_matrix, read_fixture, tensor_of,
};
use tuner_tests::training::{offline_tuner, step_metric, succeeded, tiny_model, train_json};
use tuner_tests::{TestHome, repo_root, test_limits};

// ------------------------------------------------------------- sessions

/// Configures `kto` as the trainer does: the keys checked against the
/// method's settings, then `start_method`. A refusal reads `` `key`: message ``.
fn start(host: &PluginHost, config: &Value) -> Result<MethodSession, String> {
    let plugin = host.method("kto").expect("kto is bundled");
    let given = config.as_object().cloned().unwrap_or_default();
    let schema = plugin.settings().map_err(|e| e.to_string())?;
    let values = settings::check(&schema, &given)
        .map_err(|p| format!("`{}`: {}", p[0].key, p[0].message))?;
    plugin
        .start_method(&values, &config.to_string())
        .map_err(|e| e.to_string())
}

#[test]
fn the_plan_trains_unpaired_samples_against_a_reference() {
    let host = TestHome::new().start(test_limits());
    let plan = start(&host, &json!({})).unwrap().plan().clone();
    assert_eq!(plan.trains, Trainable::Adapters);
    assert!(plan.needs_reference && !plan.needs_generation);
    assert_eq!(plan.accepts, vec![SampleKind::Unpaired]);
    let full = start(&host, &json!({"finetuning_type": "full"}))
        .unwrap()
        .plan()
        .clone();
    assert_eq!(full.trains, Trainable::Full);
    assert!(full.needs_reference);
    for (config, key) in [
        (json!({"loss_type": "bco"}), "loss_type"),
        (json!({"desirable_weight": 0}), "desirable_weight"),
        (json!({"beta": -1}), "beta"),
    ] {
        let err = start(&host, &config).unwrap_err();
        assert!(err.contains(key), "{config}: {err}");
    }
}

// ---------------------------------------------------- loss vs formulas

struct Fixture {
    samples: usize,
    labels: Vec<bool>,
    policy: Vec<Vec<f64>>,
    reference: Vec<Vec<f64>>,
    mask: Vec<Vec<f64>>,
    cases: Vec<Value>,
}

/// The fixture, its inputs rounded to f32 as the tensors hold them.
fn fixture() -> Fixture {
    let json = read_fixture("tests/fixtures/preference/kto_losses.json");
    Fixture {
        samples: json["samples"].as_u64().unwrap() as usize,
        labels: json["labels"]
            .as_array()
            .unwrap()
            .iter()
            .map(|l| l.as_bool().unwrap())
            .collect(),
        policy: f32_matrix(&json, "policy"),
        reference: f32_matrix(&json, "reference"),
        mask: f32_matrix(&json, "mask"),
        cases: json["cases"].as_array().unwrap().clone(),
    }
}

/// Answers for whichever rows it is handed: every id of fixture row `r` is
/// `r`, so a batch narrowed to some rows (`batch.narrow-rows`) still finds
/// its own. With adapters: the trained policy (a variable, so the gradient
/// can be read); without: the frozen reference.
struct FakePolicy {
    policy: Var,
    reference: Tensor,
}

impl PolicyBackend for FakePolicy {
    fn token_logprobs(&self, batch: &MethodBatch, use_adapters: bool) -> anyhow::Result<Tensor> {
        let rows = batch.ids.i((.., 0))?.contiguous()?;
        let all = if use_adapters {
            self.policy.as_tensor()
        } else {
            &self.reference
        };
        Ok(all.index_select(&rows, 0)?)
    }
}

fn unpaired_batch(f: &Fixture) -> Arc<MethodBatch> {
    let (rows, positions) = (f.mask.len(), f.mask[0].len());
    let ids: Vec<u32> = (0..rows)
        .flat_map(|r| std::iter::repeat_n(r as u32, positions + 1))
        .collect();
    let ids = Tensor::from_vec(ids, (rows, positions + 1), &Device::Cpu).unwrap();
    let mut batch = MethodBatch::new(SampleKind::Unpaired, ids, tensor_of(&f.mask)).unwrap();
    batch.pairs = f.samples;
    batch.labels = f.labels.clone();
    Arc::new(batch)
}

fn sigmoid(x: f64) -> f64 {
    1.0 / (1.0 + (-x).exp())
}

fn mean(v: &[f64]) -> f64 {
    v.iter().sum::<f64>() / v.len() as f64
}

/// KTO written out again in f64, straight from the paper's definitions:
/// the loss and the metrics, for the policy log-probs `policy`.
fn reference(settings: &Value, f: &Fixture, policy: &[Vec<f64>]) -> (f64, Vec<(String, f64)>) {
    let beta = settings["beta"].as_f64().unwrap();
    let weight_d = settings["desirable_weight"].as_f64().unwrap_or(1.0);
    let weight_u = settings["undesirable_weight"].as_f64().unwrap_or(1.0);
    let kto = settings["loss_type"] == "kto";
    let seq = |m: &[Vec<f64>], r: usize| -> f64 {
        m[r].iter().zip(&f.mask[r]).map(|(lp, w)| lp * w).sum()
    };
    let n = f.samples;
    let z0 = if kto {
        let diffs: Vec<f64> = (n..2 * n)
            .map(|r| seq(policy, r) - seq(&f.reference, r))
            .collect();
        mean(&diffs).max(0.0)
    } else {
        0.0
    };
    let mut losses = Vec::new();
    let (mut rewards_d, mut rewards_u, mut logps_d, mut logps_u) = (vec![], vec![], vec![], vec![]);
    for r in 0..n {
        let ratio = seq(policy, r) - seq(&f.reference, r);
        if f.labels[r] {
            losses.push(weight_d * (1.0 - sigmoid(beta * (ratio - z0))));
            rewards_d.push(beta * ratio);
            logps_d.push(seq(policy, r));
        } else {
            losses.push(weight_u * (1.0 - sigmoid(beta * (z0 - ratio))));
            rewards_u.push(beta * ratio);
            logps_u.push(seq(policy, r));
        }
    }
    let mut metrics = vec![
        ("rewards/chosen".to_string(), mean(&rewards_d)),
        ("rewards/rejected".to_string(), mean(&rewards_u)),
        (
            "rewards/margins".to_string(),
            mean(&rewards_d) - mean(&rewards_u),
        ),
        ("logps/chosen".to_string(), mean(&logps_d)),
        ("logps/rejected".to_string(), mean(&logps_u)),
    ];
    if kto {
        metrics.push(("kl".to_string(), z0));
    }
    (mean(&losses), metrics)
}

#[test]
fn every_loss_type_matches_trl_and_the_f64_reference_in_loss_metrics_and_gradient() {
    let f = fixture();
    let host = TestHome::new().start(test_limits());
    let mut seen = std::collections::BTreeSet::new();
    for case in &f.cases {
        let name = case["name"].as_str().unwrap();
        let settings = &case["settings"];
        seen.insert(settings["loss_type"].as_str().unwrap().to_string());

        let policy = Var::from_tensor(&tensor_of(&f.policy)).unwrap();
        let backend: Arc<dyn PolicyBackend> = Arc::new(FakePolicy {
            policy: policy.clone(),
            reference: tensor_of(&f.reference),
        });
        let mut session = start(&host, settings).unwrap();
        let out = session.loss(unpaired_batch(&f), backend, 0).unwrap();
        let loss = out.loss.to_scalar::<f32>().unwrap() as f64;

        let got = assert_matches_case(name, loss, &out.metrics, case);

        // The independent f64 reference.
        let (ref_loss, ref_metrics) = reference(settings, &f, &f.policy);
        assert!(close(loss, ref_loss, 1e-5), "{name}: {loss} vs {ref_loss}");
        for (metric, w) in &ref_metrics {
            let g = got[metric];
            assert!(close(g, *w, 1e-5), "{name}: {metric} {g}, reference {w}");
        }

        // The gradient reaches the samples' own log-probs only: the KL
        // rows are a detached reference point, the masked positions and the
        // reference never count.
        let grad = assert_gradient_matches(
            name,
            &out.loss,
            &policy,
            &f.policy,
            0..f.samples,
            &f.mask,
            |p| reference(settings, &f, p).0,
        );
        for row in &grad[f.samples..] {
            assert!(
                row.iter().all(|g| *g == 0.0),
                "{name}: a KL row has gradient"
            );
        }
    }
    let all: Vec<&str> = seen.iter().map(String::as_str).collect();
    assert_eq!(all, ["apo_zero_unpaired", "kto"]);
}

#[test]
fn a_batch_that_is_not_labelled_answers_is_refused() {
    let f = fixture();
    let host = TestHome::new().start(test_limits());
    let mut session = start(&host, &json!({})).unwrap();
    let ids = Tensor::zeros((8, 7), DType::U32, &Device::Cpu).unwrap();
    let chat = Arc::new(MethodBatch::new(SampleKind::Chat, ids, tensor_of(&f.mask)).unwrap());
    let backend: Arc<dyn PolicyBackend> = Arc::new(FakePolicy {
        policy: Var::from_tensor(&tensor_of(&f.policy)).unwrap(),
        reference: tensor_of(&f.reference),
    });
    let err = session.loss(chat, backend, 0).unwrap_err().to_string();
    assert!(err.contains("labelled desirable or undesirable"), "{err}");
}

// ------------------------------------------------------------ end to end

/// LLaMA-Factory's `kto_en_demo` shape and TRL's prompt/completion/label
/// shape read as unpaired samples; `data stats` counts them as that kind.
#[test]
fn labelled_records_are_their_own_kind_in_the_data_commands() {
    let home = tempfile::tempdir().unwrap();
    let file = repo_root().join("tests/fixtures/preference/kto.jsonl");
    let out = succeeded(offline_tuner(
        home.path(),
        &["data", "stats", file.to_str().unwrap(), "--json"],
    ));
    let stats: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(stats["kinds"]["unpaired"], 8, "{stats}");
    assert!(stats["kinds"].get("chat").is_none(), "{stats}");
}

/// Trains `kto` on the eight labelled answers of
/// `tests/fixtures/preference/kto.jsonl` (all in one batch); returns every
/// JSON event the run printed. `extra` overrides config keys.
fn run_kto(name: &str, extra: Value) -> Vec<Value> {
    let home = tempfile::tempdir().unwrap();
    let model = tiny_model(home.path(), false);
    let mut config = json!({
        "model_name": model,
        "training_method": "kto",
        "dataset": [repo_root().join("tests/fixtures/preference/kto.jsonl")],
        "per_device_train_batch_size": 8,
        "gradient_accumulation_steps": 1,
        "lr_scheduler_type": "constant",
        "warmup_ratio": 0.0,
        "max_seq_length": 64,
        "logging_steps": 1,
        "save_steps": 0,
        "device": "cpu",
        "seed": 7,
        "output_dir": home.path().join(name),
    });
    for (k, v) in extra.as_object().unwrap() {
        config[k] = v.clone();
    }
    let out = succeeded(train_json(home.path(), name, &config));
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .collect()
}

/// The step events of [`run_kto`].
fn train_kto(name: &str, extra: Value) -> Vec<Value> {
    run_kto(name, extra)
        .into_iter()
        .filter(|e| e["event"] == "step")
        .collect()
}

/// Desirable answers gain likelihood against the reference and undesirable
/// ones lose it: the margin between their rewards grows from zero to
/// clearly positive, and the KL reference point is reported every step.
fn assert_learns_the_labels(name: &str, steps: &[Value]) {
    assert!(steps.len() >= 4, "{name}: {} steps", steps.len());
    let margins: Vec<f64> = steps
        .iter()
        .map(|s| step_metric(s, "rewards/margins"))
        .collect();
    let (first, last) = (margins[0], *margins.last().unwrap());
    assert!(
        first.abs() < 1e-3,
        "{name}: the policy starts as the reference: {margins:?}"
    );
    assert!(last > 0.5, "{name}: margins {margins:?}");
    let last_step = steps.last().unwrap();
    assert!(
        step_metric(last_step, "rewards/chosen") > 0.0,
        "{name}: {last_step}"
    );
    assert!(
        step_metric(last_step, "rewards/rejected") < 0.0,
        "{name}: {last_step}"
    );
    for s in steps {
        assert!(step_metric(s, "kl") >= 0.0, "{name}: {s}");
        assert_eq!(step_metric(s, "count/chosen"), 4.0, "{name}: {s}");
    }
}

#[test]
fn kto_with_lora_learns_the_labels() {
    let steps = train_kto(
        "kto-lora",
        json!({
            "max_steps": 6,
            "learning_rate": 1e-2,
            "lora_rank": 16,
            "lora_alpha": 32,
            "lora_dropout": 0.0,
        }),
    );
    assert_learns_the_labels("lora", &steps);
}

#[test]
fn kto_with_full_fine_tuning_learns_the_labels_against_a_frozen_copy() {
    let steps = train_kto(
        "kto-full",
        json!({
            "max_steps": 6,
            "learning_rate": 1e-3,
            "finetuning_type": "full",
            "beta": 0.5,
        }),
    );
    assert_learns_the_labels("full", &steps);
}

/// The KL rows are fixed per dataset, so a precomputed reference answers
/// for them too: the same losses and metrics as running the reference at
/// every step.
#[test]
fn a_precomputed_reference_gives_the_same_steps() {
    let extra = |precompute: bool| {
        json!({
            "max_steps": 3,
            "learning_rate": 1e-2,
            "lora_dropout": 0.0,
            "precompute_ref_log_probs": precompute,
        })
    };
    let live = train_kto("kto-live", extra(false));
    let events = run_kto("kto-cached", extra(true));
    // Every sample row and every KL row was precomputed.
    let logged = events
        .iter()
        .filter_map(|e| e["message"].as_str())
        .find(|m| m.starts_with("precomputed reference log-probs"))
        .expect("the precompute pass ran");
    assert!(logged.contains("for 16 rows"), "{logged}");
    let cached: Vec<Value> = events
        .into_iter()
        .filter(|e| e["event"] == "step")
        .collect();
    assert_eq!(live.len(), cached.len());
    for (a, b) in live.iter().zip(&cached) {
        for name in ["rewards/margins", "kl"] {
            let (x, y) = (step_metric(a, name), step_metric(b, name));
            assert!(
                (x - y).abs() <= 1e-5 * x.abs().max(1.0),
                "{name}: {x} vs {y}"
            );
        }
        let (x, y) = (a["loss"].as_f64().unwrap(), b["loss"].as_f64().unwrap());
        assert!((x - y).abs() <= 1e-5 * x.abs().max(1.0), "loss: {x} vs {y}");
    }
}

/// SFT does not silently train on labelled answers (half of which are
/// answers *not* to give): the job is refused naming the kind.
#[test]
fn sft_refuses_labelled_answers() {
    let home = tempfile::tempdir().unwrap();
    let model = tiny_model(home.path(), false);
    let config = json!({
        "model_name": model,
        "training_method": "sft",
        "dataset": [repo_root().join("tests/fixtures/preference/kto.jsonl")],
        "max_steps": 1,
        "device": "cpu",
        "output_dir": home.path().join("sft"),
    });
    let out = train_json(home.path(), "sft", &config);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("does not train on 8 unpaired samples"),
        "{err}"
    );
}

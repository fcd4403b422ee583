//! GRPO end to end, as a user runs it: a reward plugin made from the SDK
//! template (`tuner plugins new --kind reward`), built and dropped into the
//! plugin folder, scores the completions the tiny model samples; training
//! raises the mean reward. Several bundled rewards with weights and a KL
//! term run together; a hostile reward fails the job with its name while
//! `tuner serve` keeps answering. Before that, the loss and metrics of
//! every `loss_type` on a fixed rollout against TRL's formulas
//! (`tests/fixtures/grpo/losses.json`, written by `make_losses.py` there)
//! and an f64 reference written here, with the gradient against finite
//! differences.

use std::path::{Path, PathBuf};
use std::process::Output;
use std::sync::Arc;
use std::time::{Duration, Instant};

use candle_core::{DType, Device, Tensor, Var};
use serde_json::{Value, json};
use tuner::plugins::imports::model::{
    GeneratedCompletion, GeneratedRollout, MethodBatch, PolicyBackend, RewardScores, Sampling,
};
use tuner::plugins::settings;
use tuner::sample::SampleKind;
use tuner_tests::loss_check::{
    assert_gradient_matches, assert_matches_case, close, f32_matrix, read_fixture, tensor_of,
};
use tuner_tests::{ServeProcess, TestHome, TunerCommand, install, test_limits};

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

fn ok(out: Output) -> Output {
    assert!(
        out.status.success(),
        "stderr: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// A tiny random Qwen3 with its own (untied) head: its samples are varied
/// text, where a tied random head mostly repeats the last token.
fn tiny_model(home: &Path) -> PathBuf {
    let model = home.join("model");
    ok(TunerCommand::new(home)
        .args([
            "init-model",
            model.to_str().unwrap(),
            "--untied",
            "--tokenizer",
        ])
        .arg(repo().join("tests/fixtures/qwen3"))
        .output());
    model
}

/// Eight short prompts with a reference answer each.
fn prompts(home: &Path) -> PathBuf {
    let path = home.join("prompts.jsonl");
    let lines: Vec<String> = [
        ("2+3=", "5"),
        ("Name a colour.", "red"),
        ("Say hi.", "hi"),
        ("What is 7*6?", "42"),
        ("Count to three.", "1 2 3"),
        ("Capital of France?", "Paris"),
        ("Spell cat.", "c a t"),
        ("1+1=", "2"),
    ]
    .iter()
    .map(|(q, a)| json!({"prompt": [{"role": "user", "content": q}], "answer": a}).to_string())
    .collect();
    std::fs::write(&path, lines.join("\n")).unwrap();
    path
}

fn config(home: &Path, name: &str, body: &str) -> PathBuf {
    let path = home.join(format!("{name}.toml"));
    // No checkpoints unless the body asks for them.
    let save = if body.contains("save_steps") {
        ""
    } else {
        "save_steps = 0\n"
    };
    let text = format!(
        "model_name = {model:?}\ntraining_method = \"grpo\"\ndataset = {data:?}\n\
         per_device_train_batch_size = 2\ngradient_accumulation_steps = 1\nlogging_steps = 1\n\
         {save}device = \"cpu\"\noutput_dir = {out:?}\n{body}",
        model = home.join("model").display().to_string(),
        data = home.join("prompts.jsonl").display().to_string(),
        out = home.join(format!("out-{name}")).display().to_string(),
    );
    std::fs::write(&path, text).unwrap();
    path
}

/// The JSON lines `tuner train --json` printed.
fn events(out: &Output) -> Vec<Value> {
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

fn steps(out: &Output) -> Vec<Value> {
    events(out)
        .into_iter()
        .filter(|e| e["event"] == "step")
        .collect()
}

fn metric(step: &Value, name: &str) -> f64 {
    step["metrics"][name]
        .as_f64()
        .unwrap_or_else(|| panic!("step has no metric `{name}`: {step}"))
}

// ---------------------------------------------------- loss vs formulas

struct Fixture {
    group: usize,
    max_completion_length: usize,
    rewards: Vec<RewardScores>,
    tokens: Vec<u32>,
    policy: Vec<Vec<f64>>,
    reference: Vec<Vec<f64>>,
    mask: Vec<Vec<f64>>,
    cases: Vec<Value>,
}

/// The fixture, its log-probs and mask rounded to f32 as tensors hold them.
fn fixture() -> Fixture {
    let json = read_fixture("tests/fixtures/grpo/losses.json");
    let floats = |v: &Value| -> Vec<f64> {
        v.as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_f64().unwrap())
            .collect()
    };
    Fixture {
        group: json["group"].as_u64().unwrap() as usize,
        max_completion_length: json["max_completion_length"].as_u64().unwrap() as usize,
        rewards: json["rewards"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| RewardScores {
                name: r["name"].as_str().unwrap().to_string(),
                weight: r["weight"].as_f64().unwrap(),
                scores: floats(&r["scores"]),
            })
            .collect(),
        tokens: floats(&json["tokens"]).iter().map(|t| *t as u32).collect(),
        policy: f32_matrix(&json, "policy"),
        reference: f32_matrix(&json, "reference"),
        mask: f32_matrix(&json, "mask"),
        cases: json["cases"].as_array().unwrap().clone(),
    }
}

/// A policy whose "generation" is the fixture's rollout and whose reward
/// functions give the fixture's scores; log-probs with adapters are a
/// variable (so the gradient can be read), without them the reference.
struct FixedRollout {
    f: Arc<Fixture>,
    policy: Var,
}

impl PolicyBackend for FixedRollout {
    fn token_logprobs(&self, _batch: &MethodBatch, use_adapters: bool) -> anyhow::Result<Tensor> {
        Ok(if use_adapters {
            self.policy.as_tensor().clone()
        } else {
            tensor_of(&self.f.reference)
        })
    }

    fn generate(
        &self,
        batch: &MethodBatch,
        sampling: &Sampling,
    ) -> anyhow::Result<GeneratedRollout> {
        let k = sampling.samples_per_prompt as usize;
        assert_eq!(k, self.f.group);
        assert_eq!(
            sampling.max_new_tokens as usize,
            self.f.max_completion_length
        );
        let rows = batch.rows() * k;
        assert_eq!(rows, self.f.mask.len());
        let ids = Tensor::zeros((rows, self.f.mask[0].len() + 1), DType::U32, &Device::Cpu)?;
        let completions = (0..rows)
            .map(|i| GeneratedCompletion {
                prompt_row: (i / k) as u32,
                text: String::new(),
                tokens: self.f.tokens[i],
                finished: true,
            })
            .collect();
        Ok(GeneratedRollout {
            completions,
            batch: MethodBatch::new(SampleKind::Prompt, ids, tensor_of(&self.f.mask))?,
        })
    }

    fn score(&self, _rollout: &MethodBatch) -> anyhow::Result<Vec<RewardScores>> {
        Ok(self.f.rewards.clone())
    }
}

/// GRPO in f64 from the definitions (`old` is the policy the ratio is taken
/// against, fixed): the loss, and the metrics that depend on the settings.
fn reference_loss(
    settings: &Value,
    f: &Fixture,
    policy: &[Vec<f64>],
    old: &[Vec<f64>],
) -> (f64, Option<f64>) {
    let beta = settings["beta"].as_f64().unwrap();
    let eps = 0.2;
    let eps_high = settings["epsilon_high"].as_f64().unwrap_or(eps);
    let rows = f.mask.len();
    let rewards: Vec<f64> = (0..rows)
        .map(|i| f.rewards.iter().map(|r| r.weight * r.scores[i]).sum())
        .collect();
    let mut advantages = Vec::new();
    for group in rewards.chunks(f.group) {
        let mean = group.iter().sum::<f64>() / group.len() as f64;
        let var = group.iter().map(|r| (r - mean).powi(2)).sum::<f64>() / (group.len() - 1) as f64;
        for r in group {
            let a = r - mean;
            advantages.push(if settings["scale_rewards"] == true {
                a / (var.sqrt() + 1e-4)
            } else {
                a
            });
        }
    }
    let (mut kl_sum, mut mask_sum) = (0.0, 0.0);
    let mut per_row = Vec::new();
    let mut total = 0.0;
    for i in 0..rows {
        let mut row_sum = 0.0;
        for t in 0..f.mask[i].len() {
            let m = f.mask[i][t];
            let ratio = (policy[i][t] - old[i][t]).exp();
            let a = advantages[i];
            let mut term = -(ratio * a).min(ratio.clamp(1.0 - eps, 1.0 + eps_high) * a);
            let d = f.reference[i][t] - policy[i][t];
            let kl = d.exp() - d - 1.0;
            if beta != 0.0 {
                term += beta * kl;
            }
            row_sum += term * m;
            kl_sum += kl * m;
            mask_sum += m;
        }
        total += row_sum;
        per_row.push(row_sum / f.mask[i].iter().sum::<f64>().max(1.0));
    }
    let loss = match settings["loss_type"].as_str().unwrap() {
        "grpo" => per_row.iter().sum::<f64>() / rows as f64,
        "bnpo" | "dapo" => total / mask_sum,
        "dr_grpo" => total / (rows * f.max_completion_length) as f64,
        other => panic!("{other}"),
    };
    (loss, (beta != 0.0).then(|| kl_sum / mask_sum))
}

#[test]
fn every_loss_type_matches_trl_and_the_f64_reference_in_loss_metrics_and_gradient() {
    let f = Arc::new(fixture());
    let host = TestHome::new().start(test_limits());
    let plugin = host.method("grpo").expect("grpo is bundled");
    let schema = plugin.settings().unwrap();
    let mut seen = std::collections::BTreeSet::new();
    for case in &f.cases {
        let name = case["name"].as_str().unwrap();
        let mut config = case["settings"].clone();
        config["num_generations"] = json!(f.group);
        config["max_completion_length"] = json!(f.max_completion_length);
        let job = json!({"reward_funcs": ["accuracy", "format"]});
        let given = config.as_object().cloned().unwrap();
        let values = settings::check(&schema, &given).unwrap();
        let mut session = plugin.start_method(&values, &job.to_string()).unwrap();
        seen.insert(config["loss_type"].as_str().unwrap().to_string());

        let policy = Var::from_tensor(&tensor_of(&f.policy)).unwrap();
        let backend: Arc<dyn PolicyBackend> = Arc::new(FixedRollout {
            f: f.clone(),
            policy: policy.clone(),
        });
        let prompts = Tensor::zeros((2, 4), DType::U32, &Device::Cpu).unwrap();
        let prompt_mask = Tensor::zeros((2, 3), DType::F32, &Device::Cpu).unwrap();
        let batch = Arc::new(MethodBatch::new(SampleKind::Prompt, prompts, prompt_mask).unwrap());
        let out = session.loss(batch, backend, 0).unwrap();
        let loss = out.loss.to_scalar::<f32>().unwrap() as f64;

        let got = assert_matches_case(name, loss, &out.metrics, case);

        // The independent f64 reference, and its finite differences for
        // the gradient (the old policy held at the current one).
        let (ref_loss, ref_kl) = reference_loss(&config, &f, &f.policy, &f.policy);
        assert!(close(loss, ref_loss, 1e-5), "{name}: {loss} vs {ref_loss}");
        if let Some(kl) = ref_kl {
            assert!(
                close(got["kl"], kl, 1e-5),
                "{name}: kl {} vs {kl}",
                got["kl"]
            );
        }
        assert_gradient_matches(
            name,
            &out.loss,
            &policy,
            &f.policy,
            0..f.policy.len(),
            &f.mask,
            |p| reference_loss(&config, &f, p, &f.policy).0,
        );
    }
    let all: Vec<&str> = seen.iter().map(String::as_str).collect();
    assert_eq!(all, ["bnpo", "dapo", "dr_grpo", "grpo"]);
}

// ------------------------------------------------------------ end to end

/// The promise of the reward template: from `tuner plugins new --kind
/// reward` to a GRPO run that learns what the reward asks for (answers in
/// Latin script) — the mean reward of the last steps above the first ones'.
#[test]
fn grpo_with_a_reward_plugin_from_the_template_raises_the_reward() {
    if let Err(e) = tuner_wasm_build::find_toolchain() {
        eprintln!("SKIPPED grpo_with_a_reward_plugin_from_the_template_raises_the_reward: {e}");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let home = dir.path();
    let src = home.join("src");
    ok(TunerCommand::new(home)
        .args(["plugins", "new", "latin", "--kind", "reward", "--dir"])
        .arg(&src)
        .output());
    // Share the wasm target folder with the other plugin builds of the
    // suites, so the wasm32 standard library is not compiled again.
    let shared_target = Path::new(env!("CARGO_TARGET_TMPDIR")).join("../wasm-plugins");
    ok(TunerCommand::new(home)
        .args(["plugins", "build"])
        .arg(src.join("latin"))
        .args(["--install", "--target-dir"])
        .arg(&shared_target)
        .output());
    tiny_model(home);
    prompts(home);
    let config = config(
        home,
        "latin",
        "reward_funcs = [\"latin\"]\nnum_generations = 6\nmax_completion_length = 8\n\
         max_steps = 16\nlearning_rate = 2e-2\nlr_scheduler_type = \"constant\"\nwarmup_ratio = 0.0\n",
    );
    let out = ok(TunerCommand::new(home)
        .args(["train", config.to_str().unwrap(), "--json"])
        .output());
    let steps = steps(&out);
    assert_eq!(steps.len(), 16, "{steps:?}");
    for name in [
        "reward",
        "reward_std",
        "rewards/latin/mean",
        "rewards/latin/std",
        "completion_length",
        "clip_ratio",
        "frac_reward_zero_std",
    ] {
        metric(&steps[0], name);
    }
    // One optimisation step per generation batch: the ratio is 1, nothing clips.
    assert_eq!(metric(&steps[0], "clip_ratio"), 0.0);
    assert!(
        steps[0]["metrics"].get("kl").is_none(),
        "beta = 0 keeps no reference"
    );
    let mean = |s: &[Value]| s.iter().map(|s| metric(s, "reward")).sum::<f64>() / s.len() as f64;
    let (first, last) = (mean(&steps[..3]), mean(&steps[13..]));
    assert!(
        last >= 0.95 && last > first + 0.05,
        "the mean reward went from {first:.3} (steps 1-3) to {last:.3} (steps 14-16)"
    );
}

/// A GRPO run resumed from a checkpoint samples the same completions as
/// the run that was never stopped: rollouts are seeded by the position in
/// the run, not by how many generations this process has made, so the
/// resumed steps' rewards, completion lengths and losses are the same.
#[test]
fn a_resumed_grpo_run_samples_what_the_uninterrupted_run_sampled() {
    let dir = tempfile::tempdir().unwrap();
    let home = dir.path();
    tiny_model(home);
    prompts(home);
    // A reward some random completions earn and others do not (a capital
    // letter among them), so the rewards and the loss depend on what was
    // sampled. The reward table must end the file.
    let body = |extra: &str| {
        format!(
            "num_generations = 4\nmax_completion_length = 6\nmax_steps = 4\n\
             learning_rate = 1e-2\ntemperature = 1.0\n{extra}reward_funcs = [\"format\"]\n\
             [reward_settings.format]\npattern = \"(?s).*[A-Z].*\"\n"
        )
    };
    let whole = config(
        home,
        "whole",
        &body("save_steps = 2\nsave_total_limit = 0\n"),
    );
    let whole = steps(&ok(TunerCommand::new(home)
        .args(["train", whole.to_str().unwrap(), "--json"])
        .output()));
    assert_eq!(whole.len(), 4);
    let checkpoint = home.join("out-whole/checkpoint-2");
    assert!(checkpoint.is_dir());
    let resumed = config(home, "resumed", &body(""));
    let resumed = steps(&ok(TunerCommand::new(home)
        .args(["train", resumed.to_str().unwrap(), "--json", "--resume"])
        .arg(&checkpoint)
        .output()));
    assert_eq!(resumed.len(), 2, "{resumed:?}");
    let rewards: Vec<f64> = whole.iter().map(|s| metric(s, "reward")).collect();
    assert!(
        rewards.iter().any(|r| *r > 0.0 && *r < 1.0),
        "the rewards should vary with the samples: {rewards:?}"
    );
    for (a, b) in whole[2..].iter().zip(&resumed) {
        for name in ["reward", "reward_std", "completion_length"] {
            assert_eq!(metric(a, name), metric(b, name), "{name}: {a} vs {b}");
        }
        assert_eq!(a["loss"], b["loss"], "{a} vs {b}");
    }
}

/// Three bundled rewards with weights, the KL term (beta > 0 keeps the base
/// with adapters off as the reference) and each loss type run, and report
/// one mean per reward.
#[test]
fn bundled_rewards_with_weights_and_a_kl_term() {
    let dir = tempfile::tempdir().unwrap();
    let home = dir.path();
    tiny_model(home);
    prompts(home);
    for loss_type in ["grpo", "bnpo", "dr_grpo"] {
        let config = config(
            home,
            loss_type,
            // Top-level keys first: the reward tables end the file.
            &format!(
                "num_generations = 3\nmax_completion_length = 6\nmax_steps = 2\n\
                 beta = 0.04\nloss_type = {loss_type:?}\nscale_rewards = false\n\
                 reward_funcs = [\"accuracy\", \"format\", \"length\"]\n\
                 reward_weights = [1.0, 0.5, 2.0]\n\
                 [reward_settings.length]\nbuffer_fraction = 0.5\n\
                 [reward_settings.format]\npattern = \".*\\\\S.*\"\n",
            ),
        );
        let out = ok(TunerCommand::new(home)
            .args(["train", config.to_str().unwrap(), "--json"])
            .output());
        let steps = steps(&out);
        assert_eq!(steps.len(), 2);
        for step in &steps {
            let (acc, fmt, len) = (
                metric(step, "rewards/accuracy/mean"),
                metric(step, "rewards/format/mean"),
                metric(step, "rewards/length/mean"),
            );
            // A random model almost never ends a turn within 6 tokens, so
            // most completions hit the limit (-1); none can score above 0.
            assert!((-1.0..=0.0).contains(&len) && len < -0.5, "{step}");
            let reward = metric(step, "reward");
            assert!(
                (reward - (acc + 0.5 * fmt + 2.0 * len)).abs() < 1e-9,
                "{reward} is not the weighted sum of {acc}, {fmt}, {len}"
            );
            let kl = metric(step, "kl");
            assert!(kl.is_finite() && kl >= 0.0, "kl {kl}");
            assert!(step["loss"].as_f64().unwrap().is_finite());
        }
        // The first step starts from the reference itself: KL 0.
        assert!(metric(&steps[0], "kl").abs() < 1e-6, "{}", steps[0]);
    }
}

#[test]
fn grpo_config_mistakes_are_named_before_training() {
    let dir = tempfile::tempdir().unwrap();
    let home = dir.path();
    tiny_model(home);
    prompts(home);
    let run = |name: &str, body: &str| -> String {
        let config = config(home, name, body);
        let out = TunerCommand::new(home)
            .args(["train", config.to_str().unwrap()])
            .output();
        assert!(!out.status.success());
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    let err = run("none", "max_steps = 1\n");
    assert!(
        err.contains("reward_funcs") && err.contains("grpo needs reward functions"),
        "{err}"
    );
    let err = run("missing", "max_steps = 1\nreward_funcs = [\"nope\"]\n");
    assert!(
        err.contains("reward_funcs: no reward plugin named `nope` is installed (installed: accuracy, format, length)"),
        "{err}"
    );
    let err = run(
        "weights",
        "max_steps = 1\nreward_funcs = [\"accuracy\", \"format\"]\nreward_weights = [1.0]\n",
    );
    assert!(
        err.contains("reward_weights has 1 entries but reward_funcs has 2"),
        "{err}"
    );
    let err = run(
        "setting",
        "max_steps = 1\nreward_funcs = [\"length\"]\n[reward_settings.length]\nbuffer_fractio = 0.1\n",
    );
    assert!(
        err.contains(
            "reward_settings.length.buffer_fractio: reward `length` has no setting \
             `buffer_fractio`; did you mean `buffer_fraction`?"
        ),
        "{err}"
    );
    // Rewards on a method that generates nothing.
    let config = config(
        home,
        "sft-rewards",
        "max_steps = 1\nreward_funcs = [\"length\"]\n",
    );
    let text = std::fs::read_to_string(&config)
        .unwrap()
        .replace("training_method = \"grpo\"", "training_method = \"lora\"")
        .replace("prompts.jsonl", "chat.jsonl");
    std::fs::write(&config, text).unwrap();
    std::fs::write(
        home.join("chat.jsonl"),
        json!({"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]})
            .to_string(),
    )
    .unwrap();
    let out = TunerCommand::new(home)
        .args(["train", config.to_str().unwrap()])
        .output();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("reward_funcs is set, but method `lora` does not generate completions"),
        "{err}"
    );
}

/// A reward plugin that loops forever (then one that traps) fails the job
/// with an error naming it; the server goes on serving and runs the next job.
#[test]
fn a_hostile_reward_fails_the_job_and_the_server_keeps_serving() {
    let dir = tempfile::tempdir().unwrap();
    let home = dir.path();
    install(&home.join("plugins"), "hostile-reward", "hostile");
    std::fs::write(
        home.join("config.toml"),
        "[plugins]\ncall_timeout_secs = 2\n",
    )
    .unwrap();
    let model = tiny_model(home);
    let data = prompts(home);
    let serve = ServeProcess::start(home);
    let client = reqwest::blocking::Client::new();
    let submit = |mode: &str| -> u64 {
        let body = json!({
            "model_name": model, "training_method": "grpo", "dataset": data,
            "reward_funcs": ["hostile"], "reward_settings": {"hostile": {"mode": mode}},
            "num_generations": 2, "max_completion_length": 4, "max_steps": 2,
            "per_device_train_batch_size": 1, "gradient_accumulation_steps": 1,
            "save_steps": 0, "device": "cpu", "output_dir": format!("hostile-{mode}"),
        });
        let resp = client
            .post(format!("{}/api/training", serve.url))
            .json(&body)
            .send()
            .unwrap();
        assert_eq!(resp.status().as_u16(), 201);
        resp.json::<Value>().unwrap()["id"].as_u64().unwrap()
    };
    let finished = |id: u64| -> Value {
        let start = Instant::now();
        loop {
            let job: Value = client
                .get(format!("{}/api/training/{id}", serve.url))
                .send()
                .unwrap()
                .json()
                .unwrap();
            if ["failed", "completed", "stopped"].contains(&job["status"].as_str().unwrap_or("")) {
                return job;
            }
            assert!(
                start.elapsed() < Duration::from_secs(300),
                "job {id} never ended: {job}"
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    };
    let job = finished(submit("loop"));
    assert_eq!(job["status"], "failed", "{job}");
    let error = job["error"].as_str().unwrap();
    assert!(
        error.contains("plugin `hostile` ran past its time limit") && error.contains("`score`"),
        "{error}"
    );
    let job = finished(submit("trap"));
    assert_eq!(job["status"], "failed", "{job}");
    assert!(
        job["error"]
            .as_str()
            .unwrap()
            .contains("plugin `hostile` crashed in `score`"),
        "{job}"
    );
    // Still serving, and a job with a well-behaved reward completes.
    let plugins = client
        .get(format!("{}/api/plugins", serve.url))
        .send()
        .unwrap();
    assert_eq!(plugins.status().as_u16(), 200);
    let job = finished(submit("ok"));
    assert_eq!(job["status"], "completed", "{job}");
}

//! Step time of the preference and RL methods against SFT, on the CPU: DPO
//! (reference = the base with adapters off, one more forward pass) and its
//! reference-free SimPO variant, and GRPO with its generation share, all
//! relative to a LoRA SFT step over the same answers; and DPO with
//! `precompute_ref_log_probs` (the reference's log-probs computed once before
//! the first step), with LoRA and with full fine-tuning (where it also spares
//! the frozen copy of the model: see the peak memory column).
//!
//! Each configuration runs `tuner train --json` (release build) in its own
//! process on one random Qwen3 (`tuner init-model`, hidden
//! `RL_BENCH_HIDDEN`, default 256, 4 layers, the real 151,669-token
//! vocabulary), LoRA r=16, batch 4. The step time is the wall time between
//! consecutive step events read from the process as they arrive, the mean
//! over the steps after the first. Per step:
//! - `sft`: 4 chat samples (prompt + a 40-word answer), 4 rows;
//! - `dpo`/`simpo`: 4 pairs, chosen = that answer, rejected = another of
//!   the same length: 8 rows, twice SFT's tokens (DPO adds a forward pass
//!   of the reference, the base with adapters off);
//! - `grpo`: 8 rows, 2 prompts × 4 completions of `RL_BENCH_COMPLETION` (default 48)
//!   new tokens, sampled at temperature 1 and scored by the bundled
//!   `length` reward; the host reports the time spent generating
//!   (`time/generation_s`) and in the reward plugin (`time/rewards_s`);
//! - `precomputed ref`: DPO whose steps read the reference log-probs from
//!   the precompute pass (its time, once for the 64 pairs, is read from the
//!   job's log line and shown apart).
//!
//! Peak memory is the process's peak RSS, the largest a step event reports.
//!
//! `cargo bench -p tuner-tests --bench rl_step` prints a table and ratios.
//! Compare ratios from one run; these machines are shared and noisy.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

use serde_json::{Value, json};
use tuner_tests::{release_tuner, repo_root};

fn env_or(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// What one configuration measured.
struct Measured {
    name: &'static str,
    step_s: f64,
    generation_s: Option<f64>,
    rewards_s: Option<f64>,
    /// Peak RSS, the largest a step event reports.
    peak_mib: Option<f64>,
    /// The precompute pass of `precompute_ref_log_probs`, from its log line.
    precompute_s: Option<f64>,
}

/// The seconds of a "precomputed reference log-probs for N rows in S s" line.
fn precompute_seconds(message: &str) -> Option<f64> {
    let rest = message.strip_prefix("precomputed reference log-probs for ")?;
    let (_, after) = rest.split_once(" rows in ")?;
    after.split_once(" s")?.0.parse().ok()
}

/// Runs `tuner train CONFIG --json` and times its step events as they arrive.
fn run(tuner: &Path, home: &Path, name: &'static str, config: Value) -> Measured {
    let path = home.join(format!("{}.json", name.replace(' ', "_")));
    std::fs::write(&path, config.to_string()).unwrap();
    let mut child = Command::new(tuner)
        .env("TUNER_HOME", home)
        .args(["train", path.to_str().unwrap(), "--json"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = BufReader::new(child.stdout.take().unwrap());
    let mut stamps = Vec::new();
    let mut steps = Vec::new();
    let mut precompute_s = None;
    for line in stdout.lines() {
        let line = line.unwrap();
        let Ok(event) = serde_json::from_str::<Value>(&line) else {
            continue;
        };
        if event["event"] == "step" {
            stamps.push(Instant::now());
            steps.push(event);
        } else if event["event"] == "log" {
            precompute_s = precompute_s.or(event["message"].as_str().and_then(precompute_seconds));
        }
    }
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{name}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(steps.len() >= 3, "{name}: too few steps to time");
    let gaps: Vec<f64> = stamps
        .windows(2)
        .map(|w| (w[1] - w[0]).as_secs_f64())
        .collect();
    let later = &steps[1..];
    let mean_metric = |key: &str| -> Option<f64> {
        let v: Vec<f64> = later
            .iter()
            .filter_map(|s| s["metrics"][key].as_f64())
            .collect();
        (!v.is_empty()).then(|| v.iter().sum::<f64>() / v.len() as f64)
    };
    Measured {
        name,
        step_s: gaps.iter().sum::<f64>() / gaps.len() as f64,
        generation_s: mean_metric("time/generation_s"),
        rewards_s: mean_metric("time/rewards_s"),
        peak_mib: steps
            .iter()
            .filter_map(|s| s["memory_bytes"].as_f64())
            .reduce(f64::max)
            .map(|b| b / (1 << 20) as f64),
        precompute_s,
    }
}

fn main() {
    let hidden = env_or("RL_BENCH_HIDDEN", 256);
    let steps = env_or("RL_BENCH_STEPS", 6);
    let completion = env_or("RL_BENCH_COMPLETION", 48);
    let tuner = release_tuner();
    let dir = tempfile::tempdir().unwrap();
    let home = dir.path();
    let model = home.join("model");
    let heads = (hidden / 32).max(2);
    let status = Command::new(&tuner)
        .env("TUNER_HOME", home)
        .args([
            "init-model",
            model.to_str().unwrap(),
            "--untied",
            "--tokenizer",
        ])
        .arg(repo_root().join("tests/fixtures/qwen3"))
        .args(["--hidden-size", &hidden.to_string()])
        .args(["--intermediate-size", &(hidden * 3).to_string()])
        .args(["--layers", "4", "--heads", &heads.to_string()])
        .args([
            "--kv-heads",
            &(heads / 2).max(1).to_string(),
            "--head-dim",
            "32",
        ])
        .status()
        .unwrap();
    assert!(status.success());

    // The same prompts and 40-word answers for every method.
    let answer = |i: usize| -> String {
        (0..40)
            .map(|j| format!("w{}", (i * 7 + j * 13) % 97))
            .collect::<Vec<_>>()
            .join(" ")
    };
    let prompt = |i: usize| format!("Sample {i}: repeat the sequence, please.");
    let write = |name: &str, rows: Vec<Value>| -> PathBuf {
        let path = home.join(name);
        let text: Vec<String> = rows.iter().map(Value::to_string).collect();
        std::fs::write(&path, text.join("\n")).unwrap();
        path
    };
    let chat = write(
        "chat.jsonl",
        (0..64)
            .map(|i| {
                json!({"messages": [
                {"role": "user", "content": prompt(i)},
                {"role": "assistant", "content": answer(i)}]})
            })
            .collect(),
    );
    let pairs = write(
        "pairs.jsonl",
        (0..64)
            .map(|i| json!({"prompt": prompt(i), "chosen": answer(i), "rejected": answer(i + 1)}))
            .collect(),
    );
    let prompts = write(
        "prompts.jsonl",
        (0..64)
            .map(|i| json!({"prompt": [{"role": "user", "content": prompt(i)}], "answer": "x"}))
            .collect(),
    );
    let base = |method: &str, data: &Path, batch: usize, out: &str| {
        json!({
            "model_name": model, "training_method": method, "dataset": [data],
            "per_device_train_batch_size": batch, "gradient_accumulation_steps": 1,
            "max_steps": steps, "max_seq_length": 256, "learning_rate": 1e-4,
            "gradient_checkpointing": false, "logging_steps": 1, "save_steps": 0,
            "device": "cpu", "lora_rank": 16, "output_dir": home.join(out),
        })
    };
    let with = |mut v: Value, extra: Value| {
        for (k, x) in extra.as_object().unwrap() {
            v[k] = x.clone();
        }
        v
    };
    let results = [
        run(&tuner, home, "sft (lora)", base("lora", &chat, 4, "sft")),
        run(
            &tuner,
            home,
            "dpo sigmoid (lora)",
            with(
                base("dpo", &pairs, 4, "dpo"),
                json!({"loss_type": "sigmoid"}),
            ),
        ),
        run(
            &tuner,
            home,
            "dpo (lora, precomputed ref)",
            with(
                base("dpo", &pairs, 4, "dpo-pre"),
                json!({"loss_type": "sigmoid", "precompute_ref_log_probs": true}),
            ),
        ),
        run(
            &tuner,
            home,
            "dpo sigmoid (full)",
            with(
                base("dpo", &pairs, 4, "dpo-full"),
                json!({"loss_type": "sigmoid", "finetuning_type": "full"}),
            ),
        ),
        run(
            &tuner,
            home,
            "dpo (full, precomputed ref)",
            with(
                base("dpo", &pairs, 4, "dpo-full-pre"),
                json!({"loss_type": "sigmoid", "finetuning_type": "full",
                       "precompute_ref_log_probs": true}),
            ),
        ),
        run(
            &tuner,
            home,
            "simpo, no reference",
            with(
                base("dpo", &pairs, 4, "simpo"),
                json!({"loss_type": "simpo"}),
            ),
        ),
        run(
            &tuner,
            home,
            "grpo (lora)",
            with(
                base("grpo", &prompts, 2, "grpo"),
                json!({"num_generations": 4, "max_completion_length": completion,
                       "reward_funcs": ["length"], "temperature": 1.0}),
            ),
        ),
    ];
    println!(
        "\nstep time, CPU, random Qwen3 hidden {hidden}, 4 layers, vocab 151669, LoRA r=16, {steps} steps\n"
    );
    println!(
        "{:<28} {:>9} {:>10} {:>12} {:>10} {:>10} {:>13}",
        "method", "step s", "step/sft", "generate %", "reward %", "peak MiB", "precompute s"
    );
    let sft = results[0].step_s;
    for r in &results {
        let share = |v: Option<f64>| {
            v.map(|s| format!("{:.0}", 100.0 * s / r.step_s))
                .unwrap_or_else(|| "-".into())
        };
        let or_dash = |v: Option<f64>, digits: usize| {
            v.map(|v| format!("{v:.digits$}"))
                .unwrap_or_else(|| "-".into())
        };
        println!(
            "{:<28} {:>9.3} {:>10.2} {:>12} {:>10} {:>10} {:>13}",
            r.name,
            r.step_s,
            r.step_s / sft,
            share(r.generation_s),
            share(r.rewards_s),
            or_dash(r.peak_mib, 0),
            or_dash(r.precompute_s, 1)
        );
    }
    let step_of = |name: &str| results.iter().find(|r| r.name == name).unwrap().step_s;
    println!(
        "\nDPO step with precomputed reference / without: LoRA {:.2}, full {:.2}",
        step_of("dpo (lora, precomputed ref)") / step_of("dpo sigmoid (lora)"),
        step_of("dpo (full, precomputed ref)") / step_of("dpo sigmoid (full)")
    );
}

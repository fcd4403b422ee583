//! Training throughput and memory on the CPU: LoRA vs full fine-tuning vs
//! QLoRA, and LoRA with gradient checkpointing on and off.
//!
//! Each configuration runs `tuner train` (release build) in its own process,
//! so peak RSS (`VmHWM`) is that configuration's alone. The model is a random
//! Qwen3 made by `tuner init-model` with the real Qwen3 tokenizer (151,669
//! tokens) — `TRAIN_BENCH_HIDDEN` (default 256) sets its width, 4 layers —
//! trained on generated chat samples of about 120 tokens, batch 4.
//! Tokens/s is the mean of the steps after the first (the first includes
//! one-off costs).
//!
//! `cargo bench -p tuner-tests --bench train_step` prints a table and ratios.
//! Compare ratios from one run; these machines are shared and noisy.

use std::process::Command;

use serde_json::{Value, json};
use tuner_tests::{release_tuner, repo_root};

struct Measured {
    name: &'static str,
    tokens_per_s: f64,
    peak_rss_mib: f64,
    trainable: String,
}

fn main() {
    let hidden: usize = std::env::var("TRAIN_BENCH_HIDDEN")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(256);
    let steps: u64 = std::env::var("TRAIN_BENCH_STEPS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(6);
    let tuner = release_tuner();
    let dir = tempfile::tempdir().unwrap();
    let model = dir.path().join("model");
    let heads = (hidden / 32).max(2);
    let status = Command::new(&tuner)
        .env("TUNER_HOME", dir.path())
        .args(["init-model", model.to_str().unwrap(), "--tokenizer"])
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

    // Chat samples of ~120 tokens, different enough not to repeat.
    let data = dir.path().join("data.jsonl");
    let mut lines = String::new();
    for i in 0..64 {
        let answer: Vec<String> = (0..40)
            .map(|j| format!("w{}", (i * 7 + j * 13) % 97))
            .collect();
        lines.push_str(
            &json!({"messages": [
                {"role": "user", "content": format!("Sample {i}: repeat the sequence, please.")},
                {"role": "assistant", "content": answer.join(" ")}
            ]})
            .to_string(),
        );
        lines.push('\n');
    }
    std::fs::write(&data, lines).unwrap();

    let cases: [(&'static str, &str, bool); 5] = [
        ("lora", "lora", false),
        ("lora + checkpointing", "lora", true),
        ("qlora (nf4)", "qlora", false),
        ("full", "full", false),
        ("full + checkpointing", "full", true),
    ];
    let mut results = Vec::new();
    for (name, method, checkpointing) in cases {
        let out_dir = dir.path().join(name.replace([' ', '(', ')', '+'], "_"));
        let config = json!({
            "model_name": model, "training_method": method, "dataset": [data],
            "per_device_train_batch_size": 4, "gradient_accumulation_steps": 1,
            "max_steps": steps, "max_seq_length": 256, "learning_rate": 1e-4,
            "gradient_checkpointing": checkpointing, "logging_steps": 1,
            "save_steps": 0, "device": "cpu", "lora_rank": 16, "output_dir": out_dir,
        });
        let config_path = dir.path().join(format!("{method}-{checkpointing}.json"));
        std::fs::write(&config_path, config.to_string()).unwrap();
        let out = Command::new(&tuner)
            .env("TUNER_HOME", dir.path())
            .args(["train", config_path.to_str().unwrap(), "--json"])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{name}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let events: Vec<Value> = String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect();
        let steps: Vec<&Value> = events.iter().filter(|e| e["event"] == "step").collect();
        let later: Vec<f64> = steps
            .iter()
            .skip(1)
            .filter_map(|e| e["tokens_per_s"].as_f64())
            .collect();
        let peak = steps
            .iter()
            .filter_map(|e| e["memory_bytes"].as_f64())
            .fold(0.0, f64::max);
        let trainable = events
            .iter()
            .filter_map(|e| e["message"].as_str())
            .find(|m| m.ends_with("trainable parameters"))
            .map(|m| m.trim_end_matches(" trainable parameters").to_string())
            .unwrap_or_default();
        results.push(Measured {
            name,
            tokens_per_s: later.iter().sum::<f64>() / later.len().max(1) as f64,
            peak_rss_mib: peak / (1 << 20) as f64,
            trainable,
        });
    }

    println!(
        "\ntraining step, CPU, random Qwen3 hidden {hidden}, 4 layers, vocab 151669, batch 4, {steps} steps\n"
    );
    println!(
        "{:<24} {:>12} {:>14} {:>14} {:>10} {:>10}",
        "config", "tokens/s", "peak RSS MiB", "trainable", "speed/lora", "mem/lora"
    );
    let base = &results[0];
    for r in &results {
        println!(
            "{:<24} {:>12.0} {:>14.0} {:>14} {:>10.2} {:>10.2}",
            r.name,
            r.tokens_per_s,
            r.peak_rss_mib,
            r.trainable,
            r.tokens_per_s / base.tokens_per_s,
            r.peak_rss_mib / base.peak_rss_mib
        );
    }
}

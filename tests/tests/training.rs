//! End to end: `tuner train` on a tiny random Qwen3 with the real tokenizer.
//!
//! Each method memorises a handful of samples (loss below 10% of where it
//! started), writes its outputs, and a run resumed from a checkpoint
//! continues with exactly the losses of the uninterrupted run.

use std::path::{Path, PathBuf};
use std::process::Output;

use serde_json::Value;
use sha2::Digest;
use tuner_tests::{ServeProcess, TunerCommand, test_plugin};

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

/// `tuner` offline, with `home` as `TUNER_HOME` and no plugin folder from
/// the environment.
fn tuner(home: &Path, args: &[&str]) -> Output {
    TunerCommand::new(home)
        .args(args)
        .env("TUNER_OFFLINE", "1")
        .env_remove("TUNER_PLUGIN_DIR")
        .output()
}

/// A fresh home with a tiny model (`model/`) and the demo data.
struct Setup {
    dir: tempfile::TempDir,
}

impl Setup {
    fn new() -> Self {
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
        Self { dir }
    }

    fn path(&self, p: &str) -> PathBuf {
        self.dir.path().join(p)
    }

    /// Writes a JSON config for `method`, `extra` keys on top; returns its path.
    fn config(&self, name: &str, method: &str, extra: Value) -> PathBuf {
        let data = repo().join("examples/data/demo.jsonl");
        let mut config = serde_json::json!({
            "model_name": self.path("model"),
            "training_method": method,
            "dataset": [data],
            "per_device_train_batch_size": 4,
            "gradient_accumulation_steps": 1,
            "learning_rate": 1e-2,
            "lr_scheduler_type": "constant",
            "warmup_ratio": 0.0,
            "max_seq_length": 64,
            "logging_steps": 1,
            "save_steps": 0,
            "device": "cpu",
            "seed": 7,
            "output_dir": self.path(name),
        });
        // The LoRA keys are the adapter methods' settings: any other method
        // would refuse them as keys it does not declare.
        if matches!(method, "lora" | "qlora") {
            config["lora_rank"] = 16.into();
            config["lora_alpha"] = 32.into();
            config["lora_dropout"] = 0.0.into();
        }
        for (k, v) in extra.as_object().unwrap() {
            config[k] = v.clone();
        }
        let path = self.path(&format!("{name}.json"));
        std::fs::write(&path, serde_json::to_vec_pretty(&config).unwrap()).unwrap();
        path
    }

    fn train(&self, config: &Path, more: &[&str]) -> (Output, Vec<Value>) {
        let mut args = vec!["train", config.to_str().unwrap(), "--json"];
        args.extend_from_slice(more);
        let out = tuner(self.dir.path(), &args);
        let events = String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .collect();
        (out, events)
    }
}

fn losses(events: &[Value]) -> Vec<f64> {
    events
        .iter()
        .filter(|e| e["event"] == "step")
        .filter_map(|e| e["loss"].as_f64())
        .collect()
}

fn sha256(path: &Path) -> String {
    hex::encode(sha2::Sha256::digest(std::fs::read(path).unwrap()))
}

fn assert_memorised(method: &str, events: &[Value], out: &Output) {
    let l = losses(events);
    assert!(
        !l.is_empty(),
        "{method}: no steps\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let (first, last) = (l[0], *l.last().unwrap());
    assert!(
        last < 0.1 * first,
        "{method}: loss went from {first} to {last}, not below 10%: {l:?}"
    );
}

#[test]
fn lora_memorises_leaves_the_base_untouched_and_writes_a_peft_adapter() {
    let s = Setup::new();
    let base = sha256(&s.path("model/model.safetensors"));
    let config = s.config(
        "lora",
        "lora",
        serde_json::json!({"num_train_epochs": 40, "target_modules": "all-linear"}),
    );
    let (out, events) = s.train(&config, &[]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_memorised("lora", &events, &out);

    assert_eq!(
        sha256(&s.path("model/model.safetensors")),
        base,
        "base weights changed"
    );
    let adapter: Value =
        serde_json::from_slice(&std::fs::read(s.path("lora/adapter_config.json")).unwrap())
            .unwrap();
    assert_eq!(adapter["peft_type"], "LORA");
    assert_eq!(adapter["r"], 16);
    let weights = std::fs::read(s.path("lora/adapter_model.safetensors")).unwrap();
    let st = safetensors::SafeTensors::deserialize(&weights).unwrap();
    let names: Vec<String> = st.names().into_iter().map(String::from).collect();
    // 2 layers x 7 linears x (A, B); nothing of the base model.
    assert_eq!(names.len(), 28, "{names:?}");
    assert!(
        names
            .iter()
            .all(|n| n.starts_with("base_model.model.model.layers.")
                && (n.ends_with(".lora_A.weight") || n.ends_with(".lora_B.weight")))
    );
    let a = st
        .tensor("base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight")
        .unwrap();
    assert_eq!(a.shape(), [16, 64]);
}

#[test]
fn full_fine_tuning_memorises_and_writes_a_full_model() {
    let s = Setup::new();
    let config = s.config(
        "full",
        "sft",
        serde_json::json!({"num_train_epochs": 25, "learning_rate": 3e-3, "val_size": 0.25}),
    );
    let (out, events) = s.train(&config, &[]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_memorised("sft", &events, &out);
    // One of the four samples is held out and scored at the end.
    let eval: Vec<f64> = events
        .iter()
        .filter_map(|e| e["metrics"]["eval_loss"].as_f64())
        .collect();
    assert_eq!(eval.len(), 1, "{events:?}");
    assert!(eval[0].is_finite());
    assert!(s.path("full/config.json").is_file());
    assert!(s.path("full/tokenizer.json").is_file());
    let index = s.path("full/model.safetensors.index.json");
    let single = s.path("full/model.safetensors");
    assert!(index.is_file() || single.is_file(), "no weights written");
}

#[test]
fn qlora_memorises_on_an_nf4_base() {
    let s = Setup::new();
    let config = s.config(
        "qlora",
        "qlora",
        serde_json::json!({"num_train_epochs": 40}),
    );
    let (out, events) = s.train(&config, &[]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_memorised("qlora", &events, &out);
    let report: Value =
        serde_json::from_slice(&std::fs::read(s.path("qlora/train_report.json")).unwrap()).unwrap();
    assert_eq!(report["plan"]["base_quantization"], "nf4", "{report}");
    assert!(s.path("qlora/adapter_model.safetensors").is_file());
}

#[test]
fn a_resumed_run_continues_with_the_same_losses() {
    let s = Setup::new();
    let extra = serde_json::json!({
        "max_steps": 6, "save_steps": 3, "save_total_limit": 0, "lora_dropout": 0.1,
        "lr_scheduler_type": "cosine", "warmup_steps": 2,
    });
    let config = s.config("whole", "lora", extra.clone());
    let (out, events) = s.train(&config, &[]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let whole = losses(&events);
    assert_eq!(whole.len(), 6);
    assert!(s.path("whole/checkpoint-3/trainer_state.json").is_file());
    assert!(
        s.path("whole/checkpoint-3/adapter_model.safetensors")
            .is_file()
    );

    // A second run starts from the first one's step-3 checkpoint.
    let config = s.config("resumed", "lora", extra);
    let checkpoint = s.path("whole/checkpoint-3");
    let (out, events) = s.train(&config, &["--resume", checkpoint.to_str().unwrap()]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let resumed = losses(&events);
    assert_eq!(resumed.len(), 3, "{resumed:?}");
    assert_eq!(resumed, whole[3..], "resumed losses differ");
}

#[test]
fn bad_configs_and_a_broken_method_plugin_fail_clearly() {
    let s = Setup::new();
    let config = s.config("bad", "lora", serde_json::json!({"lora_rnak": 8}));
    let (out, _) = s.train(&config, &[]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains(
            "unknown key \"lora_rnak\"; did you mean \"lora_rank\" (a setting of method \"lora\")?"
        ),
        "{err}"
    );

    // A key of another method says whose it is; a bad value names the
    // method's rule.
    let config = s.config(
        "quantised-full",
        "full",
        serde_json::json!({"load_in_4bit": true}),
    );
    let (out, _) = s.train(&config, &[]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains(
            "\"load_in_4bit\" is a setting of method \"dpo\", \"grpo\", \"kto\", \"lora\", \
             \"qlora\", not of training_method \"sft\""
        ),
        "{err}"
    );
    let config = s.config("rank-zero", "lora", serde_json::json!({}));
    let (out, _) = s.train(&config, &["--set", "lora_rank=0"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains("--set: lora_rank (method \"lora\"): must be at least 1, found 0"),
        "{err}"
    );

    let config = s.config(
        "missing",
        "lora",
        serde_json::json!({"num_train_epochs": 1}),
    );
    let text = std::fs::read_to_string(&config).unwrap().replace(
        &s.path("model").display().to_string(),
        "/nonexistent/model-dir",
    );
    std::fs::write(&config, text).unwrap();
    let (out, _) = s.train(&config, &[]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(err.contains("/nonexistent/model-dir"), "{err}");

    // A method plugin whose loss is not a scalar fails the job, named.
    let plugins = s.path("plugins");
    std::fs::create_dir_all(&plugins).unwrap();
    std::fs::copy(test_plugin("bad-loss"), plugins.join("bad-loss.wasm")).unwrap();
    let config = s.config(
        "broken",
        "bad-loss",
        serde_json::json!({"num_train_epochs": 1}),
    );
    let (out, events) = s.train(&config, &[]);
    assert!(!out.status.success());
    let end = events
        .iter()
        .find(|e| e["event"] == "end")
        .expect("an end event");
    assert_eq!(end["job"]["status"], "failed", "{end}");
    let error = end["job"]["error"].as_str().unwrap_or_default();
    assert!(
        error.contains("bad-loss") && error.contains("single-element"),
        "{error}"
    );
}

/// `tuner serve` as a process (killed with SIGKILL when dropped), with the
/// requests these tests make.
struct Server(ServeProcess);

impl Server {
    fn start(home: &Path) -> Server {
        Server(ServeProcess::start(home))
    }

    fn get(&self, path: &str) -> Option<Value> {
        reqwest::blocking::get(format!("{}{path}", self.0.url))
            .ok()?
            .json()
            .ok()
    }

    fn post(&self, path: &str, body: &Value) -> (u16, Value) {
        let resp = reqwest::blocking::Client::new()
            .post(format!("{}{path}", self.0.url))
            .json(body)
            .send()
            .unwrap();
        (resp.status().as_u16(), resp.json().unwrap_or(Value::Null))
    }

    /// Polls job `id` until `done` says so (at most two minutes).
    fn wait(&self, id: i64, done: impl Fn(&Value) -> bool) -> Value {
        for _ in 0..1200 {
            if let Some(job) = self.get(&format!("/api/training/{id}"))
                && done(&job)
            {
                return job;
            }
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
        panic!("job {id} did not reach the expected state");
    }
}

#[test]
fn a_job_survives_the_server_being_killed_and_resumes_from_its_checkpoint() {
    let s = Setup::new();
    let config_path = s.config(
        "served",
        "lora",
        serde_json::json!({"max_steps": 40, "save_steps": 2, "save_total_limit": 2}),
    );
    let mut config: Value = serde_json::from_slice(&std::fs::read(config_path).unwrap()).unwrap();
    // Over the API a job writes only under `$TUNER_HOME/runs`.
    config["output_dir"] = "served".into();

    let server = Server::start(s.dir.path());
    let (status, job) = server.post("/api/training", &config);
    assert_eq!(status, 201, "{job}");
    let id = job["id"].as_i64().unwrap();
    let running = server.wait(id, |j| j["last_checkpoint_step"].as_u64().is_some());
    assert_eq!(running["status"], "running", "{running}");
    drop(server); // SIGKILL, mid-job

    let server = Server::start(s.dir.path());
    let job = server.get(&format!("/api/training/{id}")).unwrap();
    assert_eq!(job["status"], "interrupted", "{job}");
    let from = job["last_checkpoint_step"].as_u64().unwrap();
    assert!(from >= 2);
    let (status, job) = server.post(&format!("/api/training/{id}/resume"), &Value::Null);
    assert_eq!(status, 200, "{job}");
    let done = server.wait(id, |j| {
        matches!(j["status"].as_str(), Some("completed" | "failed"))
    });
    assert_eq!(done["status"], "completed", "{done}");
    assert_eq!(done["step"], 40);
    assert!(s.path("runs/served/adapter_model.safetensors").is_file());
    let report: Value =
        serde_json::from_slice(&std::fs::read(s.path("runs/served/train_report.json")).unwrap())
            .unwrap();
    assert_eq!(report["losses"].as_array().unwrap().len(), 40);
}

/// Peak memory: the NF4 base must make QLoRA's peak lower than LoRA's. The
/// model is shaped so its decoder linears (47 M parameters) outweigh what
/// both runs share (the 58 M-parameter embedding, the mapped file, the
/// runtime); each run is its own process, so each peak is its own.
#[test]
fn qlora_peaks_below_lora_on_the_same_model() {
    let dir = tempfile::tempdir().unwrap();
    let model = dir.path().join("model");
    let out = tuner(
        dir.path(),
        &[
            "init-model",
            model.to_str().unwrap(),
            "--tokenizer",
            repo().join("tests/fixtures/qwen3").to_str().unwrap(),
            "--hidden-size",
            "384",
            "--intermediate-size",
            "3072",
            "--layers",
            "12",
            "--heads",
            "6",
            "--kv-heads",
            "2",
            "--head-dim",
            "64",
        ],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let peak = |method: &str| -> f64 {
        let config = serde_json::json!({
            "model_name": model, "training_method": method,
            "dataset": [repo().join("examples/data/demo.jsonl")],
            "per_device_train_batch_size": 1, "max_steps": 2, "max_seq_length": 32,
            "logging_steps": 1, "save_steps": 0, "device": "cpu",
            "gradient_checkpointing": false, "output_dir": dir.path().join(method),
        });
        let path = dir.path().join(format!("{method}.json"));
        std::fs::write(&path, config.to_string()).unwrap();
        let out = tuner(dir.path(), &["train", path.to_str().unwrap(), "--json"]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .filter_map(|e| e["memory_bytes"].as_f64())
            .fold(0.0, f64::max)
    };
    let (lora, qlora) = (peak("lora"), peak("qlora"));
    assert!(lora > 0.0 && qlora > 0.0);
    // The f32 linears are ~180 MiB, their NF4 form ~24 MiB: expect well over
    // 100 MiB less, not a rounding difference.
    const MIB: f64 = (1 << 20) as f64;
    assert!(
        qlora + 100.0 * MIB < lora,
        "QLoRA peak {:.0} MiB is not well below LoRA's {:.0} MiB",
        qlora / MIB,
        lora / MIB
    );
}

/// Continued pre-training: a plain-text file's documents (here its
/// paragraphs, by `text_split`) are joined and cut into `max_seq_length`
/// blocks, not each truncated; `tuner data stats` reports the same blocks.
#[test]
fn pretraining_text_is_cut_into_blocks_and_none_of_it_is_lost() {
    use tuner_tests::training::{offline_tuner, succeeded, tiny_model, train_json};
    let home = tempfile::tempdir().unwrap();
    let model = tiny_model(home.path(), false);
    let corpus = home.path().join("corpus.txt");
    let paragraph = |n: usize| {
        (0..n)
            .map(|i| format!("word{i} 语料{i}"))
            .collect::<Vec<_>>()
            .join(" ")
    };
    std::fs::write(
        &corpus,
        format!(
            "{}\n\n{}\n\n{}\n",
            paragraph(30),
            paragraph(3),
            paragraph(20)
        ),
    )
    .unwrap();
    let config = serde_json::json!({
        "model_name": model,
        "training_method": "lora",
        "dataset": [corpus],
        "text_split": "paragraph",
        "max_seq_length": 16,
        "per_device_train_batch_size": 4,
        "gradient_accumulation_steps": 1,
        "max_steps": 1,
        "save_steps": 0,
        "device": "cpu",
        "output_dir": home.path().join("pt"),
    });
    let out = succeeded(train_json(home.path(), "pt", &config));
    let log: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter_map(|e| e["message"].as_str().map(str::to_string))
        .collect();
    let cut = log
        .iter()
        .find(|m| m.contains("text samples"))
        .unwrap_or_else(|| panic!("no text-block line in {log:?}"));
    // "3 text samples (N tokens) cut into B blocks of max_seq_length 16 tokens"
    let numbers: Vec<usize> = cut
        .split(|c: char| !c.is_ascii_digit())
        .filter_map(|w| w.parse().ok())
        .collect();
    let (documents, tokens, blocks) = (numbers[0], numbers[1], numbers[2]);
    assert_eq!(documents, 3, "{cut}");
    assert!(
        tokens > 3 * 16,
        "the corpus is longer than three blocks: {cut}"
    );
    assert_eq!(blocks, tokens.div_ceil(16), "{cut}");
    let kept = log
        .iter()
        .find(|m| m.contains("batches per epoch"))
        .expect("batch line");
    assert!(
        kept.starts_with(&format!("{blocks} samples (0 truncated")),
        "{kept}"
    );

    // The data command counts the same tokens and blocks.
    let stats = succeeded(offline_tuner(
        home.path(),
        &[
            "data",
            "stats",
            corpus.to_str().unwrap(),
            "--set",
            "split=paragraph",
            "--tokenizer",
            model.to_str().unwrap(),
            "--max-seq-len",
            "16",
            "--json",
        ],
    ));
    let stats: Value = serde_json::from_slice(&stats.stdout).unwrap();
    assert_eq!(stats["tokens"]["text_tokens"], tokens, "{stats}");
    assert_eq!(stats["tokens"]["text_blocks"], blocks, "{stats}");
    assert_eq!(stats["tokens"]["over_max_seq_len"], 0, "{stats}");
}

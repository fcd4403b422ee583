//! `/api/training`: config errors, submit, list, SSE (history then live),
//! stop, with a fake trainer the test steps by hand.

use std::sync::{Arc, Mutex, mpsc};
use std::time::Duration;

use serde_json::{Value, json};
use tuner::train::jobs::{JobContext, JobOutcome, TrainEvent, Trainer};
use tuner_tests::{TestHome, TestServer, TunerCommand, eventually};

/// Reports one step per token the test sends; stops when asked.
struct SteppedTrainer {
    tokens: Mutex<mpsc::Receiver<()>>,
}

impl Trainer for SteppedTrainer {
    fn run(&self, job: &JobContext) -> anyhow::Result<JobOutcome> {
        let total = job.config().max_steps.unwrap_or(5);
        job.set_total_steps(total);
        job.log("loaded the fake model");
        for step in 1..=total {
            if self.tokens.lock().unwrap().recv().is_err() {
                anyhow::bail!("test ended");
            }
            if job.should_stop() {
                return Ok(JobOutcome::Stopped);
            }
            job.report(TrainEvent {
                step,
                epoch: step as f64 / total as f64,
                loss: Some(3.0 / step as f64),
                lr: Some(1e-4),
                tokens_per_s: Some(100.0),
                ..Default::default()
            });
        }
        Ok(JobOutcome::Completed)
    }
}

async fn post(s: &TestServer, path: &str, body: Option<Value>) -> (u16, Value) {
    let mut req = s.client.post(s.url(path));
    if let Some(b) = body {
        req = req.json(&b);
    }
    let resp = req.send().await.unwrap();
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap_or(Value::Null))
}

/// `(event name, data)` of each SSE event in `text`.
fn sse_events(text: &str) -> Vec<(String, Value)> {
    text.split("\n\n")
        .filter_map(|block| {
            let mut name = None;
            let mut data = None;
            for line in block.lines() {
                if let Some(n) = line.strip_prefix("event:") {
                    name = Some(n.trim().to_string());
                } else if let Some(d) = line.strip_prefix("data:") {
                    data = serde_json::from_str(d.trim()).ok();
                }
            }
            Some((name?, data?))
        })
        .collect()
}

fn config(extra: Value) -> Value {
    let mut v =
        json!({"model_name": "Qwen/Qwen3-0.6B", "dataset": "data.jsonl#10", "device": "cpu"});
    v.as_object_mut()
        .unwrap()
        .extend(extra.as_object().unwrap().clone());
    v
}

#[tokio::test]
async fn bad_configs_are_rejected_naming_the_key() {
    let home = TestHome::new();
    let (_tx, rx) = mpsc::channel();
    let s = home
        .server()
        .trainer(Ok(Arc::new(SteppedTrainer {
            tokens: Mutex::new(rx),
        })))
        .start()
        .await;
    let (status, body) = post(&s, "/api/training", Some(config(json!({"lora_rnak": 8})))).await;
    assert_eq!(status, 400);
    assert_eq!(
        body,
        json!({"error": {"code": "invalid_training_config",
                         "message": "unknown key \"lora_rnak\"; did you mean \"lora_rank\" (a setting of method \"lora\")?"}})
    );
    let (status, body) = post(
        &s,
        "/api/training",
        Some(config(json!({"learning_rate": 0}))),
    )
    .await;
    assert_eq!(status, 400);
    assert_eq!(
        body["error"]["message"],
        "learning_rate must be > 0 (got 0)"
    );
    let (status, body) = post(
        &s,
        "/api/training",
        Some(config(json!({"training_method": "lorra"}))),
    )
    .await;
    assert_eq!(status, 400);
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("did you mean \"lora\"?"),
        "{body}"
    );
    let (status, body) = post(&s, "/api/training", None).await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (400, Some("invalid_training_config"))
    );
    let (status, body) = s.get_json("/api/training").await;
    assert_eq!((status, body), (200, json!({"jobs": []})));
}

#[tokio::test]
async fn jobs_queue_stream_history_then_live_and_stop() {
    let home = TestHome::new();
    let (tokens, rx) = mpsc::channel();
    let s = home
        .server()
        .trainer(Ok(Arc::new(SteppedTrainer {
            tokens: Mutex::new(rx),
        })))
        .start()
        .await;

    let (status, a) = post(
        &s,
        "/api/training",
        Some(config(json!({"max_steps": 4, "run_name": "first"}))),
    )
    .await;
    assert_eq!(status, 201, "{a}");
    assert_eq!(a["name"], "first");
    assert_eq!(a["config"]["lora_rank"], 8, "defaults are filled in");
    let a_id = a["id"].as_i64().unwrap();
    let a_path = format!("/api/training/{a_id}");
    tokens.send(()).unwrap();
    tokens.send(()).unwrap();
    assert!(
        eventually(Duration::from_secs(10), async || s
            .get_json(&a_path)
            .await
            .1["step"]
            == 2)
        .await,
        "two steps reported"
    );

    // A second job waits: one job per device.
    let (status, b) = post(&s, "/api/training", Some(config(json!({})))).await;
    assert_eq!(status, 201);
    let b_id = b["id"].as_i64().unwrap();
    let (_, list) = s.get_json("/api/training").await;
    let listed: Vec<(i64, &str)> = list["jobs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|j| (j["id"].as_i64().unwrap(), j["status"].as_str().unwrap()))
        .collect();
    assert_eq!(listed, [(b_id, "queued"), (a_id, "running")]);

    // A queued job stops at once; a finished one cannot stop again.
    let (status, body) = post(&s, &format!("/api/training/{b_id}/stop"), None).await;
    assert_eq!((status, body["status"].as_str()), (200, Some("stopped")));
    let (status, body) = post(&s, &format!("/api/training/{b_id}/stop"), None).await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (409, Some("job_finished"))
    );

    // Subscribe after two steps: those are replayed, the rest arrive live.
    let stream = s
        .client
        .get(s.url(&format!("{a_path}/events")))
        .send()
        .await
        .unwrap();
    assert_eq!(stream.status(), 200);
    tokens.send(()).unwrap();
    assert!(
        eventually(Duration::from_secs(10), async || s
            .get_json(&a_path)
            .await
            .1["step"]
            == 3)
        .await
    );
    // A running job stops at its next step.
    let (status, body) = post(&s, &format!("{a_path}/stop"), None).await;
    assert_eq!((status, body["status"].as_str()), (200, Some("running")));
    tokens.send(()).unwrap();
    let text = tokio::time::timeout(Duration::from_secs(10), stream.text())
        .await
        .expect("the stream ends with the job")
        .unwrap();
    let events = sse_events(&text);
    let names: Vec<&str> = events.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names, ["status", "step", "step", "step", "end"], "{text}");
    let steps: Vec<(u64, u64)> = events
        .iter()
        .filter(|(n, _)| n == "step")
        .map(|(_, d)| (d["seq"].as_u64().unwrap(), d["step"].as_u64().unwrap()))
        .collect();
    assert_eq!(steps, [(1, 1), (2, 2), (3, 3)]);
    assert_eq!(events[1].1["loss"], 3.0);
    assert_eq!(events[4].1["status"], "stopped");
    assert!(
        text.contains("id: 3\n"),
        "step events carry their seq as SSE id: {text}"
    );

    // After the end: the history and the end, at once.
    let (_, a_done) = s.get_json(&a_path).await;
    assert_eq!(a_done["status"], "stopped");
    assert_eq!(
        (a_done["step"].as_u64(), a_done["total_steps"].as_u64()),
        (Some(3), Some(4))
    );
    let text = s
        .client
        .get(s.url(&format!("{a_path}/events")))
        .header("Last-Event-ID", "2")
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let names: Vec<String> = sse_events(&text).into_iter().map(|(n, _)| n).collect();
    assert_eq!(names, ["status", "step", "end"], "{text}");

    // The queue moves on: a new job runs to completion.
    let (_, c) = post(&s, "/api/training", Some(config(json!({"max_steps": 1})))).await;
    tokens.send(()).unwrap();
    let c_path = format!("/api/training/{}", c["id"]);
    assert!(
        eventually(Duration::from_secs(10), async || s
            .get_json(&c_path)
            .await
            .1["status"]
            == "completed")
        .await
    );
}

#[tokio::test]
async fn unknown_jobs_and_unavailable_training() {
    let home = TestHome::new();
    let s = home
        .server()
        .trainer(Err("training engine not wired yet".into()))
        .start()
        .await;
    for path in [
        "/api/training/42",
        "/api/training/abc",
        "/api/training/42/events",
    ] {
        let (status, body) = s.get_json(path).await;
        assert_eq!(
            (status, body["error"]["code"].as_str()),
            (404, Some("job_not_found")),
            "{path}"
        );
    }
    let (status, body) = post(&s, "/api/training/42/stop", None).await;
    assert_eq!(status, 404, "{body}");
    let (status, body) = post(&s, "/api/training", Some(config(json!({})))).await;
    assert_eq!(status, 503);
    assert_eq!(
        body["error"],
        json!({"code": "training_unavailable", "message": "training engine not wired yet"})
    );
    let (_, doc) = s.get_json("/api/openapi.json").await;
    for p in [
        "/api/training",
        "/api/training/{id}",
        "/api/training/{id}/events",
        "/api/training/{id}/stop",
    ] {
        assert!(
            doc["paths"].get(p).is_some(),
            "{p} missing from the OpenAPI document"
        );
    }
}

/// `tuner train` and `tuner jobs` as a process: config errors name the file
/// and key, and the job list is JSON.
#[test]
fn cli_reports_config_errors_and_lists_jobs() {
    let home = tempfile::tempdir().unwrap();
    // Not the home itself: `config.toml` there is tuner's own configuration.
    let work = tempfile::tempdir().unwrap();
    let run = |args: &[&str]| {
        TunerCommand::new(home.path())
            .args(args)
            .current_dir(work.path())
            .output()
    };
    std::fs::write(
        work.path().join("config.toml"),
        "model_name = \"Qwen/Qwen3-0.6B\"\ndataset = \"d.jsonl\"\nlora_rnak = 8\n",
    )
    .unwrap();
    let out = run(&["train", "config.toml"]);
    assert!(!out.status.success());
    assert_eq!(
        String::from_utf8_lossy(&out.stderr).trim(),
        "error: config.toml: unknown key \"lora_rnak\"; did you mean \"lora_rank\" (a setting of method \"lora\")?"
    );
    std::fs::write(
        work.path().join("config.yaml"),
        "model_name: Qwen/Qwen3-0.6B\ndataset: [d.jsonl]\n",
    )
    .unwrap();
    let out = run(&["train", "config.yaml", "--set", "lr=1e-4"]);
    assert_eq!(
        String::from_utf8_lossy(&out.stderr).trim(),
        "error: --set: unknown key \"lr\"; did you mean \"learning_rate\"?"
    );
    let out = run(&["jobs", "list", "--json"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v, json!({"jobs": []}));
}

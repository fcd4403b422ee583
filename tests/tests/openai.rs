//! The OpenAI-compatible server: `/v1/chat/completions`, `/v1/completions`,
//! `/v1/models` and `/api/inference`, against a tiny random Qwen3 (real
//! tokenizer and chat template) and a random LoRA adapter, in process.
//!
//! Request bodies are shaped as the official `openai` Python client sends
//! them (recorded from openai 1.x: only the given fields, JSON, its headers).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use candle_core::{DType, Device, Tensor};
use serde_json::{Value, json};
use tuner::app::models::WhenMissing;
use tuner::infer::{EngineOptions, ModelOptions};
use tuner::model::random_init::{TinyShape, write_random_model};
use tuner_tests::{TestHome, TestServer};

const TOKEN: &str = "sk-test";
/// Context length of the tiny model (small, to test the limit).
const CONTEXT: usize = 256;

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures")
}

fn shape() -> TinyShape {
    TinyShape {
        hidden_size: 32,
        intermediate_size: 64,
        num_hidden_layers: 2,
        num_attention_heads: 4,
        num_key_value_heads: 2,
        head_dim: 8,
        tie_word_embeddings: true,
        embedding_std: 0.5,
    }
}

/// A random model under the home (`models/tiny`) with a short context.
fn write_model(home: &TestHome, context: usize) -> PathBuf {
    let dir = home.dir.path().join("models/tiny");
    write_random_model(&dir, &fixtures().join("qwen3"), &shape(), 7).unwrap();
    let path = dir.join("config.json");
    let mut config: Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    config["max_position_embeddings"] = json!(context);
    std::fs::write(&path, serde_json::to_vec_pretty(&config).unwrap()).unwrap();
    dir
}

/// A random PEFT LoRA adapter (q_proj, v_proj) for [`shape`], strong
/// enough to change greedy output.
fn write_adapter(dir: &Path, seed: u64) {
    std::fs::create_dir_all(dir).unwrap();
    let s = shape();
    let r = 4;
    std::fs::write(
        dir.join("adapter_config.json"),
        serde_json::to_vec_pretty(&json!({
            "peft_type": "LORA", "task_type": "CAUSAL_LM", "r": r, "lora_alpha": 8,
            "lora_dropout": 0.0, "bias": "none", "fan_in_fan_out": false,
            "target_modules": ["q_proj", "v_proj"], "use_rslora": false, "use_dora": false,
            "base_model_name_or_path": "tiny",
        }))
        .unwrap(),
    )
    .unwrap();
    let device = Device::Cpu;
    let mut tensors: HashMap<String, Tensor> = HashMap::new();
    let mut seed_f = seed as f64;
    let mut randn = |rows: usize, cols: usize| {
        seed_f += 1.0;
        // Deterministic pseudo-random values (no rng crate needed).
        let data: Vec<f32> = (0..rows * cols)
            .map(|i| {
                (((i as f64 + 1.0) * 12.9898 + seed_f * 78.233).sin() * 43758.5453).fract() as f32
            })
            .collect();
        Tensor::from_vec(data, (rows, cols), &device)
            .unwrap()
            .to_dtype(DType::F32)
            .unwrap()
    };
    for layer in 0..s.num_hidden_layers {
        for (module, out) in [
            ("q_proj", s.num_attention_heads * s.head_dim),
            ("v_proj", s.num_key_value_heads * s.head_dim),
        ] {
            let base = format!("base_model.model.model.layers.{layer}.self_attn.{module}");
            tensors.insert(format!("{base}.lora_A.weight"), randn(r, s.hidden_size));
            tensors.insert(format!("{base}.lora_B.weight"), randn(out, r));
        }
    }
    candle_core::safetensors::save(&tensors, dir.join("adapter_model.safetensors")).unwrap();
}

struct Fixture {
    home: TestHome,
    server: TestServer,
}

/// A server with token [`TOKEN`] serving `tiny` and its adapter `tiny-lora`.
async fn serve() -> Fixture {
    serve_with(EngineOptions::default(), CONTEXT).await
}

async fn serve_with(options: EngineOptions, context: usize) -> Fixture {
    let home = TestHome::new();
    let model = write_model(&home, context);
    let adapter = home.dir.path().join("adapters/lora");
    write_adapter(&adapter, 1);
    let state = home.server().token(TOKEN).state();
    let engine = state
        .app()
        .start_engine(
            model.to_str().unwrap(),
            Some("tiny"),
            ModelOptions::default(),
            options,
            WhenMissing::Fail,
        )
        .unwrap();
    engine.load_adapter("tiny-lora", &adapter).unwrap();
    state.app().served().insert(engine).unwrap();
    let server = TestServer::start(state).await;
    Fixture { home, server }
}

/// The headers the `openai` Python client sends.
fn openai_request(f: &Fixture, path: &str, body: &Value) -> reqwest::RequestBuilder {
    f.server
        .client
        .post(f.server.url(path))
        .header("Authorization", format!("Bearer {TOKEN}"))
        .header("Content-Type", "application/json")
        .header("Accept", "application/json")
        .header("User-Agent", "OpenAI/Python 1.51.0")
        .header("X-Stainless-Lang", "python")
        .header("X-Stainless-Package-Version", "1.51.0")
        .header("X-Stainless-OS", "Linux")
        .header("X-Stainless-Arch", "x64")
        .header("X-Stainless-Runtime", "CPython")
        .header("X-Stainless-Runtime-Version", "3.12.3")
        .header("X-Stainless-Retry-Count", "0")
        .body(serde_json::to_vec(body).unwrap())
}

async fn post(f: &Fixture, path: &str, body: &Value) -> (u16, Value) {
    let resp = openai_request(f, path, body).send().await.unwrap();
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap_or(Value::Null))
}

/// The `data:` payloads of an event stream, `[DONE]` included.
async fn post_stream(f: &Fixture, path: &str, body: &Value) -> Vec<String> {
    let resp = openai_request(f, path, body).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    assert!(
        resp.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/event-stream")
    );
    let text = resp.text().await.unwrap();
    text.split("\n\n")
        .filter(|e| !e.trim().is_empty())
        .filter_map(|e| {
            e.lines()
                .find_map(|l| l.strip_prefix("data: ").or_else(|| l.strip_prefix("data:")))
                .map(|d| d.trim().to_string())
        })
        .collect()
}

fn chat_body(model: &str, user: &str, extra: Value) -> Value {
    let mut body = json!({
        "messages": [{"role": "user", "content": user}],
        "model": model,
    });
    for (k, v) in extra.as_object().unwrap() {
        body[k] = v.clone();
    }
    body
}

fn content(resp: &Value, i: usize) -> String {
    resp["choices"][i]["message"]["content"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

/// Concatenated content (and reasoning) deltas of choice `i`, and its finish reason.
fn stream_text(payloads: &[String], i: usize) -> (String, String, Option<String>) {
    let (mut content, mut reasoning, mut finish) = (String::new(), String::new(), None);
    for p in payloads {
        if p == "[DONE]" {
            continue;
        }
        let chunk: Value = serde_json::from_str(p).unwrap();
        for c in chunk["choices"].as_array().unwrap() {
            if c["index"] != i {
                continue;
            }
            content.push_str(c["delta"]["content"].as_str().unwrap_or(""));
            reasoning.push_str(c["delta"]["reasoning_content"].as_str().unwrap_or(""));
            if let Some(r) = c["finish_reason"].as_str() {
                finish = Some(r.to_string());
            }
        }
    }
    (content, reasoning, finish)
}

#[tokio::test]
async fn chat_as_the_openai_client_sends_it_and_streamed_equals_unstreamed() {
    let f = serve().await;
    let body = chat_body(
        "tiny",
        "Hello there",
        json!({"max_tokens": 8, "temperature": 0, "seed": 3, "stream": false}),
    );
    let (status, resp) = post(&f, "/v1/chat/completions", &body).await;
    assert_eq!(status, 200, "{resp}");
    assert_eq!(resp["object"], "chat.completion");
    assert!(resp["id"].as_str().unwrap().starts_with("chatcmpl-"));
    assert_eq!(resp["model"], "tiny");
    assert!(resp["created"].as_u64().unwrap() > 0);
    let choice = &resp["choices"][0];
    assert_eq!(choice["index"], 0);
    assert_eq!(choice["message"]["role"], "assistant");
    assert!(["stop", "length"].contains(&choice["finish_reason"].as_str().unwrap()));
    let usage = &resp["usage"];
    let (p, c, t) = (
        usage["prompt_tokens"].as_u64().unwrap(),
        usage["completion_tokens"].as_u64().unwrap(),
        usage["total_tokens"].as_u64().unwrap(),
    );
    assert!(p > 0 && c > 0 && c <= 8);
    assert_eq!(p + c, t);
    let answer = content(&resp, 0);
    let reasoning = resp["choices"][0]["message"]["reasoning_content"]
        .as_str()
        .unwrap_or("")
        .to_string();

    // Streamed: role first, deltas, finish, usage, [DONE].
    let mut stream_body = body.clone();
    stream_body["stream"] = json!(true);
    stream_body["stream_options"] = json!({"include_usage": true});
    let payloads = post_stream(&f, "/v1/chat/completions", &stream_body).await;
    assert_eq!(payloads.last().unwrap(), "[DONE]");
    let first: Value = serde_json::from_str(&payloads[0]).unwrap();
    assert_eq!(first["object"], "chat.completion.chunk");
    assert_eq!(first["choices"][0]["delta"]["role"], "assistant");
    let (streamed, streamed_reasoning, finish) = stream_text(&payloads, 0);
    assert_eq!(streamed, answer);
    assert_eq!(streamed_reasoning, reasoning);
    assert_eq!(finish.as_deref(), choice["finish_reason"].as_str());
    let usage_chunk: Value = serde_json::from_str(&payloads[payloads.len() - 2]).unwrap();
    assert_eq!(usage_chunk["choices"], json!([]));
    assert_eq!(usage_chunk["usage"], resp["usage"]);

    // Content as a list of text parts renders the same prompt.
    let parts = json!({
        "messages": [{"role": "user", "content": [{"type": "text", "text": "Hello there"}]}],
        "model": "tiny", "max_tokens": 8, "temperature": 0,
    });
    let (status, resp2) = post(&f, "/v1/chat/completions", &parts).await;
    assert_eq!(status, 200, "{resp2}");
    assert_eq!(content(&resp2, 0), answer);
    assert_eq!(
        resp2["usage"]["prompt_tokens"],
        resp["usage"]["prompt_tokens"]
    );
}

#[tokio::test]
async fn n_stop_max_tokens_logprobs_and_thinking_switch() {
    let f = serve().await;
    // n = 2: two choices, indices 0 and 1.
    let (status, resp) = post(
        &f,
        "/v1/chat/completions",
        &chat_body("tiny", "Hi", json!({"n": 2, "max_tokens": 4, "seed": 1})),
    )
    .await;
    assert_eq!(status, 200, "{resp}");
    let indices: Vec<u64> = resp["choices"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["index"].as_u64().unwrap())
        .collect();
    assert_eq!(indices, [0, 1]);
    assert!(resp["usage"]["completion_tokens"].as_u64().unwrap() <= 8);

    // max_tokens with ignore_eos: exactly that many, finish_reason length.
    let (status, resp) = post(
        &f,
        "/v1/chat/completions",
        &chat_body(
            "tiny",
            "Count",
            json!({"max_tokens": 5, "temperature": 0, "ignore_eos": true,
                   "chat_template_kwargs": {"enable_thinking": false}}),
        ),
    )
    .await;
    assert_eq!(status, 200, "{resp}");
    assert_eq!(resp["choices"][0]["finish_reason"], "length");
    assert_eq!(resp["usage"]["completion_tokens"], 5);
    let text = content(&resp, 0);

    // stop: the text is cut before the first occurrence of the stop string.
    let chars: Vec<char> = text.chars().collect();
    if chars.len() >= 3 {
        let stop: String = chars[2..3].iter().collect();
        let expected = &text[..text.find(&stop).unwrap()];
        let (status, cut) = post(
            &f,
            "/v1/chat/completions",
            &chat_body(
                "tiny",
                "Count",
                json!({"max_tokens": 5, "temperature": 0, "ignore_eos": true, "stop": stop,
                       "chat_template_kwargs": {"enable_thinking": false}}),
            ),
        )
        .await;
        assert_eq!(status, 200, "{cut}");
        assert_eq!(content(&cut, 0), expected, "stop {stop:?} in {text:?}");
        assert_eq!(cut["choices"][0]["finish_reason"], "stop");
    }

    // logprobs: one entry per token, with the alternatives asked for.
    let (status, resp) = post(
        &f,
        "/v1/chat/completions",
        &chat_body(
            "tiny",
            "Count",
            json!({"max_tokens": 3, "temperature": 0, "ignore_eos": true,
                   "logprobs": true, "top_logprobs": 2}),
        ),
    )
    .await;
    assert_eq!(status, 200, "{resp}");
    let entries = resp["choices"][0]["logprobs"]["content"]
        .as_array()
        .unwrap();
    assert_eq!(entries.len(), 3);
    for e in entries {
        assert!(e["token"].is_string());
        assert!(e["logprob"].as_f64().unwrap() <= 0.0);
        assert!(e["bytes"].is_array());
        assert_eq!(e["top_logprobs"].as_array().unwrap().len(), 2);
    }
}

#[tokio::test]
async fn completions_models_and_adapters() {
    let f = serve().await;
    let (status, models) = f
        .server
        .client
        .get(f.server.url("/v1/models"))
        .bearer_auth(TOKEN)
        .send()
        .await
        .map(|r| (r.status().as_u16(), r))
        .unwrap();
    assert_eq!(status, 200);
    let models: Value = models.json().await.unwrap();
    assert_eq!(models["object"], "list");
    let data = models["data"].as_array().unwrap();
    let ids: Vec<&str> = data.iter().map(|m| m["id"].as_str().unwrap()).collect();
    assert_eq!(ids, ["tiny", "tiny-lora"]);
    assert_eq!(data[0]["object"], "model");
    assert_eq!(data[0]["owned_by"], "tuner");
    assert!(data[0].get("parent").is_none());
    assert_eq!(data[1]["parent"], "tiny");

    // The adapter changes greedy output.
    let body = |model: &str| {
        json!({"model": model, "prompt": "The capital of France is", "max_tokens": 6,
               "temperature": 0, "ignore_eos": true})
    };
    let (status, base) = post(&f, "/v1/completions", &body("tiny")).await;
    assert_eq!(status, 200, "{base}");
    assert_eq!(base["object"], "text_completion");
    assert!(base["id"].as_str().unwrap().starts_with("cmpl-"));
    assert_eq!(base["choices"][0]["finish_reason"], "length");
    assert_eq!(base["usage"]["completion_tokens"], 6);
    let (status, adapted) = post(&f, "/v1/completions", &body("tiny-lora")).await;
    assert_eq!(status, 200, "{adapted}");
    assert_eq!(adapted["model"], "tiny-lora");
    assert_ne!(base["choices"][0]["text"], adapted["choices"][0]["text"]);

    // A list of one string, and streamed: the same text.
    let mut list = body("tiny");
    list["prompt"] = json!(["The capital of France is"]);
    list["stream"] = json!(true);
    let payloads = post_stream(&f, "/v1/completions", &list).await;
    assert_eq!(payloads.last().unwrap(), "[DONE]");
    let mut text = String::new();
    for p in &payloads[..payloads.len() - 1] {
        let chunk: Value = serde_json::from_str(p).unwrap();
        assert_eq!(chunk["object"], "text_completion");
        text.push_str(chunk["choices"][0]["text"].as_str().unwrap());
    }
    assert_eq!(text, base["choices"][0]["text"].as_str().unwrap());

    // Legacy logprobs.
    let mut lp = body("tiny");
    lp["logprobs"] = json!(2);
    lp["max_tokens"] = json!(3);
    let (status, resp) = post(&f, "/v1/completions", &lp).await;
    assert_eq!(status, 200, "{resp}");
    let l = &resp["choices"][0]["logprobs"];
    assert_eq!(l["tokens"].as_array().unwrap().len(), 3);
    assert_eq!(l["token_logprobs"].as_array().unwrap().len(), 3);
    assert_eq!(l["text_offset"][0], 0);
    assert_eq!(l["top_logprobs"][0].as_object().unwrap().len(), 2);

    // echo is refused.
    let mut echo = body("tiny");
    echo["echo"] = json!(true);
    let (status, resp) = post(&f, "/v1/completions", &echo).await;
    assert_eq!(status, 400);
    assert_eq!(resp["error"]["param"], "echo");
}

#[tokio::test]
async fn thirty_two_concurrent_streams_each_get_their_own_answer() {
    let f = Arc::new(serve().await);
    let prompts: Vec<String> = (0..32)
        .map(|i| format!("Question number {i}: why?"))
        .collect();
    let body = |p: &str, stream: bool| {
        chat_body(
            "tiny",
            p,
            json!({"max_tokens": 6, "temperature": 0, "ignore_eos": true, "stream": stream}),
        )
    };
    // Reference answers, one at a time.
    let mut expected = Vec::new();
    for p in &prompts {
        let (status, resp) = post(&f, "/v1/chat/completions", &body(p, false)).await;
        assert_eq!(status, 200, "{resp}");
        expected.push(content(&resp, 0));
    }
    let tasks: Vec<_> = prompts
        .iter()
        .map(|p| {
            let f = f.clone();
            let b = body(p, true);
            tokio::spawn(async move { post_stream(&f, "/v1/chat/completions", &b).await })
        })
        .collect();
    for (i, task) in tasks.into_iter().enumerate() {
        let payloads = task.await.unwrap();
        assert_eq!(payloads.last().unwrap(), "[DONE]", "stream {i}");
        let (text, _, finish) = stream_text(&payloads, 0);
        assert_eq!(text, expected[i], "stream {i}");
        assert_eq!(finish.as_deref(), Some("length"));
    }
}

#[tokio::test]
async fn a_client_that_disconnects_frees_its_slot() {
    // One slot, and a context so long that the first request (no
    // max_tokens: the rest of the context) would hold it for minutes.
    let f = serve_with(
        EngineOptions {
            max_batch: 1,
            max_queue: 1,
            ..EngineOptions::default()
        },
        40960,
    )
    .await;
    let body = chat_body(
        "tiny",
        "Go on",
        json!({"temperature": 0, "ignore_eos": true, "stream": true}),
    );
    let mut resp = openai_request(&f, "/v1/chat/completions", &body)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    resp.chunk().await.unwrap().unwrap();
    let load = async || {
        let resp = f
            .server
            .client
            .get(f.server.url("/api/inference/models"))
            .bearer_auth(TOKEN)
            .send()
            .await
            .unwrap();
        let list: Value = resp.json().await.unwrap();
        let m = &list["models"][0];
        (
            m["running"].as_u64().unwrap(),
            m["waiting"].as_u64().unwrap(),
        )
    };
    let admitted = tuner_tests::eventually(std::time::Duration::from_secs(20), async || {
        load().await == (1, 0)
    })
    .await;
    assert!(admitted);
    drop(resp);
    let freed = tuner_tests::eventually(std::time::Duration::from_secs(20), async || {
        load().await == (0, 0)
    })
    .await;
    assert!(freed, "the disconnected stream kept its slot");
    let small = chat_body("tiny", "Hi", json!({"max_tokens": 2, "temperature": 0}));
    assert_eq!(post(&f, "/v1/chat/completions", &small).await.0, 200);
}

#[tokio::test]
async fn bad_requests_name_the_field() {
    let f = serve().await;
    let cases: Vec<(Value, u16, &str)> = vec![
        (json!({"model": "tiny"}), 400, "messages"),
        (
            chat_body("tiny", "x", json!({"temperature": "hot"})),
            400,
            "temperature",
        ),
        (chat_body("tiny", "x", json!({"n": 0})), 400, "n"),
        (
            chat_body("tiny", "x", json!({"temperature": 3.5})),
            400,
            "temperature",
        ),
        (
            chat_body("tiny", "x", json!({"max_tokens": 0})),
            400,
            "max_tokens",
        ),
        (
            json!({"model": "tiny", "messages": [{"role": 5, "content": "x"}]}),
            400,
            "messages[0].role",
        ),
        (
            json!({"model": "tiny", "messages": [{"role": "wizard", "content": "x"}]}),
            400,
            "messages[0].role",
        ),
        (chat_body("nope", "x", json!({})), 404, "model"),
        (
            chat_body(
                "tiny",
                "x",
                json!({"response_format": {"type": "json_schema", "json_schema": {"name": "a", "schema": {}}}}),
            ),
            400,
            "response_format",
        ),
        (
            chat_body("tiny", "x", json!({"max_tokens": CONTEXT})),
            400,
            "max_tokens",
        ),
    ];
    for (body, status, param) in cases {
        let (got, resp) = post(&f, "/v1/chat/completions", &body).await;
        assert_eq!(got, status, "{body} -> {resp}");
        assert_eq!(resp["error"]["param"], param, "{body} -> {resp}");
        assert!(resp["error"]["message"].is_string());
        assert!(resp["error"]["type"].is_string());
    }
    let (_, resp) = post(
        &f,
        "/v1/chat/completions",
        &chat_body("nope", "x", json!({})),
    )
    .await;
    assert_eq!(resp["error"]["code"], "model_not_found");

    // A prompt longer than the context: 400 with the numbers.
    let long = "word ".repeat(400);
    let (status, resp) = post(
        &f,
        "/v1/chat/completions",
        &chat_body("tiny", &long, json!({"max_tokens": 4})),
    )
    .await;
    assert_eq!(status, 400, "{resp}");
    assert_eq!(resp["error"]["param"], "max_tokens");
    let message = resp["error"]["message"].as_str().unwrap();
    assert!(message.contains(&CONTEXT.to_string()), "{message}");

    // Not JSON.
    let resp = f
        .server
        .client
        .post(f.server.url("/v1/chat/completions"))
        .bearer_auth(TOKEN)
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 400);

    // No token: 401 on /v1 as on /api, in OpenAI's shape.
    for path in ["/v1/models", "/v1/chat/completions"] {
        let resp = f
            .server
            .client
            .post(f.server.url(path))
            .json(&chat_body("tiny", "x", json!({})))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 401, "{path}");
        let body: Value = resp.json().await.unwrap();
        assert_eq!(body["error"]["type"], "authentication_error");
    }
    let resp = f
        .server
        .client
        .get(f.server.url("/v1/models"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 401);
    // The Host guard applies too.
    let resp = f
        .server
        .client
        .get(f.server.url("/v1/models"))
        .bearer_auth(TOKEN)
        .header("Host", "attacker.example")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 403);
}

#[tokio::test]
async fn management_routes_confine_adapter_paths_and_model_folders() {
    let f = serve().await;
    let runs = f.home.dir.path().join("runs");
    write_adapter(&runs.join("job1/adapter"), 2);
    let client = &f.server.client;
    let post_json = async |path: &str, body: Value| {
        let resp = client
            .post(f.server.url(path))
            .bearer_auth(TOKEN)
            .json(&body)
            .send()
            .await
            .unwrap();
        let status = resp.status().as_u16();
        (status, resp.json::<Value>().await.unwrap_or(Value::Null))
    };
    // Outside the runs folder: refused.
    let outside = f.home.dir.path().join("adapters/lora");
    for path in [
        outside.to_str().unwrap().to_string(),
        "../adapters/lora".to_string(),
    ] {
        let (status, resp) = post_json(
            "/api/inference/models/tiny/adapters",
            json!({"name": "evil", "path": path}),
        )
        .await;
        assert_eq!(status, 400, "{path}: {resp}");
        assert_eq!(resp["error"]["param"], "path");
    }
    // Inside: loaded, listed, selectable, unloaded.
    let (status, resp) = post_json(
        "/api/inference/models/tiny/adapters",
        json!({"name": "job1", "path": "job1/adapter"}),
    )
    .await;
    assert_eq!(status, 201, "{resp}");
    let (status, resp) = post(
        &f,
        "/v1/completions",
        &json!({"model": "job1", "prompt": "Hi", "max_tokens": 2, "temperature": 0}),
    )
    .await;
    assert_eq!(status, 200, "{resp}");
    let (status, list) = f.server.get_json("/api/inference/models").await;
    assert_eq!(status, 401, "{list}"); // get_json sends no token
    let del = client
        .delete(f.server.url("/api/inference/adapters/job1"))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(del.status(), 204);
    let (status, _) = post(
        &f,
        "/v1/completions",
        &json!({"model": "job1", "prompt": "Hi", "max_tokens": 2}),
    )
    .await;
    assert_eq!(status, 404);

    // A model folder outside the home is refused; one inside loads.
    let elsewhere = tempfile::tempdir().unwrap();
    let (status, resp) = post_json(
        "/api/inference/models",
        json!({"model": elsewhere.path().to_str().unwrap(), "name": "x"}),
    )
    .await;
    assert_eq!(status, 400, "{resp}");
    let inside = f.home.dir.path().join("models/tiny");
    let (status, resp) = post_json(
        "/api/inference/models",
        json!({"model": inside.to_str().unwrap(), "name": "tiny2"}),
    )
    .await;
    assert_eq!(status, 201, "{resp}");
    let (status, resp) = post_json(
        "/api/inference/models",
        json!({"model": inside.to_str().unwrap(), "name": "tiny2"}),
    )
    .await;
    assert_eq!(status, 409, "{resp}");
    let del = client
        .delete(f.server.url("/api/inference/models/tiny2"))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(del.status(), 204);
}

/// `tuner serve --model DIR --served-name NAME --adapter NAME=DIR`: the
/// process loads both before it listens and `/v1` answers with them.
#[test]
fn serve_loads_a_model_and_its_adapters_from_the_command_line() {
    let home = TestHome::new();
    let model = write_model(&home, CONTEXT);
    let adapter = home.dir.path().join("adapters/lora");
    write_adapter(&adapter, 1);
    let adapter_arg = format!("mine={}", adapter.display());
    let serve = tuner_tests::ServeProcess::start_with(
        home.dir.path(),
        &[
            "--model",
            model.to_str().unwrap(),
            "--served-name",
            "tiny",
            "--adapter",
            &adapter_arg,
        ],
    );
    let client = reqwest::blocking::Client::new();
    let models: Value = client
        .get(format!("{}/v1/models", serve.url))
        .send()
        .unwrap()
        .json()
        .unwrap();
    let ids: Vec<&str> = models["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["tiny", "mine"], "{models}");
    let answer: Value = client
        .post(format!("{}/v1/chat/completions", serve.url))
        .json(&chat_body(
            "mine",
            "hi",
            json!({"max_tokens": 3, "temperature": 0}),
        ))
        .send()
        .unwrap()
        .json()
        .unwrap();
    assert_eq!(answer["model"], "mine", "{answer}");
    assert!(answer["usage"]["completion_tokens"].as_u64().unwrap() <= 3);
}

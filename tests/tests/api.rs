//! The HTTP API: routes, errors, token, configuration, OpenAPI.

use tuner::api::check_bind;
use tuner_tests::TestHome;

#[tokio::test]
async fn lists_and_shows_plugins() {
    let home = TestHome::new();
    let s = home.server().start().await;
    let (status, body) = s.get_json("/api/plugins").await;
    assert_eq!(status, 200);
    let names: Vec<&str> = body["plugins"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        [
            "accuracy",
            "csv",
            "dpo",
            "format",
            "grpo",
            "huggingface",
            "json",
            "jsonl",
            "kto",
            "length",
            "lora",
            "mirror",
            "modelscope",
            "parquet",
            "qlora",
            "sft",
            "text"
        ]
    );
    let (status, body) = s.get_json("/api/plugins/jsonl").await;
    assert_eq!(status, 200);
    assert_eq!(body["kind"], "format");
    assert_eq!(body["origin"], "bundled");
    assert_eq!(body["wit_version"], "0.2.0");
    // The detail view carries the plugin's declared settings.
    let names: Vec<&str> = body["settings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["max_record_bytes"], "{body}");
    let (_, lora) = s.get_json("/api/plugins/lora").await;
    let rank = &lora["settings"][0];
    assert_eq!(
        (rank["name"].as_str(), rank["default"].as_i64()),
        (Some("lora_rank"), Some(8)),
        "{lora}"
    );
    assert_eq!(rank["kind"]["type"], "integer");
    assert!(rank["description_zh"].is_string(), "{rank}");
}

#[tokio::test]
async fn errors_are_json_with_code_and_message() {
    let home = TestHome::new();
    let s = home.server().start().await;
    let (status, body) = s.get_json("/api/plugins/nope").await;
    assert_eq!(status, 404);
    assert_eq!(
        body,
        serde_json::json!({"error": {"code": "plugin_not_found", "message": "no plugin named `nope`"}})
    );
    let (status, body) = s.get_json("/api/unknown").await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (404, Some("no_such_route"))
    );
}

#[tokio::test]
async fn a_token_protects_everything_but_health() {
    let home = TestHome::new();
    let s = home.server().token("s3cret").start().await;
    assert_eq!(s.get_json("/api/health").await.0, 200);
    let (status, body) = s.get_json("/api/plugins").await;
    assert_eq!(status, 401);
    assert_eq!(body["error"]["code"], "unauthorized");
    let wrong = s
        .client
        .get(s.url("/api/plugins"))
        .bearer_auth("guess")
        .send()
        .await
        .unwrap();
    assert_eq!(wrong.status(), 401);
    let right = s
        .client
        .get(s.url("/api/plugins"))
        .bearer_auth("s3cret")
        .send()
        .await
        .unwrap();
    assert_eq!(right.status(), 200);
}

#[test]
fn binding_beyond_loopback_needs_a_token() {
    let err = check_bind(&"0.0.0.0:8000".parse().unwrap(), None).unwrap_err();
    assert!(
        err.to_string()
            .starts_with("refusing to listen on 0.0.0.0:8000 without an API token"),
        "{err}"
    );
    assert!(check_bind(&"0.0.0.0:8000".parse().unwrap(), Some("t")).is_ok());
    assert!(check_bind(&"127.0.0.1:8000".parse().unwrap(), None).is_ok());
    assert!(check_bind(&"[::1]:8000".parse().unwrap(), None).is_ok());
}

#[tokio::test]
async fn config_changes_are_validated_and_written_to_the_file() {
    let home = TestHome::new();
    let s = home.server().start().await;
    let (status, body) = s.get_json("/api/config").await;
    assert_eq!(status, 200);
    assert_eq!(
        body["effective"]["source_order"],
        serde_json::json!(["modelscope", "huggingface"])
    );
    assert_eq!(body["effective"]["plugins"]["memory_limit_mib"], 512);

    let bad = s
        .client
        .put(s.url("/api/config"))
        .json(&serde_json::json!({"sorce_order": ["x"]}))
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status(), 400);
    let body: serde_json::Value = bad.json().await.unwrap();
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("sorce_order"),
        "{body}"
    );

    let invalid = s
        .client
        .put(s.url("/api/config"))
        .json(&serde_json::json!({"plugins": {"memory_limit_mib": 1}}))
        .send()
        .await
        .unwrap();
    assert_eq!(invalid.status(), 400);
    assert!(
        !home.home.config_file.exists(),
        "a rejected change writes nothing"
    );

    let ok = s
        .client
        .put(s.url("/api/config"))
        .json(&serde_json::json!({"source_order": ["huggingface", "modelscope"], "server": {"port": 8123}}))
        .send()
        .await
        .unwrap();
    assert_eq!(ok.status(), 200);
    let body: serde_json::Value = ok.json().await.unwrap();
    assert_eq!(body["restart_required"], true);
    assert_eq!(body["effective"]["server"]["port"], 8123);
    let text = std::fs::read_to_string(&home.home.config_file).unwrap();
    assert!(
        text.contains("port = 8123") && text.contains("huggingface"),
        "{text}"
    );

    // A second change keeps the first.
    let ok = s
        .client
        .put(s.url("/api/config"))
        .json(&serde_json::json!({"default_model": "Qwen/Qwen3-4B"}))
        .send()
        .await
        .unwrap();
    let body: serde_json::Value = ok.json().await.unwrap();
    assert_eq!(body["file"]["server"]["port"], 8123);
    assert_eq!(body["file"]["default_model"], "Qwen/Qwen3-4B");
}

#[tokio::test]
async fn reload_reports_what_changed() {
    let home = TestHome::new();
    let s = home.server().start().await;
    tuner_tests::install(home.plugin_dir(), "probe", "probe");
    let resp = s
        .client
        .post(s.url("/api/plugins/reload"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let body: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(body["added"], serde_json::json!(["probe"]));
    assert_eq!(s.get_json("/api/plugins/probe").await.0, 200);
}

#[tokio::test]
async fn the_openapi_document_lists_every_route() {
    let home = TestHome::new();
    let s = home.server().start().await;
    let (status, doc) = s.get_json("/api/openapi.json").await;
    assert_eq!(status, 200);
    let paths = doc["paths"].as_object().unwrap();
    let mut listed: Vec<String> = Vec::new();
    for (path, ops) in paths {
        for method in ops.as_object().unwrap().keys() {
            listed.push(format!("{} {path}", method.to_uppercase()));
        }
    }
    listed.sort();
    assert_eq!(
        listed,
        [
            "DELETE /api/data/{name}",
            "DELETE /api/inference/adapters/{name}",
            "DELETE /api/inference/models/{name}",
            "DELETE /api/models/cache/all",
            "DELETE /api/models/cache/{name}",
            "GET /api/config",
            "GET /api/data",
            "GET /api/data/{name}",
            "GET /api/data/{name}/preview",
            "GET /api/data/{name}/stats",
            "GET /api/health",
            "GET /api/inference/models",
            "GET /api/models",
            "GET /api/models/cache/list",
            "GET /api/models/downloads/{id}",
            "GET /api/models/downloads/{id}/events",
            "GET /api/openapi.json",
            "GET /api/plugins",
            "GET /api/plugins/{name}",
            "GET /api/training",
            "GET /api/training/{id}",
            "GET /api/training/{id}/events",
            "GET /v1/models",
            "POST /api/data/upload",
            "POST /api/data/validate",
            "POST /api/inference/models",
            "POST /api/inference/models/{name}/adapters",
            "POST /api/models/download",
            "POST /api/plugins/reload",
            "POST /api/training",
            "POST /api/training/{id}/resume",
            "POST /api/training/{id}/stop",
            "POST /v1/chat/completions",
            "POST /v1/completions",
            "PUT /api/config",
        ]
    );
    // And each of them is actually routed (no 404 from the fallback).
    for route in &listed {
        let (method, path) = route.split_once(' ').unwrap();
        let path = path.replace("{name}", "jsonl").replace("{id}", "none");
        let req = s.client.request(method.parse().unwrap(), s.url(&path));
        let req = if method == "PUT" {
            req.json(&serde_json::json!({}))
        } else {
            req
        };
        let resp = req.send().await.unwrap();
        // Handlers may answer 404 for a missing resource; the router's own
        // fallback says `no_such_route`.
        let body: serde_json::Value = resp.json().await.unwrap_or_default();
        assert_ne!(
            body["error"]["code"], "no_such_route",
            "{route} is documented but not routed"
        );
    }
}

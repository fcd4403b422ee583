//! `/api/models`: downloads with an id and an SSE stream, the cache routes,
//! name validation, recommended models.

use std::time::Duration;

use tuner::plugins::PluginLimits;
use tuner_tests::hub_emulator::{HubEmulator, pseudo_random};
use tuner_tests::{TestHome, eventually, test_limits};

/// [`test_limits`] with room for the source plugins' calls during downloads.
fn limits() -> PluginLimits {
    PluginLimits {
        call_timeout: Duration::from_secs(20),
        ..test_limits()
    }
}

#[tokio::test]
async fn download_returns_an_id_then_progress_and_the_cache_lists_it() {
    let emu = HubEmulator::start().await;
    let weights = pseudo_random(2 << 20, 5);
    emu.add_repo(
        "models",
        "Qwen/Tiny",
        &[
            ("config.json", b"{}".to_vec()),
            ("model.safetensors", weights),
        ],
    );
    emu.faults(|f| f.rate = 4 << 20);
    let home = TestHome::new();
    let s = home
        .server()
        .limits(limits())
        .hub_emulator(&emu)
        .start()
        .await;

    let resp = s
        .client
        .post(s.url("/api/models/download?model_name=Qwen/Tiny"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 202);
    let started: serde_json::Value = resp.json().await.unwrap();
    let id = started["id"].as_str().unwrap().to_string();

    // The SSE stream ends with a `done` event carrying the result.
    let text = s
        .client
        .get(s.url(&format!("/api/models/downloads/{id}/events")))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(text.contains("event: done"), "{text}");
    assert!(text.contains("\"source\":\"modelscope\""), "{text}");

    let (status, body) = s.get_json(&format!("/api/models/downloads/{id}")).await;
    assert_eq!(status, 200);
    assert_eq!(body["state"], "done");
    assert_eq!(body["result"]["files"], 2);

    let (_, list) = s.get_json("/api/models/cache/list").await;
    assert_eq!(list["repos"][0]["name"], "Qwen/Tiny");
    assert_eq!(list["repos"][0]["complete"], true);
    // Other tools' caches only when asked for (their contents depend on the
    // machine; `hub_cli` checks them with caches it makes).
    assert!(list.get("external").is_none(), "{list}");
    let (status, all) = s.get_json("/api/models/cache/list?all=true").await;
    assert_eq!(status, 200);
    assert!(all["external"].is_array(), "{all}");
    assert_eq!(all["repos"], list["repos"]);

    // Removal by the original tool's spelling.
    let resp = s
        .client
        .delete(s.url("/api/models/cache/Qwen_Tiny"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let (_, list) = s.get_json("/api/models/cache/list").await;
    assert_eq!(list["repos"].as_array().unwrap().len(), 0);
}

#[tokio::test]
async fn names_with_dots_or_absolute_paths_are_refused() {
    let emu = HubEmulator::start().await;
    let home = TestHome::new();
    let s = home
        .server()
        .limits(limits())
        .hub_emulator(&emu)
        .start()
        .await;
    for bad in ["..%2F..%2Fetc", "%2Fetc%2Fpasswd", "a%2F..%2Fb"] {
        let resp = s
            .client
            .post(s.url(&format!("/api/models/download?model_name={bad}")))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 400, "{bad}");
        let resp = s
            .client
            .delete(s.url(&format!("/api/models/cache/{bad}")))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 400, "{bad}");
    }
    let (status, body) = s.get_json("/api/models/downloads/nope").await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (404, Some("download_not_found"))
    );
}

#[tokio::test]
async fn failed_download_reports_every_source() {
    let emu = HubEmulator::start().await;
    let home = TestHome::new();
    let s = home
        .server()
        .limits(limits())
        .hub_emulator(&emu)
        .start()
        .await;
    let resp = s
        .client
        .post(s.url("/api/models/download?model_name=Qwen/Missing"))
        .send()
        .await
        .unwrap();
    let id = resp.json::<serde_json::Value>().await.unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    let mut last = serde_json::Value::Null;
    assert!(
        eventually(Duration::from_secs(20), async || {
            last = s.get_json(&format!("/api/models/downloads/{id}")).await.1;
            last["state"] == "failed"
        })
        .await
    );
    let err = last["error"].as_str().unwrap();
    assert!(
        err.contains("modelscope") && err.contains("huggingface"),
        "{err}"
    );
}

#[tokio::test]
async fn recommended_models_have_size_hints() {
    let emu = HubEmulator::start().await;
    let home = TestHome::new();
    let s = home
        .server()
        .limits(limits())
        .hub_emulator(&emu)
        .start()
        .await;
    let (status, body) = s.get_json("/api/models").await;
    assert_eq!(status, 200);
    let names: Vec<&str> = body["models"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        [
            "Qwen/Qwen3-0.6B",
            "Qwen/Qwen3-4B",
            "Qwen/Qwen3-8B",
            "Qwen/Qwen3-14B"
        ]
    );
    assert!(body["models"][0]["vram_lora_gib"].as_f64().unwrap() > 0.0);
}

#[tokio::test]
async fn downloads_beyond_the_limit_get_429_until_one_ends() {
    let emu = HubEmulator::start().await;
    for name in ["Qwen/SlowA", "Qwen/SlowB"] {
        emu.add_repo(
            "models",
            name,
            &[("model.safetensors", pseudo_random(2 << 20, 7))],
        );
    }
    // 2 MiB at 1 MiB/s: the first download is still running when the second
    // is asked for.
    emu.faults(|f| f.rate = 1 << 20);
    let home = TestHome::new();
    let s = home
        .server()
        .limits(limits())
        .hub_emulator(&emu)
        .config(|f| f.server.max_heavy_requests = Some(1))
        .start()
        .await;

    let start = |name: &'static str| {
        let url = s.url(&format!("/api/models/download?model_name={name}"));
        let client = s.client.clone();
        async move { client.post(url).send().await.unwrap() }
    };
    let first = start("Qwen/SlowA").await;
    assert_eq!(first.status(), 202);
    let id = first.json::<serde_json::Value>().await.unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();

    let refused = start("Qwen/SlowB").await;
    assert_eq!(refused.status(), 429);
    assert!(refused.headers().contains_key("retry-after"));
    let body: serde_json::Value = refused.json().await.unwrap();
    assert_eq!(body["error"]["code"], "too_busy", "{body}");

    // The permit is given back when the first download ends.
    let done = eventually(Duration::from_secs(60), async || {
        let (_, status) = s.get_json(&format!("/api/models/downloads/{id}")).await;
        status["state"] == "done"
    })
    .await;
    assert!(done, "the first download did not finish");
    let accepted = eventually(Duration::from_secs(10), async || {
        start("Qwen/SlowB").await.status() == 202
    })
    .await;
    assert!(accepted, "the permit was not given back");
}

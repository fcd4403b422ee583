//! Hostile plugins are contained: each is stopped with the exact error a
//! user sees, and the host keeps working.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tuner::plugins::source::{Listing, RepoKind, ResolveRequest, SourceError};
use tuner::plugins::{CallError, PluginLimits};
use tuner_tests::{CountingServer, TestHome, TestServer, install, test_limits};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn endless_loop_is_stopped_at_the_deadline_while_the_api_keeps_answering() {
    let home = TestHome::new();
    install(home.plugin_dir(), "endless-loop", "endless-loop");
    let host = Arc::new(home.start(test_limits()));
    let server = TestServer::start(home.app_state(host.clone(), None)).await;

    let plugin = host.format("endless-loop").expect("loaded");
    let started = Instant::now();
    let call = tokio::task::spawn_blocking(move || plugin.detect("data.jsonl", "{}"));

    // While the plugin spins, the API answers.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let (status, body) = server.get_json("/api/health").await;
    assert_eq!(status, 200);
    assert_eq!(body["status"], "ok");
    assert!(
        !call.is_finished(),
        "the endless loop should still be running"
    );

    let err = call.await.unwrap().unwrap_err();
    let elapsed = started.elapsed();
    assert!(matches!(err, CallError::Timeout { .. }), "{err:?}");
    assert_eq!(
        err.to_string(),
        "plugin `endless-loop` ran past its time limit of 1s in `detect` and was stopped \
         (raise plugins.call_timeout_secs if it needs longer)"
    );
    // Stopped, not left running: the call returned soon after its deadline.
    assert!(elapsed < Duration::from_secs(10), "took {elapsed:?}");

    // The plugin is usable again: a fresh instance answers other calls.
    let plugin = host.format("endless-loop").unwrap();
    let exts = tokio::task::spawn_blocking(move || plugin.extensions())
        .await
        .unwrap();
    assert_eq!(exts.unwrap(), Vec::<String>::new());
    assert_eq!(server.get_json("/api/health").await.0, 200);
}

async fn post_data(
    server: &TestServer,
    route: &str,
    fields: &[(&str, &str)],
    file_name: &str,
    text: &str,
) -> (u16, serde_json::Value) {
    let part =
        reqwest::multipart::Part::bytes(text.as_bytes().to_vec()).file_name(file_name.to_string());
    let mut form = reqwest::multipart::Form::new().part("file", part);
    for (k, v) in fields {
        form = form.text(k.to_string(), v.to_string());
    }
    let resp = server
        .client
        .post(server.url(route))
        .multipart(form)
        .send()
        .await
        .unwrap();
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap_or_default())
}

const ALPACA: &str = "{\"instruction\": \"hi\", \"output\": \"hello\"}\n";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_detect_that_loops_costs_one_short_deadline_then_is_left_out() {
    let home = TestHome::new();
    install(home.plugin_dir(), "endless-loop", "endless-loop");
    // The call deadline at its default (30 s): only the detection deadline
    // (2 s) keeps the upload quick.
    let host = Arc::new(home.start(PluginLimits {
        call_timeout: Duration::from_secs(30),
        ..test_limits()
    }));
    let server = TestServer::start(home.app_state(host.clone(), None)).await;

    let started = Instant::now();
    let (status, report) =
        post_data(&server, "/api/data/validate", &[], "train.jsonl", ALPACA).await;
    let first = started.elapsed();
    assert_eq!(
        (status, report["format"].as_str()),
        (200, Some("jsonl")),
        "{report}"
    );
    // Before the detection deadline it took the full 30 s call deadline.
    assert!(first < Duration::from_secs(15), "took {first:?}");

    let (status, view) = server.get_json("/api/plugins/endless-loop").await;
    assert_eq!(status, 200);
    let degraded = &view["degraded"];
    assert_eq!(degraded["call"], "detect", "{view}");
    let reason = degraded["reason"].as_str().unwrap();
    assert_eq!(
        reason,
        "plugin `endless-loop` ran past its time limit of 2s in `detect` and was stopped"
    );
    let retry = degraded["retry_in_secs"].as_u64().unwrap();
    assert!((1..=300).contains(&retry), "{degraded}");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    assert!(degraded["until_unix"].as_u64().unwrap() > now, "{degraded}");
    let (_, list) = server.get_json("/api/plugins").await;
    let listed = list["plugins"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "endless-loop")
        .unwrap();
    assert_eq!(listed["degraded"]["call"], "detect");
    let jsonl = list["plugins"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "jsonl")
        .unwrap();
    assert!(jsonl["degraded"].is_null(), "{jsonl}");
    // The OpenAPI document describes the field.
    let (_, doc) = server.get_json("/api/openapi.json").await;
    let schemas = &doc["components"]["schemas"];
    // (`PluginView` flattens `PluginMeta`: an `allOf`.)
    assert!(
        schemas["PluginView"]["allOf"]
            .as_array()
            .unwrap()
            .iter()
            .any(|part| part["properties"]["degraded"].is_object()),
        "{}",
        schemas["PluginView"]
    );
    for field in ["call", "reason", "until_unix", "retry_in_secs"] {
        assert!(
            schemas["Degraded"]["properties"][field].is_object(),
            "{}",
            schemas["Degraded"]
        );
    }

    // The next detection does not call it at all.
    let calls = host.get("endless-loop").unwrap().stats().calls;
    let started = Instant::now();
    let (status, _) = post_data(&server, "/api/data/validate", &[], "again.jsonl", ALPACA).await;
    assert_eq!(status, 200);
    assert!(started.elapsed() < first, "{:?}", started.elapsed());
    assert_eq!(host.get("endless-loop").unwrap().stats().calls, calls);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plugin_timeout_during_an_upload_is_a_422_naming_the_plugin() {
    let home = TestHome::new();
    install(home.plugin_dir(), "endless-loop", "endless-loop");
    let host = Arc::new(home.start(test_limits()));
    let server = TestServer::start(home.app_state(host, None)).await;
    // Its parser spins too: the 1 s call deadline stops it.
    let (status, body) = post_data(
        &server,
        "/api/data/upload",
        &[("name", "spun"), ("format", "endless-loop")],
        "train.jsonl",
        ALPACA,
    )
    .await;
    assert_eq!(status, 422, "{body}");
    assert_eq!(body["error"]["code"], "plugin_failed", "{body}");
    assert_eq!(
        body["error"]["message"],
        "plugin `endless-loop` ran past its time limit of 1s in `parse` and was stopped \
         (raise plugins.call_timeout_secs if it needs longer)"
    );
    let (_, list) = server.get_json("/api/data").await;
    assert_eq!(list.as_array().map(Vec::len), Some(0), "{list}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_into_one_plugin_do_not_wait_for_each_other() {
    let home = TestHome::new();
    install(home.plugin_dir(), "endless-loop", "endless-loop");
    let host = Arc::new(home.start(PluginLimits {
        call_timeout: Duration::from_secs(30),
        ..test_limits()
    }));
    let plugin = host.format("endless-loop").unwrap();
    let spinning = {
        let plugin = plugin.clone();
        tokio::task::spawn_blocking(move || plugin.detect("data.jsonl", "{}"))
    };
    tokio::time::sleep(Duration::from_millis(100)).await;
    // A second call gets an instance of its own instead of queueing behind
    // the one that spins until the 2 s detection deadline.
    let quick = {
        let plugin = plugin.clone();
        tokio::task::spawn_blocking(move || plugin.extensions())
    };
    let exts = quick.await.unwrap().unwrap();
    assert_eq!(exts, Vec::<String>::new());
    assert!(
        !spinning.is_finished(),
        "the quick call should have finished while the other still spins"
    );
    let err = spinning.await.unwrap().unwrap_err();
    assert!(matches!(err, CallError::Timeout { .. }), "{err:?}");
    let stats = plugin.stats();
    // Load (`info`), the spinning call and the quick one: the quick one's
    // instance was reused by neither of the others.
    assert!(stats.instances >= 2, "{stats:?}");

    // Many calls at once: at most `max_instances` instances, all answered.
    let calls: Vec<_> = (0..12)
        .map(|_| {
            let plugin = plugin.clone();
            std::thread::spawn(move || plugin.extensions())
        })
        .collect();
    for c in calls {
        assert!(c.join().unwrap().is_ok());
    }
    let after = plugin.stats();
    assert!(
        after.instances - stats.instances <= 4,
        "{stats:?} then {after:?}"
    );
}

#[test]
fn memory_bomb_is_stopped_at_its_memory_limit() {
    let home = TestHome::new();
    install(home.plugin_dir(), "memory-bomb", "memory-bomb");
    let host = home.start(PluginLimits {
        memory_bytes: 64 << 20,
        ..test_limits()
    });
    let plugin = host.format("memory-bomb").unwrap();
    let err = plugin.detect("x", "").unwrap_err();
    assert_eq!(
        err.to_string(),
        "plugin `memory-bomb` exceeded its memory limit of 64 MiB in `detect` and was stopped \
         (raise plugins.memory_limit_mib if it needs more)"
    );
    // A new instance serves the next call.
    assert!(plugin.extensions().is_ok());
    assert_eq!(plugin.stats().instances, 2);
}

#[test]
fn a_trap_discards_the_instance_and_the_next_call_works() {
    let home = TestHome::new();
    install(home.plugin_dir(), "trap", "trap");
    let host = home.start(test_limits());
    let plugin = host.format("trap").unwrap();
    let err = plugin.detect("panic", "").unwrap_err();
    assert_eq!(
        err.to_string(),
        "plugin `trap` crashed in `detect`: wasm trap: wasm `unreachable` instruction executed \
         (usually a panic inside the plugin)"
    );
    // A fresh instance answers the next call.
    assert_eq!(plugin.extensions().unwrap(), Vec::<String>::new());
    // Detection leaves it out for the cool-down, without calling it.
    let degraded = plugin.degraded().expect("degraded after a trap in detect");
    assert_eq!(degraded.call, "detect");
    assert!(
        degraded.reason.contains("crashed in `detect`"),
        "{degraded:?}"
    );
    assert!((1..=300).contains(&degraded.retry_in_secs), "{degraded:?}");
    let err = plugin.detect("fine.jsonl", "").unwrap_err();
    assert!(matches!(err, CallError::Degraded { .. }), "{err:?}");
    assert!(
        err.to_string()
            .starts_with("plugin `trap` is left out of `detect` for another "),
        "{err}"
    );
    let stats = plugin.stats();
    assert_eq!(
        (stats.calls, stats.failures, stats.instances),
        (2, 1, 2),
        "{stats:?}"
    );
}

fn resolve_request(endpoint: String) -> ResolveRequest {
    ResolveRequest {
        repo: "org/model".into(),
        kind: RepoKind::Model,
        revision: None,
        endpoint: Some(endpoint),
        token: None,
    }
}

fn unavailable_message(result: Result<Listing, SourceError>) -> String {
    match result {
        Err(SourceError::Unavailable(m)) => m,
        other => panic!("expected the plugin to report its http error, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plugin_cannot_reach_a_host_it_did_not_declare() {
    let server = CountingServer::start().await;
    let home = TestHome::new();
    // Declares only `allowed.example` (its manifest); private hosts allowed so
    // only the declaration stands in the way.
    install(home.plugin_dir(), "forbidden-host", "forbidden-host");
    let host = home.start(PluginLimits {
        allow_private_hosts: true,
        ..test_limits()
    });
    let plugin = host.source("forbidden-host").unwrap();
    let url = format!("http://{}/secret", server.addr);
    let msg = tokio::task::spawn_blocking(move || plugin.resolve(&resolve_request(url)))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        unavailable_message(msg),
        "HttpError::Denied(\"host `127.0.0.1` is not declared by the plugin (declared: allowed.example)\")"
    );
    assert_eq!(server.requests(), 0, "no byte may reach an undeclared host");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redirect_to_an_undeclared_host_is_refused() {
    let server = CountingServer::start().await;
    let home = TestHome::new();
    install(home.plugin_dir(), "forbidden-host", "forbidden-host");
    std::fs::write(
        home.plugin_dir().join("forbidden-host.toml"),
        "name = \"forbidden-host\"\nversion = \"0.1.0\"\nkind = \"source\"\nhosts = [\"127.0.0.1\"]\n",
    )
    .unwrap();
    let host = home.start(PluginLimits {
        allow_private_hosts: true,
        ..test_limits()
    });
    let plugin = host.source("forbidden-host").unwrap();
    let target = format!("http://localhost:{}/secret", server.addr.port());
    let url = format!("http://{}/redirect?to={target}", server.addr);
    let msg = tokio::task::spawn_blocking(move || plugin.resolve(&resolve_request(url)))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        unavailable_message(msg),
        "HttpError::Denied(\"redirect refused: host `localhost` is not declared by the plugin (declared: 127.0.0.1)\")"
    );
    assert_eq!(
        server.paths(),
        vec!["/redirect"],
        "the redirect target must not be fetched"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn private_addresses_are_refused_unless_allowed() {
    let server = CountingServer::start().await;
    for allow in [false, true] {
        let home = TestHome::new();
        install(home.plugin_dir(), "forbidden-host", "forbidden-host");
        std::fs::write(
            home.plugin_dir().join("forbidden-host.toml"),
            "name = \"forbidden-host\"\nversion = \"0.1.0\"\nkind = \"source\"\nhosts = [\"localhost\", \"127.0.0.1\"]\n",
        )
        .unwrap();
        let host = home.start(PluginLimits {
            allow_private_hosts: allow,
            ..test_limits()
        });
        for url in [
            format!("http://localhost:{}/by-name", server.addr.port()),
            format!("http://{}/by-address", server.addr),
        ] {
            let plugin = host.source("forbidden-host").unwrap();
            let result = tokio::task::spawn_blocking(move || plugin.resolve(&resolve_request(url)))
                .await
                .unwrap()
                .unwrap();
            if allow {
                assert!(
                    matches!(&result, Err(SourceError::InvalidResponse(m)) if m.contains("HTTP 200")),
                    "{result:?}"
                );
            } else {
                let msg = unavailable_message(result);
                assert!(
                    msg.starts_with("HttpError::Denied(") && msg.contains("private address"),
                    "{msg}"
                );
            }
        }
    }
    assert_eq!(
        server.paths(),
        vec!["/by-name", "/by-address"],
        "only the allowed run gets through"
    );
}

#[test]
fn a_component_for_another_world_is_rejected() {
    let host = TestHome::new().start(test_limits());
    let err = host
        .check_file(&tuner_tests::test_plugin("wrong-world"))
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "not a tuner plugin: it exports none of tuner:plugin/format-plugin, source-plugin, \
         method-plugin or reward-plugin (it exports greet); build it with tuner-sdk for one of \
         the worlds `format`, `source`, `method` or `reward`"
    );
}

#[test]
fn a_plugin_built_for_a_future_wit_version_is_rejected() {
    let host = TestHome::new().start(test_limits());
    let err = host
        .check_file(&tuner_tests::test_plugin("future-version"))
        .unwrap_err();
    // The fixture targets a version newer than the newest this host knows.
    let tuner::plugins::LoadError::FutureVersion { found, .. } = &err else {
        panic!(
            "tests/plugins/future-version must target a tuner:plugin version newer than {} \
             (it is rejected otherwise: {err})",
            tuner::plugins::inspect::HOST_WIT_VERSION
        );
    };
    assert_eq!(
        err.to_string(),
        format!(
            "built for tuner:plugin@{found}, newer than this tuner supports \
             (tuner:plugin@0.2.0); upgrade tuner to use it"
        )
    );
}

#[test]
fn files_that_are_not_components_are_rejected_and_listed_as_failures() {
    let home = TestHome::new();
    std::fs::write(
        home.plugin_dir().join("garbage.wasm"),
        b"definitely not wasm",
    )
    .unwrap();
    // A minimal core module: valid WebAssembly, but not a component.
    std::fs::write(home.plugin_dir().join("core.wasm"), b"\0asm\x01\0\0\0").unwrap();
    let host = home.start(test_limits());
    let failures = host.failures();
    let messages: Vec<(String, String)> = failures
        .iter()
        .map(|f| {
            (
                f.file.file_name().unwrap().to_string_lossy().into_owned(),
                f.error.clone(),
            )
        })
        .collect();
    assert_eq!(
        messages,
        vec![
            (
                "core.wasm".to_string(),
                "a core WebAssembly module, not a component: build plugins with tuner-sdk and \
                 `tuner plugins build`, which wraps the module into a component"
                    .to_string()
            ),
            (
                "garbage.wasm".to_string(),
                "not a WebAssembly file".to_string()
            ),
        ]
    );
    // The bundled plugins are unaffected.
    assert!(host.get("jsonl").is_some());
}

#[test]
fn a_manifest_that_contradicts_the_component_is_rejected() {
    let home = TestHome::new();
    install(home.plugin_dir(), "probe", "probe");
    std::fs::write(
        home.plugin_dir().join("probe.toml"),
        "name = \"probe\"\nversion = \"0.1.0\"\nkind = \"method\"\n",
    )
    .unwrap();
    let host = home.start(test_limits());
    assert!(host.get("probe").is_none());
    let f = &host.failures()[0];
    assert!(
        f.error.ends_with(
            "probe.toml: kind `method` does not match the component, which is a format plugin"
        ),
        "{}",
        f.error
    );
}

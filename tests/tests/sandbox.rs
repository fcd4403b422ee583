//! Hostile plugins are contained: each is stopped with the exact error a
//! user sees, and the host keeps working.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tuner::plugins::bindings::source::exports::tuner::plugin::source_plugin::{
    RepoKind, ResolveRequest, SourceError,
};
use tuner::plugins::{CallError, PluginLimits};
use tuner_tests::{CountingServer, TestHome, TestServer, install, test_limits};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn endless_loop_is_stopped_at_the_deadline_while_the_api_keeps_answering() {
    let home = TestHome::new();
    install(home.plugin_dir(), "endless-loop", "endless-loop");
    let host = Arc::new(home.start(test_limits()));
    let server = TestServer::start(home.app_state(host.clone(), None)).await;

    let plugin = host.get("endless-loop").expect("loaded");
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
    let plugin = host.get("endless-loop").unwrap();
    let exts = tokio::task::spawn_blocking(move || plugin.extensions())
        .await
        .unwrap();
    assert_eq!(exts.unwrap(), Vec::<String>::new());
    assert_eq!(server.get_json("/api/health").await.0, 200);
}

#[test]
fn memory_bomb_is_stopped_at_its_memory_limit() {
    let home = TestHome::new();
    install(home.plugin_dir(), "memory-bomb", "memory-bomb");
    let host = home.start(PluginLimits {
        memory_bytes: 64 << 20,
        ..test_limits()
    });
    let plugin = host.get("memory-bomb").unwrap();
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
    let plugin = host.get("trap").unwrap();
    let err = plugin.detect("panic", "").unwrap_err();
    assert_eq!(
        err.to_string(),
        "plugin `trap` crashed in `detect`: wasm trap: wasm `unreachable` instruction executed \
         (usually a panic inside the plugin)"
    );
    assert_eq!(plugin.detect("fine.jsonl", "").unwrap(), 0.25);
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

fn unavailable_message(
    result: Result<
        tuner::plugins::bindings::source::exports::tuner::plugin::source_plugin::Listing,
        SourceError,
    >,
) -> String {
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
    let plugin = host.get("forbidden-host").unwrap();
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
    let plugin = host.get("forbidden-host").unwrap();
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
            let plugin = host.get("forbidden-host").unwrap();
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
        "not a tuner plugin: it exports none of tuner:plugin/format-plugin, source-plugin or \
         method-plugin (it exports greet); build it with tuner-sdk for one of the worlds \
         `format`, `source` or `method`"
    );
}

#[test]
fn a_plugin_built_for_a_future_wit_version_is_rejected() {
    let host = TestHome::new().start(test_limits());
    let err = host
        .check_file(&tuner_tests::test_plugin("future-version"))
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "built for tuner:plugin@0.2.0, newer than this tuner supports (tuner:plugin@0.1.0); \
         upgrade tuner to use it"
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

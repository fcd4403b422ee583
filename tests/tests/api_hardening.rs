//! The local API against other websites (Host, Origin, Sec-Fetch-Site),
//! bounded heavy work, and configuration validation.

use std::io::{Read, Write};
use std::path::Path;
use std::time::Duration;

use serde_json::{Value, json};
use tuner_tests::{ServeProcess, TestHome, TestServer, TunerCommand};

/// Sends one raw HTTP/1.1 request (headers exactly as given, like a
/// browser's) and returns the status and the JSON body.
fn raw(addr: std::net::SocketAddr, head: &str, body: &[u8]) -> (u16, Value) {
    let mut stream = std::net::TcpStream::connect(addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let mut request = format!(
        "{head}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    )
    .into_bytes();
    request.extend_from_slice(body);
    stream.write_all(&request).unwrap();
    let mut response = Vec::new();
    let _ = stream.read_to_end(&mut response);
    let text = String::from_utf8_lossy(&response).into_owned();
    let status = text
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no status line in {text:?}"));
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b)
        .unwrap_or_default();
    // Bodies are short; chunked encoding wraps them in a size line.
    let json = serde_json::from_str(body)
        .or_else(|_| {
            let start = body.find('{').unwrap_or(0);
            let end = body.rfind('}').map_or(body.len(), |e| e + 1);
            serde_json::from_str(&body[start..end])
        })
        .unwrap_or(Value::Null);
    (status, json)
}

fn multipart(boundary: &str, name: &str, file: &str) -> Vec<u8> {
    format!(
        "--{boundary}\r\nContent-Disposition: form-data; name=\"name\"\r\n\r\n{name}\r\n\
         --{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"d.jsonl\"\r\n\
         Content-Type: application/octet-stream\r\n\r\n{file}\r\n--{boundary}--\r\n"
    )
    .into_bytes()
}

const SAMPLE: &str = "{\"instruction\": \"hi\", \"output\": \"hello\"}\n";

#[tokio::test(flavor = "multi_thread")]
async fn other_websites_cannot_drive_the_local_api() {
    let home = TestHome::new();
    let s = home.server().start().await;
    let addr = s.addr;
    let own = format!("http://{addr}");
    tokio::task::spawn_blocking(move || {
        let host = format!("Host: {addr}");
        let refused = |(status, body): (u16, Value), code: &str| {
            assert_eq!(status, 403, "{body}");
            assert_eq!(body["error"]["code"], code, "{body}");
        };

        // A cross-origin form post to the model download.
        refused(
            raw(
                addr,
                &format!(
                    "POST /api/models/download?model_name=Qwen/Qwen3-0.6B HTTP/1.1\r\n{host}\r\n\
                     Origin: http://evil.example\r\nSec-Fetch-Site: cross-site\r\n\
                     Content-Type: application/x-www-form-urlencoded"
                ),
                b"a=b",
            ),
            "origin_not_allowed",
        );
        // A multipart upload from a foreign page (Origin only).
        let form = multipart("XyZ", "evil", SAMPLE);
        refused(
            raw(
                addr,
                &format!(
                    "POST /api/data/upload HTTP/1.1\r\n{host}\r\nOrigin: http://evil.example\r\n\
                     Content-Type: multipart/form-data; boundary=XyZ"
                ),
                &form,
            ),
            "origin_not_allowed",
        );
        // Plugin reload, a no-cors fetch from another local port.
        refused(
            raw(
                addr,
                &format!(
                    "POST /api/plugins/reload HTTP/1.1\r\n{host}\r\n\
                     Origin: http://127.0.0.1:1\r\nSec-Fetch-Site: same-site"
                ),
                b"",
            ),
            "origin_not_allowed",
        );
        // `Origin: null` (sandboxed frames, file: pages) changes nothing either.
        refused(
            raw(
                addr,
                &format!("DELETE /api/data/x HTTP/1.1\r\n{host}\r\nOrigin: null"),
                b"",
            ),
            "origin_not_allowed",
        );
        // A browser request without Origin but marked cross-site.
        refused(
            raw(
                addr,
                &format!("PUT /api/config HTTP/1.1\r\n{host}\r\nSec-Fetch-Site: cross-site\r\nContent-Type: application/json"),
                b"{}",
            ),
            "origin_not_allowed",
        );
        // DNS rebinding: the page's own name in Host.
        refused(
            raw(
                addr,
                "GET /api/config HTTP/1.1\r\nHost: attacker.example",
                b"",
            ),
            "host_not_allowed",
        );
        refused(
            raw(
                addr,
                &format!(
                    "GET /api/config HTTP/1.1\r\nHost: attacker.example:{}",
                    addr.port()
                ),
                b"",
            ),
            "host_not_allowed",
        );
        assert!(
            !home.home.config_file.exists(),
            "nothing refused was written"
        );

        // Same-origin pages and curl-like clients still work.
        let (status, body) = raw(
            addr,
            &format!(
                "POST /api/data/upload HTTP/1.1\r\n{host}\r\nOrigin: {own}\r\n\
                 Sec-Fetch-Site: same-origin\r\nContent-Type: multipart/form-data; boundary=XyZ"
            ),
            &multipart("XyZ", "mine", SAMPLE),
        );
        assert_eq!(status, 201, "{body}");
        let (status, body) = raw(
            addr,
            &format!(
                "POST /api/plugins/reload HTTP/1.1\r\nHost: localhost:{}\r\nOrigin: http://localhost:{}",
                addr.port(),
                addr.port()
            ),
            b"",
        );
        assert_eq!(status, 200, "{body}");
        let (status, body) = raw(
            addr,
            &format!("PUT /api/config HTTP/1.1\r\n{host}\r\nContent-Type: application/json"),
            br#"{"default_model": "Qwen/Qwen3-4B"}"#,
        );
        assert_eq!(status, 200, "{body}");
        let (status, body) = raw(addr, "GET /api/config HTTP/1.1\r\nHost: [::1]:8000", b"");
        assert_eq!(status, 200, "{body}");
        // A foreign page's GET is not refused on Origin alone (it cannot
        // read the answer: no CORS headers)...
        let (status, _) = raw(
            addr,
            &format!("GET /api/health HTTP/1.1\r\n{host}\r\nOrigin: http://evil.example"),
            b"",
        );
        assert_eq!(status, 200);
        // ...but one the browser marks cross-site is.
        let (status, _) = raw(
            addr,
            &format!("GET /api/health HTTP/1.1\r\n{host}\r\nSec-Fetch-Site: cross-site"),
            b"",
        );
        assert_eq!(status, 403);
    })
    .await
    .unwrap();
    let resp = s.client.get(s.url("/api/health")).send().await.unwrap();
    assert!(
        resp.headers().get("access-control-allow-origin").is_none(),
        "no CORS headers"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn configured_hosts_and_origins_are_accepted() {
    let home = TestHome::new();
    let file = tuner::config::ConfigFile::parse_toml(
        "[server]\nallowed_hosts = [\"tuner.lan\"]\nallowed_origins = [\"http://127.0.0.1:3000\"]",
    )
    .unwrap();
    file.validate().unwrap();
    let resolved = tuner::config::Settings::resolve(&home.home, &file).unwrap();
    let s = home
        .server()
        .settings(|settings| settings.server = resolved.server)
        .start()
        .await;
    let addr = s.addr;
    tokio::task::spawn_blocking(move || {
        let (status, _) = raw(addr, "GET /api/config HTTP/1.1\r\nHost: tuner.lan", b"");
        assert_eq!(status, 200);
        let (status, body) = raw(
            addr,
            &format!(
                "POST /api/plugins/reload HTTP/1.1\r\nHost: {addr}\r\nOrigin: http://127.0.0.1:3000\r\nSec-Fetch-Site: same-site"
            ),
            b"",
        );
        assert_eq!(status, 200, "{body}");
        let (status, _) = raw(
            addr,
            &format!("POST /api/plugins/reload HTTP/1.1\r\nHost: {addr}\r\nOrigin: http://127.0.0.1:3001"),
            b"",
        );
        assert_eq!(status, 403);
    })
    .await
    .unwrap();
}

async fn put(s: &TestServer, body: Value) -> (u16, Value) {
    let resp = s
        .client
        .put(s.url("/api/config"))
        .json(&body)
        .send()
        .await
        .unwrap();
    (
        resp.status().as_u16(),
        resp.json().await.unwrap_or_default(),
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn config_updates_are_checked_key_by_key() {
    let home = TestHome::new();
    let s = home.server().start().await;
    let refused: Vec<(Value, &str)> = vec![
        (json!(["modelscope"]), "(body)"),
        (json!("x"), "(body)"),
        (json!({"server": [1, 2]}), "server"),
        (json!({"plugins": [64]}), "plugins"),
        (json!({"sorce_order": ["x"]}), "sorce_order"),
        (json!({"model_cache_dir": "/"}), "model_cache_dir"),
        (json!({"model_cache_dir": "/etc"}), "model_cache_dir"),
        (json!({"model_cache_dir": "/etc/tuner"}), "model_cache_dir"),
        (json!({"plugin_dir": "/usr/lib/x"}), "plugin_dir"),
        (json!({"plugin_dir": "/var"}), "plugin_dir"),
        (json!({"data_dir": "/var/lib"}), "data_dir"),
        (json!({"data_dir": "/home"}), "data_dir"),
        (json!({"data_dir": "/proc/self"}), "data_dir"),
        (json!({"data_dir": "relative/dir"}), "data_dir"),
        (json!({"data_dir": "/srv/x/../../etc"}), "data_dir"),
        (json!({"data_dir": ""}), "data_dir"),
        (
            json!({"endpoints": {"huggingface": "gopher://hub.example"}}),
            "endpoints.huggingface",
        ),
        (
            json!({"endpoints": {"mirror": "http://169.254.169.254/latest"}}),
            "endpoints.mirror",
        ),
        (
            json!({"endpoints": {"mirror": "http://169.254.1.1"}}),
            "endpoints.mirror",
        ),
        (
            json!({"endpoints": {"mirror": "http://[fe80::1]:80"}}),
            "endpoints.mirror",
        ),
        (
            json!({"endpoints": {"mirror": "http://metadata.google.internal"}}),
            "endpoints.mirror",
        ),
        (
            json!({"endpoints": {"mirror": "http://100.100.100.200"}}),
            "endpoints.mirror",
        ),
        (
            json!({"endpoints": {"mirror": "https://user:pw@hub.example"}}),
            "endpoints.mirror",
        ),
        (
            json!({"endpoints": {"nosuch": "https://hub.example"}}),
            "endpoints.nosuch",
        ),
        (json!({"source_order": ["nosuch"]}), "source_order"),
        (json!({"source_order": ["jsonl"]}), "source_order"),
        (json!({"source_order": []}), "source_order"),
        (
            json!({"source_order": ["modelscope", "modelscope"]}),
            "source_order",
        ),
        (
            json!({"server": {"max_upload_mib": 17592186044417u64}}),
            "server.max_upload_mib",
        ),
        (
            json!({"server": {"max_upload_mib": 0}}),
            "server.max_upload_mib",
        ),
        (
            json!({"server": {"max_heavy_requests": 0}}),
            "server.max_heavy_requests",
        ),
        (json!({"server": {"port": 0}}), "server.port"),
        (json!({"server": {"host": "localhost"}}), "server.host"),
        (
            json!({"server": {"allowed_hosts": ["http://x.example/"]}}),
            "server.allowed_hosts",
        ),
        (
            json!({"server": {"allowed_origins": ["http://x.example/path"]}}),
            "server.allowed_origins",
        ),
        (
            json!({"plugins": {"memory_limit_mib": 1}}),
            "plugins.memory_limit_mib",
        ),
        (json!({"default_model": ""}), "default_model"),
    ];
    for (body, key) in refused {
        let (status, answer) = put(&s, body.clone()).await;
        assert_eq!(status, 400, "{body} → {answer}");
        assert_eq!(
            answer["error"]["code"], "invalid_config",
            "{body} → {answer}"
        );
        assert_eq!(answer["error"]["param"], key, "{body} → {answer}");
        let message = answer["error"]["message"].as_str().unwrap();
        assert!(message.starts_with(key), "{body} → {message}");
        assert!(
            !home.home.config_file.exists(),
            "{body} was refused but written"
        );
    }

    // A valid update of many keys is accepted and written.
    let base = home.dir.path().join("state");
    let (status, answer) = put(
        &s,
        json!({
            "source_order": ["huggingface", "modelscope"],
            "model_cache_dir": base.join("models"),
            "data_dir": "/var/tmp/tuner-data",
            "plugin_dir": base.join("plugins"),
            "endpoints": {"mirror": "https://hf-mirror.com", "modelscope": "http://10.0.0.7:8080"},
            "server": {
                "max_upload_mib": 1_048_576,
                "max_heavy_requests": 3,
                "allowed_hosts": ["tuner.lan", "192.168.1.5"],
                "allowed_origins": ["http://localhost:3000"],
            },
        }),
    )
    .await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["restart_required"], true);
    assert_eq!(
        answer["effective"]["server"]["max_upload_bytes"],
        1u64 << 40
    );
    assert_eq!(answer["effective"]["server"]["max_heavy_requests"], 3);
    let text = std::fs::read_to_string(&home.home.config_file).unwrap();
    assert!(
        text.contains("tuner.lan") && text.contains("hf-mirror"),
        "{text}"
    );
}

#[test]
fn a_bad_config_file_stops_serve_naming_file_and_key() {
    let home = tempfile::tempdir().unwrap();
    for (text, key) in [
        ("model_cache_dir = \"/etc\"\n", "model_cache_dir"),
        ("[endpoints]\nmirror = \"gopher://x\"\n", "endpoints.mirror"),
        (
            "[server]\nmax_upload_mib = 17592186044417\n",
            "server.max_upload_mib",
        ),
        ("source_order = [\"nosuch\"]\n", "source_order"),
        ("plugins = [64]\n", "plugins"),
    ] {
        std::fs::write(home.path().join("config.toml"), text).unwrap();
        let out = TunerCommand::new(home.path())
            .args(["serve", "--port", "1", "--no-watch"])
            .env_remove("TUNER_PLUGIN_DIR")
            .output();
        assert!(!out.status.success(), "{text}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains("config.toml") && err.contains(key),
            "{text}: {err}"
        );
    }
}

/// A dataset of `n` chat samples, as JSONL.
fn dataset(n: usize) -> String {
    let mut text = String::new();
    for i in 0..n {
        let question = format!(
            "Question {i}: 请解释一下 {} 的含义。",
            "tokenizer ".repeat(20)
        );
        let answer = format!(
            "Answer {i}: {}",
            "这是一个比较长的回答，用来测量令牌数量。".repeat(8)
        );
        text.push_str(&json!({"instruction": question, "output": answer}).to_string());
        text.push('\n');
    }
    text
}

fn upload(url: &str, name: &str, data: String) {
    let form = reqwest::blocking::multipart::Form::new()
        .text("name", name.to_string())
        .part(
            "file",
            reqwest::blocking::multipart::Part::text(data).file_name("d.jsonl"),
        );
    let resp = reqwest::blocking::Client::new()
        .post(format!("{url}/api/data/upload"))
        .multipart(form)
        .send()
        .unwrap();
    assert_eq!(resp.status(), 201, "{}", resp.text().unwrap_or_default());
}

fn model_query() -> String {
    let folder = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/qwen3");
    let folder: String = folder
        .display()
        .to_string()
        .bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect();
    format!("model={folder}")
}

/// Peak memory of `tuner serve` under 50 concurrent token-statistics
/// requests. Measured: about 200 MiB with these limits (one shared tokenizer,
/// at most 4 requests at work); before them, every request loaded its own
/// tokenizer and the peak grew with the number of clients.
const STATS_PEAK_BOUND: u64 = 1 << 30;

#[tokio::test(flavor = "multi_thread", worker_threads = 8)]
async fn fifty_concurrent_stats_requests_stay_bounded() {
    let home = tempfile::tempdir().unwrap();
    std::fs::write(
        home.path().join("config.toml"),
        "[server]\nmax_heavy_requests = 4\n",
    )
    .unwrap();
    let path = home.path().to_path_buf();
    let serve = tokio::task::spawn_blocking(move || {
        let serve = ServeProcess::start(&path);
        upload(&serve.url, "big", dataset(2000));
        serve
    })
    .await
    .unwrap();
    let url = format!("{}/api/data/big/stats?{}", serve.url, model_query());
    let client = reqwest::Client::new();
    let requests = (0..50).map(|_| {
        let (client, url) = (client.clone(), url.clone());
        tokio::spawn(async move {
            let resp = client.get(&url).send().await.unwrap();
            let status = resp.status().as_u16();
            let retry = resp.headers().get("retry-after").cloned();
            let body: Value = resp.json().await.unwrap_or_default();
            (status, retry, body)
        })
    });
    let mut ok = 0;
    for r in futures_util::future::join_all(requests).await {
        let (status, retry, body) = r.unwrap();
        match status {
            200 => {
                ok += 1;
                assert_eq!(body["tokens"]["samples"], 2000, "{body}");
            }
            429 => {
                assert_eq!(body["error"]["code"], "too_busy", "{body}");
                assert!(retry.is_some(), "429 without Retry-After");
            }
            other => panic!("status {other}: {body}"),
        }
    }
    assert!(ok >= 1, "no request was served");
    let peak = serve.peak_rss();
    eprintln!("peak RSS of tuner serve: {} MiB, {ok} served", peak >> 20);
    assert!(
        peak < STATS_PEAK_BOUND,
        "peak RSS {} MiB over the bound",
        peak >> 20
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn work_stops_when_its_client_goes_away() {
    let home = tempfile::tempdir().unwrap();
    std::fs::write(
        home.path().join("config.toml"),
        "[server]\nmax_heavy_requests = 1\n",
    )
    .unwrap();
    let path = home.path().to_path_buf();
    let serve = tokio::task::spawn_blocking(move || {
        let serve = ServeProcess::start(&path);
        upload(&serve.url, "big", dataset(6_000));
        upload(&serve.url, "small", dataset(2));
        serve
    })
    .await
    .unwrap();
    let query = model_query();
    // Warm the shared tokenizer, so what follows measures the stats work.
    let small = format!("{}/api/data/small/stats?{query}", serve.url);
    let client = reqwest::Client::new();
    assert_eq!(client.get(&small).send().await.unwrap().status(), 200);

    // A long request whose client gives up after half a second.
    let big = format!("{}/api/data/big/stats?{query}", serve.url);
    let started = std::time::Instant::now();
    let gave_up = reqwest::Client::builder()
        .timeout(Duration::from_millis(500))
        .build()
        .unwrap()
        .get(&big)
        .send()
        .await;
    assert!(gave_up.is_err(), "the big request finished in 500 ms");
    // While it runs the one permit is taken...
    let busy = client.get(&small).send().await.unwrap();
    if busy.status() == 429 {
        // ...and it is given back soon after the client left, long before
        // the big request would have finished.
        let freed = tuner_tests::eventually(Duration::from_secs(5), async || {
            client.get(&small).send().await.unwrap().status() == 200
        })
        .await;
        assert!(freed, "the work went on after its client left");
    }
    let freed_after = started.elapsed();
    // The whole run, for comparison.
    let full = std::time::Instant::now();
    assert_eq!(client.get(&big).send().await.unwrap().status(), 200);
    let full = full.elapsed();
    eprintln!("permit back after {freed_after:?}; a full run takes {full:?}");
    assert!(
        freed_after < full,
        "permit back after {freed_after:?}, a full run takes {full:?}"
    );
}

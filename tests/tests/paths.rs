//! Path containment end to end: hostile names (revisions, repository ids,
//! dataset, plugin and job names, output folders) through every route and
//! CLI command that takes one are refused with a clear message, and a
//! hostile source plugin (`tests/plugins/hostile-source`) answering listings
//! with climbing revisions, commits, file paths and hashes writes nothing
//! outside the cache.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tuner::hub::{Hub, HubConfig, Progress, PullRequest, RepoKind, TransferOptions};
use tuner::plugins::PluginLimits;
use tuner::store::Store;
use tuner_tests::{CountingServer, TestHome, TunerCommand, install, test_limits};

/// Names that must never become a path outside their root.
fn hostile(victim: &Path) -> Vec<String> {
    let abs = victim.display().to_string();
    let climb = format!("{}{}", "../".repeat(24), abs.trim_start_matches('/'));
    vec![
        "../x".into(),
        "../../../../tmp/x".into(),
        "/tmp/victim.txt".into(),
        abs,
        climb,
        "refs/../../x".into(),
        ".".into(),
        "..".into(),
        "a/./b".into(),
        "a//b".into(),
        "x\0y".into(),
        "C:\\x".into(),
        "C:x".into(),
        "\\\\server\\share".into(),
        "..\\x".into(),
        "a\nb".into(),
    ]
}

/// [`hostile`] plus names that are harmless as paths but not git ref names.
fn hostile_revisions(victim: &Path) -> Vec<String> {
    let mut v = hostile(victim);
    v.extend([
        "main.lock".into(),
        "a@{1}".into(),
        "a/.x".into(),
        "a b".into(),
    ]);
    v
}

/// Percent-encodes every byte except unreserved letters and digits, so the
/// server sees `%2E%2E%2F...` and must decode before it validates.
fn encode(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b == b'-' || b == b'_' {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

/// A file outside the home that a successful attack would overwrite.
struct Victim {
    _dir: tempfile::TempDir,
    path: PathBuf,
}

impl Victim {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("victim.txt");
        std::fs::write(&path, b"precious").unwrap();
        Self { _dir: dir, path }
    }

    fn assert_untouched(&self) {
        assert_eq!(std::fs::read(&self.path).unwrap(), b"precious");
        let entries: Vec<_> = std::fs::read_dir(self.path.parent().unwrap())
            .unwrap()
            .flatten()
            .map(|e| e.file_name())
            .collect();
        assert_eq!(
            entries.len(),
            1,
            "something appeared beside the victim: {entries:?}"
        );
    }
}

/// Every path under `dir`, not following symlinks.
fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(rd) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in rd.flatten() {
            let p = e.path();
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                stack.push(p.clone());
            }
            out.push(p);
        }
    }
    out
}

/// Files in `/tmp` left by the hostile plugin for `token`.
fn tmp_leftovers(token: &str) -> Vec<String> {
    std::fs::read_dir("/tmp")
        .map(|rd| {
            rd.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n.starts_with(&format!("tuner-hostile-{token}")))
                .collect()
        })
        .unwrap_or_default()
}

fn hostile_hub(home: &TestHome, files: &CountingServer) -> Hub {
    install(home.plugin_dir(), "hostile-source", "hostile-source");
    std::fs::write(
        home.plugin_dir().join("hostile-source.toml"),
        "name = \"hostile-source\"\nversion = \"0.1.0\"\nkind = \"source\"\nhosts = [\"127.0.0.1\"]\n",
    )
    .unwrap();
    let host = Arc::new(home.start(PluginLimits {
        allow_private_hosts: true,
        call_timeout: Duration::from_secs(20),
        ..test_limits()
    }));
    assert!(
        host.get("hostile-source").is_some(),
        "the plugin did not load"
    );
    let store = Arc::new(Store::open(&home.home.database).unwrap());
    Hub::new(
        host,
        Some(store),
        HubConfig {
            cache_dir: home.home.model_cache_dir.clone(),
            source_order: vec!["hostile-source".into()],
            endpoints: [(
                "hostile-source".to_string(),
                format!("http://{}", files.addr),
            )]
            .into_iter()
            .collect(),
            tokens: Default::default(),
            transfer: TransferOptions::default(),
        },
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hostile_source_plugin_writes_nothing_outside_the_cache() {
    let files = CountingServer::start().await;
    let home = TestHome::new();
    let hub = hostile_hub(&home, &files);
    let cache = home.home.model_cache_dir.clone();
    let token = format!(
        "{}{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .subsec_nanos()
    );
    let progress: Progress = Arc::new(tuner::hub::progress::Silent);
    let pull = |mode: &str| PullRequest {
        repo: format!("hostile/{mode}-{token}"),
        kind: Some(RepoKind::Model),
        ..Default::default()
    };

    // The set-up works: a harmless listing from the same plugin is pulled.
    let report = hub.pull(&pull("ok"), &progress).await.unwrap();
    assert_eq!(
        std::fs::read(report.path.join("config.json")).unwrap(),
        b"hello"
    );
    let outside_cache = || {
        let mut v: Vec<PathBuf> = walk(home.dir.path())
            .into_iter()
            .filter(|p| !p.starts_with(&cache) && !p.to_string_lossy().contains("tuner.db"))
            .collect();
        v.sort();
        v
    };
    let before = outside_cache();

    for (mode, names) in [
        ("rev", "revision"),
        ("commit", "commit"),
        ("path", "file path"),
        ("abs", "file path"),
        ("sha", "sha256"),
    ] {
        let requests = files.requests();
        let err = hub
            .pull(&pull(mode), &progress)
            .await
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("hostile-source") && err.contains("refused its listing"),
            "{mode}: {err}"
        );
        assert!(err.contains(&format!("{names} `")), "{mode}: {err}");
        // Refused before any transfer.
        assert_eq!(files.requests(), requests, "{mode}: a file was fetched");
        assert_eq!(tmp_leftovers(&token), Vec::<String>::new(), "{mode}");
    }

    // A hostile revision from the user is refused before any plugin runs.
    let victim = Victim::new();
    for bad in hostile_revisions(&victim.path) {
        let req = PullRequest {
            revision: Some(bad.clone()),
            ..pull("ok")
        };
        let err = hub.pull(&req, &progress).await.unwrap_err().to_string();
        assert!(err.contains("revision `"), "{bad:?}: {err}");
    }
    victim.assert_untouched();

    // Nothing was written outside the cache by the hostile pulls.
    assert_eq!(outside_cache(), before);
    for p in walk(home.dir.path()) {
        assert!(
            !p.to_string_lossy().contains("tuner-hostile"),
            "{}",
            p.display()
        );
    }
    assert_eq!(tmp_leftovers(&token), Vec::<String>::new());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_route_that_takes_a_name_refuses_hostile_ones() {
    let home = TestHome::new();
    // Nothing answers at the endpoints: no request may get as far as a source.
    let s = home.server().endpoints("http://127.0.0.1:9").start().await;
    let victim = Victim::new();
    let c = &s.client;
    let status = |r: reqwest::Response| async move {
        let code = r.status().as_u16();
        (code, r.text().await.unwrap_or_default())
    };
    let client_error = |code: u16| (400..500).contains(&code);

    // Revisions: refused at once, naming the revision and why; also when
    // they arrive with `.` and `/` percent-encoded.
    for bad in hostile_revisions(&victim.path) {
        let e = encode(&bad);
        for query in [e.clone(), e.replace("%2E", "%2e").replace("%2F", "%2f")] {
            let (code, body) = status(
                c.post(s.url(&format!(
                    "/api/models/download?model_name=Qwen/Tiny&revision={query}"
                )))
                .send()
                .await
                .unwrap(),
            )
            .await;
            assert_eq!(code, 400, "revision {bad:?}: {body}");
            assert!(
                body.contains("is not a valid git ref name"),
                "{bad:?}: {body}"
            );
        }
    }

    for bad in hostile(&victim.path) {
        let e = encode(&bad);

        // Repository ids.
        for route in [
            format!("/api/models/download?model_name={e}"),
            format!("/api/models/download?model_name={e}&dataset=true"),
        ] {
            let (code, body) = status(c.post(s.url(&route)).send().await.unwrap()).await;
            assert!(client_error(code), "{route}: {code} {body}");
        }
        let (code, body) = status(
            c.delete(s.url(&format!("/api/models/cache/{e}")))
                .send()
                .await
                .unwrap(),
        )
        .await;
        assert!(client_error(code), "cache rm {bad:?}: {code} {body}");

        // Dataset names.
        for route in [
            format!("/api/data/{e}"),
            format!("/api/data/{e}/preview"),
            format!("/api/data/{e}/stats"),
        ] {
            let (code, body) = status(c.get(s.url(&route)).send().await.unwrap()).await;
            assert!(client_error(code), "{route}: {code} {body}");
        }
        let (code, body) = status(
            c.delete(s.url(&format!("/api/data/{e}")))
                .send()
                .await
                .unwrap(),
        )
        .await;
        assert!(client_error(code), "data rm {bad:?}: {code} {body}");
        let form = reqwest::multipart::Form::new()
            .part(
                "file",
                reqwest::multipart::Part::bytes(
                    b"{\"instruction\":\"a\",\"output\":\"b\"}\n".to_vec(),
                )
                .file_name("d.jsonl"),
            )
            .text("name", bad.clone());
        let (code, body) = status(
            c.post(s.url("/api/data/upload"))
                .multipart(form)
                .send()
                .await
                .unwrap(),
        )
        .await;
        assert_eq!(code, 400, "upload as {bad:?}: {body}");

        // Plugin names and job ids.
        let (code, body) = status(
            c.get(s.url(&format!("/api/plugins/{e}")))
                .send()
                .await
                .unwrap(),
        )
        .await;
        assert!(client_error(code), "plugin {bad:?}: {code} {body}");
        let (code, body) = status(
            c.get(s.url(&format!("/api/training/{e}")))
                .send()
                .await
                .unwrap(),
        )
        .await;
        assert!(client_error(code), "job {bad:?}: {code} {body}");
        for action in ["stop", "resume"] {
            let (code, body) = status(
                c.post(s.url(&format!("/api/training/{e}/{action}")))
                    .send()
                    .await
                    .unwrap(),
            )
            .await;
            assert!(client_error(code), "{action} {bad:?}: {code} {body}");
        }
    }

    // Output folders of API-submitted jobs stay under the runs folder.
    let climb = format!(
        "{}{}",
        "../".repeat(24),
        victim.path.parent().unwrap().display()
    );
    for bad in [
        victim.path.parent().unwrap().display().to_string(),
        "../outside".into(),
        "runs/../../outside".into(),
        climb,
        ".".into(),
    ] {
        let config = serde_json::json!({
            "model_name": "Qwen/Qwen3-0.6B",
            "dataset": "data.jsonl#10",
            "device": "cpu",
            "output_dir": bad,
        });
        let (code, body) = status(
            c.post(s.url("/api/training"))
                .json(&config)
                .send()
                .await
                .unwrap(),
        )
        .await;
        assert_eq!(code, 400, "output_dir {bad:?}: {body}");
        assert!(body.contains("output_dir"), "{bad:?}: {body}");
    }
    assert!(!home.dir.path().join("outside").exists());

    victim.assert_untouched();
    // Nothing was written into the cache either: no download started.
    let models = home.dir.path().join("models");
    assert!(walk(&models).is_empty(), "{:?}", walk(&models));
}

#[test]
fn every_cli_command_that_takes_a_name_refuses_hostile_ones() {
    let home = tempfile::tempdir().unwrap();
    let victim = Victim::new();
    let data = home.path().join("d.jsonl");
    std::fs::write(&data, b"{\"instruction\":\"a\",\"output\":\"b\"}\n").unwrap();
    let export_to = home.path().join("export");
    let run = |args: &[&str]| {
        let out = TunerCommand::new(home.path())
            .args(args)
            .env_remove("TUNER_PLUGIN_DIR")
            .env_remove("MODEL_CACHE_DIR")
            .env("HF_ENDPOINT", "http://127.0.0.1:9")
            .env("MODELSCOPE_ENDPOINT", "http://127.0.0.1:9")
            .current_dir(home.path())
            .stdin_null()
            .output();
        (
            out.status,
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    for bad in hostile_revisions(&victim.path) {
        if bad.contains('\0') {
            continue; // not passable as a process argument
        }
        let b = bad.as_str();
        for args in [
            vec!["pull", "Qwen/Tiny", "--revision", b],
            vec![
                "cache",
                "export",
                "Qwen/Tiny",
                "--local-dir",
                export_to.to_str().unwrap(),
                "--revision",
                b,
            ],
            vec![
                "cache",
                "import",
                "Qwen/Tiny",
                data.to_str().unwrap(),
                "--offline",
                "--revision",
                b,
            ],
        ] {
            let (st, err) = run(&args);
            assert!(!st.success(), "{args:?} succeeded");
            assert!(
                err.contains("revision `") && err.contains("is not a valid git ref name"),
                "{args:?}: {err}"
            );
        }
    }
    for bad in hostile(&victim.path) {
        if bad.contains('\0') {
            continue; // not passable as a process argument
        }
        let b = bad.as_str();
        for args in [
            vec!["pull", b],
            vec!["pull", b, "--dataset"],
            vec!["cache", "rm", b],
            vec!["cache", "verify", b],
            vec![
                "cache",
                "export",
                b,
                "--local-dir",
                export_to.to_str().unwrap(),
            ],
            vec!["cache", "import", b, data.to_str().unwrap(), "--offline"],
            vec!["data", "rm", b],
            vec!["data", "add", data.to_str().unwrap(), "--name", b],
            vec!["plugins", "new", b, "--kind", "format"],
        ] {
            if args[0] == "pull" && home.path().join(b).is_dir() {
                continue; // `tuner pull <folder>` only checks a local model folder
            }
            let (st, err) = run(&args);
            assert!(!st.success(), "{args:?} succeeded");
            assert!(
                err.contains(&format!("`{}`", bad.escape_debug()))
                    || err.contains(&format!("`{bad}`")),
                "{args:?}: the message does not name the offending name: {err}"
            );
        }
    }
    victim.assert_untouched();
    assert!(!export_to.exists());
    let cache = home.path().join("models");
    assert!(
        walk(&cache)
            .iter()
            .all(|p| !p.to_string_lossy().contains("refs")),
        "{:?}",
        walk(&cache)
    );
}

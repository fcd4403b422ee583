//! A hub emulator: the Hugging Face and ModelScope protocols (as in
//! `BRIEF.md` §6) over generated repositories, with injectable faults, and a
//! count of the bytes it served.
//!
//! One server answers both protocols; start a second one on `localhost`
//! (another host name) to play a CDN that `resolve/` redirects to.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::Request;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use sha2::{Digest, Sha256};

/// A file of a generated repository.
#[derive(Clone)]
pub struct EmuFile {
    pub path: String,
    pub data: Arc<Vec<u8>>,
    pub sha256: String,
}

/// A generated repository.
#[derive(Clone)]
pub struct EmuRepo {
    pub commit: String,
    pub files: Vec<EmuFile>,
}

/// Faults, changed by tests at any time.
#[derive(Default)]
pub struct Faults {
    /// Drop the connection once the stream of this file passes byte N
    /// (absolute offset in the file); each entry fires once.
    pub drop_at: HashMap<String, u64>,
    /// Answer the next N file requests with 429 and `Retry-After: secs`.
    pub too_many: (u32, u64),
    /// Answer the next N file requests with 503.
    pub unavailable: u32,
    /// Serve corrupted bytes for these files, this many times each.
    pub corrupt: HashMap<String, u32>,
    /// Behave like a poor mirror: ignore `Range`, drop `Content-Length`,
    /// `Content-Range` and `X-Repo-Commit`.
    pub mirror_mode: bool,
    /// Every ModelScope API call answers 503.
    pub modelscope_down: bool,
    /// `resolve/` answers 302 to this base URL + the same path.
    pub redirect_to: Option<String>,
    /// Bytes per second per connection (0: unlimited).
    pub rate: u64,
    /// Claim this size in listings instead of the real one.
    pub fake_size: Option<u64>,
}

struct State {
    /// (kind `models`/`datasets`, `org/name`) → repo.
    repos: Mutex<HashMap<(String, String), EmuRepo>>,
    faults: Mutex<Faults>,
    served: AtomicU64,
    file_requests: AtomicU64,
    log: Mutex<Vec<String>>,
}

/// A running emulator; stopped when the test's runtime ends.
#[derive(Clone)]
pub struct HubEmulator {
    pub addr: SocketAddr,
    state: Arc<State>,
}

/// Deterministic bytes for test files.
pub fn pseudo_random(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

impl HubEmulator {
    /// Starts on 127.0.0.1 with no repositories.
    pub async fn start() -> Self {
        Self::start_on("127.0.0.1:0", None).await
    }

    /// Starts another server sharing `self`'s repositories and counters
    /// (a CDN on a different host name, e.g. `localhost:0`).
    pub async fn start_cdn(&self, bind: &str) -> Self {
        Self::start_on(bind, Some(self.state.clone())).await
    }

    async fn start_on(bind: &str, state: Option<Arc<State>>) -> Self {
        let state = state.unwrap_or_else(|| {
            Arc::new(State {
                repos: Mutex::default(),
                faults: Mutex::default(),
                served: AtomicU64::new(0),
                file_requests: AtomicU64::new(0),
                log: Mutex::default(),
            })
        });
        let s = state.clone();
        let app = axum::Router::new().fallback(move |req: Request| {
            let s = s.clone();
            async move { handle(s, req).await }
        });
        let listener = tokio::net::TcpListener::bind(bind).await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await });
        Self { addr, state }
    }

    /// `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Adds a repository (`models` or `datasets`) with these files; returns it.
    pub fn add_repo(&self, kind: &str, id: &str, files: &[(&str, Vec<u8>)]) -> EmuRepo {
        let files: Vec<EmuFile> = files
            .iter()
            .map(|(p, d)| EmuFile {
                path: p.to_string(),
                sha256: hex::encode(Sha256::digest(d)),
                data: Arc::new(d.clone()),
            })
            .collect();
        let mut h = Sha256::new();
        for f in &files {
            h.update(f.path.as_bytes());
            h.update(f.sha256.as_bytes());
        }
        let commit = hex::encode(h.finalize())[..40].to_string();
        let repo = EmuRepo { commit, files };
        self.state
            .repos
            .lock()
            .unwrap()
            .insert((kind.to_string(), id.to_string()), repo.clone());
        repo
    }

    /// Changes the faults.
    pub fn faults(&self, f: impl FnOnce(&mut Faults)) {
        f(&mut self.state.faults.lock().unwrap());
    }

    /// File bytes served so far (all servers sharing this state).
    pub fn bytes_served(&self) -> u64 {
        self.state.served.load(Ordering::SeqCst)
    }

    /// File requests so far.
    pub fn file_requests(&self) -> u64 {
        self.state.file_requests.load(Ordering::SeqCst)
    }

    /// Every request line (`GET /path?query`) so far.
    pub fn requests(&self) -> Vec<String> {
        self.state.log.lock().unwrap().clone()
    }
}

fn json(v: serde_json::Value) -> Response {
    (StatusCode::OK, axum::Json(v)).into_response()
}

fn not_found() -> Response {
    (StatusCode::NOT_FOUND, "not found").into_response()
}

fn query(req: &Request) -> HashMap<String, String> {
    req.uri()
        .query()
        .unwrap_or("")
        .split('&')
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| (k.to_string(), percent_decode(v)))
        .collect()
}

fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%'
            && i + 2 < b.len()
            && let Ok(v) = u8::from_str_radix(&s[i + 1..i + 3], 16)
        {
            out.push(v);
            i += 3;
            continue;
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

async fn handle(s: Arc<State>, req: Request) -> Response {
    let path = percent_decode(req.uri().path());
    s.log.lock().unwrap().push(format!(
        "{} {}{}",
        req.method(),
        path,
        req.uri()
            .query()
            .map(|q| format!("?{q}"))
            .unwrap_or_default()
    ));
    let parts: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    let q = query(&req);
    let repo_of = |kind: &str, id: String| {
        s.repos
            .lock()
            .unwrap()
            .get(&(kind.to_string(), id))
            .cloned()
    };
    let fake = s.faults.lock().unwrap().fake_size;
    match parts.as_slice() {
        // ---- ModelScope ----
        ["api", "v1", ..] if s.faults.lock().unwrap().modelscope_down => {
            (StatusCode::SERVICE_UNAVAILABLE, "down").into_response()
        }
        ["api", "v1", "models", org, name, "repo", "files"] => {
            let Some(repo) = repo_of("models", format!("{org}/{name}")) else {
                return json(
                    serde_json::json!({"Code": 10010205001u64, "Message": "model not found", "Data": null}),
                );
            };
            json(ms_files(&repo, fake))
        }
        ["api", "v1", "models", org, name, "repo"] => {
            let Some(repo) = repo_of("models", format!("{org}/{name}")) else {
                return not_found();
            };
            serve_file(
                &s,
                &repo,
                q.get("FilePath").map(String::as_str).unwrap_or(""),
                req.headers(),
            )
            .await
        }
        ["api", "v1", "datasets", org, name] => {
            let id = format!("{org}/{name}");
            if repo_of("datasets", id.clone()).is_none() {
                return not_found();
            }
            let n = s
                .repos
                .lock()
                .unwrap()
                .keys()
                .position(|k| k.1 == id)
                .unwrap_or(0)
                + 1000;
            json(serde_json::json!({"Code": 200, "Data": {"Id": n}}))
        }
        ["api", "v1", "datasets", numeric, "repo", "tree"] => {
            let repos = s.repos.lock().unwrap();
            let found = repos
                .iter()
                .enumerate()
                .find(|(i, _)| (i + 1000).to_string() == *numeric)
                .map(|(_, (_, r))| r.clone());
            drop(repos);
            match found {
                Some(repo) => json(ms_files(&repo, fake)),
                None => not_found(),
            }
        }
        ["api", "v1", "datasets", org, name, "repo"] => {
            let Some(repo) = repo_of("datasets", format!("{org}/{name}")) else {
                return not_found();
            };
            serve_file(
                &s,
                &repo,
                q.get("FilePath").map(String::as_str).unwrap_or(""),
                req.headers(),
            )
            .await
        }
        // ---- Hugging Face ----
        [
            "api",
            kind @ ("models" | "datasets"),
            org,
            name,
            "revision",
            _rev,
        ] => {
            let Some(repo) = repo_of(kind, format!("{org}/{name}")) else {
                return not_found();
            };
            json(serde_json::json!({
                "sha": repo.commit,
                "siblings": repo.files.iter().map(|f| serde_json::json!({"rfilename": f.path})).collect::<Vec<_>>(),
            }))
        }
        [
            "api",
            kind @ ("models" | "datasets"),
            org,
            name,
            "tree",
            _rev,
        ] => {
            let Some(repo) = repo_of(kind, format!("{org}/{name}")) else {
                return not_found();
            };
            let entries: Vec<serde_json::Value> = repo
                .files
                .iter()
                .map(|f| {
                    let size = fake.unwrap_or(f.data.len() as u64);
                    // Small files are plain git blobs (no sha256), like on the Hub.
                    if f.data.len() < 64 {
                        serde_json::json!({"type": "file", "path": f.path, "size": size, "oid": "0000"})
                    } else {
                        serde_json::json!({"type": "file", "path": f.path, "size": size, "oid": "1111",
                            "lfs": {"oid": f.sha256, "size": size}})
                    }
                })
                .collect();
            json(serde_json::Value::Array(entries))
        }
        ["datasets", org, name, "resolve", _commit, rest @ ..] => {
            resolve_file(
                &s,
                "datasets",
                format!("{org}/{name}"),
                rest.join("/"),
                &path,
                req.headers(),
            )
            .await
        }
        [org, name, "resolve", _commit, rest @ ..] => {
            resolve_file(
                &s,
                "models",
                format!("{org}/{name}"),
                rest.join("/"),
                &path,
                req.headers(),
            )
            .await
        }
        _ => not_found(),
    }
}

fn ms_files(repo: &EmuRepo, fake: Option<u64>) -> serde_json::Value {
    serde_json::json!({"Code": 200, "Data": {"Files": repo.files.iter().map(|f| serde_json::json!({
        "Path": f.path, "Name": f.path.rsplit('/').next(), "Size": fake.unwrap_or(f.data.len() as u64),
        "Sha256": f.sha256, "Type": "blob", "Revision": repo.commit,
    })).collect::<Vec<_>>()}})
}

async fn resolve_file(
    s: &Arc<State>,
    kind: &str,
    id: String,
    file: String,
    full_path: &str,
    headers: &HeaderMap,
) -> Response {
    let redirect = s.faults.lock().unwrap().redirect_to.clone();
    if let Some(base) = redirect {
        // Only redirect requests that came to the origin, not the CDN itself.
        if !headers
            .get(header::HOST)
            .and_then(|h| h.to_str().ok())
            .is_some_and(|h| base.contains(h))
        {
            return Response::builder()
                .status(StatusCode::FOUND)
                .header(header::LOCATION, format!("{base}{full_path}"))
                .body(Body::empty())
                .unwrap();
        }
    }
    let Some(repo) = s
        .repos
        .lock()
        .unwrap()
        .get(&(kind.to_string(), id))
        .cloned()
    else {
        return not_found();
    };
    serve_file(s, &repo, &file, headers).await
}

async fn serve_file(s: &Arc<State>, repo: &EmuRepo, path: &str, headers: &HeaderMap) -> Response {
    s.file_requests.fetch_add(1, Ordering::SeqCst);
    let Some(file) = repo.files.iter().find(|f| f.path == path).cloned() else {
        return not_found();
    };
    let (mirror, rate, drop_at, corrupt) = {
        let mut f = s.faults.lock().unwrap();
        if f.too_many.0 > 0 {
            f.too_many.0 -= 1;
            return Response::builder()
                .status(StatusCode::TOO_MANY_REQUESTS)
                .header(header::RETRY_AFTER, f.too_many.1.to_string())
                .body(Body::from("slow down"))
                .unwrap();
        }
        if f.unavailable > 0 {
            f.unavailable -= 1;
            return (StatusCode::SERVICE_UNAVAILABLE, "busy").into_response();
        }
        let corrupt = match f.corrupt.get_mut(path) {
            Some(n) if *n > 0 => {
                *n -= 1;
                true
            }
            _ => false,
        };
        (f.mirror_mode, f.rate, f.drop_at.get(path).copied(), corrupt)
    };
    let len = file.data.len() as u64;
    let range = headers
        .get(header::RANGE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("bytes="))
        .and_then(|v| {
            let (a, b) = v.split_once('-')?;
            let a: u64 = a.parse().ok()?;
            let b: u64 = if b.is_empty() {
                len.saturating_sub(1)
            } else {
                b.parse().ok()?
            };
            Some((a, b.min(len.saturating_sub(1))))
        })
        .filter(|_| !mirror);
    let (start, end, status) = match range {
        Some((a, _)) if a >= len && len > 0 => {
            return (StatusCode::RANGE_NOT_SATISFIABLE, "").into_response();
        }
        Some((a, b)) => (a, b + 1, StatusCode::PARTIAL_CONTENT),
        None => (0, len, StatusCode::OK),
    };
    // Served straight from the shared buffer (no copy of the whole range),
    // so a single stream is not slowed by the emulator itself.
    let data = Window {
        all: file.data.clone(),
        start: start as usize,
        len: (end - start) as usize,
        corrupt,
    };
    let cut = drop_at.filter(|&n| n >= start && n < end);
    if cut.is_some() {
        s.faults.lock().unwrap().drop_at.remove(path);
    }
    let s2 = s.clone();
    let stream = futures_util::stream::unfold(
        (data, 0usize, start, cut, false),
        move |(data, off, abs, cut, done)| {
            let s = s2.clone();
            async move {
                if done || off >= data.len {
                    return None;
                }
                let piece = 64 * 1024;
                let mut n = piece.min(data.len - off);
                if let Some(c) = cut {
                    let until = (c - abs) as usize;
                    if until == 0 {
                        let err = std::io::Error::new(
                            std::io::ErrorKind::ConnectionReset,
                            "fault: dropped",
                        );
                        return Some((Err(err), (data, off, abs, None, true)));
                    }
                    n = n.min(until);
                }
                if rate > 0 {
                    tokio::time::sleep(Duration::from_secs_f64(n as f64 / rate as f64)).await;
                }
                let mut chunk = data.all[data.start + off..data.start + off + n].to_vec();
                if data.corrupt && off == 0 && n > 0 {
                    chunk[0] ^= 0xff;
                }
                let chunk = Bytes::from(chunk);
                s.served.fetch_add(n as u64, Ordering::SeqCst);
                Some((
                    Ok::<_, std::io::Error>(chunk),
                    (data, off + n, abs + n as u64, cut, false),
                ))
            }
        },
    );
    let mut resp = Response::builder().status(status);
    if !mirror {
        resp = resp
            .header(header::CONTENT_LENGTH, end - start)
            .header(
                "x-repo-commit",
                HeaderValue::from_str(&repo.commit).unwrap(),
            )
            .header(header::ACCEPT_RANGES, "bytes");
        if status == StatusCode::PARTIAL_CONTENT {
            resp = resp.header(
                header::CONTENT_RANGE,
                format!("bytes {start}-{}/{len}", end - 1),
            );
        }
    }
    resp.body(Body::from_stream(stream)).unwrap()
}

/// The bytes of one response: a window on a file's shared buffer.
struct Window {
    all: Arc<Vec<u8>>,
    start: usize,
    len: usize,
    /// Flip the first byte (a corrupt transfer).
    corrupt: bool,
}

/// Paths the emulator was asked for that match `needle`.
pub fn matching(requests: &[String], needle: &str) -> usize {
    requests.iter().filter(|r| r.contains(needle)).count()
}

//! The `tuner` binary as a process: [`tuner_bin`] finds (builds) it,
//! [`TunerCommand`] runs one command with a home, and [`ServeProcess`] is
//! `tuner serve` for suites that kill or measure the server.

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::OnceLock;
use std::time::Duration;

/// The `tuner` binary of this workspace, for suites that run it as a
/// process (integration tests outside the `tuner` package get no
/// `CARGO_BIN_EXE_tuner`): builds it once per test binary if needed and
/// returns its path. Blocks while it builds: from async code, call it
/// first through `spawn_blocking`.
pub fn tuner_bin() -> PathBuf {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let status = Command::new(cargo)
            .args(["build", "-q", "-p", "tuner", "--bin", "tuner"])
            .status()
            .expect("running cargo build");
        assert!(status.success(), "building the tuner binary failed");
        let exe = std::env::current_exe().unwrap();
        let bin = exe.parent().unwrap().parent().unwrap().join("tuner");
        assert!(bin.is_file(), "{}", bin.display());
        bin
    })
    .clone()
}

/// One `tuner` command with `home` as `TUNER_HOME`; everything else
/// (arguments, environment, working folder, stdin) as the test sets it.
#[must_use = "a command does nothing until `output` or `spawn`"]
pub struct TunerCommand {
    cmd: Command,
}

impl TunerCommand {
    /// `tuner` ([`tuner_bin`]) with `TUNER_HOME=home`, and the Hugging Face
    /// and ModelScope caches pointed at folders inside `home` that do not
    /// exist, so models the machine's user downloaded never take part in a
    /// test (override with [`Self::env`]).
    pub fn new(home: impl AsRef<Path>) -> Self {
        let home = home.as_ref();
        let mut cmd = Command::new(tuner_bin());
        cmd.env("TUNER_HOME", home)
            .env("HF_HUB_CACHE", home.join("no-hf-hub-cache"))
            .env("MODELSCOPE_CACHE", home.join("no-modelscope-cache"));
        Self { cmd }
    }

    pub fn arg(mut self, arg: impl AsRef<OsStr>) -> Self {
        self.cmd.arg(arg);
        self
    }

    pub fn args<S: AsRef<OsStr>>(mut self, args: impl IntoIterator<Item = S>) -> Self {
        self.cmd.args(args);
        self
    }

    pub fn env(mut self, key: impl AsRef<OsStr>, value: impl AsRef<OsStr>) -> Self {
        self.cmd.env(key, value);
        self
    }

    pub fn env_remove(mut self, key: impl AsRef<OsStr>) -> Self {
        self.cmd.env_remove(key);
        self
    }

    pub fn current_dir(mut self, dir: impl AsRef<Path>) -> Self {
        self.cmd.current_dir(dir);
        self
    }

    /// Reads nothing: stdin is `/dev/null`.
    pub fn stdin_null(mut self) -> Self {
        self.cmd.stdin(Stdio::null());
        self
    }

    /// Downloads from a local hub emulator at `url`: `HF_ENDPOINT` points
    /// there, plugins may reach loopback addresses, and the cache is the
    /// home's (no `MODEL_CACHE_DIR` from the environment).
    pub fn hub_emulator(self, url: &str) -> Self {
        self.env("HF_ENDPOINT", url)
            .env("TUNER_ALLOW_PRIVATE_HOSTS", "1")
            .env_remove("MODEL_CACHE_DIR")
    }

    /// Runs it to the end and returns what it wrote and its status.
    pub fn output(mut self) -> Output {
        self.cmd.output().expect("running tuner")
    }

    /// Starts it with stdout and stderr discarded, for a test that kills it.
    pub fn spawn_quiet(mut self) -> Child {
        self.cmd
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("starting tuner")
    }
}

/// `tuner serve` as a process, with `home` as `TUNER_HOME`, on a free
/// loopback port, without a token or a plugin folder from the environment;
/// killed (SIGKILL) when dropped. For suites that need a real process: to
/// kill it mid-job, or to read its memory.
pub struct ServeProcess {
    pub child: Child,
    /// `http://127.0.0.1:PORT`.
    pub url: String,
}

impl ServeProcess {
    /// Starts it and waits (at most a minute) until `/api/health` answers.
    pub fn start(home: &Path) -> ServeProcess {
        Self::start_with(home, &[])
    }

    /// [`Self::start`] with more `tuner serve` arguments (`--model …`).
    pub fn start_with(home: &Path, extra: &[&str]) -> ServeProcess {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let child = TunerCommand::new(home)
            .args(["serve", "--port", &port.to_string(), "--no-watch"])
            .args(extra)
            .env_remove("TUNER_PLUGIN_DIR")
            .env_remove("TUNER_API_TOKEN")
            .spawn_quiet();
        let serve = ServeProcess {
            child,
            url: format!("http://127.0.0.1:{port}"),
        };
        for _ in 0..600 {
            if reqwest::blocking::get(format!("{}/api/health", serve.url)).is_ok() {
                return serve;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!("tuner serve did not answer");
    }

    /// Peak resident memory of the process (VmHWM), in bytes.
    pub fn peak_rss(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).unwrap();
        let line = status.lines().find(|l| l.starts_with("VmHWM:")).unwrap();
        let kib: u64 = line.split_whitespace().nth(1).unwrap().parse().unwrap();
        kib << 10
    }
}

impl Drop for ServeProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The repository root (the parent of the `tests` crate).
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ has a parent")
        .to_path_buf()
}

/// Builds the release `tuner` binary (benchmarks measure release code) and
/// returns its path.
pub fn release_tuner() -> PathBuf {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let ok = Command::new(cargo)
        .args(["build", "--release", "-q", "-p", "tuner", "--bin", "tuner"])
        .current_dir(repo_root())
        .status()
        .expect("cargo build")
        .success();
    assert!(ok, "building tuner --release failed");
    let target = std::env::var("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|_| repo_root().join("target"));
    target.join("release/tuner")
}

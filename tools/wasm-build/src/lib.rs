//! Builds tuner plugin crates into WebAssembly components.
//!
//! Used by the host's and the test suite's build scripts (so `cargo build`,
//! `cargo run` and `cargo test` produce the bundled plugins with no manual
//! step) and by `tuner plugins build` (for plugin authors).
//!
//! Building takes two steps: `cargo build --target wasm32-unknown-unknown`
//! produces a core module, and [`componentize`] wraps it into a component
//! using the WIT world that `wit-bindgen` embedded in it.
//!
//! A wasm32 standard library is needed for the first step. [`find_toolchain`]
//! prefers an installed rustup target (a normal developer machine) and falls
//! back to a rustc that ships the standard library's sources, building `std`
//! for wasm32 itself (`-Zbuild-std`; Debian's `rustc-web` is such a rustc).

use std::ffi::OsStr;
use std::fmt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

mod prebuilt;
pub use prebuilt::{
    EmbeddedPlugin, Origin, PREBUILT_ENV, PluginSet, REFRESH_COMMAND, components_for_build_script,
};

/// The target every plugin is compiled for.
pub const WASM_TARGET: &str = "wasm32-unknown-unknown";

/// What to tell a user who has no way to build wasm32 code.
pub const INSTALL_HINT: &str = "install a wasm32 target: `rustup target add wasm32-unknown-unknown`, \
or on Debian/Ubuntu `apt-get install rustc-web cargo-web rust-web-src lld-19` \
(a rustc with the standard library sources, used with -Zbuild-std)";

/// A way to compile Rust to `wasm32-unknown-unknown`.
#[derive(Debug, Clone)]
pub enum Toolchain {
    /// A rustc with a prebuilt wasm32 standard library (rustup target).
    Prebuilt {
        /// The cargo to run.
        cargo: PathBuf,
        /// The rustc it should use, when it is not cargo's default.
        rustc: Option<PathBuf>,
    },
    /// A rustc with the standard library sources; `std` is built for wasm32
    /// with `-Zbuild-std` and linked with `wasm-ld`.
    BuildStd {
        cargo: PathBuf,
        rustc: PathBuf,
        linker: PathBuf,
    },
}

impl Toolchain {
    /// The rustc that compiles: the one set, or cargo's default `rustc`.
    fn rustc(&self) -> &Path {
        match self {
            Toolchain::Prebuilt {
                rustc: Some(rustc), ..
            }
            | Toolchain::BuildStd { rustc, .. } => rustc,
            Toolchain::Prebuilt { rustc: None, .. } => Path::new("rustc"),
        }
    }

    /// A folder name for this toolchain's build outputs, so one cargo target
    /// folder can serve many plugin crates: the rustc release and commit hash
    /// (from `rustc -vV`), plus `-build-std` when `std` is compiled from
    /// source. Another compiler gets another name, so an upgrade starts in a
    /// fresh folder instead of piling up next to the old compiler's files.
    pub fn cache_key(&self) -> Result<String, BuildError> {
        let rustc = self.rustc();
        let info = probe(rustc, &["-vV"])
            .ok_or_else(|| BuildError::NoToolchain(format!("`{} -vV` failed", rustc.display())))?;
        Ok(toolchain_key(
            &info,
            matches!(self, Toolchain::BuildStd { .. }),
        ))
    }
}

/// See [`Toolchain::cache_key`]; `version_info` is `rustc -vV`'s output.
fn toolchain_key(version_info: &str, build_std: bool) -> String {
    let field = |name: &str| {
        version_info
            .lines()
            .find_map(|line| line.strip_prefix(name)?.strip_prefix(':'))
            .map(str::trim)
            .filter(|v| !v.is_empty() && *v != "unknown")
    };
    let release = field("release").unwrap_or("unknown");
    let id: String = match field("commit-hash") {
        Some(hash) => hash.chars().take(12).collect(),
        // No commit hash (some source builds): the whole description it is.
        None => {
            use sha2::Digest as _;
            sha2::Sha256::digest(version_info.as_bytes())
                .iter()
                .take(6)
                .map(|b| format!("{b:02x}"))
                .collect()
        }
    };
    let mut key: String = format!("{release}-{id}")
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_') {
                c
            } else {
                '_'
            }
        })
        .collect();
    if build_std {
        key.push_str("-build-std");
    }
    key
}

impl fmt::Display for Toolchain {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Toolchain::Prebuilt { cargo, .. } => {
                write!(
                    f,
                    "{} with the installed {WASM_TARGET} target",
                    cargo.display()
                )
            }
            Toolchain::BuildStd { rustc, linker, .. } => write!(
                f,
                "{} with -Zbuild-std, linked by {}",
                rustc.display(),
                linker.display()
            ),
        }
    }
}

/// Why plugins could not be built.
#[derive(Debug)]
pub enum BuildError {
    /// No usable wasm32 toolchain was found.
    NoToolchain(String),
    /// Cargo could not be started or failed.
    Cargo(String),
    /// A plugin crate is malformed.
    Crate(String),
    /// The core module could not be turned into a component.
    Componentize(String),
    /// Reading or writing files failed.
    Io(String),
    /// A committed prebuilt plugin set does not match its sources.
    Stale(String),
}

impl fmt::Display for BuildError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BuildError::NoToolchain(msg) => write!(f, "cannot build WebAssembly plugins: {msg}"),
            BuildError::Cargo(msg) => write!(f, "building plugins failed: {msg}"),
            BuildError::Crate(msg) => write!(f, "bad plugin crate: {msg}"),
            BuildError::Componentize(msg) => write!(f, "making a component failed: {msg}"),
            BuildError::Io(msg) | BuildError::Stale(msg) => write!(f, "{msg}"),
        }
    }
}

impl std::error::Error for BuildError {}

fn io_err(what: impl fmt::Display, err: std::io::Error) -> BuildError {
    BuildError::Io(format!("{what}: {err}"))
}

/// Runs `program args` and returns its trimmed stdout, if it succeeded.
fn probe(program: &Path, args: &[&str]) -> Option<String> {
    let out = Command::new(program)
        .args(args)
        .env_remove("RUSTC_BOOTSTRAP")
        .stderr(Stdio::null())
        .output()
        .ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
}

fn sysroot(rustc: &Path) -> Option<PathBuf> {
    probe(rustc, &["--print", "sysroot"]).map(PathBuf::from)
}

fn has_prebuilt_wasm_std(sysroot: &Path) -> bool {
    let lib = sysroot.join("lib/rustlib").join(WASM_TARGET).join("lib");
    std::fs::read_dir(lib)
        .map(|entries| {
            entries.flatten().any(|e| {
                let name = e.file_name();
                let name = name.to_string_lossy();
                name.starts_with("libstd-") && name.ends_with(".rlib")
            })
        })
        .unwrap_or(false)
}

fn has_std_sources(sysroot: &Path) -> bool {
    sysroot
        .join("lib/rustlib/src/rust/library/std/Cargo.toml")
        .is_file()
}

fn find_on_path(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(name))
        .find(|p| p.is_file())
}

/// Finds `wasm-ld`: `TUNER_WASM_LD`, then `PATH`, then Debian's LLVM folders.
fn find_wasm_ld() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("TUNER_WASM_LD") {
        return Some(PathBuf::from(p));
    }
    if let Some(p) = find_on_path("wasm-ld") {
        return Some(p);
    }
    (14..=30)
        .rev()
        .map(|v| PathBuf::from(format!("/usr/lib/llvm-{v}/bin/wasm-ld")))
        .find(|p| p.is_file())
}

/// Finds a way to build wasm32 code on this machine.
///
/// Order: the rustc cargo is running with (or `rustc` on `PATH`) when it has
/// the wasm32 target installed; then `/usr/bin/rustc` (Debian's `rustc-web`)
/// with a prebuilt target or the std sources and `wasm-ld`. The environment
/// variables `TUNER_WASM_RUSTC` and `TUNER_WASM_CARGO` point at another pair.
pub fn find_toolchain() -> Result<Toolchain, BuildError> {
    let env_path = |k: &str| std::env::var_os(k).map(PathBuf::from);

    // 1. The toolchain in use, if it has the target (rustup's usual setup).
    let current_rustc = env_path("RUSTC").unwrap_or_else(|| PathBuf::from("rustc"));
    let current_cargo = env_path("CARGO").unwrap_or_else(|| PathBuf::from("cargo"));
    if sysroot(&current_rustc).is_some_and(|root| has_prebuilt_wasm_std(&root)) {
        return Ok(Toolchain::Prebuilt {
            cargo: current_cargo,
            rustc: env_path("RUSTC"),
        });
    }

    // 2. A second rustc: an explicit one, or Debian's rustc-web.
    let candidates = [
        (env_path("TUNER_WASM_RUSTC"), env_path("TUNER_WASM_CARGO")),
        (
            Some(PathBuf::from("/usr/bin/rustc")),
            Some(PathBuf::from("/usr/bin/cargo")),
        ),
    ];
    let mut notes = Vec::new();
    for (rustc, cargo) in candidates {
        let (Some(rustc), Some(cargo)) = (rustc, cargo) else {
            continue;
        };
        let Some(root) = sysroot(&rustc) else {
            continue;
        };
        if !cargo.is_file() && find_on_path(&cargo.to_string_lossy()).is_none() {
            notes.push(format!("{} has no cargo beside it", rustc.display()));
            continue;
        }
        if has_prebuilt_wasm_std(&root) {
            return Ok(Toolchain::Prebuilt {
                cargo,
                rustc: Some(rustc),
            });
        }
        if has_std_sources(&root) {
            match find_wasm_ld() {
                Some(linker) => {
                    return Ok(Toolchain::BuildStd {
                        cargo,
                        rustc,
                        linker,
                    });
                }
                None => notes.push(format!(
                    "{} has the std sources but no wasm-ld was found (install lld)",
                    rustc.display()
                )),
            }
        }
    }
    let mut msg = format!("no {WASM_TARGET} standard library found; {INSTALL_HINT}");
    if !notes.is_empty() {
        msg.push_str(&format!(" (also: {})", notes.join("; ")));
    }
    Err(BuildError::NoToolchain(msg))
}

/// A plugin crate found on disk.
#[derive(Debug, Clone)]
pub struct PluginCrate {
    /// The package name from `Cargo.toml`.
    pub package: String,
    /// The crate's folder.
    pub dir: PathBuf,
    /// Whether `[lib] crate-type` includes `cdylib`: only such crates are
    /// plugins; others are libraries shared between plugins.
    pub is_cdylib: bool,
}

impl PluginCrate {
    /// Reads the package name from `dir/Cargo.toml`.
    pub fn open(dir: &Path) -> Result<Self, BuildError> {
        let manifest = dir.join("Cargo.toml");
        let text = std::fs::read_to_string(&manifest)
            .map_err(|e| io_err(format!("reading {}", manifest.display()), e))?;
        let doc: toml::Table = text
            .parse()
            .map_err(|e| BuildError::Crate(format!("{}: {e}", manifest.display())))?;
        let package = doc
            .get("package")
            .and_then(|p| p.get("name"))
            .and_then(|n| n.as_str())
            .ok_or_else(|| {
                BuildError::Crate(format!("{}: no [package] name", manifest.display()))
            })?;
        // The name becomes file names in the shared build folder
        // (`tuner-crates/NAME.wasm`), written before cargo runs and checks
        // it: hold it to cargo's own rule so it is one plain component.
        let well_formed = !package.is_empty()
            && package
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
        if !well_formed {
            return Err(BuildError::Crate(format!(
                "{}: package name {package:?} is not a crate name (letters, digits, - and _)",
                manifest.display()
            )));
        }
        let is_cdylib = doc
            .get("lib")
            .and_then(|l| l.get("crate-type"))
            .and_then(|t| t.as_array())
            .is_some_and(|types| types.iter().any(|t| t.as_str() == Some("cdylib")));
        Ok(Self {
            package: package.to_string(),
            dir: dir.to_path_buf(),
            is_cdylib,
        })
    }

    /// The `-p` spec of this crate: its folder as a `path+file://` URL and
    /// its name. The bare name would be ambiguous for a plugin named after
    /// one of its dependencies (the `parquet` plugin uses the `parquet`
    /// crate).
    fn package_spec(&self) -> String {
        let dir = std::path::absolute(&self.dir).unwrap_or_else(|_| self.dir.clone());
        let mut url = String::from("path+file://");
        for b in dir.to_string_lossy().bytes() {
            match b {
                b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'/' | b'.' | b'_' | b'-' | b'~' => {
                    url.push(b as char)
                }
                _ => url.push_str(&format!("%{b:02X}")),
            }
        }
        format!("{url}#{}", self.package)
    }

    /// File name of the core module cargo writes for this crate.
    fn artifact_name(&self) -> String {
        format!("{}.wasm", self.package.replace('-', "_"))
    }

    /// The plugin manifest shipped in the crate (`plugin.toml`), if any.
    pub fn manifest(&self) -> Option<PathBuf> {
        let p = self.dir.join("plugin.toml");
        p.is_file().then_some(p)
    }
}

/// Lists the plugin crates (cdylib) in the immediate subfolders of each of
/// `roots`, sorted. Library crates beside them are skipped.
pub fn discover_crates(roots: &[PathBuf]) -> Result<Vec<PluginCrate>, BuildError> {
    let mut crates = Vec::new();
    for root in roots {
        let Ok(entries) = std::fs::read_dir(root) else {
            continue;
        };
        let mut dirs: Vec<PathBuf> = entries
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.join("Cargo.toml").is_file())
            .collect();
        dirs.sort();
        for dir in dirs {
            let krate = PluginCrate::open(&dir)?;
            if krate.is_cdylib {
                crates.push(krate);
            }
        }
    }
    Ok(crates)
}

/// A built plugin component.
#[derive(Debug, Clone)]
pub struct BuiltPlugin {
    pub krate: PluginCrate,
    /// The component's bytes.
    pub component: Vec<u8>,
}

/// How cargo output is shown.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Output {
    /// Captured, and included in the error on failure (build scripts).
    Captured,
    /// Passed through to the terminal (interactive use).
    Inherit,
}

/// Builds the crates of the workspace (or single crate) at `manifest_path`
/// for wasm32 and turns each of `crates` into a component.
///
/// `target_dir` is cargo's target folder for the wasm build; keep it separate
/// from the host's (cargo locks it while building) and share it between
/// builds, even of unrelated crates, so `std` and common dependencies are
/// compiled only once: cargo reuses an artifact whenever package, features,
/// profile and flags match, whichever workspace asked for it.
///
/// Builds sharing a folder are safe to run at once: cargo holds a file lock
/// on the folder while it builds, and a lock of our own
/// (`tuner-build.lock`) also covers reading the modules afterwards.
pub fn build(
    toolchain: &Toolchain,
    manifest_path: &Path,
    crates: &[PluginCrate],
    target_dir: &Path,
    output: Output,
) -> Result<Vec<BuiltPlugin>, BuildError> {
    std::fs::create_dir_all(target_dir)
        .map_err(|e| io_err(format!("creating {}", target_dir.display()), e))?;
    let _lock = lock_target_dir(target_dir, output)?;
    let out_dir = target_dir.join(WASM_TARGET).join("release");
    let owners = target_dir.join("tuner-crates");
    claim_artifacts(&out_dir, &owners, crates)?;

    let mut cmd = cargo_command(toolchain);
    cmd.arg("build")
        .arg("--release")
        .arg("--target")
        .arg(WASM_TARGET)
        .arg("--manifest-path")
        .arg(manifest_path)
        .arg("--target-dir")
        .arg(target_dir);
    for krate in crates {
        cmd.arg("-p").arg(krate.package_spec());
    }
    if let Toolchain::BuildStd { .. } = toolchain {
        cmd.arg("-Zbuild-std=std,panic_abort");
    }
    run_cargo(cmd, output)?;

    crates
        .iter()
        .map(|krate| {
            let path = out_dir.join(krate.artifact_name());
            let core = std::fs::read(&path).map_err(|e| {
                io_err(
                    format!(
                        "reading {} (is `{}` a cdylib crate?)",
                        path.display(),
                        krate.package
                    ),
                    e,
                )
            })?;
            let component = componentize(&core)
                .map_err(|e| BuildError::Componentize(format!("{}: {e}", krate.package)))?;
            Ok(BuiltPlugin {
                krate: krate.clone(),
                component,
            })
        })
        .collect()
}

/// Takes `target_dir/tuner-build.lock`, waiting (with a note) while another
/// build holds it. Released when the file is dropped.
fn lock_target_dir(target_dir: &Path, output: Output) -> Result<std::fs::File, BuildError> {
    let path = target_dir.join("tuner-build.lock");
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(|e| io_err(format!("opening {}", path.display()), e))?;
    match file.try_lock() {
        Ok(()) => return Ok(file),
        Err(std::fs::TryLockError::WouldBlock) => {
            if output == Output::Inherit {
                eprintln!(
                    "waiting for another plugin build using {}",
                    target_dir.display()
                );
            }
        }
        Err(std::fs::TryLockError::Error(e)) => {
            return Err(io_err(format!("locking {}", path.display()), e));
        }
    }
    file.lock()
        .map_err(|e| io_err(format!("locking {}", path.display()), e))?;
    Ok(file)
}

fn crate_id(krate: &PluginCrate) -> String {
    let dir = krate
        .dir
        .canonicalize()
        .unwrap_or_else(|_| krate.dir.clone());
    dir.display().to_string()
}

/// Cargo names a path crate's cdylib without a hash (`deps/NAME.wasm`), so
/// two crates with the same package name in one target folder write the same
/// file, and cargo, finding the other crate's fingerprint fresh, would hand
/// back whichever module was written last. So the folder records which
/// crate each module came from (`tuner-crates/NAME.wasm`), and a module
/// from another crate is deleted before building, which makes cargo relink.
/// The record is written before cargo runs: afterwards the module is either
/// missing or this crate's, even when the build fails.
fn claim_artifacts(
    out_dir: &Path,
    owners: &Path,
    crates: &[PluginCrate],
) -> Result<(), BuildError> {
    std::fs::create_dir_all(owners)
        .map_err(|e| io_err(format!("creating {}", owners.display()), e))?;
    for krate in crates {
        let name = krate.artifact_name();
        let record = owners.join(&name);
        let id = crate_id(krate);
        if std::fs::read_to_string(&record).is_ok_and(|owner| owner == id) {
            continue;
        }
        for path in [out_dir.join("deps").join(&name), out_dir.join(&name)] {
            match std::fs::remove_file(&path) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(io_err(format!("removing {}", path.display()), e)),
            }
        }
        std::fs::write(&record, id)
            .map_err(|e| io_err(format!("writing {}", record.display()), e))?;
    }
    Ok(())
}

/// Prepares a cargo command with a clean environment.
///
/// Build scripts run with many `CARGO_*` and `RUSTC*` variables describing
/// the *outer* build; passed on, they would make the nested wasm build use
/// the wrong target folder, flags or compiler.
fn cargo_command(toolchain: &Toolchain) -> Command {
    let (cargo, rustc) = match toolchain {
        Toolchain::Prebuilt { cargo, rustc } => (cargo, rustc.clone()),
        Toolchain::BuildStd { cargo, rustc, .. } => (cargo, Some(rustc.clone())),
    };
    let mut cmd = Command::new(cargo);
    for (key, _) in std::env::vars_os() {
        let key_str = key.to_string_lossy();
        let keep = matches!(
            key_str.as_ref(),
            "CARGO_HOME" | "CARGO_MAKEFLAGS" | "CARGO_TERM_COLOR"
        ) || key_str.starts_with("CARGO_NET_")
            || key_str.starts_with("CARGO_HTTP_")
            || key_str.starts_with("CARGO_REGISTRIES_");
        let outer = key_str.starts_with("CARGO_")
            || key_str.starts_with("__CARGO")
            || key_str.starts_with("RUSTC")
            || key_str.starts_with("DEP_")
            || matches!(
                key_str.as_ref(),
                "RUSTFLAGS"
                    | "RUSTDOCFLAGS"
                    | "TARGET"
                    | "HOST"
                    | "OUT_DIR"
                    | "PROFILE"
                    | "OPT_LEVEL"
                    | "DEBUG"
                    | "NUM_JOBS"
            );
        if outer && !keep {
            cmd.env_remove(&key);
        }
    }
    if let Some(rustc) = rustc {
        cmd.env("RUSTC", rustc);
    }
    if let Toolchain::BuildStd { linker, .. } = toolchain {
        cmd.env("RUSTC_BOOTSTRAP", "1").env(
            "CARGO_TARGET_WASM32_UNKNOWN_UNKNOWN_LINKER",
            linker.as_os_str(),
        );
    }
    cmd
}

fn run_cargo(mut cmd: Command, output: Output) -> Result<(), BuildError> {
    let shown = format!("{cmd:?}");
    match output {
        Output::Inherit => {
            let status = cmd
                .status()
                .map_err(|e| BuildError::Cargo(format!("cannot run {shown}: {e}")))?;
            if !status.success() {
                return Err(BuildError::Cargo(format!("{shown} exited with {status}")));
            }
        }
        Output::Captured => {
            let out = cmd
                .output()
                .map_err(|e| BuildError::Cargo(format!("cannot run {shown}: {e}")))?;
            if !out.status.success() {
                let stderr = String::from_utf8_lossy(&out.stderr);
                let tail: Vec<&str> = stderr.lines().rev().take(60).collect();
                let tail: Vec<&str> = tail.into_iter().rev().collect();
                return Err(BuildError::Cargo(format!(
                    "{shown} exited with {}:\n{}",
                    out.status,
                    tail.join("\n")
                )));
            }
        }
    }
    Ok(())
}

/// Wraps a core module built with `wit-bindgen` into a component.
pub fn componentize(core_module: &[u8]) -> Result<Vec<u8>, String> {
    wit_component::ComponentEncoder::default()
        .module(core_module)
        .map_err(|e| format!("{e:#}"))?
        .validate(true)
        .encode()
        .map_err(|e| format!("{e:#}"))
}

/// Writes `bytes` to `path` through a temporary file and a rename, so a
/// reader never sees half a file.
pub fn write_atomically(path: &Path, bytes: &[u8]) -> Result<(), BuildError> {
    let tmp = path.with_extension(
        [
            path.extension().unwrap_or(OsStr::new("")),
            OsStr::new("tmp"),
        ]
        .join(OsStr::new(".")),
    );
    std::fs::write(&tmp, bytes).map_err(|e| io_err(format!("writing {}", tmp.display()), e))?;
    std::fs::rename(&tmp, path).map_err(|e| io_err(format!("renaming to {}", path.display()), e))
}

/// The cargo target folder of the build script that is running: `OUT_DIR`
/// is `<target>/<profile>/build/<pkg>-<hash>/out` (or one deeper with an
/// explicit `--target`), so walk up to the folder holding `CACHEDIR.TAG`.
pub fn outer_target_dir(out_dir: &Path) -> PathBuf {
    if let Some(dir) = std::env::var_os("CARGO_TARGET_DIR") {
        return PathBuf::from(dir);
    }
    out_dir
        .ancestors()
        .find(|p| p.join("CACHEDIR.TAG").is_file())
        .map(Path::to_path_buf)
        .unwrap_or_else(|| out_dir.join("wasm-target"))
}

#[cfg(test)]
mod tests {
    use super::*;

    const DEBIAN: &str = "rustc 1.85.0 (4d91de4e4 2025-02-17) (built from a source tarball)
binary: rustc
commit-hash: 4d91de4e48198da2e33413efdcd9cd2cc0c46688
commit-date: 2025-02-17
host: x86_64-unknown-linux-gnu
release: 1.85.0
LLVM version: 19.1.7";

    #[test]
    fn a_package_name_that_is_not_a_crate_name_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("Cargo.toml"),
            "[package]\nname = \"../../escape\"\nversion = \"0.1.0\"\n",
        )
        .unwrap();
        let err = PluginCrate::open(dir.path()).unwrap_err().to_string();
        assert!(err.contains("is not a crate name"), "{err}");
    }

    #[test]
    fn the_toolchain_key_is_release_and_commit() {
        assert_eq!(toolchain_key(DEBIAN, true), "1.85.0-4d91de4e4819-build-std");
        assert_eq!(toolchain_key(DEBIAN, false), "1.85.0-4d91de4e4819");
        let upgraded = DEBIAN.replace("4d91de4e48", "59807616e1");
        assert_ne!(toolchain_key(&upgraded, true), toolchain_key(DEBIAN, true));
    }

    #[test]
    fn without_a_commit_hash_the_whole_description_keys() {
        let a = "rustc 1.80.0-nightly\ncommit-hash: unknown\nrelease: 1.80.0-nightly\nhost: a/b";
        let b = a.replace("a/b", "c");
        let key = toolchain_key(a, false);
        assert!(key.starts_with("1.80.0-nightly-"), "{key}");
        assert_ne!(key, toolchain_key(&b, false));
        assert!(!key.contains('/'));
    }

    #[test]
    fn a_module_built_from_another_crate_of_the_same_name_is_removed() {
        let tmp = tempfile::tempdir().unwrap();
        let (a, b) = (tmp.path().join("a"), tmp.path().join("b"));
        for dir in [&a, &b] {
            std::fs::create_dir_all(dir).unwrap();
        }
        let krate = |dir: &Path| PluginCrate {
            package: "my-lines".into(),
            dir: dir.to_path_buf(),
            is_cdylib: true,
        };
        let out = tmp.path().join("target/release");
        let owners = tmp.path().join("target/tuner-crates");
        std::fs::create_dir_all(out.join("deps")).unwrap();
        let module = out.join("deps/my_lines.wasm");

        claim_artifacts(&out, &owners, &[krate(&a)]).unwrap();
        std::fs::write(&module, "a").unwrap();
        // The same crate again: its module stays (cargo may find it fresh).
        claim_artifacts(&out, &owners, &[krate(&a)]).unwrap();
        assert!(module.is_file());
        // Another crate with the same name: a's module must not be reused.
        claim_artifacts(&out, &owners, &[krate(&b)]).unwrap();
        assert!(!module.exists());
    }
}

//! Repository chores: `cargo xtask plugins [--check]`.
//!
//! `plugins` rebuilds the committed prebuilt plugin components
//! (`plugins/prebuilt/`, `tests/plugins/prebuilt/`) from source with the
//! wasm32 toolchain and records the hash of their sources; `--check` only
//! compares that hash with the sources and fails when a set is stale (CI).

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use tuner_wasm_build::{PluginSet, REFRESH_COMMAND};

const USAGE: &str = "usage: cargo xtask plugins [--check]";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let root = repo_root();
    let sets = [PluginSet::bundled(&root), PluginSet::tests(&root)];
    let result = match args.iter().map(String::as_str).collect::<Vec<_>>()[..] {
        ["plugins"] => refresh(&root, &sets),
        ["plugins", "--check"] => check(&sets),
        _ => {
            eprintln!("{USAGE}");
            return ExitCode::from(2);
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(msg) => {
            eprintln!("error: {msg}");
            ExitCode::FAILURE
        }
    }
}

/// The repository root: two folders above this crate.
fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .ancestors()
        .nth(2)
        .expect("tools/wasm-build sits two folders below the root")
        .to_path_buf()
}

fn check(sets: &[PluginSet]) -> Result<(), String> {
    let mut stale = Vec::new();
    for set in sets {
        match set.check_fresh() {
            Ok(()) => println!("prebuilt {} plugins: up to date", set.name),
            Err(e) => stale.push(e.to_string()),
        }
    }
    if stale.is_empty() {
        Ok(())
    } else {
        Err(stale.join("\n"))
    }
}

fn refresh(root: &Path, sets: &[PluginSet]) -> Result<(), String> {
    // The same target folder the build scripts use, so `std` for wasm32 is
    // compiled once for both.
    let target_dir = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| root.join("target"))
        .join("wasm-plugins");
    for set in sets {
        eprintln!("building the {} plugins from source…", set.name);
        let built = set.refresh(&target_dir).map_err(|e| e.to_string())?;
        for p in &built {
            let size = std::fs::metadata(&p.wasm).map(|m| m.len()).unwrap_or(0);
            println!("{:>10} bytes  {}", size, p.wasm.display());
        }
    }
    println!("refreshed; commit the prebuilt folders (`{REFRESH_COMMAND} --check` verifies them)");
    Ok(())
}

//! Prebuilt plugin sets: components committed to the repository beside a
//! hash of everything they were built from.
//!
//! A user who only runs tuner should not need a wasm32 toolchain. So each
//! set of plugins the build scripts embed (the bundled plugins, the test
//! plugins) is also kept built, in a `prebuilt/` folder next to the crates,
//! with a `SOURCES` file recording the hash of their inputs. A build script
//! builds from source when a toolchain is present and otherwise uses the
//! prebuilt set, but only after checking that the recorded hash still
//! matches the sources: a stale set is refused with the command that
//! refreshes it (`cargo xtask plugins`).
//!
//! The hash covers every file under the set's inputs (plugin crates, shared
//! crates, the SDK, the WIT files, the plugin workspace's `Cargo.toml` and
//! `Cargo.lock`), by path relative to the repository root and content,
//! skipping `target/` folders, the `prebuilt/` folder itself and editor
//! droppings. It does not cover the Rust toolchain: two toolchains may emit
//! different bytes for the same sources, which is harmless here.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use crate::{BuildError, Output, find_toolchain, io_err, write_atomically};

/// Environment switch: use the prebuilt set even when a toolchain exists.
pub const PREBUILT_ENV: &str = "TUNER_PLUGINS_PREBUILT";

/// The command that rebuilds every prebuilt set from source.
pub const REFRESH_COMMAND: &str = "cargo xtask plugins";

/// The name of the file recording a set's source hash.
const SOURCES_FILE: &str = "SOURCES";

/// One set of plugins that a build script embeds.
#[derive(Debug, Clone)]
pub struct PluginSet {
    /// Shown in messages: `bundled` or `test`.
    pub name: &'static str,
    /// The repository root; hashed paths are relative to it.
    pub repo_root: PathBuf,
    /// The cargo workspace the plugin crates belong to.
    pub workspace_manifest: PathBuf,
    /// Folders whose immediate subfolders are plugin crates.
    pub crate_roots: Vec<PathBuf>,
    /// Files and folders whose content the components depend on (the crate
    /// roots are included automatically).
    pub inputs: Vec<PathBuf>,
    /// Where the built components are kept in the repository.
    pub prebuilt_dir: PathBuf,
}

impl PluginSet {
    /// The bundled plugins of the repository at `repo_root`.
    pub fn bundled(repo_root: &Path) -> Self {
        let plugins = repo_root.join("plugins");
        Self {
            name: "bundled",
            repo_root: repo_root.to_path_buf(),
            workspace_manifest: plugins.join("Cargo.toml"),
            crate_roots: ["formats", "sources", "methods", "rewards"]
                .iter()
                .map(|k| plugins.join(k))
                .collect(),
            inputs: vec![
                plugins.join("shared"),
                plugins.join("Cargo.toml"),
                plugins.join("Cargo.lock"),
                repo_root.join("sdk"),
                repo_root.join("wit"),
            ],
            prebuilt_dir: plugins.join("prebuilt"),
        }
    }

    /// The test-only plugins (`tests/plugins/*`).
    pub fn tests(repo_root: &Path) -> Self {
        let plugins = repo_root.join("tests").join("plugins");
        Self {
            name: "test",
            repo_root: repo_root.to_path_buf(),
            workspace_manifest: plugins.join("Cargo.toml"),
            crate_roots: vec![plugins.clone()],
            inputs: vec![
                plugins.join("Cargo.toml"),
                plugins.join("Cargo.lock"),
                repo_root.join("sdk"),
                repo_root.join("wit"),
            ],
            prebuilt_dir: plugins.join("prebuilt"),
        }
    }

    /// Every input, crate roots first.
    fn all_inputs(&self) -> Vec<PathBuf> {
        self.crate_roots
            .iter()
            .chain(&self.inputs)
            .cloned()
            .collect()
    }

    /// The sha256 of the set's sources, as hex.
    pub fn source_hash(&self) -> Result<String, BuildError> {
        let mut files = Vec::new();
        for input in self.all_inputs() {
            collect_files(&input, &self.prebuilt_dir, &mut files)?;
        }
        let mut rel: Vec<(String, PathBuf)> = files
            .into_iter()
            .map(|p| {
                let r = p
                    .strip_prefix(&self.repo_root)
                    .unwrap_or(&p)
                    .to_string_lossy()
                    .replace('\\', "/");
                (r, p)
            })
            .collect();
        rel.sort();
        rel.dedup_by(|a, b| a.0 == b.0);
        let mut hasher = Sha256::new();
        for (name, path) in rel {
            let bytes = std::fs::read(&path)
                .map_err(|e| io_err(format!("reading {}", path.display()), e))?;
            // Length-prefixed fields: no two different trees hash alike.
            hasher.update((name.len() as u64).to_le_bytes());
            hasher.update(name.as_bytes());
            hasher.update((bytes.len() as u64).to_le_bytes());
            hasher.update(&bytes);
        }
        Ok(hex(&hasher.finalize()))
    }

    /// The hash recorded when the prebuilt set was last refreshed.
    pub fn recorded_hash(&self) -> Option<String> {
        let text = std::fs::read_to_string(self.prebuilt_dir.join(SOURCES_FILE)).ok()?;
        text.lines()
            .find_map(|l| l.strip_prefix("sources-sha256 "))
            .map(|h| h.trim().to_string())
    }

    /// Whether the prebuilt set matches the sources; `Err` says why not.
    pub fn check_fresh(&self) -> Result<(), BuildError> {
        let now = self.source_hash()?;
        match self.recorded_hash() {
            Some(recorded) if recorded == now => Ok(()),
            Some(recorded) => Err(BuildError::Stale(format!(
                "the prebuilt {} plugins in {} were built from other sources (recorded \
                 sources-sha256 {}, the sources now hash to {}); run `{REFRESH_COMMAND}` on a \
                 machine with a wasm32 toolchain and commit the result",
                self.name,
                self.prebuilt_dir.display(),
                short(&recorded),
                short(&now),
            ))),
            None => Err(BuildError::Stale(format!(
                "no prebuilt {} plugins in {} ({} is missing); run `{REFRESH_COMMAND}` on a \
                 machine with a wasm32 toolchain",
                self.name,
                self.prebuilt_dir.display(),
                SOURCES_FILE
            ))),
        }
    }

    /// The plugin components of the prebuilt set, after checking it is fresh.
    pub fn prebuilt(&self) -> Result<Vec<EmbeddedPlugin>, BuildError> {
        self.check_fresh()?;
        let crates = crate::discover_crates(&self.crate_roots)?;
        crates
            .iter()
            .map(|krate| {
                let wasm = self.prebuilt_dir.join(format!("{}.wasm", krate.package));
                if !wasm.is_file() {
                    return Err(BuildError::Stale(format!(
                        "{} is missing; run `{REFRESH_COMMAND}`",
                        wasm.display()
                    )));
                }
                let manifest = self.prebuilt_dir.join(format!("{}.toml", krate.package));
                Ok(EmbeddedPlugin {
                    package: krate.package.clone(),
                    wasm,
                    manifest: manifest.is_file().then_some(manifest),
                })
            })
            .collect()
    }

    /// Builds the set from source into `out_dir` with `target_dir` as the
    /// wasm cargo target folder.
    pub fn build_from_source(
        &self,
        out_dir: &Path,
        target_dir: &Path,
        output: Output,
    ) -> Result<Vec<EmbeddedPlugin>, BuildError> {
        let crates = crate::discover_crates(&self.crate_roots)?;
        let toolchain = find_toolchain()?;
        let built = crate::build(
            &toolchain,
            &self.workspace_manifest,
            &crates,
            target_dir,
            output,
        )?;
        std::fs::create_dir_all(out_dir).map_err(|e| io_err(out_dir.display(), e))?;
        let mut out = Vec::new();
        for plugin in &built {
            let wasm = out_dir.join(format!("{}.wasm", plugin.krate.package));
            write_atomically(&wasm, &plugin.component)?;
            let manifest = match plugin.krate.manifest() {
                Some(src) => {
                    let dest = out_dir.join(format!("{}.toml", plugin.krate.package));
                    std::fs::copy(&src, &dest).map_err(|e| io_err(dest.display(), e))?;
                    Some(dest)
                }
                None => None,
            };
            out.push(EmbeddedPlugin {
                package: plugin.krate.package.clone(),
                wasm,
                manifest,
            });
        }
        Ok(out)
    }

    /// Rebuilds the prebuilt set from source and records the source hash
    /// (`cargo xtask plugins`). Components of crates that no longer exist
    /// are removed.
    pub fn refresh(&self, target_dir: &Path) -> Result<Vec<EmbeddedPlugin>, BuildError> {
        let before = self.source_hash()?;
        let dir = &self.prebuilt_dir;
        std::fs::create_dir_all(dir).map_err(|e| io_err(dir.display(), e))?;
        let built = self.build_from_source(dir, target_dir, Output::Inherit)?;
        let keep: Vec<String> = built
            .iter()
            .flat_map(|p| [format!("{}.wasm", p.package), format!("{}.toml", p.package)])
            .collect();
        for entry in std::fs::read_dir(dir)
            .map_err(|e| io_err(dir.display(), e))?
            .flatten()
        {
            let name = entry.file_name().to_string_lossy().into_owned();
            let stale_artifact =
                (name.ends_with(".wasm") || name.ends_with(".toml")) && !keep.contains(&name);
            if stale_artifact {
                std::fs::remove_file(entry.path()).map_err(|e| io_err(name, e))?;
            }
        }
        // The sources must not have changed while building.
        let after = self.source_hash()?;
        if after != before {
            return Err(BuildError::Stale(format!(
                "the {} plugin sources changed during the build; run `{REFRESH_COMMAND}` again",
                self.name
            )));
        }
        let mut record = String::new();
        writeln!(
            record,
            "# Written by `{REFRESH_COMMAND}`: the hash of the sources the"
        )
        .unwrap();
        writeln!(
            record,
            "# components in this folder were built from. Do not edit."
        )
        .unwrap();
        writeln!(record, "sources-sha256 {after}").unwrap();
        for p in &built {
            let bytes = std::fs::read(&p.wasm).map_err(|e| io_err(p.wasm.display(), e))?;
            writeln!(
                record,
                "component {} {}",
                p.package,
                hex(&Sha256::digest(&bytes))
            )
            .unwrap();
        }
        write_atomically(&dir.join(SOURCES_FILE), record.as_bytes())?;
        Ok(built)
    }
}

/// A component a build script embeds.
#[derive(Debug, Clone)]
pub struct EmbeddedPlugin {
    /// The crate's package name, which becomes the plugin's name.
    pub package: String,
    /// The component file.
    pub wasm: PathBuf,
    /// The plugin manifest beside it, if the crate has one.
    pub manifest: Option<PathBuf>,
}

/// Where a build script's plugins came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    /// Compiled from the sources by this build.
    Source,
    /// Taken from the committed prebuilt set.
    Prebuilt,
}

/// For build scripts: the plugin set's components, built from source when a
/// wasm32 toolchain is present and `TUNER_PLUGINS_PREBUILT` is not set,
/// otherwise the committed prebuilt set (checked fresh). Emits the
/// `cargo:rerun-if-*` lines and a `cargo:warning` saying which was used
/// when it was the prebuilt set.
pub fn components_for_build_script(
    set: &PluginSet,
    out_dir: &Path,
) -> Result<(Vec<EmbeddedPlugin>, Origin), BuildError> {
    for path in set.all_inputs() {
        println!("cargo:rerun-if-changed={}", path.display());
    }
    println!("cargo:rerun-if-changed={}", set.prebuilt_dir.display());
    println!(
        "cargo:rerun-if-changed={}",
        set.workspace_manifest.display()
    );
    for var in [
        PREBUILT_ENV,
        "TUNER_WASM_RUSTC",
        "TUNER_WASM_CARGO",
        "TUNER_WASM_LD",
    ] {
        println!("cargo:rerun-if-env-changed={var}");
    }
    let forced = std::env::var(PREBUILT_ENV).is_ok_and(|v| !v.is_empty() && v != "0");
    if !forced {
        match find_toolchain() {
            Ok(_) => {
                let target_dir = crate::outer_target_dir(out_dir).join("wasm-plugins");
                let built = set.build_from_source(out_dir, &target_dir, Output::Captured)?;
                return Ok((built, Origin::Source));
            }
            Err(BuildError::NoToolchain(_)) => {}
            Err(other) => return Err(other),
        }
    }
    let prebuilt = set.prebuilt().map_err(|e| match (e, forced) {
        (BuildError::Stale(msg), false) => BuildError::Stale(format!(
            "{msg}. No wasm32 toolchain was found to build them here instead ({})",
            crate::INSTALL_HINT
        )),
        (e, _) => e,
    })?;
    Ok((prebuilt, Origin::Prebuilt))
}

/// Every file under `path` (or `path` itself), skipping `target/` folders,
/// `skip` and files that are not part of a source tree.
fn collect_files(path: &Path, skip: &Path, out: &mut Vec<PathBuf>) -> Result<(), BuildError> {
    if path == skip {
        return Ok(());
    }
    let meta = match std::fs::symlink_metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(io_err(path.display(), e)),
    };
    if meta.is_file() {
        let name = path.file_name().unwrap_or_default().to_string_lossy();
        let dropping = name.ends_with(".swp") || name.ends_with('~') || name == ".DS_Store";
        if !dropping {
            out.push(path.to_path_buf());
        }
        return Ok(());
    }
    if !meta.is_dir() {
        return Ok(());
    }
    let name = path.file_name().unwrap_or_default().to_string_lossy();
    if name == "target" || name == ".git" {
        return Ok(());
    }
    let entries = std::fs::read_dir(path).map_err(|e| io_err(path.display(), e))?;
    for entry in entries {
        let entry = entry.map_err(|e| io_err(path.display(), e))?;
        collect_files(&entry.path(), skip, out)?;
    }
    Ok(())
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().fold(String::new(), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

fn short(hash: &str) -> &str {
    &hash[..hash.len().min(12)]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set_in(root: &Path) -> PluginSet {
        std::fs::create_dir_all(root.join("plugins/formats/a/src")).unwrap();
        std::fs::write(root.join("plugins/formats/a/src/lib.rs"), "fn a() {}").unwrap();
        std::fs::create_dir_all(root.join("plugins/formats/a/target")).unwrap();
        std::fs::write(root.join("plugins/formats/a/target/junk"), "x").unwrap();
        PluginSet::bundled(root)
    }

    #[test]
    fn source_hash_ignores_targets_and_the_prebuilt_folder_but_not_sources() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path();
        let set = set_in(dir);
        let h1 = set.source_hash().unwrap();
        std::fs::write(dir.join("plugins/formats/a/target/junk"), "y").unwrap();
        std::fs::create_dir_all(&set.prebuilt_dir).unwrap();
        std::fs::write(set.prebuilt_dir.join("a.wasm"), "wasm").unwrap();
        assert_eq!(set.source_hash().unwrap(), h1);
        std::fs::write(dir.join("plugins/formats/a/src/lib.rs"), "fn b() {}").unwrap();
        assert_ne!(set.source_hash().unwrap(), h1);
    }

    #[test]
    fn a_stale_record_is_refused_with_the_refresh_command() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path();
        let set = set_in(dir);
        std::fs::create_dir_all(&set.prebuilt_dir).unwrap();
        let err = set.check_fresh().unwrap_err().to_string();
        assert!(err.contains("SOURCES is missing"), "{err}");
        std::fs::write(
            set.prebuilt_dir.join(SOURCES_FILE),
            format!("sources-sha256 {}\n", set.source_hash().unwrap()),
        )
        .unwrap();
        set.check_fresh().unwrap();
        std::fs::write(dir.join("plugins/formats/a/src/lib.rs"), "fn c() {}").unwrap();
        let err = set.check_fresh().unwrap_err().to_string();
        assert!(err.contains(REFRESH_COMMAND), "{err}");
        assert!(err.contains("built from other sources"), "{err}");
    }
}

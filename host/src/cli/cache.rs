//! `tuner cache ...`: list, rm, clear, verify, import, export.

use std::io::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context as _, Result, bail};
use clap::{Args, Subcommand};

use crate::app::App;
use crate::hub::{RepoId, RepoKind, human_bytes};

#[derive(Debug, Subcommand)]
pub enum CacheCommand {
    /// List cached models and datasets: name, source, revision, files, size,
    /// complete, verified (when).
    List {
        /// Also list the models transformers/huggingface_hub and the
        /// ModelScope SDK downloaded (HF_HUB_CACHE, MODELSCOPE_CACHE), which
        /// tuner uses where they are.
        #[arg(long)]
        all: bool,
        #[command(flatten)]
        flags: CacheFlags,
    },
    /// Remove one repository (`Qwen/Qwen3-0.6B` or `Qwen_Qwen3-0.6B`).
    Rm {
        name: String,
        #[command(flatten)]
        flags: CacheFlags,
    },
    /// Remove everything in the cache (asks first unless --yes).
    Clear {
        /// Do not ask for confirmation.
        #[arg(long, short)]
        yes: bool,
        #[command(flatten)]
        flags: CacheFlags,
    },
    /// Re-hash a repository's files against their recorded sha256.
    Verify {
        name: String,
        #[command(flatten)]
        flags: CacheFlags,
    },
    /// Adopt a folder downloaded by other means, so `pull` never fetches it again.
    Import {
        /// Repository id it is a copy of.
        name: String,
        /// The folder.
        folder: PathBuf,
        #[arg(long)]
        revision: Option<String>,
        /// Do not check against the hub; record the files as unverified.
        #[arg(long)]
        offline: bool,
        #[command(flatten)]
        flags: CacheFlags,
    },
    /// Copy a cached snapshot into a plain folder.
    Export {
        name: String,
        /// Destination folder.
        #[arg(long)]
        local_dir: PathBuf,
        #[arg(long)]
        revision: Option<String>,
        #[command(flatten)]
        flags: CacheFlags,
    },
}

#[derive(Debug, Args)]
pub struct CacheFlags {
    /// Dataset repositories instead of models.
    #[arg(long)]
    pub dataset: bool,
    /// Print JSON (stable shape, see docs/cli.md).
    #[arg(long)]
    pub json: bool,
    /// Cache folder (default: MODEL_CACHE_DIR, `model_cache_dir`, or the platform cache).
    #[arg(long, value_name = "DIR")]
    pub cache_dir: Option<PathBuf>,
}

impl CacheFlags {
    fn kind(&self) -> RepoKind {
        if self.dataset {
            RepoKind::Dataset
        } else {
            RepoKind::Model
        }
    }
}

impl CacheCommand {
    fn flags(&self) -> &CacheFlags {
        match self {
            CacheCommand::List { flags, .. }
            | CacheCommand::Rm { flags, .. }
            | CacheCommand::Clear { flags, .. }
            | CacheCommand::Verify { flags, .. }
            | CacheCommand::Import { flags, .. }
            | CacheCommand::Export { flags, .. } => flags,
        }
    }
}

pub fn run(app: App, cmd: CacheCommand) -> Result<ExitCode> {
    if let Some(dir) = &cmd.flags().cache_dir {
        app.update_settings(|s| s.model_cache_dir = dir.clone());
    }
    let hub = app.hub()?;
    let cache = &hub.cache;
    let store = hub.store();
    match cmd {
        CacheCommand::List { all, flags } => {
            let repos = cache.list(store);
            let external = all.then(|| crate::hub::ExternalCaches::from_env().list());
            if flags.json {
                let mut json = serde_json::json!({"cache_dir": cache.root, "repos": repos});
                if let Some(external) = &external {
                    json["external"] = serde_json::to_value(external)?;
                }
                println!("{}", serde_json::to_string_pretty(&json)?);
                return Ok(ExitCode::SUCCESS);
            }
            if let Some(external) = &external {
                print_external(external);
            }
            if repos.is_empty() {
                println!("the cache is empty ({})", cache.root.display());
            } else {
                println!(
                    "{:<40} {:<8} {:<12} {:<12} {:>6} {:>11}  {:<8}  VERIFIED",
                    "NAME", "KIND", "SOURCE", "REVISION", "FILES", "SIZE", "COMPLETE"
                );
                for r in &repos {
                    println!(
                        "{:<40} {:<8} {:<12} {:<12} {:>6} {:>11}  {:<8}  {}",
                        r.name,
                        r.kind.folder_prefix().trim_end_matches('s'),
                        r.source,
                        r.revision.as_deref().unwrap_or("-"),
                        r.files,
                        human_bytes(r.size_bytes),
                        if r.complete { "yes" } else { "no" },
                        r.verified_at.as_deref().unwrap_or("no"),
                    );
                }
                println!("\ncache: {}", cache.root.display());
            }
        }
        CacheCommand::Rm { name, flags } => {
            let repo = cache.find(flags.kind(), &name)?;
            let freed = cache.remove(&repo, store)?;
            if flags.json {
                println!(
                    "{}",
                    serde_json::json!({"removed": repo.id, "freed_bytes": freed})
                );
            } else {
                println!("removed {} ({} freed)", repo.id, human_bytes(freed));
            }
        }
        CacheCommand::Clear { yes, flags } => {
            let repos = cache.repos();
            if !yes {
                if flags.json {
                    bail!("`cache clear --json` needs --yes (it cannot ask)");
                }
                eprint!(
                    "remove all {} repositories from {}? [y/N] ",
                    repos.len(),
                    cache.root.display()
                );
                std::io::stderr().flush().ok();
                let mut answer = String::new();
                std::io::stdin().read_line(&mut answer)?;
                if !matches!(answer.trim(), "y" | "Y" | "yes") {
                    eprintln!("nothing removed");
                    return Ok(ExitCode::from(1));
                }
            }
            let removed = cache.clear(store)?;
            if flags.json {
                println!("{}", serde_json::json!({"removed": removed}));
            } else {
                println!("removed {} repositories", removed.len());
            }
        }
        CacheCommand::Verify { name, flags } => {
            let repo = cache.find(flags.kind(), &name)?;
            let report = cache.verify(&repo, store)?;
            let ok = report.corrupt.is_empty() && report.missing.is_empty();
            if flags.json {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&serde_json::json!({"ok": ok, "report": report}))?
                );
            } else {
                println!("{}: {} files checked", report.name, report.checked);
                for p in &report.corrupt {
                    println!("  corrupt: {p}");
                }
                for p in &report.missing {
                    println!("  missing: {p}");
                }
                println!(
                    "{}",
                    if ok {
                        "ok"
                    } else {
                        "FAILED: run `tuner pull --force` to fetch them again"
                    }
                );
            }
            return Ok(if ok {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            });
        }
        CacheCommand::Import {
            name,
            folder,
            revision,
            offline,
            flags,
        } => {
            let repo = RepoId::parse(flags.kind(), &name)?;
            let runtime = tokio::runtime::Runtime::new().context("starting the async runtime")?;
            let report =
                runtime.block_on(hub.import(&repo, &folder, revision.as_deref(), offline))?;
            if flags.json {
                println!("{}", serde_json::to_string_pretty(&report)?);
            } else {
                println!(
                    "imported {} files of {} as commit {} ({})",
                    report.imported,
                    report.name,
                    report.commit,
                    if report.verified {
                        format!("checked against {}", report.source)
                    } else {
                        "offline: recorded as unverified".into()
                    }
                );
                for r in &report.rejected {
                    println!("  left out {}: {}", r.path, r.reason);
                }
            }
        }
        CacheCommand::Export {
            name,
            local_dir,
            revision,
            flags,
        } => {
            if let Some(rev) = &revision {
                crate::paths::check_git_ref("revision", rev)?;
            }
            let repo = cache.find(flags.kind(), &name)?;
            let n = cache.export(&repo, revision.as_deref(), &local_dir)?;
            if flags.json {
                println!(
                    "{}",
                    serde_json::json!({"name": repo.id, "files": n, "local_dir": local_dir})
                );
            } else {
                println!("copied {n} files of {} to {}", repo.id, local_dir.display());
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// `cache list --all`: the models of other tools' caches.
fn print_external(models: &[crate::hub::ExternalModel]) {
    if models.is_empty() {
        println!("no models in the Hugging Face or ModelScope caches\n");
        return;
    }
    println!(
        "{:<40} {:<12} {:<12} {:>6} {:>11}  {:<8}  PATH",
        "NAME (other tools' caches, read-only)", "ORIGIN", "REVISION", "FILES", "SIZE", "COMPLETE"
    );
    for m in models {
        println!(
            "{:<40} {:<12} {:<12} {:>6} {:>11}  {:<8}  {}",
            m.name,
            m.origin.as_str(),
            m.revision.as_deref().unwrap_or("-"),
            m.files,
            human_bytes(m.size_bytes),
            if m.complete { "yes" } else { "no" },
            m.path.display()
        );
    }
    println!();
}

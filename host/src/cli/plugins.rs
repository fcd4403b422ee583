//! `tuner plugins ...`: list, info, check, new, build.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context as _, Result, bail};
use clap::{Args, Subcommand};
use serde::Serialize;

use crate::api::{PluginDetail, PluginList};
use crate::app::App;
use crate::plugins::{Kind, PluginMeta, scaffold};

#[derive(Debug, Subcommand)]
pub enum PluginsCommand {
    /// List active plugins (bundled and from the plugin folder) and files that failed to load.
    List(JsonFlag),
    /// Show one plugin.
    Info {
        name: String,
        #[command(flatten)]
        json: JsonFlag,
    },
    /// Validate a .wasm file as a plugin without installing it.
    Check {
        file: PathBuf,
        #[command(flatten)]
        json: JsonFlag,
    },
    /// Create a new plugin crate from a template.
    New(NewArgs),
    /// Build a plugin crate into a component (`target/NAME.wasm`), optionally installing it.
    Build(BuildArgs),
}

#[derive(Debug, Args)]
pub struct JsonFlag {
    /// Print JSON (stable shape, see docs/cli.md).
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct NewArgs {
    /// Plugin (and crate) name: a-z, 0-9, `-`, `_`.
    pub name: String,
    /// format, source or method.
    #[arg(long)]
    pub kind: Kind,
    /// Folder to create the crate in.
    #[arg(long, default_value = ".")]
    pub dir: PathBuf,
    /// Path to tuner-sdk (default: the SDK beside this tuner's sources).
    #[arg(long, env = "TUNER_SDK_PATH")]
    pub sdk: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct BuildArgs {
    /// The plugin crate (default: current folder).
    #[arg(default_value = ".")]
    pub dir: PathBuf,
    /// Copy the component (and plugin.toml as NAME.toml) into the plugin folder.
    #[arg(long)]
    pub install: bool,
    /// Cargo target folder for the wasm build (default: one shared by all plugin builds, under the tuner home's cache).
    #[arg(long)]
    pub target_dir: Option<PathBuf>,
}

impl clap::ValueEnum for Kind {
    fn value_variants<'a>() -> &'a [Self] {
        &[Kind::Format, Kind::Source, Kind::Method, Kind::Reward]
    }
    fn to_possible_value(&self) -> Option<clap::builder::PossibleValue> {
        Some(clap::builder::PossibleValue::new(match self {
            Kind::Format => "format",
            Kind::Source => "source",
            Kind::Method => "method",
            Kind::Reward => "reward",
        }))
    }
}

pub fn run(app: App, cmd: PluginsCommand) -> Result<ExitCode> {
    match cmd {
        PluginsCommand::List(flag) => {
            let host = app.plugins()?;
            let list = PluginList::of(&host);
            if flag.json {
                print_json(&list)?;
            } else {
                print_list(&list);
            }
            Ok(ExitCode::SUCCESS)
        }
        PluginsCommand::Info { name, json } => {
            let host = app.plugins()?;
            let Some(plugin) = host.get(&name) else {
                let names: Vec<String> = host.list().iter().map(|p| p.name().to_string()).collect();
                bail!("no plugin named `{name}` (available: {})", names.join(", "));
            };
            let detail = PluginDetail::of(&plugin);
            if json.json {
                print_json(&detail)?;
            } else {
                print_meta(&detail.view.meta);
                if let Some(d) = &detail.view.degraded {
                    println!(
                        "degraded:    left out of format detection for another {}s: {}",
                        d.retry_in_secs, d.reason
                    );
                }
                print_settings(&detail);
            }
            Ok(ExitCode::SUCCESS)
        }
        PluginsCommand::Check { file, json } => check(&app, &file, json.json),
        PluginsCommand::New(args) => {
            let sdk = args.sdk.or_else(scaffold::default_sdk_path).context(
                "cannot find tuner-sdk: pass --sdk PATH (the `sdk` folder of tuner's sources)",
            )?;
            let root = scaffold::create(&args.dir, &args.name, args.kind, &sdk)?;
            println!("created {} ({} plugin)", root.display(), args.kind);
            println!("next: tuner plugins build {} --install", root.display());
            Ok(ExitCode::SUCCESS)
        }
        PluginsCommand::Build(args) => build(&app, args),
    }
}

#[derive(Serialize)]
struct CheckResult<'a> {
    ok: bool,
    file: &'a Path,
    #[serde(skip_serializing_if = "Option::is_none")]
    plugin: Option<PluginMeta>,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<String>,
}

fn check(app: &App, file: &Path, json: bool) -> Result<ExitCode> {
    let outcome = app.plugins()?.check_file(file);
    let result = CheckResult {
        ok: outcome.is_ok(),
        file,
        error: outcome.as_ref().err().map(|e| e.to_string()),
        plugin: outcome.ok(),
    };
    if json {
        print_json(&result)?;
    } else if let Some(meta) = &result.plugin {
        println!("ok: {} is a valid {} plugin", file.display(), meta.kind);
        print_meta(meta);
    } else {
        eprintln!(
            "error: {}: {}",
            file.display(),
            result.error.as_deref().unwrap_or("")
        );
    }
    Ok(if result.ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

fn build(app: &App, args: BuildArgs) -> Result<ExitCode> {
    let krate = tuner_wasm_build::PluginCrate::open(&args.dir)?;
    crate::plugins::manifest::check_name(&krate.package)
        .map_err(|e| anyhow::anyhow!("package name in Cargo.toml: {e}"))?;
    let toolchain = tuner_wasm_build::find_toolchain()?;
    // One cargo target folder for all plugin crates, per toolchain: the
    // wasm32 `std` (compiled with -Zbuild-std when there is no prebuilt one)
    // and common dependencies such as tuner-sdk are built by the first crate
    // and reused by every later one, since their package, features, profile
    // and flags are the same. Cargo locks the folder while it builds, so
    // concurrent builds wait for each other instead of clashing.
    let target_dir = match &args.target_dir {
        Some(dir) => dir.clone(),
        None => app.home().wasm_build_cache_dir.join(toolchain.cache_key()?),
    };
    eprintln!(
        "building {} with {toolchain} in {}",
        krate.package,
        target_dir.display()
    );
    let built = tuner_wasm_build::build(
        &toolchain,
        &args.dir.join("Cargo.toml"),
        std::slice::from_ref(&krate),
        &target_dir,
        tuner_wasm_build::Output::Inherit,
    )?;
    let plugin = &built[0];
    let out = args
        .dir
        .join("target")
        .join(format!("{}.wasm", krate.package));
    std::fs::create_dir_all(out.parent().unwrap())?;
    crate::fsio::write_atomically(&out, &plugin.component)?;
    let manifest = krate.manifest();
    if let Some(m) = &manifest {
        std::fs::copy(m, out.with_extension("toml"))?;
    }
    println!("built {} ({} bytes)", out.display(), plugin.component.len());
    if args.install {
        let plugin_dir = app.settings().plugin_dir;
        let dir = &plugin_dir;
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        // Manifest first: a watcher that sees the .wasm then finds its manifest.
        let dest = dir.join(format!("{}.toml", krate.package));
        match &manifest {
            Some(m) => crate::fsio::write_atomically(&dest, &std::fs::read(m)?)?,
            // An old manifest would still override the new plugin's info().
            None if dest.exists() => std::fs::remove_file(&dest)?,
            None => {}
        }
        let dest = dir.join(format!("{}.wasm", krate.package));
        crate::fsio::write_atomically(&dest, &plugin.component)?;
        println!("installed {}", dest.display());
    }
    Ok(ExitCode::SUCCESS)
}

fn print_json<T: Serialize>(value: &T) -> Result<()> {
    println!("{}", serde_json::to_string_pretty(value)?);
    Ok(())
}

fn print_list(list: &PluginList) {
    let width = list
        .plugins
        .iter()
        .map(|p| p.meta.name.len())
        .max()
        .unwrap_or(4)
        .max(4);
    println!(
        "{:width$}  {:6}  {:8}  {:9}  DESCRIPTION",
        "NAME", "KIND", "VERSION", "ORIGIN"
    );
    for p in &list.plugins {
        let m = &p.meta;
        let origin = serde_json::to_value(m.origin)
            .ok()
            .and_then(|v| v.as_str().map(String::from))
            .unwrap_or_default();
        println!(
            "{:width$}  {:6}  {:8}  {:9}  {}",
            m.name,
            m.kind.to_string(),
            m.version,
            origin,
            m.description
        );
        if let Some(d) = &p.degraded {
            println!(
                "{:width$}  degraded: left out of format detection for another {}s \
                 (until {} Unix time, or until its file changes): {}",
                "", d.retry_in_secs, d.until_unix, d.reason
            );
        }
    }
    if let Some(dir) = &list.plugin_dir {
        println!("\nplugin folder: {dir}");
    }
    for f in &list.failures {
        println!("not loaded: {}: {}", f.file.display(), f.error);
    }
}

fn print_meta(m: &PluginMeta) {
    println!("name:        {}", m.name);
    println!("kind:        {}", m.kind);
    println!("version:     {}", m.version);
    println!("description: {}", m.description);
    println!(
        "hosts:       {}",
        if m.hosts.is_empty() {
            "(no network)".to_string()
        } else {
            m.hosts.join(", ")
        }
    );
    println!("interface:   tuner:plugin@{}", m.wit_version);
    if let Some(sdk) = &m.sdk_version {
        println!("sdk:         tuner-sdk (WIT {sdk})");
    }
    if let Some(path) = &m.path {
        println!("file:        {}", path.display());
    }
    println!("sha256:      {}", m.sha256);
    println!("size:        {} bytes", m.size_bytes);
}

/// The settings table of `tuner plugins info`: key, type, default, and the
/// description (Chinese too when the plugin gives it).
fn print_settings(detail: &PluginDetail) {
    if let Some(e) = &detail.settings_error {
        println!("settings:    cannot be read: {e}");
        return;
    }
    if detail.settings.is_empty() {
        if matches!(detail.view.meta.kind, Kind::Method | Kind::Format) {
            println!("settings:    none");
        }
        return;
    }
    let key = match detail.view.meta.kind {
        Kind::Method => "training-config keys",
        _ => "--set keys",
    };
    println!("settings ({key}):");
    let width = detail
        .settings
        .iter()
        .map(|s| s.name.len())
        .max()
        .unwrap_or(0);
    for s in &detail.settings {
        let default = s
            .default
            .as_ref()
            .map(|d| format!(", default {}", d.to_json()))
            .unwrap_or_else(|| ", unset by default".into());
        println!("  {:width$}  {}{default}", s.name, s.kind.describe());
        println!("  {:width$}  {}", "", s.description);
        if let Some(zh) = &s.description_zh {
            println!("  {:width$}  {zh}", "");
        }
    }
}

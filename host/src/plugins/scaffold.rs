//! `tuner plugins new`: a new plugin crate from a template, ready for
//! `tuner plugins build`.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};

use super::Kind;
use super::manifest::check_name;

/// The SDK next to the sources this binary was built from, when it exists.
pub fn default_sdk_path() -> Option<PathBuf> {
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("../sdk");
    p.join("Cargo.toml")
        .is_file()
        .then(|| p.canonicalize().unwrap_or(p))
}

/// Writes a new crate `dir/name` for a plugin of `kind` that depends on the
/// SDK at `sdk`. Refuses to overwrite an existing folder.
pub fn create(dir: &Path, name: &str, kind: Kind, sdk: &Path) -> Result<PathBuf> {
    check_name(name).map_err(|e| anyhow::anyhow!(e))?;
    let root = dir.join(name);
    if root.exists() {
        bail!(
            "{} already exists; choose another name or folder",
            root.display()
        );
    }
    let sdk = sdk
        .canonicalize()
        .ok()
        .filter(|p| p.join("Cargo.toml").is_file())
        .with_context(|| format!("tuner-sdk not found at {}", sdk.display()))?;
    std::fs::create_dir_all(root.join("src"))
        .with_context(|| format!("creating {}", root.display()))?;
    let sdk_str = sdk.display().to_string().replace('\\', "/");
    let files = [
        ("Cargo.toml", cargo_toml(name, &sdk_str)),
        ("plugin.toml", manifest(name, kind)),
        ("src/lib.rs", source(kind).to_string()),
        (".gitignore", "/target\n".to_string()),
    ];
    for (file, text) in files {
        let path = root.join(file);
        std::fs::write(&path, text).with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(root)
}

fn cargo_toml(name: &str, sdk: &str) -> String {
    format!(
        r#"[package]
name = "{name}"
version = "0.1.0"
edition = "2024"
publish = false

# A plugin is a WebAssembly component: build it with `tuner plugins build .`
[lib]
crate-type = ["cdylib"]

[dependencies]
tuner-sdk = {{ path = "{sdk}" }}

# Standalone: not part of any surrounding workspace.
[workspace]

[profile.release]
opt-level = 3
lto = true
codegen-units = 1
panic = "abort"
strip = "debuginfo"
"#
    )
}

fn manifest(name: &str, kind: Kind) -> String {
    let (description, hosts) = match kind {
        Kind::Format => ("One text sample per non-empty line", ""),
        Kind::Source => ("Models from my hub", "hosts = [\"hub.example.com\"]\n"),
        Kind::Method => ("LoRA fine-tuning with label smoothing", ""),
        Kind::Reward => ("Share of the completion written in one script", ""),
    };
    format!(
        "# `tuner plugins build --install` copies this file beside the component as NAME.toml;\n\
         # there it takes precedence over info() (version, description, hosts): keep both in step.\n\
         name = \"{name}\"\nversion = \"0.1.0\"\nkind = \"{kind}\"\n\
         description = \"{description}\"\n{hosts}"
    )
}

fn source(kind: Kind) -> &'static str {
    match kind {
        Kind::Format => FORMAT_TEMPLATE,
        Kind::Source => SOURCE_TEMPLATE,
        Kind::Method => METHOD_TEMPLATE,
        Kind::Reward => REWARD_TEMPLATE,
    }
}

const FORMAT_TEMPLATE: &str = r#"//! A format plugin: every non-empty line of a `.lines` file is a text sample.
use tuner_sdk::format::*;

struct LinesFormat;

impl FormatPlugin for LinesFormat {
    type Parser = ByLine<LineToText>;

    fn info() -> PluginInfo {
        tuner_sdk::plugin_info!(Format, "One text sample per non-empty line")
    }

    fn extensions() -> Vec<String> {
        vec!["lines".into()]
    }

    fn detect(file_name: &str, _head: &str) -> f32 {
        if file_name.ends_with(".lines") { 0.9 } else { 0.0 }
    }
}

struct LineToText;

impl LineParser for LineToText {
    fn new(_options: ParseOptions) -> Result<Self, FatalError> {
        Ok(LineToText)
    }

    fn parse_line(&mut self, at: Location, line: &str) -> RecordOutcome {
        RecordOutcome::sample(at, Sample::Text(line.to_string()), "text")
    }
}

tuner_sdk::export_plugin!(format: LinesFormat);
"#;

const SOURCE_TEMPLATE: &str = r#"//! A source plugin: resolves repositories on a hub speaking a simple JSON API.
use tuner_sdk::source::http;
use tuner_sdk::source::*;

struct MyHub;

impl SourcePlugin for MyHub {
    fn info() -> PluginInfo {
        tuner_sdk::plugin_info!(Source, "Models from my hub", ["hub.example.com"])
    }

    fn default_endpoint() -> String {
        "https://hub.example.com".into()
    }

    fn resolve(request: ResolveRequest) -> Result<Listing, SourceError> {
        let endpoint = request.endpoint.clone().unwrap_or_else(Self::default_endpoint);
        let revision = request.revision.clone().unwrap_or_else(|| "main".into());
        let url = format!("{endpoint}/api/{}/{revision}/files", request.repo);
        let resp = http::get(&url, &[]).map_err(|e| SourceError::Unavailable(e.to_string()))?;
        match resp.status {
            200 => {}
            404 => return Err(SourceError::NotFound(request.repo)),
            s => return Err(SourceError::Unavailable(format!("{url}: HTTP {s}"))),
        }
        // One file path per line in this example API.
        let files = resp
            .text()
            .lines()
            .filter(|l| !l.is_empty())
            .map(|path| RemoteFile {
                path: path.to_string(),
                size: None,
                sha256: None,
                url: format!("{endpoint}/files/{}/{revision}/{path}", request.repo),
                headers: Vec::new(),
            })
            .collect();
        Ok(Listing { repo: request.repo, revision: revision.clone(), commit: revision, files })
    }
}

tuner_sdk::export_plugin!(source: MyHub);
"#;

const METHOD_TEMPLATE: &str = r#"//! A method plugin: LoRA fine-tuning with label smoothing. The `smoothing`
//! setting spreads that share of each target's probability over the whole
//! vocabulary.
use tuner_sdk::method::*;

struct Smoothed {
    smoothing: f64,
}

impl MethodPlugin for Smoothed {
    fn info() -> PluginInfo {
        tuner_sdk::plugin_info!(Method, "LoRA fine-tuning with label smoothing")
    }

    // Keys of the training config this method accepts. The host checks the
    // user's values against them and fills in the defaults.
    fn settings() -> Vec<Setting> {
        vec![
            Setting::number("smoothing", 0.1)
                .min(0)
                .below(1)
                .describe("Share of the target probability spread over the vocabulary")
                .zh("从目标词的概率中均匀分给整个词表的比例"),
        ]
    }

    fn configure(settings: &Settings, _job: &Job) -> Result<Self, PluginError> {
        Ok(Smoothed { smoothing: settings.number("smoothing").unwrap_or(0.1) })
    }

    fn plan(&self) -> Plan {
        Plan {
            trains: Trainable::Adapters,
            adapter: Some(AdapterSpec {
                rank: 8,
                alpha: 32.0,
                dropout: 0.05,
                target_modules: vec!["all-linear".into()],
                rslora: false,
            }),
            base_quantization: Quantization::None,
            needs_reference: false,
            needs_generation: false,
            accepts: vec![BatchKind::Chat, BatchKind::Text],
        }
    }

    fn loss(&self, batch: &Batch, policy: &Policy, _step: u64) -> Result<Tensor, PluginError> {
        // Log-softmax over the vocabulary at the trained positions: [n, vocab].
        let dist = policy.vocab_logprobs(batch, true)?;
        let nll = dist.target_logprobs()?.neg()?; // [n]
        let uniform = dist.logprobs.mean(&[1], false)?.neg()?; // [n]
        let e = self.smoothing;
        let per_position = nll.scale(1.0 - e)?.add(&uniform.scale(e)?)?;
        // Weighted by the loss weights; 0 for a batch with nothing to train.
        Ok(per_position.weighted_mean(&dist.weights)?)
    }
}

tuner_sdk::export_plugin!(method: Smoothed);
"#;

const REWARD_TEMPLATE: &str = r#"//! A reward plugin: language consistency, as in DeepSeek-R1. The score is
//! the share of the completion's letters written in the chosen script, so
//! answers that drift into another language score lower.
use tuner_sdk::reward::*;

struct Consistency;

impl RewardPlugin for Consistency {
    fn info() -> PluginInfo {
        tuner_sdk::plugin_info!(Reward, "Share of the completion written in one script")
    }

    // Set in the training config as `[reward_settings.NAME] script = "han"`.
    fn settings() -> Vec<Setting> {
        vec![
            Setting::choice("script", &["latin", "han"], "latin")
                .describe("The script answers should be written in")
                .zh("回答应使用的文字"),
        ]
    }

    fn score(inputs: &[RewardInput], settings: &Settings) -> Result<Vec<f64>, PluginError> {
        let han = settings.text("script") == Some("han");
        let in_script = |c: char| {
            if han {
                ('\u{4e00}'..='\u{9fff}').contains(&c)
            } else {
                c.is_ascii_alphabetic()
            }
        };
        Ok(inputs
            .iter()
            .map(|input| {
                let letters = input.completion.chars().filter(|c| c.is_alphabetic());
                let (mut total, mut good) = (0usize, 0usize);
                for c in letters {
                    total += 1;
                    good += in_script(c) as usize;
                }
                if total == 0 { 0.0 } else { good as f64 / total as f64 }
            })
            .collect())
    }
}

tuner_sdk::export_plugin!(reward: Consistency);
"#;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn format_template_stays_short() {
        // The promise in docs/plugin-authoring.md: a format plugin in well under 50 lines.
        assert!(FORMAT_TEMPLATE.lines().count() < 50);
    }

    #[test]
    fn refuses_to_overwrite() {
        let dir = tempfile::tempdir().unwrap();
        let sdk = default_sdk_path().unwrap();
        create(dir.path(), "fmt", Kind::Format, &sdk).unwrap();
        let err = create(dir.path(), "fmt", Kind::Format, &sdk).unwrap_err();
        assert!(err.to_string().contains("already exists"));
    }
}

//! LLaMA-Factory's dataset registry: a folder whose `dataset_info.json`
//! names each dataset, its file or hub id, its formatting and its columns.
//!
//! A dataset spec `DIR:NAME` (`data:alpaca_en_demo`, `~/LLaMA-Factory/data:identity#100`)
//! loads entry NAME of `DIR/dataset_info.json` as LLaMA-Factory would, so a
//! LLaMA-Factory user's data folder works unchanged. An entry becomes
//! tuner's [`LoadOptions`] (a forced layout and a column mapping) plus where
//! the records are; the format plugins then read them as any other file.
//!
//! What is read, with LLaMA-Factory's defaults:
//! - `file_name` (a file or a folder of files, relative to DIR and kept
//!   inside it by [`crate::paths`]), or `hf_hub_url` / `ms_hub_url` (the
//!   ModelScope id when ModelScope is the first source, else the Hugging
//!   Face one);
//! - `formatting`: `alpaca` (default), `sharegpt` or `openai`; `ranking`
//!   (preference pairs); `columns` (`prompt`, `query`, `response`,
//!   `history`, `messages`, `system`, `tools`, `chosen`, `rejected`,
//!   `kto_tag`); `tags` (the ShareGPT role and content tags);
//!   `num_samples` (taken as `#N` when the spec has none); `split` `train`.
//! - An Alpaca entry whose only column is `prompt` is a pre-training set
//!   (LLaMA-Factory's `wiki_demo`, `c4_demo`): that column is the text.
//!
//! Keys that tuner cannot honour yet (image, video and audio columns, other
//! splits, subsets, scripts, cloud files) are refused with a message
//! naming them, never silently dropped; unknown keys are refused with a
//! near-miss hint.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{Context as _, Result, bail};
use serde::Serialize;
use serde_json::{Map, Value};

use super::load::LoadOptions;
use crate::plugins::settings::closest;

/// The registry file LLaMA-Factory reads in its `dataset_dir`.
pub const REGISTRY_FILE: &str = "dataset_info.json";

/// Where an entry's records are.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum EntrySource {
    /// A file or a folder of files inside the registry's folder.
    File { path: PathBuf },
    /// A hub dataset (`org/name`), with the hub it was chosen for.
    Hub { repo: String, hub: String },
}

/// One entry of a registry, read and checked.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RegistryEntry {
    /// The entry's name in `dataset_info.json`.
    pub name: String,
    pub source: EntrySource,
    /// `alpaca`, `sharegpt` or `openai`.
    pub formatting: String,
    /// The tuner layout its records are read with (`alpaca`, `sharegpt`,
    /// `openai`, `preference`, `unpaired`, `text`).
    pub layout: String,
    /// tuner's column mapping: (layout field, field in the file).
    pub columns: Vec<(String, String)>,
    /// `num_samples`, when given.
    pub num_samples: Option<usize>,
}

/// A registry entry named by a `DIR:NAME` spec.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegistrySpec {
    /// The folder holding `dataset_info.json`.
    pub dir: PathBuf,
    pub name: String,
}

impl RegistrySpec {
    /// `DIR:NAME` when DIR is a folder with a `dataset_info.json` (the text
    /// without any `#N`); `None` for anything else.
    pub fn parse(source: &str) -> Option<RegistrySpec> {
        let (dir, name) = source.rsplit_once(':')?;
        let dir = PathBuf::from(if dir.is_empty() { "." } else { dir });
        (!name.is_empty() && dir.join(REGISTRY_FILE).is_file()).then(|| RegistrySpec {
            dir,
            name: name.to_string(),
        })
    }
}

/// Reads `DIR/dataset_info.json` as a JSON object of entries.
fn read_registry(dir: &Path) -> Result<Map<String, Value>> {
    let path = dir.join(REGISTRY_FILE);
    let bytes = std::fs::read(&path).with_context(|| format!("reading {}", path.display()))?;
    let value: Value = serde_json::from_slice(&bytes)
        .with_context(|| format!("{}: not valid JSON", path.display()))?;
    match value {
        Value::Object(map) => Ok(map),
        other => bail!(
            "{}: expected a JSON object of datasets, found {}",
            path.display(),
            json_type(&other)
        ),
    }
}

/// Every entry of the registry in DIR, each read and checked on its own:
/// a bad entry is listed with its error rather than hiding the others.
pub fn list(dir: &Path, modelscope_first: bool) -> Result<Vec<(String, Result<RegistryEntry>)>> {
    let map = read_registry(dir)?;
    Ok(map
        .iter()
        .map(|(name, raw)| (name.clone(), entry_of(dir, name, raw, modelscope_first)))
        .collect())
}

/// Entry `name` of the registry in `dir`.
pub fn entry(dir: &Path, name: &str, modelscope_first: bool) -> Result<RegistryEntry> {
    let map = read_registry(dir)?;
    let Some(raw) = map.get(name) else {
        let hint = closest(name, map.keys().map(String::as_str))
            .map(|c| format!("; did you mean `{c}`?"))
            .unwrap_or_default();
        bail!(
            "{}: no dataset named `{name}`{hint} (`tuner data list-registry {}` lists them)",
            dir.join(REGISTRY_FILE).display(),
            dir.display()
        );
    };
    entry_of(dir, name, raw, modelscope_first)
}

/// The keys of an entry, as LLaMA-Factory's `DatasetAttr` reads them.
const ENTRY_KEYS: &[&str] = &[
    "file_name",
    "hf_hub_url",
    "ms_hub_url",
    "om_hub_url",
    "script_url",
    "cloud_file_name",
    "formatting",
    "ranking",
    "subset",
    "split",
    "folder",
    "num_samples",
    "columns",
    "tags",
];
/// LLaMA-Factory's `columns` keys.
const COLUMN_KEYS: &[&str] = &[
    "prompt", "query", "response", "history", "messages", "system", "tools", "images", "videos",
    "audios", "chosen", "rejected", "kto_tag",
];
/// LLaMA-Factory's `tags` keys; tuner's ShareGPT layout has the same names.
const TAG_KEYS: &[&str] = &[
    "role_tag",
    "content_tag",
    "user_tag",
    "assistant_tag",
    "observation_tag",
    "function_tag",
    "system_tag",
];

fn json_type(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// One entry checked and turned into tuner's terms; errors name the entry
/// and the key.
fn entry_of(dir: &Path, name: &str, raw: &Value, modelscope_first: bool) -> Result<RegistryEntry> {
    let at = |key: &str| format!("{}: {name}.{key}", dir.join(REGISTRY_FILE).display());
    let Value::Object(obj) = raw else {
        bail!(
            "{}: {name}: expected an object, found {}",
            dir.join(REGISTRY_FILE).display(),
            json_type(raw)
        );
    };
    for key in obj.keys() {
        if !ENTRY_KEYS.contains(&key.as_str()) {
            let hint = closest(key, ENTRY_KEYS.iter().copied())
                .map(|c| format!("; did you mean `{c}`?"))
                .unwrap_or_default();
            bail!("{}: unknown key{hint}", at(key));
        }
    }
    let text = |key: &str| -> Result<Option<String>> {
        match obj.get(key) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.clone())),
            Some(other) => bail!("{}: expected a string, found {}", at(key), json_type(other)),
        }
    };
    for key in [
        "om_hub_url",
        "script_url",
        "cloud_file_name",
        "folder",
        "subset",
    ] {
        if text(key)?.is_some() {
            bail!(
                "{}: not supported yet (tuner reads `file_name`, `hf_hub_url` and `ms_hub_url`)",
                at(key)
            );
        }
    }
    if let Some(split) = text("split")?
        && split != "train"
    {
        bail!(
            "{}: split `{split}` is not supported yet; tuner reads the training split",
            at("split")
        );
    }
    let source = if let Some(file) = text("file_name")? {
        let path = crate::paths::contained_as("file_name", dir, &file)
            .map_err(|e| anyhow::anyhow!("{}: {e}", at("file_name")))?;
        if !path.exists() {
            bail!("{}: {} does not exist", at("file_name"), path.display());
        }
        EntrySource::File { path }
    } else {
        let (ms, hf) = (text("ms_hub_url")?, text("hf_hub_url")?);
        match (ms, hf) {
            (Some(repo), Some(_)) if modelscope_first => EntrySource::Hub {
                repo,
                hub: "modelscope".into(),
            },
            (_, Some(repo)) => EntrySource::Hub {
                repo,
                hub: "huggingface".into(),
            },
            (Some(repo), None) => EntrySource::Hub {
                repo,
                hub: "modelscope".into(),
            },
            (None, None) => bail!(
                "{}: {name}: no `file_name`, `hf_hub_url` or `ms_hub_url`",
                dir.join(REGISTRY_FILE).display()
            ),
        }
    };
    let formatting = text("formatting")?.unwrap_or_else(|| "alpaca".into());
    if !["alpaca", "sharegpt", "openai"].contains(&formatting.as_str()) {
        bail!(
            "{}: `{formatting}` is not one of alpaca, sharegpt, openai",
            at("formatting")
        );
    }
    let ranking = match obj.get("ranking") {
        None | Some(Value::Null) => false,
        Some(Value::Bool(b)) => *b,
        Some(other) => bail!(
            "{}: expected true or false, found {}",
            at("ranking"),
            json_type(other)
        ),
    };
    let num_samples = match obj.get("num_samples") {
        None | Some(Value::Null) => None,
        Some(v) => match v.as_u64() {
            Some(n) if n > 0 => Some(n as usize),
            _ => bail!("{}: expected a whole number above 0", at("num_samples")),
        },
    };
    let columns = string_table(obj, "columns", COLUMN_KEYS, &at)?;
    let tags = string_table(obj, "tags", TAG_KEYS, &at)?;
    for media in ["images", "videos", "audios"] {
        if columns.contains_key(media) {
            bail!(
                "{}: {media} are not supported yet (tuner trains text models); remove the column to train on the text",
                at(&format!("columns.{media}"))
            );
        }
    }
    let (layout, mapping) = layout_of(&formatting, ranking, &columns);
    let mut mapping: Vec<(String, String)> = mapping;
    mapping.extend(tags);
    Ok(RegistryEntry {
        name: name.to_string(),
        source,
        formatting,
        layout: layout.to_string(),
        columns: mapping,
        num_samples,
    })
}

/// A `columns` or `tags` table: names to strings, keys from `known`.
fn string_table(
    obj: &Map<String, Value>,
    key: &str,
    known: &[&str],
    at: &dyn Fn(&str) -> String,
) -> Result<BTreeMap<String, String>> {
    let table = match obj.get(key) {
        None | Some(Value::Null) => return Ok(BTreeMap::new()),
        Some(Value::Object(t)) => t,
        Some(other) => bail!(
            "{}: expected an object, found {}",
            at(key),
            json_type(other)
        ),
    };
    let mut out = BTreeMap::new();
    for (k, v) in table {
        let field = format!("{key}.{k}");
        if !known.contains(&k.as_str()) {
            let hint = closest(k, known.iter().copied())
                .map(|c| format!("; did you mean `{c}`?"))
                .unwrap_or_default();
            bail!("{}: unknown key{hint}", at(&field));
        }
        match v {
            Value::String(s) => {
                out.insert(k.clone(), s.clone());
            }
            other => bail!(
                "{}: expected a string, found {}",
                at(&field),
                json_type(other)
            ),
        }
    }
    Ok(out)
}

/// The tuner layout and column mapping for a LLaMA-Factory entry. Columns
/// the entry does not name keep LLaMA-Factory's defaults, which are
/// tuner's own field names except for Alpaca's (`prompt` → `instruction`,
/// `query` → `input`, `response` → `output`) and ShareGPT's `messages`
/// (`conversations`).
fn layout_of(
    formatting: &str,
    ranking: bool,
    columns: &BTreeMap<String, String>,
) -> (&'static str, Vec<(String, String)>) {
    let mut mapping = Vec::new();
    let mut map = |lf: &str, ours: &str| {
        if let Some(file) = columns.get(lf) {
            mapping.push((ours.to_string(), file.clone()));
        }
    };
    let only_prompt = columns.keys().all(|k| k == "prompt") && columns.contains_key("prompt");
    if formatting == "alpaca" && only_prompt && !ranking {
        // A pre-training set: the prompt column is the document.
        map("prompt", "text");
        return ("text", mapping);
    }
    match formatting {
        "alpaca" => {
            map("prompt", "instruction");
            map("query", "input");
            map("response", "output");
            map("history", "history");
        }
        "sharegpt" => {
            // LLaMA-Factory's default column is `conversations`, tuner's too.
            map("messages", "conversations");
        }
        _ => map("messages", "messages"),
    }
    map("system", "system");
    map("tools", "tools");
    map("chosen", "chosen");
    map("rejected", "rejected");
    map("kto_tag", "label");
    let layout = if ranking {
        "preference"
    } else if columns.contains_key("kto_tag") {
        "unpaired"
    } else {
        match formatting {
            "alpaca" => "alpaca",
            "sharegpt" => "sharegpt",
            _ => "openai",
        }
    };
    (layout, mapping)
}

impl RegistryEntry {
    /// `base` with this entry's layout and column mapping.
    pub fn load_options(&self, base: &LoadOptions) -> LoadOptions {
        let mut options = base.clone();
        options.layout = Some(self.layout.clone());
        options.columns = self.columns.clone();
        // LLaMA-Factory reads a `.txt` file with `datasets`' text loader: one
        // record per line. A job's own `text_split` still wins.
        if !options.format_defaults.iter().any(|(k, _)| k == "split") {
            options
                .format_defaults
                .push(("split".to_string(), "line".to_string()));
        }
        options
    }

    /// One line for `tuner data list-registry`: where the records are.
    pub fn source_text(&self) -> String {
        match &self.source {
            EntrySource::File { path } => path.display().to_string(),
            EntrySource::Hub { repo, hub } => format!("{hub}:{repo}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn registry(json: Value) -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(REGISTRY_FILE), json.to_string()).unwrap();
        std::fs::write(dir.path().join("a.json"), "[]").unwrap();
        dir
    }

    #[test]
    fn entries_become_layouts_and_column_mappings() {
        let dir = registry(serde_json::json!({
            "alpaca": {"file_name": "a.json", "columns": {"prompt": "q", "response": "a", "system": "sys"}},
            "chat": {"file_name": "a.json", "formatting": "sharegpt", "columns": {"messages": "messages"},
                     "tags": {"role_tag": "role", "content_tag": "content", "user_tag": "user", "assistant_tag": "assistant"}},
            "dpo": {"file_name": "a.json", "ranking": true, "formatting": "sharegpt",
                    "columns": {"messages": "conversations", "chosen": "chosen", "rejected": "rejected"}},
            "kto": {"file_name": "a.json", "formatting": "sharegpt",
                    "columns": {"messages": "messages", "kto_tag": "label"}},
            "wiki": {"file_name": "a.json", "columns": {"prompt": "text"}},
            "hub": {"hf_hub_url": "llamafactory/alpaca_en", "ms_hub_url": "llamafactory/alpaca_en_ms", "num_samples": 100}
        }));
        let e = entry(dir.path(), "alpaca", true).unwrap();
        assert_eq!(e.layout, "alpaca");
        assert_eq!(
            e.columns,
            [("instruction", "q"), ("output", "a"), ("system", "sys")]
                .map(|(a, b)| (a.to_string(), b.to_string()))
        );
        let e = entry(dir.path(), "chat", true).unwrap();
        assert_eq!(e.layout, "sharegpt");
        assert!(
            e.columns
                .contains(&("conversations".into(), "messages".into()))
        );
        assert!(e.columns.contains(&("role_tag".into(), "role".into())));
        assert_eq!(entry(dir.path(), "dpo", true).unwrap().layout, "preference");
        let kto = entry(dir.path(), "kto", true).unwrap();
        assert_eq!(kto.layout, "unpaired");
        assert!(kto.columns.contains(&("label".into(), "label".into())));
        let wiki = entry(dir.path(), "wiki", true).unwrap();
        assert_eq!(
            (wiki.layout.as_str(), wiki.columns[0].0.as_str()),
            ("text", "text")
        );
        let hub = entry(dir.path(), "hub", true).unwrap();
        assert_eq!(hub.num_samples, Some(100));
        assert_eq!(
            hub.source,
            EntrySource::Hub {
                repo: "llamafactory/alpaca_en_ms".into(),
                hub: "modelscope".into()
            }
        );
        let hub = entry(dir.path(), "hub", false).unwrap();
        assert_eq!(hub.source_text(), "huggingface:llamafactory/alpaca_en");
    }

    #[test]
    fn what_tuner_cannot_honour_is_refused_by_name() {
        let dir = registry(serde_json::json!({
            "mllm": {"file_name": "a.json", "formatting": "sharegpt", "columns": {"messages": "m", "images": "images"}},
            "typo": {"file_nmae": "a.json"},
            "escape": {"file_name": "../outside.json"},
            "absent": {"file_name": "missing.json"},
            "split": {"hf_hub_url": "a/b", "split": "test"},
            "nothing": {"formatting": "alpaca"},
            "format": {"file_name": "a.json", "formatting": "csv"}
        }));
        let err = |name: &str| format!("{:#}", entry(dir.path(), name, true).unwrap_err());
        assert!(
            err("mllm").contains("mllm.columns.images: images are not supported yet"),
            "{}",
            err("mllm")
        );
        assert!(
            err("typo").contains("typo.file_nmae: unknown key; did you mean `file_name`?"),
            "{}",
            err("typo")
        );
        assert!(
            err("escape").contains("escape.file_name"),
            "{}",
            err("escape")
        );
        assert!(
            err("absent").contains("does not exist"),
            "{}",
            err("absent")
        );
        assert!(
            err("split").contains("split `test` is not supported yet"),
            "{}",
            err("split")
        );
        assert!(
            err("nothing").contains("no `file_name`"),
            "{}",
            err("nothing")
        );
        assert!(
            err("format").contains("`csv` is not one of"),
            "{}",
            err("format")
        );
        let missing = format!("{:#}", entry(dir.path(), "mlm", true).unwrap_err());
        assert!(
            missing.contains("no dataset named `mlm`; did you mean `mllm`?"),
            "{missing}"
        );
        // Listing shows every entry, each with its own result.
        let all = list(dir.path(), true).unwrap();
        assert_eq!(all.len(), 7);
        assert!(all.iter().all(|(_, r)| r.is_err()));
    }

    #[test]
    fn a_spec_names_a_registry_only_where_one_exists() {
        let dir = registry(serde_json::json!({}));
        let text = format!("{}:alpaca", dir.path().display());
        let spec = RegistrySpec::parse(&text).unwrap();
        assert_eq!(
            (spec.dir.as_path(), spec.name.as_str()),
            (dir.path(), "alpaca")
        );
        assert!(RegistrySpec::parse("org/name").is_none());
        assert!(RegistrySpec::parse("/nonexistent:alpaca").is_none());
        assert!(RegistrySpec::parse(&format!("{}:", dir.path().display())).is_none());
    }
}

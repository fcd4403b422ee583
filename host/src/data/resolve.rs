//! From what a user typed (`train.jsonl`, `alpaca_zh#500`,
//! `AI-ModelScope/alpaca-gpt4-data-zh#1000`) to samples.
//!
//! Shared by `tuner data`, training jobs and the API, so a dataset spec means
//! the same thing everywhere: an existing file wins, then an entry of a
//! LLaMA-Factory registry (`DIR:NAME`, where `DIR/dataset_info.json`
//! exists), then a stored dataset of that name, then a hub dataset
//! (`org/name`) fetched once into the cache.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context as _, Result, bail};

use super::load::{self, LoadOptions};
use super::registry::{self, EntrySource, RegistryEntry, RegistrySpec};
use super::spec::{self, Spec};
use super::store::{Datasets, StoreError};
use crate::hub::Hub;
use crate::plugins::PluginHost;
use crate::sample::Sample;
use crate::store::Store;

/// Resolves dataset specs against one plugin runtime, store, data folder
/// and hub (the service layer, [`crate::app::App`], owns one).
pub struct DataResolver {
    host: Arc<PluginHost>,
    store: Arc<Store>,
    data_dir: PathBuf,
    hub: Arc<Hub>,
}

impl DataResolver {
    pub fn new(host: Arc<PluginHost>, store: Arc<Store>, data_dir: PathBuf, hub: Arc<Hub>) -> Self {
        Self {
            host,
            store,
            data_dir,
            hub,
        }
    }

    /// The stored datasets this resolver reads.
    pub fn datasets(&self) -> Datasets<'_> {
        Datasets::new(&self.data_dir, &self.store)
    }

    /// The samples one spec names, `#N` sampled with `seed`.
    pub fn resolve(&self, text: &str, options: &LoadOptions, seed: u64) -> Result<Vec<Sample>> {
        let spec: Spec = if Path::new(text).exists() {
            Spec {
                source: text.to_string(),
                count: None,
            }
        } else {
            text.parse()?
        };
        let path = Path::new(&spec.source);
        let mut count = spec.count;
        let all = if path.exists() {
            self.load_files(&[path.to_path_buf()], options)?
        } else if let Some(entry) = RegistrySpec::parse(&spec.source) {
            let (samples, num_samples) = self.load_registry_entry(&entry, options)?;
            count = count.or(num_samples);
            samples
        } else {
            match self.datasets().samples(&spec.source, None) {
                Ok(all) => all,
                Err(StoreError::NotFound(_) | StoreError::InvalidName(_))
                    if looks_like_hub_repo(&spec.source) =>
                {
                    self.load_hub_dataset(&spec.source, options)?
                }
                Err(StoreError::NotFound(_) | StoreError::InvalidName(_)) => {
                    if let Some((dir, _)) = spec.source.rsplit_once(':')
                        && Path::new(dir).is_dir()
                    {
                        bail!(
                            "`{}`: {dir} has no {} (a LLaMA-Factory registry spec is DIR:NAME)",
                            spec.source,
                            registry::REGISTRY_FILE
                        );
                    }
                    bail!(
                        "`{}` is neither a file, a LLaMA-Factory registry entry (`DIR:NAME`), a \
                         stored dataset (see `tuner data list`) nor a hub dataset (`org/name`)",
                        spec.source
                    )
                }
                Err(e) => return Err(e.into()),
            }
        };
        Ok(spec::take(&all, count, seed))
    }

    /// The one local file a spec names, with the options to read it: the
    /// file itself, or a LLaMA-Factory registry entry (`DIR:NAME`) whose
    /// `file_name` is a file (read with the entry's layout and columns).
    /// For `tuner data inspect/validate`, which report on one file.
    pub fn single_file(&self, text: &str, options: &LoadOptions) -> Result<(PathBuf, LoadOptions)> {
        let path = Path::new(text);
        if path.is_file() {
            return Ok((path.to_path_buf(), options.clone()));
        }
        if let Some(spec) = RegistrySpec::parse(text) {
            let entry = registry::entry(&spec.dir, &spec.name, self.hub.modelscope_first())?;
            return match &entry.source {
                EntrySource::File { path } if path.is_file() => {
                    Ok((path.clone(), entry.load_options(options)))
                }
                EntrySource::File { path } => bail!(
                    "`{text}` is the folder {}: inspect or validate its files one by one, or \
                     see the whole entry with `tuner data stats {text}`",
                    path.display()
                ),
                EntrySource::Hub { repo, .. } => bail!(
                    "`{text}` is the hub dataset {repo}: see it with `tuner data stats {text}` \
                     or `tuner data convert {text} -o FILE`"
                ),
            };
        }
        bail!(
            "`{text}`: no such file (inspect and validate read a file, or a LLaMA-Factory \
             registry entry `DIR:NAME` whose file_name is one)"
        )
    }

    /// The entries of the LLaMA-Factory registry in `dir`, each read and
    /// checked on its own.
    pub fn registry(&self, dir: &Path) -> Result<Vec<(String, Result<RegistryEntry>)>> {
        registry::list(dir, self.hub.modelscope_first())
    }

    /// The samples of every file, in order, each labelled with its path.
    fn load_files(&self, files: &[PathBuf], options: &LoadOptions) -> Result<Vec<Sample>> {
        let mut all = Vec::new();
        for file in files {
            let label = file.display().to_string();
            load::load(&self.host, file, &label, options, |s| {
                all.push(s);
                Ok(())
            })?;
        }
        Ok(all)
    }

    /// A LLaMA-Factory registry entry's samples (its file, every data file
    /// of its folder, or its hub dataset), read with the entry's layout and
    /// columns; and its `num_samples`.
    fn load_registry_entry(
        &self,
        spec: &RegistrySpec,
        options: &LoadOptions,
    ) -> Result<(Vec<Sample>, Option<usize>)> {
        let entry = registry::entry(&spec.dir, &spec.name, self.hub.modelscope_first())?;
        let options = entry.load_options(options);
        let samples = match &entry.source {
            EntrySource::File { path } if path.is_dir() => {
                let files = data_files(path)?;
                if files.is_empty() {
                    bail!(
                        "{}:{}: {} holds no data file tuner reads (.jsonl, .json, .csv, .tsv, .txt)",
                        spec.dir.display(),
                        spec.name,
                        path.display()
                    );
                }
                self.load_files(&files, &options)?
            }
            EntrySource::File { path } => self.load_files(std::slice::from_ref(path), &options)?,
            EntrySource::Hub { repo, .. } => self.load_hub_dataset(repo, &options)?,
        };
        Ok((samples, entry.num_samples))
    }

    /// Several specs mixed into one set (each sampled with its own seed).
    pub fn resolve_all(
        &self,
        texts: &[String],
        options: &LoadOptions,
        seed: u64,
    ) -> Result<Vec<Sample>> {
        let mut parts = Vec::new();
        for (i, d) in texts.iter().enumerate() {
            parts.push(self.resolve(d, options, seed.wrapping_add(i as u64))?);
        }
        Ok(if parts.len() == 1 {
            parts.pop().unwrap_or_default()
        } else {
            spec::mix(parts, seed)
        })
    }

    /// Fetches a hub dataset into the model cache (nothing is downloaded when
    /// it is already complete) and loads its data files: every `.jsonl`,
    /// `.json`, `.csv`, `.tsv`, `.txt` and `.parquet` in the snapshot except
    /// metadata (`dataset_info*.json`, dot-files, READMEs), only the `train`
    /// split's when the files are named by split.
    fn load_hub_dataset(&self, repo: &str, options: &LoadOptions) -> Result<Vec<Sample>> {
        use crate::hub::pull::HubDatasetSpec;
        let spec = HubDatasetSpec::parse(repo)?;
        let progress: crate::hub::Progress = Arc::new(crate::hub::progress::Silent);
        tracing::info!("fetching hub dataset {repo} (cached after the first time)");
        let report = crate::blocking::block_on(self.hub.fetch_dataset(&spec, false, &progress))
            .context("starting the async runtime")?
            .with_context(|| format!("fetching hub dataset {repo}"))?;
        let files = train_split(&report.path, data_files(&report.path)?);
        if files.is_empty() {
            bail!(
                "hub dataset {repo} ({}) has no data file tuner reads (.jsonl, .json, .csv, .tsv, \
                 .txt, .parquet)",
                report.path.display()
            );
        }
        self.load_files(&files, options)
    }
}

/// `org/name`, as ms-swift users name hub datasets (`AI-ModelScope/alpaca-gpt4-data-zh`).
pub fn looks_like_hub_repo(text: &str) -> bool {
    let mut parts = text.split('/');
    matches!((parts.next(), parts.next(), parts.next()), (Some(org), Some(name), None)
        if !org.is_empty() && !name.is_empty() && !org.starts_with('.'))
}

/// The split names the hub's file layouts use (`train.jsonl`,
/// `data/train-00000-of-00001.parquet`, `test/…`).
const SPLITS: [&str; 6] = ["train", "test", "validation", "valid", "dev", "eval"];

/// The split a file belongs to by its path below `root`: the first folder
/// or file name that is a split name, or starts with one followed by `-`,
/// `_` or `.`.
fn split_of(root: &Path, file: &Path) -> Option<&'static str> {
    let rel = file.strip_prefix(root).unwrap_or(file);
    rel.components().find_map(|c| {
        let name = c.as_os_str().to_string_lossy().to_lowercase();
        SPLITS.into_iter().find(|split| {
            name.strip_prefix(split)
                .is_some_and(|rest| rest.is_empty() || rest.starts_with(['-', '_', '.']))
        })
    })
}

/// The training files of a snapshot: those of the `train` split when its
/// files are named by split (a `test` split is never trained on), else all.
fn train_split(root: &Path, files: Vec<PathBuf>) -> Vec<PathBuf> {
    if files.iter().any(|f| split_of(root, f) == Some("train")) {
        files
            .into_iter()
            .filter(|f| split_of(root, f) == Some("train"))
            .collect()
    } else {
        files
    }
}

/// The data files of a downloaded dataset snapshot, sorted.
fn data_files(root: &Path) -> Result<Vec<PathBuf>> {
    let mut files = Vec::new();
    let mut pending = vec![root.to_path_buf()];
    while let Some(dir) = pending.pop() {
        for entry in std::fs::read_dir(&dir)?.flatten() {
            let path = entry.path();
            let name = entry.file_name().to_string_lossy().to_lowercase();
            if name.starts_with('.') {
                continue;
            }
            if path.is_dir() {
                pending.push(path);
            } else if ["jsonl", "json", "csv", "tsv", "txt", "parquet"]
                .iter()
                .any(|ext| name.ends_with(&format!(".{ext}")))
                && !name.starts_with("dataset_info")
                && !name.starts_with("readme")
            {
                files.push(path);
            }
        }
    }
    files.sort();
    Ok(files)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_train_split_is_trained_when_files_are_named_by_split() {
        let root = Path::new("/snap");
        let files = |names: &[&str]| names.iter().map(|n| root.join(n)).collect::<Vec<_>>();
        assert_eq!(
            train_split(
                root,
                files(&[
                    "data/test-00000-of-00001.parquet",
                    "data/train-00000-of-00002.parquet",
                    "data/train-00001-of-00002.parquet",
                    "data/validation-00000-of-00001.parquet",
                ])
            ),
            files(&[
                "data/train-00000-of-00002.parquet",
                "data/train-00001-of-00002.parquet"
            ])
        );
        assert_eq!(
            train_split(root, files(&["train.jsonl", "test.jsonl", "dev/a.jsonl"])),
            files(&["train.jsonl"])
        );
        // No split names (or no train split): every file.
        let plain = files(&["alpaca_zh.json", "extra.jsonl", "trainer_notes.txt"]);
        assert_eq!(train_split(root, plain.clone()), plain);
        assert_eq!(split_of(root, &root.join("trainer_notes.txt")), None);
    }
}

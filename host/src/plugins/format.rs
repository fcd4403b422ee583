//! The handle of a format plugin: detection, settings and streaming parses.
//!
//! [`FormatPlugin`] is what [`super::PluginHost::format`] hands out, so only
//! a format plugin can be asked to parse. Its answers are host types
//! ([`Record`], [`FatalError`], [`OptionsError`]): the generated bindings of
//! every `tuner:plugin` version are converted here and never leave
//! `plugins/`.

use std::ops::Deref;
use std::sync::Arc;
use std::time::Duration;

use serde_json::{Map, Value};

use super::bindings::v0_1_0::{self as old, Convert};
use super::bindings::v0_2_0 as new;
use super::imports::input::InputFile;
use super::limits::ticks;
use super::plugin::FormatBindings;
use super::settings::{self, SettingValue, Values};
use super::{CallError, Plugin, WitVersion};
use crate::sample::Sample;

use new::format::exports::tuner::plugin::format_plugin as wit;

/// A loaded format plugin.
#[derive(Clone)]
pub struct FormatPlugin(Arc<Plugin>);

/// Where in the input a record was found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Location {
    /// 1-based line on which the record starts.
    pub line: u64,
    /// 0-based index of the record in the file.
    pub index: u64,
}

/// What one record of a file turned into.
#[derive(Debug, Clone, PartialEq)]
pub enum Record {
    /// A sample, and the record layout that was recognised or applied.
    Sample {
        location: Location,
        sample: Sample,
        layout: String,
        /// The record's fields the sample was not made from.
        ignored_fields: Vec<String>,
    },
    /// A record that could not become a sample; the load goes on.
    Rejected {
        location: Location,
        /// The field at fault, e.g. `output` or `messages[2].role`.
        field: Option<String>,
        message: String,
    },
}

/// What a format plugin reads (`input-kind`): decoded text, or the file's
/// bytes through a byte parser.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InputKind {
    Text,
    Bytes,
}

/// The error that ended a parse.
#[derive(Debug, Clone, PartialEq)]
pub struct FatalError {
    /// Where, if the plugin knows.
    pub location: Option<Location>,
    pub message: String,
}

/// The plugin's refusal of parse options (`check-options`).
#[derive(Debug, Clone, PartialEq)]
pub struct OptionsError {
    /// The option at fault, if the plugin names one.
    pub field: Option<String>,
    pub message: String,
}

/// How to parse a file, as the host's callers give it; converted to each
/// `tuner:plugin` version's `parse-options`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct HostParseOptions {
    /// Name of the file, for messages and extension-based choices.
    pub file_name: String,
    /// Force a record layout instead of detecting it.
    pub layout: Option<String>,
    /// Column mapping: (layout field, field in the file).
    pub columns: Vec<(String, String)>,
    /// The format's checked settings ([`FormatPlugin::format_values`]).
    pub settings: Values,
}

impl HostParseOptions {
    fn to_v0_2_0(&self) -> wit::ParseOptions {
        wit::ParseOptions {
            file_name: self.file_name.clone(),
            layout: self.layout.clone(),
            columns: self.columns.clone(),
            settings: new::wit_values(&self.settings),
        }
    }

    /// 0.1.0 formats read settings as text.
    fn to_v0_1_0(&self) -> old::format::exports::tuner::plugin::format_plugin::ParseOptions {
        old::format::exports::tuner::plugin::format_plugin::ParseOptions {
            file_name: self.file_name.clone(),
            layout: self.layout.clone(),
            columns: self.columns.clone(),
            settings: self
                .settings
                .iter()
                .map(|(k, v)| (k.clone(), old::setting_text(v)))
                .collect(),
        }
    }
}

impl From<wit::Location> for Location {
    fn from(l: wit::Location) -> Self {
        Location {
            line: l.line,
            index: l.index,
        }
    }
}

impl From<wit::RecordOutcome> for Record {
    fn from(outcome: wit::RecordOutcome) -> Self {
        match outcome {
            wit::RecordOutcome::Sample(s) => Record::Sample {
                location: s.location.into(),
                sample: s.sample.into(),
                layout: s.layout,
                ignored_fields: s.ignored_fields,
            },
            wit::RecordOutcome::Rejected(r) => Record::Rejected {
                location: r.location.into(),
                field: r.field,
                message: r.message,
            },
        }
    }
}

impl From<wit::FatalError> for FatalError {
    fn from(e: wit::FatalError) -> Self {
        FatalError {
            location: e.location.map(Location::from),
            message: e.message,
        }
    }
}

fn records(list: Vec<wit::RecordOutcome>) -> Vec<Record> {
    list.into_iter().map(Record::from).collect()
}

impl Deref for FormatPlugin {
    type Target = Plugin;
    fn deref(&self) -> &Plugin {
        &self.0
    }
}

impl FormatPlugin {
    /// Wraps a plugin already known to be a format ([`Plugin::as_format`]).
    pub(super) fn new(plugin: Arc<Plugin>) -> Self {
        Self(plugin)
    }

    /// The plugin behind the handle.
    pub fn plugin(&self) -> &Arc<Plugin> {
        &self.0
    }

    /// Whether the plugin takes settings outside its schema: a
    /// `tuner:plugin@0.1.0` format, which reads free-form text settings and
    /// declares none, accepts any key as text.
    pub fn settings_are_open(&self) -> bool {
        self.0.wit() == WitVersion::V0_1_0
    }

    /// Whether the plugin's schema has a setting named `key` (never, for an
    /// open schema: it declares none).
    pub fn declares_setting(&self, key: &str) -> Result<bool, CallError> {
        if self.settings_are_open() {
            return Ok(false);
        }
        Ok(self.0.settings()?.iter().any(|s| s.name == key))
    }

    /// The user's text settings (`--set key=value`) checked against
    /// [`Plugin::settings`], defaults filled in. The inner error names the
    /// plugin and the first bad key, with a suggestion for a near-miss key.
    /// An open schema ([`FormatPlugin::settings_are_open`]) takes every key
    /// as text.
    pub fn format_values(
        &self,
        given: &[(String, String)],
    ) -> Result<Result<Values, String>, CallError> {
        if self.settings_are_open() {
            return Ok(Ok(given
                .iter()
                .map(|(k, v)| (k.clone(), SettingValue::Text(v.clone())))
                .collect()));
        }
        let schema = self.0.settings()?;
        let name = self.name();
        for (key, _) in given {
            if !schema.iter().any(|s| s.name == *key) {
                let hint = match settings::closest(key, schema.iter().map(|s| s.name.as_str())) {
                    Some(near) => format!("; did you mean `{near}`?"),
                    None if schema.is_empty() => "; it takes no settings".into(),
                    None => {
                        let names: Vec<&str> = schema.iter().map(|s| s.name.as_str()).collect();
                        format!(" (its settings: {})", names.join(", "))
                    }
                };
                return Ok(Err(format!(
                    "format plugin `{name}` has no setting `{key}`{hint}"
                )));
            }
        }
        let map: Map<String, Value> = given
            .iter()
            .map(|(k, v)| (k.clone(), Value::String(v.clone())))
            .collect();
        Ok(settings::check(&schema, &map).map_err(|problems| {
            let p = &problems[0];
            format!("format plugin `{name}`, setting `{}`: {}", p.key, p.message)
        }))
    }

    /// Confidence that a file is in this format, under the short detection
    /// deadline. A plugin whose `detect` runs out of time, crashes or hits
    /// its memory cap is degraded: for the cool-down, `detect` answers
    /// [`CallError::Degraded`] without calling it.
    pub fn detect(&self, file_name: &str, head: &str) -> Result<f32, CallError> {
        if let Some(d) = self.degraded() {
            return Err(CallError::Degraded {
                plugin: self.name().to_string(),
                call: "detect".into(),
                reason: d.reason,
                retry_in: Duration::from_secs(d.retry_in_secs),
            });
        }
        let result = self
            .0
            .call_format("detect", self.0.detect_timeout(), |store, b| match b {
                FormatBindings::V0_2(b) => b
                    .tuner_plugin_format_plugin()
                    .call_detect(store, file_name, head),
                FormatBindings::V0_1(b) => b
                    .tuner_plugin_format_plugin()
                    .call_detect(store, file_name, head),
            });
        if let Err(
            err @ (CallError::Timeout { .. }
            | CallError::Trap { .. }
            | CallError::MemoryLimit { .. }),
        ) = &result
        {
            self.0.degrade("detect", err);
        }
        result
    }

    /// Whether the plugin reads text or bytes (0.1.0 formats read text).
    /// Asked once per loaded plugin: the answer never changes.
    pub fn input_kind(&self) -> Result<InputKind, CallError> {
        if let Some(kind) = self.0.input_kind.get() {
            return Ok(*kind);
        }
        let kind = self
            .0
            .call_format("reads", self.0.detect_timeout(), |store, b| match b {
                FormatBindings::V0_2(b) => {
                    Ok(match b.tuner_plugin_format_plugin().call_reads(store)? {
                        wit::InputKind::Text => InputKind::Text,
                        wit::InputKind::Bytes => InputKind::Bytes,
                    })
                }
                FormatBindings::V0_1(_) => Ok(InputKind::Text),
            })?;
        Ok(*self.0.input_kind.get_or_init(|| kind))
    }

    /// The file extensions the plugin reads.
    pub fn extensions(&self) -> Result<Vec<String>, CallError> {
        self.0
            .call_format("extensions", self.0.detect_timeout(), |store, b| match b {
                FormatBindings::V0_2(b) => b.tuner_plugin_format_plugin().call_extensions(store),
                FormatBindings::V0_1(b) => b.tuner_plugin_format_plugin().call_extensions(store),
            })
    }

    /// Checks parse options without parsing (a bad column mapping, a
    /// combination of settings the schema cannot express). Call it before
    /// [`FormatPlugin::parse_stream`]; the inner error is the plugin's.
    pub fn check_options(
        &self,
        options: &HostParseOptions,
    ) -> Result<Result<(), OptionsError>, CallError> {
        let answer = self
            .0
            .call_format("check-options", self.0.timeout(), |store, b| match b {
                FormatBindings::V0_2(b) => b
                    .tuner_plugin_format_plugin()
                    .call_check_options(store, &options.to_v0_2_0()),
                FormatBindings::V0_1(b) => b
                    .tuner_plugin_format_plugin()
                    .call_check_options(store, &options.to_v0_1_0())
                    .map(|r| r.map_err(Convert::convert)),
            })?;
        Ok(answer.map_err(|e| OptionsError {
            field: e.field,
            message: e.message,
        }))
    }

    /// Parses `chunks` of text with `options`, returning every record, or
    /// the fatal error that ended the parse. Holds every record in memory:
    /// for files, use [`FormatPlugin::parse_stream`].
    pub fn parse<'a>(
        &self,
        options: &HostParseOptions,
        chunks: impl IntoIterator<Item = &'a str>,
    ) -> Result<Result<Vec<Record>, FatalError>, CallError> {
        let mut out = Vec::new();
        let result = self.parse_stream(options, chunks, |records| out.extend(records))?;
        Ok(result.map(|()| out))
    }

    /// Parses the bytes of `file` with a binary format's byte parser,
    /// handing each batch of records (a row group) to `on_records` as it
    /// comes. Each `next` call has its own deadline. The inner result is the
    /// fatal error that ended the parse, if any.
    pub fn parse_bytes(
        &self,
        options: &HostParseOptions,
        file: InputFile,
        mut on_records: impl FnMut(Vec<Record>),
    ) -> Result<Result<(), FatalError>, CallError> {
        let deadline = self.0.timeout();
        self.0.call_format("parse", deadline, |store, b| match b {
            FormatBindings::V0_2(b) => {
                let handle = store.data_mut().table.push(file)?;
                let guest = b.tuner_plugin_format_plugin().byte_parser();
                let parser = guest.call_constructor(&mut *store, &options.to_v0_2_0(), handle)?;
                let mut result = Ok(());
                loop {
                    store.set_epoch_deadline(ticks(deadline));
                    match guest.call_next(&mut *store, parser)? {
                        Ok(Some(list)) => on_records(records(list)),
                        Ok(None) => break,
                        Err(fatal) => {
                            result = Err(FatalError::from(fatal));
                            break;
                        }
                    }
                }
                parser.resource_drop(&mut *store)?;
                Ok(result)
            }
            FormatBindings::V0_1(_) => Ok(Err(FatalError {
                location: None,
                message: "a tuner:plugin@0.1.0 format reads text only".into(),
            })),
        })
    }

    /// Streams `chunks` of text through a parser, handing the records of
    /// each call to `on_records` as they come, so memory stays bounded by
    /// one chunk and its records. The inner result is the fatal error that
    /// ended the parse, if any. The options should have passed
    /// [`FormatPlugin::check_options`].
    pub fn parse_stream<C: AsRef<str>>(
        &self,
        options: &HostParseOptions,
        chunks: impl IntoIterator<Item = C>,
        mut on_records: impl FnMut(Vec<Record>),
    ) -> Result<Result<(), FatalError>, CallError> {
        let mut chunks = chunks.into_iter();
        let deadline = self.0.timeout();
        // One parse, for either version's generated types: `$convert` turns
        // the plugin's records and errors into the newest types.
        macro_rules! parse_with {
            ($store:expr, $exports:expr, $options:expr, $convert:expr) => {{
                let store = $store;
                let guest = $exports.parser();
                let parser = guest.call_constructor(&mut *store, $options)?;
                let mut result = Ok(());
                for chunk in chunks.by_ref() {
                    // A deadline per call into the plugin: a large file takes
                    // many `feed` calls, each bounded on its own.
                    store.set_epoch_deadline(ticks(deadline));
                    match guest.call_feed(&mut *store, parser, chunk.as_ref())? {
                        Ok(list) => on_records(records($convert(list))),
                        Err(fatal) => {
                            result = Err(FatalError::from($convert(fatal)));
                            break;
                        }
                    }
                }
                if result.is_ok() {
                    store.set_epoch_deadline(ticks(deadline));
                    match guest.call_finish(&mut *store, parser)? {
                        Ok(list) => on_records(records($convert(list))),
                        Err(fatal) => result = Err(FatalError::from($convert(fatal))),
                    }
                }
                parser.resource_drop(&mut *store)?;
                Ok(result)
            }};
        }
        self.0.call_format("parse", deadline, |store, b| match b {
            FormatBindings::V0_2(b) => parse_with!(
                store,
                b.tuner_plugin_format_plugin(),
                &options.to_v0_2_0(),
                std::convert::identity
            ),
            FormatBindings::V0_1(b) => parse_with!(
                store,
                b.tuner_plugin_format_plugin(),
                &options.to_v0_1_0(),
                Convert::convert
            ),
        })
    }
}

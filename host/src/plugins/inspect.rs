//! Validation of a `.wasm` file before it becomes a plugin: is it a
//! component, which world does it target, for which WIT version, does it
//! export everything that world requires, and does it import only what the
//! host offers.

use semver::Version;
use wasmtime::Engine;
use wasmtime::component::Component;
use wasmtime::component::types::ComponentItem;

use super::bindings::WitVersion;
use super::{Kind, LoadError};

/// The newest `tuner:plugin` version this host implements: what new plugins
/// are built for.
pub const HOST_WIT_VERSION: &str = "0.2.0";

/// Every `tuner:plugin` version this host loads, newest first. Plugins built
/// for an older one run through an adapter ([`super::bindings`]).
pub const SUPPORTED_WIT_VERSIONS: &[&str] = &["0.2.0", "0.1.0"];

/// What inspection found.
#[derive(Debug, Clone)]
pub struct Inspection {
    pub kind: Kind,
    /// The `tuner:plugin` version the component was built against.
    pub wit_version: Version,
    /// The supported version it runs as (bindings and linker).
    pub wit: WitVersion,
}

/// Functions each world's export interface must provide, as the component
/// model names them.
fn required_functions(kind: Kind, wit: WitVersion) -> &'static [&'static str] {
    match (kind, wit) {
        (Kind::Format, WitVersion::V0_1_0) => &[
            "info",
            "extensions",
            "detect",
            "check-options",
            "[constructor]parser",
            "[method]parser.feed",
            "[method]parser.finish",
        ],
        (Kind::Format, WitVersion::V0_2_0) => &[
            "info",
            "extensions",
            "detect",
            "settings",
            "check-options",
            "[constructor]parser",
            "[method]parser.feed",
            "[method]parser.finish",
        ],
        (Kind::Source, _) => &["info", "default-endpoint", "resolve"],
        (Kind::Method, WitVersion::V0_1_0) => &["info", "configure", "loss"],
        // Reward plugins exist since 0.2.0; a 0.1.0 package has no such export.
        (Kind::Reward, _) => &["info", "settings", "score"],
        (Kind::Method, WitVersion::V0_2_0) => &[
            "info",
            "settings",
            "configure",
            "[method]method.plan",
            "[method]method.loss",
        ],
    }
}

/// Interfaces the host offers to each kind.
fn offered_imports(kind: Kind) -> &'static [&'static str] {
    match kind {
        // `input` since 0.2.0 (binary formats read the file through it).
        Kind::Format => &["types", "log", "input"],
        Kind::Source => &["types", "log", "http"],
        Kind::Method => &["types", "log", "tensors", "model"],
        Kind::Reward => &["types", "log"],
    }
}

/// Rejects files that are not components at all, with a useful message.
pub fn precheck(bytes: &[u8]) -> Result<(), LoadError> {
    if wasmparser::Parser::is_component(bytes) {
        Ok(())
    } else if wasmparser::Parser::is_core_wasm(bytes) {
        Err(LoadError::CoreModule)
    } else {
        Err(LoadError::NotWasm)
    }
}

/// Splits `tuner:plugin/format-plugin@0.1.0` into (`format-plugin`, version).
fn tuner_interface(name: &str) -> Option<(&str, Option<&str>)> {
    let rest = name.strip_prefix("tuner:plugin/")?;
    Some(match rest.split_once('@') {
        Some((iface, ver)) => (iface, Some(ver)),
        None => (rest, None),
    })
}

/// Checks exports and imports of a compiled component.
pub fn inspect(engine: &Engine, component: &Component) -> Result<Inspection, LoadError> {
    let ty = component.component_type();

    // Exports: exactly one `tuner:plugin/<kind>-plugin@<version>`.
    let mut found: Vec<(Kind, Version, String)> = Vec::new();
    let mut other_exports = Vec::new();
    for (name, _) in ty.exports(engine) {
        let kind = tuner_interface(name).and_then(|(iface, ver)| {
            let kind = match iface {
                "format-plugin" => Kind::Format,
                "source-plugin" => Kind::Source,
                "method-plugin" => Kind::Method,
                "reward-plugin" => Kind::Reward,
                _ => return None,
            };
            Some((kind, ver))
        });
        match kind {
            Some((kind, ver)) => {
                let ver = ver
                    .ok_or_else(|| LoadError::Invalid(format!("export `{name}` has no version")))?;
                let ver = Version::parse(ver).map_err(|e| {
                    LoadError::Invalid(format!("export `{name}`: bad version: {e}"))
                })?;
                found.push((kind, ver, name.to_string()));
            }
            None => other_exports.push(name.to_string()),
        }
    }
    let (kind, version, export_name) = match found.len() {
        0 => {
            return Err(LoadError::WrongWorld {
                exports: if other_exports.is_empty() {
                    "nothing".into()
                } else {
                    other_exports.join(", ")
                },
            });
        }
        1 => found.remove(0),
        _ => {
            let names: Vec<_> = found.iter().map(|f| f.2.clone()).collect();
            return Err(LoadError::SeveralWorlds(names.join(", ")));
        }
    };
    let wit = check_version(&version)?;

    // Required functions of the exported interface.
    let export = ty
        .get_export(engine, &export_name)
        .expect("export listed above");
    let ComponentItem::ComponentInstance(instance) = export.ty else {
        return Err(LoadError::Invalid(format!(
            "`{export_name}` is exported, but not as an interface instance"
        )));
    };
    let present: Vec<&str> = instance.exports(engine).map(|(n, _)| n).collect();
    let missing: Vec<&str> = required_functions(kind, wit)
        .iter()
        .copied()
        .filter(|f| !present.contains(f))
        .collect();
    if !missing.is_empty() {
        return Err(LoadError::MissingExports {
            interface: export_name,
            missing: missing
                .iter()
                .map(|m| format!("`{m}`"))
                .collect::<Vec<_>>()
                .join(", "),
        });
    }

    // Imports: only the interfaces offered to this kind, of the version the
    // exports are for (one version's bindings serve the whole component).
    for (name, _) in ty.imports(engine) {
        match tuner_interface(name) {
            Some((iface, ver)) if offered_imports(kind).contains(&iface) => {
                if let Some(ver) = ver.and_then(|v| Version::parse(v).ok())
                    && check_version(&ver)? != wit
                {
                    return Err(LoadError::Invalid(format!(
                        "it exports `{export_name}` but imports `{name}`: the interfaces of \
                         one plugin must all be of one tuner:plugin version; rebuild it with \
                         a current tuner-sdk"
                    )));
                }
            }
            Some((iface, _)) => {
                return Err(LoadError::ForbiddenImport {
                    import: name.to_string(),
                    hint: format!(
                        " ({kind} plugins are offered {}; `{iface}` is not among them)",
                        offered_imports(kind).join(", ")
                    ),
                });
            }
            None => {
                let hint = if name.starts_with("wasi:") {
                    " (plugins get no WASI: no sockets, files or clocks; network access \
                     goes through the host's `http` interface. Build for \
                     wasm32-unknown-unknown with tuner-sdk)"
                        .to_string()
                } else {
                    String::new()
                };
                return Err(LoadError::ForbiddenImport {
                    import: name.to_string(),
                    hint,
                });
            }
        }
    }

    Ok(Inspection {
        kind,
        wit_version: version,
        wit,
    })
}

/// The supported version a component built for `found` runs as (same major
/// and, before 1.0, same minor version, not newer). Newer than the newest is
/// "upgrade tuner"; anything else unsupported is "rebuild the plugin".
fn check_version(found: &Version) -> Result<WitVersion, LoadError> {
    if let Some(wit) = WitVersion::for_component(found) {
        return Ok(wit);
    }
    if *found > WitVersion::NEWEST.semver() {
        Err(LoadError::FutureVersion {
            found: found.to_string(),
            supported: HOST_WIT_VERSION.to_string(),
        })
    } else {
        Err(LoadError::OldVersion {
            found: found.to_string(),
            supported: SUPPORTED_WIT_VERSIONS.join(" and "),
        })
    }
}

/// The `tuner-sdk-version` custom section the SDK stamps into the plugin's
/// core module, if present.
pub fn sdk_version(bytes: &[u8]) -> Option<String> {
    for payload in wasmparser::Parser::new(0).parse_all(bytes) {
        if let Ok(wasmparser::Payload::CustomSection(section)) = payload
            && section.name() == "tuner-sdk-version"
        {
            return String::from_utf8(section.data().to_vec()).ok();
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(s: &str) -> Version {
        Version::parse(s).unwrap()
    }

    #[test]
    fn versions_compare_like_cargo() {
        assert_eq!(check_version(&v("0.1.0")).unwrap(), WitVersion::V0_1_0);
        assert_eq!(check_version(&v("0.2.0")).unwrap(), WitVersion::V0_2_0);
        let future = check_version(&v("0.3.0")).unwrap_err();
        assert!(matches!(future, LoadError::FutureVersion { .. }));
        assert_eq!(
            future.to_string(),
            "built for tuner:plugin@0.3.0, newer than this tuner supports (tuner:plugin@0.2.0); \
             upgrade tuner to use it"
        );
        assert!(matches!(
            check_version(&v("0.2.1")),
            Err(LoadError::FutureVersion { .. })
        ));
        assert!(matches!(
            check_version(&v("1.0.0")),
            Err(LoadError::FutureVersion { .. })
        ));
        // A 0.1 newer than the 0.1.0 this host knows: not loadable either.
        let err = check_version(&v("0.1.1")).unwrap_err();
        assert_eq!(
            err.to_string(),
            "built for tuner:plugin@0.1.1, which this tuner does not support (it supports \
             tuner:plugin@0.2.0 and 0.1.0); rebuild it with a current tuner-sdk"
        );
        assert!(matches!(
            check_version(&v("0.0.9")),
            Err(LoadError::OldVersion { .. })
        ));
    }

    #[test]
    fn the_supported_list_matches_the_bindings() {
        let listed: Vec<&str> = WitVersion::ALL.iter().map(|w| w.as_str()).collect();
        assert_eq!(listed, SUPPORTED_WIT_VERSIONS);
        assert_eq!(WitVersion::NEWEST.as_str(), HOST_WIT_VERSION);
    }

    /// A component exporting one empty instance under `name`: enough for
    /// the export checks, without a toolchain to build a real plugin.
    fn empty_export(name: &str) -> Vec<u8> {
        let mut bytes = b"\0asm\x0d\0\x01\0".to_vec();
        // Instance section: one instance made of no exports.
        bytes.extend([5, 3, 1, 1, 0]);
        // Export section: that instance under `name`.
        let mut export = vec![1, 0, name.len() as u8];
        export.extend(name.as_bytes());
        export.extend([5, 0, 0]);
        bytes.extend([11, export.len() as u8]);
        bytes.extend(export);
        bytes
    }

    fn inspect_export(name: &str) -> Result<Inspection, LoadError> {
        let mut config = wasmtime::Config::new();
        config.wasm_component_model(true);
        let engine = Engine::new(&config).unwrap();
        let component = Component::new(&engine, empty_export(name)).unwrap();
        inspect(&engine, &component)
    }

    #[test]
    fn components_are_read_as_their_version() {
        let err = inspect_export("tuner:plugin/format-plugin@0.3.0").unwrap_err();
        assert_eq!(
            err.to_string(),
            "built for tuner:plugin@0.3.0, newer than this tuner supports (tuner:plugin@0.2.0); \
             upgrade tuner to use it"
        );
        // Each supported version is held to its own exports.
        let err = inspect_export("tuner:plugin/method-plugin@0.2.0").unwrap_err();
        assert_eq!(
            err.to_string(),
            "`tuner:plugin/method-plugin@0.2.0` is missing `info`, `settings`, `configure`, \
             `[method]method.plan`, `[method]method.loss`"
        );
        let err = inspect_export("tuner:plugin/method-plugin@0.1.0").unwrap_err();
        assert_eq!(
            err.to_string(),
            "`tuner:plugin/method-plugin@0.1.0` is missing `info`, `configure`, `loss`"
        );
        let err = inspect_export("tuner:plugin/format-plugin@0.1.0").unwrap_err();
        assert!(!err.to_string().contains("`settings`"), "{err}");
        let err = inspect_export("tuner:plugin/source-plugin@0.0.3").unwrap_err();
        assert!(matches!(err, LoadError::OldVersion { .. }), "{err}");
    }

    #[test]
    fn garbage_and_core_modules_are_told_apart() {
        assert!(matches!(precheck(b"hello"), Err(LoadError::NotWasm)));
        let core = b"\0asm\x01\0\0\0";
        assert!(matches!(precheck(core), Err(LoadError::CoreModule)));
    }
}

//! Validation of a `.wasm` file before it becomes a plugin: is it a
//! component, which world does it target, for which WIT version, does it
//! export everything that world requires, and does it import only what the
//! host offers.

use semver::Version;
use wasmtime::Engine;
use wasmtime::component::Component;
use wasmtime::component::types::ComponentItem;

use super::{Kind, LoadError};

/// The `tuner:plugin` version this host implements.
pub const HOST_WIT_VERSION: &str = "0.1.0";

/// What inspection found.
#[derive(Debug, Clone)]
pub struct Inspection {
    pub kind: Kind,
    /// The `tuner:plugin` version the component was built against.
    pub wit_version: Version,
}

/// Functions each world's export interface must provide, as the component
/// model names them.
fn required_functions(kind: Kind) -> &'static [&'static str] {
    match kind {
        Kind::Format => &[
            "info",
            "extensions",
            "detect",
            "check-options",
            "[constructor]parser",
            "[method]parser.feed",
            "[method]parser.finish",
        ],
        Kind::Source => &["info", "default-endpoint", "resolve"],
        Kind::Method => &["info", "configure", "loss"],
    }
}

/// Interfaces the host offers to each kind.
fn offered_imports(kind: Kind) -> &'static [&'static str] {
    match kind {
        Kind::Format => &["types", "log"],
        Kind::Source => &["types", "log", "http"],
        Kind::Method => &["types", "log", "tensors", "model"],
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
    let host_version = Version::parse(HOST_WIT_VERSION).expect("valid host version");

    // Exports: exactly one `tuner:plugin/<kind>-plugin@<version>`.
    let mut found: Vec<(Kind, Version, String)> = Vec::new();
    let mut other_exports = Vec::new();
    for (name, _) in ty.exports(engine) {
        let kind = tuner_interface(name).and_then(|(iface, ver)| {
            let kind = match iface {
                "format-plugin" => Kind::Format,
                "source-plugin" => Kind::Source,
                "method-plugin" => Kind::Method,
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
    check_version(&version, &host_version)?;

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
    let missing: Vec<&str> = required_functions(kind)
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

    // Imports: only the interfaces offered to this kind, at a compatible version.
    for (name, _) in ty.imports(engine) {
        match tuner_interface(name) {
            Some((iface, ver)) if offered_imports(kind).contains(&iface) => {
                if let Some(ver) = ver.and_then(|v| Version::parse(v).ok()) {
                    check_version(&ver, &host_version)?;
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
    })
}

/// Same major (and, before 1.0, same minor) version; newer is "upgrade
/// tuner", older is "rebuild the plugin".
fn check_version(found: &Version, host: &Version) -> Result<(), LoadError> {
    let compatible = found.major == host.major && (host.major > 0 || found.minor == host.minor);
    if compatible && found <= host {
        return Ok(());
    }
    if found > host {
        Err(LoadError::FutureVersion {
            found: found.to_string(),
            supported: host.to_string(),
        })
    } else {
        Err(LoadError::OldVersion {
            found: found.to_string(),
            supported: host.to_string(),
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

    #[test]
    fn versions_compare_like_cargo() {
        let host = Version::parse("0.1.0").unwrap();
        assert!(check_version(&Version::parse("0.1.0").unwrap(), &host).is_ok());
        assert!(matches!(
            check_version(&Version::parse("0.2.0").unwrap(), &host),
            Err(LoadError::FutureVersion { .. })
        ));
        assert!(matches!(
            check_version(&Version::parse("0.1.1").unwrap(), &host),
            Err(LoadError::FutureVersion { .. })
        ));
        assert!(matches!(
            check_version(&Version::parse("0.0.9").unwrap(), &host),
            Err(LoadError::OldVersion { .. })
        ));
    }

    #[test]
    fn garbage_and_core_modules_are_told_apart() {
        assert!(matches!(precheck(b"hello"), Err(LoadError::NotWasm)));
        let core = b"\0asm\x01\0\0\0";
        assert!(matches!(precheck(core), Err(LoadError::CoreModule)));
    }
}

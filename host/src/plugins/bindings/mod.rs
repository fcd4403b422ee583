//! Host-side bindings of every `tuner:plugin` version the host loads, one
//! module per version ([`v0_2_0`], [`v0_1_0`]), as Zed's extension host
//! keeps `since_v0_1_0`, `since_v0_2_0`, ...
//!
//! The host's own code is written against the newest version, re-exported
//! here as `format`, `source` and `method`. Older versions are adapters: their
//! import traits delegate to the newest implementations and their export
//! results are converted to the newest types ([`v0_1_0::Convert`]). A
//! plugin's version is read from its exports when it loads
//! ([`crate::plugins::inspect`]), and its instances are built with that
//! version's bindings and linker.

use semver::Version;

mod sample;
pub mod v0_1_0;
pub mod v0_2_0;

pub use v0_2_0::{format, method, reward, source};

pub use format::tuner::plugin::types::{PluginInfo, PluginKind};

/// A `tuner:plugin` version this host implements.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum WitVersion {
    V0_1_0,
    V0_2_0,
}

impl WitVersion {
    /// Every supported version, newest first.
    pub const ALL: [WitVersion; 2] = [WitVersion::V0_2_0, WitVersion::V0_1_0];
    /// The version new plugins are built for.
    pub const NEWEST: WitVersion = WitVersion::V0_2_0;

    pub fn as_str(self) -> &'static str {
        match self {
            WitVersion::V0_1_0 => "0.1.0",
            WitVersion::V0_2_0 => "0.2.0",
        }
    }

    pub fn semver(self) -> Version {
        Version::parse(self.as_str()).expect("a valid version")
    }

    /// The supported version a component built for `found` runs as: same
    /// major (and, before 1.0, same minor) version, not newer.
    pub fn for_component(found: &Version) -> Option<WitVersion> {
        Self::ALL.into_iter().find(|v| {
            let host = v.semver();
            found.major == host.major
                && (host.major > 0 || found.minor == host.minor)
                && found <= &host
        })
    }
}

impl std::fmt::Display for WitVersion {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

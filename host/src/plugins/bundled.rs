//! The plugins compiled into the `tuner` binary by `host/build.rs` from
//! `plugins/{formats,sources,methods,rewards}/*`.

/// One bundled plugin: its component bytes and optional manifest.
pub struct BundledPlugin {
    /// The crate's package name, which is also the plugin's name.
    pub name: &'static str,
    pub wasm: &'static [u8],
    pub manifest: Option<&'static str>,
}

include!(concat!(env!("OUT_DIR"), "/bundled.rs"));

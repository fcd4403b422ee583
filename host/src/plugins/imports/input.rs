//! `tuner:plugin/input`: the bytes of the file a binary format plugin
//! parses (Parquet), read at any offset. The plugin sees a handle, never a
//! path; reads are bounded so one call cannot pull a whole large file into
//! the sandbox.

use std::fs::File;
use std::os::unix::fs::FileExt as _;
use std::path::Path;

use wasmtime::component::Resource;

use crate::plugins::bindings::v0_2_0::format::tuner::plugin::input::{Host, HostInputFile};
use crate::plugins::state::PluginState;

/// The largest read a plugin may ask for in one call.
pub const MAX_READ: u32 = 64 << 20;

/// An open file handed to one byte parser.
pub struct InputFile {
    file: File,
    size: u64,
}

impl InputFile {
    /// Opens `path` for reading.
    pub fn open(path: &Path) -> std::io::Result<Self> {
        let file = File::open(path)?;
        let size = file.metadata()?.len();
        Ok(Self { file, size })
    }

    /// Whether the file is empty.
    pub fn is_empty(&self) -> bool {
        self.size == 0
    }

    /// Up to `len` bytes from `offset` (fewer at the end of the file).
    fn read_at(&self, offset: u64, len: u32) -> Result<Vec<u8>, String> {
        if len > MAX_READ {
            return Err(format!(
                "a read of {len} bytes is over the limit of {MAX_READ} bytes per call"
            ));
        }
        let end = offset.saturating_add(u64::from(len)).min(self.size);
        let mut buf = vec![0u8; end.saturating_sub(offset) as usize];
        let mut done = 0;
        while done < buf.len() {
            match self.file.read_at(&mut buf[done..], offset + done as u64) {
                Ok(0) => break,
                Ok(n) => done += n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(format!("reading the file: {e}")),
            }
        }
        buf.truncate(done);
        Ok(buf)
    }
}

impl Host for PluginState {}

impl HostInputFile for PluginState {
    fn size(&mut self, handle: Resource<InputFile>) -> wasmtime::Result<u64> {
        Ok(self.table.get(&handle)?.size)
    }

    fn read(
        &mut self,
        handle: Resource<InputFile>,
        offset: u64,
        len: u32,
    ) -> wasmtime::Result<Result<Vec<u8>, String>> {
        Ok(self.table.get(&handle)?.read_at(offset, len))
    }

    fn drop(&mut self, handle: Resource<InputFile>) -> wasmtime::Result<()> {
        self.table.delete(handle)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_are_cut_at_the_end_and_bounded() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        std::fs::write(&path, b"0123456789").unwrap();
        let f = InputFile::open(&path).unwrap();
        assert_eq!(f.read_at(2, 3).unwrap(), b"234");
        assert_eq!(f.read_at(8, 100).unwrap(), b"89");
        assert_eq!(f.read_at(20, 4).unwrap(), b"");
        assert!(
            f.read_at(0, MAX_READ + 1)
                .unwrap_err()
                .contains("over the limit")
        );
    }
}

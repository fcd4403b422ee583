//! Writing whole files so that a reader (or a crash) sees the old content or
//! the new, never a torn file.
//!
//! For names that come from outside (hub listings, the API), use
//! [`crate::paths::write_file_in`], which also checks the name and refuses
//! to write through symlinks; [`write_atomically`] is for paths the host
//! computed itself (its configuration file, compile cache, built plugins).

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::path::Path;

/// Replaces `path` with `bytes`: writes a temporary file with a unique name
/// in the same folder, syncs it, renames it over `path`, then (on Unix)
/// syncs the folder so the rename itself survives a crash.
///
/// On failure nothing is left behind and an existing `path` is untouched.
/// The error keeps its [`io::ErrorKind`] and names the file.
pub fn write_atomically(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let Some(name) = path.file_name() else {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("writing {}: not a file name", path.display()),
        ));
    };
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let tmp = dir.join(crate::paths::unique_temp_name(&format!(
        ".{}.tmp",
        name.to_string_lossy()
    )));
    let written = (|| {
        let mut f = OpenOptions::new().write(true).create_new(true).open(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        drop(f);
        std::fs::rename(&tmp, path)
    })();
    if let Err(e) = written {
        let _ = std::fs::remove_file(&tmp);
        return Err(context(e, "writing", path));
    }
    sync_dir(dir).map_err(|e| context(e, "syncing the folder of", path))
}

/// Makes a rename in `dir` durable. File systems that cannot sync a folder
/// (`EINVAL` on some network mounts) are not an error: the data itself was
/// synced before the rename.
#[cfg(unix)]
fn sync_dir(dir: &Path) -> io::Result<()> {
    use io::ErrorKind::{InvalidInput, Unsupported};
    match File::open(dir).and_then(|d| d.sync_all()) {
        Err(e) if matches!(e.kind(), InvalidInput | Unsupported) => Ok(()),
        r => r,
    }
}

/// Folders cannot be opened (or synced) as files here.
#[cfg(not(unix))]
fn sync_dir(_dir: &Path) -> io::Result<()> {
    Ok(())
}

fn context(e: io::Error, doing: &str, path: &Path) -> io::Error {
    io::Error::new(e.kind(), format!("{doing} {}: {e}", path.display()))
}

/// Sorts the keys of every object in `value`, as Python's
/// `json.dumps(..., sort_keys=True)` writes them (transformers'
/// `config.json`, PEFT's `adapter_config.json`). serde_json keeps insertion
/// order in this build (`preserve_order`, so tool schemas reach the chat
/// template as written), so files that mirror those need this.
pub fn sort_keys_deeply(value: &mut serde_json::Value) {
    match value {
        serde_json::Value::Object(map) => {
            map.sort_keys();
            map.values_mut().for_each(sort_keys_deeply);
        }
        serde_json::Value::Array(items) => items.iter_mut().for_each(sort_keys_deeply),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(dir: &Path) -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    }

    #[test]
    fn writes_and_replaces_content() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config.toml");
        write_atomically(&path, b"first").unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"first");
        write_atomically(&path, b"second, longer").unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"second, longer");
        write_atomically(&path, b"").unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"");
        // No temporary file is left beside it.
        assert_eq!(names(dir.path()), ["config.toml"]);
    }

    #[test]
    fn a_missing_folder_fails_naming_the_file_and_creates_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("missing").join("x.bin");
        let err = write_atomically(&path, b"data").unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::NotFound);
        assert!(
            err.to_string().contains(&path.display().to_string()),
            "{err}"
        );
        assert!(names(dir.path()).is_empty());
    }

    #[test]
    fn a_failed_write_leaves_no_temporary_file_and_the_old_content() {
        let dir = tempfile::tempdir().unwrap();
        let existing = dir.path().join("existing");
        std::fs::write(&existing, b"old").unwrap();
        // The parent is a file: the temporary file cannot be created.
        let err = write_atomically(&existing.join("child"), b"new").unwrap_err();
        assert!(err.to_string().contains("existing/child"), "{err}");
        // The destination is a non-empty folder: the rename fails after the
        // temporary file was written, which is then removed.
        let folder = dir.path().join("folder");
        std::fs::create_dir(&folder).unwrap();
        std::fs::write(folder.join("inside"), b"kept").unwrap();
        let err = write_atomically(&folder, b"new").unwrap_err();
        assert!(err.to_string().contains("folder"), "{err}");
        assert_eq!(names(dir.path()), ["existing", "folder"]);
        assert_eq!(std::fs::read(&existing).unwrap(), b"old");
        assert_eq!(std::fs::read(folder.join("inside")).unwrap(), b"kept");
    }
}

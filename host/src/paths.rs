//! Path containment: untrusted names (repository ids, revisions, commits,
//! file paths from a hub listing, dataset and plugin names, job ids, output
//! folders from the API) become paths only through this module.
//!
//! Two layers:
//! - **Lexical checks** ([`check_relative`], [`contained`],
//!   [`single_component`], [`check_git_ref`], [`check_commit`],
//!   [`check_sha256`]): a name is refused when it is empty, absolute, has an
//!   empty, `.` or `..` component, a NUL or other control character, a
//!   backslash, a drive (`C:`) or UNC (`\\server`) form. Nothing is decoded
//!   here: percent-decoding is the HTTP layer's job, so `%2e%2e%2fx` is
//!   checked (and, being one harmless component, kept) as the literal name.
//! - **Checks at the moment of writing** ([`create_dir_in`],
//!   [`write_file_in`], [`symlink_in`]): every folder below the root is
//!   created one at a time, and an existing one that is a symlink must
//!   resolve inside the root; files are opened with `O_NOFOLLOW` (a planted
//!   symlink is not written through), written to a temporary file, synced
//!   and renamed into place.

use std::fmt;
use std::io::Write;
use std::path::{Component, Path, PathBuf};

/// Why a name or a path was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PathError {
    /// The name itself is not acceptable.
    #[error("{what} `{name}` is not {expected}: {reason}")]
    Invalid {
        /// What the name is (`revision`, `file path`, `commit`...).
        what: String,
        /// The name, with control characters escaped.
        name: String,
        /// `a valid git ref name`, `a safe relative path`...
        expected: &'static str,
        reason: String,
    },
    /// The name is fine but the filesystem would take the write elsewhere
    /// (a symlink out of the root, a file where a folder should be).
    #[error("refusing to write {path}: {reason}")]
    Escapes { path: String, reason: String },
    #[error("{path}: {reason}")]
    Io { path: String, reason: String },
}

impl PathError {
    fn invalid(what: &str, name: &str, expected: &'static str, reason: impl fmt::Display) -> Self {
        PathError::Invalid {
            what: what.to_string(),
            name: name.escape_debug().to_string(),
            expected,
            reason: reason.to_string(),
        }
    }

    fn io(path: &Path, e: std::io::Error) -> Self {
        PathError::Io {
            path: path.display().to_string(),
            reason: e.to_string(),
        }
    }
}

const RELATIVE: &str = "a safe relative path";
const COMPONENT: &str = "a single safe path component";
const GIT_REF: &str = "a valid git ref name";
const COMMIT: &str = "a valid commit id";
const SHA256: &str = "a sha256 hash";

/// The longest name accepted (a path component on most filesystems).
const MAX_COMPONENT: usize = 255;

/// Problems every kind of name shares: empty, NUL or control characters,
/// backslashes, drive letters.
fn common_problem(name: &str) -> Option<String> {
    if name.is_empty() {
        return Some("it is empty".into());
    }
    if name.contains('\0') {
        return Some("it contains a NUL byte".into());
    }
    if let Some(c) = name.chars().find(|c| c.is_control()) {
        return Some(format!("it contains the control character {:?}", c));
    }
    if name.starts_with("\\\\") || name.starts_with("//") {
        return Some("it is a UNC path (`\\\\server\\share`)".into());
    }
    if name.contains('\\') {
        return Some("it contains a backslash `\\`".into());
    }
    let b = name.as_bytes();
    if b.len() >= 2 && b[0].is_ascii_alphabetic() && b[1] == b':' {
        return Some("it starts with a drive letter (`C:`)".into());
    }
    None
}

/// Checks a relative, `/`-separated name (a file path in a hub listing) that
/// will be joined to a folder: see the module documentation.
pub fn check_relative(what: &str, name: &str) -> Result<(), PathError> {
    let bad = |reason: String| Err(PathError::invalid(what, name, RELATIVE, reason));
    if let Some(r) = common_problem(name) {
        return bad(r);
    }
    if name.starts_with('/') {
        return bad("it is an absolute path".into());
    }
    for part in name.split('/') {
        match part {
            "" => return bad("it has an empty component (`//` or a trailing `/`)".into()),
            "." => return bad("it has a `.` component".into()),
            ".." => return bad("it contains `..`".into()),
            p if p.len() > MAX_COMPONENT => {
                return bad(format!("a component is longer than {MAX_COMPONENT} bytes"));
            }
            _ => {}
        }
    }
    // Belt and braces: what the platform makes of it must be plain names.
    if !Path::new(name)
        .components()
        .all(|c| matches!(c, Component::Normal(_)))
    {
        return bad("it is not a plain relative path on this platform".into());
    }
    Ok(())
}

/// `root/name` for a relative, `/`-separated untrusted `name`, after
/// [`check_relative`]. The result is lexically inside `root`.
pub fn contained(root: &Path, untrusted: &str) -> Result<PathBuf, PathError> {
    contained_as("path", root, untrusted)
}

/// [`contained`], naming what the name is in the error (`file path`...).
pub fn contained_as(what: &str, root: &Path, untrusted: &str) -> Result<PathBuf, PathError> {
    check_relative(what, untrusted)?;
    Ok(root.join(untrusted))
}

/// Checks a name that must be exactly one path component (dataset name,
/// plugin name, job id, commit folder): no `/` at all, otherwise as
/// [`check_relative`].
pub fn single_component<'a>(what: &str, name: &'a str) -> Result<&'a str, PathError> {
    if let Some(r) = common_problem(name) {
        return Err(PathError::invalid(what, name, COMPONENT, r));
    }
    if name.contains('/') {
        return Err(PathError::invalid(what, name, COMPONENT, "it contains `/`"));
    }
    check_relative(what, name).map_err(|e| match e {
        PathError::Invalid {
            what, name, reason, ..
        } => PathError::Invalid {
            what,
            name,
            expected: COMPONENT,
            reason,
        },
        other => other,
    })?;
    Ok(name)
}

/// Checks a revision (branch or tag) by git's ref-name rules
/// (`git check-ref-format --allow-onelevel`): no `..`, no component that
/// starts with `.` or ends with `.lock`, no ASCII control character, space,
/// `~`, `^`, `:`, `?`, `*`, `[` or `\`, no `@{`, not `@`, no leading,
/// trailing or doubled `/`, no trailing `.`. Such a name is also a safe
/// relative path (`refs/<revision>` stays inside `refs/`).
pub fn check_git_ref(what: &str, rev: &str) -> Result<(), PathError> {
    let bad = |reason: &str| Err(PathError::invalid(what, rev, GIT_REF, reason));
    if rev.is_empty() {
        return bad("it is empty");
    }
    if rev.len() > 1024 {
        return bad("it is longer than 1024 bytes");
    }
    if rev == "@" {
        return bad("it is `@`");
    }
    if rev.contains("..") {
        return bad("it contains `..`");
    }
    if rev.contains("@{") {
        return bad("it contains `@{`");
    }
    if let Some(c) = rev.chars().find(|c| c.is_ascii_control()) {
        return Err(PathError::invalid(
            what,
            rev,
            GIT_REF,
            format!("it contains the control character {c:?}"),
        ));
    }
    if let Some(c) = rev
        .chars()
        .find(|c| matches!(c, ' ' | '~' | '^' | ':' | '?' | '*' | '[' | '\\'))
    {
        return Err(PathError::invalid(
            what,
            rev,
            GIT_REF,
            format!("it contains `{c}`"),
        ));
    }
    if rev.starts_with('/') {
        return bad("it starts with `/`");
    }
    if rev.ends_with('/') {
        return bad("it ends with `/`");
    }
    if rev.contains("//") {
        return bad("it contains `//`");
    }
    if rev.ends_with('.') {
        return bad("it ends with `.`");
    }
    for part in rev.split('/') {
        if part.starts_with('.') {
            return bad("a component starts with `.`");
        }
        if part.ends_with(".lock") {
            return bad("a component ends with `.lock`");
        }
        if part.len() > MAX_COMPONENT {
            return bad("a component is longer than 255 bytes");
        }
    }
    // Implied by the rules above; checked again so a future edit of them
    // cannot open a path escape.
    check_relative(what, rev)
}

/// Checks a commit id that names a snapshot folder: 40 or 64 hex digits, or
/// any other single component that is a valid git ref name (some hubs
/// answer a short hash or a derived id).
pub fn check_commit(what: &str, commit: &str) -> Result<(), PathError> {
    let hex = commit.bytes().all(|b| b.is_ascii_hexdigit());
    if hex && (commit.len() == 40 || commit.len() == 64) {
        return Ok(());
    }
    single_component(what, commit).map_err(|e| retag(e, COMMIT))?;
    check_git_ref(what, commit).map_err(|e| retag(e, COMMIT))
}

/// Checks a blob name: 64 hex digits.
pub fn check_sha256(what: &str, sha: &str) -> Result<(), PathError> {
    if sha.len() == 64 && sha.bytes().all(|b| b.is_ascii_hexdigit()) {
        Ok(())
    } else {
        Err(PathError::invalid(
            what,
            sha,
            SHA256,
            "expected 64 hexadecimal digits",
        ))
    }
}

fn retag(e: PathError, expected: &'static str) -> PathError {
    match e {
        PathError::Invalid {
            what, name, reason, ..
        } => PathError::Invalid {
            what,
            name,
            expected,
            reason,
        },
        other => other,
    }
}

/// Checks a relative path given as a [`Path`] (an output folder from the
/// API): only plain components, so joined to a root it stays inside it.
pub fn check_relative_path(what: &str, path: &Path) -> Result<(), PathError> {
    let text = path.to_string_lossy();
    if let Some(r) = common_problem(&text) {
        return Err(PathError::invalid(what, &text, RELATIVE, r));
    }
    for c in path.components() {
        match c {
            Component::Normal(_) | Component::CurDir => {}
            Component::ParentDir => {
                return Err(PathError::invalid(
                    what,
                    &text,
                    RELATIVE,
                    "it contains `..`",
                ));
            }
            Component::RootDir | Component::Prefix(_) => {
                return Err(PathError::invalid(
                    what,
                    &text,
                    RELATIVE,
                    "it is an absolute path",
                ));
            }
        }
    }
    if path.components().all(|c| matches!(c, Component::CurDir)) {
        return Err(PathError::invalid(
            what,
            &text,
            RELATIVE,
            "it names no folder",
        ));
    }
    Ok(())
}

/// The canonical form of `root`, created if missing.
fn canonical_root(root: &Path) -> Result<PathBuf, PathError> {
    std::fs::create_dir_all(root).map_err(|e| PathError::io(root, e))?;
    root.canonicalize().map_err(|e| PathError::io(root, e))
}

/// Creates the folder `root/rel` one component at a time. A component that
/// already exists must be a folder, and when it is a symlink its target
/// must resolve inside `root`. Returns the folder's path (`root/rel`).
pub fn create_dir_in(root: &Path, rel: &Path) -> Result<PathBuf, PathError> {
    let text = rel.to_string_lossy();
    check_relative_path("folder", rel)?;
    let canon_root = canonical_root(root)?;
    let mut dir = root.to_path_buf();
    for c in rel.components() {
        let Component::Normal(part) = c else {
            continue;
        };
        dir.push(part);
        match std::fs::symlink_metadata(&dir) {
            Ok(m) if m.file_type().is_symlink() => {
                let target = dir.canonicalize().map_err(|e| PathError::io(&dir, e))?;
                if !target.starts_with(&canon_root) || !target.is_dir() {
                    return Err(PathError::Escapes {
                        path: root.join(&*text).display().to_string(),
                        reason: format!(
                            "{} is a symlink to {}, outside {}",
                            dir.display(),
                            target.display(),
                            root.display()
                        ),
                    });
                }
            }
            Ok(m) if m.is_dir() => {}
            Ok(_) => {
                return Err(PathError::Escapes {
                    path: root.join(&*text).display().to_string(),
                    reason: format!("{} exists and is not a folder", dir.display()),
                });
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                match std::fs::create_dir(&dir) {
                    Ok(()) => {}
                    // Another writer made it meanwhile: check what it is.
                    Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                        let m =
                            std::fs::symlink_metadata(&dir).map_err(|e| PathError::io(&dir, e))?;
                        if !m.is_dir() {
                            return Err(PathError::Escapes {
                                path: dir.display().to_string(),
                                reason: "appeared meanwhile and is not a folder".into(),
                            });
                        }
                    }
                    Err(e) => return Err(PathError::io(&dir, e)),
                }
            }
            Err(e) => return Err(PathError::io(&dir, e)),
        }
    }
    // The whole chain, resolved, is still inside the root.
    let canon = dir.canonicalize().map_err(|e| PathError::io(&dir, e))?;
    if !canon.starts_with(&canon_root) {
        return Err(PathError::Escapes {
            path: dir.display().to_string(),
            reason: format!(
                "it resolves to {}, outside {}",
                canon.display(),
                root.display()
            ),
        });
    }
    Ok(dir)
}

/// Splits a checked relative name into its parent folder and file name.
fn parent_and_name(rel: &str) -> (&str, &str) {
    match rel.rsplit_once('/') {
        Some((parent, name)) => (parent, name),
        None => ("", rel),
    }
}

/// The folder for `rel`'s parent, created safely ([`create_dir_in`]).
fn parent_dir(root: &Path, rel: &str) -> Result<PathBuf, PathError> {
    let (parent, _) = parent_and_name(rel);
    if parent.is_empty() {
        canonical_root(root)?;
        Ok(root.to_path_buf())
    } else {
        create_dir_in(root, Path::new(parent))
    }
}

/// Opens a new file for writing without following a symlink at `path`
/// (`O_NOFOLLOW`) and without replacing anything (`create_new`).
pub fn create_new_nofollow(path: &Path) -> std::io::Result<std::fs::File> {
    let mut o = std::fs::OpenOptions::new();
    o.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        o.custom_flags(libc::O_NOFOLLOW);
    }
    o.open(path)
}

/// `PREFIX-PID-NANOS-N`: a temporary file name no other process, and no
/// other call in this one, uses, for write-then-rename.
pub fn unique_temp_name(prefix: &str) -> String {
    static CALLS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    format!(
        "{prefix}-{}-{}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0),
        CALLS.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
    )
}

/// Writes `bytes` to `root/rel` (relative, `/`-separated, untrusted):
/// checked name, folders created by [`create_dir_in`], a temporary file
/// opened with `O_NOFOLLOW`, synced, then renamed over the destination (a
/// symlink planted there is replaced, never written through). Returns the
/// destination.
pub fn write_file_in(
    root: &Path,
    what: &str,
    rel: &str,
    bytes: &[u8],
) -> Result<PathBuf, PathError> {
    check_relative(what, rel)?;
    let dir = parent_dir(root, rel)?;
    let (_, name) = parent_and_name(rel);
    let dest = dir.join(name);
    if std::fs::symlink_metadata(&dest).is_ok_and(|m| m.is_dir()) {
        return Err(PathError::Escapes {
            path: dest.display().to_string(),
            reason: "a folder is in the way".into(),
        });
    }
    let tmp = dir.join(unique_temp_name(&format!(".{name}.tmp")));
    let result = (|| {
        let mut f = create_new_nofollow(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        std::fs::rename(&tmp, &dest)
    })();
    if let Err(e) = result {
        let _ = std::fs::remove_file(&tmp);
        return Err(PathError::io(&dest, e));
    }
    Ok(dest)
}

/// Creates the symlink `root/rel` → `target` (replacing a file or link
/// already there). `rel` is untrusted and checked; `target` is computed by
/// the caller (the cache's relative links into `blobs/`). Without symlinks
/// (not Unix) `copy_from` is copied there instead.
pub fn symlink_in(
    root: &Path,
    what: &str,
    rel: &str,
    target: &Path,
    copy_from: &Path,
) -> Result<PathBuf, PathError> {
    check_relative(what, rel)?;
    let dir = parent_dir(root, rel)?;
    let (_, name) = parent_and_name(rel);
    let dest = dir.join(name);
    match std::fs::symlink_metadata(&dest) {
        Ok(m) if m.is_dir() => {
            return Err(PathError::Escapes {
                path: dest.display().to_string(),
                reason: "a folder is in the way".into(),
            });
        }
        // Removing a symlink removes the link, not its target.
        Ok(_) => std::fs::remove_file(&dest).map_err(|e| PathError::io(&dest, e))?,
        Err(_) => {}
    }
    #[cfg(unix)]
    {
        let _ = copy_from;
        std::os::unix::fs::symlink(target, &dest).map_err(|e| PathError::io(&dest, e))?;
    }
    #[cfg(not(unix))]
    {
        let _ = target;
        std::fs::copy(copy_from, &dest).map_err(|e| PathError::io(&dest, e))?;
    }
    Ok(dest)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Hostile names every check must refuse.
    const HOSTILE: &[&str] = &[
        "../x",
        "../../../../tmp/x",
        "/tmp/victim.txt",
        "refs/../../x",
        ".",
        "",
        "..",
        "a/./b",
        "a//b",
        "a/",
        "x\0y",
        "C:\\x",
        "C:x",
        "c:/x",
        "\\\\server\\share",
        "//server/share",
        "..\\x",
        "a\\..\\b",
        "a\nb",
        "a\x1bb",
        "a\x7fb",
    ];

    #[test]
    fn hostile_names_are_refused_everywhere() {
        for bad in HOSTILE {
            assert!(check_relative("path", bad).is_err(), "relative {bad:?}");
            assert!(
                contained(Path::new("/root"), bad).is_err(),
                "contained {bad:?}"
            );
            assert!(single_component("name", bad).is_err(), "component {bad:?}");
            assert!(check_git_ref("revision", bad).is_err(), "ref {bad:?}");
            assert!(check_commit("commit", bad).is_err(), "commit {bad:?}");
            assert!(check_sha256("sha256", bad).is_err(), "sha {bad:?}");
        }
    }

    #[test]
    fn git_ref_rules() {
        for good in [
            "main",
            "master",
            "v1.0",
            "refs/pr/1",
            "feature/x-y_z",
            "release-2024.01",
            "%2e%2e%2fx",
            "0123456789abcdef0123456789abcdef01234567",
        ] {
            assert!(check_git_ref("revision", good).is_ok(), "{good}");
        }
        for bad in [
            "a..b",
            ".hidden",
            "a/.hidden",
            "main.lock",
            "a/b.lock/c",
            "a@{1}",
            "@",
            "a b",
            "a~1",
            "a^",
            "a:b",
            "a?",
            "a*",
            "a[b",
            "a.",
            "/a",
            "a/",
            "a//b",
            "a\tb",
        ] {
            assert!(check_git_ref("revision", bad).is_err(), "{bad}");
        }
        // `@` inside a name is fine; only `@{` and a lone `@` are not.
        assert!(check_git_ref("revision", "a@b").is_ok());
    }

    #[test]
    fn messages_name_the_offender_and_why() {
        let e = check_git_ref("revision", "../x").unwrap_err().to_string();
        assert_eq!(
            e,
            "revision `../x` is not a valid git ref name: it contains `..`"
        );
        let e = check_relative("file path", "/abs").unwrap_err().to_string();
        assert!(e.contains("`/abs`") && e.contains("absolute"), "{e}");
        let e = single_component("dataset name", "x\0y")
            .unwrap_err()
            .to_string();
        assert!(e.contains("x\\0y") && e.contains("NUL"), "{e}");
    }

    #[test]
    fn commits_and_hashes() {
        assert!(check_commit("commit", &"a".repeat(40)).is_ok());
        assert!(check_commit("commit", &"A".repeat(64)).is_ok());
        assert!(check_commit("commit", "abc1234").is_ok());
        assert!(check_commit("commit", "a/b").is_err());
        assert!(check_commit("commit", "../../x").is_err());
        assert!(check_sha256("sha256", &"0".repeat(64)).is_ok());
        assert!(check_sha256("sha256", &"0".repeat(63)).is_err());
        assert!(check_sha256("sha256", &format!("../{}", "0".repeat(61))).is_err());
    }

    #[test]
    fn encoded_names_stay_literal_and_harmless() {
        // Not decoded here: one component named `%2e%2e%2fx`, inside the root.
        let p = contained(Path::new("/root"), "%2e%2e%2fx").unwrap();
        assert_eq!(p, Path::new("/root/%2e%2e%2fx"));
        assert!(single_component("name", "%2e%2e%2fx").is_ok());
    }

    #[test]
    fn good_relative_paths() {
        let p = contained(Path::new("/r"), "sub/model.safetensors").unwrap();
        assert_eq!(p, Path::new("/r/sub/model.safetensors"));
        assert!(check_relative("p", "a..b/c").is_ok());
        assert!(check_relative_path("output_dir", Path::new("out/run1")).is_ok());
        assert!(check_relative_path("output_dir", Path::new("./out")).is_ok());
        for bad in ["/tmp/x", "../x", "a/../../x", ".", ""] {
            assert!(
                check_relative_path("output_dir", Path::new(bad)).is_err(),
                "{bad}"
            );
        }
    }

    #[test]
    fn writes_stay_inside_and_replace_atomically() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().join("root");
        let p = write_file_in(&root, "ref", "refs/pr/1", b"abc").unwrap();
        assert_eq!(p, root.join("refs/pr/1"));
        assert_eq!(std::fs::read(&p).unwrap(), b"abc");
        write_file_in(&root, "ref", "refs/pr/1", b"def").unwrap();
        assert_eq!(std::fs::read(&p).unwrap(), b"def");
        for bad in HOSTILE {
            assert!(write_file_in(&root, "ref", bad, b"x").is_err(), "{bad:?}");
        }
        // No temporary files are left behind.
        let names: Vec<_> = std::fs::read_dir(root.join("refs/pr"))
            .unwrap()
            .flatten()
            .map(|e| e.file_name())
            .collect();
        assert_eq!(names.len(), 1, "{names:?}");
    }

    #[cfg(unix)]
    #[test]
    fn a_symlink_out_of_the_root_is_not_written_through() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().join("root");
        let outside = tmp.path().join("outside");
        std::fs::create_dir_all(&root).unwrap();
        std::fs::create_dir_all(&outside).unwrap();
        // A folder inside the root that is a link to a folder outside it.
        std::os::unix::fs::symlink(&outside, root.join("refs")).unwrap();
        let e = write_file_in(&root, "ref", "refs/main", b"x").unwrap_err();
        assert!(matches!(e, PathError::Escapes { .. }), "{e}");
        assert!(!outside.join("main").exists());
        assert!(create_dir_in(&root, Path::new("refs/sub")).is_err());
        assert!(!outside.join("sub").exists());
        let e = symlink_in(&root, "file", "refs/f", Path::new("../x"), Path::new("/")).unwrap_err();
        assert!(matches!(e, PathError::Escapes { .. }), "{e}");

        // A file inside the root that is a link to a file outside it: the
        // write replaces the link, the victim keeps its content.
        let victim = outside.join("victim.txt");
        std::fs::write(&victim, b"precious").unwrap();
        std::fs::create_dir_all(root.join("d")).unwrap();
        std::os::unix::fs::symlink(&victim, root.join("d/file")).unwrap();
        write_file_in(&root, "file", "d/file", b"new").unwrap();
        assert_eq!(std::fs::read(&victim).unwrap(), b"precious");
        assert!(
            !std::fs::symlink_metadata(root.join("d/file"))
                .unwrap()
                .is_symlink()
        );
        // And O_NOFOLLOW refuses to open through a link.
        std::os::unix::fs::symlink(&victim, root.join("d/link")).unwrap();
        assert!(create_new_nofollow(&root.join("d/link")).is_err());
        assert_eq!(std::fs::read(&victim).unwrap(), b"precious");

        // A link that stays inside the root is fine.
        std::fs::create_dir_all(root.join("real")).unwrap();
        std::os::unix::fs::symlink(root.join("real"), root.join("alias")).unwrap();
        write_file_in(&root, "file", "alias/f", b"ok").unwrap();
        assert_eq!(std::fs::read(root.join("real/f")).unwrap(), b"ok");
    }
}

//! Crash-safe file system helpers.
//!
//! A plain `write` or `create_dir` may be lost, or leave a half-written file
//! behind, if the machine crashes before the kernel flushes its caches. The
//! helpers here follow the usual recipe: write to a temporary file, fsync it,
//! rename it over the target, then fsync the directory so that the rename
//! itself is durable.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

/// Suffix of the temporary file [`durable_write`] writes before renaming it.
pub const TEMP_FILE_SUFFIX: &str = "___temp";

/// A file system operation that failed, with the path it was applied to.
#[derive(Debug, thiserror::Error)]
#[error("failed to {op} {}", path.display())]
pub struct CrashsafeError {
    /// What we were doing, e.g. "fsync directory".
    pub op: &'static str,
    /// The file or directory involved.
    pub path: PathBuf,
    /// The underlying I/O error.
    #[source]
    pub source: io::Error,
}

impl CrashsafeError {
    fn new(op: &'static str, path: &Path, source: io::Error) -> Self {
        CrashsafeError {
            op,
            path: path.to_path_buf(),
            source,
        }
    }

    /// The kind of the underlying I/O error.
    pub fn kind(&self) -> io::ErrorKind {
        self.source.kind()
    }
}

/// The temporary path used while durably writing `path`: `<path>.___temp`.
pub fn temp_path(path: &Path) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(".");
    name.push(TEMP_FILE_SUFFIX);
    PathBuf::from(name)
}

/// The directory containing `path`; `.` for a bare relative file name.
fn parent_dir(path: &Path) -> &Path {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    }
}

/// Fsyncs a directory, making the creation, removal and renaming of its
/// entries durable.
pub fn fsync_dir(path: impl AsRef<Path>) -> Result<(), CrashsafeError> {
    let path = path.as_ref();
    let dir = File::open(path).map_err(|e| CrashsafeError::new("open directory", path, e))?;
    dir.sync_all()
        .map_err(|e| CrashsafeError::new("fsync directory", path, e))
}

/// Fsyncs a regular file's contents and metadata.
pub fn fsync_file(path: impl AsRef<Path>) -> Result<(), CrashsafeError> {
    let path = path.as_ref();
    let file = File::open(path).map_err(|e| CrashsafeError::new("open file", path, e))?;
    file.sync_all()
        .map_err(|e| CrashsafeError::new("fsync file", path, e))
}

/// Replaces the contents of `path` with `bytes` atomically and durably.
///
/// Writes `<path>.___temp` in the same directory, fsyncs it, renames it over
/// `path` and fsyncs the directory. After a crash, `path` holds either the old
/// or the new contents, never a mix. The temporary file is removed on error.
pub fn durable_write(path: impl AsRef<Path>, bytes: &[u8]) -> Result<(), CrashsafeError> {
    let path = path.as_ref();
    let tmp = temp_path(path);
    if let Err(e) = write_and_sync(&tmp, bytes) {
        // Best effort: the temporary file may not even exist.
        let _ = fs::remove_file(&tmp);
        return Err(e);
    }
    if let Err(e) = fs::rename(&tmp, path) {
        let _ = fs::remove_file(&tmp);
        return Err(CrashsafeError::new("rename temporary file onto", path, e));
    }
    fsync_dir(parent_dir(path))
}

/// Creates (or truncates) `path`, writes `bytes` and fsyncs the file.
fn write_and_sync(path: &Path, bytes: &[u8]) -> Result<(), CrashsafeError> {
    let mut file = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .open(path)
        .map_err(|e| CrashsafeError::new("create temporary file", path, e))?;
    file.write_all(bytes)
        .map_err(|e| CrashsafeError::new("write temporary file", path, e))?;
    file.sync_all()
        .map_err(|e| CrashsafeError::new("fsync temporary file", path, e))
}

/// Creates one directory and fsyncs it and its parent.
///
/// Fails if the directory already exists or its parent does not.
pub fn create_dir_durable(path: impl AsRef<Path>) -> Result<(), CrashsafeError> {
    let path = path.as_ref();
    fs::create_dir(path).map_err(|e| CrashsafeError::new("create directory", path, e))?;
    fsync_dir(path)?;
    fsync_dir(parent_dir(path))
}

/// Creates a directory and all its missing ancestors, fsyncing each new
/// directory and the directory it was created in.
///
/// Succeeds without doing anything if `path` already is a directory.
pub fn create_dir_all_durable(path: impl AsRef<Path>) -> Result<(), CrashsafeError> {
    let path = path.as_ref();
    let mut missing = Vec::new();
    let mut cur = Some(path);
    while let Some(p) = cur {
        if p.as_os_str().is_empty() || p.is_dir() {
            break;
        }
        missing.push(p);
        cur = p.parent();
    }
    for dir in missing.into_iter().rev() {
        match create_dir_durable(dir) {
            Ok(()) => {}
            // Someone else created it concurrently: still make it durable.
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists && dir.is_dir() => {
                fsync_dir(dir)?;
                fsync_dir(parent_dir(dir))?;
            }
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Removes a file and fsyncs its directory so the removal survives a crash.
pub fn remove_file_durable(path: impl AsRef<Path>) -> Result<(), CrashsafeError> {
    let path = path.as_ref();
    fs::remove_file(path).map_err(|e| CrashsafeError::new("remove file", path, e))?;
    fsync_dir(parent_dir(path))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durable_write_creates_and_overwrites() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config");
        durable_write(&path, b"first").unwrap();
        assert_eq!(fs::read(&path).unwrap(), b"first");
        durable_write(&path, b"second, longer contents").unwrap();
        assert_eq!(fs::read(&path).unwrap(), b"second, longer contents");
        durable_write(&path, b"").unwrap();
        assert_eq!(fs::read(&path).unwrap(), b"");
        assert!(!temp_path(&path).exists());
        let names: Vec<_> = fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, vec!["config"]);
    }

    #[test]
    fn durable_write_missing_parent_fails_cleanly() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("no_such_dir").join("file");
        let err = durable_write(&path, b"x").unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::NotFound);
        assert!(err.to_string().contains("no_such_dir"), "{err}");
        assert!(!path.exists());
        assert!(!temp_path(&path).exists());
    }

    #[test]
    fn temp_path_appends_suffix() {
        assert_eq!(
            temp_path(Path::new("a/b.toml")),
            Path::new("a/b.toml.___temp")
        );
        assert_eq!(parent_dir(Path::new("file")), Path::new("."));
        assert_eq!(parent_dir(Path::new("d/file")), Path::new("d"));
    }

    #[test]
    fn create_dir_durable_and_all() {
        let dir = tempfile::tempdir().unwrap();
        let one = dir.path().join("one");
        create_dir_durable(&one).unwrap();
        assert!(one.is_dir());
        let err = create_dir_durable(&one).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::AlreadyExists);
        let err = create_dir_durable(dir.path().join("x").join("y")).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::NotFound);

        let deep = dir.path().join("a").join("b").join("c");
        create_dir_all_durable(&deep).unwrap();
        assert!(deep.is_dir());
        // Idempotent on an existing directory.
        create_dir_all_durable(&deep).unwrap();
        create_dir_all_durable(dir.path()).unwrap();
    }

    #[test]
    fn create_dir_all_fails_under_a_file() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("file");
        durable_write(&file, b"x").unwrap();
        assert!(create_dir_all_durable(file.join("sub")).is_err());
        assert!(create_dir_all_durable(&file).is_err());
    }

    #[test]
    fn remove_and_fsync() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        durable_write(&path, b"data").unwrap();
        fsync_file(&path).unwrap();
        fsync_dir(dir.path()).unwrap();
        remove_file_durable(&path).unwrap();
        assert!(!path.exists());
        let err = remove_file_durable(&path).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::NotFound);
        assert!(fsync_dir(dir.path().join("missing")).is_err());
    }
}

//! Pid files that double as exclusive locks on a daemon's working directory.
//!
//! A daemon calls [`PidFileGuard::claim`] at startup: it takes an exclusive
//! `flock` on `<workdir>/<name>.pid` and writes its pid there. A second daemon
//! started on the same directory fails with [`PidFileError::AlreadyLocked`]
//! naming the holder. The kernel releases the lock when the guard is dropped or
//! the process exits, however it exits, so a stale file left behind by a crash
//! never blocks a restart.
//!
//! The file is deliberately not removed on drop: unlinking a lock file while
//! another process may have it open would let two processes lock different
//! inodes of the same path. Whether a daemon runs is decided by the lock, not
//! by the file's existence; see [`read_pid_file`].

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::fcntl::{Flock, FlockArg};
pub use nix::unistd::Pid;

/// Errors from claiming or inspecting a pid file.
#[derive(Debug, thiserror::Error)]
pub enum PidFileError {
    /// Another process holds the lock, i.e. a daemon already runs there.
    #[error(
        "{} is locked by {}: is another daemon already running in this directory?",
        path.display(),
        match pid { Some(p) => format!("process {p}"), None => "another process".to_string() }
    )]
    AlreadyLocked {
        path: PathBuf,
        /// The pid the holder wrote, if it has written one yet.
        pid: Option<Pid>,
    },
    /// An I/O operation on the pid file failed.
    #[error("failed to {op} pid file {}", path.display())]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

impl PidFileError {
    fn io(op: &'static str, path: &Path, source: impl Into<io::Error>) -> Self {
        PidFileError::Io {
            op,
            path: path.to_path_buf(),
            source: source.into(),
        }
    }
}

/// The conventional pid file path for daemon `name` in `workdir`: `<workdir>/<name>.pid`.
pub fn pid_file_path(workdir: &Path, name: &str) -> PathBuf {
    workdir.join(format!("{name}.pid"))
}

/// Proof that this process holds the exclusive lock on a pid file.
///
/// Keep it alive for as long as the daemon runs; dropping it releases the lock.
#[derive(Debug)]
pub struct PidFileGuard {
    path: PathBuf,
    _lock: Flock<File>,
}

impl PidFileGuard {
    /// Locks `path` (creating it if needed) and writes the current pid into it.
    pub fn claim(path: impl AsRef<Path>) -> Result<PidFileGuard, PidFileError> {
        let path = path.as_ref();
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)
            .map_err(|e| PidFileError::io("open", path, e))?;
        let mut lock = match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
            Ok(lock) => lock,
            Err((_, Errno::EWOULDBLOCK)) => {
                return Err(PidFileError::AlreadyLocked {
                    path: path.to_path_buf(),
                    pid: read_pid(path),
                })
            }
            Err((_, errno)) => return Err(PidFileError::io("lock", path, errno)),
        };
        write_pid(&mut lock, path)?;
        Ok(PidFileGuard {
            path: path.to_path_buf(),
            _lock: lock,
        })
    }

    /// Locks `<workdir>/<name>.pid`; see [`PidFileGuard::claim`].
    pub fn claim_in(workdir: &Path, name: &str) -> Result<PidFileGuard, PidFileError> {
        Self::claim(pid_file_path(workdir, name))
    }

    /// The path of the locked pid file.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// Replaces the file's contents with `<pid>\n` and fsyncs it.
fn write_pid(file: &mut File, path: &Path) -> Result<(), PidFileError> {
    file.set_len(0)
        .map_err(|e| PidFileError::io("truncate", path, e))?;
    let contents = format!("{}\n", std::process::id());
    file.write_all(contents.as_bytes())
        .map_err(|e| PidFileError::io("write", path, e))?;
    file.sync_all()
        .map_err(|e| PidFileError::io("fsync", path, e))
}

/// Reads the pid stored in a pid file; `None` if unreadable, empty or malformed.
fn read_pid(path: &Path) -> Option<Pid> {
    let text = fs::read_to_string(path).ok()?;
    let pid: i32 = text.trim().parse().ok()?;
    (pid > 0).then(|| Pid::from_raw(pid))
}

/// What a pid file says about its daemon.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PidFileState {
    /// There is no pid file: the daemon has never run in this directory.
    Missing,
    /// The file exists but nobody holds its lock: the daemon is not running.
    /// `pid` is the last pid written, which may since have been reused.
    Stale { pid: Option<Pid> },
    /// A process holds the lock. `pid` is what it wrote (`None` if it has
    /// not written it yet); this is the process to signal to stop the daemon.
    Locked { pid: Option<Pid> },
}

/// Inspects a pid file without disturbing a daemon that holds it.
///
/// Tries a non-blocking shared lock: if that succeeds nobody holds the
/// exclusive lock (the probe lock is released at once).
pub fn read_pid_file(path: impl AsRef<Path>) -> Result<PidFileState, PidFileError> {
    let path = path.as_ref();
    let file = match File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(PidFileState::Missing),
        Err(e) => return Err(PidFileError::io("open", path, e)),
    };
    let held = match Flock::lock(file, FlockArg::LockSharedNonblock) {
        Ok(probe) => {
            drop(probe);
            false
        }
        Err((_, Errno::EWOULDBLOCK)) => true,
        Err((_, errno)) => return Err(PidFileError::io("probe lock of", path, errno)),
    };
    let pid = read_pid(path);
    Ok(if held {
        PidFileState::Locked { pid }
    } else {
        PidFileState::Stale { pid }
    })
}

/// Whether a process with this pid exists (zombies included).
///
/// Sends the null signal, which checks existence and permissions only.
pub fn process_alive(pid: Pid) -> bool {
    match nix::sys::signal::kill(pid, None) {
        Ok(()) => true,
        // It exists but belongs to someone else.
        Err(Errno::EPERM) => true,
        Err(_) => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn me() -> Pid {
        Pid::this()
    }

    #[test]
    fn second_claim_fails_naming_holder() {
        let dir = tempfile::tempdir().unwrap();
        let guard = PidFileGuard::claim_in(dir.path(), "pageserver").unwrap();
        let path = pid_file_path(dir.path(), "pageserver");
        assert_eq!(guard.path(), path);
        assert_eq!(fs::read_to_string(&path).unwrap(), format!("{}\n", me()));

        let err = PidFileGuard::claim(&path).unwrap_err();
        match &err {
            PidFileError::AlreadyLocked { pid, .. } => assert_eq!(*pid, Some(me())),
            other => panic!("unexpected error {other:?}"),
        }
        assert!(
            err.to_string().contains(&format!("process {}", me())),
            "{err}"
        );
        assert_eq!(
            read_pid_file(&path).unwrap(),
            PidFileState::Locked { pid: Some(me()) }
        );

        drop(guard);
        assert_eq!(
            read_pid_file(&path).unwrap(),
            PidFileState::Stale { pid: Some(me()) }
        );
        let again = PidFileGuard::claim(&path).unwrap();
        drop(again);
    }

    #[test]
    fn stale_file_with_garbage_is_reclaimed() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.pid");
        assert_eq!(read_pid_file(&path).unwrap(), PidFileState::Missing);
        fs::write(&path, "not a pid, and longer than any pid would be\n").unwrap();
        assert_eq!(
            read_pid_file(&path).unwrap(),
            PidFileState::Stale { pid: None }
        );
        let _guard = PidFileGuard::claim(&path).unwrap();
        assert_eq!(fs::read_to_string(&path).unwrap(), format!("{}\n", me()));
    }

    #[test]
    fn claim_in_missing_directory_is_io_error() {
        let dir = tempfile::tempdir().unwrap();
        let err = PidFileGuard::claim_in(&dir.path().join("nope"), "d").unwrap_err();
        assert!(
            matches!(err, PidFileError::Io { op: "open", .. }),
            "{err:?}"
        );
    }

    #[test]
    fn liveness() {
        assert!(process_alive(me()));
        // Pids are below 2^22 on Linux, so this one cannot exist.
        assert!(!process_alive(Pid::from_raw(i32::MAX)));
    }
}

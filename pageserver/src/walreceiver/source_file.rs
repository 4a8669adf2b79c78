//! `tenants/<tenant>/timelines/<timeline>/wal_source.json`: the persisted WAL source of a
//! timeline, so that a restarted pageserver resumes streaming.
//!
//! File format (integers big-endian), like the timeline metadata:
//!
//! ```text
//! magic    4 bytes  "NWSR"
//! version  u16      WAL_SOURCE_FORMAT_VERSION (1)
//! len      u32      length of the body in bytes (at most MAX_WAL_SOURCE_BODY_BYTES)
//! crc32c   u32      of the body
//! body     len bytes JSON object {"connstr": "...", "slot_name": "..."}
//! ```
//!
//! Written with [`utils::crashsafe::durable_write`] (temp file, fsync, rename, fsync dir) and
//! removed with [`utils::crashsafe::remove_file_durable`]; a file failing any check is
//! [`SourceFileError::Corrupt`] and not used.

use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::framed_json::Frame;

/// Name of the file in a timeline directory.
pub const WAL_SOURCE_FILE_NAME: &str = "wal_source.json";
const MAGIC: &[u8; 4] = b"NWSR";
/// Current version of the file format.
pub const WAL_SOURCE_FORMAT_VERSION: u16 = 1;
/// Upper bound on the body (a connection string and a slot name).
pub const MAX_WAL_SOURCE_BODY_BYTES: usize = 16 * 1024;
/// Header of the file (see [`crate::framed_json`]).
const WAL_SOURCE_FRAME: Frame = Frame {
    magic: MAGIC,
    version: WAL_SOURCE_FORMAT_VERSION,
    max_body_bytes: MAX_WAL_SOURCE_BODY_BYTES,
};

/// What is persisted: the request as given (the password, if any, included).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WalSourceFile {
    pub connstr: String,
    pub slot_name: String,
}

/// Why the file could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum SourceFileError {
    #[error("I/O error on {path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot write {path}: {source}")]
    Write {
        path: String,
        #[source]
        source: utils::crashsafe::CrashsafeError,
    },
    #[error("{path} is corrupt: {reason}")]
    Corrupt { path: String, reason: String },
}

impl WalSourceFile {
    /// The file's bytes.
    pub fn to_bytes(&self) -> Vec<u8> {
        WAL_SOURCE_FRAME.encode(self)
    }

    /// Parses and verifies the file's bytes; `Err` holds the reason.
    pub fn from_bytes(buf: &[u8]) -> Result<WalSourceFile, String> {
        WAL_SOURCE_FRAME.decode(buf)
    }

    /// Writes `<timeline_dir>/wal_source.json` durably.
    pub fn write(&self, timeline_dir: &Path) -> Result<(), SourceFileError> {
        let path = timeline_dir.join(WAL_SOURCE_FILE_NAME);
        utils::crashsafe::durable_write(&path, &self.to_bytes()).map_err(|source| {
            SourceFileError::Write {
                path: path.display().to_string(),
                source,
            }
        })
    }

    /// Reads `<timeline_dir>/wal_source.json`; `Ok(None)` if there is none.
    pub fn read(timeline_dir: &Path) -> Result<Option<WalSourceFile>, SourceFileError> {
        let path = timeline_dir.join(WAL_SOURCE_FILE_NAME);
        let display = || path.display().to_string();
        let meta = match std::fs::metadata(&path) {
            Ok(m) => m,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(source) => {
                return Err(SourceFileError::Io {
                    path: display(),
                    source,
                })
            }
        };
        if meta.len() > WAL_SOURCE_FRAME.max_file_bytes() {
            return Err(SourceFileError::Corrupt {
                path: display(),
                reason: format!("file is {} bytes", meta.len()),
            });
        }
        let buf = std::fs::read(&path).map_err(|source| SourceFileError::Io {
            path: display(),
            source,
        })?;
        WalSourceFile::from_bytes(&buf)
            .map(Some)
            .map_err(|reason| SourceFileError::Corrupt {
                path: display(),
                reason,
            })
    }

    /// Removes `<timeline_dir>/wal_source.json` durably (no error if absent).
    pub fn remove(timeline_dir: &Path) -> Result<(), SourceFileError> {
        let path = timeline_dir.join(WAL_SOURCE_FILE_NAME);
        if !path.exists() {
            return Ok(());
        }
        utils::crashsafe::remove_file_durable(&path).map_err(|e| SourceFileError::Io {
            path: path.display().to_string(),
            source: std::io::Error::new(e.kind(), e.to_string()),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> WalSourceFile {
        WalSourceFile {
            connstr: "host=127.0.0.1 port=55432 user=cloud_admin".into(),
            slot_name: "pageserver".into(),
        }
    }

    #[test]
    fn roundtrip_replace_remove() {
        let dir = tempfile::tempdir().unwrap();
        assert!(WalSourceFile::read(dir.path()).unwrap().is_none());
        sample().write(dir.path()).unwrap();
        assert_eq!(WalSourceFile::read(dir.path()).unwrap(), Some(sample()));
        let mut other = sample();
        other.slot_name = "other".into();
        other.write(dir.path()).unwrap();
        assert_eq!(WalSourceFile::read(dir.path()).unwrap(), Some(other));
        WalSourceFile::remove(dir.path()).unwrap();
        WalSourceFile::remove(dir.path()).unwrap();
        assert!(WalSourceFile::read(dir.path()).unwrap().is_none());
    }

    #[test]
    fn every_flipped_byte_and_cut_is_detected() {
        let bytes = sample().to_bytes();
        for i in 0..bytes.len() {
            let mut b = bytes.clone();
            b[i] ^= 0x20;
            assert!(WalSourceFile::from_bytes(&b).is_err(), "flip at {i}");
        }
        for n in 0..bytes.len() {
            assert!(WalSourceFile::from_bytes(&bytes[..n]).is_err(), "cut {n}");
        }
    }

    #[test]
    fn corrupt_file_is_reported() {
        let dir = tempfile::tempdir().unwrap();
        let mut bytes = sample().to_bytes();
        let last = bytes.len() - 3;
        bytes[last] ^= 1;
        std::fs::write(dir.path().join(WAL_SOURCE_FILE_NAME), &bytes).unwrap();
        let err = WalSourceFile::read(dir.path()).unwrap_err();
        assert!(matches!(err, SourceFileError::Corrupt { .. }), "{err}");
    }
}

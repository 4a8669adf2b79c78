//! Per-timeline metadata: `tenants/<tenant>/timelines/<timeline>/metadata`.
//!
//! File format (all integers big-endian):
//!
//! ```text
//! magic    4 bytes  "NTLM"
//! version  u16      METADATA_FORMAT_VERSION (1)
//! len      u32      length of the body in bytes (at most MAX_METADATA_BODY_BYTES)
//! crc32c   u32      of the body
//! body     len bytes JSON object (TimelineMetadata)
//! ```
//!
//! Written with [`utils::crashsafe::durable_write`] (temp file, fsync, rename, fsync dir), so a
//! crash leaves either the old or the new file. A file that fails any check is reported as
//! [`MetadataError::Corrupt`] and never half-used.

use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::framed_json::Frame;
use utils::id::TimelineId;
use utils::lsn::Lsn;

/// Name of the metadata file in a timeline directory.
pub const METADATA_FILE_NAME: &str = "metadata";
const MAGIC: &[u8; 4] = b"NTLM";
/// Current version of the file format.
pub const METADATA_FORMAT_VERSION: u16 = 1;
/// Upper bound on the body; metadata is a few hundred bytes.
pub const MAX_METADATA_BODY_BYTES: usize = 64 * 1024;
/// Header of the file (see [`crate::framed_json`]).
const METADATA_FRAME: Frame = Frame {
    magic: MAGIC,
    version: METADATA_FORMAT_VERSION,
    max_body_bytes: MAX_METADATA_BODY_BYTES,
};

/// What a timeline must remember across restarts besides its layer files.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TimelineMetadata {
    /// Everything up to here is in layer files that were fsynced before this file was written.
    pub disk_consistent_lsn: Lsn,
    /// Start of the last record before `disk_consistent_lsn`, if known.
    pub prev_record_lsn: Option<Lsn>,
    pub ancestor_timeline: Option<TimelineId>,
    /// Branch point in the ancestor (`Lsn(0)` without ancestor).
    pub ancestor_lsn: Lsn,
    pub latest_gc_cutoff_lsn: Lsn,
    pub initdb_lsn: Lsn,
    pub pg_version: u32,
}

/// Why metadata could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum MetadataError {
    #[error("I/O error on timeline metadata {path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot write timeline metadata {path}: {source}")]
    Write {
        path: String,
        #[source]
        source: utils::crashsafe::CrashsafeError,
    },
    #[error("timeline metadata {path} is corrupt: {reason}")]
    Corrupt { path: String, reason: String },
}

impl TimelineMetadata {
    /// The file's bytes.
    pub fn to_bytes(&self) -> Vec<u8> {
        METADATA_FRAME.encode(self)
    }

    /// Parses and verifies the file's bytes; `Err` holds the reason.
    pub fn from_bytes(buf: &[u8]) -> Result<TimelineMetadata, String> {
        METADATA_FRAME.decode(buf)
    }

    /// Writes the file durably.
    pub fn write(&self, path: &Path) -> Result<(), MetadataError> {
        utils::crashsafe::durable_write(path, &self.to_bytes()).map_err(|source| {
            MetadataError::Write {
                path: path.display().to_string(),
                source,
            }
        })
    }

    /// Reads and verifies the file.
    pub fn read(path: &Path) -> Result<TimelineMetadata, MetadataError> {
        let display = || path.display().to_string();
        let meta = std::fs::metadata(path).map_err(|source| MetadataError::Io {
            path: display(),
            source,
        })?;
        if meta.len() > METADATA_FRAME.max_file_bytes() {
            return Err(MetadataError::Corrupt {
                path: display(),
                reason: format!("file is {} bytes", meta.len()),
            });
        }
        let buf = std::fs::read(path).map_err(|source| MetadataError::Io {
            path: display(),
            source,
        })?;
        TimelineMetadata::from_bytes(&buf).map_err(|reason| MetadataError::Corrupt {
            path: display(),
            reason,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> TimelineMetadata {
        TimelineMetadata {
            disk_consistent_lsn: Lsn(0x16B5A50),
            prev_record_lsn: Some(Lsn(0x16B5A18)),
            ancestor_timeline: Some(TimelineId::generate()),
            ancestor_lsn: Lsn(0x1000),
            latest_gc_cutoff_lsn: Lsn(0x800),
            initdb_lsn: Lsn(0x700),
            pg_version: 15,
        }
    }

    #[test]
    fn roundtrip_on_disk() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(METADATA_FILE_NAME);
        let m = sample();
        m.write(&path).unwrap();
        assert_eq!(TimelineMetadata::read(&path).unwrap(), m);
        let mut m2 = m.clone();
        m2.disk_consistent_lsn = Lsn(0x2000000);
        m2.write(&path).unwrap();
        assert_eq!(TimelineMetadata::read(&path).unwrap(), m2);
    }

    #[test]
    fn every_flipped_byte_is_detected() {
        let bytes = sample().to_bytes();
        for i in 0..bytes.len() {
            let mut b = bytes.clone();
            b[i] ^= 0x40;
            assert!(TimelineMetadata::from_bytes(&b).is_err(), "flip at {i}");
        }
        for n in 0..bytes.len() {
            assert!(
                TimelineMetadata::from_bytes(&bytes[..n]).is_err(),
                "cut at {n}"
            );
        }
    }

    #[test]
    fn corrupt_file_is_a_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(METADATA_FILE_NAME);
        let mut bytes = sample().to_bytes();
        let last = bytes.len() - 2;
        bytes[last] ^= 1;
        std::fs::write(&path, &bytes).unwrap();
        let err = TimelineMetadata::read(&path).unwrap_err();
        assert!(matches!(err, MetadataError::Corrupt { .. }));
        assert!(err.to_string().contains("checksum"), "{err}");
        let missing = TimelineMetadata::read(&dir.path().join("nope")).unwrap_err();
        assert!(matches!(missing, MetadataError::Io { .. }));
    }
}

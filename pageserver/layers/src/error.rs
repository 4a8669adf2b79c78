//! The error type of layer file writing and reading.

use std::io;
use std::path::{Path, PathBuf};

use utils::crashsafe::CrashsafeError;

/// Why writing or reading a layer file failed.
///
/// Corruption of a finished file always surfaces as [`LayerError::ChecksumMismatch`],
/// [`LayerError::Corrupt`], [`LayerError::BadMagic`] or [`LayerError::UnsupportedVersion`]
/// (see [`LayerError::is_corruption`]); never as wrong data or a panic.
#[derive(Debug, thiserror::Error)]
pub enum LayerError {
    /// A system call failed.
    #[error("failed to {op} {}: {source}", path.display())]
    Io {
        /// What was being done, e.g. "read index node of".
        op: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },

    /// Stored bytes do not match their crc32c.
    #[error("checksum mismatch in {what} at offset {offset} of {}", path.display())]
    ChecksumMismatch {
        path: PathBuf,
        /// Byte offset of the checksummed item in the file.
        offset: u64,
        /// What the checksum covers: "summary", "index node", "blob".
        what: &'static str,
    },

    /// The file does not start with the magic number of the expected layer kind.
    #[error("{} is not a {expected} layer file (magic {found:#010x})", path.display())]
    BadMagic {
        path: PathBuf,
        /// "delta" or "image".
        expected: &'static str,
        found: u32,
    },

    /// The file's format version is not one this code reads.
    #[error("{} has unsupported layer format version {version}", path.display())]
    UnsupportedVersion { path: PathBuf, version: u16 },

    /// The file is structurally inconsistent (bad sizes, offsets, ordering, ...).
    #[error("corrupt layer file {}: {reason}", path.display())]
    Corrupt { path: PathBuf, reason: String },

    /// A writer was given an entry that does not sort after the previous one.
    #[error("entries out of order: {next} does not sort after {prev}")]
    OutOfOrder { prev: String, next: String },

    /// A writer was given an entry or range outside what the layer covers.
    #[error("out of range: {reason}")]
    OutOfRange { reason: String },

    /// A value larger than [`crate::blob_io::MAX_BLOB_BYTES`].
    #[error("value of {len} bytes exceeds the limit of {max_bytes} bytes")]
    ValueTooLarge { len: usize, max_bytes: usize },

    /// A writer was finished without any entries; empty layer files are not written.
    #[error("refusing to write an empty layer file")]
    EmptyLayer,

    /// The final layer file already exists; layer files are immutable, never replaced.
    #[error("layer file {} already exists", path.display())]
    AlreadyExists { path: PathBuf },
}

impl LayerError {
    /// An I/O error while doing `op` on `path`.
    pub fn io(op: &'static str, path: &Path, source: io::Error) -> Self {
        LayerError::Io {
            op,
            path: path.to_path_buf(),
            source,
        }
    }

    /// A structural inconsistency in `path`.
    pub fn corrupt(path: &Path, reason: impl Into<String>) -> Self {
        LayerError::Corrupt {
            path: path.to_path_buf(),
            reason: reason.into(),
        }
    }

    /// Whether this error reports damaged or foreign file contents (as opposed to I/O
    /// failures or writer misuse).
    pub fn is_corruption(&self) -> bool {
        matches!(
            self,
            LayerError::ChecksumMismatch { .. }
                | LayerError::Corrupt { .. }
                | LayerError::BadMagic { .. }
                | LayerError::UnsupportedVersion { .. }
        )
    }
}

impl From<CrashsafeError> for LayerError {
    fn from(e: CrashsafeError) -> Self {
        LayerError::Io {
            op: e.op,
            path: e.path,
            source: e.source,
        }
    }
}

//! Ephemeral files: the append-only scratch files behind in-memory layers.
//!
//! An in-memory layer keeps only its index in memory; the values themselves are appended to
//! a temporary file `ephemeral-<n>` in the timeline directory. Writes go through a bounded
//! buffer ([`EPHEMERAL_WRITE_BUFFER_BYTES`]); reads at any offset are served from the file
//! for the flushed part and from the buffer for the tail. The file is never fsynced (its
//! contents are rebuilt from WAL after a crash) and is removed when the value is dropped.
//! Files left behind by a crashed process are garbage: see [`is_ephemeral_file_name`].
//!
//! Each value is stored as a blob `crc32c u32 BE | payload`; the caller keeps the offset and
//! payload length (see [`BlobPos`]) and the checksum is verified on every read.

use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;

use crate::blob_io::MAX_BLOB_BYTES;
use crate::error::LayerError;

/// Bytes buffered in memory before they are written to the file.
pub const EPHEMERAL_WRITE_BUFFER_BYTES: usize = 64 * 1024;

/// File name prefix of ephemeral files.
pub const EPHEMERAL_FILE_PREFIX: &str = "ephemeral-";

/// Size of the checksum stored in front of each blob.
const CRC_BYTES: usize = 4;

/// How many numbers [`EphemeralFile::create`] tries before giving up (a stale file with the
/// same name may exist after a crash).
const MAX_CREATE_ATTEMPTS: usize = 64;

/// Process-wide counter for file names, so two layers never share a file.
static NEXT_EPHEMERAL_ID: AtomicU64 = AtomicU64::new(1);

/// Whether `name` is the name of an ephemeral file (garbage after a restart).
pub fn is_ephemeral_file_name(name: &str) -> bool {
    name.strip_prefix(EPHEMERAL_FILE_PREFIX)
        .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
}

/// Where a blob lies in an ephemeral file: the offset of its checksum and the payload length.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BlobPos {
    pub offset: u64,
    pub len: u32,
}

/// An append-only temporary file, removed on drop.
#[derive(Debug)]
pub struct EphemeralFile {
    file: File,
    path: PathBuf,
    /// Bytes written to the file itself; the buffer holds what follows.
    flushed_bytes: u64,
    buf: Vec<u8>,
}

impl EphemeralFile {
    /// Creates a new, empty `ephemeral-<n>` file in `dir`.
    pub fn create(dir: &Path) -> Result<Self, LayerError> {
        let mut last_err = None;
        for _ in 0..MAX_CREATE_ATTEMPTS {
            let id = NEXT_EPHEMERAL_ID.fetch_add(1, Ordering::Relaxed);
            let path = dir.join(format!("{EPHEMERAL_FILE_PREFIX}{id}"));
            let res = OpenOptions::new()
                .read(true)
                .write(true)
                .create_new(true)
                .open(&path);
            match res {
                Ok(file) => {
                    return Ok(EphemeralFile {
                        file,
                        path,
                        flushed_bytes: 0,
                        buf: Vec::with_capacity(EPHEMERAL_WRITE_BUFFER_BYTES),
                    })
                }
                // A leftover from an earlier process: try the next number.
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                    last_err = Some(LayerError::io("create", &path, e));
                }
                Err(e) => return Err(LayerError::io("create", &path, e)),
            }
        }
        Err(last_err.expect("at least one attempt"))
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Total bytes appended so far (file plus buffer).
    pub fn len_bytes(&self) -> u64 {
        self.flushed_bytes + self.buf.len() as u64
    }

    /// Appends `payload` as a blob and returns where it lies.
    pub fn write_blob(&mut self, payload: &[u8]) -> Result<BlobPos, LayerError> {
        if payload.len() > MAX_BLOB_BYTES {
            return Err(LayerError::ValueTooLarge {
                len: payload.len(),
                max_bytes: MAX_BLOB_BYTES,
            });
        }
        let pos = BlobPos {
            offset: self.len_bytes(),
            len: payload.len() as u32,
        };
        self.append(&crc32c::crc32c(payload).to_be_bytes())?;
        self.append(payload)?;
        Ok(pos)
    }

    /// Reads the blob at `pos` and verifies its checksum.
    pub fn read_blob(&self, pos: BlobPos) -> Result<Bytes, LayerError> {
        let mut data = vec![0u8; CRC_BYTES + pos.len as usize];
        self.read_exact_at(&mut data, pos.offset)?;
        let stored = u32::from_be_bytes(data[..CRC_BYTES].try_into().expect("4 bytes"));
        let payload = Bytes::from(data).slice(CRC_BYTES..);
        if crc32c::crc32c(&payload) != stored {
            return Err(LayerError::ChecksumMismatch {
                path: self.path.clone(),
                offset: pos.offset,
                what: "ephemeral blob",
            });
        }
        Ok(payload)
    }

    fn append(&mut self, mut data: &[u8]) -> Result<(), LayerError> {
        while !data.is_empty() {
            let room = EPHEMERAL_WRITE_BUFFER_BYTES - self.buf.len();
            let n = room.min(data.len());
            self.buf.extend_from_slice(&data[..n]);
            data = &data[n..];
            if self.buf.len() == EPHEMERAL_WRITE_BUFFER_BYTES {
                self.flush_buffer()?;
            }
        }
        Ok(())
    }

    fn flush_buffer(&mut self) -> Result<(), LayerError> {
        self.file
            .write_all_at(&self.buf, self.flushed_bytes)
            .map_err(|e| LayerError::io("write", &self.path, e))?;
        self.flushed_bytes += self.buf.len() as u64;
        self.buf.clear();
        Ok(())
    }

    /// Fills `out` from `offset`: the flushed part from the file, the rest from the buffer.
    fn read_exact_at(&self, out: &mut [u8], offset: u64) -> Result<(), LayerError> {
        let end = offset.checked_add(out.len() as u64);
        if end.is_none_or(|end| end > self.len_bytes()) {
            return Err(LayerError::corrupt(
                &self.path,
                format!(
                    "read of {} bytes at {offset} past the end ({} bytes)",
                    out.len(),
                    self.len_bytes()
                ),
            ));
        }
        let from_file = self
            .flushed_bytes
            .saturating_sub(offset)
            .min(out.len() as u64) as usize;
        if from_file > 0 {
            self.file
                .read_exact_at(&mut out[..from_file], offset)
                .map_err(|e| LayerError::io("read", &self.path, e))?;
        }
        if from_file < out.len() {
            let buf_start = (offset + from_file as u64 - self.flushed_bytes) as usize;
            let rest = out.len() - from_file;
            out[from_file..].copy_from_slice(&self.buf[buf_start..buf_start + rest]);
        }
        Ok(())
    }
}

impl Drop for EphemeralFile {
    fn drop(&mut self) {
        if let Err(e) = fs::remove_file(&self.path) {
            tracing::warn!("failed to remove {}: {e}", self.path.display());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blobs_read_back_across_the_buffer_boundary() {
        let dir = tempfile::tempdir().unwrap();
        let mut f = EphemeralFile::create(dir.path()).unwrap();
        let path = f.path().to_path_buf();
        assert!(is_ephemeral_file_name(
            path.file_name().unwrap().to_str().unwrap()
        ));
        let mut written = Vec::new();
        for i in 0..200usize {
            // Sizes straddle the buffer size now and then; one is larger than the buffer.
            let len = if i == 77 {
                3 * EPHEMERAL_WRITE_BUFFER_BYTES
            } else {
                i * 97
            };
            let payload: Vec<u8> = (0..len).map(|j| (i * 31 + j) as u8).collect();
            let pos = f.write_blob(&payload).unwrap();
            written.push((pos, payload));
            // Reading right after writing is served (partly) from the buffer.
            let (pos, payload) = written.last().unwrap();
            assert_eq!(f.read_blob(*pos).unwrap(), payload[..]);
        }
        for (pos, payload) in &written {
            assert_eq!(f.read_blob(*pos).unwrap(), payload[..]);
        }
        assert!(f.flushed_bytes > 0 && !f.buf.is_empty());
        drop(f);
        assert!(!path.exists(), "dropping removes the file");
    }

    #[test]
    fn corruption_and_bad_positions_are_errors() {
        let dir = tempfile::tempdir().unwrap();
        let mut f = EphemeralFile::create(dir.path()).unwrap();
        let big = vec![7u8; EPHEMERAL_WRITE_BUFFER_BYTES + 10];
        let pos = f.write_blob(&big).unwrap();
        // Flip a byte of the flushed part behind the file's back.
        f.file.write_all_at(&[8u8], pos.offset + 100).unwrap();
        let err = f.read_blob(pos).unwrap_err();
        assert!(matches!(err, LayerError::ChecksumMismatch { .. }), "{err}");
        let past_end = BlobPos {
            offset: f.len_bytes() - 2,
            len: 10,
        };
        let err = f.read_blob(past_end).unwrap_err();
        assert!(matches!(err, LayerError::Corrupt { .. }), "{err}");
    }

    #[test]
    fn names() {
        assert!(is_ephemeral_file_name("ephemeral-12"));
        assert!(!is_ephemeral_file_name("ephemeral-"));
        assert!(!is_ephemeral_file_name("ephemeral-1x"));
        assert!(!is_ephemeral_file_name("delta-1"));
    }
}

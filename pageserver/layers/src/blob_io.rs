//! Blobs: the values of a layer file, each stored as
//! `len u32 BE | crc32c u32 BE | payload (len bytes)`.
//!
//! The crc32c covers the four length bytes followed by the payload, so a flipped bit in the
//! header or anywhere in the payload is reported when that blob is read. Blobs are packed
//! back to back, without alignment, in the file's value area.

use std::ops::Range;

use bytes::Bytes;

use crate::error::LayerError;
use crate::file_io::{AppendFile, ReadFile};

/// Size of a blob header: length and checksum.
pub const BLOB_HEADER_BYTES: usize = 8;

/// Largest payload a blob may hold (writers refuse larger values, readers report a larger
/// length as corruption before allocating anything).
pub const MAX_BLOB_BYTES: usize = 256 * 1024 * 1024;

/// Read window of a reader looking up single values: one read covers a header and an 8 KiB
/// page.
pub const POINT_READ_BYTES: usize = 16 * 1024;

/// Read window of a reader scanning values in file order.
pub const SCAN_READ_BYTES: usize = 256 * 1024;

/// The checksum stored in a blob header.
pub fn blob_crc(payload: &[u8]) -> u32 {
    let len = (payload.len() as u32).to_be_bytes();
    crc32c::crc32c_append(crc32c::crc32c(&len), payload)
}

/// Appends `payload` as a blob to `file`; returns the offset of its header.
pub fn write_blob(file: &mut AppendFile, payload: &[u8]) -> Result<u64, LayerError> {
    if payload.len() > MAX_BLOB_BYTES {
        return Err(LayerError::ValueTooLarge {
            len: payload.len(),
            max_bytes: MAX_BLOB_BYTES,
        });
    }
    let offset = file.offset();
    let mut header = [0u8; BLOB_HEADER_BYTES];
    header[..4].copy_from_slice(&(payload.len() as u32).to_be_bytes());
    header[4..].copy_from_slice(&blob_crc(payload).to_be_bytes());
    file.append(&header)?;
    file.append(payload)?;
    Ok(offset)
}

/// Reads blobs of one file's value area through a bounded window buffer.
///
/// Reads that fall in the window are served from memory, so scanning blobs in file order
/// costs one system call per window rather than per blob.
pub struct BlobReader<'a> {
    file: &'a ReadFile,
    /// Where blobs may lie; anything outside is corruption.
    area: Range<u64>,
    window: Vec<u8>,
    window_start: u64,
    window_cap_bytes: usize,
}

impl<'a> BlobReader<'a> {
    /// A reader of blobs lying within `area` of `file`, reading `window_cap_bytes` at a time
    /// (e.g. [`POINT_READ_BYTES`] or [`SCAN_READ_BYTES`]).
    pub fn new(file: &'a ReadFile, area: Range<u64>, window_cap_bytes: usize) -> Self {
        BlobReader {
            file,
            area,
            window: Vec::new(),
            window_start: 0,
            window_cap_bytes: window_cap_bytes.max(BLOB_HEADER_BYTES),
        }
    }

    fn window_end(&self) -> u64 {
        self.window_start + self.window.len() as u64
    }

    fn in_window(&self, start: u64, len: u64) -> bool {
        start >= self.window_start && start + len <= self.window_end()
    }

    fn window_slice(&self, start: u64, len: usize) -> &[u8] {
        let from = (start - self.window_start) as usize;
        &self.window[from..from + len]
    }

    /// Loads the window with the bytes from `offset` on (up to the end of the area).
    fn fill(&mut self, offset: u64) -> Result<(), LayerError> {
        let n = (self.area.end - offset).min(self.window_cap_bytes as u64) as usize;
        self.window.resize(n, 0);
        self.window_start = offset;
        let res = self.file.read_exact_at(&mut self.window, offset, "blob");
        if res.is_err() {
            self.window.clear();
        }
        res
    }

    /// Reads and verifies the blob whose header is at `offset`.
    pub fn read(&mut self, offset: u64) -> Result<Bytes, LayerError> {
        let header_end = offset.checked_add(BLOB_HEADER_BYTES as u64);
        if offset < self.area.start || header_end.is_none_or(|end| end > self.area.end) {
            return Err(self.corrupt(format!(
                "blob offset {offset} is outside the value area {:?}",
                self.area
            )));
        }
        if !self.in_window(offset, BLOB_HEADER_BYTES as u64) {
            self.fill(offset)?;
        }
        let header = self.window_slice(offset, BLOB_HEADER_BYTES);
        let len = u32::from_be_bytes(header[..4].try_into().expect("4 bytes")) as usize;
        let crc = u32::from_be_bytes(header[4..].try_into().expect("4 bytes"));
        let payload_start = offset + BLOB_HEADER_BYTES as u64;
        if len > MAX_BLOB_BYTES || payload_start + len as u64 > self.area.end {
            return Err(self.corrupt(format!(
                "blob at offset {offset} claims {len} bytes, beyond the value area {:?} or the \
                 {MAX_BLOB_BYTES}-byte limit",
                self.area
            )));
        }
        let payload = self.read_payload(offset, payload_start, len)?;
        if blob_crc(&payload) != crc {
            return Err(LayerError::ChecksumMismatch {
                path: self.file.path().to_path_buf(),
                offset,
                what: "blob",
            });
        }
        Ok(payload)
    }

    /// The `len` payload bytes at `payload_start` of the blob at `offset` (bounds checked).
    fn read_payload(
        &mut self,
        offset: u64,
        payload_start: u64,
        len: usize,
    ) -> Result<Bytes, LayerError> {
        if self.in_window(payload_start, len as u64) {
            return Ok(Bytes::copy_from_slice(
                self.window_slice(payload_start, len),
            ));
        }
        if BLOB_HEADER_BYTES + len <= self.window_cap_bytes {
            self.fill(offset)?;
            return Ok(Bytes::copy_from_slice(
                self.window_slice(payload_start, len),
            ));
        }
        // Larger than the window: read it into its own buffer, reusing what the window holds.
        let mut payload = vec![0u8; len];
        let mut have = 0;
        if self.window_start <= payload_start && payload_start < self.window_end() {
            have = ((self.window_end() - payload_start) as usize).min(len);
            payload[..have].copy_from_slice(self.window_slice(payload_start, have));
        }
        self.file
            .read_exact_at(&mut payload[have..], payload_start + have as u64, "blob")?;
        Ok(Bytes::from(payload))
    }

    fn corrupt(&self, reason: String) -> LayerError {
        LayerError::corrupt(self.file.path(), reason)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::file_io::BLOCK_SIZE_BYTES;

    /// Writes `payloads` after a block of zeros; returns the file, offsets and area.
    fn write_all(dir: &std::path::Path, payloads: &[Vec<u8>]) -> (ReadFile, Vec<u64>, Range<u64>) {
        let path = dir.join("blobs");
        let mut f = AppendFile::create(&path).unwrap();
        f.append(&[0u8; BLOCK_SIZE_BYTES]).unwrap();
        let offsets = payloads
            .iter()
            .map(|p| write_blob(&mut f, p).unwrap())
            .collect();
        let end = f.offset();
        f.sync().unwrap();
        (
            ReadFile::open(&path).unwrap(),
            offsets,
            BLOCK_SIZE_BYTES as u64..end,
        )
    }

    fn payloads() -> Vec<Vec<u8>> {
        vec![
            vec![],
            b"x".to_vec(),
            (0..8192u32).map(|i| i as u8).collect(),
            vec![],
            (0..300_000u32).map(|i| (i * 7) as u8).collect(),
            b"tail".to_vec(),
        ]
    }

    #[test]
    fn round_trip_with_every_window_size() {
        let dir = tempfile::tempdir().unwrap();
        let payloads = payloads();
        let (file, offsets, area) = write_all(dir.path(), &payloads);
        for cap in [1, 8, 20, POINT_READ_BYTES, SCAN_READ_BYTES, 1 << 20] {
            let mut r = BlobReader::new(&file, area.clone(), cap);
            for (p, &o) in payloads.iter().zip(&offsets) {
                assert_eq!(r.read(o).unwrap(), &p[..], "cap {cap}");
            }
            // Backwards, so the window never helps.
            for (p, &o) in payloads.iter().zip(&offsets).rev() {
                assert_eq!(r.read(o).unwrap(), &p[..], "cap {cap}");
            }
        }
    }

    #[test]
    fn bad_offsets_and_lengths_are_errors() {
        let dir = tempfile::tempdir().unwrap();
        let (file, offsets, area) = write_all(dir.path(), &payloads());
        let mut r = BlobReader::new(&file, area.clone(), POINT_READ_BYTES);
        for bad in [0, area.start - 1, area.end - 7, area.end, u64::MAX - 3] {
            let err = r.read(bad).unwrap_err();
            assert!(matches!(err, LayerError::Corrupt { .. }), "{bad}: {err}");
        }
        // The middle of a payload parses as a header with a garbage length or checksum.
        let err = r.read(offsets[2] + 100).unwrap_err();
        assert!(err.is_corruption(), "{err}");
        // A shorter area makes the last blob run past it.
        let mut short = BlobReader::new(&file, area.start..area.end - 1, POINT_READ_BYTES);
        let err = short.read(*offsets.last().unwrap()).unwrap_err();
        assert!(matches!(err, LayerError::Corrupt { .. }), "{err}");
    }

    #[test]
    fn any_flipped_byte_is_detected() {
        let dir = tempfile::tempdir().unwrap();
        let payloads = vec![b"abc".to_vec(), vec![5u8; 40_000]];
        let (file, offsets, area) = write_all(dir.path(), &payloads);
        let bytes = std::fs::read(file.path()).unwrap();
        let path = dir.path().join("flipped");
        // Every byte of the small blob, and a sample of the large one.
        let positions: Vec<u64> = (offsets[0]..offsets[1] + 20)
            .chain((offsets[1]..area.end).step_by(997))
            .chain([area.end - 1])
            .collect();
        for pos in positions {
            let mut copy = bytes.clone();
            copy[pos as usize] ^= 0x10;
            std::fs::write(&path, &copy).unwrap();
            let f = ReadFile::open(&path).unwrap();
            let mut r = BlobReader::new(&f, area.clone(), POINT_READ_BYTES);
            let hit = if pos < offsets[1] { 0 } else { 1 };
            let err = r.read(offsets[hit]).unwrap_err();
            assert!(err.is_corruption(), "flip at {pos}: {err}");
            let other = 1 - hit;
            assert_eq!(r.read(offsets[other]).unwrap(), &payloads[other][..]);
        }
    }

    #[test]
    fn oversized_value_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let mut f = AppendFile::create(&dir.path().join("x")).unwrap();
        let big = vec![0u8; MAX_BLOB_BYTES + 1];
        let err = write_blob(&mut f, &big).unwrap_err();
        assert!(matches!(err, LayerError::ValueTooLarge { .. }), "{err}");
        assert_eq!(f.offset(), 0);
    }
}

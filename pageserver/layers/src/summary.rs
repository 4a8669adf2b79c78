//! Block 0 of a layer file: what the file covers and where its index is.
//!
//! Layout (big-endian), followed by zeros up to 8192 bytes:
//!
//! ```text
//! 0    magic            u32   delta 0x4E52_4C44 ("NRLD"), image 0x4E52_4C49 ("NRLI")
//! 4    format_version   u16   1
//! 6    reserved         u16   0
//! 8    tenant_id        [16]
//! 24   timeline_id      [16]
//! 40   key_start        [18]
//! 58   key_end          [18]  exclusive
//! 76   lsn_start        u64
//! 84   lsn_end          u64   exclusive; image: lsn_start + 1
//! 92   index_start_blk  u32   first index node; the value area is blocks 1..index_start_blk
//! 96   index_root_blk   u32   root node, the last block of the file
//! 100  entry_count      u64   number of index entries (values)
//! 108  crc32c           u32   over bytes 0..108
//! ```

use std::ops::Range;
use std::path::Path;

use pageserver_api::key::{Key, KEY_SIZE_BYTES};
use utils::id::{TenantId, TimelineId};
use utils::lsn::Lsn;

use crate::error::LayerError;
use crate::file_io::BLOCK_SIZE_BYTES;

/// The format version this code writes and reads.
pub const FORMAT_VERSION: u16 = 1;
/// Magic number of delta layer files ("NRLD").
pub const DELTA_MAGIC: u32 = 0x4E52_4C44;
/// Magic number of image layer files ("NRLI").
pub const IMAGE_MAGIC: u32 = 0x4E52_4C49;
/// Bytes of the summary covered by its checksum.
const SUMMARY_BODY_BYTES: usize = 108;
/// Encoded size of the summary (the rest of block 0 is zeros).
pub const SUMMARY_BYTES: usize = SUMMARY_BODY_BYTES + 4;
/// Length of a delta index key: the key, then the LSN (big-endian).
pub const DELTA_INDEX_KEY_BYTES: usize = KEY_SIZE_BYTES + 8;
/// Length of an image index key: the key.
pub const IMAGE_INDEX_KEY_BYTES: usize = KEY_SIZE_BYTES;

/// The two kinds of layer file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LayerKind {
    Delta,
    Image,
}

impl LayerKind {
    pub fn magic(self) -> u32 {
        match self {
            LayerKind::Delta => DELTA_MAGIC,
            LayerKind::Image => IMAGE_MAGIC,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            LayerKind::Delta => "delta",
            LayerKind::Image => "image",
        }
    }

    /// Length of the keys of this kind's index.
    pub fn index_key_len(self) -> usize {
        match self {
            LayerKind::Delta => DELTA_INDEX_KEY_BYTES,
            LayerKind::Image => IMAGE_INDEX_KEY_BYTES,
        }
    }
}

/// The decoded summary block.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Summary {
    pub kind: LayerKind,
    pub tenant_id: TenantId,
    pub timeline_id: TimelineId,
    pub key_range: Range<Key>,
    pub lsn_range: Range<Lsn>,
    pub index_start_blk: u32,
    pub index_root_blk: u32,
    pub entry_count: u64,
}

impl Summary {
    /// The summary's bytes, checksum included.
    pub fn encode(&self) -> [u8; SUMMARY_BYTES] {
        let mut b = [0u8; SUMMARY_BYTES];
        b[0..4].copy_from_slice(&self.kind.magic().to_be_bytes());
        b[4..6].copy_from_slice(&FORMAT_VERSION.to_be_bytes());
        b[8..24].copy_from_slice(self.tenant_id.as_bytes());
        b[24..40].copy_from_slice(self.timeline_id.as_bytes());
        b[40..58].copy_from_slice(&self.key_range.start.to_bytes());
        b[58..76].copy_from_slice(&self.key_range.end.to_bytes());
        b[76..84].copy_from_slice(&self.lsn_range.start.0.to_be_bytes());
        b[84..92].copy_from_slice(&self.lsn_range.end.0.to_be_bytes());
        b[92..96].copy_from_slice(&self.index_start_blk.to_be_bytes());
        b[96..100].copy_from_slice(&self.index_root_blk.to_be_bytes());
        b[100..108].copy_from_slice(&self.entry_count.to_be_bytes());
        let crc = crc32c::crc32c(&b[..SUMMARY_BODY_BYTES]);
        b[SUMMARY_BODY_BYTES..].copy_from_slice(&crc.to_be_bytes());
        b
    }

    /// Decodes the start of a `kind` layer file `path` (`b` may be shorter than a summary
    /// if the file is), checking magic, version and checksum.
    pub fn decode(b: &[u8], kind: LayerKind, path: &Path) -> Result<Summary, LayerError> {
        let short = || {
            LayerError::corrupt(
                path,
                format!("file of {} bytes is too short for a summary", b.len()),
            )
        };
        let magic = u32::from_be_bytes(b.get(0..4).ok_or_else(short)?.try_into().expect("4"));
        if magic != kind.magic() {
            return Err(LayerError::BadMagic {
                path: path.to_path_buf(),
                expected: kind.name(),
                found: magic,
            });
        }
        let b: &[u8; SUMMARY_BYTES] = b
            .get(..SUMMARY_BYTES)
            .ok_or_else(short)?
            .try_into()
            .expect("summary size");
        let version = u16::from_be_bytes([b[4], b[5]]);
        if version != FORMAT_VERSION {
            return Err(LayerError::UnsupportedVersion {
                path: path.to_path_buf(),
                version,
            });
        }
        let stored_crc = u32::from_be_bytes(b[SUMMARY_BODY_BYTES..].try_into().expect("4"));
        if stored_crc != crc32c::crc32c(&b[..SUMMARY_BODY_BYTES]) {
            return Err(LayerError::ChecksumMismatch {
                path: path.to_path_buf(),
                offset: 0,
                what: "summary",
            });
        }
        if b[6..8] != [0, 0] {
            return Err(LayerError::corrupt(
                path,
                "reserved summary bytes are not zero",
            ));
        }
        let u32_at = |i: usize| u32::from_be_bytes(b[i..i + 4].try_into().expect("4"));
        let u64_at = |i: usize| u64::from_be_bytes(b[i..i + 8].try_into().expect("8"));
        let key_at = |i: usize| Key::from_slice(&b[i..i + KEY_SIZE_BYTES]).expect("18 bytes");
        Ok(Summary {
            kind,
            tenant_id: TenantId(b[8..24].try_into().expect("16")),
            timeline_id: TimelineId(b[24..40].try_into().expect("16")),
            key_range: key_at(40)..key_at(58),
            lsn_range: Lsn(u64_at(76))..Lsn(u64_at(84)),
            index_start_blk: u32_at(92),
            index_root_blk: u32_at(96),
            entry_count: u64_at(100),
        })
    }

    /// Checks that the summary is self-consistent and describes a file of `file_size_bytes`.
    pub fn validate(&self, file_size_bytes: u64, path: &Path) -> Result<(), LayerError> {
        let fail = |reason: String| Err(LayerError::corrupt(path, reason));
        if self.key_range.start >= self.key_range.end {
            return fail(format!("empty key range {:?}", self.key_range));
        }
        if self.lsn_range.start >= self.lsn_range.end {
            return fail(format!("empty LSN range {:?}", self.lsn_range));
        }
        if self.kind == LayerKind::Image
            && self.lsn_range.start.0.checked_add(1) != Some(self.lsn_range.end.0)
        {
            return fail(format!("image layer LSN range {:?}", self.lsn_range));
        }
        if self.index_start_blk < 1 || self.index_root_blk < self.index_start_blk {
            return fail(format!(
                "index blocks {}..={} are not after the summary",
                self.index_start_blk, self.index_root_blk
            ));
        }
        if self.entry_count == 0 {
            return fail("layer has no entries".to_string());
        }
        let expected_size = (u64::from(self.index_root_blk) + 1) * BLOCK_SIZE_BYTES as u64;
        if file_size_bytes != expected_size {
            return fail(format!(
                "file is {file_size_bytes} bytes, its summary implies {expected_size}"
            ));
        }
        Ok(())
    }

    /// Number of index nodes.
    pub fn index_blocks(&self) -> u32 {
        self.index_root_blk - self.index_start_blk + 1
    }

    /// Byte range where values may lie: after the summary, before the index.
    pub fn value_area(&self) -> Range<u64> {
        BLOCK_SIZE_BYTES as u64..u64::from(self.index_start_blk) * BLOCK_SIZE_BYTES as u64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Summary {
        Summary {
            kind: LayerKind::Delta,
            tenant_id: TenantId::generate(),
            timeline_id: TimelineId::generate(),
            key_range: Key::MIN..Key::MAX,
            lsn_range: Lsn(10)..Lsn(20),
            index_start_blk: 3,
            index_root_blk: 5,
            entry_count: 7,
        }
    }

    #[test]
    fn round_trip_and_validation() {
        let s = sample();
        let path = Path::new("x");
        let b = s.encode();
        let back = Summary::decode(&b, LayerKind::Delta, path).unwrap();
        assert_eq!(back, s);
        back.validate(6 * 8192, path).unwrap();
        assert_eq!(back.index_blocks(), 3);
        assert_eq!(back.value_area(), 8192..3 * 8192);
        for size in [0, 5 * 8192, 6 * 8192 + 1, 7 * 8192] {
            assert!(back.validate(size, path).is_err());
        }
        let err = Summary::decode(&b, LayerKind::Image, path).unwrap_err();
        assert!(matches!(err, LayerError::BadMagic { .. }), "{err}");
        let err = Summary::decode(&b[..50], LayerKind::Delta, path).unwrap_err();
        assert!(matches!(err, LayerError::Corrupt { .. }), "{err}");
        let err = Summary::decode(&b[..2], LayerKind::Delta, path).unwrap_err();
        assert!(matches!(err, LayerError::Corrupt { .. }), "{err}");
    }

    #[test]
    fn every_flipped_bit_is_an_error() {
        let b = sample().encode();
        for i in 0..SUMMARY_BYTES * 8 {
            let mut bad = b;
            bad[i / 8] ^= 1 << (i % 8);
            let err = Summary::decode(&bad, LayerKind::Delta, Path::new("x")).unwrap_err();
            assert!(err.is_corruption(), "bit {i}: {err}");
        }
    }

    #[test]
    fn inconsistent_summaries_are_rejected() {
        let path = Path::new("x");
        let bad = [
            Summary {
                key_range: Key::MAX..Key::MAX,
                ..sample()
            },
            Summary {
                lsn_range: Lsn(20)..Lsn(20),
                ..sample()
            },
            Summary {
                kind: LayerKind::Image,
                ..sample()
            },
            Summary {
                index_start_blk: 0,
                ..sample()
            },
            Summary {
                index_root_blk: 2,
                ..sample()
            },
            Summary {
                entry_count: 0,
                ..sample()
            },
        ];
        for s in bad {
            let size = (u64::from(s.index_root_blk) + 1) * 8192;
            let err = s.validate(size, path).unwrap_err();
            assert!(matches!(err, LayerError::Corrupt { .. }), "{s:?}: {err}");
        }
    }
}

//! The custom resource manager `neon_cid` (rmid 134) of our compute: the command ids
//! (`t_field3.t_cid` and the `HEAP_COMBOCID` bit) of heap tuples, which heap redo resets.
//!
//! Written by our patched heapam.c (0009 patch) right after a heap record when the
//! `neon_rmgr` library is loaded, replayed by that library. An `XLOG_NEON_CID_SET` record has
//! no main data; it references one or two heap pages (block 0, and block 1 for the old page
//! of an UPDATE that moved the tuple). Each block's data is an array of 8-byte entries
//! ([`NeonCidEntry`]); a block with a full-page image carries no data (the image already has
//! the command ids). See docs/formats.md, "neon_cid WAL records".

use super::reader::Reader;
use super::RecordDecodeError;

pub use crate::pg_constants::RM_NEON_CID_ID;

/// The only record type: set the command ids of some tuples.
pub const XLOG_NEON_CID_SET: u8 = 0x00;
/// Entry flag: the tuple gets `HEAP_COMBOCID` (t_cid is a combo command id); without it the
/// bit is cleared.
pub const XLH_NEON_CID_COMBO: u8 = 0x01;
/// Bytes of one entry.
pub const NEON_CID_ENTRY_BYTES: usize = 8;
/// Most tuples one entry covers (its count is a byte).
pub const NEON_CID_MAX_RUN_TUPLES: u8 = u8::MAX;

/// `xl_neon_cid_entry`: offnum 0 (u16), ntuples 2 (u8), flags 3 (u8), cid 4 (u32).
/// Tuples `offnum .. offnum + ntuples` (line pointer numbers, from 1) get `t_cid = cid`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct NeonCidEntry {
    /// First line pointer (1-based).
    pub offnum: u16,
    /// Consecutive line pointers covered, 1..=255.
    pub ntuples: u8,
    /// `cid` is a combo command id (`HEAP_COMBOCID`).
    pub combo: bool,
    /// The raw `t_field3.t_cid`.
    pub cid: u32,
}

impl NeonCidEntry {
    /// The line pointer numbers the entry covers.
    pub fn offnums(&self) -> impl Iterator<Item = u16> {
        let first = u32::from(self.offnum);
        (first..first + u32::from(self.ntuples)).filter_map(|o| u16::try_from(o).ok())
    }

    /// The entry's 8 bytes, as the compute writes them (little-endian).
    pub fn encode(&self) -> [u8; NEON_CID_ENTRY_BYTES] {
        let mut out = [0u8; NEON_CID_ENTRY_BYTES];
        out[0..2].copy_from_slice(&self.offnum.to_le_bytes());
        out[2] = self.ntuples;
        out[3] = if self.combo { XLH_NEON_CID_COMBO } else { 0 };
        out[4..8].copy_from_slice(&self.cid.to_le_bytes());
        out
    }
}

/// Decodes the data of one block reference of a neon_cid record; `info` is `xl_info`.
///
/// The data must be a non-empty whole number of entries, each covering at least one tuple
/// (none past line pointer 65535) with only known flags.
pub fn decode_neon_cid_block(
    info: u8,
    block_data: &[u8],
) -> Result<Vec<NeonCidEntry>, RecordDecodeError> {
    const W: &str = "xl_neon_cid_entry";
    if info & 0xF0 != XLOG_NEON_CID_SET {
        return Err(RecordDecodeError::UnknownInfo {
            rmgr: "neon_cid",
            info: info & 0xF0,
        });
    }
    if block_data.is_empty() || !block_data.len().is_multiple_of(NEON_CID_ENTRY_BYTES) {
        return Err(RecordDecodeError::InvalidCount {
            what: "bytes of neon_cid block data",
            count: i64::try_from(block_data.len()).unwrap_or(i64::MAX),
        });
    }
    let mut r = Reader::new(block_data);
    let mut entries = Vec::with_capacity(block_data.len() / NEON_CID_ENTRY_BYTES);
    while r.remaining_bytes() > 0 {
        let offnum = r.u16(W)?;
        let ntuples = r.u8(W)?;
        let flags = r.u8(W)?;
        let cid = r.u32(W)?;
        if offnum == 0 || ntuples == 0 || u32::from(offnum) + u32::from(ntuples) - 1 > 0xFFFF {
            return Err(RecordDecodeError::InvalidValue {
                what: "xl_neon_cid_entry offnum/ntuples",
                value: i64::from(offnum) << 16 | i64::from(ntuples),
            });
        }
        if flags & !XLH_NEON_CID_COMBO != 0 {
            return Err(RecordDecodeError::InvalidValue {
                what: "xl_neon_cid_entry flags",
                value: i64::from(flags),
            });
        }
        entries.push(NeonCidEntry {
            offnum,
            ntuples,
            combo: flags & XLH_NEON_CID_COMBO != 0,
            cid,
        });
    }
    Ok(entries)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(offnum: u16, ntuples: u8, combo: bool, cid: u32) -> NeonCidEntry {
        NeonCidEntry {
            offnum,
            ntuples,
            combo,
            cid,
        }
    }

    #[test]
    fn entries_round_trip() {
        let entries = [entry(1, 200, false, 3), entry(7, 1, true, 0)];
        let data: Vec<u8> = entries.iter().flat_map(|e| e.encode()).collect();
        assert_eq!(
            data[..8],
            [1, 0, 200, 0, 3, 0, 0, 0],
            "little-endian C layout"
        );
        assert_eq!(
            decode_neon_cid_block(XLOG_NEON_CID_SET, &data).unwrap(),
            entries
        );
        assert_eq!(entries[0].offnums().count(), 200);
        assert_eq!(entries[1].offnums().collect::<Vec<_>>(), vec![7]);
    }

    #[test]
    fn bad_block_data_is_an_error() {
        let good = entry(3, 2, false, 9).encode();
        assert!(decode_neon_cid_block(XLOG_NEON_CID_SET, &[]).is_err());
        for len in 1..good.len() {
            assert!(decode_neon_cid_block(XLOG_NEON_CID_SET, &good[..len]).is_err());
        }
        let err = decode_neon_cid_block(0x10, &good).unwrap_err();
        assert_eq!(err.to_string(), "unknown info 0x10 for rmgr neon_cid");
        let mut flags = good;
        flags[3] = 0x02;
        assert!(decode_neon_cid_block(XLOG_NEON_CID_SET, &flags).is_err());
        let zero_offnum = entry(0, 1, false, 1).encode();
        assert!(decode_neon_cid_block(XLOG_NEON_CID_SET, &zero_offnum).is_err());
        let no_tuples = entry(1, 0, false, 1).encode();
        assert!(decode_neon_cid_block(XLOG_NEON_CID_SET, &no_tuples).is_err());
        let past_end = entry(u16::MAX, 2, false, 1).encode();
        assert!(decode_neon_cid_block(XLOG_NEON_CID_SET, &past_end).is_err());
        let last = entry(u16::MAX, 1, false, 1);
        assert_eq!(
            decode_neon_cid_block(XLOG_NEON_CID_SET, &last.encode()).unwrap(),
            vec![last]
        );
    }
}

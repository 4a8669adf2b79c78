//! RelMap resource manager (rmid 7): updates of pg_filenode.map files (utils/relmapper.h).

use super::reader::Reader;
use super::RecordDecodeError;

pub const XLOG_RELMAP_UPDATE: u8 = 0x00;

/// `xl_relmap_update`: dbid at 0, tsid at 4, nbytes at 8, data at 12.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RelMapUpdate {
    /// Database, or 0 for the shared map (global/pg_filenode.map).
    pub dbid: u32,
    /// The database's tablespace, or pg_global (1664) for the shared map.
    pub tsid: u32,
    /// New contents of the pg_filenode.map file (`nbytes` bytes).
    pub data: Vec<u8>,
}

/// Decodes the main data of a RelMap-rmgr record; `info` is `xl_info`.
pub fn decode_relmap(info: u8, main_data: &[u8]) -> Result<RelMapUpdate, RecordDecodeError> {
    if info & 0xF0 != XLOG_RELMAP_UPDATE {
        return Err(RecordDecodeError::UnknownInfo {
            rmgr: "RelMap",
            info: info & 0xF0,
        });
    }
    let mut r = Reader::new(main_data);
    r.require(12, "xl_relmap_update")?;
    let dbid = r.u32("xl_relmap_update.dbid")?;
    let tsid = r.u32("xl_relmap_update.tsid")?;
    let nbytes = r.count_i32("xl_relmap_update.nbytes")?;
    let data = r.bytes(nbytes, "xl_relmap_update.data")?.to_vec();
    Ok(RelMapUpdate { dbid, tsid, data })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn update() {
        let mut b = Vec::new();
        for v in [5u32, 1663, 4] {
            b.extend_from_slice(&v.to_le_bytes());
        }
        b.extend_from_slice(&[1, 2, 3, 4]);
        assert_eq!(
            decode_relmap(XLOG_RELMAP_UPDATE, &b).unwrap(),
            RelMapUpdate {
                dbid: 5,
                tsid: 1663,
                data: vec![1, 2, 3, 4]
            }
        );
        assert!(matches!(
            decode_relmap(XLOG_RELMAP_UPDATE, &b[..15]),
            Err(RecordDecodeError::Truncated {
                need_bytes: 16,
                have_bytes: 15,
                ..
            })
        ));
        assert!(decode_relmap(XLOG_RELMAP_UPDATE, &b[..11]).is_err());
        assert!(decode_relmap(0x10, &b).is_err());
    }
}

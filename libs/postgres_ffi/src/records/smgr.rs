//! Storage (smgr) resource manager (rmid 2): relation fork creation and truncation
//! (catalog/storage_xlog.h). Relation deletion is logged in transaction commit/abort records.

use super::reader::Reader;
use super::RecordDecodeError;
use crate::relfile::{ForkNumber, RelFileNode};

pub const XLOG_SMGR_CREATE: u8 = 0x10;
pub const XLOG_SMGR_TRUNCATE: u8 = 0x20;

/// `xl_smgr_truncate.flags`: which forks are truncated.
pub const SMGR_TRUNCATE_HEAP: u32 = 0x0001;
pub const SMGR_TRUNCATE_VM: u32 = 0x0002;
pub const SMGR_TRUNCATE_FSM: u32 = 0x0004;
pub const SMGR_TRUNCATE_ALL: u32 = SMGR_TRUNCATE_HEAP | SMGR_TRUNCATE_VM | SMGR_TRUNCATE_FSM;

/// A decoded smgr record.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SmgrRecord {
    /// `xl_smgr_create` (16 bytes): rnode at 0, forkNum (C enum, 4 bytes) at 12.
    Create {
        rnode: RelFileNode,
        forknum: ForkNumber,
    },
    /// `xl_smgr_truncate` (20 bytes): blkno at 0, rnode at 4, flags at 16.
    Truncate(SmgrTruncate),
}

/// Truncate the forks named by `flags` of `rnode` to `blkno` heap blocks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SmgrTruncate {
    /// New length of the main fork, in blocks.
    pub blkno: u32,
    pub rnode: RelFileNode,
    /// `SMGR_TRUNCATE_*` bits.
    pub flags: u32,
}

impl SmgrTruncate {
    /// The main fork is truncated.
    pub fn truncates_heap(&self) -> bool {
        self.flags & SMGR_TRUNCATE_HEAP != 0
    }

    /// The visibility map is truncated to match.
    pub fn truncates_vm(&self) -> bool {
        self.flags & SMGR_TRUNCATE_VM != 0
    }

    /// The free space map is truncated to match.
    pub fn truncates_fsm(&self) -> bool {
        self.flags & SMGR_TRUNCATE_FSM != 0
    }
}

/// Reads a 12-byte `RelFileNode` (spcNode, dbNode, relNode).
pub(crate) fn read_rel_file_node(
    r: &mut Reader<'_>,
    what: &'static str,
) -> Result<RelFileNode, RecordDecodeError> {
    r.require(12, what)?;
    Ok(RelFileNode {
        spcnode: r.u32(what)?,
        dbnode: r.u32(what)?,
        relnode: r.u32(what)?,
    })
}

/// Decodes the main data of an smgr record; `info` is `xl_info`.
pub fn decode_smgr(info: u8, main_data: &[u8]) -> Result<SmgrRecord, RecordDecodeError> {
    let mut r = Reader::new(main_data);
    match info & 0xF0 {
        XLOG_SMGR_CREATE => {
            r.require(16, "xl_smgr_create")?;
            let rnode = read_rel_file_node(&mut r, "xl_smgr_create.rnode")?;
            let fork = r.i32("xl_smgr_create.forkNum")?;
            let forknum = u8::try_from(fork)
                .ok()
                .and_then(ForkNumber::from_u8)
                .ok_or(RecordDecodeError::InvalidValue {
                    what: "xl_smgr_create.forkNum",
                    value: i64::from(fork),
                })?;
            Ok(SmgrRecord::Create { rnode, forknum })
        }
        XLOG_SMGR_TRUNCATE => {
            r.require(20, "xl_smgr_truncate")?;
            let blkno = r.u32("xl_smgr_truncate.blkno")?;
            let rnode = read_rel_file_node(&mut r, "xl_smgr_truncate.rnode")?;
            let flags = r.u32("xl_smgr_truncate.flags")?;
            Ok(SmgrRecord::Truncate(SmgrTruncate {
                blkno,
                rnode,
                flags,
            }))
        }
        other => Err(RecordDecodeError::UnknownInfo {
            rmgr: "Storage",
            info: other,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rnode_bytes() -> Vec<u8> {
        [1663u32, 5, 16384]
            .iter()
            .flat_map(|v| v.to_le_bytes())
            .collect()
    }

    const RNODE: RelFileNode = RelFileNode {
        spcnode: 1663,
        dbnode: 5,
        relnode: 16384,
    };

    #[test]
    fn create() {
        let mut b = rnode_bytes();
        b.extend_from_slice(&2i32.to_le_bytes());
        assert_eq!(
            decode_smgr(XLOG_SMGR_CREATE, &b).unwrap(),
            SmgrRecord::Create {
                rnode: RNODE,
                forknum: ForkNumber::VisibilityMap
            }
        );
        assert!(decode_smgr(XLOG_SMGR_CREATE, &b[..15]).is_err());
        let mut bad = rnode_bytes();
        bad.extend_from_slice(&7i32.to_le_bytes());
        assert!(matches!(
            decode_smgr(XLOG_SMGR_CREATE, &bad),
            Err(RecordDecodeError::InvalidValue { value: 7, .. })
        ));
    }

    #[test]
    fn truncate() {
        let mut b = 10u32.to_le_bytes().to_vec();
        b.extend_from_slice(&rnode_bytes());
        b.extend_from_slice(&SMGR_TRUNCATE_ALL.to_le_bytes());
        let rec = decode_smgr(XLOG_SMGR_TRUNCATE, &b).unwrap();
        let SmgrRecord::Truncate(t) = rec else {
            panic!("expected Truncate, got {rec:?}")
        };
        assert_eq!((t.blkno, t.rnode), (10, RNODE));
        assert!(t.truncates_heap() && t.truncates_vm() && t.truncates_fsm());
        assert!(decode_smgr(XLOG_SMGR_TRUNCATE, &b[..19]).is_err());
        assert!(matches!(
            decode_smgr(0x30, &b),
            Err(RecordDecodeError::UnknownInfo { info: 0x30, .. })
        ));
    }
}

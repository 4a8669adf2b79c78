//! Typed decoding of the main data of PostgreSQL 15 WAL records.
//!
//! The WAL decoder splits a record into its header, block references and main data; this module
//! interprets the main data of the resource managers a pageserver must understand. Each rmgr has
//! a function taking `xl_info` (the rmgr-specific bits are `info & 0xF0`) and the main data, and
//! returning a typed enum; [`decode_main_data`] dispatches on the rmgr ID.
//!
//! Layouts are those of x86-64 (little-endian, C alignment and padding). Every read is bounds
//! checked: bad or short input gives a [`RecordDecodeError`], never a panic.

mod checkpoint;
pub mod clog;
pub mod dbase;
pub mod heap;
pub mod heap2;
pub mod logicalmsg;
pub mod multixact;
pub mod neon_cid;
pub(crate) mod reader;
pub mod relmap;
pub mod smgr;
pub mod standby;
pub mod xact;
pub mod xact_prepare;
pub mod xlog;

pub use checkpoint::CheckPoint;
pub use clog::{decode_clog, ClogRecord};
pub use dbase::{decode_dbase, DbaseRecord};
pub use heap::{
    decode_heap, HeapDelete, HeapInsert, HeapLock, HeapRecord, HeapTruncate, HeapUpdate,
};
pub use heap2::{decode_heap2, Heap2Record, HeapMultiInsert, HeapNewCid, HeapRewriteMapping};
pub use logicalmsg::{decode_logical_message, LogicalMessage};
pub use multixact::{
    decode_multixact, MultiXactCreate, MultiXactMember, MultiXactRecord, MultiXactStatus,
    MultiXactTruncate,
};
pub use neon_cid::{decode_neon_cid_block, NeonCidEntry};
pub use relmap::{decode_relmap, RelMapUpdate};
pub use smgr::{decode_smgr, SmgrRecord, SmgrTruncate};
pub use standby::{decode_standby, RunningXacts, StandbyLock, StandbyRecord};
pub use xact::{
    decode_xact, SharedInvalMessage, XactOrigin, XactParsedRecord, XactRecord, XactStatsItem,
};
pub use xact_prepare::{XactPrepare, XactPrepareHeader};
pub use xlog::{decode_xlog, ParameterChange, XlogRecord};

/// PostgreSQL `TimestampTz`: microseconds since 2000-01-01 00:00:00 UTC.
pub type TimestampTz = i64;

/// Resource manager IDs (access/rmgrlist.h), re-exported from [`crate::pg_constants`].
pub mod rmgr {
    pub use crate::pg_constants::{
        RM_BRIN_ID, RM_BTREE_ID, RM_CLOG_ID, RM_COMMIT_TS_ID, RM_DBASE_ID, RM_GENERIC_ID,
        RM_GIN_ID, RM_GIST_ID, RM_HASH_ID, RM_HEAP2_ID, RM_HEAP_ID, RM_LOGICALMSG_ID,
        RM_MAX_BUILTIN_ID, RM_MULTIXACT_ID, RM_NEON_CID_ID, RM_RELMAP_ID, RM_REPLORIGIN_ID,
        RM_SEQ_ID, RM_SMGR_ID, RM_SPGIST_ID, RM_STANDBY_ID, RM_TBLSPC_ID, RM_XACT_ID, RM_XLOG_ID,
    };
}

/// Why a record's main data could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RecordDecodeError {
    /// The main data ends before the field `what`.
    #[error("truncated {what}: need {need_bytes} bytes of main data, have {have_bytes}")]
    Truncated {
        need_bytes: usize,
        have_bytes: usize,
        what: &'static str,
    },
    /// `info & 0xF0` (or the opcode part of it) is not a record type of this rmgr.
    #[error("unknown info 0x{info:02X} for rmgr {rmgr}")]
    UnknownInfo { rmgr: &'static str, info: u8 },
    /// An element count is negative or too large.
    #[error("invalid count {count} for {what}")]
    InvalidCount { what: &'static str, count: i64 },
    /// A field holds a value PostgreSQL 15 never writes (e.g. a fork number of 7).
    #[error("invalid value {value} for {what}")]
    InvalidValue { what: &'static str, value: i64 },
}

/// Which heap page's visibility-map bits a record clears.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum VmHeapPage {
    /// The heap page of block reference `n` of the record.
    BlockRef(u8),
    /// The old page of an UPDATE: block reference 1 when the record has one, otherwise block
    /// reference 0 (old and new tuple on the same page).
    UpdateOldPage,
}

/// Visibility-map bits a heap record clears for one heap page.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct VmClear {
    pub heap_page: VmHeapPage,
    /// The all-visible bit is cleared.
    pub all_visible: bool,
    /// The all-frozen bit is cleared.
    pub all_frozen: bool,
}

/// The decoded main data of a record of one of the rmgrs we interpret.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TypedRecord {
    Xlog(XlogRecord),
    Xact(XactRecord),
    Smgr(SmgrRecord),
    Clog(ClogRecord),
    Dbase(DbaseRecord),
    MultiXact(MultiXactRecord),
    RelMap(RelMapUpdate),
    Standby(StandbyRecord),
    Heap2(Heap2Record),
    Heap(HeapRecord),
    LogicalMessage(LogicalMessage),
}

impl TypedRecord {
    /// Visibility-map bits cleared by a Heap/Heap2 record; empty for other records.
    pub fn clears_visibility_map(&self) -> Vec<VmClear> {
        match self {
            TypedRecord::Heap(rec) => rec.clears_visibility_map(),
            TypedRecord::Heap2(rec) => rec.clears_visibility_map(),
            _ => Vec::new(),
        }
    }
}

/// Decodes the main data of a record of rmgr `rmid` with `xl_info` = `info` and
/// `xl_xid` = `xid`.
///
/// Returns `Ok(None)` for rmgrs whose records are only replayed by PostgreSQL itself (Btree,
/// Hash, Gin, Gist, Sequence, SPGist, BRIN, Generic, Tablespace, CommitTs, ReplicationOrigin)
/// and for unknown or custom rmgr IDs. Our compute's `neon_cid` records ([`RM_NEON_CID_ID`](
/// rmgr::RM_NEON_CID_ID)) have no main data, only block data: see [`decode_neon_cid_block`].
pub fn decode_main_data(
    rmid: u8,
    info: u8,
    xid: u32,
    main_data: &[u8],
) -> Result<Option<TypedRecord>, RecordDecodeError> {
    use rmgr::*;
    let rec = match rmid {
        RM_XLOG_ID => TypedRecord::Xlog(decode_xlog(info, main_data)?),
        RM_XACT_ID => TypedRecord::Xact(decode_xact(info, xid, main_data)?),
        RM_SMGR_ID => TypedRecord::Smgr(decode_smgr(info, main_data)?),
        RM_CLOG_ID => TypedRecord::Clog(decode_clog(info, main_data)?),
        RM_DBASE_ID => TypedRecord::Dbase(decode_dbase(info, main_data)?),
        RM_MULTIXACT_ID => TypedRecord::MultiXact(decode_multixact(info, main_data)?),
        RM_RELMAP_ID => TypedRecord::RelMap(decode_relmap(info, main_data)?),
        RM_STANDBY_ID => TypedRecord::Standby(decode_standby(info, main_data)?),
        RM_HEAP2_ID => TypedRecord::Heap2(decode_heap2(info, main_data)?),
        RM_HEAP_ID => TypedRecord::Heap(decode_heap(info, main_data)?),
        RM_LOGICALMSG_ID => TypedRecord::LogicalMessage(decode_logical_message(info, main_data)?),
        _ => return Ok(None),
    };
    Ok(Some(rec))
}

#[cfg(test)]
mod tests {
    use super::rmgr::*;
    use super::*;

    #[test]
    fn dispatch() {
        let rec =
            decode_main_data(RM_XLOG_ID, xlog::XLOG_NEXTOID, 0, &16384u32.to_le_bytes()).unwrap();
        assert_eq!(
            rec,
            Some(TypedRecord::Xlog(XlogRecord::NextOid { next_oid: 16384 }))
        );
        let rec =
            decode_main_data(RM_CLOG_ID, clog::CLOG_ZEROPAGE, 0, &1u32.to_le_bytes()).unwrap();
        assert_eq!(
            rec,
            Some(TypedRecord::Clog(ClogRecord::ZeroPage { pageno: 1 }))
        );
        let commit =
            decode_main_data(RM_XACT_ID, xact::XLOG_XACT_COMMIT, 735, &0i64.to_le_bytes()).unwrap();
        let Some(TypedRecord::Xact(XactRecord::Commit(p))) = commit else {
            panic!("expected a commit, got {commit:?}")
        };
        assert_eq!(p.xid, 735);
    }

    #[test]
    fn uninterpreted_rmgrs_give_none() {
        for rmid in [
            RM_TBLSPC_ID,
            RM_BTREE_ID,
            RM_HASH_ID,
            RM_GIN_ID,
            RM_GIST_ID,
            RM_SEQ_ID,
            RM_SPGIST_ID,
            RM_BRIN_ID,
            RM_COMMIT_TS_ID,
            RM_REPLORIGIN_ID,
            RM_GENERIC_ID,
            RM_NEON_CID_ID,
            22,
            128,
            255,
        ] {
            assert_eq!(decode_main_data(rmid, 0, 0, &[]), Ok(None), "rmid {rmid}");
        }
    }

    #[test]
    fn heap_vm_clears_through_typed_record() {
        let b = [
            &1u16.to_le_bytes()[..],
            &[heap::XLH_INSERT_ALL_VISIBLE_CLEARED],
        ]
        .concat();
        let rec = decode_main_data(RM_HEAP_ID, heap::XLOG_HEAP_INSERT, 0, &b)
            .unwrap()
            .unwrap();
        assert_eq!(rec.clears_visibility_map().len(), 1);
        let err = decode_main_data(RM_HEAP_ID, heap::XLOG_HEAP_INSERT, 0, &b[..1]).unwrap_err();
        assert_eq!(
            err.to_string(),
            "truncated xl_heap_insert: need 3 bytes of main data, have 1"
        );
    }
}

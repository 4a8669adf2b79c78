//! Heap2 resource manager (rmid 9): the heapam records that did not fit in the Heap rmgr's
//! opcode space (access/heapam_xlog.h).

use utils::lsn::Lsn;

use super::heap::{
    both_bits_if, HeapLock, XLH_INSERT_ALL_VISIBLE_CLEARED, XLOG_HEAP_INIT_PAGE, XLOG_HEAP_OPMASK,
};
use super::reader::Reader;
use super::{RecordDecodeError, VmClear, VmHeapPage};
use crate::relfile::RelFileNode;

pub const XLOG_HEAP2_REWRITE: u8 = 0x00;
pub const XLOG_HEAP2_PRUNE: u8 = 0x10;
pub const XLOG_HEAP2_VACUUM: u8 = 0x20;
pub const XLOG_HEAP2_FREEZE_PAGE: u8 = 0x30;
pub const XLOG_HEAP2_VISIBLE: u8 = 0x40;
pub const XLOG_HEAP2_MULTI_INSERT: u8 = 0x50;
pub const XLOG_HEAP2_LOCK_UPDATED: u8 = 0x60;
pub const XLOG_HEAP2_NEW_CID: u8 = 0x70;

/// Visibility-map bits (access/visibilitymapdefs.h), used in `xl_heap_visible.flags`.
pub const VISIBILITYMAP_ALL_VISIBLE: u8 = 0x01;
pub const VISIBILITYMAP_ALL_FROZEN: u8 = 0x02;

/// A decoded Heap2-rmgr record.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Heap2Record {
    /// Logical-rewrite mapping file write (`xl_heap_rewrite_mapping`); no page is touched.
    Rewrite(HeapRewriteMapping),
    /// Page pruning (`xl_heap_prune`, 8 bytes); offsets are in block 0's data.
    Prune {
        latest_removed_xid: u32,
        nredirected: u16,
        ndead: u16,
    },
    /// VACUUM's second heap pass (`xl_heap_vacuum`, 2 bytes); offsets are in block 0's data.
    Vacuum {
        nunused: u16,
    },
    /// Tuple freezing (`xl_heap_freeze_page`, 6 bytes); freeze plans are in block 0's data.
    FreezePage {
        cutoff_xid: u32,
        ntuples: u16,
    },
    /// Setting VM bits (`xl_heap_visible`, 5 bytes). Block 0: VM page; block 1: heap page.
    Visible {
        cutoff_xid: u32,
        /// `VISIBILITYMAP_*` bits being set.
        flags: u8,
    },
    MultiInsert(HeapMultiInsert),
    /// Locking an updated tuple version (`xl_heap_lock_updated`); `xmax` is the new xmax.
    LockUpdated(HeapLock),
    /// Combo-CID bookkeeping for logical decoding (`xl_heap_new_cid`).
    NewCid(HeapNewCid),
}

/// `xl_heap_multi_insert`: flags at 0, ntuples at 2, offsets at 4 (SizeOfHeapMultiInsert = 4).
/// Block 0: the heap page, with the tuples in its data.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HeapMultiInsert {
    /// `XLOG_HEAP_INIT_PAGE` was set in `xl_info`.
    pub init_page: bool,
    /// `XLH_INSERT_*` bits.
    pub flags: u8,
    pub ntuples: u16,
    /// Offsets of the inserted tuples. Empty when `init_page`: the tuples then go to offsets
    /// 1..=ntuples and PostgreSQL does not log them.
    pub offsets: Vec<u16>,
}

/// `xl_heap_new_cid` (SizeOfHeapNewCid = 34).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HeapNewCid {
    pub top_xid: u32,
    pub cmin: u32,
    pub cmax: u32,
    pub combocid: u32,
    pub target_node: RelFileNode,
    /// Block number of `target_tid`.
    pub target_blkno: u32,
    /// Offset number of `target_tid`.
    pub target_offnum: u16,
}

/// `xl_heap_rewrite_mapping` (sizeof = 40; mapping data follows and is not kept).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HeapRewriteMapping {
    pub mapped_xid: u32,
    pub mapped_db: u32,
    pub mapped_rel: u32,
    /// Offset into the mapping file (off_t).
    pub offset_bytes: i64,
    pub num_mappings: u32,
    pub start_lsn: Lsn,
}

/// Decodes the main data of a Heap2-rmgr record; `info` is `xl_info`.
pub fn decode_heap2(info: u8, main_data: &[u8]) -> Result<Heap2Record, RecordDecodeError> {
    let mut r = Reader::new(main_data);
    let rec = match info & XLOG_HEAP_OPMASK {
        XLOG_HEAP2_REWRITE => Heap2Record::Rewrite(decode_rewrite(&mut r)?),
        XLOG_HEAP2_PRUNE => {
            r.require(8, "xl_heap_prune")?;
            Heap2Record::Prune {
                latest_removed_xid: r.u32("xl_heap_prune")?,
                nredirected: r.u16("xl_heap_prune")?,
                ndead: r.u16("xl_heap_prune")?,
            }
        }
        XLOG_HEAP2_VACUUM => Heap2Record::Vacuum {
            nunused: r.u16("xl_heap_vacuum.nunused")?,
        },
        XLOG_HEAP2_FREEZE_PAGE => {
            r.require(6, "xl_heap_freeze_page")?;
            Heap2Record::FreezePage {
                cutoff_xid: r.u32("xl_heap_freeze_page")?,
                ntuples: r.u16("xl_heap_freeze_page")?,
            }
        }
        XLOG_HEAP2_VISIBLE => {
            r.require(5, "xl_heap_visible")?;
            Heap2Record::Visible {
                cutoff_xid: r.u32("xl_heap_visible")?,
                flags: r.u8("xl_heap_visible")?,
            }
        }
        XLOG_HEAP2_MULTI_INSERT => Heap2Record::MultiInsert(decode_multi_insert(&mut r, info)?),
        XLOG_HEAP2_LOCK_UPDATED => {
            Heap2Record::LockUpdated(HeapLock::decode(&mut r, "xl_heap_lock_updated")?)
        }
        // The opcode is 3 bits wide and all eight values are defined: this is XLOG_HEAP2_NEW_CID.
        _ => Heap2Record::NewCid(decode_new_cid(&mut r)?),
    };
    Ok(rec)
}

fn decode_multi_insert(r: &mut Reader<'_>, info: u8) -> Result<HeapMultiInsert, RecordDecodeError> {
    const W: &str = "xl_heap_multi_insert";
    r.require(4, W)?;
    let flags = r.u8(W)?;
    r.skip(1, W)?;
    let ntuples = r.u16(W)?;
    let init_page = info & XLOG_HEAP_INIT_PAGE != 0;
    let offsets = if init_page {
        Vec::new()
    } else {
        r.u16_vec(usize::from(ntuples), "xl_heap_multi_insert.offsets")?
    };
    Ok(HeapMultiInsert {
        init_page,
        flags,
        ntuples,
        offsets,
    })
}

/// top_xid 0, cmin 4, cmax 8, combocid 12, target_node 16..28, target_tid 28..34
/// (ItemPointerData: bi_hi, bi_lo, ip_posid).
fn decode_new_cid(r: &mut Reader<'_>) -> Result<HeapNewCid, RecordDecodeError> {
    const W: &str = "xl_heap_new_cid";
    r.require(34, W)?;
    let top_xid = r.u32(W)?;
    let cmin = r.u32(W)?;
    let cmax = r.u32(W)?;
    let combocid = r.u32(W)?;
    let target_node = RelFileNode {
        spcnode: r.u32(W)?,
        dbnode: r.u32(W)?,
        relnode: r.u32(W)?,
    };
    let bi_hi = r.u16(W)?;
    let bi_lo = r.u16(W)?;
    Ok(HeapNewCid {
        top_xid,
        cmin,
        cmax,
        combocid,
        target_node,
        target_blkno: (u32::from(bi_hi) << 16) | u32::from(bi_lo),
        target_offnum: r.u16(W)?,
    })
}

/// mapped_xid 0, mapped_db 4, mapped_rel 8, offset 16 (after 4 padding), num_mappings 24,
/// start_lsn 32 (after 4 padding).
fn decode_rewrite(r: &mut Reader<'_>) -> Result<HeapRewriteMapping, RecordDecodeError> {
    const W: &str = "xl_heap_rewrite_mapping";
    r.require(40, W)?;
    let mapped_xid = r.u32(W)?;
    let mapped_db = r.u32(W)?;
    let mapped_rel = r.u32(W)?;
    r.skip(4, W)?;
    let offset_bytes = r.i64(W)?;
    let num_mappings = r.u32(W)?;
    r.skip(4, W)?;
    Ok(HeapRewriteMapping {
        mapped_xid,
        mapped_db,
        mapped_rel,
        offset_bytes,
        num_mappings,
        start_lsn: r.lsn(W)?,
    })
}

impl Heap2Record {
    /// Visibility-map bits this record clears (see [`super::heap::HeapRecord::clears_visibility_map`]).
    /// `Visible` *sets* bits and is not reported here.
    pub fn clears_visibility_map(&self) -> Vec<VmClear> {
        match self {
            Heap2Record::MultiInsert(mi) => both_bits_if(
                mi.flags & XLH_INSERT_ALL_VISIBLE_CLEARED != 0,
                VmHeapPage::BlockRef(0),
            ),
            Heap2Record::LockUpdated(lock) => lock.clears_visibility_map(),
            _ => Vec::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::records::heap::XLH_LOCK_ALL_FROZEN_CLEARED;

    #[test]
    fn prune_vacuum_freeze_visible() {
        let b = [
            &9u32.to_le_bytes()[..],
            &2u16.to_le_bytes(),
            &3u16.to_le_bytes(),
        ]
        .concat();
        assert_eq!(
            decode_heap2(XLOG_HEAP2_PRUNE, &b).unwrap(),
            Heap2Record::Prune {
                latest_removed_xid: 9,
                nredirected: 2,
                ndead: 3
            }
        );
        assert!(decode_heap2(XLOG_HEAP2_PRUNE, &b[..7]).is_err());
        assert_eq!(
            decode_heap2(XLOG_HEAP2_VACUUM, &4u16.to_le_bytes()).unwrap(),
            Heap2Record::Vacuum { nunused: 4 }
        );
        assert_eq!(
            decode_heap2(XLOG_HEAP2_FREEZE_PAGE, &b[..6]).unwrap(),
            Heap2Record::FreezePage {
                cutoff_xid: 9,
                ntuples: 2
            }
        );
        let v = [
            &77u32.to_le_bytes()[..],
            &[VISIBILITYMAP_ALL_VISIBLE | VISIBILITYMAP_ALL_FROZEN],
        ]
        .concat();
        let rec = decode_heap2(XLOG_HEAP2_VISIBLE, &v).unwrap();
        assert_eq!(
            rec,
            Heap2Record::Visible {
                cutoff_xid: 77,
                flags: 3
            }
        );
        assert!(rec.clears_visibility_map().is_empty());
        assert!(decode_heap2(XLOG_HEAP2_VISIBLE, &v[..4]).is_err());
    }

    #[test]
    fn multi_insert_with_and_without_offsets() {
        let b = [
            &[XLH_INSERT_ALL_VISIBLE_CLEARED, 0][..],
            &3u16.to_le_bytes(),
            &5u16.to_le_bytes(),
            &6u16.to_le_bytes(),
            &7u16.to_le_bytes(),
        ]
        .concat();
        let rec = decode_heap2(XLOG_HEAP2_MULTI_INSERT, &b).unwrap();
        assert_eq!(
            rec,
            Heap2Record::MultiInsert(HeapMultiInsert {
                init_page: false,
                flags: XLH_INSERT_ALL_VISIBLE_CLEARED,
                ntuples: 3,
                offsets: vec![5, 6, 7]
            })
        );
        assert_eq!(rec.clears_visibility_map().len(), 1);
        assert!(decode_heap2(XLOG_HEAP2_MULTI_INSERT, &b[..9]).is_err());
        let init = decode_heap2(XLOG_HEAP2_MULTI_INSERT | XLOG_HEAP_INIT_PAGE, &b[..4]).unwrap();
        assert_eq!(
            init,
            Heap2Record::MultiInsert(HeapMultiInsert {
                init_page: true,
                flags: XLH_INSERT_ALL_VISIBLE_CLEARED,
                ntuples: 3,
                offsets: vec![]
            })
        );
    }

    #[test]
    fn lock_updated() {
        let b = [
            &42u32.to_le_bytes()[..],
            &2u16.to_le_bytes(),
            &[0, XLH_LOCK_ALL_FROZEN_CLEARED],
        ]
        .concat();
        let rec = decode_heap2(XLOG_HEAP2_LOCK_UPDATED, &b).unwrap();
        assert_eq!(
            rec,
            Heap2Record::LockUpdated(HeapLock {
                xmax: 42,
                offnum: 2,
                infobits_set: 0,
                flags: XLH_LOCK_ALL_FROZEN_CLEARED
            })
        );
        let clears = rec.clears_visibility_map();
        assert!(clears[0].all_frozen && !clears[0].all_visible);
    }

    #[test]
    fn new_cid() {
        let mut b = Vec::new();
        for v in [700u32, 1, 2, 3, 1663, 5, 16384] {
            b.extend_from_slice(&v.to_le_bytes());
        }
        b.extend_from_slice(&1u16.to_le_bytes()); // bi_hi
        b.extend_from_slice(&2u16.to_le_bytes()); // bi_lo
        b.extend_from_slice(&9u16.to_le_bytes()); // ip_posid
        let rec = decode_heap2(XLOG_HEAP2_NEW_CID, &b).unwrap();
        let Heap2Record::NewCid(nc) = rec else {
            panic!("expected NewCid, got {rec:?}")
        };
        assert_eq!(nc.top_xid, 700);
        assert_eq!(nc.combocid, 3);
        assert_eq!(
            nc.target_node,
            RelFileNode {
                spcnode: 1663,
                dbnode: 5,
                relnode: 16384
            }
        );
        assert_eq!(nc.target_blkno, 0x0001_0002);
        assert_eq!(nc.target_offnum, 9);
        assert!(decode_heap2(XLOG_HEAP2_NEW_CID, &b[..33]).is_err());
    }

    #[test]
    fn rewrite() {
        let mut b = Vec::new();
        for v in [10u32, 5, 16384, 0xFFFF_FFFF] {
            b.extend_from_slice(&v.to_le_bytes());
        }
        b.extend_from_slice(&4096i64.to_le_bytes());
        b.extend_from_slice(&3u32.to_le_bytes());
        b.extend_from_slice(&[0xAA; 4]);
        b.extend_from_slice(&0x0300_0028u64.to_le_bytes());
        b.extend_from_slice(b"mapping data");
        assert_eq!(
            decode_heap2(XLOG_HEAP2_REWRITE, &b).unwrap(),
            Heap2Record::Rewrite(HeapRewriteMapping {
                mapped_xid: 10,
                mapped_db: 5,
                mapped_rel: 16384,
                offset_bytes: 4096,
                num_mappings: 3,
                start_lsn: Lsn(0x0300_0028)
            })
        );
        assert!(decode_heap2(XLOG_HEAP2_REWRITE, &b[..39]).is_err());
    }
}

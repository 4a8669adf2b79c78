//! Heap resource manager (rmid 10): main data of heapam's WAL records (access/heapam_xlog.h),
//! and which visibility-map bits a record clears.

use super::reader::Reader;
use super::{RecordDecodeError, VmClear, VmHeapPage};

pub const XLOG_HEAP_INSERT: u8 = 0x00;
pub const XLOG_HEAP_DELETE: u8 = 0x10;
pub const XLOG_HEAP_UPDATE: u8 = 0x20;
pub const XLOG_HEAP_TRUNCATE: u8 = 0x30;
pub const XLOG_HEAP_HOT_UPDATE: u8 = 0x40;
pub const XLOG_HEAP_CONFIRM: u8 = 0x50;
pub const XLOG_HEAP_LOCK: u8 = 0x60;
pub const XLOG_HEAP_INPLACE: u8 = 0x70;
/// Mask selecting the opcode in `xl_info` (Heap and Heap2).
pub const XLOG_HEAP_OPMASK: u8 = 0x70;
/// The record's page is (re)initialised from scratch by replay.
pub const XLOG_HEAP_INIT_PAGE: u8 = 0x80;

/// `xl_heap_insert` / `xl_heap_multi_insert` flags.
pub const XLH_INSERT_ALL_VISIBLE_CLEARED: u8 = 1 << 0;
pub const XLH_INSERT_LAST_IN_MULTI: u8 = 1 << 1;
pub const XLH_INSERT_IS_SPECULATIVE: u8 = 1 << 2;
pub const XLH_INSERT_CONTAINS_NEW_TUPLE: u8 = 1 << 3;
pub const XLH_INSERT_ON_TOAST_RELATION: u8 = 1 << 4;
pub const XLH_INSERT_ALL_FROZEN_SET: u8 = 1 << 5;

/// `xl_heap_update` flags.
pub const XLH_UPDATE_OLD_ALL_VISIBLE_CLEARED: u8 = 1 << 0;
pub const XLH_UPDATE_NEW_ALL_VISIBLE_CLEARED: u8 = 1 << 1;
pub const XLH_UPDATE_CONTAINS_OLD_TUPLE: u8 = 1 << 2;
pub const XLH_UPDATE_CONTAINS_OLD_KEY: u8 = 1 << 3;
pub const XLH_UPDATE_CONTAINS_NEW_TUPLE: u8 = 1 << 4;
pub const XLH_UPDATE_PREFIX_FROM_OLD: u8 = 1 << 5;
pub const XLH_UPDATE_SUFFIX_FROM_OLD: u8 = 1 << 6;

/// `xl_heap_delete` flags.
pub const XLH_DELETE_ALL_VISIBLE_CLEARED: u8 = 1 << 0;
pub const XLH_DELETE_CONTAINS_OLD_TUPLE: u8 = 1 << 1;
pub const XLH_DELETE_CONTAINS_OLD_KEY: u8 = 1 << 2;
pub const XLH_DELETE_IS_SUPER: u8 = 1 << 3;
pub const XLH_DELETE_IS_PARTITION_MOVE: u8 = 1 << 4;

/// `xl_heap_truncate` flags.
pub const XLH_TRUNCATE_CASCADE: u8 = 1 << 0;
pub const XLH_TRUNCATE_RESTART_SEQS: u8 = 1 << 1;

/// `xl_heap_lock` / `xl_heap_lock_updated` flags.
pub const XLH_LOCK_ALL_FROZEN_CLEARED: u8 = 0x01;

/// A decoded Heap-rmgr record.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum HeapRecord {
    Insert(HeapInsert),
    Delete(HeapDelete),
    Update(HeapUpdate),
    HotUpdate(HeapUpdate),
    Truncate(HeapTruncate),
    /// Speculative insertion confirmed (`xl_heap_confirm`).
    Confirm {
        offnum: u16,
    },
    Lock(HeapLock),
    /// In-place tuple update (`xl_heap_inplace`); new tuple data is in block 0's data.
    Inplace {
        offnum: u16,
    },
}

/// `xl_heap_insert` (SizeOfHeapInsert = 3). Block 0: the heap page.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HeapInsert {
    /// `XLOG_HEAP_INIT_PAGE` was set in `xl_info`.
    pub init_page: bool,
    pub offnum: u16,
    /// `XLH_INSERT_*` bits.
    pub flags: u8,
}

/// `xl_heap_delete` (SizeOfHeapDelete = 8). Block 0: the heap page. An old key tuple that may
/// follow (for logical decoding) is not kept.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HeapDelete {
    pub xmax: u32,
    pub offnum: u16,
    pub infobits_set: u8,
    /// `XLH_DELETE_*` bits.
    pub flags: u8,
}

/// `xl_heap_update` (SizeOfHeapUpdate = 14). Block 0: new page; block 1: old page if different.
/// An old tuple/key that may follow (for logical decoding) is not kept.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HeapUpdate {
    /// `XLOG_HEAP_INIT_PAGE` was set in `xl_info` (applies to the new page).
    pub init_page: bool,
    pub old_xmax: u32,
    pub old_offnum: u16,
    pub old_infobits_set: u8,
    /// `XLH_UPDATE_*` bits.
    pub flags: u8,
    pub new_xmax: u32,
    pub new_offnum: u16,
}

/// `xl_heap_truncate` (SizeOfHeapTruncate = 12, then `nrelids` OIDs). Only for logical decoding:
/// the physical truncation is logged by the smgr rmgr.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HeapTruncate {
    pub db_id: u32,
    /// `XLH_TRUNCATE_*` bits.
    pub flags: u8,
    pub relids: Vec<u32>,
}

/// `xl_heap_lock` and `xl_heap_lock_updated` (both 8 bytes). Block 0: the heap page.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HeapLock {
    /// Locking XID (may be a MultiXactId); `xmax` for LOCK_UPDATED.
    pub xmax: u32,
    pub offnum: u16,
    pub infobits_set: u8,
    /// `XLH_LOCK_*` bits.
    pub flags: u8,
}

impl HeapLock {
    /// Decodes `xl_heap_lock` / `xl_heap_lock_updated`.
    pub(crate) fn decode(
        r: &mut Reader<'_>,
        what: &'static str,
    ) -> Result<HeapLock, RecordDecodeError> {
        r.require(8, what)?;
        Ok(HeapLock {
            xmax: r.u32(what)?,
            offnum: r.u16(what)?,
            infobits_set: r.u8(what)?,
            flags: r.u8(what)?,
        })
    }

    /// The all-frozen bit of block 0's heap page is cleared when
    /// `XLH_LOCK_ALL_FROZEN_CLEARED` is set.
    pub fn clears_visibility_map(&self) -> Vec<VmClear> {
        if self.flags & XLH_LOCK_ALL_FROZEN_CLEARED == 0 {
            return Vec::new();
        }
        vec![VmClear {
            heap_page: VmHeapPage::BlockRef(0),
            all_visible: false,
            all_frozen: true,
        }]
    }
}

/// Decodes the main data of a Heap-rmgr record; `info` is `xl_info`.
pub fn decode_heap(info: u8, main_data: &[u8]) -> Result<HeapRecord, RecordDecodeError> {
    let mut r = Reader::new(main_data);
    let init_page = info & XLOG_HEAP_INIT_PAGE != 0;
    let rec = match info & XLOG_HEAP_OPMASK {
        XLOG_HEAP_INSERT => HeapRecord::Insert(decode_insert(&mut r, init_page)?),
        XLOG_HEAP_DELETE => HeapRecord::Delete(decode_delete(&mut r)?),
        XLOG_HEAP_UPDATE => HeapRecord::Update(decode_update(&mut r, init_page)?),
        XLOG_HEAP_HOT_UPDATE => HeapRecord::HotUpdate(decode_update(&mut r, init_page)?),
        XLOG_HEAP_TRUNCATE => HeapRecord::Truncate(decode_truncate(&mut r)?),
        XLOG_HEAP_CONFIRM => HeapRecord::Confirm {
            offnum: r.u16("xl_heap_confirm.offnum")?,
        },
        XLOG_HEAP_LOCK => HeapRecord::Lock(HeapLock::decode(&mut r, "xl_heap_lock")?),
        // The opcode is 3 bits wide and all eight values are defined: this is XLOG_HEAP_INPLACE.
        _ => HeapRecord::Inplace {
            offnum: r.u16("xl_heap_inplace.offnum")?,
        },
    };
    Ok(rec)
}

fn decode_insert(r: &mut Reader<'_>, init_page: bool) -> Result<HeapInsert, RecordDecodeError> {
    const W: &str = "xl_heap_insert";
    r.require(3, W)?;
    Ok(HeapInsert {
        init_page,
        offnum: r.u16(W)?,
        flags: r.u8(W)?,
    })
}

fn decode_delete(r: &mut Reader<'_>) -> Result<HeapDelete, RecordDecodeError> {
    const W: &str = "xl_heap_delete";
    r.require(8, W)?;
    Ok(HeapDelete {
        xmax: r.u32(W)?,
        offnum: r.u16(W)?,
        infobits_set: r.u8(W)?,
        flags: r.u8(W)?,
    })
}

fn decode_update(r: &mut Reader<'_>, init_page: bool) -> Result<HeapUpdate, RecordDecodeError> {
    const W: &str = "xl_heap_update";
    r.require(14, W)?;
    Ok(HeapUpdate {
        init_page,
        old_xmax: r.u32(W)?,
        old_offnum: r.u16(W)?,
        old_infobits_set: r.u8(W)?,
        flags: r.u8(W)?,
        new_xmax: r.u32(W)?,
        new_offnum: r.u16(W)?,
    })
}

/// dbId at 0, nrelids at 4, flags at 8 (+3 padding), relids at 12.
fn decode_truncate(r: &mut Reader<'_>) -> Result<HeapTruncate, RecordDecodeError> {
    const W: &str = "xl_heap_truncate";
    r.require(12, W)?;
    let db_id = r.u32(W)?;
    let nrelids = r.u32(W)? as usize;
    let flags = r.u8(W)?;
    r.skip(3, W)?;
    let relids = r.u32_vec(nrelids, "xl_heap_truncate.relids")?;
    Ok(HeapTruncate {
        db_id,
        flags,
        relids,
    })
}

impl HeapRecord {
    /// Visibility-map bits this record clears, and on which heap page. Redo clears both bits
    /// for the `*_ALL_VISIBLE_CLEARED` flags and only the all-frozen bit for
    /// `XLH_LOCK_ALL_FROZEN_CLEARED`.
    pub fn clears_visibility_map(&self) -> Vec<VmClear> {
        match self {
            HeapRecord::Insert(ins) => both_bits_if(
                ins.flags & XLH_INSERT_ALL_VISIBLE_CLEARED != 0,
                VmHeapPage::BlockRef(0),
            ),
            HeapRecord::Delete(del) => both_bits_if(
                del.flags & XLH_DELETE_ALL_VISIBLE_CLEARED != 0,
                VmHeapPage::BlockRef(0),
            ),
            HeapRecord::Update(upd) | HeapRecord::HotUpdate(upd) => upd.clears_visibility_map(),
            HeapRecord::Lock(lock) => lock.clears_visibility_map(),
            HeapRecord::Truncate(_) | HeapRecord::Confirm { .. } | HeapRecord::Inplace { .. } => {
                Vec::new()
            }
        }
    }
}

impl HeapUpdate {
    /// The new page (block 0) and/or the old page (block 1, or block 0 for a same-page update).
    pub fn clears_visibility_map(&self) -> Vec<VmClear> {
        let mut out = both_bits_if(
            self.flags & XLH_UPDATE_OLD_ALL_VISIBLE_CLEARED != 0,
            VmHeapPage::UpdateOldPage,
        );
        out.extend(both_bits_if(
            self.flags & XLH_UPDATE_NEW_ALL_VISIBLE_CLEARED != 0,
            VmHeapPage::BlockRef(0),
        ));
        out
    }
}

/// One entry clearing both VM bits of `heap_page` when `cleared`, else nothing.
pub(crate) fn both_bits_if(cleared: bool, heap_page: VmHeapPage) -> Vec<VmClear> {
    if !cleared {
        return Vec::new();
    }
    vec![VmClear {
        heap_page,
        all_visible: true,
        all_frozen: true,
    }]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn le(parts: &[&[u8]]) -> Vec<u8> {
        parts.concat()
    }

    #[test]
    fn insert() {
        let b = le(&[&7u16.to_le_bytes(), &[XLH_INSERT_ALL_VISIBLE_CLEARED]]);
        let rec = decode_heap(XLOG_HEAP_INSERT | XLOG_HEAP_INIT_PAGE, &b).unwrap();
        assert_eq!(
            rec,
            HeapRecord::Insert(HeapInsert {
                init_page: true,
                offnum: 7,
                flags: XLH_INSERT_ALL_VISIBLE_CLEARED
            })
        );
        assert_eq!(
            rec.clears_visibility_map(),
            vec![VmClear {
                heap_page: VmHeapPage::BlockRef(0),
                all_visible: true,
                all_frozen: true
            }]
        );
        assert!(decode_heap(XLOG_HEAP_INSERT, &b[..2]).is_err());
    }

    #[test]
    fn delete() {
        let b = le(&[
            &500u32.to_le_bytes(),
            &3u16.to_le_bytes(),
            &[0x10, XLH_DELETE_ALL_VISIBLE_CLEARED],
        ]);
        let rec = decode_heap(XLOG_HEAP_DELETE, &b).unwrap();
        assert_eq!(
            rec,
            HeapRecord::Delete(HeapDelete {
                xmax: 500,
                offnum: 3,
                infobits_set: 0x10,
                flags: XLH_DELETE_ALL_VISIBLE_CLEARED
            })
        );
        assert_eq!(rec.clears_visibility_map().len(), 1);
        assert!(decode_heap(XLOG_HEAP_DELETE, &b[..7]).is_err());
    }

    #[test]
    fn update_and_hot_update() {
        let flags = XLH_UPDATE_OLD_ALL_VISIBLE_CLEARED | XLH_UPDATE_NEW_ALL_VISIBLE_CLEARED;
        let b = le(&[
            &600u32.to_le_bytes(),
            &4u16.to_le_bytes(),
            &[0x01, flags],
            &0u32.to_le_bytes(),
            &9u16.to_le_bytes(),
        ]);
        let expected = HeapUpdate {
            init_page: false,
            old_xmax: 600,
            old_offnum: 4,
            old_infobits_set: 1,
            flags,
            new_xmax: 0,
            new_offnum: 9,
        };
        let rec = decode_heap(XLOG_HEAP_UPDATE, &b).unwrap();
        assert_eq!(rec, HeapRecord::Update(expected));
        let clears = rec.clears_visibility_map();
        assert_eq!(clears.len(), 2);
        assert_eq!(clears[0].heap_page, VmHeapPage::UpdateOldPage);
        assert_eq!(clears[1].heap_page, VmHeapPage::BlockRef(0));
        assert_eq!(
            decode_heap(XLOG_HEAP_HOT_UPDATE, &b).unwrap(),
            HeapRecord::HotUpdate(expected)
        );
        assert!(decode_heap(XLOG_HEAP_UPDATE, &b[..13]).is_err());
    }

    #[test]
    fn truncate() {
        let b = le(&[
            &5u32.to_le_bytes(),
            &2u32.to_le_bytes(),
            &[XLH_TRUNCATE_CASCADE, 0, 0, 0],
            &16384u32.to_le_bytes(),
            &16390u32.to_le_bytes(),
        ]);
        assert_eq!(
            decode_heap(XLOG_HEAP_TRUNCATE, &b).unwrap(),
            HeapRecord::Truncate(HeapTruncate {
                db_id: 5,
                flags: XLH_TRUNCATE_CASCADE,
                relids: vec![16384, 16390]
            })
        );
        assert!(decode_heap(XLOG_HEAP_TRUNCATE, &b[..19]).is_err());
    }

    #[test]
    fn lock_confirm_inplace() {
        let b = le(&[
            &42u32.to_le_bytes(),
            &2u16.to_le_bytes(),
            &[0x02, XLH_LOCK_ALL_FROZEN_CLEARED],
        ]);
        let rec = decode_heap(XLOG_HEAP_LOCK, &b).unwrap();
        assert_eq!(
            rec.clears_visibility_map(),
            vec![VmClear {
                heap_page: VmHeapPage::BlockRef(0),
                all_visible: false,
                all_frozen: true
            }]
        );
        assert_eq!(
            decode_heap(XLOG_HEAP_CONFIRM, &5u16.to_le_bytes()).unwrap(),
            HeapRecord::Confirm { offnum: 5 }
        );
        assert_eq!(
            decode_heap(XLOG_HEAP_INPLACE, &6u16.to_le_bytes()).unwrap(),
            HeapRecord::Inplace { offnum: 6 }
        );
        assert!(decode_heap(XLOG_HEAP_INPLACE, &[1]).is_err());
        assert!(decode_heap(XLOG_HEAP_LOCK, &b[..7]).is_err());
    }
}

//! PostgreSQL 15 layout constants and small helpers the data-directory model needs that
//! `postgres_ffi` does not provide: SLRU geometry (CLOG, multixact offsets and members),
//! visibility-map and free-space-map geometry, transaction-id arithmetic.

use bytes::Bytes;

/// Bytes per page of relations and SLRUs.
pub const BLCKSZ: usize = 8192;
/// An all-zero page.
pub static ZERO_PAGE: Bytes = Bytes::from_static(&[0u8; BLCKSZ]);

/// Pages per SLRU segment file.
pub const SLRU_PAGES_PER_SEGMENT: u32 = 32;

/// First normal transaction id (0 invalid, 1 bootstrap, 2 frozen).
pub const FIRST_NORMAL_TRANSACTION_ID: u32 = 3;
/// The stored checkpoint's nextXid is advanced in steps of this many xids, so that it is not
/// rewritten for every transaction (must divide the xids per CLOG page).
pub const XID_CHECKPOINT_INTERVAL: u32 = 1024;

/// CLOG: two status bits per transaction.
pub const CLOG_BITS_PER_XACT: u32 = 2;
pub const CLOG_XACTS_PER_BYTE: u32 = 4;
pub const CLOG_XACTS_PER_PAGE: u32 = BLCKSZ as u32 * CLOG_XACTS_PER_BYTE;
/// CLOG status values.
pub const TRANSACTION_STATUS_IN_PROGRESS: u8 = 0x00;
pub const TRANSACTION_STATUS_COMMITTED: u8 = 0x01;
pub const TRANSACTION_STATUS_ABORTED: u8 = 0x02;
pub const TRANSACTION_STATUS_SUB_COMMITTED: u8 = 0x03;

/// pg_multixact/offsets: one u32 member offset per multixact.
pub const MULTIXACT_OFFSETS_PER_PAGE: u32 = BLCKSZ as u32 / 4;
/// pg_multixact/members: groups of 4 members, each group 4 flag bytes + 4 xids.
pub const MULTIXACT_MEMBERS_PER_MEMBERGROUP: u32 = 4;
pub const MULTIXACT_FLAGBYTES_PER_GROUP: u32 = 4;
pub const MULTIXACT_MEMBERGROUP_SIZE: u32 = 4 * MULTIXACT_MEMBERS_PER_MEMBERGROUP + 4;
pub const MULTIXACT_MEMBERGROUPS_PER_PAGE: u32 = BLCKSZ as u32 / MULTIXACT_MEMBERGROUP_SIZE;
pub const MULTIXACT_MEMBERS_PER_PAGE: u32 =
    MULTIXACT_MEMBERGROUPS_PER_PAGE * MULTIXACT_MEMBERS_PER_MEMBERGROUP;
/// Status bits per member in a member group's flag word.
pub const MXACT_MEMBER_BITS_PER_XACT: u32 = 8;
/// Largest multixact member offset.
pub const MAX_MULTIXACT_OFFSET: u32 = u32::MAX;
/// First valid multixact id.
pub const FIRST_MULTIXACT_ID: u32 = 1;

/// Size of a page header, MAXALIGNed.
pub const SIZE_OF_PAGE_HEADER: usize = 24;
/// Visibility map: two bits per heap block after the page header.
pub const VM_BITS_PER_HEAPBLOCK: u32 = 2;
pub const VM_HEAPBLOCKS_PER_BYTE: u32 = 4;
pub const VM_MAPSIZE: u32 = (BLCKSZ - SIZE_OF_PAGE_HEADER) as u32;
pub const VM_HEAPBLOCKS_PER_PAGE: u32 = VM_MAPSIZE * VM_HEAPBLOCKS_PER_BYTE;
/// VISIBILITYMAP_ALL_VISIBLE | VISIBILITYMAP_ALL_FROZEN.
pub const VISIBILITYMAP_ALL_VISIBLE: u8 = 0x01;
pub const VISIBILITYMAP_ALL_FROZEN: u8 = 0x02;
pub const VISIBILITYMAP_VALID_BITS: u8 = 0x03;

/// Free space map: leaf slots per FSM page (NodesPerPage - NonLeafNodesPerPage) and the
/// tree depth that gives.
pub const FSM_SLOTS_PER_PAGE: u32 =
    (BLCKSZ - SIZE_OF_PAGE_HEADER - 4) as u32 - (BLCKSZ as u32 / 2 - 1);
pub const FSM_TREE_DEPTH: u32 = if FSM_SLOTS_PER_PAGE >= 1626 { 3 } else { 4 };

/// Contents of PG_VERSION files.
pub const PG_MAJORVERSION_FILE: &str = "15\n";
/// Size of a pg_filenode.map file.
pub const RELMAP_FILE_BYTES: usize = 512;

/// TransactionIdPrecedes: `a` is logically before `b` (modulo-2^32 for normal xids).
pub fn transaction_id_precedes(a: u32, b: u32) -> bool {
    if a < FIRST_NORMAL_TRANSACTION_ID || b < FIRST_NORMAL_TRANSACTION_ID {
        return a < b;
    }
    (a.wrapping_sub(b) as i32) < 0
}

/// MultiXactIdPrecedes / MultiXactOffsetPrecedes: modulo-2^32 comparison.
pub fn wraparound_precedes(a: u32, b: u32) -> bool {
    (a.wrapping_sub(b) as i32) < 0
}

/// CLOG page holding `xid` and the xid's index on it.
pub fn clog_page_of(xid: u32) -> (u32, u32) {
    (xid / CLOG_XACTS_PER_PAGE, xid % CLOG_XACTS_PER_PAGE)
}

/// CLOGPagePrecedes.
pub fn clog_page_precedes(page1: u32, page2: u32) -> bool {
    let xid = |page: u32| {
        page.wrapping_mul(CLOG_XACTS_PER_PAGE)
            .wrapping_add(FIRST_NORMAL_TRANSACTION_ID + 1)
    };
    let (x1, x2) = (xid(page1), xid(page2));
    transaction_id_precedes(x1, x2)
        && transaction_id_precedes(x1, x2.wrapping_add(CLOG_XACTS_PER_PAGE - 1))
}

/// MultiXactOffsetPagePrecedes.
pub fn multixact_offset_page_precedes(page1: u32, page2: u32) -> bool {
    let multi = |page: u32| {
        page.wrapping_mul(MULTIXACT_OFFSETS_PER_PAGE)
            .wrapping_add(FIRST_MULTIXACT_ID + 1)
    };
    let (m1, m2) = (multi(page1), multi(page2));
    wraparound_precedes(m1, m2)
        && wraparound_precedes(m1, m2.wrapping_add(MULTIXACT_OFFSETS_PER_PAGE - 1))
}

/// SlruMayDeleteSegment: every page of the segment starting at `segpage` precedes
/// `cutoff_page` according to `precedes`.
pub fn slru_may_delete_segment(
    segpage: u32,
    cutoff_page: u32,
    precedes: fn(u32, u32) -> bool,
) -> bool {
    let seg_last_page = segpage + SLRU_PAGES_PER_SEGMENT - 1;
    precedes(segpage, cutoff_page) && precedes(seg_last_page, cutoff_page)
}

/// Members SLRU page holding member offset `offset`.
pub fn mx_offset_to_member_page(offset: u32) -> u32 {
    offset / MULTIXACT_MEMBERS_PER_PAGE
}

/// Members SLRU segment holding member offset `offset`.
pub fn mx_offset_to_member_segment(offset: u32) -> u32 {
    mx_offset_to_member_page(offset) / SLRU_PAGES_PER_SEGMENT
}

/// Byte offset of the flag word of member `offset` within its members page.
pub fn mx_offset_to_flags_offset(offset: u32) -> usize {
    ((offset / MULTIXACT_MEMBERS_PER_MEMBERGROUP) % MULTIXACT_MEMBERGROUPS_PER_PAGE
        * MULTIXACT_MEMBERGROUP_SIZE) as usize
}

/// Bit shift of member `offset`'s status in its group's flag word.
pub fn mx_offset_to_flags_bitshift(offset: u32) -> u32 {
    (offset % MULTIXACT_MEMBERS_PER_MEMBERGROUP) * MXACT_MEMBER_BITS_PER_XACT
}

/// Byte offset of member `offset`'s xid within its members page.
pub fn mx_offset_to_member_offset(offset: u32) -> usize {
    mx_offset_to_flags_offset(offset)
        + MULTIXACT_FLAGBYTES_PER_GROUP as usize
        + (offset % MULTIXACT_MEMBERS_PER_MEMBERGROUP) as usize * 4
}

/// fsm_logical_to_physical for a leaf (level 0) FSM page: the block number of logical leaf
/// page `logical` in the FSM fork.
pub fn fsm_leaf_to_physical(logical: u32) -> u32 {
    let mut leafno = u64::from(logical);
    let mut pages: u64 = 0;
    for _ in 0..FSM_TREE_DEPTH {
        pages += leafno + 1;
        leafno /= u64::from(FSM_SLOTS_PER_PAGE);
    }
    (pages - 1) as u32
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn geometry_matches_postgres() {
        assert_eq!(CLOG_XACTS_PER_PAGE, 32768);
        assert_eq!(MULTIXACT_OFFSETS_PER_PAGE, 2048);
        assert_eq!(MULTIXACT_MEMBERGROUPS_PER_PAGE, 409);
        assert_eq!(MULTIXACT_MEMBERS_PER_PAGE, 1636);
        assert_eq!(VM_HEAPBLOCKS_PER_PAGE, 32672);
        assert_eq!(FSM_SLOTS_PER_PAGE, 4069);
        assert_eq!(FSM_TREE_DEPTH, 3);
        // The FSM fork starts with the root, then the first level-1 page, then leaves.
        assert_eq!(fsm_leaf_to_physical(0), 2);
        assert_eq!(fsm_leaf_to_physical(1), 3);
        assert_eq!(
            fsm_leaf_to_physical(FSM_SLOTS_PER_PAGE),
            3 + FSM_SLOTS_PER_PAGE
        );
        assert_eq!(mx_offset_to_member_offset(0), 4);
        assert_eq!(mx_offset_to_member_offset(5), 20 + 4 + 4);
        assert_eq!(mx_offset_to_flags_bitshift(6), 16);
        assert_eq!(mx_offset_to_member_segment(MAX_MULTIXACT_OFFSET), 82040);
    }

    #[test]
    fn xid_comparisons_wrap() {
        assert!(transaction_id_precedes(3, 4));
        assert!(transaction_id_precedes(u32::MAX, 3 + 10));
        assert!(!transaction_id_precedes(10, u32::MAX));
        assert!(transaction_id_precedes(1, 2));
        assert!(wraparound_precedes(u32::MAX, 0));
        assert!(clog_page_precedes(0, 1));
        assert!(!clog_page_precedes(1, 0));
        // Page 0 and the last page are adjacent modulo 2^32 xids.
        let last_page = u32::MAX / CLOG_XACTS_PER_PAGE;
        assert!(clog_page_precedes(last_page, 0));
        assert!(multixact_offset_page_precedes(3, 4));
        assert!(slru_may_delete_segment(0, 64, clog_page_precedes));
        assert!(!slru_may_delete_segment(32, 40, clog_page_precedes));
    }
}

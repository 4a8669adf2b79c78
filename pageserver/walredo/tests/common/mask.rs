//! Masks the parts of a page that PostgreSQL changes without WAL (hint bits and the like),
//! so that a page rebuilt by WAL redo can be compared with the page the server wrote.
//! Modelled on what PostgreSQL's own `*_mask` functions ignore for
//! wal_consistency_checking, but stricter where we can be: the page LSN, PD_ALL_VISIBLE
//! and the line pointers of heap pages are compared.
//!
//! Masked everywhere: pd_checksum, pd_prune_xid, the PD_HAS_FREE_LINES and PD_PAGE_FULL
//! hints, and the free space between pd_lower and pd_upper.
//! Heap: per tuple the four commit-status hint bits of t_infomask (XMIN/XMAX
//! COMMITTED/INVALID), t_cid (redo writes FirstCommandId, unless the WAL has neon_cid
//! records: see [`mask_heap_keep_cid`]), and alignment padding.
//! Btree: line pointer flags on leaf pages (LP_DEAD hints), BTP_HAS_GARBAGE, BTP_SPLIT_END
//! and btpo_cycleid. GIN: the whole content of deleted pages.

const PAGE_BYTES: usize = 8192;
const PAGE_HEADER_BYTES: usize = 24;
const PD_HAS_FREE_LINES: u16 = 0x0001;
const PD_PAGE_FULL: u16 = 0x0002;
const LP_NORMAL: u32 = 1;
const HEAP_HINT_BITS: u16 = 0x0100 | 0x0200 | 0x0400 | 0x0800;
const HEAP_TUPLE_HEADER_BYTES: usize = 23;
const BTP_LEAF: u16 = 1 << 0;
const BTP_SPLIT_END: u16 = 1 << 5;
const BTP_HAS_GARBAGE: u16 = 1 << 6;
const GIN_DELETED: u16 = 1 << 1;

fn u16_at(page: &[u8], at: usize) -> u16 {
    u16::from_le_bytes([page[at], page[at + 1]])
}

fn set_u16(page: &mut [u8], at: usize, v: u16) {
    page[at..at + 2].copy_from_slice(&v.to_le_bytes());
}

fn lower(page: &[u8]) -> usize {
    usize::from(u16_at(page, 12))
}

fn upper(page: &[u8]) -> usize {
    usize::from(u16_at(page, 14))
}

fn special(page: &[u8]) -> usize {
    usize::from(u16_at(page, 16))
}

/// Line pointers as (offset, flags, length).
fn line_pointers(page: &[u8]) -> Vec<(usize, u32, usize)> {
    let count = lower(page).saturating_sub(PAGE_HEADER_BYTES) / 4;
    (0..count)
        .map(|i| {
            let at = PAGE_HEADER_BYTES + 4 * i;
            let lp = u32::from_le_bytes(page[at..at + 4].try_into().unwrap());
            (
                (lp & 0x7FFF) as usize,
                (lp >> 15) & 0x3,
                (lp >> 17) as usize,
            )
        })
        .collect()
}

fn mask_common(page: &mut [u8], mask_hole: bool) {
    assert_eq!(page.len(), PAGE_BYTES);
    page[8..10].fill(0);
    let flags = u16_at(page, 10) & !(PD_HAS_FREE_LINES | PD_PAGE_FULL);
    set_u16(page, 10, flags);
    page[20..24].fill(0);
    let (lo, up, sp) = (lower(page), upper(page), special(page));
    if mask_hole && PAGE_HEADER_BYTES <= lo && lo <= up && up <= sp && sp <= PAGE_BYTES {
        page[lo..up].fill(0);
    }
}

pub fn mask_heap(page: &mut [u8]) {
    mask_heap_tuples(page, true);
}

/// Like [`mask_heap`], but t_cid is compared: for the WAL of a server that loaded neon_rmgr,
/// whose `neon_cid` records give redo the tuples' real command ids.
pub fn mask_heap_keep_cid(page: &mut [u8]) {
    mask_heap_tuples(page, false);
}

fn mask_heap_tuples(page: &mut [u8], mask_cid: bool) {
    mask_common(page, true);
    for (off, flags, len) in line_pointers(page) {
        if flags == LP_NORMAL && len >= HEAP_TUPLE_HEADER_BYTES && off + len <= PAGE_BYTES {
            if mask_cid {
                page[off + 8..off + 12].fill(0);
            }
            let infomask = u16_at(page, off + 20) & !HEAP_HINT_BITS;
            set_u16(page, off + 20, infomask);
        }
        let padded = (off + len).next_multiple_of(8).min(PAGE_BYTES);
        if len > 0 && off + len <= padded {
            page[off + len..padded].fill(0);
        }
    }
}

pub fn mask_btree(page: &mut [u8]) {
    mask_common(page, true);
    let sp = special(page);
    if sp + 16 > PAGE_BYTES {
        return;
    }
    let flags = u16_at(page, sp + 12);
    if flags & BTP_LEAF != 0 {
        let count = lower(page).saturating_sub(PAGE_HEADER_BYTES) / 4;
        for i in 0..count {
            let at = PAGE_HEADER_BYTES + 4 * i;
            let lp = u32::from_le_bytes(page[at..at + 4].try_into().unwrap());
            if (lp >> 15) & 0x3 != 0 {
                page[at..at + 4].copy_from_slice(&(lp & !(0x3 << 15)).to_le_bytes());
            }
        }
    }
    set_u16(page, sp + 12, flags & !(BTP_HAS_GARBAGE | BTP_SPLIT_END));
    set_u16(page, sp + 14, 0);
}

pub fn mask_gin(page: &mut [u8]) {
    let has_hole = lower(page) > PAGE_HEADER_BYTES;
    mask_common(page, has_hole);
    let sp = special(page);
    if sp + 8 <= PAGE_BYTES && u16_at(page, sp + 6) & GIN_DELETED != 0 {
        page[12..16].fill(0);
        page[PAGE_HEADER_BYTES..].fill(0);
    }
}

/// Only the checksum (visibility-map pages change only through WAL and Neon's records).
pub fn mask_checksum(page: &mut [u8]) {
    page[8..10].fill(0);
}

const BRIN_SPECIAL_TYPE_OFFSET: usize = 4;
const BRIN_SPECIAL_FLAGS_OFFSET: usize = 6;
const BRIN_PAGETYPE_REGULAR: u16 = 0xF093;
const BRIN_EVACUATE_PAGE: u16 = 1 << 0;

/// BRIN (like PostgreSQL's brin_mask): the hole only on regular pages (the metapage and
/// revmap pages keep their content between pd_lower and pd_upper), and the
/// BRIN_EVACUATE_PAGE flag, which is not WAL-logged.
pub fn mask_brin(page: &mut [u8]) {
    let sp = special(page);
    let regular = sp + 8 <= PAGE_BYTES
        && u16_at(page, sp + BRIN_SPECIAL_TYPE_OFFSET) == BRIN_PAGETYPE_REGULAR;
    mask_common(page, regular);
    if sp + 8 <= PAGE_BYTES {
        let flags = u16_at(page, sp + BRIN_SPECIAL_FLAGS_OFFSET) & !BRIN_EVACUATE_PAGE;
        set_u16(page, sp + BRIN_SPECIAL_FLAGS_OFFSET, flags);
    }
}

/// Hash, GiST and SP-GiST pages: the common hints, the hole (when the page has line
/// pointers) and the line pointer flags (LP_DEAD hints set by scans without WAL).
/// Page-specific garbage flags are left to the caller's comparison tolerance.
pub fn mask_index_lp_flags(page: &mut [u8]) {
    let has_hole = lower(page) > PAGE_HEADER_BYTES;
    mask_common(page, has_hole);
    let count = lower(page).saturating_sub(PAGE_HEADER_BYTES) / 4;
    for i in 0..count.min((PAGE_BYTES - PAGE_HEADER_BYTES) / 4) {
        let at = PAGE_HEADER_BYTES + 4 * i;
        let lp = u32::from_le_bytes(page[at..at + 4].try_into().unwrap());
        if (lp >> 15) & 0x3 == 3 {
            // LP_DEAD -> LP_NORMAL
            page[at..at + 4].copy_from_slice(&(lp & !(0x2 << 15)).to_le_bytes());
        }
    }
}

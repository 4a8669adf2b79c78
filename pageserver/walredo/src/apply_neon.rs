//! Applies Neon's own WAL records (everything but [`NeonWalRecord::Postgres`]) to a page, in
//! Rust: visibility-map bits, CLOG transaction status, multixact offsets and members.
//!
//! Page layouts, as PostgreSQL 15 defines them (8 KiB pages, little-endian integers):
//! - Visibility map: a 24-byte page header, then 2 bits per heap block (all-visible = 1,
//!   all-frozen = 2), 4 heap blocks per byte, (8192 - 24) × 4 = 32672 heap blocks per page.
//!   These records do not change the page LSN (PostgreSQL does not either).
//! - CLOG (pg_xact): no header; 2 status bits per xid, 4 xids per byte, 32768 xids per page
//!   (committed = 1, aborted = 2). Our CLOG pages are plain 8192-byte pages: the commit
//!   timestamp of `ClogSetCommitted` is not stored.
//! - Multixact offsets: a u32 member offset per multixact, 2048 per page.
//! - Multixact members: groups of 4 members, each group 4 status bytes then 4 xids
//!   (20 bytes), 409 groups (1636 members) per page, the last 12 bytes unused.
//!
//! Records that list several xids, members or heap blocks may cover more than one page.
//! The caller stores such a record under every page it touches; applying it to one page
//! changes the entries that live on that page and skips the others. A record with no
//! entry on the page at all is an error (it was stored under the wrong key).

use pageserver_api::value::{MultiXactMember, NeonWalRecord};
use postgres_ffi::page::BLCKSZ;

use crate::target::{RedoTarget, SlruKind, VISIBILITYMAP_FORKNUM};

/// Size of a page header rounded up to MAXALIGN (the visibility map starts after it).
const PAGE_HEADER_BYTES: usize = 24;
/// Bytes of visibility bits on a VM page.
const VM_MAP_BYTES: usize = BLCKSZ - PAGE_HEADER_BYTES;
const VM_BITS_PER_HEAPBLOCK: u32 = 2;
const VM_HEAPBLOCKS_PER_BYTE: u32 = 4;
/// Heap blocks covered by one VM page (32672).
pub const VM_HEAPBLOCKS_PER_PAGE: u32 = VM_MAP_BYTES as u32 * VM_HEAPBLOCKS_PER_BYTE;
/// VISIBILITYMAP_ALL_VISIBLE | VISIBILITYMAP_ALL_FROZEN.
const VM_VALID_BITS: u8 = 0x03;

const CLOG_BITS_PER_XACT: u32 = 2;
const CLOG_XACTS_PER_BYTE: u32 = 4;
/// Transactions per CLOG page (32768).
pub const CLOG_XACTS_PER_PAGE: u32 = BLCKSZ as u32 * CLOG_XACTS_PER_BYTE;
/// TRANSACTION_STATUS_COMMITTED.
pub const CLOG_STATUS_COMMITTED: u8 = 0x01;
/// TRANSACTION_STATUS_ABORTED.
pub const CLOG_STATUS_ABORTED: u8 = 0x02;

/// Multixact member offsets per offsets page (2048).
pub const MULTIXACT_OFFSETS_PER_PAGE: u32 = (BLCKSZ / 4) as u32;
const MULTIXACT_MEMBERS_PER_GROUP: u32 = 4;
const MULTIXACT_FLAG_BYTES_PER_GROUP: usize = 4;
const MULTIXACT_GROUP_BYTES: usize = MULTIXACT_FLAG_BYTES_PER_GROUP + 4 * 4;
const MULTIXACT_GROUPS_PER_PAGE: u32 = (BLCKSZ / MULTIXACT_GROUP_BYTES) as u32;
/// Multixact members per members page (1636).
pub const MULTIXACT_MEMBERS_PER_PAGE: u32 = MULTIXACT_GROUPS_PER_PAGE * MULTIXACT_MEMBERS_PER_GROUP;

/// Why a Neon record cannot be applied to a page.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ApplyNeonError {
    #[error("a {record} record does not apply to {target}")]
    WrongTarget {
        record: &'static str,
        target: String,
    },
    #[error("{record} record has no entry on {target}")]
    NothingOnPage {
        record: &'static str,
        target: String,
    },
    #[error("TruncateVisibilityMap at byte {trunc_byte} bit {trunc_offs} is outside the map")]
    BadTruncation { trunc_byte: u32, trunc_offs: u8 },
    #[error("a PostgreSQL WAL record is not applied in Rust")]
    PostgresRecord,
}

/// Applies `record` to `page`, the current version of `target`.
pub fn apply_neon_record(
    page: &mut [u8; BLCKSZ],
    target: &RedoTarget,
    record: &NeonWalRecord,
) -> Result<(), ApplyNeonError> {
    match record {
        NeonWalRecord::Postgres { .. } => Err(ApplyNeonError::PostgresRecord),
        NeonWalRecord::ClearVisibilityMapFlags {
            new_heap_blkno,
            old_heap_blkno,
            flags,
        } => clear_vm_flags(page, target, [*new_heap_blkno, *old_heap_blkno], *flags),
        NeonWalRecord::TruncateVisibilityMap {
            trunc_byte,
            trunc_offs,
        } => truncate_vm(page, target, *trunc_byte, *trunc_offs),
        NeonWalRecord::ClogSetCommitted { xids, .. } => set_clog_status(
            page,
            target,
            xids,
            CLOG_STATUS_COMMITTED,
            "ClogSetCommitted",
        ),
        NeonWalRecord::ClogSetAborted { xids } => {
            set_clog_status(page, target, xids, CLOG_STATUS_ABORTED, "ClogSetAborted")
        }
        NeonWalRecord::MultixactOffsetCreate { mid, moff } => {
            set_multixact_offset(page, target, *mid, *moff)
        }
        NeonWalRecord::MultixactMembersCreate { moff, members } => {
            set_multixact_members(page, target, *moff, members)
        }
    }
}

/// The VM block of a VM target, or an error naming `record`.
fn vm_block(target: &RedoTarget, record: &'static str) -> Result<u32, ApplyNeonError> {
    match target {
        RedoTarget::Rel(tag) if tag.forknum == VISIBILITYMAP_FORKNUM => Ok(tag.blkno),
        _ => Err(wrong_target(record, target)),
    }
}

/// The SLRU page number of a target in the `kind` SLRU, or an error naming `record`.
fn slru_page(
    target: &RedoTarget,
    kind: SlruKind,
    record: &'static str,
) -> Result<u64, ApplyNeonError> {
    match target {
        RedoTarget::Slru { kind: k, .. } if *k == kind => {
            Ok(target.slru_pageno().expect("SLRU target"))
        }
        _ => Err(wrong_target(record, target)),
    }
}

fn wrong_target(record: &'static str, target: &RedoTarget) -> ApplyNeonError {
    ApplyNeonError::WrongTarget {
        record,
        target: target.to_string(),
    }
}

fn nothing_on_page(record: &'static str, target: &RedoTarget) -> ApplyNeonError {
    ApplyNeonError::NothingOnPage {
        record,
        target: target.to_string(),
    }
}

fn clear_vm_flags(
    page: &mut [u8; BLCKSZ],
    target: &RedoTarget,
    heap_blknos: [Option<u32>; 2],
    flags: u8,
) -> Result<(), ApplyNeonError> {
    const RECORD: &str = "ClearVisibilityMapFlags";
    let map_block = vm_block(target, RECORD)?;
    let on_page: Vec<u32> = heap_blknos
        .into_iter()
        .flatten()
        .filter(|blk| blk / VM_HEAPBLOCKS_PER_PAGE == map_block)
        .collect();
    if on_page.is_empty() {
        return Err(nothing_on_page(RECORD, target));
    }
    for heap_blkno in on_page {
        let in_page = heap_blkno % VM_HEAPBLOCKS_PER_PAGE;
        let byte = PAGE_HEADER_BYTES + (in_page / VM_HEAPBLOCKS_PER_BYTE) as usize;
        let shift = (in_page % VM_HEAPBLOCKS_PER_BYTE) * VM_BITS_PER_HEAPBLOCK;
        page[byte] &= !((flags & VM_VALID_BITS) << shift);
    }
    Ok(())
}

/// Like visibilitymap_prepare_truncate: clears every bit after the last heap block kept.
fn truncate_vm(
    page: &mut [u8; BLCKSZ],
    target: &RedoTarget,
    trunc_byte: u32,
    trunc_offs: u8,
) -> Result<(), ApplyNeonError> {
    vm_block(target, "TruncateVisibilityMap")?;
    let byte = usize::try_from(trunc_byte).unwrap_or(usize::MAX);
    if byte >= VM_MAP_BYTES || trunc_offs >= 8 {
        return Err(ApplyNeonError::BadTruncation {
            trunc_byte,
            trunc_offs,
        });
    }
    let map = &mut page[PAGE_HEADER_BYTES..];
    map[byte + 1..].fill(0);
    map[byte] &= (1u8 << trunc_offs) - 1;
    Ok(())
}

fn set_clog_status(
    page: &mut [u8; BLCKSZ],
    target: &RedoTarget,
    xids: &[u32],
    status: u8,
    record: &'static str,
) -> Result<(), ApplyNeonError> {
    let pageno = slru_page(target, SlruKind::Clog, record)?;
    let mut applied = false;
    for &xid in xids {
        if u64::from(xid / CLOG_XACTS_PER_PAGE) != pageno {
            continue;
        }
        let (byte, shift) = clog_bit_position(xid);
        page[byte] = (page[byte] & !(0x03 << shift)) | (status << shift);
        applied = true;
    }
    if applied {
        Ok(())
    } else {
        Err(nothing_on_page(record, target))
    }
}

/// The two CLOG status bits of `xid` on `page` (the CLOG page holding it); 0 (in progress)
/// if `page` is too short to hold them.
pub fn clog_status(page: &[u8], xid: u32) -> u8 {
    let (byte, shift) = clog_bit_position(xid);
    page.get(byte).map_or(0, |b| (b >> shift) & 0x03)
}

/// Byte and bit shift of `xid`'s status bits within its CLOG page.
fn clog_bit_position(xid: u32) -> (usize, u32) {
    let in_page = xid % CLOG_XACTS_PER_PAGE;
    let byte = (in_page / CLOG_XACTS_PER_BYTE) as usize;
    (byte, (in_page % CLOG_XACTS_PER_BYTE) * CLOG_BITS_PER_XACT)
}

fn set_multixact_offset(
    page: &mut [u8; BLCKSZ],
    target: &RedoTarget,
    mid: u32,
    moff: u32,
) -> Result<(), ApplyNeonError> {
    const RECORD: &str = "MultixactOffsetCreate";
    let pageno = slru_page(target, SlruKind::MultiXactOffsets, RECORD)?;
    if u64::from(mid / MULTIXACT_OFFSETS_PER_PAGE) != pageno {
        return Err(nothing_on_page(RECORD, target));
    }
    let at = (mid % MULTIXACT_OFFSETS_PER_PAGE) as usize * 4;
    page[at..at + 4].copy_from_slice(&moff.to_le_bytes());
    Ok(())
}

/// Members are numbered from `moff` (wrapping around at 2^32 like MultiXactOffset).
fn set_multixact_members(
    page: &mut [u8; BLCKSZ],
    target: &RedoTarget,
    moff: u32,
    members: &[MultiXactMember],
) -> Result<(), ApplyNeonError> {
    const RECORD: &str = "MultixactMembersCreate";
    let pageno = slru_page(target, SlruKind::MultiXactMembers, RECORD)?;
    let mut applied = false;
    for (i, member) in members.iter().enumerate() {
        // a record never has 2^32 members; truncating i keeps the wrap-around arithmetic
        let offset = moff.wrapping_add(i as u32);
        if u64::from(offset / MULTIXACT_MEMBERS_PER_PAGE) != pageno {
            continue;
        }
        let group = (offset / MULTIXACT_MEMBERS_PER_GROUP) % MULTIXACT_GROUPS_PER_PAGE;
        let in_group = (offset % MULTIXACT_MEMBERS_PER_GROUP) as usize;
        let group_start = group as usize * MULTIXACT_GROUP_BYTES;
        page[group_start + in_group] = member.status;
        let xid_at = group_start + MULTIXACT_FLAG_BYTES_PER_GROUP + in_group * 4;
        page[xid_at..xid_at + 4].copy_from_slice(&member.xid.to_le_bytes());
        applied = true;
    }
    if applied {
        Ok(())
    } else {
        Err(nothing_on_page(RECORD, target))
    }
}

#[cfg(test)]
mod tests;

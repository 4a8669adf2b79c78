//! Applies the records the pageserver invents itself ([`NeonWalRecord`] variants other than
//! `Postgres`) to a page, in Rust: CLOG status bits, multixact offsets and members,
//! visibility-map bit clearing and truncation. `Postgres` records need `postgres --wal-redo`
//! and are refused here.
//!
//! CLOG pages are plain 8192-byte pages: the commit timestamp of `ClogSetCommitted` is not
//! stored (pg_commit_ts is not kept).

use pageserver_api::value::NeonWalRecord;

use crate::pg_consts::*;

/// Why a record could not be applied to a page.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ApplyError {
    #[error("a PostgreSQL WAL record needs WAL redo")]
    NeedsPostgresRedo,
    #[error("page is {0} bytes, expected {BLCKSZ}")]
    BadPageSize(usize),
    #[error("{what} {value} is outside the page")]
    OutOfPage { what: &'static str, value: u64 },
    #[error("multixact members starting at offset {moff} cross a members page boundary")]
    MembersCrossPage { moff: u32 },
}

/// Applies `rec` to `page` (which must be [`BLCKSZ`] bytes).
pub fn apply_neon_record(page: &mut [u8], rec: &NeonWalRecord) -> Result<(), ApplyError> {
    if page.len() != BLCKSZ {
        return Err(ApplyError::BadPageSize(page.len()));
    }
    match rec {
        NeonWalRecord::Postgres { .. } => Err(ApplyError::NeedsPostgresRedo),
        NeonWalRecord::ClearVisibilityMapFlags {
            new_heap_blkno,
            old_heap_blkno,
            flags,
        } => {
            for heap_blk in [new_heap_blkno, old_heap_blkno].into_iter().flatten() {
                clear_vm_bits(page, *heap_blk, *flags);
            }
            Ok(())
        }
        NeonWalRecord::TruncateVisibilityMap {
            trunc_byte,
            trunc_offs,
        } => truncate_vm(page, *trunc_byte, *trunc_offs),
        NeonWalRecord::ClogSetCommitted { xids, .. } => {
            set_clog_status(page, xids, TRANSACTION_STATUS_COMMITTED);
            Ok(())
        }
        NeonWalRecord::ClogSetAborted { xids } => {
            set_clog_status(page, xids, TRANSACTION_STATUS_ABORTED);
            Ok(())
        }
        NeonWalRecord::MultixactOffsetCreate { mid, moff } => {
            let at = (mid % MULTIXACT_OFFSETS_PER_PAGE) as usize * 4;
            page[at..at + 4].copy_from_slice(&moff.to_le_bytes());
            Ok(())
        }
        NeonWalRecord::MultixactMembersCreate { moff, members } => {
            set_multixact_members(page, *moff, members)
        }
    }
}

/// Clears `flags` of heap block `heap_blk` in its visibility-map page.
fn clear_vm_bits(page: &mut [u8], heap_blk: u32, flags: u8) {
    let in_page = heap_blk % VM_HEAPBLOCKS_PER_PAGE;
    let byte = SIZE_OF_PAGE_HEADER + (in_page / VM_HEAPBLOCKS_PER_BYTE) as usize;
    let shift = (in_page % VM_HEAPBLOCKS_PER_BYTE) * VM_BITS_PER_HEAPBLOCK;
    page[byte] &= !((flags & VISIBILITYMAP_VALID_BITS) << shift);
}

/// Clears the map bits of every heap block from (`trunc_byte`, `trunc_offs`) on.
fn truncate_vm(page: &mut [u8], trunc_byte: u32, trunc_offs: u8) -> Result<(), ApplyError> {
    let byte = SIZE_OF_PAGE_HEADER + trunc_byte as usize;
    if trunc_byte >= VM_MAPSIZE || trunc_offs >= 8 {
        return Err(ApplyError::OutOfPage {
            what: "visibility map truncation byte",
            value: u64::from(trunc_byte),
        });
    }
    page[byte + 1..].fill(0);
    page[byte] &= (1u8 << trunc_offs) - 1;
    Ok(())
}

/// Sets the two CLOG status bits of every xid (all on this page) to `status`.
fn set_clog_status(page: &mut [u8], xids: &[u32], status: u8) {
    for &xid in xids {
        let (_, index) = clog_page_of(xid);
        let byte = (index / CLOG_XACTS_PER_BYTE) as usize;
        let shift = (index % CLOG_XACTS_PER_BYTE) * CLOG_BITS_PER_XACT;
        page[byte] = (page[byte] & !(0x03 << shift)) | (status << shift);
    }
}

/// Writes members (xid and status) at consecutive member offsets from `moff`.
fn set_multixact_members(
    page: &mut [u8],
    moff: u32,
    members: &[pageserver_api::value::MultiXactMember],
) -> Result<(), ApplyError> {
    let first_page = mx_offset_to_member_page(moff);
    for (i, member) in members.iter().enumerate() {
        let offset = moff.wrapping_add(i as u32);
        if mx_offset_to_member_page(offset) != first_page {
            return Err(ApplyError::MembersCrossPage { moff });
        }
        let at = mx_offset_to_member_offset(offset);
        page[at..at + 4].copy_from_slice(&member.xid.to_le_bytes());
        let flags_at = mx_offset_to_flags_offset(offset);
        let shift = mx_offset_to_flags_bitshift(offset);
        let mut flags = u32::from_le_bytes([
            page[flags_at],
            page[flags_at + 1],
            page[flags_at + 2],
            page[flags_at + 3],
        ]);
        flags &= !(((1u32 << MXACT_MEMBER_BITS_PER_XACT) - 1) << shift);
        flags |= u32::from(member.status) << shift;
        page[flags_at..flags_at + 4].copy_from_slice(&flags.to_le_bytes());
    }
    Ok(())
}

/// The CLOG status of `xid` in `page` (the page holding it).
pub fn clog_status(page: &[u8], xid: u32) -> u8 {
    let (_, index) = clog_page_of(xid);
    let byte = (index / CLOG_XACTS_PER_BYTE) as usize;
    let shift = (index % CLOG_XACTS_PER_BYTE) * CLOG_BITS_PER_XACT;
    page.get(byte).map_or(0, |b| (b >> shift) & 0x03)
}

#[cfg(test)]
mod tests {
    use super::*;
    use pageserver_api::value::MultiXactMember;

    #[test]
    fn clog_bits() {
        let mut page = vec![0u8; BLCKSZ];
        let xids = [CLOG_XACTS_PER_PAGE + 5, CLOG_XACTS_PER_PAGE + 6];
        let rec = NeonWalRecord::ClogSetCommitted {
            xids: xids.to_vec(),
            timestamp: 0,
        };
        apply_neon_record(&mut page, &rec).unwrap();
        apply_neon_record(
            &mut page,
            &NeonWalRecord::ClogSetAborted {
                xids: vec![CLOG_XACTS_PER_PAGE + 7],
            },
        )
        .unwrap();
        assert_eq!(page[1], 0b1001_0100);
        assert_eq!(clog_status(&page, 5), TRANSACTION_STATUS_COMMITTED);
        assert_eq!(clog_status(&page, 7), TRANSACTION_STATUS_ABORTED);
        assert_eq!(clog_status(&page, 4), TRANSACTION_STATUS_IN_PROGRESS);
        // Re-setting overwrites both bits.
        apply_neon_record(&mut page, &rec).unwrap();
        assert_eq!(clog_status(&page, 5), TRANSACTION_STATUS_COMMITTED);
    }

    #[test]
    fn vm_clear_and_truncate() {
        let mut page = vec![0xFFu8; BLCKSZ];
        let rec = NeonWalRecord::ClearVisibilityMapFlags {
            new_heap_blkno: Some(VM_HEAPBLOCKS_PER_PAGE + 5),
            old_heap_blkno: Some(0),
            flags: VISIBILITYMAP_ALL_FROZEN,
        };
        apply_neon_record(&mut page, &rec).unwrap();
        assert_eq!(page[24], 0b1111_1101);
        assert_eq!(page[25], 0b1111_0111);
        let trunc = NeonWalRecord::TruncateVisibilityMap {
            trunc_byte: 1,
            trunc_offs: 4,
        };
        apply_neon_record(&mut page, &trunc).unwrap();
        assert_eq!(page[25], 0b0000_0111);
        assert!(page[26..].iter().all(|b| *b == 0));
        assert_eq!(page[23], 0xFF, "page header untouched");
        let bad = NeonWalRecord::TruncateVisibilityMap {
            trunc_byte: VM_MAPSIZE,
            trunc_offs: 0,
        };
        assert!(apply_neon_record(&mut page, &bad).is_err());
    }

    #[test]
    fn multixact_offsets_and_members() {
        let mut page = vec![0u8; BLCKSZ];
        let rec = NeonWalRecord::MultixactOffsetCreate {
            mid: MULTIXACT_OFFSETS_PER_PAGE + 3,
            moff: 77,
        };
        apply_neon_record(&mut page, &rec).unwrap();
        assert_eq!(&page[12..16], &77u32.to_le_bytes());

        let mut page = vec![0u8; BLCKSZ];
        let members = vec![
            MultiXactMember {
                xid: 900,
                status: 1,
            },
            MultiXactMember {
                xid: 901,
                status: 5,
            },
        ];
        let rec = NeonWalRecord::MultixactMembersCreate { moff: 3, members };
        apply_neon_record(&mut page, &rec).unwrap();
        // Offset 3: group 0, slot 3; offset 4: group 1, slot 0.
        assert_eq!(&page[16..20], &900u32.to_le_bytes());
        assert_eq!(page[3], 1);
        assert_eq!(&page[24..28], &901u32.to_le_bytes());
        assert_eq!(page[20], 5);
        let crossing = NeonWalRecord::MultixactMembersCreate {
            moff: MULTIXACT_MEMBERS_PER_PAGE - 1,
            members: vec![MultiXactMember { xid: 1, status: 0 }; 2],
        };
        assert!(matches!(
            apply_neon_record(&mut page, &crossing),
            Err(ApplyError::MembersCrossPage { .. })
        ));
    }

    #[test]
    fn refuses_postgres_records_and_short_pages() {
        let rec = NeonWalRecord::Postgres {
            will_init: false,
            rec: bytes::Bytes::new(),
        };
        let mut page = vec![0u8; BLCKSZ];
        assert_eq!(
            apply_neon_record(&mut page, &rec),
            Err(ApplyError::NeedsPostgresRedo)
        );
        let mut short = vec![0u8; 10];
        assert_eq!(
            apply_neon_record(&mut short, &rec),
            Err(ApplyError::BadPageSize(10))
        );
    }
}

use std::collections::{BTreeMap, HashMap};

use proptest::prelude::*;

use super::*;
use crate::target::BufferTag;

fn vm_target(blkno: u32) -> RedoTarget {
    RedoTarget::Rel(BufferTag {
        spcnode: 1663,
        dbnode: 5,
        relnode: 16384,
        forknum: VISIBILITYMAP_FORKNUM,
        blkno,
    })
}

fn slru_target(kind: SlruKind, pageno: u32) -> RedoTarget {
    RedoTarget::Slru {
        kind,
        segno: pageno / 32,
        blkno: pageno % 32,
    }
}

fn full_page() -> Box<[u8; BLCKSZ]> {
    Box::new([0xFF; BLCKSZ])
}

fn clear_vm(new: Option<u32>, old: Option<u32>, flags: u8) -> NeonWalRecord {
    NeonWalRecord::ClearVisibilityMapFlags {
        new_heap_blkno: new,
        old_heap_blkno: old,
        flags,
    }
}

#[test]
fn clear_vm_flags_clears_exactly_the_heap_blocks_bits() {
    let mut page = full_page();
    // heap block 5: byte 1 of the map, bits 2-3; only all-visible (bit 2) is cleared.
    // heap block 40000 lives on VM page 1 and is skipped here.
    apply_neon_record(
        &mut page,
        &vm_target(0),
        &clear_vm(Some(5), Some(40000), 0x01),
    )
    .unwrap();
    let mut expected = full_page();
    expected[PAGE_HEADER_BYTES + 1] = 0b1111_1011;
    assert_eq!(page, expected);

    // both bits of heap block 32672 + 7 (VM page 1, byte 1, bits 6-7)
    let mut page = full_page();
    let heap = VM_HEAPBLOCKS_PER_PAGE + 7;
    apply_neon_record(&mut page, &vm_target(1), &clear_vm(None, Some(heap), 0x03)).unwrap();
    let mut expected = full_page();
    expected[PAGE_HEADER_BYTES + 1] = 0b0011_1111;
    assert_eq!(page, expected);

    // the last heap block of a page: last byte, top bits
    let mut page = full_page();
    let last = VM_HEAPBLOCKS_PER_PAGE - 1;
    apply_neon_record(&mut page, &vm_target(0), &clear_vm(Some(last), None, 0x02)).unwrap();
    let mut expected = full_page();
    expected[BLCKSZ - 1] = 0b0111_1111;
    assert_eq!(page, expected);
}

#[test]
fn clear_vm_flags_rejects_wrong_targets() {
    let mut page = full_page();
    let err = apply_neon_record(&mut page, &vm_target(2), &clear_vm(Some(5), None, 1));
    assert!(matches!(err, Err(ApplyNeonError::NothingOnPage { .. })));
    let main_fork = RedoTarget::Rel(BufferTag {
        spcnode: 1663,
        dbnode: 5,
        relnode: 16384,
        forknum: 0,
        blkno: 0,
    });
    let err = apply_neon_record(&mut page, &main_fork, &clear_vm(Some(5), None, 1));
    assert!(matches!(err, Err(ApplyNeonError::WrongTarget { .. })));
    let clog = slru_target(SlruKind::Clog, 0);
    let err = apply_neon_record(&mut page, &clog, &clear_vm(Some(5), None, 1));
    assert!(matches!(err, Err(ApplyNeonError::WrongTarget { .. })));
    assert_eq!(page, full_page(), "a failed record leaves the page alone");
}

#[test]
fn truncate_vm_keeps_only_bits_before_the_cut() {
    let mut page = full_page();
    let rec = NeonWalRecord::TruncateVisibilityMap {
        trunc_byte: 10,
        trunc_offs: 4,
    };
    apply_neon_record(&mut page, &vm_target(3), &rec).unwrap();
    assert!(page[..PAGE_HEADER_BYTES + 10].iter().all(|&b| b == 0xFF));
    assert_eq!(page[PAGE_HEADER_BYTES + 10], 0x0F);
    assert!(page[PAGE_HEADER_BYTES + 11..].iter().all(|&b| b == 0));

    let bad = NeonWalRecord::TruncateVisibilityMap {
        trunc_byte: VM_MAP_BYTES as u32,
        trunc_offs: 0,
    };
    assert!(matches!(
        apply_neon_record(&mut page, &vm_target(3), &bad),
        Err(ApplyNeonError::BadTruncation { .. })
    ));
}

#[test]
fn clog_status_bits() {
    let mut page = Box::new([0u8; BLCKSZ]);
    let clog1 = slru_target(SlruKind::Clog, 1);
    let base = CLOG_XACTS_PER_PAGE;
    let commit = NeonWalRecord::ClogSetCommitted {
        xids: vec![base + 5, base + 7, 12], // xid 12 is on page 0: skipped
        timestamp: 0,
    };
    apply_neon_record(&mut page, &clog1, &commit).unwrap();
    // xid 5: byte 1 bits 2-3; xid 7: byte 1 bits 6-7
    assert_eq!(page[1], 0b0100_0100);
    assert_eq!(page.iter().filter(|&&b| b != 0).count(), 1);

    // aborting overwrites a previous status
    let abort = NeonWalRecord::ClogSetAborted {
        xids: vec![base + 7],
    };
    apply_neon_record(&mut page, &clog1, &abort).unwrap();
    assert_eq!(page[1], 0b1000_0100);
    assert_eq!(clog_status(&page[..], base + 5), CLOG_STATUS_COMMITTED);
    assert_eq!(clog_status(&page[..], base + 7), CLOG_STATUS_ABORTED);
    assert_eq!(clog_status(&page[..], base + 6), 0);
    assert_eq!(
        clog_status(&page[..8], base + 40),
        0,
        "short page: in progress"
    );

    let elsewhere = NeonWalRecord::ClogSetAborted { xids: vec![12] };
    assert!(matches!(
        apply_neon_record(&mut page, &clog1, &elsewhere),
        Err(ApplyNeonError::NothingOnPage { .. })
    ));
    let offsets = slru_target(SlruKind::MultiXactOffsets, 1);
    assert!(matches!(
        apply_neon_record(&mut page, &offsets, &abort),
        Err(ApplyNeonError::WrongTarget { .. })
    ));
}

#[test]
fn multixact_offset_entry() {
    let mut page = Box::new([0u8; BLCKSZ]);
    let target = slru_target(SlruKind::MultiXactOffsets, 1);
    let rec = NeonWalRecord::MultixactOffsetCreate {
        mid: MULTIXACT_OFFSETS_PER_PAGE + 3,
        moff: 0x0102_0304,
    };
    apply_neon_record(&mut page, &target, &rec).unwrap();
    assert_eq!(&page[12..16], &[0x04, 0x03, 0x02, 0x01]);
    assert_eq!(page.iter().filter(|&&b| b != 0).count(), 4);
    let other_page = NeonWalRecord::MultixactOffsetCreate { mid: 3, moff: 1 };
    assert!(matches!(
        apply_neon_record(&mut page, &target, &other_page),
        Err(ApplyNeonError::NothingOnPage { .. })
    ));
}

#[test]
fn multixact_members_across_a_page_boundary() {
    // members 1634..1638: two on the last group of page 0, two at the start of page 1
    let members: Vec<MultiXactMember> = (0..4)
        .map(|i| MultiXactMember {
            xid: 1000 + i,
            status: i as u8 + 1,
        })
        .collect();
    let rec = NeonWalRecord::MultixactMembersCreate {
        moff: MULTIXACT_MEMBERS_PER_PAGE - 2,
        members,
    };
    let mut page0 = Box::new([0u8; BLCKSZ]);
    apply_neon_record(
        &mut page0,
        &slru_target(SlruKind::MultiXactMembers, 0),
        &rec,
    )
    .unwrap();
    // group 408 starts at 8160: status bytes 8160..8164, xids 8164..8180
    assert_eq!(&page0[8160..8164], &[0, 0, 1, 2]);
    assert_eq!(&page0[8172..8176], &1000u32.to_le_bytes());
    assert_eq!(&page0[8176..8180], &1001u32.to_le_bytes());
    assert!(
        page0[8180..].iter().all(|&b| b == 0),
        "last 12 bytes unused"
    );

    let mut page1 = Box::new([0u8; BLCKSZ]);
    apply_neon_record(
        &mut page1,
        &slru_target(SlruKind::MultiXactMembers, 1),
        &rec,
    )
    .unwrap();
    assert_eq!(&page1[0..4], &[3, 4, 0, 0]);
    assert_eq!(&page1[4..8], &1002u32.to_le_bytes());
    assert_eq!(&page1[8..12], &1003u32.to_le_bytes());
    assert_eq!(page1.iter().filter(|&&b| b != 0).count(), 2 + 2 * 2);
}

/// Reads a member's (xid, status) back from a members page, the way PostgreSQL's
/// GetMultiXactIdMembers locates it.
fn read_member(page: &[u8; BLCKSZ], offset: u32) -> (u32, u8) {
    let group = ((offset / 4) % 409) as usize;
    let pos = (offset % 4) as usize;
    let flags = u32::from_le_bytes(page[group * 20..group * 20 + 4].try_into().unwrap());
    let xid_at = group * 20 + 4 + pos * 4;
    let xid = u32::from_le_bytes(page[xid_at..xid_at + 4].try_into().unwrap());
    (xid, (flags >> (8 * pos)) as u8)
}

fn read_clog(page: &[u8; BLCKSZ], xid: u32) -> u8 {
    let in_page = xid % 32768;
    (page[(in_page / 4) as usize] >> ((in_page % 4) * 2)) & 0x03
}

proptest! {
    /// Random multixacts written to every page they touch read back like a map of
    /// offset -> member (later writes win).
    #[test]
    fn members_match_a_map(
        writes in prop::collection::vec(
            (0u32..3 * MULTIXACT_MEMBERS_PER_PAGE, prop::collection::vec((any::<u32>(), 0u8..6), 1..8)),
            1..20,
        )
    ) {
        let mut pages: BTreeMap<u32, Box<[u8; BLCKSZ]>> = BTreeMap::new();
        let mut model: HashMap<u32, (u32, u8)> = HashMap::new();
        for (moff, members) in writes {
            let members: Vec<MultiXactMember> = members
                .into_iter()
                .map(|(xid, status)| MultiXactMember { xid, status })
                .collect();
            let first = moff / MULTIXACT_MEMBERS_PER_PAGE;
            let last = (moff + members.len() as u32 - 1) / MULTIXACT_MEMBERS_PER_PAGE;
            let rec = NeonWalRecord::MultixactMembersCreate { moff, members: members.clone() };
            for pageno in first..=last {
                let page = pages.entry(pageno).or_insert_with(|| Box::new([0; BLCKSZ]));
                let target = slru_target(SlruKind::MultiXactMembers, pageno);
                apply_neon_record(page, &target, &rec).unwrap();
            }
            for (i, m) in members.iter().enumerate() {
                model.insert(moff + i as u32, (m.xid, m.status));
            }
        }
        for (offset, expected) in model {
            let page = &pages[&(offset / MULTIXACT_MEMBERS_PER_PAGE)];
            prop_assert_eq!(read_member(page, offset), expected);
        }
    }

    /// Random commit/abort records read back like a map of xid -> status.
    #[test]
    fn clog_matches_a_map(
        writes in prop::collection::vec(
            (prop::collection::vec(0u32..3 * CLOG_XACTS_PER_PAGE, 1..10), any::<bool>()),
            1..30,
        )
    ) {
        let mut pages: BTreeMap<u32, Box<[u8; BLCKSZ]>> = BTreeMap::new();
        let mut model: HashMap<u32, u8> = HashMap::new();
        for (xids, commit) in writes {
            let rec = if commit {
                NeonWalRecord::ClogSetCommitted { xids: xids.clone(), timestamp: 0 }
            } else {
                NeonWalRecord::ClogSetAborted { xids: xids.clone() }
            };
            let status = if commit { CLOG_STATUS_COMMITTED } else { CLOG_STATUS_ABORTED };
            let mut pagenos: Vec<u32> = xids.iter().map(|x| x / CLOG_XACTS_PER_PAGE).collect();
            pagenos.dedup();
            pagenos.sort_unstable();
            pagenos.dedup();
            for pageno in pagenos {
                let page = pages.entry(pageno).or_insert_with(|| Box::new([0; BLCKSZ]));
                apply_neon_record(page, &slru_target(SlruKind::Clog, pageno), &rec).unwrap();
            }
            for xid in xids {
                model.insert(xid, status);
            }
        }
        for (xid, status) in model {
            prop_assert_eq!(read_clog(&pages[&(xid / CLOG_XACTS_PER_PAGE)], xid), status);
        }
    }
}

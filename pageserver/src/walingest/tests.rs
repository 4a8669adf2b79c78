//! Ingest of hand-built records against the in-memory timeline.

use bytes::Bytes;
use pageserver_api::key::{rel_block_to_key, slru_block_to_key, RelTag, SlruKind};
use pageserver_api::value::{NeonWalRecord, Value};
use postgres_ffi::page::get_page_lsn;
use postgres_ffi::pg_constants::{
    BKPBLOCK_HAS_DATA, BKPBLOCK_HAS_IMAGE, BKPBLOCK_WILL_INIT, BKPIMAGE_APPLY,
    XLR_BLOCK_ID_DATA_LONG,
};
use postgres_ffi::records::rmgr;
use postgres_ffi::records::{self as r, CheckPoint};
use postgres_ffi::relfile::{ForkNumber, RelFileNode};
use postgres_ffi::walrecord::{decode_record, DecodedWalRecord, XLogRecordHeader};
use postgres_ffi::xlog_utils::encode_record;
use utils::lsn::Lsn;

use super::*;
use crate::memstore::MemTimeline;
use crate::pgdatadir_mapping::DatadirModification;

const RNODE: RelFileNode = RelFileNode {
    spcnode: 1663,
    dbnode: 5,
    relnode: 16384,
};

fn main_rel() -> RelTag {
    RelTag::new(RNODE, ForkNumber::Main)
}

/// A block reference: fork, block number, flags, data, and an optional uncompressed image
/// (the whole page, no hole).
struct Blk {
    id: u8,
    fork: ForkNumber,
    blkno: u32,
    flags: u8,
    image: Option<Vec<u8>>,
    /// Block data (BKPBLOCK_HAS_DATA when non-empty).
    data: Vec<u8>,
}

fn blk(id: u8, fork: ForkNumber, blkno: u32) -> Blk {
    Blk {
        id,
        fork,
        blkno,
        flags: 0,
        image: None,
        data: Vec::new(),
    }
}

/// Builds and decodes a record ending at `end`.
fn record(rmid: u8, info: u8, xid: u32, blocks: &[Blk], main: &[u8], end: u64) -> DecodedWalRecord {
    let mut body = Vec::new();
    for b in blocks {
        let has_image = b.image.is_some();
        body.push(b.id);
        let has_data = if b.data.is_empty() {
            0
        } else {
            BKPBLOCK_HAS_DATA
        };
        let image_flag = if has_image { BKPBLOCK_HAS_IMAGE } else { 0 };
        body.push(b.fork as u8 | b.flags | image_flag | has_data);
        body.extend_from_slice(&(b.data.len() as u16).to_le_bytes());
        if has_image {
            body.extend_from_slice(&(BLCKSZ as u16).to_le_bytes());
            body.extend_from_slice(&0u16.to_le_bytes());
            body.push(BKPIMAGE_APPLY);
        }
        for v in [RNODE.spcnode, RNODE.dbnode, RNODE.relnode, b.blkno] {
            body.extend_from_slice(&v.to_le_bytes());
        }
    }
    if !main.is_empty() {
        body.push(XLR_BLOCK_ID_DATA_LONG);
        body.extend_from_slice(&(main.len() as u32).to_le_bytes());
    }
    for b in blocks {
        body.extend_from_slice(b.image.as_deref().unwrap_or(&[]));
        body.extend_from_slice(&b.data);
    }
    body.extend_from_slice(main);
    let header = XLogRecordHeader {
        xl_xid: xid,
        xl_info: info,
        xl_rmid: rmid,
        ..Default::default()
    };
    let bytes = encode_record(&header, &body).unwrap();
    let header = XLogRecordHeader::from_bytes(&bytes).unwrap();
    decode_record(Lsn(end - 0x40), Lsn(end), header, bytes).unwrap()
}

fn words(v: &[u32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

/// A timeline with a checkpoint at 0x100 and the ingest state.
fn setup() -> (MemTimeline, WalIngest) {
    let mut tl = MemTimeline::new();
    let cp = CheckPoint {
        next_xid: 1000,
        next_oid: 20000,
        next_multi: 1,
        oldest_xid: 700,
        oldest_multi: 1,
        ..Default::default()
    };
    let mut m = DatadirModification::new(&mut tl, Lsn(0x100));
    m.put_checkpoint(Bytes::from(cp.encode()));
    m.commit().unwrap();
    tl.finish_write(Lsn(0x100), Lsn(0));
    let ingest = WalIngest::new(&tl, Lsn(0x100)).unwrap();
    (tl, ingest)
}

fn ingest(tl: &mut MemTimeline, ing: &mut WalIngest, recs: Vec<DecodedWalRecord>) {
    ingest_batch(tl, ing, recs).unwrap().unwrap();
}

#[test]
fn implicit_create_extend_and_fpi() {
    let (mut tl, mut ing) = setup();
    let insert = record(
        rmgr::RM_HEAP_ID,
        r::heap::XLOG_HEAP_INSERT,
        1001,
        &[blk(0, ForkNumber::Main, 3)],
        &[1, 0, 0],
        0x200,
    );
    let mut page = vec![0u8; BLCKSZ];
    page[12..14].copy_from_slice(&24u16.to_le_bytes()); // pd_lower
    page[14..16].copy_from_slice(&8192u16.to_le_bytes()); // pd_upper
    page[16..18].copy_from_slice(&8192u16.to_le_bytes()); // pd_special
    page[18..20].copy_from_slice(&(8192u16 | 4).to_le_bytes());
    let mut fpi_blk = blk(0, ForkNumber::Main, 1);
    fpi_blk.image = Some(page.clone());
    let fpi = record(
        rmgr::RM_XLOG_ID,
        r::xlog::XLOG_FPI,
        0,
        &[fpi_blk],
        &[],
        0x300,
    );
    ingest(&mut tl, &mut ing, vec![insert.clone(), fpi]);
    assert_eq!(tl.last_record_lsn(), Lsn(0x300));
    assert_eq!(tl.get_rel_size(main_rel(), Lsn(0x200)).unwrap(), Some(4));
    assert_eq!(tl.list_rels(1663, 5, Lsn(0x200)).unwrap().len(), 1);
    for b in 0..3 {
        assert_eq!(
            tl.get_rel_page_at_lsn(main_rel(), b, Lsn(0x200)).unwrap(),
            ZERO_PAGE
        );
    }
    let v = tl.versions(rel_block_to_key(main_rel(), 3));
    assert_eq!(
        v,
        vec![(
            Lsn(0x200),
            Value::WalRecord(NeonWalRecord::Postgres {
                will_init: false,
                rec: insert.record.clone()
            })
        )]
    );
    let img = tl.get_rel_page_at_lsn(main_rel(), 1, Lsn(0x300)).unwrap();
    assert_eq!(get_page_lsn(&img).unwrap(), Lsn(0x300));
    assert_eq!(&img[8..], &page[8..]);
    // nextXid moved past 1001, rounded up to 1024 xids.
    assert_eq!(tl.get_checkpoint(Lsn(0x200)).unwrap().next_xid, 1024);
    assert_eq!(ing.checkpoint().next_xid, 1024);
}

#[test]
fn smgr_create_and_truncate() {
    let (mut tl, mut ing) = setup();
    let vm = RelTag::new(RNODE, ForkNumber::VisibilityMap);
    let fsm = RelTag::new(RNODE, ForkNumber::Fsm);
    let create = record(
        rmgr::RM_SMGR_ID,
        r::smgr::XLOG_SMGR_CREATE,
        0,
        &[],
        &words(&[1663, 5, 16384, 0]),
        0x200,
    );
    let mut blocks = vec![
        blk(0, ForkNumber::Main, 99),
        blk(1, ForkNumber::VisibilityMap, 1),
        blk(2, ForkNumber::Fsm, 4),
    ];
    blocks[0].flags = BKPBLOCK_WILL_INIT;
    let touch = record(
        rmgr::RM_HEAP2_ID,
        r::heap2::XLOG_HEAP2_VISIBLE,
        0,
        &blocks,
        &[0, 0, 0, 0, 1],
        0x300,
    );
    // Truncate to 40000 heap blocks: VM keeps page 1 partially, FSM keeps leaf 9.
    let trunc = record(
        rmgr::RM_SMGR_ID,
        r::smgr::XLOG_SMGR_TRUNCATE,
        0,
        &[],
        &words(&[40000, 1663, 5, 16384, 7]),
        0x400,
    );
    ingest(&mut tl, &mut ing, vec![create, touch, trunc]);
    assert_eq!(tl.get_rel_size(main_rel(), Lsn(0x200)).unwrap(), Some(0));
    assert_eq!(tl.get_rel_size(main_rel(), Lsn(0x300)).unwrap(), Some(100));
    assert_eq!(tl.get_rel_size(vm, Lsn(0x300)).unwrap(), Some(2));
    assert_eq!(tl.get_rel_size(fsm, Lsn(0x300)).unwrap(), Some(5));
    let v = tl.versions(rel_block_to_key(main_rel(), 99));
    assert!(matches!(
        v[0].1,
        Value::WalRecord(NeonWalRecord::Postgres {
            will_init: true,
            ..
        })
    ));
    assert_eq!(tl.get_rel_size(main_rel(), Lsn(0x400)).unwrap(), Some(100));
    assert_eq!(tl.get_rel_size(vm, Lsn(0x400)).unwrap(), Some(2));
    let trunc_rec = tl.versions(rel_block_to_key(vm, 1));
    assert_eq!(
        trunc_rec.last().unwrap(),
        &(
            Lsn(0x400),
            Value::WalRecord(NeonWalRecord::TruncateVisibilityMap {
                trunc_byte: (40000 - VM_HEAPBLOCKS_PER_PAGE) / 4,
                trunc_offs: 0
            })
        )
    );
    // 40000 heap blocks: FSM leaf 9 (physical 11) is partial and zeroed, size 12 > 5: kept.
    assert_eq!(tl.get_rel_size(fsm, Lsn(0x400)).unwrap(), Some(5));
    // Truncate to 10 blocks: everything shrinks.
    let trunc2 = record(
        rmgr::RM_SMGR_ID,
        r::smgr::XLOG_SMGR_TRUNCATE,
        0,
        &[],
        &words(&[10, 1663, 5, 16384, 7]),
        0x500,
    );
    ingest(&mut tl, &mut ing, vec![trunc2]);
    assert_eq!(tl.get_rel_size(main_rel(), Lsn(0x500)).unwrap(), Some(10));
    assert_eq!(tl.get_rel_size(vm, Lsn(0x500)).unwrap(), Some(1));
    assert_eq!(tl.get_rel_size(fsm, Lsn(0x500)).unwrap(), Some(3));
    assert_eq!(
        tl.get_rel_page_at_lsn(fsm, 2, Lsn(0x500)).unwrap(),
        ZERO_PAGE
    );
}

fn commit_body(xid_time: i64, subxacts: &[u32], rels: &[RelFileNode]) -> Vec<u8> {
    let mut b = xid_time.to_le_bytes().to_vec();
    let xinfo = r::xact::XACT_XINFO_HAS_SUBXACTS | r::xact::XACT_XINFO_HAS_RELFILENODES;
    b.extend(words(&[xinfo, subxacts.len() as u32]));
    b.extend(words(subxacts));
    b.extend(words(&[rels.len() as u32]));
    for rn in rels {
        b.extend(words(&[rn.spcnode, rn.dbnode, rn.relnode]));
    }
    b
}

#[test]
fn commit_sets_clog_and_drops_relations() {
    let (mut tl, mut ing) = setup();
    let zero0 = record(
        rmgr::RM_CLOG_ID,
        r::clog::CLOG_ZEROPAGE,
        0,
        &[],
        &words(&[0]),
        0x200,
    );
    let zero1 = record(
        rmgr::RM_CLOG_ID,
        r::clog::CLOG_ZEROPAGE,
        0,
        &[],
        &words(&[1]),
        0x280,
    );
    let create = record(
        rmgr::RM_SMGR_ID,
        r::smgr::XLOG_SMGR_CREATE,
        0,
        &[],
        &words(&[1663, 5, 16384, 0]),
        0x300,
    );
    let top = CLOG_XACTS_PER_PAGE - 1;
    let info = r::xact::XLOG_XACT_COMMIT | r::xact::XLOG_XACT_HAS_INFO;
    let body = commit_body(42, &[top + 1, top + 2], &[RNODE]);
    let commit = record(rmgr::RM_XACT_ID, info, top, &[], &body, 0x400);
    let abort_info = r::xact::XLOG_XACT_ABORT | r::xact::XLOG_XACT_HAS_INFO;
    let abort = record(
        rmgr::RM_XACT_ID,
        abort_info,
        5,
        &[],
        &commit_body(43, &[], &[]),
        0x500,
    );
    ingest(&mut tl, &mut ing, vec![zero0, zero1, create, commit, abort]);
    assert_eq!(
        tl.list_slru_segments(SlruKind::Clog, Lsn(0x500))
            .unwrap()
            .len(),
        1
    );
    assert_eq!(
        tl.get_slru_segment_size(SlruKind::Clog, 0, Lsn(0x500))
            .unwrap(),
        Some(2)
    );
    let p0 = tl
        .get(slru_block_to_key(SlruKind::Clog, 0, 0), Lsn(0x500))
        .unwrap()
        .unwrap();
    let p1 = tl
        .get(slru_block_to_key(SlruKind::Clog, 0, 1), Lsn(0x500))
        .unwrap()
        .unwrap();
    use pageserver_walredo::apply_neon::clog_status;
    assert_eq!(clog_status(&p0, top), TRANSACTION_STATUS_COMMITTED);
    assert_eq!(clog_status(&p0, 5), TRANSACTION_STATUS_ABORTED);
    assert_eq!(clog_status(&p1, top + 1), TRANSACTION_STATUS_COMMITTED);
    assert_eq!(clog_status(&p1, top + 2), TRANSACTION_STATUS_COMMITTED);
    assert_eq!(clog_status(&p1, top + 3), TRANSACTION_STATUS_IN_PROGRESS);
    assert!(tl.get_rel_exists(main_rel(), Lsn(0x300)).unwrap());
    assert!(!tl.get_rel_exists(main_rel(), Lsn(0x400)).unwrap());
    assert!(tl.list_rels(1663, 5, Lsn(0x400)).unwrap().is_empty());
    // The commit's xids advanced nextXid past the subtransactions (xl_xid only: top).
    assert_eq!(ing.checkpoint().next_xid, u64::from(CLOG_XACTS_PER_PAGE));

    // Truncating at page 64 (segment 2) drops segment 0, keeps later ones.
    let zero64 = record(
        rmgr::RM_CLOG_ID,
        r::clog::CLOG_ZEROPAGE,
        0,
        &[],
        &words(&[64]),
        0x600,
    );
    let trunc = record(
        rmgr::RM_CLOG_ID,
        r::clog::CLOG_TRUNCATE,
        0,
        &[],
        &words(&[64, 64 * CLOG_XACTS_PER_PAGE, 1]),
        0x700,
    );
    ingest(&mut tl, &mut ing, vec![zero64, trunc]);
    let segs: Vec<u32> = tl
        .list_slru_segments(SlruKind::Clog, Lsn(0x700))
        .unwrap()
        .into_iter()
        .collect();
    assert_eq!(segs, vec![2]);
    assert_eq!(
        tl.get_slru_segment_size(SlruKind::Clog, 0, Lsn(0x700))
            .unwrap(),
        None
    );
    assert_eq!(ing.checkpoint().oldest_xid, 64 * CLOG_XACTS_PER_PAGE);
}

#[test]
fn prepare_and_commit_prepared() {
    let (mut tl, mut ing) = setup();
    let mut state = vec![0u8; 72];
    state[0..4].copy_from_slice(&r::xact_prepare::TWOPHASE_MAGIC.to_le_bytes());
    state[4..8].copy_from_slice(&80u32.to_le_bytes());
    state[8..12].copy_from_slice(&1234u32.to_le_bytes());
    state[54..56].copy_from_slice(&2u16.to_le_bytes());
    state.extend_from_slice(b"g\0\0\0\0\0\0\0");
    let prepare = record(
        rmgr::RM_XACT_ID,
        r::xact::XLOG_XACT_PREPARE,
        1234,
        &[],
        &state,
        0x200,
    );
    let info = r::xact::XLOG_XACT_COMMIT_PREPARED | r::xact::XLOG_XACT_HAS_INFO;
    let mut body = 7i64.to_le_bytes().to_vec();
    body.extend(words(&[r::xact::XACT_XINFO_HAS_TWOPHASE, 1234]));
    let commit = record(rmgr::RM_XACT_ID, info, 0, &[], &body, 0x300);
    ingest(&mut tl, &mut ing, vec![prepare]);
    let xids: Vec<u32> = tl
        .list_twophase_files(Lsn(0x200))
        .unwrap()
        .into_iter()
        .collect();
    assert_eq!(xids, vec![1234]);
    assert_eq!(
        &tl.get_twophase_file(1234, Lsn(0x200)).unwrap()[..],
        &state[..]
    );
    ingest(&mut tl, &mut ing, vec![commit]);
    assert!(tl.list_twophase_files(Lsn(0x300)).unwrap().is_empty());
}

#[test]
fn multixact_create_splits_members() {
    let (mut tl, mut ing) = setup();
    let moff = MULTIXACT_MEMBERS_PER_PAGE - 1;
    let mut body = words(&[5, moff, 3]);
    for (xid, status) in [(1100u32, 0u32), (1101, 5), (1102, 1)] {
        body.extend(words(&[xid, status]));
    }
    let create = record(
        rmgr::RM_MULTIXACT_ID,
        r::multixact::XLOG_MULTIXACT_CREATE_ID,
        1101,
        &[],
        &body,
        0x200,
    );
    ingest(&mut tl, &mut ing, vec![create]);
    let off = tl.versions(slru_block_to_key(SlruKind::MultiXactOffsets, 0, 0));
    assert_eq!(
        off[0].1,
        Value::WalRecord(NeonWalRecord::MultixactOffsetCreate { mid: 5, moff })
    );
    let m0 = tl.versions(slru_block_to_key(SlruKind::MultiXactMembers, 0, 0));
    let m1 = tl.versions(slru_block_to_key(SlruKind::MultiXactMembers, 0, 1));
    let count = |v: &[(Lsn, Value)]| match &v[0].1 {
        Value::WalRecord(NeonWalRecord::MultixactMembersCreate { members, .. }) => members.len(),
        other => panic!("unexpected {other:?}"),
    };
    assert_eq!((count(&m0), count(&m1)), (1, 2));
    let cp = ing.checkpoint();
    assert_eq!((cp.next_multi, cp.next_multi_offset), (6, moff + 3));
    assert_eq!(cp.next_xid, 2048);
}

#[test]
fn checkpoints_and_nextoid() {
    let (mut tl, mut ing) = setup();
    let nextoid = record(
        rmgr::RM_XLOG_ID,
        r::xlog::XLOG_NEXTOID,
        0,
        &[],
        &words(&[30000]),
        0x200,
    );
    let online = CheckPoint {
        redo: Lsn(0x180),
        next_xid: 1500,
        next_oid: 25000,
        oldest_xid: 710,
        oldest_active_xid: 1400,
        this_timeline_id: 1,
        ..Default::default()
    };
    let online_rec = record(
        rmgr::RM_XLOG_ID,
        r::xlog::XLOG_CHECKPOINT_ONLINE,
        0,
        &[],
        &online.encode(),
        0x300,
    );
    ingest(&mut tl, &mut ing, vec![nextoid, online_rec]);
    let cp = tl.get_checkpoint(Lsn(0x300)).unwrap();
    assert_eq!(
        (cp.next_xid, cp.next_oid, cp.oldest_xid),
        (1500, 30000, 710)
    );
    assert_eq!((cp.redo, cp.oldest_active_xid), (Lsn(0), 1400));
    let shutdown = CheckPoint {
        next_xid: 1450,
        next_oid: 26000,
        ..online
    };
    let shut_rec = record(
        rmgr::RM_XLOG_ID,
        r::xlog::XLOG_CHECKPOINT_SHUTDOWN,
        0,
        &[],
        &shutdown.encode(),
        0x400,
    );
    ingest(&mut tl, &mut ing, vec![shut_rec]);
    let cp = tl.get_checkpoint(Lsn(0x400)).unwrap();
    assert_eq!(
        (cp.next_xid, cp.next_oid, cp.redo),
        (1450, 26000, Lsn(0x400))
    );
    assert_eq!(cp.oldest_active_xid, 1450);
}

#[test]
fn heap_vm_clear_only_within_vm() {
    let (mut tl, mut ing) = setup();
    let vm = RelTag::new(RNODE, ForkNumber::VisibilityMap);
    let mut m = DatadirModification::new(&mut tl, Lsn(0x180));
    m.create_rel(vm, 1).unwrap();
    m.put_rel_value(vm, 0, Value::Image(Bytes::from(vec![0xFF; BLCKSZ])));
    m.commit().unwrap();
    tl.finish_write(Lsn(0x180), Lsn(0));
    // Update from heap block 40000 (VM page 1: does not exist) to heap block 2 (VM page 0).
    let info = r::heap::XLOG_HEAP_UPDATE;
    let flags =
        r::heap::XLH_UPDATE_OLD_ALL_VISIBLE_CLEARED | r::heap::XLH_UPDATE_NEW_ALL_VISIBLE_CLEARED;
    let mut main = words(&[0]);
    main.extend_from_slice(&[1, 0, 0, flags]);
    main.extend(words(&[0]));
    main.extend_from_slice(&[1, 0]);
    let blocks = [blk(0, ForkNumber::Main, 2), blk(1, ForkNumber::Main, 40000)];
    let update = record(rmgr::RM_HEAP_ID, info, 1001, &blocks, &main, 0x200);
    ingest(&mut tl, &mut ing, vec![update]);
    let page = tl.get_rel_page_at_lsn(vm, 0, Lsn(0x200)).unwrap();
    assert_eq!(page[24], 0b1100_1111);
    assert_eq!(tl.get_rel_size(vm, Lsn(0x200)).unwrap(), Some(1));
}

#[test]
fn createdb_file_copy_and_drop() {
    let (mut tl, mut ing) = setup();
    let mut m = DatadirModification::new(&mut tl, Lsn(0x180));
    m.create_rel(main_rel(), 2).unwrap();
    m.put_rel_value(main_rel(), 0, Value::Image(Bytes::from(vec![1; BLCKSZ])));
    m.put_rel_value(main_rel(), 1, Value::Image(Bytes::from(vec![2; BLCKSZ])));
    m.put_relmap_file(1663, 5, Bytes::from(vec![9; 512]))
        .unwrap();
    m.commit().unwrap();
    tl.finish_write(Lsn(0x180), Lsn(0));
    let create = record(
        rmgr::RM_DBASE_ID,
        r::dbase::XLOG_DBASE_CREATE_FILE_COPY,
        0,
        &[],
        &words(&[6, 1663, 5, 1663]),
        0x200,
    );
    ingest(&mut tl, &mut ing, vec![create]);
    let copy = RelTag {
        dbnode: 6,
        ..main_rel()
    };
    assert_eq!(tl.get_rel_size(copy, Lsn(0x200)).unwrap(), Some(2));
    assert_eq!(tl.get_rel_page_at_lsn(copy, 1, Lsn(0x200)).unwrap()[0], 2);
    assert_eq!(
        tl.get_relmap_file(1663, 6, Lsn(0x200)).unwrap().unwrap()[0],
        9
    );
    assert_eq!(
        tl.list_dbdirs(Lsn(0x200)).unwrap().get(&(1663, 6)),
        Some(&true)
    );
    let drop = record(
        rmgr::RM_DBASE_ID,
        r::dbase::XLOG_DBASE_DROP,
        0,
        &[],
        &words(&[6, 1, 1663]),
        0x300,
    );
    ingest(&mut tl, &mut ing, vec![drop]);
    assert!(!tl.list_dbdirs(Lsn(0x300)).unwrap().contains_key(&(1663, 6)));
    assert_eq!(tl.get_rel_size(copy, Lsn(0x300)).unwrap(), None);
    assert_eq!(tl.get_rel_size(main_rel(), Lsn(0x300)).unwrap(), Some(2));
}

#[test]
fn undecodable_main_data_is_an_error() {
    let (mut tl, mut ing) = setup();
    let bad = record(
        rmgr::RM_SMGR_ID,
        r::smgr::XLOG_SMGR_CREATE,
        0,
        &[],
        &[1, 2],
        0x200,
    );
    let err = ingest_batch(&mut tl, &mut ing, vec![bad]).unwrap_err();
    assert!(matches!(err, IngestError::Decode { .. }), "{err}");
}

/// Our compute's neon_cid records (custom rmgr 134, block data only) are stored under each
/// block they reference, like heap records, and clear no visibility-map bits.
#[test]
fn neon_cid_records_are_stored_per_block() {
    let (mut tl, mut ing) = setup();
    let insert = record(
        rmgr::RM_HEAP_ID,
        r::heap::XLOG_HEAP_INSERT,
        1001,
        &[blk(0, ForkNumber::Main, 3)],
        &[1, 0, 0],
        0x200,
    );
    let entry = r::NeonCidEntry {
        offnum: 1,
        ntuples: 1,
        combo: true,
        cid: 4,
    };
    let mut new_page = blk(0, ForkNumber::Main, 3);
    new_page.data = entry.encode().to_vec();
    let mut old_page = blk(1, ForkNumber::Main, 5);
    old_page.data = entry.encode().to_vec();
    let cid = record(
        rmgr::RM_NEON_CID_ID,
        r::neon_cid::XLOG_NEON_CID_SET,
        1001,
        &[new_page, old_page],
        &[],
        0x240,
    );
    assert_eq!(cid.rmgr_name(), "custom134");
    assert_eq!(
        r::decode_neon_cid_block(cid.header.xl_info, &cid.blocks[1].data).unwrap(),
        vec![entry]
    );
    ingest(&mut tl, &mut ing, vec![insert.clone(), cid.clone()]);
    assert_eq!(tl.last_record_lsn(), Lsn(0x240));
    assert_eq!(tl.get_rel_size(main_rel(), Lsn(0x200)).unwrap(), Some(4));
    assert_eq!(tl.get_rel_size(main_rel(), Lsn(0x240)).unwrap(), Some(6));
    let pg = |rec: &DecodedWalRecord| {
        Value::WalRecord(NeonWalRecord::Postgres {
            will_init: false,
            rec: rec.record.clone(),
        })
    };
    assert_eq!(
        tl.versions(rel_block_to_key(main_rel(), 3)),
        vec![(Lsn(0x200), pg(&insert)), (Lsn(0x240), pg(&cid))]
    );
    assert_eq!(
        tl.versions(rel_block_to_key(main_rel(), 5)),
        vec![(Lsn(0x240), pg(&cid))]
    );
    let vm = RelTag::new(RNODE, ForkNumber::VisibilityMap);
    assert_eq!(tl.get_rel_size(vm, Lsn(0x240)).unwrap(), None);
}

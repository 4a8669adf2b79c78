//! Rebuilds index and sequence pages from real WAL with `postgres --wal-redo`: BRIN (with a
//! revmap that extends, so REVMAP_EXTEND records whose other block is the metapage), hash,
//! GiST, SP-GiST and a sequence. These access methods write records with several blocks
//! and blocks that the record re-initialises (WILL_INIT); the wal-redo helper replays only
//! the target block of each record, so every other block goes through the redo filter.
//!
//! Every block of those relations (main fork) whose records start with one that
//! initialises it is rebuilt and compared with the page the server wrote (masked like
//! PostgreSQL's own `*_mask` functions for wal_consistency_checking).
//!
//! Regression test for the bug `brin_revmap_extend_redo`: rebuilding block 1 of a BRIN
//! index (its first revmap page) aborted the process with
//! `FailedAssertion("BufferIsPinned(buffer)")`.

mod common;

use std::collections::{BTreeMap, BTreeSet, HashMap};

use common::mask::{mask_brin, mask_heap, mask_index_lp_flags};
use common::wal::{decode_wal, key_of, page_difference, page_on_disk, run_workload_and_stop};
use common::wal::{Block, MAIN_FORK, PAGE};
use common::TestCluster;
use pageserver_api::value::NeonWalRecord;
use pageserver_walredo::{WalRedoConfig, WalRedoManager};
use postgres_ffi::pg_constants::{RM_BRIN_ID, RM_GIST_ID, RM_HASH_ID, RM_SPGIST_ID};
use postgres_ffi::walrecord::DecodedWalRecord;
use utils::id::TenantId;
use utils::lsn::Lsn;

/// fillfactor 10 spreads the rows over ~1500 heap pages, so that with one page per range
/// the BRIN revmap needs a second page (REVMAP_EXTEND of block 2, which first evacuates
/// the regular page there).
const WORKLOAD: &str = "
CREATE TABLE b (id int, v int, p point, s text) WITH (fillfactor = 10);
INSERT INTO b SELECT i, i % 100, point(i % 97, i % 89), md5(i::text)
  FROM generate_series(1, 6000) i;
CREATE INDEX b_brin ON b USING brin (id) WITH (pages_per_range = 1);
CREATE INDEX b_hash ON b USING hash (v);
CREATE INDEX b_gist ON b USING gist (p);
CREATE INDEX b_spgist ON b USING spgist (s);
CREATE SEQUENCE sq;
SELECT count(nextval('sq')) FROM generate_series(1, 100);
CHECKPOINT;
INSERT INTO b SELECT i, i % 100, point(i % 97, i % 89), md5(i::text)
  FROM generate_series(6001, 16000) i;
SELECT brin_summarize_new_values('b_brin');
UPDATE b SET id = id + 100000 WHERE id % 50 = 0;
DELETE FROM b WHERE id % 7 = 0;
VACUUM b;
SELECT brin_desummarize_range('b_brin', 3);
SELECT brin_summarize_range('b_brin', 3);
INSERT INTO b SELECT i, i % 100, point(i % 97, i % 89), md5(i::text)
  FROM generate_series(16001, 17000) i;
VACUUM b;
SELECT count(nextval('sq')) FROM generate_series(1, 100);
ALTER SEQUENCE sq RESTART WITH 7;
SELECT nextval('sq');
CHECKPOINT;
";

const RELATIONS_QUERY: &str = "
SELECT relname || '|' || pg_relation_filenode(oid) FROM pg_class
 WHERE relname IN ('b_brin', 'b_hash', 'b_gist', 'b_spgist', 'sq') ORDER BY relname;
SELECT 'db|' || oid FROM pg_database WHERE datname = 'postgres';
";

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
enum PageKind {
    Brin,
    Hash,
    Gist,
    SpGist,
    Sequence,
}

impl PageKind {
    fn of(relname: &str) -> PageKind {
        match relname {
            "b_brin" => PageKind::Brin,
            "b_hash" => PageKind::Hash,
            "b_gist" => PageKind::Gist,
            "b_spgist" => PageKind::SpGist,
            _ => PageKind::Sequence,
        }
    }

    /// Block `blkno` of this kind, masked.
    fn masked(self, blkno: u32, page: &[u8]) -> Vec<u8> {
        let mut page = page.to_vec();
        match self {
            PageKind::Brin => mask_brin(&mut page),
            PageKind::Sequence => mask_heap(&mut page),
            PageKind::Hash | PageKind::Gist | PageKind::SpGist => mask_index_lp_flags(&mut page),
        }
        if self == PageKind::Gist {
            mask_gist_special(&mut page);
        }
        if self == PageKind::SpGist && blkno == SPGIST_METAPAGE_BLKNO {
            mask_spgist_lup_cache(&mut page);
        }
        page
    }

    /// The page as WAL redo gives it, masked. `on_disk` is the server's page: sequence
    /// records log values ahead (see [`sequence_as_logged`]).
    fn masked_server_page(self, blkno: u32, on_disk: &[u8]) -> Vec<u8> {
        let mut page = on_disk.to_vec();
        if self == PageKind::Sequence {
            sequence_as_logged(&mut page);
        }
        self.masked(blkno, &page)
    }
}

const SPGIST_METAPAGE_BLKNO: u32 = 0;
/// Page header, then the metapage's magic number; then the last-used-pages cache.
const SPGIST_LUP_CACHE_OFFSET: usize = 24 + 4;

/// The SP-GiST metapage's cache of last used pages is updated without WAL.
fn mask_spgist_lup_cache(page: &mut [u8]) {
    let lower = usize::from(u16::from_le_bytes([page[12], page[13]])).min(PAGE);
    if lower > SPGIST_LUP_CACHE_OFFSET {
        page[SPGIST_LUP_CACHE_OFFSET..lower].fill(0);
    }
}

/// nextval() WAL-logs the sequence `log_cnt` values ahead (last_value + log_cnt, log_cnt
/// 0, is_called) and then writes the real state to the page: turns the server's page into
/// what its last record logged (increment 1).
fn sequence_as_logged(page: &mut [u8]) {
    let lp = u32::from_le_bytes(page[24..28].try_into().unwrap());
    let off = (lp & 0x7FFF) as usize;
    let data = off + usize::from(page[off + 22]);
    let read = |page: &[u8], at: usize| i64::from_le_bytes(page[at..at + 8].try_into().unwrap());
    let (last_value, log_cnt) = (read(page, data), read(page, data + 8));
    page[data..data + 8].copy_from_slice(&(last_value + log_cnt).to_le_bytes());
    page[data + 8..data + 16].fill(0);
    page[data + 16] = 1;
}

/// GiST: the NSN and the F_FOLLOW_RIGHT / F_HAS_GARBAGE flags change without WAL (as in
/// gist_mask).
fn mask_gist_special(page: &mut [u8]) {
    const F_HAS_GARBAGE: u16 = 1 << 4;
    const F_FOLLOW_RIGHT: u16 = 1 << 3;
    let special = usize::from(u16::from_le_bytes([page[16], page[17]]));
    if special + 16 <= PAGE {
        page[special..special + 8].fill(0);
        let at = special + 12;
        let flags =
            u16::from_le_bytes([page[at], page[at + 1]]) & !(F_HAS_GARBAGE | F_FOLLOW_RIGHT);
        page[at..at + 2].copy_from_slice(&flags.to_le_bytes());
    }
}

struct Workload {
    cluster: TestCluster,
    dbnode: u32,
    kinds: HashMap<u32, PageKind>,
}

fn run_workload() -> Workload {
    let (cluster, dbnode, names) = run_workload_and_stop(WORKLOAD, RELATIONS_QUERY);
    let kinds: HashMap<u32, PageKind> = names
        .iter()
        .map(|(name, oid)| (*oid, PageKind::of(name)))
        .collect();
    assert_eq!(kinds.len(), 5, "relations: {names:?}");
    Workload {
        cluster,
        dbnode,
        kinds,
    }
}

const XLOG_BRIN_OPMASK: u8 = 0x70;
const XLOG_BRIN_INSERT: u8 = 0x10;
const XLOG_BRIN_UPDATE: u8 = 0x20;
const XLOG_BRIN_REVMAP_EXTEND: u8 = 0x40;

/// The xl_info bits that belong to the resource manager.
const XLR_RMGR_INFO_MASK: u8 = 0xF0;

/// How a record references a block: its resource manager, its resource-manager info bits
/// and the block reference id.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
struct Ref {
    rmid: u8,
    info: u8,
    block_id: u8,
}

impl Ref {
    fn new(rec: &DecodedWalRecord, block_id: u8) -> Ref {
        Ref {
            rmid: rec.header.xl_rmid,
            info: rec.header.xl_info & XLR_RMGR_INFO_MASK,
            block_id,
        }
    }

    /// A BRIN INSERT or UPDATE record on its revmap page (block 1): the regular page
    /// (block 0) is skipped, the case of the `brin_revmap_extend_redo` bug.
    fn is_brin_revmap_update(&self) -> bool {
        self.rmid == RM_BRIN_ID
            && matches!(
                self.info & XLOG_BRIN_OPMASK,
                XLOG_BRIN_INSERT | XLOG_BRIN_UPDATE
            )
            && self.block_id == 1
    }

    /// A BRIN REVMAP_EXTEND on the new revmap page (the metapage is skipped).
    fn is_brin_revmap_extend(&self) -> bool {
        self.rmid == RM_BRIN_ID
            && self.info & XLOG_BRIN_OPMASK == XLOG_BRIN_REVMAP_EXTEND
            && self.block_id == 1
    }
}

/// The records of every main-fork block of the workload's relations, in WAL order, with
/// how each references it.
fn records_by_block(
    wl: &Workload,
    wal: &[DecodedWalRecord],
) -> BTreeMap<Block, Vec<(Lsn, Ref, NeonWalRecord)>> {
    let mut by_block: BTreeMap<Block, Vec<(Lsn, Ref, NeonWalRecord)>> = BTreeMap::new();
    for rec in wal {
        for blk in &rec.blocks {
            if !wl.kinds.contains_key(&blk.rnode.relnode)
                || blk.rnode.dbnode != wl.dbnode
                || blk.forknum as u8 != MAIN_FORK
            {
                continue;
            }
            let block = Block {
                relnode: blk.rnode.relnode,
                fork: MAIN_FORK,
                blkno: blk.blkno,
            };
            let pg = NeonWalRecord::Postgres {
                will_init: blk.apply_image || blk.will_init,
                rec: rec.record.clone(),
            };
            by_block
                .entry(block)
                .or_default()
                .push((rec.end_lsn, Ref::new(rec, blk.block_id), pg));
        }
    }
    by_block
}

/// Counts of what was compared.
#[derive(Default, Debug)]
struct Tally {
    pages: BTreeMap<PageKind, usize>,
    /// chains with at least one record that references more than one block
    /// (i.e. whose other blocks went through the redo filter)
    multi_record_chains: usize,
    no_init_record: usize,
    /// BRIN INSERT/UPDATE records replayed on a revmap page
    brin_revmap_updates: usize,
    /// BRIN revmap pages (re)initialised by REVMAP_EXTEND, by block number
    brin_revmap_extends: Vec<u32>,
    /// (rmid, info, block id) of the records replayed on a block other than their
    /// first, i.e. with block 0 skipped by the redo filter
    replayed_as_other_block: BTreeSet<(u8, u8, u8)>,
}

#[test]
fn brin_revmap_extend_redo() {
    let wl = run_workload();
    let wal = decode_wal(&wl.cluster.data_dir().join("pg_wal"));
    let by_block = records_by_block(&wl, &wal);
    let redo = WalRedoManager::new(
        WalRedoConfig::new(common::pg_install_dir()),
        TenantId::generate(),
    );
    let mut tally = Tally::default();
    let mut failures = Vec::new();

    for (block, records) in &by_block {
        let Some(start) = records.iter().rposition(|(_, _, r)| r.will_init()) else {
            tally.no_init_record += 1;
            continue;
        };
        let refs = records[start..].iter().map(|(_, r, _)| r);
        let revmap_updates = refs.clone().filter(|r| r.is_brin_revmap_update()).count();
        let revmap_extend = refs.clone().any(|r| r.is_brin_revmap_extend());
        let other_blocks: Vec<Ref> = refs.filter(|r| r.block_id > 0).copied().collect();
        let chain: Vec<(Lsn, NeonWalRecord)> = records[start..]
            .iter()
            .map(|(lsn, _, r)| (*lsn, r.clone()))
            .collect();
        let Some(on_disk) = page_on_disk(&wl.cluster, wl.dbnode, *block) else {
            continue;
        };
        let kind = wl.kinds[&block.relnode];
        let lsn = chain.last().unwrap().0;
        let page = match redo.request_redo(key_of(wl.dbnode, *block), lsn, None, chain.clone()) {
            Ok(page) => page,
            Err(e) => {
                failures.push(format!("{kind:?} {block:?}: redo failed: {e}"));
                continue;
            }
        };
        let (a, b) = (
            kind.masked(block.blkno, &page),
            kind.masked_server_page(block.blkno, &on_disk),
        );
        if let Some(diff) = page_difference(&a, &b) {
            failures.push(format!("{kind:?} page {block:?} {diff}"));
            continue;
        }
        *tally.pages.entry(kind).or_default() += 1;
        if chain.len() > 1 {
            tally.multi_record_chains += 1;
        }
        tally.brin_revmap_updates += revmap_updates;
        if revmap_extend {
            tally.brin_revmap_extends.push(block.blkno);
        }
        for r in other_blocks {
            tally
                .replayed_as_other_block
                .insert((r.rmid, r.info, r.block_id));
        }
    }
    eprintln!("compared: {tally:?}");
    assert!(
        failures.is_empty(),
        "{} pages failed:\n{}",
        failures.len(),
        failures.join("\n")
    );
    for (kind, min) in [
        (PageKind::Brin, 4),
        (PageKind::Hash, 10),
        (PageKind::Gist, 5),
        (PageKind::SpGist, 5),
        (PageKind::Sequence, 1),
    ] {
        let n = tally.pages.get(&kind).copied().unwrap_or(0);
        assert!(n >= min, "only {n} {kind:?} pages compared: {tally:?}");
    }
    // the revmap's second page (block 2, where a regular page was evacuated) rebuilt from
    // its REVMAP_EXTEND (block 1 starts from a full-page image after the checkpoint), and
    // revmap pages rebuilt with the INSERT/UPDATE records that fill them
    assert!(tally.brin_revmap_extends.contains(&2), "{tally:?}");
    assert!(tally.brin_revmap_updates >= 100, "{tally:?}");
    // multi-block records of the other access methods were replayed on a later block
    for rmid in [RM_HASH_ID, RM_GIST_ID, RM_SPGIST_ID] {
        assert!(
            tally
                .replayed_as_other_block
                .iter()
                .any(|(r, _, _)| *r == rmid),
            "no record of resource manager {rmid} replayed on its block > 0: {tally:?}"
        );
    }
}

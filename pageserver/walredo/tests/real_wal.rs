//! Rebuilds pages from real WAL with `postgres --wal-redo` and compares them with the pages
//! the server wrote.
//!
//! A cluster of our PostgreSQL build (no extension loaded, full_page_writes on) runs a
//! workload on a heap table with three btree indexes and a table with a GIN index: inserts,
//! HOT and non-HOT updates, deletes, an index build, VACUUM (pruning, visibility-map bits)
//! and more changes that clear visibility-map bits, with checkpoints in between so that
//! pages get full-page images. After a clean shutdown, our decoder reads the WAL; for every
//! block of those relations (main forks, and the table's visibility map), the records since
//! the last one that initialises the block (a full-page image to apply, or WILL_INIT) go to
//! the WalRedoManager, with Neon's ClearVisibilityMapFlags records synthesised for the
//! visibility map the way the pageserver's ingest will. The result must equal the page in
//! the relation file, up to the hint bits listed in common/mask.rs.

mod common;

use std::collections::{BTreeMap, HashMap};

use bytes::Bytes;
use common::mask::{mask_btree, mask_checksum, mask_gin, mask_heap};
use common::wal::{decode_wal, key_of, page_difference, page_on_disk, run_workload_and_stop};
use common::wal::{Block, MAIN_FORK, VM_FORK};
use common::TestCluster;
use pageserver_api::value::NeonWalRecord;
use pageserver_walredo::apply_neon::VM_HEAPBLOCKS_PER_PAGE;
use pageserver_walredo::{WalRedoConfig, WalRedoError, WalRedoManager};
use postgres_ffi::pg_constants::{RM_HEAP2_ID, RM_HEAP_ID};
use postgres_ffi::records::{decode_main_data, VmHeapPage};
use postgres_ffi::walrecord::DecodedWalRecord;
use utils::id::TenantId;
use utils::lsn::Lsn;

const WORKLOAD: &str = "
CREATE TABLE t (id int PRIMARY KEY, v text, n int);
CREATE INDEX t_v ON t (v);
CREATE TABLE g (a int[]);
CREATE INDEX g_gin ON g USING gin (a) WITH (fastupdate = off);
INSERT INTO t SELECT i, md5(i::text), i FROM generate_series(1, 3000) i;
INSERT INTO g SELECT array[i % 100, i % 37, i] FROM generate_series(1, 3000) i;
CHECKPOINT;
UPDATE t SET n = n + 1 WHERE id % 7 = 0;
UPDATE t SET v = v || 'x' WHERE id % 11 = 0;
DELETE FROM t WHERE id % 13 = 0;
INSERT INTO t SELECT i, md5(i::text), i FROM generate_series(3001, 4500) i;
CREATE INDEX t_n ON t (n);
VACUUM t;
UPDATE t SET n = -n WHERE id % 17 = 0;
DELETE FROM t WHERE id % 19 = 0;
INSERT INTO g SELECT array[i % 50, i] FROM generate_series(3001, 6000) i;
VACUUM t;
UPDATE t SET v = v || 'y' WHERE id % 23 = 0;
CHECKPOINT;
";

const RELATIONS_QUERY: &str = "
SELECT relname || '|' || pg_relation_filenode(oid) FROM pg_class
 WHERE relname IN ('t', 't_pkey', 't_v', 't_n', 'g', 'g_gin') ORDER BY relname;
SELECT 'db|' || oid FROM pg_database WHERE datname = 'postgres';
";

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum PageKind {
    Heap,
    Btree,
    Gin,
    VisibilityMap,
}

/// A block, the records that rebuilt it (from the last one that initialises it) and the
/// page they gave.
type Rebuilt = (Block, Vec<(Lsn, NeonWalRecord)>, Bytes);

struct Workload {
    cluster: TestCluster,
    dbnode: u32,
    /// relfilenode -> kind of its main-fork pages
    kinds: HashMap<u32, PageKind>,
    /// relfilenode of table t (whose visibility map is checked too)
    table_t: u32,
}

fn run_workload() -> Workload {
    let (cluster, dbnode, names) = run_workload_and_stop(WORKLOAD, RELATIONS_QUERY);
    let kind_of = |name: &str| match name {
        "t" | "g" => PageKind::Heap,
        "g_gin" => PageKind::Gin,
        _ => PageKind::Btree,
    };
    let kinds = names
        .iter()
        .map(|(name, oid)| (*oid, kind_of(name)))
        .collect::<HashMap<_, _>>();
    assert_eq!(kinds.len(), 6, "relations: {names:?}");
    Workload {
        dbnode,
        table_t: names["t"],
        kinds,
        cluster,
    }
}

/// The records of every block of interest, as the pageserver would store them: the
/// PostgreSQL record under each block it references, and ClearVisibilityMapFlags under the
/// visibility-map page of each heap page a Heap/Heap2 record clears bits for.
fn records_by_block(
    wl: &Workload,
    wal: &[DecodedWalRecord],
) -> BTreeMap<Block, Vec<(Lsn, NeonWalRecord)>> {
    let mut by_block: BTreeMap<Block, Vec<(Lsn, NeonWalRecord)>> = BTreeMap::new();
    for rec in wal {
        for blk in &rec.blocks {
            let wanted = wl.kinds.contains_key(&blk.rnode.relnode)
                && blk.rnode.dbnode == wl.dbnode
                && (blk.forknum as u8 == MAIN_FORK
                    || (blk.forknum as u8 == VM_FORK && blk.rnode.relnode == wl.table_t));
            if !wanted {
                continue;
            }
            let block = Block {
                relnode: blk.rnode.relnode,
                fork: blk.forknum as u8,
                blkno: blk.blkno,
            };
            let pg = NeonWalRecord::Postgres {
                will_init: blk.apply_image || blk.will_init,
                rec: rec.record.clone(),
            };
            by_block.entry(block).or_default().push((rec.end_lsn, pg));
        }
        for (vm_block, clear) in vm_clears(wl, rec) {
            by_block
                .entry(vm_block)
                .or_default()
                .push((rec.end_lsn, clear));
        }
    }
    by_block
}

/// ClearVisibilityMapFlags records for table t's visibility map implied by `rec`.
fn vm_clears(wl: &Workload, rec: &DecodedWalRecord) -> Vec<(Block, NeonWalRecord)> {
    let rmid = rec.header.xl_rmid;
    if rmid != RM_HEAP_ID && rmid != RM_HEAP2_ID {
        return Vec::new();
    }
    let Ok(Some(typed)) = decode_main_data(rmid, rec.header.xl_info, rec.xid(), &rec.main_data)
    else {
        return Vec::new();
    };
    let block_ref = |id: u8| rec.blocks.iter().find(|b| b.block_id == id);
    // heap blocks per VM block, with the bits cleared (all clears of one record together)
    let mut per_vm_page: BTreeMap<u32, (Vec<u32>, u8)> = BTreeMap::new();
    for clear in typed.clears_visibility_map() {
        let heap = match clear.heap_page {
            VmHeapPage::BlockRef(id) => block_ref(id),
            VmHeapPage::UpdateOldPage => block_ref(1).or_else(|| block_ref(0)),
        }
        .expect("block reference of a visibility-map clear");
        if heap.rnode.relnode != wl.table_t {
            continue;
        }
        let flags = u8::from(clear.all_visible) | (u8::from(clear.all_frozen) << 1);
        let entry = per_vm_page
            .entry(heap.blkno / VM_HEAPBLOCKS_PER_PAGE)
            .or_insert((Vec::new(), flags));
        assert_eq!(entry.1, flags, "one record clears the same bits everywhere");
        if !entry.0.contains(&heap.blkno) {
            entry.0.push(heap.blkno);
        }
    }
    per_vm_page
        .into_iter()
        .map(|(vm_blkno, (heap_blocks, flags))| {
            assert!(heap_blocks.len() <= 2);
            let block = Block {
                relnode: wl.table_t,
                fork: VM_FORK,
                blkno: vm_blkno,
            };
            let record = NeonWalRecord::ClearVisibilityMapFlags {
                new_heap_blkno: heap_blocks.first().copied(),
                old_heap_blkno: heap_blocks.get(1).copied(),
                flags,
            };
            (block, record)
        })
        .collect()
}

/// The records since the last one that initialises the block, or None if none does.
fn since_last_init(records: &[(Lsn, NeonWalRecord)]) -> Option<Vec<(Lsn, NeonWalRecord)>> {
    let start = records.iter().rposition(|(_, r)| r.will_init())?;
    Some(records[start..].to_vec())
}

fn masked(kind: PageKind, page: &[u8]) -> Vec<u8> {
    let mut page = page.to_vec();
    match kind {
        PageKind::Heap => mask_heap(&mut page),
        PageKind::Btree => mask_btree(&mut page),
        PageKind::Gin => mask_gin(&mut page),
        PageKind::VisibilityMap => mask_checksum(&mut page),
    }
    page
}

fn assert_same_page(block: Block, kind: PageKind, redone: &[u8], on_disk: &[u8]) {
    if let Some(diff) = page_difference(&masked(kind, redone), &masked(kind, on_disk)) {
        panic!("{kind:?} page {block:?} {diff}");
    }
}

fn manager(max_batch_bytes: Option<usize>) -> WalRedoManager {
    let mut config = WalRedoConfig::new(common::pg_install_dir());
    if let Some(max) = max_batch_bytes {
        config.max_batch_bytes = max;
    }
    WalRedoManager::new(config, TenantId::generate())
}

#[derive(Default, Debug)]
struct Tally {
    pages: HashMap<String, usize>,
    multi_record_chains: usize,
    mixed_vm_chains: usize,
    no_init_record: usize,
}

#[test]
fn redo_of_real_wal_matches_the_server() {
    let wl = run_workload();
    let wal = decode_wal(&wl.cluster.data_dir().join("pg_wal"));
    let by_block = records_by_block(&wl, &wal);
    let redo = manager(None);
    let small_batches = manager(Some(
        pageserver_walredo::protocol::FIXED_REQUEST_BYTES + 40_000,
    ));
    let mut tally = Tally::default();
    let mut rebuilt: Vec<Rebuilt> = Vec::new();

    for (block, records) in &by_block {
        let Some(chain) = since_last_init(records) else {
            tally.no_init_record += 1;
            continue;
        };
        let Some(on_disk) = page_on_disk(&wl.cluster, wl.dbnode, *block) else {
            continue;
        };
        let kind = if block.fork == VM_FORK {
            PageKind::VisibilityMap
        } else {
            wl.kinds[&block.relnode]
        };
        let key = key_of(wl.dbnode, *block);
        let lsn = chain.last().unwrap().0;
        let page = redo
            .request_redo(key, lsn, None, chain.clone())
            .unwrap_or_else(|e| panic!("redo of {block:?} failed: {e}"));
        assert_same_page(*block, kind, &page, &on_disk);

        // the same in round trips of at most ~40 kB: same page
        let again = small_batches
            .request_redo(key, lsn, None, chain.clone())
            .unwrap_or_else(|e| panic!("small-batch redo of {block:?} failed: {e}"));
        assert_eq!(page, again, "{block:?} with small batches");

        *tally.pages.entry(format!("{kind:?}")).or_default() += 1;
        if chain.len() > 1 {
            tally.multi_record_chains += 1;
        }
        let is_pg = |r: &NeonWalRecord| matches!(r, NeonWalRecord::Postgres { .. });
        let first_neon = chain.iter().position(|(_, r)| !is_pg(r));
        if first_neon.is_some_and(|i| chain[i..].iter().any(|(_, r)| is_pg(r))) {
            tally.mixed_vm_chains += 1;
        }
        rebuilt.push((*block, chain, page));
    }
    eprintln!("compared: {tally:?}");
    for (kind, min) in [
        ("Heap", 20),
        ("Btree", 20),
        ("Gin", 3),
        ("VisibilityMap", 1),
    ] {
        let n = tally.pages.get(kind).copied().unwrap_or(0);
        assert!(n >= min, "only {n} {kind} pages compared: {tally:?}");
    }
    assert!(tally.multi_record_chains >= 20, "{tally:?}");
    assert!(
        tally.mixed_vm_chains >= 1,
        "no VM page mixed PostgreSQL and Neon records: {tally:?}"
    );

    check_base_images(&redo, wl.dbnode, &rebuilt);
    check_respawn_after_garbage(&redo, wl.dbnode, &rebuilt[0]);
}

/// Splitting a chain and passing the first part's result as the base image (PushPage) gives
/// the same page.
fn check_base_images(redo: &WalRedoManager, dbnode: u32, rebuilt: &[Rebuilt]) {
    let mut checked = 0;
    for (block, chain, page) in rebuilt.iter().filter(|(_, c, _)| c.len() >= 3).take(10) {
        let key = key_of(dbnode, *block);
        let split = chain.len() / 2;
        let head = &chain[..split];
        let head_lsn = head.last().unwrap().0;
        let base = redo
            .request_redo(key, head_lsn, None, head.to_vec())
            .unwrap();
        let lsn = chain.last().unwrap().0;
        let rest = chain[split..].to_vec();
        let page2 = redo
            .request_redo(key, lsn, Some((head_lsn, base)), rest)
            .unwrap();
        assert_eq!(&page2, page, "{block:?} rebuilt from a base image");
        checked += 1;
    }
    assert!(checked >= 5, "only {checked} chains long enough to split");
}

/// A record the process rejects fails the request and kills the process; the next request
/// starts a new one and works.
fn check_respawn_after_garbage(redo: &WalRedoManager, dbnode: u32, good: &Rebuilt) {
    let (block, chain, page) = good;
    let key = key_of(dbnode, *block);
    redo.ping().unwrap();
    let first_pid = redo.process_id().expect("a running process");

    // A heap record header with a wrong CRC.
    let mut garbage = vec![0u8; 64];
    garbage[0..4].copy_from_slice(&64u32.to_le_bytes());
    garbage[17] = RM_HEAP_ID;
    let records = vec![(
        Lsn(0x0100_0000),
        NeonWalRecord::Postgres {
            will_init: true,
            rec: Bytes::from(garbage),
        },
    )];
    let err = redo
        .request_redo(key, Lsn(0x0100_0000), None, records)
        .unwrap_err();
    match &err {
        WalRedoError::ProcessFailed { stderr, .. } => {
            assert!(stderr.contains("checksum"), "stderr: {stderr}")
        }
        other => panic!("unexpected error {other}"),
    }
    assert_eq!(redo.process_id(), None, "the failed process is gone");

    let lsn = chain.last().unwrap().0;
    let again = redo.request_redo(key, lsn, None, chain.clone()).unwrap();
    assert_eq!(&again, page);
    let second_pid = redo.process_id().expect("a new process");
    assert_ne!(first_pid, second_pid);
    redo.ping().unwrap();
}

//! Command ids through WAL redo: the `neon_cid` records (rmgr 134) that our PostgreSQL
//! writes when `neon_rmgr` is loaded.
//!
//! A cluster of our build with `shared_preload_libraries = neon_rmgr` runs transactions
//! whose tuples carry command ids heap redo would lose: several inserting statements in
//! one transaction (plain inserts, `INSERT INTO t SELECT * FROM t`, COPY's multi-inserts),
//! updates and deletes of rows the same transaction inserted (combo command ids), row
//! locks, an update whose new tuple does not fit (the old tuple is locked first), INSERT
//! ON CONFLICT, a rolled-back savepoint. After a clean shutdown every heap page of the
//! tables is rebuilt from the WAL by `postgres --wal-redo` and must equal the server's page
//! with t_cid and HEAP_COMBOCID compared (only hint bits are masked). Without the neon_cid
//! records some pages must differ, so the comparison can fail. The neon_cid records are
//! also decoded (block data) and compared with what pg_waldump prints for them
//! (`custom134`), and a crash-restart of the server replays them.

mod common;

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;

use common::mask::mask_heap_keep_cid;
use common::wal::{decode_wal, key_of, page_difference, page_on_disk};
use common::wal::{run_workload_and_stop_with, Block, MAIN_FORK, PAGE};
use common::{run_ok, TestCluster};
use pageserver_api::value::NeonWalRecord;
use pageserver_walredo::{WalRedoConfig, WalRedoManager};
use postgres_ffi::records::neon_cid::RM_NEON_CID_ID;
use postgres_ffi::records::{decode_neon_cid_block, NeonCidEntry};
use postgres_ffi::walrecord::DecodedWalRecord;
use utils::id::TenantId;
use utils::lsn::Lsn;

const SETTINGS: &[&str] = &["shared_preload_libraries=neon_rmgr", "shared_buffers=1MB"];
const COPY_ROWS: u32 = 2000;
const HEAP_TUPLE_HEADER_BYTES: usize = 23;
const HEAP_COMBOCID: u16 = 0x0020;

const RELATIONS_QUERY: &str = "
SELECT relname || '|' || pg_relation_filenode(oid) FROM pg_class
 WHERE relname IN ('t', 'c', 'u') ORDER BY relname;
SELECT 'db|' || oid FROM pg_database WHERE datname = 'postgres';
";

/// The workload: one setup transaction, then transactions of many statements.
fn workload() -> String {
    let mut sql = String::from(
        "
CREATE TABLE t (id int, v text, n int);
CREATE TABLE c (id int, v text);
CREATE TABLE u (id int PRIMARY KEY, n int);
INSERT INTO t SELECT i, md5(i::text), i FROM generate_series(1, 1000) i;
INSERT INTO u SELECT i, 0 FROM generate_series(1, 200) i;
CHECKPOINT;
BEGIN;
INSERT INTO t SELECT i, md5(i::text), 0 FROM generate_series(1001, 1200) i;
INSERT INTO t SELECT id + 10000, v, n FROM t;
INSERT INTO t SELECT * FROM t WHERE id > 10000;
UPDATE t SET n = n + 1 WHERE id % 3 = 0;
DELETE FROM t WHERE id % 5 = 0;
UPDATE t SET v = repeat(v, 40) WHERE id % 97 = 0;
SELECT count(*) FROM (SELECT * FROM t WHERE id % 7 = 0 FOR UPDATE) s;
SAVEPOINT s1;
UPDATE t SET n = -n WHERE id % 11 = 0;
ROLLBACK TO s1;
UPDATE t SET n = n * 2 WHERE id % 13 = 0;
INSERT INTO u SELECT i, 1 FROM generate_series(150, 260) i
  ON CONFLICT (id) DO UPDATE SET n = u.n + 10;
UPDATE u SET n = n + 1 WHERE id % 4 = 0;
COPY c FROM STDIN;
",
    );
    for i in 0..COPY_ROWS {
        let _ = writeln!(sql, "{i}\trow {i}");
    }
    sql.push_str(
        "\\.
INSERT INTO c SELECT * FROM c WHERE id % 2 = 0;
DELETE FROM c WHERE id % 9 = 0;
COMMIT;
BEGIN;
CHECKPOINT;
UPDATE c SET v = v || '!' WHERE id % 4 = 1;
UPDATE c SET v = v || '?' WHERE id % 8 = 1;
DELETE FROM t WHERE id % 17 = 0;
COMMIT;
",
    );
    sql
}

fn manager() -> WalRedoManager {
    WalRedoManager::new(
        WalRedoConfig::new(common::pg_install_dir()),
        TenantId::generate(),
    )
}

/// The PostgreSQL records of every main-fork block of `rels` in database `dbnode`.
fn records_by_block(
    wal: &[DecodedWalRecord],
    dbnode: u32,
    rels: &[u32],
) -> BTreeMap<Block, Vec<(Lsn, NeonWalRecord)>> {
    let mut by_block: BTreeMap<Block, Vec<(Lsn, NeonWalRecord)>> = BTreeMap::new();
    for rec in wal {
        for blk in &rec.blocks {
            let wanted = blk.rnode.dbnode == dbnode
                && rels.contains(&blk.rnode.relnode)
                && blk.forknum as u8 == MAIN_FORK;
            if wanted {
                let block = Block {
                    relnode: blk.rnode.relnode,
                    fork: MAIN_FORK,
                    blkno: blk.blkno,
                };
                let pg = NeonWalRecord::Postgres {
                    will_init: blk.apply_image || blk.will_init,
                    rec: rec.record.clone(),
                };
                by_block.entry(block).or_default().push((rec.end_lsn, pg));
            }
        }
    }
    by_block
}

/// The records since the last one that initialises the block, or None if none does.
fn since_last_init(records: &[(Lsn, NeonWalRecord)]) -> Option<Vec<(Lsn, NeonWalRecord)>> {
    let start = records.iter().rposition(|(_, r)| r.will_init())?;
    Some(records[start..].to_vec())
}

fn is_neon_cid(rec: &NeonWalRecord) -> bool {
    // xl_rmid is byte 17 of the XLogRecord header
    matches!(rec, NeonWalRecord::Postgres { rec, .. } if rec.get(17) == Some(&RM_NEON_CID_ID))
}

fn masked(page: &[u8]) -> Vec<u8> {
    let mut page = page.to_vec();
    mask_heap_keep_cid(&mut page);
    page
}

/// (tuples with t_cid != 0, tuples with HEAP_COMBOCID) on a heap page.
fn count_cids(page: &[u8]) -> (usize, usize) {
    let lower = usize::from(u16::from_le_bytes([page[12], page[13]]));
    let (mut nonzero, mut combo) = (0, 0);
    for at in (24..lower.min(PAGE)).step_by(4) {
        let lp = u32::from_le_bytes(page[at..at + 4].try_into().unwrap());
        let (off, flags, len) = ((lp & 0x7FFF) as usize, (lp >> 15) & 3, (lp >> 17) as usize);
        if flags != 1 || len < HEAP_TUPLE_HEADER_BYTES || off + len > PAGE {
            continue;
        }
        let cid = u32::from_le_bytes(page[off + 8..off + 12].try_into().unwrap());
        let infomask = u16::from_le_bytes([page[off + 20], page[off + 21]]);
        nonzero += usize::from(cid != 0);
        combo += usize::from(infomask & HEAP_COMBOCID != 0);
    }
    (nonzero, combo)
}

#[derive(Default, Debug)]
struct Tally {
    pages: usize,
    pages_with_cids: usize,
    tuples_with_cid: usize,
    combo_tuples: usize,
    differ_without_cid_records: usize,
}

#[test]
fn command_ids_survive_wal_redo() {
    let (mut cluster, dbnode, names) =
        run_workload_and_stop_with(&workload(), RELATIONS_QUERY, SETTINGS);
    let rels: Vec<u32> = ["t", "c", "u"].iter().map(|n| names[*n]).collect();
    let wal = decode_wal(&cluster.data_dir().join("pg_wal"));
    check_neon_cid_records(&wal);
    compare_with_pg_waldump(&cluster, &wal);

    let redo = manager();
    let mut tally = Tally::default();
    for (block, records) in records_by_block(&wal, dbnode, &rels) {
        let chain = since_last_init(&records)
            .unwrap_or_else(|| panic!("{block:?}: no record initialises the page"));
        let Some(on_disk) = page_on_disk(&cluster, dbnode, block) else {
            continue;
        };
        let key = key_of(dbnode, block);
        let lsn = chain.last().unwrap().0;
        let page = redo
            .request_redo(key, lsn, None, chain.clone())
            .unwrap_or_else(|e| panic!("redo of {block:?} failed: {e}"));
        if let Some(diff) = page_difference(&masked(&page), &masked(&on_disk)) {
            panic!("heap page {block:?} {diff}");
        }
        let (nonzero, combo) = count_cids(&on_disk);
        tally.pages += 1;
        tally.pages_with_cids += usize::from(nonzero + combo > 0);
        tally.tuples_with_cid += nonzero;
        tally.combo_tuples += combo;

        // Without the neon_cid records (when the page can still be rebuilt).
        let without: Vec<_> = chain.into_iter().filter(|(_, r)| !is_neon_cid(r)).collect();
        if without.first().is_some_and(|(_, r)| r.will_init()) {
            let lsn = without.last().unwrap().0;
            let page = redo.request_redo(key, lsn, None, without).unwrap();
            if masked(&page) != masked(&on_disk) {
                tally.differ_without_cid_records += 1;
            }
        }
    }
    eprintln!("compared: {tally:?}");
    assert!(tally.pages >= 20, "{tally:?}");
    assert!(tally.pages_with_cids >= 10, "{tally:?}");
    assert!(tally.tuples_with_cid >= 1000, "{tally:?}");
    assert!(tally.combo_tuples >= 100, "{tally:?}");
    assert!(tally.differ_without_cid_records >= 10, "{tally:?}");

    check_crash_recovery(&mut cluster);
}

/// The neon_cid records decode: no main data, block data of valid entries (or an image),
/// with combo ids, runs of several tuples (multi-inserts) and two-page records.
fn check_neon_cid_records(wal: &[DecodedWalRecord]) {
    let (mut records, mut images, mut two_pages) = (0, 0, 0);
    let mut entries: Vec<NeonCidEntry> = Vec::new();
    for rec in wal.iter().filter(|r| r.header.xl_rmid == RM_NEON_CID_ID) {
        records += 1;
        assert!(
            rec.main_data.is_empty(),
            "neon_cid at {} has main data",
            rec.lsn
        );
        assert!((1..=2).contains(&rec.blocks.len()), "at {}", rec.lsn);
        two_pages += usize::from(rec.blocks.len() == 2);
        for blk in &rec.blocks {
            if blk.has_image && blk.data.is_empty() {
                images += 1;
                continue;
            }
            let decoded = decode_neon_cid_block(rec.header.xl_info, &blk.data)
                .unwrap_or_else(|e| panic!("neon_cid at {}: {e}", rec.lsn));
            entries.extend(decoded);
        }
    }
    let combos = entries.iter().filter(|e| e.combo).count();
    let runs = entries.iter().filter(|e| e.ntuples > 1).count();
    eprintln!(
        "neon_cid records {records}, images {images}, two-page {two_pages}, entries {}, \
         combo {combos}, runs {runs}",
        entries.len()
    );
    assert!(records >= 100, "only {records} neon_cid records");
    assert!(combos >= 100 && runs >= 5 && two_pages >= 1);
    assert!(entries.iter().all(|e| e.cid != 0 || e.combo));
}

/// A record as pg_waldump prints it: LSN, total length, xid and block references
/// ("rel spc/db/rel [fork F] blk N [FPW]").
#[derive(Debug, PartialEq, Eq)]
struct DumpedRecord {
    lsn: Lsn,
    tot_len: u32,
    xid: u32,
    blocks: Vec<String>,
}

fn parse_waldump_line(line: &str) -> Option<DumpedRecord> {
    let field = |name: &str| {
        let start = line.find(name)? + name.len();
        let rest = line[start..].trim_start();
        Some(
            rest[..rest.find(',').unwrap_or(rest.len())]
                .trim()
                .to_string(),
        )
    };
    let lsn: Lsn = field("lsn:")?.parse().ok()?;
    let tot_len = field("len (rec/tot):")?
        .split('/')
        .nth(1)?
        .trim()
        .parse()
        .ok()?;
    let xid = field("tx:")?.parse().ok()?;
    let blocks = line
        .split(", blkref #")
        .skip(1)
        .map(|b| b.split_once(": ").map_or(b, |(_, r)| r).trim().to_string())
        .collect();
    Some(DumpedRecord {
        lsn,
        tot_len,
        xid,
        blocks,
    })
}

fn as_dumped(rec: &DecodedWalRecord) -> DumpedRecord {
    let blocks = rec
        .blocks
        .iter()
        .map(|b| {
            let n = &b.rnode;
            let fork = match b.forknum as u8 {
                MAIN_FORK => String::new(),
                f => format!(" fork {}", ["main", "fsm", "vm", "init"][usize::from(f)]),
            };
            let fpw = if b.has_image { " FPW" } else { "" };
            format!(
                "rel {}/{}/{}{fork} blk {}{fpw}",
                n.spcnode, n.dbnode, n.relnode, b.blkno
            )
        })
        .collect();
    DumpedRecord {
        lsn: rec.lsn,
        tot_len: rec.header.xl_tot_len,
        xid: rec.header.xl_xid,
        blocks,
    }
}

/// pg_waldump (which cannot load neon_rmgr and calls the rmgr `custom134`) lists the same
/// neon_cid records, with the same block references, as our decoder.
fn compare_with_pg_waldump(cluster: &TestCluster, wal: &[DecodedWalRecord]) {
    let wal_dir = cluster.data_dir().join("pg_wal");
    let first = wal.first().expect("records").lsn;
    // pg_waldump stops with an error where the WAL ends: only its stdout matters.
    let out = cluster
        .command("pg_waldump")
        .arg("-p")
        .arg(&wal_dir)
        .args(["-s", &first.to_string()])
        .output()
        .expect("run pg_waldump");
    let stdout = String::from_utf8(out.stdout).unwrap();
    let dumped: Vec<DumpedRecord> = stdout
        .lines()
        .filter(|l| l.starts_with("rmgr: custom134 "))
        .map(|l| parse_waldump_line(l).unwrap_or_else(|| panic!("cannot parse: {l}")))
        .collect();
    let ours: Vec<DumpedRecord> = wal
        .iter()
        .filter(|r| r.header.xl_rmid == RM_NEON_CID_ID)
        .map(as_dumped)
        .collect();
    assert!(!ours.is_empty());
    assert_eq!(ours.len(), dumped.len(), "number of custom134 records");
    for (a, b) in ours.iter().zip(&dumped) {
        assert_eq!(a, b);
    }
    let names: HashMap<&str, usize> = stdout
        .lines()
        .filter_map(|l| l.strip_prefix("rmgr: ")?.split_whitespace().next())
        .fold(HashMap::new(), |mut m, n| {
            *m.entry(n).or_default() += 1;
            m
        });
    assert!(!names.contains_key("neon_cid"), "{names:?}");
}

/// A server that crashes after more such transactions replays the neon_cid records in crash
/// recovery (neon_rmgr's redo in the startup process) and comes back with the right rows.
fn check_crash_recovery(cluster: &mut TestCluster) {
    cluster.start(SETTINGS);
    let before = cluster.psql("SELECT count(*), sum(n) FROM t;");
    cluster.psql(
        "CHECKPOINT;
BEGIN;
INSERT INTO t SELECT id + 100000, v, n FROM t WHERE id < 500;
UPDATE t SET n = n + 1 WHERE id > 100000;
DELETE FROM t WHERE id > 100000 AND id % 2 = 0;
COMMIT;",
    );
    let after = cluster.psql("SELECT count(*), sum(n) FROM t;");
    assert_ne!(before, after);
    run_ok(
        cluster
            .command("pg_ctl")
            .args(["-w", "-m", "immediate", "-D"])
            .arg(cluster.data_dir())
            .arg("stop"),
    );
    cluster.start(SETTINGS);
    assert_eq!(cluster.psql("SELECT count(*), sum(n) FROM t;"), after);
    cluster.stop();
}

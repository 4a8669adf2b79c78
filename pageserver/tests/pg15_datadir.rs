//! The data-directory model against the stock PostgreSQL 15: bootstrap from an initdb'd data
//! directory, ingest the WAL of a real workload, and generate basebackups, comparing with
//! what PostgreSQL itself left on disk. Needs the stock PostgreSQL 15 binaries
//! (/usr/lib/postgresql/15/bin or `PG15_BIN_DIR`).

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::Path;

use common::*;
use pageserver::basebackup::{
    decide_prev_record, normalize_lsn, send_basebackup_tarball, BasebackupParams, PrevRecord,
    PGDATA_SUBDIRS,
};
use pageserver::import_datadir::{import_basebackup_tar, ImportError};
use pageserver::import_wal::{
    bootstrap_from_datadir, import_wal_dir, import_wal_tar, WalEnd, WalImportError,
};
use pageserver::memstore::MemTimeline;
use pageserver::pg_consts::CLOG_XACTS_PER_PAGE;
use pageserver::pgdatadir_mapping::DatadirRead;
use pageserver_api::key::{
    rel_size_to_key, twophase_file_key, RelTag, SlruKind, CHECKPOINT_KEY, CONTROLFILE_KEY,
};
use pageserver_walredo::apply_neon::clog_status;
use postgres_ffi::controlfile::{ControlFileData, DbState};
use postgres_ffi::relfile::{database_path, parse_relation_path, ForkNumber, RELSEG_SIZE};
use postgres_ffi::xlog_utils::{xlog_file_name, XLogLongPageHeaderData};
use utils::lsn::Lsn;

/// Every relation fork we have at `lsn`, with its size.
fn our_relations(tl: &MemTimeline, lsn: Lsn) -> BTreeMap<RelTag, u32> {
    let mut out = BTreeMap::new();
    for (spc, db) in tl.list_dbdirs(lsn).unwrap().into_keys() {
        for rel in tl.list_rels(spc, db, lsn).unwrap() {
            out.insert(
                rel,
                tl.get_rel_size(rel, lsn)
                    .unwrap()
                    .expect("listed relation has a size"),
            );
        }
    }
    out
}

/// The contents of a relation fork on disk (all segments).
fn disk_rel_bytes(data: &Path, rel: RelTag) -> Vec<u8> {
    let fork = rel.fork().unwrap();
    let mut out = Vec::new();
    for segno in 0.. {
        match fs::read(data.join(rel.rnode().segment_path(fork, segno))) {
            Ok(bytes) => out.extend_from_slice(&bytes),
            Err(_) => break,
        }
    }
    out
}

/// Our SLRU segments at `lsn`, materialized.
fn our_slru(tl: &MemTimeline, kind: SlruKind, lsn: Lsn) -> BTreeMap<u32, Vec<u8>> {
    let mut out = BTreeMap::new();
    for segno in tl.list_slru_segments(kind, lsn).unwrap() {
        let n = tl.get_slru_segment_size(kind, segno, lsn).unwrap().unwrap();
        let mut bytes = Vec::new();
        for blkno in 0..n {
            bytes.extend_from_slice(&tl.get_slru_page_at_lsn(kind, segno, blkno, lsn).unwrap());
        }
        out.insert(segno, bytes);
    }
    out
}

fn tar_map(entries: &[(String, tar::EntryType, Vec<u8>)]) -> BTreeMap<String, Vec<u8>> {
    entries
        .iter()
        .filter(|(_, k, _)| *k == tar::EntryType::Regular)
        .map(|(p, _, c)| (p.clone(), c.clone()))
        .collect()
}

/// Checks the generated pg_control and WAL segment at the end of a basebackup at `lsn`.
fn check_control_and_wal(
    entries: &[(String, tar::EntryType, Vec<u8>)],
    disk_control: &ControlFileData,
    lsn: Lsn,
    stored_next_xid: u64,
) {
    let n = entries.len();
    assert_eq!(entries[n - 2].0, "global/pg_control");
    let control = ControlFileData::decode(&entries[n - 2].2).expect("generated pg_control decodes");
    assert_eq!(control.checkpoint, Lsn(0));
    assert_eq!(control.state, DbState::Shutdowned);
    assert_eq!(control.system_identifier, disk_control.system_identifier);
    let seg_size = u64::from(control.xlog_seg_size);
    let start = normalize_lsn(lsn, seg_size);
    assert_eq!(control.checkpoint_copy.redo, start);
    assert_eq!(control.checkpoint_copy.next_xid, stored_next_xid);
    let wal_name = format!(
        "pg_wal/{}",
        xlog_file_name(1, start.segment_number(seg_size), seg_size)
    );
    assert_eq!(entries[n - 1].0, wal_name);
    let seg = &entries[n - 1].2;
    assert_eq!(seg.len() as u64, seg_size);
    let hdr = XLogLongPageHeaderData::from_bytes(seg).unwrap();
    assert_eq!(hdr.xlp_sysid, disk_control.system_identifier);
    assert_eq!(hdr.std.xlp_pageaddr, start.segment_start(seg_size));
}

#[test]
fn bootstrap_import_matches_initdb() {
    let scratch = Scratch::new("import");
    let data = scratch.path("data");
    initdb(&data);
    let mut tl = MemTimeline::new();
    let (control, wal) = bootstrap_from_datadir(&mut tl, &data).expect("bootstrap");
    let ckpt = control.checkpoint;
    assert_eq!(wal.records, 1, "exactly the shutdown checkpoint record");
    assert_eq!((tl.prev_record_lsn(), wal.prev_record_lsn), (ckpt, ckpt));
    let tip = tl.last_record_lsn();
    assert!(tip > ckpt);

    // Relations: same forks, same sizes, same pages.
    let disk = disk_relations(&data);
    assert!(
        disk.len() > 500,
        "initdb made {} relation forks",
        disk.len()
    );
    assert_eq!(our_relations(&tl, tip), disk);
    for (rel, nblocks) in &disk {
        let bytes = disk_rel_bytes(&data, *rel);
        for blkno in 0..*nblocks {
            let page = tl.get_rel_page_at_lsn(*rel, blkno, tip).unwrap();
            assert!(
                page[..] == bytes[blkno as usize * 8192..(blkno as usize + 1) * 8192],
                "page {blkno} of {rel}"
            );
        }
    }
    // Databases and relmaps.
    let dbs = tl.list_dbdirs(tip).unwrap();
    assert_eq!(
        dbs.keys().copied().collect::<Vec<_>>(),
        disk_databases(&data)
    );
    for (&(spc, db), &has_relmap) in &dbs {
        assert!(has_relmap);
        let file = fs::read(data.join(database_path(spc, db)).join("pg_filenode.map")).unwrap();
        assert_eq!(tl.get_relmap_file(spc, db, tip).unwrap().unwrap(), file);
    }
    // SLRUs, control file, checkpoint.
    for kind in SlruKind::ALL {
        assert_eq!(our_slru(&tl, kind, tip), disk_slru(&data, kind), "{kind}");
    }
    assert!(!our_slru(&tl, SlruKind::Clog, tip).is_empty());
    assert_eq!(
        tl.get_control_file(tip).unwrap(),
        fs::read(data.join("global/pg_control")).unwrap()
    );
    let cp = tl.get_checkpoint(tip).unwrap();
    assert_eq!(cp.redo, tip, "a shutdown checkpoint ending at the tip");
    assert_eq!(cp.next_xid, control.checkpoint_copy.next_xid);
    assert_eq!(cp.next_oid, control.checkpoint_copy.next_oid);
    assert!(tl.list_twophase_files(tip).unwrap().is_empty());

    // Fullbackup: every relation file and SLRU segment byte-equal to the source.
    let prev =
        decide_prev_record(tip, tl.last_record_lsn(), tl.prev_record_lsn(), None, None).unwrap();
    assert_eq!(prev, PrevRecord::Known(ckpt));
    let params = BasebackupParams {
        lsn: tip,
        prev_record: prev,
        full_backup: true,
    };
    let tarball = send_basebackup_tarball(Vec::new(), &tl, params).expect("fullbackup");
    let entries = read_tar(&tarball);
    let files = tar_map(&entries);
    for rel in disk.keys() {
        let fork = rel.fork().unwrap();
        let bytes = disk_rel_bytes(&data, *rel);
        let nsegs = (bytes.len() / 8192).div_ceil(RELSEG_SIZE as usize).max(1);
        let mut from_tar = Vec::new();
        for segno in 0..nsegs as u32 {
            from_tar.extend_from_slice(&files[&rel.rnode().segment_path(fork, segno)]);
        }
        assert!(from_tar == bytes, "{rel} differs in the fullbackup");
    }
    for (segno, bytes) in disk_slru(&data, SlruKind::Clog) {
        assert_eq!(files[&format!("pg_xact/{segno:04X}")], bytes);
    }
    assert_eq!(
        files["neon.signal"],
        format!("PREV LSN: {ckpt}").into_bytes()
    );
    assert_eq!(files["PG_VERSION"], b"15\n");
    check_control_and_wal(&entries, &control, tip, cp.next_xid);

    // A normal basebackup has the directories but no relation files (initdb makes no
    // unlogged relations, so there are no init forks).
    let params = BasebackupParams {
        full_backup: false,
        ..params
    };
    let tarball = send_basebackup_tarball(Vec::new(), &tl, params).expect("basebackup");
    let entries = read_tar(&tarball);
    let dirs: BTreeSet<&str> = entries
        .iter()
        .filter(|(_, k, _)| *k == tar::EntryType::Directory)
        .map(|(p, _, _)| p.as_str())
        .collect();
    for dir in PGDATA_SUBDIRS {
        assert!(dirs.contains(dir), "{dir}");
    }
    for (path, _, _) in &entries {
        assert!(
            parse_relation_path(path).is_err(),
            "{path} in a normal basebackup"
        );
    }
    for &(spc, db) in dbs.keys() {
        let dir = database_path(spc, db);
        assert!(tar_map(&entries).contains_key(&format!("{dir}/pg_filenode.map")));
        assert_eq!(tar_map(&entries)[&format!("{dir}/PG_VERSION")], b"15\n");
    }
    check_control_and_wal(&entries, &control, tip, cp.next_xid);
}

const WORKLOAD: &str = r#"
CREATE TABLE t1 (id int PRIMARY KEY, v text, s serial);
INSERT INTO t1 SELECT g, repeat('x', 100) FROM generate_series(1, 20000) g;
CREATE INDEX t1_v ON t1 (v);
CREATE TABLE t2 AS SELECT g AS id FROM generate_series(1, 1000) g;
TRUNCATE t2;
INSERT INTO t2 SELECT generate_series(1, 500);
CHECKPOINT;
DELETE FROM t1 WHERE id > 15000;
VACUUM t1;
UPDATE t1 SET v = 'y' WHERE id < 100;
CREATE UNLOGGED TABLE u1 (x int PRIMARY KEY);
INSERT INTO u1 VALUES (1);
CREATE DATABASE db_wal STRATEGY = wal_log;
CREATE DATABASE db_copy STRATEGY = file_copy;
CREATE DATABASE db_drop;
DROP DATABASE db_drop;
BEGIN;
INSERT INTO t2 VALUES (1);
SAVEPOINT s1;
INSERT INTO t2 VALUES (2);
ROLLBACK TO s1;
SAVEPOINT s2;
INSERT INTO t2 VALUES (3);
RELEASE s2;
COMMIT;
BEGIN;
CREATE TABLE t4 (x int);
INSERT INTO t4 VALUES (1);
PREPARE TRANSACTION 'p1';
BEGIN;
INSERT INTO t2 VALUES (4);
PREPARE TRANSACTION 'p2';
COMMIT PREPARED 'p2';
BEGIN;
INSERT INTO t2 VALUES (5);
PREPARE TRANSACTION 'p3';
ROLLBACK PREPARED 'p3';
BEGIN;
SELECT txid_current();
ROLLBACK;
CREATE TABLE mx (id int PRIMARY KEY, v int);
INSERT INTO mx VALUES (1, 1), (2, 2);
BEGIN;
SELECT * FROM mx WHERE id = 1 FOR SHARE;
SAVEPOINT a;
SELECT * FROM mx WHERE id = 1 FOR UPDATE;
COMMIT;
CREATE PROCEDURE burn(n int) LANGUAGE plpgsql AS $$
BEGIN
  FOR i IN 1..n LOOP
    PERFORM txid_current();
    COMMIT;
  END LOOP;
END $$;
CALL burn(40000);
"#;

/// Statuses of xids in a CLOG segment that differ between two copies.
fn clog_diffs(segno: u32, ours: &[u8], disk: &[u8]) -> Vec<(u32, u8, u8)> {
    let per_seg = CLOG_XACTS_PER_PAGE * 32;
    let mut out = Vec::new();
    for page in 0..(disk.len().max(ours.len()) / 8192) {
        let get = |b: &[u8]| {
            b.get(page * 8192..(page + 1) * 8192)
                .map(|p| p.to_vec())
                .unwrap_or_else(|| vec![0; 8192])
        };
        let (o, d) = (get(ours), get(disk));
        for i in 0..CLOG_XACTS_PER_PAGE {
            let xid = segno * per_seg + page as u32 * CLOG_XACTS_PER_PAGE + i;
            let (so, sd) = (clog_status(&o, xid), clog_status(&d, xid));
            if so != sd && out.len() < 20 {
                out.push((xid, so, sd));
            }
        }
    }
    out
}

#[test]
fn wal_ingest_matches_server_after_workload() {
    let scratch = Scratch::new("ingest");
    let initial = scratch.path("initial");
    initdb(&initial);
    let mut tl = MemTimeline::new();
    bootstrap_from_datadir(&mut tl, &initial).expect("bootstrap");
    let start = tl.last_record_lsn();

    // Run the workload on a copy, then stop it cleanly.
    let data = scratch.path("data");
    copy_datadir(&initial, &data);
    let conf =
        "max_prepared_transactions = 5\nautovacuum = off\nfsync = off\nwal_keep_size = '1GB'\n";
    let server = Server::start(&data, &scratch.path("sock"), conf);
    let t3 = {
        server.query("CREATE TABLE t3 (x int); INSERT INTO t3 VALUES (1)");
        let node: u32 = server
            .query("SELECT pg_relation_filenode('t3')")
            .parse()
            .unwrap();
        server.query("DROP TABLE t3");
        node
    };
    server.psql_file(&scratch.write("workload.sql", WORKLOAD));
    let p1_xid: u32 = server
        .query("SELECT transaction FROM pg_prepared_xacts WHERE gid = 'p1'")
        .parse()
        .unwrap();
    let postgres_db: u32 = server
        .query("SELECT oid FROM pg_database WHERE datname = 'postgres'")
        .parse()
        .unwrap();
    server.stop();
    let control =
        ControlFileData::decode(&fs::read(data.join("global/pg_control")).unwrap()).unwrap();
    assert_eq!(control.state, DbState::Shutdowned);
    assert!(
        control.checkpoint_copy.next_multi > 1,
        "the workload made a multixact"
    );

    // Ingest the server's WAL to its end: the last record is the shutdown checkpoint.
    let result =
        import_wal_dir(&mut tl, &data.join("pg_wal"), start, WalEnd::EndOfWal).expect("WAL import");
    assert!(result.records > 40000, "{} records", result.records);
    assert_eq!(result.prev_record_lsn, control.checkpoint);
    let tip = tl.last_record_lsn();
    assert_eq!(tip, result.last_record_lsn);

    // Databases.
    let dbs = tl.list_dbdirs(tip).unwrap();
    assert_eq!(
        dbs.keys().copied().collect::<Vec<_>>(),
        disk_databases(&data)
    );

    // Relations. Main and init forks must match exactly, except the main forks of unlogged
    // relations (their data is not WAL-logged). FSM and VM pages are extended without WAL,
    // so ours may be smaller, never larger.
    let disk = disk_relations(&data);
    let ours = our_relations(&tl, tip);
    let unlogged: BTreeSet<_> = disk
        .keys()
        .filter(|r| r.fork() == Some(ForkNumber::Init))
        .map(|r| r.rnode())
        .collect();
    assert!(!unlogged.is_empty());
    let exact = |r: &RelTag| {
        matches!(r.fork(), Some(ForkNumber::Init))
            || (r.fork() == Some(ForkNumber::Main) && !unlogged.contains(&r.rnode()))
    };
    let disk_exact: BTreeMap<_, _> = disk
        .iter()
        .filter(|(r, _)| exact(r))
        .map(|(r, n)| (*r, *n))
        .collect();
    let ours_exact: BTreeMap<_, _> = ours
        .iter()
        .filter(|(r, _)| exact(r))
        .map(|(r, n)| (*r, *n))
        .collect();
    let only_disk: Vec<_> = disk_exact
        .iter()
        .filter(|(r, n)| ours_exact.get(r) != Some(n))
        .collect();
    let only_ours: Vec<_> = ours_exact
        .iter()
        .filter(|(r, n)| disk_exact.get(r) != Some(n))
        .collect();
    assert!(
        only_disk.is_empty() && only_ours.is_empty(),
        "on disk only: {only_disk:?}\nours only: {only_ours:?}"
    );
    for (rel, n) in ours
        .iter()
        .filter(|(r, _)| !exact(r) && r.fork() != Some(ForkNumber::Main))
    {
        let on_disk = disk.get(rel).copied();
        assert!(
            on_disk.is_some_and(|d| *n <= d),
            "{rel}: ours {n} blocks, disk {on_disk:?}"
        );
    }
    assert!(
        !ours.keys().any(|r| r.relnode == t3),
        "dropped table t3 is gone"
    );

    // Two-phase state files equal pg_twophase (minus the CRC); the basebackup adds it back.
    let twophase: Vec<u32> = tl.list_twophase_files(tip).unwrap().into_iter().collect();
    assert_eq!(twophase, vec![p1_xid]);
    let disk_2pc = fs::read(data.join(format!("pg_twophase/{p1_xid:08X}"))).unwrap();
    assert_eq!(
        tl.get_twophase_file(p1_xid, tip).unwrap(),
        disk_2pc[..disk_2pc.len() - 4]
    );

    // CLOG: every transaction's status equals pg_xact's.
    let our_clog = our_slru(&tl, SlruKind::Clog, tip);
    let disk_clog = disk_slru(&data, SlruKind::Clog);
    assert_eq!(
        our_clog.keys().collect::<Vec<_>>(),
        disk_clog.keys().collect::<Vec<_>>()
    );
    for (segno, bytes) in &disk_clog {
        let diffs = clog_diffs(*segno, &our_clog[segno], bytes);
        assert!(
            diffs.is_empty(),
            "CLOG differs (xid, ours, disk): {diffs:?}"
        );
        assert_eq!(&our_clog[segno], bytes);
    }
    assert!(
        control.checkpoint_copy.next_xid > u64::from(CLOG_XACTS_PER_PAGE),
        "crossed a CLOG page"
    );
    for kind in [SlruKind::MultiXactOffsets, SlruKind::MultiXactMembers] {
        let ours: Vec<u32> = tl
            .list_slru_segments(kind, tip)
            .unwrap()
            .into_iter()
            .collect();
        assert_eq!(
            ours,
            disk_slru(&data, kind).into_keys().collect::<Vec<_>>(),
            "{kind}"
        );
    }

    // The maintained checkpoint equals the shutdown checkpoint's counters.
    let cp = tl.get_checkpoint(tip).unwrap();
    let disk_cp = control.checkpoint_copy;
    assert_eq!(cp.next_xid, disk_cp.next_xid);
    assert_eq!(cp.next_oid, disk_cp.next_oid);
    assert_eq!(
        (cp.next_multi, cp.next_multi_offset),
        (disk_cp.next_multi, disk_cp.next_multi_offset)
    );
    assert_eq!(
        (cp.oldest_xid, cp.oldest_multi),
        (disk_cp.oldest_xid, disk_cp.oldest_multi)
    );
    assert_eq!(cp.redo, tip);
    assert_eq!(
        cp.oldest_active_xid, p1_xid,
        "the prepared transaction is the oldest active"
    );

    // The key space has what the directories list, and not the dropped table.
    let ks = tl.collect_keyspace(tip).unwrap();
    for key in [CONTROLFILE_KEY, CHECKPOINT_KEY, twophase_file_key(p1_xid)] {
        assert!(ks.contains(&key));
    }
    for rel in ours.keys() {
        assert!(ks.contains(&rel_size_to_key(*rel)));
    }
    let t3_rel = RelTag {
        spcnode: 1663,
        dbnode: postgres_db,
        relnode: t3,
        forknum: 0,
    };
    assert!(!ks.contains(&rel_size_to_key(t3_rel)));
    let blocks: u64 = ours.values().map(|n| u64::from(*n)).sum();
    assert!(ks.total_keys() > blocks);

    // Basebackup at the tip.
    let prev =
        decide_prev_record(tip, tl.last_record_lsn(), tl.prev_record_lsn(), None, None).unwrap();
    assert_eq!(prev, PrevRecord::Known(control.checkpoint));
    let params = BasebackupParams {
        lsn: tip,
        prev_record: prev,
        full_backup: false,
    };
    let tarball = send_basebackup_tarball(Vec::new(), &tl, params).expect("basebackup");
    let entries = read_tar(&tarball);
    let files = tar_map(&entries);
    assert_eq!(files["pg_xact/0000"], disk_clog[&0]);
    assert_eq!(files[&format!("pg_twophase/{p1_xid:08X}")], disk_2pc);
    assert_eq!(
        files["neon.signal"],
        format!("PREV LSN: {}", control.checkpoint).into_bytes()
    );
    for &(spc, db) in dbs.keys() {
        let dir = database_path(spc, db);
        assert_eq!(
            files[&format!("{dir}/pg_filenode.map")],
            fs::read(data.join(&dir).join("pg_filenode.map")).unwrap(),
            "{dir}"
        );
    }
    // Init forks appear as themselves and as the main fork (page LSNs aside: PostgreSQL
    // writes the init page before logging it).
    let mut init_forks = 0;
    for rel in disk.keys().filter(|r| r.fork() == Some(ForkNumber::Init)) {
        let disk_bytes = disk_rel_bytes(&data, *rel);
        for path in [
            rel.rnode().path(ForkNumber::Init),
            rel.rnode().path(ForkNumber::Main),
        ] {
            let ours = &files[&path];
            assert_eq!(ours.len(), disk_bytes.len(), "{path}");
            for (a, b) in ours.chunks(8192).zip(disk_bytes.chunks(8192)) {
                assert_eq!(a[8..], b[8..], "{path}");
            }
        }
        init_forks += 1;
    }
    assert!(init_forks >= 2, "table and index of the unlogged table");
    let relation_files = entries
        .iter()
        .filter(|(p, _, _)| parse_relation_path(p).is_ok())
        .count();
    assert_eq!(relation_files, 2 * init_forks);
    check_control_and_wal(&entries, &control, tip, cp.next_xid);
}

/// `pg_basebackup -Ft -X stream` of a running server: base.tar imported at the backup's start
/// LSN, then pg_wal.tar up to its end LSN.
#[test]
fn import_pg_basebackup_tars() {
    let scratch = Scratch::new("basebackup");
    let data = scratch.path("data");
    initdb(&data);
    let server = Server::start(&data, &scratch.path("sock"), "fsync = off\n");
    server.query("CREATE TABLE big AS SELECT g AS id, repeat('z', 200) AS v FROM generate_series(1, 30000) g");
    let out_dir = scratch.path("backup");
    let out = server
        .client("pg_basebackup")
        .args(["-Ft", "-X", "stream", "-c", "fast", "--no-sync", "-D"])
        .arg(&out_dir)
        .output()
        .expect("pg_basebackup");
    check(out, "pg_basebackup");
    server.stop();

    let base = fs::read(out_dir.join("base.tar")).unwrap();
    let wal = fs::read(out_dir.join("pg_wal.tar")).unwrap();
    let base_files = tar_map(&read_tar(&base));
    let label = String::from_utf8(base_files["backup_label"].clone()).unwrap();
    let start: Lsn = label
        .lines()
        .find_map(|l| l.strip_prefix("START WAL LOCATION: "))
        .and_then(|rest| rest.split(' ').next())
        .unwrap()
        .parse()
        .unwrap();
    let manifest = fs::read_to_string(out_dir.join("backup_manifest")).unwrap();
    let end: Lsn = manifest
        .split("\"End-LSN\": \"")
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .unwrap()
        .parse()
        .unwrap();
    assert!(end > start);

    let mut tl = MemTimeline::new();
    let control = import_basebackup_tar(&mut tl, &base[..], start).expect("base.tar import");
    let result =
        import_wal_tar(&mut tl, &wal[..], start, WalEnd::Lsn(end)).expect("pg_wal.tar import");
    assert_eq!(tl.last_record_lsn(), end);
    assert!(result.records > 0);

    // Nothing changed during the backup: every relation file of the tar has our size.
    let mut tar_sizes: BTreeMap<RelTag, u32> = BTreeMap::new();
    for (path, bytes) in &base_files {
        if let Ok(p) = parse_relation_path(path) {
            *tar_sizes
                .entry(RelTag::new(p.rnode, p.forknum))
                .or_default() += (bytes.len() / 8192) as u32;
        }
    }
    let ours = our_relations(&tl, end);
    for (rel, n) in &tar_sizes {
        let exact = rel.fork() == Some(ForkNumber::Main);
        let mine = ours.get(rel).copied();
        assert!(
            mine.is_some_and(|m| if exact { m == *n } else { m <= *n }),
            "{rel}: tar {n}, ours {mine:?}"
        );
    }
    assert!(
        tar_sizes.values().any(|n| *n > 500),
        "the big table is in the backup"
    );
    let cp = tl.get_checkpoint(end).unwrap();
    assert!(cp.next_xid >= control.checkpoint_copy.next_xid);
    assert_eq!(
        our_slru(&tl, SlruKind::Clog, end)
            .keys()
            .collect::<Vec<_>>(),
        [0].iter().collect::<Vec<_>>()
    );

    // An end LSN beyond the WAL is an error that says where the WAL ended.
    let mut tl = MemTimeline::new();
    import_basebackup_tar(&mut tl, &base[..], start).unwrap();
    // (Past the segment after the backup's: its XLOG SWITCH spans the rest of its segment.)
    let beyond = Lsn(end.segment_start(16 << 20).0 + (48 << 20) + 0x100);
    let err = import_wal_tar(&mut tl, &wal[..], start, WalEnd::Lsn(beyond)).unwrap_err();
    assert!(
        matches!(err, WalImportError::EndedEarly { end: e, .. } if e == beyond),
        "{err}"
    );
    // A truncated base.tar is refused with a typed error.
    let mut tl = MemTimeline::new();
    let cut = &base[..base.len() / 2];
    let err = import_basebackup_tar(&mut tl, cut, start).unwrap_err();
    assert!(
        matches!(
            err,
            ImportError::Io { .. } | ImportError::Archive(_) | ImportError::MissingControlFile
        ),
        "{err}"
    );
}

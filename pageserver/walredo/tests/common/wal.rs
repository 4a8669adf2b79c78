//! Reading back what a [`TestCluster`] wrote, for the tests that rebuild every block of a
//! workload's relations from its WAL and compare the result with the server's page.

use std::collections::HashMap;
use std::fs;
use std::path::{Path, PathBuf};

use pageserver_api::key::Key;
use postgres_ffi::waldecoder::WalStreamDecoder;
use postgres_ffi::walrecord::DecodedWalRecord;
use postgres_ffi::xlog_utils::{parse_xlog_file_name, segment_start_lsn};

use super::TestCluster;

/// WAL segment size of the test clusters.
pub const SEG_SIZE: u64 = 16 * 1024 * 1024;
/// Bytes of a page.
pub const PAGE: usize = 8192;
pub const MAIN_FORK: u8 = 0;
pub const VM_FORK: u8 = 2;
pub const DEFAULT_TABLESPACE: u32 = 1663;
/// Bytes shown from where two pages start to differ.
const DIFF_SHOWN_BYTES: usize = 16;

/// A block of a relation fork in the `postgres` database.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Block {
    pub relnode: u32,
    pub fork: u8,
    pub blkno: u32,
}

/// Every record of the WAL in `wal_dir` (pg_wal), in order, up to where the WAL ends.
pub fn decode_wal(wal_dir: &Path) -> Vec<DecodedWalRecord> {
    let mut files: Vec<(u64, PathBuf)> = fs::read_dir(wal_dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter_map(|p| {
            let name = p.file_name()?.to_str()?.to_string();
            let (_, segno) = parse_xlog_file_name(&name, SEG_SIZE).ok()?;
            Some((segno, p))
        })
        .collect();
    files.sort();
    let first = files.first().expect("WAL segments").0;
    let mut decoder =
        WalStreamDecoder::new_find_first(segment_start_lsn(first, SEG_SIZE).unwrap(), SEG_SIZE);
    let mut records = Vec::new();
    for (i, (segno, path)) in files.iter().enumerate() {
        if *segno != first + i as u64 {
            break;
        }
        decoder.feed_bytes(&fs::read(path).unwrap());
        loop {
            match decoder.poll_decode() {
                Ok(Some(rec)) => records.push(rec),
                Ok(None) => break,
                // invalid WAL is where the WAL ends
                Err(_) => return records,
            }
        }
    }
    records
}

/// The `name|oid` lines of a relations query: the oid of `db` (the database) and of every
/// other name.
fn parse_oids(out: &str) -> (Option<u32>, HashMap<String, u32>) {
    let mut names: HashMap<String, u32> = HashMap::new();
    for line in out.lines().filter(|l| !l.is_empty()) {
        let (name, oid) = line.split_once('|').expect("name|oid");
        names.insert(name.to_string(), oid.parse().expect("oid"));
    }
    (names.remove("db"), names)
}

/// Runs `workload` on a new cluster (full-page writes on, no WAL compression), then
/// `relations_query` (`name|oid` lines); stops the server cleanly, so that its shutdown
/// checkpoint writes every page. Returns the cluster, the database oid (`db`) and the
/// other oids by name.
pub fn run_workload_and_stop(
    workload: &str,
    relations_query: &str,
) -> (TestCluster, u32, HashMap<String, u32>) {
    run_workload_and_stop_with(workload, relations_query, &[])
}

/// [`run_workload_and_stop`] with more server settings (name=value).
pub fn run_workload_and_stop_with(
    workload: &str,
    relations_query: &str,
    settings: &[&str],
) -> (TestCluster, u32, HashMap<String, u32>) {
    let mut cluster = TestCluster::init(&[]);
    let mut all = vec!["full_page_writes=on", "wal_compression=off"];
    all.extend_from_slice(settings);
    cluster.start(&all);
    cluster.psql(workload);
    let out = cluster.psql(relations_query);
    cluster.stop();
    let (dbnode, names) = parse_oids(&out);
    let dbnode = dbnode.unwrap_or_else(|| panic!("no database oid in: {out}"));
    (cluster, dbnode, names)
}

/// The pageserver key of `block` in database `dbnode` (default tablespace).
pub fn key_of(dbnode: u32, block: Block) -> Key {
    Key {
        field1: 0,
        field2: DEFAULT_TABLESPACE,
        field3: dbnode,
        field4: block.relnode,
        field5: block.fork,
        field6: block.blkno,
    }
}

/// The block as the server wrote it, or None if the file is shorter (truncated).
pub fn page_on_disk(cluster: &TestCluster, dbnode: u32, block: Block) -> Option<Vec<u8>> {
    let suffix = if block.fork == VM_FORK { "_vm" } else { "" };
    let path = cluster
        .data_dir()
        .join(format!("base/{dbnode}/{}{suffix}", block.relnode));
    let file = fs::read(&path).unwrap_or_default();
    let start = block.blkno as usize * PAGE;
    file.get(start..start + PAGE).map(<[u8]>::to_vec)
}

/// None if the (masked) pages are equal, else where they first differ and the bytes there.
pub fn page_difference(redone: &[u8], on_disk: &[u8]) -> Option<String> {
    if redone == on_disk {
        return None;
    }
    let first = (redone.iter().zip(on_disk))
        .position(|(x, y)| x != y)
        .unwrap_or(redone.len().min(on_disk.len()));
    let end = |p: &[u8]| (first + DIFF_SHOWN_BYTES).min(p.len());
    Some(format!(
        "differs from the server's from byte {first}: redo {:02x?} server {:02x?}",
        &redone[first..end(redone)],
        &on_disk[first..end(on_disk)]
    ))
}

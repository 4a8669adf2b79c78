//! Decodes WAL written by the stock PostgreSQL 15 server installed on this machine and
//! compares every record with what `pg_waldump` prints for the same segment files.
//!
//! The test needs `/usr/lib/postgresql/15/bin/{initdb,pg_ctl,postgres,psql,pg_waldump}`
//! and fails (rather than passing silently) when they are missing. PostgreSQL refuses to
//! run as root, so when the test runs as root the server tools run as user `postgres`.

mod common;

use std::collections::BTreeMap;
use std::fs;
use std::net::TcpListener;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use postgres_ffi::fpi::restore_image;
use postgres_ffi::pg_constants::{maxalign, BLCKSZ, XLP_FIRST_IS_CONTRECORD};
use postgres_ffi::records::decode_main_data;
use postgres_ffi::waldecoder::{WalDecodeError, WalStreamDecoder};
use postgres_ffi::walrecord::{DecodedWalRecord, ImageCompression};
use postgres_ffi::xlog_utils::{parse_xlog_file_name, segment_start_lsn, XLogPageHeaderData};
use utils::lsn::Lsn;

use common::drain_records;

const PG_BIN: &str = "/usr/lib/postgresql/15/bin";
const SEG_SIZE: u64 = 16 * 1024 * 1024;

// ---------------------------------------------------------------------------
// A throw-away PostgreSQL 15 cluster
// ---------------------------------------------------------------------------

/// A cluster in a temporary directory, served on 127.0.0.1 and a unix socket in that
/// directory. Dropping it stops the server (immediate mode) if it still runs.
struct TestPostgres {
    dir: tempfile::TempDir,
    port: u16,
    running: bool,
}

fn pg_bin(tool: &str) -> PathBuf {
    let path = Path::new(PG_BIN).join(tool);
    assert!(
        path.exists(),
        "{} is missing: this test needs the stock PostgreSQL 15 server \
         (Debian package postgresql-15)",
        path.display()
    );
    path
}

fn running_as_root() -> bool {
    let out = Command::new("id").arg("-u").output().expect("run id -u");
    String::from_utf8_lossy(&out.stdout).trim() == "0"
}

/// A command running `tool` as user postgres when we are root.
fn pg_command(tool: &str) -> Command {
    let bin = pg_bin(tool);
    if running_as_root() {
        let mut cmd = Command::new("runuser");
        cmd.args(["-u", "postgres", "--"]).arg(bin);
        cmd
    } else {
        Command::new(bin)
    }
}

fn run_ok(cmd: &mut Command) -> Output {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}\nstdout: {}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// Gives user postgres the directory when we are root.
fn hand_to_postgres(path: &Path) {
    fs::set_permissions(path, fs::Permissions::from_mode(0o700)).unwrap();
    if running_as_root() {
        run_ok(
            Command::new("chown")
                .args(["-R", "postgres:postgres"])
                .arg(path),
        );
    }
}

fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind a free port");
    listener.local_addr().unwrap().port()
}

impl TestPostgres {
    fn init() -> Self {
        for tool in ["initdb", "pg_ctl", "postgres", "psql", "pg_waldump"] {
            pg_bin(tool);
        }
        let dir = tempfile::Builder::new()
            .prefix("pg15-wal-")
            .tempdir()
            .unwrap();
        hand_to_postgres(dir.path());
        let pg = TestPostgres {
            dir,
            port: free_port(),
            running: false,
        };
        run_ok(
            pg_command("initdb")
                .args(["--no-sync", "-A", "trust", "-U", "postgres", "-D"])
                .arg(pg.data_dir()),
        );
        pg
    }

    fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    fn wal_dir(&self) -> PathBuf {
        self.data_dir().join("pg_wal")
    }

    fn start(&mut self) {
        let opts = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1 -c fsync=off \
             -c wal_keep_size=1024 -c max_wal_size=1024 -c autovacuum=off",
            self.port,
            self.dir.path().display()
        );
        let log = self.dir.path().join("server.log");
        run_ok(
            pg_command("pg_ctl")
                .args(["-w", "-t", "60", "-D"])
                .arg(self.data_dir())
                .args(["-l"])
                .arg(log)
                .args(["-o", &opts, "start"]),
        );
        self.running = true;
    }

    fn run_sql(&self, sql: &str) {
        let file = self.dir.path().join("workload.sql");
        fs::write(&file, sql).unwrap();
        fs::set_permissions(&file, fs::Permissions::from_mode(0o644)).unwrap();
        run_ok(
            pg_command("psql")
                .args([
                    "-X",
                    "-q",
                    "-v",
                    "ON_ERROR_STOP=1",
                    "-U",
                    "postgres",
                    "-d",
                    "postgres",
                ])
                .arg("-h")
                .arg(self.dir.path())
                .args(["-p", &self.port.to_string(), "-f"])
                .arg(file),
        );
    }

    fn stop(&mut self, mode: &str) {
        if self.running {
            self.running = false;
            run_ok(
                pg_command("pg_ctl")
                    .args(["-w", "-m", mode, "-D"])
                    .arg(self.data_dir())
                    .arg("stop"),
            );
        }
    }
}

impl Drop for TestPostgres {
    fn drop(&mut self) {
        if self.running {
            self.running = false;
            let _ = pg_command("pg_ctl")
                .args(["-w", "-m", "immediate", "-D"])
                .arg(self.data_dir())
                .arg("stop")
                .output();
        }
    }
}

/// Creates, updates and vacuums a table with full-page images compressed by each method,
/// plus an XLOG SWITCH, a large logical message and a rolled-back transaction.
const WORKLOAD: &str = "
CREATE TABLE t (id int PRIMARY KEY, v text);
INSERT INTO t SELECT g, repeat('x', 40) || g FROM generate_series(1, 20000) g;
CHECKPOINT;
UPDATE t SET v = v || 'a' WHERE id % 3 = 0;
SET wal_compression = pglz;
CHECKPOINT;
UPDATE t SET v = v || 'b' WHERE id % 5 = 0;
SET wal_compression = lz4;
CHECKPOINT;
UPDATE t SET v = v || 'c' WHERE id % 5 = 1;
SET wal_compression = zstd;
CHECKPOINT;
UPDATE t SET v = v || 'd' WHERE id % 5 = 2;
SET wal_compression = off;
VACUUM t;
CREATE INDEX t_v ON t (v);
SELECT pg_switch_wal();
SELECT pg_logical_emit_message(true, 'test', repeat('m', 40000));
CREATE TABLE big (id int, payload text);
INSERT INTO big SELECT g, string_agg(md5(g::text || i::text), '') FROM generate_series(1, 5) g,
  generate_series(1, 2000) i GROUP BY g;
BEGIN; INSERT INTO t VALUES (-1, 'rolled back'); ROLLBACK;
";

// ---------------------------------------------------------------------------
// Reading the WAL with our decoder
// ---------------------------------------------------------------------------

/// The segment files in `wal_dir`, sorted by name.
fn segment_files(wal_dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = fs::read_dir(wal_dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| parse_xlog_file_name(&file_name(p), SEG_SIZE).is_ok())
        .collect();
    files.sort();
    assert!(
        !files.is_empty(),
        "no WAL segments in {}",
        wal_dir.display()
    );
    files
}

fn file_name(p: &Path) -> String {
    p.file_name().unwrap().to_string_lossy().into_owned()
}

/// Decodes consecutive segment files from the first one's start, like pg_waldump does.
fn decode_segments(files: &[PathBuf]) -> (Vec<DecodedWalRecord>, Option<WalDecodeError>) {
    let (_, first_segno) = parse_xlog_file_name(&file_name(&files[0]), SEG_SIZE).unwrap();
    let start = segment_start_lsn(first_segno, SEG_SIZE).unwrap();
    let mut dec = WalStreamDecoder::new_find_first(start, SEG_SIZE);
    let mut records = Vec::new();
    for (i, file) in files.iter().enumerate() {
        let (_, segno) = parse_xlog_file_name(&file_name(file), SEG_SIZE).unwrap();
        assert_eq!(
            segno,
            first_segno + i as u64,
            "segments must be consecutive"
        );
        dec.feed_bytes(&fs::read(file).unwrap());
        if let Err(e) = drain_records(&mut dec, &mut records) {
            return (records, Some(e));
        }
    }
    (records, None)
}

// ---------------------------------------------------------------------------
// Parsing pg_waldump's output
// ---------------------------------------------------------------------------

/// A block reference as both tools describe it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct BlockRef {
    block_id: u8,
    rel: String,
    fork: String,
    blk: u32,
    /// "FPW" (true) or "FPW for WAL verification" (false), if there is an image.
    image_apply: Option<bool>,
}

/// One record line of pg_waldump's default output.
#[derive(Debug, Clone, PartialEq, Eq)]
struct RecordSummary {
    lsn: Lsn,
    rmgr: String,
    xid: u32,
    total_len: u32,
    blocks: Vec<BlockRef>,
}

/// Image details from pg_waldump -b: (hole offset, hole length, method).
type ImageDetails = (u16, u16, String);

/// Runs pg_waldump on the files; returns its stdout and stderr.
fn run_waldump(wal_dir: &Path, files: &[PathBuf], extra: &[&str]) -> (String, String) {
    let out = Command::new(pg_bin("pg_waldump"))
        .args(extra)
        .arg("-p")
        .arg(wal_dir)
        .arg(file_name(&files[0]))
        .arg(file_name(files.last().unwrap()))
        .output()
        .expect("run pg_waldump");
    // pg_waldump exits with 1 when it reaches the end of valid WAL, reporting it on stderr.
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    eprintln!("pg_waldump {extra:?}: {} {}", out.status, stderr.trim());
    let stdout = String::from_utf8(out.stdout).expect("pg_waldump output is UTF-8");
    (stdout, stderr)
}

/// Returns the text after `key` in `s` up to the next `end` (or the end of `s`).
fn field<'a>(s: &'a str, key: &str, end: &str) -> &'a str {
    let start = s.find(key).unwrap_or_else(|| panic!("no {key:?} in {s:?}")) + key.len();
    let rest = &s[start..];
    rest[..rest.find(end).unwrap_or(rest.len())].trim()
}

/// Parses a default-format line: `rmgr: Heap len (rec/tot): 54/ 54, tx: 734, lsn: 0/016B5A50,
/// prev 0/016B5A18, desc: INSERT ..., blkref #0: rel 1663/5/16384 [fork vm ]blk 0[ FPW]`.
fn parse_default_line(line: &str) -> RecordSummary {
    let mut parts = line.split(", blkref #");
    let head = parts.next().unwrap();
    let total_len = field(head, "len (rec/tot):", ",");
    RecordSummary {
        rmgr: head
            .trim_start_matches("rmgr:")
            .split_whitespace()
            .next()
            .unwrap()
            .to_string(),
        total_len: total_len
            .rsplit('/')
            .next()
            .unwrap()
            .trim()
            .parse()
            .unwrap(),
        xid: field(head, "tx:", ",").parse().unwrap(),
        lsn: field(head, "lsn:", ",").parse().unwrap(),
        blocks: parts.map(parse_short_blkref).collect(),
    }
}

/// Parses `0: rel 1663/5/16384 fork vm blk 0 FPW for WAL verification` (fork only if not main).
fn parse_short_blkref(s: &str) -> BlockRef {
    let words: Vec<&str> = s.split_whitespace().collect();
    let (fork, rest) = match words[3] {
        "fork" => (words[4].to_string(), &words[5..]),
        _ => ("main".to_string(), &words[3..]),
    };
    assert_eq!(rest[0], "blk", "unexpected blkref {s:?}");
    BlockRef {
        block_id: words[0].trim_end_matches(':').parse().unwrap(),
        rel: words[2].to_string(),
        fork,
        blk: rest[1].parse().unwrap(),
        image_apply: rest.get(2).map(|_| rest.len() == 3),
    }
}

/// Parses pg_waldump -b output into image details keyed by (record LSN, block id).
fn parse_detailed(text: &str) -> BTreeMap<(Lsn, u8), ImageDetails> {
    let mut out = BTreeMap::new();
    let mut lsn = Lsn::INVALID;
    for line in text.lines() {
        if line.starts_with("rmgr: ") {
            lsn = field(line, "lsn:", ",").parse().unwrap();
        } else if let Some(blk) = line.strip_prefix("\tblkref #") {
            if !blk.contains("(FPW") {
                continue;
            }
            let id: u8 = blk[..blk.find(':').unwrap()].parse().unwrap();
            let hole_offset = field(blk, "hole: offset:", ",").parse().unwrap();
            let hole_length = field(blk, "length:", ",").parse().unwrap();
            let method = if blk.contains("method:") {
                field(blk, "method:", ",").to_string()
            } else {
                "none".to_string()
            };
            out.insert((lsn, id), (hole_offset, hole_length, method));
        }
    }
    out
}

// ---------------------------------------------------------------------------
// Comparison
// ---------------------------------------------------------------------------

fn summarize(rec: &DecodedWalRecord) -> RecordSummary {
    RecordSummary {
        lsn: rec.lsn,
        rmgr: rec.rmgr_name(),
        xid: rec.xid(),
        total_len: rec.total_len(),
        blocks: rec
            .blocks
            .iter()
            .map(|b| BlockRef {
                block_id: b.block_id,
                rel: b.rnode.to_string(),
                fork: b.forknum.name().to_string(),
                blk: b.blkno,
                image_apply: b.has_image.then_some(b.apply_image),
            })
            .collect(),
    }
}

/// Restores every image; returns the count per compression method.
fn restore_all_images(records: &[DecodedWalRecord]) -> BTreeMap<&'static str, usize> {
    let mut per_method = BTreeMap::new();
    for rec in records {
        for img in rec.blocks.iter().filter_map(|b| b.image.as_ref()) {
            let page = restore_image(img)
                .unwrap_or_else(|e| panic!("restoring image in record at {}: {e}", rec.lsn));
            assert_eq!(page.len(), BLCKSZ);
            let u16_at = |i: usize| u16::from_le_bytes([page[i], page[i + 1]]);
            // A page with a valid header (pd_pagesize_version = 8192 | 4).
            if u16_at(18) == 0x2004 {
                assert!(
                    u16_at(12) <= u16_at(14),
                    "pd_lower > pd_upper at {}",
                    rec.lsn
                );
            }
            *per_method.entry(img.compression.name()).or_insert(0) += 1;
        }
    }
    per_method
}

/// Checks that each record's end_lsn is where the next one starts (past a page header).
fn check_end_lsns(records: &[DecodedWalRecord]) {
    for pair in records.windows(2) {
        let (end, next) = (pair[0].end_lsn, pair[1].lsn);
        let gap = next.0 - end.0;
        let at_page = end.0 % 8192 == 0;
        let at_seg = end.0 % SEG_SIZE == 0;
        assert!(
            gap == 0 || (at_page && gap == 24) || (at_seg && gap == 40),
            "record at {} ends at {}, next starts at {next}",
            pair[0].lsn,
            end
        );
    }
}

/// Decodes `files` and checks every record against pg_waldump's default output for the
/// same files, and that both stop at the same place. Returns our records.
/// Every record's main data decodes with the typed decoders; the interpreted rmgrs appear.
fn check_typed_bodies(records: &[DecodedWalRecord]) {
    let mut typed = BTreeMap::new();
    for rec in records {
        let h = &rec.header;
        match decode_main_data(h.xl_rmid, h.xl_info, h.xl_xid, &rec.main_data) {
            Ok(Some(_)) => *typed.entry(rec.rmgr_name()).or_insert(0usize) += 1,
            Ok(None) => {}
            Err(e) => panic!("{} record at {}: {e}", rec.rmgr_name(), rec.lsn),
        }
    }
    eprintln!("typed record bodies decoded: {typed:?}");
    for rmgr in ["XLOG", "Transaction", "Heap", "Heap2", "Standby", "Storage"] {
        assert!(typed.contains_key(rmgr), "no {rmgr} record body decoded");
    }
}

fn compare_with_waldump(wal_dir: &Path, files: &[PathBuf]) -> Vec<DecodedWalRecord> {
    let (records, end) = decode_segments(files);
    eprintln!(
        "decoded {} records from {} segments; end: {:?}",
        records.len(),
        files.len(),
        end.as_ref().map(|e| e.to_string())
    );
    let (default_text, waldump_err) = run_waldump(wal_dir, files, &[]);
    let end = end.expect("the WAL ends in zeros, which the decoder reports");
    assert!(end.is_zeroed(), "{end}");
    assert!(
        waldump_err.contains(&format!("at {}:", end.lsn)),
        "{waldump_err}"
    );
    let expected: Vec<RecordSummary> = default_text
        .lines()
        .filter(|l| l.starts_with("rmgr: "))
        .map(parse_default_line)
        .collect();
    let ours: Vec<RecordSummary> = records.iter().map(summarize).collect();
    for (i, (a, b)) in ours.iter().zip(&expected).enumerate() {
        assert_eq!(a, b, "record #{i} differs");
    }
    assert_eq!(ours.len(), expected.len(), "record counts differ");
    records
}

#[test]
fn decoder_matches_pg_waldump() {
    let mut pg = TestPostgres::init();
    pg.start();
    pg.run_sql(WORKLOAD);
    pg.stop("fast");

    let files = segment_files(&pg.wal_dir());
    assert!(
        files.len() >= 2,
        "the workload should fill more than one segment"
    );
    let records = compare_with_waldump(&pg.wal_dir(), &files);
    assert!(
        records.len() > 500,
        "only {} records compared",
        records.len()
    );
    // Starting at the second segment, whose first page may continue a record.
    let tail = compare_with_waldump(&pg.wal_dir(), &files[1..]);
    assert!(tail.len() > 100 && tail.len() < records.len());
    let page = XLogPageHeaderData::from_bytes(&fs::read(&files[1]).unwrap()).unwrap();
    eprintln!(
        "second segment starts with {page:?}, first record at {}",
        tail[0].lsn
    );
    if page.xlp_info & XLP_FIRST_IS_CONTRECORD != 0 && page.xlp_rem_len < 8000 {
        let skip = 40 + maxalign(page.xlp_rem_len as usize) as u64;
        assert_eq!(tail[0].lsn, Lsn(page.xlp_pageaddr.0 + skip));
    }

    let details = parse_detailed(&run_waldump(&pg.wal_dir(), &files, &["-b"]).0);
    let mut ours_details = BTreeMap::new();
    for rec in &records {
        for b in &rec.blocks {
            if let Some(img) = &b.image {
                let d = (
                    img.hole_offset,
                    img.hole_length,
                    img.compression.name().to_string(),
                );
                ours_details.insert((rec.lsn, b.block_id), d);
            }
        }
    }
    assert_eq!(
        ours_details, details,
        "image details differ from pg_waldump -b"
    );

    let per_method = restore_all_images(&records);
    eprintln!("restored images per method: {per_method:?}");
    for method in [
        ImageCompression::Pglz,
        ImageCompression::Lz4,
        ImageCompression::Zstd,
    ] {
        assert!(
            per_method.get(method.name()).copied().unwrap_or(0) > 0,
            "no {method:?} images"
        );
    }
    check_end_lsns(&records);
    check_typed_bodies(&records);
    let crosses = |r: &&DecodedWalRecord, unit: u64| r.lsn.0 / unit != (r.end_lsn.0 - 1) / unit;
    let across_pages = records.iter().filter(|r| crosses(r, 8192)).count();
    let across_segments = records
        .iter()
        .filter(|r| !r.header.is_xlog_switch() && crosses(r, SEG_SIZE))
        .count();
    eprintln!("{across_pages} records span pages, {across_segments} span segments");
    assert!(across_pages > 100);
    assert!(
        records.iter().any(|r| r.header.is_xlog_switch()),
        "no XLOG SWITCH seen"
    );
    assert!(records
        .iter()
        .any(|r| r.blocks.iter().any(|b| b.forknum.name() == "vm")));
    assert!(records
        .iter()
        .any(|r| r.rmgr_name() == "LogicalMessage" && r.main_data.len() > 40_000));
}

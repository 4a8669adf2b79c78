//! Checks the control-file codec and the page checksum against data directories created by the
//! stock PostgreSQL 15 `initdb` (default location /usr/lib/postgresql/15/bin, or `PG15_BIN_DIR`).
//! The tests fail with a clear message when the binaries are missing.

use std::collections::HashMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use postgres_ffi::controlfile::{ControlFileData, ControlFileError, PG_CONTROL_FILE_SIZE};
use postgres_ffi::page::{page_is_new, pg_checksum_page, verify_page, PageHeaderData, BLCKSZ};
use postgres_ffi::relfile::{parse_relation_path, ForkNumber, RELSEG_SIZE};
use utils::lsn::Lsn;

fn pg_bin_dir() -> PathBuf {
    let dir = PathBuf::from(
        std::env::var("PG15_BIN_DIR").unwrap_or_else(|_| "/usr/lib/postgresql/15/bin".into()),
    );
    assert!(
        dir.join("initdb").is_file() && dir.join("pg_controldata").is_file(),
        "stock PostgreSQL 15 binaries (initdb, pg_controldata) not found in {}; install \
         postgresql-15 or set PG15_BIN_DIR",
        dir.display()
    );
    dir
}

fn running_as_root() -> bool {
    let out = Command::new("id").arg("-u").output().expect("run `id -u`");
    String::from_utf8_lossy(&out.stdout).trim() == "0"
}

/// A temporary directory holding one initdb'd data directory; removed on drop.
struct DataDir {
    root: PathBuf,
}

impl DataDir {
    /// Runs `initdb` (as the `postgres` user when we are root, since initdb refuses root).
    fn init(tag: &str, extra_args: &[&str]) -> DataDir {
        let bin = pg_bin_dir();
        let root = std::env::temp_dir().join(format!("postgres_ffi_{tag}_{}", std::process::id()));
        let _ = fs::remove_dir_all(&root);
        fs::create_dir_all(&root).expect("create temp dir");
        let guard = DataDir { root };
        let initdb = bin.join("initdb");
        let data = guard.data();
        let mut cmd = if running_as_root() {
            let status = Command::new("chown")
                .arg("postgres")
                .arg(&guard.root)
                .status();
            assert!(
                status.is_ok_and(|s| s.success()),
                "chown postgres {}",
                guard.root.display()
            );
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(&initdb);
            c
        } else {
            Command::new(&initdb)
        };
        cmd.arg("-D")
            .arg(&data)
            .args(["--no-sync", "-A", "trust"])
            .args(extra_args);
        let out = cmd.env("LC_ALL", "C").output().expect("run initdb");
        assert!(
            out.status.success(),
            "initdb failed: {}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        guard
    }

    fn data(&self) -> PathBuf {
        self.root.join("data")
    }

    /// `pg_controldata` output as label -> value.
    fn controldata(&self) -> HashMap<String, String> {
        let out = Command::new(pg_bin_dir().join("pg_controldata"))
            .arg(self.data())
            .env("LC_ALL", "C")
            .env("LANG", "C")
            .output()
            .expect("run pg_controldata");
        assert!(
            out.status.success(),
            "pg_controldata failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter_map(|line| line.split_once(':'))
            .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
            .collect()
    }
}

impl Drop for DataDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.root);
    }
}

fn field<'a>(fields: &'a HashMap<String, String>, label: &str) -> &'a str {
    fields
        .get(label)
        .unwrap_or_else(|| panic!("pg_controldata has no {label:?}"))
}

fn lsn(s: &str) -> Lsn {
    s.parse().unwrap_or_else(|_| panic!("bad LSN {s:?}"))
}

#[test]
fn pg_control_of_fresh_initdb() {
    let dir = DataDir::init("control", &[]);
    let original = fs::read(dir.data().join("global/pg_control")).expect("read pg_control");
    assert!(original.len() >= PG_CONTROL_FILE_SIZE);
    let cf = ControlFileData::decode(&original).expect("decode pg_control");
    let fields = dir.controldata();

    assert_eq!(
        cf.checkpoint,
        lsn(field(&fields, "Latest checkpoint location"))
    );
    let cp = &cf.checkpoint_copy;
    assert_eq!(
        cp.redo,
        lsn(field(&fields, "Latest checkpoint's REDO location"))
    );
    let expected = [
        (
            "Database system identifier",
            cf.system_identifier.to_string(),
        ),
        (
            "pg_control version number",
            cf.pg_control_version.to_string(),
        ),
        ("Catalog version number", cf.catalog_version_no.to_string()),
        (
            "Latest checkpoint's NextXID",
            format!("{}:{}", cp.next_xid_epoch(), cp.next_xid_32()),
        ),
        ("Latest checkpoint's NextOID", cp.next_oid.to_string()),
        (
            "Latest checkpoint's TimeLineID",
            cp.this_timeline_id.to_string(),
        ),
        ("Latest checkpoint's oldestXID", cp.oldest_xid.to_string()),
        ("Bytes per WAL segment", cf.xlog_seg_size.to_string()),
        ("Database block size", cf.blcksz.to_string()),
        (
            "Blocks per segment of large relation",
            cf.relseg_size.to_string(),
        ),
        ("max_connections setting", cf.max_connections.to_string()),
        (
            "Data page checksum version",
            cf.data_checksum_version.to_string(),
        ),
    ];
    for (label, value) in expected {
        assert_eq!(value, field(&fields, label), "{label}");
    }
    let nonce: String = cf
        .mock_authentication_nonce
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    assert_eq!(nonce, field(&fields, "Mock authentication nonce"));

    // Re-encoding reproduces the file byte for byte.
    assert_eq!(cf.encode(), original[..PG_CONTROL_FILE_SIZE]);

    // Any flipped byte under the CRC is detected.
    let mut flipped = original.clone();
    flipped[0] ^= 0x01;
    assert!(matches!(
        ControlFileData::decode(&flipped),
        Err(ControlFileError::Crc { .. })
    ));
}

/// Verifies the checksum of every initialised page of every relation file under `dir`.
fn verify_relation_files(data: &Path, dir: &str) -> usize {
    let mut verified_pages = 0;
    for entry in fs::read_dir(data.join(dir)).expect("read_dir") {
        let name = entry
            .expect("dir entry")
            .file_name()
            .into_string()
            .expect("utf-8 name");
        let Ok(rel) = parse_relation_path(&format!("{dir}/{name}")) else {
            continue;
        };
        let bytes = fs::read(data.join(dir).join(&name)).expect("read relation file");
        assert_eq!(
            bytes.len() % BLCKSZ,
            0,
            "{name} is not a whole number of pages"
        );
        for (i, chunk) in bytes.chunks_exact(BLCKSZ).enumerate() {
            let page: &[u8; BLCKSZ] = chunk.try_into().expect("page-sized chunk");
            if page_is_new(page) {
                continue;
            }
            let blkno = rel.segno * RELSEG_SIZE + i as u32;
            let stored = PageHeaderData::decode(page).unwrap().pd_checksum;
            assert_eq!(
                pg_checksum_page(page, blkno),
                stored,
                "{dir}/{name} block {blkno}"
            );
            verify_page(page, blkno, true)
                .unwrap_or_else(|e| panic!("{dir}/{name} block {blkno}: {e}"));
            verified_pages += 1;
        }
    }
    verified_pages
}

#[test]
fn page_checksums_of_initdb_with_data_checksums() {
    let dir = DataDir::init("checksums", &["--data-checksums"]);
    let control = fs::read(dir.data().join("global/pg_control")).expect("read pg_control");
    let cf = ControlFileData::decode(&control).expect("decode pg_control");
    assert_eq!(cf.data_checksum_version, 1);
    assert_eq!(cf.encode(), control[..PG_CONTROL_FILE_SIZE]);

    let global_pages = verify_relation_files(&dir.data(), "global");
    let template1_pages = verify_relation_files(&dir.data(), "base/1");
    assert!(
        global_pages > 10,
        "only {global_pages} pages verified in global/"
    );
    assert!(
        template1_pages > 100,
        "only {template1_pages} pages verified in base/1"
    );

    // pg_class (relfilenode 1259 in template1) has FSM and VM forks; a wrong block number or a
    // corrupted byte is detected.
    let pg_class = fs::read(dir.data().join("base/1/1259")).expect("read pg_class");
    let mut page: [u8; BLCKSZ] = pg_class[..BLCKSZ].try_into().unwrap();
    assert!(verify_page(&page, 1, true).is_err());
    page[BLCKSZ - 100] ^= 0x20;
    assert!(verify_page(&page, 0, true).is_err());
    let vm = parse_relation_path("base/1/1259_vm").unwrap();
    assert_eq!(vm.forknum, ForkNumber::VisibilityMap);
}

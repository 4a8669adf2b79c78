//! Import of an existing PostgreSQL through the page service (`import basebackup`, `import
//! wal`): a stock PostgreSQL 15 base backup plus the WAL written after it, exported again with
//! `fullbackup` and started with our PostgreSQL (pg_install/v15), must hold the source's
//! data; bad input must fail cleanly, leave no timeline behind and keep the daemon up.

mod common;
#[path = "daemon_harness.rs"]
mod harness;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use common::*;
use harness::{call, new_id, Daemon, PgClient};
use postgres_ffi::controlfile::ControlFileData;
use postgres_ffi::waldecoder::WalStreamDecoder;
use serde_json::json;
use utils::lsn::Lsn;

/// WAL segment size of the source cluster (initdb default).
const WAL_SEG_BYTES: u64 = 16 * 1024 * 1024;
/// Size of the CopyData chunks the tests send.
const CHUNK_BYTES: usize = 100 * 1000;
/// The query whose result the source and the restored copy must agree on.
const FINGERPRINT_SQL: &str =
    "SELECT count(*) || ':' || md5(string_agg(id || '=' || v, ',' ORDER BY id)) FROM t";

/// What the source cluster exported.
struct Source {
    base_tar: Vec<u8>,
    wal_tar: Vec<u8>,
    base_lsn: Lsn,
    /// End of the source's shutdown checkpoint record (the last record of its WAL).
    end_lsn: Lsn,
    fingerprint: String,
}

/// The end of the record that starts at `start`, decoded from the segments in `wal_dir`.
fn record_end(wal_dir: &Path, start: Lsn) -> Lsn {
    let segno = start.segment_number(WAL_SEG_BYTES);
    let name = format!("{:08X}{:08X}{:08X}", 1, segno >> 8, segno & 0xff);
    let seg = fs::read(wal_dir.join(name)).unwrap();
    let mut dec = WalStreamDecoder::new(start, WAL_SEG_BYTES);
    dec.feed_bytes(&seg[start.segment_offset(WAL_SEG_BYTES) as usize..]);
    let rec = dec.poll_decode().unwrap().expect("a complete record");
    assert_eq!(rec.lsn, start);
    rec.end_lsn
}

/// A tar of the WAL segments in `wal_dir` from the one holding `from` on.
fn wal_tar(wal_dir: &Path, from: Lsn) -> Vec<u8> {
    let first = from.segment_number(WAL_SEG_BYTES);
    let mut names: Vec<String> = fs::read_dir(wal_dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.len() == 24 && n.chars().all(|c| c.is_ascii_hexdigit()))
        .filter(|n| {
            let segno = u64::from_str_radix(&n[8..16], 16).unwrap() * 256
                + u64::from_str_radix(&n[16..24], 16).unwrap();
            segno >= first
        })
        .collect();
    names.sort();
    let mut b = tar::Builder::new(Vec::new());
    for n in names {
        b.append_path_with_name(wal_dir.join(&n), &n).unwrap();
    }
    b.into_inner().unwrap()
}

/// Runs the stock server once per test binary: workload, `pg_basebackup -Ft -X none`, more
/// changes, WAL switch, clean stop.
fn source() -> &'static Source {
    static SOURCE: OnceLock<Source> = OnceLock::new();
    SOURCE.get_or_init(|| {
        let scratch = Scratch::new("import_src");
        let data = scratch.path("data");
        initdb(&data);
        let conf = "fsync = off\nwal_keep_size = 1024\n";
        let server = Server::start(&data, &scratch.path("sock"), conf);
        server.query("CREATE TABLE t (id int PRIMARY KEY, v text)");
        server.query("INSERT INTO t SELECT g, repeat('a', g % 50) FROM generate_series(1, 5000) g");
        let bb = scratch.path("bb");
        let out = server
            .client("pg_basebackup")
            .args(["-Ft", "-X", "none", "-c", "fast", "--no-sync", "-D"])
            .arg(&bb)
            .output()
            .unwrap();
        check(out, "pg_basebackup");
        server.query("INSERT INTO t SELECT g, 'later' FROM generate_series(5001, 9000) g");
        server.query("UPDATE t SET v = v || 'u' WHERE id % 7 = 0");
        server.query("DELETE FROM t WHERE id % 11 = 0");
        server.query("CREATE TABLE t2 AS SELECT * FROM t WHERE id < 100");
        let fingerprint = server.query(FINGERPRINT_SQL);
        server.query("SELECT pg_switch_wal()");
        server.stop();
        let manifest: serde_json::Value =
            serde_json::from_str(&fs::read_to_string(bb.join("backup_manifest")).unwrap()).unwrap();
        let base_lsn: Lsn = manifest["WAL-Ranges"][0]["Start-LSN"]
            .as_str()
            .unwrap()
            .parse()
            .unwrap();
        let control =
            ControlFileData::decode(&fs::read(data.join("global/pg_control")).unwrap()).unwrap();
        let wal_dir = data.join("pg_wal");
        let end_lsn = record_end(&wal_dir, control.checkpoint);
        Source {
            base_tar: fs::read(bb.join("base.tar")).unwrap(),
            wal_tar: wal_tar(&wal_dir, base_lsn),
            base_lsn,
            end_lsn,
            fingerprint,
        }
    })
}

/// Sends `query`, streams `data` as CopyData; `Ok(())` on CommandComplete, else the error.
fn copy_in(port: u16, query: &str, data: &[u8]) -> Result<(), String> {
    let mut c = PgClient::connect(port);
    c.query(query);
    let (tag, body) = c.read();
    if tag == b'E' {
        c.read_until_ready();
        return Err(String::from_utf8_lossy(&body).into_owned());
    }
    assert_eq!(tag, b'G', "{query}: expected CopyInResponse");
    for chunk in data.chunks(CHUNK_BYTES) {
        c.send(b'd', chunk);
    }
    c.send(b'c', &[]);
    let msgs = c.read_until_ready();
    match msgs.iter().find(|(t, _)| *t == b'E') {
        Some((_, body)) => Err(String::from_utf8_lossy(body).into_owned()),
        None => {
            assert!(
                msgs.iter().any(|(t, _)| *t == b'C'),
                "{query}: no CommandComplete"
            );
            Ok(())
        }
    }
}

fn import_base(
    d: &Daemon,
    tenant: &str,
    tl: &str,
    base: Lsn,
    end: Lsn,
    tar: &[u8],
) -> Result<(), String> {
    copy_in(
        d.pg_port,
        &format!("import basebackup {tenant} {tl} {base} {end} 15"),
        tar,
    )
}

fn import_wal(
    d: &Daemon,
    tenant: &str,
    tl: &str,
    start: Lsn,
    end: Lsn,
    tar: &[u8],
) -> Result<(), String> {
    copy_in(
        d.pg_port,
        &format!("import wal {tenant} {tl} {start} {end}"),
        tar,
    )
}

fn new_tenant(d: &Daemon) -> String {
    let tenant = new_id();
    let (st, body) = call(
        ureq::post(&d.url("/v1/tenant")),
        Some(json!({"new_tenant_id": tenant})),
    );
    assert_eq!(st, 201, "{body}");
    tenant
}

/// Asserts that timeline `tl` is neither served nor on disk (no temporary directory either),
/// and that the daemon still answers.
fn assert_absent(d: &Daemon, tenant: &str, tl: &str) {
    let (st, body) = call(
        ureq::get(&d.url(&format!("/v1/tenant/{tenant}/timeline/{tl}"))),
        None,
    );
    assert_eq!(st, 404, "{body}");
    let dir = d.workdir.join("tenants").join(tenant).join("timelines");
    let left: Vec<String> = fs::read_dir(&dir)
        .map(|r| {
            r.map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    assert!(
        !left.iter().any(|n| n.contains(tl)),
        "left behind: {left:?}"
    );
    let (st, _) = call(ureq::get(&d.url("/v1/status")), None);
    assert_eq!(st, 200);
}

fn timeline_lsns(d: &Daemon, tenant: &str, tl: &str) -> (Lsn, Lsn) {
    let (st, info) = call(
        ureq::get(&d.url(&format!("/v1/tenant/{tenant}/timeline/{tl}"))),
        None,
    );
    assert_eq!(st, 200, "{info}");
    let lsn = |k: &str| info[k].as_str().unwrap().parse::<Lsn>().unwrap();
    (lsn("last_record_lsn"), lsn("disk_consistent_lsn"))
}

/// The CopyOut data of `fullbackup`.
fn fullbackup(d: &Daemon, tenant: &str, tl: &str, lsn: Lsn) -> Vec<u8> {
    let mut c = PgClient::connect(d.pg_port);
    c.query(&format!("fullbackup {tenant} {tl} {lsn}"));
    let mut data = Vec::new();
    for (tag, body) in c.read_until_ready() {
        match tag {
            b'd' => data.extend_from_slice(&body),
            b'E' => panic!("fullbackup failed: {}", String::from_utf8_lossy(&body)),
            _ => {}
        }
    }
    data
}

fn our_pg_bin() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../pg_install/v15/bin")
}

/// Untars `tar` into a new data directory, starts our PostgreSQL on it and returns the
/// fingerprint query's answer.
fn restore_and_query(tar: &[u8]) -> String {
    let scratch = Scratch::new("import_restore");
    let data = scratch.path("data");
    fs::create_dir(&data).unwrap();
    tar::Archive::new(tar).unpack(&data).unwrap();
    let sock = scratch.path("sock");
    fs::create_dir(&sock).unwrap();
    fs::write(
        data.join("postgresql.conf"),
        format!(
            "listen_addresses = ''\nport = {PORT}\nunix_socket_directories = '{}'\nfsync = off\n",
            sock.display()
        ),
    )
    .unwrap();
    let chown = Command::new("chown")
        .args(["-R", "postgres"])
        .arg(scratch.dir.path())
        .output();
    check(chown.unwrap(), "chown");
    check(
        Command::new("chmod")
            .args(["700"])
            .arg(&data)
            .output()
            .unwrap(),
        "chmod",
    );
    let lib = Path::new(env!("CARGO_MANIFEST_DIR")).join("../pg_install/v15/lib");
    let log = scratch.path("server.log");
    let ctl = |args: &[&str]| {
        pg_command(&our_pg_bin().join("pg_ctl"))
            .arg("-D")
            .arg(&data)
            .args(args)
            .env("LD_LIBRARY_PATH", &lib)
            .output()
            .unwrap()
    };
    let out = ctl(&["-l", log.to_str().unwrap(), "-w", "-t", "60", "start"]);
    assert!(
        out.status.success(),
        "restored server did not start: {}\n{}",
        String::from_utf8_lossy(&out.stderr),
        fs::read_to_string(&log).unwrap_or_default()
    );
    let q = pg_client(&our_pg_bin().join("psql"), &sock)
        .args(["-d", "postgres", "-X", "-A", "-t", "-c"])
        .arg(FINGERPRINT_SQL)
        .env("LD_LIBRARY_PATH", &lib)
        .output()
        .unwrap();
    let _ = ctl(&["-m", "immediate", "-w", "stop"]);
    let answer = check(q, "psql on the restored server");
    answer.trim().to_string()
}

#[test]
fn import_basebackup_and_wal_then_fullbackup_matches_source() {
    let src = source();
    assert!(src.end_lsn > src.base_lsn);
    let dir = tempfile::tempdir().unwrap();
    let d = Daemon::start(&dir.path().join("ps"));
    let tenant = new_tenant(&d);
    let tl = new_id();
    import_base(&d, &tenant, &tl, src.base_lsn, src.end_lsn, &src.base_tar).unwrap();
    // Pending until its WAL arrives: not served.
    let (st, _) = call(
        ureq::get(&d.url(&format!("/v1/tenant/{tenant}/timeline/{tl}"))),
        None,
    );
    assert_eq!(st, 404);
    import_wal(&d, &tenant, &tl, src.base_lsn, src.end_lsn, &src.wal_tar).unwrap();
    assert_eq!(timeline_lsns(&d, &tenant, &tl), (src.end_lsn, src.end_lsn));

    let tar = fullbackup(&d, &tenant, &tl, src.end_lsn);
    assert_eq!(restore_and_query(&tar), src.fingerprint);

    // Durable: the same after a restart.
    let wd = d.workdir.clone();
    d.stop();
    let d = Daemon::start(&wd);
    assert_eq!(timeline_lsns(&d, &tenant, &tl), (src.end_lsn, src.end_lsn));
    let err = import_base(&d, &tenant, &tl, src.base_lsn, src.end_lsn, &src.base_tar).unwrap_err();
    assert!(err.contains("already exists"), "{err}");
}

#[test]
fn import_bad_input_fails_cleanly() {
    let src = source();
    let dir = tempfile::tempdir().unwrap();
    let d = Daemon::start(&dir.path().join("ps"));
    let tenant = new_tenant(&d);
    let (base, end) = (src.base_lsn, src.end_lsn);
    let tl = new_id();

    let bad_base: Vec<(&str, Vec<u8>, Lsn)> = {
        let mut garbage = src.base_tar.clone();
        garbage.extend_from_slice(b"this is not a tar block");
        let mut corrupt = src.base_tar.clone();
        corrupt[148..156].copy_from_slice(b"zzzzzzz\0");
        vec![
            ("empty", Vec::new(), base),
            (
                "truncated",
                src.base_tar[..src.base_tar.len() / 2].to_vec(),
                base,
            ),
            ("garbage", garbage, base),
            ("invalid tar archive", corrupt, base),
            ("does not match", src.base_tar.clone(), Lsn(base.0 + 8)),
        ]
    };
    for (want, tar, lsn) in bad_base {
        let err = import_base(&d, &tenant, &tl, lsn, end, &tar).unwrap_err();
        assert!(err.contains(want), "want {want:?}: {err}");
        assert_absent(&d, &tenant, &tl);
    }

    // WAL that ends before the requested end, then a truncated WAL tar.
    let far = Lsn(end.0 + 8 * WAL_SEG_BYTES);
    import_base(&d, &tenant, &tl, base, far, &src.base_tar).unwrap();
    let err = import_wal(&d, &tenant, &tl, base, far, &src.wal_tar).unwrap_err();
    assert!(err.contains("WAL ends at"), "{err}");
    assert_absent(&d, &tenant, &tl);
    import_base(&d, &tenant, &tl, base, end, &src.base_tar).unwrap();
    let half = &src.wal_tar[..src.wal_tar.len() / 3];
    let err = import_wal(&d, &tenant, &tl, base, end, half).unwrap_err();
    assert!(err.contains("import failed"), "{err}");
    assert_absent(&d, &tenant, &tl);
    let err = import_wal(&d, &tenant, &tl, base, end, &src.wal_tar).unwrap_err();
    assert!(err.contains("no pending import"), "{err}");

    // The client gives up in the middle of the COPY.
    let mut c = PgClient::connect(d.pg_port);
    c.query(&format!("import basebackup {tenant} {tl} {base} {end} 15"));
    assert_eq!(c.read().0, b'G');
    c.send(b'd', &src.base_tar[..src.base_tar.len() / 2]);
    c.send(b'f', b"changed my mind\0");
    let msgs = c.read_until_ready();
    let err = msgs.iter().find(|(t, _)| *t == b'E').expect("an error");
    assert!(
        String::from_utf8_lossy(&err.1).contains("changed my mind"),
        "{msgs:?}"
    );
    assert_absent(&d, &tenant, &tl);

    // After all that, the same id imports fine.
    import_base(&d, &tenant, &tl, base, end, &src.base_tar).unwrap();
    import_wal(&d, &tenant, &tl, base, end, &src.wal_tar).unwrap();
    assert_eq!(timeline_lsns(&d, &tenant, &tl), (end, end));
    let err = import_base(&d, &tenant, &tl, base, end, &src.base_tar).unwrap_err();
    assert!(err.contains("already exists"), "{err}");
    let err = import_wal(&d, &tenant, &tl, base, end, &src.wal_tar).unwrap_err();
    assert!(err.contains("already exists"), "{err}");
    d.stop();
}

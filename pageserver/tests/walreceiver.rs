//! The walreceiver against a real stock PostgreSQL 15 primary (physical replication is the
//! same protocol the compute speaks): a base backup of the primary is imported into a
//! timeline, `wal_source` points the timeline at the primary, and the timeline must follow
//! the primary's workload; a fast stop of the primary returns only once the pageserver has
//! everything durably; a killed pageserver resumes from its durable LSN without losing WAL; a
//! primary that is down is retried until it is back.

mod common;
#[path = "daemon_harness.rs"]
mod harness;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use common::*;
use harness::{call, new_id, Daemon, PgClient};
use postgres_ffi::controlfile::ControlFileData;
use postgres_ffi::waldecoder::WalStreamDecoder;
use serde_json::{json, Value};
use utils::lsn::Lsn;

const WAL_SEG_BYTES: u64 = 16 * 1024 * 1024;
/// Longest wait for the pageserver to catch up with the primary.
const CATCH_UP_DEADLINE: Duration = Duration::from_secs(120);
const CHUNK_BYTES: usize = 100 * 1000;
const FINGERPRINT_SQL: &str = "SELECT (SELECT count(*) || ':' || md5(string_agg(id || '=' || v, ',' ORDER BY id)) FROM t) || '/' || (SELECT count(*) FROM t2)";
const SOURCE_CONF: &str = "fsync = off\nwal_level = replica\nmax_wal_senders = 10\nmax_replication_slots = 10\nwal_sender_timeout = 10s\nwal_keep_size = 0\n";

/// Sends `query` and streams `data` as CopyData; the error text on failure.
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
    match c.read_until_ready().into_iter().find(|(t, _)| *t == b'E') {
        Some((_, body)) => Err(String::from_utf8_lossy(&body).into_owned()),
        None => Ok(()),
    }
}

/// A tar of the segments of `wal_dir` holding `from` up to `to`.
fn wal_tar(wal_dir: &Path, from: Lsn, to: Lsn) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for segno in from.segment_number(WAL_SEG_BYTES)..=to.segment_number(WAL_SEG_BYTES) {
        let name = Lsn(segno * WAL_SEG_BYTES).segment_file_name(1, WAL_SEG_BYTES);
        b.append_path_with_name(wal_dir.join(&name), &name).unwrap();
    }
    b.into_inner().unwrap()
}

/// The end of the record starting at `start` in the segments of `wal_dir`.
fn record_end(wal_dir: &Path, start: Lsn) -> Lsn {
    let name = start.segment_file_name(1, WAL_SEG_BYTES);
    let seg = fs::read(wal_dir.join(name)).unwrap();
    let mut dec = WalStreamDecoder::new(start, WAL_SEG_BYTES);
    dec.feed_bytes(&seg[start.segment_offset(WAL_SEG_BYTES) as usize..]);
    dec.poll_decode()
        .unwrap()
        .expect("a complete record")
        .end_lsn
}

fn timeline_url(d: &Daemon, tenant: &str, tl: &str, suffix: &str) -> String {
    d.url(&format!("/v1/tenant/{tenant}/timeline/{tl}{suffix}"))
}

fn timeline_info(d: &Daemon, tenant: &str, tl: &str) -> Value {
    let (st, info) = call(ureq::get(&timeline_url(d, tenant, tl, "")), None);
    assert_eq!(st, 200, "{info}");
    info
}

fn lsn_field(v: &Value, k: &str) -> Lsn {
    v[k].as_str()
        .unwrap_or_else(|| panic!("{k} in {v}"))
        .parse()
        .unwrap()
}

/// Waits until the timeline has ingested everything the primary flushed.
fn wait_caught_up(d: &Daemon, tenant: &str, tl: &str, server: &Server) -> Lsn {
    let mut last = Lsn(0);
    wait_for(CATCH_UP_DEADLINE, "the walreceiver to catch up", || {
        let target: Lsn = server
            .query("SELECT pg_current_wal_flush_lsn()")
            .parse()
            .unwrap();
        last = lsn_field(&timeline_info(d, tenant, tl), "last_record_lsn");
        last >= target
    });
    last
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

fn our_pg(dir: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../pg_install/v15")
        .join(dir)
}

/// Starts our PostgreSQL (it understands the pageserver's generated control file) on a
/// fullbackup of the timeline and answers the fingerprint query.
fn fingerprint_of_timeline(d: &Daemon, tenant: &str, tl: &str, lsn: Lsn) -> String {
    let tar = fullbackup(d, tenant, tl, lsn);
    let scratch = Scratch::new("walrecv_restore");
    let data = scratch.path("data");
    let sock = scratch.path("sock");
    fs::create_dir(&data).unwrap();
    fs::create_dir(&sock).unwrap();
    tar::Archive::new(&tar[..]).unpack(&data).unwrap();
    let conf = format!(
        "listen_addresses = ''\nport = {PORT}\nunix_socket_directories = '{}'\nfsync = off\n",
        sock.display()
    );
    fs::write(data.join("postgresql.conf"), conf).unwrap();
    let chown = Command::new("chown")
        .args(["-R", "postgres"])
        .arg(scratch.dir.path())
        .output();
    check(chown.unwrap(), "chown");
    check(
        Command::new("chmod")
            .arg("700")
            .arg(&data)
            .output()
            .unwrap(),
        "chmod",
    );
    let log = scratch.path("server.log");
    let ctl = |args: &[&str]| {
        pg_command(&our_pg("bin/pg_ctl"))
            .arg("-D")
            .arg(&data)
            .args(args)
            .env("LD_LIBRARY_PATH", our_pg("lib"))
            .output()
            .unwrap()
    };
    let out = ctl(&["-l", log.to_str().unwrap(), "-w", "-t", "60", "start"]);
    assert!(
        out.status.success(),
        "restored server did not start: {}",
        fs::read_to_string(&log).unwrap_or_default()
    );
    let q = pg_client(&our_pg("bin/psql"), &sock)
        .args(["-d", "postgres", "-X", "-A", "-t", "-c", FINGERPRINT_SQL])
        .env("LD_LIBRARY_PATH", our_pg("lib"))
        .output()
        .unwrap();
    let _ = ctl(&["-m", "immediate", "-w", "stop"]);
    check(q, "psql on the restored server").trim().to_string()
}

fn put_source(d: &Daemon, tenant: &str, tl: &str, body: Value) -> (u16, Value) {
    call(
        ureq::put(&timeline_url(d, tenant, tl, "/wal_source")),
        Some(body),
    )
}

fn source_status(d: &Daemon, tenant: &str, tl: &str) -> (u16, Value) {
    call(ureq::get(&timeline_url(d, tenant, tl, "/wal_source")), None)
}

/// Kills the daemon (no graceful flush) through its pid file.
fn kill_daemon(d: Daemon) -> std::path::PathBuf {
    let pid: i32 = fs::read_to_string(d.workdir.join("pageserver.pid"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let pid = nix::unistd::Pid::from_raw(pid);
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL).unwrap();
    let wd = d.workdir.clone();
    drop(d);
    wd
}

/// Lines of the daemon log at ERROR level (none are expected: a source being down is a WARN).
fn error_lines(workdir: &Path) -> Vec<String> {
    fs::read_to_string(workdir.join("pageserver.log"))
        .unwrap_or_default()
        .lines()
        .filter(|l| l.contains("ERROR"))
        .map(str::to_string)
        .collect()
}

fn workload(server: &Server, from: i32, to: i32) {
    server.query(&format!(
        "INSERT INTO t SELECT g, repeat('x', g % 70) FROM generate_series({from}, {to}) g"
    ));
    server.query(&format!(
        "UPDATE t SET v = v || 'u' WHERE id % 7 = 0 AND id BETWEEN {from} AND {to}"
    ));
    server.query(&format!(
        "DELETE FROM t WHERE id % 11 = 0 AND id BETWEEN {from} AND {to}"
    ));
    server.query(&format!(
        "INSERT INTO t2 SELECT g FROM generate_series(1, {}) g",
        (to - from) / 10
    ));
}

#[test]
fn walreceiver_follows_a_stock_primary() {
    let scratch = Scratch::new("walrecv_src");
    let data = scratch.path("data");
    let sock = scratch.path("sock");
    initdb(&data);
    let server = Server::start(&data, &sock, SOURCE_CONF);
    // The slot keeps the WAL from before the base backup on.
    server.query("SELECT pg_create_physical_replication_slot('pageserver', true)");
    server.query("CREATE TABLE t (id int PRIMARY KEY, v text)");
    server.query("CREATE TABLE t2 (x int)");
    workload(&server, 1, 3000);
    let bb = scratch.path("bb");
    let out = server
        .client("pg_basebackup")
        .args(["-Ft", "-X", "none", "-c", "fast", "--no-sync", "-D"])
        .arg(&bb)
        .output()
        .unwrap();
    check(out, "pg_basebackup");
    let manifest: Value =
        serde_json::from_str(&fs::read_to_string(bb.join("backup_manifest")).unwrap()).unwrap();
    let base = lsn_field(&manifest["WAL-Ranges"][0], "Start-LSN");
    let end = lsn_field(&manifest["WAL-Ranges"][0], "End-LSN");

    let dir = tempfile::tempdir().unwrap();
    let d = Daemon::start(&dir.path().join("ps"));
    let tenant = new_id();
    let (st, body) = call(
        ureq::post(&d.url("/v1/tenant")),
        Some(json!({ "new_tenant_id": tenant })),
    );
    assert_eq!(st, 201, "{body}");
    let tl = new_id();
    let base_tar = fs::read(bb.join("base.tar")).unwrap();
    copy_in(
        d.pg_port,
        &format!("import basebackup {tenant} {tl} {base} {end} 15"),
        &base_tar,
    )
    .unwrap();
    let wal = wal_tar(&data.join("pg_wal"), base, end);
    copy_in(
        d.pg_port,
        &format!("import wal {tenant} {tl} {base} {end}"),
        &wal,
    )
    .unwrap();
    assert_eq!(
        lsn_field(&timeline_info(&d, &tenant, &tl), "last_record_lsn"),
        end
    );

    // Bad requests are clear 4xx answers.
    for (body, want) in [
        (json!({"connstr": "bogus_option=1"}), 400),
        (json!({"connstr": "host=x", "slot_name": "Bad Slot"}), 400),
        (json!({"connstr": "host=x", "extra": 1}), 400),
        (json!({"slot_name": "s"}), 400),
    ] {
        let (st, answer) = put_source(&d, &tenant, &tl, body.clone());
        assert_eq!(st, want, "{body}: {answer}");
    }
    let (st, _) = put_source(&d, &tenant, &new_id(), json!({"connstr": "host=x"}));
    assert_eq!(st, 404);
    let (st, _) = source_status(&d, &tenant, &tl);
    assert_eq!(st, 404, "no source yet");

    // Stream: the timeline follows the primary's workload.
    let connstr = format!("host={} port={PORT} user=postgres", sock.display());
    let (st, body) = put_source(&d, &tenant, &tl, json!({ "connstr": connstr }));
    assert_eq!(st, 200, "{body}");
    assert_eq!(body["slot_name"], "pageserver");
    workload(&server, 3001, 8000);
    server.query("CREATE INDEX ON t (v)");
    let caught_up = wait_caught_up(&d, &tenant, &tl, &server);
    let info = timeline_info(&d, &tenant, &tl);
    assert_eq!(info["wal_receiver"]["connected"], true, "{info}");
    assert!(lsn_field(&info["wal_receiver"], "last_received_lsn") >= caught_up);
    assert_eq!(
        fingerprint_of_timeline(&d, &tenant, &tl, caught_up),
        server.query(FINGERPRINT_SQL)
    );
    let slot =
        server.query("SELECT active FROM pg_replication_slots WHERE slot_name = 'pageserver'");
    assert_eq!(slot, "t");

    // Killed mid-stream: restarts from its durable LSN, the slot kept the rest.
    workload(&server, 8001, 20000);
    let wd = kill_daemon(d);
    workload(&server, 20001, 22000);
    let d = Daemon::start(&wd);
    let caught_up = wait_caught_up(&d, &tenant, &tl, &server);
    assert_eq!(
        fingerprint_of_timeline(&d, &tenant, &tl, caught_up),
        server.query(FINGERPRINT_SQL)
    );

    // A fast stop of the primary returns once the pageserver has everything durably.
    let fingerprint = server.query(FINGERPRINT_SQL);
    server.stop();
    let control =
        ControlFileData::decode(&fs::read(data.join("global/pg_control")).unwrap()).unwrap();
    let checkpoint_end = record_end(&data.join("pg_wal"), control.checkpoint);
    let info = timeline_info(&d, &tenant, &tl);
    assert!(
        lsn_field(&info, "disk_consistent_lsn") >= checkpoint_end,
        "{info} vs checkpoint end {checkpoint_end}"
    );
    assert_eq!(
        fingerprint_of_timeline(&d, &tenant, &tl, checkpoint_end),
        fingerprint
    );

    // The primary is down: the walreceiver retries, and catches up once it is back.
    wait_for(Duration::from_secs(30), "a connection error", || {
        let (_, s) = source_status(&d, &tenant, &tl);
        s["connected"] == false && s["last_error"].is_string()
    });
    let server = Server::start(&data, &sock, "");
    workload(&server, 22001, 25000);
    let caught_up = wait_caught_up(&d, &tenant, &tl, &server);
    assert_eq!(
        fingerprint_of_timeline(&d, &tenant, &tl, caught_up),
        server.query(FINGERPRINT_SQL)
    );
    let (_, s) = source_status(&d, &tenant, &tl);
    assert!(s["reconnects"].as_u64().unwrap() >= 1, "{s}");
    let (_, metrics) = call(ureq::get(&d.url("/metrics")), None);
    let metrics = metrics.as_str().unwrap().to_string();
    assert!(
        metrics.contains("pageserver_walreceiver_records_ingested_total "),
        "{metrics}"
    );

    // Deleting the source stops streaming, durably, idempotently.
    let delete = || {
        call(
            ureq::delete(&timeline_url(&d, &tenant, &tl, "/wal_source")),
            None,
        )
    };
    assert_eq!(delete().0, 200);
    assert_eq!(delete().0, 200);
    assert_eq!(source_status(&d, &tenant, &tl).0, 404);
    let tl_dir = d
        .workdir
        .join("tenants")
        .join(&tenant)
        .join("timelines")
        .join(&tl);
    assert!(!tl_dir.join("wal_source.json").exists());
    let stopped_at = lsn_field(&timeline_info(&d, &tenant, &tl), "last_record_lsn");
    server.query("INSERT INTO t2 SELECT g FROM generate_series(1, 1000) g");
    let wd = d.workdir.clone();
    d.stop();
    let d = Daemon::start(&wd);
    assert_eq!(source_status(&d, &tenant, &tl).0, 404);
    let info = timeline_info(&d, &tenant, &tl);
    assert_eq!(lsn_field(&info, "last_record_lsn"), stopped_at);
    assert!(info.get("wal_receiver").is_none(), "{info}");
    d.stop();
    drop(server);
    assert_eq!(error_lines(&wd), Vec::<String>::new());
}

#[test]
fn wal_source_of_unknown_timeline_or_tenant_is_404() {
    let dir = tempfile::tempdir().unwrap();
    let d = Daemon::start(&dir.path().join("ps"));
    let tenant = new_id();
    let (st, _) = put_source(&d, &tenant, &new_id(), json!({"connstr": "host=x"}));
    assert_eq!(st, 404);
    let (st, _) = put_source(&d, "not-an-id", &new_id(), json!({"connstr": "host=x"}));
    assert_eq!(st, 400);
    let (st, _) = call(
        ureq::delete(&timeline_url(&d, &tenant, &new_id(), "/wal_source")),
        None,
    );
    assert_eq!(st, 404);
    d.stop();
}

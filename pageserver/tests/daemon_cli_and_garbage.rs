//! Command-line errors are clear; garbage on either port never takes the daemon down; a
//! second daemon cannot run in the same workdir.

#[path = "daemon_harness.rs"]
mod harness;

use std::io::{Read, Write};
use std::process::Command;

use harness::{call, Daemon, PgClient};
use rand::{Rng, SeedableRng};

fn pageserver(args: &[&str]) -> (bool, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_pageserver"))
        .args(args)
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn daemon_cli_errors_are_clear() {
    let dir = tempfile::tempdir().unwrap();
    let wd = dir.path().join("ps");
    let wd_s = wd.to_str().unwrap();
    let (ok, err) = pageserver(&["--workdir", wd_s]);
    assert!(!ok && err.contains("--init"), "{err}");
    let (ok, err) = pageserver(&["--workdir", wd_s, "--init", "-c", "listen_pg_addr=nowhere"]);
    assert!(!ok && err.contains("listen_pg_addr"), "{err}");
    let (ok, err) = pageserver(&["--workdir", wd_s, "--init", "-c", "no_such_key=1"]);
    assert!(!ok && err.contains("no_such_key"), "{err}");
    let (ok, err) = pageserver(&["--workdir", wd_s, "--init", "-c", "novalue"]);
    assert!(!ok && err.contains("key=value"), "{err}");
    assert!(!wd.join("pageserver.toml").exists());

    let d = Daemon::start(&wd);
    let (ok, err) = pageserver(&["--workdir", wd_s, "--init"]);
    assert!(!ok && err.contains("already exists"), "{err}");
    let (ok, err) = pageserver(&["--workdir", wd_s]);
    assert!(!ok && err.contains("another pageserver"), "{err}");
    d.stop();
}

#[test]
fn daemon_survives_garbage() {
    let dir = tempfile::tempdir().unwrap();
    let d = Daemon::start(&dir.path().join("ps"));
    let mut rng = rand::rngs::StdRng::seed_from_u64(1);
    for _ in 0..30 {
        // Raw garbage on the libpq port, before and after a valid startup.
        let len = rng.gen_range(1..300);
        let junk: Vec<u8> = (0..len).map(|_| rng.gen()).collect();
        if let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", d.pg_port)) {
            let _ = s.write_all(&junk);
            let _ = s.shutdown(std::net::Shutdown::Write);
            let mut sink = Vec::new();
            s.set_read_timeout(Some(std::time::Duration::from_secs(5)))
                .unwrap();
            let _ = s.read_to_end(&mut sink);
        }
        let mut c = PgClient::connect(d.pg_port);
        let cmd = ["pagestream_v3", "basebackup", "fullbackup", "set", "x"][rng.gen_range(0..5)];
        let args: String = (0..rng.gen_range(0..4))
            .map(|_| format!(" {:x}", rng.gen::<u64>()))
            .collect();
        c.query(&format!("{cmd}{args}"));
        let msgs = c.read_until_ready();
        assert!(!msgs.is_empty());
        // Garbage JSON to the API.
        let body: String = (0..rng.gen_range(0..40))
            .map(|_| rng.gen_range(' '..'~'))
            .collect();
        let resp = ureq::post(&d.url("/v1/tenant")).send_string(&body);
        match resp {
            Err(ureq::Error::Status(400, _)) => {}
            other => panic!("expected 400 for {body:?}, got {other:?}"),
        }
    }
    let (st, _) = call(ureq::get(&d.url("/v1/status")), None);
    assert_eq!(st, 200);
    d.stop();
}

/// A tenant whose timeline metadata is corrupt loads as Broken; the others keep working.
#[test]
fn daemon_corrupt_tenant_is_broken_not_fatal() {
    let dir = tempfile::tempdir().unwrap();
    let wd = dir.path().join("ps");
    let d = Daemon::start(&wd);
    let (good, bad) = (harness::new_id(), harness::new_id());
    for t in [&good, &bad] {
        let body = serde_json::json!({ "new_tenant_id": t });
        let (st, _) = call(ureq::post(&d.url("/v1/tenant")), Some(body));
        assert_eq!(st, 201);
    }
    d.stop();
    let tl_dir = wd
        .join("tenants")
        .join(&bad)
        .join("timelines")
        .join(harness::new_id());
    std::fs::create_dir_all(&tl_dir).unwrap();
    std::fs::write(tl_dir.join("metadata"), b"NTLM garbage").unwrap();

    let d = Daemon::start(&wd);
    let (st, info) = call(ureq::get(&d.url(&format!("/v1/tenant/{bad}"))), None);
    assert_eq!(st, 200);
    assert_eq!(info["state"]["slug"], "Broken", "{info}");
    let reason = info["state"]["data"]["reason"].as_str().unwrap();
    assert!(reason.contains("corrupt"), "{reason}");
    let (st, body) = call(
        ureq::get(&d.url(&format!("/v1/tenant/{bad}/timeline"))),
        None,
    );
    assert_eq!(st, 409, "{body}");
    let (st, info) = call(ureq::get(&d.url(&format!("/v1/tenant/{good}"))), None);
    assert_eq!(
        (st, &info["state"]["slug"]),
        (200, &serde_json::json!("Active"))
    );
    // A broken tenant can still be deleted.
    let (st, _) = call(ureq::delete(&d.url(&format!("/v1/tenant/{bad}"))), None);
    assert_eq!(st, 200);
    d.stop();
}

/// Shutdown with an open libpq session: the client gets FATAL 57P01, the daemon exits 0.
#[test]
fn daemon_shutdown_closes_sessions() {
    let dir = tempfile::tempdir().unwrap();
    let d = Daemon::start(&dir.path().join("ps"));
    let mut c = PgClient::connect(d.pg_port);
    d.stop();
    let (tag, body) = c.read();
    assert_eq!(tag, b'E');
    assert!(String::from_utf8_lossy(&body).contains("57P01"));
}

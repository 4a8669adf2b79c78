//! WalRedoManager with real processes: Ping, concurrency, timeouts and start failures, and
//! requests that are rejected or need no process at all.

mod common;

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use pageserver_api::key::Key;
use pageserver_api::value::NeonWalRecord;
use pageserver_walredo::{PlanError, WalRedoConfig, WalRedoError, WalRedoManager};
use utils::id::TenantId;
use utils::lsn::Lsn;

fn manager_with(config: WalRedoConfig) -> WalRedoManager {
    WalRedoManager::new(config, TenantId::generate())
}

fn real_manager() -> WalRedoManager {
    manager_with(WalRedoConfig::new(common::pg_install_dir()))
}

fn rel_key(blkno: u32) -> Key {
    Key {
        field1: 0,
        field2: 1663,
        field3: 5,
        field4: 16384,
        field5: 0,
        field6: blkno,
    }
}

fn clog_key(segno: u32, blkno: u32) -> Key {
    Key {
        field1: 1,
        field2: 0,
        field3: 1,
        field4: segno,
        field5: 0,
        field6: blkno,
    }
}

#[test]
fn ping_starts_one_process_and_reuses_it() {
    let redo = real_manager();
    assert_eq!(redo.process_id(), None, "started lazily");
    redo.ping().unwrap();
    let pid = redo.process_id().expect("running");
    redo.ping().unwrap();
    assert_eq!(redo.process_id(), Some(pid));
    redo.shutdown();
    assert_eq!(redo.process_id(), None);
    redo.ping().unwrap();
    assert_ne!(redo.process_id(), Some(pid));
}

#[test]
fn concurrent_callers_share_the_process() {
    let redo = Arc::new(real_manager());
    let threads: Vec<_> = (0..8)
        .map(|_| {
            let redo = Arc::clone(&redo);
            std::thread::spawn(move || {
                for _ in 0..25 {
                    redo.ping().unwrap();
                }
                redo.process_id().unwrap()
            })
        })
        .collect();
    let pids: Vec<u32> = threads.into_iter().map(|t| t.join().unwrap()).collect();
    assert!(pids.iter().all(|&p| p == pids[0]), "one process: {pids:?}");
}

/// A stand-in `postgres` that never answers (nor reads its input).
fn silent_install() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let bin = dir.path().join("v15/bin");
    fs::create_dir_all(&bin).unwrap();
    let script = bin.join("postgres");
    fs::write(&script, "#!/bin/sh\nexec sleep 600\n").unwrap();
    fs::set_permissions(&script, fs::Permissions::from_mode(0o755)).unwrap();
    common::hand_to_postgres(dir.path());
    dir
}

#[test]
fn a_silent_process_times_out_and_is_replaced() {
    let install = silent_install();
    let mut config = WalRedoConfig::new(install.path());
    config.redo_timeout = Duration::from_millis(300);
    let redo = manager_with(config);
    for _ in 0..2 {
        let started = Instant::now();
        let err = redo.ping().unwrap_err();
        let took = started.elapsed();
        assert!(matches!(err, WalRedoError::Timeout(_)), "{err}");
        assert!(took >= Duration::from_millis(300), "{took:?}");
        assert!(took < Duration::from_secs(10), "{took:?}");
        assert_eq!(redo.process_id(), None, "killed after the timeout");
    }
}

#[test]
fn a_missing_binary_fails_to_start() {
    let dir = tempfile::tempdir().unwrap();
    let redo = manager_with(WalRedoConfig::new(dir.path().join("nowhere")));
    let err = redo.ping().unwrap_err();
    assert!(matches!(err, WalRedoError::Spawn { .. }), "{err}");
}

#[test]
fn neon_records_need_no_process() {
    // a manager whose process could not even start
    let dir = tempfile::tempdir().unwrap();
    let redo = manager_with(WalRedoConfig::new(dir.path()));
    let base = Bytes::from(vec![0u8; 8192]);
    let records = vec![
        (
            Lsn(0x200),
            NeonWalRecord::ClogSetCommitted {
                xids: vec![32768 * 33 + 1],
                timestamp: 0,
            },
        ),
        (
            Lsn(0x300),
            NeonWalRecord::ClogSetAborted {
                xids: vec![32768 * 33 + 4],
            },
        ),
    ];
    // page 33 of pg_xact = segment 1, block 1
    let page = redo
        .request_redo(
            clog_key(1, 1),
            Lsn(0x300),
            Some((Lsn(0x100), base)),
            records,
        )
        .unwrap();
    assert_eq!(page[0], 0b0000_0100, "xid +1 committed");
    assert_eq!(page[1], 0b0000_0010, "xid +4 aborted");
    assert!(page[2..].iter().all(|&b| b == 0));
    assert_eq!(redo.process_id(), None);
}

#[test]
fn bad_requests_are_rejected_before_any_redo() {
    let dir = tempfile::tempdir().unwrap();
    let redo = manager_with(WalRedoConfig::new(dir.path()));
    let pg = |lsn: u64| {
        (
            Lsn(lsn),
            NeonWalRecord::Postgres {
                will_init: true,
                rec: Bytes::from_static(&[0; 24]),
            },
        )
    };
    let clog = |lsn: u64| (Lsn(lsn), NeonWalRecord::ClogSetAborted { xids: vec![1] });
    let page = || Some((Lsn(0x10), Bytes::from(vec![0u8; 8192])));

    let size_key = Key {
        field6: u32::MAX,
        ..rel_key(0)
    };
    let err = redo.request_redo(size_key, Lsn(0x100), page(), vec![]);
    assert!(matches!(err, Err(WalRedoError::InvalidKey(_))));

    let short = Some((Lsn(0x10), Bytes::from(vec![0u8; 100])));
    let err = redo.request_redo(rel_key(0), Lsn(0x100), short, vec![]);
    assert!(matches!(err, Err(WalRedoError::BadImageSize(100))));

    let err = redo.request_redo(clog_key(0, 0), Lsn(0x100), page(), vec![pg(0x20)]);
    assert!(matches!(err, Err(WalRedoError::PostgresRecordForSlru(_))));

    let err = redo.request_redo(clog_key(0, 0), Lsn(0x100), None, vec![clog(0x20)]);
    assert!(matches!(err, Err(WalRedoError::NoBaseImage(_))));

    let err = redo.request_redo(
        clog_key(0, 0),
        Lsn(0x100),
        page(),
        vec![clog(0x30), clog(0x20)],
    );
    assert!(matches!(
        err,
        Err(WalRedoError::InvalidRequest(PlanError::OutOfOrder {
            index: 1,
            ..
        }))
    ));

    let err = redo.request_redo(clog_key(0, 0), Lsn(0x100), page(), vec![clog(0x200)]);
    assert!(matches!(
        err,
        Err(WalRedoError::InvalidRequest(
            PlanError::BeyondRequest { .. }
        ))
    ));

    // xid 1 is on CLOG page 0, not page 1
    let err = redo.request_redo(clog_key(0, 1), Lsn(0x100), page(), vec![clog(0x20)]);
    assert!(
        matches!(err, Err(WalRedoError::NeonRecord { .. })),
        "{err:?}"
    );

    // a base image and nothing to apply: the image itself
    let img = redo
        .request_redo(clog_key(0, 0), Lsn(0x100), page(), vec![])
        .unwrap();
    assert_eq!(img.len(), 8192);
    assert_eq!(redo.process_id(), None);
}

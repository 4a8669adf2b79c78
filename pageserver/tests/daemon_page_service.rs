//! The daemon end to end without initdb: a timeline written with the library into a tenant
//! directory is loaded at start, served over the page service, branched over HTTP, and kept
//! across restarts.

#[path = "daemon_harness.rs"]
mod harness;

use std::path::Path;
use std::sync::{Arc, RwLock};

use bytes::Bytes;
use harness::{call, new_id, Daemon, PgClient};
use pageserver::metadata::TimelineMetadata;
use pageserver::pgdatadir_mapping::DatadirModification;
use pageserver::storage_api::TimelineWrite;
use pageserver::tenant::timeline::{NeonOnlyRedo, Timeline};
use pageserver_api::key::RelTag;
use pageserver_api::models::EffectiveTenantConfig;
use pageserver_api::pagestream::*;
use pageserver_api::value::Value;
use serde_json::json;
use utils::id::{TenantId, TimelineId};
use utils::lsn::Lsn;

const REL: RelTag = RelTag {
    spcnode: 1663,
    dbnode: 5,
    relnode: 16384,
    forknum: 0,
};

fn page(b: u8) -> Bytes {
    let mut p = vec![0u8; 8192];
    p[200] = b;
    Bytes::from(p)
}

/// A timeline with REL of 2 blocks at 0/100 and a new block 0 at 0/200.
fn write_timeline(dir: &Path, tenant: TenantId, id: TimelineId) {
    let meta = TimelineMetadata {
        disk_consistent_lsn: Lsn(0),
        prev_record_lsn: None,
        ancestor_timeline: None,
        ancestor_lsn: Lsn(0),
        latest_gc_cutoff_lsn: Lsn(0x100),
        initdb_lsn: Lsn(0x100),
        pg_version: 15,
    };
    let conf = Arc::new(RwLock::new(EffectiveTenantConfig::DEFAULT));
    let tl =
        Timeline::create_empty(tenant, id, dir, &meta, None, conf, Arc::new(NeonOnlyRedo)).unwrap();
    {
        let mut w = tl.writer();
        let mut m = DatadirModification::new(&mut w, Lsn(0x100));
        m.ensure_db(1663, 5).unwrap();
        m.create_rel(REL, 2).unwrap();
        m.put_rel_value(REL, 0, Value::Image(page(1)));
        m.put_rel_value(REL, 1, Value::Image(page(2)));
        m.commit().unwrap();
        m.set_lsn(Lsn(0x200)).unwrap();
        m.put_rel_value(REL, 0, Value::Image(page(3)));
        m.commit().unwrap();
        drop(m);
        w.finish_write(Lsn(0x200), Lsn(0x1C0));
    }
    tl.freeze_and_flush().unwrap();
}

fn hdr(reqid: u64, request_lsn: u64, nms: u64) -> PagestreamRequestHeader {
    PagestreamRequestHeader {
        reqid,
        request_lsn: Lsn(request_lsn),
        not_modified_since: Lsn(nms),
    }
}

fn roundtrip(c: &mut PgClient, req: PagestreamFeMessage) -> PagestreamBeMessage {
    c.send(b'd', &req.serialize());
    let (tag, body) = c.read();
    assert_eq!(tag, b'd');
    let resp = PagestreamBeMessage::parse(&body).unwrap();
    assert_eq!(resp.header(), req.header());
    resp
}

fn get_page(c: &mut PgClient, tl_req: (u64, u64), blkno: u32) -> Bytes {
    let req = PagestreamFeMessage::GetPage(PagestreamGetPageRequest {
        hdr: hdr(9, tl_req.0, tl_req.1),
        rel: REL,
        blkno,
    });
    match roundtrip(c, req) {
        PagestreamBeMessage::GetPage(r) => r.page,
        other => panic!("unexpected {other:?}"),
    }
}

#[test]
fn daemon_page_service_branch_and_restart() {
    let dir = tempfile::tempdir().unwrap();
    let wd = dir.path().join("ps");
    let tenant = new_id();
    let d = Daemon::start(&wd);
    let (st, _) = call(
        ureq::post(&d.url("/v1/tenant")),
        Some(json!({"new_tenant_id": tenant})),
    );
    assert_eq!(st, 201);
    d.stop();

    let main_id = TimelineId::generate();
    let tl_dir = wd.join("tenants").join(&tenant).join("timelines");
    write_timeline(
        &tl_dir.join(main_id.to_string()),
        tenant.parse().unwrap(),
        main_id,
    );
    std::fs::create_dir(tl_dir.join("leftover.___temp")).unwrap();

    let d = Daemon::start(&wd);
    assert!(!tl_dir.join("leftover.___temp").exists());
    let tl_url = d.url(&format!("/v1/tenant/{tenant}/timeline/{main_id}"));
    let (st, info) = call(ureq::get(&tl_url), None);
    assert_eq!(st, 200, "{info}");
    assert_eq!(info["last_record_lsn"], json!("0/200"));
    assert_eq!(info["disk_consistent_lsn"], json!("0/200"));
    assert_eq!(info["current_logical_size"], json!(2 * 8192));

    let mut c = PgClient::connect(d.pg_port);
    c.query("no_such_command");
    let msgs = c.read_until_ready();
    assert_eq!(msgs[0].0, b'E');
    c.query(&format!(
        "pagestream_v3 {tenant} {}",
        TimelineId::generate()
    ));
    assert_eq!(c.read_until_ready()[0].0, b'E');

    c.query(&format!("pagestream_v3 {tenant} {main_id}"));
    assert_eq!(c.read().0, b'W');
    assert_eq!(get_page(&mut c, (u64::MAX, 0x200), 0), page(3));
    assert_eq!(get_page(&mut c, (0x150, 0x150), 0), page(1));
    assert_eq!(get_page(&mut c, (u64::MAX, 0x100), 1), page(2));
    assert_eq!(
        get_page(&mut c, (u64::MAX, 0x100), 5),
        Bytes::from(vec![0u8; 8192])
    );
    let nblocks = PagestreamFeMessage::Nblocks(PagestreamNblocksRequest {
        hdr: hdr(1, u64::MAX, 0x200),
        rel: REL,
    });
    assert!(
        matches!(roundtrip(&mut c, nblocks), PagestreamBeMessage::Nblocks(r) if r.n_blocks == 2)
    );
    let exists = PagestreamFeMessage::Exists(PagestreamExistsRequest {
        hdr: hdr(2, u64::MAX, 0x200),
        rel: RelTag { relnode: 1, ..REL },
    });
    assert!(matches!(roundtrip(&mut c, exists), PagestreamBeMessage::Exists(r) if !r.exists));
    let dbsize = PagestreamFeMessage::DbSize(PagestreamDbSizeRequest {
        hdr: hdr(3, u64::MAX, 0x200),
        dbnode: 5,
    });
    assert!(
        matches!(roundtrip(&mut c, dbsize), PagestreamBeMessage::DbSize(r) if r.db_size == 2 * 8192)
    );
    for bad in [hdr(4, 0, 0), hdr(5, 0x100, 0x200)] {
        let req = PagestreamFeMessage::GetPage(PagestreamGetPageRequest {
            hdr: bad,
            rel: REL,
            blkno: 0,
        });
        assert!(matches!(
            roundtrip(&mut c, req),
            PagestreamBeMessage::Error(_)
        ));
    }
    // Pipelined: many requests before reading; answers come in order.
    let reqs: Vec<PagestreamFeMessage> = (0..100u64)
        .map(|i| {
            PagestreamFeMessage::GetPage(PagestreamGetPageRequest {
                hdr: hdr(1000 + i, u64::MAX, 0x100 + (i % 2) * 0x100),
                rel: REL,
                blkno: (i % 3) as u32,
            })
        })
        .collect();
    for r in &reqs {
        c.send(b'd', &r.serialize());
    }
    for r in &reqs {
        let (tag, body) = c.read();
        assert_eq!(tag, b'd');
        let resp = PagestreamBeMessage::parse(&body).unwrap();
        assert!(resp.answers(r), "{resp:?} does not answer {r:?}");
    }
    // Garbage ends the stream with an error; the session and the daemon survive.
    c.send(b'd', &[0xFF, 1, 2]);
    assert_eq!(c.read_until_ready()[0].0, b'E');
    c.query(&format!("basebackup {tenant} {main_id} not-an-lsn"));
    assert_eq!(c.read_until_ready()[0].0, b'E');
    drop(c);

    let create = d.url(&format!("/v1/tenant/{tenant}/timeline"));
    let branch_id = new_id();
    for (lsn, want) in [("0/300", 400), ("0/50", 400)] {
        let (st, body) = call(
            ureq::post(&create),
            Some(
                json!({"new_timeline_id": new_id(), "ancestor_timeline_id": main_id, "ancestor_start_lsn": lsn}),
            ),
        );
        assert_eq!(st, want, "{lsn}: {body}");
    }
    let (st, info) = call(
        ureq::post(&create),
        Some(
            json!({"new_timeline_id": branch_id, "ancestor_timeline_id": main_id, "ancestor_start_lsn": "0/150"}),
        ),
    );
    assert_eq!(st, 201, "{info}");
    assert_eq!(
        (&info["ancestor_lsn"], &info["last_record_lsn"]),
        (&json!("0/150"), &json!("0/150"))
    );
    let (st, _) = call(
        ureq::post(&create),
        Some(json!({"new_timeline_id": branch_id, "ancestor_timeline_id": main_id})),
    );
    assert_eq!(st, 409);
    let (st, _) = call(ureq::put(&format!("{tl_url}/checkpoint")), None);
    assert_eq!(st, 200);
    d.stop();

    let d = Daemon::start(&wd);
    let (st, list) = call(ureq::get(&create), None);
    assert_eq!(st, 200);
    assert_eq!(list.as_array().unwrap().len(), 2, "{list}");
    let mut c = PgClient::connect(d.pg_port);
    c.query(&format!("pagestream_v3 {tenant} {branch_id}"));
    assert_eq!(c.read().0, b'W');
    assert_eq!(get_page(&mut c, (u64::MAX, 0x150), 0), page(1));
    drop(c);
    let (st, _) = call(ureq::get(&d.url("/v1/status")), None);
    assert_eq!(st, 200);
    d.stop();
}

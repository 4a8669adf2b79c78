//! Timeline bootstrap with the real initdb (pg_install/v15), then branch, basebackup,
//! fullbackup and GetPage of a catalog page, before and after a restart.

#[path = "daemon_harness.rs"]
mod harness;

use std::io::Read;

use harness::{call, new_id, Daemon, PgClient};
use pageserver_api::key::RelTag;
use pageserver_api::pagestream::*;
use serde_json::json;
use utils::lsn::Lsn;

/// pg_class of database `postgres` (mapped catalog, filenode 1259 after initdb).
const PG_CLASS: RelTag = RelTag {
    spcnode: 1663,
    dbnode: 5,
    relnode: 1259,
    forknum: 0,
};

/// The CopyOut data of a backup command.
fn backup(c: &mut PgClient, cmd: &str) -> Vec<u8> {
    c.query(cmd);
    let mut data = Vec::new();
    for (tag, body) in c.read_until_ready() {
        match tag {
            b'H' | b'c' | b'C' => {}
            b'd' => data.extend_from_slice(&body),
            other => panic!(
                "{cmd}: unexpected message {:?}: {}",
                other as char,
                String::from_utf8_lossy(&body)
            ),
        }
    }
    data
}

fn tar_names(data: impl Read) -> Vec<String> {
    let mut ar = tar::Archive::new(data);
    ar.entries()
        .unwrap()
        .map(|e| e.unwrap().path().unwrap().to_string_lossy().into_owned())
        .collect()
}

fn pg_class_page(port: u16, tenant: &str, timeline: &str) -> (u32, bytes::Bytes) {
    let mut c = PgClient::connect(port);
    c.query(&format!("pagestream_v3 {tenant} {timeline}"));
    assert_eq!(c.read().0, b'W');
    let hdr = PagestreamRequestHeader {
        reqid: 1,
        request_lsn: Lsn(u64::MAX),
        not_modified_since: Lsn(0x10),
    };
    let mut ask = |req: PagestreamFeMessage| {
        c.send(b'd', &req.serialize());
        PagestreamBeMessage::parse(&c.read().1).unwrap()
    };
    let n = match ask(PagestreamFeMessage::Nblocks(PagestreamNblocksRequest {
        hdr,
        rel: PG_CLASS,
    })) {
        PagestreamBeMessage::Nblocks(r) => r.n_blocks,
        other => panic!("{other:?}"),
    };
    let page = match ask(PagestreamFeMessage::GetPage(PagestreamGetPageRequest {
        hdr,
        rel: PG_CLASS,
        blkno: 0,
    })) {
        PagestreamBeMessage::GetPage(r) => r.page,
        other => panic!("{other:?}"),
    };
    (n, page)
}

#[test]
fn daemon_bootstrap_branch_backup_restart() {
    let dir = tempfile::tempdir().unwrap();
    let wd = dir.path().join("ps");
    let d = Daemon::start(&wd);
    let tenant = new_id();
    // Compaction only on request, merging every L0 file and imaging every partition.
    let config = json!({"compaction_period": "0s", "compaction_threshold": 1, "image_creation_threshold": 1});
    let (st, _) = call(
        ureq::post(&d.url("/v1/tenant")),
        Some(json!({"new_tenant_id": tenant, "config": config})),
    );
    assert_eq!(st, 201);
    let create = d.url(&format!("/v1/tenant/{tenant}/timeline"));
    let main = new_id();
    let (st, info) = call(ureq::post(&create), Some(json!({"new_timeline_id": main})));
    assert_eq!(st, 201, "{info}");
    // The bootstrap imports initdb's data directory at its shutdown checkpoint and then that
    // checkpoint record: the timeline ends right after it (so computes can start writable).
    let lsn = |v: &serde_json::Value| v.as_str().unwrap().parse::<utils::lsn::Lsn>().unwrap();
    assert!(
        lsn(&info["last_record_lsn"]) > lsn(&info["initdb_lsn"]),
        "{info}"
    );
    assert_eq!(info["disk_consistent_lsn"], info["last_record_lsn"]);
    assert!(
        info["current_logical_size"].as_u64().unwrap() > 1_000_000,
        "{info}"
    );
    let (st, _) = call(ureq::post(&create), Some(json!({"new_timeline_id": main})));
    assert_eq!(st, 409);

    let branch = new_id();
    let (st, binfo) = call(
        ureq::post(&create),
        Some(json!({"new_timeline_id": branch, "ancestor_timeline_id": main})),
    );
    assert_eq!(st, 201, "{binfo}");
    assert_eq!(binfo["ancestor_lsn"], info["last_record_lsn"]);

    let mut c = PgClient::connect(d.pg_port);
    let base = tar_names(&backup(&mut c, &format!("basebackup {tenant} {branch}"))[..]);
    for want in ["global/pg_control", "PG_VERSION", "base/5/PG_VERSION"] {
        assert!(
            base.iter().any(|n| n == want),
            "{want} missing from {base:?}"
        );
    }
    let gz = backup(&mut c, &format!("basebackup {tenant} {main} latest --gzip"));
    let gz_names = tar_names(flate2::read::GzDecoder::new(&gz[..]));
    assert!(gz_names.iter().any(|n| n == "global/pg_control"));
    let full = tar_names(&backup(&mut c, &format!("fullbackup {tenant} {main}"))[..]);
    assert!(full.iter().any(|n| n == "base/5/1259"), "{full:?}");
    drop(c);

    let (n, page) = pg_class_page(d.pg_port, &tenant, &main);
    assert!(n > 0);
    assert!(page.iter().any(|&b| b != 0));
    assert_eq!(
        pg_class_page(d.pg_port, &tenant, &branch),
        (n, page.clone())
    );

    let (st, done) = call(ureq::put(&format!("{create}/{main}/compact")), None);
    assert_eq!(st, 200, "{done}");
    assert_eq!(done["l0_inputs"], json!(1), "{done}");
    assert!(done["images_created"].as_u64().unwrap() >= 1, "{done}");
    assert_eq!(pg_class_page(d.pg_port, &tenant, &main), (n, page.clone()));
    assert_eq!(
        pg_class_page(d.pg_port, &tenant, &branch),
        (n, page.clone())
    );
    let mut c = PgClient::connect(d.pg_port);
    let again = tar_names(&backup(&mut c, &format!("fullbackup {tenant} {main}"))[..]);
    assert_eq!(again, full);
    drop(c);
    d.stop();

    let d = Daemon::start(&wd);
    assert_eq!(pg_class_page(d.pg_port, &tenant, &branch), (n, page));
    let (st, list) = call(ureq::get(&create), None);
    assert_eq!((st, list.as_array().unwrap().len()), (200, 2));
    d.stop();
}

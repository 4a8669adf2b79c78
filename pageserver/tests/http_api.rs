//! The management API of the real daemon: tenants, timeline errors, JSON errors.

#[path = "daemon_harness.rs"]
mod harness;

use harness::{call, new_id, Daemon};
use serde_json::json;

#[test]
fn http_tenant_lifecycle_and_errors() {
    let dir = tempfile::tempdir().unwrap();
    let d = Daemon::start(&dir.path().join("ps"));
    let (st, body) = call(ureq::get(&d.url("/v1/status")), None);
    assert_eq!((st, body), (200, json!({"id": 7})));

    let t = new_id();
    let (st, body) = call(
        ureq::post(&d.url("/v1/tenant")),
        Some(json!({"new_tenant_id": t})),
    );
    assert_eq!((st, body), (201, json!(t)));
    let (st, body) = call(
        ureq::post(&d.url("/v1/tenant")),
        Some(json!({"new_tenant_id": t})),
    );
    assert_eq!(st, 409);
    assert!(
        body["msg"].as_str().unwrap().contains("already exists"),
        "{body}"
    );

    let (st, body) = call(ureq::get(&d.url("/v1/tenant")), None);
    assert_eq!(st, 200);
    let ids: Vec<&str> = body
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, vec![t.as_str()]);
    let (st, body) = call(ureq::get(&d.url(&format!("/v1/tenant/{t}"))), None);
    assert_eq!((st, &body["state"]["slug"]), (200, &json!("Active")));

    // Malformed input: 400 with a JSON message.
    for (req, b) in [
        (ureq::get(&d.url("/v1/tenant/not-an-id")), None),
        (ureq::post(&d.url("/v1/tenant")), Some(json!({"nope": 1}))),
        (
            ureq::post(&d.url("/v1/tenant")),
            Some(json!({"new_tenant_id": new_id(), "config": {"checkpoint_distance": 1}})),
        ),
        (
            ureq::post(&d.url(&format!("/v1/tenant/{t}/timeline"))),
            Some(json!({"new_timeline_id": new_id(), "ancestor_start_lsn": "0/10"})),
        ),
        (
            ureq::put(&d.url("/v1/tenant/config")),
            Some(json!({"tenant_id": t, "config": {"checkpoint_distance": 5}})),
        ),
    ] {
        let (st, body) = call(req, b);
        assert_eq!(st, 400, "{body}");
        assert!(body["msg"].is_string(), "{body}");
    }
    let (st, _) = call(
        ureq::put(&d.url("/v1/tenant/config")),
        Some(json!({"tenant_id": t, "config": {"checkpoint_distance": 1048576}})),
    );
    assert_eq!(st, 200);

    // Unknown things: 404 with a JSON message.
    let missing_tl = format!("/v1/tenant/{t}/timeline/{}", new_id());
    for path in [
        format!("/v1/tenant/{}", new_id()),
        missing_tl.clone(),
        "/v2/nothing".to_string(),
    ] {
        let (st, body) = call(ureq::get(&d.url(&path)), None);
        assert_eq!(st, 404, "{path}: {body}");
        assert!(body["msg"].is_string(), "{body}");
    }
    let (st, _) = call(ureq::put(&d.url(&format!("{missing_tl}/checkpoint"))), None);
    assert_eq!(st, 404);
    let (st, body) = call(
        ureq::post(&d.url(&format!("/v1/tenant/{t}/timeline"))),
        Some(json!({"new_timeline_id": new_id(), "ancestor_timeline_id": new_id()})),
    );
    assert_eq!(st, 404, "{body}");
    let (st, body) = call(ureq::get(&d.url(&format!("/v1/tenant/{t}/timeline"))), None);
    assert_eq!((st, body), (200, json!([])));

    let (st, _) = call(ureq::delete(&d.url(&format!("/v1/tenant/{t}"))), None);
    assert_eq!(st, 200);
    let (st, _) = call(ureq::get(&d.url(&format!("/v1/tenant/{t}"))), None);
    assert_eq!(st, 404);
    let (st, _) = call(ureq::delete(&d.url(&format!("/v1/tenant/{t}"))), None);
    assert_eq!(st, 404);
    assert!(!d.workdir.join("tenants").join(&t).exists());

    let (st, body) = call(ureq::get(&d.url("/metrics")), None);
    assert_eq!(st, 200);
    assert!(body
        .as_str()
        .unwrap()
        .contains("pageserver_getpage_latency_seconds_bucket"));
    d.stop();
}

use super::*;
use serde_json::{json, Value};

const TENANT: &str = "0123456789abcdef0123456789abcdef";
const TIMELINE: &str = "fedcba9876543210fedcba9876543210";

fn base() -> Value {
    json!({
        "format_version": 1,
        "tenant_id": TENANT,
        "timeline_id": TIMELINE,
        "mode": "primary",
        "pageserver_connstring": "host=127.0.0.1 port=64000",
        "pg_port": 55432,
        "cluster": {
            "roles": [{"name": "alice", "password": null}, {"name": "Bob \"the\" owner", "password": "s'cret"}],
            "databases": [{"name": "app", "owner": "alice"}, {"name": "other", "owner": "cloud_admin"}],
            "settings": [{"name": "shared_buffers", "value": "1MB"}]
        }
    })
}

fn parse(v: &Value) -> Result<ComputeSpec, SpecError> {
    ComputeSpec::parse(&v.to_string())
}

fn with(path: &[&str], value: Value) -> Value {
    let mut v = base();
    let mut cur = &mut v;
    for p in &path[..path.len() - 1] {
        cur = match p.parse::<usize>() {
            Ok(i) => &mut cur[i],
            Err(_) => &mut cur[*p],
        };
    }
    let last = path[path.len() - 1];
    match last.parse::<usize>() {
        Ok(i) => cur[i] = value,
        Err(_) => cur[last] = value,
    }
    v
}

#[test]
fn parses_the_contract_example() {
    let spec = parse(&base()).unwrap();
    assert_eq!(spec.tenant_id.to_string(), TENANT);
    assert_eq!(spec.timeline_id.to_string(), TIMELINE);
    assert_eq!(spec.mode, ComputeMode::Primary);
    assert_eq!(spec.pg_port, 55432);
    assert_eq!(spec.pageserver().unwrap().port, 64000);
    assert_eq!(spec.cluster.roles.len(), 2);
    assert_eq!(spec.cluster.roles[1].password.as_deref(), Some("s'cret"));
    assert_eq!(spec.cluster.databases[0].owner, "alice");
    assert_eq!(spec.cluster.settings[0].value, "1MB");
    // Round trip through our own serialization.
    assert_eq!(ComputeSpec::parse(&spec.to_json()).unwrap(), spec);
}

#[test]
fn static_mode_and_defaults() {
    let mut v = with(&["mode"], json!({"static": "0/16B5A50"}));
    v.as_object_mut().unwrap().remove("cluster");
    let spec = parse(&v).unwrap();
    assert_eq!(spec.mode, ComputeMode::Static(Lsn(0x16B5A50)));
    assert_eq!(spec.cluster, Cluster::default());
    let text = serde_json::to_value(&spec).unwrap();
    assert_eq!(text["mode"], json!({"static": "0/16B5A50"}));
    assert_eq!(
        serde_json::to_value(ComputeMode::Primary).unwrap(),
        json!("primary")
    );
}

#[test]
fn refuses_bad_documents() {
    let cases: Vec<(Value, &str)> = vec![
        (with(&["format_version"], json!(2)), "format_version 2"),
        (with(&["pg_port"], json!(0)), "pg_port"),
        (with(&["pg_port"], json!(70000)), "JSON"),
        (with(&["tenant_id"], json!("xyz")), "JSON"),
        (with(&["mode"], json!("replica")), "JSON"),
        (with(&["mode"], json!({"static": "0/0"})), "valid LSN"),
        (with(&["mode"], json!({"static": "nonsense"})), "JSON"),
        (with(&["pageserver_connstring"], json!("port=1")), "no host"),
        (with(&["surprise"], json!(1)), "unknown field"),
        (with(&["cluster", "roles", "0", "name"], json!("")), "empty"),
        (
            with(&["cluster", "roles", "0", "name"], json!("x".repeat(64))),
            "63 bytes",
        ),
        (
            with(&["cluster", "roles", "0", "name"], json!("a\u{0}b")),
            "NUL",
        ),
        (
            with(&["cluster", "roles", "0", "name"], json!("cloud_admin")),
            "reserved",
        ),
        (
            with(&["cluster", "roles", "0", "name"], json!("pg_monitor")),
            "reserved",
        ),
        (
            with(&["cluster", "roles", "1", "name"], json!("alice")),
            "appears twice",
        ),
        (
            with(&["cluster", "roles", "0", "password"], json!("a\nb")),
            "line break",
        ),
        (
            with(&["cluster", "databases", "0", "owner"], json!("mallory")),
            "neither a role",
        ),
        (
            with(&["cluster", "databases", "1", "name"], json!("app")),
            "appears twice",
        ),
        (
            with(&["cluster", "databases", "1", "name"], json!("template1")),
            "reserved",
        ),
        (
            with(&["cluster", "settings", "0", "name"], json!("1abc")),
            "parameter name",
        ),
        (
            with(&["cluster", "settings", "0", "name"], json!("a b")),
            "parameter name",
        ),
        (
            with(&["cluster", "settings", "0", "name"], json!("PORT")),
            "derived from the spec",
        ),
        (
            with(
                &["cluster", "settings", "0", "name"],
                json!("neon.tenant_id"),
            ),
            "derived",
        ),
        (
            with(&["cluster", "settings", "0", "value"], json!("x\ny")),
            "line break",
        ),
        (
            with(
                &["cluster", "settings", "0", "value"],
                json!("x".repeat(9000)),
            ),
            "8192",
        ),
    ];
    for (doc, want) in cases {
        let err = parse(&doc).expect_err(&doc.to_string()).to_string();
        assert!(
            err.contains(want),
            "{doc}: {err:?} does not mention {want:?}"
        );
    }
    assert!(ComputeSpec::parse("{")
        .unwrap_err()
        .to_string()
        .contains("JSON"));
    let dup_setting = with(
        &["cluster", "settings"],
        json!([{"name": "work_mem", "value": "1MB"}, {"name": "WORK_MEM", "value": "2MB"}]),
    );
    assert!(parse(&dup_setting)
        .unwrap_err()
        .to_string()
        .contains("twice"));
}

#[test]
fn reconfigure_rules() {
    let old = parse(&base()).unwrap();
    let mut new = old.clone();
    new.cluster.roles.push(Role {
        name: "carol".into(),
        password: None,
    });
    new.cluster.settings.clear();
    assert_eq!(old.check_reconfigure(&new), Ok(()));
    let other_tl = parse(&with(&["timeline_id"], json!(TENANT))).unwrap();
    let err = old.check_reconfigure(&other_tl).unwrap_err();
    assert!(err.to_string().contains("timeline_id"), "{err}");
    let other_mode = parse(&with(&["mode"], json!({"static": "0/10"}))).unwrap();
    assert!(old.check_reconfigure(&other_mode).is_err());
    let other_port = parse(&with(&["pg_port"], json!(1234))).unwrap();
    assert!(old.check_reconfigure(&other_port).is_err());
}

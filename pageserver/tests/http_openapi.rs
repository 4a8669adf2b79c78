//! `pageserver/openapi.yaml` describes exactly the routes of the router.

use std::collections::BTreeSet;

#[test]
fn http_openapi_spec_matches_routes() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/openapi.yaml");
    let text = std::fs::read_to_string(path).unwrap();
    let spec: serde_yaml::Value = serde_yaml::from_str(&text).unwrap();
    let mut in_spec = BTreeSet::new();
    let paths = spec["paths"].as_mapping().expect("paths");
    for (p, item) in paths {
        let p = p.as_str().unwrap().to_string();
        for (m, _) in item.as_mapping().unwrap() {
            let m = m.as_str().unwrap();
            if ["get", "put", "post", "delete", "patch"].contains(&m) {
                in_spec.insert((m.to_string(), p.clone()));
            }
        }
    }
    let in_router: BTreeSet<(String, String)> = pageserver::http::ROUTES
        .iter()
        .map(|(m, p)| (m.as_str().to_string(), p.to_string()))
        .collect();
    let missing: Vec<_> = in_router.difference(&in_spec).collect();
    let extra: Vec<_> = in_spec.difference(&in_router).collect();
    assert!(
        missing.is_empty(),
        "routes missing from openapi.yaml: {missing:?}"
    );
    assert!(
        extra.is_empty(),
        "openapi.yaml routes without handler: {extra:?}"
    );
    assert!(in_router.len() >= 12);
}

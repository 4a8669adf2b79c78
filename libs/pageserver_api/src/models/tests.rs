use std::time::Duration;

use serde_json::json;

use super::*;

const TENANT: &str = "0123456789abcdef0123456789abcdef";
const TIMELINE: &str = "fedcba9876543210fedcba9876543210";

fn tenant() -> TenantId {
    TENANT.parse().unwrap()
}

fn timeline() -> TimelineId {
    TIMELINE.parse().unwrap()
}

#[test]
fn tenant_create_request_shape() {
    let req: TenantCreateRequest = serde_json::from_value(json!({
        "new_tenant_id": TENANT,
        "config": {"checkpoint_distance": 1048576, "checkpoint_timeout": "1h 30m",
                   "gc_period": "0s", "pitr_interval": null}
    }))
    .unwrap();
    assert_eq!(req.new_tenant_id, tenant());
    assert_eq!(req.config.checkpoint_distance, Some(1048576));
    assert_eq!(
        req.config.checkpoint_timeout,
        Some(Duration::from_secs(5400))
    );
    assert_eq!(req.config.gc_period, Some(Duration::ZERO));
    assert_eq!(req.config.pitr_interval, None);
    assert_eq!(
        serde_json::to_value(&req).unwrap(),
        json!({"new_tenant_id": TENANT,
               "config": {"checkpoint_distance": 1048576, "checkpoint_timeout": "1h 30m",
                          "gc_period": "0s"}})
    );
    // config may be omitted; unknown fields and bad values are rejected.
    let bare: TenantCreateRequest =
        serde_json::from_value(json!({"new_tenant_id": TENANT})).unwrap();
    assert_eq!(bare.config, TenantConfig::default());
    for bad in [
        json!({"new_tenant_id": TENANT, "cofnig": {}}),
        json!({"new_tenant_id": TENANT, "config": {"checkpoint_distanse": 1}}),
        json!({"new_tenant_id": TENANT, "config": {"checkpoint_timeout": 600}}),
        json!({"new_tenant_id": TENANT, "config": {"checkpoint_timeout": "ten minutes"}}),
        json!({"new_tenant_id": TENANT, "config": {"gc_period": "1000000 years"}}),
        json!({"new_tenant_id": TENANT, "config": {"gc_horizon": -1}}),
        json!({"new_tenant_id": "xyz"}),
        json!({}),
    ] {
        assert!(
            serde_json::from_value::<TenantCreateRequest>(bad.clone()).is_err(),
            "{bad}"
        );
    }
}

#[test]
fn effective_config_defaults_and_overrides() {
    let defaults = TenantConfig::default().effective();
    assert_eq!(defaults, EffectiveTenantConfig::DEFAULT);
    assert_eq!(defaults.checkpoint_distance, 64 * 1024 * 1024);
    assert_eq!(defaults.checkpoint_timeout, Duration::from_secs(600));
    assert_eq!(defaults.compaction_threshold, 10);
    assert_eq!(defaults.image_creation_threshold, 3);
    assert_eq!(defaults.validate(), Ok(()));
    let conf = TenantConfig {
        compaction_threshold: Some(2),
        pitr_interval: Some(Duration::ZERO),
        ..TenantConfig::default()
    };
    let eff = conf.effective();
    assert_eq!(eff.compaction_threshold, 2);
    assert_eq!(eff.pitr_interval, Duration::ZERO);
    assert_eq!(eff.gc_horizon, defaults.gc_horizon);
    let base = EffectiveTenantConfig {
        gc_horizon: 1,
        ..defaults
    };
    assert_eq!(conf.apply_to(&base).gc_horizon, 1);
    assert_eq!(conf.apply_to(&base).compaction_threshold, 2);

    let json = serde_json::to_value(defaults).unwrap();
    assert_eq!(json["checkpoint_timeout"], "10m");
    assert_eq!(json["pitr_interval"], "1day");
    assert_eq!(json["compaction_period"], "20s");
    assert_eq!(
        serde_json::from_value::<EffectiveTenantConfig>(json).unwrap(),
        defaults
    );
}

#[test]
fn validation_rejects_unusable_values() {
    let d = EffectiveTenantConfig::DEFAULT;
    let zero_threshold = EffectiveTenantConfig {
        compaction_threshold: 0,
        ..d
    };
    assert_eq!(
        zero_threshold.validate(),
        Err(TenantConfigError::TooSmall {
            field: "compaction_threshold",
            min: 1,
            value: 0
        })
    );
    let tiny = EffectiveTenantConfig {
        checkpoint_distance: 100,
        ..d
    };
    assert!(tiny.validate().is_err());
    let upper = EffectiveTenantConfig {
        compaction_upper_limit: 5,
        ..d
    };
    assert_eq!(
        upper.validate(),
        Err(TenantConfigError::UpperLimitBelowThreshold {
            upper: 5,
            threshold: 10
        })
    );
    let no_timeout = EffectiveTenantConfig {
        checkpoint_timeout: Duration::ZERO,
        ..d
    };
    assert!(no_timeout.validate().is_err());
}

#[test]
fn tenant_info_shape() {
    let info = TenantInfo {
        id: tenant(),
        state: TenantState::Active,
        current_physical_size: Some(8192),
    };
    assert_eq!(
        serde_json::to_value(&info).unwrap(),
        json!({"id": TENANT, "state": {"slug": "Active"}, "current_physical_size": 8192})
    );
    let broken = TenantInfo {
        state: TenantState::Broken {
            reason: "bad layer".into(),
        },
        current_physical_size: None,
        ..info
    };
    let json = serde_json::to_value(&broken).unwrap();
    assert_eq!(
        json,
        json!({"id": TENANT, "state": {"slug": "Broken", "data": {"reason": "bad layer"}},
               "current_physical_size": null})
    );
    assert_eq!(serde_json::from_value::<TenantInfo>(json).unwrap(), broken);
}

#[test]
fn timeline_create_request_shape_and_mode() {
    let ancestor: TimelineId = "11111111111111111111111111111111".parse().unwrap();
    let req: TimelineCreateRequest = serde_json::from_value(json!({
        "new_timeline_id": TIMELINE,
        "ancestor_timeline_id": "11111111111111111111111111111111",
        "ancestor_start_lsn": "0/16B5A50",
    }))
    .unwrap();
    assert_eq!(
        req.mode(),
        Ok(TimelineCreateMode::Branch {
            ancestor_timeline_id: ancestor,
            ancestor_start_lsn: Some(Lsn(0x16B5A50)),
            pg_version: 15
        })
    );
    assert_eq!(
        serde_json::to_value(&req).unwrap(),
        json!({"new_timeline_id": TIMELINE,
               "ancestor_timeline_id": "11111111111111111111111111111111",
               "ancestor_start_lsn": "0/16B5A50"})
    );
    let bootstrap: TimelineCreateRequest =
        serde_json::from_value(json!({"new_timeline_id": TIMELINE, "pg_version": 15})).unwrap();
    assert_eq!(
        bootstrap.mode(),
        Ok(TimelineCreateMode::Bootstrap { pg_version: 15 })
    );
    let bad = |v| {
        serde_json::from_value::<TimelineCreateRequest>(v)
            .unwrap()
            .mode()
    };
    assert_eq!(
        bad(json!({"new_timeline_id": TIMELINE, "pg_version": 16})),
        Err(TimelineCreateError::UnsupportedPgVersion(16))
    );
    assert_eq!(
        bad(json!({"new_timeline_id": TIMELINE, "ancestor_start_lsn": "0/1"})),
        Err(TimelineCreateError::StartLsnWithoutAncestor)
    );
    assert_eq!(
        bad(json!({"new_timeline_id": TIMELINE, "ancestor_timeline_id": TIMELINE})),
        Err(TimelineCreateError::SelfAncestor)
    );
    assert!(serde_json::from_value::<TimelineCreateRequest>(
        json!({"new_timeline_id": TIMELINE, "read_only": true})
    )
    .is_err());
}

#[test]
fn timeline_info_shape() {
    let info = TimelineInfo {
        tenant_id: tenant(),
        timeline_id: timeline(),
        ancestor_timeline_id: None,
        ancestor_lsn: None,
        last_record_lsn: Lsn(0x16B5A50),
        prev_record_lsn: Some(Lsn(0x16B5A18)),
        disk_consistent_lsn: Lsn(0x1000000),
        initdb_lsn: Lsn(0x16B0000),
        latest_gc_cutoff_lsn: Lsn(0),
        current_logical_size: 123,
        current_physical_size: None,
        pg_version: 15,
        state: TimelineState::Active,
    };
    let json = serde_json::to_value(&info).unwrap();
    assert_eq!(
        json,
        json!({
            "tenant_id": TENANT, "timeline_id": TIMELINE,
            "ancestor_timeline_id": null, "ancestor_lsn": null,
            "last_record_lsn": "0/16B5A50", "prev_record_lsn": "0/16B5A18",
            "disk_consistent_lsn": "0/1000000", "initdb_lsn": "0/16B0000",
            "latest_gc_cutoff_lsn": "0/0",
            "current_logical_size": 123, "current_physical_size": null,
            "pg_version": 15, "state": {"slug": "Active"}
        })
    );
    assert_eq!(serde_json::from_value::<TimelineInfo>(json).unwrap(), info);
}

#[test]
fn small_bodies() {
    assert_eq!(
        serde_json::to_value(StatusResponse { id: 1 }).unwrap(),
        json!({"id": 1})
    );
    assert_eq!(
        serde_json::to_value(HttpErrorBody::new("tenant not found")).unwrap(),
        json!({"msg": "tenant not found"})
    );
    assert_eq!(
        serde_json::to_value(TimelineGcRequest::default()).unwrap(),
        json!({})
    );
    let gc: TimelineGcRequest = serde_json::from_value(json!({"gc_horizon": 0})).unwrap();
    assert_eq!(gc.gc_horizon, Some(0));
    let conf: TenantConfigRequest = serde_json::from_value(
        json!({"tenant_id": TENANT, "config": {"image_creation_threshold": 1}}),
    )
    .unwrap();
    assert_eq!(conf.config.image_creation_threshold, Some(1));
}

#[test]
fn duration_strings() {
    for (text, secs) in [("10m", 600), ("1h 30m", 5400), ("0s", 0), ("7days", 604800)] {
        let d = duration_serde::parse(text).unwrap();
        assert_eq!(d, Duration::from_secs(secs));
        assert_eq!(
            duration_serde::parse(&duration_serde::format(d)).unwrap(),
            d
        );
    }
    assert_eq!(duration_serde::format(Duration::from_secs(600)), "10m");
    assert!(duration_serde::parse("").is_err());
    assert!(duration_serde::parse("10").is_err());
    assert!(duration_serde::parse("101years").is_err());
}

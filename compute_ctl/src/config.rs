//! postgresql.conf, pg_hba.conf and standby.signal of a compute.
//!
//! The settings are computed by [`compute_settings`] (pure: the essentials every compute
//! needs, then the spec's settings, which replace an essential of the same name). They are
//! written after whatever postgresql.conf the basebackup brought, below a marker line, so
//! they win (PostgreSQL takes the last occurrence); a rewrite replaces everything from the
//! marker on.

use std::path::Path;

use anyhow::Context;
use compute_api::spec::{ComputeMode, ComputeSpec};

/// The line that starts compute_ctl's part of postgresql.conf.
pub const SECTION_MARKER: &str =
    "# ---- compute_ctl: generated from the compute spec; the lines below win ----";
/// The one place the preloaded libraries come from (a spec setting may override it).
pub const DEFAULT_SHARED_PRELOAD_LIBRARIES: &str = "neon, neon_rmgr";
/// Authentication of a compute: trust from the local machine only (it listens on 127.0.0.1).
pub const PG_HBA_CONF: &str = "\
# Written by compute_ctl: trust for local connections, including replication.
local   all          all                 trust
host    all          all   127.0.0.1/32  trust
host    all          all   ::1/128       trust
local   replication  all                 trust
host    replication  all   127.0.0.1/32  trust
host    replication  all   ::1/128       trust
";

/// The settings of a compute in file order, names unique (case-insensitively).
pub fn compute_settings(spec: &ComputeSpec) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = Vec::new();
    let mut put = |name: &str, value: String| match out
        .iter_mut()
        .find(|(n, _)| n.eq_ignore_ascii_case(name))
    {
        Some(slot) => slot.1 = value,
        None => out.push((name.to_string(), value)),
    };
    put("listen_addresses", "127.0.0.1".into());
    put("port", spec.pg_port.to_string());
    put(
        "shared_preload_libraries",
        DEFAULT_SHARED_PRELOAD_LIBRARIES.into(),
    );
    put(
        "neon.pageserver_connstring",
        spec.pageserver_connstring.clone(),
    );
    put("neon.tenant_id", spec.tenant_id.to_string());
    put("neon.timeline_id", spec.timeline_id.to_string());
    put("wal_level", "replica".into());
    put("max_wal_senders", "10".into());
    put("max_replication_slots", "10".into());
    put("wal_keep_size", "0".into());
    put("wal_sender_timeout", "10s".into());
    put("restart_after_crash", "off".into());
    put("wal_log_hints", "off".into());
    if let ComputeMode::Static(_) = spec.mode {
        put("hot_standby", "on".into());
    }
    for s in &spec.cluster.settings {
        put(&s.name, s.value.clone());
    }
    out
}

/// A postgresql.conf string literal: `'...'` with `'` doubled and `\` escaped.
pub fn quote_conf_value(v: &str) -> String {
    let mut q = String::with_capacity(v.len() + 2);
    q.push('\'');
    for c in v.chars() {
        match c {
            '\'' => q.push_str("''"),
            '\\' => q.push_str("\\\\"),
            c => q.push(c),
        }
    }
    q.push('\'');
    q
}

/// `existing` (without a previous compute_ctl section), the marker, then `settings`.
pub fn render_postgresql_conf(existing: &str, settings: &[(String, String)]) -> String {
    let base = match existing.find(SECTION_MARKER) {
        Some(at) => &existing[..at],
        None => existing,
    };
    let mut out = base.to_string();
    if !out.is_empty() && !out.ends_with('\n') {
        out.push('\n');
    }
    out.push_str(SECTION_MARKER);
    out.push('\n');
    for (name, value) in settings {
        out.push_str(&format!("{name} = {}\n", quote_conf_value(value)));
    }
    out
}

/// Writes postgresql.conf (keeping the basebackup's lines above ours) durably.
pub fn write_postgresql_conf(pgdata: &Path, spec: &ComputeSpec) -> anyhow::Result<()> {
    let path = pgdata.join("postgresql.conf");
    let existing = match std::fs::read_to_string(&path) {
        Ok(s) => s,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
        Err(e) => return Err(e).with_context(|| format!("read {}", path.display())),
    };
    let text = render_postgresql_conf(&existing, &compute_settings(spec));
    utils::crashsafe::durable_write(&path, text.as_bytes())
        .with_context(|| format!("write {}", path.display()))
}

/// Writes every configuration file of a fresh data directory: postgresql.conf, pg_hba.conf
/// and, for a static compute, standby.signal.
pub fn write_all(pgdata: &Path, spec: &ComputeSpec) -> anyhow::Result<()> {
    write_postgresql_conf(pgdata, spec)?;
    let hba = pgdata.join("pg_hba.conf");
    utils::crashsafe::durable_write(&hba, PG_HBA_CONF.as_bytes())
        .with_context(|| format!("write {}", hba.display()))?;
    if let ComputeMode::Static(_) = spec.mode {
        let sig = pgdata.join("standby.signal");
        utils::crashsafe::durable_write(&sig, b"")
            .with_context(|| format!("write {}", sig.display()))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use compute_api::spec::Setting;
    use utils::lsn::Lsn;

    fn spec() -> ComputeSpec {
        ComputeSpec::parse(
            r#"{"format_version":1,"tenant_id":"0123456789abcdef0123456789abcdef",
            "timeline_id":"fedcba9876543210fedcba9876543210","mode":"primary",
            "pageserver_connstring":"host=127.0.0.1 port=64000","pg_port":55433}"#,
        )
        .unwrap()
    }

    fn get<'a>(s: &'a [(String, String)], name: &str) -> Option<&'a str> {
        s.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str())
    }

    #[test]
    fn essentials() {
        let s = compute_settings(&spec());
        assert_eq!(get(&s, "port"), Some("55433"));
        assert_eq!(get(&s, "listen_addresses"), Some("127.0.0.1"));
        assert_eq!(get(&s, "shared_preload_libraries"), Some("neon, neon_rmgr"));
        assert_eq!(
            get(&s, "neon.pageserver_connstring"),
            Some("host=127.0.0.1 port=64000")
        );
        assert_eq!(
            get(&s, "neon.tenant_id"),
            Some("0123456789abcdef0123456789abcdef")
        );
        assert_eq!(
            get(&s, "neon.timeline_id"),
            Some("fedcba9876543210fedcba9876543210")
        );
        for (k, v) in [
            ("wal_level", "replica"),
            ("max_wal_senders", "10"),
            ("max_replication_slots", "10"),
            ("wal_keep_size", "0"),
            ("wal_sender_timeout", "10s"),
            ("restart_after_crash", "off"),
            ("wal_log_hints", "off"),
        ] {
            assert_eq!(get(&s, k), Some(v), "{k}");
        }
        assert_eq!(get(&s, "hot_standby"), None);
        let mut st = spec();
        st.mode = ComputeMode::Static(Lsn(0x100));
        assert_eq!(get(&compute_settings(&st), "hot_standby"), Some("on"));
    }

    #[test]
    fn spec_settings_win_without_duplicates() {
        let mut sp = spec();
        sp.cluster.settings = vec![
            Setting {
                name: "Shared_Preload_Libraries".into(),
                value: "".into(),
            },
            Setting {
                name: "work_mem".into(),
                value: "4MB".into(),
            },
        ];
        let s = compute_settings(&sp);
        let spl: Vec<_> = s
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case("shared_preload_libraries"))
            .collect();
        assert_eq!(spl.len(), 1);
        assert_eq!(spl[0].1, "");
        assert_eq!(
            s.last().unwrap(),
            &("work_mem".to_string(), "4MB".to_string())
        );
    }

    #[test]
    fn quoting() {
        assert_eq!(quote_conf_value("a"), "'a'");
        assert_eq!(quote_conf_value("it's"), "'it''s'");
        assert_eq!(quote_conf_value("c:\\x"), "'c:\\\\x'");
        assert_eq!(quote_conf_value(""), "''");
    }

    #[test]
    fn rewrite_keeps_base_and_replaces_our_section() {
        let settings = vec![("port".to_string(), "1".to_string())];
        let first = render_postgresql_conf("max_connections = 10", &settings);
        assert!(first.starts_with("max_connections = 10\n"));
        assert!(first.ends_with(&format!("{SECTION_MARKER}\nport = '1'\n")));
        let settings2 = vec![("port".to_string(), "2".to_string())];
        let second = render_postgresql_conf(&first, &settings2);
        assert_eq!(
            second,
            format!("max_connections = 10\n{SECTION_MARKER}\nport = '2'\n")
        );
        assert_eq!(
            render_postgresql_conf("", &[]),
            format!("{SECTION_MARKER}\n")
        );
    }

    #[test]
    fn writes_files() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("postgresql.conf"), "# from the backup\n").unwrap();
        let mut sp = spec();
        write_all(dir.path(), &sp).unwrap();
        let conf = std::fs::read_to_string(dir.path().join("postgresql.conf")).unwrap();
        assert!(conf.starts_with("# from the backup\n"));
        assert!(conf.contains("port = '55433'\n"));
        assert!(!dir.path().join("standby.signal").exists());
        let hba = std::fs::read_to_string(dir.path().join("pg_hba.conf")).unwrap();
        assert!(hba.contains("host    replication  all   127.0.0.1/32  trust"));
        sp.mode = ComputeMode::Static(Lsn(0x100));
        write_all(dir.path(), &sp).unwrap();
        assert!(dir.path().join("standby.signal").exists());
        let conf = std::fs::read_to_string(dir.path().join("postgresql.conf")).unwrap();
        assert_eq!(conf.matches(SECTION_MARKER).count(), 1);
        assert!(conf.contains("hot_standby = 'on'\n"));
    }
}

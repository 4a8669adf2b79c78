//! The compute spec (JSON, `format_version` 1):
//!
//! ```json
//! {
//!   "format_version": 1,
//!   "tenant_id": "<32 hex>", "timeline_id": "<32 hex>",
//!   "mode": "primary",                       // or {"static": "0/16B5A50"}
//!   "pageserver_connstring": "host=127.0.0.1 port=64000",
//!   "pg_port": 55432,
//!   "cluster": {
//!     "roles": [{"name": "alice", "password": null}],
//!     "databases": [{"name": "app", "owner": "alice"}],
//!     "settings": [{"name": "shared_buffers", "value": "1MB"}]
//!   }
//! }
//! ```
//!
//! [`ComputeSpec::parse`] parses and validates; every check has its own [`SpecError`].

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};
use utils::id::{TenantId, TimelineId};
use utils::lsn::Lsn;

use crate::connstring::{Connstring, ConnstringError};

/// The only spec format this crate reads and writes.
pub const SPEC_FORMAT_VERSION: u32 = 1;
/// The superuser compute_ctl connects as (created by initdb on the pageserver).
pub const SUPERUSER: &str = "cloud_admin";
/// Longest role, database or setting name (PostgreSQL's NAMEDATALEN - 1).
pub const MAX_NAME_BYTES: usize = 63;
/// Longest setting value or password.
pub const MAX_VALUE_BYTES: usize = 8192;
/// Most roles, databases or settings in one spec.
pub const MAX_CLUSTER_ITEMS: usize = 10_000;
/// Longest spec document accepted.
pub const MAX_SPEC_BYTES: usize = 16 * 1024 * 1024;
/// Settings compute_ctl derives from the spec itself; a spec may not set them directly.
pub const RESERVED_SETTINGS: &[&str] = &[
    "port",
    "listen_addresses",
    "neon.pageserver_connstring",
    "neon.tenant_id",
    "neon.timeline_id",
];
/// Databases that exist in every cluster and must not be created, altered or owned.
pub const RESERVED_DATABASES: &[&str] = &["template0", "template1"];

/// What a compute is asked to run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ComputeSpec {
    pub format_version: u32,
    pub tenant_id: TenantId,
    pub timeline_id: TimelineId,
    pub mode: ComputeMode,
    /// libpq connection string of the pageserver's page service.
    pub pageserver_connstring: String,
    /// The port PostgreSQL listens on (127.0.0.1).
    pub pg_port: u16,
    #[serde(default)]
    pub cluster: Cluster,
}

/// Read-write primary, or read-only at a fixed LSN.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ComputeMode {
    /// Read-write at the end of the timeline.
    Primary,
    /// Read-only hot standby at this LSN, receiving no WAL.
    Static(Lsn),
}

/// Roles, databases and settings of the cluster.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Cluster {
    #[serde(default)]
    pub roles: Vec<Role>,
    #[serde(default)]
    pub databases: Vec<Database>,
    #[serde(default)]
    pub settings: Vec<Setting>,
}

/// A login role; with a password, it is set (cleartext given here, hashed by PostgreSQL).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Role {
    pub name: String,
    #[serde(default)]
    pub password: Option<String>,
}

/// A database and its owner (a role of the spec, or `cloud_admin`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Database {
    pub name: String,
    pub owner: String,
}

/// One postgresql.conf setting; it overrides compute_ctl's defaults of the same name.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Setting {
    pub name: String,
    pub value: String,
}

/// Why a spec was refused.
#[derive(Debug, thiserror::Error)]
pub enum SpecError {
    #[error("spec is longer than {MAX_SPEC_BYTES} bytes")]
    TooLarge,
    #[error("spec is not valid JSON for a compute spec: {0}")]
    Json(#[from] serde_json::Error),
    #[error("unsupported format_version {0} (this compute_ctl reads {SPEC_FORMAT_VERSION})")]
    FormatVersion(u32),
    #[error("pg_port must not be 0")]
    PgPort,
    #[error("static mode needs a valid LSN, got {0}")]
    StaticLsn(Lsn),
    #[error("pageserver_connstring: {0}")]
    PageserverConnstring(#[from] ConnstringError),
    #[error("{what} name {name:?}: {why}")]
    BadName {
        what: &'static str,
        name: String,
        why: &'static str,
    },
    #[error("{what} {name:?} appears twice")]
    Duplicate { what: &'static str, name: String },
    #[error("more than {MAX_CLUSTER_ITEMS} {0}")]
    TooMany(&'static str),
    #[error("role {0:?} is reserved")]
    ReservedRole(String),
    #[error("database {0:?} is reserved")]
    ReservedDatabase(String),
    #[error("database {database:?} is owned by {owner:?}, which is neither a role of the spec nor {SUPERUSER}")]
    UnknownOwner { database: String, owner: String },
    #[error("setting {0:?} is derived from the spec and cannot be set directly")]
    ReservedSetting(String),
    #[error("value of {what} {name:?}: {why}")]
    BadValue {
        what: &'static str,
        name: String,
        why: &'static str,
    },
}

/// Why a new spec cannot replace the running one (`POST /configure`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReconfigureError {
    #[error("{field} cannot change on a running compute ({old} -> {new})")]
    Immutable {
        field: &'static str,
        old: String,
        new: String,
    },
}

impl ComputeSpec {
    /// Parses a JSON document and validates it.
    pub fn parse(json: &str) -> Result<ComputeSpec, SpecError> {
        if json.len() > MAX_SPEC_BYTES {
            return Err(SpecError::TooLarge);
        }
        let spec: ComputeSpec = serde_json::from_str(json)?;
        spec.validate()?;
        Ok(spec)
    }

    /// The spec as pretty JSON.
    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).expect("a spec always serializes")
    }

    /// Checks everything serde cannot.
    pub fn validate(&self) -> Result<(), SpecError> {
        if self.format_version != SPEC_FORMAT_VERSION {
            return Err(SpecError::FormatVersion(self.format_version));
        }
        if self.pg_port == 0 {
            return Err(SpecError::PgPort);
        }
        if let ComputeMode::Static(lsn) = self.mode {
            if !lsn.is_valid() {
                return Err(SpecError::StaticLsn(lsn));
            }
        }
        self.pageserver()?;
        self.cluster.validate()
    }

    /// The parsed `pageserver_connstring`.
    pub fn pageserver(&self) -> Result<Connstring, ConnstringError> {
        Connstring::parse(&self.pageserver_connstring)
    }

    /// Whether `new` may replace `self` on a running compute: same tenant, timeline, mode,
    /// port and pageserver.
    pub fn check_reconfigure(&self, new: &ComputeSpec) -> Result<(), ReconfigureError> {
        fn same<T: PartialEq + std::fmt::Debug>(
            field: &'static str,
            old: &T,
            new: &T,
        ) -> Result<(), ReconfigureError> {
            if old == new {
                return Ok(());
            }
            Err(ReconfigureError::Immutable {
                field,
                old: format!("{old:?}"),
                new: format!("{new:?}"),
            })
        }
        same("tenant_id", &self.tenant_id, &new.tenant_id)?;
        same("timeline_id", &self.timeline_id, &new.timeline_id)?;
        same("mode", &self.mode, &new.mode)?;
        same("pg_port", &self.pg_port, &new.pg_port)?;
        same(
            "pageserver_connstring",
            &self.pageserver_connstring,
            &new.pageserver_connstring,
        )
    }
}

impl Cluster {
    fn validate(&self) -> Result<(), SpecError> {
        for (what, n) in [
            ("roles", self.roles.len()),
            ("databases", self.databases.len()),
            ("settings", self.settings.len()),
        ] {
            if n > MAX_CLUSTER_ITEMS {
                return Err(SpecError::TooMany(what));
            }
        }
        let mut roles = BTreeSet::new();
        for r in &self.roles {
            check_name("role", &r.name)?;
            if r.name == SUPERUSER || r.name.starts_with("pg_") {
                return Err(SpecError::ReservedRole(r.name.clone()));
            }
            if let Some(pw) = &r.password {
                check_value("role password", &r.name, pw)?;
            }
            if !roles.insert(r.name.as_str()) {
                return Err(dup("role", &r.name));
            }
        }
        let mut dbs = BTreeSet::new();
        for d in &self.databases {
            check_name("database", &d.name)?;
            if RESERVED_DATABASES.contains(&d.name.as_str()) {
                return Err(SpecError::ReservedDatabase(d.name.clone()));
            }
            if d.owner != SUPERUSER && !roles.contains(d.owner.as_str()) {
                return Err(SpecError::UnknownOwner {
                    database: d.name.clone(),
                    owner: d.owner.clone(),
                });
            }
            if !dbs.insert(d.name.as_str()) {
                return Err(dup("database", &d.name));
            }
        }
        let mut settings = BTreeSet::new();
        for s in &self.settings {
            check_setting_name(&s.name)?;
            if RESERVED_SETTINGS.contains(&s.name.to_ascii_lowercase().as_str()) {
                return Err(SpecError::ReservedSetting(s.name.clone()));
            }
            check_value("setting", &s.name, &s.value)?;
            if !settings.insert(s.name.to_ascii_lowercase()) {
                return Err(dup("setting", &s.name));
            }
        }
        Ok(())
    }
}

fn dup(what: &'static str, name: &str) -> SpecError {
    SpecError::Duplicate {
        what,
        name: name.to_string(),
    }
}

/// Role and database names: any characters PostgreSQL allows in a quoted identifier.
fn check_name(what: &'static str, name: &str) -> Result<(), SpecError> {
    let why = if name.is_empty() {
        "empty"
    } else if name.len() > MAX_NAME_BYTES {
        "longer than 63 bytes"
    } else if name.contains('\0') {
        "contains a NUL character"
    } else {
        return Ok(());
    };
    Err(SpecError::BadName {
        what,
        name: name.to_string(),
        why,
    })
}

/// Setting names: a letter or `_`, then letters, digits, `_`, `$` or `.` (custom classes).
fn check_setting_name(name: &str) -> Result<(), SpecError> {
    let mut chars = name.chars();
    let first_ok = chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_');
    let rest_ok = chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '$'));
    if first_ok && rest_ok && name.len() <= MAX_NAME_BYTES {
        return Ok(());
    }
    Err(SpecError::BadName {
        what: "setting",
        name: name.to_string(),
        why: "not a configuration parameter name",
    })
}

/// Values end up in postgresql.conf or SQL literals: one line, no NUL, bounded.
fn check_value(what: &'static str, name: &str, value: &str) -> Result<(), SpecError> {
    let why = if value.len() > MAX_VALUE_BYTES {
        "longer than 8192 bytes"
    } else if value.contains(['\0', '\n', '\r']) {
        "contains a NUL or line break"
    } else {
        return Ok(());
    };
    Err(SpecError::BadValue {
        what,
        name: name.to_string(),
        why,
    })
}

#[cfg(test)]
mod tests;

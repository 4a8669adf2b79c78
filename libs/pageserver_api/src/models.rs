//! JSON bodies of the pageserver's management HTTP API.
//!
//! Conventions: ids are 32 lowercase hex characters, LSNs are strings like `"0/16B5A50"`,
//! sizes are byte counts (JSON numbers), and durations are humantime strings (`"10m"`,
//! `"1h 30m"`, `"20s"`, `"0s"`; written in the shortest form, e.g. `"10m"`). Requests reject
//! unknown fields.

use serde::{Deserialize, Serialize};
use utils::id::{TenantId, TimelineId};
use utils::lsn::Lsn;

pub mod duration_serde;
mod tenant_config;
mod wal_source;

pub use tenant_config::{EffectiveTenantConfig, TenantConfig, TenantConfigError};
pub use wal_source::{WalReceiverStatus, WalSourceRequest, DEFAULT_WAL_SOURCE_SLOT};

/// `POST /v1/tenant`: create a tenant. `config` may be omitted (all defaults).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TenantCreateRequest {
    pub new_tenant_id: TenantId,
    #[serde(default)]
    pub config: TenantConfig,
}

/// `PUT /v1/tenant/config`: replace a tenant's configuration overrides.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TenantConfigRequest {
    pub tenant_id: TenantId,
    #[serde(default)]
    pub config: TenantConfig,
}

/// Lifecycle of a tenant. JSON: `{"slug": "Active"}`, `{"slug": "Broken", "data": {"reason":
/// "..."}}`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "slug", content = "data")]
pub enum TenantState {
    /// Reading its timelines from disk.
    Loading,
    /// Serving requests.
    Active,
    /// Shutting down or being deleted.
    Stopping,
    /// Failed to load or hit an unrecoverable error; serves nothing.
    Broken { reason: String },
}

/// `GET /v1/tenant` (a list) and `GET /v1/tenant/:tenant_id`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TenantInfo {
    pub id: TenantId,
    pub state: TenantState,
    /// Bytes of layer files on local disk, if known.
    #[serde(default)]
    pub current_physical_size: Option<u64>,
}

/// `POST /v1/tenant/:tenant_id/timeline`: create a timeline. With `ancestor_timeline_id` it
/// branches from that timeline at `ancestor_start_lsn` (default: the ancestor's last record
/// LSN); without, it bootstraps a new cluster with initdb.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TimelineCreateRequest {
    pub new_timeline_id: TimelineId,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ancestor_timeline_id: Option<TimelineId>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ancestor_start_lsn: Option<Lsn>,
    /// PostgreSQL major version; only 15 is supported (the default).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pg_version: Option<u32>,
}

/// How a timeline is to be created (see [`TimelineCreateRequest::mode`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TimelineCreateMode {
    /// Run initdb and import the new cluster.
    Bootstrap { pg_version: u32 },
    /// Branch from an existing timeline.
    Branch {
        ancestor_timeline_id: TimelineId,
        ancestor_start_lsn: Option<Lsn>,
        pg_version: u32,
    },
}

/// PostgreSQL major version timelines get when the request names none.
pub const DEFAULT_PG_VERSION: u32 = 15;

/// Why a timeline creation request is invalid.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TimelineCreateError {
    #[error("ancestor_start_lsn given without ancestor_timeline_id")]
    StartLsnWithoutAncestor,
    #[error("PostgreSQL version {0} is not supported (only 15)")]
    UnsupportedPgVersion(u32),
    #[error("a timeline cannot be its own ancestor")]
    SelfAncestor,
}

impl TimelineCreateRequest {
    /// Checks the request and says what it asks for.
    pub fn mode(&self) -> Result<TimelineCreateMode, TimelineCreateError> {
        let pg_version = self.pg_version.unwrap_or(DEFAULT_PG_VERSION);
        if pg_version != DEFAULT_PG_VERSION {
            return Err(TimelineCreateError::UnsupportedPgVersion(pg_version));
        }
        match (self.ancestor_timeline_id, self.ancestor_start_lsn) {
            (None, Some(_)) => Err(TimelineCreateError::StartLsnWithoutAncestor),
            (None, None) => Ok(TimelineCreateMode::Bootstrap { pg_version }),
            (Some(ancestor), _) if ancestor == self.new_timeline_id => {
                Err(TimelineCreateError::SelfAncestor)
            }
            (Some(ancestor_timeline_id), ancestor_start_lsn) => Ok(TimelineCreateMode::Branch {
                ancestor_timeline_id,
                ancestor_start_lsn,
                pg_version,
            }),
        }
    }
}

/// Lifecycle of a timeline; same JSON shape as [`TenantState`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "slug", content = "data")]
pub enum TimelineState {
    Loading,
    Active,
    Stopping,
    Broken { reason: String },
}

/// `GET /v1/tenant/:tenant_id/timeline[/:timeline_id]` and the response to creation.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TimelineInfo {
    pub tenant_id: TenantId,
    pub timeline_id: TimelineId,
    /// `null` for a timeline without ancestor.
    #[serde(default)]
    pub ancestor_timeline_id: Option<TimelineId>,
    /// The branch point in the ancestor; `null` without ancestor.
    #[serde(default)]
    pub ancestor_lsn: Option<Lsn>,
    /// End of the last WAL record ingested.
    pub last_record_lsn: Lsn,
    /// Start of the last WAL record ingested, if known.
    #[serde(default)]
    pub prev_record_lsn: Option<Lsn>,
    /// Everything up to here is in layer files on disk.
    pub disk_consistent_lsn: Lsn,
    /// LSN of the initdb import (of the root ancestor for branches).
    pub initdb_lsn: Lsn,
    /// Versions older than this may have been garbage collected.
    pub latest_gc_cutoff_lsn: Lsn,
    /// Sum of the sizes of all relations at `last_record_lsn`, in bytes.
    pub current_logical_size: u64,
    /// Bytes of this timeline's layer files on local disk, if known.
    #[serde(default)]
    pub current_physical_size: Option<u64>,
    pub pg_version: u32,
    pub state: TimelineState,
}

/// `PUT /v1/tenant/:tenant_id/timeline/:timeline_id/do_gc`: run garbage collection now,
/// optionally with another horizon than the tenant's `gc_horizon` (bytes of WAL).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TimelineGcRequest {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gc_horizon: Option<u64>,
}

/// `GET /v1/status`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatusResponse {
    /// The pageserver's node id.
    pub id: u64,
}

/// Body of every error response (4xx and 5xx).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct HttpErrorBody {
    pub msg: String,
}

impl HttpErrorBody {
    pub fn new(msg: impl Into<String>) -> HttpErrorBody {
        HttpErrorBody { msg: msg.into() }
    }
}

#[cfg(test)]
mod tests;

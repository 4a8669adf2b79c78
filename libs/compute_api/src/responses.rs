//! Bodies of compute_ctl's HTTP API (127.0.0.1:<http-port>):
//!
//! - `GET /status` → [`ComputeStatusResponse`];
//! - `POST /configure` (body: a [`crate::spec::ComputeSpec`]) → [`ComputeStatusResponse`];
//! - `POST /terminate?mode=fast|immediate` → [`ComputeStatusResponse`] once PostgreSQL exited;
//! - `GET /metrics` → Prometheus text;
//! - errors → [`GenericError`] with a 4xx/5xx code.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use utils::id::{TenantId, TimelineId};
use utils::lsn::Lsn;

/// Lifecycle of a compute, as `compute_ctl` sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ComputeStatus {
    /// No spec yet (not used by the CLI, which always has one).
    Empty,
    /// Preparing the data directory, starting PostgreSQL, applying the spec.
    Init,
    /// PostgreSQL accepts connections and the spec is applied.
    Running,
    /// Startup failed or PostgreSQL exited unexpectedly; see `error`.
    Failed,
    /// A shutdown was requested and PostgreSQL is stopping.
    Terminating,
    /// PostgreSQL has exited after a requested shutdown.
    Terminated,
}

impl ComputeStatus {
    /// Every status, in lifecycle order (for metrics).
    pub const ALL: [ComputeStatus; 6] = [
        ComputeStatus::Empty,
        ComputeStatus::Init,
        ComputeStatus::Running,
        ComputeStatus::Failed,
        ComputeStatus::Terminating,
        ComputeStatus::Terminated,
    ];

    /// The lowercase name used in JSON and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            ComputeStatus::Empty => "empty",
            ComputeStatus::Init => "init",
            ComputeStatus::Running => "running",
            ComputeStatus::Failed => "failed",
            ComputeStatus::Terminating => "terminating",
            ComputeStatus::Terminated => "terminated",
        }
    }
}

impl fmt::Display for ComputeStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// `GET /status`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ComputeStatusResponse {
    pub status: ComputeStatus,
    /// Why the compute failed (with the tail of PostgreSQL's log when it exited).
    pub error: Option<String>,
    pub tenant_id: TenantId,
    pub timeline_id: TimelineId,
    /// `"primary"` or `"static"`.
    pub mode: String,
    pub pg_port: u16,
    /// Milliseconds from compute_ctl's start to PostgreSQL's first accepted connection.
    pub start_time_ms: Option<u64>,
    /// The LSN the data directory was prepared at (the basebackup's start point).
    pub basebackup_lsn: Option<Lsn>,
    /// PID of the postmaster while it runs.
    pub postmaster_pid: Option<i32>,
    /// Settings changed by the last `/configure` that need a restart to take effect.
    #[serde(default)]
    pub pending_restart: Vec<String>,
}

/// How `/terminate` stops PostgreSQL.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TerminateMode {
    /// SIGINT to the postmaster: roll back sessions, checkpoint, exit.
    #[default]
    Fast,
    /// SIGQUIT: exit at once, crash recovery at the next start.
    Immediate,
}

impl FromStr for TerminateMode {
    type Err = String;
    fn from_str(s: &str) -> Result<TerminateMode, String> {
        match s {
            "fast" => Ok(TerminateMode::Fast),
            "immediate" => Ok(TerminateMode::Immediate),
            other => Err(format!(
                "unknown terminate mode {other:?} (fast or immediate)"
            )),
        }
    }
}

/// Body of every error answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GenericError {
    pub error: String,
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn status_json() {
        let r = ComputeStatusResponse {
            status: ComputeStatus::Running,
            error: None,
            tenant_id: TenantId([1; 16]),
            timeline_id: TimelineId([2; 16]),
            mode: "primary".into(),
            pg_port: 55432,
            start_time_ms: Some(812),
            basebackup_lsn: Some(Lsn(0x16B5A50)),
            postmaster_pid: Some(42),
            pending_restart: vec![],
        };
        let v = serde_json::to_value(&r).unwrap();
        assert_eq!(v["status"], "running");
        assert_eq!(v["error"], json!(null));
        assert_eq!(v["basebackup_lsn"], "0/16B5A50");
        assert_eq!(v["start_time_ms"], 812);
        let back: ComputeStatusResponse = serde_json::from_value(v).unwrap();
        assert_eq!(back, r);
        for s in ComputeStatus::ALL {
            assert_eq!(serde_json::to_value(s).unwrap(), json!(s.as_str()));
        }
    }

    #[test]
    fn terminate_mode() {
        assert_eq!("fast".parse(), Ok(TerminateMode::Fast));
        assert_eq!("immediate".parse(), Ok(TerminateMode::Immediate));
        assert!("smart".parse::<TerminateMode>().is_err());
        assert_eq!(TerminateMode::default(), TerminateMode::Fast);
    }
}

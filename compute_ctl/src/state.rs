//! The state shared by the startup sequence, the supervisor and the HTTP API: the status,
//! the current spec, the postmaster's PID, timings and counters, and the Prometheus text.

use std::fmt::Write as _;
use std::sync::Mutex;
use std::time::Instant;

use compute_api::responses::{ComputeStatus, ComputeStatusResponse};
use compute_api::spec::{ComputeMode, ComputeSpec};
use utils::lsn::Lsn;

/// Everything that changes while compute_ctl runs (behind [`Shared::inner`]).
#[derive(Debug)]
pub struct Inner {
    pub status: ComputeStatus,
    pub error: Option<String>,
    pub spec: ComputeSpec,
    pub postmaster_pid: Option<i32>,
    pub start_time_ms: Option<u64>,
    pub basebackup_lsn: Option<Lsn>,
    pub basebackup_bytes: u64,
    pub basebackup_ms: Option<u64>,
    pub basebackup_attempts: u32,
    pub configure_count: u64,
    pub pending_restart: Vec<String>,
}

/// Shared by every task; cheap to lock (never held across an await).
#[derive(Debug)]
pub struct Shared {
    pub started_at: Instant,
    inner: Mutex<Inner>,
    changed: tokio::sync::watch::Sender<ComputeStatus>,
}

impl Shared {
    pub fn new(spec: ComputeSpec, started_at: Instant) -> Shared {
        let (changed, _) = tokio::sync::watch::channel(ComputeStatus::Init);
        Shared {
            started_at,
            inner: Mutex::new(Inner {
                status: ComputeStatus::Init,
                error: None,
                spec,
                postmaster_pid: None,
                start_time_ms: None,
                basebackup_lsn: None,
                basebackup_bytes: 0,
                basebackup_ms: None,
                basebackup_attempts: 0,
                configure_count: 0,
                pending_restart: Vec::new(),
            }),
            changed,
        }
    }

    /// Runs `f` with the state locked.
    pub fn with<R>(&self, f: impl FnOnce(&mut Inner) -> R) -> R {
        let mut g = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        f(&mut g)
    }

    pub fn status(&self) -> ComputeStatus {
        self.with(|i| i.status)
    }

    /// Sets the status (and error) and wakes status watchers.
    pub fn set_status(&self, status: ComputeStatus, error: Option<String>) {
        self.with(|i| {
            i.status = status;
            i.error = error;
        });
        tracing::info!("compute status: {status}");
        self.changed.send_replace(status);
    }

    /// A receiver that sees every later status change.
    pub fn subscribe(&self) -> tokio::sync::watch::Receiver<ComputeStatus> {
        self.changed.subscribe()
    }

    /// Milliseconds since compute_ctl started.
    pub fn elapsed_ms(&self) -> u64 {
        u64::try_from(self.started_at.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    /// The `GET /status` body.
    pub fn response(&self) -> ComputeStatusResponse {
        self.with(|i| ComputeStatusResponse {
            status: i.status,
            error: i.error.clone(),
            tenant_id: i.spec.tenant_id,
            timeline_id: i.spec.timeline_id,
            mode: mode_name(i.spec.mode).to_string(),
            pg_port: i.spec.pg_port,
            start_time_ms: i.start_time_ms,
            basebackup_lsn: i.basebackup_lsn,
            postmaster_pid: i.postmaster_pid,
            pending_restart: i.pending_restart.clone(),
        })
    }

    /// The `GET /metrics` body.
    pub fn metrics(&self) -> String {
        self.with(|i| render_metrics(i))
    }
}

/// `"primary"` or `"static"`.
pub fn mode_name(mode: ComputeMode) -> &'static str {
    match mode {
        ComputeMode::Primary => "primary",
        ComputeMode::Static(_) => "static",
    }
}

/// Prometheus text exposition of the state.
pub fn render_metrics(i: &Inner) -> String {
    let mut out = String::new();
    let mut gauge = |name: &str, help: &str, samples: &[(String, u64)]| {
        let _ = writeln!(out, "# HELP {name} {help}");
        let _ = writeln!(out, "# TYPE {name} gauge");
        for (labels, v) in samples {
            let _ = writeln!(out, "{name}{labels} {v}");
        }
    };
    let status: Vec<(String, u64)> = ComputeStatus::ALL
        .iter()
        .map(|s| (format!("{{status=\"{s}\"}}"), u64::from(*s == i.status)))
        .collect();
    gauge(
        "compute_ctl_status",
        "1 for the current status of the compute.",
        &status,
    );
    let one = |v: Option<u64>| v.map(|v| vec![(String::new(), v)]).unwrap_or_default();
    gauge(
        "compute_ctl_start_time_ms",
        "Milliseconds from compute_ctl start to the first accepted connection.",
        &one(i.start_time_ms),
    );
    gauge(
        "compute_ctl_basebackup_bytes",
        "Bytes of basebackup stream received (compressed).",
        &one(Some(i.basebackup_bytes)),
    );
    gauge(
        "compute_ctl_basebackup_ms",
        "Milliseconds the successful basebackup fetch and unpack took.",
        &one(i.basebackup_ms),
    );
    gauge(
        "compute_ctl_basebackup_attempts",
        "Basebackup fetch attempts made.",
        &one(Some(u64::from(i.basebackup_attempts))),
    );
    gauge(
        "compute_ctl_postgres_up",
        "1 while PostgreSQL is running and accepting connections.",
        &one(Some(u64::from(
            i.status == ComputeStatus::Running && i.postmaster_pid.is_some(),
        ))),
    );
    gauge(
        "compute_ctl_configure_total",
        "Successful POST /configure requests.",
        &one(Some(i.configure_count)),
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> ComputeSpec {
        ComputeSpec::parse(
            r#"{"format_version":1,"tenant_id":"0123456789abcdef0123456789abcdef",
            "timeline_id":"0123456789abcdef0123456789abcdef","mode":"primary",
            "pageserver_connstring":"host=127.0.0.1 port=64000","pg_port":55432}"#,
        )
        .unwrap()
    }

    #[test]
    fn metrics_follow_the_state() {
        let s = Shared::new(spec(), Instant::now());
        let m = s.metrics();
        assert!(m.contains("compute_ctl_status{status=\"init\"} 1\n"), "{m}");
        assert!(m.contains("compute_ctl_status{status=\"running\"} 0\n"));
        assert!(m.contains("compute_ctl_postgres_up 0\n"));
        assert!(!m.contains("\ncompute_ctl_start_time_ms "), "{m}");
        s.with(|i| {
            i.start_time_ms = Some(1234);
            i.postmaster_pid = Some(7);
            i.basebackup_bytes = 99;
        });
        s.set_status(ComputeStatus::Running, None);
        let m = s.metrics();
        assert!(
            m.contains("compute_ctl_status{status=\"running\"} 1\n"),
            "{m}"
        );
        assert!(m.contains("compute_ctl_start_time_ms 1234\n"));
        assert!(m.contains("compute_ctl_basebackup_bytes 99\n"));
        assert!(m.contains("compute_ctl_postgres_up 1\n"));
        let r = s.response();
        assert_eq!(r.status, ComputeStatus::Running);
        assert_eq!(r.mode, "primary");
        assert_eq!(r.start_time_ms, Some(1234));
    }
}

//! The compute's lifecycle: startup (basebackup, configuration, postmaster, spec applied),
//! supervision of the postmaster, `/configure` and `/terminate`.
//!
//! Status transitions: init → running | failed; running → failed (postmaster died);
//! any → terminating → terminated (requested shutdown). The postmaster is only started while
//! the status is `init` (checked under the same lock that publishes its PID), so a shutdown
//! requested during startup never leaves a PostgreSQL behind.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context};
use compute_api::responses::{ComputeStatus, ComputeStatusResponse, TerminateMode};
use compute_api::spec::{ComputeMode, ComputeSpec};
use nix::sys::signal::Signal;
use tokio_util::sync::CancellationToken;

use crate::basebackup::{self, BackupRequest, RetryPolicy};
use crate::pgdata::{self, OsUser};
use crate::postgres::{self, Postmaster};
use crate::state::Shared;
use crate::{apply, config};

/// After a fast or immediate shutdown signal, how long before escalating.
const ESCALATE_AFTER: Duration = Duration::from_secs(10);
/// How long a configuration reload may take to reach new backends.
const RELOAD_TIMEOUT: Duration = Duration::from_secs(10);
const RELOAD_POLL_INTERVAL: Duration = Duration::from_millis(20);

/// Fixed parameters from the command line.
#[derive(Debug, Clone)]
pub struct Params {
    pub pgdata: PathBuf,
    pub pg_install: PathBuf,
    pub os_user: OsUser,
    /// Fetch a `fullbackup` (all relation data) instead of `basebackup --gzip`.
    pub full_backup: bool,
    /// Deadline for PostgreSQL to accept connections after it was started.
    pub start_timeout: Duration,
    /// Deadline for PostgreSQL to exit after the shutdown signal, before escalating.
    pub stop_timeout: Duration,
}

/// An error answer of the API: HTTP status code and message.
#[derive(Debug)]
pub struct ApiError {
    pub code: u16,
    pub message: String,
}

impl ApiError {
    fn new(code: u16, message: impl Into<String>) -> ApiError {
        ApiError {
            code,
            message: message.into(),
        }
    }
}

/// One compute.
pub struct Compute {
    pub params: Params,
    pub state: Shared,
    postmaster: Mutex<Option<Postmaster>>,
    /// Serializes `/configure` requests.
    configuring: tokio::sync::Mutex<()>,
    /// Cancelled when compute_ctl should exit (after a terminate).
    pub exit: CancellationToken,
    /// Cancelled to abandon a startup in progress.
    startup_cancel: CancellationToken,
}

impl Compute {
    pub fn new(params: Params, spec: ComputeSpec, started_at: Instant) -> Compute {
        Compute {
            params,
            state: Shared::new(spec, started_at),
            postmaster: Mutex::new(None),
            configuring: tokio::sync::Mutex::new(()),
            exit: CancellationToken::new(),
            startup_cancel: CancellationToken::new(),
        }
    }

    fn postmaster(&self) -> Option<Postmaster> {
        self.postmaster
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Runs the startup sequence; a failure makes the status `failed`.
    pub async fn startup(self: Arc<Self>) {
        if let Err(e) = self.try_startup().await {
            let failed = self.state.with(|i| i.status == ComputeStatus::Init);
            if failed {
                tracing::error!("startup failed: {e:#}");
                self.state
                    .set_status(ComputeStatus::Failed, Some(format!("{e:#}")));
            } else {
                tracing::info!("startup abandoned: {e:#}");
            }
        }
    }

    async fn try_startup(self: &Arc<Self>) -> anyhow::Result<()> {
        let spec = self.state.with(|i| i.spec.clone());
        self.prepare_pgdata(&spec).await?;
        let pm = self.start_postmaster()?;
        tokio::spawn(self.clone().supervise(pm.clone()));
        let client = pm
            .wait_ready(spec.pg_port, self.params.start_timeout)
            .await?;
        let ms = self.state.elapsed_ms();
        self.state.with(|i| i.start_time_ms = Some(ms));
        tracing::info!("postgres accepts connections, {ms} ms after compute_ctl started");
        if spec.mode == ComputeMode::Primary {
            let n = apply::apply_cluster(&client, &spec.cluster).await?;
            tracing::info!("applied the spec's roles and databases ({n} statements)");
            if apply::ensure_pageserver_slot(&client).await? {
                tracing::info!("created replication slot {:?}", apply::PAGESERVER_SLOT);
            }
        } else if !spec.cluster.roles.is_empty() || !spec.cluster.databases.is_empty() {
            tracing::warn!("static compute: the spec's roles and databases are not applied");
        }
        let became_running = self.state.with(|i| {
            let ok = i.status == ComputeStatus::Init;
            if ok {
                i.status = ComputeStatus::Running;
            }
            ok
        });
        if !became_running {
            bail!("status changed during startup");
        }
        self.state.set_status(ComputeStatus::Running, None);
        Ok(())
    }

    /// Wipes the data directory, fetches and unpacks the backup, writes the configuration.
    async fn prepare_pgdata(&self, spec: &ComputeSpec) -> anyhow::Result<()> {
        let p = &self.params;
        let conn = spec.pageserver()?;
        pgdata::check_no_live_postmaster(&p.pgdata)?;
        let req = BackupRequest {
            tenant: spec.tenant_id,
            timeline: spec.timeline_id,
            lsn: match spec.mode {
                ComputeMode::Primary => None,
                ComputeMode::Static(lsn) => Some(lsn),
            },
            full: p.full_backup,
        };
        tracing::info!(
            "fetching {} from {}:{}",
            req.command(),
            conn.host,
            conn.port
        );
        let stats = basebackup::fetch_with_retries(
            &conn,
            &req,
            &RetryPolicy::default(),
            &p.pgdata,
            || pgdata::recreate(&p.pgdata, &p.os_user),
            |a| self.state.with(|i| i.basebackup_attempts = a),
            &self.startup_cancel,
        )
        .await?;
        let lsn = pgdata::backup_lsn(&p.pgdata).ok();
        self.state.with(|i| {
            i.basebackup_bytes = stats.bytes;
            i.basebackup_ms = Some(u64::try_from(stats.elapsed.as_millis()).unwrap_or(u64::MAX));
            i.basebackup_lsn = lsn;
        });
        tracing::info!(
            "basebackup: {} bytes in {:?}, {} attempt(s), start LSN {lsn:?}",
            stats.bytes,
            stats.elapsed,
            stats.attempts
        );
        config::write_all(&p.pgdata, spec)?;
        pgdata::chown_tree(&p.pgdata, &p.os_user)
    }

    /// Starts the postmaster unless a shutdown was requested meanwhile.
    fn start_postmaster(&self) -> anyhow::Result<Postmaster> {
        let mut slot = self.postmaster.lock().unwrap_or_else(|p| p.into_inner());
        if self.state.status() != ComputeStatus::Init {
            bail!("not starting postgres: status is {}", self.state.status());
        }
        let pm = Postmaster::start(
            &self.params.pg_install,
            &self.params.pgdata,
            &self.params.os_user,
        )?;
        self.state
            .with(|i| i.postmaster_pid = Some(pm.pid.as_raw()));
        *slot = Some(pm.clone());
        Ok(pm)
    }

    /// Waits for the postmaster to exit; an exit nobody asked for makes the status `failed`.
    async fn supervise(self: Arc<Self>, pm: Postmaster) {
        let mut rx = pm.exited.clone();
        let _ = rx.wait_for(|s| s.is_some()).await;
        let status = pm.exit_status().unwrap_or_default();
        let unexpected = self.state.with(|i| {
            i.postmaster_pid = None;
            matches!(i.status, ComputeStatus::Init | ComputeStatus::Running)
        });
        if unexpected {
            let msg = format!(
                "postgres exited unexpectedly ({status}); last lines of its log:\n{}",
                pm.log_tail()
            );
            tracing::error!("{msg}");
            self.state.set_status(ComputeStatus::Failed, Some(msg));
        }
    }

    /// Stops PostgreSQL (SIGINT = fast, SIGQUIT = immediate; escalating to SIGQUIT and then
    /// SIGKILL if it does not exit in time) and sets the status `terminated`. Concurrent
    /// calls wait for the first one.
    pub async fn terminate(&self, mode: TerminateMode) -> ComputeStatusResponse {
        let first = self.state.with(|i| match i.status {
            ComputeStatus::Terminating | ComputeStatus::Terminated => false,
            _ => {
                i.status = ComputeStatus::Terminating;
                true
            }
        });
        if !first {
            let mut rx = self.state.subscribe();
            let _ = rx.wait_for(|s| *s == ComputeStatus::Terminated).await;
            return self.state.response();
        }
        self.state.set_status(ComputeStatus::Terminating, None);
        self.startup_cancel.cancel();
        let mut error = None;
        if let Some(pm) = self.postmaster() {
            if let Err(e) = self.stop_postmaster(&pm, mode).await {
                tracing::error!("{e:#}");
                error = Some(format!("{e:#}"));
            }
        }
        self.state.with(|i| i.postmaster_pid = None);
        self.state.set_status(ComputeStatus::Terminated, error);
        self.state.response()
    }

    async fn stop_postmaster(&self, pm: &Postmaster, mode: TerminateMode) -> anyhow::Result<()> {
        let first = match mode {
            TerminateMode::Fast => Signal::SIGINT,
            TerminateMode::Immediate => Signal::SIGQUIT,
        };
        tracing::info!("stopping postgres (pid {}) with {first}", pm.pid);
        pm.signal(first)?;
        if let Some(s) = pm.wait_exit(self.params.stop_timeout).await {
            tracing::info!("postgres stopped: {s}");
            return Ok(());
        }
        for sig in [Signal::SIGQUIT, Signal::SIGKILL] {
            tracing::warn!("postgres did not stop in time; sending {sig}");
            pm.signal(sig)?;
            if pm.wait_exit(ESCALATE_AFTER).await.is_some() {
                return Err(anyhow!(
                    "postgres did not stop after {first}; it was sent {sig}"
                ));
            }
        }
        bail!("postgres (pid {}) did not exit even after SIGKILL", pm.pid)
    }

    /// Applies a new spec to the running compute: settings (postgresql.conf rewritten and
    /// reloaded), then roles and databases (primary only).
    pub async fn configure(&self, new: ComputeSpec) -> Result<ComputeStatusResponse, ApiError> {
        let _serial = self.configuring.lock().await;
        let (status, old) = self.state.with(|i| (i.status, i.spec.clone()));
        if status != ComputeStatus::Running {
            return Err(ApiError::new(
                409,
                format!("compute is {status}, not running"),
            ));
        }
        old.check_reconfigure(&new)
            .map_err(|e| ApiError::new(400, e.to_string()))?;
        let pending = self
            .apply_new_spec(&old, &new)
            .await
            .map_err(|e| ApiError::new(500, format!("{e:#}")))?;
        self.state.with(|i| {
            i.spec = new;
            i.configure_count += 1;
            i.pending_restart = pending;
        });
        Ok(self.state.response())
    }

    async fn apply_new_spec(
        &self,
        old: &ComputeSpec,
        new: &ComputeSpec,
    ) -> anyhow::Result<Vec<String>> {
        let p = &self.params;
        let client = postgres::connect(new.pg_port).await?;
        let before = conf_load_time(&client).await?;
        config::write_postgresql_conf(&p.pgdata, new)?;
        pgdata::chown_tree(&p.pgdata.join("postgresql.conf"), &p.os_user).ok();
        client
            .batch_execute("SELECT pg_catalog.pg_reload_conf()")
            .await
            .context("pg_reload_conf()")?;
        wait_reloaded(new.pg_port, before).await?;
        let pending = restart_needed(&client, old, new).await?;
        if new.mode == ComputeMode::Primary {
            apply::apply_cluster(&client, &new.cluster).await?;
        }
        Ok(pending)
    }
}

/// `pg_conf_load_time()` as microseconds text (compared for change only).
async fn conf_load_time(client: &tokio_postgres::Client) -> anyhow::Result<String> {
    let row = client
        .query_one("SELECT pg_catalog.pg_conf_load_time()::text", &[])
        .await
        .context("pg_conf_load_time()")?;
    Ok(row.get(0))
}

/// Polls new connections (which inherit the postmaster's configuration) until they see a
/// configuration loaded after `before`.
async fn wait_reloaded(port: u16, before: String) -> anyhow::Result<()> {
    let deadline = Instant::now() + RELOAD_TIMEOUT;
    loop {
        let c = postgres::connect(port).await?;
        if conf_load_time(&c).await? != before {
            return Ok(());
        }
        if Instant::now() >= deadline {
            bail!("the configuration reload was not seen within {RELOAD_TIMEOUT:?}");
        }
        tokio::time::sleep(RELOAD_POLL_INTERVAL).await;
    }
}

/// Settings whose value changed between the specs and that only a restart applies.
async fn restart_needed(
    client: &tokio_postgres::Client,
    old: &ComputeSpec,
    new: &ComputeSpec,
) -> anyhow::Result<Vec<String>> {
    let (old_s, new_s) = (config::compute_settings(old), config::compute_settings(new));
    let missing_from = |a: &[(String, String)], b: &[(String, String)]| -> Vec<String> {
        a.iter()
            .filter(|(n, v)| {
                !b.iter()
                    .any(|(bn, bv)| bn.eq_ignore_ascii_case(n) && bv == v)
            })
            .map(|(n, _)| n.to_ascii_lowercase())
            .collect()
    };
    let mut changed = missing_from(&new_s, &old_s);
    changed.extend(missing_from(&old_s, &new_s));
    let rows = client
        .query(
            "SELECT name::text FROM pg_catalog.pg_settings WHERE context = 'postmaster' AND name = ANY($1) ORDER BY name",
            &[&changed],
        )
        .await
        .context("read pg_settings")?;
    Ok(rows.iter().map(|r| r.get(0)).collect())
}

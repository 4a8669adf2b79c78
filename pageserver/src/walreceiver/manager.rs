//! Lifecycle of walreceivers: one task per timeline with a WAL source.
//!
//! Setting a source persists `wal_source.json` first, then (re)starts the task; removing it
//! stops the task (and waits for it) before removing the file. At startup every persisted
//! source is resumed. Each task's cancellation token is a child of its tenant's, so deleting
//! the tenant stops it too. [`WalReceivers::shutdown`] cancels every task and waits (bounded)
//! for them before the tenants flush.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use pageserver_api::models::{WalReceiverStatus, WalSourceRequest};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use utils::id::{TenantId, TimelineId};

use super::policy::reconnect_backoff;
use super::session::{Session, SessionError};
use super::source_file::SourceFileError;
use super::{SourceError, StatusCell, WalSource, WalSourceFile, METRICS};
use crate::tenant::mgr::TenantManager;
use crate::tenant::timeline::Timeline;
use crate::tenant::Tenant;

/// Longest wait for one walreceiver task to stop.
pub const STOP_TIMEOUT: Duration = Duration::from_secs(30);

/// Why a walreceiver operation failed.
#[derive(Debug, thiserror::Error)]
pub enum WalReceiverError {
    #[error(transparent)]
    BadSource(#[from] SourceError),
    #[error(transparent)]
    File(#[from] SourceFileError),
    #[error("pageserver is shutting down")]
    ShuttingDown,
}

struct Entry {
    source: WalSource,
    cancel: CancellationToken,
    status: Arc<StatusCell>,
    task: JoinHandle<()>,
}

type Key = (TenantId, TimelineId);

/// Every walreceiver of the pageserver.
#[derive(Default)]
pub struct WalReceivers {
    entries: Mutex<HashMap<Key, Entry>>,
    shutting_down: std::sync::atomic::AtomicBool,
}

impl WalReceivers {
    pub fn new() -> Arc<WalReceivers> {
        Arc::new(WalReceivers::default())
    }

    fn entries(&self) -> std::sync::MutexGuard<'_, HashMap<Key, Entry>> {
        self.entries.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Starts a walreceiver for every timeline with a persisted source (at startup).
    pub fn start_all(&self, mgr: &TenantManager) {
        for tenant in mgr.list() {
            for tl in tenant.list_timelines() {
                match WalSourceFile::read(tl.dir()) {
                    Ok(None) => {}
                    Ok(Some(file)) => {
                        let req = WalSourceRequest {
                            connstr: file.connstr,
                            slot_name: file.slot_name,
                        };
                        match WalSource::from_request(&req) {
                            Ok(source) => self.spawn(&tenant, tl, source),
                            Err(e) => tracing::warn!(
                                timeline = %tl.timeline_id,
                                "ignoring persisted WAL source: {e}"
                            ),
                        }
                    }
                    Err(e) => tracing::warn!(
                        timeline = %tl.timeline_id,
                        "ignoring persisted WAL source: {e}"
                    ),
                }
            }
        }
    }

    /// Persists `req` as the timeline's source and (re)starts its walreceiver.
    pub async fn set_source(
        &self,
        tenant: &Arc<Tenant>,
        tl: Arc<Timeline>,
        req: &WalSourceRequest,
    ) -> Result<WalReceiverStatus, WalReceiverError> {
        let source = WalSource::from_request(req)?;
        self.check_running()?;
        let key = (tl.tenant_id, tl.timeline_id);
        let same = self
            .entries()
            .get(&key)
            .is_some_and(|e| e.source == source && !e.task.is_finished());
        if !same {
            self.stop(key).await;
            let (dir, file) = (tl.dir().to_path_buf(), source.to_file());
            tokio::task::spawn_blocking(move || file.write(&dir))
                .await
                .map_err(|e| SourceFileError::Io {
                    path: WalSourceFile::path_hint(),
                    source: std::io::Error::other(e.to_string()),
                })??;
            self.check_running()?;
            self.spawn(tenant, tl, source);
        }
        Ok(self.status(key.0, key.1).unwrap_or_default())
    }

    /// Stops the timeline's walreceiver and removes its persisted source (idempotent).
    pub async fn remove_source(&self, tl: &Timeline) -> Result<(), WalReceiverError> {
        self.stop((tl.tenant_id, tl.timeline_id)).await;
        let dir = tl.dir().to_path_buf();
        tokio::task::spawn_blocking(move || WalSourceFile::remove(&dir))
            .await
            .map_err(|e| SourceFileError::Io {
                path: WalSourceFile::path_hint(),
                source: std::io::Error::other(e.to_string()),
            })??;
        Ok(())
    }

    /// The timeline's walreceiver status, if it has a source.
    pub fn status(&self, tenant: TenantId, timeline: TimelineId) -> Option<WalReceiverStatus> {
        self.entries()
            .get(&(tenant, timeline))
            .map(|e| e.status.get())
    }

    /// Cancels every walreceiver and waits for them (each at most [`STOP_TIMEOUT`]).
    pub async fn shutdown(&self) {
        self.shutting_down.store(true, Ordering::Release);
        let keys: Vec<Key> = self.entries().keys().copied().collect();
        for e in self.entries().values() {
            e.cancel.cancel();
        }
        for key in keys {
            self.stop(key).await;
        }
    }

    fn check_running(&self) -> Result<(), WalReceiverError> {
        if self.shutting_down.load(Ordering::Acquire) {
            return Err(WalReceiverError::ShuttingDown);
        }
        Ok(())
    }

    async fn stop(&self, key: Key) {
        let Some(entry) = self.entries().remove(&key) else {
            return;
        };
        entry.cancel.cancel();
        let mut task = entry.task;
        if tokio::time::timeout(STOP_TIMEOUT, &mut task).await.is_err() {
            tracing::warn!(timeline = %key.1, "walreceiver did not stop in {STOP_TIMEOUT:?}");
            task.abort();
        }
    }

    fn spawn(&self, tenant: &Tenant, tl: Arc<Timeline>, source: WalSource) {
        let key = (tl.tenant_id, tl.timeline_id);
        let cancel = tenant.cancel.child_token();
        let status = Arc::new(StatusCell::new(&source));
        let session = Session {
            tl,
            source: source.clone(),
            status: status.clone(),
            cancel: cancel.clone(),
        };
        let name = format!("walreceiver-{}-{}", key.0, key.1);
        let task = tokio::spawn(run_receiver(name, session));
        let old = self.entries().insert(
            key,
            Entry {
                source,
                cancel,
                status,
                task,
            },
        );
        if let Some(old) = old {
            old.cancel.cancel();
        }
    }
}

impl WalSourceFile {
    fn path_hint() -> String {
        super::WAL_SOURCE_FILE_NAME.to_string()
    }
}

/// Streams, reconnecting with bounded backoff, until cancelled. Each distinct error is logged
/// once, at WARN (a source that is down is an expected condition).
async fn run_receiver(name: String, session: Session) {
    tracing::info!("{name} started for {}", session.source.conn.redacted());
    let mut failures = 0u32;
    let mut last_logged: Option<String> = None;
    let mut first = true;
    while !session.cancel.is_cancelled() {
        if !first {
            METRICS.reconnects.fetch_add(1, Ordering::Relaxed);
            session.status.update(|s| s.reconnects += 1);
        }
        first = false;
        let result = session.run().await;
        let streamed = session.status.get().last_error.is_none();
        if streamed {
            last_logged = None;
        }
        match result {
            Ok(()) => break,
            Err(e) => {
                let msg = e.to_string();
                if last_logged.as_deref() != Some(msg.as_str()) {
                    if matches!(e, SessionError::StreamEnded) {
                        tracing::info!("{name}: {msg}");
                    } else {
                        tracing::warn!("{name}: {msg}; retrying");
                    }
                    last_logged = Some(msg.clone());
                }
                session.status.update(|s| s.last_error = Some(msg));
            }
        }
        // A session that streamed resets the backoff.
        failures = if streamed {
            1
        } else {
            failures.saturating_add(1)
        };
        tokio::select! {
            _ = session.cancel.cancelled() => break,
            _ = tokio::time::sleep(reconnect_backoff(failures)) => {}
        }
    }
    tracing::info!("{name} stopped");
}

//! The set of tenants of this pageserver, loaded from `<workdir>/tenants/` at startup.
//!
//! A tenant directory is created as `<id>.___temp`, filled (config file), fsynced and renamed,
//! so a half-created tenant never loads. Deletion renames the directory to a temporary name
//! first; leftovers are removed at the next start.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use pageserver_api::models::TenantConfig;
use tokio::task::JoinSet;
use utils::id::TenantId;

use super::{
    io_err, read_tenant_config, remove_dir_durable, write_tenant_config, Tenant, TenantEnv,
    TenantError, TIMELINES_DIR_NAME,
};

/// Most background tasks we wait for at shutdown before giving up on them.
const SHUTDOWN_TASK_TIMEOUT: Duration = Duration::from_secs(10);
/// Longest sleep of the per-tenant background loop (so configuration changes take effect).
const IDLE_LOOP_PERIOD: Duration = Duration::from_secs(10);

/// Every tenant of the pageserver.
pub struct TenantManager {
    tenants_dir: PathBuf,
    env: TenantEnv,
    tenants: Mutex<HashMap<TenantId, Arc<Tenant>>>,
    tasks: Mutex<JoinSet<()>>,
    shutting_down: std::sync::atomic::AtomicBool,
}

impl TenantManager {
    /// Loads every tenant under `tenants_dir` (created if missing).
    pub fn load(tenants_dir: PathBuf, env: TenantEnv) -> Result<Arc<TenantManager>, TenantError> {
        utils::crashsafe::create_dir_all_durable(&tenants_dir)
            .map_err(|e| io_err(&tenants_dir, e))?;
        let mgr = Arc::new(TenantManager {
            tenants_dir: tenants_dir.clone(),
            env,
            tenants: Mutex::new(HashMap::new()),
            tasks: Mutex::new(JoinSet::new()),
            shutting_down: std::sync::atomic::AtomicBool::new(false),
        });
        for entry in std::fs::read_dir(&tenants_dir).map_err(|e| io_err(&tenants_dir, e))? {
            let entry = entry.map_err(|e| io_err(&tenants_dir, e))?;
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.ends_with(utils::crashsafe::TEMP_FILE_SUFFIX) {
                tracing::info!("removing leftover {}", entry.path().display());
                remove_dir_durable(&entry.path())?;
                continue;
            }
            let Ok(id) = name.parse::<TenantId>() else {
                tracing::warn!("ignoring unknown entry {}", entry.path().display());
                continue;
            };
            // A tenant that fails to load is kept as Broken (serving nothing) so that one
            // corrupt tenant does not take the others down.
            let overrides = read_tenant_config(&entry.path());
            let tenant = Tenant::new(
                id,
                entry.path(),
                mgr.env.clone(),
                overrides.as_ref().cloned().unwrap_or_default(),
            );
            let tenant = Arc::new(tenant);
            match overrides.and_then(|_| tenant.load_timelines()) {
                Ok(()) => {
                    let n = tenant.list_timelines().len();
                    tracing::info!(tenant = %id, "loaded {n} timelines");
                }
                Err(e) => {
                    tracing::error!(tenant = %id, "tenant is broken: {e}");
                    tenant.set_broken(e.to_string());
                }
            }
            mgr.insert(tenant);
        }
        Ok(mgr)
    }

    fn insert(&self, tenant: Arc<Tenant>) {
        self.spawn_background(tenant.clone());
        self.tenants
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(tenant.id, tenant);
    }

    /// The per-tenant background task: flushes open layers every `checkpoint_timeout` and
    /// compacts every `compaction_period` (0 disables compaction). Cancelled with the tenant.
    fn spawn_background(&self, tenant: Arc<Tenant>) {
        let Ok(handle) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let mut tasks = self.tasks.lock().unwrap_or_else(|e| e.into_inner());
        let name = format!("tenant-background-{}", tenant.id);
        tasks.spawn_on(
            async move {
                tracing::debug!("{name} started");
                let mut last_flush = Instant::now();
                let mut last_compaction = Instant::now();
                loop {
                    let conf = tenant.effective_config();
                    let mut period = conf.checkpoint_timeout.min(IDLE_LOOP_PERIOD);
                    if !conf.compaction_period.is_zero() {
                        period = period.min(conf.compaction_period);
                    }
                    tokio::select! {
                        _ = tenant.cancel.cancelled() => break,
                        _ = tokio::time::sleep(period) => {}
                    }
                    let flush = last_flush.elapsed() >= conf.checkpoint_timeout;
                    let compact = !conf.compaction_period.is_zero()
                        && last_compaction.elapsed() >= conf.compaction_period;
                    if flush {
                        last_flush = Instant::now();
                    }
                    if compact {
                        last_compaction = Instant::now();
                    }
                    let t = tenant.clone();
                    let done = tokio::task::spawn_blocking(move || {
                        if flush {
                            t.flush_all();
                        }
                        if compact {
                            t.compact_all();
                        }
                    })
                    .await;
                    if let Err(e) = done {
                        tracing::error!("{name}: background work panicked: {e}");
                    }
                }
                tracing::debug!("{name} stopped");
            },
            &handle,
        );
    }

    fn check_running(&self) -> Result<(), TenantError> {
        if self
            .shutting_down
            .load(std::sync::atomic::Ordering::Acquire)
        {
            return Err(TenantError::ShuttingDown);
        }
        Ok(())
    }

    pub fn get(&self, id: TenantId) -> Result<Arc<Tenant>, TenantError> {
        self.tenants
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&id)
            .cloned()
            .ok_or(TenantError::TenantNotFound(id))
    }

    pub fn list(&self) -> Vec<Arc<Tenant>> {
        let map = self.tenants.lock().unwrap_or_else(|e| e.into_inner());
        let mut v: Vec<_> = map.values().cloned().collect();
        v.sort_by_key(|t| t.id);
        v
    }

    /// Creates a tenant directory with its config, durably.
    pub fn create(&self, id: TenantId, conf: TenantConfig) -> Result<Arc<Tenant>, TenantError> {
        self.check_running()?;
        conf.apply_to(&self.env.defaults)
            .validate()
            .map_err(|e| TenantError::BadRequest(e.to_string()))?;
        let mut map = self.tenants.lock().unwrap_or_else(|e| e.into_inner());
        if map.contains_key(&id) {
            return Err(TenantError::TenantExists(id));
        }
        let dir = self.tenants_dir.join(id.to_string());
        let tmp = self
            .tenants_dir
            .join(format!("{id}{}", utils::crashsafe::TEMP_FILE_SUFFIX));
        if tmp.exists() {
            std::fs::remove_dir_all(&tmp).map_err(|e| io_err(&tmp, e))?;
        }
        utils::crashsafe::create_dir_all_durable(tmp.join(TIMELINES_DIR_NAME))
            .map_err(|e| io_err(&tmp, e))?;
        write_tenant_config(&tmp, &conf)?;
        std::fs::rename(&tmp, &dir).map_err(|e| io_err(&dir, e))?;
        utils::crashsafe::fsync_dir(&self.tenants_dir).map_err(|e| io_err(&self.tenants_dir, e))?;
        let tenant = Arc::new(Tenant::new(id, dir, self.env.clone(), conf));
        self.spawn_background(tenant.clone());
        map.insert(id, tenant.clone());
        Ok(tenant)
    }

    /// Stops a tenant's tasks and removes its directory durably.
    pub fn delete(&self, id: TenantId) -> Result<(), TenantError> {
        self.check_running()?;
        let tenant = self
            .tenants
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&id)
            .ok_or(TenantError::TenantNotFound(id))?;
        tenant.cancel.cancel();
        tenant.shutdown_redo();
        remove_dir_durable(&self.tenants_dir.join(id.to_string()))
    }

    /// Graceful shutdown: refuse new work, cancel background tasks, wait for them (bounded),
    /// flush every open layer.
    pub async fn shutdown(&self) {
        self.shutting_down
            .store(true, std::sync::atomic::Ordering::Release);
        let tenants = self.list();
        for t in &tenants {
            t.cancel.cancel();
        }
        let mut tasks = std::mem::take(&mut *self.tasks.lock().unwrap_or_else(|e| e.into_inner()));
        let drained = tokio::time::timeout(SHUTDOWN_TASK_TIMEOUT, async {
            while tasks.join_next().await.is_some() {}
        })
        .await;
        if drained.is_err() {
            tracing::warn!("background tasks did not stop in {SHUTDOWN_TASK_TIMEOUT:?}");
            tasks.abort_all();
        }
        let flushed = tokio::task::spawn_blocking(move || {
            for t in tenants {
                t.flush_all();
                t.shutdown_redo();
            }
        })
        .await;
        if let Err(e) = flushed {
            tracing::error!("flush at shutdown panicked: {e}");
        }
    }
}

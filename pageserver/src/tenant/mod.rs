//! Tenants: a directory `tenants/<tenant_id>/` with its configuration file `config` (TOML of
//! [`TenantConfig`], written durably) and `timelines/<timeline_id>/` directories.
//!
//! - [`mgr::TenantManager`]: every tenant of the pageserver, create/list/delete;
//! - [`Tenant`]: one tenant's timelines, timeline creation (bootstrap, branch);
//! - [`timeline::Timeline`]: storage of one timeline.

pub mod bootstrap;
pub mod import;
pub mod mgr;
pub mod page_cache;
pub mod redo;
pub mod tar_stream;
pub mod timeline;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};

use pageserver_api::models::{
    EffectiveTenantConfig, TenantConfig, TenantInfo, TenantState, TimelineCreateMode,
};
use tokio_util::sync::CancellationToken;
use utils::id::{TenantId, TimelineId};
use utils::lsn::Lsn;

use crate::metadata::{TimelineMetadata, METADATA_FILE_NAME};
use timeline::{Redo, Timeline, TimelineError};

/// Name of a tenant's configuration file.
pub const TENANT_CONFIG_FILE_NAME: &str = "config";
/// Name of the directory holding a tenant's timelines.
pub const TIMELINES_DIR_NAME: &str = "timelines";

/// Why a tenant-level operation failed. The HTTP layer maps these onto status codes.
#[derive(Debug, thiserror::Error)]
pub enum TenantError {
    #[error("tenant {0} not found")]
    TenantNotFound(TenantId),
    #[error("tenant {0} already exists")]
    TenantExists(TenantId),
    #[error("timeline {0} not found")]
    TimelineNotFound(TimelineId),
    #[error("timeline {0} already exists")]
    TimelineExists(TimelineId),
    #[error("invalid request: {0}")]
    BadRequest(String),
    #[error("pageserver is shutting down")]
    ShuttingDown,
    #[error("tenant {id} is broken: {reason}")]
    Broken { id: TenantId, reason: String },
    #[error(transparent)]
    Timeline(#[from] TimelineError),
    #[error("bootstrap failed: {0}")]
    Bootstrap(String),
    #[error("I/O error on {path}: {message}")]
    Io { path: PathBuf, message: String },
}

pub(crate) fn io_err(path: &Path, e: impl std::fmt::Display) -> TenantError {
    TenantError::Io {
        path: path.to_path_buf(),
        message: e.to_string(),
    }
}

/// Everything a tenant needs from the pageserver's configuration.
#[derive(Clone)]
pub struct TenantEnv {
    pub pg_bin_dir: PathBuf,
    pub pg_lib_dir: PathBuf,
    pub defaults: EffectiveTenantConfig,
    /// Makes the WAL redo of a tenant.
    pub redo_factory: RedoFactory,
}

/// Makes the [`Redo`] of a tenant (one `postgres --wal-redo` process per tenant in the daemon).
pub type RedoFactory = Arc<dyn Fn(TenantId) -> Arc<dyn Redo> + Send + Sync>;

/// One tenant.
pub struct Tenant {
    pub id: TenantId,
    dir: PathBuf,
    env: TenantEnv,
    overrides: Mutex<TenantConfig>,
    conf: Arc<RwLock<EffectiveTenantConfig>>,
    timelines: Mutex<HashMap<TimelineId, Arc<Timeline>>>,
    redo: Arc<dyn Redo>,
    /// Serializes timeline creations (they are rare and slow).
    create_lock: tokio::sync::Mutex<()>,
    /// Cancels this tenant's background tasks.
    pub cancel: CancellationToken,
    /// Why the tenant could not be loaded; a broken tenant serves nothing.
    broken: Mutex<Option<String>>,
    /// Base backups imported and waiting for their WAL (see [`import`]).
    pending_imports: Mutex<HashMap<TimelineId, import::PendingImport>>,
}

impl Tenant {
    fn new(id: TenantId, dir: PathBuf, env: TenantEnv, overrides: TenantConfig) -> Tenant {
        let conf = overrides.apply_to(&env.defaults);
        let redo = (env.redo_factory)(id);
        Tenant {
            redo,
            id,
            dir,
            env,
            overrides: Mutex::new(overrides),
            conf: Arc::new(RwLock::new(conf)),
            timelines: Mutex::new(HashMap::new()),
            create_lock: tokio::sync::Mutex::new(()),
            cancel: CancellationToken::new(),
            broken: Mutex::new(None),
            pending_imports: Mutex::new(HashMap::new()),
        }
    }

    /// Marks the tenant broken: its timelines are dropped and every request fails.
    fn set_broken(&self, reason: String) {
        self.timelines
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clear();
        *self.broken.lock().unwrap_or_else(|e| e.into_inner()) = Some(reason);
    }

    /// `Err(Broken)` if the tenant could not be loaded.
    pub fn check_broken(&self) -> Result<(), TenantError> {
        match &*self.broken.lock().unwrap_or_else(|e| e.into_inner()) {
            Some(reason) => Err(TenantError::Broken {
                id: self.id,
                reason: reason.clone(),
            }),
            None => Ok(()),
        }
    }

    fn timelines_dir(&self) -> PathBuf {
        self.dir.join(TIMELINES_DIR_NAME)
    }

    /// The settings in force.
    pub fn effective_config(&self) -> EffectiveTenantConfig {
        *self.conf.read().unwrap_or_else(|e| e.into_inner())
    }

    /// Replaces the overrides (validated, written durably first).
    pub fn set_config(&self, overrides: TenantConfig) -> Result<(), TenantError> {
        self.check_broken()?;
        let effective = overrides.apply_to(&self.env.defaults);
        effective
            .validate()
            .map_err(|e| TenantError::BadRequest(e.to_string()))?;
        write_tenant_config(&self.dir, &overrides)?;
        *self.conf.write().unwrap_or_else(|e| e.into_inner()) = effective;
        *self.overrides.lock().unwrap_or_else(|e| e.into_inner()) = overrides;
        Ok(())
    }

    pub fn info(&self) -> TenantInfo {
        let size = self
            .list_timelines()
            .iter()
            .map(|t| t.layer_stats().1)
            .sum();
        TenantInfo {
            id: self.id,
            state: if let Err(TenantError::Broken { reason, .. }) = self.check_broken() {
                TenantState::Broken { reason }
            } else if self.cancel.is_cancelled() {
                TenantState::Stopping
            } else {
                TenantState::Active
            },
            current_physical_size: Some(size),
        }
    }

    pub fn list_timelines(&self) -> Vec<Arc<Timeline>> {
        let map = self.timelines.lock().unwrap_or_else(|e| e.into_inner());
        let mut v: Vec<_> = map.values().cloned().collect();
        v.sort_by_key(|t| t.timeline_id);
        v
    }

    pub fn get_timeline(&self, id: TimelineId) -> Result<Arc<Timeline>, TenantError> {
        self.check_broken()?;
        self.timelines
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&id)
            .cloned()
            .ok_or(TenantError::TimelineNotFound(id))
    }

    /// Loads every timeline directory, ancestors before their branches.
    fn load_timelines(&self) -> Result<(), TenantError> {
        let dir = self.timelines_dir();
        let mut pending: HashMap<TimelineId, TimelineMetadata> = HashMap::new();
        for entry in std::fs::read_dir(&dir).map_err(|e| io_err(&dir, e))? {
            let entry = entry.map_err(|e| io_err(&dir, e))?;
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.ends_with(utils::crashsafe::TEMP_FILE_SUFFIX) {
                remove_dir_durable(&entry.path())?;
                continue;
            }
            let Ok(id) = name.parse::<TimelineId>() else {
                tracing::warn!("ignoring unknown entry {}", entry.path().display());
                continue;
            };
            let meta_path = entry.path().join(METADATA_FILE_NAME);
            if !meta_path.exists() {
                // Creation did not finish: the metadata is written last.
                tracing::info!("removing unfinished timeline {}", entry.path().display());
                remove_dir_durable(&entry.path())?;
                continue;
            }
            let meta = TimelineMetadata::read(&meta_path).map_err(TimelineError::from)?;
            pending.insert(id, meta);
        }
        while !pending.is_empty() {
            let ready: Vec<TimelineId> = {
                let loaded = self.timelines.lock().unwrap_or_else(|e| e.into_inner());
                pending
                    .iter()
                    .filter(|(_, m)| m.ancestor_timeline.is_none_or(|a| loaded.contains_key(&a)))
                    .map(|(id, _)| *id)
                    .collect()
            };
            if ready.is_empty() {
                let ids: Vec<String> = pending.keys().map(|k| k.to_string()).collect();
                return Err(TenantError::BadRequest(format!(
                    "timelines with missing ancestors: {}",
                    ids.join(", ")
                )));
            }
            for id in ready {
                let meta = pending.remove(&id).expect("ready ids are pending");
                let ancestor = meta
                    .ancestor_timeline
                    .map(|a| self.get_timeline(a))
                    .transpose()?;
                let tl = Timeline::load(
                    self.id,
                    id,
                    &dir.join(id.to_string()),
                    ancestor,
                    self.conf.clone(),
                    self.redo.clone(),
                )?;
                self.timelines
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .insert(id, tl);
            }
        }
        Ok(())
    }

    /// Creates a timeline (bootstrap with initdb, or a branch).
    pub async fn create_timeline(
        self: &Arc<Self>,
        id: TimelineId,
        mode: TimelineCreateMode,
    ) -> Result<Arc<Timeline>, TenantError> {
        let _guard = self.create_lock.lock().await;
        self.check_broken()?;
        if self.cancel.is_cancelled() {
            return Err(TenantError::ShuttingDown);
        }
        if self.get_timeline(id).is_ok() {
            return Err(TenantError::TimelineExists(id));
        }
        let tl = match mode {
            TimelineCreateMode::Branch {
                ancestor_timeline_id,
                ancestor_start_lsn,
                pg_version,
            } => self.branch(id, ancestor_timeline_id, ancestor_start_lsn, pg_version)?,
            TimelineCreateMode::Bootstrap { pg_version } => {
                let this = self.clone();
                tokio::task::spawn_blocking(move || this.bootstrap(id, pg_version))
                    .await
                    .map_err(|e| TenantError::Bootstrap(e.to_string()))??
            }
        };
        self.timelines
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(id, tl.clone());
        Ok(tl)
    }

    fn branch(
        &self,
        id: TimelineId,
        ancestor_id: TimelineId,
        start_lsn: Option<Lsn>,
        pg_version: u32,
    ) -> Result<Arc<Timeline>, TenantError> {
        let ancestor = self.get_timeline(ancestor_id)?;
        let last = ancestor.last_record_lsn();
        let lsn = start_lsn.unwrap_or(last);
        if lsn < ancestor.initdb_lsn {
            return Err(TenantError::BadRequest(format!(
                "branch LSN {lsn} is below the ancestor's initdb LSN {}",
                ancestor.initdb_lsn
            )));
        }
        if lsn > last {
            return Err(TenantError::BadRequest(format!(
                "branch LSN {lsn} is above the ancestor's last record LSN {last}"
            )));
        }
        if lsn < ancestor.latest_gc_cutoff_lsn() {
            return Err(TenantError::BadRequest(format!(
                "branch LSN {lsn} is below the ancestor's GC cutoff {}",
                ancestor.latest_gc_cutoff_lsn()
            )));
        }
        let prev = if lsn == last {
            Some(ancestor.prev_record_lsn()).filter(|p| *p != Lsn(0))
        } else {
            None
        };
        let meta = TimelineMetadata {
            disk_consistent_lsn: lsn,
            prev_record_lsn: prev,
            ancestor_timeline: Some(ancestor_id),
            ancestor_lsn: lsn,
            latest_gc_cutoff_lsn: lsn,
            initdb_lsn: ancestor.initdb_lsn,
            pg_version,
        };
        self.create_timeline_dir(id, &meta, Some(ancestor))
    }

    fn create_timeline_dir(
        &self,
        id: TimelineId,
        meta: &TimelineMetadata,
        ancestor: Option<Arc<Timeline>>,
    ) -> Result<Arc<Timeline>, TenantError> {
        let dir = self.timelines_dir().join(id.to_string());
        if dir.exists() {
            remove_dir_durable(&dir)?;
        }
        Ok(Timeline::create_empty(
            self.id,
            id,
            &dir,
            meta,
            ancestor,
            self.conf.clone(),
            self.redo.clone(),
        )?)
    }

    /// initdb into a temporary directory, import, flush.
    fn bootstrap(&self, id: TimelineId, pg_version: u32) -> Result<Arc<Timeline>, TenantError> {
        // Outside the workdir: the `postgres` user must be able to reach it, and workdirs
        // are often private to root.
        let tmp = std::env::temp_dir().join(format!(
            "pageserver-initdb-{}-{id}-{}",
            self.id,
            std::process::id()
        ));
        if tmp.exists() {
            std::fs::remove_dir_all(&tmp).map_err(|e| io_err(&tmp, e))?;
        }
        let result = self.bootstrap_from(&tmp, id, pg_version);
        if let Err(e) = std::fs::remove_dir_all(&tmp) {
            tracing::warn!("cannot remove {}: {e}", tmp.display());
        }
        result
    }

    fn bootstrap_from(
        &self,
        tmp: &Path,
        id: TimelineId,
        pg_version: u32,
    ) -> Result<Arc<Timeline>, TenantError> {
        let lsn = bootstrap::run_initdb(&self.env.pg_bin_dir, &self.env.pg_lib_dir, tmp)
            .map_err(|e| TenantError::Bootstrap(e.to_string()))?;
        let meta = TimelineMetadata {
            disk_consistent_lsn: Lsn(0),
            prev_record_lsn: None,
            ancestor_timeline: None,
            ancestor_lsn: Lsn(0),
            latest_gc_cutoff_lsn: lsn,
            initdb_lsn: lsn,
            pg_version,
        };
        // Built under a temporary name and renamed when complete, so a crash never leaves a
        // half-imported timeline (temporary directories are removed at load).
        let final_dir = self.timelines_dir().join(id.to_string());
        let tmp_dir = self
            .timelines_dir()
            .join(format!("{id}{}", utils::crashsafe::TEMP_FILE_SUFFIX));
        if tmp_dir.exists() {
            remove_dir_durable(&tmp_dir)?;
        }
        let imported = self.import_into(&tmp_dir, id, &meta, tmp, lsn);
        if let Err(e) = imported {
            let _ = remove_dir_durable(&tmp_dir);
            return Err(e);
        }
        std::fs::rename(&tmp_dir, &final_dir).map_err(|e| io_err(&final_dir, e))?;
        let parent = self.timelines_dir();
        utils::crashsafe::fsync_dir(&parent).map_err(|e| io_err(&parent, e))?;
        Ok(Timeline::load(
            self.id,
            id,
            &final_dir,
            None,
            self.conf.clone(),
            self.redo.clone(),
        )?)
    }

    fn import_into(
        &self,
        dir: &Path,
        id: TimelineId,
        meta: &TimelineMetadata,
        pgdata: &Path,
        lsn: Lsn,
    ) -> Result<(), TenantError> {
        let tl = Timeline::create_empty(
            self.id,
            id,
            dir,
            meta,
            None,
            self.conf.clone(),
            self.redo.clone(),
        )?;
        {
            // The data directory at its shutdown checkpoint, then that checkpoint record from
            // its pg_wal: the timeline ends right after the record and knows it as the prev
            // record, so a primary compute can start writable on the new timeline.
            let mut w = tl.writer();
            let (_, wal) = crate::import_wal::bootstrap_from_datadir(&mut w, pgdata)
                .map_err(|e| TenantError::Bootstrap(e.to_string()))?;
            debug_assert!(wal.prev_record_lsn.is_valid() && wal.last_record_lsn + 8 > lsn);
        }
        tl.freeze_and_flush()?;
        Ok(())
    }

    /// Stops the WAL redo process (at shutdown and deletion).
    pub fn shutdown_redo(&self) {
        self.redo.shutdown();
    }

    /// One compaction pass over every timeline (errors are logged).
    pub fn compact_all(&self) {
        for tl in self.list_timelines() {
            match tl.compact() {
                Ok(o) if o != Default::default() => {
                    tracing::info!(timeline = %tl.timeline_id, "compaction: {o:?}")
                }
                Ok(_) => {}
                Err(e) => tracing::error!(timeline = %tl.timeline_id, "compaction failed: {e}"),
            }
        }
    }

    /// Flushes every timeline's open layer (at shutdown).
    pub fn flush_all(&self) {
        for tl in self.list_timelines() {
            if let Err(e) = tl.freeze_and_flush() {
                tracing::error!(timeline = %tl.timeline_id, "flush at shutdown failed: {e}");
            }
        }
    }
}

/// Writes `<dir>/config` durably.
fn write_tenant_config(dir: &Path, conf: &TenantConfig) -> Result<(), TenantError> {
    let path = dir.join(TENANT_CONFIG_FILE_NAME);
    let text = toml::to_string(conf).map_err(|e| io_err(&path, e))?;
    utils::crashsafe::durable_write(&path, text.as_bytes()).map_err(|e| io_err(&path, e))
}

fn read_tenant_config(dir: &Path) -> Result<TenantConfig, TenantError> {
    let path = dir.join(TENANT_CONFIG_FILE_NAME);
    let text = std::fs::read_to_string(&path).map_err(|e| io_err(&path, e))?;
    toml::from_str(&text).map_err(|e| io_err(&path, e))
}

/// Removes a directory tree so that its removal survives a crash: renamed to a temporary
/// name first (fsync of the parent), so a half-removed tree is recognizable at startup.
pub(crate) fn remove_dir_durable(path: &Path) -> Result<(), TenantError> {
    let parent = path.parent().unwrap_or(Path::new("."));
    let target = if path
        .to_string_lossy()
        .ends_with(utils::crashsafe::TEMP_FILE_SUFFIX)
    {
        path.to_path_buf()
    } else {
        let mut name = path.file_name().unwrap_or_default().to_os_string();
        name.push(utils::crashsafe::TEMP_FILE_SUFFIX);
        let t = parent.join(name);
        std::fs::rename(path, &t).map_err(|e| io_err(path, e))?;
        utils::crashsafe::fsync_dir(parent).map_err(|e| io_err(parent, e))?;
        t
    };
    std::fs::remove_dir_all(&target).map_err(|e| io_err(&target, e))?;
    utils::crashsafe::fsync_dir(parent).map_err(|e| io_err(parent, e))
}

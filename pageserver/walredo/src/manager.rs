//! [`WalRedoManager`]: rebuilds pages of one tenant from a base image and WAL records.

use std::path::PathBuf;
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use bytes::Bytes;
use nix::unistd::{Uid, User};
use pageserver_api::key::Key;
use pageserver_api::value::NeonWalRecord;
use postgres_ffi::page::BLCKSZ;
use utils::id::TenantId;
use utils::lsn::Lsn;

use crate::apply_neon::apply_neon_record;
use crate::plan::{check_order, plan_steps, Step};
use crate::process::{RoundTripError, RunAs, WalRedoProcess};
use crate::protocol;
use crate::target::RedoTarget;
use crate::WalRedoError;

/// Default for [`WalRedoConfig::redo_timeout`].
pub const DEFAULT_REDO_TIMEOUT: Duration = Duration::from_secs(60);
/// Default for [`WalRedoConfig::max_batch_bytes`].
pub const DEFAULT_MAX_BATCH_BYTES: usize = 16 * 1024 * 1024;
/// The PostgreSQL major version directory under the install root.
const PG_VERSION_DIR: &str = "v15";
/// The user PostgreSQL runs as when we are root.
const POSTGRES_USER: &str = "postgres";

/// Settings of a [`WalRedoManager`].
#[derive(Debug, Clone)]
pub struct WalRedoConfig {
    /// Root of the PostgreSQL installs; the process is `<pg_install_dir>/v15/bin/postgres`.
    pub pg_install_dir: PathBuf,
    /// Limit on one round trip with the process (writing the request, reading the page).
    pub redo_timeout: Duration,
    /// Limit on the encoded size of one round trip (base image and records); longer runs of
    /// records are split into several round trips. Must be at most 64 MiB, the process'
    /// limit on one message.
    pub max_batch_bytes: usize,
}

impl WalRedoConfig {
    /// Default limits for the install under `pg_install_dir`.
    pub fn new(pg_install_dir: impl Into<PathBuf>) -> Self {
        WalRedoConfig {
            pg_install_dir: pg_install_dir.into(),
            redo_timeout: DEFAULT_REDO_TIMEOUT,
            max_batch_bytes: DEFAULT_MAX_BATCH_BYTES,
        }
    }

    /// The `postgres` binary that is started with `--wal-redo`.
    pub fn postgres_bin(&self) -> PathBuf {
        self.pg_install_dir
            .join(PG_VERSION_DIR)
            .join("bin")
            .join("postgres")
    }
}

/// Rebuilds pages for one tenant.
///
/// PostgreSQL records are replayed by a `postgres --wal-redo` process, started on first use
/// and again after any failure (a failed or timed-out request kills it). Neon's own records
/// are applied in Rust ([`crate::apply_neon`]).
///
/// The API is synchronous and `&self`: any number of threads may call it; requests that need
/// the process take turns on a mutex. From async code call it through
/// `tokio::task::spawn_blocking`, since a request blocks for up to
/// [`WalRedoConfig::redo_timeout`].
pub struct WalRedoManager {
    config: WalRedoConfig,
    tenant_id: TenantId,
    process: Mutex<Option<WalRedoProcess>>,
}

impl WalRedoManager {
    pub fn new(config: WalRedoConfig, tenant_id: TenantId) -> Self {
        WalRedoManager {
            config,
            tenant_id,
            process: Mutex::new(None),
        }
    }

    /// The page `key` as of `lsn`: `base_img` (the page at its LSN; `None` if the first
    /// record initialises the page) with `records` applied in order. Each record comes with
    /// the LSN of its end; they must increase, follow the base image and not pass `lsn`.
    pub fn request_redo(
        &self,
        key: Key,
        lsn: Lsn,
        base_img: Option<(Lsn, Bytes)>,
        records: Vec<(Lsn, NeonWalRecord)>,
    ) -> Result<Bytes, WalRedoError> {
        let target = RedoTarget::from_key(&key).ok_or(WalRedoError::InvalidKey(key))?;
        let mut page = match &base_img {
            Some((_, img)) => Some(to_page(img)?),
            None => None,
        };
        check_order(lsn, base_img.as_ref().map(|(l, _)| *l), &records)?;
        for step in plan_steps(&records, self.config.max_batch_bytes)? {
            match step {
                Step::Process(range) => {
                    let RedoTarget::Rel(tag) = target else {
                        return Err(WalRedoError::PostgresRecordForSlru(key));
                    };
                    let batch: Vec<(Lsn, &Bytes)> = records[range]
                        .iter()
                        .filter_map(|(lsn, r)| match r {
                            NeonWalRecord::Postgres { rec, .. } => Some((*lsn, rec)),
                            _ => None,
                        })
                        .collect();
                    let input = protocol::encode_request(&tag, page.as_deref(), &batch);
                    page = Some(self.round_trip(&input)?);
                }
                Step::Neon(index) => {
                    let (rec_lsn, record) = &records[index];
                    let page = page.as_mut().ok_or(WalRedoError::NoBaseImage(key))?;
                    apply_neon_record(page, &target, record).map_err(|source| {
                        WalRedoError::NeonRecord {
                            key,
                            lsn: *rec_lsn,
                            source,
                        }
                    })?;
                }
            }
        }
        let page = page.ok_or(WalRedoError::NoBaseImage(key))?;
        Ok(Bytes::copy_from_slice(&page[..]))
    }

    /// A Ping round trip with the process (starting it if needed): it answers 8192 zeros.
    pub fn ping(&self) -> Result<(), WalRedoError> {
        let page = self.round_trip(&protocol::encode_ping())?;
        if page.iter().any(|&b| b != 0) {
            return Err(WalRedoError::BadAnswer);
        }
        Ok(())
    }

    /// The id of the running process, if there is one.
    pub fn process_id(&self) -> Option<u32> {
        self.lock_process().as_ref().map(|p| p.pid())
    }

    /// Stops the process, if any (the next request starts a new one).
    pub fn shutdown(&self) {
        let process = self.lock_process().take();
        drop(process);
    }

    fn lock_process(&self) -> MutexGuard<'_, Option<WalRedoProcess>> {
        // a panic while holding the lock leaves at worst a process we cannot trust
        self.process.lock().unwrap_or_else(|poisoned| {
            let mut guard = poisoned.into_inner();
            *guard = None;
            guard
        })
    }

    /// Sends one request and reads the page; on failure the process is ended.
    fn round_trip(&self, input: &[u8]) -> Result<Box<[u8; BLCKSZ]>, WalRedoError> {
        let mut slot = self.lock_process();
        if slot.is_none() {
            *slot = Some(self.spawn()?);
        }
        let process = slot.as_mut().expect("process just started");
        let deadline = Instant::now() + self.config.redo_timeout;
        match process.round_trip(input, deadline) {
            Ok(page) => Ok(page),
            Err(err) => {
                let process = slot.take().expect("process present");
                let pid = process.pid();
                let end = process.finish(matches!(err, RoundTripError::Closed));
                tracing::warn!(tenant = %self.tenant_id, pid, "wal-redo process failed: {err}");
                Err(match err {
                    RoundTripError::Timeout => WalRedoError::Timeout(self.config.redo_timeout),
                    RoundTripError::Closed => WalRedoError::ProcessFailed {
                        status: end
                            .status
                            .map_or_else(|| "unknown".to_string(), |s| s.to_string()),
                        stderr: end.stderr_tail.join("\n"),
                    },
                    RoundTripError::Io(e) => WalRedoError::Io(e),
                })
            }
        }
    }

    fn spawn(&self) -> Result<WalRedoProcess, WalRedoError> {
        let bin = self.config.postgres_bin();
        let run_as = postgres_user_if_root()?;
        let process =
            WalRedoProcess::spawn(&bin, run_as, &self.tenant_id.to_string()).map_err(|source| {
                WalRedoError::Spawn {
                    path: bin.clone(),
                    source,
                }
            })?;
        tracing::info!(tenant = %self.tenant_id, pid = process.pid(), "started wal-redo process {}", bin.display());
        Ok(process)
    }
}

fn to_page(img: &Bytes) -> Result<Box<[u8; BLCKSZ]>, WalRedoError> {
    let array: [u8; BLCKSZ] = img[..]
        .try_into()
        .map_err(|_| WalRedoError::BadImageSize(img.len()))?;
    Ok(Box::new(array))
}

/// PostgreSQL refuses to run as root: when we are root, run it as user `postgres`.
fn postgres_user_if_root() -> Result<Option<RunAs>, WalRedoError> {
    if !Uid::effective().is_root() {
        return Ok(None);
    }
    let user = User::from_name(POSTGRES_USER)
        .map_err(|e| WalRedoError::NoPostgresUser(e.to_string()))?
        .ok_or_else(|| WalRedoError::NoPostgresUser("no such user".to_string()))?;
    Ok(Some(RunAs {
        uid: user.uid.as_raw(),
        gid: user.gid.as_raw(),
    }))
}

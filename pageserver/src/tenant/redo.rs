//! WAL redo for the daemon: one `pageserver_walredo::WalRedoManager` (one `postgres
//! --wal-redo` process, started on first use) per tenant, timed into the redo histogram.

use std::path::PathBuf;
use std::time::Instant;

use bytes::Bytes;
use pageserver_api::key::Key;
use pageserver_api::value::NeonWalRecord;
use pageserver_walredo::{WalRedoConfig, WalRedoManager};
use utils::id::TenantId;
use utils::lsn::Lsn;

use super::timeline::Redo;
use crate::http::metrics::METRICS;

/// [`Redo`] through `postgres --wal-redo`.
pub struct PostgresRedo {
    manager: WalRedoManager,
}

impl PostgresRedo {
    /// A manager for `tenant` with the PostgreSQL install under `pg_distrib_dir`.
    pub fn new(pg_distrib_dir: PathBuf, tenant: TenantId) -> PostgresRedo {
        PostgresRedo {
            manager: WalRedoManager::new(WalRedoConfig::new(pg_distrib_dir), tenant),
        }
    }
}

impl Redo for PostgresRedo {
    fn redo(
        &self,
        key: Key,
        lsn: Lsn,
        base: Option<(Lsn, Bytes)>,
        records: Vec<(Lsn, NeonWalRecord)>,
    ) -> Result<Bytes, String> {
        let started = Instant::now();
        let result = self
            .manager
            .request_redo(key, lsn, base, records)
            .map_err(|e| e.to_string());
        METRICS.redo_latency.observe(started.elapsed());
        result
    }

    fn shutdown(&self) {
        self.manager.shutdown();
    }
}

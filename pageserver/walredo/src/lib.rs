//! WAL redo for the pageserver: rebuilds a page from a base image and the WAL records that
//! follow it.
//!
//! - PostgreSQL records ([`NeonWalRecord::Postgres`]) are replayed by a `postgres --wal-redo`
//!   process (our patched PostgreSQL 15 with the `neon_walredo` library), one per tenant,
//!   over the stdin/stdout protocol of [`protocol`]. Consecutive PostgreSQL records go in
//!   one round trip (bounded by [`WalRedoConfig::max_batch_bytes`]).
//! - Neon's own records (visibility-map bits, CLOG and multixact SLRU pages) are applied in
//!   Rust by [`apply_neon`], in order with the others.
//!
//! The entry point is [`WalRedoManager::request_redo`].
//!
//! [`NeonWalRecord::Postgres`]: pageserver_api::value::NeonWalRecord::Postgres

pub mod apply_neon;
mod manager;
pub mod plan;
mod process;
pub mod protocol;
pub mod target;

use std::io;
use std::path::PathBuf;
use std::time::Duration;

use pageserver_api::key::Key;
use utils::lsn::Lsn;

pub use apply_neon::ApplyNeonError;
pub use manager::{WalRedoConfig, WalRedoManager, DEFAULT_MAX_BATCH_BYTES, DEFAULT_REDO_TIMEOUT};
pub use plan::PlanError;
pub use target::{BufferTag, RedoTarget, SlruKind};

/// Why a page could not be rebuilt.
#[derive(Debug, thiserror::Error)]
pub enum WalRedoError {
    #[error("key {0} is not a relation block or an SLRU page")]
    InvalidKey(Key),
    #[error("base image is {0} bytes, expected 8192")]
    BadImageSize(usize),
    #[error("no base image for key {0}, and its records do not start with a PostgreSQL record")]
    NoBaseImage(Key),
    #[error("PostgreSQL WAL records cannot be replayed on SLRU page {0}")]
    PostgresRecordForSlru(Key),
    #[error("invalid request: {0}")]
    InvalidRequest(#[from] PlanError),
    #[error("record at {lsn} for key {key}: {source}")]
    NeonRecord {
        key: Key,
        lsn: Lsn,
        #[source]
        source: ApplyNeonError,
    },
    #[error("cannot find the user postgres to run the wal-redo process as: {0}")]
    NoPostgresUser(String),
    #[error("cannot start wal-redo process {path}: {source}")]
    Spawn {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("wal-redo process did not answer within {0:?}; it was killed")]
    Timeout(Duration),
    #[error("wal-redo process failed ({status}): {stderr}")]
    ProcessFailed { status: String, stderr: String },
    #[error("I/O with the wal-redo process: {0}")]
    Io(#[source] io::Error),
    #[error("wal-redo process gave an unexpected answer")]
    BadAnswer,
}

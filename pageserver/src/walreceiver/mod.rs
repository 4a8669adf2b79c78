//! The walreceiver: pulls WAL into a timeline from a primary PostgreSQL over physical
//! replication (until safekeepers deliver it).
//!
//! - [`connstr`]: libpq connection strings of sources;
//! - [`client`]: the libpq frontend (startup, authentication, queries, CopyBoth);
//! - [`session`]: one connection: `IDENTIFY_SYSTEM`, slot creation, `START_REPLICATION`,
//!   decoding XLogData with [`postgres_ffi::waldecoder::WalStreamDecoder`], ingesting bounded
//!   batches with [`crate::walingest::ingest_batch`], and status updates;
//! - [`policy`]: when to send status updates, when to flush, reconnection backoff (pure);
//! - [`source_file`]: the persisted source, `wal_source.json`;
//! - [`manager`]: one task per timeline with a source: start, stop, resume at startup,
//!   reconnect with backoff until stopped.
//!
//! Status updates report `write = apply = last_record_lsn` and `flush = disk_consistent_lsn`,
//! so the slot keeps every WAL byte the pageserver has not made durable, and a restarted
//! pageserver resumes from its `last_record_lsn` (= `disk_consistent_lsn` after a restart).

pub mod client;
pub mod connstr;
pub mod manager;
pub mod policy;
pub mod session;
pub mod source_file;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use pageserver_api::models::{WalReceiverStatus, WalSourceRequest};

pub use connstr::{ConnConfig, ConnStrError};
pub use manager::{WalReceiverError, WalReceivers};
pub use source_file::{WalSourceFile, WAL_SOURCE_FILE_NAME};

/// Longest replication slot name PostgreSQL accepts (NAMEDATALEN - 1).
pub const MAX_SLOT_NAME_BYTES: usize = 63;

/// A validated WAL source.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WalSource {
    /// As given (persisted as is).
    pub connstr: String,
    pub conn: ConnConfig,
    pub slot_name: String,
}

/// Why a WAL source request is invalid.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SourceError {
    #[error("bad connstr: {0}")]
    ConnStr(#[from] ConnStrError),
    #[error("bad slot_name {0:?}: use 1 to {MAX_SLOT_NAME_BYTES} lowercase letters, digits and underscores")]
    SlotName(String),
}

impl WalSource {
    /// Validates a request body.
    pub fn from_request(req: &WalSourceRequest) -> Result<WalSource, SourceError> {
        let conn = ConnConfig::parse(&req.connstr)?;
        // PostgreSQL's own rule for slot names; it also keeps the name safe to splice into
        // replication commands.
        let valid = !req.slot_name.is_empty()
            && req.slot_name.len() <= MAX_SLOT_NAME_BYTES
            && req
                .slot_name
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
        if !valid {
            return Err(SourceError::SlotName(req.slot_name.clone()));
        }
        Ok(WalSource {
            connstr: req.connstr.clone(),
            conn,
            slot_name: req.slot_name.clone(),
        })
    }

    /// The persisted form.
    pub fn to_file(&self) -> WalSourceFile {
        WalSourceFile {
            connstr: self.connstr.clone(),
            slot_name: self.slot_name.clone(),
        }
    }
}

/// A walreceiver's status, shared between its task and the API.
#[derive(Debug, Default)]
pub struct StatusCell(Mutex<WalReceiverStatus>);

impl StatusCell {
    pub fn new(source: &WalSource) -> StatusCell {
        StatusCell(Mutex::new(WalReceiverStatus {
            connstr: source.conn.redacted(),
            slot_name: source.slot_name.clone(),
            ..Default::default()
        }))
    }

    pub fn get(&self) -> WalReceiverStatus {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    pub fn update(&self, f: impl FnOnce(&mut WalReceiverStatus)) {
        f(&mut self.0.lock().unwrap_or_else(|e| e.into_inner()))
    }
}

/// Process-wide walreceiver counters.
pub struct WalReceiverMetrics {
    /// Bytes of WAL received in XLogData messages.
    pub wal_bytes_received: AtomicU64,
    /// WAL records ingested.
    pub records_ingested: AtomicU64,
    /// Connection attempts after a failure or the end of a stream.
    pub reconnects: AtomicU64,
    /// Walreceivers connected right now.
    pub connected: AtomicU64,
}

/// The process's walreceiver counters.
pub static METRICS: WalReceiverMetrics = WalReceiverMetrics {
    wal_bytes_received: AtomicU64::new(0),
    records_ingested: AtomicU64::new(0),
    reconnects: AtomicU64::new(0),
    connected: AtomicU64::new(0),
};

impl WalReceiverMetrics {
    /// `(name, type, help, value)` of each metric, for the Prometheus rendering.
    pub fn samples(&self) -> [(&'static str, &'static str, &'static str, u64); 4] {
        let load = |a: &AtomicU64| a.load(Ordering::Relaxed);
        [
            (
                "pageserver_walreceiver_wal_bytes_received_total",
                "counter",
                "Bytes of WAL received from replication sources.",
                load(&self.wal_bytes_received),
            ),
            (
                "pageserver_walreceiver_records_ingested_total",
                "counter",
                "WAL records ingested from replication sources.",
                load(&self.records_ingested),
            ),
            (
                "pageserver_walreceiver_reconnects_total",
                "counter",
                "Reconnections to replication sources.",
                load(&self.reconnects),
            ),
            (
                "pageserver_walreceiver_connected",
                "gauge",
                "Walreceivers streaming right now.",
                load(&self.connected),
            ),
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(connstr: &str, slot: &str) -> WalSourceRequest {
        WalSourceRequest {
            connstr: connstr.into(),
            slot_name: slot.into(),
        }
    }

    #[test]
    fn validates_requests() {
        let s = WalSource::from_request(&req("host=h port=1 password=pw", "pageserver")).unwrap();
        assert_eq!(s.conn.port, 1);
        let status = StatusCell::new(&s).get();
        assert!(!status.connstr.contains("pw"), "{}", status.connstr);
        for bad in ["", "Slot", "a b", "x;DROP", &"a".repeat(64)] {
            assert!(matches!(
                WalSource::from_request(&req("host=h", bad)),
                Err(SourceError::SlotName(_))
            ));
        }
        assert!(matches!(
            WalSource::from_request(&req("nonsense", "s")),
            Err(SourceError::ConnStr(_))
        ));
    }
}

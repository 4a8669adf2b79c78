//! The storage a timeline offers to the PostgreSQL data-directory model.
//!
//! Everything in [`crate::pgdatadir_mapping`], [`crate::walingest`], [`crate::import_datadir`]
//! and [`crate::basebackup`] talks to storage only through these two traits, so the same code
//! runs over the layered store of the daemon and over the in-memory [`crate::memstore`].
//!
//! Contract:
//! - [`TimelineRead::get`] returns the value of a key as of an LSN, *materialized*: the newest
//!   image at or below the LSN with every newer WAL record up to the LSN applied. `Ok(None)`
//!   means the key has no version at or below the LSN.
//! - Values handed to [`TimelineWrite::put_batch`] become visible to `get` at their LSN at once,
//!   also before [`TimelineWrite::finish_write`] (the writer reads its own writes, e.g. while
//!   copying a template database inside one WAL record). Readers other than the writer should
//!   only read at or below the last LSN passed to `finish_write`.
//! - There are no deletes: a dropped object disappears from its directory key (and its size key
//!   gets an empty tombstone value, see [`crate::pgdatadir_mapping`]).
//! - A later put of the same key at the same LSN replaces the earlier one.

use bytes::Bytes;
use pageserver_api::key::Key;
use pageserver_api::value::Value;
use utils::lsn::Lsn;

/// Why a value could not be read.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    /// The versions are there but could not be combined into a value (e.g. WAL redo failed,
    /// or a WAL record has no base image).
    #[error("cannot reconstruct key {key} at {lsn}: {reason}")]
    Reconstruct { key: Key, lsn: Lsn, reason: String },
    /// The LSN is outside what the timeline can serve (not yet ingested, or garbage collected).
    #[error("LSN {lsn} is not readable on this timeline: {reason}")]
    LsnOutOfRange { lsn: Lsn, reason: String },
    /// The storage below failed (I/O, corrupt layer file, ...).
    #[error("storage error reading key {key} at {lsn}: {source}")]
    Storage {
        key: Key,
        lsn: Lsn,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
}

/// Why values could not be stored.
#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    /// A value's LSN is below what the timeline already finished.
    #[error("put of key {key} at {lsn} is below the last record LSN {last_record_lsn}")]
    LsnTooOld {
        key: Key,
        lsn: Lsn,
        last_record_lsn: Lsn,
    },
    /// The storage below failed.
    #[error("storage error writing: {0}")]
    Storage(#[source] Box<dyn std::error::Error + Send + Sync>),
}

/// Read side of a timeline: materialized values as of an LSN.
pub trait TimelineRead {
    /// The value of `key` at `lsn` (see the module documentation).
    fn get(&self, key: Key, lsn: Lsn) -> Result<Option<Bytes>, ReadError>;
}

/// Write side of a timeline: batches of versions, then the LSN they complete.
pub trait TimelineWrite {
    /// Stores every `(key, lsn, value)` of the batch. LSNs in a batch need not be sorted but
    /// must not be below the last `finish_write` LSN.
    fn put_batch(&mut self, batch: Vec<(Key, Lsn, Value)>) -> Result<(), WriteError>;

    /// Declares that everything up to `last_record_lsn` (the end of the last ingested WAL
    /// record, or an import LSN) is stored; `prev_record_lsn` is the start of that record
    /// (`Lsn(0)` when unknown).
    fn finish_write(&mut self, last_record_lsn: Lsn, prev_record_lsn: Lsn);
}

impl<T: TimelineRead + ?Sized> TimelineRead for &T {
    fn get(&self, key: Key, lsn: Lsn) -> Result<Option<Bytes>, ReadError> {
        (**self).get(key, lsn)
    }
}

impl<T: TimelineRead + ?Sized> TimelineRead for &mut T {
    fn get(&self, key: Key, lsn: Lsn) -> Result<Option<Bytes>, ReadError> {
        (**self).get(key, lsn)
    }
}

//! The pageserver's model of a PostgreSQL data directory, independent of how versions are
//! stored:
//!
//! - [`storage_api`]: the read/write traits a timeline implementation provides;
//! - [`pgdatadir_mapping`]: how PostgreSQL's files map onto keys, typed reads at an LSN and
//!   [`pgdatadir_mapping::DatadirModification`] for writes;
//! - [`walingest`]: turning decoded WAL records into versions;
//! - [`import_datadir`]: importing a data directory or a base backup tar;
//! - [`import_wal`]: importing WAL segments (directory or tar), and bootstrap after initdb;
//! - [`basebackup`]: generating basebackup and fullbackup tars;
//! - [`apply_neon`]: applying the pageserver's own record types in Rust;
//! - [`memstore`]: an in-memory timeline for tests and tools;
//! - [`walreceiver`]: pulling WAL from a primary over physical replication.

pub mod apply_neon;
pub mod basebackup;
pub mod config;
pub mod framed_json;
pub mod http;
pub mod import_datadir;
pub mod import_wal;
pub mod memstore;
pub mod metadata;
pub mod page_service;
pub mod pg_consts;
pub mod pgdatadir_mapping;
pub mod storage_api;
pub mod tenant;
pub mod walingest;
pub mod walreceiver;

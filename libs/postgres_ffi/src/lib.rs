//! PostgreSQL 15 on-disk and WAL formats: what the pageserver, safekeepers and tools need to
//! read and write PostgreSQL's files and WAL without linking to PostgreSQL.

pub mod controlfile;
pub mod fpi;
pub mod page;
pub mod pg_constants;
pub mod records;
pub mod relfile;
pub mod waldecoder;
pub mod walrecord;
pub mod xlog_utils;

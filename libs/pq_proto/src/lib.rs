//! The PostgreSQL v3 frontend/backend protocol, server side first.
//!
//! - [`fe`]: parsing of what clients send: startup packets ([`FeStartupPacket`])
//!   and typed messages ([`FeMessage`]), with length limits.
//! - [`be`]: encoding of what servers send ([`BeMessage`]).
//! - [`replication`]: physical replication messages carried in CopyData.
//! - [`backend`]: a tokio connection driver ([`PostgresBackend`]) and the
//!   [`Handler`] trait for answering simple queries.
//!
//! No parser panics on malformed input: every failure is a [`ProtocolError`].

pub mod backend;
pub mod be;
mod codec;
pub mod error;
pub mod fe;
pub mod replication;

pub use backend::{Handler, HandshakeOutcome, PostgresBackend, ProtocolState};
pub use be::{BeMessage, CopyResponse, Diagnostic, RowDescriptor, Severity};
pub use error::{ConnectionError, ProtocolError, QueryError, SqlState};
pub use fe::{FeMessage, FeStartupPacket, StartupParams, MAX_MESSAGE_LEN_BYTES};
pub use replication::PgTimestamp;

/// The key a client needs to cancel a session's running query.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct CancelKeyData {
    pub backend_pid: i32,
    pub cancel_key: i32,
}

impl CancelKeyData {
    /// A random key.
    pub fn generate() -> CancelKeyData {
        CancelKeyData {
            backend_pid: rand::random(),
            cancel_key: rand::random(),
        }
    }
}

/// Text or binary representation of a value.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub enum Format {
    #[default]
    Text,
    Binary,
}

impl Format {
    /// The wire code: 0 for text, 1 for binary.
    pub fn code(self) -> i16 {
        match self {
            Format::Text => 0,
            Format::Binary => 1,
        }
    }

    /// Parses a wire code.
    pub fn from_code(code: i16) -> Result<Format, ProtocolError> {
        match code {
            0 => Ok(Format::Text),
            1 => Ok(Format::Binary),
            _ => Err(ProtocolError::InvalidValue {
                what: "format code",
                value: code.into(),
            }),
        }
    }
}

/// The transaction state reported in ReadyForQuery.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub enum TransactionStatus {
    /// Not in a transaction block (`I`).
    #[default]
    Idle,
    /// In a transaction block (`T`).
    InBlock,
    /// In a failed transaction block (`E`).
    Failed,
}

impl TransactionStatus {
    /// The status byte.
    pub fn as_byte(self) -> u8 {
        match self {
            TransactionStatus::Idle => b'I',
            TransactionStatus::InBlock => b'T',
            TransactionStatus::Failed => b'E',
        }
    }
}

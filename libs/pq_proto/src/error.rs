//! Error types: malformed bytes, broken connections and failed queries.

use std::fmt;
use std::io;

use crate::be::{Diagnostic, Severity};

/// Input that does not follow the protocol, or output that cannot be encoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProtocolError {
    /// A length word below the minimum for its message kind (at least 4,
    /// the size of the length word itself).
    #[error("invalid message length {len}: must be at least {min}")]
    LengthTooShort { len: i64, min: usize },
    /// A message longer than the configured limit.
    #[error("message length {len} exceeds the limit of {max_bytes} bytes")]
    MessageTooLong { len: u64, max_bytes: usize },
    /// A frontend message type byte we do not know.
    #[error("unknown frontend message type {:?}", char::from(*.0))]
    UnknownMessageTag(u8),
    /// A replication message type byte we do not know.
    #[error("unknown replication message type {:?}", char::from(*.0))]
    UnknownReplicationTag(u8),
    /// The body ended in the middle of a field.
    #[error("message truncated while reading {what}")]
    Truncated { what: &'static str },
    /// A string field without its terminating NUL byte.
    #[error("missing NUL terminator in {what}")]
    MissingNul { what: &'static str },
    /// Bytes left over after the last field.
    #[error("{count} unexpected trailing bytes after {what}")]
    TrailingBytes { what: &'static str, count: usize },
    /// A string field that is not valid UTF-8.
    #[error("{what} is not valid UTF-8")]
    InvalidUtf8 { what: &'static str },
    /// A field with an out-of-range value, e.g. a negative count.
    #[error("invalid {what}: {value}")]
    InvalidValue { what: &'static str, value: i64 },
    /// A startup packet with a protocol version other than 3.x.
    #[error("unsupported frontend protocol {}.{}", .0 >> 16, .0 & 0xffff)]
    UnsupportedProtocolVersion(u32),
    /// A string to encode contains a NUL byte, which the wire format cannot carry.
    #[error("{what} contains a NUL byte")]
    InteriorNul { what: &'static str },
    /// A message that is valid but not allowed at this point of the conversation.
    #[error("unexpected {got} message while {state}")]
    UnexpectedMessage {
        got: &'static str,
        state: &'static str,
    },
}

/// Failures of a connection as a whole.
#[derive(Debug, thiserror::Error)]
pub enum ConnectionError {
    /// Reading from or writing to the socket failed.
    #[error("connection I/O error")]
    Io(#[from] io::Error),
    /// The peer sent something malformed or out of place.
    #[error("protocol error")]
    Protocol(#[from] ProtocolError),
    /// The peer closed the connection in the middle of a message.
    #[error("connection closed by the client in the middle of a message")]
    UnexpectedEof,
    /// The client failed authentication.
    #[error("authentication failed for user {user:?}")]
    AuthenticationFailed { user: String },
    /// The connection was used in the wrong state, e.g. queries before the handshake.
    #[error("connection is {actual}, but {expected} was required")]
    WrongState {
        expected: &'static str,
        actual: &'static str,
    },
}

/// A five-character SQLSTATE error code, e.g. `42601` for a syntax error.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct SqlState([u8; 5]);

impl SqlState {
    pub const SUCCESSFUL_COMPLETION: SqlState = SqlState(*b"00000");
    pub const FEATURE_NOT_SUPPORTED: SqlState = SqlState(*b"0A000");
    pub const CONNECTION_FAILURE: SqlState = SqlState(*b"08006");
    pub const PROTOCOL_VIOLATION: SqlState = SqlState(*b"08P01");
    pub const INVALID_PARAMETER_VALUE: SqlState = SqlState(*b"22023");
    pub const INVALID_AUTHORIZATION_SPECIFICATION: SqlState = SqlState(*b"28000");
    pub const INVALID_PASSWORD: SqlState = SqlState(*b"28P01");
    pub const SYNTAX_ERROR: SqlState = SqlState(*b"42601");
    pub const UNDEFINED_OBJECT: SqlState = SqlState(*b"42704");
    pub const UNDEFINED_TABLE: SqlState = SqlState(*b"42P01");
    pub const INSUFFICIENT_RESOURCES: SqlState = SqlState(*b"53000");
    pub const OBJECT_NOT_IN_PREREQUISITE_STATE: SqlState = SqlState(*b"55000");
    pub const QUERY_CANCELED: SqlState = SqlState(*b"57014");
    pub const ADMIN_SHUTDOWN: SqlState = SqlState(*b"57P01");
    pub const INTERNAL_ERROR: SqlState = SqlState(*b"XX000");
    pub const DATA_CORRUPTED: SqlState = SqlState(*b"XX001");

    /// Parses a code: exactly five ASCII digits or upper-case letters.
    pub fn parse(code: &str) -> Option<SqlState> {
        let bytes: [u8; 5] = code.as_bytes().try_into().ok()?;
        bytes
            .iter()
            .all(|b| b.is_ascii_digit() || b.is_ascii_uppercase())
            .then_some(SqlState(bytes))
    }

    /// The code as a string.
    pub fn as_str(&self) -> &str {
        // Constructed only from ASCII.
        std::str::from_utf8(&self.0).unwrap_or("XX000")
    }
}

impl fmt::Display for SqlState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl fmt::Debug for SqlState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SqlState({})", self.as_str())
    }
}

/// Why a query handler did not complete a query.
#[derive(Debug, thiserror::Error)]
pub enum QueryError {
    /// An error to report to the client; the connection stays usable.
    #[error("{} {}: {}", .0.severity.as_str(), .0.code, .0.message)]
    Sql(Diagnostic),
    /// The connection broke; it is closed.
    #[error(transparent)]
    Connection(#[from] ConnectionError),
    /// The server is shutting down; the client gets `57P01` and is disconnected.
    #[error("server is shutting down")]
    Shutdown,
}

impl QueryError {
    /// An `ERROR` with the given code and message.
    pub fn sql(code: SqlState, message: impl Into<String>) -> QueryError {
        QueryError::Sql(Diagnostic::new(Severity::Error, code, message))
    }

    /// The SQLSTATE this error is reported with.
    pub fn sqlstate(&self) -> SqlState {
        match self {
            QueryError::Sql(d) => d.code,
            QueryError::Connection(_) => SqlState::CONNECTION_FAILURE,
            QueryError::Shutdown => SqlState::ADMIN_SHUTDOWN,
        }
    }
}

impl From<Diagnostic> for QueryError {
    fn from(d: Diagnostic) -> Self {
        QueryError::Sql(d)
    }
}

impl From<io::Error> for QueryError {
    fn from(e: io::Error) -> Self {
        QueryError::Connection(ConnectionError::Io(e))
    }
}

impl From<ProtocolError> for QueryError {
    fn from(e: ProtocolError) -> Self {
        QueryError::Connection(ConnectionError::Protocol(e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sqlstate_parse() {
        assert_eq!(SqlState::parse("42601"), Some(SqlState::SYNTAX_ERROR));
        assert_eq!(SqlState::parse("XX000").unwrap().to_string(), "XX000");
        for bad in ["", "4260", "426011", "4260a", "42 01", "4260é"] {
            assert_eq!(SqlState::parse(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn query_error_codes() {
        let e = QueryError::sql(SqlState::UNDEFINED_TABLE, "no such table");
        assert_eq!(e.sqlstate(), SqlState::UNDEFINED_TABLE);
        assert_eq!(e.to_string(), "ERROR 42P01: no such table");
        assert_eq!(QueryError::Shutdown.sqlstate(), SqlState::ADMIN_SHUTDOWN);
    }

    #[test]
    fn protocol_error_messages() {
        let e = ProtocolError::UnsupportedProtocolVersion(0x0002_0000);
        assert_eq!(e.to_string(), "unsupported frontend protocol 2.0");
        assert_eq!(
            ProtocolError::UnknownMessageTag(b'z').to_string(),
            "unknown frontend message type 'z'"
        );
    }
}

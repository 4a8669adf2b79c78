//! Backend (server → client) messages and their encoding.

use bytes::{BufMut, BytesMut};

use crate::codec::{put_cstr, to_i16, to_i32, write_message};
use crate::error::{ProtocolError, SqlState};
use crate::replication::{PrimaryKeepalive, XLogData};
use crate::{CancelKeyData, Format, TransactionStatus};

/// OIDs of common built-in types, for [`RowDescriptor`].
pub mod oid {
    pub const BOOL: u32 = 16;
    pub const BYTEA: u32 = 17;
    pub const INT8: u32 = 20;
    pub const INT4: u32 = 23;
    pub const TEXT: u32 = 25;
    pub const JSON: u32 = 114;
    pub const FLOAT8: u32 = 701;
    pub const VARCHAR: u32 = 1043;
    pub const TIMESTAMPTZ: u32 = 1184;
    pub const PG_LSN: u32 = 3220;
}

/// One column of a RowDescription.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RowDescriptor<'a> {
    pub name: &'a str,
    /// OID of the source table, or 0.
    pub table_oid: u32,
    /// Attribute number in the source table, or 0.
    pub column_attnum: i16,
    pub type_oid: u32,
    /// `pg_type.typlen`: a positive size, or negative for variable length.
    pub type_len: i16,
    /// `pg_attribute.atttypmod`; -1 if none.
    pub type_modifier: i32,
    pub format: Format,
}

impl<'a> RowDescriptor<'a> {
    /// A text-format column of the given type, not from any table.
    pub const fn new(name: &'a str, type_oid: u32, type_len: i16) -> Self {
        RowDescriptor {
            name,
            table_oid: 0,
            column_attnum: 0,
            type_oid,
            type_len,
            type_modifier: -1,
            format: Format::Text,
        }
    }

    /// A `text` column.
    pub const fn text(name: &'a str) -> Self {
        Self::new(name, oid::TEXT, -1)
    }

    /// An `int8` column.
    pub const fn int8(name: &'a str) -> Self {
        Self::new(name, oid::INT8, 8)
    }

    /// An `int4` column.
    pub const fn int4(name: &'a str) -> Self {
        Self::new(name, oid::INT4, 4)
    }

    /// A `bool` column.
    pub const fn bool(name: &'a str) -> Self {
        Self::new(name, oid::BOOL, 1)
    }
}

/// Severity of an ErrorResponse or NoticeResponse.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Severity {
    /// The current command failed; the session continues.
    Error,
    /// The session is terminated.
    Fatal,
    /// All sessions are terminated.
    Panic,
    Warning,
    Notice,
    Debug,
    Info,
    Log,
}

impl Severity {
    /// The non-localized name sent on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Error => "ERROR",
            Severity::Fatal => "FATAL",
            Severity::Panic => "PANIC",
            Severity::Warning => "WARNING",
            Severity::Notice => "NOTICE",
            Severity::Debug => "DEBUG",
            Severity::Info => "INFO",
            Severity::Log => "LOG",
        }
    }
}

/// The fields of an ErrorResponse or NoticeResponse.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diagnostic {
    pub severity: Severity,
    pub code: SqlState,
    /// Primary message: short, one line.
    pub message: String,
    /// Optional secondary message with more detail.
    pub detail: Option<String>,
    /// Optional suggestion what to do about it.
    pub hint: Option<String>,
}

impl Diagnostic {
    pub fn new(severity: Severity, code: SqlState, message: impl Into<String>) -> Self {
        Diagnostic {
            severity,
            code,
            message: message.into(),
            detail: None,
            hint: None,
        }
    }

    /// Adds a detail message.
    pub fn with_detail(mut self, detail: impl Into<String>) -> Self {
        self.detail = Some(detail.into());
        self
    }

    /// Adds a hint.
    pub fn with_hint(mut self, hint: impl Into<String>) -> Self {
        self.hint = Some(hint.into());
        self
    }
}

/// The format description of a CopyIn/Out/BothResponse.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CopyResponse<'a> {
    /// Overall format; binary requires all columns binary.
    pub format: Format,
    /// Format of each column.
    pub column_formats: &'a [Format],
}

impl CopyResponse<'static> {
    /// Text format with no column list, as used for replication streams.
    pub const UNSTRUCTURED: CopyResponse<'static> = CopyResponse {
        format: Format::Text,
        column_formats: &[],
    };
}

/// A message from the server to the client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BeMessage<'a> {
    AuthenticationOk,
    AuthenticationCleartextPassword,
    AuthenticationMd5Password {
        salt: [u8; 4],
    },
    ParameterStatus {
        name: &'a str,
        value: &'a str,
    },
    BackendKeyData(CancelKeyData),
    /// The newest minor version we support and the `_pq_.` options we ignored.
    NegotiateProtocolVersion {
        newest_minor: u16,
        unrecognized_options: &'a [&'a str],
    },
    ReadyForQuery(TransactionStatus),
    RowDescription(&'a [RowDescriptor<'a>]),
    /// One row; `None` is SQL NULL.
    DataRow(&'a [Option<&'a [u8]>]),
    /// The command tag, e.g. `SELECT 1`.
    CommandComplete(&'a str),
    EmptyQueryResponse,
    /// NUL bytes in the texts, which the wire format cannot carry, are sent as U+FFFD.
    ErrorResponse(&'a Diagnostic),
    /// As [`BeMessage::ErrorResponse`], but informational.
    NoticeResponse(&'a Diagnostic),
    CopyInResponse(CopyResponse<'a>),
    CopyOutResponse(CopyResponse<'a>),
    CopyBothResponse(CopyResponse<'a>),
    CopyData(&'a [u8]),
    CopyDone,
    /// XLogData wrapped in CopyData, encoded without an intermediate copy.
    XLogData(&'a XLogData),
    /// PrimaryKeepalive wrapped in CopyData.
    PrimaryKeepalive(&'a PrimaryKeepalive),
    NoData,
    ParseComplete,
    BindComplete,
    CloseComplete,
}

impl BeMessage<'_> {
    /// Appends the encoded message to `buf`. On error `buf` is unchanged.
    pub fn write(&self, buf: &mut BytesMut) -> Result<(), ProtocolError> {
        match self {
            BeMessage::AuthenticationOk => auth(buf, 0, &[]),
            BeMessage::AuthenticationCleartextPassword => auth(buf, 3, &[]),
            BeMessage::AuthenticationMd5Password { salt } => auth(buf, 5, salt),
            BeMessage::ParameterStatus { name, value } => write_message(buf, Some(b'S'), |b| {
                put_cstr(b, name.as_bytes(), "parameter name")?;
                put_cstr(b, value.as_bytes(), "parameter value")
            }),
            BeMessage::BackendKeyData(key) => write_message(buf, Some(b'K'), |b| {
                b.put_i32(key.backend_pid);
                b.put_i32(key.cancel_key);
                Ok(())
            }),
            BeMessage::NegotiateProtocolVersion {
                newest_minor,
                unrecognized_options,
            } => write_negotiate(buf, *newest_minor, unrecognized_options),
            BeMessage::ReadyForQuery(status) => write_message(buf, Some(b'Z'), |b| {
                b.put_u8(status.as_byte());
                Ok(())
            }),
            BeMessage::RowDescription(columns) => write_row_description(buf, columns),
            BeMessage::DataRow(values) => write_data_row(buf, values),
            BeMessage::CommandComplete(tag) => write_message(buf, Some(b'C'), |b| {
                put_cstr(b, tag.as_bytes(), "command tag")
            }),
            BeMessage::EmptyQueryResponse => empty(buf, b'I'),
            BeMessage::ErrorResponse(d) => write_diagnostic(buf, b'E', d),
            BeMessage::NoticeResponse(d) => write_diagnostic(buf, b'N', d),
            BeMessage::CopyInResponse(r) => write_copy_response(buf, b'G', r),
            BeMessage::CopyOutResponse(r) => write_copy_response(buf, b'H', r),
            BeMessage::CopyBothResponse(r) => write_copy_response(buf, b'W', r),
            BeMessage::CopyData(data) => write_message(buf, Some(b'd'), |b| {
                b.put_slice(data);
                Ok(())
            }),
            BeMessage::CopyDone => empty(buf, b'c'),
            BeMessage::XLogData(x) => write_message(buf, Some(b'd'), |b| {
                x.encode(b);
                Ok(())
            }),
            BeMessage::PrimaryKeepalive(k) => write_message(buf, Some(b'd'), |b| {
                k.encode(b);
                Ok(())
            }),
            BeMessage::NoData => empty(buf, b'n'),
            BeMessage::ParseComplete => empty(buf, b'1'),
            BeMessage::BindComplete => empty(buf, b'2'),
            BeMessage::CloseComplete => empty(buf, b'3'),
        }
    }
}

fn empty(buf: &mut BytesMut, tag: u8) -> Result<(), ProtocolError> {
    write_message(buf, Some(tag), |_| Ok(()))
}

/// An Authentication* message: request code and method-specific data.
fn auth(buf: &mut BytesMut, code: i32, data: &[u8]) -> Result<(), ProtocolError> {
    write_message(buf, Some(b'R'), |b| {
        b.put_i32(code);
        b.put_slice(data);
        Ok(())
    })
}

fn write_negotiate(
    buf: &mut BytesMut,
    newest_minor: u16,
    options: &[&str],
) -> Result<(), ProtocolError> {
    write_message(buf, Some(b'v'), |b| {
        b.put_i32(0x0003_0000 | i32::from(newest_minor));
        b.put_i32(to_i32(options.len(), "option count")?);
        for opt in options {
            put_cstr(b, opt.as_bytes(), "protocol option")?;
        }
        Ok(())
    })
}

fn write_row_description(
    buf: &mut BytesMut,
    columns: &[RowDescriptor<'_>],
) -> Result<(), ProtocolError> {
    write_message(buf, Some(b'T'), |b| {
        b.put_i16(to_i16(columns.len(), "column count")?);
        for c in columns {
            put_cstr(b, c.name.as_bytes(), "column name")?;
            b.put_u32(c.table_oid);
            b.put_i16(c.column_attnum);
            b.put_u32(c.type_oid);
            b.put_i16(c.type_len);
            b.put_i32(c.type_modifier);
            b.put_i16(c.format.code());
        }
        Ok(())
    })
}

fn write_data_row(buf: &mut BytesMut, values: &[Option<&[u8]>]) -> Result<(), ProtocolError> {
    write_message(buf, Some(b'D'), |b| {
        b.put_i16(to_i16(values.len(), "column count")?);
        for v in values {
            match v {
                None => b.put_i32(-1),
                Some(data) => {
                    b.put_i32(to_i32(data.len(), "column value length")?);
                    b.put_slice(data);
                }
            }
        }
        Ok(())
    })
}

fn write_diagnostic(buf: &mut BytesMut, tag: u8, d: &Diagnostic) -> Result<(), ProtocolError> {
    write_message(buf, Some(tag), |b| {
        let severity = d.severity.as_str();
        put_field(b, b'S', severity);
        put_field(b, b'V', severity);
        put_field(b, b'C', d.code.as_str());
        put_field(b, b'M', &d.message);
        if let Some(detail) = &d.detail {
            put_field(b, b'D', detail);
        }
        if let Some(hint) = &d.hint {
            put_field(b, b'H', hint);
        }
        b.put_u8(0);
        Ok(())
    })
}

/// One diagnostic field: type byte and NUL-terminated text, NULs replaced.
fn put_field(b: &mut BytesMut, field: u8, text: &str) {
    b.put_u8(field);
    let mut parts = text.split('\0');
    if let Some(first) = parts.next() {
        b.put_slice(first.as_bytes());
    }
    for part in parts {
        b.put_slice("\u{fffd}".as_bytes());
        b.put_slice(part.as_bytes());
    }
    b.put_u8(0);
}

fn write_copy_response(
    buf: &mut BytesMut,
    tag: u8,
    r: &CopyResponse<'_>,
) -> Result<(), ProtocolError> {
    write_message(buf, Some(tag), |b| {
        b.put_u8(r.format.code() as u8);
        b.put_i16(to_i16(r.column_formats.len(), "column count")?);
        for f in r.column_formats {
            b.put_i16(f.code());
        }
        Ok(())
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use postgres_protocol::message::backend::{DataRowBody, RowDescriptionBody};
    use postgres_protocol::message::backend::{ErrorFields, Message};
    use utils::lsn::Lsn;

    use crate::replication::{PgTimestamp, ServerReplicationMessage};

    /// Encodes `msg` and decodes it with postgres-protocol's independent parser.
    fn round_trip(msg: BeMessage<'_>) -> Message {
        let mut buf = BytesMut::new();
        msg.write(&mut buf).unwrap();
        let parsed = Message::parse(&mut buf).unwrap().expect("complete message");
        assert!(buf.is_empty(), "{msg:?} left {} bytes", buf.len());
        parsed
    }

    fn encode(msg: BeMessage<'_>) -> Vec<u8> {
        let mut buf = BytesMut::new();
        msg.write(&mut buf).unwrap();
        buf.to_vec()
    }

    #[test]
    fn startup_messages() {
        assert!(matches!(
            round_trip(BeMessage::AuthenticationOk),
            Message::AuthenticationOk
        ));
        assert!(matches!(
            round_trip(BeMessage::AuthenticationCleartextPassword),
            Message::AuthenticationCleartextPassword
        ));
        let Message::AuthenticationMd5Password(body) =
            round_trip(BeMessage::AuthenticationMd5Password { salt: [1, 2, 3, 4] })
        else {
            panic!("expected md5 request");
        };
        assert_eq!(body.salt(), [1, 2, 3, 4]);
        let Message::ParameterStatus(body) = round_trip(BeMessage::ParameterStatus {
            name: "server_version",
            value: "15.0",
        }) else {
            panic!("expected ParameterStatus");
        };
        assert_eq!(
            (body.name().unwrap(), body.value().unwrap()),
            ("server_version", "15.0")
        );
        let key = CancelKeyData {
            backend_pid: 7,
            cancel_key: -3,
        };
        let Message::BackendKeyData(body) = round_trip(BeMessage::BackendKeyData(key)) else {
            panic!("expected BackendKeyData");
        };
        assert_eq!((body.process_id(), body.secret_key()), (7, -3));
        for (status, byte) in [
            (TransactionStatus::Idle, b'I'),
            (TransactionStatus::InBlock, b'T'),
            (TransactionStatus::Failed, b'E'),
        ] {
            let Message::ReadyForQuery(body) = round_trip(BeMessage::ReadyForQuery(status)) else {
                panic!("expected ReadyForQuery");
            };
            assert_eq!(body.status(), byte);
        }
        assert_eq!(
            encode(BeMessage::NegotiateProtocolVersion {
                newest_minor: 0,
                unrecognized_options: &["_pq_.x"],
            }),
            b"v\0\0\0\x13\0\x03\0\0\0\0\0\x01_pq_.x\0"
        );
    }

    fn columns(body: &RowDescriptionBody) -> Vec<(String, u32, i16, i32, i16)> {
        use postgres_protocol::message::backend::Field;
        let mut out = Vec::new();
        let mut fields = body.fields();
        while let Some(f) = fallible_iterator::FallibleIterator::next(&mut fields).unwrap() {
            let f: Field<'_> = f;
            out.push((
                f.name().to_string(),
                f.type_oid(),
                f.type_size(),
                f.type_modifier(),
                f.format(),
            ));
        }
        out
    }

    fn values(body: &DataRowBody) -> Vec<Option<Vec<u8>>> {
        let buf = body.buffer();
        let mut out = Vec::new();
        let mut ranges = body.ranges();
        while let Some(r) = fallible_iterator::FallibleIterator::next(&mut ranges).unwrap() {
            out.push(r.map(|r| buf[r].to_vec()));
        }
        out
    }

    #[test]
    fn query_results() {
        let cols = [RowDescriptor::text("name"), RowDescriptor::int8("n")];
        let Message::RowDescription(body) = round_trip(BeMessage::RowDescription(&cols)) else {
            panic!("expected RowDescription");
        };
        assert_eq!(
            columns(&body),
            vec![
                ("name".into(), oid::TEXT, -1, -1, 0),
                ("n".into(), oid::INT8, 8, -1, 0)
            ]
        );
        let row: [Option<&[u8]>; 3] = [Some(b"abc"), None, Some(b"")];
        let Message::DataRow(body) = round_trip(BeMessage::DataRow(&row)) else {
            panic!("expected DataRow");
        };
        assert_eq!(
            values(&body),
            vec![Some(b"abc".to_vec()), None, Some(vec![])]
        );
        let Message::CommandComplete(body) = round_trip(BeMessage::CommandComplete("SELECT 1"))
        else {
            panic!("expected CommandComplete");
        };
        assert_eq!(body.tag().unwrap(), "SELECT 1");
        assert!(matches!(
            round_trip(BeMessage::EmptyQueryResponse),
            Message::EmptyQueryResponse
        ));
        assert!(matches!(round_trip(BeMessage::NoData), Message::NoData));
        assert!(matches!(
            round_trip(BeMessage::ParseComplete),
            Message::ParseComplete
        ));
        assert!(matches!(
            round_trip(BeMessage::BindComplete),
            Message::BindComplete
        ));
        assert!(matches!(
            round_trip(BeMessage::CloseComplete),
            Message::CloseComplete
        ));
    }

    fn error_fields(mut fields: ErrorFields<'_>) -> Vec<(u8, String)> {
        let mut out = Vec::new();
        while let Some(f) = fallible_iterator::FallibleIterator::next(&mut fields).unwrap() {
            out.push((
                f.type_(),
                String::from_utf8(f.value_bytes().to_vec()).unwrap(),
            ));
        }
        out
    }

    #[test]
    fn error_and_notice() {
        let d = Diagnostic::new(Severity::Error, SqlState::SYNTAX_ERROR, "bad\0query")
            .with_detail("near X")
            .with_hint("try Y");
        let Message::ErrorResponse(body) = round_trip(BeMessage::ErrorResponse(&d)) else {
            panic!("expected ErrorResponse");
        };
        let expected = [
            (b'S', "ERROR"),
            (b'V', "ERROR"),
            (b'C', "42601"),
            (b'M', "bad\u{fffd}query"),
            (b'D', "near X"),
            (b'H', "try Y"),
        ];
        let expected: Vec<_> = expected.iter().map(|(t, v)| (*t, v.to_string())).collect();
        assert_eq!(error_fields(body.fields()), expected);

        let n = Diagnostic::new(Severity::Notice, SqlState::SUCCESSFUL_COMPLETION, "fyi");
        let Message::NoticeResponse(body) = round_trip(BeMessage::NoticeResponse(&n)) else {
            panic!("expected NoticeResponse");
        };
        assert_eq!(error_fields(body.fields()).len(), 4);
    }

    #[test]
    fn copy_messages() {
        let fmts = [Format::Binary, Format::Binary];
        let resp = CopyResponse {
            format: Format::Binary,
            column_formats: &fmts,
        };
        let Message::CopyInResponse(body) = round_trip(BeMessage::CopyInResponse(resp)) else {
            panic!("expected CopyInResponse");
        };
        assert_eq!(body.format(), 1);
        let Message::CopyOutResponse(body) =
            round_trip(BeMessage::CopyOutResponse(CopyResponse::UNSTRUCTURED))
        else {
            panic!("expected CopyOutResponse");
        };
        assert_eq!(body.format(), 0);
        assert_eq!(
            encode(BeMessage::CopyBothResponse(CopyResponse::UNSTRUCTURED)),
            b"W\0\0\0\x07\0\0\0"
        );
        let Message::CopyData(body) = round_trip(BeMessage::CopyData(b"xyz")) else {
            panic!("expected CopyData");
        };
        assert_eq!(body.data(), b"xyz");
        assert!(matches!(round_trip(BeMessage::CopyDone), Message::CopyDone));
    }

    #[test]
    fn replication_in_copy_data() {
        let x = XLogData {
            wal_start: Lsn(0x100),
            wal_end: Lsn(0x200),
            timestamp: PgTimestamp(5),
            data: Bytes::from_static(b"wal"),
        };
        let Message::CopyData(body) = round_trip(BeMessage::XLogData(&x)) else {
            panic!("expected CopyData");
        };
        let decoded = ServerReplicationMessage::decode(Bytes::copy_from_slice(body.data()));
        assert_eq!(decoded, Ok(ServerReplicationMessage::XLogData(x)));
        let k = PrimaryKeepalive {
            wal_end: Lsn(9),
            timestamp: PgTimestamp(-1),
            reply_requested: true,
        };
        let Message::CopyData(body) = round_trip(BeMessage::PrimaryKeepalive(&k)) else {
            panic!("expected CopyData");
        };
        let decoded = ServerReplicationMessage::decode(Bytes::copy_from_slice(body.data()));
        assert_eq!(decoded, Ok(ServerReplicationMessage::PrimaryKeepalive(k)));
    }

    #[test]
    fn unencodable_messages_fail_cleanly() {
        let mut buf = BytesMut::new();
        let err = BeMessage::CommandComplete("a\0b").write(&mut buf);
        assert_eq!(
            err,
            Err(ProtocolError::InteriorNul {
                what: "command tag"
            })
        );
        let too_many = vec![None; 40_000];
        let err = BeMessage::DataRow(&too_many).write(&mut buf);
        assert!(matches!(err, Err(ProtocolError::InvalidValue { .. })));
        assert!(buf.is_empty());
    }
}

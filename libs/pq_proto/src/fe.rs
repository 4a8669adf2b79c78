//! Frontend (client → server) messages: startup packets and typed messages.
//!
//! Both kinds are framed by a big-endian `i32` length that counts itself but
//! not the type byte. Typed messages start with a type byte; startup packets
//! have none and are told apart by the 32-bit code after the length.

use std::collections::BTreeMap;

use bytes::{Buf, Bytes, BytesMut};

use crate::codec::BodyReader;
use crate::error::ProtocolError;
use crate::{CancelKeyData, Format};

/// Largest startup packet accepted, length word included (PostgreSQL's limit).
pub const MAX_STARTUP_PACKET_LEN_BYTES: usize = 10_000;

/// Largest typed message accepted, length word included: 1 GiB, PostgreSQL's
/// limit for its largest messages. Connections usually configure less.
pub const MAX_MESSAGE_LEN_BYTES: usize = 1 << 30;

/// Startup code of an SSLRequest.
pub const SSL_REQUEST_CODE: u32 = (1234 << 16) | 5679;
/// Startup code of a GSSENCRequest.
pub const GSSENC_REQUEST_CODE: u32 = (1234 << 16) | 5680;
/// Startup code of a CancelRequest.
pub const CANCEL_REQUEST_CODE: u32 = (1234 << 16) | 5678;

/// Length of a startup packet's length word plus its code.
const STARTUP_HEADER_LEN_BYTES: usize = 8;
/// Length of a CancelRequest: length, code, pid and secret key.
const CANCEL_REQUEST_LEN_BYTES: usize = 16;

/// A protocol version from a StartupMessage.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct ProtocolVersion {
    pub major: u16,
    pub minor: u16,
}

impl ProtocolVersion {
    /// Protocol 3.0, the one this crate speaks.
    pub const V3_0: ProtocolVersion = ProtocolVersion { major: 3, minor: 0 };

    fn from_code(code: u32) -> Self {
        ProtocolVersion {
            major: (code >> 16) as u16,
            minor: (code & 0xffff) as u16,
        }
    }
}

/// The name/value parameters of a StartupMessage (`user`, `database`, ...).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StartupParams(BTreeMap<String, String>);

impl StartupParams {
    /// The value of a parameter, if the client sent it.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.0.get(name).map(String::as_str)
    }

    /// The `user` parameter.
    pub fn user(&self) -> Option<&str> {
        self.get("user")
    }

    /// The `database` parameter, defaulting to the user name as PostgreSQL does.
    pub fn database(&self) -> Option<&str> {
        self.get("database").or_else(|| self.user())
    }

    /// All parameters, ordered by name.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.0.iter().map(|(k, v)| (k.as_str(), v.as_str()))
    }

    /// Sets a parameter, replacing any previous value.
    pub fn insert(&mut self, name: impl Into<String>, value: impl Into<String>) {
        self.0.insert(name.into(), value.into());
    }
}

/// The first packet of a connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FeStartupPacket {
    /// The client asks for TLS; the server answers `S` or `N`.
    SslRequest,
    /// The client asks for GSSAPI encryption; the server answers `G` or `N`.
    GssEncRequest,
    /// A request, on a fresh connection, to cancel another one's query.
    CancelRequest(CancelKeyData),
    /// The real start of a session.
    StartupMessage {
        version: ProtocolVersion,
        params: StartupParams,
    },
}

impl FeStartupPacket {
    /// Takes one startup packet off the front of `buf`.
    ///
    /// Returns `Ok(None)`, consuming nothing, if `buf` does not yet hold the
    /// whole packet. Rejects lengths below 8 or above
    /// [`MAX_STARTUP_PACKET_LEN_BYTES`] as soon as the length word is in.
    pub fn decode(buf: &mut BytesMut) -> Result<Option<FeStartupPacket>, ProtocolError> {
        let Some(len) = peek_len(
            buf,
            0,
            STARTUP_HEADER_LEN_BYTES,
            MAX_STARTUP_PACKET_LEN_BYTES,
        )?
        else {
            return Ok(None);
        };
        if buf.len() < len {
            return Ok(None);
        }
        let mut frame = buf.split_to(len).freeze();
        frame.advance(4);
        Self::parse_body(frame).map(Some)
    }

    /// Parses a packet body: everything after the length word.
    pub fn parse_body(body: Bytes) -> Result<FeStartupPacket, ProtocolError> {
        let total_len = body.len() + 4;
        let mut r = BodyReader::new(body);
        let code = r.u32("startup code")?;
        match code {
            SSL_REQUEST_CODE => {
                r.finish("SSLRequest")?;
                Ok(FeStartupPacket::SslRequest)
            }
            GSSENC_REQUEST_CODE => {
                r.finish("GSSENCRequest")?;
                Ok(FeStartupPacket::GssEncRequest)
            }
            CANCEL_REQUEST_CODE => parse_cancel(&mut r, total_len),
            _ => parse_startup_message(&mut r, code),
        }
    }

    /// A short name for logs and errors.
    pub fn name(&self) -> &'static str {
        match self {
            FeStartupPacket::SslRequest => "SSLRequest",
            FeStartupPacket::GssEncRequest => "GSSENCRequest",
            FeStartupPacket::CancelRequest(_) => "CancelRequest",
            FeStartupPacket::StartupMessage { .. } => "StartupMessage",
        }
    }
}

fn parse_cancel(r: &mut BodyReader, total_len: usize) -> Result<FeStartupPacket, ProtocolError> {
    if total_len != CANCEL_REQUEST_LEN_BYTES {
        return Err(ProtocolError::InvalidValue {
            what: "CancelRequest length",
            value: total_len as i64,
        });
    }
    let backend_pid = r.i32("CancelRequest process id")?;
    let cancel_key = r.i32("CancelRequest secret key")?;
    Ok(FeStartupPacket::CancelRequest(CancelKeyData {
        backend_pid,
        cancel_key,
    }))
}

fn parse_startup_message(r: &mut BodyReader, code: u32) -> Result<FeStartupPacket, ProtocolError> {
    let version = ProtocolVersion::from_code(code);
    if version.major != 3 {
        return Err(ProtocolError::UnsupportedProtocolVersion(code));
    }
    let mut params = StartupParams::default();
    loop {
        let name = r.cstr("startup parameter name")?;
        if name.is_empty() {
            break;
        }
        let value = r.cstr("startup parameter value")?;
        params.insert(name, value);
    }
    r.finish("StartupMessage")?;
    Ok(FeStartupPacket::StartupMessage { version, params })
}

/// Reads the length word at `offset` if it is in `buf`, checking its bounds.
/// Returns the frame length including the length word but not a type byte.
fn peek_len(
    buf: &[u8],
    offset: usize,
    min: usize,
    max_bytes: usize,
) -> Result<Option<usize>, ProtocolError> {
    let Some(word) = buf.get(offset..offset + 4) else {
        return Ok(None);
    };
    let len = i32::from_be_bytes([word[0], word[1], word[2], word[3]]);
    let Ok(len) = usize::try_from(len) else {
        return Err(ProtocolError::LengthTooShort {
            len: len.into(),
            min,
        });
    };
    if len < min {
        return Err(ProtocolError::LengthTooShort {
            len: len as i64,
            min,
        });
    }
    if len > max_bytes {
        return Err(ProtocolError::MessageTooLong {
            len: len as u64,
            max_bytes,
        });
    }
    Ok(Some(len))
}

/// Target of a Describe or Close message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ObjectKind {
    /// A prepared statement (`S`).
    Statement,
    /// A portal (`P`).
    Portal,
}

impl ObjectKind {
    fn parse(b: u8, what: &'static str) -> Result<ObjectKind, ProtocolError> {
        match b {
            b'S' => Ok(ObjectKind::Statement),
            b'P' => Ok(ObjectKind::Portal),
            _ => Err(ProtocolError::InvalidValue {
                what,
                value: b.into(),
            }),
        }
    }
}

/// Parse ('P'): prepare a statement.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParseMessage {
    /// Statement name; empty for the unnamed statement.
    pub name: String,
    pub query: String,
    /// Parameter type OIDs; 0 leaves a type unspecified.
    pub param_types: Vec<u32>,
}

/// Bind ('B'): create a portal from a prepared statement and parameters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BindMessage {
    pub portal: String,
    pub statement: String,
    /// Empty (all text), one (applies to all) or one per parameter.
    pub param_formats: Vec<Format>,
    /// Parameter values; `None` is SQL NULL.
    pub params: Vec<Option<Bytes>>,
    /// Empty (all text), one (applies to all) or one per result column.
    pub result_formats: Vec<Format>,
}

/// Describe ('D'): ask for a statement's or portal's description.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DescribeMessage {
    pub kind: ObjectKind,
    pub name: String,
}

/// Execute ('E'): run a portal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExecuteMessage {
    pub portal: String,
    /// Maximum rows to return; 0 means no limit.
    pub max_rows: i32,
}

/// Close ('C'): close a statement or portal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CloseMessage {
    pub kind: ObjectKind,
    pub name: String,
}

/// A typed frontend message, sent after the startup phase.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FeMessage {
    /// Simple query ('Q').
    Query(String),
    Parse(ParseMessage),
    Bind(BindMessage),
    Describe(DescribeMessage),
    Execute(ExecuteMessage),
    Close(CloseMessage),
    /// Sync ('S'): end of an extended-query batch.
    Sync,
    /// Flush ('H'): send pending output.
    Flush,
    /// Terminate ('X'): the client is closing the connection.
    Terminate,
    /// PasswordMessage ('p'): the raw body, whose meaning depends on the
    /// authentication method (cleartext or MD5 password, SASL data, ...).
    PasswordMessage(Bytes),
    /// CopyData ('d').
    CopyData(Bytes),
    /// CopyDone ('c').
    CopyDone,
    /// CopyFail ('f') with the client's reason.
    CopyFail(String),
}

impl FeMessage {
    /// Takes one typed message off the front of `buf`.
    ///
    /// Returns `Ok(None)`, consuming nothing, if the message is not complete.
    /// Rejects a length below 4 or above `max_len_bytes` (capped at
    /// [`MAX_MESSAGE_LEN_BYTES`]) as soon as the header is in, so that the
    /// caller never buffers more than that.
    pub fn decode(
        buf: &mut BytesMut,
        max_len_bytes: usize,
    ) -> Result<Option<FeMessage>, ProtocolError> {
        let max_bytes = max_len_bytes.min(MAX_MESSAGE_LEN_BYTES);
        let Some(&tag) = buf.first() else {
            return Ok(None);
        };
        let Some(len) = peek_len(buf, 1, 4, max_bytes)? else {
            return Ok(None);
        };
        if buf.len() < len + 1 {
            return Ok(None);
        }
        let mut frame = buf.split_to(len + 1).freeze();
        frame.advance(5);
        Self::parse(tag, frame).map(Some)
    }

    /// Parses a message body (after the type byte and length word).
    pub fn parse(tag: u8, body: Bytes) -> Result<FeMessage, ProtocolError> {
        let mut r = BodyReader::new(body);
        let msg = match tag {
            b'Q' => FeMessage::Query(r.cstr("query string")?),
            b'P' => FeMessage::Parse(parse_parse(&mut r)?),
            b'B' => FeMessage::Bind(parse_bind(&mut r)?),
            b'D' => FeMessage::Describe(DescribeMessage {
                kind: ObjectKind::parse(r.u8("Describe target")?, "Describe target")?,
                name: r.cstr("Describe name")?,
            }),
            b'E' => FeMessage::Execute(ExecuteMessage {
                portal: r.cstr("Execute portal")?,
                max_rows: r.i32("Execute row limit")?,
            }),
            b'C' => FeMessage::Close(CloseMessage {
                kind: ObjectKind::parse(r.u8("Close target")?, "Close target")?,
                name: r.cstr("Close name")?,
            }),
            b'S' => FeMessage::Sync,
            b'H' => FeMessage::Flush,
            b'X' => FeMessage::Terminate,
            b'p' => FeMessage::PasswordMessage(r.rest()),
            b'd' => FeMessage::CopyData(r.rest()),
            b'c' => FeMessage::CopyDone,
            b'f' => {
                let reason = r.cstr_bytes("CopyFail reason")?;
                FeMessage::CopyFail(String::from_utf8_lossy(&reason).into_owned())
            }
            other => return Err(ProtocolError::UnknownMessageTag(other)),
        };
        r.finish(msg.name())?;
        Ok(msg)
    }

    /// The message's protocol name, for logs and errors.
    pub fn name(&self) -> &'static str {
        match self {
            FeMessage::Query(_) => "Query",
            FeMessage::Parse(_) => "Parse",
            FeMessage::Bind(_) => "Bind",
            FeMessage::Describe(_) => "Describe",
            FeMessage::Execute(_) => "Execute",
            FeMessage::Close(_) => "Close",
            FeMessage::Sync => "Sync",
            FeMessage::Flush => "Flush",
            FeMessage::Terminate => "Terminate",
            FeMessage::PasswordMessage(_) => "PasswordMessage",
            FeMessage::CopyData(_) => "CopyData",
            FeMessage::CopyDone => "CopyDone",
            FeMessage::CopyFail(_) => "CopyFail",
        }
    }
}

fn parse_parse(r: &mut BodyReader) -> Result<ParseMessage, ProtocolError> {
    let name = r.cstr("Parse statement name")?;
    let query = r.cstr("Parse query")?;
    let n = r.count("Parse parameter count")?;
    let mut param_types = Vec::with_capacity(n.min(r.remaining() / 4));
    for _ in 0..n {
        param_types.push(r.u32("Parse parameter type")?);
    }
    Ok(ParseMessage {
        name,
        query,
        param_types,
    })
}

fn parse_bind(r: &mut BodyReader) -> Result<BindMessage, ProtocolError> {
    let portal = r.cstr("Bind portal name")?;
    let statement = r.cstr("Bind statement name")?;
    let param_formats = parse_formats(r, "Bind parameter format")?;
    let n = r.count("Bind parameter count")?;
    let mut params = Vec::with_capacity(n.min(r.remaining() / 4));
    for _ in 0..n {
        params.push(parse_nullable(r)?);
    }
    let result_formats = parse_formats(r, "Bind result format")?;
    Ok(BindMessage {
        portal,
        statement,
        param_formats,
        params,
        result_formats,
    })
}

fn parse_formats(r: &mut BodyReader, what: &'static str) -> Result<Vec<Format>, ProtocolError> {
    let n = r.count(what)?;
    let mut formats = Vec::with_capacity(n.min(r.remaining() / 2));
    for _ in 0..n {
        formats.push(Format::from_code(r.i16(what)?)?);
    }
    Ok(formats)
}

/// A length-prefixed value where length -1 means NULL.
fn parse_nullable(r: &mut BodyReader) -> Result<Option<Bytes>, ProtocolError> {
    const WHAT: &str = "Bind parameter value";
    let len = r.i32(WHAT)?;
    if len == -1 {
        return Ok(None);
    }
    let len = usize::try_from(len).map_err(|_| ProtocolError::InvalidValue {
        what: "Bind parameter length",
        value: len.into(),
    })?;
    r.bytes(len, WHAT).map(Some)
}

#[cfg(test)]
mod tests {
    use super::*;
    use postgres_protocol::message::frontend;

    fn startup(bytes: &[u8]) -> Result<Option<FeStartupPacket>, ProtocolError> {
        FeStartupPacket::decode(&mut BytesMut::from(bytes))
    }

    #[test]
    fn startup_message_with_params() {
        let mut buf = BytesMut::new();
        frontend::startup_message([("user", "alice"), ("application_name", "psql")], &mut buf)
            .unwrap();
        buf.extend_from_slice(b"next");
        let packet = FeStartupPacket::decode(&mut buf).unwrap().unwrap();
        let FeStartupPacket::StartupMessage { version, params } = packet else {
            panic!("not a startup message: {packet:?}");
        };
        assert_eq!(version, ProtocolVersion::V3_0);
        assert_eq!(params.user(), Some("alice"));
        assert_eq!(params.database(), Some("alice"));
        assert_eq!(params.get("application_name"), Some("psql"));
        assert_eq!(params.iter().count(), 2);
        assert_eq!(&buf[..], b"next");
    }

    #[test]
    fn ssl_gss_and_cancel_requests() {
        let mut buf = BytesMut::new();
        frontend::ssl_request(&mut buf);
        assert_eq!(
            FeStartupPacket::decode(&mut buf),
            Ok(Some(FeStartupPacket::SslRequest))
        );
        let gss = [0, 0, 0, 8, 0x04, 0xd2, 0x16, 0x30];
        assert_eq!(startup(&gss), Ok(Some(FeStartupPacket::GssEncRequest)));
        frontend::cancel_request(42, -7, &mut buf);
        assert_eq!(
            FeStartupPacket::decode(&mut buf),
            Ok(Some(FeStartupPacket::CancelRequest(CancelKeyData {
                backend_pid: 42,
                cancel_key: -7
            })))
        );
        assert!(buf.is_empty());
    }

    #[test]
    fn startup_rejects_bad_packets() {
        assert_eq!(startup(&[0, 0, 0]), Ok(None));
        assert_eq!(startup(&[0, 0, 0, 12, 0, 3, 0, 0]), Ok(None));
        assert!(matches!(
            startup(&[0, 0, 0, 4]),
            Err(ProtocolError::LengthTooShort { .. })
        ));
        assert!(matches!(
            startup(&[0xff, 0xff, 0xff, 0xff]),
            Err(ProtocolError::LengthTooShort { len: -1, .. })
        ));
        assert!(matches!(
            startup(&[0, 1, 0, 0]),
            Err(ProtocolError::MessageTooLong { len: 65536, .. })
        ));
        // Protocol 2.0.
        assert_eq!(
            startup(&[0, 0, 0, 9, 0, 2, 0, 0, 0]),
            Err(ProtocolError::UnsupportedProtocolVersion(0x20000))
        );
        // Parameters without the final terminator.
        assert!(matches!(
            startup(b"\0\0\0\x0d\0\x03\0\0user\0"),
            Err(ProtocolError::MissingNul { .. })
        ));
        // SSLRequest with a trailing byte.
        assert!(matches!(
            startup(&[0, 0, 0, 9, 0x04, 0xd2, 0x16, 0x2f, 0]),
            Err(ProtocolError::TrailingBytes { .. })
        ));
    }

    fn decode_one(buf: &BytesMut) -> Result<Option<FeMessage>, ProtocolError> {
        FeMessage::decode(&mut buf.clone(), MAX_MESSAGE_LEN_BYTES)
    }

    #[test]
    fn simple_messages() {
        let mut buf = BytesMut::new();
        frontend::query("SELECT 1", &mut buf).unwrap();
        assert_eq!(
            decode_one(&buf),
            Ok(Some(FeMessage::Query("SELECT 1".into())))
        );
        for (write, expected) in [
            (frontend::sync as fn(&mut BytesMut), FeMessage::Sync),
            (frontend::flush, FeMessage::Flush),
            (frontend::terminate, FeMessage::Terminate),
            (frontend::copy_done, FeMessage::CopyDone),
        ] {
            let mut buf = BytesMut::new();
            write(&mut buf);
            assert_eq!(decode_one(&buf), Ok(Some(expected)));
        }
        let mut buf = BytesMut::new();
        frontend::copy_fail("oops", &mut buf).unwrap();
        assert_eq!(
            decode_one(&buf),
            Ok(Some(FeMessage::CopyFail("oops".into())))
        );
        let mut buf = BytesMut::new();
        frontend::password_message(b"secret", &mut buf).unwrap();
        assert_eq!(
            decode_one(&buf),
            Ok(Some(FeMessage::PasswordMessage(Bytes::from_static(
                b"secret\0"
            ))))
        );
        let mut buf = BytesMut::new();
        frontend::CopyData::new(&b"payload"[..])
            .unwrap()
            .write(&mut buf);
        assert_eq!(
            decode_one(&buf),
            Ok(Some(FeMessage::CopyData(Bytes::from_static(b"payload"))))
        );
    }

    #[test]
    fn extended_query_messages() {
        let mut buf = BytesMut::new();
        frontend::parse("s1", "SELECT $1", [23], &mut buf).unwrap();
        frontend::bind(
            "p1",
            "s1",
            [1],
            [Some(&b"\0\0\0\x05"[..]), None],
            |v, buf| match v {
                Some(v) => {
                    buf.extend_from_slice(v);
                    Ok(postgres_protocol::IsNull::No)
                }
                None => Ok(postgres_protocol::IsNull::Yes),
            },
            [0],
            &mut buf,
        )
        .ok()
        .expect("Bind encodes");
        frontend::describe(b'P', "p1", &mut buf).unwrap();
        frontend::execute("p1", 10, &mut buf).unwrap();
        frontend::close(b'S', "s1", &mut buf).unwrap();

        let mut msgs = Vec::new();
        while let Some(m) = FeMessage::decode(&mut buf, 1024).unwrap() {
            msgs.push(m);
        }
        assert_eq!(
            msgs,
            vec![
                FeMessage::Parse(ParseMessage {
                    name: "s1".into(),
                    query: "SELECT $1".into(),
                    param_types: vec![23],
                }),
                FeMessage::Bind(BindMessage {
                    portal: "p1".into(),
                    statement: "s1".into(),
                    param_formats: vec![Format::Binary],
                    params: vec![Some(Bytes::from_static(b"\0\0\0\x05")), None],
                    result_formats: vec![Format::Text],
                }),
                FeMessage::Describe(DescribeMessage {
                    kind: ObjectKind::Portal,
                    name: "p1".into()
                }),
                FeMessage::Execute(ExecuteMessage {
                    portal: "p1".into(),
                    max_rows: 10
                }),
                FeMessage::Close(CloseMessage {
                    kind: ObjectKind::Statement,
                    name: "s1".into()
                }),
            ]
        );
    }

    #[test]
    fn rejects_malformed_messages() {
        let check = |bytes: &[u8], max: usize| FeMessage::decode(&mut BytesMut::from(bytes), max);
        assert_eq!(check(b"Q\0\0", 100), Ok(None));
        assert_eq!(check(b"Q\0\0\0\x09abc", 100), Ok(None));
        assert!(matches!(
            check(b"Q\0\0\0\x03", 100),
            Err(ProtocolError::LengthTooShort { .. })
        ));
        assert!(matches!(
            check(b"d\0\0\x10\0", 100),
            Err(ProtocolError::MessageTooLong { .. })
        ));
        assert_eq!(
            check(b"z\0\0\0\x04", 100),
            Err(ProtocolError::UnknownMessageTag(b'z'))
        );
        assert!(matches!(
            check(b"S\0\0\0\x05x", 100),
            Err(ProtocolError::TrailingBytes { .. })
        ));
        assert!(matches!(
            check(b"Q\0\0\0\x06ab", 100),
            Err(ProtocolError::MissingNul { .. })
        ));
        assert!(matches!(
            check(b"D\0\0\0\x07Xa\0", 100),
            Err(ProtocolError::InvalidValue { .. })
        ));
        // Bind whose parameter length is below -1.
        let bind = b"B\0\0\0\x10\0\0\0\0\0\x01\xff\xff\xff\xfe\0\0";
        assert!(matches!(
            check(bind, 100),
            Err(ProtocolError::InvalidValue { value: -2, .. })
        ));
        // Bind claiming more parameter bytes than there are.
        let bind = b"B\0\0\0\x10\0\0\0\0\0\x01\0\0\0\x09\0\0";
        assert!(matches!(
            check(bind, 100),
            Err(ProtocolError::Truncated { .. })
        ));
    }
}

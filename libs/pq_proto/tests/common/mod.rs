//! A minimal raw protocol client and a toy handler shared by the integration tests.
#![allow(dead_code)] // Each test crate uses a different subset.

use std::time::Duration;

use bytes::{Buf, Bytes, BytesMut};
use postgres_protocol::message::frontend;
use pq_proto::be::{Diagnostic, RowDescriptor, Severity};
use pq_proto::{Handler, PostgresBackend, QueryError, SqlState};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// Bound on every wait in the tests.
pub const TEST_TIMEOUT: Duration = Duration::from_secs(10);

/// Largest backend message the raw client accepts.
const MAX_TEST_FRAME_LEN_BYTES: usize = 1 << 20;

/// Reads one backend message: its type byte and body. `None` on clean EOF.
pub async fn read_frame<S: AsyncRead + Unpin>(stream: &mut S) -> Option<(u8, Bytes)> {
    let mut header = [0u8; 5];
    match stream.read_exact(&mut header).await {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return None,
        Err(e) => panic!("read failed: {e}"),
    }
    let len = u32::from_be_bytes([header[1], header[2], header[3], header[4]]) as usize;
    assert!(
        (4..MAX_TEST_FRAME_LEN_BYTES).contains(&len),
        "bad length {len}"
    );
    let mut body = vec![0u8; len - 4];
    stream.read_exact(&mut body).await.expect("message body");
    Some((header[0], Bytes::from(body)))
}

/// Reads messages up to and including ReadyForQuery; returns their type bytes and bodies.
pub async fn read_until_ready<S: AsyncRead + Unpin>(stream: &mut S) -> Vec<(u8, Bytes)> {
    let mut out = Vec::new();
    loop {
        let frame = tokio::time::timeout(TEST_TIMEOUT, read_frame(stream))
            .await
            .expect("server answered in time")
            .expect("server did not close the connection");
        let done = frame.0 == b'Z';
        out.push(frame);
        if done {
            return out;
        }
    }
}

pub fn tags(frames: &[(u8, Bytes)]) -> String {
    frames.iter().map(|(t, _)| char::from(*t)).collect()
}

/// The SQLSTATE ('C' field) of an ErrorResponse body.
pub fn error_code(mut body: Bytes) -> String {
    while body.has_remaining() {
        let field = body.get_u8();
        if field == 0 {
            break;
        }
        let end = body
            .iter()
            .position(|&b| b == 0)
            .expect("NUL-terminated field");
        let value = body.split_to(end);
        body.advance(1);
        if field == b'C' {
            return String::from_utf8(value.to_vec()).unwrap();
        }
    }
    panic!("no SQLSTATE in error response");
}

pub async fn send<S: AsyncWrite + Unpin>(stream: &mut S, buf: &BytesMut) {
    stream.write_all(buf).await.unwrap();
    stream.flush().await.unwrap();
}

/// Sends a StartupMessage for user `alice` and reads up to ReadyForQuery.
pub async fn startup<S: AsyncRead + AsyncWrite + Unpin>(stream: &mut S) -> Vec<(u8, Bytes)> {
    let mut buf = BytesMut::new();
    frontend::startup_message([("user", "alice"), ("database", "db")], &mut buf).unwrap();
    send(stream, &buf).await;
    read_until_ready(stream).await
}

pub async fn query<S: AsyncRead + AsyncWrite + Unpin>(
    stream: &mut S,
    sql: &str,
) -> Vec<(u8, Bytes)> {
    let mut buf = BytesMut::new();
    frontend::query(sql, &mut buf).unwrap();
    send(stream, &buf).await;
    read_until_ready(stream).await
}

/// Answers `SELECT 1`, `SELECT rows` (three rows, one NULL) and `fatal`;
/// anything else is a syntax error.
pub struct ToyHandler;

impl<S: AsyncRead + AsyncWrite + Unpin + Send> Handler<S> for ToyHandler {
    async fn process_query(
        &mut self,
        pgb: &mut PostgresBackend<S>,
        query: &str,
    ) -> Result<(), QueryError> {
        match query.trim().trim_end_matches(';') {
            "SELECT 1" => {
                let rows = [[Some(&b"1"[..])]];
                pgb.send_query_result(&[RowDescriptor::int4("?column?")], rows)
                    .await?;
            }
            "SELECT rows" => {
                let columns = [RowDescriptor::text("name"), RowDescriptor::int8("n")];
                let rows: [[Option<&[u8]>; 2]; 3] = [
                    [Some(b"a"), Some(b"1")],
                    [Some(b"b"), None],
                    [Some(b""), Some(b"3")],
                ];
                pgb.send_query_result(&columns, rows).await?;
            }
            "fatal" => {
                let d = Diagnostic::new(Severity::Fatal, SqlState::INTERNAL_ERROR, "giving up");
                return Err(d.into());
            }
            other => {
                let d = Diagnostic::new(
                    Severity::Error,
                    SqlState::SYNTAX_ERROR,
                    format!("syntax error at or near \"{other}\""),
                )
                .with_hint("try SELECT 1");
                return Err(d.into());
            }
        }
        Ok(())
    }
}

//! The driver over an in-memory stream: COPY BOTH, the extended protocol,
//! authentication and the handling of malformed input.

mod common;

use bytes::{Bytes, BytesMut};
use common::{error_code, query, read_frame, read_until_ready, send, startup, tags, TEST_TIMEOUT};
use postgres_protocol::message::frontend;
use pq_proto::replication::{
    PrimaryKeepalive, ServerReplicationMessage, StandbyReplicationMessage, StandbyStatusUpdate,
    XLogData,
};
use pq_proto::{
    BeMessage, ConnectionError, FeMessage, Handler, HandshakeOutcome, PgTimestamp, PostgresBackend,
    ProtocolError, ProtocolState, QueryError, SqlState,
};
use tokio::io::{duplex, AsyncRead, AsyncWrite, AsyncWriteExt, DuplexStream};
use tokio::task::JoinHandle;
use utils::lsn::Lsn;
use utils::signals::CancellationToken;

const DUPLEX_BUF_LEN_BYTES: usize = 64 * 1024;

/// Streams a little WAL on `START_REPLICATION` and waits for the standby's
/// status update and CopyDone; otherwise behaves like the toy handler.
struct ReplicationHandler {
    received: Vec<StandbyReplicationMessage>,
}

impl ReplicationHandler {
    async fn stream_wal<S: AsyncRead + AsyncWrite + Unpin>(
        &mut self,
        pgb: &mut PostgresBackend<S>,
    ) -> Result<(), QueryError> {
        pgb.start_copy_both().await?;
        let xlog = XLogData {
            wal_start: Lsn(0x1000),
            wal_end: Lsn(0x1010),
            timestamp: PgTimestamp(1),
            data: Bytes::from_static(b"sixteen bytes!!!"),
        };
        pgb.write_message(&BeMessage::XLogData(&xlog)).await?;
        let keepalive = PrimaryKeepalive {
            wal_end: Lsn(0x1010),
            timestamp: PgTimestamp(2),
            reply_requested: true,
        };
        pgb.write_message(&BeMessage::PrimaryKeepalive(&keepalive))
            .await?;
        pgb.flush().await?;
        loop {
            match pgb.read_message().await? {
                Some(FeMessage::CopyData(payload)) => self
                    .received
                    .push(StandbyReplicationMessage::decode(payload)?),
                Some(FeMessage::CopyDone) => break,
                other => {
                    let msg = format!("unexpected message in COPY: {other:?}");
                    return Err(QueryError::sql(SqlState::PROTOCOL_VIOLATION, msg));
                }
            }
        }
        pgb.write_message(&BeMessage::CopyDone).await?;
        pgb.write_message(&BeMessage::CommandComplete("START_REPLICATION"))
            .await?;
        Ok(())
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin + Send> Handler<S> for ReplicationHandler {
    async fn process_query(
        &mut self,
        pgb: &mut PostgresBackend<S>,
        query: &str,
    ) -> Result<(), QueryError> {
        if query == "START_REPLICATION" {
            self.stream_wal(pgb).await
        } else {
            let mut toy = common::ToyHandler;
            toy.process_query(pgb, query).await
        }
    }
}

type ServerTask = JoinHandle<(Result<(), ConnectionError>, Vec<StandbyReplicationMessage>)>;

/// Runs a server on one end of an in-memory pipe; returns the other end.
fn start(max_message_len_bytes: usize) -> (DuplexStream, ServerTask, CancellationToken) {
    let (client, server) = duplex(DUPLEX_BUF_LEN_BYTES);
    let cancel = CancellationToken::new();
    let token = cancel.clone();
    let task = tokio::spawn(async move {
        let mut pgb = PostgresBackend::new(server).with_max_message_len(max_message_len_bytes);
        let mut handler = ReplicationHandler {
            received: Vec::new(),
        };
        let result = pgb.run(&mut handler, &token).await;
        assert_eq!(pgb.state(), ProtocolState::Closed);
        (result, handler.received)
    });
    (client, task, cancel)
}

async fn finish(task: ServerTask) -> (Result<(), ConnectionError>, Vec<StandbyReplicationMessage>) {
    tokio::time::timeout(TEST_TIMEOUT, task)
        .await
        .expect("server finished")
        .expect("server did not panic")
}

async fn terminate(stream: &mut DuplexStream) {
    let mut buf = BytesMut::new();
    frontend::terminate(&mut buf);
    send(stream, &buf).await;
}

#[tokio::test]
async fn copy_both_replication_exchange() {
    let (mut client, task, _cancel) = start(1024);
    startup(&mut client).await;
    let mut buf = BytesMut::new();
    frontend::query("START_REPLICATION", &mut buf).unwrap();
    send(&mut client, &buf).await;

    let (tag, body) = read_frame(&mut client).await.unwrap();
    assert_eq!((tag, &body[..]), (b'W', &[0, 0, 0][..]), "CopyBothResponse");
    let mut server_msgs = Vec::new();
    for _ in 0..2 {
        let (tag, body) = read_frame(&mut client).await.unwrap();
        assert_eq!(tag, b'd');
        server_msgs.push(ServerReplicationMessage::decode(body).unwrap());
    }
    let ServerReplicationMessage::XLogData(x) = &server_msgs[0] else {
        panic!("expected XLogData, got {server_msgs:?}");
    };
    assert_eq!(
        (x.wal_start, &x.data[..]),
        (Lsn(0x1000), &b"sixteen bytes!!!"[..])
    );
    assert!(matches!(
        server_msgs[1],
        ServerReplicationMessage::PrimaryKeepalive(PrimaryKeepalive {
            reply_requested: true,
            ..
        })
    ));

    let status = StandbyStatusUpdate {
        write_lsn: Lsn(0x1010),
        flush_lsn: Lsn(0x1010),
        apply_lsn: Lsn(0x1000),
        timestamp: PgTimestamp::now(),
        reply_requested: false,
    };
    let mut payload = BytesMut::new();
    status.encode(&mut payload);
    buf.clear();
    frontend::CopyData::new(&payload[..])
        .unwrap()
        .write(&mut buf);
    frontend::copy_done(&mut buf);
    send(&mut client, &buf).await;

    let frames = read_until_ready(&mut client).await;
    assert_eq!(tags(&frames), "cCZ");
    assert_eq!(
        &query(&mut client, "SELECT 1").await[1].1[..],
        b"\0\x01\0\0\0\x011"
    );
    terminate(&mut client).await;
    let (result, received) = finish(task).await;
    result.unwrap();
    assert_eq!(
        received,
        vec![StandbyReplicationMessage::StatusUpdate(status)]
    );
}

#[tokio::test]
async fn extended_protocol_is_refused_until_sync() {
    let (mut client, task, _cancel) = start(1024);
    startup(&mut client).await;
    let mut buf = BytesMut::new();
    frontend::parse("", "SELECT 1", [], &mut buf).unwrap();
    frontend::describe(b'S', "", &mut buf).unwrap();
    frontend::execute("", 0, &mut buf).unwrap();
    frontend::sync(&mut buf);
    send(&mut client, &buf).await;
    let frames = read_until_ready(&mut client).await;
    assert_eq!(tags(&frames), "EZ", "one error, then ReadyForQuery at Sync");
    assert_eq!(error_code(frames[0].1.clone()), "0A000");
    assert_eq!(tags(&query(&mut client, "SELECT 1").await), "TDCZ");
    assert_eq!(tags(&query(&mut client, "nonsense").await), "EZ");
    assert_eq!(tags(&query(&mut client, "").await), "IZ");
    terminate(&mut client).await;
    finish(task).await.0.unwrap();
}

#[tokio::test]
async fn unknown_message_type_is_fatal() {
    let (mut client, task, _cancel) = start(1024);
    startup(&mut client).await;
    client.write_all(b"z\0\0\0\x04").await.unwrap();
    let (tag, body) = read_frame(&mut client).await.unwrap();
    assert_eq!((tag, error_code(body).as_str()), (b'E', "08P01"));
    assert!(read_frame(&mut client).await.is_none(), "connection closed");
    let err = finish(task).await.0.unwrap_err();
    assert!(
        matches!(
            err,
            ConnectionError::Protocol(ProtocolError::UnknownMessageTag(b'z'))
        ),
        "{err:?}"
    );
}

#[tokio::test]
async fn oversized_message_is_rejected_before_buffering() {
    let (mut client, task, _cancel) = start(1024);
    startup(&mut client).await;
    // Announce a 100 MB query but send only the header.
    client.write_all(b"Q\x05\xf5\xe1\x00").await.unwrap();
    let (tag, body) = read_frame(&mut client).await.unwrap();
    assert_eq!((tag, error_code(body).as_str()), (b'E', "08P01"));
    let err = finish(task).await.0.unwrap_err();
    assert!(
        matches!(
            err,
            ConnectionError::Protocol(ProtocolError::MessageTooLong {
                max_bytes: 1024,
                ..
            })
        ),
        "{err:?}"
    );
}

#[tokio::test]
async fn eof_inside_a_message_is_an_error_and_between_messages_is_not() {
    let (mut client, task, _cancel) = start(1024);
    startup(&mut client).await;
    client.write_all(b"Q\0\0\0\x10SEL").await.unwrap();
    drop(client);
    let err = finish(task).await.0.unwrap_err();
    assert!(matches!(err, ConnectionError::UnexpectedEof), "{err:?}");

    let (mut client, task, _cancel) = start(1024);
    startup(&mut client).await;
    drop(client);
    finish(task).await.0.unwrap();
}

#[tokio::test]
async fn cancellation_while_idle_sends_admin_shutdown() {
    let (mut client, task, cancel) = start(1024);
    startup(&mut client).await;
    cancel.cancel();
    let (tag, body) = read_frame(&mut client).await.unwrap();
    assert_eq!((tag, error_code(body).as_str()), (b'E', "57P01"));
    finish(task).await.0.unwrap();
}

#[tokio::test]
async fn unsupported_protocol_version_is_refused() {
    let (mut client, task, _cancel) = start(1024);
    client
        .write_all(&[0, 0, 0, 9, 0, 2, 0, 0, 0])
        .await
        .unwrap();
    let (tag, body) = read_frame(&mut client).await.unwrap();
    assert_eq!((tag, error_code(body).as_str()), (b'E', "0A000"));
    let err = finish(task).await.0.unwrap_err();
    assert!(
        matches!(
            err,
            ConnectionError::Protocol(ProtocolError::UnsupportedProtocolVersion(_))
        ),
        "{err:?}"
    );
}

#[tokio::test]
async fn newer_minor_version_is_negotiated_down() {
    let (mut client, task, _cancel) = start(1024);
    // Protocol 3.2 with one protocol extension option.
    let mut packet = BytesMut::new();
    packet.extend_from_slice(&[0, 0, 0, 0, 0, 3, 0, 2]);
    packet.extend_from_slice(b"user\0alice\0_pq_.ext\0on\0\0");
    let len = packet.len() as u32;
    packet[..4].copy_from_slice(&len.to_be_bytes());
    send(&mut client, &packet).await;
    let frames = read_until_ready(&mut client).await;
    assert_eq!(tags(&frames), "vRSSSSSSKZ");
    assert_eq!(&frames[0].1[..], b"\0\x03\0\0\0\0\0\x01_pq_.ext\0");
    terminate(&mut client).await;
    finish(task).await.0.unwrap();
}

/// Handshake and password check done by hand, then `run`.
async fn password_server(server: DuplexStream) -> Result<Option<String>, ConnectionError> {
    let mut pgb = PostgresBackend::new(server);
    let HandshakeOutcome::Startup(params) = pgb.handshake().await? else {
        return Ok(None);
    };
    assert_eq!(pgb.state(), ProtocolState::Authentication);
    pgb.authenticate_cleartext_password(|p| p == "secret")
        .await?;
    let cancel = CancellationToken::new();
    pgb.run(&mut common::ToyHandler, &cancel).await?;
    Ok(params.user().map(str::to_string))
}

#[tokio::test]
async fn cleartext_password_authentication() {
    for (password, ok) in [("secret", true), ("wrong", false)] {
        let (mut client, server) = duplex(DUPLEX_BUF_LEN_BYTES);
        let task = tokio::spawn(password_server(server));
        let mut buf = BytesMut::new();
        frontend::startup_message([("user", "bob")], &mut buf).unwrap();
        send(&mut client, &buf).await;
        let (tag, body) = read_frame(&mut client).await.unwrap();
        assert_eq!(
            (tag, &body[..]),
            (b'R', &[0, 0, 0, 3][..]),
            "cleartext request"
        );
        buf.clear();
        frontend::password_message(password.as_bytes(), &mut buf).unwrap();
        send(&mut client, &buf).await;
        let result = tokio::time::timeout(TEST_TIMEOUT, async {
            if ok {
                assert_eq!(tags(&read_until_ready(&mut client).await), "RSSSSSSKZ");
                terminate(&mut client).await;
            } else {
                let (tag, body) = read_frame(&mut client).await.unwrap();
                assert_eq!((tag, error_code(body).as_str()), (b'E', "28P01"));
            }
            task.await.unwrap()
        })
        .await
        .unwrap();
        match (ok, result) {
            (true, Ok(user)) => assert_eq!(user.as_deref(), Some("bob")),
            (false, Err(ConnectionError::AuthenticationFailed { user })) => assert_eq!(user, "bob"),
            (ok, other) => panic!("password ok={ok}: unexpected {other:?}"),
        }
    }
}

#[tokio::test]
async fn misuse_of_states_is_an_error() {
    let (_client, server) = duplex(DUPLEX_BUF_LEN_BYTES);
    let mut pgb = PostgresBackend::new(server);
    assert!(matches!(
        pgb.read_message().await,
        Err(ConnectionError::WrongState { .. })
    ));
    assert!(matches!(
        pgb.authenticate_trust().await,
        Err(ConnectionError::WrongState { .. })
    ));
}

//! The driver on a real TCP socket, talking to tokio-postgres and a raw client.

mod common;

use std::future::Future;
use std::io;
use std::net::SocketAddr;

use bytes::BytesMut;
use common::{query, read_frame, startup, tags, ToyHandler, TEST_TIMEOUT};
use postgres_protocol::message::frontend;
use pq_proto::{ConnectionError, PostgresBackend};
use tokio::io::AsyncReadExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_postgres::error::SqlState;
use tokio_postgres::tls::{NoTlsStream, TlsConnect};
use tokio_postgres::{NoTls, SimpleQueryMessage};
use utils::signals::CancellationToken;

/// A running toy server: its address, its shutdown token and the results of
/// its finished connections.
struct TestServer {
    addr: SocketAddr,
    cancel: CancellationToken,
    results: mpsc::UnboundedReceiver<Result<(), ConnectionError>>,
}

impl TestServer {
    async fn start() -> TestServer {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let cancel = CancellationToken::new();
        let (tx, results) = mpsc::unbounded_channel();
        let token = cancel.clone();
        tokio::spawn(async move {
            loop {
                let (socket, _) = tokio::select! {
                    _ = token.cancelled() => return,
                    accepted = listener.accept() => accepted.unwrap(),
                };
                let (token, tx) = (token.clone(), tx.clone());
                tokio::spawn(async move {
                    let mut pgb = PostgresBackend::new(socket);
                    let result = pgb.run(&mut ToyHandler, &token).await;
                    let _ = tx.send(result);
                });
            }
        });
        TestServer {
            addr,
            cancel,
            results,
        }
    }

    fn conn_str(&self) -> String {
        format!(
            "host={} port={} user=alice dbname=db",
            self.addr.ip(),
            self.addr.port()
        )
    }

    /// The result of the next connection to finish.
    async fn next_result(&mut self) -> Result<(), ConnectionError> {
        within(self.results.recv())
            .await
            .expect("server still running")
    }
}

async fn within<T>(f: impl Future<Output = T>) -> T {
    tokio::time::timeout(TEST_TIMEOUT, f)
        .await
        .expect("timed out")
}

async fn connect(server: &TestServer) -> tokio_postgres::Client {
    let (client, connection) = within(tokio_postgres::connect(&server.conn_str(), NoTls))
        .await
        .unwrap();
    tokio::spawn(connection);
    client
}

fn rows(messages: &[SimpleQueryMessage]) -> Vec<Vec<Option<String>>> {
    messages
        .iter()
        .filter_map(|m| match m {
            SimpleQueryMessage::Row(row) => Some(
                (0..row.len())
                    .map(|i| row.get(i).map(str::to_string))
                    .collect(),
            ),
            _ => None,
        })
        .collect()
}

fn command_complete(messages: &[SimpleQueryMessage]) -> Option<u64> {
    messages.iter().find_map(|m| match m {
        SimpleQueryMessage::CommandComplete(n) => Some(*n),
        _ => None,
    })
}

#[tokio::test]
async fn simple_queries_errors_and_recovery() {
    let mut server = TestServer::start().await;
    let client = connect(&server).await;

    let messages = within(client.simple_query("SELECT 1")).await.unwrap();
    assert_eq!(rows(&messages), vec![vec![Some("1".to_string())]]);
    assert_eq!(command_complete(&messages), Some(1));

    let messages = within(client.simple_query("SELECT rows;")).await.unwrap();
    let some = |s: &str| Some(s.to_string());
    assert_eq!(
        rows(&messages),
        vec![
            vec![some("a"), some("1")],
            vec![some("b"), None],
            vec![some(""), some("3")]
        ]
    );
    assert_eq!(command_complete(&messages), Some(3));

    let err = within(client.simple_query("DROP everything"))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some(&SqlState::SYNTAX_ERROR));
    let db = err.as_db_error().expect("a server error");
    assert_eq!(db.message(), "syntax error at or near \"DROP everything\"");
    assert_eq!(db.hint(), Some("try SELECT 1"));

    // The session survives the error.
    let messages = within(client.simple_query("SELECT 1")).await.unwrap();
    assert_eq!(rows(&messages).len(), 1);
    // EmptyQueryResponse, which tokio-postgres reports as zero rows affected.
    let messages = within(client.simple_query("  ; ")).await.unwrap();
    assert!(rows(&messages).is_empty());
    assert_eq!(command_complete(&messages), Some(0));

    drop(client);
    server.next_result().await.unwrap();
}

#[tokio::test]
async fn fatal_handler_error_closes_the_session() {
    let mut server = TestServer::start().await;
    let client = connect(&server).await;
    let err = within(client.simple_query("fatal")).await.unwrap_err();
    assert_eq!(err.code(), Some(&SqlState::INTERNAL_ERROR));
    server.next_result().await.unwrap();
    assert!(within(client.simple_query("SELECT 1")).await.is_err());
}

#[tokio::test]
async fn ssl_request_is_refused_with_n() {
    let mut server = TestServer::start().await;
    let mut stream = TcpStream::connect(server.addr).await.unwrap();
    let mut buf = BytesMut::new();
    frontend::ssl_request(&mut buf);
    common::send(&mut stream, &buf).await;
    let mut answer = [0u8; 1];
    within(stream.read_exact(&mut answer)).await.unwrap();
    assert_eq!(&answer, b"N");

    // The same connection then continues in plaintext.
    let frames = startup(&mut stream).await;
    assert_eq!(tags(&frames), "RSSSSSSKZ");
    assert_eq!(&frames[0].1[..], &[0, 0, 0, 0], "AuthenticationOk");
    assert_eq!(&frames[1].1[..], b"server_version\x0015.0\0");
    let frames = query(&mut stream, "SELECT 1").await;
    assert_eq!(tags(&frames), "TDCZ");
    assert_eq!(&frames[2].1[..], b"SELECT 1\0");

    buf.clear();
    frontend::terminate(&mut buf);
    common::send(&mut stream, &buf).await;
    assert!(within(read_frame(&mut stream)).await.is_none());
    server.next_result().await.unwrap();
}

/// A TLS connector that is never used: the server always answers `N`.
struct RefusedTls;

impl TlsConnect<TcpStream> for RefusedTls {
    type Stream = NoTlsStream;
    type Error = io::Error;
    type Future = std::future::Ready<Result<NoTlsStream, io::Error>>;

    fn connect(self, _: TcpStream) -> Self::Future {
        std::future::ready(Err(io::Error::other("TLS is not available in this test")))
    }
}

#[tokio::test]
async fn tokio_postgres_sslmode_prefer_falls_back_to_plaintext() {
    let mut server = TestServer::start().await;
    let mut config: tokio_postgres::Config = server.conn_str().parse().unwrap();
    config.ssl_mode(tokio_postgres::config::SslMode::Prefer);
    let stream = TcpStream::connect(server.addr).await.unwrap();
    let (client, connection) = within(config.connect_raw(stream, RefusedTls))
        .await
        .unwrap();
    tokio::spawn(connection);
    let messages = within(client.simple_query("SELECT 1")).await.unwrap();
    assert_eq!(rows(&messages), vec![vec![Some("1".to_string())]]);
    drop(client);
    server.next_result().await.unwrap();
}

#[tokio::test]
async fn cancel_request_is_accepted() {
    let mut server = TestServer::start().await;
    let client = connect(&server).await;
    within(client.cancel_token().cancel_query(NoTls))
        .await
        .unwrap();
    // The cancel connection finishes cleanly; the session is unaffected.
    server.next_result().await.unwrap();
    assert_eq!(
        rows(&within(client.simple_query("SELECT 1")).await.unwrap()).len(),
        1
    );
}

#[tokio::test]
async fn shutdown_disconnects_clients_with_admin_shutdown() {
    let mut server = TestServer::start().await;
    let client = connect(&server).await;
    within(client.simple_query("SELECT 1")).await.unwrap();

    // A raw client shows what is sent on shutdown.
    let mut stream = TcpStream::connect(server.addr).await.unwrap();
    startup(&mut stream).await;

    server.cancel.cancel();
    server.next_result().await.unwrap();
    server.next_result().await.unwrap();

    let (tag, body) = within(read_frame(&mut stream)).await.expect("an error");
    assert_eq!(tag, b'E');
    assert_eq!(common::error_code(body), "57P01");
    assert!(within(read_frame(&mut stream)).await.is_none());
    assert!(within(client.simple_query("SELECT 1")).await.is_err());
}

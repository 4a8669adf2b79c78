//! A minimal libpq frontend for physical replication connections: startup (trust, cleartext,
//! MD5 and SCRAM-SHA-256 authentication), simple queries with text results, and the CopyBoth
//! mode of `START_REPLICATION`.
//!
//! Frontend messages are encoded with `postgres-protocol`; backend messages are framed here
//! (tag, length, body) because that crate does not know CopyBothResponse. Reads are
//! cancel-safe: bytes go into an internal buffer ([`PgConnection::fill`]) and whole messages
//! are taken from it ([`PgConnection::buffered_message`]).

use std::time::Duration;

use bytes::{Buf, Bytes, BytesMut};
use postgres_protocol::authentication::sasl::{ChannelBinding, ScramSha256};
use postgres_protocol::message::frontend;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use super::connstr::{ConnConfig, Host};

/// Largest backend message accepted (XLogData messages are at most 128 KiB of WAL).
pub const MAX_BACKEND_MESSAGE_BYTES: usize = 64 * 1024 * 1024;
/// Bytes requested from the socket per read.
const READ_CHUNK_BYTES: usize = 64 * 1024;
/// Time allowed for connecting and the startup handshake.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Time allowed for a command's answer.
pub const QUERY_TIMEOUT: Duration = Duration::from_secs(30);
/// Most rows kept from a query result.
const MAX_RESULT_ROWS: usize = 1000;
/// SQLSTATE duplicate_object (e.g. the replication slot already exists).
pub const SQLSTATE_DUPLICATE_OBJECT: &str = "42710";

/// Why talking to the server failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("cannot connect to {addr}: {source}")]
    Connect {
        addr: String,
        #[source]
        source: std::io::Error,
    },
    #[error("connection I/O error: {0}")]
    Io(#[from] std::io::Error),
    #[error("server closed the connection")]
    Closed,
    #[error("server error {code}: {message}")]
    Server { code: String, message: String },
    #[error("protocol violation: {0}")]
    Protocol(String),
    #[error("authentication failed: {0}")]
    Auth(String),
    #[error("timed out during {0}")]
    Timeout(&'static str),
}

impl ClientError {
    /// The SQLSTATE of a server error.
    pub fn sqlstate(&self) -> Option<&str> {
        match self {
            ClientError::Server { code, .. } => Some(code),
            _ => None,
        }
    }
}

trait Stream: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Stream for T {}

/// One connection to a PostgreSQL server.
pub struct PgConnection {
    stream: Box<dyn Stream>,
    rbuf: BytesMut,
    wbuf: BytesMut,
}

/// Rows of a query result, as text (`None` for NULL).
pub type Rows = Vec<Vec<Option<String>>>;

impl PgConnection {
    /// Connects and authenticates; with `replication`, as a physical replication connection.
    pub async fn connect(cfg: &ConnConfig, replication: bool) -> Result<PgConnection, ClientError> {
        tokio::time::timeout(CONNECT_TIMEOUT, Self::connect_inner(cfg, replication))
            .await
            .map_err(|_| ClientError::Timeout("connection startup"))?
    }

    async fn connect_inner(
        cfg: &ConnConfig,
        replication: bool,
    ) -> Result<PgConnection, ClientError> {
        let stream: Box<dyn Stream> = match &cfg.host {
            Host::Tcp(h) => {
                let addr = format!("{h}:{}", cfg.port);
                let s = tokio::net::TcpStream::connect((h.as_str(), cfg.port))
                    .await
                    .map_err(|source| ClientError::Connect { addr, source })?;
                let _ = s.set_nodelay(true);
                Box::new(s)
            }
            Host::UnixDir(dir) => {
                let path = dir.join(format!(".s.PGSQL.{}", cfg.port));
                let s = tokio::net::UnixStream::connect(&path)
                    .await
                    .map_err(|source| ClientError::Connect {
                        addr: path.display().to_string(),
                        source,
                    })?;
                Box::new(s)
            }
        };
        let mut conn = PgConnection {
            stream,
            rbuf: BytesMut::new(),
            wbuf: BytesMut::new(),
        };
        let mut params = vec![("user", cfg.user.as_str())];
        if let Some(db) = &cfg.dbname {
            params.push(("database", db));
        }
        let app = cfg.application_name.as_deref().unwrap_or("pageserver");
        params.push(("application_name", app));
        if replication {
            params.push(("replication", "true"));
        }
        frontend::startup_message(params, &mut conn.wbuf)?;
        conn.flush().await?;
        conn.authenticate(cfg).await?;
        conn.wait_ready().await?;
        Ok(conn)
    }

    async fn authenticate(&mut self, cfg: &ConnConfig) -> Result<(), ClientError> {
        let password = || {
            cfg.password
                .as_deref()
                .ok_or_else(|| ClientError::Auth("the server asks for a password".into()))
        };
        loop {
            let (tag, mut body) = self.read_message().await?;
            match tag {
                b'E' => return Err(error_response(body)),
                b'R' => {}
                other => return Err(unexpected(other, "authentication")),
            }
            let code = get_i32(&mut body, "authentication code")?;
            match code {
                0 => return Ok(()),
                3 => frontend::password_message(password()?.as_bytes(), &mut self.wbuf)?,
                5 => {
                    let salt: [u8; 4] = body
                        .get(..4)
                        .and_then(|s| s.try_into().ok())
                        .ok_or_else(|| ClientError::Protocol("short MD5 salt".into()))?;
                    let hash = postgres_protocol::authentication::md5_hash(
                        cfg.user.as_bytes(),
                        password()?.as_bytes(),
                        salt,
                    );
                    frontend::password_message(hash.as_bytes(), &mut self.wbuf)?;
                }
                10 => {
                    self.scram(password()?, body).await?;
                    continue;
                }
                other => {
                    return Err(ClientError::Auth(format!(
                        "unsupported authentication method {other}"
                    )))
                }
            }
            self.flush().await?;
        }
    }

    /// SCRAM-SHA-256 exchange, up to (not including) AuthenticationOk.
    async fn scram(&mut self, password: &str, mechanisms: Bytes) -> Result<(), ClientError> {
        let offers_scram = mechanisms.split(|b| *b == 0).any(|m| m == b"SCRAM-SHA-256");
        if !offers_scram {
            return Err(ClientError::Auth("no supported SASL mechanism".into()));
        }
        let mut scram = ScramSha256::new(password.as_bytes(), ChannelBinding::unsupported());
        frontend::sasl_initial_response("SCRAM-SHA-256", scram.message(), &mut self.wbuf)?;
        self.flush().await?;
        let cont = self.expect_auth(11).await?;
        scram
            .update(&cont)
            .map_err(|e| ClientError::Auth(e.to_string()))?;
        frontend::sasl_response(scram.message(), &mut self.wbuf)?;
        self.flush().await?;
        let fin = self.expect_auth(12).await?;
        scram
            .finish(&fin)
            .map_err(|e| ClientError::Auth(e.to_string()))
    }

    async fn expect_auth(&mut self, want: i32) -> Result<Bytes, ClientError> {
        let (tag, mut body) = self.read_message().await?;
        match tag {
            b'E' => Err(error_response(body)),
            b'R' if get_i32(&mut body, "authentication code")? == want => Ok(body),
            other => Err(unexpected(other, "SASL authentication")),
        }
    }

    /// Skips parameter status and key data up to ReadyForQuery.
    async fn wait_ready(&mut self) -> Result<(), ClientError> {
        loop {
            let (tag, body) = self.read_message().await?;
            match tag {
                b'Z' => return Ok(()),
                b'E' => return Err(error_response(body)),
                b'S' | b'K' | b'N' => {}
                other => return Err(unexpected(other, "startup")),
            }
        }
    }

    /// Runs a simple query; returns its rows (the last result's, at most a bound).
    pub async fn simple_query(&mut self, sql: &str) -> Result<Rows, ClientError> {
        frontend::query(sql, &mut self.wbuf)?;
        self.flush().await?;
        tokio::time::timeout(QUERY_TIMEOUT, self.collect_rows())
            .await
            .map_err(|_| ClientError::Timeout("query"))?
    }

    async fn collect_rows(&mut self) -> Result<Rows, ClientError> {
        let mut rows = Vec::new();
        let mut error = None;
        loop {
            let (tag, body) = self.read_message().await?;
            match tag {
                b'T' => rows.clear(),
                b'D' if rows.len() < MAX_RESULT_ROWS => rows.push(data_row(body)?),
                b'E' => error = Some(error_response(body)),
                b'Z' => return error.map_or(Ok(rows), Err),
                _ => {}
            }
        }
    }

    /// Sends `START_REPLICATION ...` and waits for CopyBothResponse.
    pub async fn start_copy_both(&mut self, sql: &str) -> Result<(), ClientError> {
        frontend::query(sql, &mut self.wbuf)?;
        self.flush().await?;
        let answer = tokio::time::timeout(QUERY_TIMEOUT, async {
            loop {
                let (tag, body) = self.read_message().await?;
                match tag {
                    b'W' => return Ok(()),
                    b'E' => {
                        let err = error_response(body);
                        // Best effort: consume up to ReadyForQuery.
                        let _ = self.wait_ready().await;
                        return Err(err);
                    }
                    b'N' | b'S' => {}
                    other => return Err(unexpected(other, "START_REPLICATION")),
                }
            }
        });
        answer
            .await
            .map_err(|_| ClientError::Timeout("START_REPLICATION"))?
    }

    /// Sends one CopyData message.
    pub async fn send_copy_data(&mut self, payload: &[u8]) -> Result<(), ClientError> {
        frontend::CopyData::new(payload)?.write(&mut self.wbuf);
        self.flush().await
    }

    /// Sends Terminate (best effort, before dropping the connection).
    pub async fn terminate(mut self) {
        frontend::terminate(&mut self.wbuf);
        let _ = self.flush().await;
    }

    async fn flush(&mut self) -> Result<(), ClientError> {
        let buf = self.wbuf.split();
        self.stream.write_all(&buf).await?;
        self.stream.flush().await?;
        Ok(())
    }

    /// Takes one whole message out of the read buffer, without I/O.
    pub fn buffered_message(&mut self) -> Result<Option<(u8, Bytes)>, ClientError> {
        if self.rbuf.len() < 5 {
            return Ok(None);
        }
        let len = u32::from_be_bytes([self.rbuf[1], self.rbuf[2], self.rbuf[3], self.rbuf[4]]);
        let len = len as usize;
        if !(4..=MAX_BACKEND_MESSAGE_BYTES).contains(&len) {
            return Err(ClientError::Protocol(format!(
                "message length {len} out of bounds"
            )));
        }
        if self.rbuf.len() < 1 + len {
            return Ok(None);
        }
        let tag = self.rbuf[0];
        self.rbuf.advance(5);
        Ok(Some((tag, self.rbuf.split_to(len - 4).freeze())))
    }

    /// Reads more bytes from the socket into the buffer (cancel-safe).
    pub async fn fill(&mut self) -> Result<(), ClientError> {
        self.rbuf.reserve(READ_CHUNK_BYTES);
        match self.stream.read_buf(&mut self.rbuf).await? {
            0 => Err(ClientError::Closed),
            _ => Ok(()),
        }
    }

    /// The next message, reading as needed.
    pub async fn read_message(&mut self) -> Result<(u8, Bytes), ClientError> {
        loop {
            if let Some(m) = self.buffered_message()? {
                return Ok(m);
            }
            self.fill().await?;
        }
    }
}

fn unexpected(tag: u8, during: &str) -> ClientError {
    ClientError::Protocol(format!(
        "unexpected message {:?} during {during}",
        tag as char
    ))
}

fn get_i32(body: &mut Bytes, what: &str) -> Result<i32, ClientError> {
    if body.len() < 4 {
        return Err(ClientError::Protocol(format!("truncated {what}")));
    }
    Ok(body.get_i32())
}

/// An ErrorResponse body as an error (code and message fields).
pub fn error_response(body: Bytes) -> ClientError {
    let mut code = String::from("?????");
    let mut message = String::new();
    for field in body.split(|b| *b == 0) {
        let Some((&kind, value)) = field.split_first() else {
            continue;
        };
        let value = String::from_utf8_lossy(value).into_owned();
        match kind {
            b'C' => code = value,
            b'M' => message = value,
            _ => {}
        }
    }
    ClientError::Server { code, message }
}

/// A DataRow body as text columns.
fn data_row(mut body: Bytes) -> Result<Vec<Option<String>>, ClientError> {
    if body.len() < 2 {
        return Err(ClientError::Protocol("truncated DataRow".into()));
    }
    let n = body.get_i16();
    let mut cols = Vec::with_capacity(n.max(0) as usize);
    for _ in 0..n {
        let len = get_i32(&mut body, "DataRow column length")?;
        if len < 0 {
            cols.push(None);
            continue;
        }
        let len = len as usize;
        if body.len() < len {
            return Err(ClientError::Protocol("truncated DataRow column".into()));
        }
        let v = body.split_to(len);
        cols.push(Some(String::from_utf8_lossy(&v).into_owned()));
    }
    Ok(cols)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_error_and_rows() {
        let body = Bytes::from_static(b"SERROR\0C42710\0Mslot exists\0\0");
        let e = error_response(body);
        assert_eq!(e.sqlstate(), Some(SQLSTATE_DUPLICATE_OBJECT));
        assert!(e.to_string().contains("slot exists"));
        let mut row = Vec::new();
        row.extend_from_slice(&2i16.to_be_bytes());
        row.extend_from_slice(&3i32.to_be_bytes());
        row.extend_from_slice(b"abc");
        row.extend_from_slice(&(-1i32).to_be_bytes());
        let cols = data_row(Bytes::from(row.clone())).unwrap();
        assert_eq!(cols, vec![Some("abc".to_string()), None]);
        for n in 0..row.len() - 4 {
            assert!(data_row(Bytes::from(row[..n].to_vec())).is_err(), "cut {n}");
        }
    }

    #[tokio::test]
    async fn frames_messages_and_bounds_length() {
        let (client, mut server) = tokio::io::duplex(1024);
        let mut conn = PgConnection {
            stream: Box::new(client),
            rbuf: BytesMut::new(),
            wbuf: BytesMut::new(),
        };
        server.write_all(b"Z\0\0\0\x05I").await.unwrap();
        server.write_all(b"d\0\0\0\x06").await.unwrap();
        assert_eq!(
            conn.read_message().await.unwrap(),
            (b'Z', Bytes::from_static(b"I"))
        );
        // The second message's header may have arrived, its body not.
        assert!(conn.buffered_message().unwrap().is_none());
        server.write_all(b"hi").await.unwrap();
        assert_eq!(
            conn.read_message().await.unwrap(),
            (b'd', Bytes::from_static(b"hi"))
        );
        server.write_all(b"d\xff\xff\xff\xff").await.unwrap();
        assert!(matches!(
            conn.read_message().await,
            Err(ClientError::Protocol(_))
        ));
        drop(server);
        conn.rbuf.clear();
        assert!(matches!(conn.fill().await, Err(ClientError::Closed)));
    }
}

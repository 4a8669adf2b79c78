//! Fetching a base backup from the pageserver's page service and unpacking it.
//!
//! A small libpq client (tokio + postgres-protocol's message codecs): startup with trust
//! authentication, one simple Query (`basebackup <tenant> <timeline> [<lsn>] --gzip`), then
//! the CopyOut stream, handed chunk by chunk (bounded queue) to a blocking task that gunzips
//! and untars it into the data directory. [`fetch_with_retries`] re-prepares the directory
//! and retries with bounded exponential backoff.

use std::io::Read;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context};
use bytes::{Bytes, BytesMut};
use compute_api::connstring::Connstring;
use fallible_iterator::FallibleIterator;
use postgres_protocol::message::backend::{ErrorResponseBody, Header, Message};
use postgres_protocol::message::frontend;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_util::sync::CancellationToken;
use utils::id::{TenantId, TimelineId};
use utils::lsn::Lsn;

/// How long connecting to the pageserver may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Longest wait for the next message (the pageserver may first wait for the LSN to arrive).
const READ_TIMEOUT: Duration = Duration::from_secs(120);
/// Largest backend message accepted.
const MAX_MESSAGE_BYTES: usize = 16 * 1024 * 1024;
/// CopyData chunks queued for the unpacking task.
const MAX_QUEUED_CHUNKS: usize = 16;
/// Attempts before giving up.
pub const MAX_ATTEMPTS: u32 = 8;
/// First pause between attempts; doubled each time up to [`MAX_BACKOFF`].
const INITIAL_BACKOFF: Duration = Duration::from_millis(200);
const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// How often and how patiently to retry.
#[derive(Debug, Clone, Copy)]
pub struct RetryPolicy {
    pub max_attempts: u32,
    pub initial_backoff: Duration,
    pub max_backoff: Duration,
}

impl Default for RetryPolicy {
    fn default() -> RetryPolicy {
        RetryPolicy {
            max_attempts: MAX_ATTEMPTS,
            initial_backoff: INITIAL_BACKOFF,
            max_backoff: MAX_BACKOFF,
        }
    }
}

impl RetryPolicy {
    /// Pause after failed attempt `attempt` (counting from 1): doubling, capped.
    pub fn backoff(&self, attempt: u32) -> Duration {
        let factor = 1u32 << attempt.saturating_sub(1).min(16);
        self.initial_backoff
            .saturating_mul(factor)
            .min(self.max_backoff)
    }
}
/// The user we introduce ourselves as when the connection string names none.
const DEFAULT_USER: &str = "cloud_admin";

/// What to fetch.
#[derive(Debug, Clone)]
pub struct BackupRequest {
    pub tenant: TenantId,
    pub timeline: TimelineId,
    /// `None`: the latest LSN of the timeline.
    pub lsn: Option<Lsn>,
    /// `fullbackup` (all relation data, never compressed) instead of `basebackup --gzip`:
    /// lets tests run a compute without the `neon` extension.
    pub full: bool,
}

impl BackupRequest {
    /// The page service command.
    pub fn command(&self) -> String {
        let verb = if self.full {
            "fullbackup"
        } else {
            "basebackup"
        };
        let mut cmd = format!("{verb} {} {}", self.tenant, self.timeline);
        if let Some(lsn) = self.lsn {
            cmd.push_str(&format!(" {lsn}"));
        }
        if !self.full {
            cmd.push_str(" --gzip");
        }
        cmd
    }
}

/// What a successful fetch took.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FetchStats {
    /// Bytes of CopyData received in the successful attempt.
    pub bytes: u64,
    pub attempts: u32,
    pub elapsed: Duration,
}

/// Runs `prepare` (wipe and recreate `pgdata`), then fetches and unpacks, up to
/// `policy.max_attempts` times. `on_attempt` is told the attempt number before each try.
pub async fn fetch_with_retries(
    conn: &Connstring,
    req: &BackupRequest,
    policy: &RetryPolicy,
    pgdata: &Path,
    prepare: impl Fn() -> anyhow::Result<()>,
    on_attempt: impl Fn(u32),
    cancel: &CancellationToken,
) -> anyhow::Result<FetchStats> {
    let started = Instant::now();
    let mut attempt = 0;
    loop {
        attempt += 1;
        on_attempt(attempt);
        prepare()?;
        let res = tokio::select! {
            r = fetch_once(conn, req, pgdata) => r,
            _ = cancel.cancelled() => bail!("cancelled"),
        };
        match res {
            Ok(bytes) => {
                return Ok(FetchStats {
                    bytes,
                    attempts: attempt,
                    elapsed: started.elapsed(),
                })
            }
            Err(e) if attempt >= policy.max_attempts => {
                return Err(e.context(format!("{} failed {attempt} times", req.command())))
            }
            Err(e) => {
                let pause = policy.backoff(attempt);
                tracing::warn!(
                    "{} (attempt {attempt}): {e:#}; retrying in {pause:?}",
                    req.command()
                );
                tokio::select! {
                    _ = tokio::time::sleep(pause) => {}
                    _ = cancel.cancelled() => bail!("cancelled"),
                }
            }
        }
    }
}

/// One attempt: returns the number of bytes received.
async fn fetch_once(conn: &Connstring, req: &BackupRequest, pgdata: &Path) -> anyhow::Result<u64> {
    let mut c = Client::connect(conn).await?;
    let (tx, rx) = tokio::sync::mpsc::channel::<Bytes>(MAX_QUEUED_CHUNKS);
    let dest = pgdata.to_path_buf();
    let gzip = !req.full;
    let unpacker = tokio::task::spawn_blocking(move || unpack(ChunkReader::new(rx), &dest, gzip));
    let streamed = c.copy_out(&req.command(), &tx).await;
    drop(tx);
    let unpacked = unpacker.await.map_err(|e| anyhow!("unpack task: {e}"))?;
    // A stream error explains an unpack error (truncated input), not the other way round;
    // an unpack error may also have stopped the stream (closed queue).
    match (streamed, unpacked) {
        (Ok(n), Ok(())) => Ok(n),
        (Err(e), _) if !e.to_string().contains(QUEUE_CLOSED) => Err(e),
        (_, Err(e)) => Err(e.context(format!("unpacking into {}", pgdata.display()))),
        (Err(e), Ok(())) => Err(e),
    }
}

const QUEUE_CLOSED: &str = "unpacker stopped reading";

/// Gunzips (optionally) and untars everything `input` yields into `dest`.
fn unpack(input: impl Read, dest: &Path, gzip: bool) -> anyhow::Result<()> {
    let input: Box<dyn Read> = if gzip {
        Box::new(flate2::read::GzDecoder::new(input))
    } else {
        Box::new(input)
    };
    let mut ar = tar::Archive::new(input);
    ar.set_preserve_permissions(true);
    ar.set_overwrite(true);
    ar.unpack(dest).context("untar")?;
    Ok(())
}

/// A blocking reader over the queued chunks; EOF when the sender is dropped.
struct ChunkReader {
    rx: tokio::sync::mpsc::Receiver<Bytes>,
    cur: Bytes,
}

impl ChunkReader {
    fn new(rx: tokio::sync::mpsc::Receiver<Bytes>) -> ChunkReader {
        ChunkReader {
            rx,
            cur: Bytes::new(),
        }
    }
}

impl Read for ChunkReader {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        while self.cur.is_empty() {
            match self.rx.blocking_recv() {
                Some(b) => self.cur = b,
                None => return Ok(0),
            }
        }
        let n = buf.len().min(self.cur.len());
        buf[..n].copy_from_slice(&self.cur.split_to(n));
        Ok(n)
    }
}

/// A libpq connection in the simple-query state.
struct Client {
    stream: TcpStream,
    buf: BytesMut,
    addr: String,
}

impl Client {
    async fn connect(conn: &Connstring) -> anyhow::Result<Client> {
        let addr = format!("{}:{}", conn.host, conn.port);
        let stream = tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(&addr))
            .await
            .map_err(|_| anyhow!("connecting to {addr} timed out"))?
            .with_context(|| format!("connecting to {addr}"))?;
        stream.set_nodelay(true)?;
        let mut c = Client {
            stream,
            buf: BytesMut::with_capacity(64 * 1024),
            addr,
        };
        let user = conn.user.as_deref().unwrap_or(DEFAULT_USER);
        let mut params = vec![("user", user)];
        if let Some(db) = conn.dbname.as_deref() {
            params.push(("database", db));
        }
        let mut out = BytesMut::new();
        frontend::startup_message(params, &mut out)?;
        c.stream.write_all(&out).await?;
        loop {
            match c.read().await? {
                Message::AuthenticationOk
                | Message::ParameterStatus(_)
                | Message::BackendKeyData(_)
                | Message::NoticeResponse(_) => {}
                Message::ReadyForQuery(_) => return Ok(c),
                Message::ErrorResponse(e) => {
                    bail!("{} refused the connection: {}", c.addr, error_text(&e))
                }
                _ => bail!(
                    "{} asks for an authentication method we do not support",
                    c.addr
                ),
            }
        }
    }

    /// Runs `query`, which must answer with a CopyOut; sends every chunk to `tx`.
    async fn copy_out(
        &mut self,
        query: &str,
        tx: &tokio::sync::mpsc::Sender<Bytes>,
    ) -> anyhow::Result<u64> {
        let mut out = BytesMut::new();
        frontend::query(query, &mut out)?;
        self.stream.write_all(&out).await?;
        let mut total = 0u64;
        let mut copying = false;
        loop {
            match self.read().await? {
                Message::CopyOutResponse(_) => copying = true,
                Message::CopyData(d) if copying => {
                    let data = d.into_bytes();
                    total += data.len() as u64;
                    tx.send(data).await.map_err(|_| anyhow!(QUEUE_CLOSED))?;
                }
                Message::CopyDone | Message::CommandComplete(_) | Message::NoticeResponse(_) => {}
                Message::ReadyForQuery(_) if copying => return Ok(total),
                Message::ReadyForQuery(_) => bail!("{query:?} answered without a COPY"),
                Message::ErrorResponse(e) => bail!("{}: {}", self.addr, error_text(&e)),
                _ => bail!("unexpected message from {} during {query:?}", self.addr),
            }
        }
    }

    /// The next backend message (bounded size, bounded wait).
    async fn read(&mut self) -> anyhow::Result<Message> {
        loop {
            if let Some(h) = Header::parse(&self.buf)? {
                let len = usize::try_from(h.len()).unwrap_or(usize::MAX);
                if len > MAX_MESSAGE_BYTES {
                    bail!("{} sent a message of {len} bytes", self.addr);
                }
            }
            if let Some(m) = Message::parse(&mut self.buf)? {
                return Ok(m);
            }
            let n = tokio::time::timeout(READ_TIMEOUT, self.stream.read_buf(&mut self.buf))
                .await
                .map_err(|_| anyhow!("no answer from {} within {READ_TIMEOUT:?}", self.addr))??;
            if n == 0 {
                bail!("{} closed the connection", self.addr);
            }
        }
    }
}

/// `SEVERITY: message (DETAIL)` of an ErrorResponse.
fn error_text(e: &ErrorResponseBody) -> String {
    let mut fields = e.fields();
    let (mut severity, mut message, mut detail) = (String::new(), String::new(), String::new());
    while let Ok(Some(f)) = fields.next() {
        let value = String::from_utf8_lossy(f.value_bytes());
        match f.type_() {
            b'S' => severity = value.into_owned(),
            b'M' => message = value.into_owned(),
            b'D' => detail = format!(" ({value})"),
            _ => {}
        }
    }
    format!("{severity}: {message}{detail}")
}

#[cfg(test)]
mod tests;

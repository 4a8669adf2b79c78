//! The few pieces of the libpq frontend protocol the benchmark needs, on a plain TCP stream:
//! startup (trust authentication only), a simple query, and the CopyData framing of the
//! CopyBoth (pagestream) and CopyOut (fullbackup) sub-protocols. Messages are encoded with
//! `postgres_protocol::message::frontend`; backend messages are framed here.

use anyhow::{anyhow, bail, Context, Result};
use bytes::{Bytes, BytesMut};
use postgres_protocol::message::frontend;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::TcpStream;

/// Largest backend message accepted: a full SLRU segment response or a tar chunk, with room.
pub const MAX_BACKEND_MESSAGE_BYTES: usize = 1024 * 1024;
/// Size of the read buffer of a connection.
const READ_BUFFER_BYTES: usize = 256 * 1024;
/// Most messages skipped while waiting for an expected one (notices, parameter status...).
const MAX_SKIPPED_MESSAGES: usize = 1024;

/// One backend message: its type byte and body.
pub struct BackendMessage {
    pub tag: u8,
    pub body: Bytes,
}

/// Reads one backend message.
pub async fn read_message<R: AsyncRead + Unpin>(r: &mut R) -> Result<BackendMessage> {
    let tag = r.read_u8().await.context("reading message type")?;
    let len = r.read_u32().await.context("reading message length")? as usize;
    if !(4..=MAX_BACKEND_MESSAGE_BYTES).contains(&len) {
        bail!("backend message {:?} has bad length {len}", tag as char);
    }
    let mut body = vec![0u8; len - 4];
    r.read_exact(&mut body)
        .await
        .context("reading message body")?;
    Ok(BackendMessage {
        tag,
        body: Bytes::from(body),
    })
}

/// The human-readable text of an ErrorResponse body (its `M` field).
pub fn error_text(body: &[u8]) -> String {
    body.split(|b| *b == 0)
        .find_map(|f| f.strip_prefix(b"M"))
        .map(|m| String::from_utf8_lossy(m).into_owned())
        .unwrap_or_else(|| "(no message)".to_string())
}

/// A connection after startup, split into halves so requests and responses can overlap.
pub struct Connection {
    pub reader: BufReader<OwnedReadHalf>,
    pub writer: OwnedWriteHalf,
}

impl Connection {
    /// Connects and completes startup as `user` (the pageserver trusts every user).
    pub async fn connect(addr: &str, user: &str) -> Result<Connection> {
        let stream = TcpStream::connect(addr)
            .await
            .with_context(|| format!("connecting to {addr}"))?;
        stream.set_nodelay(true)?;
        let (r, w) = stream.into_split();
        let mut conn = Connection {
            reader: BufReader::with_capacity(READ_BUFFER_BYTES, r),
            writer: w,
        };
        let mut buf = BytesMut::new();
        frontend::startup_message([("user", user), ("database", "postgres")], &mut buf)?;
        conn.writer.write_all(&buf).await?;
        conn.wait_for(b'Z').await.context("startup")?;
        Ok(conn)
    }

    /// Skips messages until one with type `tag`; an ErrorResponse is an error.
    async fn wait_for(&mut self, tag: u8) -> Result<BackendMessage> {
        for _ in 0..MAX_SKIPPED_MESSAGES {
            let msg = read_message(&mut self.reader).await?;
            match msg.tag {
                t if t == tag => return Ok(msg),
                b'E' => bail!("server error: {}", error_text(&msg.body)),
                // AuthenticationOk is 'R' with code 0; anything else needs a password.
                b'R' if msg.body.as_ref() != [0, 0, 0, 0] => {
                    bail!("the server asks for authentication, which is not supported")
                }
                _ => {}
            }
        }
        Err(anyhow!(
            "no message {:?} within {MAX_SKIPPED_MESSAGES} messages",
            tag as char
        ))
    }

    /// Sends a simple query.
    pub async fn send_query(&mut self, sql: &str) -> Result<()> {
        let mut buf = BytesMut::new();
        frontend::query(sql, &mut buf)?;
        self.writer.write_all(&buf).await?;
        Ok(())
    }

    /// Sends `pagestream_v3 <tenant> <timeline>` and waits for CopyBothResponse.
    pub async fn start_pagestream(&mut self, tenant: &str, timeline: &str) -> Result<()> {
        self.send_query(&format!("pagestream_v3 {tenant} {timeline}"))
            .await?;
        self.wait_for(b'W').await.context("pagestream_v3")?;
        Ok(())
    }

    /// Runs a query answered with CopyOut and returns the copied bytes (at most `max_bytes`).
    pub async fn copy_out(&mut self, sql: &str, max_bytes: usize) -> Result<Vec<u8>> {
        self.send_query(sql).await?;
        self.wait_for(b'H').await.context(sql.to_string())?;
        let mut out = Vec::new();
        loop {
            let msg = read_message(&mut self.reader).await?;
            match msg.tag {
                b'd' => {
                    if out.len() + msg.body.len() > max_bytes {
                        bail!("{sql}: more than {max_bytes} bytes");
                    }
                    out.extend_from_slice(&msg.body);
                }
                b'c' => break,
                b'E' => bail!("{sql}: {}", error_text(&msg.body)),
                _ => {}
            }
        }
        self.wait_for(b'Z').await?;
        Ok(out)
    }
}

/// Encodes `payload` as one CopyData message into `buf`.
pub fn put_copy_data(payload: &[u8], buf: &mut BytesMut) -> Result<()> {
    frontend::CopyData::new(payload)?.write(buf);
    Ok(())
}

/// Writes a buffer of encoded messages.
pub async fn send<W: AsyncWrite + Unpin>(w: &mut W, buf: &[u8]) -> Result<()> {
    w.write_all(buf).await.context("sending")?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn frames_backend_messages() {
        let mut raw = vec![b'd', 0, 0, 0, 7, 1, 2, 3];
        raw.extend_from_slice(&[b'c', 0, 0, 0, 4]);
        let mut r = &raw[..];
        let m = read_message(&mut r).await.unwrap();
        assert_eq!((m.tag, &m.body[..]), (b'd', &[1u8, 2, 3][..]));
        let m = read_message(&mut r).await.unwrap();
        assert_eq!((m.tag, m.body.len()), (b'c', 0));
        assert!(read_message(&mut r).await.is_err());
    }

    #[tokio::test]
    async fn rejects_bad_lengths() {
        let raw = [b'd', 0, 0, 0, 3];
        assert!(read_message(&mut &raw[..]).await.is_err());
        let raw = [b'd', 0x7f, 0, 0, 0];
        assert!(read_message(&mut &raw[..]).await.is_err());
    }

    #[test]
    fn extracts_error_text() {
        let body = b"SERROR\0C42000\0Mno such timeline\0\0";
        assert_eq!(error_text(body), "no such timeline");
        assert_eq!(error_text(b"\0"), "(no message)");
    }
}

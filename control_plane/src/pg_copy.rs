//! A minimal synchronous libpq client for the pageserver's page service: startup (trust
//! authentication), then simple queries that answer with a COPY IN (`import basebackup`,
//! `import wal`), fed from a file in bounded chunks.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use anyhow::{bail, Context};

/// Protocol version 3.0 of the startup message.
const PROTOCOL_VERSION_3: u32 = 196608;
/// Size of the CopyData messages a file is sent in.
const COPY_CHUNK_BYTES: usize = 256 * 1024;
/// Largest backend message accepted (error texts and status messages are small).
const MAX_BACKEND_MESSAGE_BYTES: usize = 1024 * 1024;

/// One connection to a libpq server.
pub struct PgCopyClient {
    stream: TcpStream,
}

impl PgCopyClient {
    /// Connects to `addr` (host:port) and completes the startup up to ReadyForQuery.
    pub fn connect(addr: &str, timeout: Duration) -> anyhow::Result<PgCopyClient> {
        let stream = TcpStream::connect(addr).with_context(|| format!("connecting to {addr}"))?;
        stream.set_read_timeout(Some(timeout))?;
        stream.set_write_timeout(Some(timeout))?;
        let mut body = PROTOCOL_VERSION_3.to_be_bytes().to_vec();
        body.extend_from_slice(b"user\0cloud_admin\0\0");
        let mut pkt = ((body.len() + 4) as u32).to_be_bytes().to_vec();
        pkt.extend_from_slice(&body);
        let mut c = PgCopyClient { stream };
        c.stream.write_all(&pkt)?;
        loop {
            let (tag, body) = c.read()?;
            match tag {
                b'Z' => return Ok(c),
                b'E' => bail!("connection refused: {}", error_text(&body)),
                b'R' if body.get(..4) != Some(&[0, 0, 0, 0]) => {
                    bail!("the server asks for authentication, which is not supported")
                }
                _ => {}
            }
        }
    }

    fn send(&mut self, tag: u8, body: &[u8]) -> anyhow::Result<()> {
        let mut msg = Vec::with_capacity(body.len() + 5);
        msg.push(tag);
        msg.extend_from_slice(&((body.len() + 4) as u32).to_be_bytes());
        msg.extend_from_slice(body);
        self.stream.write_all(&msg)?;
        Ok(())
    }

    fn read(&mut self) -> anyhow::Result<(u8, Vec<u8>)> {
        let mut hdr = [0u8; 5];
        self.stream
            .read_exact(&mut hdr)
            .context("reading from the server")?;
        let len = u32::from_be_bytes([hdr[1], hdr[2], hdr[3], hdr[4]]) as usize;
        if !(4..=MAX_BACKEND_MESSAGE_BYTES).contains(&len) {
            bail!("bad message length {len} from the server");
        }
        let mut body = vec![0u8; len - 4];
        self.stream.read_exact(&mut body)?;
        Ok((hdr[0], body))
    }

    /// Sends `query`, which must answer with a COPY IN, streams `data` as CopyData, then
    /// CopyDone; returns the CommandComplete tag, or the server's error.
    pub fn copy_in(&mut self, query: &str, data: &mut dyn Read) -> anyhow::Result<String> {
        let mut q = query.as_bytes().to_vec();
        q.push(0);
        self.send(b'Q', &q)?;
        let (tag, body) = self.read()?;
        match tag {
            b'G' => {}
            b'E' => {
                let msg = error_text(&body);
                self.read_until_ready()?;
                bail!("{msg}");
            }
            t => bail!("unexpected answer {:?} to {query:?}", t as char),
        }
        let mut buf = vec![0u8; COPY_CHUNK_BYTES];
        loop {
            let n = data.read(&mut buf).context("reading the input file")?;
            if n == 0 {
                break;
            }
            self.send(b'd', &buf[..n])?;
        }
        self.send(b'c', &[])?;
        let mut done = None;
        let mut error = None;
        loop {
            let (tag, body) = self.read()?;
            match tag {
                b'C' => {
                    done = Some(
                        String::from_utf8_lossy(body.split(|b| *b == 0).next().unwrap_or_default())
                            .into_owned(),
                    )
                }
                b'E' => error = Some(error_text(&body)),
                b'Z' => break,
                _ => {}
            }
        }
        match (error, done) {
            (Some(e), _) => bail!("{e}"),
            (None, Some(tag)) => Ok(tag),
            (None, None) => bail!("the server ended {query:?} without a result"),
        }
    }

    fn read_until_ready(&mut self) -> anyhow::Result<()> {
        while self.read()?.0 != b'Z' {}
        Ok(())
    }
}

/// The message ('M' field) of an ErrorResponse body, with its severity.
fn error_text(body: &[u8]) -> String {
    let mut severity = "ERROR".to_string();
    let mut message = String::new();
    for field in body.split(|b| *b == 0) {
        match field.split_first() {
            Some((b'S', v)) => severity = String::from_utf8_lossy(v).into_owned(),
            Some((b'M', v)) => message = String::from_utf8_lossy(v).into_owned(),
            _ => {}
        }
    }
    format!("{severity}: {message}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_fields() {
        let body = b"SERROR\0C22023\0Mimport failed: bad\0\0";
        assert_eq!(error_text(body), "ERROR: import failed: bad");
    }
}

//! Streaming helpers for tar imports:
//!
//! - [`ChannelReader`]: a blocking [`Read`] over chunks arriving on a bounded channel (the
//!   CopyData messages of a libpq COPY IN), so an archive is never held in memory whole;
//! - [`TarTap`]: a pass-through [`Read`] that follows the tar structure of the bytes it hands
//!   on (512-byte headers, padded data), captures `backup_label`, and turns a missing
//!   end-of-archive marker (truncation) or non-zero bytes after it (appended garbage) into
//!   read errors.

use std::io::{self, Read};

use bytes::Bytes;
use tokio::sync::mpsc;

/// Size of a tar block (headers and data padding).
const TAR_BLOCK_BYTES: usize = 512;
/// Largest `backup_label` captured (real ones are a few hundred bytes).
const MAX_BACKUP_LABEL_BYTES: u64 = 64 * 1024;

/// One chunk of a streamed archive, or why the sender gave up (e.g. the client's CopyFail).
pub type Chunk = Result<Bytes, String>;

/// Blocking reader over a channel of chunks; the end of the channel is the end of the stream.
/// Must be used outside the async runtime (e.g. in `spawn_blocking`).
pub struct ChannelReader {
    rx: mpsc::Receiver<Chunk>,
    current: Bytes,
}

impl ChannelReader {
    pub fn new(rx: mpsc::Receiver<Chunk>) -> ChannelReader {
        ChannelReader {
            rx,
            current: Bytes::new(),
        }
    }
}

impl Read for ChannelReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        while self.current.is_empty() {
            match self.rx.blocking_recv() {
                None => return Ok(0),
                Some(Ok(b)) => self.current = b,
                Some(Err(reason)) => return Err(io::Error::other(reason)),
            }
        }
        let n = buf.len().min(self.current.len());
        buf[..n].copy_from_slice(&self.current[..n]);
        let _ = self.current.split_to(n);
        Ok(n)
    }
}

/// Where in the tar structure the next byte is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Pos {
    /// Inside a 512-byte header (this many bytes of it seen).
    Header(usize),
    /// Inside an entry's data (this many bytes left), then padding.
    Data { left: u64, pad: u64 },
    /// After the end-of-archive marker: only zero bytes may follow.
    End,
}

/// Pass-through reader that checks the tar framing of the stream (see the module docs).
pub struct TarTap<R> {
    inner: R,
    pos: Pos,
    header: [u8; TAR_BLOCK_BYTES],
    total_bytes: u64,
    capture: Option<Vec<u8>>,
    /// The contents of `backup_label`, if the archive has one.
    pub backup_label: Option<Vec<u8>>,
}

impl<R: Read> TarTap<R> {
    pub fn new(inner: R) -> TarTap<R> {
        TarTap {
            inner,
            pos: Pos::Header(0),
            header: [0; TAR_BLOCK_BYTES],
            total_bytes: 0,
            capture: None,
            backup_label: None,
        }
    }

    /// Reads (and checks) everything left up to the end of the stream.
    pub fn drain(&mut self) -> io::Result<()> {
        let mut buf = vec![0u8; 64 * 1024];
        while self.read(&mut buf)? > 0 {}
        Ok(())
    }

    fn observe(&mut self, mut bytes: &[u8]) -> io::Result<()> {
        while !bytes.is_empty() {
            match self.pos {
                Pos::End => {
                    if bytes.iter().any(|b| *b != 0) {
                        return Err(io::Error::new(
                            io::ErrorKind::InvalidData,
                            "garbage after the end of the tar archive",
                        ));
                    }
                    return Ok(());
                }
                Pos::Header(filled) => {
                    let n = (TAR_BLOCK_BYTES - filled).min(bytes.len());
                    self.header[filled..filled + n].copy_from_slice(&bytes[..n]);
                    bytes = &bytes[n..];
                    self.pos = Pos::Header(filled + n);
                    if filled + n == TAR_BLOCK_BYTES {
                        self.header_complete();
                    }
                }
                Pos::Data { left, pad } => {
                    let in_data = (left.min(bytes.len() as u64)) as usize;
                    if let Some(c) = &mut self.capture {
                        c.extend_from_slice(&bytes[..in_data]);
                    }
                    bytes = &bytes[in_data..];
                    let left = left - in_data as u64;
                    if left == 0 {
                        if let Some(c) = self.capture.take() {
                            self.backup_label = Some(c);
                        }
                    }
                    let in_pad = (pad.min(bytes.len() as u64)) as usize;
                    bytes = &bytes[in_pad..];
                    let pad = if left == 0 { pad - in_pad as u64 } else { pad };
                    self.pos = if left == 0 && pad == 0 {
                        Pos::Header(0)
                    } else {
                        Pos::Data { left, pad }
                    };
                }
            }
        }
        Ok(())
    }

    fn header_complete(&mut self) {
        if self.header.iter().all(|b| *b == 0) {
            self.pos = Pos::End;
            return;
        }
        let size = parse_size(&self.header[124..136]).unwrap_or(0);
        let pad = (TAR_BLOCK_BYTES as u64 - size % TAR_BLOCK_BYTES as u64) % TAR_BLOCK_BYTES as u64;
        let name_end = self.header[..100]
            .iter()
            .position(|b| *b == 0)
            .unwrap_or(100);
        let name = String::from_utf8_lossy(&self.header[..name_end]);
        let is_regular = matches!(self.header[156], b'0' | 0);
        if is_regular
            && name.trim_start_matches("./") == "backup_label"
            && size <= MAX_BACKUP_LABEL_BYTES
        {
            self.capture = Some(Vec::with_capacity(size as usize));
            if size == 0 {
                self.backup_label = self.capture.take();
            }
        }
        self.pos = if size == 0 {
            Pos::Header(0)
        } else {
            Pos::Data { left: size, pad }
        };
    }
}

/// A tar numeric field: octal ASCII (NUL/space padded) or GNU base-256.
fn parse_size(field: &[u8]) -> Option<u64> {
    if field[0] & 0x80 != 0 {
        let mut v: u64 = 0;
        for b in &field[field.len() - 8..] {
            v = (v << 8) | u64::from(*b);
        }
        return Some(v);
    }
    let text = std::str::from_utf8(field).ok()?;
    let text = text.trim_matches(|c: char| c == '\0' || c == ' ');
    if text.is_empty() {
        return Some(0);
    }
    u64::from_str_radix(text, 8).ok()
}

impl<R: Read> Read for TarTap<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        if n == 0 {
            return match self.pos {
                Pos::End => Ok(0),
                _ if self.total_bytes == 0 => Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "the tar archive is empty",
                )),
                _ => Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    format!(
                        "the tar archive is truncated after {} bytes (no end-of-archive marker)",
                        self.total_bytes
                    ),
                )),
            };
        }
        self.total_bytes += n as u64;
        self.observe(&buf[..n])?;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn archive(files: &[(&str, &[u8])]) -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        for (name, data) in files {
            let mut h = tar::Header::new_gnu();
            h.set_size(data.len() as u64);
            h.set_mode(0o600);
            h.set_cksum();
            b.append_data(&mut h, name, *data).unwrap();
        }
        b.into_inner().unwrap()
    }

    fn read_all(bytes: &[u8], chunk: usize) -> (io::Result<()>, Option<Vec<u8>>) {
        struct Chunked<'a>(&'a [u8], usize);
        impl Read for Chunked<'_> {
            fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
                let n = self.0.len().min(buf.len()).min(self.1);
                buf[..n].copy_from_slice(&self.0[..n]);
                self.0 = &self.0[n..];
                Ok(n)
            }
        }
        let mut tap = TarTap::new(Chunked(bytes, chunk));
        let r = tap.drain();
        (r, tap.backup_label)
    }

    #[test]
    fn captures_backup_label_at_any_chunking() {
        let label = b"START WAL LOCATION: 0/2000028 (file 000000010000000000000002)\n";
        let big = vec![7u8; 1500];
        let a = archive(&[("x/big", &big), ("backup_label", label), ("y", b"")]);
        for chunk in [1, 7, 511, 512, 513, 4096, 1 << 20] {
            let (r, got) = read_all(&a, chunk);
            r.unwrap();
            assert_eq!(got.as_deref(), Some(&label[..]), "chunk {chunk}");
        }
    }

    #[test]
    fn rejects_truncated_empty_and_garbage() {
        let a = archive(&[("f", &[1u8; 1000])]);
        for cut in [0, 100, 512, 1024, 1536] {
            let (r, _) = read_all(&a[..cut], 300);
            let msg = r.unwrap_err().to_string();
            assert!(
                msg.contains("truncated") || msg.contains("empty"),
                "cut {cut}: {msg}"
            );
        }
        let mut g = a.clone();
        g.extend_from_slice(b"garbage");
        let (r, _) = read_all(&g, 4096);
        assert!(r.unwrap_err().to_string().contains("garbage"));
        let mut z = a.clone();
        z.extend_from_slice(&[0u8; 10240]);
        read_all(&z, 4096).0.unwrap();
    }
}

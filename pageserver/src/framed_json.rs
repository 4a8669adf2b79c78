//! The framing of the pageserver's small JSON state files (timeline `metadata`,
//! `wal_source.json`): a header naming the file kind and version, then a crc32c-checked body.
//!
//! ```text
//! magic    4 bytes  per file kind ("NTLM", "NWSR", ...)
//! version  u16      big-endian
//! len      u32      big-endian, length of the body
//! crc32c   u32      big-endian, of the body
//! body     len bytes JSON
//! ```

use serde::de::DeserializeOwned;
use serde::Serialize;

/// Bytes before the body.
pub const HEADER_BYTES: usize = 4 + 2 + 4 + 4;

/// What a file kind's header must say.
#[derive(Debug, Clone, Copy)]
pub struct Frame {
    pub magic: &'static [u8; 4],
    pub version: u16,
    /// Bodies longer than this are rejected as corrupt.
    pub max_body_bytes: usize,
}

impl Frame {
    /// The largest valid file: read no more than this.
    pub fn max_file_bytes(&self) -> u64 {
        (HEADER_BYTES + self.max_body_bytes) as u64
    }

    /// The file's bytes for `value`.
    pub fn encode<T: Serialize>(&self, value: &T) -> Vec<u8> {
        let body = serde_json::to_vec(value).expect("a state file body serializes to JSON");
        assert!(
            body.len() <= self.max_body_bytes,
            "state file body of {} bytes exceeds {}",
            body.len(),
            self.max_body_bytes
        );
        let mut out = Vec::with_capacity(HEADER_BYTES + body.len());
        out.extend_from_slice(self.magic);
        out.extend_from_slice(&self.version.to_be_bytes());
        out.extend_from_slice(&(body.len() as u32).to_be_bytes());
        out.extend_from_slice(&crc32c::crc32c(&body).to_be_bytes());
        out.extend_from_slice(&body);
        out
    }

    /// Checks header, length and checksum, then parses the body; `Err` holds the reason.
    pub fn decode<T: DeserializeOwned>(&self, buf: &[u8]) -> Result<T, String> {
        if buf.len() < HEADER_BYTES {
            return Err(format!("{} bytes is shorter than the header", buf.len()));
        }
        if &buf[0..4] != self.magic {
            return Err("bad magic".into());
        }
        let version = u16::from_be_bytes([buf[4], buf[5]]);
        if version != self.version {
            return Err(format!("unsupported format version {version}"));
        }
        let len = u32::from_be_bytes([buf[6], buf[7], buf[8], buf[9]]) as usize;
        if len > self.max_body_bytes || HEADER_BYTES + len != buf.len() {
            return Err(format!(
                "body length {len} does not match file length {}",
                buf.len()
            ));
        }
        let crc = u32::from_be_bytes([buf[10], buf[11], buf[12], buf[13]]);
        let body = &buf[HEADER_BYTES..];
        if crc32c::crc32c(body) != crc {
            return Err("checksum mismatch".into());
        }
        serde_json::from_slice(body).map_err(|e| format!("bad body: {e}"))
    }
}

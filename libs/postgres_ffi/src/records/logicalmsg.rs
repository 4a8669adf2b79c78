//! LogicalMessage resource manager (rmid 21): `pg_logical_emit_message()` payloads
//! (replication/message.h).

use super::reader::{fixed_c_string, Reader};
use super::RecordDecodeError;

pub const XLOG_LOGICAL_MESSAGE: u8 = 0x00;

/// `xl_logical_message`: dbId 0, transactional 4, prefix_size 8 (Size), message_size 16 (Size),
/// then the NUL-terminated prefix (`prefix_size` bytes) and the message at 24.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LogicalMessage {
    pub db_id: u32,
    pub transactional: bool,
    /// The prefix without its terminating NUL.
    pub prefix: String,
    pub message: Vec<u8>,
}

/// Decodes the main data of a LogicalMessage-rmgr record; `info` is `xl_info`.
pub fn decode_logical_message(
    info: u8,
    main_data: &[u8],
) -> Result<LogicalMessage, RecordDecodeError> {
    if info & 0xF0 != XLOG_LOGICAL_MESSAGE {
        return Err(RecordDecodeError::UnknownInfo {
            rmgr: "LogicalMessage",
            info: info & 0xF0,
        });
    }
    const W: &str = "xl_logical_message";
    let mut r = Reader::new(main_data);
    r.require(24, W)?;
    let db_id = r.u32(W)?;
    let transactional = r.bool(W)?;
    r.skip(3, W)?;
    let prefix_size = size_field(r.u64(W)?, "xl_logical_message.prefix_size")?;
    let message_size = size_field(r.u64(W)?, "xl_logical_message.message_size")?;
    let prefix = fixed_c_string(r.bytes(prefix_size, "xl_logical_message prefix")?);
    let message = r
        .bytes(message_size, "xl_logical_message message")?
        .to_vec();
    Ok(LogicalMessage {
        db_id,
        transactional,
        prefix,
        message,
    })
}

/// A C `Size` length field as `usize`.
fn size_field(v: u64, what: &'static str) -> Result<usize, RecordDecodeError> {
    usize::try_from(v).map_err(|_| RecordDecodeError::InvalidCount {
        what,
        count: i64::try_from(v).unwrap_or(i64::MAX),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn message() {
        let mut b = 5u32.to_le_bytes().to_vec();
        b.extend_from_slice(&[1, 0, 0, 0]);
        b.extend_from_slice(&4u64.to_le_bytes());
        b.extend_from_slice(&2u64.to_le_bytes());
        b.extend_from_slice(b"neo\0hi");
        assert_eq!(
            decode_logical_message(XLOG_LOGICAL_MESSAGE, &b).unwrap(),
            LogicalMessage {
                db_id: 5,
                transactional: true,
                prefix: "neo".into(),
                message: b"hi".to_vec()
            }
        );
        for len in 0..b.len() {
            assert!(decode_logical_message(XLOG_LOGICAL_MESSAGE, &b[..len]).is_err());
        }
        let mut huge = b.clone();
        huge[16..24].copy_from_slice(&u64::MAX.to_le_bytes());
        assert!(decode_logical_message(XLOG_LOGICAL_MESSAGE, &huge).is_err());
        assert!(decode_logical_message(0x10, &b).is_err());
    }
}

//! CLOG resource manager (rmid 3): commit-log SLRU page zeroing and truncation
//! (access/clog.h).

use super::reader::Reader;
use super::RecordDecodeError;

pub const CLOG_ZEROPAGE: u8 = 0x00;
pub const CLOG_TRUNCATE: u8 = 0x10;

/// A decoded CLOG-rmgr record.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ClogRecord {
    /// Zero-fill CLOG page `pageno` (main data: one C `int`).
    ZeroPage { pageno: u32 },
    /// `xl_clog_truncate` (12 bytes): remove segments before the one holding `pageno`.
    Truncate {
        pageno: u32,
        oldest_xact: u32,
        oldest_xact_db: u32,
    },
}

/// Reads an SLRU page number (a C `int`; negative values are rejected).
pub(crate) fn read_page_number(
    r: &mut Reader<'_>,
    what: &'static str,
) -> Result<u32, RecordDecodeError> {
    let pageno = r.i32(what)?;
    u32::try_from(pageno).map_err(|_| RecordDecodeError::InvalidValue {
        what,
        value: i64::from(pageno),
    })
}

/// Decodes the main data of a CLOG-rmgr record; `info` is `xl_info`.
pub fn decode_clog(info: u8, main_data: &[u8]) -> Result<ClogRecord, RecordDecodeError> {
    let mut r = Reader::new(main_data);
    match info & 0xF0 {
        CLOG_ZEROPAGE => Ok(ClogRecord::ZeroPage {
            pageno: read_page_number(&mut r, "CLOG_ZEROPAGE pageno")?,
        }),
        CLOG_TRUNCATE => {
            r.require(12, "xl_clog_truncate")?;
            Ok(ClogRecord::Truncate {
                pageno: read_page_number(&mut r, "xl_clog_truncate.pageno")?,
                oldest_xact: r.u32("xl_clog_truncate.oldestXact")?,
                oldest_xact_db: r.u32("xl_clog_truncate.oldestXactDb")?,
            })
        }
        other => Err(RecordDecodeError::UnknownInfo {
            rmgr: "CLOG",
            info: other,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zero_page_and_truncate() {
        assert_eq!(
            decode_clog(CLOG_ZEROPAGE, &3i32.to_le_bytes()).unwrap(),
            ClogRecord::ZeroPage { pageno: 3 }
        );
        assert!(decode_clog(CLOG_ZEROPAGE, &[0; 3]).is_err());
        assert!(matches!(
            decode_clog(CLOG_ZEROPAGE, &(-2i32).to_le_bytes()),
            Err(RecordDecodeError::InvalidValue { value: -2, .. })
        ));
        let b: Vec<u8> = [32u32, 1_048_576, 1]
            .iter()
            .flat_map(|v| v.to_le_bytes())
            .collect();
        assert_eq!(
            decode_clog(CLOG_TRUNCATE, &b).unwrap(),
            ClogRecord::Truncate {
                pageno: 32,
                oldest_xact: 1_048_576,
                oldest_xact_db: 1
            }
        );
        assert!(decode_clog(CLOG_TRUNCATE, &b[..11]).is_err());
        assert!(decode_clog(0x20, &b).is_err());
    }
}

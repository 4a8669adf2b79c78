//! MultiXact resource manager (rmid 6): multixact SLRU page zeroing, multixact creation and
//! truncation (access/multixact.h).

use super::clog::read_page_number;
use super::reader::Reader;
use super::RecordDecodeError;

pub const XLOG_MULTIXACT_ZERO_OFF_PAGE: u8 = 0x00;
pub const XLOG_MULTIXACT_ZERO_MEM_PAGE: u8 = 0x10;
pub const XLOG_MULTIXACT_CREATE_ID: u8 = 0x20;
pub const XLOG_MULTIXACT_TRUNCATE_ID: u8 = 0x30;

/// A decoded MultiXact-rmgr record.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MultiXactRecord {
    /// Zero-fill page `pageno` of pg_multixact/offsets (main data: one C `int`).
    ZeroOffPage {
        pageno: u32,
    },
    /// Zero-fill page `pageno` of pg_multixact/members (main data: one C `int`).
    ZeroMemPage {
        pageno: u32,
    },
    CreateId(MultiXactCreate),
    Truncate(MultiXactTruncate),
}

/// `MultiXactStatus` of a member (C enum, 4 bytes).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MultiXactStatus {
    ForKeyShare = 0,
    ForShare = 1,
    ForNoKeyUpdate = 2,
    ForUpdate = 3,
    /// An update that doesn't touch key columns.
    NoKeyUpdate = 4,
    /// Other updates, and delete.
    Update = 5,
}

impl MultiXactStatus {
    /// Maps the C enum value; `None` for values PostgreSQL 15 does not define.
    pub fn from_i32(v: i32) -> Option<MultiXactStatus> {
        Some(match v {
            0 => MultiXactStatus::ForKeyShare,
            1 => MultiXactStatus::ForShare,
            2 => MultiXactStatus::ForNoKeyUpdate,
            3 => MultiXactStatus::ForUpdate,
            4 => MultiXactStatus::NoKeyUpdate,
            5 => MultiXactStatus::Update,
            _ => return None,
        })
    }

    /// Whether the member updated the tuple (ISUPDATE_from_mxstatus).
    pub fn is_update(self) -> bool {
        matches!(self, MultiXactStatus::NoKeyUpdate | MultiXactStatus::Update)
    }
}

/// One `MultiXactMember` (8 bytes: xid, status).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MultiXactMember {
    pub xid: u32,
    pub status: MultiXactStatus,
}

/// `xl_multixact_create`: mid at 0, moff at 4, nmembers at 8, members at 12.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MultiXactCreate {
    /// The new MultiXactId.
    pub mid: u32,
    /// Its first offset in the members SLRU.
    pub moff: u32,
    pub members: Vec<MultiXactMember>,
}

/// `xl_multixact_truncate` (20 bytes).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MultiXactTruncate {
    pub oldest_multi_db: u32,
    /// Truncated range of multixact IDs (offsets SLRU).
    pub start_trunc_off: u32,
    pub end_trunc_off: u32,
    /// Truncated range of member offsets (members SLRU).
    pub start_trunc_memb: u32,
    pub end_trunc_memb: u32,
}

/// Decodes the main data of a MultiXact-rmgr record; `info` is `xl_info`.
pub fn decode_multixact(info: u8, main_data: &[u8]) -> Result<MultiXactRecord, RecordDecodeError> {
    let mut r = Reader::new(main_data);
    match info & 0xF0 {
        XLOG_MULTIXACT_ZERO_OFF_PAGE => Ok(MultiXactRecord::ZeroOffPage {
            pageno: read_page_number(&mut r, "ZERO_OFF_PAGE pageno")?,
        }),
        XLOG_MULTIXACT_ZERO_MEM_PAGE => Ok(MultiXactRecord::ZeroMemPage {
            pageno: read_page_number(&mut r, "ZERO_MEM_PAGE pageno")?,
        }),
        XLOG_MULTIXACT_CREATE_ID => Ok(MultiXactRecord::CreateId(decode_create(&mut r)?)),
        XLOG_MULTIXACT_TRUNCATE_ID => {
            const W: &str = "xl_multixact_truncate";
            r.require(20, W)?;
            Ok(MultiXactRecord::Truncate(MultiXactTruncate {
                oldest_multi_db: r.u32(W)?,
                start_trunc_off: r.u32(W)?,
                end_trunc_off: r.u32(W)?,
                start_trunc_memb: r.u32(W)?,
                end_trunc_memb: r.u32(W)?,
            }))
        }
        other => Err(RecordDecodeError::UnknownInfo {
            rmgr: "MultiXact",
            info: other,
        }),
    }
}

fn decode_create(r: &mut Reader<'_>) -> Result<MultiXactCreate, RecordDecodeError> {
    const W: &str = "xl_multixact_create";
    r.require(12, W)?;
    let mid = r.u32(W)?;
    let moff = r.u32(W)?;
    let nmembers = r.count_i32("xl_multixact_create.nmembers")?;
    let members = r.vec_of(nmembers, 8, "xl_multixact_create.members", |r| {
        let xid = r.u32("MultiXactMember.xid")?;
        let raw = r.i32("MultiXactMember.status")?;
        let status = MultiXactStatus::from_i32(raw).ok_or(RecordDecodeError::InvalidValue {
            what: "MultiXactMember.status",
            value: i64::from(raw),
        })?;
        Ok(MultiXactMember { xid, status })
    })?;
    Ok(MultiXactCreate { mid, moff, members })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn words(v: &[u32]) -> Vec<u8> {
        v.iter().flat_map(|x| x.to_le_bytes()).collect()
    }

    #[test]
    fn zero_pages() {
        assert_eq!(
            decode_multixact(XLOG_MULTIXACT_ZERO_OFF_PAGE, &words(&[4])).unwrap(),
            MultiXactRecord::ZeroOffPage { pageno: 4 }
        );
        assert_eq!(
            decode_multixact(XLOG_MULTIXACT_ZERO_MEM_PAGE, &words(&[5])).unwrap(),
            MultiXactRecord::ZeroMemPage { pageno: 5 }
        );
        assert!(decode_multixact(XLOG_MULTIXACT_ZERO_MEM_PAGE, &[1, 2]).is_err());
    }

    #[test]
    fn create_id() {
        let b = words(&[9, 100, 2, 700, 0, 701, 5]);
        let rec = decode_multixact(XLOG_MULTIXACT_CREATE_ID, &b).unwrap();
        let MultiXactRecord::CreateId(c) = rec else {
            panic!("expected CreateId, got {rec:?}")
        };
        assert_eq!((c.mid, c.moff), (9, 100));
        assert_eq!(
            c.members,
            vec![
                MultiXactMember {
                    xid: 700,
                    status: MultiXactStatus::ForKeyShare
                },
                MultiXactMember {
                    xid: 701,
                    status: MultiXactStatus::Update
                }
            ]
        );
        assert!(c.members[1].status.is_update());
        assert!(decode_multixact(XLOG_MULTIXACT_CREATE_ID, &b[..27]).is_err());
        let bad_status = words(&[9, 100, 1, 700, 6]);
        assert!(matches!(
            decode_multixact(XLOG_MULTIXACT_CREATE_ID, &bad_status),
            Err(RecordDecodeError::InvalidValue { value: 6, .. })
        ));
    }

    #[test]
    fn truncate() {
        let b = words(&[1, 1, 50, 0, 400]);
        assert_eq!(
            decode_multixact(XLOG_MULTIXACT_TRUNCATE_ID, &b).unwrap(),
            MultiXactRecord::Truncate(MultiXactTruncate {
                oldest_multi_db: 1,
                start_trunc_off: 1,
                end_trunc_off: 50,
                start_trunc_memb: 0,
                end_trunc_memb: 400
            })
        );
        assert!(decode_multixact(XLOG_MULTIXACT_TRUNCATE_ID, &b[..19]).is_err());
        assert!(decode_multixact(0x40, &b).is_err());
    }
}

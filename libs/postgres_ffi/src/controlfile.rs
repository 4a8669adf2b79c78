//! The control file `global/pg_control` of PostgreSQL 15 (catalog/pg_control.h).
//!
//! `ControlFileData` on x86-64 (sizeof = 296, 8-byte aligned):
//!
//! | offset | field                     | offset | field                  |
//! |-------:|---------------------------|-------:|------------------------|
//! |      0 | system_identifier (u64)   |    184 | max_worker_processes   |
//! |      8 | pg_control_version        |    188 | max_wal_senders        |
//! |     12 | catalog_version_no        |    192 | max_prepared_xacts     |
//! |     16 | state (+4 padding)        |    196 | max_locks_per_xact     |
//! |     24 | time (pg_time_t)          |    200 | track_commit_timestamp |
//! |     32 | checkPoint                |    204 | maxAlign               |
//! |     40 | checkPointCopy (88 bytes) |    208 | floatFormat (double)   |
//! |    128 | unloggedLSN               |    216 | blcksz                 |
//! |    136 | minRecoveryPoint          |    220 | relseg_size            |
//! |    144 | minRecoveryPointTLI (+4)  |    224 | xlog_blcksz            |
//! |    152 | backupStartPoint          |    228 | xlog_seg_size          |
//! |    160 | backupEndPoint            |    232 | nameDataLen            |
//! |    168 | backupEndRequired (+3)    |    236 | indexMaxKeys           |
//! |    172 | wal_level                 |    240 | toast_max_chunk_size   |
//! |    176 | wal_log_hints (+3)        |    244 | loblksize              |
//! |    180 | MaxConnections            |    248 | float8ByVal (+3)       |
//! |        |                           |    252 | data_checksum_version  |
//! |        |                           |    256 | mock_authentication_nonce (32 bytes) |
//! |        |                           |    288 | crc (+4 trailing padding) |
//!
//! The CRC-32C covers bytes `0..288`; the file is zero-padded to 8192 bytes.

use utils::lsn::Lsn;

use crate::records::reader::Reader;
use crate::records::{CheckPoint, RecordDecodeError};

/// `PG_CONTROL_VERSION` of PostgreSQL 15.
pub const PG_CONTROL_VERSION: u32 = 1300;
/// `CATALOG_VERSION_NO` of PostgreSQL 15 (catalog/catversion.h).
pub const CATALOG_VERSION_NO: u32 = 202209061;
/// Physical size of the pg_control file.
pub const PG_CONTROL_FILE_SIZE: usize = 8192;
/// `sizeof(ControlFileData)`.
pub const CONTROL_FILE_DATA_SIZE: usize = 296;
/// `offsetof(ControlFileData, crc)`: the CRC covers the bytes before it.
pub const CONTROL_FILE_CRC_OFFSET: usize = 288;
/// `MOCK_AUTH_NONCE_LEN`.
pub const MOCK_AUTH_NONCE_LEN: usize = 32;
/// `FLOATFORMAT_VALUE`: the constant stored in `floatFormat`.
pub const FLOATFORMAT_VALUE: f64 = 1234567.0;

/// Why a pg_control image could not be decoded.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ControlFileError {
    #[error("pg_control too short: need {need_bytes} bytes, have {have_bytes}")]
    TooShort {
        need_bytes: usize,
        have_bytes: usize,
    },
    #[error("pg_control version {found} is not PostgreSQL 15's {expected}")]
    ControlVersion { found: u32, expected: u32 },
    #[error("pg_control CRC mismatch: stored 0x{stored:08X}, computed 0x{computed:08X}")]
    Crc { stored: u32, computed: u32 },
    #[error("catalog version {found} is not PostgreSQL 15's {expected}")]
    CatalogVersion { found: u32, expected: u32 },
    #[error("invalid database cluster state {0}")]
    InvalidState(i32),
    #[error("pg_control field: {0}")]
    Field(#[from] RecordDecodeError),
}

/// Cluster state (`DBState`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum DbState {
    #[default]
    Startup = 0,
    Shutdowned = 1,
    ShutdownedInRecovery = 2,
    Shutdowning = 3,
    InCrashRecovery = 4,
    InArchiveRecovery = 5,
    InProduction = 6,
}

impl DbState {
    /// Maps the C enum value.
    pub fn from_i32(v: i32) -> Option<DbState> {
        Some(match v {
            0 => DbState::Startup,
            1 => DbState::Shutdowned,
            2 => DbState::ShutdownedInRecovery,
            3 => DbState::Shutdowning,
            4 => DbState::InCrashRecovery,
            5 => DbState::InArchiveRecovery,
            6 => DbState::InProduction,
            _ => return None,
        })
    }
}

/// Contents of pg_control (`ControlFileData`), minus the CRC which [`Self::encode`] computes.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ControlFileData {
    /// Unique cluster identifier.
    pub system_identifier: u64,
    pub pg_control_version: u32,
    pub catalog_version_no: u32,
    pub state: DbState,
    /// Last pg_control update, seconds since the Unix epoch.
    pub time_unix_secs: i64,
    /// Location of the last checkpoint record.
    pub checkpoint: Lsn,
    /// Copy of the last checkpoint record's body.
    pub checkpoint_copy: CheckPoint,
    /// Fake LSN counter for unlogged relations.
    pub unlogged_lsn: Lsn,
    pub min_recovery_point: Lsn,
    pub min_recovery_point_tli: u32,
    pub backup_start_point: Lsn,
    pub backup_end_point: Lsn,
    pub backup_end_required: bool,
    pub wal_level: i32,
    pub wal_log_hints: bool,
    pub max_connections: i32,
    pub max_worker_processes: i32,
    pub max_wal_senders: i32,
    pub max_prepared_xacts: i32,
    pub max_locks_per_xact: i32,
    pub track_commit_timestamp: bool,
    pub max_align: u32,
    /// Should be [`FLOATFORMAT_VALUE`].
    pub float_format: f64,
    pub blcksz: u32,
    pub relseg_size: u32,
    pub xlog_blcksz: u32,
    pub xlog_seg_size: u32,
    pub name_data_len: u32,
    pub index_max_keys: u32,
    pub toast_max_chunk_size: u32,
    pub loblksize: u32,
    pub float8_by_val: bool,
    /// 0 when data checksums are off, else the checksum version (1).
    pub data_checksum_version: u32,
    pub mock_authentication_nonce: [u8; MOCK_AUTH_NONCE_LEN],
}

/// Fails unless `bytes` holds a whole `ControlFileData`.
fn check_length(bytes: &[u8]) -> Result<(), ControlFileError> {
    if bytes.len() < CONTROL_FILE_DATA_SIZE {
        return Err(ControlFileError::TooShort {
            need_bytes: CONTROL_FILE_DATA_SIZE,
            have_bytes: bytes.len(),
        });
    }
    Ok(())
}

/// CRC-32C of the bytes covered by pg_control's CRC (the first 288; callers pass at least that).
fn control_crc(bytes: &[u8]) -> u32 {
    crc32c::crc32c(bytes.get(..CONTROL_FILE_CRC_OFFSET).unwrap_or(bytes))
}

impl ControlFileData {
    /// Decodes a pg_control image, checking (like ReadControlFile) the control version, the
    /// CRC and the catalog version. `bytes` may be the whole 8192-byte file or just the struct.
    pub fn decode(bytes: &[u8]) -> Result<ControlFileData, ControlFileError> {
        check_length(bytes)?;
        let mut r = Reader::new(bytes);
        r.skip(8, "system_identifier")?;
        let pg_control_version = r.u32("pg_control_version")?;
        if pg_control_version != PG_CONTROL_VERSION {
            return Err(ControlFileError::ControlVersion {
                found: pg_control_version,
                expected: PG_CONTROL_VERSION,
            });
        }
        let stored = Self::stored_crc(bytes)?;
        let computed = control_crc(bytes);
        if stored != computed {
            return Err(ControlFileError::Crc { stored, computed });
        }
        let data = Self::decode_unchecked(bytes)?;
        if data.catalog_version_no != CATALOG_VERSION_NO {
            return Err(ControlFileError::CatalogVersion {
                found: data.catalog_version_no,
                expected: CATALOG_VERSION_NO,
            });
        }
        Ok(data)
    }

    /// The CRC stored in a pg_control image.
    pub fn stored_crc(bytes: &[u8]) -> Result<u32, ControlFileError> {
        let mut r = Reader::new(bytes);
        r.skip(CONTROL_FILE_CRC_OFFSET, "ControlFileData")?;
        Ok(r.u32("ControlFileData.crc")?)
    }

    /// Decodes the fields without verifying versions or the CRC (for tools that inspect
    /// damaged or foreign files).
    pub fn decode_unchecked(bytes: &[u8]) -> Result<ControlFileData, ControlFileError> {
        check_length(bytes)?;
        let mut r = Reader::new(bytes);
        let mut data = decode_header(&mut r)?;
        decode_recovery_fields(&mut r, &mut data)?;
        decode_settings(&mut r, &mut data)?;
        decode_build_constants(&mut r, &mut data)?;
        Ok(data)
    }

    /// Encodes to a full [`PG_CONTROL_FILE_SIZE`]-byte file image with the CRC computed and all
    /// padding zeroed.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(PG_CONTROL_FILE_SIZE);
        self.encode_fields(&mut out);
        let crc = control_crc(&out);
        out.extend_from_slice(&crc.to_le_bytes());
        out.resize(PG_CONTROL_FILE_SIZE, 0);
        out
    }

    /// Appends the bytes before the CRC (offsets 0..288).
    fn encode_fields(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.system_identifier.to_le_bytes());
        put_u32s(
            out,
            &[
                self.pg_control_version,
                self.catalog_version_no,
                self.state as u32,
                0,
            ],
        );
        out.extend_from_slice(&self.time_unix_secs.to_le_bytes());
        out.extend_from_slice(&self.checkpoint.0.to_le_bytes());
        self.checkpoint_copy.encode_into(out);
        out.extend_from_slice(&self.unlogged_lsn.0.to_le_bytes());
        out.extend_from_slice(&self.min_recovery_point.0.to_le_bytes());
        put_u32s(out, &[self.min_recovery_point_tli, 0]);
        out.extend_from_slice(&self.backup_start_point.0.to_le_bytes());
        out.extend_from_slice(&self.backup_end_point.0.to_le_bytes());
        put_bool_padded(out, self.backup_end_required);
        out.extend_from_slice(&self.wal_level.to_le_bytes());
        put_bool_padded(out, self.wal_log_hints);
        for v in [
            self.max_connections,
            self.max_worker_processes,
            self.max_wal_senders,
            self.max_prepared_xacts,
            self.max_locks_per_xact,
        ] {
            out.extend_from_slice(&v.to_le_bytes());
        }
        put_bool_padded(out, self.track_commit_timestamp);
        put_u32s(out, &[self.max_align]);
        out.extend_from_slice(&self.float_format.to_le_bytes());
        put_u32s(
            out,
            &[
                self.blcksz,
                self.relseg_size,
                self.xlog_blcksz,
                self.xlog_seg_size,
                self.name_data_len,
                self.index_max_keys,
                self.toast_max_chunk_size,
                self.loblksize,
            ],
        );
        put_bool_padded(out, self.float8_by_val);
        put_u32s(out, &[self.data_checksum_version]);
        out.extend_from_slice(&self.mock_authentication_nonce);
    }
}

fn put_u32s(out: &mut Vec<u8>, values: &[u32]) {
    for v in values {
        out.extend_from_slice(&v.to_le_bytes());
    }
}

/// A `bool` followed by 3 padding bytes (the next field is 4-byte aligned).
fn put_bool_padded(out: &mut Vec<u8>, v: bool) {
    out.extend_from_slice(&[u8::from(v), 0, 0, 0]);
}

/// Reads a `bool` followed by 3 padding bytes.
fn bool_padded(r: &mut Reader<'_>, what: &'static str) -> Result<bool, RecordDecodeError> {
    let v = r.bool(what)?;
    r.skip(3, what)?;
    Ok(v)
}

/// Offsets 0..128: identity, versions, state, time, checkpoint location and copy.
fn decode_header(r: &mut Reader<'_>) -> Result<ControlFileData, ControlFileError> {
    let system_identifier = r.u64("system_identifier")?;
    let pg_control_version = r.u32("pg_control_version")?;
    let catalog_version_no = r.u32("catalog_version_no")?;
    let raw_state = r.i32("state")?;
    let state = DbState::from_i32(raw_state).ok_or(ControlFileError::InvalidState(raw_state))?;
    r.skip(4, "state padding")?;
    let time_unix_secs = r.i64("time")?;
    let checkpoint = r.lsn("checkPoint")?;
    let checkpoint_copy = CheckPoint::decode(r.bytes(CheckPoint::SIZE_BYTES, "checkPointCopy")?)?;
    Ok(ControlFileData {
        system_identifier,
        pg_control_version,
        catalog_version_no,
        state,
        time_unix_secs,
        checkpoint,
        checkpoint_copy,
        ..Default::default()
    })
}

/// Offsets 128..172: unlogged LSN and recovery/backup end points.
fn decode_recovery_fields(
    r: &mut Reader<'_>,
    d: &mut ControlFileData,
) -> Result<(), ControlFileError> {
    d.unlogged_lsn = r.lsn("unloggedLSN")?;
    d.min_recovery_point = r.lsn("minRecoveryPoint")?;
    d.min_recovery_point_tli = r.u32("minRecoveryPointTLI")?;
    r.skip(4, "minRecoveryPointTLI padding")?;
    d.backup_start_point = r.lsn("backupStartPoint")?;
    d.backup_end_point = r.lsn("backupEndPoint")?;
    d.backup_end_required = bool_padded(r, "backupEndRequired")?;
    Ok(())
}

/// Offsets 172..204: settings that matter for archiving and hot standby.
fn decode_settings(r: &mut Reader<'_>, d: &mut ControlFileData) -> Result<(), ControlFileError> {
    d.wal_level = r.i32("wal_level")?;
    d.wal_log_hints = bool_padded(r, "wal_log_hints")?;
    d.max_connections = r.i32("MaxConnections")?;
    d.max_worker_processes = r.i32("max_worker_processes")?;
    d.max_wal_senders = r.i32("max_wal_senders")?;
    d.max_prepared_xacts = r.i32("max_prepared_xacts")?;
    d.max_locks_per_xact = r.i32("max_locks_per_xact")?;
    d.track_commit_timestamp = bool_padded(r, "track_commit_timestamp")?;
    Ok(())
}

/// Offsets 204..288: build-time constants, checksum version and the nonce.
fn decode_build_constants(
    r: &mut Reader<'_>,
    d: &mut ControlFileData,
) -> Result<(), ControlFileError> {
    d.max_align = r.u32("maxAlign")?;
    d.float_format = f64::from_bits(r.u64("floatFormat")?);
    d.blcksz = r.u32("blcksz")?;
    d.relseg_size = r.u32("relseg_size")?;
    d.xlog_blcksz = r.u32("xlog_blcksz")?;
    d.xlog_seg_size = r.u32("xlog_seg_size")?;
    d.name_data_len = r.u32("nameDataLen")?;
    d.index_max_keys = r.u32("indexMaxKeys")?;
    d.toast_max_chunk_size = r.u32("toast_max_chunk_size")?;
    d.loblksize = r.u32("loblksize")?;
    d.float8_by_val = bool_padded(r, "float8ByVal")?;
    d.data_checksum_version = r.u32("data_checksum_version")?;
    d.mock_authentication_nonce
        .copy_from_slice(r.bytes(MOCK_AUTH_NONCE_LEN, "mock_authentication_nonce")?);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> ControlFileData {
        ControlFileData {
            system_identifier: 7_712_674_944_729_500_206,
            pg_control_version: PG_CONTROL_VERSION,
            catalog_version_no: CATALOG_VERSION_NO,
            state: DbState::Shutdowned,
            time_unix_secs: 1_800_000_000,
            checkpoint: Lsn(0x1500718),
            checkpoint_copy: CheckPoint {
                redo: Lsn(0x1500718),
                this_timeline_id: 1,
                prev_timeline_id: 1,
                full_page_writes: true,
                next_xid: 724,
                next_oid: 13572,
                ..Default::default()
            },
            unlogged_lsn: Lsn(1000),
            wal_level: 1,
            max_connections: 100,
            max_align: 8,
            float_format: FLOATFORMAT_VALUE,
            blcksz: 8192,
            relseg_size: 131072,
            xlog_blcksz: 8192,
            xlog_seg_size: 16 * 1024 * 1024,
            name_data_len: 64,
            index_max_keys: 32,
            toast_max_chunk_size: 1996,
            loblksize: 2048,
            float8_by_val: true,
            mock_authentication_nonce: [7; MOCK_AUTH_NONCE_LEN],
            ..Default::default()
        }
    }

    #[test]
    fn round_trip_and_layout() {
        let cf = sample();
        let bytes = cf.encode();
        assert_eq!(bytes.len(), PG_CONTROL_FILE_SIZE);
        assert_eq!(ControlFileData::decode(&bytes).unwrap(), cf);
        assert_eq!(u32::from_le_bytes(bytes[8..12].try_into().unwrap()), 1300);
        assert_eq!(
            u64::from_le_bytes(bytes[40..48].try_into().unwrap()),
            0x1500718
        );
        assert_eq!(
            u32::from_le_bytes(bytes[216..220].try_into().unwrap()),
            8192
        );
        assert_eq!(&bytes[256..288], &[7; 32]);
        assert!(bytes[CONTROL_FILE_DATA_SIZE - 4..].iter().all(|b| *b == 0));
        assert_eq!(
            ControlFileData::stored_crc(&bytes).unwrap(),
            crc32c::crc32c(&bytes[..CONTROL_FILE_CRC_OFFSET])
        );
    }

    #[test]
    fn checks() {
        let bytes = sample().encode();
        let mut flipped = bytes.clone();
        flipped[3] ^= 0x40;
        assert!(matches!(
            ControlFileData::decode(&flipped),
            Err(ControlFileError::Crc { .. })
        ));
        let mut old = sample();
        old.pg_control_version = 1201;
        assert!(matches!(
            ControlFileData::decode(&old.encode()),
            Err(ControlFileError::ControlVersion { found: 1201, .. })
        ));
        let mut cat = sample();
        cat.catalog_version_no = 1;
        assert!(matches!(
            ControlFileData::decode(&cat.encode()),
            Err(ControlFileError::CatalogVersion { found: 1, .. })
        ));
        assert!(matches!(
            ControlFileData::decode(&bytes[..CONTROL_FILE_DATA_SIZE - 1]),
            Err(ControlFileError::TooShort { .. })
        ));
        let mut bad_state = bytes.clone();
        bad_state[16] = 9;
        assert!(matches!(
            ControlFileData::decode(&bad_state),
            Err(ControlFileError::Crc { .. })
        ));
        assert_eq!(
            ControlFileData::decode_unchecked(&bad_state),
            Err(ControlFileError::InvalidState(9))
        );
    }
}

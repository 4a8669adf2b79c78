//! Physical streaming replication messages, carried inside CopyData.
//!
//! The server sends [`XLogData`] (`w`) and [`PrimaryKeepalive`] (`k`); the
//! standby answers with [`StandbyStatusUpdate`] (`r`) and
//! [`HotStandbyFeedback`] (`h`). All integers are big-endian; timestamps are
//! [`PgTimestamp`]s.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::{BufMut, Bytes, BytesMut};
use utils::lsn::Lsn;

use crate::codec::BodyReader;
use crate::error::ProtocolError;

/// Seconds from the Unix epoch (1970-01-01) to the PostgreSQL epoch (2000-01-01).
pub const PG_EPOCH_OFFSET_SECS: u64 = 946_684_800;

/// Size of an XLogData header: tag, start LSN, end LSN, send time.
pub const XLOG_DATA_HEADER_LEN_BYTES: usize = 1 + 8 + 8 + 8;

/// Microseconds since 2000-01-01 00:00:00 UTC, PostgreSQL's `TimestampTz`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PgTimestamp(pub i64);

impl PgTimestamp {
    /// The current time.
    pub fn now() -> PgTimestamp {
        PgTimestamp::from_system_time(SystemTime::now())
    }

    /// Converts a wall-clock time, saturating at the `i64` range and
    /// truncating to whole microseconds.
    pub fn from_system_time(t: SystemTime) -> PgTimestamp {
        let pg_epoch = UNIX_EPOCH + Duration::from_secs(PG_EPOCH_OFFSET_SECS);
        let micros = |d: Duration| i64::try_from(d.as_micros()).unwrap_or(i64::MAX);
        match t.duration_since(pg_epoch) {
            Ok(after) => PgTimestamp(micros(after)),
            Err(before) => PgTimestamp(micros(before.duration()).saturating_neg()),
        }
    }

    /// Converts to a wall-clock time; `None` if the platform cannot represent it.
    pub fn to_system_time(self) -> Option<SystemTime> {
        let pg_epoch = UNIX_EPOCH.checked_add(Duration::from_secs(PG_EPOCH_OFFSET_SECS))?;
        let offset = Duration::from_micros(self.0.unsigned_abs());
        if self.0 >= 0 {
            pg_epoch.checked_add(offset)
        } else {
            pg_epoch.checked_sub(offset)
        }
    }
}

fn lsn(r: &mut BodyReader, what: &'static str) -> Result<Lsn, ProtocolError> {
    r.u64(what).map(Lsn)
}

fn timestamp(r: &mut BodyReader) -> Result<PgTimestamp, ProtocolError> {
    r.i64("send time").map(PgTimestamp)
}

/// Reads and checks the tag byte.
fn expect_tag(r: &mut BodyReader, tag: u8) -> Result<(), ProtocolError> {
    match r.u8("replication message type")? {
        t if t == tag => Ok(()),
        other => Err(ProtocolError::UnknownReplicationTag(other)),
    }
}

/// A chunk of WAL (`w`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct XLogData {
    /// WAL position of the first byte of `data`.
    pub wal_start: Lsn,
    /// The server's current end of WAL.
    pub wal_end: Lsn,
    /// When the server sent this.
    pub timestamp: PgTimestamp,
    pub data: Bytes,
}

impl XLogData {
    pub const TAG: u8 = b'w';

    /// Appends tag and fields.
    pub fn encode(&self, buf: &mut BytesMut) {
        buf.reserve(XLOG_DATA_HEADER_LEN_BYTES + self.data.len());
        buf.put_u8(Self::TAG);
        buf.put_u64(self.wal_start.0);
        buf.put_u64(self.wal_end.0);
        buf.put_i64(self.timestamp.0);
        buf.put_slice(&self.data);
    }

    /// Parses a CopyData payload, tag included.
    pub fn decode(payload: Bytes) -> Result<XLogData, ProtocolError> {
        let mut r = BodyReader::new(payload);
        expect_tag(&mut r, Self::TAG)?;
        Ok(XLogData {
            wal_start: lsn(&mut r, "XLogData start")?,
            wal_end: lsn(&mut r, "XLogData end")?,
            timestamp: timestamp(&mut r)?,
            data: r.rest(),
        })
    }
}

/// A keepalive from the server (`k`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PrimaryKeepalive {
    /// The server's current end of WAL.
    pub wal_end: Lsn,
    pub timestamp: PgTimestamp,
    /// The standby should reply with a status update at once.
    pub reply_requested: bool,
}

impl PrimaryKeepalive {
    pub const TAG: u8 = b'k';

    /// Appends tag and fields.
    pub fn encode(&self, buf: &mut BytesMut) {
        buf.put_u8(Self::TAG);
        buf.put_u64(self.wal_end.0);
        buf.put_i64(self.timestamp.0);
        buf.put_u8(self.reply_requested.into());
    }

    /// Parses a CopyData payload, tag included.
    pub fn decode(payload: Bytes) -> Result<PrimaryKeepalive, ProtocolError> {
        let mut r = BodyReader::new(payload);
        expect_tag(&mut r, Self::TAG)?;
        let msg = PrimaryKeepalive {
            wal_end: lsn(&mut r, "keepalive WAL end")?,
            timestamp: timestamp(&mut r)?,
            reply_requested: r.u8("reply-requested flag")? != 0,
        };
        r.finish("PrimaryKeepalive")?;
        Ok(msg)
    }
}

/// The standby's replay progress (`r`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StandbyStatusUpdate {
    /// WAL received and written to disk, though maybe not flushed.
    pub write_lsn: Lsn,
    /// WAL flushed to disk.
    pub flush_lsn: Lsn,
    /// WAL applied.
    pub apply_lsn: Lsn,
    pub timestamp: PgTimestamp,
    /// The server should reply at once (with a keepalive).
    pub reply_requested: bool,
}

impl StandbyStatusUpdate {
    pub const TAG: u8 = b'r';

    /// Appends tag and fields.
    pub fn encode(&self, buf: &mut BytesMut) {
        buf.put_u8(Self::TAG);
        buf.put_u64(self.write_lsn.0);
        buf.put_u64(self.flush_lsn.0);
        buf.put_u64(self.apply_lsn.0);
        buf.put_i64(self.timestamp.0);
        buf.put_u8(self.reply_requested.into());
    }

    /// Parses a CopyData payload, tag included.
    pub fn decode(payload: Bytes) -> Result<StandbyStatusUpdate, ProtocolError> {
        let mut r = BodyReader::new(payload);
        expect_tag(&mut r, Self::TAG)?;
        let msg = StandbyStatusUpdate {
            write_lsn: lsn(&mut r, "write LSN")?,
            flush_lsn: lsn(&mut r, "flush LSN")?,
            apply_lsn: lsn(&mut r, "apply LSN")?,
            timestamp: timestamp(&mut r)?,
            reply_requested: r.u8("reply-requested flag")? != 0,
        };
        r.finish("StandbyStatusUpdate")?;
        Ok(msg)
    }
}

/// The standby's oldest running transactions (`h`); xids of 0 mean none.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HotStandbyFeedback {
    pub timestamp: PgTimestamp,
    pub xmin: u32,
    pub xmin_epoch: u32,
    pub catalog_xmin: u32,
    pub catalog_xmin_epoch: u32,
}

impl HotStandbyFeedback {
    pub const TAG: u8 = b'h';

    /// Appends tag and fields.
    pub fn encode(&self, buf: &mut BytesMut) {
        buf.put_u8(Self::TAG);
        buf.put_i64(self.timestamp.0);
        buf.put_u32(self.xmin);
        buf.put_u32(self.xmin_epoch);
        buf.put_u32(self.catalog_xmin);
        buf.put_u32(self.catalog_xmin_epoch);
    }

    /// Parses a CopyData payload, tag included.
    pub fn decode(payload: Bytes) -> Result<HotStandbyFeedback, ProtocolError> {
        let mut r = BodyReader::new(payload);
        expect_tag(&mut r, Self::TAG)?;
        let msg = HotStandbyFeedback {
            timestamp: timestamp(&mut r)?,
            xmin: r.u32("xmin")?,
            xmin_epoch: r.u32("xmin epoch")?,
            catalog_xmin: r.u32("catalog xmin")?,
            catalog_xmin_epoch: r.u32("catalog xmin epoch")?,
        };
        r.finish("HotStandbyFeedback")?;
        Ok(msg)
    }
}

/// What the server sends inside CopyData during replication.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ServerReplicationMessage {
    XLogData(XLogData),
    PrimaryKeepalive(PrimaryKeepalive),
}

impl ServerReplicationMessage {
    /// Appends tag and fields.
    pub fn encode(&self, buf: &mut BytesMut) {
        match self {
            ServerReplicationMessage::XLogData(m) => m.encode(buf),
            ServerReplicationMessage::PrimaryKeepalive(m) => m.encode(buf),
        }
    }

    /// Parses a CopyData payload, dispatching on its tag.
    pub fn decode(payload: Bytes) -> Result<ServerReplicationMessage, ProtocolError> {
        match payload.first() {
            Some(&XLogData::TAG) => XLogData::decode(payload).map(Self::XLogData),
            Some(&PrimaryKeepalive::TAG) => {
                PrimaryKeepalive::decode(payload).map(Self::PrimaryKeepalive)
            }
            Some(&other) => Err(ProtocolError::UnknownReplicationTag(other)),
            None => Err(ProtocolError::Truncated {
                what: "replication message type",
            }),
        }
    }
}

/// What the standby sends inside CopyData during replication.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StandbyReplicationMessage {
    StatusUpdate(StandbyStatusUpdate),
    HotStandbyFeedback(HotStandbyFeedback),
}

impl StandbyReplicationMessage {
    /// Appends tag and fields.
    pub fn encode(&self, buf: &mut BytesMut) {
        match self {
            StandbyReplicationMessage::StatusUpdate(m) => m.encode(buf),
            StandbyReplicationMessage::HotStandbyFeedback(m) => m.encode(buf),
        }
    }

    /// Parses a CopyData payload, dispatching on its tag.
    pub fn decode(payload: Bytes) -> Result<StandbyReplicationMessage, ProtocolError> {
        match payload.first() {
            Some(&StandbyStatusUpdate::TAG) => {
                StandbyStatusUpdate::decode(payload).map(Self::StatusUpdate)
            }
            Some(&HotStandbyFeedback::TAG) => {
                HotStandbyFeedback::decode(payload).map(Self::HotStandbyFeedback)
            }
            Some(&other) => Err(ProtocolError::UnknownReplicationTag(other)),
            None => Err(ProtocolError::Truncated {
                what: "replication message type",
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn encoded(f: impl FnOnce(&mut BytesMut)) -> Bytes {
        let mut buf = BytesMut::new();
        f(&mut buf);
        buf.freeze()
    }

    #[test]
    fn timestamps() {
        let pg_epoch = UNIX_EPOCH + Duration::from_secs(PG_EPOCH_OFFSET_SECS);
        assert_eq!(PgTimestamp::from_system_time(pg_epoch), PgTimestamp(0));
        assert_eq!(
            PgTimestamp::from_system_time(UNIX_EPOCH),
            PgTimestamp(-946_684_800_000_000)
        );
        let t = pg_epoch + Duration::from_micros(1_234_567);
        assert_eq!(PgTimestamp::from_system_time(t), PgTimestamp(1_234_567));
        assert_eq!(PgTimestamp(1_234_567).to_system_time(), Some(t));
        assert_eq!(
            PgTimestamp(-946_684_800_000_000).to_system_time(),
            Some(UNIX_EPOCH)
        );
        let now = SystemTime::now();
        let back = PgTimestamp::from_system_time(now).to_system_time().unwrap();
        assert!(now.duration_since(back).unwrap() < Duration::from_micros(1));
        assert!(PgTimestamp::now() > PgTimestamp(0));
        // Extremes do not panic.
        let _ = PgTimestamp(i64::MIN).to_system_time();
        let _ = PgTimestamp(i64::MAX).to_system_time();
    }

    #[test]
    fn xlog_data_round_trip() {
        let msg = XLogData {
            wal_start: Lsn(0x1_0000_0028),
            wal_end: Lsn(0x1_0000_1000),
            timestamp: PgTimestamp(123),
            data: Bytes::from_static(b"record bytes"),
        };
        let bytes = encoded(|b| msg.encode(b));
        assert_eq!(bytes.len(), XLOG_DATA_HEADER_LEN_BYTES + 12);
        assert_eq!(&bytes[..9], b"w\0\0\0\x01\0\0\0\x28");
        assert_eq!(XLogData::decode(bytes.clone()), Ok(msg.clone()));
        let server = ServerReplicationMessage::XLogData(msg);
        assert_eq!(ServerReplicationMessage::decode(bytes), Ok(server.clone()));
        assert_eq!(
            encoded(|b| server.encode(b)).len(),
            XLOG_DATA_HEADER_LEN_BYTES + 12
        );
    }

    #[test]
    fn keepalive_round_trip() {
        for reply_requested in [false, true] {
            let msg = PrimaryKeepalive {
                wal_end: Lsn(77),
                timestamp: PgTimestamp(-5),
                reply_requested,
            };
            let bytes = encoded(|b| msg.encode(b));
            assert_eq!(bytes.len(), 18);
            assert_eq!(PrimaryKeepalive::decode(bytes.clone()), Ok(msg));
            assert_eq!(
                ServerReplicationMessage::decode(bytes),
                Ok(ServerReplicationMessage::PrimaryKeepalive(msg))
            );
        }
    }

    #[test]
    fn standby_messages_round_trip() {
        let status = StandbyStatusUpdate {
            write_lsn: Lsn(3),
            flush_lsn: Lsn(2),
            apply_lsn: Lsn(1),
            timestamp: PgTimestamp(99),
            reply_requested: true,
        };
        let bytes = encoded(|b| status.encode(b));
        assert_eq!(bytes.len(), 34);
        assert_eq!(StandbyStatusUpdate::decode(bytes.clone()), Ok(status));
        assert_eq!(
            StandbyReplicationMessage::decode(bytes),
            Ok(StandbyReplicationMessage::StatusUpdate(status))
        );
        let hs = HotStandbyFeedback {
            timestamp: PgTimestamp(1),
            xmin: 700,
            xmin_epoch: 1,
            catalog_xmin: 650,
            catalog_xmin_epoch: 0,
        };
        let msg = StandbyReplicationMessage::HotStandbyFeedback(hs);
        let bytes = encoded(|b| msg.encode(b));
        assert_eq!(bytes.len(), 25);
        assert_eq!(HotStandbyFeedback::decode(bytes.clone()), Ok(hs));
        assert_eq!(StandbyReplicationMessage::decode(bytes), Ok(msg));
    }

    #[test]
    fn malformed_replication_messages() {
        assert!(matches!(
            ServerReplicationMessage::decode(Bytes::new()),
            Err(ProtocolError::Truncated { .. })
        ));
        assert_eq!(
            ServerReplicationMessage::decode(Bytes::from_static(b"r")),
            Err(ProtocolError::UnknownReplicationTag(b'r'))
        );
        assert_eq!(
            StandbyReplicationMessage::decode(Bytes::from_static(b"w")),
            Err(ProtocolError::UnknownReplicationTag(b'w'))
        );
        assert!(matches!(
            XLogData::decode(Bytes::from_static(b"w\0\0\0")),
            Err(ProtocolError::Truncated { .. })
        ));
        let mut long = BytesMut::new();
        PrimaryKeepalive {
            wal_end: Lsn(1),
            timestamp: PgTimestamp(1),
            reply_requested: false,
        }
        .encode(&mut long);
        long.put_u8(0);
        assert!(matches!(
            PrimaryKeepalive::decode(long.freeze()),
            Err(ProtocolError::TrailingBytes { .. })
        ));
        assert_eq!(
            HotStandbyFeedback::decode(Bytes::from_static(b"k")),
            Err(ProtocolError::UnknownReplicationTag(b'k'))
        );
    }
}

//! One replication connection: handshake (`IDENTIFY_SYSTEM`, slot creation,
//! `START_REPLICATION`), then the stream → decode → ingest loop with status updates.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

use bytes::BytesMut;
use postgres_ffi::controlfile::ControlFileData;
use postgres_ffi::waldecoder::{WalDecodeError, WalStreamDecoder};
use postgres_ffi::walrecord::DecodedWalRecord;
use pq_proto::replication::{
    PrimaryKeepalive, ServerReplicationMessage, StandbyStatusUpdate, XLogData,
};
use pq_proto::PgTimestamp;
use tokio_util::sync::CancellationToken;
use utils::lsn::Lsn;

use super::client::{ClientError, PgConnection, SQLSTATE_DUPLICATE_OBJECT};
use super::policy::{self, Action, StreamSnapshot};
use super::{StatusCell, WalSource, METRICS};
use crate::import_wal::{MAX_BATCH_BYTES, MAX_BATCH_RECORDS};
use crate::pgdatadir_mapping::DatadirRead;
use crate::tenant::timeline::Timeline;
use crate::walingest::{ingest_batch, IngestError, WalIngest};

/// Longest wait for the Terminate message to be sent when a session ends.
const TERMINATE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(1);

/// Why a replication session ended.
#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    #[error(transparent)]
    Client(#[from] ClientError),
    #[error("the source's system identifier {source_id} differs from the timeline's {ours}")]
    SystemIdMismatch { source_id: u64, ours: u64 },
    #[error("unexpected IDENTIFY_SYSTEM answer: {0}")]
    BadIdentify(String),
    #[error("the timeline's control file is unusable: {0}")]
    ControlFile(String),
    #[error("WAL from {got} does not continue the stream at {expected}")]
    Discontinuity { expected: Lsn, got: Lsn },
    #[error("bad replication message: {0}")]
    Message(#[from] pq_proto::ProtocolError),
    #[error("invalid WAL from the source: {0}")]
    Decode(#[from] WalDecodeError),
    #[error("ingest failed: {0}")]
    Ingest(#[from] IngestError),
    #[error("flush failed: {0}")]
    Flush(String),
    #[error("the source ended the replication stream")]
    StreamEnded,
    #[error("the source sent nothing for {0:?}")]
    SourceSilent(std::time::Duration),
    #[error("ingest task failed: {0}")]
    Task(String),
}

/// What a session works on.
pub(super) struct Session {
    pub tl: Arc<Timeline>,
    pub source: WalSource,
    pub status: Arc<StatusCell>,
    pub cancel: CancellationToken,
}

/// The decode → ingest state of one stream.
struct Stream {
    decoder: WalStreamDecoder,
    ingest: Option<WalIngest>,
    batch: Vec<DecodedWalRecord>,
    batch_bytes: usize,
    reply_requested: bool,
    last_feedback: Instant,
    last_ingest: Instant,
    last_flush: Instant,
    /// When the source last sent a message.
    last_received: Instant,
}

impl Session {
    /// Connects and streams until cancelled (`Ok`) or an error.
    pub async fn run(&self) -> Result<(), SessionError> {
        let mut conn = PgConnection::connect(&self.source.conn, true).await?;
        let result = self.stream(&mut conn).await;
        self.status.update(|s| s.connected = false);
        // Best effort, bounded: the connection may be dead.
        let _ = tokio::time::timeout(TERMINATE_TIMEOUT, conn.terminate()).await;
        result
    }

    async fn stream(&self, conn: &mut PgConnection) -> Result<(), SessionError> {
        let (sysid, seg_size) = self.control_file().await?;
        self.identify(conn, sysid).await?;
        self.create_slot(conn).await?;
        let start = self.tl.last_record_lsn();
        let prev = self.tl.prev_record_lsn();
        let sql = format!(
            "START_REPLICATION SLOT {} PHYSICAL {start}",
            self.source.slot_name
        );
        conn.start_copy_both(&sql).await?;
        tracing::info!(%start, source = %self.source.conn.redacted(), "streaming WAL");
        let _connected = ConnectedGauge::new();
        self.status.update(|s| {
            s.connected = true;
            s.last_error = None;
        });
        // The decoder accepts a record start or the page boundary before one (the timeline's
        // LSN may sit right after a page header or exactly on a page/segment boundary).
        let mut decoder = WalStreamDecoder::new(start, seg_size);
        decoder.set_system_id(sysid);
        if prev != Lsn(0) {
            decoder.set_prev_record_lsn(prev);
        }
        let tl = self.tl.clone();
        let ingest = blocking(move || Ok(WalIngest::new(&*tl, start)?)).await?;
        let now = Instant::now();
        let mut st = Stream {
            decoder,
            ingest: Some(ingest),
            batch: Vec::new(),
            batch_bytes: 0,
            reply_requested: false,
            last_feedback: now,
            last_ingest: now,
            last_flush: now,
            last_received: now,
        };
        self.send_feedback(conn, &mut st).await?;
        loop {
            while let Some((tag, body)) = conn.buffered_message()? {
                st.last_received = Instant::now();
                self.handle_message(&mut st, tag, body).await?;
            }
            if st.last_received.elapsed() >= policy::SOURCE_SILENCE_TIMEOUT {
                return Err(SessionError::SourceSilent(policy::SOURCE_SILENCE_TIMEOUT));
            }
            self.ingest_pending(&mut st).await?;
            self.act(conn, &mut st).await?;
            let wake = policy::next_wakeup(&self.snapshot(&st));
            tokio::select! {
                _ = self.cancel.cancelled() => return Ok(()),
                r = conn.fill() => r?,
                _ = tokio::time::sleep_until(wake.into()) => {}
            }
        }
    }

    /// The system identifier and WAL segment size from the timeline's control file.
    async fn control_file(&self) -> Result<(u64, u64), SessionError> {
        let tl = self.tl.clone();
        blocking(move || {
            let bytes = tl
                .get_control_file(tl.last_record_lsn())
                .map_err(|e| SessionError::ControlFile(e.to_string()))?;
            let cf = ControlFileData::decode(&bytes)
                .map_err(|e| SessionError::ControlFile(e.to_string()))?;
            Ok((cf.system_identifier, u64::from(cf.xlog_seg_size)))
        })
        .await
    }

    async fn identify(&self, conn: &mut PgConnection, ours: u64) -> Result<(), SessionError> {
        let rows = conn.simple_query("IDENTIFY_SYSTEM").await?;
        let row = rows
            .first()
            .ok_or_else(|| SessionError::BadIdentify("no row".into()))?;
        let field = |i: usize| row.get(i).cloned().flatten().unwrap_or_default();
        let source_id: u64 = field(0)
            .parse()
            .map_err(|_| SessionError::BadIdentify(format!("system id {:?}", field(0))))?;
        tracing::info!(
            system_id = source_id,
            timeline = field(1),
            xlogpos = field(2),
            "IDENTIFY_SYSTEM"
        );
        if source_id != ours {
            return Err(SessionError::SystemIdMismatch { source_id, ours });
        }
        Ok(())
    }

    async fn create_slot(&self, conn: &mut PgConnection) -> Result<(), SessionError> {
        let sql = format!(
            "CREATE_REPLICATION_SLOT {} PHYSICAL RESERVE_WAL",
            self.source.slot_name
        );
        match conn.simple_query(&sql).await {
            Ok(_) => {
                tracing::info!(slot = %self.source.slot_name, "created replication slot");
                Ok(())
            }
            Err(e) if e.sqlstate() == Some(SQLSTATE_DUPLICATE_OBJECT) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    async fn handle_message(
        &self,
        st: &mut Stream,
        tag: u8,
        body: bytes::Bytes,
    ) -> Result<(), SessionError> {
        match tag {
            b'd' => {}
            b'c' | b'C' | b'Z' => return Err(SessionError::StreamEnded),
            b'E' => return Err(super::client::error_response(body).into()),
            _ => return Ok(()),
        }
        match ServerReplicationMessage::decode(body)? {
            ServerReplicationMessage::XLogData(x) => self.take_wal(st, x).await,
            ServerReplicationMessage::PrimaryKeepalive(PrimaryKeepalive {
                wal_end,
                reply_requested,
                ..
            }) => {
                self.status.update(|s| s.source_wal_end_lsn = Some(wal_end));
                st.reply_requested |= reply_requested;
                Ok(())
            }
        }
    }

    /// Feeds a chunk of WAL and ingests full batches of the records it completes.
    async fn take_wal(&self, st: &mut Stream, x: XLogData) -> Result<(), SessionError> {
        let expected = st.decoder.available_lsn();
        if x.wal_start != expected {
            return Err(SessionError::Discontinuity {
                expected,
                got: x.wal_start,
            });
        }
        st.decoder.feed_bytes(&x.data);
        METRICS
            .wal_bytes_received
            .fetch_add(x.data.len() as u64, Ordering::Relaxed);
        let received = st.decoder.available_lsn();
        self.status.update(|s| {
            s.last_received_lsn = Some(received);
            s.source_wal_end_lsn = Some(x.wal_end);
        });
        while let Some(rec) = st.decoder.poll_decode()? {
            st.batch_bytes += rec.record.len();
            st.batch.push(rec);
            if st.batch.len() >= MAX_BATCH_RECORDS || st.batch_bytes >= MAX_BATCH_BYTES {
                self.ingest_pending(st).await?;
            }
        }
        Ok(())
    }

    /// Ingests the pending batch (one modification, `finish_write`) off the async threads.
    async fn ingest_pending(&self, st: &mut Stream) -> Result<(), SessionError> {
        if st.batch.is_empty() {
            return Ok(());
        }
        let batch = std::mem::take(&mut st.batch);
        st.batch_bytes = 0;
        let mut ingest = st
            .ingest
            .take()
            .expect("ingest state is put back after use");
        let tl = self.tl.clone();
        let before = tl.last_record_lsn();
        let (ingest, done) = blocking(move || {
            let mut w = tl.writer();
            let done = ingest_batch(&mut w, &mut ingest, batch)?;
            Ok((ingest, done))
        })
        .await?;
        st.ingest = Some(ingest);
        st.last_ingest = Instant::now();
        if let Some(done) = done {
            METRICS
                .records_ingested
                .fetch_add(done.records as u64, Ordering::Relaxed);
            let lsn_bytes = done.last_record_lsn.0.saturating_sub(before.0);
            crate::http::metrics::METRICS
                .ingest_bytes
                .fetch_add(lsn_bytes, Ordering::Relaxed);
        }
        Ok(())
    }

    fn snapshot(&self, st: &Stream) -> StreamSnapshot {
        StreamSnapshot {
            now: Instant::now(),
            last_feedback: st.last_feedback,
            last_ingest: st.last_ingest,
            last_flush: st.last_flush,
            reply_requested: st.reply_requested,
            last_record_lsn: self.tl.last_record_lsn(),
            disk_consistent_lsn: self.tl.disk_consistent_lsn(),
        }
    }

    async fn act(&self, conn: &mut PgConnection, st: &mut Stream) -> Result<(), SessionError> {
        match policy::decide(&self.snapshot(st)) {
            Action::Nothing => Ok(()),
            Action::SendFeedback => self.send_feedback(conn, st).await,
            Action::FlushThenFeedback => {
                let tl = self.tl.clone();
                blocking(move || {
                    tl.freeze_and_flush()
                        .map_err(|e| SessionError::Flush(e.to_string()))
                })
                .await?;
                st.last_flush = Instant::now();
                self.send_feedback(conn, st).await
            }
        }
    }

    async fn send_feedback(
        &self,
        conn: &mut PgConnection,
        st: &mut Stream,
    ) -> Result<(), SessionError> {
        let applied = self.tl.last_record_lsn();
        let flushed = self.tl.disk_consistent_lsn().min(applied);
        let msg = StandbyStatusUpdate {
            write_lsn: applied,
            flush_lsn: flushed,
            apply_lsn: applied,
            timestamp: PgTimestamp::now(),
            reply_requested: st.last_received.elapsed() >= policy::SOURCE_PING_AFTER,
        };
        let mut buf = BytesMut::new();
        msg.encode(&mut buf);
        conn.send_copy_data(&buf).await?;
        st.reply_requested = false;
        st.last_feedback = Instant::now();
        self.status
            .update(|s| s.last_feedback_flush_lsn = Some(flushed));
        Ok(())
    }
}

/// Counts a streaming connection in the `connected` gauge while alive.
struct ConnectedGauge;

impl ConnectedGauge {
    fn new() -> ConnectedGauge {
        METRICS.connected.fetch_add(1, Ordering::Relaxed);
        ConnectedGauge
    }
}

impl Drop for ConnectedGauge {
    fn drop(&mut self) {
        METRICS.connected.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Runs blocking timeline work on the blocking pool.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, SessionError> + Send + 'static,
) -> Result<T, SessionError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| SessionError::Task(e.to_string()))?
}

//! The page service: a libpq listener (default 127.0.0.1:64000) answering
//!
//! - `pagestream_v3 <tenant_id> <timeline_id>`: CopyBoth, then one pagestream request per
//!   CopyData (Exists, Nblocks, GetPage, DbSize, GetSlruSegment), answered in order;
//! - `basebackup <tenant_id> <timeline_id> [<lsn>] [--gzip]` and
//!   `fullbackup <tenant_id> <timeline_id> [<lsn> [<prev_lsn>]]`: CopyOut of a tar;
//! - `import basebackup <tenant_id> <timeline_id> <base_lsn> <end_lsn> <pg_version>` and
//!   `import wal <tenant_id> <timeline_id> <start_lsn> <end_lsn>`: CopyIn of a tar, imported
//!   into a new timeline (see [`crate::tenant::import`]), then CommandComplete;
//! - `set ...`: ignored (OK);
//!
//! anything else gets an ErrorResponse. A failing request gets an error answer; only a broken
//! connection ends the session. Connections are tasks of one JoinSet, cancelled at shutdown.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use pageserver_api::pagestream::{
    PagestreamBeMessage, PagestreamDbSizeResponse, PagestreamExistsResponse, PagestreamFeMessage,
    PagestreamGetPageResponse, PagestreamGetSlruSegmentResponse, PagestreamNblocksResponse,
    PagestreamRequestHeader,
};
use pq_proto::backend::{Handler, PostgresBackend};
use pq_proto::be::BeMessage;
use pq_proto::error::{QueryError, SqlState};
use pq_proto::fe::FeMessage;
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use utils::id::{TenantId, TimelineId};
use utils::lsn::Lsn;

use crate::basebackup::{decide_prev_record, send_basebackup_tarball, BasebackupParams};
use crate::http::metrics::METRICS;
use crate::pgdatadir_mapping::DatadirRead;
use crate::tenant::mgr::TenantManager;
use crate::tenant::tar_stream::{ChannelReader, Chunk};
use crate::tenant::timeline::Timeline;

/// Most concurrent connections; more are refused.
pub const MAX_CONNECTIONS: usize = 1024;
/// Size of the CopyData chunks a tar is sent in.
const COPY_CHUNK_BYTES: usize = 64 * 1024;
/// Largest basebackup we build in memory before sending.
const MAX_BASEBACKUP_BYTES: usize = 4 * 1024 * 1024 * 1024;
/// Most pagestream responses written before a flush while requests keep arriving.
const MAX_UNFLUSHED_RESPONSES: usize = 32;
/// CopyData chunks of an import queued for the importing thread: with the page service's
/// message size limit this bounds the memory an import stream holds.
const MAX_QUEUED_IMPORT_CHUNKS: usize = 16;
/// How long the listener waits for connection tasks to end at shutdown.
const SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(10);

/// What the connections need.
#[derive(Clone)]
pub struct PageServiceState {
    pub mgr: Arc<TenantManager>,
    pub wait_lsn_timeout: Duration,
}

/// Accepts connections until `cancel` fires, then cancels them and waits (bounded).
pub async fn serve(listener: TcpListener, state: PageServiceState, cancel: CancellationToken) {
    tracing::info!("page service listening on {:?}", listener.local_addr().ok());
    let mut conns = JoinSet::new();
    loop {
        let accepted = tokio::select! {
            _ = cancel.cancelled() => break,
            Some(_) = conns.join_next(), if !conns.is_empty() => continue,
            a = listener.accept() => a,
        };
        let (stream, peer) = match accepted {
            Ok(a) => a,
            Err(e) => {
                tracing::warn!("accept failed: {e}");
                continue;
            }
        };
        if conns.len() >= MAX_CONNECTIONS {
            tracing::warn!("refusing connection from {peer}: {MAX_CONNECTIONS} open");
            continue;
        }
        let st = state.clone();
        let c = cancel.child_token();
        conns.spawn(async move {
            if let Err(e) = connection(stream, st, c).await {
                tracing::info!(%peer, "page service connection ended: {e}");
            }
        });
    }
    drop(listener);
    if tokio::time::timeout(SHUTDOWN_TIMEOUT, async {
        while conns.join_next().await.is_some() {}
    })
    .await
    .is_err()
    {
        tracing::warn!("page service connections did not end in {SHUTDOWN_TIMEOUT:?}");
        conns.abort_all();
    }
}

async fn connection(
    stream: TcpStream,
    state: PageServiceState,
    cancel: CancellationToken,
) -> Result<(), pq_proto::error::ConnectionError> {
    let _ = stream.set_nodelay(true);
    let mut pgb = PostgresBackend::new(stream);
    let mut handler = PageHandler { state };
    pgb.run(&mut handler, &cancel).await
}

struct PageHandler {
    state: PageServiceState,
}

fn bad(msg: impl Into<String>) -> QueryError {
    QueryError::sql(SqlState::INVALID_PARAMETER_VALUE, msg)
}

fn internal(msg: impl Into<String>) -> QueryError {
    QueryError::sql(SqlState::INTERNAL_ERROR, msg)
}

impl PageHandler {
    fn timeline(&self, tenant: &str, timeline: &str) -> Result<Arc<Timeline>, QueryError> {
        let tid: TenantId = tenant
            .parse()
            .map_err(|e| bad(format!("bad tenant id: {e}")))?;
        let tlid: TimelineId = timeline
            .parse()
            .map_err(|e| bad(format!("bad timeline id: {e}")))?;
        let tenant = self
            .state
            .mgr
            .get(tid)
            .map_err(|e| QueryError::sql(SqlState::UNDEFINED_OBJECT, e.to_string()))?;
        tenant
            .get_timeline(tlid)
            .map_err(|e| QueryError::sql(SqlState::UNDEFINED_OBJECT, e.to_string()))
    }

    async fn pagestream(
        &self,
        pgb: &mut PostgresBackend<TcpStream>,
        tl: Arc<Timeline>,
    ) -> Result<(), QueryError> {
        pgb.start_copy_both().await?;
        // Pipelining: requests already received are answered before the responses are
        // flushed, at most MAX_UNFLUSHED_RESPONSES at a time.
        let mut ready: Option<Option<FeMessage>> = None;
        let mut unflushed = 0usize;
        loop {
            let next = match ready.take() {
                Some(m) => m,
                None => {
                    pgb.flush().await?;
                    unflushed = 0;
                    pgb.read_message().await?
                }
            };
            let msg = match next {
                Some(FeMessage::CopyData(d)) => d,
                Some(FeMessage::CopyDone) | Some(FeMessage::Terminate) | None => {
                    pgb.flush().await?;
                    return Ok(());
                }
                Some(other) => {
                    return Err(QueryError::sql(
                        SqlState::PROTOCOL_VIOLATION,
                        format!("unexpected message in pagestream: {other:?}"),
                    ))
                }
            };
            let bytes = self.handle_request(&tl, &msg).await?;
            pgb.write_message(&BeMessage::CopyData(&bytes)).await?;
            unflushed += 1;
            if unflushed < MAX_UNFLUSHED_RESPONSES {
                // Take the next request only if it is here already, so a pipelining client
                // gets its answers in batches. (read_message is cancel-safe: a partial
                // message stays buffered.) Not a zero timeout: tokio's timer rounds it up
                // to the next millisecond, which delayed every unpipelined answer by ~1 ms.
                if let Some(m) = poll_once(pgb.read_message()).await {
                    ready = Some(m?);
                }
            }
        }
    }

    /// Parses and answers one request; the serialized response.
    async fn handle_request(&self, tl: &Arc<Timeline>, msg: &[u8]) -> Result<Bytes, QueryError> {
        let req = PagestreamFeMessage::parse(msg).map_err(|e| {
            QueryError::sql(
                SqlState::PROTOCOL_VIOLATION,
                format!("bad pagestream request: {e}"),
            )
        })?;
        let started = Instant::now();
        let resp = self.answer(tl, req).await;
        if matches!(req, PagestreamFeMessage::GetPage(_)) {
            METRICS.getpage_requests.fetch_add(1, Ordering::Relaxed);
            METRICS.getpage_latency.observe(started.elapsed());
        }
        match resp.serialize() {
            Ok(b) => Ok(b),
            Err(e) => PagestreamBeMessage::error(*req.header(), e)
                .serialize()
                .map_err(|e| internal(e.to_string())),
        }
    }

    /// The answer to one request (an Error response on failure).
    async fn answer(&self, tl: &Arc<Timeline>, req: PagestreamFeMessage) -> PagestreamBeMessage {
        let hdr = *req.header();
        let lsn = match self.effective_lsn(tl, hdr).await {
            Ok(l) => l,
            Err(msg) => {
                METRICS.page_service_errors.fetch_add(1, Ordering::Relaxed);
                return PagestreamBeMessage::error(hdr, msg);
            }
        };
        let tl = tl.clone();
        let result = tokio::task::spawn_blocking(move || read_at(&tl, req, lsn)).await;
        match result {
            Ok(Ok(m)) => m,
            Ok(Err(msg)) => {
                METRICS.page_service_errors.fetch_add(1, Ordering::Relaxed);
                PagestreamBeMessage::error(hdr, msg)
            }
            Err(e) => PagestreamBeMessage::error(hdr, format!("request failed: {e}")),
        }
    }

    /// The LSN to read at (neon-internals §2.5).
    async fn effective_lsn(
        &self,
        tl: &Timeline,
        hdr: PagestreamRequestHeader,
    ) -> Result<Lsn, String> {
        let (req, nms) = (hdr.request_lsn, hdr.not_modified_since);
        if req == Lsn(0) {
            return Err("invalid request LSN 0".into());
        }
        if nms > req {
            return Err(format!(
                "not_modified_since {nms} is above request LSN {req}"
            ));
        }
        if req < tl.latest_gc_cutoff_lsn() {
            return Err(format!(
                "tried to request a page version that was garbage collected: {req} is below {}",
                tl.latest_gc_cutoff_lsn()
            ));
        }
        let last = tl.last_record_lsn();
        if nms > last {
            tl.wait_lsn(nms, self.state.wait_lsn_timeout)
                .await
                .map_err(|e| e.to_string())?;
            return Ok(nms);
        }
        Ok(last.min(req))
    }

    async fn backup(
        &self,
        pgb: &mut PostgresBackend<TcpStream>,
        args: &[&str],
        full: bool,
    ) -> Result<(), QueryError> {
        let usage = if full {
            "fullbackup <tenant_id> <timeline_id> [<lsn> [<prev_lsn>]]"
        } else {
            "basebackup <tenant_id> <timeline_id> [<lsn>] [--gzip]"
        };
        let gzip = !full && args.contains(&"--gzip");
        let pos: Vec<&str> = args
            .iter()
            .copied()
            .filter(|a| !a.starts_with("--"))
            .collect();
        if pos.len() < 2 || pos.len() > 4 || (!full && pos.len() > 3) {
            return Err(bad(format!("usage: {usage}")));
        }
        let tl = self.timeline(pos[0], pos[1])?;
        let parse_lsn = |s: &str| {
            s.parse::<Lsn>()
                .map_err(|e| bad(format!("bad LSN {s:?}: {e}")))
        };
        let lsn = match pos.get(2) {
            Some(&"latest") | None => None,
            Some(s) => Some(parse_lsn(s)?),
        };
        let requested_prev = pos.get(3).map(|s| parse_lsn(s)).transpose()?;
        let lsn = match lsn {
            Some(l) => {
                tl.wait_lsn(l, self.state.wait_lsn_timeout)
                    .await
                    .map_err(|e| bad(e.to_string()))?;
                if l < tl.latest_gc_cutoff_lsn() {
                    return Err(bad(format!("LSN {l} is below the GC cutoff")));
                }
                l
            }
            None => tl.last_record_lsn(),
        };
        let ancestor_lsn = tl.ancestor.as_ref().map(|_| tl.ancestor_lsn);
        let prev = decide_prev_record(
            lsn,
            tl.last_record_lsn(),
            tl.prev_record_lsn(),
            ancestor_lsn,
            requested_prev,
        )
        .map_err(|e| bad(e.to_string()))?;
        let params = BasebackupParams {
            lsn,
            prev_record: prev,
            full_backup: full,
        };
        let tar = tokio::task::spawn_blocking(move || build_tar(&tl, params, gzip))
            .await
            .map_err(|e| internal(e.to_string()))?
            .map_err(internal)?;
        pgb.start_copy_out().await?;
        for chunk in tar.chunks(COPY_CHUNK_BYTES) {
            pgb.write_message(&BeMessage::CopyData(chunk)).await?;
        }
        pgb.write_message(&BeMessage::CopyDone).await?;
        pgb.write_message(&BeMessage::CommandComplete("COPY 0"))
            .await?;
        pgb.flush().await?;
        Ok(())
    }
}

impl PageHandler {
    /// `import basebackup|wal ...`: parses, checks, then streams the CopyIn into the import.
    async fn import(
        &self,
        pgb: &mut PostgresBackend<TcpStream>,
        args: &[&str],
    ) -> Result<(), QueryError> {
        let ImportArgs {
            tenant: tid,
            timeline: tlid,
            start,
            end,
            pg_version,
        } = parse_import_args(args)?;
        let tenant = self
            .state
            .mgr
            .get(tid)
            .map_err(|e| QueryError::sql(SqlState::UNDEFINED_OBJECT, e.to_string()))?;
        if pg_version.is_some() && tenant.get_timeline(tlid).is_ok() {
            return Err(QueryError::sql(
                SqlState::OBJECT_NOT_IN_PREREQUISITE_STATE,
                format!("timeline {tlid} already exists"),
            ));
        }
        let (tx, rx) = tokio::sync::mpsc::channel(MAX_QUEUED_IMPORT_CHUNKS);
        let reader = ChannelReader::new(rx);
        let job = tokio::task::spawn_blocking(move || match pg_version {
            Some(v) => tenant.import_basebackup(tlid, start, end, v, reader),
            None => tenant.import_wal(tlid, start, end, reader),
        });
        pgb.start_copy_in().await?;
        let streamed = stream_copy_in(pgb, tx).await;
        let outcome = job.await.map_err(|e| internal(e.to_string()))?;
        streamed?;
        match outcome {
            Ok(o) => {
                tracing::info!(tenant = %tid, timeline = %tlid, "import step done: {o:?}");
                pgb.write_message(&BeMessage::CommandComplete("IMPORT"))
                    .await?;
                Ok(())
            }
            Err(e) => Err(bad(e.to_string())),
        }
    }
}

/// The arguments of `import basebackup` (with a PostgreSQL version) or `import wal`.
struct ImportArgs {
    tenant: TenantId,
    timeline: TimelineId,
    start: Lsn,
    end: Lsn,
    /// `Some` for `import basebackup`.
    pg_version: Option<u32>,
}

fn parse_import_args(args: &[&str]) -> Result<ImportArgs, QueryError> {
    const USAGE: &str = "usage: import basebackup <tenant_id> <timeline_id> <base_lsn> <end_lsn> <pg_version> | import wal <tenant_id> <timeline_id> <start_lsn> <end_lsn>";
    let kind = args.first().map(|s| s.to_ascii_lowercase());
    let expected_args = match kind.as_deref() {
        Some("basebackup") => 6,
        Some("wal") => 5,
        _ => return Err(bad(USAGE)),
    };
    if args.len() != expected_args {
        return Err(bad(USAGE));
    }
    let parse_lsn = |s: &str| {
        s.parse::<Lsn>()
            .map_err(|e| bad(format!("bad LSN {s:?}: {e}")))
    };
    let pg_version = args
        .get(5)
        .map(|v| {
            v.parse::<u32>()
                .map_err(|e| bad(format!("bad pg_version {v:?}: {e}")))
        })
        .transpose()?;
    Ok(ImportArgs {
        tenant: args[1]
            .parse()
            .map_err(|e| bad(format!("bad tenant id: {e}")))?,
        timeline: args[2]
            .parse()
            .map_err(|e| bad(format!("bad timeline id: {e}")))?,
        start: parse_lsn(args[3])?,
        end: parse_lsn(args[4])?,
        pg_version,
    })
}

/// Forwards the CopyData of a COPY IN to `tx` until CopyDone (or CopyFail, forwarded as an
/// error). Once the importer stops listening, the rest of the stream is read and dropped.
async fn stream_copy_in(
    pgb: &mut PostgresBackend<TcpStream>,
    tx: tokio::sync::mpsc::Sender<Chunk>,
) -> Result<(), QueryError> {
    let mut listening = true;
    loop {
        match pgb.read_message().await? {
            Some(FeMessage::CopyData(d)) => {
                if listening && tx.send(Ok(d)).await.is_err() {
                    listening = false;
                }
            }
            Some(FeMessage::CopyDone) => return Ok(()),
            Some(FeMessage::CopyFail(reason)) => {
                let _ = tx
                    .send(Err(format!("client aborted the COPY: {reason}")))
                    .await;
                return Ok(());
            }
            Some(FeMessage::Sync) | Some(FeMessage::Flush) => {}
            Some(other) => {
                let _ = tx.send(Err("protocol violation during COPY".into())).await;
                return Err(QueryError::sql(
                    SqlState::PROTOCOL_VIOLATION,
                    format!("unexpected message during COPY: {other:?}"),
                ));
            }
            None => {
                let _ = tx.send(Err("connection closed during COPY".into())).await;
                return Err(QueryError::sql(
                    SqlState::CONNECTION_FAILURE,
                    "connection closed during COPY",
                ));
            }
        }
    }
}

/// Builds the tar (optionally gzipped "fastest") in memory, bounded by MAX_BASEBACKUP_BYTES.
fn build_tar(tl: &Timeline, params: BasebackupParams, gzip: bool) -> Result<Vec<u8>, String> {
    let out = BoundedVec(Vec::new());
    let out = if gzip {
        let enc = flate2::write::GzEncoder::new(out, flate2::Compression::fast());
        send_basebackup_tarball(enc, tl, params)
            .map_err(|e| e.to_string())?
            .finish()
            .map_err(|e| e.to_string())?
    } else {
        send_basebackup_tarball(out, tl, params).map_err(|e| e.to_string())?
    };
    Ok(out.0)
}

/// A `Vec` writer that refuses to grow beyond MAX_BASEBACKUP_BYTES.
struct BoundedVec(Vec<u8>);

impl std::io::Write for BoundedVec {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if self.0.len() + buf.len() > MAX_BASEBACKUP_BYTES {
            return Err(std::io::Error::other("basebackup too large"));
        }
        self.0.extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Answers one request at `lsn` (blocking reads).
fn read_at(
    tl: &Timeline,
    req: PagestreamFeMessage,
    lsn: Lsn,
) -> Result<PagestreamBeMessage, String> {
    let e = |e: crate::pgdatadir_mapping::DatadirError| e.to_string();
    Ok(match req {
        PagestreamFeMessage::Exists(r) => PagestreamBeMessage::Exists(PagestreamExistsResponse {
            req: r,
            exists: tl.get_rel_exists(r.rel, lsn).map_err(e)?,
        }),
        PagestreamFeMessage::Nblocks(r) => {
            let n = match tl.get_rel_size(r.rel, lsn).map_err(e)? {
                Some(n) => n,
                // A missing FSM or VM fork has no blocks; other missing relations are errors.
                None if r.rel.forknum == 1 || r.rel.forknum == 2 => 0,
                None => return Err(format!("relation {} does not exist at {lsn}", r.rel)),
            };
            PagestreamBeMessage::Nblocks(PagestreamNblocksResponse {
                req: r,
                n_blocks: n,
            })
        }
        PagestreamFeMessage::GetPage(r) => {
            let page: Bytes = tl.get_rel_page_at_lsn(r.rel, r.blkno, lsn).map_err(e)?;
            PagestreamBeMessage::GetPage(PagestreamGetPageResponse { req: r, page })
        }
        PagestreamFeMessage::DbSize(r) => {
            let size = tl
                .get_db_size(postgres_ffi::relfile::DEFAULTTABLESPACE_OID, r.dbnode, lsn)
                .map_err(e)?;
            PagestreamBeMessage::DbSize(PagestreamDbSizeResponse {
                req: r,
                db_size: i64::try_from(size).unwrap_or(i64::MAX),
            })
        }
        PagestreamFeMessage::GetSlruSegment(r) => {
            let n = tl
                .get_slru_segment_size(r.kind, r.segno, lsn)
                .map_err(e)?
                .ok_or_else(|| format!("SLRU segment {} does not exist at {lsn}", r.segno))?;
            let mut seg = Vec::with_capacity(n as usize * 8192);
            for blkno in 0..n {
                let page = tl
                    .get_slru_page_at_lsn(r.kind, r.segno, blkno, lsn)
                    .map_err(e)?;
                seg.extend_from_slice(&page[..page.len().min(8192)]);
            }
            PagestreamBeMessage::GetSlruSegment(PagestreamGetSlruSegmentResponse {
                req: r,
                segment: Bytes::from(seg),
            })
        }
    })
}

impl Handler<TcpStream> for PageHandler {
    async fn process_query(
        &mut self,
        pgb: &mut PostgresBackend<TcpStream>,
        query: &str,
    ) -> Result<(), QueryError> {
        let query = query.trim().trim_end_matches(';');
        let parts: Vec<&str> = query.split_whitespace().collect();
        match parts.first().map(|s| s.to_ascii_lowercase()).as_deref() {
            Some("pagestream_v3") => {
                if parts.len() != 3 {
                    return Err(bad("usage: pagestream_v3 <tenant_id> <timeline_id>"));
                }
                let tl = self.timeline(parts[1], parts[2])?;
                self.pagestream(pgb, tl).await
            }
            Some("basebackup") => self.backup(pgb, &parts[1..], false).await,
            Some("fullbackup") => self.backup(pgb, &parts[1..], true).await,
            Some("import") => self.import(pgb, &parts[1..]).await,
            Some("set") => {
                pgb.write_message(&BeMessage::CommandComplete("SET"))
                    .await?;
                Ok(())
            }
            _ => Err(QueryError::sql(
                SqlState::SYNTAX_ERROR,
                format!("unsupported command {query:?}"),
            )),
        }
    }
}

/// Polls `fut` exactly once: its output if it is ready now, `None` if it is not (the future
/// is then dropped).
async fn poll_once<F: std::future::Future>(fut: F) -> Option<F::Output> {
    let mut fut = std::pin::pin!(fut);
    std::future::poll_fn(|cx| match fut.as_mut().poll(cx) {
        std::task::Poll::Ready(v) => std::task::Poll::Ready(Some(v)),
        std::task::Poll::Pending => std::task::Poll::Ready(None),
    })
    .await
}

//! `pagebench getpage`: GetPage requests against a running pageserver's page service.
//!
//! Relations come from `--rels spc/db/rel:nblocks,...`, or else from the file list of a
//! `fullbackup` tar fetched over the page service (main forks of every relation, sizes from
//! the tar entries); each relation's size is then confirmed with an Nblocks request. The
//! requests (sequential blocks, or uniformly random blocks over all relations) are split
//! among C connections, each keeping at most D requests in flight.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use bytes::BytesMut;
use pageserver_api::models::TimelineInfo;
use pageserver_api::pagestream::{
    PagestreamBeMessage, PagestreamFeMessage, PagestreamGetPageRequest, PagestreamNblocksRequest,
    PagestreamRequestHeader, PAGE_SZ,
};
use pageserver_api::reltag::RelTag;
use postgres_ffi::relfile::{parse_relation_path, ForkNumber, RELSEG_SIZE};
use rand::Rng;
use tokio::io::AsyncRead;
use tokio::sync::{mpsc, Semaphore};
use utils::lsn::Lsn;

use crate::stats::{summarize, LatencySummary};
use crate::wire::{put_copy_data, read_message, send, Connection};

/// Most requests one run issues (latencies are kept in memory, 8 bytes each).
pub const MAX_REQUESTS: usize = 10_000_000;
/// Most concurrent connections.
pub const MAX_CONNECTIONS: usize = 256;
/// Deepest pipeline per connection.
pub const MAX_DEPTH: usize = 1024;
/// Largest fullbackup tar read to discover relations.
const MAX_FULLBACKUP_BYTES: usize = 2 * 1024 * 1024 * 1024;
/// Timeout of the HTTP timeline detail request.
const HTTP_TIMEOUT: Duration = Duration::from_secs(30);
/// User name sent at startup.
const USER: &str = "pagebench";

/// Options of `pagebench getpage`.
#[derive(clap::Args, Debug)]
pub struct GetPageArgs {
    /// Page service address.
    #[arg(long, default_value = "127.0.0.1:64000")]
    pub page_service: String,
    /// HTTP API address.
    #[arg(long, default_value = "127.0.0.1:9898")]
    pub http: String,
    #[arg(long)]
    pub tenant: String,
    #[arg(long)]
    pub timeline: String,
    /// Number of GetPage requests.
    #[arg(long, default_value_t = 100_000)]
    pub requests: usize,
    /// Concurrent connections.
    #[arg(long, default_value_t = 1)]
    pub connections: usize,
    /// Requests in flight per connection.
    #[arg(long, default_value_t = 1)]
    pub depth: usize,
    /// Uniformly random blocks (the default).
    #[arg(long, conflicts_with = "sequential")]
    pub random: bool,
    /// Every block of every relation in order, repeated as needed.
    #[arg(long)]
    pub sequential: bool,
    /// Relations to read, `spc/db/rel:nblocks,...` (main forks; a size above the server's is cut
    /// to it), instead of a fullbackup's file list.
    #[arg(long)]
    pub rels: Option<String>,
}

/// A relation (main fork) and its size in blocks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rel {
    pub tag: RelTag,
    pub nblocks: u32,
}

/// Parses `spc/db/rel:nblocks,...`.
pub fn parse_rels(s: &str) -> Result<Vec<Rel>> {
    s.split(',')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (tag, n) = p.split_once(':').context("expected spc/db/rel:nblocks")?;
            Ok(Rel {
                tag: tag.parse().map_err(|e| anyhow::anyhow!("{e:?}"))?,
                nblocks: n
                    .parse()
                    .with_context(|| format!("bad block count {n:?}"))?,
            })
        })
        .collect()
}

/// The main forks of the relations in a (full)backup tar, with their sizes in blocks.
pub fn rels_from_tar(tar_bytes: &[u8]) -> Result<Vec<Rel>> {
    let mut rels: Vec<Rel> = Vec::new();
    let mut archive = tar::Archive::new(tar_bytes);
    for entry in archive.entries().context("reading tar")? {
        let entry = entry.context("reading tar entry")?;
        let path = entry.path()?.to_string_lossy().into_owned();
        let Ok(p) = parse_relation_path(&path) else {
            continue;
        };
        if p.forknum != ForkNumber::Main {
            continue;
        }
        let blocks = u32::try_from(entry.size() / PAGE_SZ as u64).unwrap_or(u32::MAX);
        let end = (p.segno.saturating_mul(RELSEG_SIZE)).saturating_add(blocks);
        let tag = RelTag::new(p.rnode, ForkNumber::Main);
        match rels.iter_mut().find(|r| r.tag == tag) {
            Some(r) => r.nblocks = r.nblocks.max(end),
            None => rels.push(Rel { tag, nblocks: end }),
        }
    }
    rels.retain(|r| r.nblocks > 0);
    Ok(rels)
}

/// The blocks to request: `n` of them, in order through all blocks (wrapping) or uniformly
/// random over all blocks.
pub fn plan_requests(
    rels: &[Rel],
    n: usize,
    random: bool,
    rng: &mut impl Rng,
) -> Vec<(RelTag, u32)> {
    let total: u64 = rels.iter().map(|r| u64::from(r.nblocks)).sum();
    if total == 0 {
        return Vec::new();
    }
    let locate = |mut i: u64| {
        for r in rels {
            if i < u64::from(r.nblocks) {
                return (r.tag, i as u32);
            }
            i -= u64::from(r.nblocks);
        }
        unreachable!("index below the total block count")
    };
    (0..n as u64)
        .map(|k| {
            locate(if random {
                rng.gen_range(0..total)
            } else {
                k % total
            })
        })
        .collect()
}

fn header(reqid: u64, nms: Lsn) -> PagestreamRequestHeader {
    PagestreamRequestHeader {
        reqid,
        request_lsn: Lsn(u64::MAX),
        not_modified_since: nms,
    }
}

/// GET the timeline detail from the HTTP API.
fn timeline_info(args: &GetPageArgs) -> Result<TimelineInfo> {
    let url = format!(
        "http://{}/v1/tenant/{}/timeline/{}",
        args.http, args.tenant, args.timeline
    );
    let agent = ureq::AgentBuilder::new().timeout(HTTP_TIMEOUT).build();
    let resp = agent
        .get(&url)
        .call()
        .with_context(|| format!("GET {url}"))?;
    resp.into_json().with_context(|| format!("decoding {url}"))
}

/// Asks for each relation's size with Nblocks on one connection: a listed size above the
/// server's is cut to it; empty relations are dropped, a missing one is an error.
async fn confirm_sizes(args: &GetPageArgs, rels: &[Rel], nms: Lsn) -> Result<Vec<Rel>> {
    let mut conn = Connection::connect(&args.page_service, USER).await?;
    conn.start_pagestream(&args.tenant, &args.timeline).await?;
    let mut out = Vec::with_capacity(rels.len());
    for (i, r) in rels.iter().enumerate() {
        let req = PagestreamFeMessage::Nblocks(PagestreamNblocksRequest {
            hdr: header(i as u64, nms),
            rel: r.tag,
        });
        let mut buf = BytesMut::new();
        put_copy_data(&req.serialize(), &mut buf)?;
        send(&mut conn.writer, &buf).await?;
        match read_pagestream(&mut conn.reader).await? {
            PagestreamBeMessage::Nblocks(n) if n.n_blocks > 0 => out.push(Rel {
                tag: r.tag,
                nblocks: n.n_blocks.min(r.nblocks),
            }),
            PagestreamBeMessage::Nblocks(_) => {}
            PagestreamBeMessage::Error(e) => bail!("Nblocks {}: {}", r.tag, e.message),
            other => bail!("unexpected answer to Nblocks: tag {}", other.tag()),
        }
    }
    Ok(out)
}

async fn read_pagestream<R: AsyncRead + Unpin>(r: &mut R) -> Result<PagestreamBeMessage> {
    let msg = read_message(r).await?;
    match msg.tag {
        b'd' => Ok(PagestreamBeMessage::parse(&msg.body)?),
        b'E' => bail!("server error: {}", crate::wire::error_text(&msg.body)),
        t => bail!("unexpected message {:?} in pagestream", t as char),
    }
}

/// Runs one connection's requests with at most `depth` in flight; their latencies in µs.
async fn run_connection(
    args: Arc<GetPageArgs>,
    reqs: Vec<(RelTag, u32)>,
    nms: Lsn,
) -> Result<Vec<u64>> {
    let mut conn = Connection::connect(&args.page_service, USER).await?;
    conn.start_pagestream(&args.tenant, &args.timeline).await?;
    let Connection { reader, mut writer } = conn;
    let depth = args.depth;
    let permits = Arc::new(Semaphore::new(depth));
    let (tx, mut rx) = mpsc::channel(depth);
    let sender = tokio::spawn(async move {
        let mut buf = BytesMut::new();
        for (i, (rel, blkno)) in reqs.into_iter().enumerate() {
            let permit = permits.clone().acquire_owned().await?;
            let req = PagestreamFeMessage::GetPage(PagestreamGetPageRequest {
                hdr: header(i as u64, nms),
                rel,
                blkno,
            });
            buf.clear();
            put_copy_data(&req.serialize(), &mut buf)?;
            if tx.send((req, Instant::now(), permit)).await.is_err() {
                break; // the receiver failed; its error is reported
            }
            send(&mut writer, &buf).await?;
        }
        anyhow::Ok(writer)
    });
    let mut reader = reader;
    let mut latencies = Vec::new();
    while let Some((req, sent, permit)) = rx.recv().await {
        let resp = read_pagestream(&mut reader).await?;
        latencies.push(sent.elapsed().as_micros() as u64);
        drop(permit);
        match resp {
            PagestreamBeMessage::GetPage(p) if resp_answers(&p.req, &req) => {}
            PagestreamBeMessage::Error(e) => bail!("GetPage failed: {}", e.message),
            other => bail!("unexpected answer to GetPage: tag {}", other.tag()),
        }
    }
    sender.await??;
    Ok(latencies)
}

fn resp_answers(got: &PagestreamGetPageRequest, sent: &PagestreamFeMessage) -> bool {
    matches!(sent, PagestreamFeMessage::GetPage(s) if s == got)
}

/// Runs the benchmark and prints its figures.
pub async fn run(args: GetPageArgs) -> Result<()> {
    if args.requests > MAX_REQUESTS {
        bail!("--requests is at most {MAX_REQUESTS}");
    }
    if !(1..=MAX_CONNECTIONS).contains(&args.connections) || !(1..=MAX_DEPTH).contains(&args.depth)
    {
        bail!("--connections must be 1..={MAX_CONNECTIONS}, --depth 1..={MAX_DEPTH}");
    }
    let info = timeline_info(&args)?;
    let nms = info.last_record_lsn;
    let listed = match &args.rels {
        Some(s) => parse_rels(s)?,
        None => {
            let mut conn = Connection::connect(&args.page_service, USER).await?;
            let q = format!("fullbackup {} {}", args.tenant, args.timeline);
            rels_from_tar(&conn.copy_out(&q, MAX_FULLBACKUP_BYTES).await?)?
        }
    };
    let rels = confirm_sizes(&args, &listed, nms).await?;
    let total_blocks: u64 = rels.iter().map(|r| u64::from(r.nblocks)).sum();
    if total_blocks == 0 {
        bail!("no relation with blocks to read");
    }
    let random = !args.sequential;
    let plan = plan_requests(&rels, args.requests, random, &mut rand::thread_rng());
    println!(
        "getpage: {} relations, {total_blocks} blocks ({:.1} MiB) at last_record_lsn {nms}; \
         {} requests, {} connections, depth {}, {}",
        rels.len(),
        total_blocks as f64 * PAGE_SZ as f64 / (1024.0 * 1024.0),
        args.requests,
        args.connections,
        args.depth,
        if random { "random" } else { "sequential" }
    );
    let args = Arc::new(args);
    let per_conn = plan.len().div_ceil(args.connections).max(1);
    let started = Instant::now();
    let mut tasks = Vec::new();
    for chunk in plan.chunks(per_conn) {
        tasks.push(tokio::spawn(run_connection(
            args.clone(),
            chunk.to_vec(),
            nms,
        )));
    }
    let mut latencies = Vec::with_capacity(plan.len());
    for t in tasks {
        latencies.extend(t.await??);
    }
    let elapsed = started.elapsed();
    print_figures(summarize(&mut latencies), elapsed);
    Ok(())
}

fn print_figures(summary: Option<LatencySummary>, elapsed: Duration) {
    let Some(s) = summary else {
        println!("no requests");
        return;
    };
    let secs = elapsed.as_secs_f64().max(1e-9);
    let rps = s.count as f64 / secs;
    println!(
        "latency µs: p50 {} p90 {} p99 {} max {}",
        s.p50_us, s.p90_us, s.p99_us, s.max_us
    );
    println!(
        "throughput: {} requests in {:.3} s = {:.0} requests/s, {:.1} MiB/s of pages",
        s.count,
        secs,
        rps,
        rps * PAGE_SZ as f64 / (1024.0 * 1024.0)
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rel(relnode: u32, nblocks: u32) -> Rel {
        Rel {
            tag: RelTag {
                spcnode: 1663,
                dbnode: 5,
                relnode,
                forknum: 0,
            },
            nblocks,
        }
    }

    #[test]
    fn parses_rel_lists() {
        let r = parse_rels("1663/5/1259:10,1664/0/1262:1").unwrap();
        assert_eq!(r[0], rel(1259, 10));
        assert_eq!(
            (r[1].tag.spcnode, r[1].tag.dbnode, r[1].nblocks),
            (1664, 0, 1)
        );
        assert!(parse_rels("1663/5/1259").is_err());
        assert!(parse_rels("1663/5/1259:x").is_err());
    }

    #[test]
    fn sequential_plan_walks_all_blocks_and_wraps() {
        let rels = [rel(1, 2), rel(2, 1)];
        let p = plan_requests(&rels, 4, false, &mut rand::thread_rng());
        let got: Vec<(u32, u32)> = p.iter().map(|(t, b)| (t.relnode, *b)).collect();
        assert_eq!(got, vec![(1, 0), (1, 1), (2, 0), (1, 0)]);
    }

    #[test]
    fn random_plan_stays_in_bounds() {
        let rels = [rel(1, 3), rel(2, 1), rel(3, 0)];
        let p = plan_requests(&rels, 1000, true, &mut rand::thread_rng());
        assert_eq!(p.len(), 1000);
        assert!(p
            .iter()
            .all(|(t, b)| (t.relnode == 1 && *b < 3) || (t.relnode == 2 && *b == 0)));
        assert!(plan_requests(&[rel(1, 0)], 5, true, &mut rand::thread_rng()).is_empty());
    }

    #[test]
    fn discovers_rels_from_a_tar() {
        let mut b = tar::Builder::new(Vec::new());
        let mut add = |path: &str, len: usize| {
            let mut h = tar::Header::new_gnu();
            h.set_size(len as u64);
            h.set_mode(0o600);
            h.set_cksum();
            b.append_data(&mut h, path, &vec![0u8; len][..]).unwrap();
        };
        add("base/5/16384", 3 * PAGE_SZ);
        add("base/5/16384_fsm", 3 * PAGE_SZ);
        add("global/1262", PAGE_SZ);
        add("base/5/PG_VERSION", 3);
        add("base/5/16385", 0);
        let tar = b.into_inner().unwrap();
        let r = rels_from_tar(&tar).unwrap();
        assert_eq!(r.len(), 2);
        assert_eq!(r[0], rel(16384, 3));
        assert_eq!(
            (r[1].tag.spcnode, r[1].tag.relnode, r[1].nblocks),
            (1664, 1262, 1)
        );
    }
}

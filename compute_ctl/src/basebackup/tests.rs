//! The client against a fake page service (pq_proto's server driver) that fails on demand.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;

use pq_proto::backend::{Handler, PostgresBackend};
use pq_proto::be::BeMessage;
use pq_proto::error::{QueryError, SqlState};
use tokio::net::{TcpListener, TcpStream};

use super::*;

/// Answers `basebackup ...` with `tar` (gzipped) after failing the first `fail_first` times.
struct FakePageService {
    tar_gz: Arc<Vec<u8>>,
    fail_first: u32,
    calls: Arc<AtomicU32>,
    queries: Arc<std::sync::Mutex<Vec<String>>>,
}

impl Handler<TcpStream> for FakePageService {
    async fn process_query(
        &mut self,
        pgb: &mut PostgresBackend<TcpStream>,
        query: &str,
    ) -> Result<(), QueryError> {
        self.queries.lock().unwrap().push(query.to_string());
        let n = self.calls.fetch_add(1, Ordering::SeqCst) + 1;
        if n <= self.fail_first {
            return Err(QueryError::sql(
                SqlState::INTERNAL_ERROR,
                "tenant is loading",
            ));
        }
        pgb.start_copy_out().await?;
        for chunk in self.tar_gz.chunks(1000) {
            pgb.write_message(&BeMessage::CopyData(chunk)).await?;
        }
        pgb.write_message(&BeMessage::CopyDone).await?;
        pgb.write_message(&BeMessage::CommandComplete("COPY 0"))
            .await?;
        pgb.flush().await?;
        Ok(())
    }
}

fn sample_tar_gz() -> Vec<u8> {
    let mut b = tar::Builder::new(flate2::write::GzEncoder::new(
        Vec::new(),
        flate2::Compression::fast(),
    ));
    let mut add = |path: &str, data: &[u8]| {
        let mut h = tar::Header::new_gnu();
        h.set_size(data.len() as u64);
        h.set_mode(0o600);
        h.set_cksum();
        b.append_data(&mut h, path, data).unwrap();
    };
    add("PG_VERSION", b"15\n");
    add("global/pg_control", &[7u8; 8192]);
    add("base/5/PG_VERSION", b"15\n");
    // Larger than one queue's worth of chunks, incompressible.
    let big: Vec<u8> = (0..300_000u32)
        .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
        .collect();
    add("base/5/big", &big);
    b.into_inner().unwrap().finish().unwrap()
}

struct Fake {
    conn: Connstring,
    calls: Arc<AtomicU32>,
    queries: Arc<std::sync::Mutex<Vec<String>>>,
    tar_len: usize,
}

async fn start_fake(fail_first: u32) -> Fake {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let tar_gz = Arc::new(sample_tar_gz());
    let calls = Arc::new(AtomicU32::new(0));
    let queries = Arc::new(std::sync::Mutex::new(Vec::new()));
    let fake = Fake {
        conn: Connstring::parse(&format!("host=127.0.0.1 port={port}")).unwrap(),
        calls: calls.clone(),
        queries: queries.clone(),
        tar_len: tar_gz.len(),
    };
    tokio::spawn(async move {
        loop {
            let (sock, _) = listener.accept().await.unwrap();
            let mut h = FakePageService {
                tar_gz: tar_gz.clone(),
                fail_first,
                calls: calls.clone(),
                queries: queries.clone(),
            };
            tokio::spawn(async move {
                let mut pgb = PostgresBackend::new(sock);
                let _ = pgb.run(&mut h, &CancellationToken::new()).await;
            });
        }
    });
    fake
}

fn request(lsn: Option<Lsn>) -> BackupRequest {
    BackupRequest {
        tenant: TenantId([0xab; 16]),
        timeline: TimelineId([0xcd; 16]),
        lsn,
        full: false,
    }
}

#[test]
fn commands() {
    let r = request(None);
    assert_eq!(
        r.command(),
        format!("basebackup {} {} --gzip", r.tenant, r.timeline)
    );
    let r = request(Some(Lsn(0x16B5A50)));
    assert!(
        r.command().ends_with(" 0/16B5A50 --gzip"),
        "{}",
        r.command()
    );
    let r = BackupRequest { full: true, ..r };
    assert!(r.command().starts_with("fullbackup "));
    assert!(r.command().ends_with(" 0/16B5A50"));
}

fn fast_policy() -> RetryPolicy {
    RetryPolicy {
        max_attempts: 4,
        initial_backoff: Duration::from_millis(1),
        max_backoff: Duration::from_millis(5),
    }
}

#[test]
fn backoff_is_bounded_and_growing() {
    let p = RetryPolicy::default();
    assert_eq!(p.backoff(1), Duration::from_millis(200));
    assert_eq!(p.backoff(2), Duration::from_millis(400));
    assert!(p.backoff(5) <= MAX_BACKOFF);
    assert_eq!(p.backoff(100), MAX_BACKOFF);
    let total: Duration = (1..MAX_ATTEMPTS).map(|a| p.backoff(a)).sum();
    assert!(total < Duration::from_secs(30), "{total:?}");
}

#[tokio::test]
async fn fetches_and_unpacks_after_retries() {
    let fake = start_fake(2).await;
    let dir = tempfile::tempdir().unwrap();
    let pgdata = dir.path().join("pgdata");
    let prepares = AtomicU32::new(0);
    let prepare = || {
        prepares.fetch_add(1, Ordering::SeqCst);
        let _ = std::fs::remove_dir_all(&pgdata);
        std::fs::create_dir_all(&pgdata)?;
        // Leftovers of a failed attempt must not survive.
        std::fs::write(pgdata.join("stale"), b"x")?;
        Ok(())
    };
    let req = request(Some(Lsn(0x10)));
    let stats = fetch_with_retries(
        &fake.conn,
        &req,
        &fast_policy(),
        &pgdata,
        prepare,
        |_| {},
        &CancellationToken::new(),
    )
    .await
    .unwrap();
    assert_eq!(stats.attempts, 3);
    assert_eq!(prepares.load(Ordering::SeqCst), 3);
    assert_eq!(stats.bytes, fake.tar_len as u64);
    assert_eq!(std::fs::read(pgdata.join("PG_VERSION")).unwrap(), b"15\n");
    assert_eq!(
        std::fs::read(pgdata.join("base/5/big")).unwrap().len(),
        300_000
    );
    assert_eq!(fake.queries.lock().unwrap()[2], req.command());
}

#[tokio::test]
async fn gives_up_with_the_server_error() {
    let fake = start_fake(u32::MAX).await;
    let dir = tempfile::tempdir().unwrap();
    let err = fetch_with_retries(
        &fake.conn,
        &request(None),
        &fast_policy(),
        dir.path(),
        || Ok(()),
        |_| {},
        &CancellationToken::new(),
    )
    .await
    .unwrap_err();
    let text = format!("{err:#}");
    assert!(text.contains("tenant is loading"), "{text}");
    assert!(text.contains("failed 4 times"), "{text}");
    assert_eq!(fake.calls.load(Ordering::SeqCst), 4);
}

#[tokio::test]
async fn connection_refused_is_an_error() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let conn = Connstring::parse(&format!("host=127.0.0.1 port={port}")).unwrap();
    let cancel = CancellationToken::new();
    cancel.cancel();
    let err = fetch_with_retries(
        &conn,
        &request(None),
        &fast_policy(),
        Path::new("/nonexistent"),
        || Ok(()),
        |_| {},
        &cancel,
    )
    .await
    .unwrap_err();
    // Either the refused connection or the cancellation ends it; it never hangs.
    assert!(!format!("{err:#}").is_empty());
}

#[test]
fn garbage_is_an_unpack_error() {
    let dir = tempfile::tempdir().unwrap();
    let err = unpack(&b"definitely not gzip"[..], dir.path(), true).unwrap_err();
    assert!(format!("{err:#}").contains("untar"), "{err:#}");
}

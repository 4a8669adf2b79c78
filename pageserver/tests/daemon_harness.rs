//! Starts the real `pageserver` binary in a temporary workdir on free ports (used by the
//! `http_*` and `daemon_*` tests through `#[path]`).
#![allow(dead_code)]

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::{Duration, Instant};

/// How long the daemon may take to answer `/v1/status` or to exit.
pub const DAEMON_DEADLINE: Duration = Duration::from_secs(30);
const POLL_INTERVAL: Duration = Duration::from_millis(20);

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn pg_distrib_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../pg_install")
}

/// A running pageserver; stopped (SIGTERM, then SIGKILL after the deadline) on drop.
pub struct Daemon {
    pub workdir: PathBuf,
    pub http_port: u16,
    pub pg_port: u16,
    child: Option<Child>,
}

impl Daemon {
    /// `--init`s `workdir` if needed (on fresh ports) and starts the daemon.
    pub fn start(workdir: &Path) -> Daemon {
        let conf = workdir.join("pageserver.toml");
        if !conf.exists() {
            let (http, pg) = (free_port(), free_port());
            let status = Command::new(env!("CARGO_BIN_EXE_pageserver"))
                .arg("--workdir")
                .arg(workdir)
                .arg("--init")
                .arg("-c")
                .arg(format!("listen_http_addr=127.0.0.1:{http}"))
                .arg("-c")
                .arg(format!("listen_pg_addr=127.0.0.1:{pg}"))
                .arg("-c")
                .arg(format!("pg_distrib_dir={}", pg_distrib_dir().display()))
                .arg("-c")
                .arg("id=7")
                .status()
                .unwrap();
            assert!(status.success());
        }
        let text = std::fs::read_to_string(&conf).unwrap();
        let table: toml::Table = text.parse().unwrap();
        let port = |k: &str| -> u16 {
            let addr: std::net::SocketAddr = table[k].as_str().unwrap().parse().unwrap();
            addr.port()
        };
        let child = Command::new(env!("CARGO_BIN_EXE_pageserver"))
            .arg("--workdir")
            .arg(workdir)
            .spawn()
            .unwrap();
        let d = Daemon {
            workdir: workdir.to_path_buf(),
            http_port: port("listen_http_addr"),
            pg_port: port("listen_pg_addr"),
            child: Some(child),
        };
        d.wait_ready();
        d
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.http_port)
    }

    fn wait_ready(&self) {
        let deadline = Instant::now() + DAEMON_DEADLINE;
        loop {
            if ureq::get(&self.url("/v1/status")).call().is_ok() {
                return;
            }
            assert!(Instant::now() < deadline, "pageserver did not come up");
            std::thread::sleep(POLL_INTERVAL);
        }
    }

    /// Graceful stop; panics if the daemon does not exit cleanly in time.
    pub fn stop(mut self) {
        let status = self.terminate();
        assert!(
            status.is_some_and(|s| s.success()),
            "exit status {status:?}"
        );
    }

    fn terminate(&mut self) -> Option<std::process::ExitStatus> {
        let mut child = self.child.take()?;
        let pid = nix::unistd::Pid::from_raw(child.id() as i32);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
        let deadline = Instant::now() + DAEMON_DEADLINE;
        loop {
            if let Ok(Some(status)) = child.try_wait() {
                return Some(status);
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                return child.wait().ok().filter(|_| false);
            }
            std::thread::sleep(POLL_INTERVAL);
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        self.terminate();
    }
}

/// `(status, body as JSON)` of a request (errors included).
pub fn call(req: ureq::Request, body: Option<serde_json::Value>) -> (u16, serde_json::Value) {
    let res = match body {
        Some(b) => req.send_json(b),
        None => req.call(),
    };
    let resp = match res {
        Ok(r) => r,
        Err(ureq::Error::Status(_, r)) => r,
        Err(e) => panic!("request failed: {e}"),
    };
    let status = resp.status();
    let text = resp.into_string().unwrap();
    let json = serde_json::from_str(&text).unwrap_or(serde_json::Value::String(text));
    (status, json)
}

pub fn new_id() -> String {
    utils::id::TenantId::generate().to_string()
}

/// A minimal libpq client for the page service tests.
pub struct PgClient {
    stream: std::net::TcpStream,
}

/// One backend message: tag and body.
pub type PgMessage = (u8, Vec<u8>);

impl PgClient {
    /// Connects and completes the startup (trust auth) up to ReadyForQuery.
    pub fn connect(port: u16) -> PgClient {
        use std::io::Write;
        let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
        stream.set_read_timeout(Some(DAEMON_DEADLINE)).unwrap();
        let mut body = Vec::new();
        body.extend_from_slice(&196608u32.to_be_bytes());
        body.extend_from_slice(b"user\0test\0\0");
        let mut pkt = ((body.len() + 4) as u32).to_be_bytes().to_vec();
        pkt.extend_from_slice(&body);
        stream.write_all(&pkt).unwrap();
        let mut c = PgClient { stream };
        c.read_until_ready();
        c
    }

    pub fn send(&mut self, tag: u8, body: &[u8]) {
        use std::io::Write;
        let mut msg = vec![tag];
        msg.extend_from_slice(&((body.len() + 4) as u32).to_be_bytes());
        msg.extend_from_slice(body);
        self.stream.write_all(&msg).unwrap();
    }

    pub fn query(&mut self, q: &str) {
        let mut b = q.as_bytes().to_vec();
        b.push(0);
        self.send(b'Q', &b);
    }

    pub fn read(&mut self) -> PgMessage {
        use std::io::Read;
        let mut hdr = [0u8; 5];
        self.stream.read_exact(&mut hdr).unwrap();
        let len = u32::from_be_bytes([hdr[1], hdr[2], hdr[3], hdr[4]]) as usize;
        let mut body = vec![0u8; len - 4];
        self.stream.read_exact(&mut body).unwrap();
        (hdr[0], body)
    }

    /// Reads messages up to and including ReadyForQuery; returns those before it.
    pub fn read_until_ready(&mut self) -> Vec<PgMessage> {
        let mut out = Vec::new();
        loop {
            let m = self.read();
            if m.0 == b'Z' {
                return out;
            }
            out.push(m);
        }
    }
}

//! The PostgreSQL process: started as the unprivileged OS user, its output passed through
//! to our stderr while the last lines are kept for error reports, its exit observed by a
//! task, and connections to it (as `cloud_admin`) polled until it accepts them.

use std::collections::VecDeque;
use std::io::Write as _;
use std::path::Path;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context};
use compute_api::spec::SUPERUSER;
use nix::sys::signal::Signal;
use nix::unistd::Pid;
use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader};
use tokio::sync::watch;

use crate::pgdata::OsUser;

/// Lines of PostgreSQL output kept for error reports.
pub const LOG_TAIL_LINES: usize = 40;
/// Longest line kept (longer ones are cut).
const MAX_LOG_LINE_BYTES: usize = 2048;
/// Pause between connection attempts while PostgreSQL starts.
const CONNECT_POLL_INTERVAL: Duration = Duration::from_millis(50);
/// Limit of one connection attempt.
const CONNECT_ATTEMPT_TIMEOUT: Duration = Duration::from_secs(2);

/// The last lines PostgreSQL wrote (bounded).
#[derive(Debug, Default)]
pub struct LogTail {
    lines: VecDeque<String>,
}

impl LogTail {
    pub fn push(&mut self, line: &str) {
        let mut l = line.to_string();
        if l.len() > MAX_LOG_LINE_BYTES {
            let mut cut = MAX_LOG_LINE_BYTES;
            while !l.is_char_boundary(cut) {
                cut -= 1;
            }
            l.truncate(cut);
        }
        if self.lines.len() == LOG_TAIL_LINES {
            self.lines.pop_front();
        }
        self.lines.push_back(l);
    }

    /// The kept lines, oldest first, joined by newlines.
    pub fn text(&self) -> String {
        self.lines.iter().cloned().collect::<Vec<_>>().join("\n")
    }
}

/// A started postmaster.
#[derive(Debug, Clone)]
pub struct Postmaster {
    pub pid: Pid,
    /// `Some(description of the exit status)` once it exited.
    pub exited: watch::Receiver<Option<String>>,
    pub log: Arc<Mutex<LogTail>>,
}

impl Postmaster {
    /// Starts `<pg_install>/bin/postgres -D <pgdata>` as `user`.
    pub fn start(pg_install: &Path, pgdata: &Path, user: &OsUser) -> anyhow::Result<Postmaster> {
        let bin = pg_install.join("bin/postgres");
        let mut cmd = tokio::process::Command::new(&bin);
        cmd.arg("-D")
            .arg(pgdata)
            .current_dir(pgdata)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(false);
        if user.switch {
            // std drops supplementary groups when switching from root.
            cmd.uid(user.uid.as_raw()).gid(user.gid.as_raw());
            cmd.env("USER", &user.name).env("LOGNAME", &user.name);
        }
        let mut child = cmd
            .spawn()
            .with_context(|| format!("start {}", bin.display()))?;
        let pid = child
            .id()
            .ok_or_else(|| anyhow!("postgres exited before we saw its pid"))?;
        let pid = Pid::from_raw(i32::try_from(pid)?);
        let log = Arc::new(Mutex::new(LogTail::default()));
        if let Some(out) = child.stdout.take() {
            tokio::spawn(pass_through(out, log.clone()));
        }
        if let Some(err) = child.stderr.take() {
            tokio::spawn(pass_through(err, log.clone()));
        }
        let (tx, exited) = watch::channel(None);
        tokio::spawn(async move {
            let status = match child.wait().await {
                Ok(s) => s.to_string(),
                Err(e) => format!("unknown status ({e})"),
            };
            tracing::info!("postgres (pid {pid}) exited: {status}");
            tx.send_replace(Some(status));
        });
        tracing::info!("started postgres, pid {pid}");
        Ok(Postmaster { pid, exited, log })
    }

    /// The exit status, if it exited.
    pub fn exit_status(&self) -> Option<String> {
        self.exited.borrow().clone()
    }

    /// The last lines of its output.
    pub fn log_tail(&self) -> String {
        self.log.lock().unwrap_or_else(|p| p.into_inner()).text()
    }

    /// Sends `sig` to the postmaster (SIGINT: fast shutdown, SIGQUIT: immediate).
    pub fn signal(&self, sig: Signal) -> anyhow::Result<()> {
        if self.exit_status().is_some() {
            return Ok(());
        }
        nix::sys::signal::kill(self.pid, sig).with_context(|| format!("{sig} to pid {}", self.pid))
    }

    /// Waits until it exits or `timeout` passes; returns the exit status if it exited.
    pub async fn wait_exit(&self, timeout: Duration) -> Option<String> {
        let mut rx = self.exited.clone();
        let _ = tokio::time::timeout(timeout, rx.wait_for(|s| s.is_some())).await;
        self.exit_status()
    }

    /// Polls until PostgreSQL accepts a connection as the superuser, it exits, or the
    /// deadline passes. Returns a connected client.
    pub async fn wait_ready(
        &self,
        port: u16,
        timeout: Duration,
    ) -> anyhow::Result<tokio_postgres::Client> {
        let deadline = Instant::now() + timeout;
        loop {
            let last_err = match connect(port).await {
                Ok(c) => return Ok(c),
                Err(e) => e,
            };
            if let Some(status) = self.exit_status() {
                bail!(
                    "postgres exited during startup ({status}):\n{}",
                    self.log_tail()
                );
            }
            if Instant::now() >= deadline {
                bail!(
                    "postgres did not accept connections within {timeout:?} (last error: {last_err:#})"
                );
            }
            tokio::time::sleep(CONNECT_POLL_INTERVAL).await;
        }
    }
}

/// A connection to the local PostgreSQL as `cloud_admin` to database `postgres`; the
/// connection task runs in the background.
pub async fn connect(port: u16) -> anyhow::Result<tokio_postgres::Client> {
    let mut cfg = tokio_postgres::Config::new();
    cfg.host("127.0.0.1")
        .port(port)
        .user(SUPERUSER)
        .dbname("postgres")
        .application_name("compute_ctl")
        .connect_timeout(CONNECT_ATTEMPT_TIMEOUT);
    let (client, conn) =
        tokio::time::timeout(CONNECT_ATTEMPT_TIMEOUT, cfg.connect(tokio_postgres::NoTls))
            .await
            .map_err(|_| anyhow!("connecting to port {port} timed out"))??;
    tokio::spawn(async move {
        if let Err(e) = conn.await {
            tracing::debug!("connection to postgres ended: {e}");
        }
    });
    Ok(client)
}

/// Copies lines from `from` to our stderr and into `tail` (bytes that are not UTF-8 are
/// replaced in the tail).
async fn pass_through(from: impl AsyncRead + Unpin, tail: Arc<Mutex<LogTail>>) {
    let mut reader = BufReader::new(from);
    let mut line = Vec::new();
    loop {
        line.clear();
        match reader.read_until(b'\n', &mut line).await {
            Ok(0) => return,
            Ok(_) => {
                let _ = std::io::stderr().write_all(&line);
                let text = String::from_utf8_lossy(&line);
                tail.lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .push(text.trim_end_matches(['\n', '\r']));
            }
            Err(e) => {
                tracing::debug!("reading postgres output: {e}");
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_tail_is_bounded() {
        let mut t = LogTail::default();
        for i in 0..100 {
            t.push(&format!("line {i}"));
        }
        let text = t.text();
        assert_eq!(text.lines().count(), LOG_TAIL_LINES);
        assert!(text.starts_with(&format!("line {}", 100 - LOG_TAIL_LINES)));
        assert!(text.ends_with("line 99"));
        t.push(&"é".repeat(5000));
        assert!(t.text().lines().last().unwrap().len() <= MAX_LOG_LINE_BYTES);
    }
}

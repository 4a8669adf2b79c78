//! The local pageserver: its workdir `$NEON_REPO_DIR/pageserver_1`, starting and stopping the
//! daemon, and a client for its management API.
//!
//! The HTTP client is `ureq`: neon_local is a short-lived synchronous program, and ureq is a
//! small blocking client (no async runtime, no TLS needed for 127.0.0.1).

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use pageserver_api::models::{
    HttpErrorBody, TenantCreateRequest, TenantInfo, TimelineCreateRequest, TimelineInfo,
};
use utils::id::{TenantId, TimelineId};
use utils::lsn::Lsn;
use utils::pidfile::{read_pid_file, PidFileState};

use crate::local_env::LocalEnv;
use crate::pg_copy::PgCopyClient;

/// Node id of the (single) local pageserver.
pub const PAGESERVER_ID: u64 = 1;
/// Default wait for the daemon to answer after start, or to exit after stop.
pub const DEFAULT_DEADLINE: Duration = Duration::from_secs(10);
/// Timeout of one API request (timeline bootstrap runs initdb, so it is generous).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(120);
const POLL_INTERVAL: Duration = Duration::from_millis(50);

/// The local pageserver.
pub struct PageServerNode {
    pub workdir: PathBuf,
    pub http_addr: String,
    pub pg_addr: String,
    binary: PathBuf,
    pg_distrib_dir: PathBuf,
}

impl PageServerNode {
    pub fn from_env(env: &LocalEnv, repo: &Path) -> PageServerNode {
        PageServerNode {
            workdir: repo.join(format!("pageserver_{PAGESERVER_ID}")),
            http_addr: env.pageserver.listen_http_addr.clone(),
            pg_addr: env.pageserver.listen_pg_addr.clone(),
            binary: env.neon_distrib_dir.join("pageserver"),
            pg_distrib_dir: env.pg_distrib_dir.clone(),
        }
    }

    /// The daemon's log file.
    pub fn log_path(&self) -> PathBuf {
        self.workdir.join("pageserver.log")
    }

    fn pid_path(&self) -> PathBuf {
        utils::pidfile::pid_file_path(&self.workdir, "pageserver")
    }

    /// The pid of the running daemon, if any.
    pub fn running_pid(&self) -> anyhow::Result<Option<utils::pidfile::Pid>> {
        match read_pid_file(self.pid_path())? {
            PidFileState::Locked { pid } => Ok(pid),
            PidFileState::Missing | PidFileState::Stale { .. } => Ok(None),
        }
    }

    /// Writes `pageserver.toml` unless it exists.
    fn init_workdir(&self) -> anyhow::Result<()> {
        if self.workdir.join("pageserver.toml").exists() {
            return Ok(());
        }
        let out = Command::new(&self.binary)
            .arg("--workdir")
            .arg(&self.workdir)
            .arg("--init")
            .args(["-c", &format!("id={PAGESERVER_ID}")])
            .args(["-c", &format!("listen_pg_addr={}", self.pg_addr)])
            .args(["-c", &format!("listen_http_addr={}", self.http_addr)])
            .args([
                "-c",
                &format!("pg_distrib_dir={}", self.pg_distrib_dir.display()),
            ])
            .output()
            .with_context(|| format!("run {}", self.binary.display()))?;
        if !out.status.success() {
            bail!(
                "pageserver --init failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(())
    }

    /// Starts the daemon (detached, in its own process group) and waits for `/v1/status`.
    pub fn start(&self, deadline: Duration) -> anyhow::Result<()> {
        if let Some(pid) = self.running_pid()? {
            bail!("pageserver is already running (pid {pid})");
        }
        self.init_workdir()?;
        let out_path = self.workdir.join("pageserver.stdout");
        let out = std::fs::File::create(&out_path)
            .with_context(|| format!("create {}", out_path.display()))?;
        let mut child = {
            use std::os::unix::process::CommandExt;
            Command::new(&self.binary)
                .arg("--workdir")
                .arg(&self.workdir)
                .stdin(Stdio::null())
                .stdout(out.try_clone()?)
                .stderr(out)
                .process_group(0)
                .spawn()
                .with_context(|| format!("start {}", self.binary.display()))?
        };
        let until = Instant::now() + deadline;
        loop {
            if self.status().is_ok() {
                return Ok(());
            }
            if let Some(status) = child.try_wait()? {
                let output = std::fs::read_to_string(&out_path).unwrap_or_default();
                bail!(
                    "pageserver exited with {status} during startup: {}",
                    output.trim()
                );
            }
            if Instant::now() > until {
                bail!(
                    "pageserver did not answer on {} within {deadline:?}; see {}",
                    self.http_addr,
                    self.log_path().display()
                );
            }
            std::thread::sleep(POLL_INTERVAL);
        }
    }

    /// Stops the daemon: SIGTERM (SIGKILL with `immediate`), wait up to `deadline`, then
    /// SIGKILL. Returns false if it was not running.
    pub fn stop(&self, immediate: bool, deadline: Duration) -> anyhow::Result<bool> {
        use nix::sys::signal::{kill, Signal};
        let Some(pid) = self.running_pid()? else {
            return Ok(false);
        };
        let sig = if immediate {
            Signal::SIGKILL
        } else {
            Signal::SIGTERM
        };
        kill(pid, sig).with_context(|| format!("signal pageserver pid {pid}"))?;
        let until = Instant::now() + deadline;
        while utils::pidfile::process_alive(pid) && self.running_pid()?.is_some() {
            if Instant::now() > until {
                eprintln!("pageserver (pid {pid}) did not stop within {deadline:?}; killing it");
                let _ = kill(pid, Signal::SIGKILL);
                let hard = Instant::now() + deadline;
                while utils::pidfile::process_alive(pid) && Instant::now() < hard {
                    std::thread::sleep(POLL_INTERVAL);
                }
                break;
            }
            std::thread::sleep(POLL_INTERVAL);
        }
        Ok(true)
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.http_addr)
    }

    fn agent() -> ureq::Agent {
        ureq::AgentBuilder::new().timeout(REQUEST_TIMEOUT).build()
    }

    /// Sends a request; a non-2xx answer becomes an error with the server's message.
    fn send<T: serde::de::DeserializeOwned>(
        &self,
        method: &str,
        path: &str,
        body: Option<serde_json::Value>,
    ) -> anyhow::Result<T> {
        let req = Self::agent().request(method, &self.url(path));
        let res = match body {
            Some(b) => req.send_json(b),
            None => req.call(),
        };
        match res {
            Ok(resp) => resp
                .into_json()
                .with_context(|| format!("parse the answer to {method} {path}")),
            Err(ureq::Error::Status(code, resp)) => {
                let msg = resp
                    .into_json::<HttpErrorBody>()
                    .map(|b| b.msg)
                    .unwrap_or_else(|e| format!("(unreadable body: {e})"));
                bail!("pageserver answered {code} to {method} {path}: {msg}")
            }
            Err(e) => Err(anyhow::Error::new(e).context(format!("{method} {path}"))),
        }
    }

    pub fn status(&self) -> anyhow::Result<serde_json::Value> {
        self.send("GET", "/v1/status", None)
    }

    pub fn tenant_create(&self, id: TenantId) -> anyhow::Result<()> {
        let req = TenantCreateRequest {
            new_tenant_id: id,
            config: Default::default(),
        };
        let _: serde_json::Value =
            self.send("POST", "/v1/tenant", Some(serde_json::to_value(req)?))?;
        Ok(())
    }

    pub fn tenant_list(&self) -> anyhow::Result<Vec<TenantInfo>> {
        self.send("GET", "/v1/tenant", None)
    }

    pub fn timeline_create(
        &self,
        tenant: TenantId,
        id: TimelineId,
        ancestor: Option<TimelineId>,
        ancestor_start_lsn: Option<Lsn>,
    ) -> anyhow::Result<TimelineInfo> {
        let req = TimelineCreateRequest {
            new_timeline_id: id,
            ancestor_timeline_id: ancestor,
            ancestor_start_lsn,
            pg_version: None,
        };
        self.send(
            "POST",
            &format!("/v1/tenant/{tenant}/timeline"),
            Some(serde_json::to_value(req)?),
        )
    }

    pub fn timeline_list(&self, tenant: TenantId) -> anyhow::Result<Vec<TimelineInfo>> {
        self.send("GET", &format!("/v1/tenant/{tenant}/timeline"), None)
    }

    pub fn timeline_info(&self, tenant: TenantId, id: TimelineId) -> anyhow::Result<TimelineInfo> {
        self.send("GET", &format!("/v1/tenant/{tenant}/timeline/{id}"), None)
    }

    /// Makes the pageserver pull the timeline's WAL from a primary compute.
    pub fn set_wal_source(
        &self,
        tenant: TenantId,
        id: TimelineId,
        connstr: &str,
        slot_name: &str,
    ) -> anyhow::Result<()> {
        let body = serde_json::json!({ "connstr": connstr, "slot_name": slot_name });
        let _: serde_json::Value = self.send(
            "PUT",
            &format!("/v1/tenant/{tenant}/timeline/{id}/wal_source"),
            Some(body),
        )?;
        Ok(())
    }

    /// Stops pulling the timeline's WAL (idempotent).
    pub fn delete_wal_source(&self, tenant: TenantId, id: TimelineId) -> anyhow::Result<()> {
        let _: serde_json::Value = self.send(
            "DELETE",
            &format!("/v1/tenant/{tenant}/timeline/{id}/wal_source"),
            None,
        )?;
        Ok(())
    }

    /// Imports a base backup tar (and a tar of WAL segments up to `end`) into the new
    /// timeline `id` through the page service; returns when the timeline is durable.
    pub fn timeline_import(&self, req: &ImportRequest) -> anyhow::Result<()> {
        let mut client = PgCopyClient::connect(&self.pg_addr, REQUEST_TIMEOUT)?;
        let (tenant, id, base) = (req.tenant, req.timeline, req.base_lsn);
        let end = req.wal.as_ref().map_or(base, |(_, end)| *end);
        let mut base_file = std::fs::File::open(&req.base_tarfile)
            .with_context(|| format!("opening {}", req.base_tarfile.display()))?;
        client
            .copy_in(
                &format!(
                    "import basebackup {tenant} {id} {base} {end} {}",
                    req.pg_version
                ),
                &mut base_file,
            )
            .context("importing the base backup")?;
        if let Some((wal_tarfile, end)) = &req.wal {
            let mut wal_file = std::fs::File::open(wal_tarfile)
                .with_context(|| format!("opening {}", wal_tarfile.display()))?;
            client
                .copy_in(
                    &format!("import wal {tenant} {id} {base} {end}"),
                    &mut wal_file,
                )
                .context("importing the WAL")?;
        }
        Ok(())
    }
}

/// What `timeline import` imports.
pub struct ImportRequest {
    pub tenant: TenantId,
    pub timeline: TimelineId,
    pub base_tarfile: PathBuf,
    pub base_lsn: Lsn,
    /// The WAL tar and the LSN to import up to (a record end).
    pub wal: Option<(PathBuf, Lsn)>,
    pub pg_version: u32,
}

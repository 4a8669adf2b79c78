//! Endpoints: computes (our PostgreSQL under `compute_ctl`) on a branch of a tenant.
//!
//! Each endpoint lives in `$NEON_REPO_DIR/endpoints/<name>/`:
//! - `endpoint.json`: what `endpoint create` decided (tenant, timeline, branch, mode, ports);
//! - `spec.json`: the compute spec handed to `compute_ctl` at every start;
//! - `compute_ctl.pid`, `compute.log`: the running supervisor and its output;
//! - `pgdata/`: the data directory compute_ctl rebuilds from a basebackup at every start.
//!
//! A primary endpoint registers itself as the WAL source of its timeline with the pageserver
//! once it runs, and `stop` returns only after the pageserver holds all of its WAL durably.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use compute_api::spec::{Cluster, ComputeMode, ComputeSpec, Setting, SPEC_FORMAT_VERSION};
use serde::{Deserialize, Serialize};
use utils::id::{TenantId, TimelineId};
use utils::lsn::Lsn;

use crate::local_env::{LocalEnv, DEFAULT_ENDPOINT_PG_PORT_FIRST};
use crate::pageserver::PageServerNode;

/// compute_ctl's HTTP port is the PostgreSQL port plus this.
pub const HTTP_PORT_OFFSET: u16 = 1000;
/// Ports are looked for up to this many steps above the first endpoint port.
const MAX_PORT_PROBES: u16 = 500;
/// How long `stop` waits for the pageserver to hold the stopped primary's WAL durably.
const WAL_DURABLE_DEADLINE: Duration = Duration::from_secs(60);
const POLL_INTERVAL: Duration = Duration::from_millis(50);
const HTTP_TIMEOUT: Duration = Duration::from_secs(30);
/// Name of the replication slot the pageserver streams through.
pub const PAGESERVER_SLOT: &str = "pageserver";

/// Primary (read-write, streams its WAL to the pageserver) or static (read-only at an LSN).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EndpointMode {
    Primary,
    Static(Lsn),
}

/// `endpoint.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EndpointConf {
    pub name: String,
    pub tenant_id: TenantId,
    pub timeline_id: TimelineId,
    pub branch_name: String,
    pub mode: EndpointMode,
    pub pg_port: u16,
    pub http_port: u16,
    /// PostgreSQL settings for the compute spec (`endpoint create -c name=value`).
    #[serde(default)]
    pub settings: Vec<(String, String)>,
}

/// What `endpoint create` asks for.
pub struct CreateRequest {
    pub name: String,
    pub tenant_id: TenantId,
    pub timeline_id: TimelineId,
    pub branch_name: String,
    pub lsn: Option<Lsn>,
    pub pg_port: Option<u16>,
    pub http_port: Option<u16>,
    pub settings: Vec<(String, String)>,
}

/// Whether an endpoint's compute runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EndpointStatus {
    Running,
    Stopped,
    /// compute_ctl runs but PostgreSQL does not (or is not ready yet): its status word.
    Other(String),
}

impl std::fmt::Display for EndpointStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            EndpointStatus::Running => f.write_str("running"),
            EndpointStatus::Stopped => f.write_str("stopped"),
            EndpointStatus::Other(s) => f.write_str(s),
        }
    }
}

/// One endpoint directory.
pub struct Endpoint {
    pub dir: PathBuf,
    pub conf: EndpointConf,
}

/// `$NEON_REPO_DIR/endpoints`.
pub fn endpoints_dir(repo: &Path) -> PathBuf {
    repo.join("endpoints")
}

/// Names are used as directory names: keep them to a safe alphabet.
fn check_name(name: &str) -> anyhow::Result<()> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
        && !name.starts_with('-');
    if !ok {
        bail!("bad endpoint name {name:?}: use 1-64 letters, digits, '_' or '-'");
    }
    Ok(())
}

/// The first port at or above `first` whose pair (port, port + offset) no endpoint uses and
/// nothing listens on.
pub fn pick_ports(taken: &[u16], first: u16) -> anyhow::Result<(u16, u16)> {
    for step in 0..MAX_PORT_PROBES {
        let pg = first.checked_add(step).context("port range exhausted")?;
        let http = pg
            .checked_add(HTTP_PORT_OFFSET)
            .context("port range exhausted")?;
        if taken.contains(&pg) || taken.contains(&http) {
            continue;
        }
        if port_free(pg) && port_free(http) {
            return Ok((pg, http));
        }
    }
    bail!("no free port pair found from {first} upward")
}

fn port_free(port: u16) -> bool {
    std::net::TcpListener::bind(("127.0.0.1", port)).is_ok()
}

impl Endpoint {
    pub fn dir_of(repo: &Path, name: &str) -> PathBuf {
        endpoints_dir(repo).join(name)
    }

    pub fn load(repo: &Path, name: &str) -> anyhow::Result<Endpoint> {
        check_name(name)?;
        let dir = Self::dir_of(repo, name);
        let path = dir.join("endpoint.json");
        let text = match std::fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                bail!("endpoint {name:?} does not exist (see `endpoint list`)")
            }
            Err(e) => return Err(e).with_context(|| format!("read {}", path.display())),
        };
        let conf: EndpointConf =
            serde_json::from_str(&text).with_context(|| format!("parse {}", path.display()))?;
        Ok(Endpoint { dir, conf })
    }

    /// Every endpoint of the repository, sorted by name.
    pub fn list(repo: &Path) -> anyhow::Result<Vec<Endpoint>> {
        let dir = endpoints_dir(repo);
        let entries = match std::fs::read_dir(&dir) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(e).with_context(|| format!("list {}", dir.display())),
        };
        let mut out = Vec::new();
        for entry in entries {
            let entry = entry.with_context(|| format!("list {}", dir.display()))?;
            let name = entry.file_name().to_string_lossy().into_owned();
            if entry.path().join("endpoint.json").exists() {
                out.push(Self::load(repo, &name)?);
            }
        }
        out.sort_by(|a, b| a.conf.name.cmp(&b.conf.name));
        Ok(out)
    }

    /// Creates the endpoint directory and `endpoint.json`.
    pub fn create(repo: &Path, req: CreateRequest) -> anyhow::Result<Endpoint> {
        check_name(&req.name)?;
        let dir = Self::dir_of(repo, &req.name);
        if dir.join("endpoint.json").exists() {
            bail!("endpoint {:?} already exists", req.name);
        }
        let taken: Vec<u16> = Self::list(repo)?
            .iter()
            .flat_map(|e| [e.conf.pg_port, e.conf.http_port])
            .collect();
        let (pg_port, http_port) = match (req.pg_port, req.http_port) {
            (Some(pg), Some(http)) => (pg, http),
            (Some(pg), None) => (pg, pg.saturating_add(HTTP_PORT_OFFSET)),
            (None, _) => {
                let (pg, http) = pick_ports(&taken, DEFAULT_ENDPOINT_PG_PORT_FIRST)?;
                (pg, req.http_port.unwrap_or(http))
            }
        };
        for port in [pg_port, http_port] {
            if taken.contains(&port) {
                bail!("port {port} is already used by another endpoint");
            }
        }
        let conf = EndpointConf {
            name: req.name,
            tenant_id: req.tenant_id,
            timeline_id: req.timeline_id,
            branch_name: req.branch_name,
            mode: req.lsn.map_or(EndpointMode::Primary, EndpointMode::Static),
            pg_port,
            http_port,
            settings: req.settings,
        };
        utils::crashsafe::create_dir_all_durable(&dir)
            .with_context(|| format!("create {}", dir.display()))?;
        let ep = Endpoint { dir, conf };
        ep.save()?;
        Ok(ep)
    }

    fn save(&self) -> anyhow::Result<()> {
        let path = self.dir.join("endpoint.json");
        let text = serde_json::to_string_pretty(&self.conf).context("serialize endpoint.json")?;
        utils::crashsafe::durable_write(&path, text.as_bytes())
            .with_context(|| format!("write {}", path.display()))
    }

    pub fn pgdata(&self) -> PathBuf {
        self.dir.join("pgdata")
    }

    pub fn log_path(&self) -> PathBuf {
        self.dir.join("compute.log")
    }

    fn pid_path(&self) -> PathBuf {
        self.dir.join("compute_ctl.pid")
    }

    /// The connection string users get.
    pub fn connstr(&self) -> String {
        format!(
            "postgresql://cloud_admin@127.0.0.1:{}/postgres",
            self.conf.pg_port
        )
    }

    /// The compute spec (see docs/compute_ctl.md), validated.
    pub fn spec(&self, pageserver_pg_addr: &str) -> anyhow::Result<ComputeSpec> {
        let (host, port) = pageserver_pg_addr
            .rsplit_once(':')
            .with_context(|| format!("bad pageserver address {pageserver_pg_addr:?}"))?;
        let mode = match self.conf.mode {
            EndpointMode::Primary => ComputeMode::Primary,
            EndpointMode::Static(lsn) => ComputeMode::Static(lsn),
        };
        let settings = self
            .conf
            .settings
            .iter()
            .map(|(name, value)| Setting {
                name: name.clone(),
                value: value.clone(),
            })
            .collect();
        let spec = ComputeSpec {
            format_version: SPEC_FORMAT_VERSION,
            tenant_id: self.conf.tenant_id,
            timeline_id: self.conf.timeline_id,
            mode,
            pageserver_connstring: format!("host={host} port={port}"),
            pg_port: self.conf.pg_port,
            cluster: Cluster {
                settings,
                ..Default::default()
            },
        };
        spec.validate().context("check the compute spec")?;
        Ok(spec)
    }

    /// The running compute_ctl's pid, if any.
    pub fn running_pid(&self) -> Option<i32> {
        let text = std::fs::read_to_string(self.pid_path()).ok()?;
        let pid: i32 = text.trim().parse().ok()?;
        let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
        let is_ours = cmdline
            .split(|b| *b == 0)
            .next()
            .is_some_and(|argv0| argv0.ends_with(b"compute_ctl"));
        (is_ours && !is_zombie(pid)).then_some(pid)
    }

    fn status_url(&self) -> String {
        format!("http://127.0.0.1:{}/status", self.conf.http_port)
    }

    /// compute_ctl's `/status` answer.
    fn compute_status(&self) -> anyhow::Result<serde_json::Value> {
        let agent = ureq::AgentBuilder::new().timeout(HTTP_TIMEOUT).build();
        agent
            .get(&self.status_url())
            .call()
            .context("ask compute_ctl for its status")?
            .into_json()
            .context("parse compute_ctl's status")
    }

    pub fn status(&self) -> EndpointStatus {
        if self.running_pid().is_none() {
            return EndpointStatus::Stopped;
        }
        match self.compute_status() {
            Ok(v) => match v.get("status").and_then(|s| s.as_str()) {
                Some("running") => EndpointStatus::Running,
                Some(other) => EndpointStatus::Other(other.to_string()),
                None => EndpointStatus::Other("unknown".into()),
            },
            Err(_) => EndpointStatus::Other("starting".into()),
        }
    }

    /// Starts compute_ctl and waits until PostgreSQL accepts connections; a primary then
    /// becomes its timeline's WAL source.
    pub fn start(
        &self,
        repo: &Path,
        env: &LocalEnv,
        ps: &PageServerNode,
        deadline: Duration,
    ) -> anyhow::Result<()> {
        if let Some(pid) = self.running_pid() {
            bail!(
                "endpoint {:?} is already running (compute_ctl pid {pid})",
                self.conf.name
            );
        }
        if self.conf.mode == EndpointMode::Primary {
            self.check_single_primary(repo)?;
        }
        let spec_path = self.dir.join("spec.json");
        let spec = self.spec(&ps.pg_addr)?.to_json();
        utils::crashsafe::durable_write(&spec_path, spec.as_bytes())
            .with_context(|| format!("write {}", spec_path.display()))?;
        let mut child = self.spawn_compute_ctl(env, &spec_path)?;
        std::fs::write(self.pid_path(), format!("{}\n", child.id()))
            .context("write compute_ctl.pid")?;
        let until = Instant::now() + deadline;
        loop {
            if let Some(status) = child.try_wait()? {
                bail!(
                    "compute_ctl exited with {status} during startup; see {}:\n{}",
                    self.log_path().display(),
                    log_tail(&self.log_path())
                );
            }
            if let Ok(v) = self.compute_status() {
                match v.get("status").and_then(|s| s.as_str()) {
                    Some("running") => break,
                    Some("failed") => bail!(
                        "compute failed to start: {}; see {}",
                        v.get("error").map(|e| e.to_string()).unwrap_or_default(),
                        self.log_path().display()
                    ),
                    _ => {}
                }
            }
            if Instant::now() > until {
                bail!(
                    "endpoint {:?} did not start within {deadline:?}; see {}",
                    self.conf.name,
                    self.log_path().display()
                );
            }
            std::thread::sleep(POLL_INTERVAL);
        }
        if self.conf.mode == EndpointMode::Primary {
            let connstr = format!(
                "host=127.0.0.1 port={} user=cloud_admin dbname=postgres",
                self.conf.pg_port
            );
            ps.set_wal_source(
                self.conf.tenant_id,
                self.conf.timeline_id,
                &connstr,
                PAGESERVER_SLOT,
            )
            .context("make the endpoint the WAL source of its timeline")?;
        }
        Ok(())
    }

    fn spawn_compute_ctl(
        &self,
        env: &LocalEnv,
        spec_path: &Path,
    ) -> anyhow::Result<std::process::Child> {
        use std::os::unix::process::CommandExt;
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path())
            .with_context(|| format!("open {}", self.log_path().display()))?;
        let binary = env.neon_distrib_dir.join("compute_ctl");
        Command::new(&binary)
            .arg("--pgdata")
            .arg(self.pgdata())
            .arg("--pg-install")
            .arg(env.pg_distrib_dir.join("v15"))
            .arg("--spec")
            .arg(spec_path)
            .arg("--http-port")
            .arg(self.conf.http_port.to_string())
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .process_group(0)
            .spawn()
            .with_context(|| format!("start {}", binary.display()))
    }

    /// Two running primaries on one timeline would both write WAL: refuse.
    fn check_single_primary(&self, repo: &Path) -> anyhow::Result<()> {
        for other in Self::list(repo)? {
            if other.conf.name != self.conf.name
                && other.conf.mode == EndpointMode::Primary
                && other.conf.tenant_id == self.conf.tenant_id
                && other.conf.timeline_id == self.conf.timeline_id
                && other.running_pid().is_some()
            {
                bail!(
                    "endpoint {:?} already runs a primary on timeline {}",
                    other.conf.name,
                    self.conf.timeline_id
                );
            }
        }
        Ok(())
    }

    /// Stops the compute. For a primary, waits until the pageserver holds its WAL durably,
    /// then detaches the timeline's WAL source. Returns false if it was not running.
    pub fn stop(
        &self,
        env: &LocalEnv,
        ps: &PageServerNode,
        immediate: bool,
        deadline: Duration,
    ) -> anyhow::Result<bool> {
        let Some(pid) = self.running_pid() else {
            self.stop_orphan_postmaster(deadline)?;
            return Ok(false);
        };
        let mode = if immediate { "immediate" } else { "fast" };
        let url = format!(
            "http://127.0.0.1:{}/terminate?mode={mode}",
            self.conf.http_port
        );
        let agent = ureq::AgentBuilder::new().timeout(deadline).build();
        if let Err(e) = agent.post(&url).call() {
            eprintln!("compute_ctl did not answer /terminate ({e}); signalling it");
            signal(pid, nix::sys::signal::Signal::SIGTERM);
        }
        if !wait_until(deadline, || alive(pid)) {
            eprintln!("compute_ctl (pid {pid}) did not exit within {deadline:?}; killing it");
            signal(pid, nix::sys::signal::Signal::SIGKILL);
        }
        self.stop_orphan_postmaster(deadline)?;
        let _ = std::fs::remove_file(self.pid_path());
        if self.conf.mode == EndpointMode::Primary {
            if !immediate {
                self.wait_wal_durable(env, ps)?;
            }
            ps.delete_wal_source(self.conf.tenant_id, self.conf.timeline_id)
                .context("detach the endpoint from its timeline")?;
        }
        Ok(true)
    }

    /// A postmaster left behind by a compute_ctl that died: stop it (fast, then kill).
    fn stop_orphan_postmaster(&self, deadline: Duration) -> anyhow::Result<()> {
        let pidfile = self.pgdata().join("postmaster.pid");
        let Ok(text) = std::fs::read_to_string(&pidfile) else {
            return Ok(());
        };
        let Some(pid) = text
            .lines()
            .next()
            .and_then(|l| l.trim().parse::<i32>().ok())
        else {
            return Ok(());
        };
        if !alive(pid) {
            return Ok(());
        }
        signal(pid, nix::sys::signal::Signal::SIGINT);
        if !wait_until(deadline, || alive(pid)) {
            signal(pid, nix::sys::signal::Signal::SIGKILL);
        }
        Ok(())
    }

    /// After a clean shutdown pg_control names the shutdown checkpoint: wait until the
    /// pageserver has it on disk.
    fn wait_wal_durable(&self, env: &LocalEnv, ps: &PageServerNode) -> anyhow::Result<()> {
        let checkpoint = shutdown_checkpoint_lsn(&env.pg_bin_dir(), &self.pgdata())?;
        let until = Instant::now() + WAL_DURABLE_DEADLINE;
        loop {
            let info = ps.timeline_info(self.conf.tenant_id, self.conf.timeline_id)?;
            if info.disk_consistent_lsn > checkpoint {
                return Ok(());
            }
            if Instant::now() > until {
                bail!(
                    "the pageserver holds the WAL of endpoint {:?} durably only up to {} \
                     (shutdown checkpoint at {checkpoint}, last received {}): the rest is \
                     only in {}",
                    self.conf.name,
                    info.disk_consistent_lsn,
                    info.last_record_lsn,
                    self.pgdata().join("pg_wal").display()
                );
            }
            std::thread::sleep(POLL_INTERVAL);
        }
    }

    /// Removes the endpoint's directory (it must be stopped).
    pub fn destroy(self) -> anyhow::Result<()> {
        if self.running_pid().is_some() {
            bail!("endpoint {:?} is running: stop it first", self.conf.name);
        }
        std::fs::remove_dir_all(&self.dir)
            .with_context(|| format!("remove {}", self.dir.display()))?;
        if let Some(parent) = self.dir.parent() {
            utils::crashsafe::fsync_dir(parent)
                .with_context(|| format!("fsync {}", parent.display()))?;
        }
        Ok(())
    }
}

/// Whether `pid` runs. A zombie counts as gone: compute_ctl outlives the neon_local that
/// spawned it, so whoever inherits it (init, a subreaper like the test harness) may reap it late.
fn alive(pid: i32) -> bool {
    utils::pidfile::process_alive(nix::unistd::Pid::from_raw(pid)) && !is_zombie(pid)
}

/// `/proc/<pid>/stat` says state `Z` (the state follows the parenthesised command name).
fn is_zombie(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|stat| {
            let rest = &stat[stat.rfind(')')? + 1..];
            rest.split_whitespace().next().map(|state| state == "Z")
        })
        .unwrap_or(false)
}

fn signal(pid: i32, sig: nix::sys::signal::Signal) {
    let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), sig);
}

/// Polls until `alive()` turns false; returns whether it did within `deadline`.
fn wait_until(deadline: Duration, alive: impl Fn() -> bool) -> bool {
    let until = Instant::now() + deadline;
    while alive() {
        if Instant::now() > until {
            return false;
        }
        std::thread::sleep(POLL_INTERVAL);
    }
    true
}

/// "Latest checkpoint location" of a cleanly shut down data directory, from pg_controldata.
fn shutdown_checkpoint_lsn(pg_bin: &Path, pgdata: &Path) -> anyhow::Result<Lsn> {
    let out = Command::new(pg_bin.join("pg_controldata"))
        .arg(pgdata)
        .env("LC_ALL", "C")
        .output()
        .context("run pg_controldata")?;
    if !out.status.success() {
        bail!(
            "pg_controldata failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    let text = String::from_utf8_lossy(&out.stdout);
    parse_controldata_field(&text, "Latest checkpoint location")
}

fn parse_controldata_field(text: &str, field: &str) -> anyhow::Result<Lsn> {
    let line = text
        .lines()
        .find(|l| l.starts_with(&format!("{field}:")))
        .with_context(|| format!("pg_controldata printed no {field:?}"))?;
    let value = line.split_once(':').map(|x| x.1.trim()).unwrap_or_default();
    value
        .parse()
        .map_err(|e| anyhow::anyhow!("parse {field} {value:?}: {e:?}"))
}

/// The last lines of a log, for error messages.
fn log_tail(path: &Path) -> String {
    const TAIL_LINES: usize = 20;
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(TAIL_LINES)..].join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        for good in ["main", "ep-1", "a_b", "X9"] {
            check_name(good).unwrap();
        }
        for bad in ["", "-x", "a/b", "..", "a b", &"x".repeat(65)] {
            assert!(check_name(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn ports_skip_taken_pairs() {
        let first = 41000;
        let (pg, http) = pick_ports(&[first, first + 1 + HTTP_PORT_OFFSET], first).unwrap();
        assert!(pg >= first + 2, "{pg}");
        assert_eq!(http, pg + HTTP_PORT_OFFSET);
    }

    #[test]
    fn zombies_are_not_alive() {
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let pid = child.id() as i32;
        let deadline = Instant::now() + Duration::from_secs(10);
        while !is_zombie(pid) {
            assert!(Instant::now() < deadline, "child never became a zombie");
            std::thread::sleep(Duration::from_millis(5));
        }
        assert!(!alive(pid));
        child.wait().unwrap();
        assert!(alive(std::process::id() as i32));
    }

    #[test]
    fn controldata_parsing() {
        let text = "pg_control version number:            1300\n\
                    Latest checkpoint location:           0/16B5BA8\n\
                    Latest checkpoint's REDO location:    0/16B5B70\n";
        let lsn = parse_controldata_field(text, "Latest checkpoint location").unwrap();
        assert_eq!(lsn, Lsn(0x16B5BA8));
        assert!(parse_controldata_field(text, "Nope").is_err());
    }

    #[test]
    fn conf_roundtrip() {
        let conf = EndpointConf {
            name: "main".into(),
            tenant_id: TenantId::generate(),
            timeline_id: TimelineId::generate(),
            branch_name: "main".into(),
            mode: EndpointMode::Static(Lsn(0x1234)),
            pg_port: 55432,
            http_port: 56432,
            settings: vec![("shared_buffers".into(), "1MB".into())],
        };
        let text = serde_json::to_string(&conf).unwrap();
        assert_eq!(serde_json::from_str::<EndpointConf>(&text).unwrap(), conf);
    }
}

//! compute_ctl against a real pageserver (target/debug/pageserver) and our PostgreSQL
//! (pg_install/v15): fetch, configuration, start as `postgres`, roles/databases/slot applied,
//! `/status`, `/metrics`, `/configure`, `/terminate`, supervision of a killed postmaster,
//! SIGTERM, and a static (read-only) compute.
//!
//! The `neon` extension is not needed: the test asks for a `fullbackup` (hidden
//! `--fullbackup` flag) so the compute has every relation locally, and overrides
//! `shared_preload_libraries` through a spec setting. Skipped (with a message) when the
//! pageserver binary, the PostgreSQL build or root privileges are missing.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

const DEADLINE: Duration = Duration::from_secs(120);
const POLL: Duration = Duration::from_millis(50);

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn pageserver_bin() -> PathBuf {
    Path::new(env!("CARGO_BIN_EXE_compute_ctl"))
        .parent()
        .unwrap()
        .join("pageserver")
}

fn pg_install() -> PathBuf {
    repo_root().join("pg_install/v15")
}

/// Polls `cond` until it returns `Some` or the deadline passes.
fn wait_for<T>(what: &str, mut cond: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + DEADLINE;
    loop {
        if let Some(v) = cond() {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(POLL);
    }
}

fn http(method: &str, url: &str, body: Option<&Value>) -> (u16, Value) {
    let req = ureq::request(method, url).timeout(DEADLINE);
    let res = match body {
        Some(b) => req.send_json(b.clone()),
        None => req.call(),
    };
    let resp = match res {
        Ok(r) => r,
        Err(ureq::Error::Status(_, r)) => r,
        Err(e) => panic!("{method} {url}: {e}"),
    };
    let code = resp.status();
    let text = resp.into_string().unwrap();
    (
        code,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    )
}

/// A pageserver in its own workdir; killed on drop.
struct Pageserver {
    http: u16,
    pg: u16,
    child: Child,
}

impl Pageserver {
    fn start(workdir: &Path) -> Pageserver {
        let (http, pg) = (free_port(), free_port());
        let out = Command::new(pageserver_bin())
            .arg("--workdir")
            .arg(workdir)
            .arg("--init")
            .args(["-c", &format!("listen_http_addr=127.0.0.1:{http}")])
            .args(["-c", &format!("listen_pg_addr=127.0.0.1:{pg}")])
            .args([
                "-c",
                &format!(
                    "pg_distrib_dir={}",
                    repo_root().join("pg_install").display()
                ),
            ])
            .args(["-c", "id=1"])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let log = std::fs::File::create(workdir.join("pageserver.out")).unwrap();
        let child = Command::new(pageserver_bin())
            .arg("--workdir")
            .arg(workdir)
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap();
        let ps = Pageserver { http, pg, child };
        wait_for("the pageserver", || {
            ureq::get(&ps.url("/v1/status")).call().ok().map(|_| ())
        });
        ps
    }

    fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.http)
    }

    /// A tenant whose `main` timeline is bootstrapped by initdb, and a branch of it at its
    /// end; returns (tenant, main, branch, main's last LSN).
    ///
    /// The primary runs on the branch: a basebackup of a freshly bootstrapped timeline says
    /// "PREV LSN: invalid" (the pageserver does not know initdb's last record), which only
    /// allows a read-only start, while a branch start point says "PREV LSN: none".
    fn tenant_with_timelines(&self) -> (String, String, String, String) {
        let tenant = "11112222333344445555666677778888".to_string();
        let main = "aaaabbbbccccddddeeeeffff00001111".to_string();
        let branch = "bbbbccccddddeeeeffff000011112222".to_string();
        let (code, body) = http(
            "POST",
            &self.url("/v1/tenant"),
            Some(&json!({"new_tenant_id": tenant})),
        );
        assert_eq!(code, 201, "{body}");
        let create = self.url(&format!("/v1/tenant/{tenant}/timeline"));
        let (code, info) = http("POST", &create, Some(&json!({"new_timeline_id": main})));
        assert_eq!(code, 201, "{info}");
        let (code, b) = http(
            "POST",
            &create,
            Some(&json!({"new_timeline_id": branch, "ancestor_timeline_id": main})),
        );
        assert_eq!(code, 201, "{b}");
        let lsn = info["last_record_lsn"].as_str().unwrap().to_string();
        (tenant, main, branch, lsn)
    }
}

impl Drop for Pageserver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One compute_ctl process; killed on drop if still running.
struct ComputeCtl {
    child: Child,
    http: u16,
    pg_port: u16,
    pgdata: PathBuf,
    log: PathBuf,
}

impl ComputeCtl {
    fn start(dir: &Path, name: &str, spec: &Value) -> ComputeCtl {
        let spec_path = dir.join(format!("{name}.json"));
        std::fs::write(&spec_path, serde_json::to_string_pretty(spec).unwrap()).unwrap();
        let http = free_port();
        let pgdata = dir.join(name).join("pgdata");
        let log = dir.join(format!("{name}.log"));
        let out = std::fs::File::create(&log).unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_compute_ctl"))
            .arg("--pgdata")
            .arg(&pgdata)
            .arg("--pg-install")
            .arg(pg_install())
            .arg("--spec")
            .arg(&spec_path)
            .args(["--http-port", &http.to_string(), "--fullbackup"])
            .stdin(Stdio::null())
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .spawn()
            .unwrap();
        ComputeCtl {
            child,
            http,
            pg_port: spec["pg_port"].as_u64().unwrap() as u16,
            pgdata,
            log,
        }
    }

    fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.http)
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn status(&self) -> Option<Value> {
        let resp = ureq::get(&self.url("/status")).call().ok()?;
        resp.into_json().ok()
    }

    /// Waits for a status in `want` (panics on `failed` unless it is wanted).
    fn wait_status(&self, want: &[&str]) -> Value {
        wait_for(&format!("status {want:?}"), || {
            let s = self.status()?;
            let st = s["status"].as_str().unwrap_or("").to_string();
            if !want.contains(&st.as_str()) {
                assert_ne!(st, "failed", "{s}\n{}", self.log_text());
            }
            want.contains(&st.as_str()).then_some(s)
        })
    }

    fn psql(&self, db: &str, sql: &str) -> Result<String, String> {
        let out = Command::new(pg_install().join("bin/psql"))
            .args(["-X", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-h", "127.0.0.1"])
            .args([
                "-p",
                &self.pg_port.to_string(),
                "-U",
                "cloud_admin",
                "-d",
                db,
                "-c",
                sql,
            ])
            .output()
            .unwrap();
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
        } else {
            Err(String::from_utf8_lossy(&out.stderr).to_string())
        }
    }

    fn wait_exit(&mut self) -> std::process::ExitStatus {
        wait_for("compute_ctl to exit", || self.child.try_wait().unwrap())
    }
}

impl Drop for ComputeCtl {
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            let pid = nix::unistd::Pid::from_raw(self.child.id() as i32);
            let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
            let deadline = Instant::now() + DEADLINE;
            while self.child.try_wait().ok().flatten().is_none() && Instant::now() < deadline {
                std::thread::sleep(POLL);
            }
            let _ = self.child.kill();
        }
    }
}

fn spec(tenant: &str, timeline: &str, ps_pg: u16, pg_port: u16, mode: Value) -> Value {
    json!({
        "format_version": 1,
        "tenant_id": tenant,
        "timeline_id": timeline,
        "mode": mode,
        "pageserver_connstring": format!("host=127.0.0.1 port={ps_pg}"),
        "pg_port": pg_port,
        "cluster": {
            "roles": [{"name": "alice", "password": "wonder'land"}, {"name": "bob", "password": null}],
            "databases": [{"name": "app", "owner": "alice"}],
            "settings": [{"name": "shared_preload_libraries", "value": ""}]
        }
    })
}

fn prerequisites() -> bool {
    let mut missing = Vec::new();
    if !pageserver_bin().is_file() {
        missing.push("target/debug/pageserver (cargo build -p pageserver)".to_string());
    }
    if !pg_install().join("bin/postgres").is_file() {
        missing.push("pg_install/v15 (make postgres)".to_string());
    }
    if !nix::unistd::Uid::effective().is_root() {
        missing.push("root privileges (to run PostgreSQL as `postgres`)".to_string());
    }
    if !missing.is_empty() {
        eprintln!("skipping the compute_ctl integration test: missing {missing:?}");
    }
    missing.is_empty()
}

#[test]
fn compute_lifecycle_against_a_pageserver() {
    if !prerequisites() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    // PostgreSQL runs as `postgres` and must reach the data directories below.
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let ps_dir = dir.path().join("ps");
    std::fs::create_dir(&ps_dir).unwrap();
    let ps = Pageserver::start(&ps_dir);
    let (tenant, main, timeline, lsn) = ps.tenant_with_timelines();

    // Primary: start, inspect, configure, terminate.
    let pg_port = free_port();
    let primary_spec = spec(&tenant, &timeline, ps.pg, pg_port, json!("primary"));
    let mut cc = ComputeCtl::start(dir.path(), "primary", &primary_spec);
    let st = cc.wait_status(&["running"]);
    eprintln!("primary compute: {st}");
    assert_eq!(st["mode"], "primary");
    assert_eq!(st["pg_port"], pg_port);
    assert!(st["start_time_ms"].as_u64().unwrap() > 0, "{st}");
    assert!(st["basebackup_lsn"].as_str().is_some(), "{st}");
    assert!(st["postmaster_pid"].as_i64().is_some(), "{st}");
    let (code, metrics) = http("GET", &cc.url("/metrics"), None);
    assert_eq!(code, 200);
    let metrics = metrics.as_str().unwrap().to_string();
    assert!(
        metrics.contains("compute_ctl_status{status=\"running\"} 1"),
        "{metrics}"
    );
    assert!(metrics.contains("compute_ctl_postgres_up 1"), "{metrics}");
    assert!(
        !metrics.contains("compute_ctl_basebackup_bytes 0\n"),
        "{metrics}"
    );

    let q = |sql: &str| cc.psql("postgres", sql).unwrap();
    assert_eq!(
        q("SELECT rolname FROM pg_roles WHERE rolname IN ('alice','bob') ORDER BY 1"),
        "alice\nbob"
    );
    assert_eq!(
        q("SELECT rolcanlogin FROM pg_roles WHERE rolname = 'alice'"),
        "t"
    );
    assert_eq!(
        q("SELECT pg_get_userbyid(datdba) FROM pg_database WHERE datname = 'app'"),
        "alice"
    );
    assert_eq!(
        q("SELECT slot_type, restart_lsn IS NOT NULL FROM pg_replication_slots WHERE slot_name = 'pageserver'"),
        "physical|t"
    );
    assert_eq!(q("SHOW shared_preload_libraries"), "");
    assert_eq!(q("SHOW port"), pg_port.to_string());
    assert_eq!(q("SHOW wal_level"), "replica");
    assert_eq!(q("SELECT pg_is_in_recovery()"), "f");
    assert_eq!(
        q("SELECT usename FROM pg_stat_activity WHERE pid = pg_backend_pid()"),
        "cloud_admin"
    );
    // The server runs as `postgres`, and the data directory belongs to it.
    use std::os::unix::fs::MetadataExt;
    let postgres_uid = nix::unistd::User::from_name("postgres")
        .unwrap()
        .unwrap()
        .uid
        .as_raw();
    assert_eq!(std::fs::metadata(&cc.pgdata).unwrap().uid(), postgres_uid);
    let pid = st["postmaster_pid"].as_i64().unwrap();
    let proc_meta = std::fs::metadata(format!("/proc/{pid}")).unwrap();
    assert_eq!(proc_meta.uid(), postgres_uid);
    cc.psql("app", "CREATE TABLE t(x int); INSERT INTO t VALUES (1)")
        .unwrap();

    // /configure: a new role, database and settings; one setting needs a restart.
    let mut new_spec = primary_spec.clone();
    new_spec["cluster"]["roles"]
        .as_array_mut()
        .unwrap()
        .push(json!({"name": "carol"}));
    new_spec["cluster"]["databases"]
        .as_array_mut()
        .unwrap()
        .push(json!({"name": "carols db", "owner": "carol"}));
    new_spec["cluster"]["settings"]
        .as_array_mut()
        .unwrap()
        .extend([
            json!({"name": "work_mem", "value": "7MB"}),
            json!({"name": "max_connections", "value": "42"}),
        ]);
    let (code, r) = http("POST", &cc.url("/configure"), Some(&new_spec));
    assert_eq!(code, 200, "{r}");
    assert_eq!(r["status"], "running");
    assert_eq!(r["pending_restart"], json!(["max_connections"]), "{r}");
    assert_eq!(q("SHOW work_mem"), "7MB");
    assert_eq!(
        q("SELECT pg_get_userbyid(datdba) FROM pg_database WHERE datname = 'carols db'"),
        "carol"
    );
    // Applying the same spec again changes nothing and succeeds.
    let (code, r) = http("POST", &cc.url("/configure"), Some(&new_spec));
    assert_eq!(code, 200, "{r}");
    // Refused: another timeline, and a malformed spec.
    let mut other = new_spec.clone();
    other["timeline_id"] = json!(tenant);
    let (code, r) = http("POST", &cc.url("/configure"), Some(&other));
    assert_eq!(code, 400, "{r}");
    assert!(r["error"].as_str().unwrap().contains("timeline_id"), "{r}");
    let (code, r) = http(
        "POST",
        &cc.url("/configure"),
        Some(&json!({"format_version": 1})),
    );
    assert_eq!(code, 400, "{r}");
    let (code, _) = http("POST", &cc.url("/terminate?mode=smart"), None);
    assert_eq!(code, 400);

    let (code, r) = http("POST", &cc.url("/terminate"), None);
    assert_eq!(code, 200, "{r}");
    assert_eq!(r["status"], "terminated", "{r}");
    assert_eq!(r["error"], Value::Null, "{r}");
    assert!(cc.wait_exit().success(), "{}", cc.log_text());
    assert!(!cc.pgdata.join("postmaster.pid").exists());
    assert!(cc.psql("postgres", "SELECT 1").is_err());
    drop(cc);

    // Supervision: a killed postmaster makes the status `failed`; SIGTERM still ends us.
    let pg_port2 = free_port();
    let mut cc = ComputeCtl::start(
        dir.path(),
        "primary2",
        &spec(&tenant, &timeline, ps.pg, pg_port2, json!("primary")),
    );
    let st = cc.wait_status(&["running"]);
    let pid = nix::unistd::Pid::from_raw(st["postmaster_pid"].as_i64().unwrap() as i32);
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL).unwrap();
    let st = cc.wait_status(&["failed"]);
    let err = st["error"].as_str().unwrap();
    assert!(err.contains("exited unexpectedly"), "{st}");
    assert!(err.contains("SIGKILL") || err.contains("signal: 9"), "{st}");
    let (_, metrics) = http("GET", &cc.url("/metrics"), None);
    assert!(metrics
        .as_str()
        .unwrap()
        .contains("compute_ctl_postgres_up 0"));
    let me = nix::unistd::Pid::from_raw(cc.child.id() as i32);
    nix::sys::signal::kill(me, nix::sys::signal::Signal::SIGTERM).unwrap();
    assert!(cc.wait_exit().success(), "{}", cc.log_text());
    drop(cc);

    // Static compute at the timeline's LSN: read-only hot standby.
    let pg_port3 = free_port();
    let static_spec = spec(&tenant, &main, ps.pg, pg_port3, json!({"static": lsn}));
    let mut cc = ComputeCtl::start(dir.path(), "static", &static_spec);
    let st = cc.wait_status(&["running"]);
    assert_eq!(st["mode"], "static");
    assert!(cc.pgdata.join("standby.signal").exists());
    assert_eq!(
        cc.psql("postgres", "SELECT pg_is_in_recovery()").unwrap(),
        "t"
    );
    assert_eq!(cc.psql("postgres", "SHOW hot_standby").unwrap(), "on");
    let err = cc.psql("postgres", "CREATE TABLE nope(x int)").unwrap_err();
    assert!(err.contains("read-only"), "{err}");
    let (code, r) = http("POST", &cc.url("/terminate?mode=immediate"), None);
    assert_eq!(code, 200, "{r}");
    assert_eq!(r["status"], "terminated");
    assert!(cc.wait_exit().success(), "{}", cc.log_text());
}

#[test]
fn bad_spec_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let spec_path = dir.path().join("spec.json");
    std::fs::write(&spec_path, r#"{"format_version": 2}"#).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_compute_ctl"))
        .arg("--pgdata")
        .arg(dir.path().join("pgdata"))
        .arg("--pg-install")
        .arg(pg_install())
        .arg("--spec")
        .arg(&spec_path)
        .args(["--http-port", &free_port().to_string()])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("spec.json"), "{err}");
    assert!(err.contains("missing field"), "{err}");
    assert!(!dir.path().join("pgdata").exists());
}

#[test]
fn terminate_during_startup_stops_the_fetch() {
    if !pg_install().join("bin/postgres").is_file() || !nix::unistd::Uid::effective().is_root() {
        eprintln!("skipping: needs pg_install/v15 and root");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    // Nothing listens there: every attempt is refused and retried with backoff.
    let dead = free_port();
    let tenant = "11112222333344445555666677778888";
    let mut cc = ComputeCtl::start(
        dir.path(),
        "nowhere",
        &spec(tenant, tenant, dead, free_port(), json!("primary")),
    );
    let st = cc.wait_status(&["init"]);
    assert_eq!(st["start_time_ms"], Value::Null);
    let same = spec(tenant, tenant, dead, cc.pg_port, json!("primary"));
    let (code, r) = http("POST", &cc.url("/configure"), Some(&same));
    assert_eq!(code, 409, "{r}");
    assert!(r["error"].as_str().unwrap().contains("not running"), "{r}");
    wait_for("a second basebackup attempt", || {
        let (_, m) = http("GET", &cc.url("/metrics"), None);
        let m = m.as_str()?.to_string();
        (!m.contains("compute_ctl_basebackup_attempts 0\n")
            && !m.contains("compute_ctl_basebackup_attempts 1\n"))
        .then_some(())
    });
    let (code, r) = http("POST", &cc.url("/terminate"), None);
    assert_eq!(code, 200, "{r}");
    assert_eq!(r["status"], "terminated", "{r}");
    assert_eq!(r["postmaster_pid"], Value::Null, "{r}");
    assert!(cc.wait_exit().success(), "{}", cc.log_text());
    assert!(!cc.pgdata.join("postmaster.pid").exists());
}

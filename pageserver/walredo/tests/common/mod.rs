//! Helpers for the tests that run real processes: where our PostgreSQL build is, and a
//! throw-away PostgreSQL cluster run as user `postgres` when the tests run as root.
#![allow(dead_code)]

pub mod mask;
pub mod wal;

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// Root of our PostgreSQL install: `$POSTGRES_DISTRIB_DIR`, else the checkout's pg_install.
pub fn pg_install_dir() -> PathBuf {
    let dir = std::env::var_os("POSTGRES_DISTRIB_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../../pg_install"));
    let postgres = dir.join("v15/bin/postgres");
    let library = dir.join("v15/lib/postgresql/neon_walredo.so");
    // loaded by the wal-redo process (and by clusters that write neon_cid records)
    let rmgr = dir.join("v15/lib/postgresql/neon_rmgr.so");
    for file in [&postgres, &library, &rmgr] {
        assert!(
            file.is_file(),
            "{} is missing: build PostgreSQL with `make postgres` (or set POSTGRES_DISTRIB_DIR)",
            file.display()
        );
    }
    dir
}

pub fn running_as_root() -> bool {
    nix::unistd::Uid::effective().is_root()
}

pub fn run_ok(cmd: &mut Command) -> Output {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}\nstdout: {}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// Gives `path` (recursively) to user postgres when we are root.
pub fn hand_to_postgres(path: &Path) {
    fs::set_permissions(path, fs::Permissions::from_mode(0o755)).unwrap();
    if running_as_root() {
        run_ok(
            Command::new("chown")
                .args(["-R", "postgres:postgres"])
                .arg(path),
        );
    }
}

/// A PostgreSQL cluster of our build in a temporary directory, reachable only through a
/// unix socket in that directory. Dropping it stops the server if it still runs.
pub struct TestCluster {
    dir: tempfile::TempDir,
    bin: PathBuf,
    running: bool,
}

const PORT: &str = "5432";

impl TestCluster {
    /// initdb with `extra_initdb_args`.
    pub fn init(extra_initdb_args: &[&str]) -> TestCluster {
        let bin = pg_install_dir().join("v15/bin");
        let dir = tempfile::Builder::new()
            .prefix("walredo-test-")
            .tempdir()
            .unwrap();
        hand_to_postgres(dir.path());
        let cluster = TestCluster {
            dir,
            bin,
            running: false,
        };
        run_ok(
            cluster
                .command("initdb")
                .args(["--no-sync", "-A", "trust", "-U", "postgres", "-D"])
                .arg(cluster.data_dir())
                .args(extra_initdb_args),
        );
        cluster
    }

    /// `tool` of our build, run as user postgres when we are root.
    pub fn command(&self, tool: &str) -> Command {
        let path = self.bin.join(tool);
        let mut cmd = if running_as_root() {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(path);
            c
        } else {
            Command::new(path)
        };
        cmd.env("LC_ALL", "C");
        cmd
    }

    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// Starts the server with `settings` (name=value) on top of test defaults.
    pub fn start(&mut self, settings: &[&str]) {
        let mut opts = format!(
            "-p {PORT} -k {} -c listen_addresses= -c fsync=off -c autovacuum=off \
             -c wal_keep_size=1024 -c max_wal_size=1024",
            self.dir.path().display()
        );
        for s in settings {
            opts.push_str(" -c ");
            opts.push_str(s);
        }
        let log = self.dir.path().join("server.log");
        run_ok(
            self.command("pg_ctl")
                .args(["-w", "-t", "60", "-D"])
                .arg(self.data_dir())
                .arg("-l")
                .arg(log)
                .args(["-o", &opts, "start"]),
        );
        self.running = true;
    }

    /// Runs `sql` with psql (stopping at the first error); returns its unaligned output.
    pub fn psql(&self, sql: &str) -> String {
        let file = self.dir.path().join("script.sql");
        fs::write(&file, sql).unwrap();
        fs::set_permissions(&file, fs::Permissions::from_mode(0o644)).unwrap();
        let out = run_ok(
            self.command("psql")
                .args(["-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1"])
                .args(["-U", "postgres", "-d", "postgres", "-p", PORT, "-h"])
                .arg(self.dir.path())
                .arg("-f")
                .arg(&file),
        );
        String::from_utf8(out.stdout).unwrap()
    }

    /// Stops the server (fast mode: a shutdown checkpoint writes every page).
    pub fn stop(&mut self) {
        if self.running {
            self.running = false;
            run_ok(
                self.command("pg_ctl")
                    .args(["-w", "-m", "fast", "-D"])
                    .arg(self.data_dir())
                    .arg("stop"),
            );
        }
    }
}

impl Drop for TestCluster {
    fn drop(&mut self) {
        if self.running {
            let _ = self
                .command("pg_ctl")
                .args(["-w", "-m", "immediate", "-D"])
                .arg(self.data_dir())
                .arg("stop")
                .output();
        }
    }
}

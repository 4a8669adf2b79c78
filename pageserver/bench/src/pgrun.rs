//! Running a stock PostgreSQL (as the `postgres` OS user when we are root) to generate WAL:
//! a server on a Unix socket only, with settings that keep every WAL segment, driven by
//! pgbench until the WAL reaches a target size.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};
use pageserver::tenant::bootstrap::{INITDB_SUPERUSER, POSTGRES_OS_USER};

/// Port number of the socket file (no TCP listener is opened).
const PORT: &str = "5432";
/// Transactions per pgbench round while generating WAL.
const TXNS_PER_ROUND: u32 = 5000;
/// Most pgbench rounds (bounds the run if the WAL grows slower than expected).
const MAX_ROUNDS: u32 = 1000;
/// Roughly how many bytes of WAL `pgbench -i` writes per unit of scale.
const INIT_WAL_BYTES_PER_SCALE: u64 = 20_000_000;
/// Seconds pg_ctl waits for start and stop.
const PG_CTL_TIMEOUT_SECS: &str = "120";

/// A directory the `postgres` user owns, for a data directory, its log and socket.
pub struct PgDir {
    path: PathBuf,
}

impl PgDir {
    /// Creates `parent/pg` (and opens `parent` for traversal by other users).
    pub fn new(parent: &Path) -> Result<PgDir> {
        std::fs::set_permissions(parent, std::fs::Permissions::from_mode(0o711))?;
        let path = parent.join("pg");
        std::fs::create_dir(&path)?;
        if nix::unistd::geteuid().is_root() {
            let user = nix::unistd::User::from_name(POSTGRES_OS_USER)?
                .with_context(|| format!("no OS user {POSTGRES_OS_USER}"))?;
            nix::unistd::chown(&path, Some(user.uid), Some(user.gid))?;
        }
        Ok(PgDir { path })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// A PostgreSQL program, run as the `postgres` user when we are root.
fn pg_command(bin_dir: &Path, program: &str) -> Command {
    let exe = bin_dir.join(program);
    if nix::unistd::geteuid().is_root() {
        let mut c = Command::new("runuser");
        c.args(["-u", POSTGRES_OS_USER, "--"]).arg(exe);
        c
    } else {
        Command::new(exe)
    }
}

/// Runs a command to completion; its stdout, or an error with its stderr.
fn run(mut cmd: Command, what: &str) -> Result<String> {
    let out = cmd.output().with_context(|| format!("running {what}"))?;
    if !out.status.success() {
        bail!(
            "{what} failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// A running server; stopped immediately when dropped without [`Postgres::stop`].
pub struct Postgres {
    bin_dir: PathBuf,
    pgdata: PathBuf,
    socket_dir: PathBuf,
    running: bool,
}

impl Postgres {
    /// Starts a server on `pgdata`, listening on a socket in `socket_dir` only.
    pub fn start(bin_dir: &Path, pgdata: &Path, socket_dir: &Path) -> Result<Postgres> {
        let opts = format!(
            "-c listen_addresses='' -c port={PORT} -c unix_socket_directories={} \
             -c wal_keep_size=1TB -c max_wal_size=1TB -c checkpoint_timeout=1d \
             -c fsync=off -c synchronous_commit=off",
            socket_dir.display()
        );
        let mut cmd = pg_command(bin_dir, "pg_ctl");
        cmd.arg("-D")
            .arg(pgdata)
            .arg("-l")
            .arg(socket_dir.join("postgres.log"))
            .args(["-w", "-t", PG_CTL_TIMEOUT_SECS, "-o", &opts, "start"]);
        run(cmd, "pg_ctl start")?;
        Ok(Postgres {
            bin_dir: bin_dir.to_path_buf(),
            pgdata: pgdata.to_path_buf(),
            socket_dir: socket_dir.to_path_buf(),
            running: true,
        })
    }

    fn client(&self, program: &str) -> Command {
        let mut c = pg_command(&self.bin_dir, program);
        c.env("PGHOST", &self.socket_dir)
            .env("PGPORT", PORT)
            .env("PGUSER", INITDB_SUPERUSER)
            .env("PGDATABASE", "postgres");
        c
    }

    /// The current WAL insert position, in bytes.
    fn wal_position(&self) -> Result<u64> {
        let mut c = self.client("psql");
        c.args(["-XAtc", "select pg_current_wal_insert_lsn() - '0/0'"]);
        let out = run(c, "psql")?;
        let text = out.trim();
        let int = text.split('.').next().unwrap_or(text);
        int.parse()
            .with_context(|| format!("bad WAL position {text:?}"))
    }

    /// Runs `pgbench -i`, then pgbench rounds until at least `target_bytes` of WAL were
    /// written; returns the bytes written.
    pub fn generate_wal(&self, target_bytes: u64) -> Result<u64> {
        let start = self.wal_position()?;
        let scale = (target_bytes / 2 / INIT_WAL_BYTES_PER_SCALE).max(1);
        let mut init = self.client("pgbench");
        init.args(["-i", "-q", "-s", &scale.to_string()]);
        run(init, "pgbench -i")?;
        for _ in 0..MAX_ROUNDS {
            let written = self.wal_position()?.saturating_sub(start);
            if written >= target_bytes {
                return Ok(written);
            }
            let mut round = self.client("pgbench");
            round.args(["-n", "-M", "prepared", "-c", "2", "-j", "2", "-t"]);
            round.arg(TXNS_PER_ROUND.to_string());
            run(round, "pgbench")?;
        }
        bail!("WAL did not reach {target_bytes} bytes in {MAX_ROUNDS} pgbench rounds")
    }

    /// Shuts the server down cleanly (a shutdown checkpoint ends the WAL).
    pub fn stop(mut self) -> Result<()> {
        self.running = false;
        self.pg_ctl_stop("fast")
    }

    fn pg_ctl_stop(&self, mode: &str) -> Result<()> {
        let mut cmd = pg_command(&self.bin_dir, "pg_ctl");
        cmd.arg("-D")
            .arg(&self.pgdata)
            .args(["-w", "-t", PG_CTL_TIMEOUT_SECS, "-m", mode, "stop"]);
        run(cmd, "pg_ctl stop").map(|_| ())
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        if self.running {
            if let Err(e) = self.pg_ctl_stop("immediate") {
                eprintln!("cannot stop PostgreSQL: {e:#}");
            }
        }
    }
}

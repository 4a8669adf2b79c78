//! Bootstrapping a new cluster: run `initdb` (as the `postgres` user when we are root) into a
//! temporary directory and import it into a timeline at the LSN of its checkpoint.

use std::path::{Path, PathBuf};
use std::process::Command;

use postgres_ffi::controlfile::ControlFileData;
use utils::lsn::Lsn;

/// The superuser initdb creates (as in Neon).
pub const INITDB_SUPERUSER: &str = "cloud_admin";
/// Unprivileged user PostgreSQL runs as when we are root.
pub const POSTGRES_OS_USER: &str = "postgres";
/// Bound on the initdb output kept for error messages.
const MAX_INITDB_OUTPUT_BYTES: usize = 4096;

/// Why initdb could not produce a data directory.
#[derive(Debug, thiserror::Error)]
pub enum InitdbError {
    #[error("cannot prepare {path}: {message}")]
    Prepare { path: PathBuf, message: String },
    #[error("cannot run {program}: {source}")]
    Spawn {
        program: String,
        #[source]
        source: std::io::Error,
    },
    #[error("initdb failed ({status}): {output}")]
    Failed { status: String, output: String },
    #[error("cannot read pg_control of the new cluster: {0}")]
    Control(String),
}

/// Runs initdb into `pgdata` (which must not exist; its parent must) with the binaries in
/// `bin_dir` and libraries in `lib_dir`. Returns the LSN to import at: the checkpoint's,
/// aligned up to 8 bytes.
pub fn run_initdb(bin_dir: &Path, lib_dir: &Path, pgdata: &Path) -> Result<Lsn, InitdbError> {
    let prep = |message: String| InitdbError::Prepare {
        path: pgdata.to_path_buf(),
        message,
    };
    std::fs::create_dir(pgdata).map_err(|e| prep(e.to_string()))?;
    let initdb = bin_dir.join("initdb");
    let as_root = nix::unistd::geteuid().is_root();
    let mut cmd = if as_root {
        let user = nix::unistd::User::from_name(POSTGRES_OS_USER)
            .map_err(|e| prep(e.to_string()))?
            .ok_or_else(|| prep(format!("no OS user {POSTGRES_OS_USER:?}")))?;
        nix::unistd::chown(pgdata, Some(user.uid), Some(user.gid))
            .map_err(|e| prep(e.to_string()))?;
        let mut c = Command::new("runuser");
        c.args(["-u", POSTGRES_OS_USER, "--"]).arg(&initdb);
        c
    } else {
        Command::new(&initdb)
    };
    cmd.arg("-D")
        .arg(pgdata)
        .args(["-U", INITDB_SUPERUSER, "--no-instructions", "--no-sync"])
        .env("LD_LIBRARY_PATH", lib_dir)
        .env_remove("PGDATA")
        .current_dir(pgdata);
    let out = cmd.output().map_err(|source| InitdbError::Spawn {
        program: initdb.display().to_string(),
        source,
    })?;
    if !out.status.success() {
        let mut text = String::from_utf8_lossy(&out.stderr).into_owned();
        text.truncate(text.floor_char_boundary(MAX_INITDB_OUTPUT_BYTES));
        return Err(InitdbError::Failed {
            status: out.status.to_string(),
            output: text,
        });
    }
    let bytes = std::fs::read(pgdata.join("global/pg_control"))
        .map_err(|e| InitdbError::Control(e.to_string()))?;
    let control =
        ControlFileData::decode(&bytes).map_err(|e| InitdbError::Control(e.to_string()))?;
    Ok(control.checkpoint.align_up(8))
}

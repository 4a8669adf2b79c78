//! Running the stock PostgreSQL 15 (initdb, a server, psql) for the data-directory tests, and
//! reading what it leaves on disk. Binaries come from `PG15_BIN_DIR` or
//! /usr/lib/postgresql/15/bin; as root, every PostgreSQL process runs as `postgres`.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use pageserver_api::key::{RelTag, SlruKind};
use postgres_ffi::relfile::parse_relation_path;

pub fn pg_bin_dir() -> PathBuf {
    let dir = PathBuf::from(
        std::env::var("PG15_BIN_DIR").unwrap_or_else(|_| "/usr/lib/postgresql/15/bin".into()),
    );
    assert!(
        dir.join("initdb").is_file() && dir.join("pg_ctl").is_file(),
        "stock PostgreSQL 15 binaries not found in {}; install postgresql-15 or set PG15_BIN_DIR",
        dir.display()
    );
    dir
}

fn running_as_root() -> bool {
    static ROOT: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *ROOT.get_or_init(|| {
        let out = Command::new("id").arg("-u").output().expect("run `id -u`");
        String::from_utf8_lossy(&out.stdout).trim() == "0"
    })
}

/// A command run as the `postgres` user when we are root.
pub fn pg_command(program: &Path) -> Command {
    if running_as_root() {
        let mut c = Command::new("runuser");
        c.args(["-u", "postgres", "--"]).arg(program);
        c
    } else {
        Command::new(program)
    }
}

/// Client program `tool` (psql, pg_basebackup, ...) connecting as user postgres to the
/// server listening on [`PORT`] in socket directory `sockdir`.
pub fn pg_client(tool: &Path, sockdir: &Path) -> Command {
    let mut cmd = pg_command(tool);
    cmd.arg("-h")
        .arg(sockdir)
        .args(["-p", &PORT.to_string(), "-U", "postgres"]);
    cmd
}

pub fn check(out: Output, what: &str) -> String {
    assert!(
        out.status.success(),
        "{what} failed: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A temporary directory the `postgres` user owns; removed on drop.
pub struct Scratch {
    pub dir: tempfile::TempDir,
}

impl Scratch {
    pub fn new(tag: &str) -> Scratch {
        let dir = tempfile::Builder::new()
            .prefix(&format!("pageserver_{tag}_"))
            .tempdir()
            .expect("tempdir");
        if running_as_root() {
            let out = Command::new("chown")
                .arg("postgres")
                .arg(dir.path())
                .output()
                .expect("chown");
            check(out, "chown postgres");
        }
        Scratch { dir }
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// Writes a file the postgres user can read.
    pub fn write(&self, name: &str, content: &str) -> PathBuf {
        let p = self.path(name);
        fs::write(&p, content).expect("write scratch file");
        p
    }
}

/// Runs initdb into `data`.
pub fn initdb(data: &Path) {
    let out = pg_command(&pg_bin_dir().join("initdb"))
        .arg("-D")
        .arg(data)
        .args([
            "--no-sync",
            "-A",
            "trust",
            "-U",
            "postgres",
            "--no-instructions",
        ])
        .env("LC_ALL", "C")
        .output()
        .expect("run initdb");
    check(out, "initdb");
}

/// Copies a data directory (as the postgres user, keeping permissions).
pub fn copy_datadir(from: &Path, to: &Path) {
    let mut c = pg_command(Path::new("/bin/cp"));
    check(c.arg("-a").arg(from).arg(to).output().expect("cp"), "cp -a");
}

/// A running server on a private Unix socket directory; stopped (immediately) on drop.
pub struct Server {
    pub data: PathBuf,
    pub sockdir: PathBuf,
    stopped: bool,
}

pub const PORT: u16 = 5432;

impl Server {
    pub fn start(data: &Path, sockdir: &Path, extra_conf: &str) -> Server {
        fs::create_dir_all(sockdir).expect("socket dir");
        if running_as_root() {
            check(
                Command::new("chown")
                    .arg("postgres")
                    .arg(sockdir)
                    .output()
                    .expect("chown"),
                "chown",
            );
        }
        let mut conf = fs::OpenOptions::new()
            .append(true)
            .open(data.join("postgresql.conf"))
            .expect("open postgresql.conf");
        use std::io::Write;
        write!(
            conf,
            "\nlisten_addresses = ''\nport = {PORT}\nunix_socket_directories = '{}'\n{extra_conf}\n",
            sockdir.display()
        )
        .expect("append postgresql.conf");
        let log = data.parent().expect("parent").join("server.log");
        let out = pg_command(&pg_bin_dir().join("pg_ctl"))
            .arg("-D")
            .arg(data)
            .arg("-l")
            .arg(&log)
            .args(["-w", "-t", "60", "start"])
            .output()
            .expect("pg_ctl start");
        if !out.status.success() {
            panic!(
                "pg_ctl start failed: {}\nlog:\n{}",
                String::from_utf8_lossy(&out.stderr),
                fs::read_to_string(&log).unwrap_or_default()
            );
        }
        Server {
            data: data.to_path_buf(),
            sockdir: sockdir.to_path_buf(),
            stopped: false,
        }
    }

    /// `tool` of the test PostgreSQL build, connecting to this server as user postgres.
    pub fn client(&self, tool: &str) -> Command {
        pg_client(&pg_bin_dir().join(tool), &self.sockdir)
    }

    /// Runs a SQL script with psql (stops at the first error).
    pub fn psql_file(&self, script: &Path) -> String {
        let out = self
            .client("psql")
            .args(["-d", "postgres", "-X", "-q", "-v", "ON_ERROR_STOP=1", "-f"])
            .arg(script)
            .output()
            .expect("psql");
        check(out, "psql")
    }

    /// Runs one statement and returns its unaligned output.
    pub fn query(&self, sql: &str) -> String {
        let out = self
            .client("psql")
            .args([
                "-d",
                "postgres",
                "-X",
                "-A",
                "-t",
                "-v",
                "ON_ERROR_STOP=1",
                "-c",
            ])
            .arg(sql)
            .output()
            .expect("psql");
        check(out, "psql").trim().to_string()
    }

    /// Clean (fast) shutdown: ends with a shutdown checkpoint.
    pub fn stop(mut self) {
        self.stop_mode("fast");
    }

    fn stop_mode(&mut self, mode: &str) {
        if self.stopped {
            return;
        }
        self.stopped = true;
        let out = pg_command(&pg_bin_dir().join("pg_ctl"))
            .arg("-D")
            .arg(&self.data)
            .args(["-m", mode, "-w", "-t", "60", "stop"])
            .output()
            .expect("pg_ctl stop");
        check(out, "pg_ctl stop");
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if !self.stopped {
            self.stopped = true;
            let _ = pg_command(&pg_bin_dir().join("pg_ctl"))
                .arg("-D")
                .arg(&self.data)
                .args(["-m", "immediate", "-w", "stop"])
                .output();
        }
    }
}

/// Polls `cond` every 50 ms until it holds or `timeout` passes.
pub fn wait_for(timeout: Duration, what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Relation forks on disk with their sizes in blocks (all segments summed), and their files'
/// first-segment paths.
pub fn disk_relations(data: &Path) -> BTreeMap<RelTag, u32> {
    let mut out: BTreeMap<RelTag, u32> = BTreeMap::new();
    let mut dirs = vec!["global".to_string()];
    for e in fs::read_dir(data.join("base")).expect("read base") {
        dirs.push(format!(
            "base/{}",
            e.expect("entry").file_name().to_string_lossy()
        ));
    }
    for dir in dirs {
        for e in fs::read_dir(data.join(&dir)).expect("read db dir") {
            let e = e.expect("entry");
            let rel_path = format!("{dir}/{}", e.file_name().to_string_lossy());
            let Ok(p) = parse_relation_path(&rel_path) else {
                continue;
            };
            let len = e.metadata().expect("metadata").len();
            assert_eq!(len % 8192, 0, "{rel_path} is not whole pages");
            let blocks = (len / 8192) as u32;
            let tag = RelTag::new(p.rnode, p.forknum);
            *out.entry(tag).or_default() += blocks;
        }
    }
    out
}

/// Databases on disk: (1664, 0) for global, (1663, oid) for base/<oid>.
pub fn disk_databases(data: &Path) -> Vec<(u32, u32)> {
    let mut out = vec![(1664, 0)];
    for e in fs::read_dir(data.join("base")).expect("read base") {
        let name = e.expect("entry").file_name().to_string_lossy().into_owned();
        out.push((1663, name.parse().expect("db oid")));
    }
    out.sort();
    out
}

/// SLRU segment files on disk: segno → contents.
pub fn disk_slru(data: &Path, kind: SlruKind) -> BTreeMap<u32, Vec<u8>> {
    let mut out = BTreeMap::new();
    for e in fs::read_dir(data.join(kind.dir_name())).expect("read slru dir") {
        let e = e.expect("entry");
        let name = e.file_name().to_string_lossy().into_owned();
        let segno = u32::from_str_radix(&name, 16).expect("slru segment name");
        out.insert(segno, fs::read(e.path()).expect("read segment"));
    }
    out
}

/// Reads a tar into (path, entry type, content) in archive order.
pub fn read_tar(bytes: &[u8]) -> Vec<(String, tar::EntryType, Vec<u8>)> {
    let mut ar = tar::Archive::new(bytes);
    let mut out = Vec::new();
    for e in ar.entries().expect("tar entries") {
        let mut e = e.expect("tar entry");
        let path = e
            .path()
            .expect("path")
            .to_string_lossy()
            .trim_end_matches('/')
            .to_string();
        let kind = e.header().entry_type();
        let mut content = Vec::new();
        std::io::Read::read_to_end(&mut e, &mut content).expect("tar content");
        out.push((path, kind, content));
    }
    out
}

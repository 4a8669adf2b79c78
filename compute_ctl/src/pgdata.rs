//! The data directory: wiped and recreated for every start, owned by the OS user PostgreSQL
//! runs as, mode 0700; and what we read back from it (the backup's start LSN).

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use anyhow::{bail, Context};
use nix::unistd::{Gid, Uid, User};
use utils::lsn::Lsn;

/// The OS identity PostgreSQL runs as.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OsUser {
    pub name: String,
    pub uid: Uid,
    pub gid: Gid,
    /// True when we must switch to it (we are root and it is not root).
    pub switch: bool,
}

impl OsUser {
    /// Looks the user up; refuses to run PostgreSQL as root.
    pub fn lookup(name: &str) -> anyhow::Result<OsUser> {
        let user = User::from_name(name)
            .with_context(|| format!("look up OS user {name:?}"))?
            .with_context(|| format!("OS user {name:?} does not exist"))?;
        if user.uid.is_root() {
            bail!("PostgreSQL cannot run as root; choose another --os-user");
        }
        let me = Uid::effective();
        if !me.is_root() && me != user.uid {
            bail!(
                "we run as uid {me}, not root, and cannot switch to {name:?} (uid {})",
                user.uid
            );
        }
        Ok(OsUser {
            name: name.to_string(),
            uid: user.uid,
            gid: user.gid,
            switch: me.is_root(),
        })
    }
}

/// Refuses to touch a data directory a live postmaster still uses (e.g. one left behind by
/// a killed compute_ctl): its `postmaster.pid` names a running process.
pub fn check_no_live_postmaster(pgdata: &Path) -> anyhow::Result<()> {
    let path = pgdata.join("postmaster.pid");
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e).with_context(|| format!("read {}", path.display())),
    };
    let pid = text
        .lines()
        .next()
        .and_then(|l| l.trim().parse::<i32>().ok());
    match pid {
        Some(pid) if pid > 0 && utils::pidfile::process_alive(nix::unistd::Pid::from_raw(pid)) => {
            bail!(
                "a postgres (pid {pid}) still runs on {}; stop it first",
                pgdata.display()
            )
        }
        _ => Ok(()),
    }
}

/// Removes `pgdata` with everything in it and creates it empty (parents as needed), mode
/// 0700, owned by `owner`.
pub fn recreate(pgdata: &Path, owner: &OsUser) -> anyhow::Result<()> {
    match std::fs::remove_dir_all(pgdata) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e).with_context(|| format!("remove {}", pgdata.display())),
    }
    utils::crashsafe::create_dir_all_durable(pgdata)
        .with_context(|| format!("create {}", pgdata.display()))?;
    check_reachable(pgdata, owner)?;
    std::fs::set_permissions(pgdata, std::fs::Permissions::from_mode(0o700))
        .with_context(|| format!("chmod {}", pgdata.display()))?;
    chown_tree(pgdata, owner)
}

/// Fails clearly if `owner` could not reach `pgdata` because an ancestor directory is not
/// searchable for it (e.g. a 0700 temporary directory owned by root).
pub fn check_reachable(pgdata: &Path, owner: &OsUser) -> anyhow::Result<()> {
    use std::os::unix::fs::MetadataExt;
    if !owner.switch {
        return Ok(());
    }
    let abs = std::path::absolute(pgdata)?;
    for dir in abs.ancestors().skip(1) {
        let m = std::fs::metadata(dir).with_context(|| format!("stat {}", dir.display()))?;
        let mode = m.mode();
        let searchable = if m.uid() == owner.uid.as_raw() {
            mode & 0o100 != 0
        } else if m.gid() == owner.gid.as_raw() {
            mode & 0o010 != 0
        } else {
            mode & 0o001 != 0
        };
        if !searchable {
            bail!(
                "OS user {:?} cannot reach {}: {} (mode {:o}) is not searchable for it",
                owner.name,
                pgdata.display(),
                dir.display(),
                mode & 0o7777
            );
        }
    }
    Ok(())
}

/// Gives `root` and everything below it to `owner` (symlinks themselves, not their targets),
/// and makes `root` mode 0700 (PostgreSQL's requirement).
pub fn chown_tree(root: &Path, owner: &OsUser) -> anyhow::Result<()> {
    std::fs::set_permissions(root, std::fs::Permissions::from_mode(0o700))
        .with_context(|| format!("chmod {}", root.display()))?;
    if !owner.switch {
        return Ok(());
    }
    let mut stack = vec![root.to_path_buf()];
    while let Some(p) = stack.pop() {
        std::os::unix::fs::lchown(&p, Some(owner.uid.as_raw()), Some(owner.gid.as_raw()))
            .with_context(|| format!("chown {}", p.display()))?;
        let meta = std::fs::symlink_metadata(&p)?;
        if meta.is_dir() {
            for e in std::fs::read_dir(&p).with_context(|| format!("list {}", p.display()))? {
                stack.push(e?.path());
            }
        }
    }
    Ok(())
}

/// The start LSN of the unpacked backup: the redo point of pg_control's checkpoint copy.
pub fn backup_lsn(pgdata: &Path) -> anyhow::Result<Lsn> {
    let path = pgdata.join("global/pg_control");
    let bytes = std::fs::read(&path).with_context(|| format!("read {}", path.display()))?;
    let cf = postgres_ffi::controlfile::ControlFileData::decode(&bytes)
        .with_context(|| format!("decode {}", path.display()))?;
    Ok(cf.checkpoint_copy.redo)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn me() -> OsUser {
        OsUser {
            name: "me".into(),
            uid: Uid::effective(),
            gid: Gid::effective(),
            switch: false,
        }
    }

    #[test]
    fn recreate_wipes_and_sets_mode() {
        let dir = tempfile::tempdir().unwrap();
        let pgdata = dir.path().join("a/b/pgdata");
        recreate(&pgdata, &me()).unwrap();
        std::fs::write(pgdata.join("old"), b"x").unwrap();
        std::fs::create_dir(pgdata.join("sub")).unwrap();
        recreate(&pgdata, &me()).unwrap();
        assert_eq!(std::fs::read_dir(&pgdata).unwrap().count(), 0);
        let mode = std::fs::metadata(&pgdata).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o700);
    }

    #[test]
    fn root_is_refused_and_unknown_users_are_errors() {
        assert!(OsUser::lookup("root").is_err());
        let err = OsUser::lookup("no-such-user-here").unwrap_err();
        assert!(err.to_string().contains("does not exist"), "{err}");
    }

    #[test]
    fn chown_to_postgres_when_root() {
        let Ok(pg) = OsUser::lookup("postgres") else {
            return; // no postgres user on this machine, or we are not root
        };
        if !pg.switch {
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("d");
        std::fs::create_dir_all(root.join("x/y")).unwrap();
        std::fs::write(root.join("x/y/f"), b"1").unwrap();
        chown_tree(&root, &pg).unwrap();
        use std::os::unix::fs::MetadataExt;
        for p in [root.clone(), root.join("x/y"), root.join("x/y/f")] {
            assert_eq!(
                std::fs::metadata(&p).unwrap().uid(),
                pg.uid.as_raw(),
                "{p:?}"
            );
        }
    }

    #[test]
    fn unreachable_data_directory_is_refused() {
        let Ok(pg) = OsUser::lookup("postgres") else {
            return;
        };
        if !pg.switch {
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o700)).unwrap();
        let err = recreate(&dir.path().join("pgdata"), &pg).unwrap_err();
        assert!(err.to_string().contains("not searchable"), "{err}");
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        recreate(&dir.path().join("pgdata"), &pg).unwrap();
    }

    #[test]
    fn live_postmaster_is_detected() {
        let dir = tempfile::tempdir().unwrap();
        check_no_live_postmaster(dir.path()).unwrap();
        let pidfile = dir.path().join("postmaster.pid");
        std::fs::write(&pidfile, format!("{}\n/data\n", std::process::id())).unwrap();
        let err = check_no_live_postmaster(dir.path()).unwrap_err();
        assert!(err.to_string().contains("still runs"), "{err}");
        // A pid that cannot be alive, and garbage, are stale files.
        std::fs::write(&pidfile, "2147483646\n").unwrap();
        check_no_live_postmaster(dir.path()).unwrap();
        std::fs::write(&pidfile, "garbage").unwrap();
        check_no_live_postmaster(dir.path()).unwrap();
    }

    #[test]
    fn backup_lsn_needs_a_control_file() {
        let dir = tempfile::tempdir().unwrap();
        assert!(backup_lsn(dir.path()).is_err());
        std::fs::create_dir(dir.path().join("global")).unwrap();
        std::fs::write(dir.path().join("global/pg_control"), [0u8; 8192]).unwrap();
        assert!(backup_lsn(dir.path()).is_err());
    }
}

//! Relation identity and file naming: tablespace/database/relfilenode, forks, segments.

use std::fmt;

/// Physical identity of a relation (PostgreSQL 15's RelFileNode).
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize,
)]
pub struct RelFileNode {
    /// Tablespace OID (1663 = pg_default, 1664 = pg_global).
    pub spcnode: u32,
    /// Database OID (0 for shared relations).
    pub dbnode: u32,
    /// relfilenode.
    pub relnode: u32,
}

impl fmt::Display for RelFileNode {
    /// `spc/db/rel`, as pg_waldump prints it.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}/{}", self.spcnode, self.dbnode, self.relnode)
    }
}

/// A relation fork.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize,
)]
#[repr(u8)]
pub enum ForkNumber {
    Main = 0,
    Fsm = 1,
    VisibilityMap = 2,
    Init = 3,
}

impl ForkNumber {
    pub fn from_u8(n: u8) -> Option<ForkNumber> {
        match n {
            0 => Some(ForkNumber::Main),
            1 => Some(ForkNumber::Fsm),
            2 => Some(ForkNumber::VisibilityMap),
            3 => Some(ForkNumber::Init),
            _ => None,
        }
    }

    /// The fork's name as PostgreSQL prints it: main, fsm, vm, init.
    pub fn name(self) -> &'static str {
        match self {
            ForkNumber::Main => "main",
            ForkNumber::Fsm => "fsm",
            ForkNumber::VisibilityMap => "vm",
            ForkNumber::Init => "init",
        }
    }
}

/// OID of the pg_default tablespace (`base/`).
pub const DEFAULTTABLESPACE_OID: u32 = 1663;
/// OID of the pg_global tablespace (`global/`).
pub const GLOBALTABLESPACE_OID: u32 = 1664;
/// Blocks per relation segment file (RELSEG_SIZE): 1 GiB of 8 KiB blocks.
pub const RELSEG_SIZE: u32 = 131072;
/// Per-version directory inside a tablespace: `PG_<major>_<catversion>`.
pub const TABLESPACE_VERSION_DIRECTORY: &str = "PG_15_202209061";
/// Highest fork number (INIT_FORKNUM).
pub const MAX_FORKNUM: u8 = ForkNumber::Init as u8;

impl ForkNumber {
    /// All forks, in fork-number order.
    pub const ALL: [ForkNumber; 4] = [
        ForkNumber::Main,
        ForkNumber::Fsm,
        ForkNumber::VisibilityMap,
        ForkNumber::Init,
    ];

    /// The fork with PostgreSQL name `name` (main, fsm, vm, init).
    pub fn from_name(name: &str) -> Option<ForkNumber> {
        ForkNumber::ALL.into_iter().find(|f| f.name() == name)
    }
}

/// Directory of a database relative to the data directory (GetDatabasePath): `global`,
/// `base/<db>` or `pg_tblspc/<spc>/PG_15_202209061/<db>`.
pub fn database_path(spcnode: u32, dbnode: u32) -> String {
    match spcnode {
        GLOBALTABLESPACE_OID => "global".to_string(),
        DEFAULTTABLESPACE_OID => format!("base/{dbnode}"),
        _ => format!("pg_tblspc/{spcnode}/{TABLESPACE_VERSION_DIRECTORY}/{dbnode}"),
    }
}

/// File name of segment `segno` of a fork inside its database directory: `<rel>`,
/// `<rel>_<fork>`, and a `.<segno>` suffix for segments after the first.
pub fn relation_file_name(relnode: u32, forknum: ForkNumber, segno: u32) -> String {
    let mut name = relnode.to_string();
    if forknum != ForkNumber::Main {
        name.push('_');
        name.push_str(forknum.name());
    }
    if segno > 0 {
        name.push('.');
        name.push_str(&segno.to_string());
    }
    name
}

impl RelFileNode {
    /// Path of the fork's first segment relative to the data directory, like relpathperm().
    pub fn path(&self, forknum: ForkNumber) -> String {
        self.segment_path(forknum, 0)
    }

    /// Path of segment `segno` of the fork relative to the data directory.
    pub fn segment_path(&self, forknum: ForkNumber, segno: u32) -> String {
        format!(
            "{}/{}",
            database_path(self.spcnode, self.dbnode),
            relation_file_name(self.relnode, forknum, segno)
        )
    }
}

/// The segment file holding block `blkno` and the block's index inside it.
pub fn segment_of_block(blkno: u32) -> (u32, u32) {
    (blkno / RELSEG_SIZE, blkno % RELSEG_SIZE)
}

/// Why a path is not a permanent relation's segment file.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RelPathError {
    /// A temporary relation (`t<backend>_<rel>...`); these are never WAL-logged or imported.
    #[error("{0:?} is a temporary relation file")]
    TemporaryRelation(String),
    /// Not a relation file name (pg_filenode.map, PG_VERSION, pg_internal.init, ...).
    #[error("{0:?} is not a relation file name")]
    NotRelationFile(String),
    /// Not under `global/`, `base/<db>/` or `pg_tblspc/<spc>/PG_15_202209061/<db>/`.
    #[error("{0:?} is not in a database directory")]
    NotInDatabaseDirectory(String),
}

/// A parsed relation segment file name.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct RelFileName {
    pub relnode: u32,
    pub forknum: ForkNumber,
    /// Segment number (0 for the file without a `.N` suffix).
    pub segno: u32,
}

/// A parsed relation segment path.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct RelFilePath {
    pub rnode: RelFileNode,
    pub forknum: ForkNumber,
    pub segno: u32,
}

/// A decimal number as PostgreSQL prints one with `%u`: digits only, no leading zeros.
fn parse_canonical_u32(s: &str) -> Option<u32> {
    let canonical =
        !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) && (s == "0" || !s.starts_with('0'));
    if canonical {
        s.parse().ok()
    } else {
        None
    }
}

/// Parses a relation file name: `<rel>[_<fork>][.<segno>]`, e.g. `16384`, `16384_vm`,
/// `16384.2`, `1259_fsm.1`. The relfilenode must be non-zero and a segment suffix must not be
/// `.0` (PostgreSQL never writes either).
pub fn parse_relation_file_name(name: &str) -> Result<RelFileName, RelPathError> {
    let not_rel = || RelPathError::NotRelationFile(name.to_string());
    if looks_like_temp_relation(name) {
        return Err(RelPathError::TemporaryRelation(name.to_string()));
    }
    let (base, segno) = match name.split_once('.') {
        Some((base, seg)) => (
            base,
            parse_canonical_u32(seg)
                .filter(|s| *s > 0)
                .ok_or_else(not_rel)?,
        ),
        None => (name, 0),
    };
    let (rel, forknum) = match base.split_once('_') {
        Some((rel, fork)) => (
            rel,
            ForkNumber::from_name(fork)
                .filter(|f| *f != ForkNumber::Main)
                .ok_or_else(not_rel)?,
        ),
        None => (base, ForkNumber::Main),
    };
    let relnode = parse_canonical_u32(rel)
        .filter(|r| *r != 0)
        .ok_or_else(not_rel)?;
    Ok(RelFileName {
        relnode,
        forknum,
        segno,
    })
}

/// `t<digits>_<rest>`: the shape of a temporary relation's file name.
fn looks_like_temp_relation(name: &str) -> bool {
    let Some(rest) = name.strip_prefix('t') else {
        return false;
    };
    match rest.split_once('_') {
        Some((backend, _)) => !backend.is_empty() && backend.bytes().all(|b| b.is_ascii_digit()),
        None => false,
    }
}

/// Parses a path relative to the data directory (`/`-separated, an optional leading `./`
/// allowed) into the relation, fork and segment it holds.
pub fn parse_relation_path(path: &str) -> Result<RelFilePath, RelPathError> {
    let trimmed = path.strip_prefix("./").unwrap_or(path);
    let parts: Vec<&str> = trimmed.split('/').collect();
    let not_in_db = || RelPathError::NotInDatabaseDirectory(path.to_string());
    let (spcnode, dbnode, file) = match parts.as_slice() {
        ["global", file] => (GLOBALTABLESPACE_OID, 0, *file),
        ["base", db, file] => (
            DEFAULTTABLESPACE_OID,
            parse_canonical_u32(db).ok_or_else(not_in_db)?,
            *file,
        ),
        ["pg_tblspc", spc, version, db, file] if *version == TABLESPACE_VERSION_DIRECTORY => {
            let spcnode = parse_canonical_u32(spc)
                .filter(|s| *s != DEFAULTTABLESPACE_OID && *s != GLOBALTABLESPACE_OID)
                .ok_or_else(not_in_db)?;
            (
                spcnode,
                parse_canonical_u32(db).ok_or_else(not_in_db)?,
                *file,
            )
        }
        _ => return Err(not_in_db()),
    };
    let parsed = parse_relation_file_name(file)?;
    Ok(RelFilePath {
        rnode: RelFileNode {
            spcnode,
            dbnode,
            relnode: parsed.relnode,
        },
        forknum: parsed.forknum,
        segno: parsed.segno,
    })
}

impl RelFilePath {
    /// The path this was parsed from, in canonical form.
    pub fn to_path(&self) -> String {
        self.rnode.segment_path(self.forknum, self.segno)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const USER_REL: RelFileNode = RelFileNode {
        spcnode: DEFAULTTABLESPACE_OID,
        dbnode: 5,
        relnode: 16384,
    };

    #[test]
    fn paths_like_relpath_c() {
        let shared = RelFileNode {
            spcnode: GLOBALTABLESPACE_OID,
            dbnode: 0,
            relnode: 1262,
        };
        assert_eq!(shared.path(ForkNumber::Main), "global/1262");
        assert_eq!(shared.path(ForkNumber::Fsm), "global/1262_fsm");
        assert_eq!(USER_REL.path(ForkNumber::Main), "base/5/16384");
        assert_eq!(USER_REL.path(ForkNumber::VisibilityMap), "base/5/16384_vm");
        assert_eq!(USER_REL.path(ForkNumber::Init), "base/5/16384_init");
        assert_eq!(USER_REL.segment_path(ForkNumber::Main, 2), "base/5/16384.2");
        assert_eq!(
            USER_REL.segment_path(ForkNumber::Fsm, 1),
            "base/5/16384_fsm.1"
        );
        let spc = RelFileNode {
            spcnode: 16500,
            dbnode: 5,
            relnode: 16501,
        };
        assert_eq!(
            spc.path(ForkNumber::Main),
            "pg_tblspc/16500/PG_15_202209061/5/16501"
        );
        assert_eq!(database_path(16500, 5), "pg_tblspc/16500/PG_15_202209061/5");
    }

    #[test]
    fn segments() {
        assert_eq!(segment_of_block(0), (0, 0));
        assert_eq!(segment_of_block(RELSEG_SIZE - 1), (0, RELSEG_SIZE - 1));
        assert_eq!(segment_of_block(RELSEG_SIZE), (1, 0));
        assert_eq!(segment_of_block(u32::MAX), (32767, RELSEG_SIZE - 1));
    }

    #[test]
    fn file_names() {
        let p = |s| parse_relation_file_name(s);
        assert_eq!(
            p("16384_vm.3"),
            Ok(RelFileName {
                relnode: 16384,
                forknum: ForkNumber::VisibilityMap,
                segno: 3
            })
        );
        assert_eq!(p("1259").unwrap().forknum, ForkNumber::Main);
        assert_eq!(p("1259_init").unwrap().forknum, ForkNumber::Init);
        for bad in [
            "pg_filenode.map",
            "PG_VERSION",
            "pg_internal.init",
            "16384_main",
            "16384_xyz",
            "16384.0",
            "16384.",
            "016384",
            "0",
            "",
            "16384.1.2",
            "99999999999",
            "16384_vm_fsm",
            "-1",
            "+5",
        ] {
            assert!(
                matches!(p(bad), Err(RelPathError::NotRelationFile(_))),
                "{bad}"
            );
        }
        for temp in ["t3_1234", "t3_1234_fsm", "t12_16384.1"] {
            assert!(
                matches!(p(temp), Err(RelPathError::TemporaryRelation(_))),
                "{temp}"
            );
        }
    }

    #[test]
    fn paths_parse_and_round_trip() {
        let cases = [
            "global/1262",
            "global/1213_vm",
            "base/1/1259",
            "base/5/16384_fsm.1",
            "base/5/16384.17",
            "pg_tblspc/16500/PG_15_202209061/5/16501_init",
        ];
        for path in cases {
            let parsed = parse_relation_path(path).unwrap();
            assert_eq!(parsed.to_path(), path);
        }
        assert_eq!(
            parse_relation_path("./base/5/16384").unwrap().rnode,
            USER_REL
        );
        for fork in ForkNumber::ALL {
            for segno in [0, 1, 8191] {
                let path = USER_REL.segment_path(fork, segno);
                let parsed = parse_relation_path(&path).unwrap();
                assert_eq!(
                    (parsed.rnode, parsed.forknum, parsed.segno),
                    (USER_REL, fork, segno)
                );
            }
        }
    }

    #[test]
    fn non_relation_paths() {
        for path in [
            "global/pg_control",
            "global/pg_filenode.map",
            "base/5/PG_VERSION",
            "base/5/pg_internal.init",
            "base/5/pg_filenode.map",
        ] {
            assert!(
                matches!(
                    parse_relation_path(path),
                    Err(RelPathError::NotRelationFile(_))
                ),
                "{path}"
            );
        }
        assert!(matches!(
            parse_relation_path("base/5/t3_1234"),
            Err(RelPathError::TemporaryRelation(_))
        ));
        for path in [
            "pg_wal/000000010000000000000001",
            "base/16384",
            "base/x/16384",
            "pg_tblspc/16500/PG_14_202107181/5/16501",
            "pg_tblspc/1663/PG_15_202209061/5/16501",
            "global/sub/1262",
            "/base/5/16384",
        ] {
            assert!(
                matches!(
                    parse_relation_path(path),
                    Err(RelPathError::NotInDatabaseDirectory(_))
                ),
                "{path}"
            );
        }
    }
}

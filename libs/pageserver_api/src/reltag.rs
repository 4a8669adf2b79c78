//! Names of the things the key space stores: relation forks ([`RelTag`]) and SLRU kinds
//! ([`SlruKind`]).

use std::fmt;
use std::str::FromStr;

use postgres_ffi::relfile::{ForkNumber, RelFileNode};
use serde::{Deserialize, Serialize};

/// One fork of one relation: tablespace, database, relfilenode and fork number.
///
/// Ordered by (spcnode, dbnode, relnode, forknum), the order of their keys.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct RelTag {
    pub spcnode: u32,
    pub dbnode: u32,
    pub relnode: u32,
    /// Fork number as PostgreSQL numbers forks (0 main, 1 fsm, 2 vm, 3 init).
    pub forknum: u8,
}

/// Error for a string that is not a relation tag.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid relation tag {0:?}: expected spc/db/rel with an optional _fsm, _vm or _init")]
pub struct RelTagParseError(pub String);

impl RelTag {
    /// The tag of fork `fork` of relation `rnode`.
    pub fn new(rnode: RelFileNode, fork: ForkNumber) -> RelTag {
        RelTag {
            spcnode: rnode.spcnode,
            dbnode: rnode.dbnode,
            relnode: rnode.relnode,
            forknum: fork as u8,
        }
    }

    /// The relation this fork belongs to.
    pub fn rnode(&self) -> RelFileNode {
        RelFileNode {
            spcnode: self.spcnode,
            dbnode: self.dbnode,
            relnode: self.relnode,
        }
    }

    /// The fork, if `forknum` is one PostgreSQL knows.
    pub fn fork(&self) -> Option<ForkNumber> {
        ForkNumber::from_u8(self.forknum)
    }

    /// The same relation's fork `fork`.
    pub fn with_fork(&self, fork: ForkNumber) -> RelTag {
        RelTag {
            forknum: fork as u8,
            ..*self
        }
    }
}

impl From<(RelFileNode, ForkNumber)> for RelTag {
    fn from((rnode, fork): (RelFileNode, ForkNumber)) -> RelTag {
        RelTag::new(rnode, fork)
    }
}

impl fmt::Display for RelTag {
    /// `spc/db/rel` for the main fork, `spc/db/rel_fsm`, `_vm`, `_init` for the others and
    /// `_<n>` for fork numbers PostgreSQL does not know.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}/{}", self.spcnode, self.dbnode, self.relnode)?;
        match self.fork() {
            Some(ForkNumber::Main) => Ok(()),
            Some(fork) => write!(f, "_{}", fork.name()),
            None => write!(f, "_{}", self.forknum),
        }
    }
}

impl FromStr for RelTag {
    type Err = RelTagParseError;

    /// Parses what [`fmt::Display`] prints.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = || RelTagParseError(s.to_string());
        let (nodes, fork) = match s.split_once('_') {
            Some((nodes, suffix)) => (nodes, parse_fork_suffix(suffix).ok_or_else(err)?),
            None => (s, ForkNumber::Main as u8),
        };
        let mut parts = nodes.split('/');
        let mut next = || -> Result<u32, RelTagParseError> {
            let part = parts.next().ok_or_else(err)?;
            if part.is_empty() || !part.bytes().all(|b| b.is_ascii_digit()) {
                return Err(err());
            }
            part.parse().map_err(|_| err())
        };
        let tag = RelTag {
            spcnode: next()?,
            dbnode: next()?,
            relnode: next()?,
            forknum: fork,
        };
        if parts.next().is_some() {
            return Err(err());
        }
        Ok(tag)
    }
}

/// Fork number of a `_fsm`/`_vm`/`_init`/`_<n>` suffix (without the underscore).
fn parse_fork_suffix(suffix: &str) -> Option<u8> {
    match ForkNumber::from_name(suffix) {
        Some(ForkNumber::Main) => None,
        Some(fork) => Some(fork as u8),
        None if !suffix.is_empty() && suffix.bytes().all(|b| b.is_ascii_digit()) => {
            let n: u8 = suffix.parse().ok()?;
            // Known forks must use their names, so that every tag has one spelling.
            (ForkNumber::from_u8(n).is_none()).then_some(n)
        }
        None => None,
    }
}

/// The SLRUs the pageserver stores (pg_subtrans and pg_commit_ts are not kept).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum SlruKind {
    /// pg_xact (CLOG): two status bits per transaction.
    Clog,
    /// pg_multixact/members.
    MultiXactMembers,
    /// pg_multixact/offsets.
    MultiXactOffsets,
}

impl SlruKind {
    /// Every kind, in number order.
    pub const ALL: [SlruKind; 3] = [
        SlruKind::Clog,
        SlruKind::MultiXactMembers,
        SlruKind::MultiXactOffsets,
    ];

    /// The kind's number in keys and in the pagestream protocol: 0 clog, 1 members, 2 offsets.
    pub fn as_u32(self) -> u32 {
        match self {
            SlruKind::Clog => 0,
            SlruKind::MultiXactMembers => 1,
            SlruKind::MultiXactOffsets => 2,
        }
    }

    /// Inverse of [`SlruKind::as_u32`].
    pub fn from_u32(n: u32) -> Option<SlruKind> {
        SlruKind::ALL.into_iter().find(|k| k.as_u32() == n)
    }

    /// The SLRU's directory relative to the data directory.
    pub fn dir_name(self) -> &'static str {
        match self {
            SlruKind::Clog => "pg_xact",
            SlruKind::MultiXactMembers => "pg_multixact/members",
            SlruKind::MultiXactOffsets => "pg_multixact/offsets",
        }
    }

    /// Inverse of [`SlruKind::dir_name`].
    pub fn from_dir_name(name: &str) -> Option<SlruKind> {
        SlruKind::ALL.into_iter().find(|k| k.dir_name() == name)
    }
}

impl fmt::Display for SlruKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.dir_name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn display_names_forks() {
        let rnode = RelFileNode {
            spcnode: 1663,
            dbnode: 5,
            relnode: 16384,
        };
        let main = RelTag::from((rnode, ForkNumber::Main));
        assert_eq!(main.to_string(), "1663/5/16384");
        assert_eq!(
            main.with_fork(ForkNumber::Fsm).to_string(),
            "1663/5/16384_fsm"
        );
        assert_eq!(
            main.with_fork(ForkNumber::VisibilityMap).to_string(),
            "1663/5/16384_vm"
        );
        assert_eq!(
            main.with_fork(ForkNumber::Init).to_string(),
            "1663/5/16384_init"
        );
        assert_eq!(main.rnode(), rnode);
        assert_eq!(main.fork(), Some(ForkNumber::Main));
        let odd = RelTag { forknum: 9, ..main };
        assert_eq!(odd.to_string(), "1663/5/16384_9");
        assert_eq!(odd.fork(), None);
    }

    #[test]
    fn parse_rejects_malformed() {
        for s in [
            "",
            "1/2",
            "1/2/3/4",
            "1/2/x",
            "1/2/3_",
            "1/2/3_main",
            "1/2/3_2",
            "1/2/3_vm_fsm",
            "-1/2/3",
            "+1/2/3",
            "1/2/4294967296",
            "1/2/3_256",
        ] {
            assert!(s.parse::<RelTag>().is_err(), "{s:?} parsed");
        }
    }

    #[test]
    fn ordering_follows_fields() {
        let a = RelTag {
            spcnode: 1,
            dbnode: 2,
            relnode: 3,
            forknum: 3,
        };
        let b = RelTag {
            relnode: 4,
            forknum: 0,
            ..a
        };
        assert!(a < b);
    }

    #[test]
    fn slru_kind_numbers_and_dirs() {
        for kind in SlruKind::ALL {
            assert_eq!(SlruKind::from_u32(kind.as_u32()), Some(kind));
            assert_eq!(SlruKind::from_dir_name(kind.dir_name()), Some(kind));
        }
        assert_eq!(SlruKind::Clog.as_u32(), 0);
        assert_eq!(SlruKind::MultiXactMembers.as_u32(), 1);
        assert_eq!(SlruKind::MultiXactOffsets.as_u32(), 2);
        assert_eq!(SlruKind::Clog.dir_name(), "pg_xact");
        assert_eq!(SlruKind::from_u32(3), None);
    }

    #[test]
    fn serde_shape() {
        let tag = RelTag {
            spcnode: 1663,
            dbnode: 5,
            relnode: 16384,
            forknum: 2,
        };
        let json = serde_json::to_value(tag).unwrap();
        assert_eq!(
            json,
            serde_json::json!({"spcnode": 1663, "dbnode": 5, "relnode": 16384, "forknum": 2})
        );
        assert_eq!(serde_json::from_value::<RelTag>(json).unwrap(), tag);
    }

    proptest! {
        #[test]
        fn text_round_trip(spcnode: u32, dbnode: u32, relnode: u32, forknum: u8) {
            let tag = RelTag { spcnode, dbnode, relnode, forknum };
            prop_assert_eq!(tag.to_string().parse::<RelTag>().unwrap(), tag);
        }

        #[test]
        fn parse_never_panics(s in "\\PC{0,40}") {
            let _ = s.parse::<RelTag>();
        }
    }
}

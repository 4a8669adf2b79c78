//! Layer file names and descriptors.
//!
//! Names, with keys as 36 and LSNs as 16 upper-case hexadecimal digits:
//!
//! - delta: `<key_start>-<key_end>__<lsn_start>-<lsn_end>` (key range × LSN range, both
//!   end-exclusive)
//! - image: `<key_start>-<key_end>__<lsn>` (key range at one LSN; as an LSN range,
//!   `[lsn, lsn + 1)`)
//!
//! Parsing accepts exactly what formatting produces: anything else (lower-case digits,
//! other widths, empty ranges, a temporary `.___temp` file) is an error.

use std::fmt;
use std::ops::Range;
use std::str::FromStr;

use pageserver_api::key::{Key, KEY_SIZE_BYTES};
use utils::crashsafe::TEMP_FILE_SUFFIX;
use utils::id::{TenantId, TimelineId};
use utils::lsn::Lsn;

const KEY_HEX_CHARS: usize = KEY_SIZE_BYTES * 2;
const LSN_HEX_CHARS: usize = 16;

/// The name of a layer file: which part of the key × LSN space it covers.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum LayerName {
    /// Every version of keys in `key_range` written in `lsn_range`.
    Delta {
        key_range: Range<Key>,
        lsn_range: Range<Lsn>,
    },
    /// The value of every existing key in `key_range` as of `lsn`.
    Image { key_range: Range<Key>, lsn: Lsn },
}

/// A string that is not a layer file name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LayerNameError {
    #[error("{name:?} is a temporary file, not a layer file")]
    TempFile { name: String },
    #[error("{name:?} is not a layer file name: {reason}")]
    Malformed { name: String, reason: &'static str },
}

impl LayerName {
    pub fn is_delta(&self) -> bool {
        matches!(self, LayerName::Delta { .. })
    }

    /// A level-0 delta layer: a delta covering the whole key space (`Key::MIN..Key::MAX`).
    pub fn is_l0(&self) -> bool {
        match self {
            LayerName::Delta { key_range, .. } => *key_range == (Key::MIN..Key::MAX),
            LayerName::Image { .. } => false,
        }
    }

    pub fn key_range(&self) -> Range<Key> {
        match self {
            LayerName::Delta { key_range, .. } | LayerName::Image { key_range, .. } => {
                key_range.clone()
            }
        }
    }

    /// The LSNs covered; `[lsn, lsn + 1)` for an image layer.
    pub fn lsn_range(&self) -> Range<Lsn> {
        match self {
            LayerName::Delta { lsn_range, .. } => lsn_range.clone(),
            LayerName::Image { lsn, .. } => *lsn..Lsn(lsn.0.saturating_add(1)),
        }
    }
}

impl fmt::Display for LayerName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LayerName::Delta {
                key_range,
                lsn_range,
            } => write!(
                f,
                "{}-{}__{:016X}-{:016X}",
                key_range.start, key_range.end, lsn_range.start.0, lsn_range.end.0
            ),
            LayerName::Image { key_range, lsn } => {
                write!(f, "{}-{}__{:016X}", key_range.start, key_range.end, lsn.0)
            }
        }
    }
}

fn parse_key(s: &str) -> Option<Key> {
    let key: Key = s.parse().ok()?;
    // Only the canonical (upper-case) spelling.
    (key.to_string() == s).then_some(key)
}

fn parse_lsn(s: &str) -> Option<Lsn> {
    let canonical = s.len() == LSN_HEX_CHARS
        && s.bytes()
            .all(|b| b.is_ascii_digit() || (b'A'..=b'F').contains(&b));
    canonical
        .then(|| u64::from_str_radix(s, 16).ok().map(Lsn))
        .flatten()
}

impl FromStr for LayerName {
    type Err = LayerNameError;

    fn from_str(name: &str) -> Result<Self, Self::Err> {
        let malformed = |reason| LayerNameError::Malformed {
            name: name.to_string(),
            reason,
        };
        if name.ends_with(TEMP_FILE_SUFFIX) {
            return Err(LayerNameError::TempFile {
                name: name.to_string(),
            });
        }
        if !name.is_ascii() {
            return Err(malformed("contains non-ASCII characters"));
        }
        let (keys, lsns) = name
            .split_once("__")
            .ok_or_else(|| malformed("no \"__\" between the key and LSN parts"))?;
        if keys.len() != 2 * KEY_HEX_CHARS + 1 || keys.as_bytes()[KEY_HEX_CHARS] != b'-' {
            return Err(malformed("key part is not <36 hex digits>-<36 hex digits>"));
        }
        let key_start = parse_key(&keys[..KEY_HEX_CHARS]);
        let key_end = parse_key(&keys[KEY_HEX_CHARS + 1..]);
        let (Some(key_start), Some(key_end)) = (key_start, key_end) else {
            return Err(malformed("keys are not 36 upper-case hex digits"));
        };
        if key_start >= key_end {
            return Err(malformed("empty key range"));
        }
        let key_range = key_start..key_end;
        if lsns.len() == LSN_HEX_CHARS {
            let lsn =
                parse_lsn(lsns).ok_or_else(|| malformed("LSN is not 16 upper-case hex digits"))?;
            if lsn == Lsn::MAX {
                return Err(malformed("image LSN is the largest LSN"));
            }
            return Ok(LayerName::Image { key_range, lsn });
        }
        if lsns.len() != 2 * LSN_HEX_CHARS + 1 || lsns.as_bytes()[LSN_HEX_CHARS] != b'-' {
            return Err(malformed(
                "LSN part is not <16 hex digits>[-<16 hex digits>]",
            ));
        }
        let lsn_start = parse_lsn(&lsns[..LSN_HEX_CHARS]);
        let lsn_end = parse_lsn(&lsns[LSN_HEX_CHARS + 1..]);
        let (Some(lsn_start), Some(lsn_end)) = (lsn_start, lsn_end) else {
            return Err(malformed("LSNs are not 16 upper-case hex digits"));
        };
        if lsn_start >= lsn_end {
            return Err(malformed("empty LSN range"));
        }
        Ok(LayerName::Delta {
            key_range,
            lsn_range: lsn_start..lsn_end,
        })
    }
}

/// A layer file as the layer map knows it: its name, size and owner.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct LayerDesc {
    pub name: LayerName,
    pub file_size_bytes: u64,
    pub tenant_id: TenantId,
    pub timeline_id: TimelineId,
}

impl LayerDesc {
    pub fn is_delta(&self) -> bool {
        self.name.is_delta()
    }

    /// See [`LayerName::is_l0`].
    pub fn is_l0(&self) -> bool {
        self.name.is_l0()
    }

    pub fn key_range(&self) -> Range<Key> {
        self.name.key_range()
    }

    /// See [`LayerName::lsn_range`].
    pub fn lsn_range(&self) -> Range<Lsn> {
        self.name.lsn_range()
    }

    /// The file name of the layer in its timeline directory.
    pub fn file_name(&self) -> String {
        self.name.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(f6: u32) -> Key {
        Key {
            field1: 0,
            field2: 1663,
            field3: 5,
            field4: 16384,
            field5: 0,
            field6: f6,
        }
    }

    #[test]
    fn formats_and_parses_both_kinds() {
        let delta = LayerName::Delta {
            key_range: key(1)..key(9),
            lsn_range: Lsn(0x1698)..Lsn(0x1_0000_0000),
        };
        let s = delta.to_string();
        assert_eq!(
            s,
            "000000067F00000005000040000000000001-000000067F00000005000040000000000009\
             __0000000000001698-0000000100000000"
        );
        assert_eq!(s.parse::<LayerName>().unwrap(), delta);
        assert!(delta.is_delta() && !delta.is_l0());
        assert_eq!(delta.lsn_range(), Lsn(0x1698)..Lsn(0x1_0000_0000));

        let image = LayerName::Image {
            key_range: Key::MIN..Key::MAX,
            lsn: Lsn(0x0169_8AB0),
        };
        let s = image.to_string();
        assert_eq!(
            s,
            "000000000000000000000000000000000000-FFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFF\
             __0000000001698AB0"
        );
        assert_eq!(s.parse::<LayerName>().unwrap(), image);
        assert!(!image.is_delta() && !image.is_l0());
        assert_eq!(image.lsn_range(), Lsn(0x0169_8AB0)..Lsn(0x0169_8AB1));
        assert_eq!(image.key_range(), Key::MIN..Key::MAX);

        let l0 = LayerName::Delta {
            key_range: Key::MIN..Key::MAX,
            lsn_range: Lsn(1)..Lsn(2),
        };
        assert!(l0.is_l0());
    }

    #[test]
    fn rejects_temp_files_and_junk() {
        let good = LayerName::Delta {
            key_range: key(1)..key(9),
            lsn_range: Lsn(1)..Lsn(2),
        }
        .to_string();
        let err = format!("{good}.___temp").parse::<LayerName>().unwrap_err();
        assert!(matches!(err, LayerNameError::TempFile { .. }), "{err}");

        let k1 = key(1).to_string();
        let k9 = key(9).to_string();
        let lsn1 = "0000000000000001";
        let lsn2 = "0000000000000002";
        let bad = [
            String::new(),
            "ephemeral-1".to_string(),
            "index_part.json".to_string(),
            format!("{k1}-{k9}"),
            format!("{k1}-{k9}__"),
            format!("{k1}-{k9}_{lsn1}"),
            format!("{k9}-{k1}__{lsn1}"),
            format!("{k1}-{k1}__{lsn1}"),
            format!("{k1}-{k9}__{lsn2}-{lsn1}"),
            format!("{k1}-{k9}__{lsn1}-{lsn1}"),
            format!("{k1}-{k9}__{lsn1}-{lsn2}-v1-00000001"),
            format!("{k1}-{k9}__{lsn1}x{lsn2}"),
            format!("{k1}-{k9}__1698"),
            format!("{k1}-{k9}__000000000000169a"),
            format!("{k1}-{k9}__FFFFFFFFFFFFFFFF"),
            format!("{k1}-{k9}__{lsn1}__{lsn2}"),
            format!("{}-{k9}__{lsn1}", "000000067f000000050000400000000001"),
            format!("{k1}_{k9}__{lsn1}"),
            format!("{k1}-{k9}__+000000000000001"),
            format!("{k1}-{k9}__é00000000000001"),
            format!("é{k1}-{k9}__{lsn1}"),
        ];
        for name in bad {
            let err = name.parse::<LayerName>().unwrap_err();
            assert!(
                matches!(err, LayerNameError::Malformed { .. }),
                "{name}: {err}"
            );
        }
    }

    #[test]
    fn desc_delegates_to_the_name() {
        let desc = LayerDesc {
            name: LayerName::Delta {
                key_range: Key::MIN..Key::MAX,
                lsn_range: Lsn(5)..Lsn(10),
            },
            file_size_bytes: 8192 * 3,
            tenant_id: TenantId::generate(),
            timeline_id: TimelineId::generate(),
        };
        assert!(desc.is_delta() && desc.is_l0());
        assert_eq!(desc.key_range(), Key::MIN..Key::MAX);
        assert_eq!(desc.lsn_range(), Lsn(5)..Lsn(10));
        assert_eq!(desc.file_name().parse::<LayerName>().unwrap(), desc.name);
    }
}

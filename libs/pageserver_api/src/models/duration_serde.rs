//! Serde for durations as humantime strings (`"10m"`, `"1h 30m"`, `"0s"`).

use std::time::Duration;

use serde::{Deserialize, Deserializer, Serializer};

/// Longest duration accepted (100 years): keeps `Instant + duration` arithmetic safe.
pub const MAX_DURATION: Duration = Duration::from_secs(100 * 365 * 24 * 3600);

/// Parses a humantime string no longer than [`MAX_DURATION`].
pub fn parse(s: &str) -> Result<Duration, String> {
    let d = humantime::parse_duration(s).map_err(|e| format!("invalid duration {s:?}: {e}"))?;
    if d > MAX_DURATION {
        return Err(format!("duration {s:?} is longer than 100 years"));
    }
    Ok(d)
}

/// The shortest humantime form (`"10m"`, `"1h 30m"`, `"0s"`).
pub fn format(d: Duration) -> String {
    humantime::format_duration(d).to_string()
}

pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&format(*d))
}

pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    let s = String::deserialize(d)?;
    parse(&s).map_err(serde::de::Error::custom)
}

/// The same for `Option<Duration>` (`null` or absent = `None`).
pub mod option {
    use super::*;

    pub fn serialize<S: Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
        match d {
            Some(d) => s.serialize_str(&format(*d)),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
        match Option::<String>::deserialize(d)? {
            Some(s) => parse(&s).map(Some).map_err(serde::de::Error::custom),
            None => Ok(None),
        }
    }
}

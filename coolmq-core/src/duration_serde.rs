//! Durations in configuration: a humantime string (`"1s"`, `"250ms"`) or an integer number of
//! milliseconds (ActiveMQ's unit), so ActiveMQ users can paste their numbers.

use std::time::Duration;

use serde::{de, Deserialize, Deserializer, Serializer};

#[derive(Deserialize)]
#[serde(untagged)]
enum Raw {
    Millis(u64),
    Text(String),
}

fn parse(raw: Raw) -> Result<Duration, String> {
    match raw {
        Raw::Millis(ms) => Ok(Duration::from_millis(ms)),
        Raw::Text(s) => humantime::parse_duration(s.trim()).map_err(|e| {
            format!("invalid duration {s:?} ({e}); use e.g. \"1s\", \"250ms\" or milliseconds")
        }),
    }
}

/// Deserialize a required duration.
pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    parse(Raw::deserialize(d)?).map_err(de::Error::custom)
}

/// Serialize as a humantime string.
pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&humantime::format_duration(*d).to_string())
}

/// Optional durations; `-1` (ActiveMQ's "unlimited") and absent both mean `None`.
pub mod option {
    use super::*;

    #[derive(Deserialize)]
    #[serde(untagged)]
    enum RawOpt {
        Unlimited(i64),
        Some(Raw),
    }

    /// Deserialize an optional duration.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
        match Option::<RawOpt>::deserialize(d)? {
            None => Ok(None),
            Some(RawOpt::Unlimited(v)) if v < 0 => Ok(None),
            Some(RawOpt::Unlimited(v)) => Ok(Some(Duration::from_millis(v as u64))),
            Some(RawOpt::Some(raw)) => parse(raw).map(Some).map_err(de::Error::custom),
        }
    }

    /// Serialize an optional duration.
    pub fn serialize<S: Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
        match d {
            Some(d) => super::serialize(d, s),
            None => s.serialize_none(),
        }
    }
}

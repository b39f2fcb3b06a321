//! Durations in configuration: "90d", "24h", "30m", "15s", "250ms".

use std::time::Duration;

use serde::{Deserialize, Deserializer};

/// Parse "90d", "24h", "30m", "15s", "250ms" (or a bare number of seconds).
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let split = s
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: f64 = num
        .parse()
        .map_err(|_| format!("'{s}' is not a duration like 30s, 15m, 24h, 90d"))?;
    let secs = match unit.trim() {
        "" | "s" => n,
        "ms" => n / 1000.0,
        "m" => n * 60.0,
        "h" => n * 3600.0,
        "d" => n * 86400.0,
        _ => return Err(format!("'{s}' is not a duration like 30s, 15m, 24h, 90d")),
    };
    if !(0.0..=1e10).contains(&secs) {
        return Err(format!("'{s}' is out of range"));
    }
    Ok(Duration::from_secs_f64(secs))
}

pub fn format_duration(d: Duration) -> String {
    let ms = d.as_millis();
    if ms % 86_400_000 == 0 && ms > 0 {
        format!("{}d", ms / 86_400_000)
    } else if ms % 3_600_000 == 0 && ms > 0 {
        format!("{}h", ms / 3_600_000)
    } else if ms % 60_000 == 0 && ms > 0 {
        format!("{}m", ms / 60_000)
    } else if ms % 1000 == 0 {
        format!("{}s", ms / 1000)
    } else {
        format!("{ms}ms")
    }
}

pub(super) mod dur {
    use super::*;
    pub fn serialize<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&format_duration(*d))
    }
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            S(String),
            N(f64),
        }
        match Raw::deserialize(d)? {
            Raw::S(s) => parse_duration(&s).map_err(serde::de::Error::custom),
            Raw::N(n) => Duration::try_from_secs_f64(n)
                .map_err(|_| serde::de::Error::custom(format!("{n} is not a duration in seconds"))),
        }
    }
}

pub(super) mod opt_dur {
    use super::*;
    pub fn serialize<S: serde::Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
        match d {
            Some(d) => s.serialize_str(&format_duration(*d)),
            None => s.serialize_none(),
        }
    }
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
        let s: Option<String> = Option::deserialize(d)?;
        s.map(|s| parse_duration(&s).map_err(serde::de::Error::custom))
            .transpose()
    }
}

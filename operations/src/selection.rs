//! What an operation applies to: a time range, a sequence range, a channel, a tenant, a source.

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use hookline_shared::{names, timefmt, Source};

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Selection {
    #[serde(default, with = "time::serde::rfc3339::option")]
    pub from: Option<OffsetDateTime>,
    #[serde(default, with = "time::serde::rfc3339::option")]
    pub to: Option<OffsetDateTime>,
    pub from_seq: Option<u64>,
    pub to_seq: Option<u64>,
    pub channel: Option<String>,
    pub tenant: Option<String>,
    pub source: Option<Source>,
}

impl Selection {
    /// Checks ids so that they cannot widen a subject filter.
    pub fn validate(&self) -> Result<(), String> {
        for (name, value) in [("channel", &self.channel), ("tenant", &self.tenant)] {
            if let Some(v) = value {
                if !names::is_valid_id(v) {
                    return Err(format!("--{name} {v:?}: 1 to 64 of A-Z a-z 0-9 _ -"));
                }
            }
        }
        if let (Some(a), Some(b)) = (self.from, self.to) {
            if a > b {
                return Err("--from is after --to".into());
            }
        }
        if let (Some(a), Some(b)) = (self.from_seq, self.to_seq) {
            if a > b {
                return Err("--from-seq is after --to-seq".into());
            }
        }
        Ok(())
    }

    pub fn time_matches(&self, t: OffsetDateTime) -> bool {
        self.from.is_none_or(|f| t >= f) && self.to.is_none_or(|to| t <= to)
    }
}

/// `2026-01-01T10:00:00Z`, or an age: `90s`, `15m`, `2h`, `7d` (that long ago).
pub fn parse_time(s: &str) -> Result<OffsetDateTime, String> {
    if let Some(t) = timefmt::parse_rfc3339(s) {
        return Ok(t);
    }
    let (number, unit) = s.split_at(s.len().saturating_sub(1));
    let n: i64 = number.parse().map_err(|_| format!("{s:?}: expected RFC 3339 or an age like 15m, 2h, 7d"))?;
    let seconds = match unit {
        "s" => n,
        "m" => n * 60,
        "h" => n * 3600,
        "d" => n * 86400,
        _ => return Err(format!("{s:?}: expected RFC 3339 or an age like 15m, 2h, 7d")),
    };
    Ok(OffsetDateTime::now_utc() - time::Duration::seconds(seconds))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_are_rfc3339_or_ages() {
        assert_eq!(parse_time("2026-01-01T00:00:00Z").map(|t| t.unix_timestamp()), Ok(1767225600));
        let hour_ago = parse_time("1h").expect("age");
        let delta = OffsetDateTime::now_utc() - hour_ago;
        assert!((delta.whole_seconds() - 3600).abs() < 5);
        assert!(parse_time("yesterday").is_err());
        assert!(parse_time("5w").is_err());
    }

    #[test]
    fn ids_cannot_widen_a_subject() {
        let s = Selection { channel: Some("a.>".into()), ..Default::default() };
        assert!(s.validate().is_err());
        let s = Selection { tenant: Some("*".into()), ..Default::default() };
        assert!(s.validate().is_err());
    }
}

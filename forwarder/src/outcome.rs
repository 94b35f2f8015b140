//! What one delivery attempt came to, and what to do about it: the one table from HTTP answers
//! to ack, retry or dead letter.

use std::time::Duration;

/// The result of one POST to the target.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DeliveryOutcome {
    /// Any 2xx.
    Delivered(u16),
    /// 408, 429, 5xx, a connection error or a timeout: try again later.
    Retryable { status: Option<u16>, reason: &'static str, retry_after: Option<Duration> },
    /// Any other 4xx: the target will never take it.
    Rejected(u16),
}

impl DeliveryOutcome {
    pub fn from_status(status: u16, retry_after: Option<Duration>) -> Self {
        match status {
            200..=299 => DeliveryOutcome::Delivered(status),
            408 => DeliveryOutcome::Retryable { status: Some(status), reason: "timeout_408", retry_after },
            429 => DeliveryOutcome::Retryable { status: Some(status), reason: "rate_limited_429", retry_after },
            500..=599 => DeliveryOutcome::Retryable { status: Some(status), reason: "server_error_5xx", retry_after },
            // 1xx and 3xx are not success either: redirects are not followed, so retry them.
            100..=199 | 300..=399 => DeliveryOutcome::Retryable { status: Some(status), reason: "unexpected_status", retry_after: None },
            _ => DeliveryOutcome::Rejected(status),
        }
    }

    /// What the last attempt answered, for the DLQ: a status code, or the kind of failure.
    pub fn last_status(&self) -> String {
        match self {
            DeliveryOutcome::Delivered(s) | DeliveryOutcome::Rejected(s) => s.to_string(),
            DeliveryOutcome::Retryable { status: Some(s), .. } => s.to_string(),
            DeliveryOutcome::Retryable { status: None, reason, .. } => reason.to_string(),
        }
    }
}

/// `Retry-After` as seconds (the HTTP-date form is read as "no wish").
pub fn parse_retry_after(value: Option<&str>) -> Option<Duration> {
    value?.trim().parse::<u64>().ok().map(Duration::from_secs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_map_to_the_designs_outcomes() {
        let table: &[(u16, &str)] = &[
            (200, "delivered"),
            (204, "delivered"),
            (408, "retry"),
            (429, "retry"),
            (500, "retry"),
            (503, "retry"),
            (302, "retry"),
            (400, "rejected"),
            (401, "rejected"),
            (404, "rejected"),
            (410, "rejected"),
            (422, "rejected"),
        ];
        for (status, expected) in table {
            let got = match DeliveryOutcome::from_status(*status, None) {
                DeliveryOutcome::Delivered(_) => "delivered",
                DeliveryOutcome::Retryable { .. } => "retry",
                DeliveryOutcome::Rejected(_) => "rejected",
            };
            assert_eq!(got, *expected, "{status}");
        }
    }

    #[test]
    fn retry_after_seconds_are_read() {
        assert_eq!(parse_retry_after(Some("2")), Some(Duration::from_secs(2)));
        assert_eq!(parse_retry_after(Some("Wed, 21 Oct 2015 07:28:00 GMT")), None);
        assert_eq!(parse_retry_after(None), None);
    }
}

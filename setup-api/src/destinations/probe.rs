//! `POST /api/v1/destinations/{id}/test`: one synthetic event delivered now, as the forwarder
//! delivers (forwarding contract: the event's JSON, `Content-Type: application/json`,
//! `webhook-id`, `webhook-timestamp`, `webhook-signature` with one `v1,` signature per signing
//! secret in force, `traceparent`; plus the destination's extra headers, within its timeout,
//! redirects not followed), answering what the target said.
//!
//! It is sent whatever the destination's filter, and also while it is paused or tripped: an
//! operator asks for it. Nothing is published to JetStream and nothing is retried.

use std::time::{Duration, Instant};
use time::OffsetDateTime;

use hookline_shared::destination::Destination;
use hookline_shared::event::{EventKind, NormalizedEvent, SCHEMA_VERSION};
use hookline_shared::{standard_webhooks, timefmt, Source};

use super::model::{ConnectionError, DestinationTestResult};
use crate::error::ApiError;
use crate::metrics::{ApiMetrics, TestLabels};

/// How much of the target's answer is shown.
pub const EXCERPT_BYTES: usize = 1024;
/// Read beyond the excerpt by the longest secret, so that a secret the target echoes across the
/// excerpt's end is redacted whole before the cut.
const READ_BYTES: usize = EXCERPT_BYTES + 8 * 1024;
/// The tenant of the synthetic event of a destination of every tenant.
pub const TEST_TENANT: &str = "test";
/// Shorter values are not searched for in an answer (they would redact ordinary text).
const MIN_REDACTED_LEN: usize = 4;
const REDACTED: &str = "[redacted]";

pub struct Prober {
    client: reqwest::Client,
    /// For destinations with `restrict_egress`: resolves through `egress::EgressResolver`.
    restricted: reqwest::Client,
    default_timeout: Duration,
}

impl Prober {
    /// `default_timeout_ms`: `forwarder.request_timeout_ms`, for a destination without its own.
    pub fn new(default_timeout_ms: u64) -> Result<Self, reqwest::Error> {
        let builder = || {
            reqwest::Client::builder()
                .connect_timeout(Duration::from_secs(5))
                .redirect(reqwest::redirect::Policy::none())
                .tcp_nodelay(true)
                .user_agent(concat!("hookline/", env!("CARGO_PKG_VERSION")))
        };
        let client = builder().build()?;
        let restricted = builder().dns_resolver(hookline_shared::egress::EgressResolver::system()).build()?;
        Ok(Prober { client, restricted, default_timeout: Duration::from_millis(default_timeout_ms) })
    }

    /// Delivers one synthetic event to `destination` now.
    pub async fn deliver(&self, destination: &Destination, metrics: &ApiMetrics) -> Result<DestinationTestResult, ApiError> {
        let now = OffsetDateTime::now_utc();
        let event = synthetic_event(destination.tenant_id.as_deref().unwrap_or(TEST_TENANT), now)
            .map_err(|e| ApiError::internal(format!("random event id: {e}")))?;
        let body = serde_json::to_vec(&event).map_err(|e| ApiError::internal(format!("test event: {e}")))?;
        let timestamp = now.unix_timestamp();
        let mut signatures = Vec::new();
        for secret in destination.signing_secrets(now) {
            let key = standard_webhooks::key_bytes(secret)
                .map_err(|_| ApiError::internal(format!("destination {}: a signing secret does not parse", destination.id)))?;
            signatures.push(standard_webhooks::sign(&key, &event.id, timestamp, &body));
        }
        let timeout = destination.timeout_ms.map_or(self.default_timeout, Duration::from_millis);
        let client = if destination.restrict_egress {
            // An IP literal never reaches the resolver: check it here.
            hookline_shared::egress::check_url(&destination.url).map_err(|e| ApiError::invalid("url", e.to_string()))?;
            &self.restricted
        } else {
            &self.client
        };
        let mut request = client.post(&destination.url).timeout(timeout);
        for (name, value) in &destination.headers {
            let name = reqwest::header::HeaderName::from_bytes(name.as_bytes())
                .map_err(|_| ApiError::internal(format!("destination {}: a header name is not valid", destination.id)))?;
            let mut value = reqwest::header::HeaderValue::from_str(value.expose())
                .map_err(|_| ApiError::internal(format!("destination {}: the value of header {name} is not valid", destination.id)))?;
            // Kept out of any Debug output, as the forwarder does.
            value.set_sensitive(true);
            request = request.header(name, value);
        }
        request = request
            .header("content-type", "application/json")
            .header(standard_webhooks::ID_HEADER, event.id.as_str())
            .header(standard_webhooks::TIMESTAMP_HEADER, timestamp.to_string())
            .header("traceparent", hookline_shared::telemetry::traceparent(&tracing::Span::current(), None));
        if !signatures.is_empty() {
            request = request.header(standard_webhooks::SIGNATURE_HEADER, signatures.join(" "));
        }
        let started = Instant::now();
        let sent = tokio::time::timeout(timeout, request.body(body).send()).await;
        let result = match sent {
            Ok(Ok(mut response)) => {
                let status = response.status().as_u16();
                let mut read = Vec::new();
                // The rest of the timeout bounds the reading of the excerpt too.
                let remaining = timeout.saturating_sub(started.elapsed());
                let _ = tokio::time::timeout(remaining, async {
                    while read.len() < READ_BYTES {
                        match response.chunk().await {
                            Ok(Some(chunk)) => read.extend_from_slice(&chunk),
                            _ => break,
                        }
                    }
                })
                .await;
                let mut secrets: Vec<&str> = destination.headers.values().map(|v| v.expose()).collect();
                for secret in destination.signing_secrets(now) {
                    secrets.push(secret.expose());
                    secrets.extend(secret.expose().strip_prefix("whsec_"));
                }
                DestinationTestResult {
                    event_id: event.id.clone(),
                    success: (200..300).contains(&status),
                    status: Some(status),
                    duration_ms: elapsed_ms(started),
                    body_excerpt: Some(excerpt(&read, &secrets)),
                    connection_error: None,
                }
            }
            Ok(Err(e)) => failed(&event.id, started, reason(&e), innermost(&e)),
            Err(_) => failed(&event.id, started, "timeout", format!("no answer within {} ms", timeout.as_millis())),
        };
        let outcome = match (result.status, &result.connection_error) {
            (Some(200..=299), _) => "2xx",
            (Some(300..=399), _) => "3xx",
            (Some(400..=499), _) => "4xx",
            (Some(_), _) => "5xx",
            (None, Some(e)) => e.reason,
            (None, None) => "request_error",
        };
        metrics.destination_tests.get_or_create(&TestLabels { outcome }).inc();
        tracing::info!(
            destination_id = %destination.id,
            event_id = %result.event_id,
            status = result.status,
            outcome,
            duration_ms = result.duration_ms,
            "destination test delivery"
        );
        Ok(result)
    }
}

fn elapsed_ms(started: Instant) -> u64 {
    u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX)
}

fn failed(event_id: &str, started: Instant, reason: &'static str, message: String) -> DestinationTestResult {
    DestinationTestResult {
        event_id: event_id.to_string(),
        success: false,
        status: None,
        duration_ms: elapsed_ms(started),
        body_excerpt: None,
        connection_error: Some(ConnectionError { reason, message }),
    }
}

/// As the forwarder classifies a request that got no answer.
fn reason(e: &reqwest::Error) -> &'static str {
    if e.is_timeout() {
        "timeout"
    } else if e.is_connect() {
        "connect_error"
    } else {
        "request_error"
    }
}

/// The innermost cause: "Connection refused (os error 111)" rather than reqwest's sentence,
/// which repeats the URL. At most 200 characters.
fn innermost(e: &(dyn std::error::Error + 'static)) -> String {
    let mut cause = e;
    while let Some(next) = cause.source() {
        cause = next;
    }
    cause.to_string().chars().take(200).collect()
}

/// The first [`EXCERPT_BYTES`] of `body` as text, every value of `secrets` (of at least
/// [`MIN_REDACTED_LEN`] bytes) replaced by `[redacted]` first.
fn excerpt(body: &[u8], secrets: &[&str]) -> String {
    let mut text = String::from_utf8_lossy(body).into_owned();
    let mut secrets: Vec<&str> = secrets.iter().copied().filter(|s| s.len() >= MIN_REDACTED_LEN).collect();
    // Longest first, so that a secret holding another is redacted whole.
    secrets.sort_by_key(|s| std::cmp::Reverse(s.len()));
    for secret in secrets {
        if text.contains(secret) {
            text = text.replace(secret, REDACTED);
        }
    }
    if text.len() > EXCERPT_BYTES {
        let mut end = EXCERPT_BYTES;
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        text.truncate(end);
    }
    text
}

/// The synthetic event: kind `other`, a fresh id (`evt_` and 32 random hex digits, the shape of
/// real ids), source `webchat` (hookline's own), no channel.
pub fn synthetic_event(tenant_id: &str, now: OffsetDateTime) -> Result<NormalizedEvent, getrandom::Error> {
    let mut random = [0u8; 16];
    getrandom::fill(&mut random)?;
    let at = timefmt::to_rfc3339(now);
    Ok(NormalizedEvent {
        id: format!("evt_{}", hex::encode(random)),
        schema_version: SCHEMA_VERSION,
        kind: EventKind::Other,
        source: Source::Webchat,
        platform: Source::Webchat.platforms()[0].to_string(),
        provider: Source::Webchat.provider().to_string(),
        tenant_id: tenant_id.to_string(),
        channel_id: String::new(),
        occurred_at: Some(at.clone()),
        received_at: at,
        conversation: None,
        sender: None,
        message: None,
        status: None,
        payment: None,
        chat_event: None,
        raw: None,
        replay: false,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_excerpt_is_a_kib_of_text_without_the_secrets() {
        let long = "é".repeat(EXCERPT_BYTES);
        let cut = excerpt(long.as_bytes(), &[]);
        assert!(cut.len() <= EXCERPT_BYTES && cut.len() > EXCERPT_BYTES - 2, "{}", cut.len());
        assert!(cut.chars().all(|c| c == 'é'));
        let echoed = format!("{}key=api-key-123456 sig=whsec_c2VjcmV0", "x".repeat(EXCERPT_BYTES - 10));
        let shown = excerpt(echoed.as_bytes(), &["api-key-123456", "whsec_c2VjcmV0", "c2VjcmV0", "ab"]);
        assert!(!shown.contains("api-key"), "{shown}");
        assert!(shown.ends_with("key=[redacted]") || shown.len() == EXCERPT_BYTES, "{shown}");
        assert_eq!(excerpt(b"ab cd", &["ab"]), "ab cd", "too short to redact");
        assert_eq!(excerpt(b"\xff ok", &[]), "\u{fffd} ok");
    }

    #[test]
    fn the_synthetic_event_is_a_fresh_schema_1_event_of_kind_other() {
        let now = OffsetDateTime::now_utc();
        let a = synthetic_event("acme", now).expect("rng");
        let b = synthetic_event(TEST_TENANT, now).expect("rng");
        assert_ne!(a.id, b.id);
        assert_eq!((a.id.len(), a.schema_version, a.kind, a.tenant_id.as_str()), (36, 1, EventKind::Other, "acme"));
        let json = serde_json::to_value(&b).expect("json");
        assert_eq!(json["kind"], "other");
        assert_eq!(json["tenant_id"], "test");
        assert_eq!(json["schema_version"], 1);
    }
}

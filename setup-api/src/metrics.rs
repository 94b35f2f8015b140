//! The setup API's own Prometheus families, in a registry of their own (the shared `Metrics`
//! has no hook to add families), served after the shared ones on `/metrics`. Labels are
//! bounded: route templates, status codes, fixed words. Never an id, never a secret.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;
use std::sync::Arc;

use hookline_shared::metrics::Metrics;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    /// The route template (`/api/v1/channels/{id}`), or `unmatched`.
    pub route: String,
    pub method: String,
    pub status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct MirrorLabels {
    /// `put` or `delete`
    pub op: &'static str,
    /// `ok` or `error`
    pub outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TestLabels {
    /// `2xx`, `3xx`, `4xx`, `5xx`, or `timeout` / `connect_error` / `request_error`
    pub outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PlatformLabels {
    pub platform: &'static str,
    /// `ok`, `rejected` (4xx), `unavailable` (5xx, timeout, connection)
    pub outcome: &'static str,
}

pub struct ApiMetrics {
    registry: Registry,
    pub requests: Family<RequestLabels, Counter>,
    pub request_duration: Histogram,
    pub mirror_writes: Family<MirrorLabels, Counter>,
    pub outbox_pending: Gauge,
    pub mirror_live: Gauge,
    pub destination_mirror_writes: Family<MirrorLabels, Counter>,
    pub destination_outbox_pending: Gauge,
    /// `/test` deliveries of a destination, by outcome.
    pub destination_tests: Family<TestLabels, Counter>,
    pub platform_calls: Family<PlatformLabels, Counter>,
    /// Requests under `/api/v1` refused for their token (401 or 429).
    pub auth_failures: Counter,
}

impl ApiMetrics {
    pub fn new() -> Arc<Self> {
        let mut registry = Registry::with_prefix("hookline");
        let requests = Family::<RequestLabels, Counter>::default();
        registry.register("setup_api_requests", "Requests answered by the setup API, by route, method and status", requests.clone());
        let request_duration = Histogram::new(exponential_buckets(0.0005, 2.0, 16));
        registry.register("setup_api_request_duration_seconds", "Time to answer a setup API request", request_duration.clone());
        let mirror_writes = Family::<MirrorLabels, Counter>::default();
        registry.register(
            "channel_mirror_writes",
            "Writes of channels to the KV bucket hookline_channels, by operation and outcome",
            mirror_writes.clone(),
        );
        let outbox_pending = Gauge::default();
        registry.register(
            "channel_outbox_pending",
            "Channel changes in Postgres not yet acknowledged by the KV bucket",
            outbox_pending.clone(),
        );
        let mirror_live = Gauge::default();
        registry.register(
            "channel_mirror_live",
            "1 once the bucket was reconciled with Postgres and the outbox relay runs",
            mirror_live.clone(),
        );
        let destination_mirror_writes = Family::<MirrorLabels, Counter>::default();
        registry.register(
            "destination_mirror_writes",
            "Writes of destinations to the KV bucket hookline_destinations, by operation and outcome",
            destination_mirror_writes.clone(),
        );
        let destination_outbox_pending = Gauge::default();
        registry.register(
            "destination_outbox_pending",
            "Destination changes in Postgres not yet acknowledged by the KV bucket",
            destination_outbox_pending.clone(),
        );
        let destination_tests = Family::<TestLabels, Counter>::default();
        registry.register(
            "destination_tests",
            "Synthetic deliveries of POST /api/v1/destinations/{id}/test, by outcome",
            destination_tests.clone(),
        );
        let platform_calls = Family::<PlatformLabels, Counter>::default();
        registry.register("platform_calls", "Calls of the setup helpers to platform APIs, by platform and outcome", platform_calls.clone());
        let auth_failures = Counter::default();
        registry.register(
            "setup_api_auth_failures",
            "Requests refused for a missing, unknown or revoked token (401, or 429 past the limit)",
            auth_failures.clone(),
        );
        Arc::new(ApiMetrics {
            registry,
            requests,
            request_duration,
            mirror_writes,
            outbox_pending,
            mirror_live,
            destination_mirror_writes,
            destination_outbox_pending,
            destination_tests,
            platform_calls,
            auth_failures,
        })
    }

    /// The shared families and these, as one OpenMetrics text.
    pub fn encode_with(&self, shared: &Metrics) -> String {
        let mut out = shared.encode();
        if let Some(stripped) = out.strip_suffix("# EOF\n") {
            out.truncate(stripped.len());
        }
        // Encoding into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode_registry(&mut out, &self.registry);
        let _ = prometheus_client::encoding::text::encode_eof(&mut out);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_exposition_with_one_eof() {
        let m = ApiMetrics::new();
        m.mirror_writes.get_or_create(&MirrorLabels { op: "put", outcome: "ok" }).inc();
        let shared = Metrics::new();
        let text = m.encode_with(&shared);
        assert_eq!(text.matches("# EOF").count(), 1, "{text}");
        assert!(text.ends_with("# EOF\n"));
        let shared_text = shared.encode();
        assert!(text.starts_with(shared_text.trim_end_matches("# EOF\n")), "{text}");
        assert!(text.contains("hookline_channel_mirror_writes_total{op=\"put\",outcome=\"ok\"} 1"), "{text}");
    }
}

//! Prometheus metrics: every family hookline exports, defined in one place.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;
use std::sync::Arc;

pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    /// The channel's source, or `unknown` when no channel was found.
    pub source: &'static str,
    pub status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct SignatureFailureLabels {
    pub source: &'static str,
    pub reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PublishLabels {
    /// `acked`, `duplicate`, `timeout`, `error`, `disconnected`
    pub outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct EventLabels {
    pub source: &'static str,
    pub kind: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DlqLabels {
    pub stage: &'static str,
    pub reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabels {
    pub outcome: &'static str,
}

/// The registry and the families in it. One per process; roles share it under `hookline up`.
pub struct Metrics {
    registry: Registry,
    pub ingest_requests: Family<RequestLabels, Counter>,
    pub signature_failures: Family<SignatureFailureLabels, Counter>,
    pub publish_duration: Histogram,
    pub raw_publishes: Family<PublishLabels, Counter>,
    pub request_duration: Histogram,
    pub normalized_events: Family<EventLabels, Counter>,
    pub dlq_messages: Family<DlqLabels, Counter>,
    pub raw_messages: Family<OutcomeLabels, Counter>,
    pub deliveries: Family<OutcomeLabels, Counter>,
    pub delivery_attempts: Histogram,
    pub delivery_duration: Histogram,
    pub forwarder_in_flight_limit: Gauge,
    pub consumer_pending: Family<ConsumerLabels, Gauge>,
    pub group_commit_batch_messages: Family<StreamLabels, Histogram, HistogramFn>,
    pub group_commits: Family<GroupCommitLabels, Counter>,
    pub group_commit_duration: Histogram,
    pub destination_deliveries: Family<DestinationOutcomeLabels, Counter>,
    pub destination_delivery_duration: Family<DestinationLabels, Histogram, HistogramFn>,
    pub destination_pending: Family<DestinationLabels, Gauge>,
    pub destination_state: Family<DestinationLabels, Gauge>,
    pub destination_ordered_held: Family<DestinationLabels, Gauge>,
    pub destination_ordered_owner: Family<DestinationLabels, Gauge>,
    pub log_records: Family<LogRecordLabels, Counter>,
}

/// A background log (`attempts`, `index`) and what became of its records.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct LogRecordLabels {
    pub log: &'static str,
    /// `written`; `dropped_full` (the queue was full: dropped rather than slow the caller);
    /// `failed` (JetStream did not store the batch).
    pub outcome: &'static str,
}

/// A destination's id: bounded by the destinations configured, never an event id.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DestinationLabels {
    pub destination: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DestinationOutcomeLabels {
    pub destination: String,
    /// `delivered`, `retried`, `dead_lettered`, `filtered`
    pub outcome: &'static str,
}

fn delivery_duration_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.0005, 2.0, 16))
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StreamLabels {
    pub stream: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct GroupCommitLabels {
    pub stream: &'static str,
    /// `committed`, `split_duplicate`, `split_refused`, `failed`
    pub outcome: &'static str,
}

/// A histogram family's constructor.
pub type HistogramFn = fn() -> Histogram;

fn batch_size_histogram() -> Histogram {
    Histogram::new(exponential_buckets(1.0, 2.0, 11))
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ConsumerLabels {
    pub consumer: &'static str,
}

impl Metrics {
    pub fn new() -> Arc<Self> {
        let mut registry = Registry::with_prefix("hookline");
        let ingest_requests = Family::<RequestLabels, Counter>::default();
        registry.register("ingest_requests", "Webhook requests answered by ingest, by source and HTTP status", ingest_requests.clone());
        let signature_failures = Family::<SignatureFailureLabels, Counter>::default();
        registry.register("signature_failures", "Webhooks refused with 401, by source and reason", signature_failures.clone());
        let publish_duration = Histogram::new(exponential_buckets(0.0001, 2.0, 16));
        registry.register(
            "jetstream_publish_duration_seconds",
            "Time from publishing a raw webhook to its JetStream ack",
            publish_duration.clone(),
        );
        let raw_publishes = Family::<PublishLabels, Counter>::default();
        registry.register("raw_publishes", "Raw webhooks published to HOOKLINE_RAW, by outcome", raw_publishes.clone());
        let request_duration = Histogram::new(exponential_buckets(0.0001, 2.0, 16));
        registry.register("ingest_request_duration_seconds", "Time from a webhook's headers to ingest's answer", request_duration.clone());
        let normalized_events = Family::<EventLabels, Counter>::default();
        registry.register(
            "normalized_events",
            "Events published to HOOKLINE_EVENTS by the normalizer, by source and kind",
            normalized_events.clone(),
        );
        let dlq_messages = Family::<DlqLabels, Counter>::default();
        registry.register("dlq_messages", "Messages dead-lettered to HOOKLINE_DLQ, by stage and reason", dlq_messages.clone());
        let raw_messages = Family::<OutcomeLabels, Counter>::default();
        registry.register(
            "normalizer_raw_messages",
            "Raw messages handled by the normalizer, by outcome (normalized, dead_lettered, retried)",
            raw_messages.clone(),
        );
        let deliveries = Family::<OutcomeLabels, Counter>::default();
        registry.register(
            "deliveries",
            "Delivery attempts to the messaging service, by outcome (delivered, retried, dead_lettered)",
            deliveries.clone(),
        );
        let delivery_attempts = Histogram::new([1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 8.0, 10.0, 16.0]);
        registry.register(
            "delivery_attempts",
            "The attempt number of each delivery that ended (delivered or dead-lettered)",
            delivery_attempts.clone(),
        );
        let delivery_duration = Histogram::new(exponential_buckets(0.0005, 2.0, 16));
        registry.register("delivery_duration_seconds", "Time of one POST to the messaging service", delivery_duration.clone());
        let forwarder_in_flight_limit = Gauge::default();
        registry.register(
            "forwarder_in_flight_limit",
            "Deliveries allowed in flight now (halves while the target fails, grows back on success)",
            forwarder_in_flight_limit.clone(),
        );
        let consumer_pending = Family::<ConsumerLabels, Gauge>::default();
        registry.register(
            "consumer_pending_messages",
            "Messages not yet delivered to a durable consumer (its lag), by consumer",
            consumer_pending.clone(),
        );
        let group_commit_batch_messages =
            Family::<StreamLabels, Histogram, HistogramFn>::new_with_constructor(batch_size_histogram as HistogramFn);
        registry.register(
            "group_commit_batch_messages",
            "Messages in each group commit (one atomic batch, or one message alone), by stream",
            group_commit_batch_messages.clone(),
        );
        let group_commits = Family::<GroupCommitLabels, Counter>::default();
        registry.register(
            "group_commits",
            "Atomic batches of two or more messages, by stream and outcome (committed; split_duplicate or split_refused: \
             refused whole, then published one by one; failed: no answer)",
            group_commits.clone(),
        );
        let group_commit_duration = Histogram::new(exponential_buckets(0.0001, 2.0, 16));
        registry.register(
            "group_commit_duration_seconds",
            "Time from the first message of an atomic batch to its commit's acknowledgement",
            group_commit_duration.clone(),
        );
        let destination_deliveries = Family::<DestinationOutcomeLabels, Counter>::default();
        registry.register(
            "destination_deliveries",
            "Events handled per destination, by outcome (delivered, retried, dead_lettered, filtered: acked without a delivery)",
            destination_deliveries.clone(),
        );
        let destination_delivery_duration =
            Family::<DestinationLabels, Histogram, HistogramFn>::new_with_constructor(delivery_duration_histogram as HistogramFn);
        registry.register(
            "destination_delivery_duration_seconds",
            "Time of one POST to a destination",
            destination_delivery_duration.clone(),
        );
        let destination_pending = Family::<DestinationLabels, Gauge>::default();
        registry.register(
            "destination_pending_messages",
            "Events not yet delivered to a destination's consumer (its lag), by destination",
            destination_pending.clone(),
        );
        let destination_state = Family::<DestinationLabels, Gauge>::default();
        registry.register(
            "destination_state",
            "A destination's state: 0 active, 1 paused, 2 tripped (circuit breaker open)",
            destination_state.clone(),
        );
        let destination_ordered_held = Family::<DestinationLabels, Gauge>::default();
        registry.register(
            "destination_ordered_held",
            "Events an ordered destination's owner holds (waiting for their turn, or in delivery), by destination",
            destination_ordered_held.clone(),
        );
        let destination_ordered_owner = Family::<DestinationLabels, Gauge>::default();
        registry.register(
            "destination_ordered_owner",
            "1 while this process owns (delivers) an ordered destination, else 0",
            destination_ordered_owner.clone(),
        );
        let log_records = Family::<LogRecordLabels, Counter>::default();
        registry.register(
            "log_records",
            "Records of the background logs (attempts: the delivery log; index: event lookups), by outcome (written; \
             dropped_full: the queue was full, dropped rather than delay a delivery or an event; failed: not stored)",
            log_records.clone(),
        );
        Arc::new(Metrics {
            registry,
            ingest_requests,
            signature_failures,
            publish_duration,
            raw_publishes,
            request_duration,
            normalized_events,
            dlq_messages,
            raw_messages,
            deliveries,
            delivery_attempts,
            delivery_duration,
            forwarder_in_flight_limit,
            consumer_pending,
            group_commit_batch_messages,
            group_commits,
            group_commit_duration,
            destination_deliveries,
            destination_delivery_duration,
            destination_pending,
            destination_state,
            destination_ordered_held,
            destination_ordered_owner,
            log_records,
        })
    }

    /// The OpenMetrics text exposition.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Encoding into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn families_carry_the_designs_names() {
        let m = Metrics::new();
        m.ingest_requests.get_or_create(&RequestLabels { source: "telegram", status: 401 }).inc();
        m.signature_failures.get_or_create(&SignatureFailureLabels { source: "telegram", reason: "mismatch" }).inc();
        m.publish_duration.observe(0.002);
        let text = m.encode();
        assert!(text.contains("hookline_ingest_requests_total{source=\"telegram\",status=\"401\"} 1"), "{text}");
        assert!(text.contains("hookline_signature_failures_total{source=\"telegram\",reason=\"mismatch\"} 1"), "{text}");
        assert!(text.contains("hookline_jetstream_publish_duration_seconds_count 1"), "{text}");
    }
}

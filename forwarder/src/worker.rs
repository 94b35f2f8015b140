//! The delivery worker of one destination: its durable pull consumer on `HOOKLINE_EVENTS`, which
//! every forwarder process shares. It fetches only as many events as it has room (and rate) to
//! deliver, POSTs each, and then acks (2xx), NAKs with the schedule's delay (408/429/5xx/timeouts:
//! JetStream redelivers it later, to whichever process, surviving restarts), or dead-letters it
//! (other 4xx, attempts or age exhausted) with the last status, reason, attempt count and the
//! destination. An event its filter does not want is acked without a delivery (counted). While
//! the destination is paused or its breaker is open, nothing is fetched: events wait in
//! JetStream, using no attempt.
//!
//! `run` is the forwarder role: [`crate::destinations::run`].

use async_nats::jetstream::consumer::{pull, AckPolicy, PullConsumer};
use async_nats::jetstream::{self, AckKind, Message};
use futures_util::StreamExt;
use serde::Deserialize;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use hookline_shared::config::{Config, ConfigError};
use hookline_shared::destination::{Destination, EffectiveSettings, Ordering, DEFAULT_DESTINATION_ID};
use hookline_shared::dlq::{self, DeadLetter};
use hookline_shared::jetstream::{consumer_is_gone, NatsSetupError, CONSUMER_CHECK_EVERY};
use hookline_shared::metrics::{DestinationLabels, DestinationOutcomeLabels, Metrics, OutcomeLabels};
use hookline_shared::names::{self, header};
use hookline_shared::{telemetry, timefmt};

use crate::attempts::{Attempt, AttemptLog};
use crate::deliver::{Deliverer, DelivererError};
use crate::destinations::breaker::{Breaker, Gate};
use crate::destinations::rate::RateLimiter;
use crate::limit::AdaptiveLimit;
use crate::outcome::DeliveryOutcome;
use crate::schedule::{random_unit, RetrySchedule};

#[derive(Debug, thiserror::Error)]
pub enum ForwarderError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Nats(#[from] NatsSetupError),
    #[error(transparent)]
    Deliverer(#[from] DelivererError),
    #[error("cannot create the consumer {consumer}: {message}")]
    Consumer { consumer: String, message: String },
    #[error("the destinations bucket: {0}")]
    Bucket(String),
}

/// Runs the forwarder role until `shutdown`: see [`crate::destinations::run`].
pub async fn run(
    config: &Config,
    metrics: Arc<Metrics>,
    ops_listener: Option<TcpListener>,
    shutdown: CancellationToken,
) -> Result<(), ForwarderError> {
    crate::destinations::run(config, metrics, ops_listener, shutdown).await
}

/// The parts of an event the forwarder needs (the body is sent as stored).
#[derive(Deserialize)]
pub(crate) struct EventHead {
    pub id: String,
    pub tenant_id: String,
    pub received_at: String,
}

/// The durable consumer of destination `destination`: `forwarder` for `default` (the first
/// stage's consumer, so that an upgrade keeps its pending events and scheduled retries), else
/// `destination-<id>`.
pub fn consumer_name(destination: &str) -> String {
    if destination == DEFAULT_DESTINATION_ID {
        names::FORWARDER_CONSUMER.to_string()
    } else {
        hookline_shared::destination::consumer_name(destination)
    }
}

/// Creates the destination's consumer, or brings its filter subjects in line. None when its
/// filter leaves no subject: it receives nothing.
pub async fn ensure_consumer(
    js: &jetstream::Context,
    destination: &Destination,
    ack_wait: Duration,
) -> Result<Option<PullConsumer>, ForwarderError> {
    let name = consumer_name(&destination.id);
    let ordered = destination.ordering == Ordering::Conversation;
    let mut subjects = destination.subjects();
    if subjects.is_empty() {
        return Ok(None);
    }
    if ordered {
        // The normalizers' watermarks, in stream order with the events.
        subjects.push(names::ORDER_WATERMARK_SUBJECT.to_string());
    }
    let err = |e: String| ForwarderError::Consumer { consumer: name.clone(), message: e };
    let stream = js.get_stream(names::EVENTS_STREAM).await.map_err(|e| err(e.to_string()))?;
    let (filter_subject, filter_subjects) = match subjects.as_slice() {
        [one] => (one.clone(), Vec::new()),
        _ => (String::new(), subjects.clone()),
    };
    // A destination gets the events stored from its creation on, however late a forwarder first
    // sets up its consumer. A consumer that exists keeps its deliver policy (JetStream refuses to
    // change one, and two writers may have stamped a declared destination with different
    // creation times); `default` keeps the first stage's consumer as it is.
    let existing = match stream.get_consumer::<pull::Config>(&name).await {
        Ok(mut c) => c.info().await.ok().map(|i| i.config.deliver_policy),
        Err(_) => None,
    };
    let deliver_policy = match (existing, destination.created_at) {
        (Some(policy), _) => policy,
        (None, Some(start_time)) if destination.id != DEFAULT_DESTINATION_ID => {
            jetstream::consumer::DeliverPolicy::ByStartTime { start_time }
        }
        _ => jetstream::consumer::DeliverPolicy::All,
    };
    let consumer = stream
        .create_consumer(pull::Config {
            durable_name: Some(name.clone()),
            description: Some(format!("hookline forwarder: events to destination {}", destination.id)),
            ack_policy: AckPolicy::Explicit,
            ack_wait: if ordered { crate::destinations::ordered::ACK_WAIT } else { ack_wait },
            deliver_policy,
            max_deliver: -1,
            // Events waiting for a retry stay pending: leave room for many. An ordered
            // destination's owner holds what it fetched in memory: bounded tighter.
            max_ack_pending: if ordered { crate::destinations::ordered::MAX_HELD as i64 } else { 100_000 },
            filter_subject,
            filter_subjects,
            ..Default::default()
        })
        .await
        .map_err(|e| err(e.to_string()))?;
    Ok(Some(consumer))
}

/// Everything one destination's deliveries need.
pub struct DestinationWorker {
    pub js: jetstream::Context,
    pub metrics: Arc<Metrics>,
    pub destination: Destination,
    pub settings: EffectiveSettings,
    pub deliverer: Deliverer,
    pub schedule: RetrySchedule,
    pub limit: Arc<AdaptiveLimit>,
    pub rate: Option<RateLimiter>,
    pub breaker: Arc<Breaker>,
    pub batch_size: usize,
    /// The delivery log (off until the registry gives it one).
    pub attempts: AttemptLog,
    label: DestinationLabels,
    /// Whether events must be read to decide (a filter beyond subjects, or a tenant).
    check_events: bool,
}

impl DestinationWorker {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        js: jetstream::Context,
        metrics: Arc<Metrics>,
        destination: Destination,
        settings: EffectiveSettings,
        retry_jitter: f64,
        rate: Option<RateLimiter>,
        breaker: Arc<Breaker>,
        batch_size: usize,
    ) -> Result<Self, ForwarderError> {
        let deliverer = Deliverer::for_destination(&destination, settings.timeout(), settings.max_in_flight)?;
        let check_events = !destination.filter.is_empty() || destination.tenant_id.is_some();
        Ok(DestinationWorker {
            js,
            label: DestinationLabels { destination: destination.id.clone() },
            schedule: RetrySchedule::new(&settings.retry_schedule_s, retry_jitter),
            limit: AdaptiveLimit::new(settings.min_in_flight, settings.max_in_flight),
            metrics,
            deliverer,
            rate,
            breaker,
            batch_size,
            attempts: AttemptLog::off(),
            check_events,
            destination,
            settings,
        })
    }

    /// When `consumer` no longer exists on the server (deleted by hand, or lost with the server's
    /// state: a power cut can take a consumer created moments before), the consumer made again
    /// as at start: the destination's events still in the stream are delivered again (at least
    /// once) rather than none ever again.
    pub async fn consumer_again_if_gone(&self, consumer: &PullConsumer) -> Option<PullConsumer> {
        if !consumer_is_gone(consumer).await {
            return None;
        }
        let ack_wait = consumer.cached_info().config.ack_wait;
        match ensure_consumer(&self.js, &self.destination, ack_wait).await {
            Ok(Some(again)) => {
                tracing::error!(destination = %self.destination.id, consumer = %consumer_name(&self.destination.id),
                    "the destination's consumer was gone from JetStream (deleted, or lost with the server's state); created it again: its events still in HOOKLINE_EVENTS are delivered again");
                Some(again)
            }
            Ok(None) => None,
            Err(e) => {
                tracing::warn!(destination = %self.destination.id, error = %e, "the destination's consumer is gone and cannot be created again yet");
                None
            }
        }
    }

    /// Delivers until `stop`; then finishes (or leaves to redelivery) what it holds.
    pub async fn run(self: Arc<Self>, consumer: PullConsumer, stop: CancellationToken) {
        let mut consumer = consumer;
        // Fetches that brought nothing make the worker look, every few seconds, whether its
        // consumer still exists.
        let mut checked = tokio::time::Instant::now();
        let id = self.destination.id.clone();
        tracing::info!(destination = %id, url = %redact_target(self.deliverer.target()), max_in_flight = self.settings.max_in_flight,
            rate_limit_per_s = ?self.settings.rate_limit_per_s, "destination running");
        let mut tasks = JoinSet::new();
        while !stop.is_cancelled() {
            while tasks.try_join_next().is_some() {}
            if self.destination.id == DEFAULT_DESTINATION_ID {
                // The first stage's gauge: the destination default's limit.
                self.metrics.forwarder_in_flight_limit.set(self.limit.limit() as i64);
            }
            let mut room = self.limit.limit().saturating_sub(self.limit.in_flight()).min(self.batch_size);
            match self.breaker.gate().await {
                Gate::Open => {}
                Gate::Closed => {
                    tokio::select! {
                        _ = stop.cancelled() => break,
                        _ = tokio::time::sleep(Duration::from_millis(200)) => continue,
                    }
                }
                // One probe: a single event, alone.
                Gate::Probe => room = if self.limit.in_flight() == 0 { 1 } else { 0 },
            }
            if let Some(rate) = &self.rate {
                // Never hold more than a couple of seconds' worth: what waits for its turn here
                // must not outlive ack_wait.
                room = room.min(rate.burst());
            }
            if room == 0 {
                let slot = tokio::select! {
                    _ = stop.cancelled() => break,
                    slot = self.limit.acquire() => slot,
                    _ = tokio::time::sleep(Duration::from_millis(200)) => continue,
                };
                drop(slot);
                continue;
            }
            let batch = consumer.batch().max_messages(room).expires(Duration::from_secs(1)).messages().await;
            let mut fetched = 0usize;
            let mut batch = match batch {
                Ok(b) => b,
                Err(e) => {
                    tracing::warn!(destination = %id, error = %e, "cannot fetch from HOOKLINE_EVENTS; retrying");
                    if let Some(again) = self.consumer_again_if_gone(&consumer).await {
                        consumer = again;
                    }
                    tokio::select! {
                        _ = stop.cancelled() => break,
                        _ = tokio::time::sleep(Duration::from_secs(1)) => continue,
                    }
                }
            };
            loop {
                let next = tokio::select! {
                    _ = stop.cancelled() => break,
                    next = batch.next() => next,
                };
                match next {
                    Some(Ok(message)) => {
                        fetched += 1;
                        if let Some(rate) = &self.rate {
                            rate.acquire().await;
                        }
                        let slot = self.limit.acquire().await;
                        let worker = self.clone();
                        tasks.spawn(async move {
                            worker.handle(message).await;
                            drop(slot);
                        });
                    }
                    Some(Err(e)) => {
                        tracing::debug!(destination = %id, error = %e, "fetch ended");
                        break;
                    }
                    None => break,
                }
            }
            if fetched == 0 && checked.elapsed() >= CONSUMER_CHECK_EVERY {
                checked = tokio::time::Instant::now();
                if let Some(again) = self.consumer_again_if_gone(&consumer).await {
                    consumer = again;
                }
            }
        }
        tracing::info!(destination = %id, in_flight = tasks.len(), "destination stopping: finishing the deliveries in flight");
        while tasks.join_next().await.is_some() {}
    }

    async fn handle(&self, message: Message) {
        if message.subject.as_str() == names::ORDER_WATERMARK_SUBJECT {
            // Left from the time this destination was ordered: only ordered delivery reads them.
            self.finish(&message, AckKind::Ack).await;
            return;
        }
        let (seq, attempt) = match message.info() {
            Ok(info) => (info.stream_sequence, info.delivered.max(1) as usize),
            Err(e) => {
                tracing::error!(error = %e, "a message without JetStream metadata; leaving it to redelivery");
                return;
            }
        };
        let head: EventHead = match serde_json::from_slice(&message.payload) {
            Ok(h) => h,
            Err(e) => {
                let ack = self.dead_letter(&message, seq, attempt, "unknown", "invalid_event", &e.to_string(), None).await;
                self.finish(&message, ack).await;
                return;
            }
        };
        // A replayed or re-driven event for one destination carries its id: the others skip it.
        if !self.wants(&message) {
            self.count("filtered");
            self.finish(&message, AckKind::Ack).await;
            return;
        }
        let span = self.span(&head, attempt);
        let ack = self.attempt(&message, &head, seq, attempt, &span).await;
        self.finish(&message, ack).instrument(span).await;
    }

    /// The span of one attempt, child of the event's trace.
    pub(crate) fn span(&self, head: &EventHead, attempt: usize) -> tracing::Span {
        tracing::info_span!("forward", destination = %self.destination.id, event_id = %head.id, tenant_id = %head.tenant_id, attempt)
    }

    /// One attempt at delivering `message`, in `span`: what to do with the message afterwards.
    pub(crate) async fn attempt(&self, message: &Message, head: &EventHead, seq: u64, attempt: usize, span: &tracing::Span) -> AckKind {
        let traceparent_in = message.headers.as_ref().and_then(|h| h.get(header::TRACEPARENT)).map(|v| v.as_str().to_string());
        telemetry::set_parent(span, traceparent_in.as_deref());
        let traceparent = telemetry::traceparent(span, traceparent_in.as_deref());
        self.deliver(message, head, seq, attempt, &traceparent).instrument(span.clone()).await
    }

    /// Whether `message` is for this destination: not a replay or re-drive meant for another,
    /// and wanted by its filter.
    pub(crate) fn wants(&self, message: &Message) -> bool {
        let for_other =
            message.headers.as_ref().and_then(|h| h.get(header::DESTINATION)).is_some_and(|d| d.as_str() != self.destination.id);
        !for_other && (!self.check_events || self.accepts(message))
    }

    fn accepts(&self, message: &Message) -> bool {
        match serde_json::from_slice::<serde_json::Value>(&message.payload) {
            Ok(event) => self.destination.accepts(&event),
            Err(_) => true,
        }
    }

    pub(crate) async fn finish(&self, message: &Message, ack: AckKind) {
        if let Err(e) = message.ack_with(ack).await {
            tracing::warn!(error = %e, "ack failed; the event will be redelivered");
        }
    }

    async fn deliver(&self, message: &Message, head: &EventHead, seq: u64, attempt: usize, traceparent: &str) -> AckKind {
        let too_old = timefmt::parse_rfc3339(&head.received_at)
            .is_some_and(|t| (time::OffsetDateTime::now_utc() - t).whole_seconds() > self.settings.max_age_s as i64);
        if too_old && attempt > 1 {
            return self.dead_letter(message, seq, attempt, &head.tenant_id, "age_exhausted", "older than max_age_s", None).await;
        }
        let (outcome, took, answer) = self.deliverer.deliver(&head.id, message.payload.clone(), traceparent).await;
        self.metrics.delivery_duration.observe(took.as_secs_f64());
        self.metrics.destination_delivery_duration.get_or_create(&self.label).observe(took.as_secs_f64());
        let ack = match outcome {
            DeliveryOutcome::Delivered(status) => {
                self.limit.on_success();
                self.breaker.on_success().await;
                self.count("delivered");
                self.metrics.delivery_attempts.observe(attempt as f64);
                tracing::debug!(status, "delivered");
                AckKind::Ack
            }
            DeliveryOutcome::Retryable { status, reason, retry_after } => {
                self.limit.on_failure();
                self.breaker.on_failure().await;
                let last = outcome.last_status();
                match self.schedule.delay_after(attempt, random_unit(), retry_after) {
                    Some(delay) => {
                        self.count("retried");
                        tracing::info!(?status, reason, ?delay, "delivery failed; retry scheduled");
                        AckKind::Nak(Some(delay))
                    }
                    None => {
                        let detail = format!("{} attempts, the last answered {last}", attempt);
                        self.dead_letter(message, seq, attempt, &head.tenant_id, "attempts_exhausted", &detail, Some(&last)).await
                    }
                }
            }
            DeliveryOutcome::Rejected(status) => {
                // The target answered: it is up, whatever it thinks of this event.
                self.breaker.on_success().await;
                let last = status.to_string();
                self.dead_letter(
                    message,
                    seq,
                    attempt,
                    &head.tenant_id,
                    "rejected_4xx",
                    &format!("the target answered {status}"),
                    Some(&last),
                )
                .await
            }
        };
        let event = Attempt { event_id: &head.id, tenant_id: &head.tenant_id, seq, subject: message.subject.as_str(), attempt };
        self.attempts.record(&self.destination.id, event, &outcome, took, answer, &ack);
        ack
    }

    pub(crate) fn count(&self, outcome: &'static str) {
        if outcome != "filtered" {
            self.metrics.deliveries.get_or_create(&OutcomeLabels { outcome }).inc();
        }
        self.metrics
            .destination_deliveries
            .get_or_create(&DestinationOutcomeLabels { destination: self.destination.id.clone(), outcome })
            .inc();
    }

    #[allow(clippy::too_many_arguments)]
    pub(crate) async fn dead_letter(
        &self,
        message: &Message,
        seq: u64,
        attempt: usize,
        tenant: &str,
        reason: &'static str,
        detail: &str,
        last_status: Option<&str>,
    ) -> AckKind {
        let who = if names::is_valid_id(tenant) { tenant } else { "unknown" };
        let letter = DeadLetter {
            stage: "forward",
            reason,
            detail,
            attempts: attempt as i64,
            subject: message.subject.as_str(),
            seq,
            who,
            body: message.payload.clone(),
            original_headers: message.headers.as_ref(),
            last_status,
            destination: Some(&self.destination.id),
        };
        match dlq::publish(&self.js, &self.metrics, letter, Duration::from_secs(10)).await {
            Ok(()) => {
                self.count("dead_lettered");
                self.metrics.delivery_attempts.observe(attempt as f64);
                AckKind::Ack
            }
            Err(e) => {
                tracing::error!(error = %e, "cannot dead-letter; the event will be redelivered");
                AckKind::Nak(Some(Duration::from_secs(5)))
            }
        }
    }
}

pub fn redact_target(url: &str) -> String {
    hookline_shared::jetstream::redact_url(url.split('?').next().unwrap_or(url))
}

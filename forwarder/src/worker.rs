//! The forwarder worker: a durable pull consumer `forwarder` on `HOOKLINE_EVENTS` that any
//! number of processes share. It fetches only as many events as it has room to deliver, POSTs
//! each, and then acks (2xx), NAKs with the schedule's delay (408/429/5xx/timeouts: JetStream
//! redelivers it later, to whichever process, surviving restarts), or dead-letters it (other 4xx,
//! attempts or age exhausted) with the last status, reason and attempt count.

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

use hookline_shared::config::{Config, ConfigError, ForwarderConfig};
use hookline_shared::dlq::{self, DeadLetter};
use hookline_shared::jetstream::{self as js_setup, NatsSetupError};
use hookline_shared::metrics::{Metrics, OutcomeLabels};
use hookline_shared::names::{self, header};
use hookline_shared::{ops_server, telemetry, timefmt};

use crate::deliver::{Deliverer, DelivererError};
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
    #[error("cannot create the consumer forwarder: {0}")]
    Consumer(String),
}

/// The parts of an event the forwarder needs (the body is sent as stored).
#[derive(Deserialize)]
struct EventHead {
    id: String,
    tenant_id: String,
    received_at: String,
}

struct Worker {
    js: jetstream::Context,
    metrics: Arc<Metrics>,
    deliverer: Deliverer,
    schedule: RetrySchedule,
    limit: Arc<AdaptiveLimit>,
    config: ForwarderConfig,
}

/// Runs until `shutdown`; then stops fetching and finishes (or leaves to redelivery) what it holds.
pub async fn run(
    config: &Config,
    metrics: Arc<Metrics>,
    ops_listener: Option<TcpListener>,
    shutdown: CancellationToken,
) -> Result<(), ForwarderError> {
    let cfg = config.forwarder.clone();
    let target = cfg
        .target_url
        .clone()
        .ok_or_else(|| ConfigError::new("forwarder.target_url", "required: where events are delivered (or MESSAGING_SERVICE_URL)"))?;
    if cfg.signing_secret.is_none() {
        tracing::warn!("forwarder.signing_secret is not set: deliveries are not signed");
    }
    let deliverer = Deliverer::new(&target, cfg.signing_secret.as_ref(), Duration::from_millis(cfg.request_timeout_ms), cfg.max_in_flight)?;
    let setup = async {
        let client = js_setup::connect(&config.nats, "hookline-forwarder").await?;
        let js = jetstream::new(client.clone());
        js_setup::ensure_streams(&js, &config.streams).await?;
        Ok::<_, ForwarderError>((client, js))
    };
    // A signal during start-up (NATS still unreachable, say) stops it at once.
    let Some(setup) = shutdown.run_until_cancelled(setup).await else {
        tracing::info!("forwarder stopped during start-up");
        return Ok(());
    };
    let (client, js) = setup?;
    let stream = js.get_stream(names::EVENTS_STREAM).await.map_err(|e| ForwarderError::Consumer(e.to_string()))?;
    let consumer: PullConsumer = stream
        .create_consumer(pull::Config {
            durable_name: Some(names::FORWARDER_CONSUMER.to_string()),
            description: Some("hookline forwarder: events to the messaging service".to_string()),
            ack_policy: AckPolicy::Explicit,
            ack_wait: Duration::from_secs(cfg.ack_wait_s),
            max_deliver: -1,
            // Events waiting for a retry stay pending: leave room for many.
            max_ack_pending: 100_000,
            filter_subject: names::EVENTS_SUBJECTS.to_string(),
            ..Default::default()
        })
        .await
        .map_err(|e| ForwarderError::Consumer(e.to_string()))?;

    if let Some(listener) = ops_listener {
        let probe = client.clone();
        let ready = Arc::new(move || probe.connection_state() == async_nats::connection::State::Connected);
        let note = hookline_shared::durability::DurabilityNote::default();
        hookline_shared::durability::check(config.nats.monitor_url.as_deref(), "forwarder", &note).await;
        tokio::spawn(ops_server::serve(listener, metrics.clone(), ready, note, shutdown.clone()));
    }
    tokio::spawn(js_setup::report_lag(consumer.clone(), names::FORWARDER_CONSUMER, metrics.clone(), shutdown.clone()));

    let worker = Arc::new(Worker {
        js,
        metrics,
        deliverer,
        schedule: RetrySchedule::new(&cfg.retry_schedule_s, cfg.retry_jitter),
        limit: AdaptiveLimit::new(cfg.min_in_flight, cfg.max_in_flight),
        config: cfg.clone(),
    });
    tracing::info!(target = %redact_target(&target), max_in_flight = cfg.max_in_flight, "forwarder running");
    let mut tasks = JoinSet::new();
    while !shutdown.is_cancelled() {
        while tasks.try_join_next().is_some() {}
        worker.metrics.forwarder_in_flight_limit.set(worker.limit.limit() as i64);
        let room = worker.limit.limit().saturating_sub(worker.limit.in_flight()).min(cfg.batch_size);
        if room == 0 {
            // Wait for a delivery to finish.
            let slot = tokio::select! {
                _ = shutdown.cancelled() => break,
                slot = worker.limit.acquire() => slot,
            };
            drop(slot);
            continue;
        }
        let batch = consumer.batch().max_messages(room).expires(Duration::from_secs(1)).messages().await;
        let mut batch = match batch {
            Ok(b) => b,
            Err(e) => {
                tracing::warn!(error = %e, "cannot fetch from HOOKLINE_EVENTS; retrying");
                tokio::select! {
                    _ = shutdown.cancelled() => break,
                    _ = tokio::time::sleep(Duration::from_secs(1)) => continue,
                }
            }
        };
        loop {
            let next = tokio::select! {
                _ = shutdown.cancelled() => break,
                next = batch.next() => next,
            };
            match next {
                Some(Ok(message)) => {
                    let slot = worker.limit.acquire().await;
                    let worker = worker.clone();
                    tasks.spawn(async move {
                        worker.handle(message).await;
                        drop(slot);
                    });
                }
                Some(Err(e)) => {
                    tracing::debug!(error = %e, "fetch ended");
                    break;
                }
                None => break,
            }
        }
    }
    tracing::info!(in_flight = tasks.len(), "forwarder stopping: finishing the deliveries in flight");
    while tasks.join_next().await.is_some() {}
    let _ = client.flush().await;
    Ok(())
}

fn redact_target(url: &str) -> String {
    hookline_shared::jetstream::redact_url(url.split('?').next().unwrap_or(url))
}

impl Worker {
    async fn handle(&self, message: Message) {
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
        let span = tracing::info_span!("forward", event_id = %head.id, tenant_id = %head.tenant_id, attempt);
        let traceparent_in = message.headers.as_ref().and_then(|h| h.get(header::TRACEPARENT)).map(|v| v.as_str().to_string());
        telemetry::set_parent(&span, traceparent_in.as_deref());
        let traceparent = telemetry::traceparent(&span, traceparent_in.as_deref());
        let ack = self.deliver(&message, &head, seq, attempt, &traceparent).instrument(span.clone()).await;
        self.finish(&message, ack).instrument(span).await;
    }

    async fn finish(&self, message: &Message, ack: AckKind) {
        if let Err(e) = message.ack_with(ack).await {
            tracing::warn!(error = %e, "ack failed; the event will be redelivered");
        }
    }

    async fn deliver(&self, message: &Message, head: &EventHead, seq: u64, attempt: usize, traceparent: &str) -> AckKind {
        let too_old = timefmt::parse_rfc3339(&head.received_at)
            .is_some_and(|t| (time::OffsetDateTime::now_utc() - t).whole_seconds() > self.config.max_age_s as i64);
        if too_old && attempt > 1 {
            return self.dead_letter(message, seq, attempt, &head.tenant_id, "age_exhausted", "older than forwarder.max_age_s", None).await;
        }
        let (outcome, took) = self.deliverer.deliver(&head.id, message.payload.clone(), traceparent).await;
        self.metrics.delivery_duration.observe(took.as_secs_f64());
        match outcome {
            DeliveryOutcome::Delivered(status) => {
                self.limit.on_success();
                self.count("delivered");
                self.metrics.delivery_attempts.observe(attempt as f64);
                tracing::debug!(status, "delivered");
                AckKind::Ack
            }
            DeliveryOutcome::Retryable { status, reason, retry_after } => {
                self.limit.on_failure();
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
        }
    }

    fn count(&self, outcome: &'static str) {
        self.metrics.deliveries.get_or_create(&OutcomeLabels { outcome }).inc();
    }

    #[allow(clippy::too_many_arguments)]
    async fn dead_letter(
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

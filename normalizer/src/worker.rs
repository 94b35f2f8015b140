//! The normalizer worker: a durable pull consumer `normalizer` on `HOOKLINE_RAW` that any number
//! of processes share. Each raw message becomes its events in `HOOKLINE_EVENTS` (`Nats-Msg-Id` =
//! event id, so a redelivery stores nothing twice) and is acked only after JetStream acked all of
//! them; a payload that cannot be parsed goes to `HOOKLINE_DLQ` with its reason and is then acked.
//! NATS trouble is never dead-lettered: the message is NAKed and redelivered after a delay.

use async_nats::jetstream::consumer::{pull, AckPolicy};
use async_nats::jetstream::{self, AckKind, Message};
use futures_util::StreamExt;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use hookline_shared::background_log::BackgroundLog;
use hookline_shared::config::{Config, NormalizerConfig};
use hookline_shared::dlq::{self, DeadLetter};
use hookline_shared::group_commit::{GroupCommit, GroupCommitConfig};
use hookline_shared::jetstream::{self as js_setup, NatsSetupError};
use hookline_shared::metrics::{EventLabels, Metrics, OutcomeLabels};
use hookline_shared::names::{self, header};
use hookline_shared::{ops_server, telemetry, Source};

use crate::publish::{index_events, publish_events, EventPublisher};
use crate::raw::{read_headers, InvalidHeaders};
use crate::{normalize, RawInput};

#[derive(Debug, thiserror::Error)]
pub enum WorkerError {
    #[error(transparent)]
    Nats(#[from] NatsSetupError),
    #[error("cannot create the consumer {consumer}: {message}")]
    Consumer { consumer: &'static str, message: String },
}

struct Worker {
    js: jetstream::Context,
    events: EventPublisher,
    /// The lookup index (`HOOKLINE_INDEX`), written in the background.
    index: BackgroundLog,
    metrics: Arc<Metrics>,
    config: NormalizerConfig,
}

/// What became of one raw message.
enum Outcome {
    /// Its events (possibly none) are stored: ack.
    Normalized,
    /// It is in the DLQ: ack.
    DeadLettered,
    /// Not stored for a reason outside the message (NATS): NAK, redelivered after the delay.
    Retry(String),
}

/// Runs until `shutdown`; then stops fetching, finishes the messages it holds (never acking
/// unfinished work: JetStream redelivers those) and returns.
pub async fn run(
    config: &Config,
    metrics: Arc<Metrics>,
    ops_listener: Option<TcpListener>,
    shutdown: CancellationToken,
) -> Result<(), WorkerError> {
    let setup = async {
        let client = js_setup::connect(&config.nats, "hookline-normalizer").await?;
        let js = jetstream::new(client.clone());
        js_setup::ensure_streams(&js, &config.streams).await?;
        Ok::<_, WorkerError>((client, js))
    };
    // A signal during start-up (NATS still unreachable, say) stops it at once.
    let Some(setup) = shutdown.run_until_cancelled(setup).await else {
        tracing::info!("normalizer stopped during start-up");
        return Ok(());
    };
    let (client, js) = setup?;
    let cfg = config.normalizer.clone();
    let consumer_error = |e: String| WorkerError::Consumer { consumer: names::NORMALIZER_CONSUMER, message: e };
    let stream = js.get_stream(names::RAW_STREAM).await.map_err(|e| consumer_error(e.to_string()))?;
    let mut consumer: jetstream::consumer::PullConsumer =
        stream.create_consumer(consumer_config(&cfg)).await.map_err(|e| consumer_error(e.to_string()))?;

    if let Some(listener) = ops_listener {
        let probe = client.clone();
        let ready = Arc::new(move || probe.connection_state() == async_nats::connection::State::Connected);
        let note = hookline_shared::durability::DurabilityNote::default();
        hookline_shared::durability::check(config.nats.monitor_url.as_deref(), "normalizer", &note).await;
        tokio::spawn(ops_server::serve(listener, metrics.clone(), ready, note, shutdown.clone()));
    }

    tokio::spawn(js_setup::report_lag(consumer.clone(), names::NORMALIZER_CONSUMER, metrics.clone(), shutdown.clone()));
    tokio::spawn(crate::watermark::run(js.clone(), consumer.clone(), shutdown.clone()));

    let commits = GroupCommit::start(
        js.clone(),
        GroupCommitConfig {
            max_batch: config.nats.group_commit_max_batch,
            max_in_flight: config.nats.group_commit_max_in_flight,
            ack_timeout: Duration::from_millis(cfg.publish_ack_timeout_ms),
        },
        metrics.clone(),
        names::EVENTS_STREAM,
    );
    let index = if cfg.index { BackgroundLog::start(js.clone(), metrics.clone(), "index") } else { BackgroundLog::off() };
    let worker = Arc::new(Worker { js, events: EventPublisher::Grouped(commits), index, metrics, config: cfg.clone() });
    let permits = Arc::new(Semaphore::new(cfg.max_in_flight));
    let mut tasks = JoinSet::new();
    tracing::info!(consumer = names::NORMALIZER_CONSUMER, max_in_flight = cfg.max_in_flight, "normalizer running");
    // Pull errors make the worker look, every few seconds, whether its consumer still exists.
    let mut checked = tokio::time::Instant::now();
    'outer: while !shutdown.is_cancelled() {
        let mut messages = match consumer.stream().max_messages_per_batch(cfg.batch_size).messages().await {
            Ok(m) => m,
            Err(e) => {
                tracing::warn!(error = %e, "cannot pull from HOOKLINE_RAW; retrying");
                if let Some(again) = consumer_again_if_gone(&stream, &consumer, &cfg).await {
                    consumer = again;
                }
                tokio::select! {
                    _ = shutdown.cancelled() => break,
                    _ = tokio::time::sleep(Duration::from_secs(1)) => continue,
                }
            }
        };
        loop {
            let permit = tokio::select! {
                _ = shutdown.cancelled() => break 'outer,
                permit = permits.clone().acquire_owned() => match permit {
                    Ok(p) => p,
                    Err(_) => break 'outer,
                },
            };
            let next = tokio::select! {
                _ = shutdown.cancelled() => break 'outer,
                next = messages.next() => next,
                // Quiet for a while: is the consumer still there? (A pull on a deleted consumer
                // brings nothing, no error.)
                _ = tokio::time::sleep_until(checked + js_setup::CONSUMER_CHECK_EVERY) => {
                    checked = tokio::time::Instant::now();
                    if let Some(again) = consumer_again_if_gone(&stream, &consumer, &cfg).await {
                        consumer = again;
                        continue 'outer;
                    }
                    continue;
                }
            };
            match next {
                Some(Ok(message)) => {
                    checked = tokio::time::Instant::now();
                    let worker = worker.clone();
                    tasks.spawn(async move {
                        worker.handle(message).await;
                        drop(permit);
                    });
                }
                Some(Err(e)) => {
                    tracing::warn!(error = %e, "pull from HOOKLINE_RAW failed");
                    if checked.elapsed() >= js_setup::CONSUMER_CHECK_EVERY {
                        checked = tokio::time::Instant::now();
                        if let Some(again) = consumer_again_if_gone(&stream, &consumer, &cfg).await {
                            consumer = again;
                            continue 'outer;
                        }
                    }
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
                None => {
                    tracing::warn!("pull stream ended; re-creating it");
                    break;
                }
            }
            while tasks.try_join_next().is_some() {}
        }
    }
    tracing::info!(in_flight = tasks.len(), "normalizer stopping: finishing the messages it holds");
    while tasks.join_next().await.is_some() {}
    let _ = client.flush().await;
    Ok(())
}

use crate::raw::header_text as text;

fn consumer_config(cfg: &NormalizerConfig) -> pull::Config {
    pull::Config {
        durable_name: Some(names::NORMALIZER_CONSUMER.to_string()),
        description: Some("hookline normalizer: raw webhooks to events".to_string()),
        ack_policy: AckPolicy::Explicit,
        ack_wait: Duration::from_secs(cfg.ack_wait_s),
        max_deliver: -1,
        max_ack_pending: (cfg.max_in_flight * 4) as i64,
        filter_subject: names::RAW_SUBJECTS.to_string(),
        ..Default::default()
    }
}

/// When the consumer no longer exists on the server (deleted by hand, or lost with the server's
/// state at a power cut), the consumer made again: the raw webhooks still in the stream are
/// normalized again (their events carry their ids, so the duplicates are dropped) rather than
/// never again.
async fn consumer_again_if_gone(
    stream: &jetstream::stream::Stream,
    consumer: &jetstream::consumer::PullConsumer,
    cfg: &NormalizerConfig,
) -> Option<jetstream::consumer::PullConsumer> {
    if !js_setup::consumer_is_gone(consumer).await {
        return None;
    }
    match stream.create_consumer(consumer_config(cfg)).await {
        Ok(again) => {
            tracing::error!(consumer = names::NORMALIZER_CONSUMER,
                "the normalizer's consumer was gone from JetStream (deleted, or lost with the server's state); created it again: the raw webhooks still in HOOKLINE_RAW are normalized again");
            Some(again)
        }
        Err(e) => {
            tracing::warn!(error = %e, "the normalizer's consumer is gone and cannot be created again yet");
            None
        }
    }
}

impl Worker {
    async fn handle(&self, message: Message) {
        let (seq, delivered) = match message.info() {
            Ok(info) => (info.stream_sequence, info.delivered),
            Err(e) => {
                tracing::error!(error = %e, "a message without JetStream metadata; leaving it to redelivery");
                return;
            }
        };
        let headers = message.headers.as_ref();
        let span =
            tracing::info_span!("normalize", source = text(headers, header::SOURCE).unwrap_or("unknown"), stream_seq = seq, delivered);
        telemetry::set_parent(&span, text(headers, header::TRACEPARENT));
        let outcome = self.process(&message, seq, delivered, &span).instrument(span.clone()).await;
        let _enter = span.enter();
        let (label, ack) = match outcome {
            Outcome::Normalized => ("normalized", AckKind::Ack),
            Outcome::DeadLettered => ("dead_lettered", AckKind::Ack),
            Outcome::Retry(reason) => {
                tracing::warn!(%reason, "not stored; redelivery in {:?}", Duration::from_millis(self.config.retry_delay_ms));
                ("retried", AckKind::Nak(Some(Duration::from_millis(self.config.retry_delay_ms))))
            }
        };
        self.metrics.raw_messages.get_or_create(&OutcomeLabels { outcome: label }).inc();
        if let Err(e) = message.ack_with(ack).await {
            // The events are stored; a redelivery republishes them with the same ids (deduplicated).
            tracing::warn!(error = %e, "ack failed; the message will be redelivered");
        }
    }

    async fn process(&self, message: &Message, seq: u64, delivered: i64, span: &tracing::Span) -> Outcome {
        let raw = match read_headers(message.headers.as_ref()) {
            Ok(raw) => raw,
            Err(invalid) => {
                let who = invalid.source.map_or("unknown", Source::as_str);
                return self.dead_letter(message, InvalidHeaders::REASON, InvalidHeaders::DETAIL, who, seq, delivered).await;
            }
        };
        let context = raw.context(message.subject.as_str(), seq);
        let input =
            RawInput { source: raw.source, body: &message.payload, content_type: raw.content_type, query: raw.query, context: &context };
        match normalize(&input) {
            Ok(events) => {
                let traceparent = telemetry::traceparent(span, raw.traceparent);
                let timeout = Duration::from_millis(self.config.publish_ack_timeout_ms);
                match publish_events(&self.events, &events, raw.tenant, raw.channel, &traceparent, None, timeout).await {
                    Ok(seqs) => {
                        index_events(&self.index, &events, &seqs, raw.tenant);
                        for event in &events {
                            self.metrics
                                .normalized_events
                                .get_or_create(&EventLabels { source: event.source.as_str(), kind: event.kind.as_str() })
                                .inc();
                        }
                        tracing::debug!(events = events.len(), "normalized");
                        Outcome::Normalized
                    }
                    Err(e) => Outcome::Retry(e),
                }
            }
            Err(e) => self.dead_letter(message, e.code(), &e.to_string(), raw.source.as_str(), seq, delivered).await,
        }
    }

    async fn dead_letter(&self, message: &Message, reason: &'static str, detail: &str, who: &str, seq: u64, delivered: i64) -> Outcome {
        let letter = DeadLetter {
            stage: "normalize",
            reason,
            detail,
            attempts: delivered,
            subject: message.subject.as_str(),
            seq,
            who,
            body: message.payload.clone(),
            original_headers: message.headers.as_ref(),
            destination: None,
            last_status: None,
        };
        match dlq::publish(&self.js, &self.metrics, letter, Duration::from_millis(self.config.publish_ack_timeout_ms)).await {
            Ok(()) => Outcome::DeadLettered,
            Err(e) => Outcome::Retry(e.to_string()),
        }
    }
}

//! Connecting to NATS and creating (or updating) hookline's streams and the channels bucket
//! from configuration, at every role's start.

use async_nats::jetstream::{self, kv, stream};
use backon::{ExponentialBuilder, Retryable};
use std::time::Duration;

use crate::config::{DiscardPolicy, NatsConfig, StreamLimits, StreamsConfig};
use crate::names;

#[derive(Debug, thiserror::Error)]
pub enum NatsSetupError {
    #[error("nats.url is not set")]
    NoUrl,
    #[error("cannot connect to NATS at {url}: {message}")]
    Connect { url: String, message: String },
    #[error("cannot create or update stream {stream}: {message}")]
    Stream { stream: &'static str, message: String },
    #[error("cannot create or update the KV bucket {bucket}: {message}")]
    Bucket { bucket: &'static str, message: String },
}

/// `nats://user:pass@host:4222` → `nats://***@host:4222`: safe for logs and errors.
pub fn redact_url(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme_end), Some(at)) if at > scheme_end => {
            format!("{}***{}", &url[..scheme_end + 3], &url[at..])
        }
        (None, Some(at)) => format!("***{}", &url[at..]),
        _ => url.to_string(),
    }
}

/// `nats.url`'s comma-separated servers, parsed.
pub fn server_addrs(url: &str) -> Result<Vec<async_nats::ServerAddr>, String> {
    url.split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| s.parse::<async_nats::ServerAddr>().map_err(|e| format!("{}: {e}", redact_url(s))))
        .collect()
}

/// Connects, retrying with backoff for up to about a minute, and logs every change of the
/// connection's state afterwards. The client then reconnects on its own, forever.
pub async fn connect(config: &NatsConfig, client_name: &str) -> Result<async_nats::Client, NatsSetupError> {
    let url = config.url.clone().ok_or(NatsSetupError::NoUrl)?;
    let shown = redact_url(&url);
    let addrs = server_addrs(&url).map_err(|message| NatsSetupError::Connect { url: shown.clone(), message })?;
    let timeout = Duration::from_millis(config.connect_timeout_ms);
    let attempt = || {
        let addrs = addrs.clone();
        let shown = shown.clone();
        async move {
            async_nats::ConnectOptions::new()
                .name(client_name)
                .connection_timeout(timeout)
                .max_reconnects(None)
                .event_callback(move |event| {
                    let shown = shown.clone();
                    async move {
                        match event {
                            async_nats::Event::Connected => {
                                tracing::info!(nats = %shown, "NATS connected")
                            }
                            async_nats::Event::Disconnected => {
                                tracing::warn!(nats = %shown, "NATS disconnected; reconnecting")
                            }
                            async_nats::Event::Closed => tracing::info!(nats = %shown, "NATS connection closed"),
                            other => tracing::warn!(nats = %shown, event = %other, "NATS event"),
                        }
                    }
                })
                .connect(addrs)
                .await
        }
    };
    attempt
        .retry(
            ExponentialBuilder::default()
                .with_min_delay(Duration::from_millis(200))
                .with_max_delay(Duration::from_secs(5))
                .with_max_times(15),
        )
        .notify(|err, delay| tracing::warn!(nats = %redact_url(&url), error = %err, retry_in = ?delay, "cannot reach NATS yet"))
        .await
        .map_err(|e| NatsSetupError::Connect { url: redact_url(&url), message: e.to_string() })
}

fn stream_config(name: &str, subjects: &[&str], limits: &StreamLimits) -> stream::Config {
    stream::Config {
        name: name.to_string(),
        subjects: subjects.iter().map(|s| s.to_string()).collect(),
        storage: stream::StorageType::File,
        retention: stream::RetentionPolicy::Limits,
        max_age: Duration::from_secs(limits.max_age_s),
        max_bytes: limits.max_bytes,
        num_replicas: limits.replicas,
        duplicate_window: Duration::from_secs(limits.duplicate_window_s),
        discard: match limits.discard {
            DiscardPolicy::New => stream::DiscardPolicy::New,
            DiscardPolicy::Old => stream::DiscardPolicy::Old,
        },
        // Group commit stores concurrent publishes as one atomic batch (nats-server 2.12+).
        allow_atomic_publish: true,
        ..Default::default()
    }
}

/// Retries a JetStream set-up call for about half a minute: a cluster that is starting answers
/// "JetStream not ready" until it has elected its leaders.
fn setup_retry() -> ExponentialBuilder {
    ExponentialBuilder::default().with_min_delay(Duration::from_millis(200)).with_max_delay(Duration::from_secs(3)).with_max_times(15)
}

/// `HOOKLINE_INDEX` keeps its keys as long as the events they point to (`streams.events`'
/// age and replicas) and drops the oldest first: an index never refuses a write.
fn index_limits(events: &StreamLimits) -> StreamLimits {
    StreamLimits {
        max_age_s: events.max_age_s,
        max_bytes: -1,
        replicas: events.replicas,
        duplicate_window_s: 120.min(events.max_age_s.max(1)),
        discard: DiscardPolicy::Old,
    }
}

/// How a best-effort log stream (`HOOKLINE_ATTEMPTS`, `HOOKLINE_INDEX`) persists: asynchronously
/// (nats-server 2.12+: written in the background, never fsynced per write, so `sync_interval:
/// always` spends nothing on records nobody waits for) when it has one replica; nats-server allows
/// that mode only there. A stream that exists keeps the mode it was created with: nats-server does
/// not change it on update.
async fn log_persist_mode(js: &jetstream::Context, name: &str, replicas: usize) -> stream::PersistenceMode {
    if let Ok(mut existing) = js.get_stream(name).await {
        if let Ok(info) = existing.info().await {
            let mode = info.config.persist_mode.unwrap_or_default();
            if replicas <= 1 && mode != stream::PersistenceMode::Async {
                tracing::info!(stream = name, "the stream was created with synchronous writes and keeps them (nats-server cannot change a stream's persist mode); delete it to have asynchronous ones");
            }
            return mode;
        }
    }
    if replicas <= 1 {
        stream::PersistenceMode::Async
    } else {
        stream::PersistenceMode::Default
    }
}

/// Creates the streams (raw, events, DLQ, the delivery log and the lookup index), or brings
/// their limits in line with the configuration.
pub async fn ensure_streams(js: &jetstream::Context, config: &StreamsConfig) -> Result<(), NatsSetupError> {
    let index = index_limits(&config.events);
    for (name, subjects, limits, log) in [
        (names::RAW_STREAM, &[names::RAW_SUBJECTS][..], &config.raw, false),
        (names::EVENTS_STREAM, &[names::EVENTS_SUBJECTS, names::ORDER_SUBJECTS][..], &config.events, false),
        (names::DLQ_STREAM, &[names::DLQ_SUBJECTS][..], &config.dlq, false),
        (names::ATTEMPTS_STREAM, &[names::ATTEMPTS_SUBJECTS][..], &config.attempts, true),
        (names::INDEX_STREAM, &[names::INDEX_SUBJECTS][..], &index, true),
    ] {
        let mut wanted = stream_config(name, subjects, limits);
        if log {
            wanted.allow_atomic_publish = false;
            wanted.persist_mode = Some(log_persist_mode(js, name, limits.replicas).await);
        }
        (|| js.create_or_update_stream(wanted.clone()))
            .retry(setup_retry())
            .notify(|e, delay| tracing::warn!(stream = name, error = %e, retry_in = ?delay, "cannot set up the stream yet"))
            .await
            .map_err(|e| NatsSetupError::Stream { stream: name, message: e.to_string() })?;
    }
    Ok(())
}

/// How often a worker whose pulls bring nothing looks whether its consumer still exists.
pub const CONSUMER_CHECK_EVERY: Duration = Duration::from_secs(5);

/// Whether `consumer` no longer exists on the server (deleted by hand, or lost with the server's
/// state: nats-server does not fsync a new consumer's files, so a power cut can take one created
/// moments before). Any other answer, an error included, counts as there.
pub async fn consumer_is_gone(consumer: &jetstream::consumer::PullConsumer) -> bool {
    matches!(consumer.get_info().await, Err(e) if e.kind() == jetstream::context::ConsumerInfoErrorKind::NotFound)
}

/// A KV bucket's settings: file storage always.
pub struct BucketSpec {
    pub name: &'static str,
    pub description: &'static str,
    pub history: i64,
    /// Entries expire after this; zero: never.
    pub max_age: Duration,
    pub replicas: usize,
}

/// Creates the bucket, or brings its settings in line, retrying while a cluster elects leaders.
pub async fn kv_bucket(js: &jetstream::Context, spec: BucketSpec) -> Result<kv::Store, NatsSetupError> {
    let bucket = || {
        js.create_or_update_key_value(kv::Config {
            bucket: spec.name.to_string(),
            description: spec.description.to_string(),
            history: spec.history,
            max_age: spec.max_age,
            storage: stream::StorageType::File,
            num_replicas: spec.replicas,
            ..Default::default()
        })
    };
    bucket
        .retry(setup_retry())
        .notify(|e, delay| tracing::warn!(bucket = spec.name, error = %e, retry_in = ?delay, "cannot set up the bucket yet"))
        .await
        .map_err(|e| NatsSetupError::Bucket { bucket: spec.name, message: e.to_string() })
}

/// The bucket `hookline_channels`, created when missing.
pub async fn channels_bucket(js: &jetstream::Context, config: &StreamsConfig) -> Result<kv::Store, NatsSetupError> {
    let description = "hookline channel configurations (secrets sealed)";
    kv_bucket(
        js,
        BucketSpec { name: names::CHANNELS_BUCKET, description, history: 5, max_age: Duration::ZERO, replicas: config.channels.replicas },
    )
    .await
}

/// The bucket `hookline_destinations`, created when missing: as the channels bucket (history 5,
/// file storage, `streams.channels.replicas`: there is no key of its own).
pub async fn destinations_bucket(js: &jetstream::Context, config: &StreamsConfig) -> Result<kv::Store, NatsSetupError> {
    let description = "hookline destinations (secrets sealed)";
    kv_bucket(
        js,
        BucketSpec {
            name: names::DESTINATIONS_BUCKET,
            description,
            history: 5,
            max_age: Duration::ZERO,
            replicas: config.channels.replicas,
        },
    )
    .await
}

/// Sets `hookline_consumer_pending_messages{consumer}` (the consumer's lag: messages not yet
/// delivered to it) every five seconds until `shutdown`.
pub async fn report_lag(
    mut consumer: jetstream::consumer::PullConsumer,
    name: &'static str,
    metrics: std::sync::Arc<crate::metrics::Metrics>,
    shutdown: tokio_util::sync::CancellationToken,
) {
    loop {
        if let Ok(info) = consumer.info().await {
            metrics.consumer_pending.get_or_create(&crate::metrics::ConsumerLabels { consumer: name }).set(info.num_pending as i64);
        }
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(Duration::from_secs(5)) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::redact_url;

    #[test]
    fn several_servers_are_parsed_from_one_value() {
        let addrs = super::server_addrs("nats://127.0.0.1:4222, nats://127.0.0.1:4223,127.0.0.1:4224").expect("parses");
        assert_eq!(addrs.len(), 3);
        assert!(super::server_addrs("nats://h:notaport").is_err());
    }

    #[test]
    fn credentials_are_redacted() {
        assert_eq!(redact_url("nats://u:p@h:4222"), "nats://***@h:4222");
        assert_eq!(redact_url("u:p@h:4222"), "***@h:4222");
        assert_eq!(redact_url("nats://h:4222"), "nats://h:4222");
    }
}

#[cfg(all(test, feature = "harness"))]
mod stream_tests {
    use async_nats::jetstream::stream::PersistenceMode;

    use crate::harness::{self, TestNats};
    use crate::names;

    async fn mode(js: &async_nats::jetstream::Context, name: &str) -> PersistenceMode {
        let mut stream = js.get_stream(name).await.unwrap_or_else(|e| panic!("{name}: {e}"));
        stream.info().await.unwrap_or_else(|e| panic!("{name}: {e}")).config.persist_mode.unwrap_or_default()
    }

    #[tokio::test]
    async fn the_two_logs_persist_asynchronously_the_pipelines_streams_do_not() {
        let nats = TestNats::start();
        let js = nats.jetstream().await;
        let config = harness::config(&nats.url(), &[]);
        super::ensure_streams(&js, &config.streams).await.unwrap_or_else(|e| panic!("{e}"));
        for name in [names::ATTEMPTS_STREAM, names::INDEX_STREAM] {
            assert_eq!(mode(&js, name).await, PersistenceMode::Async, "{name}");
        }
        for name in [names::RAW_STREAM, names::EVENTS_STREAM, names::DLQ_STREAM] {
            assert_eq!(mode(&js, name).await, PersistenceMode::Default, "{name}: a 200 or an event's ack waits for its fsync");
        }
        // Again, as every process does at start: nothing to change, nothing refused.
        super::ensure_streams(&js, &config.streams).await.unwrap_or_else(|e| panic!("{e}"));
    }

    #[tokio::test]
    async fn a_log_stream_created_synchronous_keeps_its_mode_and_start_up_goes_on() {
        let nats = TestNats::start();
        let js = nats.jetstream().await;
        let config = harness::config(&nats.url(), &[]);
        // As the previous release created it: synchronous, atomic batches allowed.
        let mut old = super::stream_config(names::INDEX_STREAM, &[names::INDEX_SUBJECTS], &super::index_limits(&config.streams.events));
        old.persist_mode = None;
        js.create_stream(old).await.unwrap_or_else(|e| panic!("{e}"));
        super::ensure_streams(&js, &config.streams)
            .await
            .unwrap_or_else(|e| panic!("nats-server cannot change the mode, so start-up must not ask it to: {e}"));
        assert_eq!(mode(&js, names::INDEX_STREAM).await, PersistenceMode::Default);
        assert_eq!(mode(&js, names::ATTEMPTS_STREAM).await, PersistenceMode::Async);
    }
}

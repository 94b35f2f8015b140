//! The destinations this process delivers to, kept in step with the KV bucket
//! `hookline_destinations`: a record put starts (or restarts, with its new settings) the
//! destination's worker, a delete stops it and removes its consumer; `default`, from
//! `forwarder.target_url`, runs for the process's life. A paused destination keeps its consumer
//! (events wait there) and runs no worker.

use async_nats::jetstream::{self, kv};
use futures_util::StreamExt;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use hookline_shared::config::Config;
use hookline_shared::crypto::Keyring;
use hookline_shared::destination::{Destination, DestinationDecl, DestinationRecord, Ordering, DEFAULT_DESTINATION_ID};
use hookline_shared::metrics::{ConsumerLabels, DestinationLabels, Metrics};
use hookline_shared::names;

use super::breaker::Breaker;
use super::rate::{Processes, RateLimiter};
use super::Buckets;
use crate::attempts::AttemptLog;
use crate::worker::{consumer_name, ensure_consumer, DestinationWorker, ForwarderError};

/// Writes each declared destination to the bucket unless it is there already (an API change wins).
pub async fn write_declared(store: &kv::Store, keyring: &Keyring, declared: &[DestinationDecl]) -> Result<(), ForwarderError> {
    for decl in declared {
        let record = decl
            .to_record(keyring, time::OffsetDateTime::now_utc())
            .map_err(|e| ForwarderError::Bucket(format!("destination {}: {e}", decl.id)))?;
        let json = serde_json::to_vec(&record).map_err(|e| ForwarderError::Bucket(format!("destination {}: {e}", decl.id)))?;
        match store.create(&decl.id, json.into()).await {
            Ok(_) => tracing::info!(destination = %decl.id, "declared destination written to the bucket"),
            Err(e) if e.kind() == kv::CreateErrorKind::AlreadyExists => {
                tracing::debug!(destination = %decl.id, "declared destination already in the bucket; kept as it is")
            }
            Err(e) => return Err(ForwarderError::Bucket(format!("cannot write destination {}: {e}", decl.id))),
        }
    }
    Ok(())
}

struct Running {
    revision: u64,
    stop: CancellationToken,
    task: JoinHandle<()>,
}

pub struct Registry {
    js: jetstream::Context,
    config: Config,
    metrics: Arc<Metrics>,
    keyring: Option<Arc<Keyring>>,
    buckets: Buckets,
    processes: Processes,
    instance: String,
    attempts: AttemptLog,
    running: HashMap<String, Running>,
    stopping: Vec<JoinHandle<()>>,
}

impl Registry {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        js: jetstream::Context,
        config: Config,
        metrics: Arc<Metrics>,
        keyring: Option<Arc<Keyring>>,
        buckets: Buckets,
        processes: Processes,
        instance: String,
        attempts: AttemptLog,
    ) -> Self {
        Registry { js, config, metrics, keyring, buckets, processes, instance, attempts, running: HashMap::new(), stopping: Vec::new() }
    }

    /// Runs every destination until `shutdown`, then waits for their workers to finish.
    pub async fn run(mut self, shutdown: CancellationToken) {
        if let Some(url) = self.config.forwarder.target_url.clone() {
            let default = Destination::default_from_config(&url, self.config.forwarder.signing_secret.as_ref());
            self.start(default, 0).await;
        }
        match self.keyring.clone() {
            Some(keyring) => self.watch(&keyring, &shutdown).await,
            None => shutdown.cancelled().await,
        }
        tracing::info!(destinations = self.running.len(), "forwarder stopping: finishing the deliveries in flight");
        for (_, r) in self.running.drain() {
            r.stop.cancel();
            self.stopping.push(r.task);
        }
        for task in self.stopping.drain(..) {
            let _ = task.await;
        }
    }

    /// Follows the bucket; a broken watch is re-created, replaying the latest values.
    async fn watch(&mut self, keyring: &Keyring, shutdown: &CancellationToken) {
        loop {
            match self.buckets.destinations.watch_with_history(">").await {
                Ok(mut entries) => loop {
                    let next = tokio::select! {
                        _ = shutdown.cancelled() => return,
                        next = entries.next() => next,
                    };
                    match next {
                        Some(Ok(entry)) => self.apply(keyring, &entry).await,
                        Some(Err(e)) => {
                            tracing::warn!(error = %e, "destinations watch failed; re-creating it");
                            break;
                        }
                        None => {
                            tracing::warn!("destinations watch ended; re-creating it");
                            break;
                        }
                    }
                },
                Err(e) => tracing::warn!(error = %e, "cannot watch the destinations bucket; retrying"),
            }
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(Duration::from_millis(500)) => {}
            }
        }
    }

    async fn apply(&mut self, keyring: &Keyring, entry: &kv::Entry) {
        let id = entry.key.clone();
        if id == DEFAULT_DESTINATION_ID {
            tracing::error!("a destination named default in the bucket is ignored: default is forwarder.target_url's");
            return;
        }
        match entry.operation {
            kv::Operation::Put => {
                if self.running.get(&id).is_some_and(|r| r.revision == entry.revision) {
                    return;
                }
                let destination = serde_json::from_slice::<DestinationRecord>(&entry.value)
                    .map_err(|e| e.to_string())
                    .and_then(|r| if r.id == id { Ok(r) } else { Err("its record names another id".to_string()) })
                    .and_then(|r| r.open(keyring).map_err(|e| e.to_string()));
                match destination {
                    Ok(d) => self.start(d, entry.revision).await,
                    Err(e) => {
                        tracing::error!(destination = %id, error = %e, "unreadable destination record; the destination is not served");
                        self.stop(&id);
                    }
                }
            }
            kv::Operation::Delete | kv::Operation::Purge => {
                self.stop(&id);
                // Its events are no longer wanted: the consumer goes (any process may do it first).
                if let Ok(stream) = self.js.get_stream(names::EVENTS_STREAM).await {
                    let _ = stream.delete_consumer(&consumer_name(&id)).await;
                }
                let _ = self.buckets.state.purge(&id).await;
                self.metrics.destination_state.remove(&DestinationLabels { destination: id.clone() });
                tracing::info!(destination = %id, "destination deleted: its consumer removed");
            }
        }
    }

    fn stop(&mut self, id: &str) {
        if let Some(r) = self.running.remove(id) {
            r.stop.cancel();
            self.stopping.push(r.task);
        }
        self.stopping.retain(|t| !t.is_finished());
    }

    async fn start(&mut self, destination: Destination, revision: u64) {
        let id = destination.id.clone();
        self.stop(&id);
        let stop = CancellationToken::new();
        let context = Starting {
            js: self.js.clone(),
            config: self.config.clone(),
            metrics: self.metrics.clone(),
            state: self.buckets.state.clone(),
            processes: self.processes.clone(),
            leases: self.buckets.leases.clone(),
            instance: self.instance.clone(),
            attempts: self.attempts.clone(),
        };
        let task = tokio::spawn(context.run(destination, stop.clone()));
        self.running.insert(id, Running { revision, stop, task });
    }
}

/// What a destination's task needs from the registry.
struct Starting {
    js: jetstream::Context,
    config: Config,
    metrics: Arc<Metrics>,
    state: kv::Store,
    processes: Processes,
    leases: kv::Store,
    instance: String,
    attempts: AttemptLog,
}

impl Starting {
    /// Sets up the destination's consumer (retrying while NATS refuses), then runs its worker,
    /// or, paused, only reports its lag, until `stop`.
    async fn run(self, destination: Destination, stop: CancellationToken) {
        let id = destination.id.clone();
        let label = DestinationLabels { destination: id.clone() };
        let cfg = &self.config.forwarder;
        let mut delay = Duration::from_millis(200);
        let consumer = loop {
            match ensure_consumer(&self.js, &destination, Duration::from_secs(cfg.ack_wait_s)).await {
                Ok(c) => break c,
                Err(e) => {
                    tracing::warn!(destination = %id, error = %e, retry_in = ?delay, "cannot set up the destination's consumer yet");
                    tokio::select! {
                        _ = stop.cancelled() => return,
                        _ = tokio::time::sleep(delay) => {}
                    }
                    delay = (delay * 2).min(Duration::from_secs(10));
                }
            }
        };
        let Some(consumer) = consumer else {
            tracing::warn!(destination = %id, "the destination's filter leaves it no subject (its tenant excluded?): it receives nothing");
            return;
        };
        if destination.paused {
            tracing::info!(destination = %id, "destination paused: its events wait in JetStream");
            self.metrics.destination_state.get_or_create(&label).set(1);
            report_lag(consumer, id, self.metrics.clone(), stop).await;
            return;
        }
        self.metrics.destination_state.get_or_create(&label).set(0);
        let settings = destination.settings(cfg);
        let rate = settings.rate_limit_per_s.map(|r| RateLimiter::new(r, self.processes.clone()));
        let breaker = Breaker::new(&id, self.state.clone(), &cfg.breaker, self.metrics.clone());
        let worker = match DestinationWorker::new(
            self.js.clone(),
            self.metrics.clone(),
            destination,
            settings,
            cfg.retry_jitter,
            rate,
            breaker,
            cfg.batch_size,
        ) {
            Ok(mut w) => {
                w.attempts = self.attempts.clone();
                Arc::new(w)
            }
            Err(e) => {
                tracing::error!(destination = %id, error = %e, "the destination cannot be served");
                return;
            }
        };
        let lag = tokio::spawn(report_lag(consumer.clone(), id.clone(), self.metrics.clone(), stop.clone()));
        if worker.destination.ordering == Ordering::Conversation {
            super::ordered::run(worker, consumer, self.leases, self.instance, stop).await;
        } else {
            worker.run(consumer, stop).await;
        }
        let _ = lag.await;
    }
}

/// The destination's lag every five seconds until `stop` (for `default` also under the first
/// stage's name, which dashboards and autoscalers read).
async fn report_lag(mut consumer: jetstream::consumer::PullConsumer, id: String, metrics: Arc<Metrics>, stop: CancellationToken) {
    let label = DestinationLabels { destination: id.clone() };
    loop {
        if let Ok(info) = consumer.info().await {
            metrics.destination_pending.get_or_create(&label).set(info.num_pending as i64);
            if id == DEFAULT_DESTINATION_ID {
                metrics
                    .consumer_pending
                    .get_or_create(&ConsumerLabels { consumer: names::FORWARDER_CONSUMER })
                    .set(info.num_pending as i64);
            }
        }
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(Duration::from_secs(5)) => {}
        }
    }
}

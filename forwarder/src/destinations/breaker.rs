//! The circuit breaker of one destination, its state shared by every forwarder process through
//! the KV bucket `hookline_destination_state` (key: the destination id; absent: active).
//!
//! After `forwarder.breaker.failures` consecutive retryable failures seen by a process, it writes
//! the trip; every process reads the key at most every half second and stops fetching that
//! destination's events (they wait in JetStream, using no attempt). While tripped, one probe is
//! due every interval (`probe_s`, doubling after each failed probe up to `max_probe_s`): the
//! process that wins a compare-and-set on the key sends one event. Its success, like any
//! success, deletes the key: the destination is active again everywhere.

use async_nats::jetstream::kv;
use serde::{Deserialize, Serialize};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hookline_shared::metrics::{DestinationLabels, Metrics};

/// The bucket of destinations' shared state.
pub const STATE_BUCKET: &str = hookline_shared::names::DESTINATION_STATE_BUCKET;

/// What the bucket holds for a tripped destination.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Tripped {
    /// Always `tripped` (what the setup API shows).
    pub state: String,
    /// When it tripped (unix ms).
    pub since_ms: i64,
    /// When the next probe is due (unix ms).
    pub next_probe_at_ms: i64,
    /// The interval after the next probe, if that one fails.
    pub probe_s: u64,
}

/// Whether the worker may fetch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Gate {
    Open,
    /// Tripped: fetch nothing.
    Closed,
    /// Tripped, and this process won the probe: fetch one event.
    Probe,
}

struct Cached {
    tripped: Option<(Tripped, u64)>,
    read_at: Option<Instant>,
}

pub struct Breaker {
    id: String,
    store: kv::Store,
    failures_to_trip: u32,
    probe_s: u64,
    max_probe_s: u64,
    consecutive: AtomicU32,
    cached: Mutex<Cached>,
    metrics: Arc<Metrics>,
}

fn now_ms() -> i64 {
    (time::OffsetDateTime::now_utc().unix_timestamp_nanos() / 1_000_000) as i64
}

impl Breaker {
    pub fn new(id: &str, store: kv::Store, config: &hookline_shared::config::BreakerConfig, metrics: Arc<Metrics>) -> Arc<Self> {
        Arc::new(Breaker {
            id: id.to_string(),
            store,
            failures_to_trip: config.failures,
            probe_s: config.probe_s,
            max_probe_s: config.max_probe_s,
            consecutive: AtomicU32::new(0),
            cached: Mutex::new(Cached { tripped: None, read_at: None }),
            metrics,
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Cached> {
        self.cached.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn set_metric(&self, tripped: bool) {
        self.metrics.destination_state.get_or_create(&DestinationLabels { destination: self.id.clone() }).set(if tripped { 2 } else { 0 });
    }

    /// Reads the shared state when the cached one is older than half a second.
    async fn refresh(&self) {
        if self.lock().read_at.is_some_and(|t| t.elapsed() < Duration::from_millis(500)) {
            return;
        }
        let read = match self.store.entry(&self.id).await {
            Ok(Some(entry)) if entry.operation == kv::Operation::Put => {
                serde_json::from_slice::<Tripped>(&entry.value).ok().map(|t| (t, entry.revision))
            }
            Ok(_) => None,
            Err(e) => {
                tracing::debug!(destination = %self.id, error = %e, "cannot read the breaker state; keeping the last one");
                return;
            }
        };
        let was = {
            let mut c = self.lock();
            let was = c.tripped.is_some();
            c.tripped = read;
            c.read_at = Some(Instant::now());
            was
        };
        let is = self.lock().tripped.is_some();
        if was != is {
            if is {
                tracing::warn!(destination = %self.id, "destination tripped (circuit breaker open): its events wait in JetStream");
            } else {
                tracing::info!(destination = %self.id, "destination active again (circuit breaker closed)");
                self.consecutive.store(0, Ordering::Release);
            }
        }
        self.set_metric(is);
    }

    /// Whether the worker may fetch now.
    pub async fn gate(&self) -> Gate {
        self.refresh().await;
        let Some((tripped, revision)) = self.lock().tripped.clone() else { return Gate::Open };
        if now_ms() < tripped.next_probe_at_ms {
            return Gate::Closed;
        }
        let next = Tripped {
            next_probe_at_ms: now_ms() + (tripped.probe_s * 1000) as i64,
            probe_s: (tripped.probe_s * 2).min(self.max_probe_s),
            ..tripped
        };
        let Ok(value) = serde_json::to_vec(&next) else { return Gate::Closed };
        match self.store.update(&self.id, value.into(), revision).await {
            Ok(new_revision) => {
                self.lock().tripped = Some((next, new_revision));
                tracing::info!(destination = %self.id, "probing the tripped destination with one event");
                Gate::Probe
            }
            // Another process took this probe.
            Err(_) => {
                self.lock().read_at = None;
                Gate::Closed
            }
        }
    }

    pub async fn on_success(&self) {
        self.consecutive.store(0, Ordering::Release);
        if self.lock().tripped.is_none() {
            return;
        }
        match self.store.delete(&self.id).await {
            Ok(_) => {
                self.lock().tripped = None;
                tracing::info!(destination = %self.id, "destination active again (circuit breaker closed)");
                self.set_metric(false);
            }
            Err(e) => tracing::warn!(destination = %self.id, error = %e, "cannot close the breaker; it closes at the next success"),
        }
    }

    pub async fn on_failure(&self) {
        if self.lock().tripped.is_some() {
            return;
        }
        let n = self.consecutive.fetch_add(1, Ordering::AcqRel) + 1;
        if n < self.failures_to_trip {
            return;
        }
        let now = now_ms();
        let tripped = Tripped {
            state: "tripped".into(),
            since_ms: now,
            next_probe_at_ms: now + (self.probe_s * 1000) as i64,
            probe_s: (self.probe_s * 2).min(self.max_probe_s),
        };
        let Ok(value) = serde_json::to_vec(&tripped) else { return };
        match self.store.create(&self.id, value.into()).await {
            Ok(revision) => {
                tracing::warn!(destination = %self.id, failures = n, probe_s = self.probe_s,
                    "destination tripped (circuit breaker open) after consecutive failures: its events wait in JetStream, one probe every interval");
                self.lock().tripped = Some((tripped, revision));
                self.set_metric(true);
            }
            // Already tripped by another process: read it.
            Err(_) => self.lock().read_at = None,
        }
    }
}

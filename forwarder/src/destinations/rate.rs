//! `rate_limit_per_s` held for a destination as a whole: each forwarder process takes its share,
//! the rate divided by the number of live forwarder processes. Processes announce themselves in
//! the KV bucket `hookline_forwarders` every second (entries expire after five), and each counts
//! them every two seconds.

use async_nats::jetstream::kv;
use futures_util::StreamExt;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

/// The bucket of live forwarder processes.
pub const PROCESSES_BUCKET: &str = "hookline_forwarders";

/// How many forwarder processes are alive (at least this one).
#[derive(Clone, Default)]
pub struct Processes(Arc<AtomicUsize>);

impl Processes {
    pub fn count(&self) -> usize {
        self.0.load(Ordering::Acquire).max(1)
    }

    /// Announces this process and counts the others until `shutdown`.
    pub async fn run(self, store: kv::Store, instance: String, shutdown: CancellationToken) {
        let mut last_count = Instant::now() - Duration::from_secs(10);
        loop {
            if let Err(e) = store.put(&instance, bytes::Bytes::from_static(b"1")).await {
                tracing::debug!(error = %e, "cannot announce this forwarder process");
            }
            if last_count.elapsed() >= Duration::from_secs(2) {
                if let Ok(keys) = store.keys().await {
                    let n = keys.filter_map(|k| async move { k.ok() }).count().await;
                    self.0.store(n, Ordering::Release);
                }
                last_count = Instant::now();
            }
            tokio::select! {
                _ = shutdown.cancelled() => {
                    let _ = store.purge(&instance).await;
                    return;
                }
                _ = tokio::time::sleep(Duration::from_secs(1)) => {}
            }
        }
    }
}

/// Spaces the deliveries of one destination in this process.
pub struct RateLimiter {
    rate_per_s: f64,
    processes: Processes,
    next: Mutex<Instant>,
}

impl RateLimiter {
    pub fn new(rate_per_s: f64, processes: Processes) -> Self {
        RateLimiter { rate_per_s, processes, next: Mutex::new(Instant::now()) }
    }

    fn interval(&self) -> Duration {
        Duration::from_secs_f64(self.processes.count() as f64 / self.rate_per_s)
    }

    /// The most events to fetch at once: about two seconds of this process's share.
    pub fn burst(&self) -> usize {
        ((2.0 * self.rate_per_s / self.processes.count() as f64).ceil() as usize).max(1)
    }

    /// Waits for this delivery's turn.
    pub async fn acquire(&self) {
        let wait = {
            let mut next = self.next.lock().unwrap_or_else(|p| p.into_inner());
            let now = Instant::now();
            let at = (*next).max(now);
            *next = at + self.interval();
            at - now
        };
        if !wait.is_zero() {
            tokio::time::sleep(wait).await;
        }
    }
}

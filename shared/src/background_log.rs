//! A log written in the background: records are put on a bounded in-memory queue without ever
//! waiting, and one task drains it, storing what gathered within `LINGER` as one group commit
//! (one JetStream atomic batch, so one fsync for many records). Used by the forwarder's delivery log (`HOOKLINE_ATTEMPTS`)
//! and the normalizer's lookup index (`HOOKLINE_INDEX`).
//!
//! What it gives up, on purpose: a record is best effort. When the queue is full (JetStream slow
//! or away) the record is dropped and counted (`hookline_log_records_total{outcome="dropped_full"}`)
//! rather than slow the delivery or the event that made it; a batch JetStream does not store is
//! counted `failed` and not retried (nothing waits in memory to retry); records still queued when
//! the process dies are lost. The work they describe (a delivery, an event) is never affected.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;

use crate::group_commit::{GroupCommit, GroupCommitConfig, Message};
use crate::metrics::{LogRecordLabels, Metrics};

/// Records the queue holds before new ones are dropped.
pub const QUEUE_CAPACITY: usize = 16_384;
/// The most records in one batch.
pub const MAX_BATCH: usize = 512;
/// How long the writer gathers records before it commits them: nobody waits for a record, and
/// fewer, larger batches cost nats-server less (an atomic batch has a fixed cost of its own).
pub const LINGER: Duration = Duration::from_millis(25);

/// A handle on one background log; cheap to clone. `off()` records nothing.
#[derive(Clone)]
pub struct BackgroundLog {
    queue: Option<mpsc::Sender<Message>>,
    metrics: Option<Arc<Metrics>>,
    name: &'static str,
}

impl BackgroundLog {
    /// A log that records nothing.
    pub fn off() -> BackgroundLog {
        BackgroundLog { queue: None, metrics: None, name: "off" }
    }

    /// Starts the writer task of log `name` (a metric label: a constant) on `stream`; it ends
    /// once every handle is dropped and the queue is drained.
    pub fn start(js: async_nats::jetstream::Context, metrics: Arc<Metrics>, name: &'static str, stream: &'static str) -> BackgroundLog {
        Self::start_with(js, metrics, name, stream, QUEUE_CAPACITY)
    }

    pub fn start_with(
        js: async_nats::jetstream::Context,
        metrics: Arc<Metrics>,
        name: &'static str,
        stream: &'static str,
        capacity: usize,
    ) -> BackgroundLog {
        let (queue, rx) = mpsc::channel(capacity.max(1));
        let commits = GroupCommit::start(
            js,
            GroupCommitConfig { max_batch: MAX_BATCH, max_in_flight: 2, ack_timeout: Duration::from_secs(5) },
            metrics.clone(),
            stream,
        );
        tokio::spawn(drain(rx, commits, metrics.clone(), name));
        BackgroundLog { queue: Some(queue), metrics: Some(metrics), name }
    }

    pub fn is_on(&self) -> bool {
        self.queue.is_some()
    }

    /// Queues `message`; never waits. A full queue drops it (counted).
    pub fn record(&self, message: Message) {
        let Some(queue) = &self.queue else { return };
        if queue.try_send(message).is_err() {
            self.count("dropped_full", 1);
        }
    }

    fn count(&self, outcome: &'static str, n: u64) {
        if let Some(metrics) = &self.metrics {
            metrics.log_records.get_or_create(&LogRecordLabels { log: self.name, outcome }).inc_by(n);
        }
    }
}

async fn drain(mut rx: mpsc::Receiver<Message>, commits: GroupCommit, metrics: Arc<Metrics>, name: &'static str) {
    let mut batch = Vec::with_capacity(MAX_BATCH);
    // Two batches in flight at most: while one commits, the next gathers what arrives.
    let slots = Arc::new(tokio::sync::Semaphore::new(2));
    loop {
        if rx.recv_many(&mut batch, MAX_BATCH).await == 0 {
            break;
        }
        let deadline = tokio::time::Instant::now() + LINGER;
        while batch.len() < MAX_BATCH {
            let room = MAX_BATCH - batch.len();
            match tokio::time::timeout_at(deadline, rx.recv_many(&mut batch, room)).await {
                Ok(0) | Err(_) => break,
                Ok(_) => {}
            }
        }
        let Ok(slot) = slots.clone().acquire_owned().await else { break };
        // What arrived while waiting for the slot joins this batch.
        while batch.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(m) => batch.push(m),
                Err(_) => break,
            }
        }
        let messages = std::mem::replace(&mut batch, Vec::with_capacity(MAX_BATCH));
        let commits = commits.clone();
        let metrics = metrics.clone();
        tokio::spawn(async move {
            let n = messages.len();
            let outcome = match commits.publish_all(messages).await {
                Ok(_) => "written",
                Err(e) => {
                    tracing::warn!(log = name, records = n, error = %e, "background log: records not stored");
                    "failed"
                }
            };
            metrics.log_records.get_or_create(&LogRecordLabels { log: name, outcome }).inc_by(n as u64);
            drop(slot);
        });
    }
    // Wait for the batches in flight.
    let _ = slots.acquire_many(2).await;
}

#[cfg(all(test, feature = "harness"))]
mod tests {
    use super::*;
    use crate::harness::{wait_for, TestNats};

    fn counted(metrics: &Metrics, outcome: &'static str) -> u64 {
        metrics.log_records.get_or_create(&LogRecordLabels { log: "test", outcome }).get()
    }

    #[tokio::test]
    async fn a_full_queue_drops_and_counts_without_waiting_and_the_rest_is_stored() {
        let nats = TestNats::start();
        let js = nats.jetstream().await;
        js.create_stream(async_nats::jetstream::stream::Config {
            name: "T".into(),
            subjects: vec!["t.>".into()],
            allow_atomic_publish: true,
            ..Default::default()
        })
        .await
        .unwrap_or_else(|e| panic!("stream: {e}"));
        let metrics = Metrics::new();
        let log = BackgroundLog::start_with(js.clone(), metrics.clone(), "test", "T", 8);
        // 100 records at once, without a yield: the writer cannot drain meanwhile, so all but the
        // queue's 8 are dropped, and `record` never waited.
        let started = std::time::Instant::now();
        for i in 0..100 {
            log.record(Message { subject: "t.a".into(), headers: async_nats::HeaderMap::new(), payload: format!("r{i}").into() });
        }
        assert!(started.elapsed() < Duration::from_millis(50), "record waited");
        assert_eq!(counted(&metrics, "dropped_full"), 92);
        let m = &metrics;
        wait_for("the queued records stored", Duration::from_secs(10), || async move { (counted(m, "written") == 8).then_some(()) }).await;
        let mut stream = js.get_stream("T").await.unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(stream.info().await.unwrap_or_else(|e| panic!("{e}")).state.messages, 8);
        assert!(!BackgroundLog::off().is_on());
    }
}

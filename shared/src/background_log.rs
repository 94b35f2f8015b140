//! A log written in the background: records are put on a bounded in-memory queue without ever
//! waiting, and one task drains it into JetStream as plain publishes, many in flight, their acks
//! counted as they come. Used by the forwarder's delivery log (`HOOKLINE_ATTEMPTS`) and the
//! normalizer's lookup index (`HOOKLINE_INDEX`), two streams kept in nats-server's asynchronous
//! persist mode (`jetstream::ensure_streams`): they are not fsynced per write, and a plain publish
//! costs the server less than a message of an atomic batch, which it stages before it stores.
//!
//! What it gives up, on purpose: a record is best effort. When the queue is full (JetStream slow
//! or away) the record is dropped and counted (`hookline_log_records_total{outcome="dropped_full"}`)
//! rather than slow the delivery or the event that made it; a record JetStream does not store is
//! counted `failed` and not retried (nothing waits in memory to retry); records still queued when
//! the process dies, and the last ones written before a power cut, are lost. The work they
//! describe (a delivery, an event) is never affected.

use std::sync::Arc;

use futures_util::stream::{FuturesUnordered, StreamExt};
use tokio::sync::mpsc;

use crate::group_commit::Message;
use crate::metrics::{LogRecordLabels, Metrics};

/// Records the queue holds before new ones are dropped.
pub const QUEUE_CAPACITY: usize = 16_384;
/// Records published and not yet acknowledged, at most: past it the writer waits for acks (and
/// the queue, not the caller, takes up the slack). Well under the 5,000 unacknowledged
/// publishes a JetStream context allows (async-nats' default), which the process's other
/// publishes on the same context (group commits) share.
pub const MAX_IN_FLIGHT: usize = 1_024;
/// Records taken off the queue at a time.
const TAKE: usize = 256;

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

    /// Starts the writer task of log `name` (a metric label: a constant); it ends once every
    /// handle is dropped and the queue is drained. The records' subjects say their stream.
    pub fn start(js: async_nats::jetstream::Context, metrics: Arc<Metrics>, name: &'static str) -> BackgroundLog {
        Self::start_with(js, metrics, name, QUEUE_CAPACITY)
    }

    pub fn start_with(js: async_nats::jetstream::Context, metrics: Arc<Metrics>, name: &'static str, capacity: usize) -> BackgroundLog {
        let (queue, rx) = mpsc::channel(capacity.max(1));
        tokio::spawn(drain(rx, js, metrics.clone(), name));
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

async fn drain(mut rx: mpsc::Receiver<Message>, js: async_nats::jetstream::Context, metrics: Arc<Metrics>, name: &'static str) {
    let count = |outcome: &'static str| {
        metrics.log_records.get_or_create(&LogRecordLabels { log: name, outcome }).inc();
    };
    let mut acks = FuturesUnordered::new();
    let mut taken = Vec::with_capacity(TAKE);
    let mut failures_logged = 0u64;
    let settle = |outcome: Result<(), String>, failures_logged: &mut u64| match outcome {
        Ok(()) => count("written"),
        Err(e) => {
            count("failed");
            // One line per thousand failures: JetStream away fails every record alike.
            if *failures_logged % 1000 == 0 {
                tracing::warn!(log = name, error = %e, "background log: a record was not stored (counted in hookline_log_records_total)");
            }
            *failures_logged += 1;
        }
    };
    loop {
        let in_flight = acks.len();
        tokio::select! {
            biased;
            Some(outcome) = acks.next(), if in_flight > 0 => settle(outcome, &mut failures_logged),
            n = rx.recv_many(&mut taken, TAKE.min(MAX_IN_FLIGHT - in_flight)), if in_flight < MAX_IN_FLIGHT => {
                if n == 0 {
                    break;
                }
                for m in taken.drain(..) {
                    match js.publish_with_headers(m.subject, m.headers, m.payload).await {
                        Ok(ack) => acks.push(async move { ack.await.map(|_| ()).map_err(|e| e.to_string()) }),
                        Err(e) => settle(Err(e.to_string()), &mut failures_logged),
                    }
                }
            }
        }
    }
    // The queue is closed: wait for the records in flight.
    while let Some(outcome) = acks.next().await {
        settle(outcome, &mut failures_logged);
    }
}

#[cfg(all(test, feature = "harness"))]
mod tests {
    use super::*;
    use crate::harness::{wait_for, TestNats};
    use std::time::Duration;

    fn counted(metrics: &Metrics, outcome: &'static str) -> u64 {
        metrics.log_records.get_or_create(&LogRecordLabels { log: "test", outcome }).get()
    }

    #[tokio::test]
    async fn a_full_queue_drops_and_counts_without_waiting_and_the_rest_is_stored() {
        let nats = TestNats::start();
        let js = nats.jetstream().await;
        js.create_stream(async_nats::jetstream::stream::Config { name: "T".into(), subjects: vec!["t.>".into()], ..Default::default() })
            .await
            .unwrap_or_else(|e| panic!("stream: {e}"));
        let metrics = Metrics::new();
        let log = BackgroundLog::start_with(js.clone(), metrics.clone(), "test", 8);
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

//! Group commit: the messages that concurrent callers publish to one stream are stored together,
//! as one JetStream atomic batch, so that one fsync covers many of them; each caller is answered
//! once the batch that holds its message is acknowledged.
//!
//! Why: with `sync_interval: always`, nats-server fsyncs every message it stores on its own (one
//! stream stores one message at a time), which caps a stream near the disk's fsync rate. An atomic
//! batch (nats-server 2.12+, stream option `allow_atomic`) is staged and committed as a unit; on
//! nats-server 2.15.1 with `sync_interval: always` a batch of 100 cost 4 fsyncs where 100 single
//! publishes cost 100 (counted with strace; see docs/reliability.md).
//!
//! How: one task takes requests from a queue. When a batch slot is free it takes everything
//! waiting (up to `max_batch`) and commits it; while every slot is busy, new requests wait in the
//! queue and form the next batch. So a lone request is published at once, alone, as a plain
//! publish: the window never holds it back, and under load the batches grow by themselves.
//!
//! Honest answers: an atomic batch is stored whole or not at all. JetStream refuses a whole batch
//! that holds a message whose `Nats-Msg-Id` it has seen (a platform's retry, or a redelivered raw
//! message's events); then, and for any other refusal of the batch, each of its messages is
//! published again on its own, so each caller gets its own answer (stored, duplicate, or error).
//! A timeout or a lost connection answers every caller of that batch with the error: the batch
//! may or may not be stored, and a retry is a duplicate that `Nats-Msg-Id` removes.

use std::sync::Arc;
use std::time::{Duration, Instant};

use async_nats::jetstream;
use async_nats::HeaderMap;
use bytes::Bytes;
use tokio::sync::{mpsc, oneshot, Semaphore};

use crate::metrics::{GroupCommitLabels, Metrics, StreamLabels};

/// JetStream's atomic batch headers (ADR-50).
const BATCH_ID: &str = "Nats-Batch-Id";
const BATCH_SEQUENCE: &str = "Nats-Batch-Sequence";
const BATCH_COMMIT: &str = "Nats-Batch-Commit";

/// JetStream's answer to a batch that holds a message id it has already stored.
const ERR_BATCH_DUPLICATE: u64 = 10201;

/// How a group committer behaves.
#[derive(Debug, Clone, Copy)]
pub struct GroupCommitConfig {
    /// The most messages in one batch (nats-server allows 1000 by default).
    pub max_batch: usize,
    /// Batches being committed at once (nats-server allows 50 per stream by default).
    pub max_in_flight: usize,
    /// How long a commit may wait for its acknowledgement.
    pub ack_timeout: Duration,
}

impl Default for GroupCommitConfig {
    fn default() -> Self {
        GroupCommitConfig { max_batch: 256, max_in_flight: 4, ack_timeout: Duration::from_secs(5) }
    }
}

/// How one message ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stored {
    /// Stored now.
    New,
    /// JetStream had stored a message with the same `Nats-Msg-Id` already.
    Duplicate,
}

#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum CommitError {
    #[error("no JetStream ack within {0:?}")]
    Timeout(Duration),
    #[error("JetStream refused the message: {0}")]
    Refused(String),
    #[error("the group committer stopped")]
    Stopped,
}

/// One message to store.
#[derive(Debug, Clone)]
pub struct Message {
    pub subject: String,
    pub headers: HeaderMap,
    pub payload: Bytes,
}

/// One caller's messages: kept together, in their order, in one batch (or, when more than
/// `max_batch`, in batches committed one after the other).
struct Pending {
    messages: Vec<Message>,
    answer: oneshot::Sender<Result<Vec<(Stored, u64)>, CommitError>>,
}

/// A handle that publishes through one group committer; cheap to clone.
#[derive(Clone)]
pub struct GroupCommit {
    queue: mpsc::UnboundedSender<Pending>,
    ack_timeout: Duration,
    /// `max_batch` 1: no committer; each message published in its caller's task, as many at
    /// once as there are callers (the fastest path when the server does not fsync each message).
    direct: Option<jetstream::Context>,
}

impl GroupCommit {
    /// Starts the committer's task for messages published with `js`. `stream` names the stream in
    /// metrics (bounded: a constant).
    pub fn start(js: jetstream::Context, config: GroupCommitConfig, metrics: Arc<Metrics>, stream: &'static str) -> GroupCommit {
        let (queue, rx) = mpsc::unbounded_channel();
        if config.max_batch <= 1 {
            return GroupCommit { queue, ack_timeout: config.ack_timeout, direct: Some(js) };
        }
        tokio::spawn(run(js, config, metrics, stream, rx));
        GroupCommit { queue, ack_timeout: config.ack_timeout, direct: None }
    }

    /// Publishes one message and waits until the batch holding it is acknowledged (or refused).
    pub async fn publish(&self, subject: String, headers: HeaderMap, payload: Bytes) -> Result<Stored, CommitError> {
        let stored = self.publish_all(vec![Message { subject, headers, payload }]).await?;
        stored.into_iter().next().ok_or(CommitError::Stopped)
    }

    /// Publishes `messages` in their order, kept together, and waits until all are acknowledged;
    /// an error when any of them is not stored.
    pub async fn publish_all(&self, messages: Vec<Message>) -> Result<Vec<Stored>, CommitError> {
        Ok(self.publish_all_at(messages).await?.into_iter().map(|(stored, _)| stored).collect())
    }

    /// As [`GroupCommit::publish_all`], with where each message lies: its stream sequence (for a
    /// duplicate, the sequence of the message stored first).
    pub async fn publish_all_at(&self, messages: Vec<Message>) -> Result<Vec<(Stored, u64)>, CommitError> {
        if messages.is_empty() {
            return Ok(Vec::new());
        }
        if let Some(js) = &self.direct {
            return publish_in_order(js, &messages, self.ack_timeout).await;
        }
        let (answer, answered) = oneshot::channel();
        self.queue.send(Pending { messages, answer }).map_err(|_| CommitError::Stopped)?;
        // Every commit is bounded by `ack_timeout` and answers each of its callers, so the
        // answer comes; callers bound their whole wait (queue included) with their own deadline,
        // which costs the request path one timer, not two.
        answered.await.unwrap_or(Err(CommitError::Stopped))
    }
}

async fn run(
    js: jetstream::Context,
    config: GroupCommitConfig,
    metrics: Arc<Metrics>,
    stream: &'static str,
    mut rx: mpsc::UnboundedReceiver<Pending>,
) {
    let slots = Arc::new(Semaphore::new(config.max_in_flight.max(1)));
    let max_batch = config.max_batch.max(1);
    let mut held: Option<Pending> = None;
    loop {
        let first = match held.take() {
            Some(p) => p,
            None => match rx.recv().await {
                Some(p) => p,
                None => return,
            },
        };
        // Wait for a free slot first: what arrives meanwhile joins this batch.
        let Ok(slot) = slots.clone().acquire_owned().await else { return };
        let mut size = first.messages.len();
        let mut batch = vec![first];
        while size < max_batch {
            match rx.try_recv() {
                Ok(p) if size + p.messages.len() <= max_batch => {
                    size += p.messages.len();
                    batch.push(p);
                }
                Ok(p) => {
                    // Does not fit: it opens the next batch, whole.
                    held = Some(p);
                    break;
                }
                Err(_) => break,
            }
        }
        let js = js.clone();
        let metrics = metrics.clone();
        tokio::spawn(async move {
            commit(&js, batch, max_batch, config.ack_timeout, &metrics, stream).await;
            drop(slot);
        });
    }
}

async fn commit(
    js: &jetstream::Context,
    batch: Vec<Pending>,
    max_batch: usize,
    timeout: Duration,
    metrics: &Metrics,
    stream: &'static str,
) {
    // One caller with more than a batch's worth: its chunks, one after the other, in order.
    if batch.len() == 1 && batch[0].messages.len() > max_batch {
        let Some(p) = batch.into_iter().next() else { return };
        let mut stored = Vec::with_capacity(p.messages.len());
        for chunk in p.messages.chunks(max_batch) {
            match commit_messages(js, chunk, timeout, metrics, stream).await {
                Ok(s) => stored.extend(s),
                Err(e) => {
                    let _ = p.answer.send(Err(e));
                    return;
                }
            }
        }
        let _ = p.answer.send(Ok(stored));
        return;
    }
    let all: Vec<Message> = batch.iter().flat_map(|p| p.messages.iter().cloned()).collect();
    metrics.group_commit_batch_messages.get_or_create(&StreamLabels { stream }).observe(all.len() as f64);
    if all.len() == 1 {
        for p in batch {
            let result = publish_in_order(js, &p.messages, timeout).await;
            let _ = p.answer.send(result);
        }
        return;
    }
    let labels = |outcome: &'static str| GroupCommitLabels { stream, outcome };
    let started = Instant::now();
    match commit_atomic(js, &all, timeout).await {
        Ok(last_seq) => {
            metrics.group_commits.get_or_create(&labels("committed")).inc();
            metrics.group_commit_duration.observe(started.elapsed().as_secs_f64());
            // An atomic batch is stored contiguously, in its order, ending at `last_seq`.
            let mut seq = (last_seq + 1).saturating_sub(all.len() as u64);
            for p in batch {
                let n = p.messages.len() as u64;
                let _ = p.answer.send(Ok((seq..seq + n).map(|s| (Stored::New, s)).collect()));
                seq += n;
            }
        }
        Err(BatchFailure::Refused { code, description }) => {
            // Nothing of the batch is stored: each caller's messages again, on their own.
            let outcome = if code == Some(ERR_BATCH_DUPLICATE) { "split_duplicate" } else { "split_refused" };
            metrics.group_commits.get_or_create(&labels(outcome)).inc();
            if code != Some(ERR_BATCH_DUPLICATE) {
                tracing::warn!(stream, error = %description, "JetStream refused an atomic batch; publishing its messages one by one");
            }
            let answers = batch.into_iter().map(|p| async move {
                let result = publish_in_order(js, &p.messages, timeout).await;
                let _ = p.answer.send(result);
            });
            futures_util::future::join_all(answers).await;
        }
        Err(BatchFailure::Other(e)) => {
            metrics.group_commits.get_or_create(&labels("failed")).inc();
            for p in batch {
                let _ = p.answer.send(Err(e.clone()));
            }
        }
    }
}

/// One chunk of a large caller's messages: atomic, or one by one when refused.
async fn commit_messages(
    js: &jetstream::Context,
    messages: &[Message],
    timeout: Duration,
    metrics: &Metrics,
    stream: &'static str,
) -> Result<Vec<(Stored, u64)>, CommitError> {
    metrics.group_commit_batch_messages.get_or_create(&StreamLabels { stream }).observe(messages.len() as f64);
    if messages.len() == 1 {
        return publish_in_order(js, messages, timeout).await;
    }
    let labels = |outcome: &'static str| GroupCommitLabels { stream, outcome };
    match commit_atomic(js, messages, timeout).await {
        Ok(last_seq) => {
            metrics.group_commits.get_or_create(&labels("committed")).inc();
            let first = (last_seq + 1).saturating_sub(messages.len() as u64);
            Ok((first..=last_seq).map(|s| (Stored::New, s)).collect())
        }
        Err(BatchFailure::Refused { code, .. }) => {
            let outcome = if code == Some(ERR_BATCH_DUPLICATE) { "split_duplicate" } else { "split_refused" };
            metrics.group_commits.get_or_create(&labels(outcome)).inc();
            publish_in_order(js, messages, timeout).await
        }
        Err(BatchFailure::Other(e)) => {
            metrics.group_commits.get_or_create(&labels("failed")).inc();
            Err(e)
        }
    }
}

/// Each message alone, in order, each acknowledged before the next is sent.
async fn publish_in_order(js: &jetstream::Context, messages: &[Message], timeout: Duration) -> Result<Vec<(Stored, u64)>, CommitError> {
    let mut stored = Vec::with_capacity(messages.len());
    for m in messages {
        stored.push(publish_one(js, m.subject.clone(), m.headers.clone(), m.payload.clone(), timeout).await?);
    }
    Ok(stored)
}

enum BatchFailure {
    /// JetStream answered with an error: nothing of the batch was stored.
    Refused { code: Option<u64>, description: String },
    /// No answer: the batch may or may not be stored.
    Other(CommitError),
}

/// Commits `batch` as one atomic batch; Ok with the stream sequence of its last message.
async fn commit_atomic(js: &jetstream::Context, batch: &[Message], timeout: Duration) -> Result<u64, BatchFailure> {
    let client = js.client();
    let id = crate::servers::random_hex(12);
    let last = batch.len();
    let work = async {
        let mut reply = None;
        for (i, p) in batch.iter().enumerate() {
            let seq = i + 1;
            let mut headers = p.headers.clone();
            headers.insert(BATCH_ID, id.as_str());
            headers.insert(BATCH_SEQUENCE, seq.to_string().as_str());
            if seq < last {
                // Staged without an answer; the same connection keeps them in order.
                client
                    .publish_with_headers(p.subject.clone(), headers, p.payload.clone())
                    .await
                    .map_err(|e| BatchFailure::Other(CommitError::Refused(e.to_string())))?;
            } else {
                headers.insert(BATCH_COMMIT, "1");
                reply = Some(
                    client
                        .request_with_headers(p.subject.clone(), headers, p.payload.clone())
                        .await
                        .map_err(|e| BatchFailure::Other(CommitError::Refused(e.to_string())))?,
                );
            }
        }
        Ok::<_, BatchFailure>(reply)
    };
    let reply = tokio::time::timeout(timeout, work).await.map_err(|_| BatchFailure::Other(CommitError::Timeout(timeout)))??;
    let Some(reply) = reply else { return Err(BatchFailure::Other(CommitError::Refused("empty batch".into()))) };
    let answer: BatchAck = serde_json::from_slice(&reply.payload)
        .map_err(|e| BatchFailure::Other(CommitError::Refused(format!("unreadable batch acknowledgement: {e}"))))?;
    match answer.error {
        Some(err) => Err(BatchFailure::Refused { code: err.err_code, description: err.description.unwrap_or_default() }),
        None if answer.count == Some(last as u64) => match answer.seq {
            Some(seq) => Ok(seq),
            None => Err(BatchFailure::Other(CommitError::Refused("batch acknowledged without a sequence".into()))),
        },
        None => Err(BatchFailure::Other(CommitError::Refused(format!("batch acknowledged with count {:?}, sent {last}", answer.count)))),
    }
}

#[derive(serde::Deserialize)]
struct BatchAck {
    seq: Option<u64>,
    count: Option<u64>,
    error: Option<BatchAckError>,
}

#[derive(serde::Deserialize)]
struct BatchAckError {
    err_code: Option<u64>,
    description: Option<String>,
}

async fn publish_one(
    js: &jetstream::Context,
    subject: String,
    headers: HeaderMap,
    payload: Bytes,
    timeout: Duration,
) -> Result<(Stored, u64), CommitError> {
    let work = async {
        let ack = js.publish_with_headers(subject, headers, payload).await.map_err(|e| CommitError::Refused(e.to_string()))?;
        ack.await.map_err(|e| CommitError::Refused(e.to_string()))
    };
    let ack = tokio::time::timeout(timeout, work).await.map_err(|_| CommitError::Timeout(timeout))??;
    Ok((if ack.duplicate { Stored::Duplicate } else { Stored::New }, ack.sequence))
}

#[cfg(all(test, feature = "harness"))]
mod tests {
    use super::*;
    use crate::harness::TestNats;

    async fn stream(nats: &TestNats) -> jetstream::Context {
        let js = nats.jetstream().await;
        js.create_stream(jetstream::stream::Config {
            name: "T".into(),
            subjects: vec!["t.>".into()],
            allow_atomic_publish: true,
            ..Default::default()
        })
        .await
        .unwrap_or_else(|e| panic!("stream: {e}"));
        js
    }

    fn message(subject: &str, id: &str) -> Message {
        let mut headers = HeaderMap::new();
        headers.insert("Nats-Msg-Id", id);
        Message { subject: subject.into(), headers, payload: Bytes::from(id.to_string()) }
    }

    async fn stored_payloads(js: &jetstream::Context) -> Vec<String> {
        let mut s = js.get_stream("T").await.unwrap_or_else(|e| panic!("{e}"));
        let n = s.info().await.unwrap_or_else(|e| panic!("{e}")).state.messages;
        let mut out = Vec::new();
        for seq in 1..=n {
            let m = s.get_raw_message(seq).await.unwrap_or_else(|e| panic!("{e}"));
            out.push(String::from_utf8_lossy(&m.payload).to_string());
        }
        out
    }

    fn counter(metrics: &Metrics, outcome: &'static str) -> u64 {
        metrics.group_commits.get_or_create(&GroupCommitLabels { stream: "T", outcome }).get()
    }

    #[tokio::test]
    async fn concurrent_publishes_are_committed_together_and_each_is_answered() {
        let nats = TestNats::start();
        let js = stream(&nats).await;
        let metrics = Metrics::new();
        let commits = GroupCommit::start(
            js.clone(),
            GroupCommitConfig { max_batch: 64, max_in_flight: 2, ..Default::default() },
            metrics.clone(),
            "T",
        );
        let answers = futures_util::future::join_all((0..300).map(|i| {
            let c = commits.clone();
            async move { c.publish(format!("t.{}", i % 7), message("x", &format!("m{i}")).headers, Bytes::from(format!("m{i}"))).await }
        }))
        .await;
        assert!(answers.iter().all(|a| *a == Ok(Stored::New)), "{answers:?}");
        let mut stored = stored_payloads(&js).await;
        stored.sort();
        let mut expected: Vec<String> = (0..300).map(|i| format!("m{i}")).collect();
        expected.sort();
        assert_eq!(stored, expected, "every message stored once");
        assert!(counter(&metrics, "committed") > 0, "no atomic batch formed under 300 concurrent publishes");
    }

    #[tokio::test]
    async fn each_caller_learns_where_its_messages_lie() {
        let nats = TestNats::start();
        let js = stream(&nats).await;
        let metrics = Metrics::new();
        let commits = GroupCommit::start(
            js.clone(),
            GroupCommitConfig { max_batch: 64, max_in_flight: 2, ..Default::default() },
            metrics.clone(),
            "T",
        );
        let answers = futures_util::future::join_all((0..200).map(|i| {
            let c = commits.clone();
            async move {
                let messages = vec![message("t.s", &format!("s{i}a")), message("t.s", &format!("s{i}b"))];
                (i, c.publish_all_at(messages).await)
            }
        }))
        .await;
        let s = js.get_stream("T").await.unwrap_or_else(|e| panic!("{e}"));
        for (i, answer) in answers {
            let at = answer.unwrap_or_else(|e| panic!("{e}"));
            for ((_, seq), suffix) in at.iter().zip(["a", "b"]) {
                let m = s.get_raw_message(*seq).await.unwrap_or_else(|e| panic!("{e}"));
                assert_eq!(String::from_utf8_lossy(&m.payload), format!("s{i}{suffix}"), "seq {seq}");
            }
        }
        assert!(counter(&metrics, "committed") > 0, "no atomic batch formed");
    }

    #[tokio::test]
    async fn a_batch_refused_for_a_duplicate_answers_each_message_on_its_own() {
        let nats = TestNats::start();
        let js = stream(&nats).await;
        let metrics = Metrics::new();
        assert_eq!(
            publish_one(&js, "t.a".into(), message("t.a", "dup").headers, "dup".into(), Duration::from_secs(5)).await,
            Ok((Stored::New, 1))
        );
        let mut answers = Vec::new();
        let mut batch = Vec::new();
        for id in ["a1", "dup", "a2"] {
            let (answer, answered) = oneshot::channel();
            batch.push(Pending { messages: vec![message("t.a", id)], answer });
            answers.push(answered);
        }
        commit(&js, batch, 256, Duration::from_secs(5), &metrics, "T").await;
        let mut results = Vec::new();
        for a in answers {
            results.push(a.await.unwrap_or_else(|e| panic!("{e}")));
        }
        assert_eq!(
            results,
            vec![Ok(vec![(Stored::New, 2)]), Ok(vec![(Stored::Duplicate, 1)]), Ok(vec![(Stored::New, 3)])],
            "each answered with its own sequence, a duplicate with the first one's"
        );
        assert_eq!(counter(&metrics, "split_duplicate"), 1);
        assert_eq!(stored_payloads(&js).await, vec!["dup", "a1", "a2"]);
    }

    #[tokio::test]
    async fn one_callers_messages_keep_their_order_across_batches() {
        let nats = TestNats::start();
        let js = stream(&nats).await;
        let metrics = Metrics::new();
        let commits = GroupCommit::start(
            js.clone(),
            GroupCommitConfig { max_batch: 8, max_in_flight: 4, ..Default::default() },
            metrics.clone(),
            "T",
        );
        let messages: Vec<Message> = (0..30).map(|i| message("t.o", &format!("o{i:02}"))).collect();
        let stored = commits.publish_all_at(messages).await.unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(stored.len(), 30);
        let seqs: Vec<u64> = stored.iter().map(|(_, seq)| *seq).collect();
        assert_eq!(seqs, (1..=30).collect::<Vec<u64>>(), "each message answered with where it lies");
        let expected: Vec<String> = (0..30).map(|i| format!("o{i:02}")).collect();
        assert_eq!(stored_payloads(&js).await, expected);
        assert_eq!(counter(&metrics, "committed"), 4, "30 messages in batches of at most 8");
    }

    #[tokio::test]
    async fn a_stream_without_atomic_batches_still_stores_everything() {
        let nats = TestNats::start();
        let js = nats.jetstream().await;
        js.create_stream(jetstream::stream::Config { name: "T".into(), subjects: vec!["t.>".into()], ..Default::default() })
            .await
            .unwrap_or_else(|e| panic!("stream: {e}"));
        let metrics = Metrics::new();
        let commits = GroupCommit::start(js.clone(), GroupCommitConfig::default(), metrics.clone(), "T");
        let stored =
            commits.publish_all((0..5).map(|i| message("t.n", &format!("n{i}"))).collect()).await.unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(stored, vec![Stored::New; 5]);
        assert_eq!(stored_payloads(&js).await.len(), 5);
        assert_eq!(counter(&metrics, "split_refused"), 1);
    }
}

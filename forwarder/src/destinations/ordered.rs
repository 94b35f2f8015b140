//! Ordered delivery per conversation (`ordering = "conversation"`).
//!
//! The order is the one in which ingest stored the webhooks in `HOOKLINE_RAW` (an event's
//! `raw.seq`), and within one webhook the payload's (`raw.index`). The key is the channel and
//! the conversation (or the sender when an event has none, then the channel alone). An event of
//! a key is sent only after the previous one was answered 2xx or dead-lettered *and its ack was
//! confirmed by JetStream*, so that no process can see an earlier event come back after a later
//! one was sent.
//!
//! How, in four parts (ARCHITECTURE.md explains the choice):
//!
//! - **One owner.** The destination's consumer is read by one process at a time, the holder of a
//!   lease ([`super::lease`]); the others wait to take over.
//! - **The owner holds, per key, a queue** of the events it fetched, sorted by `(raw.seq,
//!   raw.index)`, and sends each key's head; the heads of different keys go out in parallel (up
//!   to the destination's `max_in_flight`). A failing head is retried in memory, on the
//!   destination's schedule, while the message stays unacked (progress acks keep it so); only its
//!   key waits. The breaker and the rate limit apply to every attempt.
//! - **Watermarks from the normalizers.** Several normalizer processes may store two webhooks'
//!   events in either order. Each normalizer process writes, when it moved, the ack floor of the
//!   consumer `normalizer` to `hookline.order.watermark` in `HOOKLINE_EVENTS` (normalizer's
//!   `watermark.rs`); the ordered consumer reads those too. A watermark N is stored after every
//!   event of raw sequence up to N, so once the owner has read it, an event of raw sequence up to
//!   N + 1 is sent only when no earlier one of its key can still arrive: an earlier event stored
//!   late is already in the key's queue.
//! - **A clean hand-over.** A new owner (at start, after a takeover, after a fetch error) sends
//!   nothing until it holds every message the consumer counts as pending: what a dead owner held
//!   comes back after `ACK_WAIT`; an owner that stops NAKs what it holds, so it comes back at once.

use async_nats::jetstream::consumer::PullConsumer;
use async_nats::jetstream::{self, kv, AckKind, Message};
use futures_util::StreamExt;
use serde::Deserialize;
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use hookline_shared::metrics::DestinationLabels;
use hookline_shared::names;

use super::breaker::Gate;
use super::lease::{Lease, Lost, RENEW_EVERY};
use crate::worker::{DestinationWorker, EventHead};

/// The ordered consumer's `ack_wait`: how long what a dead owner held stays away.
pub const ACK_WAIT: Duration = Duration::from_secs(10);
/// The most events an owner holds (the consumer's `max_ack_pending`).
pub const MAX_HELD: usize = 10_000;
const PROGRESS_EVERY: Duration = Duration::from_secs(3);

/// What ordering reads of an event.
#[derive(Deserialize)]
struct OrderHead {
    channel_id: String,
    #[serde(default)]
    conversation: Option<IdOnly>,
    #[serde(default)]
    sender: Option<IdOnly>,
    #[serde(default)]
    raw: Option<RawPosition>,
}

#[derive(Deserialize)]
struct IdOnly {
    id: String,
}

#[derive(Deserialize)]
struct RawPosition {
    seq: u64,
    #[serde(default)]
    index: Option<u32>,
}

/// An event's place in its key: raw sequence, index in the webhook, then the events stream's
/// sequence (which orders copies of one event, and events stored before `raw.index` existed).
type Position = (u64, u32, u64);

/// The key and position of the event in `payload` stored at `stream_seq`. An event that cannot be
/// read gets a key of its own (it is dead-lettered when its turn comes).
pub fn key_and_position(payload: &[u8], stream_seq: u64) -> (String, Position) {
    match serde_json::from_slice::<OrderHead>(payload) {
        Ok(head) => {
            let key = match (&head.conversation, &head.sender) {
                (Some(c), _) => format!("{}\u{0}c\u{0}{}", head.channel_id, c.id),
                (None, Some(s)) => format!("{}\u{0}s\u{0}{}", head.channel_id, s.id),
                (None, None) => head.channel_id.clone(),
            };
            let position = match head.raw {
                Some(raw) => (raw.seq, raw.index.unwrap_or(0), stream_seq),
                None => (0, 0, stream_seq),
            };
            (key, position)
        }
        Err(_) => (format!("\u{1}unreadable\u{0}{stream_seq}"), (0, 0, stream_seq)),
    }
}

/// Runs the ordered destination until `stop`: takes its lease when free, delivers while it holds
/// it, and hands over cleanly.
pub async fn run(worker: Arc<DestinationWorker>, consumer: PullConsumer, leases: kv::Store, instance: String, stop: CancellationToken) {
    let id = worker.destination.id.clone();
    let label = DestinationLabels { destination: id.clone() };
    let owner_gauge = worker.metrics.destination_ordered_owner.get_or_create(&label).clone();
    owner_gauge.set(0);
    let mut waiting_logged = false;
    while !stop.is_cancelled() {
        match Lease::try_acquire(&leases, &id, &instance).await {
            Some(lease) => {
                waiting_logged = false;
                owner_gauge.set(1);
                tracing::info!(destination = %id, "ordered destination: this process delivers it");
                let owner = Owner::new(worker.clone(), consumer.clone());
                owner.run(lease, &stop).await;
                owner_gauge.set(0);
            }
            None => {
                if !waiting_logged {
                    tracing::info!(destination = %id, "ordered destination delivered by another process; standing by to take over");
                    waiting_logged = true;
                }
                tokio::select! {
                    _ = stop.cancelled() => break,
                    _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                }
            }
        }
    }
}

/// The events of one key that the owner holds.
#[derive(Default)]
struct KeyQueue {
    waiting: BTreeMap<Position, u64>,
    /// The one being delivered (or whose ack is being confirmed).
    sending: Option<Position>,
}

enum Done {
    /// Answered 2xx or dead-lettered: ack it, then release its key.
    Finished {
        seq: u64,
    },
    /// Stopped before an answer: left to redelivery.
    Abandoned,
    Acked {
        seq: u64,
    },
    AckFailed {
        seq: u64,
    },
}

struct Held {
    message: Arc<Message>,
    /// None: not for this destination (filtered), only to be acked.
    key: Option<String>,
}

struct Owner {
    worker: Arc<DestinationWorker>,
    consumer: PullConsumer,
    held: HashMap<u64, Held>,
    keys: HashMap<String, KeyQueue>,
    ready: VecDeque<String>,
    /// Keys whose head waits for the watermark, by the head's raw sequence.
    blocked: BTreeMap<u64, Vec<String>>,
    /// Events of raw sequence up to this may be sent.
    safe_raw: u64,
    /// Sending nothing, acking nothing, until every pending message is held here.
    syncing: bool,
    /// Acks decided while syncing.
    deferred_acks: Vec<u64>,
    acks_in_flight: usize,
    done_tx: mpsc::UnboundedSender<Done>,
    done_rx: mpsc::UnboundedReceiver<Done>,
    tasks: JoinSet<()>,
    cancel: CancellationToken,
    blocked_since: Option<Instant>,
    /// The client's connection count when last looked at: a reconnection may have lost messages
    /// in transit, so it means syncing again.
    connects: u64,
}

impl Owner {
    fn new(worker: Arc<DestinationWorker>, consumer: PullConsumer) -> Self {
        let (done_tx, done_rx) = mpsc::unbounded_channel();
        let connects = worker.js.client().statistics().connects.load(std::sync::atomic::Ordering::Relaxed);
        Owner {
            worker,
            consumer,
            connects,
            held: HashMap::new(),
            keys: HashMap::new(),
            ready: VecDeque::new(),
            blocked: BTreeMap::new(),
            safe_raw: 0,
            syncing: true,
            deferred_acks: Vec::new(),
            acks_in_flight: 0,
            done_tx,
            done_rx,
            tasks: JoinSet::new(),
            cancel: CancellationToken::new(),
            blocked_since: None,
        }
    }

    fn id(&self) -> &str {
        &self.worker.destination.id
    }

    async fn run(mut self, mut lease: Lease, stop: &CancellationToken) {
        let mut progress = tokio::time::interval(PROGRESS_EVERY);
        let mut renew = tokio::time::interval(RENEW_EVERY);
        let mut batch: Option<jetstream::consumer::pull::Batch> = None;
        let mut lost = None;
        let held_gauge =
            self.worker.metrics.destination_ordered_held.get_or_create(&DestinationLabels { destination: self.id().to_string() }).clone();
        loop {
            held_gauge.set(self.held.len() as i64);
            while self.tasks.try_join_next().is_some() {}
            if batch.is_none() {
                if self.syncing && self.acks_in_flight == 0 && self.check_hand_over().await {
                    self.syncing = false;
                    tracing::info!(destination = %self.id(), held = self.held.len(), "ordered destination: every pending event is here; delivering");
                    for seq in std::mem::take(&mut self.deferred_acks) {
                        self.ack(seq);
                    }
                    self.dispatch(&lease);
                }
                let room = MAX_HELD.saturating_sub(self.held.len()).min(self.worker.batch_size);
                if room > 0 && lease.valid() {
                    let expires = if self.syncing { Duration::from_millis(300) } else { Duration::from_secs(1) };
                    match self.consumer.batch().max_messages(room).expires(expires).messages().await {
                        Ok(b) => batch = Some(b),
                        Err(e) => {
                            tracing::warn!(destination = %self.id(), error = %e, "cannot fetch from HOOKLINE_EVENTS; retrying");
                            self.syncing = true;
                        }
                    }
                }
            }
            tokio::select! {
                _ = stop.cancelled() => break,
                next = async { match batch.as_mut() { Some(b) => b.next().await, None => std::future::pending().await } } => match next {
                    Some(Ok(message)) => {
                        self.receive(message);
                        self.dispatch(&lease);
                    }
                    Some(Err(e)) => {
                        // Whatever was in transit may be lost: make sure it comes back first.
                        tracing::debug!(destination = %self.id(), error = %e, "fetch ended");
                        self.syncing = true;
                        batch = None;
                    }
                    None => batch = None,
                },
                done = self.done_rx.recv() => {
                    if let Some(done) = done {
                        self.on_done(done);
                        self.dispatch(&lease);
                    }
                }
                _ = progress.tick() => {
                    self.progress();
                    self.check_connection();
                    self.warn_if_blocked_long();
                    // Holding nothing: is the consumer still there? (A power cut can take one
                    // created moments before; a fetch from a missing one brings nothing.)
                    if self.held.is_empty() && self.acks_in_flight == 0 {
                        if let Some(again) = self.worker.consumer_again_if_gone(&self.consumer).await {
                            self.consumer = again;
                            self.syncing = true;
                            batch = None;
                        }
                    }
                }
                _ = renew.tick() => {
                    if let Err(why) = lease.renew().await {
                        lost = Some(why);
                        break;
                    }
                }
                // Nothing to fetch into while full or without a valid lease: look again soon.
                _ = tokio::time::sleep(Duration::from_millis(200)), if batch.is_none() => {}
            }
        }
        held_gauge.set(0);
        match lost {
            Some(Lost::Taken) => {
                tracing::warn!(destination = %self.id(), "ordered destination's lease taken by another process; handing over")
            }
            Some(Lost::Expired) => {
                tracing::warn!(destination = %self.id(), "ordered destination's lease not renewed in time; handing over")
            }
            None => tracing::info!(destination = %self.id(), held = self.held.len(), "ordered destination stopping: handing over"),
        }
        drop(batch);
        self.hand_over().await;
        if lost.is_none() {
            lease.release().await;
        }
    }

    /// A fetched message: into its key's queue (or, not for this destination, to be acked).
    fn receive(&mut self, message: Message) {
        let Ok(info) = message.info() else {
            tracing::error!("a message without JetStream metadata; leaving it to redelivery");
            return;
        };
        let seq = info.stream_sequence;
        let message = Arc::new(message);
        if let Some(held) = self.held.get_mut(&seq) {
            // Redelivered while held (a progress ack lost): keep the newest handle.
            held.message = message;
            return;
        }
        if message.subject.as_str() == names::ORDER_WATERMARK_SUBJECT {
            self.watermark(&message.payload);
            self.held.insert(seq, Held { message, key: None });
            self.ack(seq);
            return;
        }
        if !self.worker.wants(&message) {
            self.worker.count("filtered");
            self.held.insert(seq, Held { message, key: None });
            self.ack(seq);
            return;
        }
        let (key, position) = key_and_position(&message.payload, seq);
        self.held.insert(seq, Held { message, key: Some(key.clone()) });
        let queue = self.keys.entry(key.clone()).or_default();
        queue.waiting.insert(position, seq);
        if queue.sending.is_none() {
            self.ready.push_back(key);
        }
    }

    /// Sends the head of every ready key whose turn has come.
    fn dispatch(&mut self, lease: &Lease) {
        if self.syncing || !lease.valid() {
            return;
        }
        while let Some(key) = self.ready.pop_front() {
            let Some(queue) = self.keys.get_mut(&key) else { continue };
            if queue.sending.is_some() {
                continue;
            }
            let Some((&position, &seq)) = queue.waiting.first_key_value() else {
                self.keys.remove(&key);
                continue;
            };
            let raw = position.0;
            if raw > self.safe_raw && raw != 0 {
                self.blocked.entry(raw).or_default().push(key);
                self.blocked_since.get_or_insert_with(Instant::now);
                continue;
            }
            queue.waiting.remove(&position);
            let Some(held) = self.held.get(&seq) else { continue };
            queue.sending = Some(position);
            let message = held.message.clone();
            let worker = self.worker.clone();
            let done = self.done_tx.clone();
            let cancel = self.cancel.clone();
            self.tasks.spawn(async move {
                let result = deliver(&worker, &message, seq, &cancel).await;
                let _ = done.send(result);
            });
        }
    }

    fn on_done(&mut self, done: Done) {
        match done {
            Done::Finished { seq } => self.ack(seq),
            Done::Abandoned => {}
            Done::Acked { seq } => {
                self.acks_in_flight = self.acks_in_flight.saturating_sub(1);
                if let Some(Held { key: Some(key), .. }) = self.held.remove(&seq) {
                    if let Some(queue) = self.keys.get_mut(&key) {
                        queue.sending = None;
                        if queue.waiting.is_empty() {
                            self.keys.remove(&key);
                        } else {
                            self.ready.push_back(key);
                        }
                    }
                }
            }
            Done::AckFailed { seq } => {
                self.acks_in_flight = self.acks_in_flight.saturating_sub(1);
                // The key stays held until JetStream has the ack: an event must never come back
                // after a later one of its key was sent.
                let done = self.done_tx.clone();
                tokio::spawn(async move {
                    tokio::time::sleep(Duration::from_millis(500)).await;
                    let _ = done.send(Done::Finished { seq });
                });
            }
        }
    }

    /// Acks `seq` and confirms it (deferred while syncing).
    fn ack(&mut self, seq: u64) {
        if self.syncing {
            self.deferred_acks.push(seq);
            return;
        }
        let Some(held) = self.held.get(&seq) else { return };
        let message = held.message.clone();
        let done = self.done_tx.clone();
        self.acks_in_flight += 1;
        tokio::spawn(async move {
            let result = match tokio::time::timeout(Duration::from_secs(5), message.double_ack()).await {
                Ok(Ok(())) => Done::Acked { seq },
                Ok(Err(e)) => {
                    tracing::warn!(error = %e, "ack not confirmed; retrying it");
                    Done::AckFailed { seq }
                }
                Err(_) => Done::AckFailed { seq },
            };
            let _ = done.send(result);
        });
    }

    /// Keeps every held message from being redelivered elsewhere.
    fn progress(&self) {
        for held in self.held.values() {
            let message = held.message.clone();
            tokio::spawn(async move {
                let _ = message.ack_with(AckKind::Progress).await;
            });
        }
    }

    /// With no fetch outstanding and no ack unconfirmed: whether the consumer's pending messages
    /// are exactly those held here (none left with a dead or former owner, none lost in transit).
    async fn check_hand_over(&mut self) -> bool {
        match self.consumer.get_info().await {
            Ok(info) => {
                let here = self.held.len();
                if info.num_ack_pending == here {
                    return true;
                }
                tracing::info!(destination = %self.id(), pending = info.num_ack_pending, here,
                    "ordered destination: waiting for the events another owner held (back within {:?})", ACK_WAIT);
                false
            }
            Err(e) => {
                tracing::warn!(destination = %self.id(), error = %e, "cannot read the ordered destination's consumer");
                false
            }
        }
    }

    /// A watermark read: every event of raw sequence up to its floor was stored before it, so
    /// events up to the floor + 1 may go (their earlier ones, if any, are in their queues).
    fn watermark(&mut self, payload: &[u8]) {
        #[derive(Deserialize)]
        struct Watermark {
            raw_ack_floor: u64,
        }
        let Ok(mark) = serde_json::from_slice::<Watermark>(payload) else {
            tracing::warn!(destination = %self.id(), "an unreadable watermark; ignored");
            return;
        };
        let safe = mark.raw_ack_floor + 1;
        if safe <= self.safe_raw {
            return;
        }
        self.safe_raw = safe;
        let later = self.blocked.split_off(&(safe + 1));
        for (_, keys) in std::mem::replace(&mut self.blocked, later) {
            self.ready.extend(keys);
        }
        if self.blocked.is_empty() {
            self.blocked_since = None;
        }
    }

    /// A reconnection may have lost messages in transit: sync again before sending more.
    fn check_connection(&mut self) {
        let connects = self.worker.js.client().statistics().connects.load(std::sync::atomic::Ordering::Relaxed);
        if connects != self.connects {
            self.connects = connects;
            if !self.syncing {
                tracing::info!(destination = %self.id(), "reconnected to NATS: checking that every pending event is here");
                self.syncing = true;
            }
        }
    }

    fn warn_if_blocked_long(&mut self) {
        if let Some(since) = self.blocked_since {
            if since.elapsed() > Duration::from_secs(30) {
                tracing::warn!(destination = %self.id(), safe_raw = self.safe_raw, keys = self.blocked.values().map(Vec::len).sum::<usize>(),
                    "ordered events have waited 30 s for a watermark: a raw message is not normalized yet (normalizers down or retrying?)");
                self.blocked_since = Some(Instant::now());
            }
        }
    }

    /// Stops delivering: lets the attempts in flight finish, acks what they delivered, and NAKs
    /// every other held message so that the next owner gets it at once.
    async fn hand_over(mut self) {
        self.cancel.cancel();
        self.syncing = false;
        let deferred = std::mem::take(&mut self.deferred_acks);
        while self.tasks.join_next().await.is_some() {}
        let mut finished: Vec<u64> = deferred;
        while let Ok(done) = self.done_rx.try_recv() {
            match done {
                Done::Finished { seq } | Done::AckFailed { seq } => finished.push(seq),
                Done::Acked { seq } => {
                    self.held.remove(&seq);
                }
                Done::Abandoned => {}
            }
        }
        // Acks already sent: wait for their answers (bounded).
        let deadline = Instant::now() + Duration::from_secs(5);
        while self.acks_in_flight > 0 && Instant::now() < deadline {
            match tokio::time::timeout(Duration::from_millis(200), self.done_rx.recv()).await {
                Ok(Some(Done::Acked { seq })) => {
                    self.acks_in_flight -= 1;
                    self.held.remove(&seq);
                }
                Ok(Some(Done::AckFailed { seq })) => {
                    self.acks_in_flight -= 1;
                    finished.push(seq);
                }
                Ok(Some(_)) | Err(_) => {}
                Ok(None) => break,
            }
        }
        for seq in finished {
            if let Some(held) = self.held.remove(&seq) {
                if let Err(e) = held.message.double_ack().await {
                    tracing::warn!(error = %e, "ack failed at hand-over; the event may be delivered again");
                }
            }
        }
        for (_, held) in self.held.drain() {
            let _ = held.message.ack_with(AckKind::Nak(None)).await;
        }
    }
}

/// Delivers one event until it is answered 2xx or dead-lettered (`Finished`), retrying in memory
/// on the destination's schedule; `Abandoned` when the owner stops first.
async fn deliver(worker: &DestinationWorker, message: &Message, seq: u64, cancel: &CancellationToken) -> Done {
    let mut attempt = message.info().map(|i| i.delivered.max(1) as usize).unwrap_or(1);
    let head: EventHead = match serde_json::from_slice(&message.payload) {
        Ok(h) => h,
        Err(e) => {
            return match worker.dead_letter(message, seq, attempt, "unknown", "invalid_event", &e.to_string(), None).await {
                AckKind::Ack => Done::Finished { seq },
                _ => Done::Abandoned,
            };
        }
    };
    loop {
        loop {
            match worker.breaker.gate().await {
                Gate::Open | Gate::Probe => break,
                Gate::Closed => {
                    tokio::select! {
                        _ = cancel.cancelled() => return Done::Abandoned,
                        _ = tokio::time::sleep(Duration::from_millis(200)) => {}
                    }
                }
            }
        }
        if let Some(rate) = &worker.rate {
            tokio::select! {
                _ = cancel.cancelled() => return Done::Abandoned,
                _ = rate.acquire() => {}
            }
        }
        let slot = tokio::select! {
            _ = cancel.cancelled() => return Done::Abandoned,
            slot = worker.limit.acquire() => slot,
        };
        let span = worker.span(&head, attempt);
        let ack = worker.attempt(message, &head, seq, attempt, &span).await;
        drop(slot);
        let delay = match ack {
            AckKind::Ack => return Done::Finished { seq },
            AckKind::Nak(Some(delay)) => delay,
            _ => Duration::from_secs(5),
        };
        tokio::select! {
            _ = cancel.cancelled() => return Done::Abandoned,
            _ = tokio::time::sleep(delay) => {}
        }
        attempt += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_key_is_the_conversation_then_the_sender_then_the_channel() {
        let conv = br#"{"channel_id":"ch","conversation":{"id":"c1","type":"direct"},"sender":{"id":"s1"},"raw":{"subject":"x","seq":7,"index":2}}"#;
        let sender = br#"{"channel_id":"ch","sender":{"id":"s1"},"raw":{"subject":"x","seq":7}}"#;
        let channel = br#"{"channel_id":"ch"}"#;
        assert_eq!(key_and_position(conv, 40), ("ch\u{0}c\u{0}c1".to_string(), (7, 2, 40)));
        assert_eq!(key_and_position(sender, 41), ("ch\u{0}s\u{0}s1".to_string(), (7, 0, 41)));
        assert_eq!(key_and_position(channel, 42), ("ch".to_string(), (0, 0, 42)));
        // A conversation id and a sender id that are equal are still different keys.
        let as_conv = br#"{"channel_id":"ch","conversation":{"id":"s1","type":"direct"}}"#;
        assert_ne!(key_and_position(as_conv, 1).0, key_and_position(sender, 1).0);
    }

    #[test]
    fn an_unreadable_event_gets_a_key_of_its_own() {
        let (a, _) = key_and_position(b"not json", 1);
        let (b, _) = key_and_position(b"not json", 2);
        assert_ne!(a, b);
    }

    #[test]
    fn positions_sort_by_raw_sequence_then_index_then_stream() {
        let mut positions = vec![(9, 0, 5), (8, 1, 7), (8, 0, 9), (0, 0, 1)];
        positions.sort();
        assert_eq!(positions, vec![(0, 0, 1), (8, 0, 9), (8, 1, 7), (9, 0, 5)]);
    }
}

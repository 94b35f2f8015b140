//! `bench lookup`: fills a private nats-server (the fsync policy hookline ships) with N events,
//! their index entries and one delivery attempt each, as the normalizer and the forwarder store
//! them (group commits of atomic batches), then times `lookup::event` by event id and
//! `lookup::find` by platform message id on random events, with three destinations in the
//! bucket (a lookup by event id reads them). Loopback only; the fill and the
//! sampling are each bounded in time.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Serialize;

use hookline_operations::lookup::{self, FindQuery};
use hookline_shared::event::NormalizedEvent;
use hookline_shared::group_commit::{GroupCommit, GroupCommitConfig, Message};
use hookline_shared::lookup_records::{index_messages, AttemptOutcome, AttemptRecord};
use hookline_shared::metrics::Metrics;
use hookline_shared::names;
use hookline_shared::servers::Fsync;

use crate::procs::Stack;

pub struct LookupOptions {
    pub events: u64,
    pub samples: usize,
    pub max_fill: Duration,
    pub fsync: Fsync,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct Timing {
    pub samples: usize,
    pub found: usize,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct LookupReport {
    pub events_asked: u64,
    pub events_stored: u64,
    pub index_entries: u64,
    pub attempt_records: u64,
    pub fill_s: f64,
    pub fill_events_per_s: f64,
    pub by_event_id: Timing,
    pub by_message_id: Timing,
}

const CHUNK: u64 = 1000;

fn event_id(i: u64) -> String {
    format!("evt_{:032x}", i.wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ 0x5bd1_e995)
}

fn event(i: u64) -> Result<NormalizedEvent, String> {
    let value = serde_json::json!({
        "id": event_id(i), "schema_version": 1, "kind": "message", "source": "whatsapp", "platform": "whatsapp",
        "provider": "meta", "tenant_id": format!("t{}", i % 10), "channel_id": format!("wa{}", i % 10),
        "occurred_at": "2026-12-01T10:00:00Z", "received_at": "2026-12-01T10:00:01Z",
        "conversation": {"id": format!("1555{:07}", i % 10_000), "type": "direct"},
        "sender": {"id": format!("1555{:07}", i % 10_000), "name": "Ana Example", "phone": format!("+1555{:07}", i % 10_000)},
        "message": {"id": format!("wamid.HBgLMTU1NTEyMzQ1NjcVAgASGBQz{i:012}"), "type": "text",
                    "text": "Hello, I would like to know whether my order has shipped yet. Thanks!"},
        "raw": {"subject": format!("hookline.raw.whatsapp.wa{}", i % 10), "seq": i + 1}
    });
    serde_json::from_value(value).map_err(|e| e.to_string())
}

fn message_id(i: u64) -> String {
    format!("wamid.HBgLMTU1NTEyMzQ1NjcVAgASGBQz{i:012}")
}

/// Stores events `from..to` with their index entries and one attempt each.
async fn fill_chunk(events_gc: &GroupCommit, js: &async_nats::jetstream::Context, from: u64, to: u64) -> Result<(), String> {
    let mut events = Vec::with_capacity((to - from) as usize);
    let mut messages = Vec::with_capacity(events.capacity());
    for i in from..to {
        let e = event(i)?;
        let subject = names::event_subject(&e.tenant_id, &e.platform, e.kind.as_str());
        let mut headers = async_nats::HeaderMap::new();
        headers.insert(names::header::MSG_ID, e.id.as_str());
        let payload = serde_json::to_vec(&e).map_err(|e| e.to_string())?;
        messages.push(Message { subject, headers, payload: payload.into() });
        events.push(e);
    }
    let stored = events_gc.publish_all_at(messages).await.map_err(|e| e.to_string())?;
    let mut index = Vec::with_capacity(events.len() * 3);
    let mut attempts = Vec::with_capacity(events.len());
    for (e, (_, seq)) in events.iter().zip(&stored) {
        let subject = names::event_subject(&e.tenant_id, &e.platform, e.kind.as_str());
        index.extend(index_messages(e, *seq, &subject));
        let record = AttemptRecord {
            event_id: e.id.clone(),
            destination: "default".into(),
            attempt: 1,
            at: "2026-12-01T10:00:02Z".into(),
            tenant_id: e.tenant_id.clone(),
            event_seq: *seq,
            event_subject: subject,
            outcome: AttemptOutcome::Delivered,
            status: Some(200),
            error: None,
            duration_ms: 3.2,
            body: Some("{\"ok\":true}".into()),
            body_truncated: false,
            next_attempt_at: None,
            dlq_reason: None,
        };
        attempts.extend(record.to_message());
    }
    index.extend(attempts);
    publish_plain(js, index).await
}

/// As the normalizer and the forwarder write the index and the delivery log: plain publishes
/// (their streams take no atomic batch), the acks of each 250 awaited before the next: a
/// JetStream context holds at most 5,000 unacknowledged publishes (async-nats' default), and
/// the fill's four writers must stay under it together.
async fn publish_plain(js: &async_nats::jetstream::Context, messages: Vec<Message>) -> Result<(), String> {
    let mut acks = Vec::with_capacity(250);
    for m in messages {
        acks.push(js.publish_with_headers(m.subject, m.headers, m.payload).await.map_err(|e| e.to_string())?);
        if acks.len() == 250 {
            for ack in acks.drain(..) {
                ack.await.map_err(|e| e.to_string())?;
            }
        }
    }
    for ack in acks {
        ack.await.map_err(|e| e.to_string())?;
    }
    Ok(())
}

fn percentiles(mut ms: Vec<f64>, found: usize) -> Timing {
    ms.sort_by(|a, b| a.total_cmp(b));
    let at = |q: f64| ms.get(((ms.len() as f64 * q) as usize).min(ms.len().saturating_sub(1))).copied().unwrap_or(0.0);
    Timing { samples: ms.len(), found, p50_ms: at(0.50), p99_ms: at(0.99), max_ms: ms.last().copied().unwrap_or(0.0) }
}

pub async fn run(opts: &LookupOptions) -> Result<LookupReport, String> {
    let stack = Stack::start(None, false, opts.fsync, false)?;
    let config = stack.config()?;
    let client = async_nats::connect(hookline_shared::jetstream::server_addrs(&stack.url())?).await.map_err(|e| e.to_string())?;
    let js = async_nats::jetstream::new(client);
    hookline_shared::jetstream::ensure_streams(&js, &config.streams).await.map_err(|e| e.to_string())?;
    let metrics = Metrics::new();
    let gc = |stream: &'static str| {
        GroupCommit::start(
            js.clone(),
            GroupCommitConfig { max_batch: 1000, max_in_flight: 8, ack_timeout: Duration::from_secs(30) },
            metrics.clone(),
            stream,
        )
    };
    let events_gc = gc(names::EVENTS_STREAM);

    // The fill: four writers taking chunks of 1,000 events, until N or the time bound.
    let started = Instant::now();
    let next = Arc::new(AtomicU64::new(0));
    let done = Arc::new(AtomicU64::new(0));
    let mut writers = Vec::new();
    for _ in 0..4 {
        let (events_gc, js) = (events_gc.clone(), js.clone());
        let (next, done, total, max_fill) = (next.clone(), done.clone(), opts.events, opts.max_fill);
        writers.push(tokio::spawn(async move {
            loop {
                if started.elapsed() > max_fill {
                    return Ok::<(), String>(());
                }
                let from = next.fetch_add(CHUNK, Ordering::Relaxed);
                if from >= total {
                    return Ok(());
                }
                let to = (from + CHUNK).min(total);
                fill_chunk(&events_gc, &js, from, to).await?;
                let n = done.fetch_add(to - from, Ordering::Relaxed) + (to - from);
                if n % 100_000 < CHUNK {
                    eprintln!("stored {n} events in {:.0} s", started.elapsed().as_secs_f64());
                }
            }
        }));
    }
    for w in writers {
        w.await.map_err(|e| e.to_string())??;
    }
    let fill_s = started.elapsed().as_secs_f64();
    let count = |name: &'static str| {
        let js = js.clone();
        async move {
            match js.get_stream(name).await {
                Ok(mut s) => s.info().await.map(|i| i.state.messages).unwrap_or(0),
                Err(_) => 0,
            }
        }
    };
    let events_stored = count(names::EVENTS_STREAM).await;
    let index_entries = count(names::INDEX_STREAM).await;
    let attempt_records = count(names::ATTEMPTS_STREAM).await;
    if events_stored == 0 {
        return Err("no event stored".into());
    }

    // Three destinations in the bucket, as a deployment has: a lookup reads them all.
    let bucket = hookline_shared::jetstream::destinations_bucket(&js, &config.streams).await.map_err(|e| e.to_string())?;
    for (id, extra) in [("d1", ""), ("d2", r#","tenant_id":"t1""#), ("d3", r#","filter":{"kind":["status"]}"#)] {
        let record = format!(
            r#"{{"id":"{id}","url":"http://127.0.0.1:9/in","signing_secret":{{"kid":"k","nonce":"AAAAAAAAAAAAAAAA","ct":"AAAA"}}{extra},"created_at":"2026-12-01T00:00:00Z","updated_at":"2026-12-01T00:00:00Z"}}"#
        );
        bucket.put(id, record.into_bytes().into()).await.map_err(|e| e.to_string())?;
    }

    // Random events among those stored (chunks are stored whole: 0..stored are all there).
    let mut state = (started.elapsed().as_nanos() as u64) | 1;
    let mut pick = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state % events_stored
    };
    let sampling = Instant::now();
    let bound = Duration::from_secs(120);
    let (mut by_id, mut by_message) = (Vec::new(), Vec::new());
    let (mut found_id, mut found_message) = (0, 0);
    for _ in 0..opts.samples {
        if sampling.elapsed() > bound {
            break;
        }
        let i = pick();
        let t = Instant::now();
        let view = lookup::event(&js, &event_id(i), None).await.map_err(|e| e.to_string())?;
        by_id.push(t.elapsed().as_secs_f64() * 1000.0);
        found_id += usize::from(view.is_some_and(|v| v.attempts.len() == 1 && v.destinations.len() >= 3));
        let i = pick();
        let query = FindQuery { message_id: Some(message_id(i)), limit: 10, ..Default::default() };
        let t = Instant::now();
        let page = lookup::find(&js, &query, None).await.map_err(|e| e.to_string())?;
        by_message.push(t.elapsed().as_secs_f64() * 1000.0);
        found_message += usize::from(page.events.len() == 1);
    }
    drop(stack);
    Ok(LookupReport {
        events_asked: opts.events,
        events_stored,
        index_entries,
        attempt_records,
        fill_s,
        fill_events_per_s: events_stored as f64 / fill_s.max(1e-9),
        by_event_id: percentiles(by_id, found_id),
        by_message_id: percentiles(by_message, found_message),
    })
}

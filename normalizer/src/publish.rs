//! Publishing events to `HOOKLINE_EVENTS` on `hookline.events.<tenant>.<platform>.<kind>`, then
//! waiting for every ack. `Nats-Msg-Id` is the event id, so storing the same event twice keeps
//! one; a replay adds a suffix so that its copies are stored (and delivered) again. The worker
//! publishes through a group commit (the events of concurrent raw messages in one atomic batch,
//! one raw message's events kept together and in order); a replay publishes directly.

use async_nats::jetstream;
use async_nats::HeaderMap;
use std::time::Duration;

use hookline_shared::event::NormalizedEvent;
use hookline_shared::group_commit::{GroupCommit, Message};
use hookline_shared::names::{self, header};

/// How events reach `HOOKLINE_EVENTS`.
pub enum EventPublisher {
    /// Each event published on its own, acks awaited together.
    Direct(jetstream::Context),
    /// Through a group commit.
    Grouped(GroupCommit),
}

/// Publishes `events` and waits for all their acks: Ok with each event's sequence in
/// `HOOKLINE_EVENTS` (a duplicate's: the copy stored first); Err says which failed and why.
pub async fn publish_events(
    publisher: &EventPublisher,
    events: &[NormalizedEvent],
    tenant: &str,
    channel: &str,
    traceparent: &str,
    msg_id_suffix: Option<&str>,
    timeout: Duration,
) -> Result<Vec<u64>, String> {
    let mut acks = Vec::with_capacity(events.len());
    let mut messages = Vec::with_capacity(events.len());
    for event in events {
        let body = serde_json::to_vec(event).map_err(|e| format!("cannot serialize event {}: {e}", event.id))?;
        let mut headers = HeaderMap::new();
        let msg_id = match msg_id_suffix {
            Some(suffix) => format!("{}:{suffix}", event.id),
            None => event.id.clone(),
        };
        headers.insert(header::MSG_ID, msg_id.as_str());
        headers.insert(header::CONTENT_TYPE, "application/json");
        headers.insert(header::SOURCE, event.source.as_str());
        headers.insert(header::TENANT, tenant);
        headers.insert(header::CHANNEL, channel);
        headers.insert(header::TRACEPARENT, traceparent);
        let subject = names::event_subject(tenant, &event.platform, event.kind.as_str());
        let js = match publisher {
            EventPublisher::Grouped(_) => {
                messages.push(Message { subject, headers, payload: body.into() });
                continue;
            }
            EventPublisher::Direct(js) => js,
        };
        match tokio::time::timeout(timeout, js.publish_with_headers(subject, headers, body.into())).await {
            Ok(Ok(ack)) => acks.push(ack),
            Ok(Err(e)) => return Err(format!("publish of event {}: {e}", event.id)),
            Err(_) => return Err(format!("publish of event {} timed out", event.id)),
        }
    }
    if let EventPublisher::Grouped(commits) = publisher {
        return match tokio::time::timeout(timeout, commits.publish_all_at(messages)).await {
            Ok(Ok(stored)) => Ok(stored.into_iter().map(|(_, seq)| seq).collect()),
            Ok(Err(e)) => Err(format!("events not stored: {e}")),
            Err(_) => Err("events' commit timed out".to_string()),
        };
    }
    let all = futures_util::future::join_all(acks.into_iter().map(|ack| tokio::time::timeout(timeout, ack))).await;
    let mut seqs = Vec::with_capacity(all.len());
    for result in all {
        match result {
            Ok(Ok(ack)) => seqs.push(ack.sequence),
            Ok(Err(e)) => return Err(format!("event not acked: {e}")),
            Err(_) => return Err("event ack timed out".to_string()),
        }
    }
    Ok(seqs)
}

/// The events' lookup keys (`HOOKLINE_INDEX`), queued for the background writer once the events
/// are stored at `seqs`: never waits, a full queue drops them (counted).
pub fn index_events(index: &hookline_shared::background_log::BackgroundLog, events: &[NormalizedEvent], seqs: &[u64], tenant: &str) {
    if !index.is_on() {
        return;
    }
    for (event, seq) in events.iter().zip(seqs) {
        let subject = names::event_subject(tenant, &event.platform, event.kind.as_str());
        for message in hookline_shared::lookup_records::index_messages(event, *seq, &subject) {
            index.record(message);
        }
    }
}

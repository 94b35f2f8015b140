//! The records of the delivery log (`HOOKLINE_ATTEMPTS`) and of the lookup index
//! (`HOOKLINE_INDEX`): written by the forwarder and the normalizer, read by
//! `hookline_operations::lookup`. Their JSON is a contract of those streams.

use serde::{Deserialize, Serialize};

use crate::event::NormalizedEvent;
use crate::group_commit::Message;
use crate::names;

/// What an attempt led to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AttemptOutcome {
    /// 2xx: acknowledged.
    Delivered,
    /// Retryable failure: NAKed, JetStream redelivers at `next_attempt_at`.
    Retrying,
    /// Dead-lettered after this attempt (another 4xx, attempts exhausted).
    DeadLettered,
}

/// One delivery attempt, as stored on `hookline.attempts.<event>`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AttemptRecord {
    pub event_id: String,
    pub destination: String,
    /// 1 for the first delivery, then JetStream's delivery count.
    pub attempt: u64,
    /// When the attempt began (RFC 3339).
    pub at: String,
    pub tenant_id: String,
    /// Where the event lies in `HOOKLINE_EVENTS`.
    pub event_seq: u64,
    pub event_subject: String,
    pub outcome: AttemptOutcome,
    /// The target's HTTP status, when it answered.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status: Option<u16>,
    /// No answer: `timeout`, `connect_error` or `request_error`, with the error's text.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    pub duration_ms: f64,
    /// The answer's body, its first KiB (lossy UTF-8).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub body: Option<String>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub body_truncated: bool,
    /// Retrying: when JetStream redelivers it (RFC 3339).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_attempt_at: Option<String>,
    /// Dead-lettered: the DLQ reason (`rejected_4xx`, `attempts_exhausted`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dlq_reason: Option<String>,
}

impl AttemptRecord {
    pub fn to_message(&self) -> Option<Message> {
        let payload = serde_json::to_vec(self).ok()?;
        Some(Message { subject: names::attempt_subject(&self.event_id), headers: async_nats::HeaderMap::new(), payload: payload.into() })
    }
}

/// An index entry: where an event lies. Every key (`id`, `msg`, `conv`) holds the same entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IndexEntry {
    pub event_id: String,
    pub seq: u64,
    pub subject: String,
    pub tenant_id: String,
}

/// The platform message id an event is about: a message's own id, or the message a status or a
/// reaction refers to. A lookup by message id finds the message and what happened to it.
pub fn message_key(event: &NormalizedEvent) -> Option<&str> {
    if let Some(m) = &event.message {
        return Some(&m.id);
    }
    event.status.as_ref().map(|s| s.message_id.as_str())
}

/// The index messages of one event stored at `seq` on `subject`.
pub fn index_messages(event: &NormalizedEvent, seq: u64, subject: &str) -> Vec<Message> {
    let entry = IndexEntry { event_id: event.id.clone(), seq, subject: subject.to_string(), tenant_id: event.tenant_id.clone() };
    let Ok(payload) = serde_json::to_vec(&entry) else { return Vec::new() };
    let payload = bytes::Bytes::from(payload);
    let mut subjects = vec![names::index_event_subject(&event.id)];
    if let Some(id) = message_key(event).filter(|id| !id.is_empty()) {
        subjects.push(names::index_message_subject(id));
    }
    if let Some(c) = event.conversation.as_ref().filter(|c| !c.id.is_empty()) {
        subjects.push(names::index_conversation_subject(&c.id));
    }
    subjects.into_iter().map(|subject| Message { subject, headers: async_nats::HeaderMap::new(), payload: payload.clone() }).collect()
}

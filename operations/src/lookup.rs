//! Lookups: one event with where it came from, its state at every destination and every delivery
//! attempt (`event`); one raw webhook's headers and body (`raw`); events by platform message id,
//! conversation, channel, tenant, kind and time (`find`). Used by the CLI and the setup API.
//!
//! Fast by subject, never by scan where an id is given: `HOOKLINE_INDEX` (written by the
//! normalizer once the events are stored) maps `hookline.index.id.<event id>`,
//! `hookline.index.msg.<hash of message id>` and `hookline.index.conv.<hash>` to the event's
//! sequence in `HOOKLINE_EVENTS`; the delivery log keeps an event's attempts on
//! `hookline.attempts.<event id>`. Each is a read of one literal subject, which nats-server
//! answers from its subject index whatever the stream's size (a wildcard would make it scan every
//! block once a stream holds more than 64k subjects: never use one here). Only `find` without a message or
//! conversation id reads `HOOKLINE_EVENTS` in order (by tenant and kind through the subject, from
//! `from`), within a budget, and says where to go on with a cursor.
//!
//! Every function takes `tenant: Option<&str>`: when Some, anything of another tenant is not found
//! (and an event shows only that tenant's own destinations and their attempts)
//! (`Ok(None)`, or absent from a page), exactly as if it did not exist.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use async_nats::jetstream::{self, stream::LastRawMessageErrorKind};
use serde::Serialize;
use serde_json::Value;

use hookline_shared::destination::{DestinationRecord, DEFAULT_DESTINATION_ID};
use hookline_shared::lookup_records::{message_key, AttemptOutcome, AttemptRecord, IndexEntry};
use hookline_shared::names::{self, header};
use hookline_shared::timefmt;

use crate::reader::Reader;
use crate::selection::Selection;
use crate::OpsError;

/// The most attempt records one event's lookup reads.
pub const MAX_ATTEMPTS: usize = 1000;
/// The most events a page of `find` holds.
pub const MAX_LIMIT: usize = 1000;
/// How long `find` reads `HOOKLINE_EVENTS` in order before it answers a page with a cursor.
pub const SCAN_BUDGET: Duration = Duration::from_secs(2);

/// One event, where it came from, and what happened to it at each destination.
#[derive(Debug, Clone, Serialize)]
pub struct EventView {
    pub event_id: String,
    pub tenant_id: String,
    /// Where it lies in `HOOKLINE_EVENTS`.
    pub seq: u64,
    pub subject: String,
    /// When JetStream stored it.
    pub stored_at: String,
    /// Where the raw webhook lies in `HOOKLINE_RAW` (`GET /api/v1/raw/{seq}`), when known.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub raw: Option<Value>,
    pub event: Value,
    pub destinations: Vec<DestinationState>,
    /// Every recorded attempt, oldest first.
    pub attempts: Vec<AttemptRecord>,
}

/// What one destination did with the event.
#[derive(Debug, Clone, Serialize)]
pub struct DestinationState {
    pub destination: String,
    /// `delivered`, `retrying`, `dead_lettered`, `filtered_out` (its filter or tenant refuses the
    /// event), `before_destination` (stored before the destination was created: it is not
    /// delivered there unless replayed to it), `waiting` (no attempt yet).
    pub state: &'static str,
    pub attempts: usize,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_status: Option<u16>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_attempt_at: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dlq_reason: Option<String>,
    /// The destination is paused: its events wait in JetStream.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub paused: bool,
}

/// One raw webhook as stored.
#[derive(Debug, Clone, Serialize)]
pub struct RawView {
    pub seq: u64,
    pub subject: String,
    pub stored_at: String,
    pub headers: BTreeMap<String, Vec<String>>,
    /// The body, when it is UTF-8.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub body: Option<String>,
    /// The body in base64, when it is not UTF-8.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub body_base64: Option<String>,
}

/// What `find` looks for; every part given must hold.
#[derive(Debug, Clone, Default)]
pub struct FindQuery {
    pub message_id: Option<String>,
    pub conversation_id: Option<String>,
    pub channel: Option<String>,
    pub tenant: Option<String>,
    pub kind: Option<String>,
    /// On `received_at`.
    pub from: Option<time::OffsetDateTime>,
    pub to: Option<time::OffsetDateTime>,
    pub limit: usize,
    /// Where the previous page stopped (its `next_cursor`).
    pub cursor: Option<String>,
}

/// A page of `find`.
#[derive(Debug, Clone, Serialize)]
pub struct FindPage {
    pub events: Vec<FoundEvent>,
    /// More may match: ask again with this cursor.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_cursor: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct FoundEvent {
    pub seq: u64,
    pub subject: String,
    pub event: Value,
}

const KINDS: &[&str] = &["message", "status", "payment", "chat_event", "other"];

impl FindQuery {
    /// Checks the parts that become subject tokens; Err names the parameter at fault.
    pub fn validate(&self) -> Result<(), (&'static str, String)> {
        for (name, value) in [("channel", &self.channel), ("tenant", &self.tenant)] {
            if let Some(v) = value {
                if !names::is_valid_id(v) {
                    return Err((name, format!("{v:?} is not an id (1 to 64 of A-Z a-z 0-9 _ -)")));
                }
            }
        }
        if let Some(k) = &self.kind {
            if !KINDS.contains(&k.as_str()) {
                return Err(("kind", format!("{k:?} is not one of {}", KINDS.join(", "))));
            }
        }
        for (name, value) in [("message_id", &self.message_id), ("conversation_id", &self.conversation_id)] {
            if value.as_ref().is_some_and(|v| v.is_empty() || v.len() > 512) {
                return Err((name, "must be 1 to 512 characters".to_string()));
            }
        }
        if self.limit == 0 || self.limit > MAX_LIMIT {
            return Err(("limit", format!("must be 1 to {MAX_LIMIT}")));
        }
        if let (Some(f), Some(t)) = (self.from, self.to) {
            if f > t {
                return Err(("from", "must not be after to".to_string()));
            }
        }
        if let Some(c) = &self.cursor {
            if parse_cursor(c).is_none() {
                return Err(("cursor", "not a cursor of this search".to_string()));
            }
        }
        Ok(())
    }
}

fn stream_error(stream: &'static str) -> impl Fn(String) -> OpsError {
    move |message| OpsError::Stream { stream, message }
}

fn in_tenant(tenant: Option<&str>, of: &str) -> bool {
    tenant.is_none_or(|t| t == of)
}

/// The event `event_id` with its destinations' states and its attempts; None when absent (never
/// stored, aged out, or of another tenant than `tenant`).
pub async fn event(js: &jetstream::Context, event_id: &str, tenant: Option<&str>) -> Result<Option<EventView>, OpsError> {
    if event_id.is_empty() || event_id.len() > 256 {
        return Ok(None);
    }
    // Three independent reads at once: a cold one (a block nats-server must load) then costs
    // its own time, not the sum of all.
    let (attempts, index, records) = tokio::join!(attempts_of(js, event_id), index_entry(js, event_id), destination_records(js));
    let (attempts, index, records) = (attempts?, index?, records?);
    // The index, else the delivery log, says where the event lies.
    let Some(seq) = index.as_ref().map(|e| e.seq).or_else(|| attempts.first().map(|a| a.event_seq)) else {
        return Ok(None);
    };
    let Some((stored, event)) = load_event(js, seq).await? else { return Ok(None) };
    if event.get("id").and_then(Value::as_str) != Some(event_id) {
        return Ok(None);
    }
    let event_tenant = event.get("tenant_id").and_then(Value::as_str).unwrap_or_default().to_string();
    if !in_tenant(tenant, &event_tenant) {
        return Ok(None);
    }
    let mut destinations = destination_states(&records, &event, &event_tenant, stored.time, &attempts);
    let mut attempts = attempts;
    if tenant.is_some() {
        // A tenant sees its own destinations only: not those of every tenant (an admin's, and
        // `default`), whose ids, answers and errors are not its to read.
        let own: std::collections::BTreeSet<&str> =
            records.iter().filter(|r| r.tenant_id.as_deref() == Some(event_tenant.as_str())).map(|r| r.id.as_str()).collect();
        destinations.retain(|d| own.contains(d.destination.as_str()));
        attempts.retain(|a| own.contains(a.destination.as_str()));
    }
    Ok(Some(EventView {
        event_id: event_id.to_string(),
        tenant_id: event_tenant,
        seq,
        subject: stored.subject.to_string(),
        stored_at: timefmt::to_rfc3339(stored.time),
        raw: event.get("raw").cloned(),
        event,
        destinations,
        attempts,
    }))
}

/// The raw webhook at `seq` in `HOOKLINE_RAW`; None when absent or of another tenant.
pub async fn raw(js: &jetstream::Context, seq: u64, tenant: Option<&str>) -> Result<Option<RawView>, OpsError> {
    if seq == 0 {
        return Ok(None);
    }
    let stream = js.get_stream_no_info(names::RAW_STREAM).await.map_err(|e| stream_error(names::RAW_STREAM)(e.to_string()))?;
    let message = match stream.get_raw_message(seq).await {
        Ok(m) => m,
        Err(e) if e.kind() == LastRawMessageErrorKind::NoMessageFound => return Ok(None),
        Err(e) => return Err(stream_error(names::RAW_STREAM)(e.to_string())),
    };
    let raw_tenant = message.headers.get(header::TENANT).map(|v| v.as_str().to_string()).unwrap_or_default();
    if !in_tenant(tenant, &raw_tenant) {
        return Ok(None);
    }
    let mut headers: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (name, values) in message.headers.iter() {
        headers.entry(name.to_string()).or_default().extend(values.iter().map(|v| v.as_str().to_string()));
    }
    let (body, body_base64) = match std::str::from_utf8(&message.payload) {
        Ok(text) => (Some(text.to_string()), None),
        Err(_) => {
            use base64::Engine;
            (None, Some(base64::engine::general_purpose::STANDARD.encode(&message.payload)))
        }
    };
    Ok(Some(RawView {
        seq,
        subject: message.subject.to_string(),
        stored_at: timefmt::to_rfc3339(message.time),
        headers,
        body,
        body_base64,
    }))
}

/// Events matching `query` (validated by the caller: [`FindQuery::validate`]), oldest first.
pub async fn find(js: &jetstream::Context, query: &FindQuery, tenant: Option<&str>) -> Result<FindPage, OpsError> {
    query.validate().map_err(|(name, message)| OpsError::Invalid(format!("{name}: {message}")))?;
    // The scope's tenant narrows; a query for another tenant finds nothing.
    let tenant = match (tenant, query.tenant.as_deref()) {
        (Some(scope), Some(asked)) if scope != asked => return Ok(FindPage { events: Vec::new(), next_cursor: None }),
        (Some(scope), _) => Some(scope),
        (None, asked) => asked,
    };
    let start = query.cursor.as_deref().and_then(parse_cursor).unwrap_or(1);
    let keyed = match (&query.message_id, &query.conversation_id) {
        (Some(id), _) => Some(names::index_message_subject(id)),
        (None, Some(id)) => Some(names::index_conversation_subject(id)),
        (None, None) => None,
    };
    match keyed {
        Some(subject) => find_by_index(js, query, &subject, tenant, start).await,
        None => find_by_scan(js, query, tenant, start).await,
    }
}

fn parse_cursor(c: &str) -> Option<u64> {
    c.strip_prefix('s').and_then(|n| n.parse::<u64>().ok()).filter(|n| *n > 0)
}

fn cursor(seq: u64) -> String {
    format!("s{seq}")
}

/// Whether the event holds every part of the query that the index or the subject did not.
fn matches(query: &FindQuery, event: &Value, tenant: Option<&str>) -> bool {
    let field = |name: &str| event.get(name).and_then(Value::as_str);
    if tenant.is_some_and(|t| field("tenant_id") != Some(t)) {
        return false;
    }
    if query.channel.as_deref().is_some_and(|c| field("channel_id") != Some(c)) {
        return false;
    }
    if query.kind.as_deref().is_some_and(|k| field("kind") != Some(k)) {
        return false;
    }
    if let Some(id) = &query.message_id {
        let parsed = serde_json::from_value::<hookline_shared::event::NormalizedEvent>(event.clone()).ok();
        if parsed.as_ref().and_then(message_key) != Some(id.as_str()) {
            return false;
        }
    }
    if let Some(id) = &query.conversation_id {
        if event.pointer("/conversation/id").and_then(Value::as_str) != Some(id.as_str()) {
            return false;
        }
    }
    let received = field("received_at").and_then(timefmt::parse_rfc3339);
    if let Some(from) = query.from {
        if received.is_none_or(|r| r < from) {
            return false;
        }
    }
    if let Some(to) = query.to {
        if received.is_none_or(|r| r > to) {
            return false;
        }
    }
    true
}

async fn find_by_index(
    js: &jetstream::Context,
    query: &FindQuery,
    subject: &str,
    tenant: Option<&str>,
    start: u64,
) -> Result<FindPage, OpsError> {
    let error = stream_error(names::INDEX_STREAM);
    let index = js.get_stream_no_info(names::INDEX_STREAM).await.map_err(|e| error(e.to_string()))?;
    let started = Instant::now();
    let mut events = Vec::new();
    let mut seq = start;
    loop {
        if events.len() >= query.limit || started.elapsed() > SCAN_BUDGET {
            return Ok(FindPage { events, next_cursor: Some(cursor(seq)) });
        }
        let entry = match index.get_first_raw_message_by_subject(subject, seq).await {
            Ok(m) => m,
            Err(e) if e.kind() == LastRawMessageErrorKind::NoMessageFound => break,
            Err(e) => return Err(error(e.to_string())),
        };
        seq = entry.sequence + 1;
        let Ok(entry) = serde_json::from_slice::<IndexEntry>(&entry.payload) else { continue };
        if !in_tenant(tenant, &entry.tenant_id) {
            continue;
        }
        let Some((stored, event)) = load_event(js, entry.seq).await? else { continue };
        if event.get("id").and_then(Value::as_str) == Some(entry.event_id.as_str()) && matches(query, &event, tenant) {
            events.push(FoundEvent { seq: entry.seq, subject: stored.subject.to_string(), event });
        }
    }
    Ok(FindPage { events, next_cursor: None })
}

async fn find_by_scan(js: &jetstream::Context, query: &FindQuery, tenant: Option<&str>, start: u64) -> Result<FindPage, OpsError> {
    let filter = format!("hookline.events.{}.*.{}", tenant.map_or("*", names::tenant_token), query.kind.as_deref().unwrap_or("*"));
    // Stored time is close to received_at (ingest stores at once): start a minute early.
    let selection = Selection {
        from_seq: query.cursor.as_ref().map(|_| start),
        from: query.from.map(|f| f - time::Duration::minutes(1)),
        ..Default::default()
    };
    let mut reader = Reader::open(js, names::EVENTS_STREAM, &filter, &selection).await?;
    let started = Instant::now();
    let mut events = Vec::new();
    while let Some(read) = reader.next().await? {
        let Ok(event) = serde_json::from_slice::<Value>(&read.message.payload) else { continue };
        if matches(query, &event, tenant) {
            events.push(FoundEvent { seq: read.seq, subject: read.message.subject.to_string(), event });
        }
        if events.len() >= query.limit || started.elapsed() > SCAN_BUDGET {
            return Ok(FindPage { events, next_cursor: Some(cursor(read.seq + 1)) });
        }
        // Stored more than a minute after `to`: nothing further can have been received before it.
        if query.to.is_some_and(|to| read.published > to + time::Duration::minutes(1)) {
            break;
        }
    }
    Ok(FindPage { events, next_cursor: None })
}

async fn index_entry(js: &jetstream::Context, event_id: &str) -> Result<Option<IndexEntry>, OpsError> {
    let error = stream_error(names::INDEX_STREAM);
    let index = js.get_stream_no_info(names::INDEX_STREAM).await.map_err(|e| error(e.to_string()))?;
    match index.get_last_raw_message_by_subject(&names::index_event_subject(event_id)).await {
        Ok(m) => Ok(serde_json::from_slice(&m.payload).ok()),
        Err(e) if e.kind() == LastRawMessageErrorKind::NoMessageFound => Ok(None),
        Err(e) => Err(error(e.to_string())),
    }
}

/// The event stored at `seq`, parsed; None when absent.
async fn load_event(js: &jetstream::Context, seq: u64) -> Result<Option<(jetstream::message::StreamMessage, Value)>, OpsError> {
    let error = stream_error(names::EVENTS_STREAM);
    let stream = js.get_stream_no_info(names::EVENTS_STREAM).await.map_err(|e| error(e.to_string()))?;
    match stream.get_raw_message(seq).await {
        Ok(m) => {
            let Ok(event) = serde_json::from_slice::<Value>(&m.payload) else { return Ok(None) };
            Ok(Some((m, event)))
        }
        Err(e) if e.kind() == LastRawMessageErrorKind::NoMessageFound => Ok(None),
        Err(e) => Err(error(e.to_string())),
    }
}

/// Every attempt recorded for `event_id`, oldest first.
pub async fn attempts_of(js: &jetstream::Context, event_id: &str) -> Result<Vec<AttemptRecord>, OpsError> {
    let error = stream_error(names::ATTEMPTS_STREAM);
    let stream = js.get_stream_no_info(names::ATTEMPTS_STREAM).await.map_err(|e| error(e.to_string()))?;
    let subject = names::attempt_subject(event_id);
    let mut out = Vec::new();
    let mut seq = 1;
    while out.len() < MAX_ATTEMPTS {
        let m = match stream.get_first_raw_message_by_subject(&subject, seq).await {
            Ok(m) => m,
            Err(e) if e.kind() == LastRawMessageErrorKind::NoMessageFound => break,
            Err(e) => return Err(error(e.to_string())),
        };
        seq = m.sequence + 1;
        if let Ok(record) = serde_json::from_slice::<AttemptRecord>(&m.payload) {
            if record.event_id == event_id {
                out.push(record);
            }
        }
    }
    Ok(out)
}

/// The destinations that concern the event (those of every tenant or of its own, from the bucket
/// `hookline_destinations`, and any the delivery log names, such as `default`), each with its state.
fn destination_states(
    records: &[DestinationRecord],
    event: &Value,
    event_tenant: &str,
    stored_at: time::OffsetDateTime,
    attempts: &[AttemptRecord],
) -> Vec<DestinationState> {
    let mut known: BTreeMap<String, Option<&DestinationRecord>> = BTreeMap::new();
    for record in records {
        if record.tenant_id.as_deref().is_none_or(|t| t == event_tenant) {
            known.insert(record.id.clone(), Some(record));
        }
    }
    for a in attempts {
        known.entry(a.destination.clone()).or_insert(None);
    }
    let mut states = Vec::with_capacity(known.len());
    for (id, record) in known {
        let mine: Vec<&AttemptRecord> = attempts.iter().filter(|a| a.destination == id).collect();
        let last = mine.iter().max_by_key(|a| a.attempt).copied();
        let accepts = match &record {
            Some(r) => r.tenant_id.as_deref().is_none_or(|t| t == event_tenant) && r.filter.matches(event),
            None => true,
        };
        // A destination's consumer starts at its creation (`ByStartTime`): what was stored
        // before never reaches it, unless replayed to it.
        let predates = record.as_ref().is_some_and(|r| stored_at < r.created_at);
        let state = match (last.map(|a| a.outcome), accepts) {
            (Some(AttemptOutcome::Delivered), _) => "delivered",
            (Some(AttemptOutcome::DeadLettered), _) => "dead_lettered",
            (Some(AttemptOutcome::Retrying), _) => "retrying",
            (None, false) => "filtered_out",
            (None, true) if predates => "before_destination",
            (None, true) => "waiting",
        };
        states.push(DestinationState {
            destination: id,
            state,
            attempts: mine.len(),
            last_status: last.and_then(|a| a.status),
            last_error: last.and_then(|a| a.error.clone()),
            next_attempt_at: last.filter(|a| a.outcome == AttemptOutcome::Retrying).and_then(|a| a.next_attempt_at.clone()),
            dlq_reason: last.and_then(|a| a.dlq_reason.clone()),
            paused: record.as_ref().is_some_and(|r| r.paused),
        });
    }
    // `default` first, as operators know it.
    states.sort_by_key(|s| s.destination != DEFAULT_DESTINATION_ID);
    states
}

/// The bucket's destinations (none when it does not exist): the keys from the bucket stream's
/// subjects, then each key's last value. Not `kv::Store::keys`, which creates a consumer per
/// call (a lookup per second would soon meet the server's consumer limit).
async fn destination_records(js: &jetstream::Context) -> Result<Vec<DestinationRecord>, OpsError> {
    use futures_util::StreamExt;
    let stream_name = format!("KV_{}", names::DESTINATIONS_BUCKET);
    let Ok(stream) = js.get_stream_no_info(&stream_name).await else { return Ok(Vec::new()) };
    let prefix = format!("$KV.{}.", names::DESTINATIONS_BUCKET);
    let mut subjects = match stream.info_with_subjects(format!("{prefix}>")).await {
        Ok(s) => s,
        // No bucket yet: no destination but those the delivery log names.
        Err(_) => return Ok(Vec::new()),
    };
    let mut keys = Vec::new();
    while let Some(entry) = subjects.next().await {
        let Ok((subject, _)) = entry else { break };
        keys.push(subject);
    }
    let mut out = Vec::new();
    for subject in keys.into_iter().take(1000) {
        let Ok(m) = stream.get_last_raw_message_by_subject(&subject).await else { continue };
        // A deleted or purged key keeps a marker as its last value.
        if m.headers.get("KV-Operation").is_some() {
            continue;
        }
        if let Ok(record) = serde_json::from_slice::<DestinationRecord>(&m.payload) {
            out.push(record);
        }
    }
    Ok(out)
}

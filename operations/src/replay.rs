//! `replay`: re-runs raw webhooks through the normalizer (its code, here) or re-publishes events
//! for the forwarder, selected by time, sequence, channel, tenant or source. Replayed events
//! carry `replay: true` and keep their ids; their `Nats-Msg-Id` gets a per-run suffix so that
//! JetStream stores (and the forwarder delivers) them again.

use async_nats::jetstream;
use async_nats::HeaderMap;
use serde::{Deserialize, Serialize};
use std::time::Duration;

use hookline_normalizer::publish::{publish_events, EventPublisher};
use hookline_normalizer::raw::{header_text, read_headers};
use hookline_normalizer::{normalize, RawInput};
use hookline_shared::names::{self, header};
use hookline_shared::telemetry;

use crate::reader::{run_id, Read, Reader};
use crate::selection::Selection;
use crate::OpsError;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ReplayStream {
    /// HOOKLINE_RAW through the normalizer: new copies of their events.
    Raw,
    /// HOOKLINE_EVENTS again to the forwarder.
    Events,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ReplayOptions {
    pub stream: ReplayStream,
    #[serde(default)]
    pub selection: Selection,
    #[serde(default)]
    pub dry_run: bool,
    /// At most this many messages a second.
    pub rate_per_s: Option<u32>,
    /// Events only: deliver the replayed events to this destination alone (they carry
    /// `Hookline-Destination`; every other destination acks them without a delivery).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub destination: Option<String>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct ReplaySummary {
    pub run_id: String,
    pub dry_run: bool,
    /// Messages of the stream that matched the selection.
    pub selected: u64,
    /// Events published (or, in a dry run, that would be).
    pub events: u64,
    /// Raw messages that do not parse (they are in the DLQ since their first run).
    pub unparseable: u64,
}

fn filter_subject(options: &ReplayOptions) -> String {
    let s = &options.selection;
    match options.stream {
        ReplayStream::Raw => format!("hookline.raw.{}.{}", s.source.map_or("*", |x| x.as_str()), s.channel.as_deref().unwrap_or("*")),
        ReplayStream::Events => format!("hookline.events.{}.>", s.tenant.as_deref().unwrap_or("*")),
    }
}

/// Whether the headers match what the subject filter could not express.
fn headers_match(options: &ReplayOptions, headers: Option<&HeaderMap>) -> bool {
    let s = &options.selection;
    let is = |name: &str, want: Option<&str>| want.is_none_or(|w| header_text(headers, name) == Some(w));
    match options.stream {
        ReplayStream::Raw => is(header::TENANT, s.tenant.as_deref()),
        ReplayStream::Events => is(header::CHANNEL, s.channel.as_deref()) && is(header::SOURCE, s.source.map(|x| x.as_str())),
    }
}

/// Runs a replay; `progress(done, selected_so_far)` is called as it goes.
pub async fn replay(
    js: &jetstream::Context,
    options: &ReplayOptions,
    progress: &mut (dyn FnMut(u64) + Send),
) -> Result<ReplaySummary, OpsError> {
    options.selection.validate().map_err(OpsError::Invalid)?;
    if let Some(d) = &options.destination {
        if options.stream == ReplayStream::Raw {
            return Err(OpsError::Invalid("destination: only a replay of events can target one destination".into()));
        }
        if !names::is_valid_id(d) {
            return Err(OpsError::Invalid("destination: 1 to 64 of A-Z a-z 0-9 _ -".into()));
        }
    }
    let run = run_id();
    let mut summary = ReplaySummary { run_id: run.clone(), dry_run: options.dry_run, ..Default::default() };
    let mut pace = options.rate_per_s.filter(|r| *r > 0).map(|r| tokio::time::interval(Duration::from_secs_f64(1.0 / f64::from(r))));
    let stream_name = match options.stream {
        ReplayStream::Raw => names::RAW_STREAM,
        ReplayStream::Events => names::EVENTS_STREAM,
    };
    let suffix = format!("replay:{run}");
    let mut reader = Reader::open(js, stream_name, &filter_subject(options), &options.selection).await?;
    while let Some(item) = reader.next().await? {
        if !headers_match(options, item.message.headers.as_ref()) {
            continue;
        }
        if let Some(p) = pace.as_mut() {
            p.tick().await;
        }
        summary.selected += 1;
        match options.stream {
            ReplayStream::Raw => replay_raw(js, &item, options.dry_run, &suffix, &mut summary).await?,
            ReplayStream::Events => replay_event(js, &item, options, &suffix, &mut summary).await?,
        }
        progress(summary.selected);
    }
    Ok(summary)
}

async fn replay_raw(
    js: &jetstream::Context,
    item: &Read,
    dry_run: bool,
    suffix: &str,
    summary: &mut ReplaySummary,
) -> Result<(), OpsError> {
    let Ok(raw) = read_headers(item.message.headers.as_ref()) else {
        summary.unparseable += 1;
        return Ok(());
    };
    let context = raw.context(item.message.subject.as_str(), item.seq);
    let input =
        RawInput { source: raw.source, body: &item.message.payload, content_type: raw.content_type, query: raw.query, context: &context };
    let Ok(mut events) = normalize(&input) else {
        summary.unparseable += 1;
        return Ok(());
    };
    for event in &mut events {
        event.replay = true;
    }
    summary.events += events.len() as u64;
    if dry_run {
        return Ok(());
    }
    let traceparent = telemetry::traceparent(&tracing::Span::current(), raw.traceparent);
    publish_events(
        &EventPublisher::Direct(js.clone()),
        &events,
        raw.tenant,
        raw.channel,
        &traceparent,
        Some(suffix),
        Duration::from_secs(10),
    )
    .await
    .map(|_| ())
    .map_err(OpsError::Publish)
}

async fn replay_event(
    js: &jetstream::Context,
    item: &Read,
    options: &ReplayOptions,
    suffix: &str,
    summary: &mut ReplaySummary,
) -> Result<(), OpsError> {
    let dry_run = options.dry_run;
    let Ok(mut event) = serde_json::from_slice::<serde_json::Value>(&item.message.payload) else {
        summary.unparseable += 1;
        return Ok(());
    };
    let Some(id) = event.get("id").and_then(|v| v.as_str()).map(str::to_string) else {
        summary.unparseable += 1;
        return Ok(());
    };
    if let Some(object) = event.as_object_mut() {
        object.insert("replay".into(), serde_json::Value::Bool(true));
    }
    summary.events += 1;
    if dry_run {
        return Ok(());
    }
    let mut headers = HeaderMap::new();
    if let Some(original) = item.message.headers.as_ref() {
        for (name, values) in original.iter() {
            let name: &str = name.as_ref();
            if name.starts_with("Nats-") || name.eq_ignore_ascii_case(header::DESTINATION) {
                continue;
            }
            for v in values {
                headers.append(name, v.as_str());
            }
        }
    }
    match &options.destination {
        Some(d) => {
            headers.insert(header::DESTINATION, d.as_str());
            headers.insert(header::MSG_ID, format!("{id}:{suffix}:{d}").as_str());
        }
        None => headers.insert(header::MSG_ID, format!("{id}:{suffix}").as_str()),
    }
    let body = serde_json::to_vec(&event).map_err(|e| OpsError::Publish(e.to_string()))?;
    js.publish_with_headers(item.message.subject.clone(), headers, body.into())
        .await
        .map_err(|e| OpsError::Publish(e.to_string()))?
        .await
        .map_err(|e| OpsError::Publish(e.to_string()))?;
    Ok(())
}

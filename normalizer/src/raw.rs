//! Reading a raw message of `HOOKLINE_RAW`: its headers (written by ingest) become the context of
//! its events. Shared by the worker and by replays.

use async_nats::HeaderMap;

use hookline_shared::event::RawRef;
use hookline_shared::names::{self, header};
use hookline_shared::{timefmt, Source};

use crate::EventContext;

/// A header's value, when present and not empty.
pub fn header_text<'a>(headers: Option<&'a HeaderMap>, name: &str) -> Option<&'a str> {
    headers.and_then(|h| h.get(name)).map(|v| v.as_str()).filter(|s| !s.is_empty())
}

/// What ingest said about a raw webhook.
#[derive(Debug, Clone, Copy)]
pub struct RawHeaders<'a> {
    pub source: Source,
    pub tenant: &'a str,
    pub channel: &'a str,
    pub content_type: Option<&'a str>,
    pub query: Option<&'a str>,
    pub traceparent: Option<&'a str>,
    received_at: Option<&'a str>,
}

/// A raw message without a valid source, tenant or channel header.
#[derive(Debug, Clone, Copy)]
pub struct InvalidHeaders {
    /// The source, when that header at least was readable (for the DLQ subject).
    pub source: Option<Source>,
}

impl InvalidHeaders {
    pub const REASON: &'static str = "invalid_headers";
    pub const DETAIL: &'static str = "raw message without a valid Hookline-Source, Hookline-Tenant or Hookline-Channel";
}

pub fn read_headers(headers: Option<&HeaderMap>) -> Result<RawHeaders<'_>, InvalidHeaders> {
    let source = header_text(headers, header::SOURCE).and_then(|s| s.parse::<Source>().ok());
    let tenant = header_text(headers, header::TENANT).filter(|t| names::is_valid_id(t));
    let channel = header_text(headers, header::CHANNEL).filter(|c| names::is_valid_id(c));
    match (source, tenant, channel) {
        (Some(source), Some(tenant), Some(channel)) => Ok(RawHeaders {
            source,
            tenant,
            channel,
            content_type: header_text(headers, header::CONTENT_TYPE),
            query: header_text(headers, header::QUERY),
            traceparent: header_text(headers, header::TRACEPARENT),
            received_at: header_text(headers, header::RECEIVED_AT),
        }),
        _ => Err(InvalidHeaders { source }),
    }
}

impl RawHeaders<'_> {
    /// The context of the events of the raw message at `subject`/`seq`.
    pub fn context(&self, subject: &str, seq: u64) -> EventContext {
        EventContext {
            tenant_id: self.tenant.to_string(),
            channel_id: self.channel.to_string(),
            platform: String::new(),
            received_at: self.received_at.map_or_else(timefmt::now_rfc3339, str::to_string),
            raw: Some(RawRef { subject: subject.to_string(), seq, index: None }),
        }
    }
}

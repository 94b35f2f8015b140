//! Helpers every source module uses: the event skeleton, JSON access with clear errors, and
//! timestamp conversion.

use serde_json::Value;
use time::OffsetDateTime;

use hookline_shared::event::{event_id, EventKind, NormalizedEvent, SCHEMA_VERSION};
use hookline_shared::{timefmt, Source};

use crate::{EventContext, NormalizeError, RawInput};

/// An event of `kind` whose id derives from `platform_id`; the parts specific to the kind start
/// absent. `platform` is the platform this event is on (usually the channel's).
pub fn event(input: &RawInput<'_>, kind: EventKind, platform_id: &str, platform: &str) -> NormalizedEvent {
    let ctx: &EventContext = input.context;
    NormalizedEvent {
        id: event_id(input.source, &ctx.channel_id, kind, platform_id),
        schema_version: SCHEMA_VERSION,
        kind,
        source: input.source,
        platform: platform.to_string(),
        provider: input.source.provider().to_string(),
        tenant_id: ctx.tenant_id.clone(),
        channel_id: ctx.channel_id.clone(),
        occurred_at: None,
        received_at: ctx.received_at.clone(),
        conversation: None,
        sender: None,
        message: None,
        status: None,
        payment: None,
        chat_event: None,
        raw: ctx.raw.clone(),
        replay: false,
    }
}

/// Parses a JSON body.
pub fn json(body: &[u8]) -> Result<Value, NormalizeError> {
    serde_json::from_slice(body).map_err(|e| NormalizeError::InvalidJson(e.to_string()))
}

/// A required field; `path` names it in the error (e.g. `entry[0].changes`).
pub fn field<'a>(v: &'a Value, key: &str, path: &str) -> Result<&'a Value, NormalizeError> {
    v.get(key).filter(|x| !x.is_null()).ok_or_else(|| NormalizeError::MissingField(path.to_string()))
}

/// A required array field.
pub fn array<'a>(v: &'a Value, key: &str, path: &str) -> Result<&'a Vec<Value>, NormalizeError> {
    field(v, key, path)?
        .as_array()
        .ok_or_else(|| NormalizeError::InvalidField { field: path.to_string(), detail: "expected an array".into() })
}

/// An id that platforms write as a string or a number, always as a string (numbers in decimal).
pub fn id_string(v: &Value) -> Option<String> {
    match v {
        Value::String(s) if !s.is_empty() => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

/// A required id field (string or number).
pub fn id_field(v: &Value, key: &str, path: &str) -> Result<String, NormalizeError> {
    let x = field(v, key, path)?;
    id_string(x).ok_or_else(|| NormalizeError::InvalidField { field: path.to_string(), detail: "expected a string or number id".into() })
}

/// An optional string field (absent, null or empty: None).
pub fn opt_str(v: &Value, key: &str) -> Option<String> {
    v.get(key).and_then(Value::as_str).filter(|s| !s.is_empty()).map(str::to_string)
}

/// Unix seconds (number or decimal string) → RFC 3339 UTC.
pub fn from_unix_seconds(v: &Value) -> Option<String> {
    let secs = match v {
        Value::Number(n) => n.as_i64(),
        Value::String(s) => s.parse::<i64>().ok(),
        _ => None,
    }?;
    OffsetDateTime::from_unix_timestamp(secs).ok().map(timefmt::to_rfc3339)
}

/// Unix milliseconds (number or decimal string) → RFC 3339 UTC.
pub fn from_unix_millis(v: &Value) -> Option<String> {
    let ms = match v {
        Value::Number(n) => n.as_i64(),
        Value::String(s) => s.parse::<i64>().ok(),
        _ => None,
    }?;
    OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000).ok().map(timefmt::to_rfc3339)
}

/// An RFC 3339 / ISO 8601 timestamp with offset → RFC 3339 UTC.
pub fn from_rfc3339(s: &str) -> Option<String> {
    timefmt::parse_rfc3339(s).map(timefmt::to_rfc3339)
}

/// The channel's platform for sources with one platform per channel.
pub fn channel_platform(input: &RawInput<'_>) -> String {
    if input.context.platform.is_empty() {
        input.source.platforms()[0].to_string()
    } else {
        input.context.platform.clone()
    }
}

/// `Source` helper for modules that serve two sources with one format.
pub fn is_source(input: &RawInput<'_>, source: Source) -> bool {
    input.source == source
}

/// For the parsers' unit tests: `normalize` with a fixed context.
#[cfg(test)]
pub(crate) fn test_normalize(
    source: hookline_shared::Source,
    body: &str,
    content_type: Option<&str>,
    query: Option<&str>,
) -> Result<Vec<NormalizedEvent>, NormalizeError> {
    let ctx = EventContext {
        tenant_id: "t".into(),
        channel_id: "c".into(),
        platform: String::new(),
        received_at: "2026-01-01T00:00:00Z".into(),
        raw: None,
    };
    crate::normalize(&RawInput { source, body: body.as_bytes(), content_type, query, context: &ctx })
}

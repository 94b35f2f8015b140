//! Webchat: hookline's own JSON format for a web chat widget (platform `webchat`, provider
//! `hookline`). There is no third-party documentation; this comment is the specification. The
//! widget's backend POSTs it signed with Standard Webhooks (`webhook-id`, `webhook-timestamp`,
//! `webhook-signature`, see <https://www.standardwebhooks.com/>), which ingest verifies.
//!
//! A body is one event object, or a batch `{"events": [event, ...]}`. Every event has:
//!
//! | field | | meaning |
//! |---|---|---|
//! | `type` | required | `"message"` (the visitor wrote) or `"read"` (the visitor saw a message) |
//! | `id` | required, string | unique id of this event; for a message, the message's id |
//! | `timestamp` | required | RFC 3339 with offset, e.g. `"2026-01-01T12:00:00Z"` |
//! | `conversation_id` | required, string | the chat this event belongs to |
//! | `visitor` | required | `{"id": string, "name"?: string}`: the visitor who caused it |
//!
//! A `message` event adds `message`: `{"text"?, "reply_to"?, "attachments"?}` with at least a text
//! or one attachment; `reply_to` is the id of the message this one answers; each attachment is
//! `{"url": string, "mime_type"?: string, "filename"?: string}`. A `read` event adds
//! `message_id`: the id of the message (sent to the visitor) that was read.
//!
//! ```json
//! {
//!   "type": "message",
//!   "id": "wc_msg_123",
//!   "timestamp": "2026-01-01T12:00:00Z",
//!   "conversation_id": "wc_conv_9",
//!   "visitor": {"id": "visitor_42", "name": "Ana"},
//!   "message": {
//!     "text": "Here is the screenshot",
//!     "reply_to": "wc_msg_100",
//!     "attachments": [
//!       {"url": "https://chat.example.com/files/a.png", "mime_type": "image/png", "filename": "a.png"}
//!     ]
//!   }
//! }
//! ```
//! ```json
//! {
//!   "type": "read",
//!   "id": "wc_evt_7",
//!   "timestamp": "2026-01-01T12:01:00Z",
//!   "conversation_id": "wc_conv_9",
//!   "visitor": {"id": "visitor_42", "name": "Ana"},
//!   "message_id": "wc_msg_1"
//! }
//! ```
//!
//! (These two are the fixtures `tests/fixtures/webchat/doc_example.json` and `read.json`; a batch
//! is `batch.json`.)
//!
//! Mapping: a `message` becomes kind `message` with `message.id = id`, `sender = visitor`,
//! `conversation = {id: conversation_id, type: direct}`; without attachments it is type `text`; each
//! attachment becomes one event typed by its `mime_type` (`image/*` → `image`, `audio/*` →
//! `audio`, `video/*` → `video`, anything else or none → `document`) with `media = {url,
//! mime_type, filename}`; the first keeps the text and the id, the others get ids
//! `"{id}:{index}"`. A `read` becomes kind `status` `{message_id, state: read, recipient_id:
//! visitor.id}` with platform id `"{message_id}:read"`. An event of another `type` becomes kind
//! `other` (identified by its `id`), so newer widgets do not lose events on an older hookline.

use serde_json::Value;

use hookline_shared::event::{
    Conversation, ConversationType, DeliveryState, EventKind, Media, Message, MessageType, NormalizedEvent, Sender, Status,
};

use crate::build;
use crate::{NormalizeError, RawInput};

const PLATFORM: &str = "webchat";

pub fn parse(input: &RawInput<'_>) -> Result<Vec<NormalizedEvent>, NormalizeError> {
    let body = build::json(input.body)?;
    let mut out = Vec::new();
    if body.get("type").is_none() {
        if let Some(object) = body.get("object").and_then(Value::as_str) {
            // Another platform's envelope (Meta's `object`), not a webchat event.
            return Err(NormalizeError::UnsupportedPayload(format!("object \"{object}\"")));
        }
    }
    if body.get("type").is_none() && body.get("events").is_some() {
        for (i, event) in build::array(&body, "events", "events")?.iter().enumerate() {
            parse_event(input, event, &format!("events[{i}]."), &mut out)?;
        }
    } else {
        parse_event(input, &body, "", &mut out)?;
    }
    Ok(out)
}

/// A required string field; `prefix` is the event's path (`""` or `"events[1]."`).
fn string(v: &Value, key: &str, prefix: &str) -> Result<String, NormalizeError> {
    build::id_field(v, key, &format!("{prefix}{key}"))
}

fn parse_event(input: &RawInput<'_>, event: &Value, prefix: &str, out: &mut Vec<NormalizedEvent>) -> Result<(), NormalizeError> {
    let kind = build::field(event, "type", &format!("{prefix}type"))?
        .as_str()
        .ok_or_else(|| NormalizeError::InvalidField { field: format!("{prefix}type"), detail: "expected a string".into() })?;
    let id = string(event, "id", prefix)?;

    if kind != "message" && kind != "read" {
        // Unknown to this version: kept, with whatever common parts it has.
        let mut e = build::event(input, EventKind::Other, &id, PLATFORM);
        e.occurred_at = build::opt_str(event, "timestamp").and_then(|t| build::from_rfc3339(&t));
        e.conversation = build::opt_str(event, "conversation_id").map(direct);
        e.sender = event.get("visitor").and_then(|v| v.get("id")).and_then(build::id_string).map(|id| Sender {
            id,
            name: event.get("visitor").and_then(|v| build::opt_str(v, "name")),
            ..Sender::default()
        });
        out.push(e);
        return Ok(());
    }

    let timestamp = string(event, "timestamp", prefix)?;
    let occurred_at = build::from_rfc3339(&timestamp).ok_or_else(|| NormalizeError::InvalidField {
        field: format!("{prefix}timestamp"),
        detail: "expected an RFC 3339 timestamp with offset".into(),
    })?;
    let conversation = direct(string(event, "conversation_id", prefix)?);
    let visitor = build::field(event, "visitor", &format!("{prefix}visitor.id"))?;
    let visitor = Sender {
        id: build::id_field(visitor, "id", &format!("{prefix}visitor.id"))?,
        name: build::opt_str(visitor, "name"),
        ..Sender::default()
    };
    let skeleton = |kind: EventKind, platform_id: &str| {
        let mut e = build::event(input, kind, platform_id, PLATFORM);
        e.occurred_at = Some(occurred_at.clone());
        e.conversation = Some(conversation.clone());
        e.sender = Some(visitor.clone());
        e
    };

    if kind == "read" {
        let message_id = string(event, "message_id", prefix)?;
        let mut e = skeleton(EventKind::Status, &format!("{message_id}:read"));
        e.status = Some(Status { message_id, state: DeliveryState::Read, recipient_id: Some(visitor.id.clone()), error: None });
        out.push(e);
        return Ok(());
    }

    let mpath = format!("{prefix}message");
    let message = build::field(event, "message", &mpath)?;
    let text = build::opt_str(message, "text");
    let reply_to = message.get("reply_to").and_then(build::id_string);
    let attachments = match message.get("attachments").filter(|a| !a.is_null()) {
        None => &[][..],
        Some(a) => a
            .as_array()
            .map(Vec::as_slice)
            .ok_or_else(|| NormalizeError::InvalidField { field: format!("{mpath}.attachments"), detail: "expected an array".into() })?,
    };
    if attachments.is_empty() {
        let Some(text) = text else {
            return Err(NormalizeError::MissingField(format!("{mpath}.text")));
        };
        let mut m = Message::new(id.clone(), MessageType::Text);
        m.text = Some(text);
        m.reply_to = reply_to;
        let mut e = skeleton(EventKind::Message, &id);
        e.message = Some(m);
        out.push(e);
        return Ok(());
    }
    for (k, attachment) in attachments.iter().enumerate() {
        let apath = format!("{mpath}.attachments[{k}]");
        let url = build::field(attachment, "url", &format!("{apath}.url"))?
            .as_str()
            .filter(|u| !u.is_empty())
            .ok_or_else(|| NormalizeError::InvalidField { field: format!("{apath}.url"), detail: "expected a non-empty string".into() })?;
        let mime_type = build::opt_str(attachment, "mime_type");
        let kind = match mime_type.as_deref().and_then(|m| m.split('/').next()) {
            Some("image") => MessageType::Image,
            Some("audio") => MessageType::Audio,
            Some("video") => MessageType::Video,
            _ => MessageType::Document,
        };
        let part_id = if k == 0 { id.clone() } else { format!("{id}:{k}") };
        let mut m = Message::new(part_id.clone(), kind);
        m.media =
            Some(Media { url: Some(url.to_string()), mime_type, filename: build::opt_str(attachment, "filename"), ..Media::default() });
        if k == 0 {
            m.text = text.clone();
        }
        m.reply_to = reply_to.clone();
        let mut e = skeleton(EventKind::Message, &part_id);
        e.message = Some(m);
        out.push(e);
    }
    Ok(())
}

fn direct(id: String) -> Conversation {
    Conversation { id, kind: ConversationType::Direct }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hookline_shared::Source;

    fn run(body: &str) -> Result<Vec<NormalizedEvent>, NormalizeError> {
        crate::build::test_normalize(Source::Webchat, body, None, None)
    }

    const HEAD: &str = r#""id":"m1","timestamp":"2026-01-01T12:00:00+02:00","conversation_id":"c1","visitor":{"id":"v1"}"#;

    #[test]
    fn required_fields_name_their_path() {
        let err = |b: String| run(&b).unwrap_err();
        assert_eq!(err("{}".into()), NormalizeError::MissingField("type".into()));
        assert_eq!(err(format!(r#"{{"events":[{{"type":"read",{HEAD}}}]}}"#)), NormalizeError::MissingField("events[0].message_id".into()));
        assert_eq!(err(format!(r#"{{"type":"message",{HEAD},"message":{{}}}}"#)), NormalizeError::MissingField("message.text".into()));
        assert_eq!(
            err(format!(r#"{{"type":"message",{HEAD},"message":{{"attachments":[{{}}]}}}}"#)),
            NormalizeError::MissingField("message.attachments[0].url".into())
        );
        assert_eq!(
            err(r#"{"type":"message","id":"m","timestamp":"yesterday","conversation_id":"c","visitor":{"id":"v"}}"#.into()).code(),
            "invalid_field"
        );
    }

    #[test]
    fn times_are_utc_and_unknown_types_are_other() {
        let events =
            run(&format!(r#"{{"events":[{{"type":"message",{HEAD},"message":{{"text":"hi"}}}},{{"type":"typing","id":"t1"}}]}}"#)).unwrap();
        assert_eq!(events.len(), 2);
        assert_eq!(events[0].occurred_at.as_deref(), Some("2026-01-01T10:00:00Z"));
        assert_eq!(events[1].kind, EventKind::Other);
        assert!(events[1].conversation.is_none());
    }
}

//! tawk.to webhooks (<https://developer.tawk.to/webhooks>): one JSON event per request, named by
//! `event`: `chat:start`, `chat:end`, `chat:transcript_created` and `ticket:create`.
//!
//! Each becomes kind `chat_event` with type `chat_start` / `chat_end` /
//! `chat_transcript_created` / `ticket_create`; the payload's other fields (visitor, property,
//! message, messages, ticket, requester, ...) are carried as they are in `chat_event`, without
//! the parts already expressed at the top level (`event`, `time`, the chat id). The chat id is
//! `chatId`, or `chat.id` in `chat:transcript_created`; tickets have no chat. The platform id is
//! `"{event}:{chat id or ticket id}"` (the dedupe header `X-Hook-Event-Id` is not in the body).
//! Unknown event names become kind `other`.

use serde_json::{Map, Value};

use hookline_shared::event::{ChatEvent, Conversation, ConversationType, EventKind, NormalizedEvent, Sender};

use crate::{build, NormalizeError, RawInput};

pub fn parse(input: &RawInput<'_>) -> Result<Vec<NormalizedEvent>, NormalizeError> {
    let payload = build::json(input.body)?;
    let obj = payload.as_object().ok_or_else(|| NormalizeError::UnsupportedPayload("a tawk.to webhook is a JSON object".into()))?;
    let name = match obj.get("event") {
        Some(Value::String(s)) if !s.is_empty() => s.as_str(),
        None | Some(Value::Null) => return Err(NormalizeError::MissingField("event".into())),
        Some(_) => return Err(NormalizeError::InvalidField { field: "event".into(), detail: "expected an event name".into() }),
    };
    let platform = build::channel_platform(input);
    let chat = obj.get("chat").filter(|c| c.is_object());
    let chat_id = build::opt_str(&payload, "chatId").or_else(|| chat.and_then(|c| c.get("id")).and_then(build::id_string));
    let ticket_id = obj.get("ticket").and_then(|t| t.get("id")).and_then(build::id_string);

    let (kind, key_id) = match name {
        "chat:start" | "chat:end" => {
            (Some(name.replace(':', "_")), Some(chat_id.clone().ok_or_else(|| NormalizeError::MissingField("chatId".into()))?))
        }
        "chat:transcript_created" => (
            Some("chat_transcript_created".to_string()),
            Some(chat_id.clone().ok_or_else(|| NormalizeError::MissingField("chat.id".into()))?),
        ),
        "ticket:create" => {
            (Some("ticket_create".to_string()), Some(ticket_id.ok_or_else(|| NormalizeError::MissingField("ticket.id".into()))?))
        }
        _ => (None, chat_id.clone().or(ticket_id)),
    };
    let time = build::opt_str(&payload, "time");
    let platform_id = match (&key_id, &time) {
        (Some(id), _) => format!("{name}:{id}"),
        // An unknown event without a chat or ticket: its time is what tells it apart.
        (None, Some(t)) => format!("{name}:{t}"),
        (None, None) => name.to_string(),
    };

    let event_kind = if kind.is_some() { EventKind::ChatEvent } else { EventKind::Other };
    let mut event = build::event(input, event_kind, &platform_id, &platform);
    event.occurred_at = time.as_deref().and_then(build::from_rfc3339);
    event.conversation = chat_id.map(|id| Conversation { id, kind: ConversationType::Direct });
    let visitor = obj.get("visitor").or_else(|| chat.and_then(|c| c.get("visitor")));
    event.sender = visitor.and_then(visitor_sender);
    if let Some(kind) = kind {
        event.chat_event = Some(ChatEvent { kind, details: details(obj) });
    }
    Ok(vec![event])
}

/// The payload's fields minus `event`, `time` and the chat id; the fields of `chat`
/// (transcript events) are lifted beside them, except its `id`.
fn details(obj: &Map<String, Value>) -> Map<String, Value> {
    let mut out = Map::new();
    for (k, v) in obj {
        match k.as_str() {
            "event" | "time" | "chatId" => {}
            "chat" => match v.as_object() {
                Some(chat) => {
                    for (ck, cv) in chat {
                        if ck != "id" && !obj.contains_key(ck) {
                            out.insert(ck.clone(), cv.clone());
                        }
                    }
                }
                None => {
                    out.insert(k.clone(), v.clone());
                }
            },
            // `type` is the chat event's own key in the normalized event.
            "type" => {
                out.insert("tawk_type".into(), v.clone());
            }
            _ => {
                out.insert(k.clone(), v.clone());
            }
        }
    }
    out
}

/// tawk.to's published payloads identify visitors by name and email only, which are not ids;
/// a sender is set only when the visitor carries an `id`.
fn visitor_sender(visitor: &Value) -> Option<Sender> {
    Some(Sender { id: visitor.get("id").and_then(build::id_string)?, name: build::opt_str(visitor, "name"), phone: None, username: None })
}

#[cfg(test)]
mod tests {
    use super::*;
    use hookline_shared::Source;

    fn run(body: &str) -> Result<Vec<NormalizedEvent>, NormalizeError> {
        crate::build::test_normalize(Source::Tawkto, body, None, None)
    }

    #[test]
    fn errors_have_the_right_codes() {
        let code = |b: &str| run(b).err().map(|e| e.code());
        assert_eq!(code("[]"), Some("unsupported_payload"));
        assert_eq!(code("{}"), Some("missing_field"));
        assert_eq!(code(r#"{"event":5}"#), Some("invalid_field"));
        assert_eq!(code(r#"{"event":"chat:start","time":"x"}"#), Some("missing_field"));
        assert_eq!(code(r#"{"event":"chat:transcript_created","chat":{}}"#), Some("missing_field"));
        assert_eq!(code(r#"{"event":"ticket:create","ticket":{}}"#), Some("missing_field"));
    }

    #[test]
    fn unknown_events_are_other_and_visitor_ids_make_a_sender() {
        let e = run(r#"{"event":"chat:rated","chatId":"c1","time":"2019-06-28T14:03:04.646Z"}"#).expect("parses");
        assert_eq!(e[0].kind, EventKind::Other);
        assert!(e[0].chat_event.is_none());
        assert_eq!(e[0].occurred_at.as_deref(), Some("2019-06-28T14:03:04.646Z"));
        let e = run(r#"{"event":"chat:end","chatId":"c1","visitor":{"id":"v9","name":"Ann"}}"#).expect("parses");
        assert_eq!(e[0].sender.as_ref().map(|s| s.id.as_str()), Some("v9"));
    }
}

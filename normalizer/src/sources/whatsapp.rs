//! whatsapp: the WhatsApp Cloud API webhook, `object: "whatsapp_business_account"`, with
//! `entry[].changes[]` whose `field` is `messages` and whose `value` holds `metadata`,
//! `contacts[]`, `messages[]`, `statuses[]` and `errors[]`.
//!
//! Reference: <https://developers.facebook.com/documentation/business-messaging/whatsapp/webhooks/reference/messages>
//! (one page per message type under `…/messages/<type>`, statuses under `…/messages/status`,
//! business-scoped user ids under `…/whatsapp/business-scoped-user-ids`).
//!
//! Every entry, change, message and status becomes its own event. 360dialog's v2 relay sends the
//! very same body, so [`parse_cloud_api`] serves the `dialog360` source too; the events differ
//! only by source and provider, which come from the input.
//!
//! Mapping:
//! * `messages[]` → kind `message` (platform id = `messages[].id`), sender = `from` (or the
//!   business-scoped user id `from_user_id` when the phone number is withheld), named from the
//!   `contacts[]` item with the same `wa_id`, `user_id` or `parent_user_id`; conversation = the
//!   user (direct) or `group_id` (group).
//!   `type: "edit"` (Coexistence numbers) becomes the edited message with `edited: true` and
//!   `message.id` = `edit.original_message_id`; `unsupported` with `unsupported.type: "edit"`
//!   keeps type `unsupported` and is marked `edited`. `revoke`, `system` and `request_welcome`
//!   are not messages a user wrote: kind `other`.
//! * `statuses[]` → kind `status` (platform id = `{id}:{status}`); `played` and unknown states
//!   become kind `other`.
//! * `value.errors[]`, changes whose `field` is not `messages`, and changes that yield nothing
//!   else → kind `other`, identified by the change itself.

use serde_json::Value;

use hookline_shared::event::{
    Contact, Conversation, ConversationType, DeliveryState, EventKind, Interactive, Location, Media, Message, MessageType, NormalizedEvent,
    Reaction, Sender, Status, StatusError,
};

use crate::build;
use crate::{NormalizeError, RawInput};

/// The `object` of every Cloud API webhook.
const OBJECT: &str = "whatsapp_business_account";

pub fn parse(input: &RawInput<'_>) -> Result<Vec<NormalizedEvent>, NormalizeError> {
    parse_cloud_api(input)
}

/// Parses a Cloud API webhook body (Meta's, or 360dialog's relay of it).
pub(crate) fn parse_cloud_api(input: &RawInput<'_>) -> Result<Vec<NormalizedEvent>, NormalizeError> {
    let root = build::json(input.body)?;
    if !root.is_object() {
        return Err(NormalizeError::UnsupportedPayload("expected a JSON object".into()));
    }
    match root.get("object") {
        Some(Value::String(s)) if s == OBJECT => {}
        Some(Value::String(s)) => return Err(NormalizeError::UnsupportedPayload(format!("object {s:?}"))),
        Some(Value::Null) | None => {
            // 360dialog's retired On-Premise format puts contacts/messages/statuses at the top.
            let on_premise = ["messages", "statuses", "contacts", "errors"].iter().any(|k| root.get(*k).is_some());
            return Err(if on_premise {
                NormalizeError::UnsupportedPayload(
                    "On-Premise API format (no \"object\"/\"entry\"); only the Cloud API format is supported".into(),
                )
            } else {
                NormalizeError::MissingField("object".into())
            });
        }
        Some(_) => return Err(NormalizeError::InvalidField { field: "object".into(), detail: "expected a string".into() }),
    }

    let parser = Parser { input, platform: build::channel_platform(input) };
    let mut events = Vec::new();
    for (i, entry) in build::array(&root, "entry", "entry")?.iter().enumerate() {
        let entry_path = format!("entry[{i}]");
        let changes = build::array(entry, "changes", &format!("{entry_path}.changes"))?;
        for (j, change) in changes.iter().enumerate() {
            let path = format!("{entry_path}.changes[{j}]");
            parser.change(entry, change, &path, &mut events)?;
        }
    }
    Ok(events)
}

struct Parser<'a, 'b> {
    input: &'a RawInput<'b>,
    platform: String,
}

impl Parser<'_, '_> {
    fn event(&self, kind: EventKind, platform_id: &str) -> NormalizedEvent {
        build::event(self.input, kind, platform_id, &self.platform)
    }

    /// One `entry[].changes[]` item: its messages, statuses and errors.
    fn change(&self, entry: &Value, change: &Value, path: &str, out: &mut Vec<NormalizedEvent>) -> Result<(), NormalizeError> {
        if change.get("field").and_then(Value::as_str) != Some("messages") {
            out.push(self.other_change(entry, change));
            return Ok(());
        }
        let value_path = format!("{path}.value");
        let value = build::field(change, "value", &value_path)?;
        let contacts = opt_array(value, "contacts", &format!("{value_path}.contacts"))?;
        let messages = opt_array(value, "messages", &format!("{value_path}.messages"))?;
        let statuses = opt_array(value, "statuses", &format!("{value_path}.statuses"))?;
        let errors = opt_array(value, "errors", &format!("{value_path}.errors"))?;

        let before = out.len();
        for (k, msg) in messages.iter().enumerate() {
            let msg_path = format!("{value_path}.messages[{k}]");
            out.push(self.message(msg, contacts, &msg_path)?);
        }
        for (k, st) in statuses.iter().enumerate() {
            let st_path = format!("{value_path}.statuses[{k}]");
            out.push(self.status(st, &st_path)?);
        }
        // System, app and account errors (`value.errors`), or a change with nothing we map.
        if !errors.is_empty() || out.len() == before {
            out.push(self.other_change(entry, change));
        }
        Ok(())
    }

    /// A change kept as kind `other`, identified by the WABA id, the field and the change itself.
    fn other_change(&self, entry: &Value, change: &Value) -> NormalizedEvent {
        let entry_id = entry.get("id").and_then(build::id_string).unwrap_or_default();
        let field = change.get("field").and_then(Value::as_str).unwrap_or_default();
        let platform_id = format!("{entry_id}:{field}:{change}");
        let mut event = self.event(EventKind::Other, &platform_id);
        event.occurred_at = entry.get("time").and_then(build::from_unix_seconds);
        event
    }

    /// One `messages[]` item.
    fn message(&self, msg: &Value, contacts: &[Value], path: &str) -> Result<NormalizedEvent, NormalizeError> {
        let id = build::id_field(msg, "id", &format!("{path}.id"))?;
        let kind = required_str(msg, "type", &format!("{path}.type"))?;
        let (sender, conversation) = who(msg, contacts, path)?;

        let (event_kind, message) = match kind {
            // A deletion, a phone number change, a first opening of the chat: not messages.
            "revoke" | "system" | "request_welcome" => (EventKind::Other, None),
            "edit" => {
                let edit_path = format!("{path}.edit");
                let edit = build::field(msg, "edit", &edit_path)?;
                let original = build::id_field(edit, "original_message_id", &format!("{edit_path}.original_message_id"))?;
                let inner_path = format!("{edit_path}.message");
                let inner = build::field(edit, "message", &inner_path)?;
                let mut m = content(inner, original, &inner_path)?;
                m.edited = true;
                (EventKind::Message, Some(m))
            }
            _ => (EventKind::Message, Some(content(msg, id.clone(), path)?)),
        };

        let mut event = self.event(event_kind, &id);
        event.occurred_at = msg.get("timestamp").and_then(build::from_unix_seconds);
        event.conversation = Some(conversation);
        event.sender = Some(sender);
        event.message = message;
        Ok(event)
    }

    /// One `statuses[]` item.
    fn status(&self, st: &Value, path: &str) -> Result<NormalizedEvent, NormalizeError> {
        let id = build::id_field(st, "id", &format!("{path}.id"))?;
        let state_str = required_str(st, "status", &format!("{path}.status"))?;
        let state = match state_str {
            "sent" => Some(DeliveryState::Sent),
            "delivered" => Some(DeliveryState::Delivered),
            "read" => Some(DeliveryState::Read),
            "failed" => Some(DeliveryState::Failed),
            // `played` (a voice message was played) and anything newer.
            _ => None,
        };

        // `recipient_id` is the user's phone number or a group id; `recipient_user_id` the
        // business-scoped user id when the phone number is withheld.
        let chat = opt_id(st, "recipient_id").or_else(|| opt_id(st, "recipient_user_id"));
        let is_group = st.get("recipient_type").and_then(Value::as_str) == Some("group");
        let (conversation, recipient) = if is_group {
            let participant = opt_id(st, "recipient_participant_id").or_else(|| opt_id(st, "recipient_participant_user_id"));
            (chat.map(|id| Conversation { id, kind: ConversationType::Group }), participant)
        } else {
            (chat.clone().map(|id| Conversation { id, kind: ConversationType::Direct }), chat)
        };

        let platform_id = format!("{id}:{state_str}");
        let mut event = match state {
            Some(state) => {
                let mut event = self.event(EventKind::Status, &platform_id);
                event.status = Some(Status { message_id: id, state, recipient_id: recipient, error: status_error(st) });
                event
            }
            None => self.event(EventKind::Other, &platform_id),
        };
        event.occurred_at = st.get("timestamp").and_then(build::from_unix_seconds);
        event.conversation = conversation;
        Ok(event)
    }
}

/// The sender and the chat of an incoming message.
fn who(msg: &Value, contacts: &[Value], path: &str) -> Result<(Sender, Conversation), NormalizeError> {
    let from = opt_id(msg, "from");
    let user_id = opt_id(msg, "from_user_id");
    let id = from.clone().or_else(|| user_id.clone()).ok_or_else(|| NormalizeError::MissingField(format!("{path}.from")))?;
    let parent = opt_id(msg, "from_parent_user_id");
    // The contact with the same phone number, business-scoped user id or parent one.
    let contact = contacts.iter().find(|c| {
        (from.is_some() && opt_id(c, "wa_id") == from)
            || (user_id.is_some() && opt_id(c, "user_id") == user_id)
            || (parent.is_some() && opt_id(c, "parent_user_id") == parent)
    });
    let profile = contact.and_then(|c| c.get("profile"));
    let sender = Sender {
        id: id.clone(),
        name: profile.and_then(|p| build::opt_str(p, "name")),
        phone: from.filter(|f| is_phone(f)),
        username: profile.and_then(|p| build::opt_str(p, "username")),
    };
    let conversation = match opt_id(msg, "group_id") {
        Some(group) => Conversation { id: group, kind: ConversationType::Group },
        None => Conversation { id, kind: ConversationType::Direct },
    };
    Ok((sender, conversation))
}

/// The content of a message object (a `messages[]` item, or `edit.message`) under `id`.
fn content(msg: &Value, id: String, path: &str) -> Result<Message, NormalizeError> {
    let kind = required_str(msg, "type", &format!("{path}.type"))?;
    let mut m = match kind {
        "text" => {
            let text = build::field(msg, "text", &format!("{path}.text"))?;
            let mut m = Message::new(id, MessageType::Text);
            m.text = Some(required_str(text, "body", &format!("{path}.text.body"))?.to_string());
            m
        }
        "image" | "audio" | "video" | "document" | "sticker" => {
            let media = build::field(msg, kind, &format!("{path}.{kind}"))?;
            let mut m = Message::new(id, media_type(kind));
            m.text = build::opt_str(media, "caption");
            m.media = Some(Media {
                id: media.get("id").and_then(build::id_string),
                url: build::opt_str(media, "url"),
                mime_type: build::opt_str(media, "mime_type"),
                filename: build::opt_str(media, "filename"),
                sha256: build::opt_str(media, "sha256"),
            });
            m
        }
        "location" => {
            let loc_path = format!("{path}.location");
            let loc = build::field(msg, "location", &loc_path)?;
            let mut m = Message::new(id, MessageType::Location);
            m.location = Some(Location {
                latitude: number(loc, "latitude", &format!("{loc_path}.latitude"))?,
                longitude: number(loc, "longitude", &format!("{loc_path}.longitude"))?,
                name: build::opt_str(loc, "name"),
                address: build::opt_str(loc, "address"),
            });
            m
        }
        "contacts" => {
            let cards = build::array(msg, "contacts", &format!("{path}.contacts"))?;
            let mut m = Message::new(id, MessageType::Contacts);
            m.contacts = Some(cards.iter().map(contact_card).collect());
            m
        }
        "interactive" => {
            let ia_path = format!("{path}.interactive");
            let ia = build::field(msg, "interactive", &ia_path)?;
            match ia.get("type").and_then(Value::as_str) {
                Some(sub @ ("button_reply" | "list_reply")) => {
                    let reply_path = format!("{ia_path}.{sub}");
                    let reply = build::field(ia, sub, &reply_path)?;
                    let mut m = Message::new(id, MessageType::Interactive);
                    m.interactive = Some(Interactive {
                        reply_id: build::id_field(reply, "id", &format!("{reply_path}.id"))?,
                        title: required_str(reply, "title", &format!("{reply_path}.title"))?.to_string(),
                    });
                    m
                }
                // Flow replies (`nfm_reply`) and other kinds carry no reply id and title.
                _ => Message::new(id, MessageType::Unsupported),
            }
        }
        "button" => {
            // A quick-reply button of a template.
            let button_path = format!("{path}.button");
            let button = build::field(msg, "button", &button_path)?;
            let mut m = Message::new(id, MessageType::Button);
            m.interactive = Some(Interactive {
                reply_id: required_str(button, "payload", &format!("{button_path}.payload"))?.to_string(),
                title: required_str(button, "text", &format!("{button_path}.text"))?.to_string(),
            });
            m
        }
        "reaction" => {
            let r_path = format!("{path}.reaction");
            let r = build::field(msg, "reaction", &r_path)?;
            let mut m = Message::new(id, MessageType::Reaction);
            m.reaction = Some(Reaction {
                message_id: build::id_field(r, "message_id", &format!("{r_path}.message_id"))?,
                // Absent (or empty) when the user removed the reaction.
                emoji: build::opt_str(r, "emoji"),
            });
            m
        }
        "unsupported" => {
            let mut m = Message::new(id, MessageType::Unsupported);
            // Plain Cloud API numbers receive edits as `unsupported` with `unsupported.type: "edit"`.
            m.edited = msg.get("unsupported").and_then(|u| u.get("type")).and_then(Value::as_str) == Some("edit");
            m
        }
        // `order` and any type newer than this parser.
        _ => Message::new(id, MessageType::Unsupported),
    };
    m.reply_to = msg.get("context").and_then(|c| c.get("id")).and_then(build::id_string);
    Ok(m)
}

fn media_type(kind: &str) -> MessageType {
    match kind {
        "image" => MessageType::Image,
        "audio" => MessageType::Audio,
        "video" => MessageType::Video,
        "sticker" => MessageType::Sticker,
        _ => MessageType::Document,
    }
}

/// A shared contact card: formatted name, phone numbers and e-mail addresses.
fn contact_card(card: &Value) -> Contact {
    let list = |key: &str, inner: &str| -> Vec<String> {
        card.get(key)
            .and_then(Value::as_array)
            .map(|items| items.iter().filter_map(|item| build::opt_str(item, inner)).collect())
            .unwrap_or_default()
    };
    Contact {
        name: card.get("name").and_then(|n| build::opt_str(n, "formatted_name")),
        phones: list("phones", "phone"),
        emails: list("emails", "email"),
    }
}

/// `statuses[].errors[0]` as `{code, title}`.
fn status_error(st: &Value) -> Option<StatusError> {
    let error = st.get("errors")?.as_array()?.first()?;
    let code = error.get("code").and_then(build::id_string)?;
    let title = build::opt_str(error, "title").or_else(|| build::opt_str(error, "message")).unwrap_or_default();
    Some(StatusError { code, title })
}

/// A phone number as WhatsApp writes it: digits, perhaps after a `+`.
fn is_phone(s: &str) -> bool {
    let digits = s.strip_prefix('+').unwrap_or(s);
    !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit())
}

/// An optional id (string, or number written in decimal).
fn opt_id(v: &Value, key: &str) -> Option<String> {
    v.get(key).and_then(build::id_string)
}

/// An optional array: absent or null is empty, anything else but an array is an error.
fn opt_array<'a>(v: &'a Value, key: &str, path: &str) -> Result<&'a [Value], NormalizeError> {
    match v.get(key) {
        None | Some(Value::Null) => Ok(&[]),
        Some(Value::Array(items)) => Ok(items),
        Some(_) => Err(NormalizeError::InvalidField { field: path.to_string(), detail: "expected an array".into() }),
    }
}

/// A required, non-empty string field.
fn required_str<'a>(v: &'a Value, key: &str, path: &str) -> Result<&'a str, NormalizeError> {
    match build::field(v, key, path)? {
        Value::String(s) if !s.is_empty() => Ok(s),
        Value::String(_) => Err(NormalizeError::MissingField(path.to_string())),
        _ => Err(NormalizeError::InvalidField { field: path.to_string(), detail: "expected a string".into() }),
    }
}

/// A required number (also accepted as a decimal string).
fn number(v: &Value, key: &str, path: &str) -> Result<f64, NormalizeError> {
    let x = build::field(v, key, path)?;
    let n = match x {
        Value::Number(n) => n.as_f64(),
        Value::String(s) => s.trim().parse::<f64>().ok(),
        _ => None,
    };
    n.filter(|n| n.is_finite()).ok_or_else(|| NormalizeError::InvalidField { field: path.to_string(), detail: "expected a number".into() })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::EventContext;
    use hookline_shared::Source;

    fn ctx() -> EventContext {
        EventContext {
            tenant_id: "t".into(),
            channel_id: "c".into(),
            platform: "whatsapp".into(),
            received_at: "2026-01-01T00:00:00Z".into(),
            raw: None,
        }
    }

    fn run(body: &str) -> Result<Vec<NormalizedEvent>, NormalizeError> {
        let ctx = ctx();
        parse(&RawInput {
            source: Source::Whatsapp,
            body: body.as_bytes(),
            content_type: Some("application/json"),
            query: None,
            context: &ctx,
        })
    }

    fn wrap(value: &str) -> String {
        format!(r#"{{"object":"whatsapp_business_account","entry":[{{"id":"1","changes":[{{"field":"messages","value":{value}}}]}}]}}"#)
    }

    #[test]
    fn missing_fields_name_their_path() {
        let err = run(&wrap(r#"{"messages":[{"from":"1","timestamp":"1","type":"text","text":{"body":"x"}}]}"#)).unwrap_err();
        assert_eq!(err, NormalizeError::MissingField("entry[0].changes[0].value.messages[0].id".into()));
        let err = run(&wrap(r#"{"messages":[{"id":"m","type":"text","text":{"body":"x"}}]}"#)).unwrap_err();
        assert_eq!(err, NormalizeError::MissingField("entry[0].changes[0].value.messages[0].from".into()));
        let err = run(&wrap(r#"{"messages":[{"id":"m","from":"1","type":"location","location":{"latitude":1}}]}"#)).unwrap_err();
        assert_eq!(err.code(), "missing_field");
        assert_eq!(run(r#"{"object":"whatsapp_business_account"}"#).unwrap_err(), NormalizeError::MissingField("entry".into()));
        let err = run(r#"{"object":"whatsapp_business_account","entry":[{"changes":[{"field":"messages"}]}]}"#).unwrap_err();
        assert_eq!(err, NormalizeError::MissingField("entry[0].changes[0].value".into()));
    }

    #[test]
    fn foreign_payloads_are_unsupported() {
        assert_eq!(run(r#"{"object":"page","entry":[]}"#).unwrap_err().code(), "unsupported_payload");
        assert_eq!(run("[1,2]").unwrap_err().code(), "unsupported_payload");
        assert_eq!(run(r#"{"messages":[{"id":"x"}]}"#).unwrap_err().code(), "unsupported_payload");
        assert_eq!(run(r#"{"foo":1}"#).unwrap_err().code(), "missing_field");
        assert_eq!(run("{").unwrap_err().code(), "invalid_json");
    }

    #[test]
    fn unknown_types_become_unsupported_or_other() {
        let events = run(&wrap(
            r#"{"messages":[
                {"id":"a","from":"1","timestamp":"1","type":"order","order":{}},
                {"id":"b","from":"1","timestamp":"1","type":"interactive","interactive":{"type":"nfm_reply","nfm_reply":{}}},
                {"id":"c","from":"1","timestamp":"1","type":"system","system":{"body":"User changed","type":"user_changed_number"}}
            ],"statuses":[{"id":"d","status":"played","timestamp":"1","recipient_id":"1"}]}"#,
        ))
        .unwrap();
        let kinds: Vec<_> = events.iter().map(|e| e.kind).collect();
        assert_eq!(kinds, [EventKind::Message, EventKind::Message, EventKind::Other, EventKind::Other]);
        assert_eq!(events[0].message.as_ref().unwrap().kind, MessageType::Unsupported);
        assert_eq!(events[1].message.as_ref().unwrap().kind, MessageType::Unsupported);
        assert_eq!(events[3].conversation.as_ref().unwrap().id, "1");
    }

    #[test]
    fn senders_are_named_only_from_their_own_contact() {
        let events = run(&wrap(
            r#"{"contacts":[{"profile":{"name":"A"},"wa_id":"111"},{"profile":{"name":"B","username":"@b"},"user_id":"US.2"}],
                "messages":[
                  {"id":"m1","from":"111","type":"text","text":{"body":"x"}},
                  {"id":"m2","from_user_id":"US.2","type":"text","text":{"body":"x"}},
                  {"id":"m3","from":"333","type":"text","text":{"body":"x"}}]}"#,
        ))
        .unwrap();
        let senders: Vec<_> = events.iter().map(|e| e.sender.clone().unwrap()).collect();
        assert_eq!(senders[0].name.as_deref(), Some("A"));
        assert_eq!(senders[0].phone.as_deref(), Some("111"));
        assert_eq!(senders[1].name.as_deref(), Some("B"));
        assert_eq!(senders[1].username.as_deref(), Some("@b"));
        assert_eq!(senders[1].phone, None);
        assert_eq!(senders[2], Sender { id: "333".into(), phone: Some("333".into()), ..Sender::default() });
    }

    #[test]
    fn group_statuses_name_the_group_and_the_participant() {
        let events = run(&wrap(
            r#"{"statuses":[{"id":"w","status":"read","timestamp":"1739321024","recipient_id":"G1","recipient_type":"group","recipient_participant_id":"16505551234"}]}"#,
        ))
        .unwrap();
        let e = &events[0];
        assert_eq!(e.conversation, Some(Conversation { id: "G1".into(), kind: ConversationType::Group }));
        let status = e.status.as_ref().unwrap();
        assert_eq!(status.recipient_id.as_deref(), Some("16505551234"));
        assert_eq!(status.state, DeliveryState::Read);
    }

    #[test]
    fn other_fields_and_empty_values_are_kept_as_other() {
        let body = r#"{"object":"whatsapp_business_account","entry":[{"id":"1","time":1751247548,"changes":[
            {"field":"account_update","value":{"event":"X"}},
            {"value":{"event":"no field"}},
            {"field":"messages","value":{"messaging_product":"whatsapp","messages":[]}}]}]}"#;
        let events = run(body).unwrap();
        assert_eq!(events.len(), 3);
        assert!(events.iter().all(|e| e.kind == EventKind::Other));
        assert_eq!(events[0].occurred_at.as_deref(), Some("2025-06-30T01:39:08Z"));
        assert_ne!(events[0].id, events[1].id);
        assert_ne!(events[1].id, events[2].id);
    }

    #[test]
    fn odd_values_do_not_panic() {
        for body in [
            r#"{"object":"whatsapp_business_account","entry":{}}"#,
            r#"{"object":"whatsapp_business_account","entry":[1,null,"x"]}"#,
            r#"{"object":"whatsapp_business_account","entry":[{"changes":[1,{"field":"messages","value":1}]}]}"#,
            r#"{"object":7}"#,
        ] {
            let _ = run(body);
        }
        let _ = run(&wrap(r#"{"messages":"x"}"#));
        let _ = run(&wrap(r#"{"messages":[{"id":1,"from":2,"type":"reaction","reaction":{"message_id":3,"emoji":4}}]}"#));
        let _ = run(&wrap(r#"{"statuses":[{"id":"x","status":"failed","errors":[{"code":"a"},1]}]}"#));
        let _ = run(&wrap(r#"{"messages":[{"id":"x","from":"1","type":"location","location":{"latitude":"nan","longitude":1e308}}]}"#));
    }
}

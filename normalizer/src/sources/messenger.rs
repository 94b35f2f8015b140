//! Messenger Platform webhooks (`object: "page"`), and the shared parser for Meta's
//! `entry[].messaging[]` shape that Instagram messaging uses as well (see `instagram.rs`).
//!
//! Format: `{"object": "page", "entry": [{"id": PAGE_ID, "time": ms, "messaging": [item, ...]}]}`;
//! every `messaging[]` item is `{sender: {id}, recipient: {id}, timestamp: ms, <one payload>}`.
//! Docs: <https://developers.facebook.com/documentation/business-messaging/messenger-platform/webhooks/webhook-events>
//! (pages `messages`, `message-echoes`, `message-edits`, `message-reactions`, `message-reads`,
//! `message-deliveries`, `messaging_postbacks`).
//!
//! Every item becomes its own event:
//! * `message` → kind `message`. `text` alone is type `text` (with `quick_reply` it is type
//!   `interactive`, `interactive = {reply_id: quick_reply.payload, title: text}`); each attachment
//!   becomes one event (`image`, `audio`, `video`, `file` → `document`, `sticker`, legacy
//!   `location`; `fallback`, `template`, `share`, `reel`, `story_mention`, ... → `unsupported`),
//!   `payload.url` → `media.url`. The first attachment keeps the text and the `mid`, the others get
//!   ids `"{mid}:{index}"`. `reply_to.mid` → `reply_to`. `is_echo: true` → `echo: true`, sent by
//!   the page to the user in `recipient`. `is_unsupported: true` → type `unsupported`.
//!   `is_deleted: true` (Instagram: the user unsent the message) → kind `other`, id
//!   `"{mid}:deleted"`.
//! * `message_edit` → kind `message`, `edited: true`, the new text under the original `mid`
//!   (platform id `"{mid}:edit:{num_edit}"`, so the edit is not taken for a duplicate).
//! * `postback` → type `button`, `interactive = {reply_id: payload, title}`; id `postback.mid`,
//!   or `"{sender}:{timestamp}:postback"` when there is none.
//! * `reaction` → type `reaction`, id `"{sender}:{timestamp}:reaction"`,
//!   `reaction = {message_id: reaction.mid, emoji}`; `action: "unreact"` omits the emoji (id
//!   `"{sender}:{timestamp}:unreact"`).
//! * `read` → kind `status`, state `read`. Messenger gives only a watermark (everything sent up to
//!   that time was read): `message_id = "watermark:{watermark}"`. Instagram names the message
//!   (`read.mid`); that difference lives in `MetaMessaging::read_target`.
//! * `delivery` → kind `status`, state `delivered`, one event per `delivery.mids[]`, or one
//!   `"watermark:{watermark}"` event when there are no mids. Deliveries carry no timestamp.
//! * Anything else (`optin`, `referral`, `pass_thread_control`, `account_linking`, ...),
//!   `entry[].standby[]` items (the app is not the thread owner), and `entry[].changes[]` /
//!   `entry[].field` notifications (feed, comments, mentions) → kind `other`.
//!
//! The conversation is the user's chat: `{id: PSID/IGSID, type: direct}`, the `sender.id` of
//! inbound items and the `recipient.id` of echoes. Times are unix milliseconds.
//! Status ids: `"{mid}:{state}"`; for watermarks `"{user}:watermark:{watermark}:{state}"`, since a
//! watermark alone (a time) does not tell one user's receipt from another's.

use serde_json::Value;

use hookline_shared::event::{
    Conversation, ConversationType, DeliveryState, EventKind, Interactive, Location, Media, Message, MessageType, NormalizedEvent,
    Reaction, Sender, Status,
};

use crate::build;
use crate::{NormalizeError, RawInput};

/// What a read receipt points at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum ReadTarget {
    /// One message (Instagram `read.mid`).
    Message(String),
    /// Everything sent up to this time, unix milliseconds in decimal (Messenger `read.watermark`).
    Watermark(String),
}

/// The differences between the platforms that share Meta's `entry[].messaging[]` shape.
pub(crate) struct MetaMessaging {
    /// The envelope's `object`.
    pub object: &'static str,
    /// The events' `platform`.
    pub platform: &'static str,
    /// Reads `messaging[].read` (at `path`).
    pub read_target: fn(read: &Value, path: &str) -> Result<ReadTarget, NormalizeError>,
}

/// Messenger: `object: "page"`, read receipts carry only a watermark.
pub(crate) const MESSENGER: MetaMessaging = MetaMessaging { object: "page", platform: "messenger", read_target: read_watermark };

/// Messenger's `read: {watermark}`.
fn read_watermark(read: &Value, path: &str) -> Result<ReadTarget, NormalizeError> {
    build::id_field(read, "watermark", &format!("{path}.watermark")).map(ReadTarget::Watermark)
}

pub fn parse(input: &RawInput<'_>) -> Result<Vec<NormalizedEvent>, NormalizeError> {
    parse_messaging(input, &MESSENGER)
}

/// Parses a Meta messaging webhook (`{"object", "entry": [...]}`) of the given flavour.
pub(crate) fn parse_messaging(input: &RawInput<'_>, flavor: &MetaMessaging) -> Result<Vec<NormalizedEvent>, NormalizeError> {
    let body = build::json(input.body)?;
    let object = build::field(&body, "object", "object")?;
    let object =
        object.as_str().ok_or_else(|| NormalizeError::InvalidField { field: "object".into(), detail: "expected a string".into() })?;
    if object != flavor.object {
        return Err(NormalizeError::UnsupportedPayload(format!("object \"{object}\"")));
    }
    let cx = Cx { input, flavor };
    let mut out = Vec::new();
    for (i, entry) in build::array(&body, "entry", "entry")?.iter().enumerate() {
        cx.entry(entry, &format!("entry[{i}]"), &mut out)?;
    }
    Ok(out)
}

struct Cx<'a> {
    input: &'a RawInput<'a>,
    flavor: &'a MetaMessaging,
}

/// A non-null field.
fn get<'v>(v: &'v Value, key: &str) -> Option<&'v Value> {
    v.get(key).filter(|x| !x.is_null())
}

/// An optional array field: absent or null is `None`, anything but an array is an error.
fn opt_array<'v>(v: &'v Value, key: &str, path: &str) -> Result<Option<&'v Vec<Value>>, NormalizeError> {
    match get(v, key) {
        None => Ok(None),
        Some(x) => x
            .as_array()
            .map(Some)
            .ok_or_else(|| NormalizeError::InvalidField { field: path.to_string(), detail: "expected an array".into() }),
    }
}

/// `item.{who}.id`, required.
fn party_id(item: &Value, who: &str, path: &str) -> Result<String, NormalizeError> {
    build::id_field(get(item, who).unwrap_or(&Value::Null), "id", &format!("{path}.{who}.id"))
}

/// `item.{who}.id`, if any.
fn opt_party_id(item: &Value, who: &str) -> Option<String> {
    get(item, who).and_then(|p| p.get("id")).and_then(build::id_string)
}

/// The item's `timestamp` as written (decimal milliseconds), required: synthetic ids use it.
fn timestamp_id(item: &Value, path: &str) -> Result<String, NormalizeError> {
    build::id_field(item, "timestamp", &format!("{path}.timestamp"))
}

fn occurred_at(item: &Value) -> Option<String> {
    get(item, "timestamp").and_then(build::from_unix_millis)
}

fn direct(id: &str) -> Option<Conversation> {
    Some(Conversation { id: id.to_string(), kind: ConversationType::Direct })
}

fn sender(id: &str) -> Option<Sender> {
    Some(Sender { id: id.to_string(), ..Sender::default() })
}

fn is_true(v: &Value, key: &str) -> bool {
    v.get(key).and_then(Value::as_bool) == Some(true)
}

impl Cx<'_> {
    fn event(&self, kind: EventKind, platform_id: &str) -> NormalizedEvent {
        build::event(self.input, kind, platform_id, self.flavor.platform)
    }

    /// A kind `message` event in the user's chat.
    fn message(&self, platform_id: &str, message: Message, item: &Value, user: &str, from: &str) -> NormalizedEvent {
        let mut e = self.event(EventKind::Message, platform_id);
        e.occurred_at = occurred_at(item);
        e.conversation = direct(user);
        e.sender = sender(from);
        e.message = Some(message);
        e
    }

    /// A kind `status` event about a message the business sent to `user`.
    fn status(&self, target: ReadTarget, state: DeliveryState, item: &Value, user: &str) -> NormalizedEvent {
        let (message_id, platform_id) = match target {
            ReadTarget::Message(mid) => {
                let pid = format!("{mid}:{}", state.as_str());
                (mid, pid)
            }
            ReadTarget::Watermark(w) => (format!("watermark:{w}"), format!("{user}:watermark:{w}:{}", state.as_str())),
        };
        let mut e = self.event(EventKind::Status, &platform_id);
        e.occurred_at = occurred_at(item);
        e.conversation = direct(user);
        e.sender = sender(user);
        e.status = Some(Status { message_id, state, recipient_id: Some(user.to_string()), error: None });
        e
    }

    fn entry(&self, entry: &Value, path: &str, out: &mut Vec<NormalizedEvent>) -> Result<(), NormalizeError> {
        let mut found = false;
        if let Some(items) = opt_array(entry, "messaging", &format!("{path}.messaging"))? {
            found = true;
            for (j, item) in items.iter().enumerate() {
                self.messaging_item(item, &format!("{path}.messaging[{j}]"), out)?;
            }
        }
        if let Some(items) = opt_array(entry, "standby", &format!("{path}.standby"))? {
            found = true;
            for item in items {
                out.push(self.other_item("standby", item, entry));
            }
        }
        if let Some(changes) = opt_array(entry, "changes", &format!("{path}.changes"))? {
            found = true;
            for (j, change) in changes.iter().enumerate() {
                out.push(self.change(change, entry, j));
            }
        }
        // Business Login for Instagram puts one change's `field`/`value` on the entry itself.
        if get(entry, "field").is_some() && get(entry, "value").is_some() {
            found = true;
            out.push(self.change(entry, entry, 0));
        }
        if found {
            Ok(())
        } else {
            Err(NormalizeError::MissingField(format!("{path}.messaging")))
        }
    }

    fn messaging_item(&self, item: &Value, path: &str, out: &mut Vec<NormalizedEvent>) -> Result<(), NormalizeError> {
        if let Some(message) = get(item, "message") {
            self.message_item(item, message, path, out)
        } else if let Some(edit) = get(item, "message_edit") {
            out.push(self.edit(item, edit, path)?);
            Ok(())
        } else if let Some(postback) = get(item, "postback") {
            out.push(self.postback(item, postback, path)?);
            Ok(())
        } else if let Some(reaction) = get(item, "reaction") {
            out.push(self.reaction(item, reaction, path)?);
            Ok(())
        } else if let Some(read) = get(item, "read") {
            let user = party_id(item, "sender", path)?;
            let target = (self.flavor.read_target)(read, &format!("{path}.read"))?;
            out.push(self.status(target, DeliveryState::Read, item, &user));
            Ok(())
        } else if let Some(delivery) = get(item, "delivery") {
            self.delivery(item, delivery, path, out)
        } else {
            out.push(self.other_item("messaging", item, &Value::Null));
            Ok(())
        }
    }

    fn message_item(&self, item: &Value, message: &Value, path: &str, out: &mut Vec<NormalizedEvent>) -> Result<(), NormalizeError> {
        let mpath = format!("{path}.message");
        let mid = build::id_field(message, "mid", &format!("{mpath}.mid"))?;
        let echo = is_true(message, "is_echo");
        let from = party_id(item, "sender", path)?;
        let user = if echo { party_id(item, "recipient", path)? } else { from.clone() };

        if is_true(message, "is_deleted") {
            let mut e = self.event(EventKind::Other, &format!("{mid}:deleted"));
            e.occurred_at = occurred_at(item);
            e.conversation = direct(&user);
            e.sender = sender(&from);
            out.push(e);
            return Ok(());
        }

        let text = build::opt_str(message, "text");
        let reply_to = get(message, "reply_to").and_then(|r| r.get("mid")).and_then(build::id_string);
        let finish = |mut m: Message| {
            m.reply_to = reply_to.clone();
            m.echo = echo;
            m
        };
        let attachments = opt_array(message, "attachments", &format!("{mpath}.attachments"))?.filter(|a| !a.is_empty());

        if is_true(message, "is_unsupported") {
            let mut m = Message::new(mid.clone(), MessageType::Unsupported);
            m.text = text;
            out.push(self.message(&mid, finish(m), item, &user, &from));
        } else if let Some(attachments) = attachments {
            for (k, attachment) in attachments.iter().enumerate() {
                let id = if k == 0 { mid.clone() } else { format!("{mid}:{k}") };
                let mut m = attachment_message(id.clone(), attachment);
                if k == 0 {
                    m.text = text.clone();
                }
                out.push(self.message(&id, finish(m), item, &user, &from));
            }
        } else if let Some(text) = text {
            let quick_reply = get(message, "quick_reply").and_then(|q| q.get("payload")).and_then(build::id_string);
            let mut m = match quick_reply {
                Some(reply_id) => {
                    let mut m = Message::new(mid.clone(), MessageType::Interactive);
                    m.interactive = Some(Interactive { reply_id, title: text.clone() });
                    m
                }
                None => Message::new(mid.clone(), MessageType::Text),
            };
            m.text = Some(text);
            out.push(self.message(&mid, finish(m), item, &user, &from));
        } else {
            let m = Message::new(mid.clone(), MessageType::Unsupported);
            out.push(self.message(&mid, finish(m), item, &user, &from));
        }
        Ok(())
    }

    fn edit(&self, item: &Value, edit: &Value, path: &str) -> Result<NormalizedEvent, NormalizeError> {
        let mid = build::id_field(edit, "mid", &format!("{path}.message_edit.mid"))?;
        let user = party_id(item, "sender", path)?;
        let text = build::opt_str(edit, "text");
        let mut m = Message::new(mid.clone(), if text.is_some() { MessageType::Text } else { MessageType::Unsupported });
        m.text = text;
        m.edited = true;
        let nth = get(edit, "num_edit").and_then(build::id_string).or_else(|| get(item, "timestamp").and_then(build::id_string));
        let platform_id = match nth {
            Some(n) => format!("{mid}:edit:{n}"),
            None => format!("{mid}:edit"),
        };
        Ok(self.message(&platform_id, m, item, &user, &user))
    }

    fn postback(&self, item: &Value, postback: &Value, path: &str) -> Result<NormalizedEvent, NormalizeError> {
        let user = party_id(item, "sender", path)?;
        let id = match get(postback, "mid").and_then(build::id_string) {
            Some(mid) => mid,
            None => format!("{user}:{}:postback", timestamp_id(item, path)?),
        };
        let mut m = Message::new(id.clone(), MessageType::Button);
        let title = build::opt_str(postback, "title");
        match (get(postback, "payload").and_then(build::id_string), title) {
            (Some(reply_id), Some(title)) => m.interactive = Some(Interactive { reply_id, title }),
            (_, title) => m.text = title,
        }
        Ok(self.message(&id, m, item, &user, &user))
    }

    fn reaction(&self, item: &Value, reaction: &Value, path: &str) -> Result<NormalizedEvent, NormalizeError> {
        let user = party_id(item, "sender", path)?;
        let target = build::id_field(reaction, "mid", &format!("{path}.reaction.mid"))?;
        let removed = reaction.get("action").and_then(Value::as_str) == Some("unreact");
        let id = format!("{user}:{}:{}", timestamp_id(item, path)?, if removed { "unreact" } else { "reaction" });
        let mut m = Message::new(id.clone(), MessageType::Reaction);
        m.reaction = Some(Reaction { message_id: target, emoji: if removed { None } else { build::opt_str(reaction, "emoji") } });
        Ok(self.message(&id, m, item, &user, &user))
    }

    fn delivery(&self, item: &Value, delivery: &Value, path: &str, out: &mut Vec<NormalizedEvent>) -> Result<(), NormalizeError> {
        let user = party_id(item, "sender", path)?;
        let dpath = format!("{path}.delivery");
        let mids: Vec<String> = opt_array(delivery, "mids", &format!("{dpath}.mids"))?
            .map(|m| m.iter().filter_map(build::id_string).collect())
            .unwrap_or_default();
        if mids.is_empty() {
            let w = build::id_field(delivery, "watermark", &format!("{dpath}.watermark"))?;
            out.push(self.status(ReadTarget::Watermark(w), DeliveryState::Delivered, item, &user));
        } else {
            for mid in mids {
                out.push(self.status(ReadTarget::Message(mid), DeliveryState::Delivered, item, &user));
            }
        }
        Ok(())
    }

    /// A messaging or standby item this module does not map: kind `other`, identified by the
    /// message id it carries, or by what it is, who caused it and when.
    fn other_item(&self, prefix: &str, item: &Value, entry: &Value) -> NormalizedEvent {
        let message = get(item, "message");
        let echo = message.is_some_and(|m| is_true(m, "is_echo"));
        let from = opt_party_id(item, "sender");
        let user = if echo { opt_party_id(item, "recipient") } else { from.clone() };
        let platform_id = match message.and_then(|m| m.get("mid")).and_then(build::id_string) {
            Some(mid) => format!("{prefix}:message:{mid}"),
            None => {
                let what = item
                    .as_object()
                    .and_then(|o| o.keys().filter(|k| !matches!(k.as_str(), "sender" | "recipient" | "timestamp")).min())
                    .map_or("item", String::as_str);
                let who = from
                    .clone()
                    .or_else(|| get(item, "sender").and_then(|s| s.get("user_ref")).and_then(build::id_string))
                    .or_else(|| opt_party_id(item, "recipient"))
                    .unwrap_or_else(|| "-".into());
                let when = get(item, "timestamp").or_else(|| get(entry, "time")).and_then(build::id_string).unwrap_or_else(|| "-".into());
                format!("{prefix}:{what}:{who}:{when}")
            }
        };
        let mut e = self.event(EventKind::Other, &platform_id);
        e.occurred_at = occurred_at(item);
        e.conversation = user.as_deref().and_then(direct);
        e.sender = from.as_deref().and_then(sender);
        e
    }

    /// An `entry[].changes[]` notification (or Instagram's entry-level `field`/`value`):
    /// kind `other`, identified by the field and the id of what changed. `entry.time` is when Meta
    /// sent the notification (in seconds in some examples), not when it happened: not used.
    fn change(&self, change: &Value, entry: &Value, index: usize) -> NormalizedEvent {
        let field = build::opt_str(change, "field").unwrap_or_else(|| "change".into());
        let value = get(change, "value").unwrap_or(&Value::Null);
        let what = ["id", "comment_id", "media_id", "post_id"].iter().find_map(|k| get(value, k).and_then(build::id_string));
        let platform_id = match what {
            Some(id) => format!("changes:{field}:{id}"),
            None => {
                let account = get(entry, "id").and_then(build::id_string).unwrap_or_else(|| "-".into());
                let when = get(entry, "time").and_then(build::id_string).unwrap_or_else(|| "-".into());
                format!("changes:{field}:{account}:{when}:{index}")
            }
        };
        let mut e = self.event(EventKind::Other, &platform_id);
        if let Some(id) = get(value, "from").and_then(|f| f.get("id")).and_then(build::id_string) {
            e.sender = Some(Sender { id, username: get(value, "from").and_then(|f| build::opt_str(f, "username")), ..Sender::default() });
        }
        e
    }
}

/// One attachment as a message of its own.
fn attachment_message(id: String, attachment: &Value) -> Message {
    let payload = get(attachment, "payload").unwrap_or(&Value::Null);
    let kind = match attachment.get("type").and_then(Value::as_str).unwrap_or("") {
        "image" => MessageType::Image,
        "audio" => MessageType::Audio,
        "video" => MessageType::Video,
        "file" => MessageType::Document,
        "sticker" => MessageType::Sticker,
        "location" => MessageType::Location,
        _ => MessageType::Unsupported,
    };
    let mut m = Message::new(id, kind);
    if kind == MessageType::Location {
        let coords = get(payload, "coordinates").unwrap_or(&Value::Null);
        match (coords.get("lat").and_then(Value::as_f64), coords.get("long").and_then(Value::as_f64)) {
            (Some(latitude), Some(longitude)) => {
                m.location = Some(Location { latitude, longitude, name: None, address: None });
            }
            _ => m.kind = MessageType::Unsupported,
        }
        return m;
    }
    let media = Media {
        id: if kind == MessageType::Sticker { get(payload, "sticker_id").and_then(build::id_string) } else { None },
        url: build::opt_str(payload, "url").or_else(|| build::opt_str(attachment, "url")),
        ..Media::default()
    };
    if media != Media::default() {
        m.media = Some(media);
    }
    m
}

#[cfg(test)]
mod tests {
    use super::*;
    use hookline_shared::Source;

    fn run(source: Source, body: &str) -> Result<Vec<NormalizedEvent>, NormalizeError> {
        crate::build::test_normalize(source, body, None, None)
    }

    fn page(items: &str) -> String {
        format!(r#"{{"object":"page","entry":[{{"id":"1","time":1,"messaging":[{items}]}}]}}"#)
    }

    #[test]
    fn missing_parts_name_their_path() {
        let err = |b: &str| run(Source::Messenger, b).unwrap_err();
        assert_eq!(err(r#"{"entry":[]}"#), NormalizeError::MissingField("object".into()));
        assert_eq!(err(r#"{"object":"page"}"#), NormalizeError::MissingField("entry".into()));
        assert_eq!(err(r#"{"object":"page","entry":[{"id":"1"}]}"#), NormalizeError::MissingField("entry[0].messaging".into()));
        assert_eq!(
            err(&page(r#"{"sender":{"id":"u"},"message":{"text":"hi"}}"#)),
            NormalizeError::MissingField("entry[0].messaging[0].message.mid".into())
        );
        assert_eq!(
            err(&page(r#"{"message":{"mid":"m","text":"hi"}}"#)),
            NormalizeError::MissingField("entry[0].messaging[0].sender.id".into())
        );
        assert_eq!(
            err(&page(r#"{"sender":{"id":"u"},"read":{"mid":"m"}}"#)),
            NormalizeError::MissingField("entry[0].messaging[0].read.watermark".into())
        );
        assert_eq!(
            err(&page(r#"{"sender":{"id":"u"},"delivery":{"mids":[]}}"#)),
            NormalizeError::MissingField("entry[0].messaging[0].delivery.watermark".into())
        );
        assert_eq!(err(r#"{"object":"instagram","entry":[]}"#).code(), "unsupported_payload");
        assert_eq!(err(r#"{"object":"page","entry":{}}"#).code(), "invalid_field");
        assert_eq!(err("[1]").code(), "missing_field");
        assert_eq!(err("{").code(), "invalid_json");
    }

    #[test]
    fn unknown_items_and_attachments_are_kept() {
        let events = run(
            Source::Messenger,
            &page(concat!(
                r#"{"sender":{"id":"u"},"recipient":{"id":"p"},"timestamp":5,"optin":{"ref":"x"}},"#,
                r#"{"sender":{"user_ref":"r"},"recipient":{"id":"p"},"timestamp":6,"optin":{"type":"one_time_notif_req"}},"#,
                r#"{"sender":{"id":"u"},"timestamp":7,"message":{"mid":"m1","attachments":[{"type":"fallback","payload":null,"url":"https://x"},{"type":"location","payload":{"coordinates":{"lat":1.5,"long":-2}}}]}},"#,
                r#"{"sender":{"id":"u"},"timestamp":8,"message":{"mid":"m2"}}"#
            )),
        )
        .unwrap();
        assert_eq!(events.len(), 5);
        assert_eq!(events[0].kind, EventKind::Other);
        assert_eq!(events[0].conversation.as_ref().map(|c| c.id.as_str()), Some("u"));
        assert_eq!(events[1].kind, EventKind::Other);
        assert!(events[1].sender.is_none());
        assert_ne!(events[0].id, events[1].id);
        let m = events[2].message.as_ref().unwrap();
        assert_eq!((m.id.as_str(), m.kind), ("m1", MessageType::Unsupported));
        assert_eq!(m.media.as_ref().and_then(|x| x.url.as_deref()), Some("https://x"));
        let m = events[3].message.as_ref().unwrap();
        assert_eq!((m.id.as_str(), m.kind), ("m1:1", MessageType::Location));
        assert_eq!(m.location.as_ref().map(|l| (l.latitude, l.longitude)), Some((1.5, -2.0)));
        let m = events[4].message.as_ref().unwrap();
        assert_eq!(m.kind, MessageType::Unsupported);
    }

    #[test]
    fn watermark_receipts_of_different_users_differ() {
        let events = run(
            Source::Messenger,
            &page(concat!(
                r#"{"sender":{"id":"u1"},"timestamp":9,"read":{"watermark":5}},"#,
                r#"{"sender":{"id":"u2"},"timestamp":9,"read":{"watermark":5}},"#,
                r#"{"sender":{"id":"u2"},"delivery":{"watermark":5}}"#
            )),
        )
        .unwrap();
        assert_eq!(events.len(), 3);
        assert_ne!(events[0].id, events[1].id);
        assert_ne!(events[1].id, events[2].id);
        assert!(events[2].occurred_at.is_none());
        assert_eq!(events[2].status.as_ref().map(|s| s.message_id.as_str()), Some("watermark:5"));
    }
}

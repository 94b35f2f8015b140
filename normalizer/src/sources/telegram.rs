//! Telegram Bot API webhooks: one JSON [`Update`](https://core.telegram.org/bots/api#update)
//! per request (<https://core.telegram.org/bots/api#setwebhook>).
//!
//! * `message`, `edited_message`, `channel_post`, `edited_channel_post` carry a
//!   [`Message`](https://core.telegram.org/bots/api#message) and become kind `message`, with
//!   `message.id` = `"{chat_id}:{message_id}"` (Telegram message ids are unique only inside a
//!   chat). An edit keeps the id of the message it edits, has `edited: true`, and its platform id
//!   is `"{chat_id}:{message_id}:edited:{edit_date}"` so every edit is its own event.
//! * `callback_query` (an inline keyboard button was pressed) becomes a message of type
//!   `interactive` whose id is the callback query's id.
//! * Any other update (`my_chat_member`, `poll`, `message_reaction`, ...) becomes kind `other`
//!   with platform id `"update:{update_id}"`.

use serde_json::{Map, Value};

use hookline_shared::event::{
    Contact, Conversation, ConversationType, EventKind, Interactive, Location, Media, Message, MessageType, NormalizedEvent, Sender,
};

use crate::{build, NormalizeError, RawInput};

/// The update fields that hold a `Message`, with whether they are edits.
const MESSAGE_FIELDS: [(&str, bool); 4] =
    [("message", false), ("edited_message", true), ("channel_post", false), ("edited_channel_post", true)];

pub fn parse(input: &RawInput<'_>) -> Result<Vec<NormalizedEvent>, NormalizeError> {
    let update = build::json(input.body)?;
    let obj = update.as_object().ok_or_else(|| NormalizeError::UnsupportedPayload("a Telegram update is a JSON object".into()))?;
    let update_id = build::id_field(&update, "update_id", "update_id")?;
    let platform = build::channel_platform(input);

    for (key, edited) in MESSAGE_FIELDS {
        if let Some(msg) = obj.get(key).filter(|v| !v.is_null()) {
            return Ok(vec![message_event(input, &platform, key, msg, edited)?]);
        }
    }
    if let Some(cq) = obj.get("callback_query").filter(|v| !v.is_null()) {
        if let Some(event) = callback_event(input, &platform, cq)? {
            return Ok(vec![event]);
        }
    }
    Ok(vec![other_event(input, &platform, obj, &update_id)])
}

/// Kind `message` from one `Message` object found under `key`.
fn message_event(input: &RawInput<'_>, platform: &str, key: &str, msg: &Value, edited: bool) -> Result<NormalizedEvent, NormalizeError> {
    if !msg.is_object() {
        return Err(NormalizeError::InvalidField { field: key.to_string(), detail: "expected a Message object".into() });
    }
    let chat = build::field(msg, "chat", &format!("{key}.chat"))?;
    let chat_id = build::id_field(chat, "id", &format!("{key}.chat.id"))?;
    let conversation = conversation(chat, &chat_id, &format!("{key}.chat.type"))?;
    let message_id = build::id_field(msg, "message_id", &format!("{key}.message_id"))?;
    let id = format!("{chat_id}:{message_id}");

    let (platform_id, occurred_at) = if edited {
        let edit_date = msg.get("edit_date").filter(|v| !v.is_null());
        let suffix = edit_date.and_then(build::id_string).unwrap_or_default();
        (
            format!("{id}:edited:{suffix}"),
            edit_date.and_then(build::from_unix_seconds).or_else(|| msg.get("date").and_then(build::from_unix_seconds)),
        )
    } else {
        (id.clone(), msg.get("date").and_then(build::from_unix_seconds))
    };

    let mut message = content(msg, &id);
    message.edited = edited;
    // `reply_to_message` is always in the same chat (replies to other chats come as
    // `external_reply`), so its id is built with this message's chat id.
    message.reply_to = msg
        .get("reply_to_message")
        .and_then(|r| r.get("message_id"))
        .and_then(build::id_string)
        .map(|reply_id| format!("{chat_id}:{reply_id}"));

    let mut event = build::event(input, EventKind::Message, &platform_id, platform);
    event.occurred_at = occurred_at;
    event.conversation = Some(conversation);
    event.sender = msg.get("sender_chat").and_then(chat_sender).or_else(|| msg.get("from").and_then(user_sender));
    event.message = Some(message);
    Ok(event)
}

/// The type, text and content parts of a `Message`.
fn content(msg: &Value, id: &str) -> Message {
    let text = build::opt_str(msg, "text").or_else(|| build::opt_str(msg, "caption"));
    let file = |v: &Value, with_name: bool| Media {
        id: build::opt_str(v, "file_id"),
        mime_type: build::opt_str(v, "mime_type"),
        filename: if with_name { build::opt_str(v, "file_name") } else { None },
        ..Media::default()
    };
    let get = |k: &str| msg.get(k).filter(|v| v.is_object());

    let mut media = None;
    let mut location = None;
    let mut contacts = None;
    let kind = if let Some(sizes) = msg.get("photo").and_then(Value::as_array) {
        media = largest_photo(sizes).map(|p| file(p, false));
        MessageType::Image
    } else if let Some(v) = get("animation") {
        // GIFs and silent videos; Telegram also sets `document` on these for old clients.
        media = Some(file(v, true));
        MessageType::Video
    } else if let Some(v) = get("document") {
        media = Some(file(v, true));
        MessageType::Document
    } else if let Some(v) = get("audio") {
        media = Some(file(v, true));
        MessageType::Audio
    } else if let Some(v) = get("voice") {
        media = Some(file(v, false));
        MessageType::Audio
    } else if let Some(v) = get("video") {
        media = Some(file(v, true));
        MessageType::Video
    } else if let Some(v) = get("video_note") {
        media = Some(file(v, false));
        MessageType::Video
    } else if let Some(v) = get("sticker") {
        media = Some(file(v, false));
        MessageType::Sticker
    } else if let Some(venue) = get("venue") {
        location = venue.get("location").and_then(coordinates).map(|mut l| {
            l.name = build::opt_str(venue, "title");
            l.address = build::opt_str(venue, "address");
            l
        });
        if location.is_some() {
            MessageType::Location
        } else {
            MessageType::Unsupported
        }
    } else if let Some(v) = get("location") {
        location = coordinates(v);
        if location.is_some() {
            MessageType::Location
        } else {
            MessageType::Unsupported
        }
    } else if let Some(c) = get("contact") {
        let name = full_name(c);
        let phones: Vec<String> = build::opt_str(c, "phone_number").into_iter().collect();
        contacts = Some(vec![Contact { name, phones, emails: Vec::new() }]);
        MessageType::Contacts
    } else if msg.get("text").and_then(Value::as_str).is_some() {
        MessageType::Text
    } else {
        // Polls, dice, games, service messages (members joined, pinned, ...).
        MessageType::Unsupported
    };

    let mut message = Message::new(id, kind);
    message.text = text;
    message.media = media.filter(|m| *m != Media::default());
    message.location = location;
    message.contacts = contacts;
    message
}

/// The largest `PhotoSize` (by pixels, then file size; the later one on a tie, as Telegram
/// lists sizes from small to large).
fn largest_photo(sizes: &[Value]) -> Option<&Value> {
    let area = |p: &Value| {
        let n = |k: &str| p.get(k).and_then(Value::as_u64).unwrap_or(0);
        (n("width").saturating_mul(n("height")), n("file_size"))
    };
    sizes.iter().filter(|p| p.is_object()).fold(None, |best: Option<&Value>, p| match best {
        Some(b) if area(b) > area(p) => Some(b),
        _ => Some(p),
    })
}

fn coordinates(v: &Value) -> Option<Location> {
    Some(Location {
        latitude: v.get("latitude").and_then(Value::as_f64)?,
        longitude: v.get("longitude").and_then(Value::as_f64)?,
        name: None,
        address: None,
    })
}

/// `first_name` + `" "` + `last_name` (when present).
fn full_name(v: &Value) -> Option<String> {
    match (build::opt_str(v, "first_name"), build::opt_str(v, "last_name")) {
        (Some(f), Some(l)) => Some(format!("{f} {l}")),
        (Some(f), None) => Some(f),
        (None, Some(l)) => Some(l),
        (None, None) => None,
    }
}

/// A `User` as sender.
fn user_sender(user: &Value) -> Option<Sender> {
    Some(Sender {
        id: user.get("id").and_then(build::id_string)?,
        name: full_name(user),
        phone: None,
        username: build::opt_str(user, "username"),
    })
}

/// A `Chat` as sender (`sender_chat`: channel posts and messages sent on behalf of a chat).
fn chat_sender(chat: &Value) -> Option<Sender> {
    Some(Sender {
        id: chat.get("id").and_then(build::id_string)?,
        name: build::opt_str(chat, "title").or_else(|| full_name(chat)),
        phone: None,
        username: build::opt_str(chat, "username"),
    })
}

fn conversation(chat: &Value, chat_id: &str, path: &str) -> Result<Conversation, NormalizeError> {
    let kind = match chat.get("type").and_then(Value::as_str) {
        Some("private") => ConversationType::Direct,
        Some("group" | "supergroup") => ConversationType::Group,
        Some("channel") => ConversationType::Channel,
        Some(other) => {
            return Err(NormalizeError::InvalidField { field: path.to_string(), detail: format!("unknown chat type {other:?}") })
        }
        None => return Err(NormalizeError::MissingField(path.to_string())),
    };
    Ok(Conversation { id: chat_id.to_string(), kind })
}

/// A `CallbackQuery` with `data` as an interactive message; `None` for one without `data`
/// (game callbacks), which becomes kind `other`.
fn callback_event(input: &RawInput<'_>, platform: &str, cq: &Value) -> Result<Option<NormalizedEvent>, NormalizeError> {
    let id = build::id_field(cq, "id", "callback_query.id")?;
    let Some(data) = build::opt_str(cq, "data") else {
        return Ok(None);
    };
    let from = build::field(cq, "from", "callback_query.from")?;
    let sender = user_sender(from).ok_or_else(|| NormalizeError::MissingField("callback_query.from.id".into()))?;

    // The message the keyboard is attached to: absent for inline-mode messages (only
    // `inline_message_id`), and possibly an InaccessibleMessage (chat, message_id, date 0).
    let attached = cq.get("message").filter(|m| m.is_object());
    let mut reply_to = None;
    let mut title = None;
    let conversation = match attached {
        Some(m) => {
            let chat = build::field(m, "chat", "callback_query.message.chat")?;
            let chat_id = build::id_field(chat, "id", "callback_query.message.chat.id")?;
            reply_to = m.get("message_id").and_then(build::id_string).map(|mid| format!("{chat_id}:{mid}"));
            title = button_text(m, &data);
            conversation(chat, &chat_id, "callback_query.message.chat.type")?
        }
        // No chat is known: the user who pressed the button is the conversation.
        None => Conversation { id: sender.id.clone(), kind: ConversationType::Direct },
    };

    let mut message = Message::new(id.clone(), MessageType::Interactive);
    message.interactive = Some(Interactive { title: title.unwrap_or_else(|| data.clone()), reply_id: data });
    message.reply_to = reply_to;

    // A callback query carries no time of its own (the attached message's `date` is when that
    // message was sent), so occurred_at stays absent.
    let mut event = build::event(input, EventKind::Message, &id, platform);
    event.conversation = Some(conversation);
    event.sender = Some(sender);
    event.message = Some(message);
    Ok(Some(event))
}

/// The text of the inline keyboard button whose `callback_data` is `data`.
fn button_text(msg: &Value, data: &str) -> Option<String> {
    msg.get("reply_markup")?
        .get("inline_keyboard")?
        .as_array()?
        .iter()
        .filter_map(Value::as_array)
        .flatten()
        .find(|b| b.get("callback_data").and_then(Value::as_str) == Some(data))
        .and_then(|b| build::opt_str(b, "text"))
}

/// Kind `other` for an update this module does not map; conversation, sender and time are
/// filled when the update's object carries `chat`, `from`/`user` and `date`.
fn other_event(input: &RawInput<'_>, platform: &str, update: &Map<String, Value>, update_id: &str) -> NormalizedEvent {
    let mut event = build::event(input, EventKind::Other, &format!("update:{update_id}"), platform);
    let inner = update.iter().filter(|(k, _)| k.as_str() != "update_id").map(|(_, v)| v).find(|v| v.is_object());
    if let Some(inner) = inner {
        event.occurred_at = inner.get("date").and_then(build::from_unix_seconds);
        event.conversation = inner.get("chat").and_then(|chat| {
            let id = chat.get("id").and_then(build::id_string)?;
            conversation(chat, &id, "chat.type").ok()
        });
        event.sender = inner.get("from").or_else(|| inner.get("user")).and_then(user_sender);
    }
    event
}

#[cfg(test)]
mod tests {
    use super::*;
    use hookline_shared::Source;

    fn run(body: &str) -> Result<Vec<NormalizedEvent>, NormalizeError> {
        crate::build::test_normalize(Source::Telegram, body, None, None)
    }

    #[test]
    fn errors_have_the_right_codes() {
        let code = |b: &str| run(b).err().map(|e| e.code());
        assert_eq!(code("{}"), Some("missing_field"));
        assert_eq!(code("[1]"), Some("unsupported_payload"));
        assert_eq!(code("{"), Some("invalid_json"));
        assert_eq!(code(r#"{"update_id":1,"message":{"message_id":1,"date":1}}"#), Some("missing_field"));
        assert_eq!(code(r#"{"update_id":1,"message":{"message_id":1,"chat":{"id":5}}}"#), Some("missing_field"));
        assert_eq!(code(r#"{"update_id":1,"message":7}"#), Some("invalid_field"));
    }

    #[test]
    fn other_updates_become_other() {
        let events =
            run(r#"{"update_id":7,"my_chat_member":{"chat":{"id":-5,"type":"group"},"from":{"id":9,"first_name":"A"},"date":1441645532}}"#)
                .expect("parses");
        assert_eq!(events.len(), 1);
        assert_eq!(events[0].kind, EventKind::Other);
        assert_eq!(events[0].conversation.as_ref().map(|c| c.id.as_str()), Some("-5"));
        assert_eq!(events[0].sender.as_ref().map(|s| s.id.as_str()), Some("9"));
        let bare = run(r#"{"update_id":8}"#).expect("parses");
        assert_eq!(bare[0].kind, EventKind::Other);
    }

    #[test]
    fn callback_title_comes_from_the_button_and_venue_is_a_location() {
        let events = run(r#"{"update_id":1,"callback_query":{"id":"77","from":{"id":9,"first_name":"A"},"data":"b2",
            "message":{"message_id":4,"date":1,"chat":{"id":9,"type":"private"},
            "reply_markup":{"inline_keyboard":[[{"text":"One","callback_data":"b1"},{"text":"Two","callback_data":"b2"}]]}}}}"#)
        .expect("parses");
        let m = events[0].message.as_ref().expect("message");
        assert_eq!(m.id, "77");
        assert_eq!(m.reply_to.as_deref(), Some("9:4"));
        assert_eq!(m.interactive.as_ref().map(|i| (i.reply_id.as_str(), i.title.as_str())), Some(("b2", "Two")));

        let events = run(r#"{"update_id":1,"message":{"message_id":3,"date":1,"chat":{"id":9,"type":"private"},
            "location":{"latitude":1.5,"longitude":2.5},
            "venue":{"location":{"latitude":1.5,"longitude":2.5},"title":"Cafe","address":"Main St 1"}}}"#)
        .expect("parses");
        let m = events[0].message.as_ref().expect("message");
        assert_eq!(m.kind, MessageType::Location);
        let l = m.location.as_ref().expect("location");
        assert_eq!((l.name.as_deref(), l.address.as_deref()), (Some("Cafe"), Some("Main St 1")));
    }
}

//! Twilio Programmable Messaging webhooks (SMS, MMS and WhatsApp), sent as
//! `application/x-www-form-urlencoded` parameters:
//! * incoming messages: <https://www.twilio.com/docs/messaging/guides/webhook-request>;
//! * status callbacks of outbound messages:
//!   <https://www.twilio.com/docs/messaging/guides/track-outbound-message-status>.
//!
//! An incoming message becomes one kind `message` event per media item (`MediaUrl{N}`), the
//! first keeping the body and the id `MessageSid`, the others with id `"{MessageSid}:{N}"`.
//! A status callback (`MessageStatus` other than `received`) becomes kind `status` for
//! `sent`/`delivered`/`read`/`failed`/`undelivered`, kind `other` for any other status.
//! Channel addresses `whatsapp:+E164` set the platform `whatsapp` (else `sms`) and lose their
//! prefix in ids. Twilio sends no event time, so `occurred_at` is always absent.

use std::collections::BTreeMap;

use hookline_shared::event::{
    Conversation, ConversationType, DeliveryState, EventKind, Interactive, Location, Media, Message, MessageType, NormalizedEvent, Sender,
    Status, StatusError,
};

use crate::{build, NormalizeError, RawInput};

const WHATSAPP_PREFIX: &str = "whatsapp:";

/// The parameters of one request; the first value wins when a name repeats.
struct Params(BTreeMap<String, String>);

impl Params {
    /// A non-empty parameter.
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).map(String::as_str).filter(|s| !s.is_empty())
    }

    fn required(&self, key: &str) -> Result<&str, NormalizeError> {
        self.get(key).ok_or_else(|| NormalizeError::MissingField(key.to_string()))
    }
}

pub fn parse(input: &RawInput<'_>) -> Result<Vec<NormalizedEvent>, NormalizeError> {
    let params = params(input)?;
    let sid = match params.get("MessageSid").or_else(|| params.get("SmsSid")) {
        Some(sid) => sid.to_string(),
        None if params.get("CallSid").is_some() => {
            return Err(NormalizeError::UnsupportedPayload("a Twilio Voice webhook (CallSid), not Messaging".into()))
        }
        None => return Err(NormalizeError::MissingField("MessageSid".into())),
    };
    let status = params.get("MessageStatus").or_else(|| params.get("SmsStatus"));
    match status {
        Some(s) if s != "received" => Ok(vec![status_event(input, &params, &sid, s)]),
        _ => incoming(input, &params, &sid),
    }
}

/// The form parameters: the body, or the query string when Twilio is configured to use `GET`.
fn params(input: &RawInput<'_>) -> Result<Params, NormalizeError> {
    if let Some(ct) = input.content_type {
        let essence = ct.split(';').next().unwrap_or_default().trim().to_ascii_lowercase();
        if !essence.is_empty() && essence != "application/x-www-form-urlencoded" {
            return Err(NormalizeError::InvalidForm(format!("content type {essence:?}, expected application/x-www-form-urlencoded")));
        }
    }
    let body = std::str::from_utf8(input.body).map_err(|_| NormalizeError::InvalidForm("the body is not UTF-8".into()))?.trim();
    let text = if body.is_empty() { input.query.unwrap_or_default().trim() } else { body };
    if text.starts_with('{') || text.starts_with('[') {
        return Err(NormalizeError::InvalidForm("the body looks like JSON, not form parameters".into()));
    }
    if text.is_empty() {
        return Err(NormalizeError::InvalidForm("no parameters".into()));
    }
    let mut map = BTreeMap::new();
    for (k, v) in form_urlencoded::parse(text.as_bytes()) {
        map.entry(k.into_owned()).or_insert_with(|| v.into_owned());
    }
    Ok(Params(map))
}

/// An address without its `whatsapp:` prefix, and whether it had one.
fn address(raw: &str) -> (&str, bool) {
    match raw.strip_prefix(WHATSAPP_PREFIX) {
        Some(rest) => (rest, true),
        None => (raw, false),
    }
}

fn platform(whatsapp: bool) -> &'static str {
    if whatsapp {
        "whatsapp"
    } else {
        "sms"
    }
}

/// Kind `status` (or `other` for statuses without a delivery state) from a status callback.
fn status_event(input: &RawInput<'_>, params: &Params, sid: &str, status: &str) -> NormalizedEvent {
    let to = params.get("To").map(address);
    let from = params.get("From").map(address);
    let whatsapp = to.is_some_and(|(_, w)| w) || from.is_some_and(|(_, w)| w);
    let platform = platform(whatsapp);
    let recipient = to.map(|(a, _)| a.to_string());
    let conversation = recipient.clone().map(|id| Conversation { id, kind: ConversationType::Direct });

    let state = match status {
        "sent" => Some(DeliveryState::Sent),
        "delivered" => Some(DeliveryState::Delivered),
        "read" => Some(DeliveryState::Read),
        "failed" | "undelivered" => Some(DeliveryState::Failed),
        _ => None,
    };
    let Some(state) = state else {
        // queued, sending, accepted, scheduled, canceled, partially_delivered, ...
        let mut event = build::event(input, EventKind::Other, &format!("{sid}:{status}"), platform);
        event.conversation = conversation;
        return event;
    };

    let error = if state == DeliveryState::Failed {
        params
            .get("ErrorCode")
            .map(|code| StatusError { code: code.to_string(), title: params.get("ErrorMessage").unwrap_or(status).to_string() })
    } else {
        None
    };
    let mut event = build::event(input, EventKind::Status, &format!("{sid}:{}", state.as_str()), platform);
    event.conversation = conversation;
    event.status = Some(Status { message_id: sid.to_string(), state, recipient_id: recipient, error });
    event
}

/// Kind `message` events of an incoming message: one per media item, at least one.
fn incoming(input: &RawInput<'_>, params: &Params, sid: &str) -> Result<Vec<NormalizedEvent>, NormalizeError> {
    let (from, whatsapp) = address(params.required("From")?);
    let platform = platform(whatsapp);
    let sender =
        Sender { id: from.to_string(), name: params.get("ProfileName").map(str::to_string), phone: Some(from.to_string()), username: None };
    let conversation = Conversation { id: from.to_string(), kind: ConversationType::Direct };
    let text = params.get("Body").map(str::to_string);
    let reply_to = params.get("OriginalRepliedMessageSid").map(str::to_string);

    let mut messages = Vec::new();
    for (n, media) in media_items(params).into_iter().enumerate() {
        let kind = media_type(media.mime_type.as_deref());
        let id = if n == 0 { sid.to_string() } else { format!("{sid}:{n}") };
        let mut m = Message::new(id, kind);
        if n == 0 {
            m.text = text.clone();
        }
        m.media = Some(media);
        messages.push(m);
    }
    if messages.is_empty() {
        let mut m = Message::new(sid, MessageType::Text);
        let lat = params.get("Latitude").and_then(|s| s.trim().parse::<f64>().ok());
        let lon = params.get("Longitude").and_then(|s| s.trim().parse::<f64>().ok());
        let button_payload = params.get("ButtonPayload");
        let button_text = params.get("ButtonText");
        if let (Some(latitude), Some(longitude)) = (lat, lon) {
            m.kind = MessageType::Location;
            m.location = Some(Location {
                latitude,
                longitude,
                name: params.get("Label").map(str::to_string),
                address: params.get("Address").map(str::to_string),
            });
        } else if let Some(reply) = button_payload.or(button_text) {
            m.kind = MessageType::Button;
            m.interactive = Some(Interactive { reply_id: reply.to_string(), title: button_text.unwrap_or(reply).to_string() });
        } else if text.is_none() {
            m.kind = MessageType::Unsupported;
        }
        m.text = text;
        messages.push(m);
    }

    Ok(messages
        .into_iter()
        .map(|mut m| {
            m.reply_to = reply_to.clone();
            let mut event = build::event(input, EventKind::Message, &m.id, platform);
            event.conversation = Some(conversation.clone());
            event.sender = Some(sender.clone());
            event.message = Some(m);
            event
        })
        .collect())
}

/// `MediaUrl{N}` / `MediaContentType{N}` in the order of N.
fn media_items(params: &Params) -> Vec<Media> {
    let mut items: Vec<(u32, &str)> = params
        .0
        .iter()
        .filter_map(|(k, v)| {
            let n = k.strip_prefix("MediaUrl")?.parse::<u32>().ok()?;
            Some((n, v.as_str())).filter(|(_, v)| !v.is_empty())
        })
        .collect();
    items.sort_unstable_by_key(|(n, _)| *n);
    items
        .into_iter()
        .map(|(n, url)| Media {
            id: media_sid(url),
            url: Some(url.to_string()),
            mime_type: params.get(&format!("MediaContentType{n}")).map(str::to_string),
            ..Media::default()
        })
        .collect()
}

/// The Media SID (`ME…`) that ends a Twilio media URL (`…/Messages/{sid}/Media/{ME…}`).
fn media_sid(url: &str) -> Option<String> {
    let path = url.split(['?', '#']).next()?.trim_end_matches('/');
    let (rest, last) = path.rsplit_once('/')?;
    (rest.ends_with("/Media") && last.starts_with("ME")).then(|| last.to_string())
}

fn media_type(mime: Option<&str>) -> MessageType {
    let mime = mime.unwrap_or_default().to_ascii_lowercase();
    if mime.starts_with("image/") {
        MessageType::Image
    } else if mime.starts_with("audio/") {
        MessageType::Audio
    } else if mime.starts_with("video/") {
        MessageType::Video
    } else {
        MessageType::Document
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hookline_shared::Source;

    fn run(body: &str, ct: Option<&str>) -> Result<Vec<NormalizedEvent>, NormalizeError> {
        crate::build::test_normalize(Source::Twilio, body, ct, None)
    }

    #[test]
    fn errors_have_the_right_codes() {
        let code = |b: &str, ct| run(b, ct).err().map(|e| e.code());
        assert_eq!(code(r#"{"MessageSid":"SM1"}"#, None), Some("invalid_form"));
        assert_eq!(code("MessageSid=SM1&From=x", Some("application/json")), Some("invalid_form"));
        assert_eq!(code("", None), Some("invalid_form"));
        assert_eq!(code("Body=hi&From=%2B1", None), Some("missing_field"));
        assert_eq!(code("MessageSid=SM1&Body=hi", None), Some("missing_field"));
        assert_eq!(code("CallSid=CA1&From=%2B1", None), Some("unsupported_payload"));
    }

    #[test]
    fn whatsapp_location_button_and_other_statuses() {
        let e = run(
            "MessageSid=SM1&From=whatsapp%3A%2B1555&To=whatsapp%3A%2B1666&Latitude=1.5&Longitude=-2.25&Address=Main+St&Label=Cafe",
            None,
        )
        .expect("parses");
        assert_eq!(e[0].platform, "whatsapp");
        let m = e[0].message.as_ref().expect("message");
        assert_eq!(m.kind, MessageType::Location);
        assert_eq!(m.location.as_ref().and_then(|l| l.name.as_deref()), Some("Cafe"));
        assert_eq!(e[0].sender.as_ref().map(|s| s.id.as_str()), Some("+1555"));

        let e =
            run("MessageSid=SM2&From=whatsapp%3A%2B1555&Body=Yes&ButtonText=Yes&ButtonPayload=yes-1&OriginalRepliedMessageSid=SM0", None)
                .expect("parses");
        let m = e[0].message.as_ref().expect("message");
        assert_eq!(m.kind, MessageType::Button);
        assert_eq!(m.reply_to.as_deref(), Some("SM0"));
        assert_eq!(m.interactive.as_ref().map(|i| (i.reply_id.as_str(), i.title.as_str())), Some(("yes-1", "Yes")));

        let e = run("MessageSid=SM3&MessageStatus=queued&To=%2B1777", None).expect("parses");
        assert_eq!(e[0].kind, EventKind::Other);
        assert_eq!(e[0].conversation.as_ref().map(|c| c.id.as_str()), Some("+1777"));
    }
}

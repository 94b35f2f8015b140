//! `NormalizedEvent`, schema version 1: the one event every platform's payload becomes.
//! Optional parts are omitted when absent, never guessed; every id is a string.
//! The JSON Schema in `schema/normalized-event.v1.json` is generated from these types.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::Source;

pub const SCHEMA_VERSION: u8 = 1;

fn is_false(b: &bool) -> bool {
    !*b
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum EventKind {
    Message,
    Status,
    Payment,
    ChatEvent,
    Other,
}

impl EventKind {
    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::Message => "message",
            EventKind::Status => "status",
            EventKind::Payment => "payment",
            EventKind::ChatEvent => "chat_event",
            EventKind::Other => "other",
        }
    }
}

/// One normalized event.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[schemars(title = "NormalizedEvent", description = "hookline's standard event, schema version 1")]
pub struct NormalizedEvent {
    /// Deterministic: a hash of source, channel, kind and the platform's own id.
    pub id: String,
    #[schemars(range(min = 1, max = 1))]
    pub schema_version: u8,
    pub kind: EventKind,
    pub source: Source,
    pub platform: String,
    pub provider: String,
    /// From the channel configuration; empty for `hookline normalize` without a channel.
    pub tenant_id: String,
    pub channel_id: String,
    /// The platform's timestamp, RFC 3339 UTC. Omitted when the payload carries none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("format" = "date-time"))]
    pub occurred_at: Option<String>,
    /// When ingest accepted the webhook, RFC 3339 UTC.
    #[schemars(extend("format" = "date-time"))]
    pub received_at: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub conversation: Option<Conversation>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sender: Option<Sender>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<Message>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<Status>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub payment: Option<Payment>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub chat_event: Option<ChatEvent>,
    /// Where the raw webhook lies in HOOKLINE_RAW.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub raw: Option<RawRef>,
    /// Present (true) only for events produced by a replay.
    #[serde(default, skip_serializing_if = "is_false")]
    pub replay: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum ConversationType {
    Direct,
    Group,
    Channel,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct Conversation {
    pub id: String,
    #[serde(rename = "type")]
    pub kind: ConversationType,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, JsonSchema)]
pub struct Sender {
    pub id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phone: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum MessageType {
    Text,
    Image,
    Audio,
    Video,
    Document,
    Sticker,
    Location,
    Contacts,
    Interactive,
    Button,
    Reaction,
    Unsupported,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct Message {
    pub id: String,
    #[serde(rename = "type")]
    pub kind: MessageType,
    /// The body, or the media's caption.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub text: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub media: Option<Media>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub location: Option<Location>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub contacts: Option<Vec<Contact>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interactive: Option<Interactive>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reaction: Option<Reaction>,
    /// The id of the message this one replies to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reply_to: Option<String>,
    /// Present (true) only when the message is an edit of an earlier one.
    #[serde(default, skip_serializing_if = "is_false")]
    pub edited: bool,
    /// Present (true) only for messages the business itself sent (Messenger/Instagram echoes),
    /// so the messaging service can skip them.
    #[serde(default, skip_serializing_if = "is_false")]
    pub echo: bool,
}

impl Message {
    /// A message with only its id and type; the other parts start absent.
    pub fn new(id: impl Into<String>, kind: MessageType) -> Self {
        Message {
            id: id.into(),
            kind,
            text: None,
            media: None,
            location: None,
            contacts: None,
            interactive: None,
            reaction: None,
            reply_to: None,
            edited: false,
            echo: false,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, JsonSchema)]
pub struct Media {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mime_type: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub filename: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sha256: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct Location {
    pub latitude: f64,
    pub longitude: f64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub address: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, JsonSchema)]
pub struct Contact {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub phones: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub emails: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct Interactive {
    pub reply_id: String,
    pub title: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct Reaction {
    pub message_id: String,
    /// Omitted when the reaction was removed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub emoji: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum DeliveryState {
    Sent,
    Delivered,
    Read,
    Failed,
}

impl DeliveryState {
    pub fn as_str(self) -> &'static str {
        match self {
            DeliveryState::Sent => "sent",
            DeliveryState::Delivered => "delivered",
            DeliveryState::Read => "read",
            DeliveryState::Failed => "failed",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct StatusError {
    pub code: String,
    pub title: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct Status {
    pub message_id: String,
    pub state: DeliveryState,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recipient_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<StatusError>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct Payment {
    pub id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub action: Option<String>,
    #[serde(rename = "type", default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct ChatEvent {
    /// e.g. `chat_start`, `chat_end`, `ticket_create`.
    #[serde(rename = "type")]
    pub kind: String,
    /// Further fields of the platform's event (transcript, ticket subject, ...).
    #[serde(flatten)]
    pub details: serde_json::Map<String, serde_json::Value>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct RawRef {
    pub subject: String,
    /// The raw webhook's sequence in `HOOKLINE_RAW`: the order in which ingest stored it.
    pub seq: u64,
    /// This event's position among the events of its webhook (0-based, the payload's order).
    /// With `seq`, the order a destination with `ordering = "conversation"` keeps: a consumer
    /// can check that `(seq, index)` grows within a conversation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub index: Option<u32>,
}

/// `evt_` + 32 hex of SHA-256(source, channel, kind, platform id): the same platform event
/// always gets the same id, so duplicates carry the same id.
pub fn event_id(source: Source, channel_id: &str, kind: EventKind, platform_id: &str) -> String {
    let digest = Sha256::new()
        .chain_update(source.as_str())
        .chain_update([0])
        .chain_update(channel_id)
        .chain_update([0])
        .chain_update(kind.as_str())
        .chain_update([0])
        .chain_update(platform_id)
        .finalize();
    format!("evt_{}", hex::encode(&digest[..16]))
}

/// The JSON Schema of `NormalizedEvent`, as committed in `schema/normalized-event.v1.json`.
pub fn json_schema() -> serde_json::Value {
    serde_json::to_value(schemars::schema_for!(NormalizedEvent)).unwrap_or(serde_json::Value::Null)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_deterministic_and_distinguish_every_part() {
        let a = event_id(Source::Whatsapp, "ch", EventKind::Message, "wamid.1");
        assert_eq!(a, event_id(Source::Whatsapp, "ch", EventKind::Message, "wamid.1"));
        assert_ne!(a, event_id(Source::Dialog360, "ch", EventKind::Message, "wamid.1"));
        assert_ne!(a, event_id(Source::Whatsapp, "ch2", EventKind::Message, "wamid.1"));
        assert_ne!(a, event_id(Source::Whatsapp, "ch", EventKind::Status, "wamid.1"));
        assert_ne!(a, event_id(Source::Whatsapp, "ch", EventKind::Message, "wamid.2"));
        assert!(a.starts_with("evt_") && a.len() == 36);
    }

    #[test]
    fn absent_parts_are_omitted() {
        let e = NormalizedEvent {
            id: "evt_1".into(),
            schema_version: SCHEMA_VERSION,
            kind: EventKind::Message,
            source: Source::Telegram,
            platform: "telegram".into(),
            provider: "telegram".into(),
            tenant_id: String::new(),
            channel_id: String::new(),
            occurred_at: None,
            received_at: "2026-01-01T00:00:00Z".into(),
            conversation: None,
            sender: None,
            message: Some(Message::new("1", MessageType::Text)),
            status: None,
            payment: None,
            chat_event: None,
            raw: None,
            replay: false,
        };
        let json = serde_json::to_value(&e).expect("serialize");
        let mut keys: Vec<&str> = json.as_object().expect("object").keys().map(String::as_str).collect();
        keys.sort_unstable();
        assert_eq!(
            keys,
            ["channel_id", "id", "kind", "message", "platform", "provider", "received_at", "schema_version", "source", "tenant_id"]
        );
        assert_eq!(json["message"], serde_json::json!({"id": "1", "type": "text"}));
    }

    #[test]
    fn the_committed_schema_matches_the_types() {
        let committed = include_str!("../../schema/normalized-event.v1.json");
        let committed: serde_json::Value = serde_json::from_str(committed).expect("committed schema is JSON");
        let generated = json_schema();
        if committed != generated {
            let pretty = serde_json::to_string_pretty(&generated).unwrap_or_default();
            if std::env::var_os("HOOKLINE_BLESS").is_some() {
                let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../schema/normalized-event.v1.json");
                std::fs::write(path, pretty + "\n").expect("write schema");
            } else {
                panic!("schema/normalized-event.v1.json is out of date; regenerate it with HOOKLINE_BLESS=1 cargo test -p hookline-shared event\n{pretty}");
            }
        }
    }
}

//! Instagram messaging webhooks (`object: "instagram"`): the Messenger Platform's
//! `entry[].messaging[]` shape, parsed by `messenger::parse_messaging`; see `messenger.rs`
//! for the mapping of every item.
//! Docs: <https://developers.facebook.com/docs/instagram-platform/webhooks/examples> and
//! <https://developers.facebook.com/docs/instagram-messaging/webhooks>.
//!
//! What differs from Messenger:
//! * `entry[].id` is the Instagram professional account; the chat id is the Instagram-scoped id
//!   (IGSID) of the user: `sender.id` inbound, `recipient.id` for echoes.
//! * Read receipts (`messaging_seen`) name the message that was seen, `read: {mid}`, instead of a
//!   watermark, so the status's `message_id` is that mid (handled here, `read_mid`).
//! * Echoes come with the `messages` subscription (`message.is_echo: true`); there are no
//!   delivery events; `message.is_deleted: true` (the user unsent a message) and
//!   `message.is_unsupported: true` appear; attachment types include `share`, `story_mention`,
//!   `ig_reel`, `reel`, `ig_post` (all type `unsupported`, with `payload.url` kept as `media.url`).
//! * Apps on Facebook Login for Business receive comments and mentions as `entry[].changes[]`,
//!   apps on Business Login for Instagram as `entry[].field`/`value`: both become kind `other`.

use serde_json::Value;

use hookline_shared::event::NormalizedEvent;

use super::messenger::{parse_messaging, MetaMessaging, ReadTarget};
use crate::build;
use crate::{NormalizeError, RawInput};

/// Instagram: `object: "instagram"`, read receipts carry the message id.
pub(crate) const INSTAGRAM: MetaMessaging = MetaMessaging { object: "instagram", platform: "instagram", read_target: read_mid };

/// Instagram's `read: {mid}` (`messaging_seen`).
fn read_mid(read: &Value, path: &str) -> Result<ReadTarget, NormalizeError> {
    build::id_field(read, "mid", &format!("{path}.mid")).map(ReadTarget::Message)
}

pub fn parse(input: &RawInput<'_>) -> Result<Vec<NormalizedEvent>, NormalizeError> {
    parse_messaging(input, &INSTAGRAM)
}

#[cfg(test)]
mod tests {
    use super::*;
    use hookline_shared::event::{DeliveryState, EventKind};
    use hookline_shared::Source;

    fn run(body: &str) -> Result<Vec<NormalizedEvent>, NormalizeError> {
        crate::build::test_normalize(Source::Instagram, body, None, None)
    }

    fn ig(items: &str) -> String {
        format!(r#"{{"object":"instagram","entry":[{{"id":"1","time":1,"messaging":[{items}]}}]}}"#)
    }

    #[test]
    fn reads_name_the_message() {
        let events = run(&ig(r#"{"sender":{"id":"u"},"timestamp":2,"read":{"mid":"m1"}}"#)).unwrap();
        let status = events[0].status.as_ref().unwrap();
        assert_eq!((status.message_id.as_str(), status.state), ("m1", DeliveryState::Read));
        assert_eq!(events[0].platform, "instagram");
        assert_eq!(
            run(&ig(r#"{"sender":{"id":"u"},"read":{"watermark":5}}"#)).unwrap_err(),
            NormalizeError::MissingField("entry[0].messaging[0].read.mid".into())
        );
    }

    #[test]
    fn page_payloads_are_not_instagram() {
        assert_eq!(run(r#"{"object":"page","entry":[]}"#).unwrap_err(), NormalizeError::UnsupportedPayload("object \"page\"".into()));
    }

    #[test]
    fn deleted_messages_are_other_events() {
        let events =
            run(&ig(r#"{"sender":{"id":"u"},"recipient":{"id":"1"},"timestamp":2,"message":{"mid":"m1","is_deleted":true}}"#)).unwrap();
        assert_eq!(events.len(), 1);
        assert_eq!(events[0].kind, EventKind::Other);
        assert!(events[0].message.is_none());
    }
}

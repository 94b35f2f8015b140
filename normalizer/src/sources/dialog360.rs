//! dialog360: 360dialog's v2 webhook, a relay of the WhatsApp Cloud API webhook body
//! (`object: "whatsapp_business_account"`, `entry[].changes[]`), unchanged.
//!
//! Reference: <https://docs.360dialog.com/docs/messaging/webhook/webhook-reference> ("For Cloud
//! API, the object is always `whatsapp_business_account`"), and Meta's
//! <https://developers.facebook.com/documentation/business-messaging/whatsapp/webhooks/reference/messages>.
//!
//! The parsing lives in [`super::whatsapp::parse_cloud_api`]; the events differ from the
//! `whatsapp` source's only by `source` and `provider` (`360dialog`), taken from the input.
//! 360dialog's retired On-Premise format (top-level `messages`/`statuses`, no `object`) is
//! refused as `unsupported_payload`.

use hookline_shared::event::NormalizedEvent;

use crate::{NormalizeError, RawInput};

pub fn parse(input: &RawInput<'_>) -> Result<Vec<NormalizedEvent>, NormalizeError> {
    super::whatsapp::parse_cloud_api(input)
}

#[cfg(test)]
mod tests {
    use super::*;
    use hookline_shared::Source;

    fn run(body: &str) -> Result<Vec<NormalizedEvent>, NormalizeError> {
        crate::build::test_normalize(Source::Dialog360, body, None, None)
    }

    #[test]
    fn events_carry_360dialog_as_source_and_provider() {
        let body = r#"{"object":"whatsapp_business_account","entry":[{"id":"1","changes":[{"field":"messages","value":{"messages":[{"from":"16505551234","id":"wamid.1","timestamp":"1749416383","type":"text","text":{"body":"hi"}}]}}]}]}"#;
        let events = run(body).expect("parses");
        assert_eq!(events.len(), 1);
        assert_eq!(events[0].source, Source::Dialog360);
        assert_eq!(events[0].provider, "360dialog");
        assert_eq!(events[0].platform, "whatsapp");
    }

    #[test]
    fn the_on_premise_format_is_unsupported() {
        let body = r#"{"contacts":[{"profile":{"name":"Kerry Fisher"},"wa_id":"16315551234"}],"messages":[{"from":"16315551234","id":"ABGGFlA5FpafAgo6EhgKlW8tsqPM","text":{"body":"Hello this is an answer"},"timestamp":"1518694235","type":"text"}]}"#;
        assert_eq!(run(body).unwrap_err().code(), "unsupported_payload");
    }
}

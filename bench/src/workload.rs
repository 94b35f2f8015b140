//! The workload: a realistic mix of sources and sizes taken from the golden fixtures. Each
//! request is made unique by rewriting the platform's message id in the body, and its expected
//! event id is known before it is sent, so a ledger can say what became of every webhook.

use bytes::Bytes;

use hookline_normalizer::{normalize, EventContext, RawInput};
use hookline_shared::Source;

/// One kind of webhook: a fixture body and the id inside it to rewrite.
#[derive(Clone)]
pub struct Template {
    pub source: Source,
    pub channel_id: String,
    pub body: String,
    pub content_type: &'static str,
    pub id_in_body: String,
    pub query: Option<String>,
}

/// One request, ready to send.
pub struct Webhook {
    pub path: String,
    pub headers: Vec<(String, String)>,
    pub body: Bytes,
    /// The ids of the events this webhook must become.
    pub event_ids: Vec<String>,
}

pub const TENANT: &str = "bench";

macro_rules! fixture {
    ($source:expr, $case:literal, $ext:literal, $content_type:literal) => {
        (
            $source,
            $case,
            include_str!(concat!(env!("CARGO_MANIFEST_DIR"), "/../normalizer/tests/fixtures/", $case, ".", $ext)),
            $content_type,
            include_str!(concat!(env!("CARGO_MANIFEST_DIR"), "/../normalizer/tests/fixtures/", $case, ".events.json")),
        )
    };
}

/// The golden fixtures used (built into the binary): messages whose id appears in the body.
const CASES: &[(Source, &str, &str, &str, &str)] = &[
    fixture!(Source::Whatsapp, "whatsapp/text", "json", "application/json"),
    fixture!(Source::Whatsapp, "whatsapp/image", "json", "application/json"),
    fixture!(Source::Whatsapp, "whatsapp/interactive_button_reply", "json", "application/json"),
    fixture!(Source::Dialog360, "dialog360/text", "json", "application/json"),
    fixture!(Source::Messenger, "messenger/text", "json", "application/json"),
    fixture!(Source::Instagram, "instagram/text", "json", "application/json"),
    fixture!(Source::Telegram, "telegram/message_text", "json", "application/json"),
    fixture!(Source::Twilio, "twilio/sms_inbound", "form", "application/x-www-form-urlencoded"),
    fixture!(Source::Webchat, "webchat/text", "json", "application/json"),
];

/// The templates of the mix.
pub fn templates() -> Result<Vec<Template>, String> {
    let mut out = Vec::new();
    for (source, case, body, content_type, events) in CASES {
        let (file, content_type) = (body.to_string(), *content_type);
        let expected: serde_json::Value = serde_json::from_str(events).map_err(|e| format!("fixture {case}: {e}"))?;
        let id = expected[0]["message"]["id"].as_str().ok_or_else(|| format!("fixture {source}/{case}: no message id"))?;
        // Telegram writes ids as "{chat}:{message}"; the body holds the message number.
        let id_in_body = if *source == Source::Telegram { id.rsplit(':').next().unwrap_or(id) } else { id };
        let needle = if *source == Source::Telegram { format!("\"message_id\": {id_in_body}") } else { id_in_body.to_string() };
        let needle = if file.contains(&needle) { needle } else { format!("\"message_id\":{id_in_body}") };
        if !file.contains(&needle) {
            return Err(format!("fixture {source}/{case}: its id {id_in_body} is not in the body"));
        }
        out.push(Template {
            source: *source,
            channel_id: format!("bench-{}", source.as_str()),
            body: file,
            content_type,
            id_in_body: needle,
            query: None,
        });
    }
    Ok(out)
}

/// The `n`th request of the mix, signed for `secret_for(source)` at `now` (unix seconds).
pub fn webhook(templates: &[Template], n: u64, public_url: &str, secret_for: &dyn Fn(Source) -> String, now: i64) -> Webhook {
    let t = &templates[(n % templates.len() as u64) as usize];
    let unique = if t.source == Source::Telegram {
        // A number stays a number.
        let digits = t.id_in_body.rsplit(' ').next().unwrap_or("0").trim_start_matches("\"message_id\":");
        t.id_in_body.replace(digits, &format!("{}{n}", 9))
    } else {
        format!("{}-b{n}", t.id_in_body)
    };
    let mut body = t.body.replace(&t.id_in_body, &unique);
    if t.source == Source::Telegram {
        // update_id must be unique too.
        if let Some(start) = body.find("\"update_id\"") {
            let rest = &body[start..];
            if let Some(end) = rest.find(',') {
                body = format!("{}\"update_id\": {}{}", &body[..start], 900_000_000 + n, &body[start + end..]);
            }
        }
    }
    let path = format!("/webhooks/{}", t.channel_id);
    let url = format!("{public_url}{path}");
    let mut headers = hookline_ingest::sign::signature_headers(t.source, &secret_for(t.source), body.as_bytes(), &url, now);
    headers.push(("Content-Type".into(), t.content_type.into()));
    let ctx = EventContext {
        tenant_id: TENANT.into(),
        channel_id: t.channel_id.clone(),
        platform: String::new(),
        received_at: String::new(),
        raw: None,
    };
    let event_ids =
        normalize(&RawInput { source: t.source, body: body.as_bytes(), content_type: Some(t.content_type), query: None, context: &ctx })
            .map(|events| events.into_iter().map(|e| e.id).collect())
            .unwrap_or_default();
    Webhook { path, headers, body: Bytes::from(body), event_ids }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_request_is_unique_and_parses_into_its_own_events() {
        let templates = templates().expect("templates");
        assert_eq!(templates.len(), CASES.len());
        let secret = |s: Source| if s == Source::Webchat { "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw".to_string() } else { "s".to_string() };
        let mut ids = std::collections::HashSet::new();
        for n in 0..(templates.len() as u64 * 3) {
            let w = webhook(&templates, n, "http://h", &secret, 1_700_000_000);
            assert!(!w.event_ids.is_empty(), "request {n} ({}) yields no event", w.path);
            for id in w.event_ids {
                assert!(ids.insert(id), "request {n} repeats an event id");
            }
        }
    }
}

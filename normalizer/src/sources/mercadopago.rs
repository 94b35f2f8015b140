//! Mercado Pago notifications
//! (<https://www.mercadopago.com/developers/en/docs/your-integrations/notifications/webhooks>
//! and the legacy IPN, <https://www.mercadopago.com/developers/en/docs/your-integrations/notifications/ipn>).
//!
//! Shapes:
//! * Webhooks: `{id, live_mode, type, date_created, user_id, api_version, action, data: {id}}`,
//!   with `?data.id=…&type=…` in the URL;
//! * IPN: `{resource, topic}` (`resource` a URL or a bare id), with `?topic=…&id=…`;
//! * topic-specific bodies whose `data` has no `id` (card updater, fraud alerts).
//!
//! A notification carries no payment data, only what to fetch: it becomes kind `payment` with
//! `payment {id: the resource id, action, type}` when it names a payment, merchant order or
//! another payment resource, else kind `other`. The platform id is the notification's own `id`
//! when it has one, else `"{type}:{resource id}:{action}"` (`"{type}:{resource id}"` without an
//! action). `occurred_at` comes from `date_created` when it is a valid timestamp.

use std::collections::HashMap;

use serde_json::{Map, Value};

use hookline_shared::event::{EventKind, NormalizedEvent, Payment};

use crate::{build, NormalizeError, RawInput};

/// Topics whose resource id is what the receiver fetches to learn about a payment.
const PAYMENT_TOPICS: [&str; 11] = [
    "payment",
    "merchant_order",
    "topic_merchant_order_wh",
    "order",
    "chargebacks",
    "topic_chargebacks_wh",
    "subscription_authorized_payment",
    "subscription_preapproval",
    "subscription_preapproval_plan",
    "point_integration_wh",
    "point_integration_ipn",
];

pub fn parse(input: &RawInput<'_>) -> Result<Vec<NormalizedEvent>, NormalizeError> {
    let empty_body = input.body.iter().all(u8::is_ascii_whitespace);
    // IPN may come with the query string only.
    let body = if empty_body { Value::Object(Map::new()) } else { build::json(input.body)? };
    let obj = body.as_object().ok_or_else(|| NormalizeError::UnsupportedPayload("a Mercado Pago notification is a JSON object".into()))?;
    let query: HashMap<String, String> =
        input.query.map(|q| form_urlencoded::parse(q.as_bytes()).into_owned().filter(|(_, v)| !v.is_empty()).collect()).unwrap_or_default();
    let q = |k: &str| query.get(k).cloned();

    let topic = build::opt_str(&body, "type").or_else(|| build::opt_str(&body, "topic")).or_else(|| q("type")).or_else(|| q("topic"));
    let Some(topic) = topic else {
        return Err(NormalizeError::UnsupportedPayload("no notification `type` or `topic` in the body or query".into()));
    };
    let action = build::opt_str(&body, "action");
    let data = obj.get("data").filter(|d| d.is_object());
    let notification_id = obj.get("id").and_then(build::id_string);

    // The id of the resource the notification is about.
    let resource_id = data
        .and_then(|d| d.get("id"))
        .and_then(build::id_string)
        .or_else(|| build::opt_str(&body, "resource").as_deref().and_then(last_segment))
        .or_else(|| q("data.id"))
        .or_else(|| q("id"));
    // Other notifications (fraud alerts, ...) may still name a payment or merchant order.
    let referenced = || {
        let d = data?;
        d.get("payment_id").and_then(build::id_string).or_else(|| d.get("merchant_order").and_then(build::id_string))
    };
    let payment_id = if PAYMENT_TOPICS.contains(&topic.as_str()) { resource_id.clone().or_else(referenced) } else { referenced() };

    let platform = build::channel_platform(input);
    let occurred_at = build::opt_str(&body, "date_created").as_deref().and_then(build::from_rfc3339);

    let event = match payment_id {
        Some(id) => {
            let platform_id = notification_id.unwrap_or_else(|| match &action {
                Some(a) => format!("{topic}:{id}:{a}"),
                None => format!("{topic}:{id}"),
            });
            let mut event = build::event(input, EventKind::Payment, &platform_id, &platform);
            event.payment = Some(Payment { id, action, kind: Some(topic) });
            event.occurred_at = occurred_at;
            event
        }
        None => {
            let platform_id = match (notification_id, resource_id) {
                (Some(id), _) => id,
                (None, Some(rid)) => match &action {
                    Some(a) => format!("{topic}:{rid}:{a}"),
                    None => format!("{topic}:{rid}"),
                },
                (None, None) => {
                    return Err(NormalizeError::MissingField("id".into()));
                }
            };
            let mut event = build::event(input, EventKind::Other, &platform_id, &platform);
            event.occurred_at = occurred_at;
            event
        }
    };
    Ok(vec![event])
}

/// The last path segment of an IPN `resource` (a URL such as
/// `https://api.mercadolibre.com/merchant_orders/123`, or a bare id).
fn last_segment(resource: &str) -> Option<String> {
    let path = resource.split(['?', '#']).next()?.trim_end_matches('/');
    let last = path.rsplit('/').next()?.trim();
    (!last.is_empty()).then(|| last.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use hookline_shared::Source;

    fn run(body: &str, query: Option<&str>) -> Result<Vec<NormalizedEvent>, NormalizeError> {
        crate::build::test_normalize(Source::Mercadopago, body, None, query)
    }

    #[test]
    fn errors_have_the_right_codes() {
        let code = |b: &str, q| run(b, q).err().map(|e| e.code());
        assert_eq!(code("[]", None), Some("unsupported_payload"));
        assert_eq!(code("{}", None), Some("unsupported_payload"));
        assert_eq!(code("{", None), Some("invalid_json"));
        assert_eq!(code(r#"{"type":"mp-connect"}"#, None), Some("missing_field"));
    }

    #[test]
    fn the_query_fills_what_the_body_lacks() {
        let e = run("", Some("topic=payment&id=42")).expect("parses");
        let p = e[0].payment.as_ref().expect("payment");
        assert_eq!((p.id.as_str(), p.kind.as_deref()), ("42", Some("payment")));

        let e = run(r#"{"id":7,"type":"payment","action":"payment.updated","data":{}}"#, Some("data.id=99&type=payment")).expect("parses");
        assert_eq!(e[0].payment.as_ref().map(|p| p.id.as_str()), Some("99"));

        let e = run(r#"{"resource":"https://api.mercadolibre.com/merchant_orders/55/","topic":"merchant_order"}"#, None).expect("parses");
        assert_eq!(e[0].payment.as_ref().map(|p| p.id.as_str()), Some("55"));
    }
}

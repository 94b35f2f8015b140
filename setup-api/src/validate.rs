//! Request validation: bodies are read as JSON objects field by field so that every refusal
//! names its field (400 for a body that is not a JSON object, 422 for a field), and no message
//! ever quotes a value from the request (a secret might sit in the wrong field).

use serde::de::DeserializeOwned;
use serde_json::Value;

use hookline_shared::channel::ChannelSettings;
use hookline_shared::{names, standard_webhooks, Secret, Source};

use crate::db::{ListFilter, Settings};
use crate::error::ApiError;

/// What a route does with a body field.
#[derive(Debug, Clone, Copy)]
pub enum Rule {
    /// Must be present and not null; the text says what it must be ("a string").
    Required(&'static str),
    Optional(&'static str),
    /// Refused with this message (a field of another route, or one that cannot change).
    Refused(&'static str),
}

pub type Fields = &'static [(&'static str, Rule)];

/// Reads `body` as a JSON object of `fields` into `T`.
pub fn parse_body<T: DeserializeOwned>(body: &[u8], fields: Fields) -> Result<T, ApiError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Err(ApiError::bad_json("the body must be a JSON object"));
    }
    let value: Value = serde_json::from_slice(body)
        .map_err(|e| ApiError::bad_json(format!("the body is not valid JSON (line {}, column {})", e.line(), e.column())))?;
    let Value::Object(map) = &value else {
        return Err(ApiError::bad_json("the body must be a JSON object"));
    };
    for key in map.keys() {
        match fields.iter().find(|(name, _)| name == key) {
            None => {
                let shown: String = key.chars().take(64).collect();
                let expected: Vec<&str> = fields.iter().filter(|(_, r)| !matches!(r, Rule::Refused(_))).map(|(n, _)| *n).collect();
                return Err(ApiError::unknown_field(&shown, format!("unknown field; expected one of: {}", expected.join(", "))));
            }
            Some((name, Rule::Refused(message))) => return Err(ApiError::invalid(name, *message)),
            Some(_) => {}
        }
    }
    for (name, rule) in fields {
        if let Rule::Required(_) = rule {
            if map.get(*name).is_none_or(Value::is_null) {
                return Err(ApiError::invalid(name, "is required"));
            }
        }
    }
    serde_path_to_error::deserialize(value).map_err(|e| {
        let path = e.path().to_string();
        let field = path.split(['.', '[']).next().unwrap_or("").to_string();
        let expect = fields
            .iter()
            .find(|(n, _)| *n == field)
            .map(|(_, r)| match r {
                Rule::Required(t) | Rule::Optional(t) => *t,
                Rule::Refused(_) => "absent",
            })
            .unwrap_or("of another type");
        ApiError::invalid(&field, format!("must be {expect}"))
    })
}

const ID_RULE: &str = "1 to 64 of A-Z a-z 0-9 _ -";

pub fn id(field: &str, value: &str) -> Result<(), ApiError> {
    if names::is_valid_id(value) {
        Ok(())
    } else {
        Err(ApiError::invalid(field, ID_RULE))
    }
}

pub fn source(value: &str) -> Result<Source, ApiError> {
    value.parse().map_err(|_| {
        ApiError::invalid(
            "source",
            "unknown source; expected one of: whatsapp, messenger, instagram, telegram, twilio, \
             dialog360, tawkto, mercadopago, webchat",
        )
    })
}

/// The platform given, checked against the source's, or the source's default.
pub fn platform(source: Source, value: Option<&str>) -> Result<String, ApiError> {
    let platforms = source.platforms();
    match value {
        None => Ok(platforms[0].to_string()),
        Some(p) if platforms.contains(&p) => Ok(p.to_string()),
        Some(_) => {
            Err(ApiError::invalid("platform", format!("not a platform of source {source}; expected one of: {}", platforms.join(", "))))
        }
    }
}

pub fn name(value: Option<String>) -> Result<Option<String>, ApiError> {
    match value {
        None => Ok(None),
        Some(n) if n.trim().is_empty() => Err(ApiError::invalid("name", "must not be empty (null removes it)")),
        Some(n) if n.chars().count() > 200 => Err(ApiError::invalid("name", "at most 200 characters")),
        Some(n) => Ok(Some(n)),
    }
}

fn secret_text(field: &str, secret: &Secret) -> Result<(), ApiError> {
    let s = secret.expose();
    if s.is_empty() {
        return Err(ApiError::invalid(field, "must not be empty"));
    }
    if s.len() > 4096 {
        return Err(ApiError::invalid(field, "at most 4096 bytes"));
    }
    if s.trim() != s {
        return Err(ApiError::invalid(field, "must not begin or end with whitespace"));
    }
    Ok(())
}

/// The signing secret of a channel of `source`, checked as the platform requires it.
pub fn secret(source: Source, field: &str, secret: &Secret) -> Result<(), ApiError> {
    secret_text(field, secret)?;
    match source {
        Source::Webchat => {
            standard_webhooks::key_bytes(secret).map(|_| ()).map_err(|_| ApiError::invalid(field, "must be whsec_ followed by base64"))
        }
        Source::Telegram => {
            let s = secret.expose();
            if s.len() <= 256 && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-') {
                Ok(())
            } else {
                Err(ApiError::invalid(field, "Telegram's secret token is 1 to 256 of A-Z a-z 0-9 _ -"))
            }
        }
        _ => Ok(()),
    }
}

pub fn verify_token(source: Source, token: &Secret) -> Result<(), ApiError> {
    if !source.has_meta_handshake() {
        return Err(ApiError::invalid("verify_token", "only whatsapp, messenger and instagram channels use a verify token"));
    }
    secret_text("verify_token", token)?;
    if token.expose().len() > 256 {
        return Err(ApiError::invalid("verify_token", "at most 256 bytes"));
    }
    Ok(())
}

pub fn settings(source: Source, settings: &Settings) -> Result<(), ApiError> {
    if serde_json::to_vec(settings).map_or(0, |v| v.len()) > 16 * 1024 {
        return Err(ApiError::invalid("settings", "at most 16 KiB of JSON"));
    }
    ChannelSettings::from_map(source, settings).map(|_| ()).map_err(|m| ApiError::invalid("settings", m))
}

pub const DEFAULT_PAGE: i64 = 50;
pub const MAX_PAGE: i64 = 200;

/// `?tenant_id=&source=&platform=&limit=&cursor=`
pub fn list_query(query: Option<&str>) -> Result<ListFilter, ApiError> {
    let mut filter = ListFilter { limit: DEFAULT_PAGE, ..Default::default() };
    let mut seen = Vec::new();
    for (key, value) in form_urlencoded::parse(query.unwrap_or("").as_bytes()) {
        let key = key.into_owned();
        if seen.contains(&key) {
            return Err(ApiError::bad_query(&key, "given more than once"));
        }
        seen.push(key.clone());
        let value = value.into_owned();
        match key.as_str() {
            "tenant_id" => {
                id("tenant_id", &value)?;
                filter.tenant_id = Some(value);
            }
            "source" => filter.source = Some(source(&value)?.as_str().to_string()),
            "platform" => filter.platform = Some(value),
            "cursor" => {
                id("cursor", &value).map_err(|_| ApiError::invalid("cursor", "not a cursor of this API"))?;
                filter.after = Some(value);
            }
            "limit" => {
                filter.limit = value
                    .parse::<i64>()
                    .ok()
                    .filter(|n| (1..=MAX_PAGE).contains(n))
                    .ok_or_else(|| ApiError::invalid("limit", format!("an integer from 1 to {MAX_PAGE}")))?;
            }
            other => {
                let shown: String = other.chars().take(64).collect();
                return Err(ApiError::bad_query(&shown, "unknown parameter; expected tenant_id, source, platform, limit, cursor"));
            }
        }
    }
    Ok(filter)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[derive(Debug, Deserialize)]
    #[allow(dead_code)]
    struct Probe {
        a: String,
        b: Option<bool>,
    }

    const PROBE: Fields =
        &[("a", Rule::Required("a string")), ("b", Rule::Optional("a boolean")), ("c", Rule::Refused("c is not for this route"))];

    fn refusal(body: &str) -> (u16, String, Option<String>) {
        match parse_body::<Probe>(body.as_bytes(), PROBE).expect_err(body) {
            ApiError::Client { status, message, field, .. } => (status.as_u16(), message, field),
            ApiError::Internal(m) => panic!("internal: {m}"),
        }
    }

    #[test]
    fn bodies_are_refused_with_the_field_and_without_its_value() {
        assert_eq!(refusal("").0, 400);
        assert_eq!(refusal("{").0, 400);
        assert_eq!(refusal("[1]").0, 400);
        assert_eq!(refusal("{}"), (422, "is required".into(), Some("a".into())));
        assert_eq!(refusal(r#"{"a": null}"#), (422, "is required".into(), Some("a".into())));
        let (status, message, field) = refusal(r#"{"a": "x", "b": "sekrit-value"}"#);
        assert_eq!((status, field.as_deref()), (422, Some("b")));
        assert!(!message.contains("sekrit"), "{message}");
        let (status, message, field) = refusal(r#"{"a": 42}"#);
        assert_eq!((status, field.as_deref()), (422, Some("a")));
        assert!(!message.contains("42"), "{message}");
        assert_eq!(refusal(r#"{"a": "x", "zz": 1}"#).2.as_deref(), Some("zz"));
        assert_eq!(refusal(r#"{"a": "x", "c": 1}"#), (422, "c is not for this route".into(), Some("c".into())));
        let ok: Probe = parse_body(br#"{"a": "x"}"#, PROBE).expect("ok");
        assert_eq!(ok.a, "x");
    }

    #[test]
    fn list_queries_are_checked() {
        let f = list_query(Some("tenant_id=acme&source=telegram&limit=10&cursor=ch_1")).expect("ok");
        assert_eq!(f.tenant_id.as_deref(), Some("acme"));
        assert_eq!(f.limit, 10);
        assert_eq!(f.after.as_deref(), Some("ch_1"));
        assert_eq!(list_query(None).expect("ok").limit, DEFAULT_PAGE);
        for (q, field) in [
            ("limit=0", "limit"),
            ("limit=201", "limit"),
            ("limit=x", "limit"),
            ("source=fax", "source"),
            ("tenant_id=a.b", "tenant_id"),
            ("cursor=a%20b", "cursor"),
            ("colour=red", "colour"),
            ("limit=1&limit=2", "limit"),
        ] {
            match list_query(Some(q)).expect_err(q) {
                ApiError::Client { field: f, .. } => assert_eq!(f.as_deref(), Some(field), "{q}"),
                ApiError::Internal(m) => panic!("{m}"),
            }
        }
    }

    #[test]
    fn secrets_are_checked_per_source() {
        assert!(secret(Source::Telegram, "secret", &Secret::new("abc_DEF-123")).is_ok());
        assert!(secret(Source::Telegram, "secret", &Secret::new("has space")).is_err());
        assert!(secret(Source::Webchat, "secret", &Secret::new("not-whsec!")).is_err());
        assert!(secret(Source::Webchat, "secret", &Secret::new("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw")).is_ok());
        assert!(secret(Source::Whatsapp, "secret", &Secret::new(" padded")).is_err());
        assert!(secret(Source::Whatsapp, "secret", &Secret::new("")).is_err());
        assert!(verify_token(Source::Telegram, &Secret::new("v")).is_err());
        assert!(verify_token(Source::Whatsapp, &Secret::new("v")).is_ok());
    }
}

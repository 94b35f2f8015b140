//! What the fuzz targets share: a readable input format (so that seeds can be written from the
//! golden fixtures, and a crashing input can be read), and one driver per entry point.
//!
//! # Verifier inputs (`verify_*`, `meta_handshake`)
//!
//! Lines up to the first empty line are the request head; every byte after it is the body.
//! Lines are separated by `\n` (a trailing `\r` is dropped):
//!
//! ```text
//! @url: https://hooks.example.com/webhooks/ch1?data.id=1   the public URL the platform called
//! @query: data.id=1          the request's query (default: the part of @url after `?`)
//! @now: 1700000000           the time of verification, unix seconds (default 1700000000)
//! @secret: s3cret            the channel secret (default: a per-scheme test secret)
//! @previous: old             a rotated-out secret, still valid for an hour
//! @setting: auth=signature   a channel setting (360dialog: auth, header_name)
//! @sign:                     first add the headers `hookline_ingest::sign` computes for this
//!                            request, so the fuzzer also explores what follows a valid signature
//! X-Any-Header: value        any other line is a header, its value taken byte for byte
//!
//! {"the": "body"}
//! ```
//!
//! With `HOOKLINE_FUZZ_ROUNDTRIP=1` an input made of `@` lines only, with `@sign`, must also
//! verify (sign and verify agree), where the scheme can sign it at all.
//!
//! # Normalizer inputs (`normalize_*`)
//!
//! Leading lines starting with `@` set the context, the rest is the raw body as stored (so a
//! fixture file is a valid input as it is):
//!
//! ```text
//! @query: data.id=123&type=payment
//! @content-type: application/x-www-form-urlencoded
//! @platform: whatsapp
//! @received-at: 2026-01-01T00:00:00Z
//! ```

use std::borrow::Cow;

use http::{HeaderMap, HeaderName, HeaderValue};
use time::{Duration, OffsetDateTime};

use hookline_ingest::sign::signature_headers;
use hookline_ingest::verify::{self, SignedRequest, Tolerances, VerifyError};
use hookline_normalizer::{normalize, EventContext, RawInput};
use hookline_shared::channel::{Channel, ChannelSecrets, ChannelSettings};
use hookline_shared::event::RawRef;
use hookline_shared::{Secret, Source};

/// The defaults of `hookline.default.toml`.
pub const TOLERANCES: Tolerances = Tolerances { webchat_s: 300, mercadopago_s: 600 };
const DEFAULT_NOW: i64 = 1_700_000_000;
const DEFAULT_URL: &str = "https://hooks.example.com/webhooks/ch1";

fn default_secret(source: Source) -> &'static str {
    match source {
        Source::Webchat => "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
        _ => "test-secret-value-42",
    }
}

fn lossy(bytes: &[u8]) -> Cow<'_, str> {
    String::from_utf8_lossy(bytes)
}

/// Splits `data` into its lines up to the first empty one, and the rest.
fn split_head(data: &[u8]) -> (Vec<&[u8]>, &[u8]) {
    let mut lines = Vec::new();
    let mut rest = data;
    while !rest.is_empty() {
        let (line, after) = match rest.iter().position(|&b| b == b'\n') {
            Some(i) => (&rest[..i], &rest[i + 1..]),
            None => (rest, &rest[rest.len()..]),
        };
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        rest = after;
        if line.is_empty() {
            return (lines, rest);
        }
        lines.push(line);
    }
    (lines, rest)
}

/// `name: value` with the value's leading spaces removed.
fn name_value(line: &[u8]) -> Option<(&[u8], &[u8])> {
    let colon = line.iter().position(|&b| b == b':')?;
    let value = &line[colon + 1..];
    let start = value.iter().position(|&b| b != b' ' && b != b'\t').unwrap_or(value.len());
    Some((&line[..colon], &value[start..]))
}

/// One request to a verifier, decoded from fuzz bytes.
pub struct VerifyCase<'a> {
    pub url: String,
    pub query: Option<String>,
    pub now: i64,
    pub secret: String,
    pub previous: Option<String>,
    pub settings: serde_json::Map<String, serde_json::Value>,
    pub sign: bool,
    /// Headers as given, in order (those that are valid HTTP at all).
    pub headers: Vec<(HeaderName, HeaderValue)>,
    pub body: &'a [u8],
}

impl<'a> VerifyCase<'a> {
    pub fn parse(source: Source, data: &'a [u8]) -> VerifyCase<'a> {
        let (lines, body) = split_head(data);
        let mut case = VerifyCase {
            url: DEFAULT_URL.to_string(),
            query: None,
            now: DEFAULT_NOW,
            secret: default_secret(source).to_string(),
            previous: None,
            settings: serde_json::Map::new(),
            sign: false,
            headers: Vec::new(),
            body,
        };
        let mut explicit_query = None;
        for line in lines {
            let Some((name, value)) = name_value(line) else { continue };
            match name {
                b"@url" => case.url = lossy(value).into_owned(),
                b"@query" => explicit_query = Some(lossy(value).into_owned()),
                b"@now" => case.now = clamp_unix(lossy(value).trim().parse().unwrap_or(DEFAULT_NOW)),
                b"@secret" => case.secret = lossy(value).into_owned(),
                b"@previous" => case.previous = Some(lossy(value).into_owned()),
                b"@setting" => {
                    let text = lossy(value);
                    let (k, v) = text.split_once('=').unwrap_or((&text, ""));
                    case.settings.insert(k.trim().to_string(), serde_json::Value::String(v.trim().to_string()));
                }
                b"@sign" => case.sign = true,
                _ => {
                    if let (Ok(n), Ok(v)) = (HeaderName::from_bytes(name), HeaderValue::from_bytes(value)) {
                        case.headers.push((n, v));
                    }
                }
            }
        }
        case.query = explicit_query.or_else(|| case.url.split_once('?').map(|(_, q)| q.to_string()));
        case
    }

    /// Whether the input asks only for a signed request, with nothing changed after signing.
    fn untouched_signed_request(&self) -> bool {
        self.sign && self.headers.is_empty() && self.query.as_deref() == self.url.split_once('?').map(|(_, q)| q)
    }
}

/// `unix` clamped to the range `OffsetDateTime` represents (years -9999 to 9999).
fn clamp_unix(unix: i64) -> i64 {
    let min = OffsetDateTime::new_utc(time::Date::MIN, time::Time::MIDNIGHT).unix_timestamp();
    let max = OffsetDateTime::new_utc(time::Date::MAX, time::Time::MIDNIGHT).unix_timestamp();
    unix.clamp(min, max)
}

fn time_at(unix: i64) -> OffsetDateTime {
    OffsetDateTime::from_unix_timestamp(clamp_unix(unix)).unwrap_or(OffsetDateTime::UNIX_EPOCH)
}

fn channel(source: Source, secret: &str, previous: Option<(&str, OffsetDateTime)>, settings: ChannelSettings) -> Channel {
    Channel {
        id: "ch1".into(),
        tenant_id: "t1".into(),
        source,
        platform: source.platforms()[0].into(),
        default: false,
        secrets: ChannelSecrets { current: Secret::new(secret), previous: previous.map(|(s, until)| (Secret::new(s), until)) },
        verify_token: None,
        settings,
    }
}

/// Runs `verify` for `source` on the request `data` describes. Never panics unless the verifier
/// does (or, with `HOOKLINE_FUZZ_ROUNDTRIP=1`, sign and verify disagree).
pub fn fuzz_verify(source: Source, data: &[u8]) {
    let case = VerifyCase::parse(source, data);
    // A channel whose settings do not parse is never loaded: nothing to verify against.
    let Ok(settings) = ChannelSettings::from_map(source, &case.settings) else { return };
    let now = time_at(case.now);
    let channel = channel(source, &case.secret, case.previous.as_deref().map(|p| (p, now + Duration::hours(1))), settings);

    let mut headers = HeaderMap::new();
    let mut signed_all = true;
    if case.sign {
        for (k, v) in signature_headers(source, &case.secret, case.body, &case.url, case.now) {
            match (HeaderName::from_bytes(k.as_bytes()), HeaderValue::from_str(&v)) {
                (Ok(k), Ok(v)) => {
                    headers.append(k, v);
                }
                _ => signed_all = false,
            }
        }
    }
    for (k, v) in &case.headers {
        headers.append(k.clone(), v.clone());
    }
    let req = SignedRequest { headers: &headers, body: case.body, query: case.query.as_deref(), public_url: &case.url, now };
    let result = verify::verify(&channel, &req, &TOLERANCES);
    if let Err(e) = &result {
        // Every refusal has one of the bounded metric labels.
        assert!(["missing_header", "malformed", "stale", "mismatch"].contains(&e.reason()));
    }
    if roundtrip_enabled() && signed_all && case.untouched_signed_request() && signable(source, &case, &channel) {
        assert_eq!(result, Ok::<(), VerifyError>(()), "sign and verify disagree for {source}");
    }
}

fn roundtrip_enabled() -> bool {
    static ON: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *ON.get_or_init(|| std::env::var("HOOKLINE_FUZZ_ROUNDTRIP").is_ok_and(|v| v == "1"))
}

/// Whether `sign` can produce a valid request for this case at all: the secret must be a
/// header value (the shared-secret schemes send it as one), webchat's a `whsec_` key, the
/// time one Mercado Pago writes as seconds, 360dialog in header mode under `Authorization`, and
/// a Twilio `bodySHA256` in the URL must be the body's (the signer takes the URL as given).
fn signable(source: Source, case: &VerifyCase<'_>, channel: &Channel) -> bool {
    // Verifiers read a header as text: visible ASCII (Telegram allows A-Z a-z 0-9 _ - only).
    let secret_is_header_value = !case.secret.is_empty() && case.secret.bytes().all(|b| b.is_ascii_graphic());
    match source {
        Source::Telegram => secret_is_header_value,
        Source::Dialog360 => {
            secret_is_header_value
                && channel.settings.dialog360 == Some(hookline_shared::channel::Dialog360Auth::Header("authorization".into()))
        }
        Source::Webchat => hookline_shared::standard_webhooks::key_bytes(&Secret::new(case.secret.as_str())).is_ok(),
        // A `ts` of 10^12 or more is read as milliseconds (what Mercado Pago sends), so the
        // signer's seconds must stay below it.
        // Known divergences, kept in fuzz/artifacts/verify_mercadopago/: verify trims the
        // query's data.id and leaves an empty one out; sign does neither.
        Source::Mercadopago => {
            let data_id = case
                .query
                .as_deref()
                .and_then(|q| form_urlencoded::parse(q.as_bytes()).find(|(k, _)| k == "data.id").map(|(_, v)| v.into_owned()));
            (0..1_000_000_000_000).contains(&case.now) && data_id.is_none_or(|id| !id.is_empty() && id.trim() == id)
        }
        Source::Twilio => {
            use sha2::Digest;
            let claimed = case
                .query
                .as_deref()
                .and_then(|q| form_urlencoded::parse(q.as_bytes()).find(|(k, _)| k == "bodySHA256").map(|(_, v)| v.to_ascii_lowercase()));
            claimed.is_none_or(|c| c == hex::encode(sha2::Sha256::digest(case.body)))
        }
        _ => true,
    }
}

/// Meta's GET handshake: the first line is the verify token, the rest the query string.
pub fn fuzz_meta_handshake(data: &[u8]) {
    let (token, query) = match data.iter().position(|&b| b == b'\n') {
        Some(i) => (&data[..i], &data[i + 1..]),
        None => (data, &data[data.len()..]),
    };
    let mut ch = channel(Source::Whatsapp, "s", None, ChannelSettings::default());
    ch.verify_token = Some(Secret::new(lossy(token).into_owned()));
    // The query as hyper hands it over: text (a request line is ASCII, or it is refused).
    let query = lossy(query);
    let _ = verify::meta_handshake(&ch, &query);
    ch.verify_token = None;
    assert!(verify::meta_handshake(&ch, &query).is_none(), "no verify token configured, yet a challenge");
}

/// Runs the normalizer of `source` on `data` (see the module docs for the format), then
/// serializes the events as the worker does.
pub fn fuzz_normalize(source: Source, data: &[u8]) {
    let mut body = data;
    let mut query = None;
    let mut content_type = None;
    let mut platform = String::new();
    let mut received_at = "2026-01-01T00:00:00Z".to_string();
    while body.first() == Some(&b'@') {
        let end = body.iter().position(|&b| b == b'\n').unwrap_or(body.len());
        let line = &body[..end];
        body = &body[(end + 1).min(body.len())..];
        let Some((name, value)) = name_value(line.strip_suffix(b"\r").unwrap_or(line)) else { continue };
        let value = lossy(value).into_owned();
        match name {
            b"@query" => query = Some(value),
            b"@content-type" => content_type = Some(value),
            b"@platform" => platform = value,
            b"@received-at" => received_at = value,
            _ => {}
        }
    }
    let context = EventContext {
        tenant_id: "t1".into(),
        channel_id: "ch1".into(),
        platform,
        received_at,
        raw: Some(RawRef { subject: format!("hookline.raw.{source}.ch1"), seq: 1, index: None }),
    };
    let input = RawInput { source, body, content_type: content_type.as_deref(), query: query.as_deref(), context: &context };
    match normalize(&input) {
        Ok(events) => {
            for event in &events {
                let json = serde_json::to_vec(event).expect("an event always serializes");
                let _: serde_json::Value = serde_json::from_slice(&json).expect("an event serializes to valid JSON");
            }
        }
        Err(e) => {
            let _ = e.code();
        }
    }
}

//! Signature verification, one module per scheme. Every check runs on the exact bytes
//! received and compares in constant time; a channel being rotated verifies against its
//! previous secret too, until that expires.

mod dialog360;
mod mercadopago;
mod meta;
mod tawkto;
mod telegram;
mod twilio;
mod webchat;

use hmac::digest::KeyInit;
use hmac::{EagerHash, Hmac, Mac};
use http::HeaderMap;
use time::OffsetDateTime;

use hookline_shared::channel::Channel;
use hookline_shared::{Secret, Source};

/// Why a webhook was refused with 401. `reason()` is the metric label.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VerifyError {
    #[error("missing header {0}")]
    MissingHeader(&'static str),
    #[error("malformed {0}")]
    Malformed(&'static str),
    #[error("timestamp outside tolerance")]
    Stale,
    #[error("signature mismatch")]
    Mismatch,
}

impl VerifyError {
    /// A bounded label for `hookline_signature_failures_total{reason}`.
    pub fn reason(&self) -> &'static str {
        match self {
            VerifyError::MissingHeader(_) => "missing_header",
            VerifyError::Malformed(_) => "malformed",
            VerifyError::Stale => "stale",
            VerifyError::Mismatch => "mismatch",
        }
    }
}

/// What a verifier may look at: the request as the platform sent it.
pub struct SignedRequest<'a> {
    pub headers: &'a HeaderMap,
    pub body: &'a [u8],
    /// The query string without `?`, when there was one.
    pub query: Option<&'a str>,
    /// The URL the platform called, as configured publicly: `ingest.public_url` + path + query.
    pub public_url: &'a str,
    pub now: OffsetDateTime,
}

/// Timestamp tolerances of the schemes that sign a time.
#[derive(Debug, Clone, Copy)]
pub struct Tolerances {
    pub webchat_s: i64,
    pub mercadopago_s: i64,
}

/// Verifies `req` for `channel`: Ok when any secret valid now verifies it. The error reported is
/// the current secret's.
pub fn verify(channel: &Channel, req: &SignedRequest<'_>, tolerances: &Tolerances) -> Result<(), VerifyError> {
    let mut first_error = None;
    for secret in channel.secrets.valid_at(req.now) {
        match verify_with(channel, secret, req, tolerances) {
            Ok(()) => return Ok(()),
            Err(e) => {
                first_error.get_or_insert(e);
            }
        }
    }
    Err(first_error.unwrap_or(VerifyError::Mismatch))
}

fn verify_with(channel: &Channel, secret: &Secret, req: &SignedRequest<'_>, tolerances: &Tolerances) -> Result<(), VerifyError> {
    match channel.source {
        Source::Whatsapp | Source::Messenger | Source::Instagram => meta::verify(secret, req),
        Source::Telegram => telegram::verify(secret, req),
        Source::Twilio => twilio::verify(secret, req),
        Source::Dialog360 => dialog360::verify(secret, &channel.settings, req),
        Source::Tawkto => tawkto::verify(secret, req),
        Source::Mercadopago => mercadopago::verify(secret, req, tolerances.mercadopago_s),
        Source::Webchat => webchat::verify(secret, req, tolerances.webchat_s),
    }
}

/// Meta's GET subscription handshake: the challenge to echo, when mode and token are right.
pub fn meta_handshake<'q>(channel: &Channel, query: &'q str) -> Option<std::borrow::Cow<'q, str>> {
    // An empty token would match an empty `hub.verify_token=`: no token, no handshake.
    let expected = channel.verify_token.as_ref().filter(|t| !t.is_empty())?;
    let mut mode = None;
    let mut token = None;
    let mut challenge = None;
    for (k, v) in form_urlencoded::parse(query.as_bytes()) {
        match k.as_ref() {
            "hub.mode" => mode = Some(v),
            "hub.verify_token" => token = Some(v),
            "hub.challenge" => challenge = Some(v),
            _ => {}
        }
    }
    let token_ok = token.is_some_and(|t| constant_time_eq(t.as_bytes(), expected.expose().as_bytes()));
    (mode.as_deref() == Some("subscribe") && token_ok).then_some(challenge?)
}

/// A header's value as text.
fn header<'a>(headers: &'a HeaderMap, name: &'static str) -> Result<&'a str, VerifyError> {
    headers.get(name).ok_or(VerifyError::MissingHeader(name))?.to_str().map_err(|_| VerifyError::Malformed(name))
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    use subtle::ConstantTimeEq;
    a.ct_eq(b).into()
}

/// HMAC over `parts` with `key`.
pub(crate) fn hmac<D: EagerHash>(key: &[u8], parts: &[&[u8]]) -> Hmac<D>
where
    Hmac<D>: KeyInit + Mac,
{
    // HMAC takes keys of any length.
    let mut mac = <Hmac<D> as KeyInit>::new_from_slice(key).expect("HMAC accepts any key length");
    for part in parts {
        Mac::update(&mut mac, part);
    }
    mac
}

/// Constant-time check of a hex HMAC (either case).
fn verify_hex<D: EagerHash>(mac: Hmac<D>, hex_sig: &str, header_name: &'static str) -> Result<(), VerifyError>
where
    Hmac<D>: Mac,
{
    let sig = hex::decode(hex_sig.trim()).map_err(|_| VerifyError::Malformed(header_name))?;
    mac.verify_slice(&sig).map_err(|_| VerifyError::Mismatch)
}

#[cfg(test)]
pub(crate) mod test_support {
    use super::*;
    use hookline_shared::channel::{ChannelSecrets, ChannelSettings};

    pub fn channel(source: Source, secret: &str) -> Channel {
        Channel {
            id: "ch1".into(),
            tenant_id: "t1".into(),
            source,
            platform: source.platforms()[0].into(),
            default: false,
            secrets: ChannelSecrets::single(Secret::new(secret)),
            verify_token: None,
            settings: ChannelSettings::from_map(source, &Default::default()).expect("settings"),
        }
    }

    pub fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(*k, v.parse().expect("header value"));
        }
        h
    }

    pub const TOLERANCES: Tolerances = Tolerances { webchat_s: 300, mercadopago_s: 600 };

    pub fn at(unix: i64) -> OffsetDateTime {
        OffsetDateTime::from_unix_timestamp(unix).expect("valid time")
    }

    /// Runs `verify` for a request with these parts.
    pub fn check(channel: &Channel, headers: &HeaderMap, body: &[u8], url: &str, now: OffsetDateTime) -> Result<(), VerifyError> {
        let query = url.split_once('?').map(|(_, q)| q);
        verify(channel, &SignedRequest { headers, body, query, public_url: url, now }, &TOLERANCES)
    }
}

#[cfg(test)]
mod tests {
    use super::test_support::*;
    use super::*;
    use hookline_shared::channel::ChannelSecrets;
    use time::Duration;

    #[test]
    fn a_rotated_channel_accepts_the_previous_secret_until_it_expires() {
        let now = at(1_700_000_000);
        let mut ch = channel(Source::Telegram, "new-token");
        ch.secrets =
            ChannelSecrets { current: Secret::new("new-token"), previous: Some((Secret::new("old-token"), now + Duration::seconds(60))) };
        let old = headers(&[("x-telegram-bot-api-secret-token", "old-token")]);
        assert_eq!(check(&ch, &old, b"{}", "http://h/", now), Ok(()));
        assert_eq!(check(&ch, &old, b"{}", "http://h/", now + Duration::seconds(61)), Err(VerifyError::Mismatch));
        let new = headers(&[("x-telegram-bot-api-secret-token", "new-token")]);
        assert_eq!(check(&ch, &new, b"{}", "http://h/", now + Duration::seconds(61)), Ok(()));
    }

    #[test]
    fn meta_handshake_echoes_the_challenge_only_for_the_right_token() {
        let mut ch = channel(Source::Whatsapp, "s");
        ch.verify_token = Some(Secret::new("meatyhamhock"));
        let ok = "hub.mode=subscribe&hub.challenge=1158201444&hub.verify_token=meatyhamhock";
        assert_eq!(meta_handshake(&ch, ok).as_deref(), Some("1158201444"));
        assert_eq!(meta_handshake(&ch, "hub.mode=subscribe&hub.challenge=1&hub.verify_token=nope"), None);
        assert_eq!(meta_handshake(&ch, "hub.mode=unsubscribe&hub.challenge=1&hub.verify_token=meatyhamhock"), None);
        ch.verify_token = None;
        assert_eq!(meta_handshake(&ch, ok), None, "no token configured: no handshake");
        ch.verify_token = Some(Secret::new(""));
        assert_eq!(meta_handshake(&ch, "hub.mode=subscribe&hub.challenge=1&hub.verify_token="), None, "an empty token matches nothing");
    }

    #[test]
    fn reasons_are_bounded_labels() {
        assert_eq!(VerifyError::MissingHeader("x").reason(), "missing_header");
        assert_eq!(VerifyError::Malformed("x").reason(), "malformed");
        assert_eq!(VerifyError::Stale.reason(), "stale");
        assert_eq!(VerifyError::Mismatch.reason(), "mismatch");
    }
}

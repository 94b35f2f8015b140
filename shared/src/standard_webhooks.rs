//! Standard Webhooks signatures (<https://www.standardwebhooks.com/>): signing for the
//! forwarder, verification for the webchat source and the sink.
//!
//! `webhook-signature: v1,<base64 HMAC-SHA256(key, "{id}.{timestamp}.{body}")>` where the key is
//! the base64 part of a `whsec_` secret. Several space-separated signatures may be sent.

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;

use crate::Secret;

pub const ID_HEADER: &str = "webhook-id";
pub const TIMESTAMP_HEADER: &str = "webhook-timestamp";
pub const SIGNATURE_HEADER: &str = "webhook-signature";
/// The tolerance of the specification: five minutes either way.
pub const DEFAULT_TOLERANCE_S: i64 = 300;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SignatureError {
    #[error("the secret is not whsec_ followed by base64")]
    BadSecret,
    #[error("the timestamp is not unix seconds")]
    BadTimestamp,
    #[error("the timestamp is outside the tolerance")]
    Stale,
    #[error("no signature matches")]
    Mismatch,
}

/// The HMAC key of a `whsec_` secret (the prefix is optional, as in the reference libraries).
pub fn key_bytes(secret: &Secret) -> Result<Vec<u8>, SignatureError> {
    let s = secret.expose();
    let b64 = s.strip_prefix("whsec_").unwrap_or(s);
    let key = B64.decode(b64).map_err(|_| SignatureError::BadSecret)?;
    if key.is_empty() {
        return Err(SignatureError::BadSecret);
    }
    Ok(key)
}

fn mac(key: &[u8], id: &str, timestamp: &str, body: &[u8]) -> Hmac<Sha256> {
    // HMAC accepts keys of any length.
    let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(key).expect("HMAC takes any key length");
    mac.update(id.as_bytes());
    mac.update(b".");
    mac.update(timestamp.as_bytes());
    mac.update(b".");
    mac.update(body);
    mac
}

/// The `webhook-signature` value for one message: `v1,<base64>`.
pub fn sign(key: &[u8], id: &str, timestamp: i64, body: &[u8]) -> String {
    let tag = mac(key, id, &timestamp.to_string(), body).finalize().into_bytes();
    format!("v1,{}", B64.encode(tag))
}

/// Verifies a message. `now` is unix seconds. The comparison is constant-time and runs on the
/// exact bytes received.
pub fn verify(
    key: &[u8],
    id: &str,
    timestamp: &str,
    signatures: &str,
    body: &[u8],
    now: i64,
    tolerance_s: i64,
) -> Result<(), SignatureError> {
    let ts: i64 = timestamp.trim().parse().map_err(|_| SignatureError::BadTimestamp)?;
    // abs_diff: a timestamp near i64::MIN must not overflow (found by fuzzing).
    if now.abs_diff(ts) > tolerance_s.unsigned_abs() {
        return Err(SignatureError::Stale);
    }
    let expected = mac(key, id, timestamp.trim(), body);
    for candidate in signatures.split(' ') {
        let Some(b64) = candidate.strip_prefix("v1,") else {
            continue;
        };
        let Ok(sig) = B64.decode(b64) else { continue };
        if expected.clone().verify_slice(&sig).is_ok() {
            return Ok(());
        }
    }
    Err(SignatureError::Mismatch)
}

#[cfg(test)]
mod tests {
    use super::*;

    // The test vector published with the Standard Webhooks specification and its libraries.
    const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
    const ID: &str = "msg_p5jXN8AQM9LWM0D4loKWxJek";
    const TS: i64 = 1614265330;
    const BODY: &[u8] = br#"{"test": 2432232314}"#;
    const SIG: &str = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=";

    fn key() -> Vec<u8> {
        key_bytes(&Secret::new(SECRET)).expect("valid secret")
    }

    #[test]
    fn signs_the_published_test_vector() {
        assert_eq!(sign(&key(), ID, TS, BODY), SIG);
    }

    #[test]
    fn verifies_the_published_vector_among_several_signatures() {
        let header = format!("v1,bm9wZQ== v2,whatever {SIG}");
        assert_eq!(verify(&key(), ID, &TS.to_string(), &header, BODY, TS + 10, 300), Ok(()));
    }

    #[test]
    fn refuses_stale_tampered_and_malformed() {
        let ts = TS.to_string();
        assert_eq!(verify(&key(), ID, &ts, SIG, BODY, TS + 301, 300), Err(SignatureError::Stale));
        assert_eq!(verify(&key(), ID, &ts, SIG, BODY, TS - 301, 300), Err(SignatureError::Stale));
        assert_eq!(verify(&key(), ID, &ts, SIG, b"{\"test\": 2432232315}", TS, 300), Err(SignatureError::Mismatch));
        assert_eq!(verify(&key(), "msg_other", &ts, SIG, BODY, TS, 300), Err(SignatureError::Mismatch));
        assert_eq!(verify(&key(), ID, "soon", SIG, BODY, TS, 300), Err(SignatureError::BadTimestamp));
        assert_eq!(key_bytes(&Secret::new("whsec_!!")), Err(SignatureError::BadSecret));
        // Extreme timestamps are stale, never an overflow (a fuzzer's find).
        for extreme in [i64::MIN, i64::MIN + TS, i64::MAX] {
            assert_eq!(verify(&key(), ID, &extreme.to_string(), SIG, BODY, TS, 300), Err(SignatureError::Stale), "{extreme}");
        }
    }
}

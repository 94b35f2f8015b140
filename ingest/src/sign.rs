//! Signing as each platform does: the other side of `verify`, for tests, benchmarks and the
//! sample webhook that `hookline up` prints. Never used on the request path.

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use hmac::Mac;
use sha1::Sha1;
use sha2::{Digest, Sha256};
use std::collections::{BTreeMap, BTreeSet};

use hookline_shared::{standard_webhooks, Secret, Source};

use crate::verify::hmac;

/// Headers to send with `body` to `url` (the public URL, query string included) so that a
/// channel of `source` with `secret` accepts it. `now` is unix seconds.
pub fn signature_headers(source: Source, secret: &str, body: &[u8], url: &str, now: i64) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut add = |k: &str, v: String| out.push((k.to_string(), v));
    match source {
        Source::Whatsapp | Source::Messenger | Source::Instagram => {
            let tag = hmac::<Sha256>(secret.as_bytes(), &[body]).finalize().into_bytes();
            add("X-Hub-Signature-256", format!("sha256={}", hex::encode(tag)));
        }
        Source::Telegram => add("X-Telegram-Bot-Api-Secret-Token", secret.to_string()),
        Source::Twilio => {
            let query = url.split_once('?').map(|(_, q)| q).unwrap_or("");
            let json = form_urlencoded::parse(query.as_bytes()).any(|(k, _)| k == "bodySHA256");
            let mut data = url.to_string();
            if !json {
                let mut params: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
                for (k, v) in form_urlencoded::parse(body) {
                    params.entry(k.into_owned()).or_default().insert(v.into_owned());
                }
                for (k, vs) in params {
                    for v in vs {
                        data.push_str(&k);
                        data.push_str(&v);
                    }
                }
            }
            let tag = hmac::<Sha1>(secret.as_bytes(), &[data.as_bytes()]).finalize().into_bytes();
            add("X-Twilio-Signature", B64.encode(tag));
        }
        Source::Dialog360 => add("Authorization", secret.to_string()),
        Source::Tawkto => {
            let tag = hmac::<Sha1>(secret.as_bytes(), &[body]).finalize().into_bytes();
            add("X-Tawk-Signature", hex::encode(tag));
            add("X-Hook-Event-Id", hex::encode(&Sha256::digest(body)[..8]));
        }
        Source::Mercadopago => {
            let query = url.split_once('?').map(|(_, q)| q).unwrap_or("");
            // As the verifier (and Mercado Pago's SDKs) read it: trimmed, absent when empty.
            let data_id = form_urlencoded::parse(query.as_bytes())
                .find(|(k, _)| k == "data.id")
                .map(|(_, v)| v.trim().to_string())
                .filter(|v| !v.is_empty());
            let request_id = format!("req-{}", hex::encode(&Sha256::digest(body)[..6]));
            let mut manifest = String::new();
            if let Some(id) = data_id {
                manifest.push_str(&format!("id:{id};"));
            }
            manifest.push_str(&format!("request-id:{request_id};ts:{now};"));
            let tag = hmac::<Sha256>(secret.as_bytes(), &[manifest.as_bytes()]).finalize().into_bytes();
            add("x-signature", format!("ts={now},v1={}", hex::encode(tag)));
            add("x-request-id", request_id);
        }
        Source::Webchat => {
            let key = standard_webhooks::key_bytes(&Secret::new(secret)).unwrap_or_default();
            let id = format!("msg_{}", hex::encode(&Sha256::digest(body)[..10]));
            add("webhook-signature", standard_webhooks::sign(&key, &id, now, body));
            add("webhook-id", id);
            add("webhook-timestamp", now.to_string());
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::verify::test_support::*;

    #[test]
    fn reproduces_twilios_published_signature() {
        let body = b"CallSid=CA1234567890ABCDE&Caller=%2B14158675309&Digits=1234&From=%2B14158675309&To=%2B18005551212";
        let headers = signature_headers(Source::Twilio, "12345", body, "https://mycompany.com/myapp.php?foo=1&bar=2", 0);
        assert_eq!(headers, [("X-Twilio-Signature".to_string(), "RSOYDt4T1cUTdK1PDd93/VVr8B8=".to_string())]);
    }

    #[test]
    fn mercadopago_data_ids_are_signed_as_the_verifier_reads_them() {
        let ch = channel(Source::Mercadopago, "s");
        for url in ["https://h/w?data.id=123%20&type=payment", "https://h/w?data.id=&type=payment", "https://h/w?data.id=ABC"] {
            let mut h = http::HeaderMap::new();
            for (k, v) in signature_headers(Source::Mercadopago, "s", b"{}", url, 1_700_000_000) {
                h.insert(http::HeaderName::from_bytes(k.as_bytes()).expect("name"), v.parse().expect("value"));
            }
            assert_eq!(check(&ch, &h, b"{}", url, at(1_700_000_000)), Ok(()), "{url}");
        }
    }

    #[test]
    fn every_source_verifies_what_it_signs() {
        let now = 1_700_000_000;
        for source in Source::ALL {
            let secret = if source == Source::Webchat { "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw" } else { "s3cret" };
            let ch = channel(source, secret);
            let url = "https://hooks.example.com/webhooks/ch1?data.id=123";
            let body: &[u8] = if source == Source::Twilio { b"Body=hi&From=%2B1555" } else { br#"{"a":1}"# };
            let pairs = signature_headers(source, secret, body, url, now);
            let mut h = http::HeaderMap::new();
            for (k, v) in &pairs {
                h.insert(http::HeaderName::from_bytes(k.as_bytes()).expect("name"), v.parse().expect("value"));
            }
            assert_eq!(check(&ch, &h, body, url, at(now)), Ok(()), "{source}");
        }
    }
}

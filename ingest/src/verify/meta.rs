//! Meta (WhatsApp Cloud API, Messenger, Instagram):
//! `X-Hub-Signature-256: sha256=<hex HMAC-SHA256(app_secret, raw body)>`.

use sha2::Sha256;

use super::{header, hmac, verify_hex, SignedRequest, VerifyError};
use hookline_shared::Secret;

const HEADER: &str = "x-hub-signature-256";

pub fn verify(app_secret: &Secret, req: &SignedRequest<'_>) -> Result<(), VerifyError> {
    let value = header(req.headers, HEADER)?;
    let hex_sig = value.strip_prefix("sha256=").ok_or(VerifyError::Malformed(HEADER))?;
    verify_hex(hmac::<Sha256>(app_secret.expose().as_bytes(), &[req.body]), hex_sig, HEADER)
}

#[cfg(test)]
mod tests {
    use super::super::test_support::*;
    use super::super::VerifyError;
    use hookline_shared::Source;
    use proptest::prelude::*;

    const URL: &str = "http://localhost:8080/webhooks/ch1";

    // Published: WhatsApp/WhatsApp-Nodejs-SDK src/__tests__/utils.test.ts.
    #[test]
    fn verifies_the_whatsapp_sdk_vector() {
        let ch = channel(Source::Whatsapp, "TEST_APP_SECRET");
        let h = headers(&[("x-hub-signature-256", "sha256=0c61947b610d4f45e65f3d680e26027121ec2413e77598bcb6cfc6e0d9888221")]);
        assert_eq!(check(&ch, &h, b"test", URL, at(0)), Ok(()));
        assert_eq!(check(&ch, &h, b"tesT", URL, at(0)), Err(VerifyError::Mismatch));
    }

    // Meta signs the escaped-unicode bytes it sends: the raw bytes, never re-serialized JSON.
    #[test]
    fn verifies_escaped_unicode_on_the_exact_bytes() {
        let body = br#"{"object":"whatsapp_business_account","entry":[{"id":"0","changes":[{"field":"messages","value":{"messaging_product":"whatsapp","messages":[{"from":"16505551234","id":"wamid.TEST","timestamp":"1700000000","type":"text","text":{"body":"caf\u00e9"}}]}}]}]}"#;
        let ch = channel(Source::Messenger, "hookline-meta-secret");
        let h = headers(&[("x-hub-signature-256", "sha256=dada950ec881b255ba5f29b64499d8a3b1bb6a2998a9c311550e281ef1822031")]);
        assert_eq!(check(&ch, &h, body, URL, at(0)), Ok(()));
        let decoded = String::from_utf8_lossy(body).replace("\\u00e9", "é");
        assert_eq!(check(&ch, &h, decoded.as_bytes(), URL, at(0)), Err(VerifyError::Mismatch));
    }

    #[test]
    fn refuses_missing_and_malformed_headers() {
        let ch = channel(Source::Instagram, "s");
        assert_eq!(check(&ch, &headers(&[]), b"x", URL, at(0)), Err(VerifyError::MissingHeader("x-hub-signature-256")));
        let sha1 = headers(&[("x-hub-signature-256", "sha1=abcd")]);
        assert_eq!(check(&ch, &sha1, b"x", URL, at(0)), Err(VerifyError::Malformed("x-hub-signature-256")));
        let not_hex = headers(&[("x-hub-signature-256", "sha256=zz")]);
        assert_eq!(check(&ch, &not_hex, b"x", URL, at(0)), Err(VerifyError::Malformed("x-hub-signature-256")));
    }

    proptest! {
        #[test]
        fn a_signed_body_verifies_and_any_flipped_byte_fails(body in proptest::collection::vec(any::<u8>(), 1..512), idx in any::<prop::sample::Index>(), bit in 0u8..8) {
            use hmac::Mac;
            let ch = channel(Source::Whatsapp, "prop-secret");
            let sig = hex::encode(super::hmac::<sha2::Sha256>(b"prop-secret", &[&body]).finalize().into_bytes());
            let h = headers(&[("x-hub-signature-256", &format!("sha256={sig}"))]);
            prop_assert_eq!(check(&ch, &h, &body, URL, at(0)), Ok(()));
            let mut flipped = body.clone();
            let i = idx.index(flipped.len());
            flipped[i] ^= 1 << bit;
            prop_assert_eq!(check(&ch, &h, &flipped, URL, at(0)), Err(VerifyError::Mismatch));
        }

        #[test]
        fn arbitrary_signature_headers_never_panic(value in "[ -~]{0,200}", body in proptest::collection::vec(any::<u8>(), 0..64)) {
            let ch = channel(Source::Whatsapp, "s");
            let h = headers(&[("x-hub-signature-256", &value)]);
            let result = check(&ch, &h, &body, URL, at(0));
            prop_assert!(result.is_err());
        }
    }
}

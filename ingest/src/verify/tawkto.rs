//! Tawk.to: `X-Tawk-Signature: <hex HMAC-SHA1(webhook secret, raw body)>`.

use sha1::Sha1;

use super::{header, hmac, verify_hex, SignedRequest, VerifyError};
use hookline_shared::Secret;

const HEADER: &str = "x-tawk-signature";

pub fn verify(secret: &Secret, req: &SignedRequest<'_>) -> Result<(), VerifyError> {
    let value = header(req.headers, HEADER)?;
    verify_hex(hmac::<Sha1>(secret.expose().as_bytes(), &[req.body]), value, HEADER)
}

#[cfg(test)]
mod tests {
    use super::super::test_support::*;
    use super::super::VerifyError;
    use hookline_shared::Source;
    use proptest::prelude::*;

    // Constructed (tawk.to publishes the scheme, not a vector); recomputed with Python's hmac.
    const BODY: &[u8] = br#"{"event":"chat:start","chatId":"00000000-0000-0000-0000-000000000001","time":"2024-01-15T10:30:00.000Z","message":{"text":"Hello","type":"msg","sender":{"type":"visitor"}},"visitor":{"name":"V1","email":"v1@example.com","city":"Lisbon","country":"PT"},"property":{"id":"5c659c297f688621d571cbb8","name":"Example"}}"#;

    #[test]
    fn verifies_hex_hmac_sha1_of_the_body() {
        let ch = channel(Source::Tawkto, "hookline-tawk-secret");
        let h = headers(&[("x-tawk-signature", "3dcae7b3cf8087807872c43e854c5f4bca899bb5"), ("x-hook-event-id", "e1")]);
        assert_eq!(check(&ch, &h, BODY, "http://h/", at(0)), Ok(()));
        assert_eq!(check(&ch, &h, &BODY[1..], "http://h/", at(0)), Err(VerifyError::Mismatch));
        assert_eq!(check(&ch, &headers(&[]), BODY, "http://h/", at(0)), Err(VerifyError::MissingHeader("x-tawk-signature")));
    }

    proptest! {
        #[test]
        fn a_signed_body_verifies_and_any_flipped_byte_fails(body in proptest::collection::vec(any::<u8>(), 1..256), idx in any::<prop::sample::Index>()) {
            use hmac::Mac;
            let ch = channel(Source::Tawkto, "k");
            let sig = hex::encode(super::hmac::<sha1::Sha1>(b"k", &[&body]).finalize().into_bytes());
            let h = headers(&[("x-tawk-signature", &sig)]);
            prop_assert_eq!(check(&ch, &h, &body, "http://h/", at(0)), Ok(()));
            let mut flipped = body.clone();
            let i = idx.index(flipped.len());
            flipped[i] = flipped[i].wrapping_add(1);
            prop_assert_eq!(check(&ch, &h, &flipped, "http://h/", at(0)), Err(VerifyError::Mismatch));
        }
    }
}

//! Webchat, hookline's own format: Standard Webhooks (`webhook-id`, `webhook-timestamp`,
//! `webhook-signature`, several signatures allowed) within a tolerance (default 5 minutes).

use hookline_shared::standard_webhooks::{self as sw, SignatureError};
use hookline_shared::Secret;

use super::{header, SignedRequest, VerifyError};

pub fn verify(secret: &Secret, req: &SignedRequest<'_>, tolerance_s: i64) -> Result<(), VerifyError> {
    let id = header(req.headers, sw::ID_HEADER)?;
    let timestamp = header(req.headers, sw::TIMESTAMP_HEADER)?;
    let signatures = header(req.headers, sw::SIGNATURE_HEADER)?;
    // The secret's shape is checked when the channel is configured.
    let key = sw::key_bytes(secret).map_err(|_| VerifyError::Mismatch)?;
    sw::verify(&key, id, timestamp, signatures, req.body, req.now.unix_timestamp(), tolerance_s).map_err(|e| match e {
        SignatureError::BadTimestamp => VerifyError::Malformed(sw::TIMESTAMP_HEADER),
        SignatureError::Stale => VerifyError::Stale,
        SignatureError::BadSecret | SignatureError::Mismatch => VerifyError::Mismatch,
    })
}

#[cfg(test)]
mod tests {
    use super::super::test_support::*;
    use super::super::VerifyError;
    use hookline_shared::Source;

    // Published: the Rust Standard Webhooks library's test_sign.
    const SECRET: &str = "whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD";
    const BODY: &[u8] = br#"{"email":"test@example.com","username":"test_user"}"#;

    fn h(ts: &str) -> http::HeaderMap {
        headers(&[
            ("webhook-id", "msg_27UH4WbU6Z5A5EzD8u03UvzRbpk"),
            ("webhook-timestamp", ts),
            ("webhook-signature", "v1,tZ1I4/hDygAJgO5TYxiSd6Sd0kDW6hPenDe+bTa3Kkw="),
        ])
    }

    #[test]
    fn verifies_the_published_vector_within_five_minutes() {
        let ch = channel(Source::Webchat, SECRET);
        assert_eq!(check(&ch, &h("1649367553"), BODY, "http://h/", at(1649367553 + 299)), Ok(()));
        assert_eq!(check(&ch, &h("1649367553"), BODY, "http://h/", at(1649367553 + 301)), Err(VerifyError::Stale));
        assert_eq!(check(&ch, &h("1649367554"), BODY, "http://h/", at(1649367553)), Err(VerifyError::Mismatch));
        assert_eq!(check(&ch, &h("yesterday"), BODY, "http://h/", at(1649367553)), Err(VerifyError::Malformed("webhook-timestamp")));
        assert_eq!(check(&ch, &headers(&[]), BODY, "http://h/", at(0)), Err(VerifyError::MissingHeader("webhook-id")));
    }
}

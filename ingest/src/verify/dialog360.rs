//! 360dialog: it signs nothing of its own. A channel is verified either by a header that the
//! integrator set, with the channel secret as its value, when registering the webhook URL
//! (the name is configurable: `settings.header_name`, hookline's default `Authorization`), or
//! by the partner-level `x-360dialog-signature` (hex HMAC-SHA256 of the body under the
//! partner's platform secret; `settings.auth = "signature"`).

use sha2::Sha256;

use super::{constant_time_eq, header, hmac, verify_hex, SignedRequest, VerifyError};
use hookline_shared::channel::{ChannelSettings, Dialog360Auth};
use hookline_shared::Secret;

const SIGNATURE_HEADER: &str = "x-360dialog-signature";

pub fn verify(secret: &Secret, settings: &ChannelSettings, req: &SignedRequest<'_>) -> Result<(), VerifyError> {
    match &settings.dialog360 {
        Some(Dialog360Auth::Signature) => {
            let value = header(req.headers, SIGNATURE_HEADER)?;
            let hex_sig = value.strip_prefix("sha256=").unwrap_or(value);
            verify_hex(hmac::<Sha256>(secret.expose().as_bytes(), &[req.body]), hex_sig, SIGNATURE_HEADER)
        }
        Some(Dialog360Auth::Header(name)) => check_header(secret, req, name),
        None => check_header(secret, req, "authorization"),
    }
}

fn check_header(secret: &Secret, req: &SignedRequest<'_>, name: &str) -> Result<(), VerifyError> {
    let value = req.headers.get(name).ok_or(VerifyError::MissingHeader("the configured 360dialog header"))?;
    if constant_time_eq(value.as_bytes(), secret.expose().as_bytes()) {
        Ok(())
    } else {
        Err(VerifyError::Mismatch)
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_support::*;
    use super::super::VerifyError;
    use hookline_shared::channel::ChannelSettings;
    use hookline_shared::Source;
    use proptest::prelude::*;

    const BODY: &[u8] = br#"{"object":"whatsapp_business_account","entry":[]}"#;

    #[test]
    fn the_default_is_the_authorization_header() {
        let ch = channel(Source::Dialog360, "Bearer s3cret");
        assert_eq!(check(&ch, &headers(&[("authorization", "Bearer s3cret")]), BODY, "http://h/", at(0)), Ok(()));
        assert_eq!(check(&ch, &headers(&[("authorization", "Bearer s3creT")]), BODY, "http://h/", at(0)), Err(VerifyError::Mismatch));
        assert!(matches!(check(&ch, &headers(&[]), BODY, "http://h/", at(0)), Err(VerifyError::MissingHeader(_))));
    }

    #[test]
    fn a_configured_header_name_is_used() {
        let mut ch = channel(Source::Dialog360, "abc");
        let mut map = serde_json::Map::new();
        map.insert("header_name".into(), "X-Partner-Auth".into());
        ch.settings = ChannelSettings::from_map(Source::Dialog360, &map).expect("settings");
        assert_eq!(check(&ch, &headers(&[("x-partner-auth", "abc")]), BODY, "http://h/", at(0)), Ok(()));
        assert!(check(&ch, &headers(&[("authorization", "abc")]), BODY, "http://h/", at(0)).is_err());
    }

    #[test]
    fn signature_mode_checks_hex_hmac_sha256_of_the_body() {
        // Constructed: the encoding (bare hex) is assumed; a `sha256=` prefix is tolerated.
        let mut ch = channel(Source::Dialog360, "hookline-360-platform-secret");
        let mut map = serde_json::Map::new();
        map.insert("auth".into(), "signature".into());
        ch.settings = ChannelSettings::from_map(Source::Dialog360, &map).expect("settings");
        let sig = "f9679f400f79488d1c37d1a3a465c84400067698def32ffac67ed7837544696e";
        assert_eq!(check(&ch, &headers(&[("x-360dialog-signature", sig)]), BODY, "http://h/", at(0)), Ok(()));
        assert_eq!(check(&ch, &headers(&[("x-360dialog-signature", &format!("sha256={sig}"))]), BODY, "http://h/", at(0)), Ok(()));
        assert_eq!(check(&ch, &headers(&[("x-360dialog-signature", sig)]), b"{}", "http://h/", at(0)), Err(VerifyError::Mismatch));
    }

    proptest! {
        #[test]
        fn arbitrary_values_never_panic(value in "[ -~]{0,100}") {
            let ch = channel(Source::Dialog360, "k");
            let _ = check(&ch, &headers(&[("authorization", &value), ("x-360dialog-signature", &value)]), BODY, "http://h/", at(0));
        }
    }
}

//! Telegram: `X-Telegram-Bot-Api-Secret-Token` equals the `secret_token` given to setWebhook.

use super::{constant_time_eq, header, SignedRequest, VerifyError};
use hookline_shared::Secret;

const HEADER: &str = "x-telegram-bot-api-secret-token";

pub fn verify(secret_token: &Secret, req: &SignedRequest<'_>) -> Result<(), VerifyError> {
    let value = header(req.headers, HEADER)?;
    if constant_time_eq(value.as_bytes(), secret_token.expose().as_bytes()) {
        Ok(())
    } else {
        Err(VerifyError::Mismatch)
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_support::*;
    use super::super::VerifyError;
    use hookline_shared::Source;
    use proptest::prelude::*;

    const TOKEN: &str = "hookline_TEST-token_0123456789";

    #[test]
    fn accepts_the_exact_token_only() {
        let ch = channel(Source::Telegram, TOKEN);
        let url = "http://h/webhooks/ch1";
        assert_eq!(check(&ch, &headers(&[("x-telegram-bot-api-secret-token", TOKEN)]), b"{}", url, at(0)), Ok(()));
        for wrong in ["hookline_TEST-token_012345678", "hookline_TEST-token_01234567890", "HOOKLINE_TEST-token_0123456789", ""] {
            let h = headers(&[("x-telegram-bot-api-secret-token", wrong)]);
            assert_eq!(check(&ch, &h, b"{}", url, at(0)), Err(VerifyError::Mismatch), "{wrong:?}");
        }
        assert_eq!(check(&ch, &headers(&[]), b"{}", url, at(0)), Err(VerifyError::MissingHeader("x-telegram-bot-api-secret-token")));
    }

    proptest! {
        #[test]
        fn arbitrary_tokens_never_panic_and_never_pass(value in "[ -~]{0,300}") {
            prop_assume!(value != TOKEN);
            let ch = channel(Source::Telegram, TOKEN);
            let h = headers(&[("x-telegram-bot-api-secret-token", &value)]);
            let result = check(&ch, &h, b"{}", "http://h/", at(0));
            prop_assert!(result.is_err());
        }
    }
}

//! Twilio: `X-Twilio-Signature: base64(HMAC-SHA1(auth_token, URL + form params))`.
//!
//! The URL is the public URL the platform called, query string included. Form parameters are
//! appended sorted by name, each name then its value; a name sent with several values
//! contributes each distinct value once, sorted. A JSON body is not appended: the URL carries
//! `bodySHA256` (hex SHA-256 of the body), which must match. As Twilio's own libraries do,
//! the URL is also tried without its port and with the scheme's default port.

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use hmac::Mac;
use sha1::Sha1;
use sha2::{Digest, Sha256};
use std::collections::{BTreeMap, BTreeSet};

use super::{constant_time_eq, header, hmac, SignedRequest, VerifyError};
use hookline_shared::Secret;

const HEADER: &str = "x-twilio-signature";

pub fn verify(auth_token: &Secret, req: &SignedRequest<'_>) -> Result<(), VerifyError> {
    let sig = B64.decode(header(req.headers, HEADER)?.trim()).map_err(|_| VerifyError::Malformed(HEADER))?;
    let body_sha256 =
        req.query.and_then(|q| form_urlencoded::parse(q.as_bytes()).find(|(k, _)| k == "bodySHA256").map(|(_, v)| v.into_owned()));
    let params = match body_sha256 {
        Some(expected) => {
            let actual = hex::encode(Sha256::digest(req.body));
            if !constant_time_eq(actual.as_bytes(), expected.to_ascii_lowercase().as_bytes()) {
                return Err(VerifyError::Mismatch);
            }
            String::new()
        }
        None => sorted_form_params(req.body),
    };
    for url in url_variants(req.public_url) {
        let mac = hmac::<Sha1>(auth_token.expose().as_bytes(), &[url.as_bytes(), params.as_bytes()]);
        if mac.verify_slice(&sig).is_ok() {
            return Ok(());
        }
    }
    Err(VerifyError::Mismatch)
}

/// `b=2&a=1&a=0&a=1` → `a0a1b2`.
fn sorted_form_params(body: &[u8]) -> String {
    let mut params: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for (k, v) in form_urlencoded::parse(body) {
        params.entry(k.into_owned()).or_default().insert(v.into_owned());
    }
    let mut out = String::new();
    for (k, values) in &params {
        for v in values {
            out.push_str(k);
            out.push_str(v);
        }
    }
    out
}

/// The URL as given, without any explicit port, and with the default port when it had none.
fn url_variants(url: &str) -> Vec<String> {
    let mut variants = vec![url.to_string()];
    let Some(scheme_end) = url.find("://") else {
        return variants;
    };
    let authority_start = scheme_end + 3;
    let authority_end = url[authority_start..].find(['/', '?', '#']).map_or(url.len(), |i| authority_start + i);
    let authority = &url[authority_start..authority_end];
    let host_start = authority.rfind('@').map_or(0, |i| i + 1);
    let host_port = &authority[host_start..];
    // An IPv6 literal's colons are inside brackets.
    let port_colon = match host_port.rfind(']') {
        Some(close) => host_port[close..].find(':').map(|i| close + i),
        None => host_port.find(':'),
    };
    let rebuild =
        |new_host_port: &str| format!("{}{}{}{}", &url[..authority_start], &authority[..host_start], new_host_port, &url[authority_end..]);
    match port_colon {
        Some(colon) => variants.push(rebuild(&host_port[..colon])),
        None => {
            let default_port = if url[..scheme_end].eq_ignore_ascii_case("https") { "443" } else { "80" };
            variants.push(rebuild(&format!("{host_port}:{default_port}")));
        }
    }
    variants
}

#[cfg(test)]
mod tests {
    use super::super::test_support::*;
    use super::super::VerifyError;
    use super::url_variants;
    use hookline_shared::Source;
    use proptest::prelude::*;

    // Published: twilio/twilio-python tests/unit/test_request_validator.py and
    // twilio/twilio-node spec/validation.spec.js (auth token 12345).
    const TOKEN: &str = "12345";
    const URL: &str = "https://mycompany.com/myapp.php?foo=1&bar=2";
    const FORM: &[u8] = b"CallSid=CA1234567890ABCDE&Caller=%2B14158675309&Digits=1234&From=%2B14158675309&To=%2B18005551212";

    fn sig(value: &str) -> http::HeaderMap {
        headers(&[("x-twilio-signature", value)])
    }

    #[test]
    fn verifies_twilios_published_form_vectors() {
        let ch = channel(Source::Twilio, TOKEN);
        let cases = [
            (URL, "RSOYDt4T1cUTdK1PDd93/VVr8B8="),
            // Signed with :443 while we are configured without it, and the other way round.
            (URL, "kvajT1Ptam85bY51eRf/AJRuM3w="),
            ("https://mycompany.com:443/myapp.php?foo=1&bar=2", "RSOYDt4T1cUTdK1PDd93/VVr8B8="),
            ("http://mycompany.com/myapp.php?foo=1&bar=2", "0ZXoZLH/DfblKGATFgpif+LLRf4="),
            ("http://mycompany.com:1234/myapp.php?foo=1&bar=2", "Zmvh+3yNM1Phv2jhDCwEM3q5ebU="),
            ("https://user:pass@mycompany.com/myapp.php?foo=1&bar=2", "CukzLTc1tT5dXEDIHm/tKBanW10="),
            ("https://user:pass@mycompany.com/myapp.php?foo=1&bar=2", "ZQFR1PTIZXF2MXB8ZnKCvnnA+rI="),
            ("https://user@mycompany.com/myapp.php?foo=1&bar=2", "2YRLlVAflCqxaNicjMpJcSTgzSs="),
        ];
        for (url, expected) in cases {
            assert_eq!(check(&ch, &sig(expected), FORM, url, at(0)), Ok(()), "{url} {expected}");
        }
        assert_eq!(check(&ch, &sig("RSOYDt4T1cUTdK1PDd93/VVr8B8="), b"CallSid=CA1234567890ABCDE", URL, at(0)), Err(VerifyError::Mismatch));
        assert_eq!(
            check(&ch, &sig("RSOYDt4T1cUTdK1PDd93/VVr8B8="), FORM, "https://mycompany.com/other.php?foo=1&bar=2", at(0)),
            Err(VerifyError::Mismatch)
        );
    }

    #[test]
    fn repeated_keys_sign_each_distinct_value_once_sorted() {
        let ch = channel(Source::Twilio, TOKEN);
        let body = b"Sid=CA123&SidAccount=AC123&Digits=5678&Digits=1234&Digits=1234";
        assert_eq!(check(&ch, &sig("IK+Dwps556ElfBT0I3Rgjkr1wJU="), body, URL, at(0)), Ok(()));
        let either_order = b"MessagingBinding.Address=%2B1325xxxxxxx&MessagingBinding.Address=%2B1415xxxxxxx";
        assert_eq!(check(&ch, &sig("83O6e2vORAoJHUNzJjDWN1jz+BA="), either_order, URL, at(0)), Ok(()));
    }

    #[test]
    fn json_bodies_are_covered_by_body_sha256() {
        let ch = channel(Source::Twilio, TOKEN);
        let body = br#"{"property": "value", "boolean": true}"#;
        let hash = "0a1ff7634d9ab3b95db5c9a2dfe9416e41502b283a80c7cf19632632f96e6620";
        let url = format!("{URL}&bodySHA256={hash}");
        assert_eq!(check(&ch, &sig("a9nBmqA0ju/hNViExpshrM61xv4="), body, &url, at(0)), Ok(()));
        let tampered = br#"{"property": "value", "boolean": false}"#;
        assert_eq!(check(&ch, &sig("a9nBmqA0ju/hNViExpshrM61xv4="), tampered, &url, at(0)), Err(VerifyError::Mismatch));
        // Published vector that matches only the :443 variant of the URL.
        let empty = "44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a";
        let url = format!("{URL}&bodySHA256={empty}");
        assert_eq!(check(&ch, &sig("Ldidvp12m26NI7eqEvxnEpkd9Hc="), b"{}", &url, at(0)), Ok(()));
    }

    #[test]
    fn url_variants_change_only_the_port() {
        assert_eq!(url_variants("https://h/p?q=1"), ["https://h/p?q=1", "https://h:443/p?q=1"]);
        assert_eq!(url_variants("http://u:p@h:8080/p"), ["http://u:p@h:8080/p", "http://u:p@h/p"]);
        assert_eq!(url_variants("http://[::1]:80/x"), ["http://[::1]:80/x", "http://[::1]/x"]);
        assert_eq!(url_variants("http://h"), ["http://h", "http://h:80"]);
    }

    proptest! {
        #[test]
        fn arbitrary_input_never_panics(sig_value in "[ -~]{0,64}", body in proptest::collection::vec(any::<u8>(), 0..256), url in "[ -~]{0,80}") {
            let ch = channel(Source::Twilio, TOKEN);
            let _ = check(&ch, &headers(&[("x-twilio-signature", &sig_value)]), &body, &url, at(0));
            let _ = url_variants(&url);
        }
    }
}

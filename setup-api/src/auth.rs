//! Bearer tokens: every route under `/api/v1` needs `Authorization: Bearer <token>` with one of
//! `setup_api.tokens`. Tokens are compared as SHA-256 digests in constant time, all of them
//! every time, so neither the position nor the length of a match leaks through timing.

use sha2::{Digest, Sha256};
use subtle::{Choice, ConstantTimeEq};

use hookline_shared::Secret;

pub struct Tokens {
    digests: Vec<[u8; 32]>,
}

fn digest(token: &[u8]) -> [u8; 32] {
    Sha256::digest(token).into()
}

impl Tokens {
    pub fn new(tokens: &[Secret]) -> Self {
        Tokens { digests: tokens.iter().map(|t| digest(t.expose().as_bytes())).collect() }
    }

    pub fn is_empty(&self) -> bool {
        self.digests.is_empty()
    }

    /// Whether the value of an `Authorization` header carries an accepted token.
    pub fn accepts_header(&self, header: Option<&[u8]>) -> bool {
        let Some(value) = header else {
            return false;
        };
        let Some(token) = strip_bearer(value) else {
            return false;
        };
        let presented = digest(token);
        let mut found = Choice::from(0);
        for d in &self.digests {
            found |= d.ct_eq(&presented);
        }
        bool::from(found)
    }
}

fn strip_bearer(value: &[u8]) -> Option<&[u8]> {
    if value.len() < 7 || !value[..7].eq_ignore_ascii_case(b"bearer ") {
        return None;
    }
    let token = value[7..].trim_ascii();
    (!token.is_empty()).then_some(token)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_configured_token_is_accepted() {
        let tokens = Tokens::new(&[Secret::new("first-token-0123456789"), Secret::new("second-token-0123456789")]);
        for ok in [&b"Bearer first-token-0123456789"[..], b"bearer second-token-0123456789", b"BEARER  second-token-0123456789 "] {
            assert!(tokens.accepts_header(Some(ok)), "{:?}", String::from_utf8_lossy(ok));
        }
        for bad in [&b"Bearer first-token-012345678"[..], b"Bearer ", b"Basic first-token-0123456789", b"first-token-0123456789", b""] {
            assert!(!tokens.accepts_header(Some(bad)), "{:?}", String::from_utf8_lossy(bad));
        }
        assert!(!tokens.accepts_header(None));
        assert!(!Tokens::new(&[]).accepts_header(Some(b"Bearer anything")));
    }
}

//! Encryption of channel secrets at rest: AES-256-GCM under `secrets.key`.
//!
//! Every sealed value records the id of the key that sealed it, so that a key can be rotated:
//! a `Keyring` holds the current key (used to seal) and older keys (still able to open).
//! The associated data binds a sealed value to its channel, so a ciphertext copied onto
//! another channel does not open.

use aes_gcm::aead::{Aead, Generate, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::Secret;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CryptoError {
    #[error("the key is not valid base64 of 32 bytes")]
    BadKey,
    #[error("sealed with key {0}, which this keyring does not hold")]
    UnknownKey(String),
    #[error("the sealed value is malformed")]
    Malformed,
    #[error("the sealed value does not open with its key (tampered, or bound to another channel)")]
    Open,
}

/// A secret as stored in Postgres and in the KV bucket.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Sealed {
    /// Id of the key that sealed it.
    pub kid: String,
    /// 12-byte nonce, base64.
    pub nonce: String,
    /// Ciphertext with its tag, base64.
    pub ct: String,
}

/// One 32-byte AES-256-GCM key and its id.
pub struct SecretsKey {
    id: String,
    cipher: Aes256Gcm,
}

impl SecretsKey {
    /// Parses a base64 (standard alphabet) 32-byte key.
    pub fn from_base64(key: &Secret) -> Result<Self, CryptoError> {
        let bytes = B64.decode(key.expose().trim()).map_err(|_| CryptoError::BadKey)?;
        if bytes.len() != 32 {
            return Err(CryptoError::BadKey);
        }
        let cipher = Aes256Gcm::new_from_slice(&bytes).map_err(|_| CryptoError::BadKey)?;
        let digest = Sha256::new().chain_update(b"hookline-key-id\0").chain_update(&bytes).finalize();
        Ok(SecretsKey { id: hex::encode(&digest[..6]), cipher })
    }

    pub fn id(&self) -> &str {
        &self.id
    }
}

/// A fresh random key, base64, for `hookline up` and for operators.
pub fn generate_key_base64() -> Result<Secret, getrandom::Error> {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes)?;
    Ok(Secret::new(B64.encode(bytes)))
}

/// The current key and the older ones that may still open sealed values.
pub struct Keyring {
    current: SecretsKey,
    previous: Vec<SecretsKey>,
}

impl Keyring {
    pub fn new(current: SecretsKey, previous: Vec<SecretsKey>) -> Self {
        Keyring { current, previous }
    }

    pub fn current_id(&self) -> &str {
        &self.current.id
    }

    /// Seals `plaintext`, bound to `context` (the channel id).
    pub fn seal(&self, plaintext: &Secret, context: &str) -> Sealed {
        let nonce = Nonce::generate();
        let ct = self
            .current
            .cipher
            .encrypt(&nonce, Payload { msg: plaintext.expose().as_bytes(), aad: context.as_bytes() })
            // AES-GCM encryption fails only for inputs over 64 GiB.
            .expect("AES-GCM encryption of a small secret");
        Sealed { kid: self.current.id.clone(), nonce: B64.encode(nonce.as_slice()), ct: B64.encode(ct) }
    }

    /// Opens a sealed value bound to `context`.
    pub fn open(&self, sealed: &Sealed, context: &str) -> Result<Secret, CryptoError> {
        let key = std::iter::once(&self.current)
            .chain(self.previous.iter())
            .find(|k| k.id == sealed.kid)
            .ok_or_else(|| CryptoError::UnknownKey(sealed.kid.clone()))?;
        let nonce_bytes = B64.decode(&sealed.nonce).map_err(|_| CryptoError::Malformed)?;
        let nonce = Nonce::try_from(nonce_bytes.as_slice()).map_err(|_| CryptoError::Malformed)?;
        let ct = B64.decode(&sealed.ct).map_err(|_| CryptoError::Malformed)?;
        let plain = key.cipher.decrypt(&nonce, Payload { msg: &ct, aad: context.as_bytes() }).map_err(|_| CryptoError::Open)?;
        String::from_utf8(plain).map(Secret::new).map_err(|_| CryptoError::Malformed)
    }

    /// Whether `sealed` was sealed by an older key and should be sealed again.
    pub fn needs_reseal(&self, sealed: &Sealed) -> bool {
        sealed.kid != self.current.id
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> SecretsKey {
        SecretsKey::from_base64(&generate_key_base64().expect("random")).expect("valid key")
    }

    #[test]
    fn seal_then_open_round_trips_and_hides_the_plaintext() {
        let ring = Keyring::new(key(), vec![]);
        let sealed = ring.seal(&Secret::new("app-secret-123"), "ch1");
        assert!(!sealed.ct.contains("app-secret-123"));
        assert_eq!(ring.open(&sealed, "ch1").expect("opens").expose(), "app-secret-123");
    }

    #[test]
    fn a_sealed_value_is_bound_to_its_channel() {
        let ring = Keyring::new(key(), vec![]);
        let sealed = ring.seal(&Secret::new("s"), "ch1");
        assert_eq!(ring.open(&sealed, "ch2"), Err(CryptoError::Open));
    }

    #[test]
    fn an_older_key_still_opens_after_rotation() {
        let old = Keyring::new(key(), vec![]);
        let sealed = old.seal(&Secret::new("s"), "c");
        let rotated = Keyring::new(key(), vec![old.current]);
        assert!(rotated.needs_reseal(&sealed));
        assert_eq!(rotated.open(&sealed, "c").expect("opens").expose(), "s");
        let without = Keyring::new(key(), vec![]);
        assert!(matches!(without.open(&sealed, "c"), Err(CryptoError::UnknownKey(_))));
    }

    #[test]
    fn keys_must_be_32_bytes_of_base64() {
        for bad in ["", "not base64!!", "c2hvcnQ="] {
            assert!(SecretsKey::from_base64(&Secret::new(bad)).is_err(), "{bad}");
        }
    }
}

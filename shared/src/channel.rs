//! Channels: what the KV bucket `hookline_channels` holds (`ChannelRecord`, secrets sealed),
//! what `hookline.toml` may declare (`ChannelDecl`), and what ingest keeps in memory once the
//! secrets are opened (`Channel`).

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use crate::crypto::{CryptoError, Keyring, Sealed};
use crate::{Secret, Source};

/// A channel declared in `hookline.toml` (written to the bucket at ingest's start).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChannelDecl {
    pub id: String,
    pub tenant_id: String,
    pub source: Source,
    pub secret: Secret,
    pub verify_token: Option<Secret>,
    pub platform: Option<String>,
    pub name: Option<String>,
    #[serde(default)]
    pub default: bool,
    #[serde(default)]
    pub settings: serde_json::Map<String, serde_json::Value>,
}

impl ChannelDecl {
    pub fn platform_or_default(&self) -> &str {
        self.platform.as_deref().unwrap_or_else(|| self.source.platforms()[0])
    }

    pub fn to_record(&self, keyring: &Keyring, now: OffsetDateTime) -> ChannelRecord {
        ChannelRecord {
            id: self.id.clone(),
            tenant_id: self.tenant_id.clone(),
            source: self.source,
            platform: self.platform_or_default().to_string(),
            name: self.name.clone(),
            default: self.default,
            secret: keyring.seal(&self.secret, &self.id),
            previous_secret: None,
            verify_token: self.verify_token.as_ref().map(|t| keyring.seal(t, &self.id)),
            settings: self.settings.clone(),
            updated_at: now,
        }
    }
}

/// A secret that keeps verifying until it expires (rotation).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PreviousSecret {
    pub secret: Sealed,
    #[serde(with = "time::serde::rfc3339")]
    pub expires_at: OffsetDateTime,
}

/// One channel as stored in the KV bucket, keyed by its id. Secrets stay sealed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChannelRecord {
    pub id: String,
    pub tenant_id: String,
    pub source: Source,
    pub platform: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default)]
    pub default: bool,
    pub secret: Sealed,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub previous_secret: Option<PreviousSecret>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verify_token: Option<Sealed>,
    #[serde(default)]
    pub settings: serde_json::Map<String, serde_json::Value>,
    #[serde(with = "time::serde::rfc3339")]
    pub updated_at: OffsetDateTime,
}

#[derive(Debug, thiserror::Error)]
pub enum ChannelError {
    #[error("channel {id}: a secret does not open: {source}")]
    Crypto { id: String, source: CryptoError },
    #[error("channel {id}: settings: {message}")]
    Settings { id: String, message: String },
}

impl ChannelRecord {
    /// Opens the secrets: the in-memory channel ingest verifies with.
    pub fn open(&self, keyring: &Keyring) -> Result<Channel, ChannelError> {
        let crypto = |source| ChannelError::Crypto { id: self.id.clone(), source };
        let secret = keyring.open(&self.secret, &self.id).map_err(crypto)?;
        let previous = match &self.previous_secret {
            Some(p) => Some((keyring.open(&p.secret, &self.id).map_err(crypto)?, p.expires_at)),
            None => None,
        };
        let verify_token = match &self.verify_token {
            Some(t) => Some(keyring.open(t, &self.id).map_err(crypto)?),
            None => None,
        };
        let settings = ChannelSettings::from_map(self.source, &self.settings)
            .map_err(|message| ChannelError::Settings { id: self.id.clone(), message })?;
        Ok(Channel {
            id: self.id.clone(),
            tenant_id: self.tenant_id.clone(),
            source: self.source,
            platform: self.platform.clone(),
            default: self.default,
            secrets: ChannelSecrets { current: secret, previous },
            verify_token,
            settings,
        })
    }
}

/// The secrets a request may be signed with: the current one, and the previous one until its
/// expiry.
#[derive(Debug, Clone)]
pub struct ChannelSecrets {
    pub current: Secret,
    pub previous: Option<(Secret, OffsetDateTime)>,
}

impl ChannelSecrets {
    pub fn single(secret: Secret) -> Self {
        ChannelSecrets { current: secret, previous: None }
    }

    /// The secrets valid at `now`, current first.
    pub fn valid_at(&self, now: OffsetDateTime) -> impl Iterator<Item = &Secret> {
        std::iter::once(&self.current).chain(self.previous.as_ref().filter(|(_, expires)| now < *expires).map(|(s, _)| s))
    }
}

/// How a 360dialog channel is verified.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Dialog360Auth {
    /// A header (named) whose value must equal the channel secret.
    Header(String),
    /// `x-360dialog-signature`: hex HMAC-SHA256 of the body under the channel secret.
    Signature,
}

/// Source-specific settings, parsed and checked once when the channel is loaded.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ChannelSettings {
    pub dialog360: Option<Dialog360Auth>,
}

impl ChannelSettings {
    pub fn from_map(source: Source, map: &serde_json::Map<String, serde_json::Value>) -> Result<Self, String> {
        let text = |key: &str| -> Result<Option<&str>, String> {
            match map.get(key) {
                None => Ok(None),
                Some(serde_json::Value::String(s)) => Ok(Some(s.as_str())),
                Some(_) => Err(format!("{key} must be a string")),
            }
        };
        match source {
            Source::Dialog360 => {
                let auth = match text("auth")?.unwrap_or("header") {
                    "header" => {
                        let name = text("header_name")?.unwrap_or("Authorization");
                        if http_header_name_ok(name) {
                            Dialog360Auth::Header(name.to_ascii_lowercase())
                        } else {
                            return Err(format!("header_name {name:?} is not an HTTP header name"));
                        }
                    }
                    "signature" => Dialog360Auth::Signature,
                    other => return Err(format!("auth {other:?}: expected \"header\" or \"signature\"")),
                };
                Ok(ChannelSettings { dialog360: Some(auth) })
            }
            _ => Ok(ChannelSettings::default()),
        }
    }
}

fn http_header_name_ok(name: &str) -> bool {
    !name.is_empty() && name.bytes().all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

/// A channel as ingest holds it: secrets opened, settings parsed.
#[derive(Debug, Clone)]
pub struct Channel {
    pub id: String,
    pub tenant_id: String,
    pub source: Source,
    pub platform: String,
    pub default: bool,
    pub secrets: ChannelSecrets,
    pub verify_token: Option<Secret>,
    pub settings: ChannelSettings,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::{generate_key_base64, SecretsKey};
    use time::Duration;

    fn keyring() -> Keyring {
        Keyring::new(SecretsKey::from_base64(&generate_key_base64().expect("rng")).expect("key"), vec![])
    }

    #[test]
    fn record_round_trips_through_json_and_opens() {
        let ring = keyring();
        let decl = ChannelDecl {
            id: "tg".into(),
            tenant_id: "acme".into(),
            source: Source::Telegram,
            secret: Secret::new("tok_123"),
            verify_token: None,
            platform: None,
            name: Some("Support bot".into()),
            default: true,
            settings: Default::default(),
        };
        let record = decl.to_record(&ring, OffsetDateTime::now_utc());
        let json = serde_json::to_string(&record).expect("serialize");
        assert!(!json.contains("tok_123"), "the bucket must not hold plaintext: {json}");
        let back: ChannelRecord = serde_json::from_str(&json).expect("parse");
        let channel = back.open(&ring).expect("opens");
        assert_eq!(channel.secrets.current.expose(), "tok_123");
        assert_eq!(channel.platform, "telegram");
        assert!(channel.default);
    }

    #[test]
    fn the_previous_secret_is_valid_only_until_it_expires() {
        let now = OffsetDateTime::now_utc();
        let secrets = ChannelSecrets { current: Secret::new("new"), previous: Some((Secret::new("old"), now + Duration::seconds(10))) };
        let at = |t| secrets.valid_at(t).map(|s| s.expose().to_string()).collect::<Vec<_>>();
        assert_eq!(at(now), ["new", "old"]);
        assert_eq!(at(now + Duration::seconds(11)), ["new"]);
    }

    #[test]
    fn dialog360_settings_default_to_the_authorization_header() {
        let empty = serde_json::Map::new();
        assert_eq!(
            ChannelSettings::from_map(Source::Dialog360, &empty).expect("ok").dialog360,
            Some(Dialog360Auth::Header("authorization".into()))
        );
        let mut sig = serde_json::Map::new();
        sig.insert("auth".into(), "signature".into());
        assert_eq!(ChannelSettings::from_map(Source::Dialog360, &sig).expect("ok").dialog360, Some(Dialog360Auth::Signature));
        let mut bad = serde_json::Map::new();
        bad.insert("header_name".into(), "not a header".into());
        assert!(ChannelSettings::from_map(Source::Dialog360, &bad).is_err());
    }
}

//! The sources hookline understands: a payload format with its own verification.

use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Source {
    Whatsapp,
    Messenger,
    Instagram,
    Telegram,
    Twilio,
    Dialog360,
    Tawkto,
    Mercadopago,
    Webchat,
}

impl Source {
    pub const ALL: [Source; 9] = [
        Source::Whatsapp,
        Source::Messenger,
        Source::Instagram,
        Source::Telegram,
        Source::Twilio,
        Source::Dialog360,
        Source::Tawkto,
        Source::Mercadopago,
        Source::Webchat,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Source::Whatsapp => "whatsapp",
            Source::Messenger => "messenger",
            Source::Instagram => "instagram",
            Source::Telegram => "telegram",
            Source::Twilio => "twilio",
            Source::Dialog360 => "dialog360",
            Source::Tawkto => "tawkto",
            Source::Mercadopago => "mercadopago",
            Source::Webchat => "webchat",
        }
    }

    /// Who runs the API the payload comes from.
    pub fn provider(self) -> &'static str {
        match self {
            Source::Whatsapp | Source::Messenger | Source::Instagram => "meta",
            Source::Telegram => "telegram",
            Source::Twilio => "twilio",
            Source::Dialog360 => "360dialog",
            Source::Tawkto => "tawkto",
            Source::Mercadopago => "mercadopago",
            Source::Webchat => "hookline",
        }
    }

    /// The platforms a channel of this source may be for; the first is the default.
    pub fn platforms(self) -> &'static [&'static str] {
        match self {
            Source::Whatsapp | Source::Dialog360 => &["whatsapp"],
            Source::Messenger => &["messenger"],
            Source::Instagram => &["instagram"],
            Source::Telegram => &["telegram"],
            Source::Twilio => &["sms", "whatsapp"],
            Source::Tawkto => &["tawkto"],
            Source::Mercadopago => &["mercadopago"],
            Source::Webchat => &["webchat"],
        }
    }

    /// Meta's sources answer the `GET` subscription handshake.
    pub fn has_meta_handshake(self) -> bool {
        matches!(self, Source::Whatsapp | Source::Messenger | Source::Instagram)
    }
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, thiserror::Error)]
#[error("unknown source {0:?}: expected one of whatsapp, messenger, instagram, telegram, twilio, dialog360, tawkto, mercadopago, webchat")]
pub struct UnknownSource(pub String);

impl FromStr for Source {
    type Err = UnknownSource;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Source::ALL.into_iter().find(|src| src.as_str() == s).ok_or_else(|| UnknownSource(s.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_through_str_and_serde() {
        for source in Source::ALL {
            assert_eq!(source.as_str().parse::<Source>().ok(), Some(source));
            let json = serde_json::to_string(&source).expect("serialize");
            assert_eq!(json, format!("\"{}\"", source.as_str()));
        }
        assert!("WhatsApp".parse::<Source>().is_err());
    }
}

//! The API's resources as JSON: what requests carry (`CreateChannel`, `UpdateChannel`,
//! `RotateSecret`) and what answers hold (`ChannelView`, `ChannelPage`). Secrets arrive as
//! `Secret` (no `Display`, no `Serialize`) and never leave: an answer says `secret_set`.

use serde::{Deserialize, Deserializer, Serialize};
use time::OffsetDateTime;
use utoipa::ToSchema;

use hookline_shared::Secret;

use crate::db::{ChannelRow, Settings};
use crate::error::ApiError;

/// `POST /api/v1/channels`
#[derive(Debug, Deserialize, ToSchema)]
pub struct CreateChannel {
    /// The channel id (1–64 of `A-Z a-z 0-9 _ -`); generated (`ch_…`) when absent.
    #[schema(example = "wa-main")]
    pub id: Option<String>,
    /// 1–64 of `A-Z a-z 0-9 _ -`.
    #[schema(example = "acme")]
    pub tenant_id: String,
    /// whatsapp, messenger, instagram, telegram, twilio, dialog360, tawkto, mercadopago, webchat
    #[schema(example = "whatsapp")]
    pub source: String,
    #[schema(example = "Support line")]
    pub name: Option<String>,
    /// The signing secret (Meta app secret, Telegram secret token, Twilio auth token, ...).
    /// Write-only: never returned.
    #[schema(value_type = String, format = Password, write_only)]
    pub secret: Secret,
    /// Meta's `hub.verify_token` for the GET handshake. Write-only.
    #[schema(value_type = Option<String>, format = Password, write_only)]
    pub verify_token: Option<Secret>,
    /// One of the source's platforms; the first by default (twilio: `sms` or `whatsapp`).
    pub platform: Option<String>,
    /// Served on ingest's older path `/api/v1/integrations/webhooks/{platform}`; at most one
    /// channel per platform.
    #[serde(default)]
    pub default: bool,
    /// Source-specific settings (dialog360: `header_name`, `auth`).
    #[serde(default)]
    #[schema(value_type = Object)]
    pub settings: Settings,
}

/// `PATCH /api/v1/channels/{id}`: only the fields present change; `null` clears `name` and
/// `verify_token`. The source cannot change, and the secret changes through `rotate-secret`.
#[derive(Debug, Deserialize, ToSchema)]
pub struct UpdateChannel {
    pub tenant_id: Option<String>,
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<String>)]
    pub name: Option<Option<String>>,
    pub platform: Option<String>,
    pub default: Option<bool>,
    #[schema(value_type = Option<Object>)]
    pub settings: Option<Settings>,
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<String>, format = Password, write_only)]
    pub verify_token: Option<Option<Secret>>,
}

/// A field that is present (possibly `null`) deserializes to `Some(...)`.
fn present<'de, T: Deserialize<'de>, D: Deserializer<'de>>(d: D) -> Result<Option<Option<T>>, D::Error> {
    Option::<T>::deserialize(d).map(Some)
}

/// `POST /api/v1/channels/{id}/rotate-secret`
#[derive(Debug, Deserialize, ToSchema)]
pub struct RotateSecret {
    /// The new secret. Write-only.
    #[schema(value_type = String, format = Password, write_only)]
    pub secret: Secret,
    /// How long the current secret keeps verifying, in seconds (default 86400, at most
    /// 2592000; 0 stops it at once).
    #[schema(example = 3600)]
    pub previous_valid_for_s: Option<u64>,
}

/// A channel, as answered. Secrets are never part of it.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ChannelView {
    pub id: String,
    pub tenant_id: String,
    pub source: String,
    pub platform: String,
    /// Who runs the platform's API: meta, telegram, twilio, 360dialog, tawkto, mercadopago, hookline.
    pub provider: String,
    pub name: Option<String>,
    pub default: bool,
    #[schema(value_type = Object)]
    pub settings: Settings,
    /// `ingest.public_url` + `/webhooks/{id}`: where the platform sends webhooks.
    pub webhook_url: String,
    /// Always true: a channel has a secret (write-only).
    pub secret_set: bool,
    pub verify_token_set: bool,
    /// Whether platform credentials (bot token, access token) are stored (write-only).
    pub platform_credentials_set: bool,
    /// Until when the previous secret keeps verifying, after a rotation.
    #[serde(with = "time::serde::rfc3339::option")]
    pub previous_secret_expires_at: Option<OffsetDateTime>,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    pub updated_at: OffsetDateTime,
}

impl ChannelView {
    pub fn from_row(row: &ChannelRow, public_base: &str) -> Result<Self, ApiError> {
        let source = row.source()?;
        Ok(ChannelView {
            id: row.id.clone(),
            tenant_id: row.tenant_id.clone(),
            source: source.as_str().to_string(),
            platform: row.platform.clone(),
            provider: source.provider().to_string(),
            name: row.name.clone(),
            default: row.is_default,
            settings: row.settings.0.clone(),
            webhook_url: webhook_url(public_base, &row.id),
            secret_set: true,
            verify_token_set: row.verify_token.is_some(),
            platform_credentials_set: row.credentials.is_some(),
            previous_secret_expires_at: row.previous_secret.as_ref().and(row.previous_secret_expires_at),
            created_at: row.created_at,
            updated_at: row.updated_at,
        })
    }
}

pub fn webhook_url(public_base: &str, id: &str) -> String {
    format!("{}/webhooks/{id}", public_base.trim_end_matches('/'))
}

/// One page of `GET /api/v1/channels`.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct ChannelPage {
    pub channels: Vec<ChannelView>,
    /// Pass as `cursor` for the next page; absent on the last page.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_cursor: Option<String>,
}

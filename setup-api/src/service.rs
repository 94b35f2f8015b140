//! What the routes and the platform helpers do to channels: validate, seal, write the row and
//! its outbox entry in one transaction, then wake the mirror. Secrets are sealed under the
//! current key and bound to the channel id before they reach Postgres.

use sqlx::types::Json;
use sqlx::PgPool;
use time::Duration;

use hookline_shared::channel::ChannelDecl;
use hookline_shared::config::ConfigError;
use hookline_shared::crypto::Keyring;
use hookline_shared::{Secret, Source};

use crate::audit::{self, Entry};
use crate::auth::Writer;
use crate::db::{self, ChannelRow, Settings};
use crate::error::ApiError;
use crate::model::{CreateChannel, RotateSecret, UpdateChannel};
use crate::server::AppState;
use crate::{ids, validate};

/// Default and longest time a rotated-out secret keeps verifying.
pub const DEFAULT_PREVIOUS_VALID_FOR_S: u64 = 86_400;
pub const MAX_PREVIOUS_VALID_FOR_S: u64 = 30 * 86_400;

/// A validated channel to create.
pub struct NewChannel {
    pub id: Option<String>,
    pub tenant_id: String,
    pub source: Source,
    pub platform: String,
    pub name: Option<String>,
    pub default: bool,
    pub settings: Settings,
    pub secret: Secret,
    pub verify_token: Option<Secret>,
    /// Platform credentials as JSON text (bot token, access token), sealed like the secret.
    pub credentials: Option<Secret>,
}

impl NewChannel {
    pub fn from_request(req: CreateChannel) -> Result<Self, ApiError> {
        if let Some(id) = &req.id {
            validate::id("id", id)?;
        }
        validate::id("tenant_id", &req.tenant_id)?;
        let source = validate::source(&req.source)?;
        let platform = validate::platform(source, req.platform.as_deref())?;
        let name = validate::name(req.name)?;
        validate::secret(source, "secret", &req.secret)?;
        if let Some(t) = &req.verify_token {
            validate::verify_token(source, t)?;
        }
        validate::settings(source, &req.settings)?;
        Ok(NewChannel {
            id: req.id,
            tenant_id: req.tenant_id,
            source,
            platform,
            name,
            default: req.default,
            settings: req.settings,
            secret: req.secret,
            verify_token: req.verify_token,
            credentials: None,
        })
    }

    fn into_row(self, keyring: &Keyring) -> Result<ChannelRow, ApiError> {
        let id = match self.id {
            Some(id) => id,
            None => ids::new_channel_id().map_err(|e| ApiError::internal(format!("random channel id: {e}")))?,
        };
        let now = db::now();
        Ok(ChannelRow {
            tenant_id: self.tenant_id,
            source: self.source.as_str().to_string(),
            platform: self.platform,
            name: self.name,
            is_default: self.default,
            settings: Json(self.settings),
            key_id: keyring.current_id().to_string(),
            secret: Json(keyring.seal(&self.secret, &id)),
            previous_secret: None,
            previous_secret_expires_at: None,
            verify_token: self.verify_token.map(|t| Json(keyring.seal(&t, &id))),
            credentials: self.credentials.map(|c| Json(keyring.seal(&c, &id))),
            created_at: now,
            updated_at: now,
            id,
        })
    }
}

fn crypto_fault(id: &str, e: impl std::fmt::Display) -> ApiError {
    ApiError::internal(format!("channel {id}: {e}"))
}

fn settings_keys(settings: &Settings) -> serde_json::Value {
    serde_json::Value::Array(settings.keys().map(|k| serde_json::Value::String(k.clone())).collect())
}

/// Creates the channel (refused with 403 naming `tenant_id` outside the writer's tenant); its
/// row and the outbox seq of the change. `action` names it in the audit log (`create`, or
/// `setup` for a platform helper).
pub async fn create(state: &AppState, writer: &Writer, new: NewChannel, action: &str) -> Result<(ChannelRow, i64), ApiError> {
    writer.require_tenant("tenant_id", Some(&new.tenant_id))?;
    let fields = serde_json::json!({
        "tenant_id": new.tenant_id, "source": new.source.as_str(), "platform": new.platform, "name": new.name,
        "default": new.default, "settings": settings_keys(&new.settings), "secret": "[redacted]",
    });
    let row = new.into_row(&state.keyring)?;
    let mut tx = state.pool.begin().await?;
    db::insert(&mut tx, &row).await?;
    let seq = db::enqueue(&mut tx, &row.id).await?;
    audit::record(
        &mut tx,
        writer,
        Entry { action, resource_type: "channel", resource_id: &row.id, tenant_id: Some(&row.tenant_id), fields },
    )
    .await?;
    tx.commit().await?;
    state.mirror.kick();
    tracing::info!(channel_id = %row.id, tenant_id = %row.tenant_id, source = %row.source, "channel created");
    Ok((row, seq))
}

/// A previous secret past its expiry is dropped at the next write of the row.
fn drop_expired_previous(row: &mut ChannelRow, now: time::OffsetDateTime) {
    if row.previous_secret_expires_at.is_some_and(|t| t <= now) {
        row.previous_secret = None;
        row.previous_secret_expires_at = None;
    }
}

pub async fn update(state: &AppState, writer: &Writer, id: &str, req: UpdateChannel) -> Result<ChannelRow, ApiError> {
    let mut fields = serde_json::Map::new();
    let mut tx = state.pool.begin().await?;
    let mut row = db::get_for_update(&mut tx, writer, id).await?.ok_or_else(|| ApiError::channel_not_found(id))?;
    let source = row.source()?;
    if let Some(tenant_id) = req.tenant_id {
        validate::id("tenant_id", &tenant_id)?;
        writer.require_tenant("tenant_id", Some(&tenant_id))?;
        fields.insert("tenant_id".into(), tenant_id.clone().into());
        row.tenant_id = tenant_id;
    }
    if let Some(name) = &req.name {
        fields.insert("name".into(), serde_json::json!(name));
    }
    if let Some(platform) = &req.platform {
        fields.insert("platform".into(), platform.clone().into());
    }
    if let Some(default) = req.default {
        fields.insert("default".into(), default.into());
    }
    if let Some(settings) = &req.settings {
        fields.insert("settings".into(), settings_keys(settings));
    }
    if req.verify_token.is_some() {
        fields.insert("verify_token".into(), "[redacted]".into());
    }
    if let Some(name) = req.name {
        row.name = validate::name(name)?;
    }
    if let Some(platform) = req.platform {
        row.platform = validate::platform(source, Some(&platform))?;
    }
    if let Some(default) = req.default {
        row.is_default = default;
    }
    if let Some(settings) = req.settings {
        validate::settings(source, &settings)?;
        row.settings = Json(settings);
    }
    if let Some(token) = req.verify_token {
        row.verify_token = match token {
            Some(t) => {
                validate::verify_token(source, &t)?;
                Some(Json(state.keyring.seal(&t, id)))
            }
            None => None,
        };
    }
    row.reseal(&state.keyring).map_err(|e| crypto_fault(id, e))?;
    let now = db::now();
    drop_expired_previous(&mut row, now);
    row.updated_at = now;
    db::update(&mut tx, &row).await?;
    db::enqueue(&mut tx, id).await?;
    audit::record(
        &mut tx,
        writer,
        Entry { action: "update", resource_type: "channel", resource_id: id, tenant_id: Some(&row.tenant_id), fields: fields.into() },
    )
    .await?;
    tx.commit().await?;
    state.mirror.kick();
    tracing::info!(channel_id = %id, "channel updated");
    Ok(row)
}

pub async fn rotate_secret(state: &AppState, writer: &Writer, id: &str, req: RotateSecret) -> Result<ChannelRow, ApiError> {
    let valid_for = req.previous_valid_for_s.unwrap_or(DEFAULT_PREVIOUS_VALID_FOR_S);
    if valid_for > MAX_PREVIOUS_VALID_FOR_S {
        return Err(ApiError::invalid("previous_valid_for_s", format!("at most {MAX_PREVIOUS_VALID_FOR_S} (30 days)")));
    }
    let mut tx = state.pool.begin().await?;
    let mut row = db::get_for_update(&mut tx, writer, id).await?.ok_or_else(|| ApiError::channel_not_found(id))?;
    let source = row.source()?;
    validate::secret(source, "secret", &req.secret)?;
    row.reseal(&state.keyring).map_err(|e| crypto_fault(id, e))?;
    let now = db::now();
    if valid_for > 0 {
        row.previous_secret = Some(row.secret.clone());
        row.previous_secret_expires_at = Some(now + Duration::seconds(valid_for as i64));
    } else {
        row.previous_secret = None;
        row.previous_secret_expires_at = None;
    }
    row.secret = Json(state.keyring.seal(&req.secret, id));
    row.updated_at = now;
    db::update(&mut tx, &row).await?;
    db::enqueue(&mut tx, id).await?;
    audit::record(
        &mut tx,
        writer,
        Entry {
            action: "rotate_secret",
            resource_type: "channel",
            resource_id: id,
            tenant_id: Some(&row.tenant_id),
            fields: serde_json::json!({"secret": "[redacted]", "previous_valid_for_s": valid_for}),
        },
    )
    .await?;
    tx.commit().await?;
    state.mirror.kick();
    tracing::info!(channel_id = %id, previous_valid_for_s = valid_for, "channel secret rotated");
    Ok(row)
}

/// Deletes the channel; `action` names it in the audit log (`delete`, or `setup_undone` when a
/// platform helper takes back the channel it created).
pub async fn delete(state: &AppState, writer: &Writer, id: &str, action: &str) -> Result<(), ApiError> {
    let mut tx = state.pool.begin().await?;
    let Some(row) = db::get_for_update(&mut tx, writer, id).await? else {
        return Err(ApiError::channel_not_found(id));
    };
    if !db::delete(&mut tx, writer, id).await? {
        return Err(ApiError::channel_not_found(id));
    }
    db::enqueue(&mut tx, id).await?;
    audit::record(
        &mut tx,
        writer,
        Entry { action, resource_type: "channel", resource_id: id, tenant_id: Some(&row.tenant_id), fields: serde_json::json!({}) },
    )
    .await?;
    tx.commit().await?;
    state.mirror.kick();
    tracing::info!(channel_id = %id, "channel deleted");
    Ok(())
}

/// Channels declared in the configuration (`[[channels]]`) are written to Postgres when their
/// id is not there yet, so that the reconciliation keeps them in the bucket. Returns how many
/// were imported.
pub async fn import_declared(pool: &PgPool, keyring: &Keyring, declared: &[ChannelDecl]) -> Result<usize, crate::SetupApiError> {
    let mut imported = 0;
    for (i, decl) in declared.iter().enumerate() {
        let new = NewChannel {
            id: Some(decl.id.clone()),
            tenant_id: decl.tenant_id.clone(),
            source: decl.source,
            platform: decl.platform_or_default().to_string(),
            name: decl.name.clone(),
            default: decl.default,
            settings: decl.settings.clone(),
            secret: decl.secret.clone(),
            verify_token: decl.verify_token.clone(),
            credentials: None,
        };
        let row = new.into_row(keyring).map_err(|_| crate::SetupApiError::Crypto("cannot generate a channel".into()))?;
        let mut tx = pool.begin().await?;
        match db::insert_if_absent(&mut tx, &row).await {
            Ok(true) => {
                db::enqueue(&mut tx, &row.id).await?;
                tx.commit().await?;
                imported += 1;
                tracing::info!(channel_id = %row.id, "declared channel imported into Postgres");
            }
            Ok(false) => tx.rollback().await?,
            Err(e) => {
                return Err(match db::classify(e) {
                    ApiError::Client { message, .. } => {
                        ConfigError::new(format!("channels[{i}].default"), format!("cannot import the channel: {message}")).into()
                    }
                    ApiError::Internal(m) => crate::SetupApiError::Database(m),
                })
            }
        }
    }
    Ok(imported)
}

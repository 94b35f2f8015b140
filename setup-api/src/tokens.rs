//! Token management: `POST /api/v1/tokens` (the value is answered this once, only its SHA-256
//! is stored), `GET /api/v1/tokens` (never a value; with `last_used_at`) and
//! `DELETE /api/v1/tokens/{id}` (revoked: refused by every setup-api process within
//! `auth::CACHE_TTL`). Admin tokens only. See `auth` for how a token is checked.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Json;
use serde::{Deserialize, Serialize};
use serde_json::json;
use time::OffsetDateTime;
use utoipa::ToSchema;

use crate::audit::{self, Entry};
use crate::auth::{self, Scope};
use crate::error::{ApiError, ErrorBody};
use crate::routes::Body;
use crate::server::SharedState;
use crate::validate::{self, Fields, Rule};

const CREATE_FIELDS: Fields =
    &[("name", Rule::Required("a string")), ("tenant_id", Rule::Optional("a string")), ("read_only", Rule::Optional("a boolean"))];

#[derive(Debug, Deserialize, ToSchema)]
pub struct CreateToken {
    /// For people: who or what uses it.
    pub name: String,
    /// Only this tenant's resources; absent: an admin token.
    #[serde(default)]
    pub tenant_id: Option<String>,
    /// Reads only: every change is refused with 403.
    #[serde(default)]
    pub read_only: bool,
}

/// A token as listed: never its value.
#[derive(Debug, Serialize, ToSchema)]
pub struct TokenView {
    pub id: String,
    pub name: String,
    pub tenant_id: Option<String>,
    pub read_only: bool,
    /// The token id that created it.
    pub created_by: String,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339::option")]
    pub last_used_at: Option<OffsetDateTime>,
}

/// The answer to a creation: the only time the value is shown.
#[derive(Debug, Serialize, ToSchema)]
pub struct CreatedToken {
    #[serde(flatten)]
    pub view: TokenView,
    /// `hlk_` + 32 characters. Shown this once; only its SHA-256 is kept.
    pub token: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct TokenList {
    pub tokens: Vec<TokenView>,
}

fn new_token_id() -> Result<String, ApiError> {
    let mut bytes = [0u8; 10];
    getrandom::fill(&mut bytes).map_err(|e| ApiError::internal(format!("random token id: {e}")))?;
    Ok(format!("tok_{}", hex::encode(bytes)))
}

type TokenRow = (String, String, Option<String>, bool, String, OffsetDateTime, Option<OffsetDateTime>);

fn view(row: TokenRow) -> TokenView {
    let (id, name, tenant_id, read_only, created_by, created_at, last_used_at) = row;
    TokenView { id, name, tenant_id, read_only, created_by, created_at, last_used_at }
}

/// Create a token (admin tokens only).
#[utoipa::path(
    post,
    path = "/api/v1/tokens",
    tag = "tokens",
    request_body = CreateToken,
    responses(
        (status = 201, description = "Created; `token` is shown this once", body = CreatedToken),
        (status = 400, body = ErrorBody),
        (status = 401, body = ErrorBody),
        (status = 403, description = "Not an admin token, or a read-only one", body = ErrorBody),
        (status = 422, body = ErrorBody),
    )
)]
pub async fn create_token(
    State(state): State<SharedState>,
    scope: Scope,
    Body(body): Body,
) -> Result<(StatusCode, Json<CreatedToken>), ApiError> {
    scope.require_admin("manage tokens")?;
    let writer = scope.writer()?;
    let req: CreateToken = validate::parse_body(&body, CREATE_FIELDS)?;
    let name = validate::name(Some(req.name))?.ok_or_else(|| ApiError::invalid("name", "required"))?;
    if let Some(t) = &req.tenant_id {
        validate::id("tenant_id", t)?;
    }
    let id = new_token_id()?;
    let value = auth::new_token_value().map_err(|e| ApiError::internal(format!("random token: {e}")))?;
    let digest = auth::token_digest(&value);
    let mut tx = state.pool.begin().await?;
    let row: TokenRow = sqlx::query_as(
        "INSERT INTO api_tokens (id, name, tenant_id, read_only, hash, created_by) VALUES ($1, $2, $3, $4, $5, $6) \
         RETURNING id, name, tenant_id, read_only, created_by, created_at, last_used_at",
    )
    .bind(&id)
    .bind(&name)
    .bind(&req.tenant_id)
    .bind(req.read_only)
    .bind(&digest[..])
    .bind(&writer.principal().token_id)
    .fetch_one(&mut *tx)
    .await?;
    audit::record(
        &mut tx,
        &writer,
        Entry {
            action: "create",
            resource_type: "token",
            resource_id: &id,
            tenant_id: req.tenant_id.as_deref(),
            fields: json!({"name": name, "tenant_id": req.tenant_id, "read_only": req.read_only}),
        },
    )
    .await?;
    tx.commit().await?;
    tracing::info!(token_id = %id, tenant_id = ?req.tenant_id, read_only = req.read_only, "API token created");
    Ok((StatusCode::CREATED, Json(CreatedToken { view: view(row), token: value })))
}

/// List the tokens that are not revoked (admin tokens only); never a value.
#[utoipa::path(
    get,
    path = "/api/v1/tokens",
    tag = "tokens",
    responses(
        (status = 200, body = TokenList),
        (status = 401, body = ErrorBody),
        (status = 403, description = "Not an admin token", body = ErrorBody),
    )
)]
pub async fn list_tokens(State(state): State<SharedState>, scope: Scope) -> Result<Json<TokenList>, ApiError> {
    scope.require_admin("manage tokens")?;
    let rows: Vec<TokenRow> = sqlx::query_as(
        "SELECT id, name, tenant_id, read_only, created_by, created_at, last_used_at FROM api_tokens \
         WHERE revoked_at IS NULL ORDER BY created_at, id",
    )
    .fetch_all(&state.pool)
    .await?;
    Ok(Json(TokenList { tokens: rows.into_iter().map(view).collect() }))
}

/// Revoke a token: every setup-api process refuses it within a second.
#[utoipa::path(
    delete,
    path = "/api/v1/tokens/{id}",
    tag = "tokens",
    params(("id" = String, Path, description = "The token id (tok_...)")),
    responses(
        (status = 204, description = "Revoked"),
        (status = 401, body = ErrorBody),
        (status = 403, description = "Not an admin token", body = ErrorBody),
        (status = 404, description = "No such token, or revoked already", body = ErrorBody),
    )
)]
pub async fn revoke_token(State(state): State<SharedState>, scope: Scope, Path(id): Path<String>) -> Result<StatusCode, ApiError> {
    scope.require_admin("manage tokens")?;
    let writer = scope.writer()?;
    let shown = id.get(..64).unwrap_or("");
    if !hookline_shared::names::is_valid_id(&id) {
        return Err(ApiError::not_found(format!("no token {shown:?}")));
    }
    let mut tx = state.pool.begin().await?;
    let tenant: Option<(Option<String>,)> =
        sqlx::query_as("UPDATE api_tokens SET revoked_at = now() WHERE id = $1 AND revoked_at IS NULL RETURNING tenant_id")
            .bind(&id)
            .fetch_optional(&mut *tx)
            .await?;
    let Some((tenant,)) = tenant else {
        return Err(ApiError::not_found(format!("no token {shown:?}")));
    };
    audit::record(
        &mut tx,
        &writer,
        Entry { action: "revoke", resource_type: "token", resource_id: &id, tenant_id: tenant.as_deref(), fields: json!({}) },
    )
    .await?;
    tx.commit().await?;
    state.tokens.forget(&id);
    tracing::info!(token_id = %id, "API token revoked");
    Ok(StatusCode::NO_CONTENT)
}

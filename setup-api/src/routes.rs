//! The channel routes: create, list, read, update, delete, rotate-secret, and the OpenAPI
//! document. Each handler reads its input through `validate`, acts through `service`, and
//! answers a `ChannelView` (never a secret) or an `ApiError`.

use axum::body::Bytes;
use axum::extract::{FromRequest, Path, RawQuery, Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use std::sync::OnceLock;
use utoipa::OpenApi;

use hookline_shared::names;

use crate::auth::Scope;
use crate::db;
use crate::error::{ApiError, ErrorBody};
use crate::model::{ChannelPage, ChannelView, CreateChannel, RotateSecret, UpdateChannel};
use crate::server::SharedState;
use crate::service::{self, NewChannel};
use crate::validate::{self, Fields, Rule};

/// The request body as bytes, refused in the API's error format when too large.
pub struct Body(pub Bytes);

impl<S: Send + Sync> FromRequest<S> for Body {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        Bytes::from_request(req, state).await.map(Body).map_err(|rejection| {
            if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
                ApiError::body_too_large()
            } else {
                ApiError::bad_json("the body could not be read")
            }
        })
    }
}

const CREATE_FIELDS: Fields = &[
    ("id", Rule::Optional("a string")),
    ("tenant_id", Rule::Required("a string")),
    ("source", Rule::Required("a string")),
    ("name", Rule::Optional("a string")),
    ("secret", Rule::Required("a string")),
    ("verify_token", Rule::Optional("a string")),
    ("platform", Rule::Optional("a string")),
    ("default", Rule::Optional("a boolean")),
    ("settings", Rule::Optional("an object")),
];

const UPDATE_FIELDS: Fields = &[
    ("tenant_id", Rule::Optional("a string")),
    ("name", Rule::Optional("a string or null")),
    ("platform", Rule::Optional("a string")),
    ("default", Rule::Optional("a boolean")),
    ("settings", Rule::Optional("an object")),
    ("verify_token", Rule::Optional("a string or null")),
    ("source", Rule::Refused("the source of a channel cannot change; create another channel")),
    ("secret", Rule::Refused("the secret changes through POST /api/v1/channels/{id}/rotate-secret")),
    ("id", Rule::Refused("the id of a channel cannot change")),
];

const ROTATE_FIELDS: Fields =
    &[("secret", Rule::Required("a string")), ("previous_valid_for_s", Rule::Optional("a whole number of seconds"))];

fn view(state: &SharedState, row: &db::ChannelRow) -> Result<ChannelView, ApiError> {
    ChannelView::from_row(row, &state.public_base)
}

/// An id that cannot be a channel's is simply not found.
fn known_shape(id: &str) -> Result<(), ApiError> {
    if names::is_valid_id(id) {
        Ok(())
    } else {
        Err(ApiError::channel_not_found(id.get(..64).unwrap_or("")))
    }
}

/// Create a channel.
#[utoipa::path(
    post,
    path = "/api/v1/channels",
    tag = "channels",
    request_body = CreateChannel,
    responses(
        (status = 201, description = "Created; `Location` names it", body = ChannelView),
        (status = 400, description = "The body is not a JSON object", body = ErrorBody),
        (status = 401, description = "No valid bearer token", body = ErrorBody),
        (status = 403, description = "A read-only token, or a tenant outside the token's", body = ErrorBody),
        (status = 409, description = "The id exists, or the platform has a default already", body = ErrorBody),
        (status = 422, description = "A field is invalid; `field` names it", body = ErrorBody),
    )
)]
pub async fn create_channel(State(state): State<SharedState>, scope: Scope, Body(body): Body) -> Result<Response, ApiError> {
    let writer = scope.writer()?;
    let req: CreateChannel = validate::parse_body(&body, CREATE_FIELDS)?;
    let (row, _) = service::create(&state, &writer, NewChannel::from_request(req)?, "create").await?;
    let location = HeaderValue::from_str(&format!("/api/v1/channels/{}", row.id))
        .map_err(|_| ApiError::internal("channel id is not a header value"))?;
    Ok((StatusCode::CREATED, [(header::LOCATION, location)], Json(view(&state, &row)?)).into_response())
}

/// List channels, by id, a page at a time.
#[utoipa::path(
    get,
    path = "/api/v1/channels",
    tag = "channels",
    params(
        ("tenant_id" = Option<String>, Query, description = "Only this tenant's channels"),
        ("source" = Option<String>, Query, description = "Only channels of this source"),
        ("platform" = Option<String>, Query, description = "Only channels of this platform"),
        ("limit" = Option<i64>, Query, description = "Page size, 1 to 200 (default 50)"),
        ("cursor" = Option<String>, Query, description = "`next_cursor` of the previous page"),
    ),
    responses(
        (status = 200, body = ChannelPage),
        (status = 400, description = "An unknown or repeated parameter", body = ErrorBody),
        (status = 401, body = ErrorBody),
        (status = 422, description = "A parameter's value is invalid", body = ErrorBody),
    )
)]
pub async fn list_channels(
    State(state): State<SharedState>,
    scope: Scope,
    RawQuery(query): RawQuery,
) -> Result<Json<ChannelPage>, ApiError> {
    let mut filter = validate::list_query(query.as_deref())?;
    let limit = filter.limit;
    filter.limit = limit + 1;
    let mut rows = db::list(&state.pool, &scope, &filter).await?;
    let next_cursor = if rows.len() as i64 > limit {
        rows.truncate(limit as usize);
        rows.last().map(|r| r.id.clone())
    } else {
        None
    };
    let channels = rows.iter().map(|r| view(&state, r)).collect::<Result<Vec<_>, _>>()?;
    Ok(Json(ChannelPage { channels, next_cursor }))
}

/// Read one channel.
#[utoipa::path(
    get,
    path = "/api/v1/channels/{id}",
    tag = "channels",
    params(("id" = String, Path, description = "The channel id")),
    responses(
        (status = 200, body = ChannelView),
        (status = 401, body = ErrorBody),
        (status = 404, body = ErrorBody),
    )
)]
pub async fn get_channel(State(state): State<SharedState>, scope: Scope, Path(id): Path<String>) -> Result<Json<ChannelView>, ApiError> {
    known_shape(&id)?;
    let mut conn = state.pool.acquire().await?;
    let row = db::get(&mut conn, &scope, &id).await?.ok_or_else(|| ApiError::channel_not_found(&id))?;
    Ok(Json(view(&state, &row)?))
}

/// Change some fields of a channel.
#[utoipa::path(
    patch,
    path = "/api/v1/channels/{id}",
    tag = "channels",
    params(("id" = String, Path, description = "The channel id")),
    request_body = UpdateChannel,
    responses(
        (status = 200, body = ChannelView),
        (status = 400, body = ErrorBody),
        (status = 401, body = ErrorBody),
        (status = 403, description = "A read-only token, or a tenant outside the token's", body = ErrorBody),
        (status = 404, body = ErrorBody),
        (status = 409, description = "The platform has a default already", body = ErrorBody),
        (status = 422, body = ErrorBody),
    )
)]
pub async fn update_channel(
    State(state): State<SharedState>,
    scope: Scope,
    Path(id): Path<String>,
    Body(body): Body,
) -> Result<Json<ChannelView>, ApiError> {
    let writer = scope.writer()?;
    known_shape(&id)?;
    let req: UpdateChannel = validate::parse_body(&body, UPDATE_FIELDS)?;
    let row = service::update(&state, &writer, &id, req).await?;
    Ok(Json(view(&state, &row)?))
}

/// Delete a channel: ingest answers 404 for it within a second.
#[utoipa::path(
    delete,
    path = "/api/v1/channels/{id}",
    tag = "channels",
    params(("id" = String, Path, description = "The channel id")),
    responses(
        (status = 204, description = "Deleted"),
        (status = 401, body = ErrorBody),
        (status = 403, description = "A read-only token, or a tenant outside the token's", body = ErrorBody),
        (status = 404, body = ErrorBody),
    )
)]
pub async fn delete_channel(State(state): State<SharedState>, scope: Scope, Path(id): Path<String>) -> Result<StatusCode, ApiError> {
    let writer = scope.writer()?;
    known_shape(&id)?;
    service::delete(&state, &writer, &id, "delete").await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Replace the secret; the previous one keeps verifying for `previous_valid_for_s`.
#[utoipa::path(
    post,
    path = "/api/v1/channels/{id}/rotate-secret",
    tag = "channels",
    params(("id" = String, Path, description = "The channel id")),
    request_body = RotateSecret,
    responses(
        (status = 200, description = "Rotated; `previous_secret_expires_at` says until when the old secret verifies", body = ChannelView),
        (status = 400, body = ErrorBody),
        (status = 401, body = ErrorBody),
        (status = 403, description = "A read-only token, or a tenant outside the token's", body = ErrorBody),
        (status = 404, body = ErrorBody),
        (status = 422, body = ErrorBody),
    )
)]
pub async fn rotate_secret(
    State(state): State<SharedState>,
    scope: Scope,
    Path(id): Path<String>,
    Body(body): Body,
) -> Result<Json<ChannelView>, ApiError> {
    let writer = scope.writer()?;
    known_shape(&id)?;
    let req: RotateSecret = validate::parse_body(&body, ROTATE_FIELDS)?;
    let row = service::rotate_secret(&state, &writer, &id, req).await?;
    Ok(Json(view(&state, &row)?))
}

/// This API's OpenAPI 3.1 document, generated from the code.
#[utoipa::path(
    get,
    path = "/api/v1/openapi.json",
    tag = "meta",
    responses((status = 200, description = "The OpenAPI document", content_type = "application/json"))
)]
pub async fn openapi_json(_scope: Scope) -> Response {
    static DOC: OnceLock<String> = OnceLock::new();
    let doc = DOC.get_or_init(|| crate::openapi::ApiDoc::openapi().to_pretty_json().unwrap_or_else(|_| "{}".to_string()));
    ([(header::CONTENT_TYPE, "application/json")], doc.clone()).into_response()
}

pub async fn api_not_found() -> ApiError {
    ApiError::not_found("no such route")
}

pub async fn api_method_not_allowed() -> ApiError {
    ApiError::method_not_allowed()
}

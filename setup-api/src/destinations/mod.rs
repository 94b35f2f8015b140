//! Destinations over HTTP (DESIGN.md, "Destinations"): create, list, read, update, delete,
//! rotate-secret, pause, resume and test. Stored in Postgres with their secrets sealed
//! (`db`), changed through `service` (row and outbox entry in one transaction), mirrored by
//! `crate::mirror` to the KV bucket `hookline_destinations` that the forwarders watch, as
//! `DestinationRecord` (shared/src/destination.rs). Answers are `DestinationView`s: never a
//! secret nor a header's value.

pub mod db;
pub mod model;
pub mod probe;
pub mod service;
pub mod state;

use axum::extract::{Path, RawQuery, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::Value;

use hookline_shared::names;

use crate::auth::Scope;
use crate::error::{ApiError, ErrorBody};
use crate::routes::Body;
use crate::server::{AppState, SharedState};
use crate::validate::{self, Fields, Rule};
use db::DestinationRow;
use model::{CreateDestination, DestinationPage, DestinationTestResult, DestinationView, RotateDestinationSecret, UpdateDestination};

const READ_ONLY: &str = "read-only: set by hookline";

const CREATE_FIELDS: Fields = &[
    ("id", Rule::Optional("a string")),
    ("tenant_id", Rule::Optional("a string")),
    ("name", Rule::Optional("a string")),
    ("url", Rule::Required("a string")),
    ("signing_secret", Rule::Required("a string")),
    ("headers", Rule::Optional("an object of header names to values")),
    ("filter", Rule::Optional("an object")),
    ("ordering", Rule::Optional("\"none\" or \"conversation\"")),
    ("max_in_flight", Rule::Optional("a whole number")),
    ("rate_limit_per_s", Rule::Optional("a number")),
    ("timeout_ms", Rule::Optional("a whole number of milliseconds")),
    ("retry_schedule_s", Rule::Optional("a list of whole numbers of seconds")),
    ("max_age_s", Rule::Optional("a whole number of seconds")),
    ("paused", Rule::Optional("a boolean")),
    ("state", Rule::Refused("read-only: POST /api/v1/destinations/{id}/pause and /resume change it")),
    ("header_names", Rule::Refused("read-only: give headers")),
    ("signing_secret_set", Rule::Refused(READ_ONLY)),
    ("previous_secret_valid_until", Rule::Refused(READ_ONLY)),
    ("created_at", Rule::Refused(READ_ONLY)),
    ("updated_at", Rule::Refused(READ_ONLY)),
];

const UPDATE_FIELDS: Fields = &[
    ("tenant_id", Rule::Optional("a string or null")),
    ("name", Rule::Optional("a string or null")),
    ("url", Rule::Optional("a string")),
    ("headers", Rule::Optional("an object of header names to values, or null")),
    ("filter", Rule::Optional("an object or null")),
    ("ordering", Rule::Optional("\"none\" or \"conversation\"")),
    ("max_in_flight", Rule::Optional("a whole number or null")),
    ("rate_limit_per_s", Rule::Optional("a number or null")),
    ("timeout_ms", Rule::Optional("a whole number of milliseconds or null")),
    ("retry_schedule_s", Rule::Optional("a list of whole numbers of seconds, or null")),
    ("max_age_s", Rule::Optional("a whole number of seconds or null")),
    ("paused", Rule::Optional("a boolean")),
    ("id", Rule::Refused("the id of a destination cannot change")),
    ("signing_secret", Rule::Refused("the signing secret changes through POST /api/v1/destinations/{id}/rotate-secret")),
    ("state", Rule::Refused("read-only: POST /api/v1/destinations/{id}/pause and /resume change it")),
    ("header_names", Rule::Refused("read-only: give headers")),
    ("signing_secret_set", Rule::Refused(READ_ONLY)),
    ("previous_secret_valid_until", Rule::Refused(READ_ONLY)),
    ("created_at", Rule::Refused(READ_ONLY)),
    ("updated_at", Rule::Refused(READ_ONLY)),
];

const ROTATE_FIELDS: Fields =
    &[("signing_secret", Rule::Required("a string")), ("previous_valid_for_s", Rule::Optional("a whole number of seconds"))];

/// An id that cannot be a destination's is simply not found.
fn known_shape(id: &str) -> Result<(), ApiError> {
    if names::is_valid_id(id) {
        Ok(())
    } else {
        Err(ApiError::destination_not_found(id.get(..64).unwrap_or("")))
    }
}

/// The rows as answered, with the breaker state of those not paused.
async fn views(state: &AppState, rows: &[DestinationRow]) -> Result<Vec<DestinationView>, ApiError> {
    let tripped = state.destination_states.tripped(rows.iter().filter(|r| !r.paused).map(|r| r.id.as_str())).await;
    let now = time::OffsetDateTime::now_utc();
    rows.iter().map(|r| DestinationView::from_row(r, tripped.contains(&r.id), now)).collect()
}

async fn view(state: &AppState, row: &DestinationRow) -> Result<DestinationView, ApiError> {
    views(state, std::slice::from_ref(row)).await?.pop().ok_or_else(|| ApiError::internal("no view of the destination"))
}

/// Create a destination.
#[utoipa::path(
    post,
    path = "/api/v1/destinations",
    tag = "destinations",
    request_body = CreateDestination,
    responses(
        (status = 201, description = "Created; `Location` names it. The bucket `hookline_destinations` holds it within a second", body = DestinationView),
        (status = 400, description = "The body is not a JSON object", body = ErrorBody),
        (status = 401, description = "No valid bearer token", body = ErrorBody),
        (status = 403, description = "A read-only token, or a tenant outside the token's", body = ErrorBody),
        (status = 409, description = "The id exists", body = ErrorBody),
        (status = 422, description = "A field is invalid; `field` names it (`url`, `headers.X-Api-Key`, `filter.match.message.type.$gtx`, `retry_schedule_s[2]`)", body = ErrorBody),
    )
)]
pub async fn create_destination(State(state): State<SharedState>, scope: Scope, Body(body): Body) -> Result<Response, ApiError> {
    let writer = scope.writer()?;
    let value: Value = validate::parse_body(&body, CREATE_FIELDS)?;
    let spec = service::spec_from_body(&value)?;
    let row = service::create(&state, &writer, spec, crate::audit::fields(&value)).await?;
    let location = HeaderValue::from_str(&format!("/api/v1/destinations/{}", row.id))
        .map_err(|_| ApiError::internal("destination id is not a header value"))?;
    Ok((StatusCode::CREATED, [(header::LOCATION, location)], Json(view(&state, &row).await?)).into_response())
}

/// `?tenant_id=&limit=&cursor=`
fn list_query(query: Option<&str>) -> Result<db::ListFilter, ApiError> {
    let mut filter = db::ListFilter { limit: validate::DEFAULT_PAGE, ..Default::default() };
    let mut seen = Vec::new();
    for (key, value) in form_urlencoded::parse(query.unwrap_or("").as_bytes()) {
        let key = key.into_owned();
        if seen.contains(&key) {
            return Err(ApiError::bad_query(&key, "given more than once"));
        }
        seen.push(key.clone());
        let value = value.into_owned();
        match key.as_str() {
            "tenant_id" => {
                validate::id("tenant_id", &value)?;
                filter.tenant_id = Some(value);
            }
            "cursor" => {
                validate::id("cursor", &value).map_err(|_| ApiError::invalid("cursor", "not a cursor of this API"))?;
                filter.after = Some(value);
            }
            "limit" => {
                filter.limit = value
                    .parse::<i64>()
                    .ok()
                    .filter(|n| (1..=validate::MAX_PAGE).contains(n))
                    .ok_or_else(|| ApiError::invalid("limit", format!("an integer from 1 to {}", validate::MAX_PAGE)))?;
            }
            other => {
                let shown: String = other.chars().take(64).collect();
                return Err(ApiError::bad_query(&shown, "unknown parameter; expected tenant_id, limit, cursor"));
            }
        }
    }
    Ok(filter)
}

/// List destinations, by id, a page at a time.
#[utoipa::path(
    get,
    path = "/api/v1/destinations",
    tag = "destinations",
    params(
        ("tenant_id" = Option<String>, Query, description = "Only this tenant's destinations (not those of every tenant)"),
        ("limit" = Option<i64>, Query, description = "Page size, 1 to 200 (default 50)"),
        ("cursor" = Option<String>, Query, description = "`next_cursor` of the previous page"),
    ),
    responses(
        (status = 200, body = DestinationPage),
        (status = 400, description = "An unknown or repeated parameter", body = ErrorBody),
        (status = 401, body = ErrorBody),
        (status = 422, description = "A parameter's value is invalid", body = ErrorBody),
    )
)]
pub async fn list_destinations(
    State(state): State<SharedState>,
    scope: Scope,
    RawQuery(query): RawQuery,
) -> Result<Json<DestinationPage>, ApiError> {
    let mut filter = list_query(query.as_deref())?;
    let limit = filter.limit;
    filter.limit = limit + 1;
    let mut rows = db::list(&state.pool, &scope, &filter).await?;
    let next_cursor = if rows.len() as i64 > limit {
        rows.truncate(limit as usize);
        rows.last().map(|r| r.id.clone())
    } else {
        None
    };
    Ok(Json(DestinationPage { destinations: views(&state, &rows).await?, next_cursor }))
}

/// Read one destination.
#[utoipa::path(
    get,
    path = "/api/v1/destinations/{id}",
    tag = "destinations",
    params(("id" = String, Path, description = "The destination id")),
    responses(
        (status = 200, body = DestinationView),
        (status = 401, body = ErrorBody),
        (status = 404, body = ErrorBody),
    )
)]
pub async fn get_destination(
    State(state): State<SharedState>,
    scope: Scope,
    Path(id): Path<String>,
) -> Result<Json<DestinationView>, ApiError> {
    known_shape(&id)?;
    let mut conn = state.pool.acquire().await?;
    let row = db::get(&mut conn, &scope, &id).await?.ok_or_else(|| ApiError::destination_not_found(&id))?;
    drop(conn);
    Ok(Json(view(&state, &row).await?))
}

/// Change some fields of a destination.
#[utoipa::path(
    patch,
    path = "/api/v1/destinations/{id}",
    tag = "destinations",
    params(("id" = String, Path, description = "The destination id")),
    request_body = UpdateDestination,
    responses(
        (status = 200, body = DestinationView),
        (status = 400, body = ErrorBody),
        (status = 401, body = ErrorBody),
        (status = 403, description = "A read-only token, or a tenant outside the token's", body = ErrorBody),
        (status = 404, body = ErrorBody),
        (status = 422, body = ErrorBody),
    )
)]
pub async fn update_destination(
    State(state): State<SharedState>,
    scope: Scope,
    Path(id): Path<String>,
    Body(body): Body,
) -> Result<Json<DestinationView>, ApiError> {
    let writer = scope.writer()?;
    known_shape(&id)?;
    let value: Value = validate::parse_body(&body, UPDATE_FIELDS)?;
    let Value::Object(patch) = value else {
        return Err(ApiError::bad_json("the body must be a JSON object"));
    };
    let row = service::update(&state, &writer, &id, &patch).await?;
    Ok(Json(view(&state, &row).await?))
}

/// Delete a destination: the forwarders stop delivering to it within a second (the bucket's
/// key is deleted).
#[utoipa::path(
    delete,
    path = "/api/v1/destinations/{id}",
    tag = "destinations",
    params(("id" = String, Path, description = "The destination id")),
    responses(
        (status = 204, description = "Deleted"),
        (status = 401, body = ErrorBody),
        (status = 403, description = "A read-only token, or a tenant outside the token's", body = ErrorBody),
        (status = 404, body = ErrorBody),
    )
)]
pub async fn delete_destination(State(state): State<SharedState>, scope: Scope, Path(id): Path<String>) -> Result<StatusCode, ApiError> {
    let writer = scope.writer()?;
    known_shape(&id)?;
    service::delete(&state, &writer, &id).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Replace the signing secret; the previous one keeps signing too for `previous_valid_for_s`.
#[utoipa::path(
    post,
    path = "/api/v1/destinations/{id}/rotate-secret",
    tag = "destinations",
    params(("id" = String, Path, description = "The destination id")),
    request_body = RotateDestinationSecret,
    responses(
        (status = 200, description = "Rotated; `previous_secret_valid_until` says until when the old secret signs too", body = DestinationView),
        (status = 400, body = ErrorBody),
        (status = 401, body = ErrorBody),
        (status = 403, description = "A read-only token, or a tenant outside the token's", body = ErrorBody),
        (status = 404, body = ErrorBody),
        (status = 422, body = ErrorBody),
    )
)]
pub async fn rotate_destination_secret(
    State(state): State<SharedState>,
    scope: Scope,
    Path(id): Path<String>,
    Body(body): Body,
) -> Result<Json<DestinationView>, ApiError> {
    let writer = scope.writer()?;
    known_shape(&id)?;
    let req: RotateDestinationSecret = validate::parse_body(&body, ROTATE_FIELDS)?;
    let row = service::rotate_secret(&state, &writer, &id, req.signing_secret, req.previous_valid_for_s).await?;
    Ok(Json(view(&state, &row).await?))
}

/// Pause: nothing is sent to it; its events wait in JetStream and none is dead-lettered for it.
#[utoipa::path(
    post,
    path = "/api/v1/destinations/{id}/pause",
    tag = "destinations",
    params(("id" = String, Path, description = "The destination id")),
    responses(
        (status = 200, description = "Paused (also when it already was)", body = DestinationView),
        (status = 401, body = ErrorBody),
        (status = 403, description = "A read-only token, or a tenant outside the token's", body = ErrorBody),
        (status = 404, body = ErrorBody),
    )
)]
pub async fn pause_destination(
    State(state): State<SharedState>,
    scope: Scope,
    Path(id): Path<String>,
) -> Result<Json<DestinationView>, ApiError> {
    let writer = scope.writer()?;
    known_shape(&id)?;
    let row = service::set_paused(&state, &writer, &id, true).await?;
    Ok(Json(view(&state, &row).await?))
}

/// Resume: delivery starts again with the events that waited.
#[utoipa::path(
    post,
    path = "/api/v1/destinations/{id}/resume",
    tag = "destinations",
    params(("id" = String, Path, description = "The destination id")),
    responses(
        (status = 200, description = "Resumed (also when it was not paused)", body = DestinationView),
        (status = 401, body = ErrorBody),
        (status = 403, description = "A read-only token, or a tenant outside the token's", body = ErrorBody),
        (status = 404, body = ErrorBody),
    )
)]
pub async fn resume_destination(
    State(state): State<SharedState>,
    scope: Scope,
    Path(id): Path<String>,
) -> Result<Json<DestinationView>, ApiError> {
    let writer = scope.writer()?;
    known_shape(&id)?;
    let row = service::set_paused(&state, &writer, &id, false).await?;
    Ok(Json(view(&state, &row).await?))
}

/// Deliver one synthetic event now (kind `other`, a fresh id, the destination's tenant or
/// `test`), signed as the forwarder signs, with the destination's headers and timeout; answers
/// what the target said. Sent whatever the filter and also while paused; never retried.
#[utoipa::path(
    post,
    path = "/api/v1/destinations/{id}/test",
    tag = "destinations",
    params(("id" = String, Path, description = "The destination id")),
    responses(
        (status = 200, description = "The delivery was tried: the target's status and the first KiB of its answer, or the connection error", body = DestinationTestResult),
        (status = 401, body = ErrorBody),
        (status = 403, description = "A read-only token, or a tenant outside the token's", body = ErrorBody),
        (status = 404, body = ErrorBody),
    )
)]
pub async fn test_destination(
    State(state): State<SharedState>,
    scope: Scope,
    Path(id): Path<String>,
) -> Result<Json<DestinationTestResult>, ApiError> {
    // Sends a request to the destination's URL: not for read-only tokens.
    scope.writer()?;
    known_shape(&id)?;
    let destination = service::opened(&state, &scope, &id).await?;
    Ok(Json(state.prober.deliver(&destination, &state.metrics).await?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn list_queries_are_checked() {
        let f = list_query(Some("tenant_id=acme&limit=10&cursor=dst_1")).expect("ok");
        assert_eq!((f.tenant_id.as_deref(), f.limit, f.after.as_deref()), (Some("acme"), 10, Some("dst_1")));
        assert_eq!(list_query(None).expect("ok").limit, validate::DEFAULT_PAGE);
        for (q, status, field) in [
            ("limit=0", 422, "limit"),
            ("limit=201", 422, "limit"),
            ("tenant_id=a.b", 422, "tenant_id"),
            ("cursor=a%20b", 422, "cursor"),
            ("source=telegram", 400, "source"),
            ("limit=1&limit=2", 400, "limit"),
        ] {
            match list_query(Some(q)).expect_err(q) {
                ApiError::Client { status: s, field: f, .. } => {
                    assert_eq!((s.as_u16(), f.as_deref()), (status, Some(field)), "{q}")
                }
                ApiError::Internal(m) => panic!("{m}"),
            }
        }
    }
}

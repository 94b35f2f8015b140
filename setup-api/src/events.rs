//! The lookup routes: one event with its destinations' states and every delivery attempt, one raw
//! webhook, and a search of events (`hookline_operations::lookup`, the library the CLI uses).
//!
//! Tenant narrowing: every lookup takes the caller's [`Scope`]'s tenant; another tenant's event or
//! raw webhook answers 404, as if it did not exist, a search finds none of its events, and an
//! event shows only the tenant's own destinations.

use axum::extract::{Path, RawQuery, State};
use axum::Json;

use hookline_operations::lookup::{self, EventView, FindPage, FindQuery, RawView};
use hookline_operations::selection::parse_time;
use hookline_operations::OpsError;

use crate::auth::Scope;
use crate::error::{ApiError, ErrorBody};
use crate::server::SharedState;

fn ops_error(e: OpsError) -> ApiError {
    match e {
        OpsError::Invalid(message) => ApiError::bad_query("query", message),
        other => ApiError::internal(other.to_string()),
    }
}

/// One event: where it came from, its state at every destination, every delivery attempt.
#[utoipa::path(
    get,
    path = "/api/v1/events/{event_id}",
    tag = "events",
    params(("event_id" = String, Path, description = "The event's id (`evt_…`)")),
    responses(
        (status = 200, description = "`{event_id, tenant_id, seq, subject, stored_at, raw: {subject, seq}, event, destinations: [{destination, state: delivered|retrying|dead_lettered|filtered_out|waiting, attempts, last_status, last_error, next_attempt_at, dlq_reason, paused}], attempts: [{destination, attempt, at, outcome, status, error, duration_ms, body, body_truncated, next_attempt_at, dlq_reason, ...}]}`", body = Object),
        (status = 401, description = "No valid bearer token", body = ErrorBody),
        (status = 404, description = "No such event (or aged out)", body = ErrorBody),
    )
)]
pub async fn show_event(State(state): State<SharedState>, scope: Scope, Path(event_id): Path<String>) -> Result<Json<EventView>, ApiError> {
    match lookup::event(&state.jetstream, &event_id, scope.tenant_filter()).await.map_err(ops_error)? {
        Some(view) => Ok(Json(view)),
        None => Err(ApiError::not_found(format!("no event {:?}", event_id.chars().take(80).collect::<String>()))),
    }
}

/// One raw webhook as stored in `HOOKLINE_RAW`: its headers and body.
#[utoipa::path(
    get,
    path = "/api/v1/raw/{seq}",
    tag = "events",
    params(("seq" = u64, Path, description = "Its sequence in HOOKLINE_RAW (an event's `raw.seq`)")),
    responses(
        (status = 200, description = "`{seq, subject, stored_at, headers: {name: [values]}, body | body_base64}`", body = Object),
        (status = 400, description = "`seq` is not a positive whole number", body = ErrorBody),
        (status = 401, description = "No valid bearer token", body = ErrorBody),
        (status = 404, description = "No such raw webhook (or aged out)", body = ErrorBody),
    )
)]
pub async fn show_raw(State(state): State<SharedState>, scope: Scope, Path(seq): Path<String>) -> Result<Json<RawView>, ApiError> {
    let seq = seq.parse::<u64>().ok().filter(|s| *s > 0).ok_or_else(|| ApiError::bad_query("seq", "must be a positive whole number"))?;
    match lookup::raw(&state.jetstream, seq, scope.tenant_filter()).await.map_err(ops_error)? {
        Some(view) => Ok(Json(view)),
        None => Err(ApiError::not_found(format!("no raw webhook {seq}"))),
    }
}

/// Reads the search's query string; a 400 names the parameter at fault.
pub fn find_query(raw: Option<&str>) -> Result<FindQuery, ApiError> {
    let mut query = FindQuery { limit: 50, ..Default::default() };
    for (key, value) in form_urlencoded::parse(raw.unwrap_or("").as_bytes()) {
        let value = value.into_owned();
        let time = |name: &str, v: &str| parse_time(v).map_err(|m| ApiError::bad_query(name, m));
        match key.as_ref() {
            "message_id" => query.message_id = Some(value),
            "conversation_id" => query.conversation_id = Some(value),
            "channel" => query.channel = Some(value),
            "tenant" => query.tenant = Some(value),
            "kind" => query.kind = Some(value),
            "from" => query.from = Some(time("from", &value)?),
            "to" => query.to = Some(time("to", &value)?),
            "limit" => {
                query.limit = value.parse().map_err(|_| ApiError::bad_query("limit", format!("must be 1 to {}", lookup::MAX_LIMIT)))?
            }
            "cursor" => query.cursor = Some(value),
            other => {
                let shown: String = other.chars().take(64).collect();
                return Err(ApiError::bad_query(
                    &shown,
                    "unknown parameter (message_id, conversation_id, channel, tenant, kind, from, to, limit, cursor)",
                ));
            }
        }
    }
    query.validate().map_err(|(name, message)| ApiError::bad_query(name, message))?;
    Ok(query)
}

/// Find events: by platform message id or conversation through the index, else in order by
/// tenant, kind, channel and time (a page within a time budget, then `next_cursor`).
#[utoipa::path(
    get,
    path = "/api/v1/events",
    tag = "events",
    params(
        ("message_id" = Option<String>, Query, description = "The platform's message id: the message and the statuses about it"),
        ("conversation_id" = Option<String>, Query, description = "The conversation's id"),
        ("channel" = Option<String>, Query), ("tenant" = Option<String>, Query),
        ("kind" = Option<String>, Query, description = "message, status, payment, chat_event, other"),
        ("from" = Option<String>, Query, description = "received_at from: RFC 3339 or an age (15m, 2h, 7d)"),
        ("to" = Option<String>, Query, description = "received_at up to: RFC 3339 or an age"),
        ("limit" = Option<u64>, Query, description = "At most this many, 1 to 1000 (default 50)"),
        ("cursor" = Option<String>, Query, description = "The `next_cursor` of the previous page"),
    ),
    responses(
        (status = 200, description = "`{events: [{seq, subject, event}], next_cursor?}`", body = Object),
        (status = 400, description = "A parameter that cannot be (`field` names it)", body = ErrorBody),
        (status = 401, description = "No valid bearer token", body = ErrorBody),
    )
)]
pub async fn find_events(State(state): State<SharedState>, scope: Scope, RawQuery(raw): RawQuery) -> Result<Json<FindPage>, ApiError> {
    let query = find_query(raw.as_deref())?;
    Ok(Json(lookup::find(&state.jetstream, &query, scope.tenant_filter()).await.map_err(ops_error)?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_parameters_are_named() {
        for (query, field) in [
            ("limit=abc", "limit"),
            ("limit=0", "limit"),
            ("limit=5000", "limit"),
            ("from=yesterday", "from"),
            ("to=3x", "to"),
            ("kind=bogus", "kind"),
            ("tenant=a.b", "tenant"),
            ("channel=*", "channel"),
            ("cursor=zz", "cursor"),
            ("from=2026-12-02T00:00:00Z&to=2026-12-01T00:00:00Z", "from"),
            ("colour=red", "colour"),
        ] {
            match find_query(Some(query)) {
                Err(ApiError::Client { field: Some(f), .. }) => assert_eq!(f, field, "{query}"),
                other => panic!("{query}: {other:?}"),
            }
        }
        let q = find_query(Some("message_id=wamid.X%3D&limit=10&kind=status")).unwrap_or_else(|e| panic!("{e:?}"));
        assert_eq!((q.message_id.as_deref(), q.limit, q.kind.as_deref()), (Some("wamid.X="), 10, Some("status")));
    }
}

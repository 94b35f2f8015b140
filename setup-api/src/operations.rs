//! Replay and dead letters over HTTP, for tools that prefer it to the CLI: the same operations
//! (`hookline_operations`) on the same streams.

use axum::extract::{Path, Query, State};
use axum::Json;
use serde::Deserialize;

use hookline_operations::dlq::{self, DlqFilter};
use hookline_operations::replay::{self, ReplayOptions};
use hookline_operations::selection::{parse_time, Selection};
use hookline_operations::OpsError;

use crate::error::{ApiError, ErrorBody};
use crate::server::SharedState;

fn ops_error(e: OpsError) -> ApiError {
    match e {
        OpsError::Invalid(message) => ApiError::invalid("selection", message),
        other => ApiError::internal(other.to_string()),
    }
}

/// Runs a replay to its end and answers its summary.
#[utoipa::path(
    post,
    path = "/api/v1/replay",
    tag = "operations",
    request_body(content = Object, description = "`{\"stream\": \"raw\"|\"events\", \"selection\": {\"from\", \"to\" (RFC 3339), \"from_seq\", \"to_seq\", \"channel\", \"tenant\", \"source\"}, \"dry_run\", \"rate_per_s\", \"destination\" (events only: deliver to that destination alone)}`"),
    responses(
        (status = 200, description = "`{run_id, dry_run, selected, events, unparseable}`", body = Object),
        (status = 400, description = "Not JSON", body = ErrorBody),
        (status = 401, description = "No valid bearer token", body = ErrorBody),
        (status = 422, description = "A selection that cannot be", body = ErrorBody),
    )
)]
pub async fn replay_route(State(state): State<SharedState>, body: axum::body::Bytes) -> Result<Json<replay::ReplaySummary>, ApiError> {
    let options: ReplayOptions = serde_json::from_slice(&body).map_err(|e| ApiError::bad_json(format!("not a replay request: {e}")))?;
    let mut progress = |_: u64| {};
    let summary = replay::replay(&state.jetstream, &options, &mut progress).await.map_err(ops_error)?;
    tracing::info!(run_id = %summary.run_id, selected = summary.selected, events = summary.events, dry_run = summary.dry_run, "replay over HTTP");
    Ok(Json(summary))
}

/// Filters of the dead-letter routes, as query parameters.
#[derive(Debug, Default, Deserialize)]
pub struct DlqQuery {
    stage: Option<String>,
    reason: Option<String>,
    source: Option<String>,
    tenant: Option<String>,
    channel: Option<String>,
    from: Option<String>,
    to: Option<String>,
    limit: Option<u64>,
    destination: Option<String>,
}

impl DlqQuery {
    fn filter(self) -> Result<DlqFilter, ApiError> {
        let time = |field: &str, v: Option<String>| v.map(|s| parse_time(&s).map_err(|m| ApiError::bad_query(field, m))).transpose();
        let source =
            self.source.map(|s| s.parse().map_err(|_| ApiError::bad_query("source", format!("unknown source {s:?}")))).transpose()?;
        Ok(DlqFilter {
            selection: Selection {
                from: time("from", self.from)?,
                to: time("to", self.to)?,
                source,
                tenant: self.tenant,
                channel: self.channel,
                ..Default::default()
            },
            stage: self.stage,
            reason: self.reason,
            seqs: Vec::new(),
            limit: Some(self.limit.unwrap_or(100).min(10_000)),
            destination: self.destination,
        })
    }
}

#[utoipa::path(
    get,
    path = "/api/v1/dlq",
    tag = "operations",
    params(
        ("stage" = Option<String>, Query, description = "normalize or forward"),
        ("reason" = Option<String>, Query, description = "e.g. invalid_json, rejected_4xx, attempts_exhausted"),
        ("source" = Option<String>, Query), ("tenant" = Option<String>, Query), ("channel" = Option<String>, Query),
        ("from" = Option<String>, Query, description = "RFC 3339 or an age (15m, 2h, 7d)"),
        ("to" = Option<String>, Query, description = "RFC 3339 or an age"),
        ("limit" = Option<u64>, Query, description = "At most this many (default 100)"),
        ("destination" = Option<String>, Query, description = "Forward-stage dead letters of this destination only"),
    ),
    responses((status = 200, description = "Dead letters: seq, stage, reason, detail, attempts, last_status, subject, age_s...", body = Object), (status = 401, body = ErrorBody))
)]
pub async fn list_dlq(State(state): State<SharedState>, Query(query): Query<DlqQuery>) -> Result<Json<Vec<dlq::DeadLetterView>>, ApiError> {
    Ok(Json(dlq::list(&state.jetstream, &query.filter()?).await.map_err(ops_error)?))
}

#[utoipa::path(
    get,
    path = "/api/v1/dlq/{seq}",
    tag = "operations",
    params(("seq" = u64, Path, description = "The dead letter's sequence in HOOKLINE_DLQ")),
    responses((status = 200, description = "The dead letter with its headers and body", body = Object), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody))
)]
pub async fn show_dlq(State(state): State<SharedState>, Path(seq): Path<u64>) -> Result<Json<dlq::DeadLetterDetail>, ApiError> {
    match dlq::show(&state.jetstream, seq).await.map_err(ops_error)? {
        Some(detail) => Ok(Json(detail)),
        None => Err(ApiError::not_found(format!("no dead letter {seq}"))),
    }
}

/// The body of re-drive and purge: a filter, and whether only to count.
#[derive(Debug, Default, Deserialize)]
pub struct DlqAction {
    #[serde(flatten)]
    filter: DlqFilter,
    #[serde(default)]
    dry_run: bool,
}

#[utoipa::path(
    post,
    path = "/api/v1/dlq/redrive",
    tag = "operations",
    request_body(content = Object, description = "`{\"stage\", \"reason\", \"seqs\": [..], \"selection\": {...}, \"limit\", \"dry_run\"}`"),
    responses((status = 200, description = "`{dry_run, selected, redriven, failed}`", body = Object), (status = 401, body = ErrorBody), (status = 422, body = ErrorBody))
)]
pub async fn redrive_dlq(State(state): State<SharedState>, body: axum::body::Bytes) -> Result<Json<dlq::RedriveSummary>, ApiError> {
    let action: DlqAction = serde_json::from_slice(&body).map_err(|e| ApiError::bad_json(format!("not a re-drive request: {e}")))?;
    let summary = dlq::redrive(&state.jetstream, &action.filter, action.dry_run).await.map_err(ops_error)?;
    tracing::info!(selected = summary.selected, redriven = summary.redriven, failed = summary.failed, "dead letters re-driven over HTTP");
    Ok(Json(summary))
}

#[utoipa::path(
    post,
    path = "/api/v1/dlq/purge",
    tag = "operations",
    request_body(content = Object, description = "`{\"stage\", \"reason\", \"seqs\": [..], \"selection\": {...}, \"limit\", \"dry_run\"}`"),
    responses((status = 200, description = "`{dry_run, purged}`", body = Object), (status = 401, body = ErrorBody), (status = 422, body = ErrorBody))
)]
pub async fn purge_dlq(State(state): State<SharedState>, body: axum::body::Bytes) -> Result<Json<serde_json::Value>, ApiError> {
    let action: DlqAction = serde_json::from_slice(&body).map_err(|e| ApiError::bad_json(format!("not a purge request: {e}")))?;
    let purged = dlq::purge(&state.jetstream, &action.filter, action.dry_run).await.map_err(ops_error)?;
    tracing::info!(purged, dry_run = action.dry_run, "dead letters purged over HTTP");
    Ok(Json(serde_json::json!({"dry_run": action.dry_run, "purged": purged})))
}

//! Replay and dead letters over HTTP, for tools that prefer it to the CLI: the same operations
//! (`hookline_operations`) on the same streams.

use axum::extract::{Path, Query, State};
use axum::Json;
use serde::Deserialize;

use hookline_operations::dlq::{self, DlqFilter};
use hookline_operations::replay::{self, ReplayOptions};
use hookline_operations::selection::{parse_time, Selection};
use hookline_operations::OpsError;

use crate::audit::{self, Entry};
use crate::auth::{Scope, Writer};
use crate::error::{ApiError, ErrorBody};
use crate::server::SharedState;

/// Narrows `selection.tenant` to the caller's tenant; `false` when it asked for another's (the
/// operation then selects nothing).
fn narrow(scope: &Scope, selection: &mut Selection) -> bool {
    match scope.narrow(selection.tenant.as_deref()).selection_tenant() {
        Some(tenant) => {
            selection.tenant = tenant;
            true
        }
        None => false,
    }
}

/// A tenant token may name only a destination of its tenant (404 for another's, as if absent).
async fn check_destination(state: &SharedState, scope: &Scope, destination: Option<&str>) -> Result<(), ApiError> {
    let (Some(id), Some(_)) = (destination, scope.tenant_filter()) else {
        return Ok(());
    };
    let mut conn = state.pool.acquire().await?;
    match crate::destinations::db::get(&mut conn, scope, id).await? {
        Some(_) => Ok(()),
        None => Err(ApiError::destination_not_found(id.get(..64).unwrap_or(""))),
    }
}

/// The audit entry of an operation on the streams (its own transaction: nothing else is written).
async fn audit_operation(
    state: &SharedState,
    writer: &Writer,
    action: &str,
    resource_id: &str,
    tenant: Option<&str>,
    body: &[u8],
) -> Result<(), ApiError> {
    let mut conn = state.pool.acquire().await?;
    let entry = Entry { action, resource_type: "operation", resource_id, tenant_id: tenant, fields: audit::fields_of_bytes(body) };
    audit::record(&mut conn, writer, entry).await.map_err(ApiError::from)
}

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
        (status = 403, description = "A read-only token, or a tenant outside the token's", body = ErrorBody),
        (status = 422, description = "A selection that cannot be", body = ErrorBody),
    )
)]
pub async fn replay_route(
    State(state): State<SharedState>,
    scope: Scope,
    body: axum::body::Bytes,
) -> Result<Json<replay::ReplaySummary>, ApiError> {
    let options = match accept_replay(&state, &scope, &body).await? {
        Accepted::Run(options) => options,
        Accepted::Nothing { dry_run } => return Ok(Json(replay::ReplaySummary { run_id: String::new(), dry_run, ..Default::default() })),
    };
    let mut progress = |_: u64| {};
    let summary = replay::replay(&state.jetstream, &options, &mut progress).await.map_err(ops_error)?;
    tracing::info!(run_id = %summary.run_id, selected = summary.selected, events = summary.events, dry_run = summary.dry_run, "replay over HTTP");
    Ok(Json(summary))
}

/// A replay request as the routes accept it.
pub(crate) enum Accepted {
    /// Read, narrowed to the caller's tenant, its destination checked, audited: run it.
    Run(ReplayOptions),
    /// It names another tenant than the caller's: it selects nothing.
    Nothing { dry_run: bool },
}

/// What `POST /api/v1/replay` and `POST /api/v1/replays` do before running: a writer's scope,
/// the body read (400) and its selection checked (422), narrowed to the caller's tenant, the
/// destination checked, the audit entry written.
pub(crate) async fn accept_replay(state: &SharedState, scope: &Scope, body: &[u8]) -> Result<Accepted, ApiError> {
    let writer = scope.writer()?;
    let mut options: ReplayOptions = serde_json::from_slice(body).map_err(|e| ApiError::bad_json(format!("not a replay request: {e}")))?;
    options.selection.validate().map_err(|m| ApiError::invalid("selection", m))?;
    if !narrow(scope, &mut options.selection) {
        return Ok(Accepted::Nothing { dry_run: options.dry_run });
    }
    check_destination(state, scope, options.destination.as_deref()).await?;
    audit_operation(state, &writer, "replay", "replay", options.selection.tenant.as_deref(), body).await?;
    Ok(Accepted::Run(options))
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
pub async fn list_dlq(
    State(state): State<SharedState>,
    scope: Scope,
    Query(query): Query<DlqQuery>,
) -> Result<Json<Vec<dlq::DeadLetterView>>, ApiError> {
    let mut filter = query.filter()?;
    if !narrow(&scope, &mut filter.selection) {
        return Ok(Json(Vec::new()));
    }
    Ok(Json(dlq::list(&state.jetstream, &filter).await.map_err(ops_error)?))
}

#[utoipa::path(
    get,
    path = "/api/v1/dlq/{seq}",
    tag = "operations",
    params(("seq" = u64, Path, description = "The dead letter's sequence in HOOKLINE_DLQ")),
    responses((status = 200, description = "The dead letter with its headers and body", body = Object), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody))
)]
pub async fn show_dlq(
    State(state): State<SharedState>,
    scope: Scope,
    Path(seq): Path<u64>,
) -> Result<Json<dlq::DeadLetterDetail>, ApiError> {
    match dlq::show(&state.jetstream, seq).await.map_err(ops_error)? {
        Some(detail) if scope.allows_tenant(detail.letter.tenant.as_deref()) => Ok(Json(detail)),
        _ => Err(ApiError::not_found(format!("no dead letter {seq}"))),
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
    responses((status = 200, description = "`{dry_run, selected, redriven, failed}`", body = Object), (status = 401, body = ErrorBody), (status = 403, description = "A read-only token", body = ErrorBody), (status = 422, body = ErrorBody))
)]
pub async fn redrive_dlq(
    State(state): State<SharedState>,
    scope: Scope,
    body: axum::body::Bytes,
) -> Result<Json<dlq::RedriveSummary>, ApiError> {
    let writer = scope.writer()?;
    let mut action: DlqAction = serde_json::from_slice(&body).map_err(|e| ApiError::bad_json(format!("not a re-drive request: {e}")))?;
    if !narrow(&scope, &mut action.filter.selection) {
        return Ok(Json(dlq::RedriveSummary { dry_run: action.dry_run, ..Default::default() }));
    }
    check_destination(&state, &scope, action.filter.destination.as_deref()).await?;
    audit_operation(&state, &writer, "redrive", "dlq", action.filter.selection.tenant.as_deref(), &body).await?;
    let summary = dlq::redrive(&state.jetstream, &action.filter, action.dry_run).await.map_err(ops_error)?;
    tracing::info!(selected = summary.selected, redriven = summary.redriven, failed = summary.failed, "dead letters re-driven over HTTP");
    Ok(Json(summary))
}

#[utoipa::path(
    post,
    path = "/api/v1/dlq/purge",
    tag = "operations",
    request_body(content = Object, description = "`{\"stage\", \"reason\", \"seqs\": [..], \"selection\": {...}, \"limit\", \"dry_run\"}`"),
    responses((status = 200, description = "`{dry_run, purged}`", body = Object), (status = 401, body = ErrorBody), (status = 403, description = "A read-only token", body = ErrorBody), (status = 422, body = ErrorBody))
)]
pub async fn purge_dlq(
    State(state): State<SharedState>,
    scope: Scope,
    body: axum::body::Bytes,
) -> Result<Json<serde_json::Value>, ApiError> {
    let writer = scope.writer()?;
    let mut action: DlqAction = serde_json::from_slice(&body).map_err(|e| ApiError::bad_json(format!("not a purge request: {e}")))?;
    if !narrow(&scope, &mut action.filter.selection) {
        return Ok(Json(serde_json::json!({"dry_run": action.dry_run, "purged": 0})));
    }
    check_destination(&state, &scope, action.filter.destination.as_deref()).await?;
    audit_operation(&state, &writer, "purge", "dlq", action.filter.selection.tenant.as_deref(), &body).await?;
    let purged = dlq::purge(&state.jetstream, &action.filter, action.dry_run).await.map_err(ops_error)?;
    tracing::info!(purged, dry_run = action.dry_run, "dead letters purged over HTTP");
    Ok(Json(serde_json::json!({"dry_run": action.dry_run, "purged": purged})))
}

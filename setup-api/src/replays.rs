//! Replays that run in the background, so that a client can follow their progress:
//! `POST /api/v1/replays` starts one (the body of `POST /api/v1/replay`) and answers 202 with its
//! `run_id` at once; `GET /api/v1/replays/{run_id}` answers how far it got (`read`: messages of
//! the selection read so far) and, once done, its summary. The same `hookline_operations::replay`
//! does the work. Runs live in this process's memory: the newest [`KEPT`] are kept, at most
//! [`RUNNING`] at a time, and a restart forgets them (the replay itself stops with the process;
//! what it published stays published, and its events carry their ids, so running it again is
//! harmless).

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Json;
use serde::Serialize;
use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use utoipa::ToSchema;

use hookline_operations::replay::{self, ReplayOptions, ReplaySummary};

use crate::auth::Scope;
use crate::error::{ApiError, ErrorBody};
use crate::operations::Accepted;
use crate::server::SharedState;

/// Runs remembered (finished or not).
pub const KEPT: usize = 50;
/// Runs at the same time.
pub const RUNNING: usize = 4;

struct Run {
    id: String,
    /// The tenant its selection was narrowed to (`None`: every tenant); a tenant's caller sees
    /// only its own runs, an admin every run.
    tenant: Option<String>,
    read: Arc<AtomicU64>,
    outcome: Mutex<Option<Result<ReplaySummary, String>>>,
}

/// The runs of this process.
#[derive(Default)]
pub struct Runs {
    runs: Mutex<VecDeque<Arc<Run>>>,
}

/// A run as answered.
#[derive(Debug, Serialize, ToSchema)]
pub struct RunView {
    pub run_id: String,
    /// `running`, `done` or `failed`.
    pub state: &'static str,
    /// Messages of the selection read so far.
    pub read: u64,
    #[schema(value_type = Option<Object>)]
    pub summary: Option<ReplaySummary>,
    pub error: Option<String>,
}

fn view(run: &Run) -> RunView {
    let outcome = run.outcome.lock().unwrap_or_else(|p| p.into_inner()).clone();
    let read = run.read.load(Ordering::Relaxed);
    match outcome {
        None => RunView { run_id: run.id.clone(), state: "running", read, summary: None, error: None },
        Some(Ok(summary)) => RunView { run_id: run.id.clone(), state: "done", read, summary: Some(summary), error: None },
        Some(Err(e)) => RunView { run_id: run.id.clone(), state: "failed", read, summary: None, error: Some(e) },
    }
}

fn new_run_id() -> Result<String, ApiError> {
    let mut bytes = [0u8; 8];
    getrandom::fill(&mut bytes).map_err(|e| ApiError::internal(format!("random run id: {e}")))?;
    Ok(format!("run_{}", hex::encode(bytes)))
}

impl Runs {
    /// A run that selected nothing (a tenant's selection of another tenant), done at once.
    pub fn nothing(&self, dry_run: bool, tenant: Option<String>) -> Result<RunView, ApiError> {
        let summary = ReplaySummary { dry_run, ..Default::default() };
        let run = Arc::new(Run { id: new_run_id()?, tenant, read: Arc::new(AtomicU64::new(0)), outcome: Mutex::new(Some(Ok(summary))) });
        let answer = view(&run);
        self.keep(run);
        Ok(answer)
    }

    fn keep(&self, run: Arc<Run>) {
        let mut runs = self.runs.lock().unwrap_or_else(|p| p.into_inner());
        runs.push_back(run);
        while runs.len() > KEPT {
            runs.pop_front();
        }
    }

    /// Starts `options` as `tenant` (already narrowed); its view at once.
    pub fn start(&self, js: async_nats::jetstream::Context, options: ReplayOptions, tenant: Option<String>) -> Result<RunView, ApiError> {
        let mut runs = self.runs.lock().unwrap_or_else(|p| p.into_inner());
        let running = runs.iter().filter(|r| r.outcome.lock().unwrap_or_else(|p| p.into_inner()).is_none()).count();
        if running >= RUNNING {
            return Err(ApiError::conflict("replay", format!("{RUNNING} replays are running already; wait for one to end")));
        }
        let run = Arc::new(Run { id: new_run_id()?, tenant, read: Arc::new(AtomicU64::new(0)), outcome: Mutex::new(None) });
        runs.push_back(run.clone());
        while runs.len() > KEPT {
            runs.pop_front();
        }
        drop(runs);
        let answer = view(&run);
        tokio::spawn(async move {
            let read = run.read.clone();
            let mut progress = move |n: u64| read.store(n, Ordering::Relaxed);
            let outcome = replay::replay(&js, &options, &mut progress).await.map_err(|e| e.to_string());
            match &outcome {
                Ok(s) => tracing::info!(run = %run.id, selected = s.selected, events = s.events, "background replay done"),
                Err(e) => tracing::warn!(run = %run.id, error = %e, "background replay failed"),
            }
            *run.outcome.lock().unwrap_or_else(|p| p.into_inner()) = Some(outcome);
        });
        Ok(answer)
    }

    /// The run `id`, if `tenant` may see it (`None`: every run).
    pub fn get(&self, id: &str, tenant: Option<&str>) -> Option<RunView> {
        let runs = self.runs.lock().unwrap_or_else(|p| p.into_inner());
        runs.iter().find(|r| r.id == id && tenant.is_none_or(|t| r.tenant.as_deref() == Some(t))).map(|r| view(r))
    }
}

/// Start a replay in the background; follow it with `GET /api/v1/replays/{run_id}`.
#[utoipa::path(
    post,
    path = "/api/v1/replays",
    tag = "operations",
    request_body(content = Object, description = "As `POST /api/v1/replay` (`dry_run` is ignored: count with that route first)"),
    responses(
        (status = 202, description = "Started", body = RunView),
        (status = 400, description = "Not JSON", body = ErrorBody),
        (status = 401, description = "No valid bearer token", body = ErrorBody),
        (status = 409, description = "Too many replays running", body = ErrorBody),
        (status = 422, description = "A selection that cannot be", body = ErrorBody),
    )
)]
pub async fn start_replay(
    State(state): State<SharedState>,
    scope: Scope,
    body: axum::body::Bytes,
) -> Result<(StatusCode, Json<RunView>), ApiError> {
    let mut options = match crate::operations::accept_replay(&state, &scope, &body).await? {
        Accepted::Run(options) => options,
        // Another tenant's selection selects nothing, as `POST /api/v1/replay` answers.
        Accepted::Nothing { .. } => {
            return Ok((StatusCode::ACCEPTED, Json(state.replays.nothing(false, scope.tenant_filter().map(str::to_string))?)));
        }
    };
    options.dry_run = false;
    let tenant = options.selection.tenant.clone();
    let run = state.replays.start(state.jetstream.clone(), options, tenant)?;
    tracing::info!(run = %run.run_id, "background replay started over HTTP");
    Ok((StatusCode::ACCEPTED, Json(run)))
}

/// How far a background replay got.
#[utoipa::path(
    get,
    path = "/api/v1/replays/{run_id}",
    tag = "operations",
    params(("run_id" = String, Path, description = "The `run_id` that `POST /api/v1/replays` answered")),
    responses(
        (status = 200, description = "`{run_id, state: running|done|failed, read, summary?, error?}`", body = RunView),
        (status = 401, body = ErrorBody),
        (status = 404, description = "No such run (or forgotten)", body = ErrorBody),
    )
)]
pub async fn show_replay(State(state): State<SharedState>, scope: Scope, Path(run_id): Path<String>) -> Result<Json<RunView>, ApiError> {
    state.replays.get(&run_id, scope.tenant_filter()).map(Json).ok_or_else(|| ApiError::not_found("no such replay run"))
}

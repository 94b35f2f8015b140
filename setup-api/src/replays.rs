//! Replays that run in the background, so that a client can follow their progress:
//! `POST /api/v1/replays` starts one (the body of `POST /api/v1/replay`) and answers 202 with its
//! `run_id` at once; `GET /api/v1/replays/{run_id}` answers how far it got (`read`: messages of
//! the selection read so far) and, once done, its summary. The same `hookline_operations::replay`
//! does the work, in the process that accepted it; that process writes the run's state to the KV
//! bucket `hookline_replay_runs` every second and at its end, so that every setup-api process
//! behind a load balancer answers for every run. A run whose process stopped (no word for
//! [`ABANDONED_AFTER`]) is answered `abandoned`: what it published stays published, and its events
//! carry their ids, so running it again is harmless. At most [`RUNNING`] runs at a time per
//! process; the bucket forgets a run a day after its last word.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Json;
use serde::{Deserialize, Serialize};
use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use utoipa::ToSchema;

use hookline_operations::replay::{self, ReplayOptions, ReplaySummary};
use hookline_shared::jetstream::{kv_bucket, BucketSpec};
use hookline_shared::{names, timefmt};

use crate::auth::Scope;
use crate::error::{ApiError, ErrorBody};
use crate::operations::Accepted;
use crate::server::SharedState;

/// Runs this process remembers in memory (finished or not); the bucket holds the others.
pub const KEPT: usize = 50;
/// Runs at the same time, per process.
pub const RUNNING: usize = 4;
/// How often a running run's state is written to the bucket.
pub const REPORT_EVERY: Duration = Duration::from_secs(1);
/// A run still `running` in the bucket with no word for this long: its process stopped.
pub const ABANDONED_AFTER: Duration = Duration::from_secs(10);
/// How long the bucket keeps a run after its last word.
pub const RUNS_KEPT_FOR: Duration = Duration::from_secs(24 * 3600);

struct Run {
    id: String,
    /// The tenant its selection was narrowed to (`None`: every tenant); a tenant's caller sees
    /// only its own runs, an admin every run.
    tenant: Option<String>,
    read: Arc<AtomicU64>,
    outcome: Mutex<Option<Result<ReplaySummary, String>>>,
}

/// The runs of this process, and the bucket every process shares.
pub struct Runs {
    runs: Mutex<VecDeque<Arc<Run>>>,
    bucket: tokio::sync::OnceCell<async_nats::jetstream::kv::Store>,
    replicas: usize,
}

/// A run as answered.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct RunView {
    pub run_id: String,
    /// `running`, `done`, `failed`, or `abandoned` (the process running it stopped).
    pub state: String,
    /// Messages of the selection read so far.
    pub read: u64,
    #[schema(value_type = Option<Object>)]
    pub summary: Option<ReplaySummary>,
    pub error: Option<String>,
}

/// A run as the bucket holds it: its view, its tenant and when its process last wrote it.
#[derive(Debug, Serialize, Deserialize)]
struct RunRecord {
    #[serde(flatten)]
    view: RunView,
    tenant: Option<String>,
    updated_at: String,
}

fn view(run: &Run) -> RunView {
    let outcome = run.outcome.lock().unwrap_or_else(|p| p.into_inner()).clone();
    let read = run.read.load(Ordering::Relaxed);
    let (state, summary, error) = match outcome {
        None => ("running", None, None),
        Some(Ok(summary)) => ("done", Some(summary), None),
        Some(Err(e)) => ("failed", None, Some(e)),
    };
    RunView { run_id: run.id.clone(), state: state.to_string(), read, summary, error }
}

/// Adds `run`, forgetting the oldest beyond [`KEPT`].
fn keep_newest(runs: &mut VecDeque<Arc<Run>>, run: Arc<Run>) {
    runs.push_back(run);
    while runs.len() > KEPT {
        runs.pop_front();
    }
}

fn new_run_id() -> Result<String, ApiError> {
    let mut bytes = [0u8; 8];
    getrandom::fill(&mut bytes).map_err(|e| ApiError::internal(format!("random run id: {e}")))?;
    Ok(format!("run_{}", hex::encode(bytes)))
}

/// A run id as the API hands them out (`run_` + 16 hex): anything else is no run, and never a
/// key the bucket is asked for.
fn is_run_id(id: &str) -> bool {
    id.strip_prefix("run_").is_some_and(|hex| hex.len() == 16 && hex.bytes().all(|b| b.is_ascii_hexdigit()))
}

impl Runs {
    /// `replicas`: the bucket's, as the channels bucket's (`streams.channels.replicas`).
    pub fn new(replicas: usize) -> Runs {
        Runs { runs: Mutex::default(), bucket: tokio::sync::OnceCell::new(), replicas }
    }

    async fn bucket(&self, js: &async_nats::jetstream::Context) -> Result<&async_nats::jetstream::kv::Store, String> {
        self.bucket
            .get_or_try_init(|| async {
                kv_bucket(
                    js,
                    BucketSpec {
                        name: names::REPLAY_RUNS_BUCKET,
                        description: "hookline background replays: each run's progress, written by the setup-api process running it",
                        history: 1,
                        max_age: RUNS_KEPT_FOR,
                        replicas: self.replicas,
                    },
                )
                .await
                .map_err(|e| e.to_string())
            })
            .await
    }

    /// A run that selected nothing (a tenant's selection of another tenant), done at once.
    pub async fn nothing(&self, js: &async_nats::jetstream::Context, dry_run: bool, tenant: Option<String>) -> Result<RunView, ApiError> {
        let summary = ReplaySummary { dry_run, ..Default::default() };
        let run = Arc::new(Run { id: new_run_id()?, tenant, read: Arc::new(AtomicU64::new(0)), outcome: Mutex::new(Some(Ok(summary))) });
        let answer = view(&run);
        self.keep(run.clone());
        self.write(js, &run).await;
        Ok(answer)
    }

    fn keep(&self, run: Arc<Run>) {
        keep_newest(&mut self.runs.lock().unwrap_or_else(|p| p.into_inner()), run);
    }

    /// Writes `run`'s state to the bucket; a failure is logged (the run goes on, and this
    /// process still answers for it).
    async fn write(&self, js: &async_nats::jetstream::Context, run: &Run) {
        let record = RunRecord { view: view(run), tenant: run.tenant.clone(), updated_at: timefmt::now_rfc3339() };
        let written = match (self.bucket(js).await, serde_json::to_vec(&record)) {
            (Ok(bucket), Ok(bytes)) => bucket.put(&run.id, bytes.into()).await.map(|_| ()).map_err(|e| e.to_string()),
            (Err(e), _) => Err(e),
            (_, Err(e)) => Err(e.to_string()),
        };
        if let Err(e) = written {
            tracing::warn!(run = %run.id, error = %e, "cannot write the replay's progress to the bucket: only this process answers for it");
        }
    }

    /// Starts `options` as `tenant` (already narrowed); its view at once.
    pub async fn start(
        self: &Arc<Self>,
        js: async_nats::jetstream::Context,
        options: ReplayOptions,
        tenant: Option<String>,
    ) -> Result<RunView, ApiError> {
        let run = {
            let mut runs = self.runs.lock().unwrap_or_else(|p| p.into_inner());
            let running = runs.iter().filter(|r| r.outcome.lock().unwrap_or_else(|p| p.into_inner()).is_none()).count();
            if running >= RUNNING {
                return Err(ApiError::conflict("replay", format!("{RUNNING} replays are running already here; wait for one to end")));
            }
            let run = Arc::new(Run { id: new_run_id()?, tenant, read: Arc::new(AtomicU64::new(0)), outcome: Mutex::new(None) });
            keep_newest(&mut runs, run.clone());
            run
        };
        self.write(&js, &run).await;
        let answer = view(&run);
        let runs = self.clone();
        tokio::spawn(async move {
            let read = run.read.clone();
            let mut progress = move |n: u64| read.store(n, Ordering::Relaxed);
            let work = replay::replay(&js, &options, &mut progress);
            tokio::pin!(work);
            let outcome = loop {
                tokio::select! {
                    outcome = &mut work => break outcome.map_err(|e| e.to_string()),
                    _ = tokio::time::sleep(REPORT_EVERY) => runs.write(&js, &run).await,
                }
            };
            match &outcome {
                Ok(s) => tracing::info!(run = %run.id, selected = s.selected, events = s.events, "background replay done"),
                Err(e) => tracing::warn!(run = %run.id, error = %e, "background replay failed"),
            }
            *run.outcome.lock().unwrap_or_else(|p| p.into_inner()) = Some(outcome);
            runs.write(&js, &run).await;
        });
        Ok(answer)
    }

    /// The run `id`, if `tenant` may see it (`None`: every run): this process's own, else the
    /// bucket's.
    pub async fn get(&self, js: &async_nats::jetstream::Context, id: &str, tenant: Option<&str>) -> Result<Option<RunView>, ApiError> {
        if !is_run_id(id) {
            return Ok(None);
        }
        let mine = {
            let runs = self.runs.lock().unwrap_or_else(|p| p.into_inner());
            runs.iter().find(|r| r.id == id).map(|r| (r.tenant.clone(), view(r)))
        };
        let (owner, found) = match mine {
            Some(found) => found,
            None => {
                let bucket = self.bucket(js).await.map_err(|e| ApiError::internal(format!("replay runs: {e}")))?;
                let Some(bytes) = bucket.get(id).await.map_err(|e| ApiError::internal(format!("replay runs: {e}")))? else {
                    return Ok(None);
                };
                let record: RunRecord =
                    serde_json::from_slice(&bytes).map_err(|e| ApiError::internal(format!("replay run {id} unreadable: {e}")))?;
                let mut view = record.view;
                let silent =
                    timefmt::parse_rfc3339(&record.updated_at).is_none_or(|at| time::OffsetDateTime::now_utc() - at > ABANDONED_AFTER);
                if view.state == "running" && silent {
                    view.state = "abandoned".to_string();
                    view.error = Some(format!("the setup-api process running it sent no word since {}", record.updated_at));
                }
                (record.tenant, view)
            }
        };
        Ok(tenant.is_none_or(|t| owner.as_deref() == Some(t)).then_some(found))
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
            let tenant = scope.tenant_filter().map(str::to_string);
            return Ok((StatusCode::ACCEPTED, Json(state.replays.nothing(&state.jetstream, false, tenant).await?)));
        }
    };
    options.dry_run = false;
    let tenant = options.selection.tenant.clone();
    let run = state.replays.start(state.jetstream.clone(), options, tenant).await?;
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
        (status = 200, description = "`{run_id, state: running|done|failed|abandoned, read, summary?, error?}`, from any setup-api process", body = RunView),
        (status = 401, body = ErrorBody),
        (status = 404, description = "No such run (or forgotten)", body = ErrorBody),
    )
)]
pub async fn show_replay(State(state): State<SharedState>, scope: Scope, Path(run_id): Path<String>) -> Result<Json<RunView>, ApiError> {
    state
        .replays
        .get(&state.jetstream, &run_id, scope.tenant_filter())
        .await?
        .map(Json)
        .ok_or_else(|| ApiError::not_found("no such replay run"))
}

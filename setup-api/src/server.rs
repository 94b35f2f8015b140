//! The HTTP server: `AppState`, the router (the API under `/api/v1` behind the bearer check,
//! the console under `/console`, `/healthz`, `/readyz`, `/metrics` beside it), the request
//! observer (metrics and one log line per request, never a body or a header), and `run`, which
//! wires Postgres, the mirror and the server together and drains on shutdown.

use axum::extract::{MatchedPath, Request, State};
use axum::http::{header, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use sqlx::PgPool;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use hookline_shared::config::{Config, ConfigError};
use hookline_shared::crypto::Keyring;
use hookline_shared::metrics::{Metrics, CONTENT_TYPE};

use crate::auth::{Authenticated, FailureLimiter, Scope, Tokens};
use crate::error::ApiError;
use crate::metrics::{ApiMetrics, RequestLabels};
use crate::mirror::{self, Mirror};
use crate::platforms::PlatformClient;
use crate::{db, destinations, routes, service, SetupApiError};

/// Largest request body accepted.
pub const MAX_BODY_BYTES: usize = 64 * 1024;
/// How long shutdown waits for requests in flight.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);
/// How long `/readyz` waits for Postgres.
const READY_TIMEOUT: Duration = Duration::from_secs(2);

pub struct AppState {
    pub pool: PgPool,
    pub keyring: Arc<Keyring>,
    pub tokens: Tokens,
    /// Failed authentications per client address (`setup_api.auth_failures_per_minute`).
    pub auth_failures: FailureLimiter,
    /// `setup_api.allow_private_destinations`: tenant tokens may point anywhere too.
    pub allow_private_destinations: bool,
    /// `ingest.public_url` without a trailing `/`.
    pub public_base: String,
    pub mirror: Arc<Mirror>,
    pub platforms: PlatformClient,
    pub shared_metrics: Arc<Metrics>,
    pub metrics: Arc<ApiMetrics>,
    pub shutting_down: AtomicBool,
    /// For replay and dead-letter routes; connects (and reconnects) in the background.
    pub jetstream: async_nats::jetstream::Context,
    /// The breaker state the forwarders publish, read for destination answers.
    pub destination_states: destinations::state::StateReader,
    /// Delivers the synthetic event of `POST /api/v1/destinations/{id}/test`.
    pub prober: destinations::probe::Prober,
    /// Replays running in the background (`POST /api/v1/replays`).
    pub replays: Arc<crate::replays::Runs>,
}

pub type SharedState = Arc<AppState>;

pub fn router(state: SharedState) -> Router {
    let api = Router::new()
        .route("/channels", post(routes::create_channel).get(routes::list_channels))
        .route("/channels/{id}", get(routes::get_channel).patch(routes::update_channel).delete(routes::delete_channel))
        .route("/channels/{id}/rotate-secret", post(routes::rotate_secret))
        .route("/destinations", post(destinations::create_destination).get(destinations::list_destinations))
        .route(
            "/destinations/{id}",
            get(destinations::get_destination).patch(destinations::update_destination).delete(destinations::delete_destination),
        )
        .route("/destinations/{id}/rotate-secret", post(destinations::rotate_destination_secret))
        .route("/destinations/{id}/pause", post(destinations::pause_destination))
        .route("/destinations/{id}/resume", post(destinations::resume_destination))
        .route("/destinations/{id}/test", post(destinations::test_destination))
        .route("/integrations/{platform}/setup", post(crate::platforms::setup_route))
        .route("/openapi.json", get(routes::openapi_json))
        .route("/replay", post(crate::operations::replay_route))
        .route("/dlq", get(crate::operations::list_dlq))
        .route("/dlq/redrive", post(crate::operations::redrive_dlq))
        .route("/dlq/purge", post(crate::operations::purge_dlq))
        .route("/dlq/{seq}", get(crate::operations::show_dlq))
        .route("/replays", post(crate::replays::start_replay))
        .route("/replays/{run_id}", get(crate::replays::show_replay))
        .route("/overview", get(crate::overview::overview_route))
        .route("/channels/{id}/activity", get(crate::overview::channel_activity_route))
        .route("/tokens", post(crate::tokens::create_token).get(crate::tokens::list_tokens))
        .route("/tokens/{id}", axum::routing::delete(crate::tokens::revoke_token))
        .route("/audit", get(crate::audit::list_audit))
        .route("/events", get(crate::events::find_events))
        .route("/events/{event_id}", get(crate::events::show_event))
        .route("/raw/{seq}", get(crate::events::show_raw))
        .fallback(routes::api_not_found)
        .method_not_allowed_fallback(routes::api_method_not_allowed)
        .layer(middleware::from_fn_with_state(state.clone(), require_token));
    Router::new()
        .nest("/api/v1", api)
        // The operator console: its page and assets, outside the bearer check (they hold no
        // data; every call the page makes goes to /api/v1 with the operator's token).
        .merge(hookline_console::router())
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .layer(middleware::from_fn_with_state(state.clone(), observe))
        .layer(axum::extract::DefaultBodyLimit::max(MAX_BODY_BYTES))
        .with_state(state)
}

/// The bearer check: turns the token into the request's `Scope` (which every handler takes),
/// refuses every change of a read-only token with 403, and answers 429 to an address past its
/// failed authentications of the minute (see `auth`).
async fn require_token(State(state): State<SharedState>, mut req: Request, next: Next) -> Response {
    let addr = req
        .extensions()
        .get::<axum::extract::ConnectInfo<std::net::SocketAddr>>()
        .map(|c| c.0.ip())
        .unwrap_or(std::net::IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED));
    let exhausted = state.auth_failures.exhausted(addr);
    let header = req.headers().get(header::AUTHORIZATION).map(|v| v.as_bytes());
    let principal = match state.tokens.authenticate(&state.pool, header, !exhausted).await {
        Ok(Authenticated::Yes(p)) => p,
        Ok(Authenticated::No) => {
            state.auth_failures.failed(addr);
            state.metrics.auth_failures.inc();
            tracing::info!(client = %addr, limited = exhausted, "setup-api authentication failed");
            return if exhausted { ApiError::too_many_failures() } else { ApiError::unauthorized() }.into_response();
        }
        Err(e) => return e.into_response(),
    };
    if principal.read_only && !matches!(*req.method(), axum::http::Method::GET | axum::http::Method::HEAD) {
        return ApiError::forbidden(None, "this token is read-only").into_response();
    }
    req.extensions_mut().insert(Scope::new(principal));
    next.run(req).await
}

/// Counts and logs every request by route template; never a body, header or query string.
async fn observe(State(state): State<SharedState>, req: Request, next: Next) -> Response {
    let started = Instant::now();
    let method = req.method().clone();
    let route = req.extensions().get::<MatchedPath>().map(|p| p.as_str().to_string()).unwrap_or_else(|| "unmatched".to_string());
    let response = next.run(req).await;
    let status = response.status().as_u16();
    let elapsed = started.elapsed();
    state.metrics.requests.get_or_create(&RequestLabels { route: route.clone(), method: method.as_str().to_string(), status }).inc();
    state.metrics.request_duration.observe(elapsed.as_secs_f64());
    if !matches!(route.as_str(), "/healthz" | "/readyz" | "/metrics") {
        tracing::info!(
            http.method = %method,
            http.route = %route,
            http.response.status_code = status,
            duration_ms = elapsed.as_millis() as u64,
            "setup-api request"
        );
    }
    response
}

async fn healthz() -> &'static str {
    "ok\n"
}

/// 200 while Postgres answers; 503 when it does not, and during shutdown. The body also says
/// whether the mirror is live (it does not decide readiness: with NATS away the API still takes
/// changes, which wait in the outbox).
async fn readyz(State(state): State<SharedState>) -> Response {
    if state.shutting_down.load(Ordering::Acquire) {
        return (StatusCode::SERVICE_UNAVAILABLE, "not ready: shutting down\n").into_response();
    }
    let ping = sqlx::query("SELECT 1").execute(&state.pool);
    match tokio::time::timeout(READY_TIMEOUT, ping).await {
        Ok(Ok(_)) => (
            StatusCode::OK,
            if state.mirror.is_live() { "ready\nmirror: live\n" } else { "ready\nmirror: starting (NATS not reached yet)\n" },
        )
            .into_response(),
        _ => (StatusCode::SERVICE_UNAVAILABLE, "not ready: Postgres does not answer\n").into_response(),
    }
}

async fn metrics(State(state): State<SharedState>) -> Response {
    ([(header::CONTENT_TYPE, CONTENT_TYPE)], state.metrics.encode_with(&state.shared_metrics)).into_response()
}

async fn operations_jetstream(config: &Config) -> Result<async_nats::jetstream::Context, SetupApiError> {
    let url = config.require_nats_url()?;
    let addrs = hookline_shared::jetstream::server_addrs(url).map_err(|m| ConfigError::new("nats.url", m))?;
    let client = async_nats::ConnectOptions::new()
        .name("hookline-setup-api-operations")
        .retry_on_initial_connect()
        .max_reconnects(None)
        .connect(addrs)
        .await
        .map_err(|e| SetupApiError::HttpClient(format!("NATS client: {e}")))?;
    Ok(async_nats::jetstream::new(client))
}

pub async fn run(
    config: &Config,
    shared_metrics: Arc<Metrics>,
    listener: TcpListener,
    shutdown: CancellationToken,
) -> Result<(), SetupApiError> {
    let keyring = Arc::new(config.keyring()?);
    if config.setup_api.tokens.is_empty() {
        return Err(ConfigError::new("setup_api.tokens", "required: at least one bearer token for the setup API").into());
    }
    config.require_nats_url()?;
    let url =
        config.database.url.as_ref().ok_or_else(|| ConfigError::new("database.url", "required: the Postgres URL of the setup API"))?;
    let setup = async {
        let pool = db::connect(url, config.database.max_connections).await.map_err(|e| SetupApiError::Connect(db::describe(&e)))?;
        db::MIGRATOR.run(&pool).await.map_err(|e| SetupApiError::Migrate(e.to_string()))?;
        let imported = service::import_declared(&pool, &keyring, &config.channels).await?;
        let imported_destinations = destinations::service::import_declared(&pool, &keyring, &config.destinations).await?;
        Ok::<_, SetupApiError>((pool, imported, imported_destinations))
    };
    // A signal during start-up (Postgres still unreachable, say) stops it at once.
    let Some(setup) = shutdown.run_until_cancelled(setup).await else {
        tracing::info!("setup-api stopped during start-up");
        return Ok(());
    };
    let (pool, imported, imported_destinations) = setup?;
    if imported > 0 {
        tracing::info!(imported, "channels declared in the configuration imported");
    }
    if imported_destinations > 0 {
        tracing::info!(imported = imported_destinations, "destinations declared in the configuration imported");
    }

    let metrics = ApiMetrics::new();
    let mirror = Mirror::new(metrics.clone());
    let mirror_shutdown = CancellationToken::new();
    let mirror_task = tokio::spawn(mirror::run(config.clone(), pool.clone(), mirror.clone(), mirror_shutdown.clone()));
    let jetstream = operations_jetstream(config).await?;
    let prober = destinations::probe::Prober::new(config.forwarder.request_timeout_ms)
        .map_err(|e| SetupApiError::HttpClient(format!("destination tests: {e}")))?;
    let state = Arc::new(AppState {
        pool: pool.clone(),
        keyring,
        tokens: Tokens::new(&config.setup_api.tokens),
        auth_failures: FailureLimiter::new(config.setup_api.auth_failures_per_minute),
        allow_private_destinations: config.setup_api.allow_private_destinations,
        public_base: config.ingest.public_url.trim_end_matches('/').to_string(),
        mirror,
        platforms: PlatformClient::new(&config.setup_api).map_err(|e| SetupApiError::HttpClient(e.to_string()))?,
        shared_metrics,
        metrics,
        shutting_down: AtomicBool::new(false),
        destination_states: destinations::state::StateReader::new(jetstream.clone()),
        prober,
        jetstream,
        replays: Arc::new(crate::replays::Runs::new(config.streams.channels.replicas)),
    });
    if let Ok(addr) = listener.local_addr() {
        tracing::info!(%addr, "setup-api listening");
    }
    let app = router(state.clone());
    let graceful = {
        let shutdown = shutdown.clone();
        let state = state.clone();
        async move {
            shutdown.cancelled().await;
            state.shutting_down.store(true, Ordering::Release);
            tracing::info!("setup-api shutting down: answering the requests in flight");
        }
    };
    let serve = axum::serve(listener, app.into_make_service_with_connect_info::<std::net::SocketAddr>()).with_graceful_shutdown(graceful);
    let deadline = async {
        shutdown.cancelled().await;
        tokio::time::sleep(SHUTDOWN_GRACE).await;
    };
    let served = tokio::select! {
        served = serve => served.map_err(|e| SetupApiError::Serve(e.to_string())),
        _ = deadline => {
            tracing::warn!("requests still in flight after the shutdown grace; leaving them");
            Ok(())
        }
    };
    // The mirror relays what the last requests wrote, then stops.
    mirror_shutdown.cancel();
    let _ = mirror_task.await;
    pool.close().await;
    served
}

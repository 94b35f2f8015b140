//! hookline setup API: channel configurations and destinations in Postgres with their secrets
//! sealed (AES-256-GCM under `secrets.key`), every change mirrored through an outbox to the KV
//! buckets `hookline_channels` (that ingest watches) and `hookline_destinations` (that the
//! forwarders watch), and helpers that point a platform at a new channel.
//!
//! `run` serves the API; `rotate_key` re-seals every secret under the current key.

pub mod audit;
pub mod auth;
pub mod db;
pub mod destinations;
pub mod error;
pub mod events;
pub mod ids;
pub mod metrics;
pub mod mirror;
pub mod model;
pub mod openapi;
pub mod operations;
pub mod overview;
pub mod platforms;
pub mod replays;
pub mod rotate;
pub mod routes;
pub mod server;
pub mod service;
pub mod tokens;
pub mod validate;

use std::sync::Arc;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use hookline_shared::config::{Config, ConfigError};
use hookline_shared::metrics::Metrics;

pub use rotate::rotate_key;

/// Why the setup API could not start, or stopped. Never holds a secret (nor the database URL).
#[derive(Debug, thiserror::Error)]
pub enum SetupApiError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("cannot connect to Postgres: {0}")]
    Connect(String),
    #[error("cannot run the migrations: {0}")]
    Migrate(String),
    #[error("Postgres: {0}")]
    Database(String),
    #[error("a channel does not open or seal: {0}")]
    Crypto(String),
    #[error("cannot build the HTTP client of the platform helpers: {0}")]
    HttpClient(String),
    #[error("the HTTP server failed: {0}")]
    Serve(String),
}

impl From<sqlx::Error> for SetupApiError {
    fn from(e: sqlx::Error) -> Self {
        SetupApiError::Database(db::describe(&e))
    }
}

/// Runs the setup API on `listener` until `shutdown` is cancelled: migrations, the import of
/// channels declared in the configuration, the mirror (reconcile, then relay the outbox) and
/// the HTTP API with `/healthz`, `/readyz` and `/metrics`. On shutdown it stops accepting,
/// answers the requests in flight, relays what the outbox still holds (briefly) and returns.
pub async fn run(config: &Config, metrics: Arc<Metrics>, listener: TcpListener, shutdown: CancellationToken) -> Result<(), SetupApiError> {
    server::run(config, metrics, listener, shutdown).await
}

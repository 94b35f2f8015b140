//! hookline ingest: verifies each webhook's signature and stores its exact bytes in
//! `HOOKLINE_RAW` before answering 200. It reads channels from the KV bucket that the setup
//! API (or `hookline.toml`) writes, and needs nothing but NATS.

pub mod channels;
pub mod error;
pub mod publish;
pub mod routes;
pub mod server;
pub mod sign;
pub mod verify;

use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use hookline_shared::config::{Config, ConfigError};
use hookline_shared::jetstream::{self, NatsSetupError};
use hookline_shared::metrics::Metrics;

use crate::channels::ChannelDirectory;
use crate::publish::RawPublisher;
use crate::routes::AppState;
use crate::verify::Tolerances;

#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Nats(#[from] NatsSetupError),
    #[error("{0}")]
    Channels(String),
}

/// Runs ingest on `listener` until `shutdown` is cancelled, then drains.
pub async fn run(config: &Config, metrics: Arc<Metrics>, listener: TcpListener, shutdown: CancellationToken) -> Result<(), IngestError> {
    let keyring = Arc::new(config.keyring()?);
    let setup = async {
        let client = jetstream::connect(&config.nats, "hookline-ingest").await?;
        let js = async_nats::jetstream::new(client.clone());
        jetstream::ensure_streams(&js, &config.streams).await?;
        let store = jetstream::channels_bucket(&js, &config.streams).await?;
        channels::write_declared(&store, &keyring, &config.channels).await.map_err(IngestError::Channels)?;
        Ok::<_, IngestError>((client, js, store))
    };
    // A signal during start-up (NATS still unreachable, say) stops it at once.
    let Some(setup) = shutdown.run_until_cancelled(setup).await else {
        tracing::info!("ingest stopped during start-up");
        return Ok(());
    };
    let (client, js, store) = setup?;
    let durability = hookline_shared::durability::DurabilityNote::default();
    hookline_shared::durability::check(config.nats.monitor_url.as_deref(), "ingest", &durability).await;

    let directory = Arc::new(ChannelDirectory::default());
    let watcher = tokio::spawn(channels::watch(js.clone(), store, keyring, directory.clone(), shutdown.clone()));

    let ingest = &config.ingest;
    let state = Arc::new(AppState {
        channels: directory,
        publisher: Arc::new(RawPublisher::new(
            client.clone(),
            Duration::from_millis(ingest.publish_ack_timeout_ms),
            config.nats.group_commit_max_batch,
            config.nats.group_commit_max_in_flight,
            metrics.clone(),
        )),
        metrics,
        max_body_bytes: ingest.max_body_bytes,
        body_read_timeout: Duration::from_millis(ingest.body_read_timeout_ms),
        retry_after_s: ingest.retry_after_s,
        public_base: ingest.public_url.trim_end_matches('/').to_string(),
        tolerances: Tolerances { webchat_s: ingest.webchat_tolerance_s, mercadopago_s: ingest.mercadopago_tolerance_s },
        shutting_down: AtomicBool::new(false),
        durability,
    });
    if let Ok(addr) = listener.local_addr() {
        tracing::info!(%addr, public_url = %ingest.public_url, "ingest listening");
    }
    server::serve(
        listener,
        state,
        Duration::from_millis(ingest.header_read_timeout_ms),
        Duration::from_millis(ingest.shutdown_grace_ms),
        shutdown,
    )
    .await;
    let _ = watcher.await;
    // Publishes already acked are stored; flush anything still buffered before leaving.
    let _ = client.flush().await;
    Ok(())
}

//! Running destinations. Each destination is its own durable consumer on `HOOKLINE_EVENTS`,
//! shared by every forwarder process, so a slow, failing or paused destination never delays
//! another's deliveries. The destination `default` comes from `forwarder.target_url` (its
//! consumer is the first stage's `forwarder`, so an upgrade keeps every pending event and
//! scheduled retry); the others from the KV bucket `hookline_destinations`, written by the setup
//! API or `[[destinations]]`, which [`registry`] watches: a destination created, changed, paused
//! or deleted takes effect within a second, with no restart and without Postgres.

pub mod breaker;
pub mod lease;
pub mod ordered;
pub mod rate;
pub mod registry;

use async_nats::jetstream::{self, kv};
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use hookline_shared::config::{Config, ConfigError};
use hookline_shared::jetstream::{self as js_setup, BucketSpec};
use hookline_shared::metrics::Metrics;
use hookline_shared::ops_server;

use crate::attempts::AttemptLog;
use crate::worker::ForwarderError;

/// The buckets the forwarder keeps: destinations, their shared state, the live processes.
pub struct Buckets {
    pub destinations: kv::Store,
    pub state: kv::Store,
    pub processes: kv::Store,
    /// Who delivers each ordered destination.
    pub leases: kv::Store,
}

pub async fn buckets(js: &jetstream::Context, config: &Config) -> Result<Buckets, ForwarderError> {
    let replicas = config.streams.channels.replicas;
    Ok(Buckets {
        destinations: js_setup::destinations_bucket(js, &config.streams).await?,
        state: js_setup::kv_bucket(
            js,
            BucketSpec {
                name: breaker::STATE_BUCKET,
                description: "hookline destinations' circuit breakers",
                history: 1,
                max_age: Duration::ZERO,
                replicas,
            },
        )
        .await?,
        processes: js_setup::kv_bucket(
            js,
            BucketSpec {
                name: rate::PROCESSES_BUCKET,
                description: "live hookline forwarder processes",
                history: 1,
                max_age: Duration::from_secs(5),
                replicas,
            },
        )
        .await?,
        leases: js_setup::kv_bucket(
            js,
            BucketSpec {
                name: lease::LEASES_BUCKET,
                description: "which hookline forwarder process delivers each ordered destination",
                history: 1,
                max_age: lease::TTL,
                replicas,
            },
        )
        .await?,
    })
}

/// Runs the forwarder role until `shutdown`; then every destination finishes (or leaves to
/// redelivery) what it holds.
pub async fn run(
    config: &Config,
    metrics: Arc<Metrics>,
    ops_listener: Option<TcpListener>,
    shutdown: CancellationToken,
) -> Result<(), ForwarderError> {
    let cfg = &config.forwarder;
    // Destinations in the bucket need the key that opens their secrets.
    let keyring = match config.secrets.key {
        Some(_) => Some(Arc::new(config.keyring()?)),
        None => None,
    };
    if cfg.target_url.is_none() && keyring.is_none() {
        return Err(ConfigError::new(
            "forwarder.target_url",
            "required: where events are delivered (or MESSAGING_SERVICE_URL), unless secrets.key is set to deliver to the destinations of the bucket hookline_destinations",
        )
        .into());
    }
    if cfg.target_url.is_some() && cfg.signing_secret.is_none() {
        tracing::warn!("forwarder.signing_secret is not set: deliveries to the destination default are not signed");
    }
    if keyring.is_none() {
        tracing::info!("secrets.key is not set: only the destination default (forwarder.target_url) is served");
    }
    let setup = async {
        let client = js_setup::connect(&config.nats, "hookline-forwarder").await?;
        let js = jetstream::new(client.clone());
        js_setup::ensure_streams(&js, &config.streams).await?;
        let buckets = buckets(&js, config).await?;
        Ok::<_, ForwarderError>((client, js, buckets))
    };
    // A signal during start-up (NATS still unreachable, say) stops it at once.
    let Some(setup) = shutdown.run_until_cancelled(setup).await else {
        tracing::info!("forwarder stopped during start-up");
        return Ok(());
    };
    let (client, js, buckets) = setup?;
    if let Some(keyring) = &keyring {
        registry::write_declared(&buckets.destinations, keyring, &config.destinations).await?;
    }

    if let Some(listener) = ops_listener {
        let probe = client.clone();
        let ready = Arc::new(move || probe.connection_state() == async_nats::connection::State::Connected);
        let note = hookline_shared::durability::DurabilityNote::default();
        hookline_shared::durability::check(config.nats.monitor_url.as_deref(), "forwarder", &note).await;
        tokio::spawn(ops_server::serve(listener, metrics.clone(), ready, note, shutdown.clone()));
    }
    let processes = rate::Processes::default();
    let instance = format!("{}-{}", std::process::id(), hookline_shared::servers::random_hex(6));
    let heartbeat = tokio::spawn(processes.clone().run(buckets.processes.clone(), instance.clone(), shutdown.clone()));

    let attempts = if cfg.attempts_log { AttemptLog::start(js.clone(), metrics.clone()) } else { AttemptLog::off() };
    let registry = registry::Registry::new(js, config.clone(), metrics, keyring, buckets, processes, instance, attempts);
    registry.run(shutdown).await;
    let _ = heartbeat.await;
    let _ = client.flush().await;
    Ok(())
}

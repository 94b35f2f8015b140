//! `hookline ingest`: the ingest role alone, for production.

use anyhow::Context;
use hookline_shared::config::Config;
use hookline_shared::metrics::Metrics;

pub async fn run(config: Config, shutdown: tokio_util::sync::CancellationToken) -> anyhow::Result<()> {
    config.require_nats_url()?;
    config.keyring()?;
    let listener = super::bind(config.ingest.listen, "ingest.listen").await?;
    hookline_ingest::run(&config, Metrics::new(), listener, shutdown).await.context("ingest")
}

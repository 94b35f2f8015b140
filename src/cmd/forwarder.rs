//! `hookline forwarder`: the forwarder role alone; run as many as needed.

use anyhow::Context;
use hookline_shared::config::Config;
use hookline_shared::metrics::Metrics;

pub async fn run(config: Config, shutdown: tokio_util::sync::CancellationToken) -> anyhow::Result<()> {
    config.require_nats_url()?;
    let ops = super::bind(config.forwarder.listen, "forwarder.listen").await?;
    hookline_forwarder::worker::run(&config, Metrics::new(), Some(ops), shutdown).await.context("forwarder")
}

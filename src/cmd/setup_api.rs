//! `hookline setup-api`: the channel configuration API alone (needs nats.url, database.url,
//! secrets.key and setup_api.tokens).

use anyhow::Context;
use hookline_shared::config::{Config, ConfigError};
use hookline_shared::metrics::Metrics;

pub async fn run(config: Config, shutdown: tokio_util::sync::CancellationToken) -> anyhow::Result<()> {
    config.require_nats_url()?;
    config.keyring()?;
    if config.database.url.is_none() {
        return Err(ConfigError::new("database.url", "required: the Postgres URL (or DB_HOST, DB_USER, ...)").into());
    }
    let listener = super::bind(config.setup_api.listen, "setup_api.listen").await?;
    hookline_setup_api::run(&config, Metrics::new(), listener, shutdown).await.context("setup-api")
}

/// `hookline secrets rotate-key`: re-seals every channel secret under `secrets.key`.
pub async fn rotate_key(config: Config) -> anyhow::Result<()> {
    config.keyring()?;
    if config.database.url.is_none() {
        return Err(ConfigError::new("database.url", "required: the Postgres URL").into());
    }
    let resealed = hookline_setup_api::rotate_key(&config).await.context("rotate-key")?;
    println!("re-sealed {resealed} secret value(s) under the current key; the previous key can be removed from secrets.previous_keys");
    Ok(())
}

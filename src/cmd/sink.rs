//! `hookline sink`: a receiver that verifies forwarded signatures and counts or prints events.
//! On stop it prints its statistics as JSON.

use anyhow::Context;
use hookline_forwarder::sink::{self, FailurePlan, SinkState};
use hookline_shared::config::Config;

pub struct SinkArgs {
    pub print: bool,
    pub fail_status: Option<u16>,
    pub fail_ratio: Option<f64>,
    pub fail_for_s: Option<f64>,
}

pub async fn run(config: Config, args: SinkArgs, shutdown: tokio_util::sync::CancellationToken) -> anyhow::Result<()> {
    let state = SinkState::new(config.sink.signing_secret.as_ref(), config.sink.print || args.print).context("sink.signing_secret")?;
    if config.sink.signing_secret.is_none() {
        tracing::warn!("sink.signing_secret is not set: deliveries are accepted unsigned");
    }
    if let Some(status) = args.fail_status {
        state.set_failure(FailurePlan { status, ratio: args.fail_ratio, for_s: args.fail_for_s, count: None, retry_after_s: None });
    }
    let listener = super::bind(config.sink.listen, "sink.listen").await?;
    tracing::info!(addr = %config.sink.listen, "sink listening");
    sink::serve(listener, state.clone(), shutdown).await;
    println!("{}", serde_json::to_string(&state.stats())?);
    Ok(())
}

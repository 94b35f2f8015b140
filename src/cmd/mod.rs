//! One file per subcommand, and the shutdown signal they share.

pub mod audit;
pub mod bench;
pub mod dlq;
pub mod events;
pub mod forwarder;
pub mod ingest;
pub mod normalize;
pub mod normalizer;
pub mod replay;
pub mod setup_api;
pub mod sink;
pub mod tokens;
pub mod up;

use tokio_util::sync::CancellationToken;

/// A token cancelled on the first Ctrl-C or SIGTERM; a second signal stops the child servers at
/// once and exits. The handlers are registered before this returns, so a signal that arrives at
/// any later moment is seen: call it before starting anything.
pub fn shutdown_on_signals() -> anyhow::Result<CancellationToken> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut interrupt = signal(SignalKind::interrupt()).map_err(|e| anyhow::anyhow!("cannot handle SIGINT: {e}"))?;
    let mut terminate = signal(SignalKind::terminate()).map_err(|e| anyhow::anyhow!("cannot handle SIGTERM: {e}"))?;
    let token = CancellationToken::new();
    let trigger = token.clone();
    tokio::spawn(async move {
        let mut signals = 0;
        loop {
            tokio::select! {
                _ = interrupt.recv() => {}
                _ = terminate.recv() => {}
            }
            signals += 1;
            if signals == 1 {
                tracing::info!("shutting down (signal again to exit at once)");
                trigger.cancel();
            } else {
                tracing::warn!("second signal: stopping child servers and exiting now");
                hookline_shared::servers::kill_all_children(std::time::Duration::from_secs(2));
                std::process::exit(130);
            }
        }
    });
    Ok(token)
}

/// Runs a command that has no drain of its own until it ends or `shutdown` fires.
pub async fn until_signal<F>(shutdown: &CancellationToken, command: F) -> anyhow::Result<()>
where
    F: std::future::Future<Output = anyhow::Result<()>>,
{
    match shutdown.run_until_cancelled(command).await {
        Some(result) => result,
        None => Err(Interrupted.into()),
    }
}

/// A command stopped by a signal before it finished (exit 130).
#[derive(Debug)]
pub struct Interrupted;

impl std::fmt::Display for Interrupted {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("interrupted")
    }
}

impl std::error::Error for Interrupted {}

/// Binds `addr`, naming the key on failure.
pub async fn bind(addr: std::net::SocketAddr, key: &str) -> anyhow::Result<tokio::net::TcpListener> {
    tokio::net::TcpListener::bind(addr).await.map_err(|e| anyhow::anyhow!("cannot listen on {addr} ({key}): {e}"))
}

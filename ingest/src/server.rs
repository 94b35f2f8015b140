//! The HTTP/1 server: accepts connections, cuts off slow clients (header and body read
//! timeouts), and on shutdown stops accepting, turns `/readyz` to 503 and drains the requests in
//! flight up to a deadline.

use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::routes::{handle, AppState};

pub async fn serve(
    listener: TcpListener,
    state: Arc<AppState>,
    header_read_timeout: Duration,
    grace: Duration,
    shutdown: CancellationToken,
) {
    let graceful = GracefulShutdown::new();
    let mut builder = http1::Builder::new();
    builder.timer(TokioTimer::new()).header_read_timeout(header_read_timeout).keep_alive(true);
    loop {
        let accepted = tokio::select! {
            _ = shutdown.cancelled() => break,
            accepted = listener.accept() => accepted,
        };
        let (stream, _peer) = match accepted {
            Ok(pair) => pair,
            Err(e) => {
                // Out of file descriptors and the like: wait a moment rather than spin.
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let state = state.clone();
        let conn = builder.serve_connection(TokioIo::new(stream), service_fn(move |req| handle(state.clone(), req)));
        let conn = graceful.watch(conn);
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!(error = %e, "connection ended with an error");
            }
        });
    }
    drop(listener);
    state.shutting_down.store(true, Ordering::Release);
    tracing::info!(in_flight = graceful.count(), "ingest stopped accepting; draining");
    tokio::select! {
        _ = graceful.shutdown() => tracing::info!("ingest drained"),
        _ = tokio::time::sleep(grace) => tracing::warn!(?grace, "ingest drain deadline passed; closing the remaining connections"),
    }
}

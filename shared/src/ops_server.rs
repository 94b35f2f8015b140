//! The small HTTP server of the worker roles: `/healthz`, `/readyz` and `/metrics`, so that a
//! normalizer or forwarder process can be probed and scraped like ingest.

use bytes::Bytes;
use http_body_util::Full;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use std::convert::Infallible;
use std::sync::Arc;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::metrics::{Metrics, CONTENT_TYPE};

/// Answers until `shutdown`. `ready` says whether the role can do its work now; `note`, a
/// warning about the server's durability, is added to `/readyz`'s body once set.
pub async fn serve(
    listener: TcpListener,
    metrics: Arc<Metrics>,
    ready: Arc<dyn Fn() -> bool + Send + Sync>,
    note: crate::durability::DurabilityNote,
    shutdown: CancellationToken,
) {
    loop {
        let (stream, _) = tokio::select! {
            _ = shutdown.cancelled() => return,
            accepted = listener.accept() => match accepted {
                Ok(pair) => pair,
                Err(e) => {
                    tracing::warn!(error = %e, "ops server accept failed");
                    continue;
                }
            },
        };
        let metrics = metrics.clone();
        let ready = ready.clone();
        let note = note.clone();
        tokio::spawn(async move {
            let service = service_fn(move |req: Request<hyper::body::Incoming>| {
                let metrics = metrics.clone();
                let ready = ready.clone();
                let note = note.clone();
                async move {
                    let with_note = |text: &str| match note.get() {
                        Some(n) => Bytes::from(format!("{text}\n{n}\n")),
                        None => Bytes::from(format!("{text}\n")),
                    };
                    let (status, content_type, body) = match req.uri().path() {
                        "/healthz" => (StatusCode::OK, "text/plain", Bytes::from_static(b"ok\n")),
                        "/readyz" if ready() => (StatusCode::OK, "text/plain", with_note("ready")),
                        "/readyz" => (StatusCode::SERVICE_UNAVAILABLE, "text/plain", with_note("not ready")),
                        "/metrics" => (StatusCode::OK, CONTENT_TYPE, Bytes::from(metrics.encode())),
                        _ => (StatusCode::NOT_FOUND, "text/plain", Bytes::from_static(b"not found\n")),
                    };
                    let mut response = Response::new(Full::new(body));
                    *response.status_mut() = status;
                    if let Ok(v) = content_type.parse() {
                        response.headers_mut().insert(hyper::header::CONTENT_TYPE, v);
                    }
                    Ok::<_, Infallible>(response)
                }
            });
            let _ = http1::Builder::new().serve_connection(TokioIo::new(stream), service).await;
        });
    }
}

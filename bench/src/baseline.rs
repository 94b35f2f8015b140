//! The thinnest possible path on the same machine: a bare hyper server that publishes each body
//! to JetStream and waits for the ack, then answers 200. No verification, no channels, no
//! headers: the limit hookline's ingest is measured against.

use async_nats::jetstream;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Response, StatusCode};
use hyper_util::rt::TokioIo;
use std::convert::Infallible;
use tokio::net::TcpListener;

pub const SUBJECT: &str = "bench.baseline";

/// Serves until the process ends.
pub async fn serve(listener: TcpListener, js: jetstream::Context) {
    loop {
        let Ok((stream, _)) = listener.accept().await else { continue };
        let _ = stream.set_nodelay(true);
        let js = js.clone();
        tokio::spawn(async move {
            let service = service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                let js = js.clone();
                async move {
                    let status = match req.into_body().collect().await {
                        Ok(body) => match js.publish(SUBJECT, body.to_bytes()).await {
                            Ok(ack) => match ack.await {
                                Ok(_) => StatusCode::OK,
                                Err(_) => StatusCode::SERVICE_UNAVAILABLE,
                            },
                            Err(_) => StatusCode::SERVICE_UNAVAILABLE,
                        },
                        Err(_) => StatusCode::BAD_REQUEST,
                    };
                    let mut r = Response::new(Full::new(Bytes::new()));
                    *r.status_mut() = status;
                    Ok::<_, Infallible>(r)
                }
            });
            let _ = http1::Builder::new().serve_connection(TokioIo::new(stream), service).await;
        });
    }
}

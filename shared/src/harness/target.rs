//! A destination's receiving end for tests: a local HTTP server that records every request,
//! checks each Standard Webhooks signature against its secrets with HMAC-SHA256 written here
//! (not the project's verifier), and answers the status it is told to.

use base64::Engine;
use bytes::Bytes;
use hmac::{KeyInit, Mac};
use http_body_util::{BodyExt, Full};
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use std::collections::BTreeSet;
use std::sync::atomic::{AtomicU16, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;
use tokio::net::TcpListener;

/// One request a target received.
#[derive(Clone, Debug)]
pub struct Received {
    pub event_id: String,
    pub at: Instant,
    /// Which of the target's secrets signed it (indexes into its secrets).
    pub valid_signatures: Vec<usize>,
    pub headers: Vec<(String, String)>,
}

/// A destination's receiving end: records every request, checks each signature against its
/// secrets with HMAC-SHA256 written here (not the project's verifier), answers `status`.
pub struct Target {
    pub url: String,
    secrets: Vec<Vec<u8>>,
    received: Mutex<Vec<Received>>,
    status: AtomicU16,
    /// Events answered 500 whatever `status` says.
    failing: Mutex<BTreeSet<String>>,
}

fn key(secret: &str) -> Vec<u8> {
    base64::engine::general_purpose::STANDARD.decode(secret.trim_start_matches("whsec_")).unwrap_or_else(|e| panic!("base64 secret: {e}"))
}

impl Target {
    pub async fn start(secrets: &[&str]) -> Arc<Target> {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap_or_else(|e| panic!("bind: {e}"));
        let target = Arc::new(Target {
            url: format!("http://{}/hook", listener.local_addr().unwrap_or_else(|e| panic!("addr: {e}"))),
            secrets: secrets.iter().map(|s| key(s)).collect(),
            received: Mutex::new(Vec::new()),
            status: AtomicU16::new(200),
            failing: Mutex::new(BTreeSet::new()),
        });
        let t = target.clone();
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else { return };
                let t = t.clone();
                tokio::spawn(async move {
                    let service = service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                        let t = t.clone();
                        async move {
                            let headers: Vec<(String, String)> =
                                req.headers().iter().map(|(k, v)| (k.as_str().to_string(), v.to_str().unwrap_or("").to_string())).collect();
                            let body = req.into_body().collect().await.map(|b| b.to_bytes()).unwrap_or_default();
                            let event_id = t.record(headers, &body);
                            let failing = t.failing.lock().unwrap_or_else(|p| p.into_inner()).contains(&event_id);
                            let status = if failing { 500 } else { t.status.load(Ordering::Acquire) };
                            let mut response = hyper::Response::new(Full::new(Bytes::new()));
                            *response.status_mut() = hyper::StatusCode::from_u16(status).unwrap_or_default();
                            Ok::<_, std::convert::Infallible>(response)
                        }
                    });
                    let _ = hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(stream), service).await;
                });
            }
        });
        target
    }

    /// Records a request; its event id.
    fn record(&self, headers: Vec<(String, String)>, body: &[u8]) -> String {
        let get = |name: &str| headers.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone()).unwrap_or_default();
        let (id, ts, sigs) = (get("webhook-id"), get("webhook-timestamp"), get("webhook-signature"));
        let signed = [id.as_bytes(), b".", ts.as_bytes(), b".", body].concat();
        let valid_signatures = self
            .secrets
            .iter()
            .enumerate()
            .filter(|(_, k)| {
                let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(k).unwrap_or_else(|e| panic!("hmac key: {e}"));
                mac.update(&signed);
                let expected = format!("v1,{}", base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes()));
                sigs.split(' ').any(|s| s == expected)
            })
            .map(|(i, _)| i)
            .collect();
        let event_id =
            serde_json::from_slice::<serde_json::Value>(body).ok().and_then(|v| v["id"].as_str().map(str::to_string)).unwrap_or_default();
        self.received.lock().unwrap_or_else(|p| p.into_inner()).push(Received {
            event_id: event_id.clone(),
            at: Instant::now(),
            valid_signatures,
            headers,
        });
        event_id
    }

    pub fn received(&self) -> Vec<Received> {
        self.received.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    pub fn ids(&self) -> BTreeSet<String> {
        self.received().into_iter().map(|r| r.event_id).filter(|id| !id.is_empty()).collect()
    }

    /// Answers 500 to the event `id` from now on, whatever the status.
    pub fn fail_event(&self, id: &str) {
        self.failing.lock().unwrap_or_else(|p| p.into_inner()).insert(id.to_string());
    }

    pub fn set_status(&self, status: u16) {
        self.status.store(status, Ordering::Release);
    }
}

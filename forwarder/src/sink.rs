//! `hookline sink`: a receiver for development, tests and benchmarks. It verifies each Standard
//! Webhooks signature (a bad one gets 401 and is counted), counts events and duplicates by
//! `webhook-id`, measures delivery latency from the event's `received_at`, can print each event,
//! and can be told to fail (a status for a share of requests, for a time or a count) to exercise
//! retries.
//!
//! Control routes: `GET /_sink/stats` (JSON), `GET /_sink/ids` (the ids delivered), `GET
//! /_sink/sequence` (every 2xx delivery in the order received: `[conversation, message id]`, the
//! conversation being `conversation.id`, else `sender.id`), `POST /_sink/fail` with
//! `{"status": 500, "ratio": 1.0, "for_s": 30, "count": 3, "retry_after_s": 2}` (all but `status`
//! optional; `{"status": 0}` turns failing off), `POST /_sink/delay` with `{"ms": 200}` (answer
//! every delivery that much later), `GET /healthz`. Every other POST is a delivery.

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use hookline_shared::{standard_webhooks, timefmt, Secret};

use crate::schedule::random_unit;

/// How the sink fails, when told to.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct FailurePlan {
    /// The status to answer; 0 turns failing off.
    pub status: u16,
    /// The share of deliveries that fail (default 1).
    pub ratio: Option<f64>,
    /// Fail for this long from now.
    pub for_s: Option<f64>,
    /// Fail this many deliveries, then stop failing.
    pub count: Option<u64>,
    /// Send `Retry-After` with the failures.
    pub retry_after_s: Option<u64>,
}

struct ActivePlan {
    plan: FailurePlan,
    until: Option<Instant>,
    remaining: Option<u64>,
}

/// One request the sink received for an event id.
#[derive(Debug, Clone, Serialize)]
pub struct Attempt {
    /// Milliseconds since the sink started.
    pub at_ms: u64,
    pub status: u16,
    /// The event said `replay: true`.
    pub replay: bool,
}

#[derive(Default)]
struct Counters {
    requests: u64,
    received: u64,
    duplicates: u64,
    bad_signature: u64,
    bad_body: u64,
    injected_failures: u64,
    by_id: HashMap<String, Vec<Attempt>>,
    latencies_ms: Vec<f64>,
    sequence: Vec<(String, String)>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct LatencySummary {
    pub p50: f64,
    pub p90: f64,
    pub p99: f64,
    pub max: f64,
}

/// What `GET /_sink/stats` answers.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct SinkStats {
    /// Every request to a delivery path.
    pub requests: u64,
    /// Deliveries answered 2xx.
    pub received: u64,
    /// Distinct event ids answered 2xx.
    pub unique: u64,
    /// 2xx deliveries of an id already answered 2xx.
    pub duplicates: u64,
    pub bad_signature: u64,
    pub bad_body: u64,
    pub injected_failures: u64,
    /// From the event's `received_at` to its receipt here, of the 2xx deliveries.
    pub latency_ms: Option<LatencySummary>,
}

pub struct SinkState {
    key: Option<Vec<u8>>,
    print: bool,
    started: Instant,
    counters: Mutex<Counters>,
    plan: Mutex<Option<ActivePlan>>,
    delay_ms: std::sync::atomic::AtomicU64,
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let rank = ((p / 100.0) * (sorted.len() - 1) as f64).round() as usize;
    sorted[rank.min(sorted.len() - 1)]
}

impl SinkState {
    /// `signing_secret`: verify deliveries against it (None: accept unsigned ones).
    pub fn new(signing_secret: Option<&Secret>, print: bool) -> Result<Arc<Self>, standard_webhooks::SignatureError> {
        let key = signing_secret.map(standard_webhooks::key_bytes).transpose()?;
        Ok(Arc::new(SinkState {
            key,
            print,
            started: Instant::now(),
            counters: Mutex::default(),
            plan: Mutex::new(None),
            delay_ms: Default::default(),
        }))
    }

    fn counters(&self) -> std::sync::MutexGuard<'_, Counters> {
        self.counters.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn set_failure(&self, plan: FailurePlan) {
        let active = (plan.status != 0).then(|| ActivePlan {
            until: plan.for_s.map(|s| Instant::now() + Duration::from_secs_f64(s.max(0.0))),
            remaining: plan.count,
            plan,
        });
        *self.plan.lock().unwrap_or_else(|p| p.into_inner()) = active;
    }

    /// Answer every delivery `delay` later (a slow target).
    pub fn set_delay(&self, delay: Duration) {
        self.delay_ms.store(delay.as_millis() as u64, std::sync::atomic::Ordering::Release);
    }

    pub fn stats(&self) -> SinkStats {
        let c = self.counters();
        let mut lat = c.latencies_ms.clone();
        lat.sort_by(f64::total_cmp);
        let latency_ms = (!lat.is_empty()).then(|| LatencySummary {
            p50: percentile(&lat, 50.0),
            p90: percentile(&lat, 90.0),
            p99: percentile(&lat, 99.0),
            max: lat.last().copied().unwrap_or(0.0),
        });
        let unique = c.by_id.values().filter(|attempts| attempts.iter().any(|a| (200..300).contains(&a.status))).count() as u64;
        SinkStats {
            requests: c.requests,
            received: c.received,
            unique,
            duplicates: c.duplicates,
            bad_signature: c.bad_signature,
            bad_body: c.bad_body,
            injected_failures: c.injected_failures,
            latency_ms,
        }
    }

    /// The ids answered 2xx at least once.
    pub fn delivered_ids(&self) -> Vec<String> {
        self.counters().by_id.iter().filter(|(_, a)| a.iter().any(|x| (200..300).contains(&x.status))).map(|(id, _)| id.clone()).collect()
    }

    /// Every request per event id, in order.
    pub fn attempts(&self) -> HashMap<String, Vec<Attempt>> {
        self.counters().by_id.clone()
    }

    /// Every 2xx delivery in the order received: (conversation or sender id, message id).
    pub fn sequence(&self) -> Vec<(String, String)> {
        self.counters().sequence.clone()
    }

    /// The failure to inject now, if any.
    fn injected(&self) -> Option<(u16, Option<u64>)> {
        let mut guard = self.plan.lock().unwrap_or_else(|p| p.into_inner());
        let active = guard.as_mut()?;
        if active.until.is_some_and(|u| Instant::now() > u) || active.remaining == Some(0) {
            *guard = None;
            return None;
        }
        if random_unit() >= active.plan.ratio.unwrap_or(1.0) {
            return None;
        }
        if let Some(r) = active.remaining.as_mut() {
            *r -= 1;
        }
        Some((active.plan.status, active.plan.retry_after_s))
    }

    fn receive(&self, headers: &http::HeaderMap, body: &[u8]) -> Response<Full<Bytes>> {
        let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
        let id = header(standard_webhooks::ID_HEADER).unwrap_or("").to_string();
        if let Some(key) = &self.key {
            let ok = match (header(standard_webhooks::TIMESTAMP_HEADER), header(standard_webhooks::SIGNATURE_HEADER)) {
                (Some(ts), Some(sig)) => standard_webhooks::verify(
                    key,
                    &id,
                    ts,
                    sig,
                    body,
                    time::OffsetDateTime::now_utc().unix_timestamp(),
                    standard_webhooks::DEFAULT_TOLERANCE_S,
                )
                .is_ok(),
                _ => false,
            };
            if !ok {
                let mut c = self.counters();
                c.requests += 1;
                c.bad_signature += 1;
                return answer(StatusCode::UNAUTHORIZED, "invalid signature\n", None);
            }
        }
        let at_ms = self.started.elapsed().as_millis() as u64;
        if let Some((status, retry_after)) = self.injected() {
            let mut c = self.counters();
            c.requests += 1;
            c.injected_failures += 1;
            c.by_id.entry(id).or_default().push(Attempt { at_ms, status, replay: false });
            let code = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            return answer(code, "injected failure\n", retry_after);
        }
        let event: serde_json::Value = match serde_json::from_slice(body) {
            Ok(v) => v,
            Err(_) => {
                let mut c = self.counters();
                c.requests += 1;
                c.bad_body += 1;
                return answer(StatusCode::BAD_REQUEST, "not JSON\n", None);
            }
        };
        let latency = event
            .get("received_at")
            .and_then(|v| v.as_str())
            .and_then(timefmt::parse_rfc3339)
            .map(|t| (time::OffsetDateTime::now_utc() - t).as_seconds_f64() * 1000.0);
        {
            let mut c = self.counters();
            c.requests += 1;
            c.received += 1;
            let attempts = c.by_id.entry(id).or_default();
            let duplicate = attempts.iter().any(|a| (200..300).contains(&a.status));
            attempts.push(Attempt { at_ms, status: 200, replay: event.get("replay").and_then(|v| v.as_bool()).unwrap_or(false) });
            if duplicate {
                c.duplicates += 1;
            }
            if let Some(ms) = latency {
                if c.latencies_ms.len() < 5_000_000 {
                    c.latencies_ms.push(ms.max(0.0));
                }
            }
            if c.sequence.len() < 5_000_000 {
                let text = |v: &serde_json::Value| v.as_str().unwrap_or("").to_string();
                let conversation = match event.pointer("/conversation/id") {
                    Some(id) => text(id),
                    None => event.pointer("/sender/id").map(text).unwrap_or_default(),
                };
                let message = event.pointer("/message/id").map(text).unwrap_or_default();
                c.sequence.push((conversation, message));
            }
        }
        if self.print {
            println!("{event}");
        }
        answer(StatusCode::OK, "", None)
    }
}

fn answer(status: StatusCode, body: &'static str, retry_after: Option<u64>) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from_static(body.as_bytes())));
    *r.status_mut() = status;
    if let Some(s) = retry_after {
        r.headers_mut().insert(hyper::header::RETRY_AFTER, http::HeaderValue::from(s));
    }
    r
}

fn json<T: Serialize>(value: &T) -> Response<Full<Bytes>> {
    let body = serde_json::to_vec(value).unwrap_or_default();
    let mut r = Response::new(Full::new(Bytes::from(body)));
    r.headers_mut().insert(hyper::header::CONTENT_TYPE, http::HeaderValue::from_static("application/json"));
    r
}

async fn route(state: Arc<SinkState>, req: Request<hyper::body::Incoming>) -> Result<Response<Full<Bytes>>, Infallible> {
    let (parts, body) = req.into_parts();
    let body = match Limited::new(body, 16 * 1024 * 1024).collect().await {
        Ok(c) => c.to_bytes(),
        Err(_) => return Ok(answer(StatusCode::PAYLOAD_TOO_LARGE, "too large\n", None)),
    };
    Ok(match (parts.method.clone(), parts.uri.path()) {
        (Method::GET, "/healthz") => answer(StatusCode::OK, "ok\n", None),
        (Method::GET, "/_sink/stats") => json(&state.stats()),
        (Method::GET, "/_sink/ids") => json(&state.delivered_ids()),
        (Method::GET, "/_sink/sequence") => json(&state.sequence()),
        (Method::POST, "/_sink/fail") => match serde_json::from_slice::<FailurePlan>(&body) {
            Ok(plan) => {
                state.set_failure(plan);
                answer(StatusCode::OK, "ok\n", None)
            }
            Err(_) => answer(StatusCode::BAD_REQUEST, "expected {\"status\": ...}\n", None),
        },
        (Method::POST, "/_sink/delay") => match serde_json::from_slice::<serde_json::Value>(&body).ok().and_then(|v| v.get("ms")?.as_u64())
        {
            Some(ms) => {
                state.set_delay(Duration::from_millis(ms));
                answer(StatusCode::OK, "ok\n", None)
            }
            None => answer(StatusCode::BAD_REQUEST, "expected {\"ms\": ...}\n", None),
        },
        (Method::POST, _) => {
            let delay = state.delay_ms.load(std::sync::atomic::Ordering::Acquire);
            if delay > 0 {
                tokio::time::sleep(Duration::from_millis(delay)).await;
            }
            state.receive(&parts.headers, &body)
        }
        _ => answer(StatusCode::NOT_FOUND, "not found\n", None),
    })
}

/// Serves until `shutdown`.
pub async fn serve(listener: TcpListener, state: Arc<SinkState>, shutdown: CancellationToken) {
    loop {
        let (stream, _) = tokio::select! {
            _ = shutdown.cancelled() => return,
            accepted = listener.accept() => match accepted {
                Ok(pair) => pair,
                Err(e) => {
                    tracing::warn!(error = %e, "sink accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let _ = stream.set_nodelay(true);
        let state = state.clone();
        tokio::spawn(async move {
            let service = service_fn(move |req| route(state.clone(), req));
            let _ = http1::Builder::new().serve_connection(TokioIo::new(stream), service).await;
        });
    }
}

//! The load generator: `concurrency` keep-alive HTTP/1 connections, each sending one request at
//! a time, at a fixed total rate or as fast as possible, bounded by a duration and a request
//! count. It records every latency, the answers by status, and a per-second timeline.

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1;
use hyper_util::rt::TokioIo;
use serde::Serialize;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::net::TcpStream;

use crate::workload::Webhook;

#[derive(Debug, Clone)]
pub struct LoadSpec {
    pub target: SocketAddr,
    pub concurrency: usize,
    /// Requests a second in all; None: as fast as possible.
    pub rate: Option<f64>,
    pub duration: Duration,
    pub max_requests: u64,
}

/// One second of the run.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Second {
    pub second: u64,
    pub requests: u64,
    pub ok: u64,
    pub p99_ms: f64,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct LoadResult {
    pub sent: u64,
    pub answered_200: u64,
    /// Non-200 answers by status; 0 for connection errors.
    pub non_200: BTreeMap<u16, u64>,
    pub elapsed_s: f64,
    pub requests_per_second: f64,
    pub p50_ms: f64,
    pub p90_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
    pub timeline: Vec<Second>,
    /// The event ids of every webhook answered 200 (the ledger), when asked for.
    #[serde(skip)]
    pub accepted_event_ids: Vec<String>,
}

pub fn percentile(sorted_ms: &[f64], p: f64) -> f64 {
    if sorted_ms.is_empty() {
        return 0.0;
    }
    let rank = ((p / 100.0) * (sorted_ms.len() - 1) as f64).round() as usize;
    sorted_ms[rank.min(sorted_ms.len() - 1)]
}

struct Shared {
    next: AtomicU64,
    latencies: Mutex<Vec<(u64, f64, u16)>>,
    accepted: Mutex<Vec<String>>,
}

/// Runs the load. `make(n)` builds request n; `progress(sent)` is called about once a second.
pub async fn run<F>(spec: &LoadSpec, make: F, keep_ledger: bool, progress: &(dyn Fn(u64, u64) + Sync)) -> LoadResult
where
    F: Fn(u64) -> Webhook + Send + Sync + 'static,
{
    let make = Arc::new(make);
    let shared = Arc::new(Shared { next: AtomicU64::new(0), latencies: Mutex::new(Vec::new()), accepted: Mutex::new(Vec::new()) });
    let started = Instant::now();
    let deadline = started + spec.duration;
    let per_worker_interval = spec.rate.filter(|r| *r > 0.0).map(|r| Duration::from_secs_f64(spec.concurrency as f64 / r));
    let mut workers = Vec::new();
    for w in 0..spec.concurrency {
        let shared = shared.clone();
        let make = make.clone();
        let spec = spec.clone();
        workers.push(tokio::spawn(async move {
            let mut sender: Option<http1::SendRequest<Full<Bytes>>> = None;
            let mut local = Vec::new();
            let mut accepted = Vec::new();
            // Spread the workers' first sends over one interval.
            let mut next_at = per_worker_interval.map(|i| started + i.mul_f64(w as f64 / spec.concurrency as f64));
            loop {
                if Instant::now() >= deadline {
                    break;
                }
                if let Some(at) = next_at {
                    if at > deadline {
                        break;
                    }
                    tokio::time::sleep_until(at.into()).await;
                    next_at = Some(at + per_worker_interval.unwrap_or_default());
                }
                let n = shared.next.fetch_add(1, Ordering::Relaxed);
                if n >= spec.max_requests {
                    break;
                }
                let webhook = make(n);
                let t0 = Instant::now();
                let status = send(&mut sender, spec.target, &webhook).await;
                let ms = t0.elapsed().as_secs_f64() * 1000.0;
                local.push((t0.duration_since(started).as_secs(), ms, status));
                if status == 200 && keep_ledger {
                    accepted.extend(webhook.event_ids);
                }
            }
            shared.latencies.lock().unwrap_or_else(|p| p.into_inner()).extend(local);
            shared.accepted.lock().unwrap_or_else(|p| p.into_inner()).extend(accepted);
        }));
    }
    let mut ticker = tokio::time::interval(Duration::from_secs(1));
    let all = futures_util::future::join_all(workers);
    tokio::pin!(all);
    loop {
        tokio::select! {
            _ = &mut all => break,
            _ = ticker.tick() => progress(shared.next.load(Ordering::Relaxed).min(spec.max_requests), started.elapsed().as_secs()),
        }
    }
    let elapsed = started.elapsed().as_secs_f64();
    let records = std::mem::take(&mut *shared.latencies.lock().unwrap_or_else(|p| p.into_inner()));
    let accepted = std::mem::take(&mut *shared.accepted.lock().unwrap_or_else(|p| p.into_inner()));
    summarize(records, elapsed, accepted)
}

fn summarize(records: Vec<(u64, f64, u16)>, elapsed: f64, accepted: Vec<String>) -> LoadResult {
    let mut result = LoadResult { sent: records.len() as u64, elapsed_s: elapsed, accepted_event_ids: accepted, ..Default::default() };
    let mut all: Vec<f64> = Vec::with_capacity(records.len());
    let mut by_second: BTreeMap<u64, Vec<(f64, bool)>> = BTreeMap::new();
    for (second, ms, status) in &records {
        if *status == 200 {
            result.answered_200 += 1;
            all.push(*ms);
        } else {
            *result.non_200.entry(*status).or_default() += 1;
        }
        by_second.entry(*second).or_default().push((*ms, *status == 200));
    }
    all.sort_by(f64::total_cmp);
    result.requests_per_second = result.answered_200 as f64 / elapsed.max(1e-9);
    result.p50_ms = percentile(&all, 50.0);
    result.p90_ms = percentile(&all, 90.0);
    result.p99_ms = percentile(&all, 99.0);
    result.max_ms = all.last().copied().unwrap_or(0.0);
    for (second, mut items) in by_second {
        items.sort_by(|a, b| a.0.total_cmp(&b.0));
        let lat: Vec<f64> = items.iter().map(|i| i.0).collect();
        result.timeline.push(Second {
            second,
            requests: items.len() as u64,
            ok: items.iter().filter(|i| i.1).count() as u64,
            p99_ms: percentile(&lat, 99.0),
        });
    }
    result
}

/// Sends one request over the worker's connection (re-opened when broken); the status, or 0
/// for a connection error.
pub(crate) async fn send(sender: &mut Option<http1::SendRequest<Full<Bytes>>>, target: SocketAddr, webhook: &Webhook) -> u16 {
    for _ in 0..2 {
        if sender.as_ref().is_none_or(|s| s.is_closed()) {
            *sender = connect(target).await;
        }
        let Some(s) = sender.as_mut() else { return 0 };
        if s.ready().await.is_err() {
            *sender = None;
            continue;
        }
        let mut request = hyper::Request::post(&webhook.path).header("host", target.to_string());
        for (k, v) in &webhook.headers {
            request = request.header(k.as_str(), v.as_str());
        }
        let Ok(request) = request.body(Full::new(webhook.body.clone())) else { return 0 };
        match s.send_request(request).await {
            Ok(response) => {
                let status = response.status().as_u16();
                let _ = response.into_body().collect().await;
                return status;
            }
            Err(_) => {
                *sender = None;
            }
        }
    }
    0
}

async fn connect(target: SocketAddr) -> Option<http1::SendRequest<Full<Bytes>>> {
    let stream = TcpStream::connect(target).await.ok()?;
    let _ = stream.set_nodelay(true);
    let (sender, connection) = http1::handshake(TokioIo::new(stream)).await.ok()?;
    tokio::spawn(connection);
    Some(sender)
}

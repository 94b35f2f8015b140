//! What a bench run prints: a human summary, or with `--json` one machine-readable object.

use serde::Serialize;

use crate::load::LoadResult;
use crate::runs::E2eReport;

#[derive(Debug, Serialize)]
pub struct IngestReport {
    pub run: &'static str,
    pub requests_per_second: f64,
    pub p50_ms: f64,
    pub p90_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
    pub sent: u64,
    pub answered_200: u64,
    pub non_200: std::collections::BTreeMap<u16, u64>,
    pub baseline_requests_per_second: Option<f64>,
    pub baseline_p99_ms: Option<f64>,
    pub ratio: Option<f64>,
}

impl IngestReport {
    pub fn new(run: &'static str, r: &LoadResult, baseline: Option<&LoadResult>) -> Self {
        IngestReport {
            run,
            requests_per_second: r.requests_per_second,
            p50_ms: r.p50_ms,
            p90_ms: r.p90_ms,
            p99_ms: r.p99_ms,
            max_ms: r.max_ms,
            sent: r.sent,
            answered_200: r.answered_200,
            non_200: r.non_200.clone(),
            baseline_requests_per_second: baseline.map(|b| b.requests_per_second),
            baseline_p99_ms: baseline.map(|b| b.p99_ms),
            ratio: baseline.map(|b| r.requests_per_second / b.requests_per_second.max(1e-9)),
        }
    }

    pub fn print(&self) {
        println!(
            "{}: {:.0} req/s answered 200; latency p50 {:.2} ms, p90 {:.2} ms, p99 {:.2} ms, max {:.2} ms; {} sent",
            self.run, self.requests_per_second, self.p50_ms, self.p90_ms, self.p99_ms, self.max_ms, self.sent
        );
        if !self.non_200.is_empty() {
            println!("  non-200 answers: {:?} (0: connection errors)", self.non_200);
        }
        if let (Some(b), Some(ratio)) = (self.baseline_requests_per_second, self.ratio) {
            println!("  baseline (bare hyper + JetStream publish + ack): {b:.0} req/s; ingest/baseline = {ratio:.2}");
        }
    }
}

pub fn print_e2e(r: &E2eReport) {
    let l = &r.ledger;
    println!(
        "e2e{}: {} normalizer(s), {} forwarder(s), {} destination(s); ingest {:.0} req/s (p99 {:.2} ms); delivered {:.0} events/s; ingest→sink latency p50 {:.1} ms, p99 {:.1} ms",
        r.fault.map(|f| format!(" with fault {}", serde_json::to_string(&f).unwrap_or_default().trim_matches('"'))).unwrap_or_default(),
        r.normalizers,
        r.forwarders,
        r.destinations,
        r.load.requests_per_second,
        r.load.p99_ms,
        r.delivered_per_second,
        r.latency_p50_ms,
        r.latency_p99_ms
    );
    println!(
        "  ledger: sent {}, answered 200 {}, expected events {}, delivered {}, in DLQ {}, duplicates {}, lost {}",
        l.sent, l.answered_200, l.expected_events, l.delivered, l.in_dlq, l.duplicates, l.lost
    );
    println!(
        "  delivery log {}: {} attempt record(s), {} index entr(ies) stored",
        if r.attempts_log { "on" } else { "off" },
        r.attempt_records,
        r.index_entries
    );
    if !r.load.non_200.is_empty() {
        println!("  non-200 answers: {:?} (0: connection errors)", r.load.non_200);
    }
    let peak_lag = r.lag.iter().map(|s| s.normalizer_pending + s.forwarder_pending).max().unwrap_or(0);
    println!(
        "  peak consumer lag {peak_lag}; peak memory (MiB): {:?}",
        r.rss_mib.iter().map(|(k, v)| format!("{k} {v:.0}")).collect::<Vec<_>>()
    );
    println!(
        "  CPU: {:.3} ms a delivery in the pipeline; seconds by role: {:?}",
        r.cpu_ms_per_event,
        r.cpu_s.iter().map(|(k, v)| format!("{k} {v:.1}")).collect::<Vec<_>>()
    );
    if r.per_destination.len() > 1 {
        for d in &r.per_destination {
            println!(
                "  destination {}: {} events, latency p50 {:.1} ms, p99 {:.1} ms",
                d.destination, d.delivered, d.latency_p50_ms, d.latency_p99_ms
            );
        }
    }
    for note in &r.notes {
        println!("  {note}");
    }
}

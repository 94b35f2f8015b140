//! Logs (tracing, pretty or JSON), OpenTelemetry traces over OTLP when an endpoint is
//! configured, and the W3C `traceparent` that rides in NATS headers from ingest onwards.

use opentelemetry::propagation::{Extractor, TextMapPropagator};
use opentelemetry::trace::{TraceContextExt, TracerProvider as _};
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing_opentelemetry::OpenTelemetrySpanExt;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer};

use crate::config::{LogConfig, LogFormat, TelemetryConfig};

#[derive(Debug, thiserror::Error)]
pub enum TelemetryError {
    #[error("log.level: {0}")]
    Filter(String),
    #[error("telemetry.otlp_endpoint: cannot build the OTLP exporter: {0}")]
    Exporter(String),
    #[error("a global logger is already installed")]
    AlreadyInstalled,
}

/// Flushes and stops the trace exporter when dropped.
pub struct TelemetryGuard {
    provider: SdkTracerProvider,
}

impl Drop for TelemetryGuard {
    fn drop(&mut self) {
        let _ = self.provider.shutdown();
    }
}

/// Installs the global subscriber. `RUST_LOG`, when set, overrides `log.level`.
pub fn init(log: &LogConfig, telemetry: &TelemetryConfig) -> Result<TelemetryGuard, TelemetryError> {
    let filter = match std::env::var("RUST_LOG") {
        Ok(v) if !v.is_empty() => EnvFilter::try_new(v),
        _ => EnvFilter::try_new(&log.level),
    }
    .map_err(|e| TelemetryError::Filter(e.to_string()))?;

    let resource = opentelemetry_sdk::Resource::builder().with_service_name(telemetry.service_name.clone()).build();
    let mut builder = SdkTracerProvider::builder().with_resource(resource);
    if let Some(endpoint) = &telemetry.otlp_endpoint {
        use opentelemetry_otlp::WithExportConfig;
        let exporter = opentelemetry_otlp::SpanExporter::builder()
            .with_tonic()
            .with_endpoint(endpoint.clone())
            .build()
            .map_err(|e| TelemetryError::Exporter(e.to_string()))?;
        builder = builder.with_batch_exporter(exporter);
    }
    // Without an exporter the provider still gives spans W3C ids, so `traceparent` is real.
    let provider = builder.build();
    let otel = tracing_opentelemetry::layer().with_tracer(provider.tracer("hookline"));

    let fmt = match log.format {
        LogFormat::Json => {
            tracing_subscriber::fmt::layer().with_writer(std::io::stderr).json().with_current_span(true).with_span_list(false).boxed()
        }
        LogFormat::Pretty => tracing_subscriber::fmt::layer().with_writer(std::io::stderr).with_target(false).boxed(),
    };
    tracing_subscriber::registry().with(filter).with(fmt).with(otel).try_init().map_err(|_| TelemetryError::AlreadyInstalled)?;
    Ok(TelemetryGuard { provider })
}

struct OneHeader<'a>(Option<&'a str>);

impl Extractor for OneHeader<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        if key.eq_ignore_ascii_case("traceparent") {
            self.0
        } else {
            None
        }
    }
    fn keys(&self) -> Vec<&str> {
        vec!["traceparent"]
    }
}

/// Makes `traceparent` (when valid) the parent of `span`.
pub fn set_parent(span: &tracing::Span, traceparent: Option<&str>) {
    if traceparent.is_none() {
        return;
    }
    let cx = TraceContextPropagator::new().extract(&OneHeader(traceparent));
    if cx.span().span_context().is_valid() {
        let _ = span.set_parent(cx);
    }
}

/// 24 random bytes for a trace id and a span id: a per-thread SplitMix64 generator seeded once
/// from the OS, so that ingest's hot path makes no system call for them (trace ids need to be
/// unique, not secret).
fn random_ids() -> [u8; 24] {
    use std::cell::Cell;
    thread_local! {
        static STATE: Cell<u64> = Cell::new({
            let mut seed = [0u8; 8];
            let _ = getrandom::fill(&mut seed);
            u64::from_le_bytes(seed) | 1
        });
    }
    let mut out = [0u8; 24];
    STATE.with(|state| {
        for chunk in out.chunks_mut(8) {
            let mut z = state.get().wrapping_add(0x9E37_79B9_7F4A_7C15);
            state.set(z);
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            chunk.copy_from_slice(&(z ^ (z >> 31)).to_le_bytes());
        }
    });
    out
}

/// The W3C `traceparent` of `span`, so every raw message carries one. When no OpenTelemetry
/// layer is installed (tests, tools), it continues `incoming`'s trace with a new span id, or
/// starts a trace with fresh random ids.
pub fn traceparent(span: &tracing::Span, incoming: Option<&str>) -> String {
    let cx = span.context();
    let sc = cx.span().span_context().clone();
    if sc.is_valid() {
        return format!("00-{}-{}-{:02x}", sc.trace_id(), sc.span_id(), sc.trace_flags().to_u8());
    }
    let mut ids = random_ids();
    if ids[..16].iter().all(|b| *b == 0) || ids[16..].iter().all(|b| *b == 0) {
        ids[0] = 1;
        ids[23] = 1;
    }
    let parent = incoming.map(|tp| TraceContextPropagator::new().extract(&OneHeader(Some(tp))));
    if let Some(parent) = parent.filter(|p| p.span().span_context().is_valid()) {
        let psc = parent.span().span_context().clone();
        return format!("00-{}-{}-{:02x}", psc.trace_id(), hex::encode(&ids[16..]), psc.trace_flags().to_u8());
    }
    format!("00-{}-{}-01", hex::encode(&ids[..16]), hex::encode(&ids[16..]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_traceparent_is_always_w3c_shaped() {
        let tp = traceparent(&tracing::Span::none(), None);
        let parts: Vec<&str> = tp.split('-').collect();
        assert_eq!(parts.len(), 4, "{tp}");
        assert_eq!((parts[0], parts[1].len(), parts[2].len(), parts[3]), ("00", 32, 16, "01"));
        assert_ne!(traceparent(&tracing::Span::none(), None), tp, "ids are random per call");
    }

    #[test]
    fn an_incoming_trace_is_continued_with_a_new_span() {
        let incoming = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";
        let tp = traceparent(&tracing::Span::none(), Some(incoming));
        let parts: Vec<&str> = tp.split('-').collect();
        assert_eq!(parts[1], "0af7651916cd43dd8448eb211c80319c");
        assert_ne!(parts[2], "b7ad6b7169203331");
        let fresh = traceparent(&tracing::Span::none(), Some("garbage"));
        assert_ne!(fresh.split('-').nth(1), Some("0af7651916cd43dd8448eb211c80319c"));
    }
}

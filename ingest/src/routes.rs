//! The ingest routes: webhooks (by channel, and the seed services' per-platform default),
//! Meta's handshake, health, readiness and metrics.

use bytes::Bytes;
use http::{header, HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use std::convert::Infallible;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tracing::Instrument;

use hookline_shared::channel::Channel;
use hookline_shared::metrics::{Metrics, RequestLabels, SignatureFailureLabels};
use hookline_shared::{telemetry, timefmt, Source};

use crate::channels::ChannelDirectory;
use crate::error::Rejection;
use crate::publish::{RawMessage, RawPublisher};
use crate::verify::{self, SignedRequest, Tolerances};

/// What every request handler shares.
pub struct AppState {
    pub channels: Arc<ChannelDirectory>,
    pub publisher: Arc<RawPublisher>,
    pub metrics: Arc<Metrics>,
    pub max_body_bytes: usize,
    pub body_read_timeout: Duration,
    pub retry_after_s: u64,
    /// `ingest.public_url` without a trailing `/`.
    pub public_base: String,
    pub tolerances: Tolerances,
    pub shutting_down: AtomicBool,
    /// A warning about the nats-server's durability, shown by `/readyz`.
    pub durability: hookline_shared::durability::DurabilityNote,
}

enum Route<'a> {
    Webhook(&'a str),
    DefaultWebhook(&'a str),
    Healthz,
    Readyz,
    Metrics,
    NotFound,
}

impl<'a> Route<'a> {
    fn parse(path: &'a str) -> Route<'a> {
        let single = |rest: &'a str| (!rest.is_empty() && !rest.contains('/')).then_some(rest);
        if let Some(id) = path.strip_prefix("/webhooks/").and_then(single) {
            return Route::Webhook(id);
        }
        if let Some(p) = path.strip_prefix("/api/v1/integrations/webhooks/").and_then(single) {
            return Route::DefaultWebhook(p);
        }
        match path {
            "/healthz" => Route::Healthz,
            "/readyz" => Route::Readyz,
            "/metrics" => Route::Metrics,
            _ => Route::NotFound,
        }
    }

    fn name(&self) -> &'static str {
        match self {
            Route::Webhook(_) => "/webhooks/{channel_id}",
            Route::DefaultWebhook(_) => "/api/v1/integrations/webhooks/{platform}",
            Route::Healthz => "/healthz",
            Route::Readyz => "/readyz",
            Route::Metrics => "/metrics",
            Route::NotFound => "unmatched",
        }
    }
}

fn text(status: StatusCode, body: &'static str) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from_static(body.as_bytes())));
    *r.status_mut() = status;
    r.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain; charset=utf-8"));
    r
}

fn rejection_response(rejection: &Rejection, retry_after_s: u64) -> Response<Full<Bytes>> {
    let mut r = text(rejection.status(), rejection.public_message());
    if let Rejection::Unavailable(_) = rejection {
        r.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(retry_after_s));
    }
    r
}

/// Twilio reads the answer as TwiML: an empty `<Response/>` means "nothing to reply".
const EMPTY_TWIML: &str = "<?xml version=\"1.0\" encoding=\"UTF-8\"?><Response></Response>";

fn accepted(source: Source) -> Response<Full<Bytes>> {
    match source {
        Source::Twilio => {
            let mut r = Response::new(Full::new(Bytes::from_static(EMPTY_TWIML.as_bytes())));
            r.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("text/xml"));
            r
        }
        _ => Response::new(Full::new(Bytes::new())),
    }
}

pub async fn handle(state: Arc<AppState>, req: Request<Incoming>) -> Result<Response<Full<Bytes>>, Infallible> {
    let path = req.uri().path().to_owned();
    let route = Route::parse(&path);
    let response = match route {
        Route::Healthz => text(StatusCode::OK, "ok\n"),
        Route::Readyz => readyz(&state),
        Route::Metrics => {
            let mut r = Response::new(Full::new(Bytes::from(state.metrics.encode())));
            r.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static(hookline_shared::metrics::CONTENT_TYPE));
            r
        }
        Route::NotFound => text(StatusCode::NOT_FOUND, "not found\n"),
        Route::Webhook(_) | Route::DefaultWebhook(_) => {
            let span = tracing::info_span!(
                "ingest.request",
                source = tracing::field::Empty,
                channel_id = tracing::field::Empty,
                http.route = route.name(),
                http.response.status_code = tracing::field::Empty,
            );
            let traceparent = req.headers().get("traceparent").and_then(|v| v.to_str().ok());
            telemetry::set_parent(&span, traceparent);
            webhook(state, route, req).instrument(span).await
        }
    };
    Ok(response)
}

fn readyz(state: &AppState) -> Response<Full<Bytes>> {
    let mut response = readiness(state);
    if let Some(note) = state.durability.get() {
        let body = format!("{}{note}\n", if response.status() == StatusCode::OK { "ready\n" } else { "not ready\n" });
        *response.body_mut() = Full::new(Bytes::from(body));
    }
    response
}

fn readiness(state: &AppState) -> Response<Full<Bytes>> {
    if state.shutting_down.load(Ordering::Acquire) {
        text(StatusCode::SERVICE_UNAVAILABLE, "shutting down\n")
    } else if !state.publisher.is_connected() {
        text(StatusCode::SERVICE_UNAVAILABLE, "NATS not connected\n")
    } else if !state.channels.is_loaded() {
        text(StatusCode::SERVICE_UNAVAILABLE, "channels not loaded yet\n")
    } else {
        text(StatusCode::OK, "ready\n")
    }
}

async fn webhook(state: Arc<AppState>, route: Route<'_>, req: Request<Incoming>) -> Response<Full<Bytes>> {
    let started = Instant::now();
    let received_at = timefmt::now_rfc3339();
    let channel = match route {
        Route::Webhook(id) => state.channels.get(id).ok_or(Rejection::UnknownChannel),
        Route::DefaultWebhook(platform) => state.channels.default_for(platform).ok_or(Rejection::NoDefaultChannel),
        _ => Err(Rejection::NoRoute),
    };
    let span = tracing::Span::current();
    let source_label = channel.as_ref().map_or("unknown", |c| c.source.as_str());
    let result = match channel {
        Ok(channel) => {
            span.record("source", channel.source.as_str());
            span.record("channel_id", channel.id.as_str());
            serve_channel(&state, &channel, req, &received_at, &span).await
        }
        Err(rejection) => Err(rejection),
    };
    let response = match result {
        Ok(response) => response,
        Err(rejection) => {
            match &rejection {
                Rejection::Signature(e) => {
                    state
                        .metrics
                        .signature_failures
                        .get_or_create(&SignatureFailureLabels { source: source_label, reason: e.reason() })
                        .inc();
                    tracing::warn!(reason = e.reason(), error = %e, "webhook refused: invalid signature");
                }
                Rejection::Unavailable(e) => {
                    tracing::warn!(error = %e, "webhook not stored; answering 503")
                }
                other => tracing::info!(error = %other, "webhook refused"),
            }
            rejection_response(&rejection, state.retry_after_s)
        }
    };
    let status = response.status().as_u16();
    span.record("http.response.status_code", status);
    state.metrics.ingest_requests.get_or_create(&RequestLabels { source: source_label, status }).inc();
    state.metrics.request_duration.observe(started.elapsed().as_secs_f64());
    response
}

async fn serve_channel(
    state: &Arc<AppState>,
    channel: &Arc<Channel>,
    req: Request<Incoming>,
    received_at: &str,
    span: &tracing::Span,
) -> Result<Response<Full<Bytes>>, Rejection> {
    let (parts, body) = req.into_parts();
    if parts.method == Method::GET {
        if !channel.source.has_meta_handshake() {
            return Err(Rejection::MethodNotAllowed);
        }
        let challenge = verify::meta_handshake(channel, parts.uri.query().unwrap_or("")).ok_or(Rejection::HandshakeRefused)?;
        tracing::info!("Meta subscription handshake accepted");
        let mut r = Response::new(Full::new(Bytes::from(challenge.into_owned())));
        r.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
        return Ok(r);
    }
    if parts.method != Method::POST {
        return Err(Rejection::MethodNotAllowed);
    }
    let declared = parts.headers.get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()).and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > state.max_body_bytes as u64) {
        return Err(Rejection::TooLarge);
    }
    let body = match tokio::time::timeout(state.body_read_timeout, Limited::new(body, state.max_body_bytes).collect()).await {
        Err(_) => return Err(Rejection::BodyTimeout),
        Ok(Err(e)) if e.downcast_ref::<http_body_util::LengthLimitError>().is_some() => return Err(Rejection::TooLarge),
        Ok(Err(_)) => return Err(Rejection::BadBody),
        Ok(Ok(collected)) => collected.to_bytes(),
    };
    let query = parts.uri.query();
    let public_url = match channel.source {
        Source::Twilio => {
            let pq = parts.uri.path_and_query().map_or(parts.uri.path(), |pq| pq.as_str());
            format!("{}{pq}", state.public_base)
        }
        _ => String::new(),
    };
    let signed =
        SignedRequest { headers: &parts.headers, body: &body, query, public_url: &public_url, now: time::OffsetDateTime::now_utc() };
    verify::verify(channel, &signed, &state.tolerances)?;

    // Handed to the group commit, which stores it with the webhooks of concurrent requests. A
    // client that hangs up mid-request drops only the wait for the answer; the message may still
    // be stored. That is harmless: the platform retries what it did not see answered 200, and
    // the retry carries the same `Nats-Msg-Id`, so JetStream stores the delivery once either way.
    let content_type = parts.headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok());
    let incoming = parts.headers.get("traceparent").and_then(|v| v.to_str().ok());
    let traceparent = telemetry::traceparent(span, incoming);
    let stored = state
        .publisher
        .publish(RawMessage {
            source: channel.source,
            channel_id: &channel.id,
            tenant_id: &channel.tenant_id,
            received_at,
            content_type,
            query,
            traceparent: &traceparent,
            body,
        })
        .await?;
    tracing::debug!(duplicate = !stored, "webhook stored");
    Ok(accepted(channel.source))
}

#[cfg(test)]
mod tests {
    use super::Route;

    #[test]
    fn routes_take_exactly_one_segment() {
        assert!(matches!(Route::parse("/webhooks/abc"), Route::Webhook("abc")));
        assert!(matches!(Route::parse("/webhooks/"), Route::NotFound));
        assert!(matches!(Route::parse("/webhooks/a/b"), Route::NotFound));
        assert!(matches!(Route::parse("/api/v1/integrations/webhooks/whatsapp"), Route::DefaultWebhook("whatsapp")));
        assert!(matches!(Route::parse("/readyz"), Route::Readyz));
        assert!(matches!(Route::parse("/metricsx"), Route::NotFound));
    }
}

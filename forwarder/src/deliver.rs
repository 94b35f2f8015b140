//! One delivery: POST the event to a destination's URL with Standard Webhooks headers (signed
//! with every signing secret still valid: during a rotation both, space separated, as the spec
//! allows), the destination's extra headers and `traceparent`, over a pooled HTTP client with a
//! per-request timeout.

use bytes::Bytes;
use std::time::{Duration, Instant};

use hookline_shared::{egress, standard_webhooks, Secret};

use crate::outcome::{parse_retry_after, DeliveryOutcome};

/// How much of an answer's body the delivery log keeps.
pub const ANSWER_PREFIX_BYTES: usize = 1024;

/// What the target answered, for the delivery log: the first KiB of its body, or why there was
/// no answer (the error's kind and message, never the URL).
#[derive(Debug, Clone, Default)]
pub struct Answer {
    pub body_prefix: Vec<u8>,
    /// The body was longer than the prefix.
    pub truncated: bool,
    pub error: Option<String>,
}

pub struct Deliverer {
    client: reqwest::Client,
    target: String,
    key: Option<Vec<u8>>,
    /// The key before a rotation, and when it stops signing.
    previous: Option<(Vec<u8>, time::OffsetDateTime)>,
    headers: Vec<(reqwest::header::HeaderName, reqwest::header::HeaderValue)>,
    /// Why the target may not be reached at all (a forbidden IP literal of a destination with
    /// `restrict_egress`; names are refused by the client's resolver instead).
    egress_refused: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum DelivererError {
    #[error("forwarder.signing_secret: {0}")]
    Secret(#[from] standard_webhooks::SignatureError),
    #[error("cannot build the HTTP client: {0}")]
    Client(String),
}

impl Deliverer {
    pub fn new(target: &str, signing_secret: Option<&Secret>, timeout: Duration, pool_size: usize) -> Result<Self, DelivererError> {
        let key = signing_secret.map(standard_webhooks::key_bytes).transpose()?;
        let client = Self::client(timeout, pool_size, None)?;
        Ok(Deliverer { client, target: target.to_string(), key, previous: None, headers: Vec::new(), egress_refused: None })
    }

    /// The deliverer of one destination: its URL, secrets (the previous one while valid) and
    /// extra headers. A destination with `restrict_egress` (written by a tenant token) connects
    /// only to addresses `egress::forbidden` allows, checked after every DNS resolution.
    pub fn for_destination(
        destination: &hookline_shared::destination::Destination,
        timeout: Duration,
        pool_size: usize,
    ) -> Result<Self, DelivererError> {
        Self::for_destination_resolving(destination, timeout, pool_size, egress::EgressResolver::system())
    }

    /// `for_destination` with the resolver a restricted destination uses (tests give a table).
    pub fn for_destination_resolving(
        destination: &hookline_shared::destination::Destination,
        timeout: Duration,
        pool_size: usize,
        resolver: egress::EgressResolver,
    ) -> Result<Self, DelivererError> {
        let key = destination.signing_secret.as_ref().map(standard_webhooks::key_bytes).transpose()?;
        let previous = match &destination.previous_signing_secret {
            Some((secret, until)) => Some((standard_webhooks::key_bytes(secret)?, *until)),
            None => None,
        };
        let mut headers = Vec::with_capacity(destination.headers.len());
        for (name, value) in &destination.headers {
            let name = reqwest::header::HeaderName::from_bytes(name.as_bytes())
                .map_err(|_| DelivererError::Client(format!("header name {name:?} is not valid")))?;
            let mut value = reqwest::header::HeaderValue::from_str(value.expose())
                .map_err(|_| DelivererError::Client(format!("the value of header {name} is not valid")))?;
            value.set_sensitive(true);
            headers.push((name, value));
        }
        let (resolver, egress_refused) = if destination.restrict_egress {
            (Some(resolver), egress::check_url(&destination.url).err().map(|e| e.to_string()))
        } else {
            (None, None)
        };
        let client = Self::client(timeout, pool_size, resolver)?;
        Ok(Deliverer { client, target: destination.url.clone(), key, previous, headers, egress_refused })
    }

    fn client(timeout: Duration, pool_size: usize, resolver: Option<egress::EgressResolver>) -> Result<reqwest::Client, DelivererError> {
        let builder = reqwest::Client::builder();
        let builder = match resolver {
            Some(r) => builder.dns_resolver(r),
            None => builder,
        };
        builder
            .timeout(timeout)
            .connect_timeout(timeout.min(Duration::from_secs(5)))
            .pool_max_idle_per_host(pool_size)
            .tcp_nodelay(true)
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("hookline/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| DelivererError::Client(e.to_string()))
    }

    pub fn target(&self) -> &str {
        &self.target
    }

    /// POSTs `body` (the event's JSON) and classifies the answer; with what it took and what the
    /// target said (the body's first KiB, or the error).
    pub async fn deliver(&self, event_id: &str, body: Bytes, traceparent: &str) -> (DeliveryOutcome, Duration, Answer) {
        let started = Instant::now();
        if let Some(why) = &self.egress_refused {
            tracing::warn!(event_id, reason = %why, "delivery refused by the egress policy; retried later");
            let answer = Answer { error: Some(format!("refused by the egress policy: {why}")), ..Answer::default() };
            return (DeliveryOutcome::Retryable { status: None, reason: "egress_refused", retry_after: None }, started.elapsed(), answer);
        }
        let timestamp = time::OffsetDateTime::now_utc().unix_timestamp();
        let mut request = self
            .client
            .post(&self.target)
            .header("content-type", "application/json")
            .header(standard_webhooks::ID_HEADER, event_id)
            .header(standard_webhooks::TIMESTAMP_HEADER, timestamp.to_string())
            .header("traceparent", traceparent);
        for (name, value) in &self.headers {
            request = request.header(name.clone(), value.clone());
        }
        if let Some(key) = &self.key {
            let mut signature = standard_webhooks::sign(key, event_id, timestamp, &body);
            if let Some((previous, until)) = &self.previous {
                if time::OffsetDateTime::now_utc() < *until {
                    signature.push(' ');
                    signature.push_str(&standard_webhooks::sign(previous, event_id, timestamp, &body));
                }
            }
            request = request.header(standard_webhooks::SIGNATURE_HEADER, signature);
        }
        let mut answer = Answer::default();
        let outcome = match request.body(body).send().await {
            Ok(response) => {
                let status = response.status().as_u16();
                let retry_after = parse_retry_after(response.headers().get("retry-after").and_then(|v| v.to_str().ok()));
                // Read (a bounded part of) the answer so the connection goes back to the pool.
                let mut response = response;
                let mut read = 0usize;
                while let Ok(Some(chunk)) = response.chunk().await {
                    let room = ANSWER_PREFIX_BYTES.saturating_sub(answer.body_prefix.len());
                    answer.body_prefix.extend_from_slice(&chunk[..chunk.len().min(room)]);
                    answer.truncated |= chunk.len() > room;
                    read += chunk.len();
                    if read > 64 * 1024 {
                        break;
                    }
                }
                DeliveryOutcome::from_status(status, retry_after)
            }
            Err(e) if egress::is_refusal(&e).is_some() => {
                let why = egress::is_refusal(&e).map(ToString::to_string).unwrap_or_default();
                tracing::warn!(event_id, reason = %why, "delivery refused by the egress policy; retried later");
                answer.error = Some(format!("refused by the egress policy: {why}"));
                DeliveryOutcome::Retryable { status: None, reason: "egress_refused", retry_after: None }
            }
            Err(e) => {
                let reason = if e.is_timeout() {
                    "timeout"
                } else if e.is_connect() {
                    "connect_error"
                } else {
                    "request_error"
                };
                answer.error = Some(error_chain(e.without_url()));
                DeliveryOutcome::Retryable { status: None, reason, retry_after: None }
            }
        };
        (outcome, started.elapsed(), answer)
    }
}

/// An error and its causes on one line, at most 512 bytes (no URL: the caller strips it).
fn error_chain(e: reqwest::Error) -> String {
    let mut text = e.to_string();
    let mut source = std::error::Error::source(&e);
    while let Some(cause) = source {
        let next = cause.to_string();
        if !text.contains(&next) {
            text.push_str(": ");
            text.push_str(&next);
        }
        source = cause.source();
    }
    if text.len() > 512 {
        let mut end = 512;
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        text.truncate(end);
    }
    text
}

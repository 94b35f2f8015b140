//! One delivery: POST the event to the target with Standard Webhooks headers and `traceparent`,
//! over a pooled HTTP client with a per-request timeout.

use bytes::Bytes;
use std::time::{Duration, Instant};

use hookline_shared::{standard_webhooks, Secret};

use crate::outcome::{parse_retry_after, DeliveryOutcome};

pub struct Deliverer {
    client: reqwest::Client,
    target: String,
    key: Option<Vec<u8>>,
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
        let client = reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(timeout.min(Duration::from_secs(5)))
            .pool_max_idle_per_host(pool_size)
            .tcp_nodelay(true)
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("hookline/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| DelivererError::Client(e.to_string()))?;
        Ok(Deliverer { client, target: target.to_string(), key })
    }

    pub fn target(&self) -> &str {
        &self.target
    }

    /// POSTs `body` (the event's JSON) and classifies the answer.
    pub async fn deliver(&self, event_id: &str, body: Bytes, traceparent: &str) -> (DeliveryOutcome, Duration) {
        let started = Instant::now();
        let timestamp = time::OffsetDateTime::now_utc().unix_timestamp();
        let mut request = self
            .client
            .post(&self.target)
            .header("content-type", "application/json")
            .header(standard_webhooks::ID_HEADER, event_id)
            .header(standard_webhooks::TIMESTAMP_HEADER, timestamp.to_string())
            .header("traceparent", traceparent);
        if let Some(key) = &self.key {
            request = request.header(standard_webhooks::SIGNATURE_HEADER, standard_webhooks::sign(key, event_id, timestamp, &body));
        }
        let outcome = match request.body(body).send().await {
            Ok(response) => {
                let status = response.status().as_u16();
                let retry_after = parse_retry_after(response.headers().get("retry-after").and_then(|v| v.to_str().ok()));
                // Read (a bounded part of) the answer so the connection goes back to the pool.
                let mut response = response;
                let mut read = 0usize;
                while let Ok(Some(chunk)) = response.chunk().await {
                    read += chunk.len();
                    if read > 64 * 1024 {
                        break;
                    }
                }
                DeliveryOutcome::from_status(status, retry_after)
            }
            Err(e) if e.is_timeout() => DeliveryOutcome::Retryable { status: None, reason: "timeout", retry_after: None },
            Err(e) if e.is_connect() => DeliveryOutcome::Retryable { status: None, reason: "connect_error", retry_after: None },
            Err(_) => DeliveryOutcome::Retryable { status: None, reason: "request_error", retry_after: None },
        };
        (outcome, started.elapsed())
    }
}

//! Publishing a raw webhook to `HOOKLINE_RAW` and waiting for JetStream's ack, with the
//! design's headers and a `Nats-Msg-Id` that makes a platform's retry of the same delivery a
//! duplicate that JetStream stores once. The webhooks of concurrent requests are committed
//! together ([`GroupCommit`]): one fsync for many, each request answered when its batch is acked.

use async_nats::jetstream;
use async_nats::HeaderMap;
use bytes::Bytes;
use sha2::{Digest, Sha256};
use std::sync::Arc;
use std::time::{Duration, Instant};

use hookline_shared::group_commit::{CommitError, GroupCommit, GroupCommitConfig, Stored};
use hookline_shared::metrics::{Metrics, PublishLabels};
use hookline_shared::names::{self, header};
use hookline_shared::Source;

#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    #[error("not connected to NATS")]
    Disconnected,
    #[error("no JetStream ack within {0:?}")]
    Timeout(Duration),
    #[error("JetStream refused the message: {0}")]
    Refused(String),
}

impl PublishError {
    fn outcome(&self) -> &'static str {
        match self {
            PublishError::Disconnected => "disconnected",
            PublishError::Timeout(_) => "timeout",
            PublishError::Refused(_) => "error",
        }
    }
}

/// What the raw message says about where it came from.
pub struct RawMessage<'a> {
    pub source: Source,
    pub channel_id: &'a str,
    pub tenant_id: &'a str,
    pub received_at: &'a str,
    pub content_type: Option<&'a str>,
    pub query: Option<&'a str>,
    pub traceparent: &'a str,
    pub body: Bytes,
}

/// `hex(SHA-256(channel id, 0x00, body))`: the same delivery to the same channel, same id.
pub fn message_id(channel_id: &str, body: &[u8]) -> String {
    hex::encode(Sha256::new().chain_update(channel_id.as_bytes()).chain_update([0u8]).chain_update(body).finalize())
}

pub struct RawPublisher {
    client: async_nats::Client,
    commits: GroupCommit,
    ack_timeout: Duration,
    metrics: Arc<Metrics>,
}

impl RawPublisher {
    /// `max_batch` and `max_in_flight`: the group commit's (`nats.group_commit_*`).
    pub fn new(client: async_nats::Client, ack_timeout: Duration, max_batch: usize, max_in_flight: usize, metrics: Arc<Metrics>) -> Self {
        let js = jetstream::new(client.clone());
        let commits =
            GroupCommit::start(js, GroupCommitConfig { max_batch, max_in_flight, ack_timeout }, metrics.clone(), names::RAW_STREAM);
        RawPublisher { client, commits, ack_timeout, metrics }
    }

    pub fn is_connected(&self) -> bool {
        self.client.connection_state() == async_nats::connection::State::Connected
    }

    /// Publishes and waits for the ack. Ok(true) when JetStream stored it, Ok(false) when it
    /// was a duplicate of a message already stored.
    pub async fn publish(&self, msg: RawMessage<'_>) -> Result<bool, PublishError> {
        let result = self.publish_inner(msg).await;
        let outcome = match &result {
            Ok(true) => "acked",
            Ok(false) => "duplicate",
            Err(e) => e.outcome(),
        };
        self.metrics.raw_publishes.get_or_create(&PublishLabels { outcome }).inc();
        result
    }

    async fn publish_inner(&self, msg: RawMessage<'_>) -> Result<bool, PublishError> {
        if !self.is_connected() {
            return Err(PublishError::Disconnected);
        }
        let mut headers = HeaderMap::new();
        headers.insert(header::MSG_ID, message_id(msg.channel_id, &msg.body).as_str());
        headers.insert(header::SOURCE, msg.source.as_str());
        headers.insert(header::CHANNEL, msg.channel_id);
        headers.insert(header::TENANT, msg.tenant_id);
        headers.insert(header::RECEIVED_AT, msg.received_at);
        headers.insert(header::TRACEPARENT, msg.traceparent);
        if let Some(ct) = msg.content_type {
            headers.insert(header::CONTENT_TYPE, ct);
        }
        if let Some(q) = msg.query {
            headers.insert(header::QUERY, q);
        }
        let subject = names::raw_subject(msg.source, msg.channel_id);
        let started = Instant::now();
        let stored = match tokio::time::timeout(self.ack_timeout, self.commits.publish(subject.to_string(), headers, msg.body)).await {
            Err(_) => return Err(PublishError::Timeout(self.ack_timeout)),
            Ok(Err(CommitError::Timeout(_))) => return Err(PublishError::Timeout(self.ack_timeout)),
            Ok(Err(e)) => return Err(PublishError::Refused(e.to_string())),
            Ok(Ok(stored)) => stored,
        };
        self.metrics.publish_duration.observe(started.elapsed().as_secs_f64());
        Ok(stored == Stored::New)
    }
}

#[cfg(test)]
mod tests {
    use super::message_id;

    #[test]
    fn message_ids_depend_on_channel_and_exact_body() {
        let a = message_id("ch1", b"{\"a\":1}");
        assert_eq!(a, message_id("ch1", b"{\"a\":1}"));
        assert_ne!(a, message_id("ch2", b"{\"a\":1}"));
        assert_ne!(a, message_id("ch1", b"{\"a\": 1}"));
        // The separator keeps "ch1" + "2..." apart from "ch12" + "...".
        assert_ne!(message_id("ch1", b"2x"), message_id("ch12", b"x"));
        assert_eq!(a.len(), 64);
    }
}

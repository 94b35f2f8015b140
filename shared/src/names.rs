//! The names other programs depend on: streams, subjects, the KV bucket and message headers.

use crate::Source;

/// Raw webhooks, exactly as received.
pub const RAW_STREAM: &str = "HOOKLINE_RAW";
/// Normalized events.
pub const EVENTS_STREAM: &str = "HOOKLINE_EVENTS";
/// Dead letters of every stage.
pub const DLQ_STREAM: &str = "HOOKLINE_DLQ";

pub const RAW_SUBJECTS: &str = "hookline.raw.>";
pub const EVENTS_SUBJECTS: &str = "hookline.events.>";
/// Also in `HOOKLINE_EVENTS`: the normalizers' watermarks, read by ordered destinations.
pub const ORDER_SUBJECTS: &str = "hookline.order.>";
/// A watermark: `{"raw_ack_floor": N}`, stored after every event of raw sequence up to N (the
/// normalizers' ack floor when it was written).
pub const ORDER_WATERMARK_SUBJECT: &str = "hookline.order.watermark";
pub const DLQ_SUBJECTS: &str = "hookline.dlq.>";

/// The delivery log: one record per delivery attempt.
pub const ATTEMPTS_STREAM: &str = "HOOKLINE_ATTEMPTS";
pub const ATTEMPTS_SUBJECTS: &str = "hookline.attempts.>";
/// Lookup keys of events (event id, platform message id, conversation) → where the event lies.
pub const INDEX_STREAM: &str = "HOOKLINE_INDEX";
pub const INDEX_SUBJECTS: &str = "hookline.index.>";

/// The JetStream KV bucket that mirrors channel configurations for ingest.
pub const CHANNELS_BUCKET: &str = "hookline_channels";

/// The JetStream KV bucket that mirrors destinations for the forwarders.
pub const DESTINATIONS_BUCKET: &str = "hookline_destinations";
/// Which forwarder process delivers each ordered destination (a lease per destination id).
pub const ORDER_LEASES_BUCKET: &str = "hookline_order_leases";
/// Background replays' progress, written by the setup-api process running each (`run_id` keys).
pub const REPLAY_RUNS_BUCKET: &str = "hookline_replay_runs";
/// Destinations' shared circuit-breaker state, keyed by destination id (absent: active).
pub const DESTINATION_STATE_BUCKET: &str = "hookline_destination_state";

/// `hookline.raw.<source>.<channel_id>`
pub fn raw_subject(source: Source, channel_id: &str) -> String {
    format!("hookline.raw.{}.{}", source.as_str(), channel_id)
}

/// `hookline.events.<tenant_id>.<platform>.<kind>`
pub fn event_subject(tenant_id: &str, platform: &str, kind: &str) -> String {
    format!("hookline.events.{tenant_id}.{platform}.{kind}")
}

/// `hookline.dlq.<stage>.<source or tenant>`
pub fn dlq_subject(stage: &str, who: &str) -> String {
    format!("hookline.dlq.{stage}.{who}")
}

/// `hookline.attempts.<event token>`: a lookup by event id reads that one literal subject (the
/// destination is in the record). Literal on purpose: nats-server finds a literal subject's
/// first block from its subject index, but scans every block for a wildcard once a stream holds
/// more than 64k subjects.
pub fn attempt_subject(event_id: &str) -> String {
    format!("hookline.attempts.{}", key_token(event_id))
}

/// `hookline.index.id.<event token>`: where the event lies in `HOOKLINE_EVENTS`.
pub fn index_event_subject(event_id: &str) -> String {
    format!("hookline.index.id.{}", key_token(event_id))
}

/// `hookline.index.msg.<hash of the platform message id>` (literal, as `attempt_subject`; the
/// tenant is in the entry).
pub fn index_message_subject(message_id: &str) -> String {
    format!("hookline.index.msg.{}", hashed_token(message_id))
}

/// `hookline.index.conv.<hash of the conversation id>`
pub fn index_conversation_subject(conversation_id: &str) -> String {
    format!("hookline.index.conv.{}", hashed_token(conversation_id))
}

/// An event id as one subject token: itself when it can be one (`evt_` + hex always can), else
/// its hash.
pub fn key_token(id: &str) -> String {
    if is_valid_id(id) {
        id.to_string()
    } else {
        hashed_token(id)
    }
}

/// `h` + 32 hex of SHA-256: any string as one subject token.
pub fn hashed_token(value: &str) -> String {
    use sha2::{Digest, Sha256};
    let digest = Sha256::digest(value.as_bytes());
    format!("h{}", hex::encode(&digest[..16]))
}

/// A tenant id as a subject token (an empty or odd one becomes `_`, never a wildcard).
pub fn tenant_token(tenant: &str) -> &str {
    if is_valid_id(tenant) {
        tenant
    } else {
        "_"
    }
}

/// The durable pull consumer every normalizer process shares.
pub const NORMALIZER_CONSUMER: &str = "normalizer";

/// The durable pull consumer every forwarder process shares.
pub const FORWARDER_CONSUMER: &str = "forwarder";

/// Headers carried by raw messages (and, for the `Dlq` ones, by dead letters).
pub mod header {
    pub const SOURCE: &str = "Hookline-Source";
    pub const CHANNEL: &str = "Hookline-Channel";
    pub const TENANT: &str = "Hookline-Tenant";
    pub const RECEIVED_AT: &str = "Hookline-Received-At";
    /// The query string of the webhook request, without the `?`, when it had one.
    pub const QUERY: &str = "Hookline-Query";
    pub const CONTENT_TYPE: &str = "Content-Type";
    pub const TRACEPARENT: &str = "traceparent";
    pub const MSG_ID: &str = "Nats-Msg-Id";
    pub const DLQ_STAGE: &str = "Hookline-Dlq-Stage";
    pub const DLQ_REASON: &str = "Hookline-Dlq-Reason";
    pub const DLQ_ATTEMPTS: &str = "Hookline-Dlq-Attempts";
    pub const DLQ_SUBJECT: &str = "Hookline-Dlq-Subject";
    pub const DLQ_SEQ: &str = "Hookline-Dlq-Seq";
    /// A one-line, human-readable detail of the reason (at most 512 bytes).
    pub const DLQ_DETAIL: &str = "Hookline-Dlq-Detail";
    /// The forward stage's last answer: an HTTP status, or `timeout` / `connect_error`.
    pub const DLQ_LAST_STATUS: &str = "Hookline-Dlq-Last-Status";
    /// The destination a forward-stage dead letter (or a replayed event) is meant for.
    pub const DESTINATION: &str = "Hookline-Destination";
}

/// Whether `s` can be one token of a NATS subject and a KV key: channel and tenant ids.
pub fn is_valid_id(s: &str) -> bool {
    !s.is_empty() && s.len() <= 64 && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn raw_subject_has_source_and_channel() {
        assert_eq!(raw_subject(Source::Dialog360, "ch_1"), "hookline.raw.dialog360.ch_1");
    }

    #[test]
    fn ids_exclude_subject_separators_and_wildcards() {
        for bad in ["", "a.b", "a b", "a*", "a>", &"x".repeat(65)] {
            assert!(!is_valid_id(bad), "{bad:?} should be refused");
        }
        for good in ["a", "wa-main", "ch_01HZX", &"x".repeat(64)] {
            assert!(is_valid_id(good), "{good:?} should be accepted");
        }
    }
}

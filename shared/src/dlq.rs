//! Dead letters: a message that cannot go on is published to `HOOKLINE_DLQ` with its original
//! body and headers and the reason, stage, attempts, and where it came from. Nothing is dropped
//! without one.

use async_nats::jetstream;
use async_nats::HeaderMap;
use bytes::Bytes;
use std::time::Duration;

use crate::metrics::{DlqLabels, Metrics};
use crate::names::{self, header};

#[derive(Debug, thiserror::Error)]
pub enum DlqError {
    #[error("cannot publish the dead letter: {0}")]
    Publish(String),
    #[error("no JetStream ack for the dead letter within {0:?}")]
    Timeout(Duration),
}

/// One message that failed at `stage` for `reason` (a snake_case code).
pub struct DeadLetter<'a> {
    pub stage: &'static str,
    pub reason: &'static str,
    pub detail: &'a str,
    pub attempts: i64,
    /// The subject and stream sequence the message had where it failed.
    pub subject: &'a str,
    pub seq: u64,
    /// The source (normalize stage) or tenant (forward stage): the DLQ subject's last token.
    pub who: &'a str,
    pub body: Bytes,
    pub original_headers: Option<&'a HeaderMap>,
    /// The forward stage's last answer.
    pub last_status: Option<&'a str>,
    /// The forward stage's destination (`Hookline-Destination`): a re-drive returns it there only.
    pub destination: Option<&'a str>,
}

fn one_line(detail: &str) -> String {
    let mut s: String = detail.chars().map(|c| if c.is_control() { ' ' } else { c }).collect();
    if s.len() > 512 {
        let mut cut = 512;
        while !s.is_char_boundary(cut) {
            cut -= 1;
        }
        s.truncate(cut);
    }
    s
}

/// Publishes a dead letter and waits for its ack. Its `Nats-Msg-Id` is derived from the stage and
/// the original sequence, so a message dead-lettered again after a redelivery is stored once.
pub async fn publish(js: &jetstream::Context, metrics: &Metrics, letter: DeadLetter<'_>, ack_timeout: Duration) -> Result<(), DlqError> {
    let mut headers = HeaderMap::new();
    if let Some(original) = letter.original_headers {
        for (name, values) in original.iter() {
            let name: &str = name.as_ref();
            if name.eq_ignore_ascii_case(header::MSG_ID) || name.starts_with("Nats-") {
                continue;
            }
            for v in values {
                headers.append(name, v.as_str());
            }
        }
    }
    // Per destination: one event dead-lettered for two destinations is two dead letters.
    let msg_id = match letter.destination {
        Some(d) => format!("dlq-{}-{d}-{}-{}", letter.stage, letter.subject, letter.seq),
        None => format!("dlq-{}-{}-{}", letter.stage, letter.subject, letter.seq),
    };
    headers.insert(header::MSG_ID, msg_id.as_str());
    if let Some(d) = letter.destination {
        headers.insert(header::DESTINATION, d);
    }
    headers.insert(header::DLQ_STAGE, letter.stage);
    headers.insert(header::DLQ_REASON, letter.reason);
    headers.insert(header::DLQ_DETAIL, one_line(letter.detail).as_str());
    headers.insert(header::DLQ_ATTEMPTS, letter.attempts.to_string().as_str());
    headers.insert(header::DLQ_SUBJECT, letter.subject);
    headers.insert(header::DLQ_SEQ, letter.seq.to_string().as_str());
    if let Some(status) = letter.last_status {
        headers.insert(header::DLQ_LAST_STATUS, status);
    }
    let subject = names::dlq_subject(letter.stage, letter.who);
    let publish = async {
        js.publish_with_headers(subject, headers, letter.body)
            .await
            .map_err(|e| DlqError::Publish(e.to_string()))?
            .await
            .map_err(|e| DlqError::Publish(e.to_string()))
    };
    tokio::time::timeout(ack_timeout, publish).await.map_err(|_| DlqError::Timeout(ack_timeout))??;
    metrics.dlq_messages.get_or_create(&DlqLabels { stage: letter.stage, reason: letter.reason }).inc();
    tracing::warn!(stage = letter.stage, reason = letter.reason, subject = letter.subject, seq = letter.seq, "dead-lettered");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::one_line;

    #[test]
    fn details_are_one_bounded_line() {
        assert_eq!(one_line("a\nb\tc"), "a b c");
        let long = "é".repeat(400);
        let cut = one_line(&long);
        assert!(cut.len() <= 512 && cut.chars().all(|c| c == 'é'));
    }
}

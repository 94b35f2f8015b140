//! The delivery log: every attempt (destination, event, attempt number, time, the target's status
//! or the error, duration, the answer's first KiB, and what came of it: delivered, retrying with
//! the time of the next attempt, dead-lettered) as one `AttemptRecord` on
//! `hookline.attempts.<event>` in `HOOKLINE_ATTEMPTS`.
//!
//! It never delays a delivery: `record` puts the record on a bounded queue without waiting, and a
//! background task stores what waited as one atomic batch (`BackgroundLog`). A full queue drops
//! the record and counts it (`hookline_log_records_total{log="attempts",outcome="dropped_full"}`).

use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::{self, AckKind};

use hookline_shared::background_log::BackgroundLog;
use hookline_shared::lookup_records::{AttemptOutcome, AttemptRecord};
use hookline_shared::metrics::Metrics;
use hookline_shared::timefmt;

use crate::deliver::Answer;
use crate::outcome::DeliveryOutcome;

/// Which event an attempt delivered.
pub struct Attempt<'a> {
    pub event_id: &'a str,
    pub tenant_id: &'a str,
    /// The event's sequence in `HOOKLINE_EVENTS`, and its subject.
    pub seq: u64,
    pub subject: &'a str,
    pub attempt: usize,
}

/// The writer of the delivery log; cheap to clone, shared by every destination's worker.
#[derive(Clone)]
pub struct AttemptLog {
    log: BackgroundLog,
}

impl AttemptLog {
    pub fn start(js: jetstream::Context, metrics: Arc<Metrics>) -> AttemptLog {
        AttemptLog { log: BackgroundLog::start(js, metrics, "attempts") }
    }

    /// A log that records nothing (`forwarder.attempts_log = false`).
    pub fn off() -> AttemptLog {
        AttemptLog { log: BackgroundLog::off() }
    }

    /// Records one attempt to `destination`: what the target answered (`outcome`, `took`,
    /// `answer`) and what the worker decided (`ack`). Never waits.
    pub fn record(&self, destination: &str, event: Attempt<'_>, outcome: &DeliveryOutcome, took: Duration, answer: Answer, ack: &AckKind) {
        if !self.log.is_on() {
            return;
        }
        let record = build(destination, event, outcome, took, answer, ack, time::OffsetDateTime::now_utc());
        if let Some(message) = record.to_message() {
            self.log.record(message);
        }
    }
}

/// The record of one attempt that ended at `now`.
pub fn build(
    destination: &str,
    event: Attempt<'_>,
    outcome: &DeliveryOutcome,
    took: Duration,
    answer: Answer,
    ack: &AckKind,
    now: time::OffsetDateTime,
) -> AttemptRecord {
    let (result, next_attempt_at, dlq_reason) = match (outcome, ack) {
        (DeliveryOutcome::Delivered(_), _) => (AttemptOutcome::Delivered, None, None),
        (_, AckKind::Nak(delay)) => {
            let next = now + delay.unwrap_or(Duration::ZERO);
            (AttemptOutcome::Retrying, Some(timefmt::to_rfc3339(next)), None)
        }
        (DeliveryOutcome::Rejected(_), _) => (AttemptOutcome::DeadLettered, None, Some("rejected_4xx".to_string())),
        (DeliveryOutcome::Retryable { .. }, _) => (AttemptOutcome::DeadLettered, None, Some("attempts_exhausted".to_string())),
    };
    let (status, error) = match outcome {
        DeliveryOutcome::Delivered(s) | DeliveryOutcome::Rejected(s) => (Some(*s), None),
        DeliveryOutcome::Retryable { status: Some(s), .. } => (Some(*s), None),
        DeliveryOutcome::Retryable { status: None, reason, .. } => {
            let error = match &answer.error {
                Some(text) => format!("{reason}: {text}"),
                None => reason.to_string(),
            };
            (None, Some(error))
        }
    };
    let body = (status.is_some()).then(|| String::from_utf8_lossy(&answer.body_prefix).into_owned());
    AttemptRecord {
        event_id: event.event_id.to_string(),
        destination: destination.to_string(),
        attempt: event.attempt as u64,
        at: timefmt::to_rfc3339(now - took),
        tenant_id: event.tenant_id.to_string(),
        event_seq: event.seq,
        event_subject: event.subject.to_string(),
        outcome: result,
        status,
        error,
        duration_ms: (took.as_secs_f64() * 1000.0 * 1000.0).round() / 1000.0,
        body,
        body_truncated: answer.truncated,
        next_attempt_at,
        dlq_reason,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event() -> Attempt<'static> {
        Attempt { event_id: "evt_1", tenant_id: "t1", seq: 7, subject: "hookline.events.t1.telegram.message", attempt: 2 }
    }

    #[test]
    fn outcomes_and_decisions_become_records() {
        let now = time::macros::datetime!(2026-12-01 10:00:00 UTC);
        let answer = Answer { body_prefix: b"busy".to_vec(), truncated: false, error: None };
        let took = Duration::from_millis(250);
        let retry = DeliveryOutcome::Retryable { status: Some(503), reason: "server_error_5xx", retry_after: None };
        let r = build("d1", event(), &retry, took, answer.clone(), &AckKind::Nak(Some(Duration::from_secs(30))), now);
        assert_eq!(r.outcome, AttemptOutcome::Retrying);
        assert_eq!(r.next_attempt_at.as_deref(), Some("2026-12-01T10:00:30Z"));
        assert_eq!(r.at, "2026-12-01T09:59:59.75Z");
        assert_eq!((r.status, r.body.as_deref(), r.duration_ms), (Some(503), Some("busy"), 250.0));

        let r = build("d1", event(), &retry, took, answer.clone(), &AckKind::Ack, now);
        assert_eq!((r.outcome, r.dlq_reason.as_deref()), (AttemptOutcome::DeadLettered, Some("attempts_exhausted")));

        let r = build("d1", event(), &DeliveryOutcome::Rejected(410), took, answer.clone(), &AckKind::Ack, now);
        assert_eq!((r.outcome, r.dlq_reason.as_deref()), (AttemptOutcome::DeadLettered, Some("rejected_4xx")));
        // The dead letter could not be stored: NAKed, so it is retried.
        let r = build("d1", event(), &DeliveryOutcome::Rejected(410), took, answer.clone(), &AckKind::Nak(None), now);
        assert_eq!(r.outcome, AttemptOutcome::Retrying);

        let timeout = DeliveryOutcome::Retryable { status: None, reason: "timeout", retry_after: None };
        let silent = Answer { error: Some("operation timed out".into()), ..Default::default() };
        let r = build("d1", event(), &timeout, took, silent, &AckKind::Nak(Some(Duration::from_secs(5))), now);
        assert_eq!((r.status, r.error.as_deref(), r.body.as_deref()), (None, Some("timeout: operation timed out"), None));
    }
}

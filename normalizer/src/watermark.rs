//! Watermarks for ordered destinations. Several normalizer processes may store the events of two
//! raw messages in either order; a destination with `ordering = "conversation"` must not send an
//! event before an earlier one of its conversation that is still being normalized. So every
//! normalizer process, every [`EVERY`], reads the ack floor of the shared consumer `normalizer`
//! (every raw message up to it is acked, so its events are stored) and, when it moved, stores
//! `{"raw_ack_floor": N}` on `hookline.order.watermark` in `HOOKLINE_EVENTS`. Whoever reads
//! that stream in order and meets the watermark has met every event of raw sequence up to N.
//! Idle, it is written again every [`IDLE_EVERY`], so that a forwarder taking an ordered
//! destination over (which has seen no watermark yet) need not wait for the next webhook.

use async_nats::jetstream::{self, consumer::PullConsumer};
use std::time::Duration;
use tokio_util::sync::CancellationToken;

use hookline_shared::names;

/// How often the floor is read (and, when it moved, written).
pub const EVERY: Duration = Duration::from_millis(25);
/// How often it is written when it did not move.
pub const IDLE_EVERY: Duration = Duration::from_secs(5);

/// The payload of a watermark.
pub fn payload(raw_ack_floor: u64) -> Vec<u8> {
    format!("{{\"raw_ack_floor\":{raw_ack_floor}}}").into_bytes()
}

/// Writes watermarks until `shutdown`.
pub async fn run(js: jetstream::Context, consumer: PullConsumer, shutdown: CancellationToken) {
    let mut last = 0;
    let mut written_at = std::time::Instant::now();
    let mut tick = tokio::time::interval(EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        let floor = match consumer.get_info().await {
            Ok(info) => info.ack_floor.stream_sequence,
            Err(e) => {
                tracing::debug!(error = %e, "cannot read the normalizer consumer's ack floor");
                continue;
            }
        };
        if floor == 0 || (floor <= last && written_at.elapsed() < IDLE_EVERY) {
            continue;
        }
        let stored = async { js.publish(names::ORDER_WATERMARK_SUBJECT, payload(floor).into()).await?.await.map_err(Into::into) };
        match tokio::time::timeout(Duration::from_secs(2), stored).await {
            Ok(Ok(_)) => {
                last = floor;
                written_at = std::time::Instant::now();
            }
            Ok(Err::<_, Box<dyn std::error::Error + Send + Sync>>(e)) => {
                tracing::debug!(error = %e, "watermark not stored; retrying")
            }
            Err(_) => tracing::debug!("watermark not stored in time; retrying"),
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_payload_is_the_json_ordered_destinations_read() {
        let v: serde_json::Value = serde_json::from_slice(&super::payload(42)).expect("json");
        assert_eq!(v["raw_ack_floor"], 42);
    }
}

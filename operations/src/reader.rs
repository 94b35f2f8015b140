//! Reading a range of a stream in order with an ordered consumer, up to the stream's last
//! sequence when the read began (so that what an operation publishes is never read back).

use async_nats::jetstream::consumer::{pull::OrderedConfig, DeliverPolicy};
use async_nats::jetstream::{self, Message};
use futures_util::StreamExt;
use std::time::Duration;

use crate::selection::Selection;
use crate::OpsError;

/// A stream message with where it lies.
pub struct Read {
    pub message: Message,
    pub seq: u64,
    pub published: time::OffsetDateTime,
}

/// A cursor over the messages of `stream` matching a subject filter and a selection's time and
/// sequence range, in order.
pub struct Reader {
    messages: Option<async_nats::jetstream::consumer::pull::Ordered>,
    end: u64,
    selection: Selection,
    stream: &'static str,
    done: bool,
}

impl Reader {
    pub async fn open(
        js: &jetstream::Context,
        stream_name: &'static str,
        filter_subject: &str,
        selection: &Selection,
    ) -> Result<Reader, OpsError> {
        let stream_error = |e: String| OpsError::Stream { stream: stream_name, message: e };
        let mut stream = js.get_stream(stream_name).await.map_err(|e| stream_error(e.to_string()))?;
        let last = stream.info().await.map_err(|e| stream_error(e.to_string()))?.state.last_sequence;
        let end = selection.to_seq.map_or(last, |t| t.min(last));
        let mut reader = Reader { messages: None, end, selection: selection.clone(), stream: stream_name, done: false };
        if last == 0 || selection.from_seq.is_some_and(|f| f > end) {
            reader.done = true;
            return Ok(reader);
        }
        let deliver_policy = match (selection.from_seq, selection.from) {
            (Some(seq), _) => DeliverPolicy::ByStartSequence { start_sequence: seq },
            (None, Some(t)) => DeliverPolicy::ByStartTime { start_time: t },
            (None, None) => DeliverPolicy::All,
        };
        let consumer = stream
            .create_consumer(OrderedConfig { filter_subject: filter_subject.to_string(), deliver_policy, ..Default::default() })
            .await
            .map_err(|e| stream_error(e.to_string()))?;
        reader.messages = Some(consumer.messages().await.map_err(|e| stream_error(e.to_string()))?);
        Ok(reader)
    }

    /// The next matching message, or None at the end of the range.
    pub async fn next(&mut self) -> Result<Option<Read>, OpsError> {
        loop {
            if self.done {
                return Ok(None);
            }
            let Some(messages) = self.messages.as_mut() else { return Ok(None) };
            // Nothing more within a moment: the filter matches nothing further up to the end.
            let next = match tokio::time::timeout(Duration::from_secs(2), messages.next()).await {
                Ok(Some(Ok(m))) => m,
                Ok(Some(Err(e))) => return Err(OpsError::Stream { stream: self.stream, message: e.to_string() }),
                Ok(None) | Err(_) => {
                    self.done = true;
                    return Ok(None);
                }
            };
            let (seq, published) = match next.info() {
                Ok(info) => (info.stream_sequence, info.published),
                Err(e) => return Err(OpsError::Stream { stream: self.stream, message: e.to_string() }),
            };
            if seq > self.end || self.selection.to.is_some_and(|t| published > t) {
                self.done = true;
                return Ok(None);
            }
            if seq >= self.end {
                self.done = true;
            }
            if self.selection.time_matches(published) {
                return Ok(Some(Read { message: next, seq, published }));
            }
        }
    }
}

/// A short random id for one run of an operation.
pub fn run_id() -> String {
    let mut b = [0u8; 6];
    let _ = getrandom::fill(&mut b);
    hex::encode(b)
}

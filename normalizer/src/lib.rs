//! hookline normalizer: turns the raw bytes of one webhook into 0..n `NormalizedEvent`s, one
//! module per source, and runs the worker that does so for every message of `HOOKLINE_RAW`.

pub mod build;
pub mod publish;
pub mod raw;
pub mod sources;
pub mod watermark;
pub mod worker;

use hookline_shared::event::{NormalizedEvent, RawRef};
use hookline_shared::Source;

/// Where a raw webhook came from: what the channel and ingest said about it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventContext {
    pub tenant_id: String,
    pub channel_id: String,
    /// The channel's platform (used where the payload does not say it).
    pub platform: String,
    /// RFC 3339, from `Hookline-Received-At`.
    pub received_at: String,
    pub raw: Option<RawRef>,
}

/// One raw webhook, as stored in `HOOKLINE_RAW`.
#[derive(Debug, Clone, Copy)]
pub struct RawInput<'a> {
    pub source: Source,
    pub body: &'a [u8],
    pub content_type: Option<&'a str>,
    /// The query string of the webhook request, without `?`.
    pub query: Option<&'a str>,
    pub context: &'a EventContext,
}

/// Why a payload cannot be normalized. `code()` is the DLQ reason.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NormalizeError {
    #[error("invalid JSON: {0}")]
    InvalidJson(String),
    #[error("invalid form body: {0}")]
    InvalidForm(String),
    #[error("missing field {0}")]
    MissingField(String),
    #[error("invalid field {field}: {detail}")]
    InvalidField { field: String, detail: String },
    #[error("unsupported payload: {0}")]
    UnsupportedPayload(String),
}

impl NormalizeError {
    /// A snake_case code for `Hookline-Dlq-Reason` and metric labels.
    pub fn code(&self) -> &'static str {
        match self {
            NormalizeError::InvalidJson(_) => "invalid_json",
            NormalizeError::InvalidForm(_) => "invalid_form",
            NormalizeError::MissingField(_) => "missing_field",
            NormalizeError::InvalidField { .. } => "invalid_field",
            NormalizeError::UnsupportedPayload(_) => "unsupported_payload",
        }
    }
}

/// Normalizes one raw webhook. Never panics, whatever the bytes. Each event's `raw.index` is its
/// position in the payload.
pub fn normalize(input: &RawInput<'_>) -> Result<Vec<NormalizedEvent>, NormalizeError> {
    let mut events = parse(input)?;
    for (i, event) in events.iter_mut().enumerate() {
        if let Some(raw) = event.raw.as_mut() {
            raw.index = Some(u32::try_from(i).unwrap_or(u32::MAX));
        }
    }
    Ok(events)
}

fn parse(input: &RawInput<'_>) -> Result<Vec<NormalizedEvent>, NormalizeError> {
    match input.source {
        Source::Whatsapp => sources::whatsapp::parse(input),
        Source::Dialog360 => sources::dialog360::parse(input),
        Source::Messenger => sources::messenger::parse(input),
        Source::Instagram => sources::instagram::parse(input),
        Source::Telegram => sources::telegram::parse(input),
        Source::Twilio => sources::twilio::parse(input),
        Source::Tawkto => sources::tawkto::parse(input),
        Source::Mercadopago => sources::mercadopago::parse(input),
        Source::Webchat => sources::webchat::parse(input),
    }
}

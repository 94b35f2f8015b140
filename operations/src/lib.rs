//! hookline's operator tools: replaying raw webhooks or events (`replay`), and listing, showing,
//! re-driving and purging dead letters (`dlq`). Used by the CLI and the setup API.

pub mod dlq;
pub mod lookup;
pub mod reader;
pub mod replay;
pub mod selection;

#[derive(Debug, thiserror::Error)]
pub enum OpsError {
    #[error("stream {stream}: {message}")]
    Stream { stream: &'static str, message: String },
    #[error("publish failed: {0}")]
    Publish(String),
    #[error("{0}")]
    Invalid(String),
}

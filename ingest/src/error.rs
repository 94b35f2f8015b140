//! Why ingest refused a request, and the one table that maps each reason to its HTTP answer.

use http::StatusCode;

use crate::publish::PublishError;
use crate::verify::VerifyError;

#[derive(Debug, thiserror::Error)]
pub enum Rejection {
    #[error("no such route")]
    NoRoute,
    #[error("method not allowed")]
    MethodNotAllowed,
    #[error("unknown channel")]
    UnknownChannel,
    #[error("no default channel for this platform")]
    NoDefaultChannel,
    #[error("body over the limit")]
    TooLarge,
    #[error("body not received in time")]
    BodyTimeout,
    #[error("body could not be read")]
    BadBody,
    #[error("invalid signature: {0}")]
    Signature(#[from] VerifyError),
    #[error("subscription handshake refused")]
    HandshakeRefused,
    #[error("not stored: {0}")]
    Unavailable(#[from] PublishError),
}

impl Rejection {
    pub fn status(&self) -> StatusCode {
        match self {
            Rejection::NoRoute | Rejection::UnknownChannel | Rejection::NoDefaultChannel => StatusCode::NOT_FOUND,
            Rejection::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            Rejection::TooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            Rejection::BodyTimeout => StatusCode::REQUEST_TIMEOUT,
            Rejection::BadBody => StatusCode::BAD_REQUEST,
            Rejection::Signature(_) => StatusCode::UNAUTHORIZED,
            Rejection::HandshakeRefused => StatusCode::FORBIDDEN,
            Rejection::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
        }
    }

    /// The answer's body: short, and never naming which part of a signature failed.
    pub fn public_message(&self) -> &'static str {
        match self {
            Rejection::NoRoute => "not found\n",
            Rejection::MethodNotAllowed => "method not allowed\n",
            Rejection::UnknownChannel => "unknown channel\n",
            Rejection::NoDefaultChannel => "no default channel for this platform\n",
            Rejection::TooLarge => "body too large\n",
            Rejection::BodyTimeout => "body not received in time\n",
            Rejection::BadBody => "body could not be read\n",
            Rejection::Signature(_) => "invalid signature\n",
            Rejection::HandshakeRefused => "verification failed\n",
            Rejection::Unavailable(_) => "temporarily unavailable, retry later\n",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn each_rejection_has_the_designs_status() {
        let table: Vec<(Rejection, u16)> = vec![
            (Rejection::NoRoute, 404),
            (Rejection::UnknownChannel, 404),
            (Rejection::NoDefaultChannel, 404),
            (Rejection::MethodNotAllowed, 405),
            (Rejection::TooLarge, 413),
            (Rejection::BodyTimeout, 408),
            (Rejection::BadBody, 400),
            (Rejection::Signature(VerifyError::Mismatch), 401),
            (Rejection::Signature(VerifyError::MissingHeader("x")), 401),
            (Rejection::Signature(VerifyError::Stale), 401),
            (Rejection::HandshakeRefused, 403),
            (Rejection::Unavailable(PublishError::Disconnected), 503),
            (Rejection::Unavailable(PublishError::Timeout(Duration::from_secs(1))), 503),
            (Rejection::Unavailable(PublishError::Refused("full".into())), 503),
        ];
        for (rejection, status) in table {
            assert_eq!(rejection.status().as_u16(), status, "{rejection}");
        }
        assert_eq!(Rejection::Signature(VerifyError::MissingHeader("x-hub-signature-256")).public_message(), "invalid signature\n");
    }
}

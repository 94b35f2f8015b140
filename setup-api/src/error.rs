//! `ApiError`: the one table from a refusal to its HTTP status and JSON body
//! `{"error": {"code", "message", "field"?}}`. Internal errors are logged and answered as a bare
//! 500 with no detail. No variant ever carries a secret: messages are written here or by the
//! validators, never copied from a request body.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use utoipa::ToSchema;

/// The body of every error answer.
#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorDetail {
    /// A stable, snake_case code: `invalid_json`, `invalid_query` (400), `unauthorized` (401),
    /// `forbidden` (403), `not_found` (404), `method_not_allowed` (405), `conflict` (409), `body_too_large` (413), `too_many_failures` (429),
    /// `invalid_field`, `unknown_field`, `platform_rejected` (422), `platform_unavailable` (502).
    pub code: &'static str,
    /// For people; never holds a secret.
    pub message: String,
    /// The request field at fault, when there is one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
}

#[derive(Debug)]
pub enum ApiError {
    /// A refusal the client can act on.
    Client { status: StatusCode, code: &'static str, message: String, field: Option<String> },
    /// A fault of ours (database, bug): logged, answered as a bare 500.
    Internal(String),
}

impl ApiError {
    fn client(status: StatusCode, code: &'static str, message: impl Into<String>, field: Option<String>) -> Self {
        ApiError::Client { status, code, message: message.into(), field }
    }

    /// 400: the body is not JSON, or not an object.
    pub fn bad_json(message: impl Into<String>) -> Self {
        Self::client(StatusCode::BAD_REQUEST, "invalid_json", message, None)
    }

    /// 400: a query parameter is malformed.
    pub fn bad_query(field: &str, message: impl Into<String>) -> Self {
        Self::client(StatusCode::BAD_REQUEST, "invalid_query", message, Some(field.to_string()))
    }

    pub fn unauthorized() -> Self {
        Self::client(StatusCode::UNAUTHORIZED, "unauthorized", "a valid Authorization: Bearer token is required", None)
    }

    /// 403: the token may not do this (read-only, or not an admin); `field` names the request
    /// field at fault when there is one (a `tenant_id` outside the token's tenant).
    pub fn forbidden(field: Option<&str>, message: impl Into<String>) -> Self {
        Self::client(StatusCode::FORBIDDEN, "forbidden", message, field.map(str::to_string))
    }

    /// 429: too many failed authentications from this address this minute.
    pub fn too_many_failures() -> Self {
        Self::client(
            StatusCode::TOO_MANY_REQUESTS,
            "too_many_failures",
            "too many failed authentications from this address; try again in a minute",
            None,
        )
    }

    pub fn not_found(message: impl Into<String>) -> Self {
        Self::client(StatusCode::NOT_FOUND, "not_found", message, None)
    }

    pub fn channel_not_found(id: &str) -> Self {
        Self::not_found(format!("no channel {id:?}"))
    }

    pub fn destination_not_found(id: &str) -> Self {
        Self::not_found(format!("no destination {id:?}"))
    }

    pub fn method_not_allowed() -> Self {
        Self::client(StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed", "this route does not take this method", None)
    }

    /// 409: the change collides with another channel (same id, second default).
    pub fn conflict(field: &str, message: impl Into<String>) -> Self {
        Self::client(StatusCode::CONFLICT, "conflict", message, Some(field.to_string()))
    }

    /// 422: a field has a value the API does not accept.
    pub fn invalid(field: &str, message: impl Into<String>) -> Self {
        Self::client(StatusCode::UNPROCESSABLE_ENTITY, "invalid_field", message, Some(field.to_string()))
    }

    /// 422: the body as a whole is refused, no one field at fault.
    pub fn invalid_body(message: impl Into<String>) -> Self {
        Self::client(StatusCode::UNPROCESSABLE_ENTITY, "invalid_field", message, None)
    }

    /// 422: a field the route does not take.
    pub fn unknown_field(field: &str, message: impl Into<String>) -> Self {
        Self::client(StatusCode::UNPROCESSABLE_ENTITY, "unknown_field", message, Some(field.to_string()))
    }

    pub fn body_too_large() -> Self {
        Self::client(StatusCode::PAYLOAD_TOO_LARGE, "body_too_large", "the body is larger than the API accepts", None)
    }

    /// 422: the platform refused what the request gave (a credential, an id).
    pub fn platform_rejected(field: Option<&str>, message: impl Into<String>) -> Self {
        Self::client(StatusCode::UNPROCESSABLE_ENTITY, "platform_rejected", message, field.map(str::to_string))
    }

    /// 502: the platform could not be reached or failed on its side.
    pub fn platform_unavailable(message: impl Into<String>) -> Self {
        Self::client(StatusCode::BAD_GATEWAY, "platform_unavailable", message, None)
    }

    pub fn internal(what: impl Into<String>) -> Self {
        ApiError::Internal(what.into())
    }

    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::Client { status, .. } => *status,
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    pub fn code(&self) -> &'static str {
        match self {
            ApiError::Client { code, .. } => code,
            ApiError::Internal(_) => "internal",
        }
    }
}

impl From<sqlx::Error> for ApiError {
    fn from(e: sqlx::Error) -> Self {
        crate::db::classify(e)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        match self {
            ApiError::Client { status, code, message, field } => {
                let body = ErrorBody { error: ErrorDetail { code, message, field } };
                let mut response = (status, axum::Json(body)).into_response();
                if status == StatusCode::UNAUTHORIZED {
                    response.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
                }
                if status == StatusCode::TOO_MANY_REQUESTS {
                    response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from_static("60"));
                }
                response
            }
            ApiError::Internal(what) => {
                tracing::error!(error = %what, "internal error; answered 500");
                StatusCode::INTERNAL_SERVER_ERROR.into_response()
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_refusal_has_its_status_and_code() {
        let cases: Vec<(ApiError, u16, &str)> = vec![
            (ApiError::bad_json("x"), 400, "invalid_json"),
            (ApiError::bad_query("limit", "x"), 400, "invalid_query"),
            (ApiError::unauthorized(), 401, "unauthorized"),
            (ApiError::forbidden(None, "x"), 403, "forbidden"),
            (ApiError::too_many_failures(), 429, "too_many_failures"),
            (ApiError::channel_not_found("c"), 404, "not_found"),
            (ApiError::destination_not_found("d"), 404, "not_found"),
            (ApiError::invalid_body("x"), 422, "invalid_field"),
            (ApiError::method_not_allowed(), 405, "method_not_allowed"),
            (ApiError::conflict("id", "x"), 409, "conflict"),
            (ApiError::invalid("tenant_id", "x"), 422, "invalid_field"),
            (ApiError::unknown_field("x", "x"), 422, "unknown_field"),
            (ApiError::body_too_large(), 413, "body_too_large"),
            (ApiError::platform_rejected(Some("bot_token"), "x"), 422, "platform_rejected"),
            (ApiError::platform_unavailable("x"), 502, "platform_unavailable"),
            (ApiError::internal("boom"), 500, "internal"),
        ];
        for (err, status, code) in cases {
            assert_eq!(err.status().as_u16(), status, "{code}");
            assert_eq!(err.code(), code);
        }
    }

    #[tokio::test]
    async fn an_internal_error_is_a_bare_500() {
        let response = ApiError::internal("database exploded").into_response();
        assert_eq!(response.status(), 500);
        let body = axum::body::to_bytes(response.into_body(), 1024).await.expect("body");
        assert!(body.is_empty());
    }

    #[tokio::test]
    async fn a_client_error_names_code_message_and_field() {
        let response = ApiError::invalid("tenant_id", "1 to 64 of A-Z a-z 0-9 _ -").into_response();
        assert_eq!(response.status(), 422);
        let body = axum::body::to_bytes(response.into_body(), 1024).await.expect("body");
        let v: serde_json::Value = serde_json::from_slice(&body).expect("json");
        assert_eq!(v["error"]["code"], "invalid_field");
        assert_eq!(v["error"]["field"], "tenant_id");
        assert!(v["error"]["message"].is_string());
    }
}

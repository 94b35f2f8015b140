//! Platform helpers, `POST /api/v1/integrations/{platform}/setup`: each checks the credentials
//! it is given against the platform, creates the channel (credentials sealed with it), waits
//! until the channel is in the bucket, then points the platform at the channel's
//! `webhook_url`. When that last call fails the channel is deleted again. Tawk.to and Mercado
//! Pago have no API for it: their answer holds the URL and the secret to paste, the one answer
//! of the API that ever holds a secret.
//!
//! Platform base URLs come from `setup_api.{telegram,graph,twilio}_api_url`. Calls are
//! idempotent (reads, or "set the webhook to X"), so transient failures (connection, timeout,
//! 429, 5xx) are retried a few times in memory. Tokens travel in headers or bodies, never in a
//! URL, except Telegram's, whose API puts the bot token in the path: its URL is never logged,
//! and no error quotes a platform's answer without scrubbing the request's secrets from it.

pub mod meta;
pub mod paste;
pub mod telegram;
pub mod twilio;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Json;
use backon::{ExponentialBuilder, Retryable};
use serde::Serialize;
use serde_json::Value;
use std::time::Duration;
use utoipa::ToSchema;

use hookline_shared::config::SetupApiConfig;
use hookline_shared::{Secret, Source};

use crate::auth::{Scope, Writer};
use crate::db::{ChannelRow, Settings};
use crate::error::{ApiError, ErrorBody};
use crate::metrics::{ApiMetrics, PlatformLabels};
use crate::model::ChannelView;
use crate::routes::Body;
use crate::server::{AppState, SharedState};
use crate::service;

/// How long a helper waits for the new channel to reach the bucket before pointing the
/// platform at it (Meta calls the webhook URL back at once to verify it).
const MIRROR_WAIT: Duration = Duration::from_secs(3);
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// What a helper answers.
#[derive(Debug, Serialize, ToSchema)]
pub struct SetupResult {
    pub channel: ChannelView,
    /// What the platform told about the account (bot username, phone number, page name).
    #[schema(value_type = Object)]
    pub platform: Settings,
    /// Tawk.to and Mercado Pago: what to paste into the platform's console.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub paste: Option<Paste>,
}

/// The URL, and the generated secret, to paste into a platform's console. This answer is the
/// only place the secret is ever shown: it is stored sealed and never answered again.
#[derive(Debug, Serialize, ToSchema)]
pub struct Paste {
    pub webhook_url: String,
    /// Present when hookline generated it (no `secret` in the request).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub secret: Option<String>,
    pub instructions: String,
}

/// The request body of each platform (for the OpenAPI document): one of these shapes, the one
/// of the platform named in the path.
#[derive(serde::Deserialize, ToSchema)]
#[serde(untagged)]
#[allow(dead_code)]
pub enum SetupRequest {
    Telegram(telegram::TelegramSetup),
    Whatsapp(meta::WhatsappSetup),
    MessengerOrInstagram(meta::PageSetup),
    Twilio(twilio::TwilioSetup),
    TawktoOrMercadopago(paste::PasteSetup),
}

/// Set up a platform: create the channel and point the platform at it.
#[utoipa::path(
    post,
    path = "/api/v1/integrations/{platform}/setup",
    tag = "integrations",
    params(("platform" = String, Path, description = "telegram, whatsapp, messenger, instagram, twilio, tawkto or mercadopago")),
    request_body(content = SetupRequest, description = "The body of the platform named in the path"),
    responses(
        (status = 201, description = "The channel exists and the platform points at it (or, for tawkto and mercadopago, what to paste)", body = SetupResult),
        (status = 400, body = ErrorBody),
        (status = 401, body = ErrorBody),
        (status = 403, description = "A read-only token, or a tenant outside the token's", body = ErrorBody),
        (status = 404, description = "Unknown platform", body = ErrorBody),
        (status = 409, body = ErrorBody),
        (status = 422, description = "A field is invalid, or the platform refused a credential or id (`platform_rejected`)", body = ErrorBody),
        (status = 502, description = "The platform could not be reached or failed (`platform_unavailable`); no channel was left behind", body = ErrorBody),
    )
)]
pub async fn setup_route(
    State(state): State<SharedState>,
    scope: Scope,
    Path(platform): Path<String>,
    Body(body): Body,
) -> Result<(StatusCode, Json<SetupResult>), ApiError> {
    let writer = scope.writer()?;
    // Refused before any platform is called; `service::create` checks it again.
    if let Ok(Value::Object(fields)) = serde_json::from_slice::<Value>(&body) {
        if let Some(Value::String(tenant)) = fields.get("tenant_id") {
            writer.require_tenant("tenant_id", Some(tenant))?;
        }
    }
    let w = &writer;
    let result = match platform.as_str() {
        "telegram" => telegram::setup(&state, w, &body).await?,
        "whatsapp" => meta::setup_whatsapp(&state, w, &body).await?,
        "messenger" => meta::setup_page(&state, w, &body, Source::Messenger).await?,
        "instagram" => meta::setup_page(&state, w, &body, Source::Instagram).await?,
        "twilio" => twilio::setup(&state, w, &body).await?,
        "tawkto" => paste::setup(&state, w, &body, Source::Tawkto).await?,
        "mercadopago" => paste::setup(&state, w, &body, Source::Mercadopago).await?,
        _ => {
            return Err(ApiError::not_found(
                "unknown platform; expected one of: telegram, whatsapp, messenger, instagram, \
                 twilio, tawkto, mercadopago",
            ))
        }
    };
    Ok((StatusCode::CREATED, Json(result)))
}

/// The HTTP client of the helpers and the platforms' base URLs.
pub struct PlatformClient {
    http: reqwest::Client,
    pub telegram: String,
    pub graph: String,
    pub twilio: String,
}

impl PlatformClient {
    pub fn new(config: &SetupApiConfig) -> Result<Self, reqwest::Error> {
        let http = reqwest::Client::builder()
            .timeout(REQUEST_TIMEOUT)
            .connect_timeout(Duration::from_secs(5))
            // A platform API does not redirect; following one could carry a token elsewhere.
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("hookline-setup-api/", env!("CARGO_PKG_VERSION")))
            .build()?;
        let base = |s: &str| s.trim_end_matches('/').to_string();
        Ok(PlatformClient {
            http,
            telegram: base(&config.telegram_api_url),
            graph: base(&config.graph_api_url),
            twilio: base(&config.twilio_api_url),
        })
    }

    pub fn http(&self) -> &reqwest::Client {
        &self.http
    }
}

/// One call to a platform, for errors, logs and metrics.
pub struct Call<'a> {
    pub platform: &'static str,
    /// Its name in the platform's API: `getMe`, `subscribed_apps`...
    pub what: &'static str,
    /// The request field a refusal is blamed on.
    pub field: Option<&'static str>,
    /// Values to scrub from anything the platform answers before it is quoted.
    pub secrets: &'a [&'a Secret],
}

#[derive(Debug)]
enum CallError {
    /// Worth another try: no connection, timeout, 429, 5xx.
    Transient(String),
    Rejected {
        status: u16,
        description: String,
    },
}

impl<'a> Call<'a> {
    /// Quotes at most 200 characters of what the platform said, with secrets scrubbed.
    fn scrub(&self, text: &str) -> String {
        let mut out = text.to_string();
        for s in self.secrets {
            if !s.is_empty() {
                out = out.replace(s.expose(), "[redacted]");
            }
        }
        if out.chars().count() > 200 {
            out = out.chars().take(200).collect::<String>() + "…";
        }
        out
    }

    fn describe(&self, body: &Value) -> String {
        let text = body
            .get("description")
            .or_else(|| body.get("error").and_then(|e| e.get("message")))
            .or_else(|| body.get("message"))
            .and_then(Value::as_str)
            .unwrap_or("");
        self.scrub(text)
    }

    /// Sends the request `build` makes (again on a transient failure) and returns the JSON the
    /// platform answered with a 2xx (`null` for an empty body).
    pub async fn send(&self, metrics: &ApiMetrics, build: impl Fn() -> reqwest::RequestBuilder) -> Result<Value, ApiError> {
        let attempt = || async {
            let response = build().send().await.map_err(|e| {
                // The error's text would hold the URL (Telegram's holds the bot token).
                CallError::Transient(
                    if e.is_timeout() {
                        "timed out"
                    } else if e.is_connect() {
                        "connection failed"
                    } else {
                        "request failed"
                    }
                    .to_string(),
                )
            })?;
            let status = response.status();
            let bytes = response.bytes().await.map_err(|_| CallError::Transient("the answer was cut short".to_string()))?;
            let body: Value = if bytes.is_empty() { Value::Null } else { serde_json::from_slice(&bytes).unwrap_or(Value::Null) };
            if status.is_success() {
                Ok(body)
            } else if status.as_u16() == 429 || status.is_server_error() {
                Err(CallError::Transient(format!("answered {} {}", status.as_u16(), self.describe(&body))))
            } else {
                Err(CallError::Rejected { status: status.as_u16(), description: self.describe(&body) })
            }
        };
        let result = attempt
            .retry(
                ExponentialBuilder::default()
                    .with_min_delay(Duration::from_millis(200))
                    .with_max_delay(Duration::from_secs(2))
                    .with_max_times(2),
            )
            .when(|e| matches!(e, CallError::Transient(_)))
            .notify(|e, delay| {
                tracing::warn!(platform = self.platform, call = self.what, error = ?e, retry_in = ?delay, "platform call failed; retrying")
            })
            .await;
        let outcome = match &result {
            Ok(_) => "ok",
            Err(CallError::Rejected { .. }) => "rejected",
            Err(CallError::Transient(_)) => "unavailable",
        };
        metrics.platform_calls.get_or_create(&PlatformLabels { platform: self.platform, outcome }).inc();
        match result {
            Ok(v) => {
                tracing::info!(platform = self.platform, call = self.what, "platform call done");
                Ok(v)
            }
            Err(CallError::Rejected { status, description }) => {
                tracing::info!(platform = self.platform, call = self.what, status, "platform refused the call");
                Err(self.rejected(format!("{status} {description}").trim_end()))
            }
            Err(CallError::Transient(reason)) => {
                tracing::warn!(platform = self.platform, call = self.what, reason = %reason, "platform unavailable");
                Err(ApiError::platform_unavailable(format!("{} {}: {reason}", self.platform, self.what)))
            }
        }
    }

    /// A refusal by the platform of what the request gave.
    pub fn rejected(&self, detail: &str) -> ApiError {
        ApiError::platform_rejected(self.field, format!("{} refused {}: {}", self.platform, self.what, self.scrub(detail)))
    }
}

/// Fields every helper takes besides the platform's own.
pub(crate) fn common_checks(tenant_id: &str, name: Option<String>) -> Result<Option<String>, ApiError> {
    crate::validate::id("tenant_id", tenant_id)?;
    crate::validate::name(name)
}

/// `digits`, at most 32 of them: a Meta object id.
pub(crate) fn numeric_id(field: &str, value: &str) -> Result<(), ApiError> {
    if !value.is_empty() && value.len() <= 32 && value.bytes().all(|b| b.is_ascii_digit()) {
        Ok(())
    } else {
        Err(ApiError::invalid(field, "must be the platform's numeric id"))
    }
}

pub(crate) fn credential(field: &str, value: &Secret) -> Result<(), ApiError> {
    let s = value.expose();
    if s.is_empty() || s.len() > 4096 || s.trim() != s || s.chars().any(char::is_control) {
        Err(ApiError::invalid(field, "must be 1 to 4096 bytes with no surrounding whitespace or control characters"))
    } else {
        Ok(())
    }
}

/// Waits (briefly) for the new channel to reach the bucket, then runs `point`; when `point`
/// fails the channel is deleted again, so a failed setup leaves nothing behind.
pub(crate) async fn point_platform<F, Fut>(state: &AppState, writer: &Writer, row: &ChannelRow, seq: i64, point: F) -> Result<(), ApiError>
where
    F: FnOnce() -> Fut,
    Fut: std::future::Future<Output = Result<(), ApiError>>,
{
    if !state.mirror.wait_relayed(&state.pool, seq, MIRROR_WAIT).await {
        tracing::warn!(channel_id = %row.id, "the new channel is not in the bucket yet; pointing the platform at it anyway");
    }
    if let Err(e) = point().await {
        match service::delete(state, writer, &row.id, "setup_undone").await {
            Ok(()) => tracing::info!(channel_id = %row.id, "setup failed; channel deleted again"),
            Err(undo) => {
                tracing::error!(channel_id = %row.id, error = ?undo, "setup failed and the channel could not be deleted")
            }
        }
        return Err(e);
    }
    Ok(())
}

/// The value as a JSON string, for settings.
pub(crate) fn text(v: &Value) -> Option<Value> {
    match v {
        Value::String(s) => Some(Value::String(s.clone())),
        Value::Number(n) => Some(Value::String(n.to_string())),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn what_a_platform_says_is_scrubbed_and_cut_before_it_is_quoted() {
        let token = Secret::new("123:secret-bot-token");
        let secrets = [&token];
        let call = Call { platform: "telegram", what: "getMe", field: Some("bot_token"), secrets: &secrets };
        let said = serde_json::json!({"ok": false, "description": "token 123:secret-bot-token is invalid"});
        assert_eq!(call.describe(&said), "token [redacted] is invalid");
        let meta = serde_json::json!({"error": {"message": "x".repeat(500)}});
        assert!(call.describe(&meta).chars().count() <= 201);
        match call.rejected("401 Unauthorized: 123:secret-bot-token") {
            ApiError::Client { message, field, .. } => {
                assert!(!message.contains("secret-bot-token"), "{message}");
                assert_eq!(field.as_deref(), Some("bot_token"));
            }
            ApiError::Internal(m) => panic!("{m}"),
        }
    }
}

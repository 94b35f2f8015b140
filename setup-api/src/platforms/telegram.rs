//! Telegram: `getMe` checks the bot token, then `setWebhook` points the bot at the channel with
//! `secret_token`, which Telegram sends back in `X-Telegram-Bot-Api-Secret-Token`.

use serde::Deserialize;
use serde_json::{json, Map, Value};
use utoipa::ToSchema;

use hookline_shared::{Secret, Source};

use super::{common_checks, point_platform, text, Call, SetupResult};
use crate::auth::Writer;
use crate::error::ApiError;
use crate::ids;
use crate::model::{webhook_url, ChannelView};
use crate::server::AppState;
use crate::service::{self, NewChannel};
use crate::validate::{self, Fields, Rule};

/// `POST /api/v1/integrations/telegram/setup`
#[derive(Debug, Deserialize, ToSchema)]
pub struct TelegramSetup {
    pub tenant_id: String,
    pub name: Option<String>,
    #[serde(default)]
    pub default: bool,
    /// The bot token from @BotFather. Write-only; stored encrypted.
    #[schema(value_type = String, format = Password, write_only)]
    pub bot_token: Secret,
    /// What Telegram sends in `X-Telegram-Bot-Api-Secret-Token` (1–256 of `A-Z a-z 0-9 _ -`);
    /// generated when absent. Write-only.
    #[schema(value_type = Option<String>, format = Password, write_only)]
    pub secret_token: Option<Secret>,
    /// Update types to receive (`message`, `callback_query`...); Telegram's default when absent.
    pub allowed_updates: Option<Vec<String>>,
    /// Drop the updates Telegram holds for the bot.
    #[serde(default)]
    pub drop_pending_updates: bool,
}

const FIELDS: Fields = &[
    ("tenant_id", Rule::Required("a string")),
    ("name", Rule::Optional("a string")),
    ("default", Rule::Optional("a boolean")),
    ("bot_token", Rule::Required("a string")),
    ("secret_token", Rule::Optional("a string")),
    ("allowed_updates", Rule::Optional("a list of strings")),
    ("drop_pending_updates", Rule::Optional("a boolean")),
];

fn bot_token_ok(token: &str) -> bool {
    match token.split_once(':') {
        Some((id, rest)) => {
            !id.is_empty()
                && id.len() <= 20
                && id.bytes().all(|b| b.is_ascii_digit())
                && !rest.is_empty()
                && rest.len() <= 128
                && rest.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
        }
        None => false,
    }
}

/// Telegram answers `{"ok": true, "result": ...}`, or `ok: false` with a description.
fn result(call: &Call<'_>, answer: Value) -> Result<Value, ApiError> {
    if answer.get("ok") == Some(&Value::Bool(true)) {
        Ok(answer.get("result").cloned().unwrap_or(Value::Null))
    } else {
        let description = answer.get("description").and_then(Value::as_str).unwrap_or("not ok");
        Err(call.rejected(description))
    }
}

pub async fn setup(state: &AppState, writer: &Writer, body: &[u8]) -> Result<SetupResult, ApiError> {
    let req: TelegramSetup = validate::parse_body(body, FIELDS)?;
    let name = common_checks(&req.tenant_id, req.name)?;
    if !bot_token_ok(req.bot_token.expose()) {
        return Err(ApiError::invalid("bot_token", "not a Telegram bot token (<bot id>:<characters>)"));
    }
    let secret = match req.secret_token {
        Some(s) => {
            validate::secret(Source::Telegram, "secret_token", &s)?;
            s
        }
        None => Secret::new(ids::new_secret().map_err(|e| ApiError::internal(format!("random secret: {e}")))?),
    };
    if let Some(updates) = &req.allowed_updates {
        let ok = updates.len() <= 32
            && updates.iter().all(|u| !u.is_empty() && u.len() <= 64 && u.bytes().all(|b| b.is_ascii_lowercase() || b == b'_'));
        if !ok {
            return Err(ApiError::invalid("allowed_updates", "update types are lowercase words such as message or callback_query"));
        }
    }
    let client = &state.platforms;
    let base = format!("{}/bot{}", client.telegram, req.bot_token.expose());
    let secrets = [&req.bot_token, &secret];

    let get_me = Call { platform: "telegram", what: "getMe", field: Some("bot_token"), secrets: &secrets };
    let me = result(&get_me, get_me.send(&state.metrics, || client.http().get(format!("{base}/getMe"))).await?)?;
    let mut facts = Map::new();
    if let Some(id) = me.get("id").and_then(text) {
        facts.insert("bot_id".into(), id);
    }
    if let Some(username) = me.get("username").and_then(text) {
        facts.insert("bot_username".into(), username);
    }

    let credentials = json!({ "bot_token": req.bot_token.expose() }).to_string();
    let (row, seq) = service::create(
        state,
        writer,
        NewChannel {
            id: None,
            tenant_id: req.tenant_id,
            source: Source::Telegram,
            platform: "telegram".into(),
            name,
            default: req.default,
            settings: facts.clone(),
            secret: secret.clone(),
            verify_token: None,
            credentials: Some(Secret::new(credentials)),
        },
        "setup",
    )
    .await?;
    let url = webhook_url(&state.public_base, &row.id);
    let mut params = json!({
        "url": url,
        "secret_token": secret.expose(),
        "drop_pending_updates": req.drop_pending_updates,
    });
    if let Some(updates) = &req.allowed_updates {
        params["allowed_updates"] = json!(updates);
    }
    let set_webhook = Call { platform: "telegram", what: "setWebhook", field: None, secrets: &secrets };
    point_platform(state, writer, &row, seq, || async {
        let answer = set_webhook.send(&state.metrics, || client.http().post(format!("{base}/setWebhook")).json(&params)).await?;
        result(&set_webhook, answer).map(|_| ())
    })
    .await?;
    facts.insert("webhook_set".into(), Value::Bool(true));
    Ok(SetupResult { channel: ChannelView::from_row(&row, &state.public_base)?, platform: facts, paste: None })
}

#[cfg(test)]
mod tests {
    #[test]
    fn bot_tokens_have_their_shape() {
        assert!(super::bot_token_ok("123456:ABC-def_ghi"));
        for bad in ["", "123456", ":abc", "12a:abc", "123:", "123:a b", "123:a/b"] {
            assert!(!super::bot_token_ok(bad), "{bad}");
        }
    }
}

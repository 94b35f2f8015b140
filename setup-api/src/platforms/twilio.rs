//! Twilio: `GET .../IncomingPhoneNumbers/{sid}.json` checks the account's credentials and the
//! number, then `POST` to the same resource sets its messaging webhook (`SmsUrl`) and its
//! `StatusCallback` to the channel's URL. The channel's secret is the auth token: Twilio signs
//! every request with it.

use serde::Deserialize;
use serde_json::{json, Map, Value};
use utoipa::ToSchema;

use hookline_shared::{Secret, Source};

use super::{common_checks, point_platform, text, Call, SetupResult};
use crate::auth::Writer;
use crate::error::ApiError;
use crate::model::{webhook_url, ChannelView};
use crate::server::AppState;
use crate::service::{self, NewChannel};
use crate::validate::{self, Fields, Rule};

/// `POST /api/v1/integrations/twilio/setup`
#[derive(Debug, Deserialize, ToSchema)]
pub struct TwilioSetup {
    pub tenant_id: String,
    pub name: Option<String>,
    #[serde(default)]
    pub default: bool,
    /// `sms` (default) or `whatsapp`.
    pub platform: Option<String>,
    /// `AC` + 32 hex digits.
    pub account_sid: String,
    /// The account's auth token: it signs every webhook. Write-only.
    #[schema(value_type = String, format = Password, write_only)]
    pub auth_token: Secret,
    /// `PN` + 32 hex digits: the number to point at the channel.
    pub phone_number_sid: String,
}

const FIELDS: Fields = &[
    ("tenant_id", Rule::Required("a string")),
    ("name", Rule::Optional("a string")),
    ("default", Rule::Optional("a boolean")),
    ("platform", Rule::Optional("a string")),
    ("account_sid", Rule::Required("a string")),
    ("auth_token", Rule::Required("a string")),
    ("phone_number_sid", Rule::Required("a string")),
];

fn sid_ok(sid: &str, prefix: &str) -> bool {
    sid.len() == 34 && sid.starts_with(prefix) && sid[2..].bytes().all(|b| b.is_ascii_hexdigit())
}

pub async fn setup(state: &AppState, writer: &Writer, body: &[u8]) -> Result<SetupResult, ApiError> {
    let req: TwilioSetup = validate::parse_body(body, FIELDS)?;
    let name = common_checks(&req.tenant_id, req.name)?;
    let platform = validate::platform(Source::Twilio, req.platform.as_deref())?;
    if !sid_ok(&req.account_sid, "AC") {
        return Err(ApiError::invalid("account_sid", "must be AC followed by 32 hex digits"));
    }
    if !sid_ok(&req.phone_number_sid, "PN") {
        return Err(ApiError::invalid("phone_number_sid", "must be PN followed by 32 hex digits"));
    }
    validate::secret(Source::Twilio, "auth_token", &req.auth_token)?;
    let client = &state.platforms;
    let secrets = [&req.auth_token];
    let resource = format!("{}/2010-04-01/Accounts/{}/IncomingPhoneNumbers/{}.json", client.twilio, req.account_sid, req.phone_number_sid);

    let fetch = Call { platform: "twilio", what: "IncomingPhoneNumbers fetch", field: Some("auth_token"), secrets: &secrets };
    let number =
        fetch.send(&state.metrics, || client.http().get(&resource).basic_auth(&req.account_sid, Some(req.auth_token.expose()))).await?;
    let mut facts = Map::new();
    facts.insert("account_sid".into(), json!(req.account_sid));
    facts.insert("phone_number_sid".into(), json!(req.phone_number_sid));
    if let Some(v) = number.get("phone_number").and_then(text) {
        facts.insert("phone_number".into(), v);
    }

    let (row, seq) = service::create(
        state,
        writer,
        NewChannel {
            id: None,
            tenant_id: req.tenant_id,
            source: Source::Twilio,
            platform,
            name,
            default: req.default,
            settings: facts.clone(),
            secret: req.auth_token.clone(),
            verify_token: None,
            credentials: None,
        },
        "setup",
    )
    .await?;
    let url = webhook_url(&state.public_base, &row.id);
    let update = Call { platform: "twilio", what: "IncomingPhoneNumbers update", field: Some("phone_number_sid"), secrets: &secrets };
    point_platform(state, writer, &row, seq, || async {
        update
            .send(&state.metrics, || {
                client.http().post(&resource).basic_auth(&req.account_sid, Some(req.auth_token.expose())).form(&[
                    ("SmsUrl", url.as_str()),
                    ("SmsMethod", "POST"),
                    ("StatusCallback", url.as_str()),
                    ("StatusCallbackMethod", "POST"),
                ])
            })
            .await
            .map(|_| ())
    })
    .await?;
    facts.insert("webhook_set".into(), Value::Bool(true));
    Ok(SetupResult { channel: ChannelView::from_row(&row, &state.public_base)?, platform: facts, paste: None })
}

#[cfg(test)]
mod tests {
    #[test]
    fn sids_have_their_prefix_and_length() {
        let ac = format!("AC{}", "a".repeat(32));
        assert!(super::sid_ok(&ac, "AC"));
        assert!(!super::sid_ok(&ac, "PN"));
        assert!(!super::sid_ok("AC123", "AC"));
        assert!(!super::sid_ok(&format!("AC{}", "g".repeat(32)), "AC"));
    }
}

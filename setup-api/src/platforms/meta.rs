//! Meta's Graph API.
//!
//! WhatsApp: `GET /{phone_number_id}` checks the access token and the number, then
//! `POST /{waba_id}/subscribed_apps` subscribes the app to the WhatsApp Business Account with
//! `override_callback_uri` = the channel's URL and its `verify_token` (Meta verifies the URL at
//! once with the GET handshake that ingest answers).
//!
//! Messenger and Instagram: `GET /{page_id}` checks the page access token (and, for Instagram,
//! that an Instagram professional account is linked), then `POST /{app_id}/subscriptions` sets
//! the app's callback URL, verify token and fields for `page` or `instagram` (with the app
//! token `{app_id}|{app_secret}`; Meta verifies the URL at once), then
//! `POST /{page_id}/subscribed_apps` subscribes the app to the page.
//!
//! The channel's secret is the app secret: Meta signs every delivery with it.

use serde::Deserialize;
use serde_json::{json, Map, Value};
use utoipa::ToSchema;

use hookline_shared::{Secret, Source};

use super::{common_checks, credential, numeric_id, point_platform, text, Call, SetupResult};
use crate::auth::Writer;
use crate::error::ApiError;
use crate::ids;
use crate::model::{webhook_url, ChannelView};
use crate::server::AppState;
use crate::service::{self, NewChannel};
use crate::validate::{self, Fields, Rule};

/// `POST /api/v1/integrations/whatsapp/setup`
#[derive(Debug, Deserialize, ToSchema)]
pub struct WhatsappSetup {
    pub tenant_id: String,
    pub name: Option<String>,
    #[serde(default)]
    pub default: bool,
    /// The Meta app's secret: it signs every webhook. Write-only.
    #[schema(value_type = String, format = Password, write_only)]
    pub app_secret: Secret,
    /// A system-user access token with `whatsapp_business_management`. Write-only.
    #[schema(value_type = String, format = Password, write_only)]
    pub access_token: Secret,
    /// The WhatsApp Business Account id.
    pub waba_id: String,
    pub phone_number_id: String,
    /// `hub.verify_token` of the handshake; generated when absent. Write-only.
    #[schema(value_type = Option<String>, format = Password, write_only)]
    pub verify_token: Option<Secret>,
}

const WHATSAPP_FIELDS: Fields = &[
    ("tenant_id", Rule::Required("a string")),
    ("name", Rule::Optional("a string")),
    ("default", Rule::Optional("a boolean")),
    ("app_secret", Rule::Required("a string")),
    ("access_token", Rule::Required("a string")),
    ("waba_id", Rule::Required("a string")),
    ("phone_number_id", Rule::Required("a string")),
    ("verify_token", Rule::Optional("a string")),
];

/// `POST /api/v1/integrations/{messenger,instagram}/setup`
#[derive(Debug, Deserialize, ToSchema)]
pub struct PageSetup {
    pub tenant_id: String,
    pub name: Option<String>,
    #[serde(default)]
    pub default: bool,
    pub app_id: String,
    /// The Meta app's secret: it signs every webhook. Write-only.
    #[schema(value_type = String, format = Password, write_only)]
    pub app_secret: Secret,
    pub page_id: String,
    /// The page access token. Write-only.
    #[schema(value_type = String, format = Password, write_only)]
    pub page_access_token: Secret,
    /// `hub.verify_token` of the handshake; generated when absent. Write-only.
    #[schema(value_type = Option<String>, format = Password, write_only)]
    pub verify_token: Option<Secret>,
    /// Webhook fields; messenger: messages, messaging_postbacks, message_deliveries,
    /// message_reads; instagram: messages, messaging_postbacks, messaging_seen,
    /// message_reactions.
    pub fields: Option<Vec<String>>,
}

const PAGE_FIELDS: Fields = &[
    ("tenant_id", Rule::Required("a string")),
    ("name", Rule::Optional("a string")),
    ("default", Rule::Optional("a boolean")),
    ("app_id", Rule::Required("a string")),
    ("app_secret", Rule::Required("a string")),
    ("page_id", Rule::Required("a string")),
    ("page_access_token", Rule::Required("a string")),
    ("verify_token", Rule::Optional("a string")),
    ("fields", Rule::Optional("a list of strings")),
];

fn verify_token_or_new(source: Source, given: Option<Secret>) -> Result<Secret, ApiError> {
    match given {
        Some(t) => {
            validate::verify_token(source, &t)?;
            Ok(t)
        }
        None => ids::new_secret().map(Secret::new).map_err(|e| ApiError::internal(format!("random verify token: {e}"))),
    }
}

/// Meta's write calls answer `{"success": true}`.
fn succeeded(call: &Call<'_>, answer: &Value) -> Result<(), ApiError> {
    if answer.get("success") == Some(&Value::Bool(true)) {
        Ok(())
    } else {
        Err(call.rejected("the answer was not success"))
    }
}

pub async fn setup_whatsapp(state: &AppState, writer: &Writer, body: &[u8]) -> Result<SetupResult, ApiError> {
    let req: WhatsappSetup = validate::parse_body(body, WHATSAPP_FIELDS)?;
    let name = common_checks(&req.tenant_id, req.name)?;
    validate::secret(Source::Whatsapp, "app_secret", &req.app_secret)?;
    credential("access_token", &req.access_token)?;
    numeric_id("waba_id", &req.waba_id)?;
    numeric_id("phone_number_id", &req.phone_number_id)?;
    let verify_token = verify_token_or_new(Source::Whatsapp, req.verify_token)?;
    let client = &state.platforms;
    let secrets = [&req.app_secret, &req.access_token, &verify_token];
    let bearer = format!("Bearer {}", req.access_token.expose());

    let phone = Call { platform: "whatsapp", what: "phone number", field: Some("phone_number_id"), secrets: &secrets };
    let number = phone
        .send(&state.metrics, || {
            client
                .http()
                .get(format!("{}/{}", client.graph, req.phone_number_id))
                .query(&[("fields", "id,display_phone_number,verified_name")])
                .header("Authorization", &bearer)
        })
        .await?;
    let mut facts = Map::new();
    facts.insert("waba_id".into(), json!(req.waba_id));
    facts.insert("phone_number_id".into(), json!(req.phone_number_id));
    for key in ["display_phone_number", "verified_name"] {
        if let Some(v) = number.get(key).and_then(text) {
            facts.insert(key.into(), v);
        }
    }

    let credentials = json!({ "access_token": req.access_token.expose() }).to_string();
    let (row, seq) = service::create(
        state,
        writer,
        NewChannel {
            id: None,
            tenant_id: req.tenant_id,
            source: Source::Whatsapp,
            platform: "whatsapp".into(),
            name,
            default: req.default,
            settings: facts.clone(),
            secret: req.app_secret.clone(),
            verify_token: Some(verify_token.clone()),
            credentials: Some(Secret::new(credentials)),
        },
        "setup",
    )
    .await?;
    let url = webhook_url(&state.public_base, &row.id);
    let subscribe = Call { platform: "whatsapp", what: "subscribed_apps", field: Some("waba_id"), secrets: &secrets };
    point_platform(state, writer, &row, seq, || async {
        let answer = subscribe
            .send(&state.metrics, || {
                client
                    .http()
                    .post(format!("{}/{}/subscribed_apps", client.graph, req.waba_id))
                    .header("Authorization", &bearer)
                    .form(&[("override_callback_uri", url.as_str()), ("verify_token", verify_token.expose())])
            })
            .await?;
        succeeded(&subscribe, &answer)
    })
    .await?;
    facts.insert("subscribed".into(), Value::Bool(true));
    Ok(SetupResult { channel: ChannelView::from_row(&row, &state.public_base)?, platform: facts, paste: None })
}

pub async fn setup_page(state: &AppState, writer: &Writer, body: &[u8], source: Source) -> Result<SetupResult, ApiError> {
    let req: PageSetup = validate::parse_body(body, PAGE_FIELDS)?;
    let name = common_checks(&req.tenant_id, req.name)?;
    numeric_id("app_id", &req.app_id)?;
    numeric_id("page_id", &req.page_id)?;
    validate::secret(source, "app_secret", &req.app_secret)?;
    credential("page_access_token", &req.page_access_token)?;
    let verify_token = verify_token_or_new(source, req.verify_token)?;
    let (platform, object, default_fields, page_fields, info_fields) = match source {
        Source::Instagram => (
            "instagram",
            "instagram",
            "messages,messaging_postbacks,messaging_seen,message_reactions",
            "messages",
            "id,name,instagram_business_account",
        ),
        _ => (
            "messenger",
            "page",
            "messages,messaging_postbacks,message_deliveries,message_reads",
            "messages,messaging_postbacks,message_deliveries,message_reads",
            "id,name",
        ),
    };
    let fields = match &req.fields {
        Some(list) => {
            let ok = !list.is_empty()
                && list.len() <= 32
                && list.iter().all(|f| !f.is_empty() && f.len() <= 64 && f.bytes().all(|b| b.is_ascii_lowercase() || b == b'_'));
            if !ok {
                return Err(ApiError::invalid("fields", "webhook fields are lowercase words such as messages"));
            }
            list.join(",")
        }
        None => default_fields.to_string(),
    };
    let client = &state.platforms;
    let secrets = [&req.app_secret, &req.page_access_token, &verify_token];
    let page_bearer = format!("Bearer {}", req.page_access_token.expose());
    let app_bearer = format!("Bearer {}|{}", req.app_id, req.app_secret.expose());

    let page_info = Call { platform, what: "page", field: Some("page_access_token"), secrets: &secrets };
    let page = page_info
        .send(&state.metrics, || {
            client
                .http()
                .get(format!("{}/{}", client.graph, req.page_id))
                .query(&[("fields", info_fields)])
                .header("Authorization", &page_bearer)
        })
        .await?;
    let mut facts = Map::new();
    facts.insert("app_id".into(), json!(req.app_id));
    facts.insert("page_id".into(), json!(req.page_id));
    if let Some(v) = page.get("name").and_then(text) {
        facts.insert("page_name".into(), v);
    }
    if source == Source::Instagram {
        match page.get("instagram_business_account").and_then(|a| a.get("id")).and_then(text) {
            Some(id) => {
                facts.insert("instagram_account_id".into(), id);
            }
            None => return Err(ApiError::platform_rejected(Some("page_id"), "the page has no Instagram professional account linked")),
        }
    }

    let credentials = json!({ "page_access_token": req.page_access_token.expose() }).to_string();
    let (row, seq) = service::create(
        state,
        writer,
        NewChannel {
            id: None,
            tenant_id: req.tenant_id,
            source,
            platform: platform.into(),
            name,
            default: req.default,
            settings: facts.clone(),
            secret: req.app_secret.clone(),
            verify_token: Some(verify_token.clone()),
            credentials: Some(Secret::new(credentials)),
        },
        "setup",
    )
    .await?;
    let url = webhook_url(&state.public_base, &row.id);
    let app_subscription = Call { platform, what: "app subscriptions", field: Some("app_secret"), secrets: &secrets };
    let page_subscription = Call { platform, what: "page subscribed_apps", field: Some("page_access_token"), secrets: &secrets };
    point_platform(state, writer, &row, seq, || async {
        let answer = app_subscription
            .send(&state.metrics, || {
                client.http().post(format!("{}/{}/subscriptions", client.graph, req.app_id)).header("Authorization", &app_bearer).form(&[
                    ("object", object),
                    ("callback_url", url.as_str()),
                    ("verify_token", verify_token.expose()),
                    ("fields", fields.as_str()),
                    ("include_values", "true"),
                ])
            })
            .await?;
        succeeded(&app_subscription, &answer)?;
        let answer = page_subscription
            .send(&state.metrics, || {
                client
                    .http()
                    .post(format!("{}/{}/subscribed_apps", client.graph, req.page_id))
                    .header("Authorization", &page_bearer)
                    .form(&[("subscribed_fields", page_fields)])
            })
            .await?;
        succeeded(&page_subscription, &answer)
    })
    .await?;
    facts.insert("subscribed".into(), Value::Bool(true));
    Ok(SetupResult { channel: ChannelView::from_row(&row, &state.public_base)?, platform: facts, paste: None })
}

//! Tawk.to and Mercado Pago have no API to register a webhook: the helper creates the channel
//! and answers the URL to paste into the platform's console, with the secret it generated
//! (the only answer that ever shows a secret), or uses the secret the request gives when the
//! console generated its own.

use serde::Deserialize;
use serde_json::Map;
use utoipa::ToSchema;

use hookline_shared::{Secret, Source};

use super::{common_checks, Paste, SetupResult, MIRROR_WAIT};
use crate::auth::Writer;
use crate::error::ApiError;
use crate::ids;
use crate::model::{webhook_url, ChannelView};
use crate::server::AppState;
use crate::service::{self, NewChannel};
use crate::validate::{self, Fields, Rule};

/// `POST /api/v1/integrations/{tawkto,mercadopago}/setup`
#[derive(Debug, Deserialize, ToSchema)]
pub struct PasteSetup {
    pub tenant_id: String,
    pub name: Option<String>,
    #[serde(default)]
    pub default: bool,
    /// The secret the console shows, when it generates its own; hookline generates one (and
    /// answers it once) when absent. Write-only.
    #[schema(value_type = Option<String>, format = Password, write_only)]
    pub secret: Option<Secret>,
}

const FIELDS: Fields = &[
    ("tenant_id", Rule::Required("a string")),
    ("name", Rule::Optional("a string")),
    ("default", Rule::Optional("a boolean")),
    ("secret", Rule::Optional("a string")),
];

fn instructions(source: Source, generated: bool) -> String {
    let console = match source {
        Source::Tawkto => {
            "In the Tawk.to dashboard: Administration > Settings > Webhooks > Create webhook; \
             paste the URL as the endpoint and choose the events."
        }
        _ => {
            "In Mercado Pago: Your integrations > your application > Webhooks > Configure \
             notifications; paste the URL for production and choose the events."
        }
    };
    if generated {
        format!(
            "{console} Paste the secret as the webhook's secret key. If the console shows a \
             secret of its own instead, send it to POST /api/v1/channels/{{id}}/rotate-secret \
             with previous_valid_for_s = 0. The secret is not shown again."
        )
    } else {
        format!("{console} The secret you gave is stored; it is not shown again.")
    }
}

pub async fn setup(state: &AppState, writer: &Writer, body: &[u8], source: Source) -> Result<SetupResult, ApiError> {
    let req: PasteSetup = validate::parse_body(body, FIELDS)?;
    let name = common_checks(&req.tenant_id, req.name)?;
    let (secret, generated) = match req.secret {
        Some(s) => {
            validate::secret(source, "secret", &s)?;
            (s, false)
        }
        None => (Secret::new(ids::new_secret().map_err(|e| ApiError::internal(format!("random secret: {e}")))?), true),
    };
    let (row, seq) = service::create(
        state,
        writer,
        NewChannel {
            id: None,
            tenant_id: req.tenant_id,
            source,
            platform: source.platforms()[0].to_string(),
            name,
            default: req.default,
            settings: Map::new(),
            secret: secret.clone(),
            verify_token: None,
            credentials: None,
        },
        "setup",
    )
    .await?;
    // The console may call the URL as soon as it is pasted.
    if !state.mirror.wait_relayed(&state.pool, seq, MIRROR_WAIT).await {
        tracing::warn!(channel_id = %row.id, "the new channel is not in the bucket yet");
    }
    Ok(SetupResult {
        channel: ChannelView::from_row(&row, &state.public_base)?,
        platform: Map::new(),
        paste: Some(Paste {
            webhook_url: webhook_url(&state.public_base, &row.id),
            secret: generated.then(|| secret.expose().to_string()),
            instructions: instructions(source, generated),
        }),
    })
}

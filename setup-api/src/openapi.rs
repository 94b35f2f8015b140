//! The OpenAPI document of the API, generated from the handlers' `#[utoipa::path]` and the
//! types' `ToSchema`, served at `/api/v1/openapi.json`.

use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

use crate::destinations::{
    self,
    model::{
        ConnectionError, CreateDestination, DestinationPage, DestinationTestResult, DestinationView, RotateDestinationSecret,
        UpdateDestination,
    },
};
use crate::error::{ErrorBody, ErrorDetail};
use crate::model::{ChannelPage, ChannelView, CreateChannel, RotateSecret, UpdateChannel};
use crate::platforms::{self, meta, paste, telegram, twilio};
use crate::routes;

#[derive(OpenApi)]
#[openapi(
    info(
        title = "hookline setup API",
        version = "1",
        description = "Channel configurations and destinations of hookline. Every route needs `Authorization: Bearer <token>`: \
                       an admin token reaches every tenant, a tenant token only its tenant's resources (another's answer 404), \
                       a read-only token gets 403 on every change. \
                       Secrets are write-only: no answer holds one (but the paste answer of the tawkto and \
                       mercadopago helpers, which shows a generated secret once). Errors are \
                       `{\"error\": {\"code\", \"message\", \"field\"?}}`."
    ),
    paths(
        routes::create_channel,
        routes::list_channels,
        routes::get_channel,
        routes::update_channel,
        routes::delete_channel,
        routes::rotate_secret,
        destinations::create_destination,
        destinations::list_destinations,
        destinations::get_destination,
        destinations::update_destination,
        destinations::delete_destination,
        destinations::rotate_destination_secret,
        destinations::pause_destination,
        destinations::resume_destination,
        destinations::test_destination,
        platforms::setup_route,
        routes::openapi_json,
        crate::operations::replay_route,
        crate::operations::list_dlq,
        crate::operations::show_dlq,
        crate::operations::redrive_dlq,
        crate::operations::purge_dlq,
        crate::replays::start_replay,
        crate::replays::show_replay,
        crate::overview::overview_route,
        crate::overview::channel_activity_route,
        crate::tokens::create_token,
        crate::tokens::list_tokens,
        crate::tokens::revoke_token,
        crate::audit::list_audit,
        crate::events::show_event,
        crate::events::show_raw,
        crate::events::find_events,
    ),
    components(schemas(
        CreateChannel,
        UpdateChannel,
        RotateSecret,
        ChannelView,
        ChannelPage,
        CreateDestination,
        UpdateDestination,
        RotateDestinationSecret,
        DestinationView,
        DestinationPage,
        DestinationTestResult,
        ConnectionError,
        ErrorBody,
        ErrorDetail,
        platforms::SetupRequest,
        platforms::SetupResult,
        platforms::Paste,
        telegram::TelegramSetup,
        meta::WhatsappSetup,
        meta::PageSetup,
        twilio::TwilioSetup,
        paste::PasteSetup,
        crate::overview::Overview,
        crate::overview::ScopeView,
        crate::overview::StreamView,
        crate::overview::ConsumerView,
        crate::overview::DestinationOverview,
        crate::overview::DeadLetterCounts,
        crate::overview::ReasonCount,
        crate::overview::ChannelActivity,
        crate::replays::RunView,
        crate::tokens::CreateToken,
        crate::tokens::TokenView,
        crate::tokens::CreatedToken,
        crate::tokens::TokenList,
        crate::audit::AuditEntry,
        crate::audit::AuditPage,
    )),
    modifiers(&BearerAuth),
    security(("bearer" = [])),
    tags(
        (name = "channels", description = "Channel configurations, mirrored to ingest within a second"),
        (name = "destinations", description = "Where events are delivered, mirrored to the forwarders within a second"),
        (name = "integrations", description = "Create a channel and point a platform at it"),
        (name = "meta", description = "This document"),
        (name = "operations", description = "Replay and dead letters, as `hookline replay` and `hookline dlq`"),
        (name = "tokens", description = "API tokens (admin tokens only): create, list, revoke"),
        (name = "audit", description = "Every change made through the API"),
        (name = "events", description = "Lookups, as `hookline events`: an event with its deliveries, a raw webhook, a search"),
    )
)]
pub struct ApiDoc;

struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme("bearer", SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_document_has_every_route_and_no_secret_in_an_answer() {
        let doc = serde_json::to_value(ApiDoc::openapi()).expect("json");
        let paths = doc["paths"].as_object().expect("paths");
        for p in [
            "/api/v1/channels",
            "/api/v1/channels/{id}",
            "/api/v1/channels/{id}/rotate-secret",
            "/api/v1/destinations",
            "/api/v1/destinations/{id}",
            "/api/v1/destinations/{id}/rotate-secret",
            "/api/v1/destinations/{id}/pause",
            "/api/v1/destinations/{id}/resume",
            "/api/v1/destinations/{id}/test",
            "/api/v1/integrations/{platform}/setup",
            "/api/v1/openapi.json",
            "/api/v1/overview",
            "/api/v1/channels/{id}/activity",
            "/api/v1/replays",
            "/api/v1/replays/{run_id}",
            "/api/v1/tokens",
            "/api/v1/tokens/{id}",
            "/api/v1/audit",
        ] {
            assert!(paths.contains_key(p), "{p} missing");
        }
        let view = &doc["components"]["schemas"]["ChannelView"]["properties"];
        assert!(view.get("secret").is_none());
        assert!(view.get("verify_token").is_none());
        assert!(view.get("secret_set").is_some());
        assert_eq!(doc["components"]["schemas"]["CreateChannel"]["properties"]["secret"]["writeOnly"], true);
        let destination = &doc["components"]["schemas"]["DestinationView"]["properties"];
        for absent in ["signing_secret", "headers", "previous_signing_secret"] {
            assert!(destination.get(absent).is_none(), "{absent}");
        }
        assert!(destination.get("signing_secret_set").is_some() && destination.get("header_names").is_some());
        let create = &doc["components"]["schemas"]["CreateDestination"]["properties"];
        assert_eq!(create["signing_secret"]["writeOnly"], true);
        // utoipa marks a map's values (and names) write-only, not the map itself.
        assert_eq!(create["headers"]["additionalProperties"]["writeOnly"], true, "{}", create["headers"]);
    }
}

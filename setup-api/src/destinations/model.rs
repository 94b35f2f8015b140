//! Destinations as JSON: what requests carry (documented by `CreateDestination` and
//! `UpdateDestination`, read by `DestinationSpec::from_json`; `RotateDestinationSecret`) and what
//! answers hold (`DestinationView`, `DestinationPage`, `DestinationTestResult`). Secrets arrive
//! as `Secret` and never leave: an answer says `signing_secret_set` and lists `header_names`.

use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::collections::BTreeMap;
use time::OffsetDateTime;
use utoipa::ToSchema;

use hookline_shared::destination::DestinationState;
use hookline_shared::Secret;

use super::db::DestinationRow;
use crate::error::ApiError;

/// `POST /api/v1/destinations`. Read by `DestinationSpec::from_json` (shared/src/destination.rs),
/// which names the field at fault; this type only documents the body.
#[allow(dead_code)]
#[derive(ToSchema)]
pub struct CreateDestination {
    /// 1–64 of `A-Z a-z 0-9 _ -`; generated (`dst_` + 26 base32 characters) when absent.
    /// `default` is reserved (the destination `forwarder.target_url` declares).
    #[schema(example = "billing")]
    pub id: Option<String>,
    /// The owning tenant; absent or `null`: every tenant (only an admin may create such a
    /// destination).
    #[schema(example = "acme")]
    pub tenant_id: Option<String>,
    #[schema(example = "Billing service")]
    pub name: Option<String>,
    /// `http://` or `https://`, without credentials (send those in `headers`).
    #[schema(example = "https://billing.example.com/hookline")]
    pub url: String,
    /// `whsec_` and the base64 of at least 24 bytes. Write-only: never returned.
    #[schema(value_type = String, format = Password, write_only)]
    pub signing_secret: String,
    /// Extra request headers (an API key of the target). Sealed like secrets; write-only: only
    /// their names are returned.
    #[schema(value_type = Option<BTreeMap<String, String>>, write_only)]
    pub headers: Option<BTreeMap<String, String>>,
    /// Which events it receives: `{tenant_id?, channel_id?, source?, platform?, kind?, match?}`
    /// (lists mean "any of"; `match` tests the event's JSON by dotted path with `$eq`, `$neq`,
    /// `$in`, `$nin`, `$exists`, `$gt`, `$gte`, `$lt`, `$lte`, `$prefix`, `$suffix`,
    /// `$contains`, `$and`, `$or`, `$not`). Absent: every event of its tenant.
    #[schema(value_type = Option<Object>)]
    pub filter: Option<Value>,
    /// `none` (default) or `conversation`.
    pub ordering: Option<String>,
    /// Deliveries at once, per forwarder process (1–10000; default `forwarder.max_in_flight`).
    pub max_in_flight: Option<u32>,
    /// Deliveries per second for the destination as a whole (> 0, at most 100000; default: none).
    pub rate_limit_per_s: Option<f64>,
    /// Timeout of one delivery (100–120000; default `forwarder.request_timeout_ms`).
    pub timeout_ms: Option<u64>,
    /// Delay before each retry, 1–50 delays of 1–86400 s (default `forwarder.retry_schedule_s`).
    pub retry_schedule_s: Option<Vec<u64>>,
    /// Events older than this are dead-lettered instead of retried (60–2592000; default
    /// `forwarder.max_age_s`).
    pub max_age_s: Option<u64>,
    /// Nothing is sent while true; events wait in JetStream.
    pub paused: Option<bool>,
}

/// `PATCH /api/v1/destinations/{id}`: only the fields present change. `null` clears `tenant_id`
/// (every tenant), `name`, `headers`, `filter` (every event) and the settings (back to the
/// `forwarder.*` defaults). `headers`, when given, replaces every extra header. `id` cannot
/// change, and the signing secret changes through `rotate-secret`.
#[allow(dead_code)]
#[derive(ToSchema)]
pub struct UpdateDestination {
    pub tenant_id: Option<String>,
    pub name: Option<String>,
    pub url: Option<String>,
    #[schema(value_type = Option<BTreeMap<String, String>>, write_only)]
    pub headers: Option<BTreeMap<String, String>>,
    #[schema(value_type = Option<Object>)]
    pub filter: Option<Value>,
    pub ordering: Option<String>,
    pub max_in_flight: Option<u32>,
    pub rate_limit_per_s: Option<f64>,
    pub timeout_ms: Option<u64>,
    pub retry_schedule_s: Option<Vec<u64>>,
    pub max_age_s: Option<u64>,
    pub paused: Option<bool>,
}

/// `POST /api/v1/destinations/{id}/rotate-secret`
#[derive(Debug, Deserialize, ToSchema)]
pub struct RotateDestinationSecret {
    /// The new `whsec_` secret. Write-only.
    #[schema(value_type = String, format = Password, write_only)]
    pub signing_secret: Secret,
    /// How long the current secret keeps signing too, in seconds (default 86400, at most
    /// 2592000; 0 stops it at once). Until then `webhook-signature` carries both signatures.
    #[schema(example = 3600)]
    pub previous_valid_for_s: Option<u64>,
}

/// A destination, as answered. Secrets and header values are never part of it.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct DestinationView {
    pub id: String,
    /// `null`: every tenant.
    pub tenant_id: Option<String>,
    pub name: Option<String>,
    pub url: String,
    /// As written (`{}`: every event of its tenant).
    #[schema(value_type = Object)]
    pub filter: Value,
    /// `none` or `conversation`.
    pub ordering: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_in_flight: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rate_limit_per_s: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub timeout_ms: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub retry_schedule_s: Option<Vec<u64>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_age_s: Option<u64>,
    pub paused: bool,
    /// `paused` when paused; else `tripped` while the forwarders' circuit breaker is open (read
    /// from the KV bucket `hookline_destination_state`), `active` otherwise.
    #[schema(value_type = String, example = "active")]
    pub state: DestinationState,
    /// The names of the extra headers (their values are write-only).
    pub header_names: Vec<String>,
    /// Always true: a destination has a signing secret (write-only).
    pub signing_secret_set: bool,
    /// Until when the previous signing secret keeps signing too, after a rotation.
    #[serde(skip_serializing_if = "Option::is_none", with = "time::serde::rfc3339::option")]
    pub previous_secret_valid_until: Option<OffsetDateTime>,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    pub updated_at: OffsetDateTime,
}

impl DestinationView {
    /// The row as answered at `now`; `tripped`: what the forwarders published for it.
    pub fn from_row(row: &DestinationRow, tripped: bool, now: OffsetDateTime) -> Result<Self, ApiError> {
        let record = row.record()?;
        let state = if record.paused {
            DestinationState::Paused
        } else if tripped {
            DestinationState::Tripped
        } else {
            DestinationState::Active
        };
        Ok(DestinationView {
            id: record.id,
            tenant_id: record.tenant_id,
            name: record.name,
            url: record.url,
            filter: match record.filter.as_json() {
                Value::Null => Value::Object(Default::default()),
                v => v.clone(),
            },
            ordering: record.ordering.as_str().to_string(),
            max_in_flight: record.max_in_flight,
            rate_limit_per_s: record.rate_limit_per_s,
            timeout_ms: record.timeout_ms,
            retry_schedule_s: record.retry_schedule_s,
            max_age_s: record.max_age_s,
            paused: record.paused,
            state,
            header_names: row.header_names.clone(),
            signing_secret_set: true,
            previous_secret_valid_until: match (&record.previous_signing_secret, record.previous_valid_until) {
                (Some(_), Some(until)) if until > now => Some(until),
                _ => None,
            },
            created_at: record.created_at,
            updated_at: record.updated_at,
        })
    }
}

/// One page of `GET /api/v1/destinations`.
#[derive(Debug, Serialize, ToSchema)]
pub struct DestinationPage {
    pub destinations: Vec<DestinationView>,
    /// Pass as `cursor` for the next page; absent on the last page.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_cursor: Option<String>,
}

/// What `POST /api/v1/destinations/{id}/test` did: the target's answer, or why there was none.
#[derive(Debug, Serialize, ToSchema)]
pub struct DestinationTestResult {
    /// The id of the synthetic event sent (also its `webhook-id`).
    pub event_id: String,
    /// Whether the target answered 2xx.
    pub success: bool,
    /// The target's HTTP status; absent when it did not answer.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status: Option<u16>,
    /// From sending the request to the end of the excerpt (or the failure).
    pub duration_ms: u64,
    /// The first KiB of the target's answer (lossy UTF-8; the destination's own secrets and
    /// header values, should the target echo them, are replaced by `[redacted]`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub body_excerpt: Option<String>,
    /// Why the target gave no answer.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub connection_error: Option<ConnectionError>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ConnectionError {
    /// `timeout`, `connect_error` or `request_error`, as the forwarder counts them.
    #[schema(example = "connect_error")]
    pub reason: &'static str,
    /// For people: the innermost cause ("Connection refused (os error 111)").
    pub message: String,
}

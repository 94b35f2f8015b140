//! What the console's overview and channel pages read from NATS: `GET /api/v1/overview` (the
//! streams, the normalizer's consumer, each destination's consumer and breaker state, dead
//! letters by reason) and `GET /api/v1/channels/{id}/activity` (when the channel's last webhook
//! was stored, by a get of the last message on `hookline.raw.<source>.<channel>`).
//!
//! Both take the caller's `Scope`. A tenant token sees only its own destinations, dead letters
//! and channels (another tenant's channel is absent: 404), and nothing that counts every
//! tenant's traffic (the streams, the normalizer). The answers hold counters, never rates: the console computes rates
//! from successive samples, so the API keeps no history.

use async_nats::jetstream::{self, consumer, stream};
use axum::extract::{Path, State};
use axum::Json;
use futures_util::future::join_all;
use serde::Serialize;
use serde_json::Value;
use std::collections::BTreeMap;
use std::time::Duration;
use time::OffsetDateTime;
use utoipa::ToSchema;

use hookline_operations::dlq::{self, DlqFilter};
use hookline_operations::selection::Selection;
use hookline_shared::destination::DEFAULT_DESTINATION_ID;
use hookline_shared::names;

use crate::auth::Scope;
use crate::error::{ApiError, ErrorBody};
use crate::server::SharedState;
use crate::{db, destinations};

/// How long the NATS part of one overview may take in all.
const NATS_BUDGET: Duration = Duration::from_secs(3);
/// How many destinations an overview shows.
const MAX_DESTINATIONS: i64 = 500;
/// How many dead letters an overview counts by reason (the oldest first).
pub const DEAD_LETTERS_COUNTED: u64 = 5000;

/// Who is asking, as the console shows it.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ScopeView {
    /// `None`: an admin, who sees every tenant.
    pub tenant: Option<String>,
    pub read_only: bool,
}

/// One stream's counters.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct StreamView {
    pub name: String,
    pub messages: u64,
    pub bytes: u64,
    pub first_seq: u64,
    pub last_seq: u64,
    #[serde(with = "time::serde::rfc3339::option")]
    pub last_at: Option<OffsetDateTime>,
}

/// One durable consumer's counters.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ConsumerView {
    pub stream: String,
    pub consumer: String,
    /// Messages of its filter not delivered yet: the lag.
    pub num_pending: u64,
    /// Delivered, not acknowledged yet.
    pub num_ack_pending: u64,
    pub num_redelivered: u64,
    /// Deliveries so far (redeliveries included): its rate is the delivery rate.
    pub delivered_consumer_seq: u64,
    pub delivered_stream_seq: u64,
    /// Every message up to this stream sequence is acknowledged.
    pub ack_floor_stream_seq: u64,
    pub ack_floor_consumer_seq: u64,
}

/// One destination in the overview.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct DestinationOverview {
    pub id: String,
    pub tenant_id: Option<String>,
    pub name: Option<String>,
    pub paused: bool,
    /// `active`, `paused` or `tripped`.
    pub state: &'static str,
    /// The breaker's entry in `hookline_destination_state` as the forwarders wrote it; absent
    /// when closed.
    #[schema(value_type = Option<Object>)]
    pub breaker: Option<Value>,
    /// Its consumer on HOOKLINE_EVENTS; absent until a forwarder created it.
    pub consumer: Option<ConsumerView>,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ReasonCount {
    pub stage: String,
    pub reason: String,
    /// The destination a forward-stage letter failed for, when it names one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub destination: Option<String>,
    pub count: u64,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct DeadLetterCounts {
    /// Every dead letter this caller may see (for an admin, the stream's count).
    pub total: u64,
    /// How many were read to count by reason.
    pub counted: u64,
    /// More were there than were counted.
    pub truncated: bool,
    pub by_reason: Vec<ReasonCount>,
}

/// `GET /api/v1/overview`.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Overview {
    pub scope: ScopeView,
    #[serde(with = "time::serde::rfc3339")]
    pub at: OffsetDateTime,
    /// HOOKLINE_RAW, HOOKLINE_EVENTS, HOOKLINE_DLQ (admins only: they count every tenant).
    pub streams: Vec<StreamView>,
    /// The normalizer's consumer (admins only).
    pub stages: Vec<ConsumerView>,
    pub destinations: Vec<DestinationOverview>,
    pub dead_letters: DeadLetterCounts,
}

/// `GET /api/v1/channels/{id}/activity`.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ChannelActivity {
    pub channel_id: String,
    /// When HOOKLINE_RAW stored its last webhook (absent: none kept).
    #[serde(with = "time::serde::rfc3339::option")]
    pub last_webhook_at: Option<OffsetDateTime>,
    /// That webhook's sequence in HOOKLINE_RAW (`GET /api/v1/raw/{seq}`).
    pub last_raw_seq: Option<u64>,
}

fn stream_view(info: &stream::Info) -> StreamView {
    StreamView {
        name: info.config.name.clone(),
        messages: info.state.messages,
        bytes: info.state.bytes,
        first_seq: info.state.first_sequence,
        last_seq: info.state.last_sequence,
        last_at: (info.state.last_sequence > 0).then_some(info.state.last_timestamp),
    }
}

fn consumer_view(info: &consumer::Info) -> ConsumerView {
    ConsumerView {
        stream: info.stream_name.clone(),
        consumer: info.name.clone(),
        num_pending: info.num_pending,
        num_ack_pending: info.num_ack_pending as u64,
        num_redelivered: info.num_redelivered as u64,
        delivered_consumer_seq: info.delivered.consumer_sequence,
        delivered_stream_seq: info.delivered.stream_sequence,
        ack_floor_stream_seq: info.ack_floor.stream_sequence,
        ack_floor_consumer_seq: info.ack_floor.consumer_sequence,
    }
}

/// The consumer a forwarder delivers a destination with (`hookline_forwarder::worker::consumer_name`).
fn destination_consumer(id: &str) -> String {
    if id == DEFAULT_DESTINATION_ID {
        names::FORWARDER_CONSUMER.to_string()
    } else {
        hookline_shared::destination::consumer_name(id)
    }
}

async fn stream(js: &jetstream::Context, name: &str) -> Option<stream::Stream> {
    js.get_stream(name).await.ok()
}

async fn consumer_info(stream: Option<&stream::Stream>, name: &str) -> Option<ConsumerView> {
    stream?.consumer_info(name).await.ok().map(|i| consumer_view(&i))
}

/// The breaker entries of `ids` (absent: closed).
async fn breakers(js: &jetstream::Context, ids: &[String]) -> BTreeMap<String, Value> {
    let Ok(store) = js.get_key_value(names::DESTINATION_STATE_BUCKET).await else {
        return BTreeMap::new();
    };
    let gets = ids.iter().map(|id| {
        let store = store.clone();
        async move { (id.clone(), store.get(id).await) }
    });
    join_all(gets)
        .await
        .into_iter()
        .filter_map(|(id, entry)| match entry {
            Ok(Some(bytes)) => serde_json::from_slice::<Value>(&bytes).ok().map(|v| (id, v)),
            _ => None,
        })
        .collect()
}

/// Dead letters of `tenant` (every tenant: `None`) counted by stage, reason and destination, the oldest
/// [`DEAD_LETTERS_COUNTED`] of them.
async fn dead_letters(js: &jetstream::Context, tenant: Option<&str>, stream_total: Option<u64>) -> Result<DeadLetterCounts, ApiError> {
    let filter = DlqFilter {
        selection: Selection { tenant: tenant.map(str::to_string), ..Default::default() },
        limit: Some(DEAD_LETTERS_COUNTED + 1),
        ..Default::default()
    };
    let letters = match dlq::list(js, &filter).await {
        Ok(letters) => letters,
        // No DLQ stream yet: nothing was ever dead-lettered.
        Err(hookline_operations::OpsError::Stream { .. }) => Vec::new(),
        Err(e) => return Err(ApiError::internal(format!("dead letters: {e}"))),
    };
    let truncated = letters.len() as u64 > DEAD_LETTERS_COUNTED;
    let mut counts: BTreeMap<(String, String, Option<String>), u64> = BTreeMap::new();
    for letter in letters.iter().take(DEAD_LETTERS_COUNTED as usize) {
        // A tenant token sees only letters that name its tenant (the subject alone may not).
        if tenant.is_some() && letter.tenant.as_deref() != tenant {
            continue;
        }
        *counts.entry((letter.stage.clone(), letter.reason.clone(), letter.destination.clone())).or_default() += 1;
    }
    let counted: u64 = counts.values().sum();
    let total = match (tenant, stream_total) {
        (None, Some(total)) => total,
        _ => counted,
    };
    let mut by_reason: Vec<ReasonCount> =
        counts.into_iter().map(|((stage, reason, destination), count)| ReasonCount { stage, reason, destination, count }).collect();
    by_reason.sort_by(|a, b| {
        b.count
            .cmp(&a.count)
            .then_with(|| a.stage.cmp(&b.stage))
            .then_with(|| a.reason.cmp(&b.reason))
            .then_with(|| a.destination.cmp(&b.destination))
    });
    Ok(DeadLetterCounts { total, counted, truncated, by_reason })
}

/// The overview as `scope` may see it.
pub async fn overview(state: &SharedState, scope: &Scope) -> Result<Overview, ApiError> {
    let tenant = scope.tenant_filter().map(str::to_string);
    let view = ScopeView { tenant: tenant.clone(), read_only: scope.principal().read_only };
    let rows =
        destinations::db::list(&state.pool, scope, &destinations::db::ListFilter { tenant_id: None, after: None, limit: MAX_DESTINATIONS })
            .await?;
    let js = &state.jetstream;
    let nats = async {
        let (raw, events, dlq_stream) =
            tokio::join!(stream(js, names::RAW_STREAM), stream(js, names::EVENTS_STREAM), stream(js, names::DLQ_STREAM));
        let mut destination_ids: Vec<(String, Option<String>, Option<String>, bool)> =
            rows.iter().map(|r| (r.id.clone(), r.tenant_id.clone(), r.name.clone(), r.paused)).collect();
        let default = consumer_info(events.as_ref(), names::FORWARDER_CONSUMER).await;
        // `default` (forwarder.target_url) serves every tenant: shown to admins when it runs.
        if tenant.is_none() && default.is_some() && !destination_ids.iter().any(|d| d.0 == DEFAULT_DESTINATION_ID) {
            destination_ids.insert(0, (DEFAULT_DESTINATION_ID.to_string(), None, Some("forwarder.target_url".to_string()), false));
        }
        let ids: Vec<String> = destination_ids.iter().map(|d| d.0.clone()).collect();
        let consumer_names: Vec<String> = ids.iter().map(|id| destination_consumer(id)).collect();
        let consumers = join_all(consumer_names.iter().map(|name| consumer_info(events.as_ref(), name)));
        let (consumers, breakers) = tokio::join!(consumers, breakers(js, &ids));
        let destinations = destination_ids
            .into_iter()
            .zip(consumers)
            .map(|((id, tenant_id, name, paused), consumer)| {
                let breaker = breakers.get(&id).cloned();
                let tripped = breaker.as_ref().and_then(|b| b.get("state")).and_then(Value::as_str) == Some("tripped");
                let state = if paused {
                    "paused"
                } else if tripped {
                    "tripped"
                } else {
                    "active"
                };
                DestinationOverview { id, tenant_id, name, paused, state, breaker, consumer }
            })
            .collect::<Vec<_>>();
        let (streams, stages) = if tenant.is_none() {
            let streams = [&raw, &events, &dlq_stream].into_iter().flatten().map(|s| stream_view(s.cached_info())).collect();
            let stages = consumer_info(raw.as_ref(), names::NORMALIZER_CONSUMER).await.into_iter().collect();
            (streams, stages)
        } else {
            (Vec::new(), Vec::new())
        };
        let dlq_total = dlq_stream.as_ref().map(|s| s.cached_info().state.messages);
        let dead_letters = dead_letters(js, tenant.as_deref(), dlq_total).await?;
        Ok::<_, ApiError>((streams, stages, destinations, dead_letters))
    };
    let (streams, stages, destinations, dead_letters) =
        tokio::time::timeout(NATS_BUDGET, nats).await.map_err(|_| ApiError::internal("the overview: NATS did not answer in time"))??;
    Ok(Overview { scope: view, at: OffsetDateTime::now_utc(), streams, stages, destinations, dead_letters })
}

/// Counters of the pipeline for the console: streams, the normalizer, each destination's
/// consumer and breaker, dead letters by reason. A tenant sees only its own.
#[utoipa::path(
    get,
    path = "/api/v1/overview",
    tag = "operations",
    responses(
        (status = 200, description = "Counters; rates are the client's to compute from successive answers", body = Overview),
        (status = 401, description = "No valid bearer token", body = ErrorBody),
    )
)]
pub async fn overview_route(State(state): State<SharedState>, scope: Scope) -> Result<Json<Overview>, ApiError> {
    Ok(Json(overview(&state, &scope).await?))
}

/// When the channel's last webhook was stored (another tenant's channel is absent).
pub async fn channel_activity(state: &SharedState, scope: &Scope, id: &str) -> Result<ChannelActivity, ApiError> {
    if !names::is_valid_id(id) {
        return Err(ApiError::channel_not_found(id.get(..64).unwrap_or("")));
    }
    let mut conn = state.pool.acquire().await?;
    let row = db::get(&mut conn, scope, id).await?.ok_or_else(|| ApiError::channel_not_found(id))?;
    drop(conn);
    let subject = names::raw_subject(row.source()?, id);
    let last = async {
        let stream = state.jetstream.get_stream(names::RAW_STREAM).await.ok()?;
        stream.get_last_raw_message_by_subject(&subject).await.ok()
    };
    let last =
        tokio::time::timeout(NATS_BUDGET, last).await.map_err(|_| ApiError::internal("channel activity: NATS did not answer in time"))?;
    Ok(ChannelActivity {
        channel_id: id.to_string(),
        last_webhook_at: last.as_ref().map(|m| m.time),
        last_raw_seq: last.map(|m| m.sequence),
    })
}

#[utoipa::path(
    get,
    path = "/api/v1/channels/{id}/activity",
    tag = "channels",
    params(("id" = String, Path, description = "The channel id")),
    responses(
        (status = 200, description = "When HOOKLINE_RAW stored the channel's last webhook", body = ChannelActivity),
        (status = 401, body = ErrorBody),
        (status = 404, body = ErrorBody),
    )
)]
pub async fn channel_activity_route(
    State(state): State<SharedState>,
    scope: Scope,
    Path(id): Path<String>,
) -> Result<Json<ChannelActivity>, ApiError> {
    Ok(Json(channel_activity(&state, &scope, &id).await?))
}

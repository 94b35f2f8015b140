//! What the routes do to destinations: validate (through `DestinationSpec`, which names the
//! field at fault), seal (`DestinationRecord::seal`: every secret under the current key, bound
//! to the destination id and its place), write the row and its outbox entry in one transaction,
//! then wake the mirror.
//!
//! Every write re-seals the whole row under the current key, as channel writes do: the row is
//! opened, changed as a `DestinationSpec`, and sealed again. The previous signing secret, while
//! it still signs, is carried over.

use serde_json::{Map, Value};
use sqlx::PgPool;
use time::OffsetDateTime;

use hookline_shared::crypto::Keyring;
use hookline_shared::destination::{Destination, DestinationDecl, DestinationError, DestinationRecord, DestinationSpec, FieldError};
use hookline_shared::Secret;

use super::db::{self, DestinationRow};
use crate::audit::{self, Entry};
use crate::auth::{Scope, Writer};
use crate::error::ApiError;
use crate::server::AppState;

/// Default and longest time a rotated-out signing secret keeps signing.
pub const DEFAULT_PREVIOUS_VALID_FOR_S: u64 = 86_400;
pub const MAX_PREVIOUS_VALID_FOR_S: u64 = 30 * 86_400;

/// A refusal of `DestinationSpec` as the API's 422, naming the field.
pub fn field_error(e: FieldError) -> ApiError {
    if e.field.is_empty() {
        ApiError::invalid_body(e.message)
    } else {
        ApiError::invalid(&e.field, e.message)
    }
}

fn destination_error(e: DestinationError) -> ApiError {
    match e {
        DestinationError::Invalid(e) => field_error(e),
        other => ApiError::internal(other.to_string()),
    }
}

/// The spec a create body gives, checked: `body` is the JSON object `parse_body` accepted.
pub fn spec_from_body(body: &Value) -> Result<DestinationSpec, ApiError> {
    let spec = DestinationSpec::from_json(body).map_err(field_error)?;
    spec.validate().map_err(field_error)?;
    check_id(&spec)?;
    Ok(spec)
}

/// `default` is the destination `forwarder.target_url` declares; the API does not manage it.
fn check_id(spec: &DestinationSpec) -> Result<(), ApiError> {
    if spec.id.as_deref() == Some(hookline_shared::destination::DEFAULT_DESTINATION_ID) {
        return Err(ApiError::invalid("id", "\"default\" is the destination forwarder.target_url declares; choose another id"));
    }
    Ok(())
}

/// Seals `spec` at `now` into a record created at `created_at`. `previous` is the rotated-out
/// signing secret and until when it signs; it is kept only while that is after `now`.
fn seal(
    keyring: &Keyring,
    spec: &DestinationSpec,
    previous: Option<(&Secret, OffsetDateTime)>,
    created_at: OffsetDateTime,
    now: OffsetDateTime,
) -> Result<DestinationRecord, ApiError> {
    spec.validate().map_err(field_error)?;
    let mut record = match previous.filter(|(_, until)| *until > now) {
        Some((old, until)) => {
            // Sealed through the public API: the old secret as the current one, then rotated to
            // the new one with the overlap that remains (so `previous_valid_until` = `until`).
            let mut first = spec.clone();
            first.signing_secret = old.clone();
            match DestinationRecord::seal(&first, keyring, now) {
                Ok(mut record) => {
                    record.rotate_signing_secret(&spec.signing_secret, keyring, now, until - now).map_err(field_error)?;
                    record
                }
                Err(e) => {
                    tracing::warn!(destination_id = ?spec.id, error = %e, "the previous signing secret no longer seals; dropped");
                    DestinationRecord::seal(spec, keyring, now).map_err(destination_error)?
                }
            }
        }
        None => DestinationRecord::seal(spec, keyring, now).map_err(destination_error)?,
    };
    record.created_at = created_at;
    record.updated_at = now;
    Ok(record)
}

/// The row's destination, secrets opened.
fn open(keyring: &Keyring, row: &DestinationRow) -> Result<Destination, ApiError> {
    row.record()?.open(keyring).map_err(|e| ApiError::internal(e.to_string()))
}

/// The spec that would write `d` again.
fn spec_of(d: &Destination) -> Result<DestinationSpec, ApiError> {
    let signing_secret = d.signing_secret.clone().ok_or_else(|| ApiError::internal(format!("destination {}: no signing secret", d.id)))?;
    Ok(DestinationSpec {
        id: Some(d.id.clone()),
        tenant_id: d.tenant_id.clone(),
        name: d.name.clone(),
        url: d.url.clone(),
        signing_secret,
        headers: d.headers.clone(),
        filter: d.filter.clone(),
        ordering: d.ordering,
        max_in_flight: d.max_in_flight,
        rate_limit_per_s: d.rate_limit_per_s,
        timeout_ms: d.timeout_ms,
        retry_schedule_s: d.retry_schedule_s.clone(),
        max_age_s: d.max_age_s,
        paused: d.paused,
    })
}

fn previous(d: &Destination) -> Option<(&Secret, OffsetDateTime)> {
    d.previous_signing_secret.as_ref().map(|(s, until)| (s, *until))
}

/// Whether a write by `writer` of `url` restricts the destination's egress, after the
/// write-time check (422 naming `url`). A tenant token's write is checked and restricted (unless
/// `setup_api.allow_private_destinations`); an admin's is not checked, and keeps the restriction
/// it had unless it changes the URL (`kept`: the current flag when the URL is unchanged).
async fn egress_for(state: &AppState, writer: &Writer, url: &str, kept: bool) -> Result<bool, ApiError> {
    if state.allow_private_destinations {
        return Ok(false);
    }
    if writer.is_admin() {
        return Ok(kept);
    }
    hookline_shared::egress::check_url_resolved(url).await.map_err(|e| ApiError::invalid("url", e.to_string()))?;
    Ok(true)
}

async fn record_change(
    conn: &mut sqlx::PgConnection,
    writer: &Writer,
    action: &str,
    row: &DestinationRow,
    fields: Value,
) -> Result<(), ApiError> {
    let entry = Entry { action, resource_type: "destination", resource_id: &row.id, tenant_id: row.tenant_id.as_deref(), fields };
    audit::record(conn, writer, entry).await.map_err(ApiError::from)
}

/// Creates the destination. A tenant token's destination is of its tenant (filled in when the
/// body gives none; 403 naming `tenant_id` for another, or for every tenant).
pub async fn create(state: &AppState, writer: &Writer, mut spec: DestinationSpec, fields: Value) -> Result<DestinationRow, ApiError> {
    if spec.tenant_id.is_none() {
        spec.tenant_id = writer.tenant_filter().map(str::to_string);
    }
    writer.require_tenant("tenant_id", spec.tenant_id.as_deref())?;
    let restrict = egress_for(state, writer, &spec.url, false).await?;
    let now = crate::db::now();
    let mut record = seal(&state.keyring, &spec, None, now, now)?;
    record.restrict_egress = restrict;
    let row = DestinationRow::from_record(&record, state.keyring.current_id())?;
    let mut tx = state.pool.begin().await?;
    db::insert(&mut tx, &row).await?;
    db::enqueue(&mut tx, &row.id).await?;
    record_change(&mut tx, writer, "create", &row, fields).await?;
    tx.commit().await?;
    state.mirror.kick();
    tracing::info!(destination_id = %row.id, tenant_id = ?row.tenant_id, "destination created");
    Ok(row)
}

/// The fields PATCH may change (`id` and `signing_secret` are refused before).
const PATCHABLE: &[&str] = &[
    "tenant_id",
    "name",
    "url",
    "headers",
    "filter",
    "ordering",
    "max_in_flight",
    "rate_limit_per_s",
    "timeout_ms",
    "retry_schedule_s",
    "max_age_s",
    "paused",
];

/// Reads a PATCH body with the create parser, so that every refusal names its field as create
/// does: the fields it lacks are filled with stand-ins that `from_json` accepts (it checks types
/// and the filter; ranges and formats are checked on the merged spec).
fn parse_patch(patch: &Map<String, Value>) -> Result<DestinationSpec, ApiError> {
    let mut probe = patch.clone();
    probe.entry("url").or_insert_with(|| Value::String("https://stand-in.invalid/".to_string()));
    probe.insert("signing_secret".to_string(), Value::String("whsec_stand-in".to_string()));
    DestinationSpec::from_json(&Value::Object(probe)).map_err(field_error)
}

/// Changes the fields present in `patch`: `null` clears one (back to its default).
pub async fn update(state: &AppState, writer: &Writer, id: &str, patch: &Map<String, Value>) -> Result<DestinationRow, ApiError> {
    let given = parse_patch(patch)?;
    let mut tx = state.pool.begin().await?;
    let row = db::get_for_update(&mut tx, writer, id).await?.ok_or_else(|| ApiError::destination_not_found(id))?;
    let current = open(&state.keyring, &row)?;
    let mut spec = spec_of(&current)?;
    for key in PATCHABLE.iter().filter(|k| patch.contains_key(**k)) {
        match *key {
            "tenant_id" => spec.tenant_id = given.tenant_id.clone(),
            "name" => spec.name = given.name.clone(),
            "url" => spec.url = given.url.clone(),
            "headers" => spec.headers = given.headers.clone(),
            "filter" => spec.filter = given.filter.clone(),
            "ordering" => spec.ordering = given.ordering,
            "max_in_flight" => spec.max_in_flight = given.max_in_flight,
            "rate_limit_per_s" => spec.rate_limit_per_s = given.rate_limit_per_s,
            "timeout_ms" => spec.timeout_ms = given.timeout_ms,
            "retry_schedule_s" => spec.retry_schedule_s = given.retry_schedule_s.clone(),
            "max_age_s" => spec.max_age_s = given.max_age_s,
            "paused" => spec.paused = given.paused,
            _ => {}
        }
    }
    writer.require_tenant("tenant_id", spec.tenant_id.as_deref())?;
    let restrict = egress_for(state, writer, &spec.url, row.restrict_egress && spec.url == current.url).await?;
    let mut record = seal(&state.keyring, &spec, previous(&current), row.created_at, crate::db::now())?;
    record.restrict_egress = restrict;
    let new_row = DestinationRow::from_record(&record, state.keyring.current_id())?;
    db::update(&mut tx, &new_row).await?;
    db::enqueue(&mut tx, id).await?;
    record_change(&mut tx, writer, "update", &new_row, audit::fields(&Value::Object(patch.clone()))).await?;
    tx.commit().await?;
    state.mirror.kick();
    tracing::info!(destination_id = %id, "destination updated");
    Ok(new_row)
}

/// Pauses or resumes; answers the row unchanged (and writes nothing) when it already is so.
pub async fn set_paused(state: &AppState, writer: &Writer, id: &str, paused: bool) -> Result<DestinationRow, ApiError> {
    let mut tx = state.pool.begin().await?;
    let row = db::get_for_update(&mut tx, writer, id).await?.ok_or_else(|| ApiError::destination_not_found(id))?;
    if row.paused == paused {
        tx.rollback().await?;
        return Ok(row);
    }
    let current = open(&state.keyring, &row)?;
    let mut spec = spec_of(&current)?;
    spec.paused = paused;
    let mut record = seal(&state.keyring, &spec, previous(&current), row.created_at, crate::db::now())?;
    record.restrict_egress = row.restrict_egress;
    let new_row = DestinationRow::from_record(&record, state.keyring.current_id())?;
    db::update(&mut tx, &new_row).await?;
    db::enqueue(&mut tx, id).await?;
    record_change(&mut tx, writer, if paused { "pause" } else { "resume" }, &new_row, serde_json::json!({"paused": paused})).await?;
    tx.commit().await?;
    state.mirror.kick();
    tracing::info!(destination_id = %id, paused, "destination {}", if paused { "paused" } else { "resumed" });
    Ok(new_row)
}

/// The new signing secret signs from now on; the current one keeps signing too for
/// `valid_for_s` seconds (0: stops at once). A secret rotated out earlier is forgotten.
pub async fn rotate_secret(
    state: &AppState,
    writer: &Writer,
    id: &str,
    new_secret: Secret,
    valid_for_s: Option<u64>,
) -> Result<DestinationRow, ApiError> {
    let valid_for = valid_for_s.unwrap_or(DEFAULT_PREVIOUS_VALID_FOR_S);
    if valid_for > MAX_PREVIOUS_VALID_FOR_S {
        return Err(ApiError::invalid("previous_valid_for_s", format!("at most {MAX_PREVIOUS_VALID_FOR_S} (30 days)")));
    }
    let mut tx = state.pool.begin().await?;
    let row = db::get_for_update(&mut tx, writer, id).await?.ok_or_else(|| ApiError::destination_not_found(id))?;
    let current = open(&state.keyring, &row)?;
    let mut spec = spec_of(&current)?;
    let old = std::mem::replace(&mut spec.signing_secret, new_secret);
    let now = crate::db::now();
    let until = now + time::Duration::seconds(i64::try_from(valid_for).unwrap_or(i64::MAX));
    let previous = (valid_for > 0).then_some((&old, until));
    let mut record = seal(&state.keyring, &spec, previous, row.created_at, now)?;
    record.restrict_egress = row.restrict_egress;
    let new_row = DestinationRow::from_record(&record, state.keyring.current_id())?;
    db::update(&mut tx, &new_row).await?;
    db::enqueue(&mut tx, id).await?;
    let fields = serde_json::json!({"signing_secret": "[redacted]", "previous_valid_for_s": valid_for});
    record_change(&mut tx, writer, "rotate_secret", &new_row, fields).await?;
    tx.commit().await?;
    state.mirror.kick();
    tracing::info!(destination_id = %id, previous_valid_for_s = valid_for, "destination signing secret rotated");
    Ok(new_row)
}

pub async fn delete(state: &AppState, writer: &Writer, id: &str) -> Result<(), ApiError> {
    let mut tx = state.pool.begin().await?;
    let Some(row) = db::get_for_update(&mut tx, writer, id).await? else {
        return Err(ApiError::destination_not_found(id));
    };
    if !db::delete(&mut tx, writer, id).await? {
        return Err(ApiError::destination_not_found(id));
    }
    db::enqueue(&mut tx, id).await?;
    record_change(&mut tx, writer, "delete", &row, serde_json::json!({})).await?;
    tx.commit().await?;
    state.mirror.kick();
    tracing::info!(destination_id = %id, "destination deleted");
    Ok(())
}

/// The destination with its secrets opened, for `/test`.
pub async fn opened(state: &AppState, scope: &Scope, id: &str) -> Result<Destination, ApiError> {
    let mut conn = state.pool.acquire().await?;
    let row = db::get(&mut conn, scope, id).await?.ok_or_else(|| ApiError::destination_not_found(id))?;
    open(&state.keyring, &row)
}

/// Destinations declared in the configuration (`[[destinations]]`) are written to Postgres when
/// their id is not there yet, so that the reconciliation keeps them in the bucket (an API change
/// made since wins). Returns how many were imported.
pub async fn import_declared(pool: &PgPool, keyring: &Keyring, declared: &[DestinationDecl]) -> Result<usize, crate::SetupApiError> {
    let mut imported = 0;
    for (i, decl) in declared.iter().enumerate() {
        let spec = decl.to_spec();
        let now = crate::db::now();
        let invalid = |message: String| hookline_shared::config::ConfigError::new(format!("destinations[{i}]"), message);
        let record = seal(keyring, &spec, None, now, now).map_err(|e| match e {
            ApiError::Client { field, message, .. } => {
                hookline_shared::config::ConfigError::new(format!("destinations[{i}].{}", field.unwrap_or_default()), message).into()
            }
            ApiError::Internal(m) => crate::SetupApiError::Crypto(m),
        })?;
        let row = DestinationRow::from_record(&record, keyring.current_id()).map_err(|_| invalid("cannot be stored".into()))?;
        let mut tx = pool.begin().await?;
        if db::insert_if_absent(&mut tx, &row).await? {
            db::enqueue(&mut tx, &row.id).await?;
            tx.commit().await?;
            imported += 1;
            tracing::info!(destination_id = %row.id, "declared destination imported into Postgres");
        } else {
            tx.rollback().await?;
        }
    }
    Ok(imported)
}

/// Re-seals, under `keyring`'s current key, a row an older key sealed (`hookline secrets
/// rotate-key`); the row to write back.
pub fn reseal(keyring: &Keyring, row: &DestinationRow) -> Result<DestinationRow, String> {
    let current = open(keyring, row).map_err(|e| match e {
        ApiError::Internal(m) => m,
        ApiError::Client { message, .. } => message,
    })?;
    let spec = spec_of(&current).map_err(|_| format!("destination {}: no signing secret", row.id))?;
    // Keep updated_at: re-sealing changes no setting.
    let mut record = seal(keyring, &spec, previous(&current), row.created_at, row.updated_at)
        .map_err(|_| format!("destination {}: cannot be sealed again", row.id))?;
    record.updated_at = row.updated_at;
    record.restrict_egress = row.restrict_egress;
    DestinationRow::from_record(&record, keyring.current_id()).map_err(|_| format!("destination {}: cannot be stored", row.id))
}

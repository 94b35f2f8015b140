//! Postgres side of destinations: `DestinationRow` (one row of `destinations`, the bucket's
//! `DestinationRecord` column by column, secrets sealed), the queries on it and on
//! `destination_outbox`, and [`Destinations`], what the mirror needs to relay them.

use serde_json::Value;
use sqlx::types::Json;
use sqlx::{PgConnection, PgPool, Postgres, Transaction};
use std::collections::BTreeMap;
use time::OffsetDateTime;

use hookline_shared::crypto::Sealed;
use hookline_shared::destination::{DestinationRecord, Ordering};
use hookline_shared::filter::Filter;

use crate::auth::Scope;
use crate::error::ApiError;
use crate::metrics::{ApiMetrics, MirrorLabels};
use crate::mirror::{AllRows, Current, Mirrored};

/// One row of `destinations`. Every secret is sealed, bound to the destination id and to its
/// place (signing secret, or one header).
#[derive(Debug, Clone)]
pub struct DestinationRow {
    pub id: String,
    pub tenant_id: Option<String>,
    pub name: Option<String>,
    pub url: String,
    pub signing_secret: Json<Sealed>,
    pub previous_signing_secret: Option<Json<Sealed>>,
    pub previous_valid_until: Option<OffsetDateTime>,
    /// Header name (as given) → sealed value.
    pub headers: Json<BTreeMap<String, Sealed>>,
    /// The names of `headers`, readable without the sealed column.
    pub header_names: Vec<String>,
    /// The filter as written; parsed again (`Filter::parse`) when the row becomes a record.
    pub filter: Json<Value>,
    pub ordering: String,
    pub max_in_flight: Option<i32>,
    pub rate_limit_per_s: Option<f64>,
    pub timeout_ms: Option<i64>,
    pub retry_schedule_s: Option<Vec<i64>>,
    pub max_age_s: Option<i64>,
    pub paused: bool,
    pub restrict_egress: bool,
    pub key_id: String,
    pub created_at: OffsetDateTime,
    pub updated_at: OffsetDateTime,
}

impl<'r> sqlx::FromRow<'r, sqlx::postgres::PgRow> for DestinationRow {
    fn from_row(row: &'r sqlx::postgres::PgRow) -> Result<Self, sqlx::Error> {
        use sqlx::Row;
        Ok(DestinationRow {
            id: row.try_get("id")?,
            tenant_id: row.try_get("tenant_id")?,
            name: row.try_get("name")?,
            url: row.try_get("url")?,
            signing_secret: row.try_get("signing_secret")?,
            previous_signing_secret: row.try_get("previous_signing_secret")?,
            previous_valid_until: row.try_get("previous_valid_until")?,
            headers: row.try_get("headers")?,
            header_names: row.try_get("header_names")?,
            filter: row.try_get("filter")?,
            ordering: row.try_get("ordering")?,
            max_in_flight: row.try_get("max_in_flight")?,
            rate_limit_per_s: row.try_get("rate_limit_per_s")?,
            timeout_ms: row.try_get("timeout_ms")?,
            retry_schedule_s: row.try_get("retry_schedule_s")?,
            max_age_s: row.try_get("max_age_s")?,
            paused: row.try_get("paused")?,
            restrict_egress: row.try_get("restrict_egress")?,
            key_id: row.try_get("key_id")?,
            created_at: row.try_get("created_at")?,
            updated_at: row.try_get("updated_at")?,
        })
    }
}

fn convert<T>(r: Result<T, String>) -> Result<T, ApiError> {
    r.map_err(ApiError::internal)
}

fn signed<T: TryFrom<U>, U: Copy + std::fmt::Display>(id: &str, what: &str, v: U) -> Result<T, String> {
    T::try_from(v).map_err(|_| format!("destination {id}: {what} {v} is out of range"))
}

impl DestinationRow {
    /// The row of a sealed record; `key_id` is the key that sealed it (the keyring's current one).
    pub fn from_record(record: &DestinationRecord, key_id: &str) -> Result<Self, ApiError> {
        let id = record.id.as_str();
        Ok(DestinationRow {
            id: record.id.clone(),
            tenant_id: record.tenant_id.clone(),
            name: record.name.clone(),
            url: record.url.clone(),
            signing_secret: Json(record.signing_secret.clone()),
            previous_signing_secret: record.previous_signing_secret.clone().map(Json),
            previous_valid_until: record.previous_valid_until,
            headers: Json(record.headers.clone()),
            header_names: record.headers.keys().cloned().collect(),
            filter: Json(match record.filter.as_json() {
                // The empty filter may have been parsed from `null`; the column holds an object.
                Value::Null => Value::Object(Default::default()),
                v => v.clone(),
            }),
            ordering: record.ordering.as_str().to_string(),
            max_in_flight: record.max_in_flight.map(|n| convert(signed(id, "max_in_flight", n))).transpose()?,
            rate_limit_per_s: record.rate_limit_per_s,
            timeout_ms: record.timeout_ms.map(|n| convert(signed(id, "timeout_ms", n))).transpose()?,
            retry_schedule_s: record
                .retry_schedule_s
                .as_ref()
                .map(|s| s.iter().map(|n| convert(signed(id, "retry_schedule_s", *n))).collect::<Result<Vec<i64>, _>>())
                .transpose()?,
            max_age_s: record.max_age_s.map(|n| convert(signed(id, "max_age_s", n))).transpose()?,
            paused: record.paused,
            restrict_egress: record.restrict_egress,
            key_id: key_id.to_string(),
            created_at: record.created_at,
            updated_at: record.updated_at,
        })
    }

    /// What the KV bucket holds for this destination: what the forwarders read. An error (a
    /// message without secrets) when the row no longer parses (a filter the current grammar
    /// refuses, say).
    pub fn to_record(&self) -> Result<DestinationRecord, String> {
        let id = self.id.as_str();
        let filter = Filter::parse(&self.filter.0).map_err(|e| format!("destination {id}: stored filter: {e}"))?;
        let ordering: Ordering = serde_json::from_value(Value::String(self.ordering.clone()))
            .map_err(|_| format!("destination {id}: unknown ordering {:?}", self.ordering))?;
        Ok(DestinationRecord {
            id: self.id.clone(),
            tenant_id: self.tenant_id.clone(),
            name: self.name.clone(),
            url: self.url.clone(),
            signing_secret: self.signing_secret.0.clone(),
            previous_signing_secret: self.previous_signing_secret.as_ref().map(|s| s.0.clone()),
            previous_valid_until: self.previous_valid_until,
            headers: self.headers.0.clone(),
            filter,
            ordering,
            max_in_flight: self.max_in_flight.map(|n| signed(id, "max_in_flight", n)).transpose()?,
            rate_limit_per_s: self.rate_limit_per_s,
            timeout_ms: self.timeout_ms.map(|n| signed(id, "timeout_ms", n)).transpose()?,
            retry_schedule_s: self
                .retry_schedule_s
                .as_ref()
                .map(|s| s.iter().map(|n| signed(id, "retry_schedule_s", *n)).collect::<Result<Vec<u64>, _>>())
                .transpose()?,
            max_age_s: self.max_age_s.map(|n| signed(id, "max_age_s", n)).transpose()?,
            paused: self.paused,
            restrict_egress: self.restrict_egress,
            created_at: self.created_at,
            updated_at: self.updated_at,
        })
    }

    /// `to_record` for the API: an internal error.
    pub fn record(&self) -> Result<DestinationRecord, ApiError> {
        self.to_record().map_err(ApiError::internal)
    }
}

/// The columns of `DestinationRow`, as a literal so that every query stays a `&'static str`.
macro_rules! columns {
    () => {
        "id, tenant_id, name, url, signing_secret, previous_signing_secret, previous_valid_until, \
         headers, header_names, filter, ordering, max_in_flight, rate_limit_per_s, timeout_ms, \
         retry_schedule_s, max_age_s, paused, key_id, created_at, updated_at, restrict_egress"
    };
}

macro_rules! insert_sql {
    () => {
        concat!(
            "INSERT INTO destinations (",
            columns!(),
            ") VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, $19, $20, $21)"
        )
    };
}

fn bind_all<'q>(
    query: sqlx::query::Query<'q, Postgres, sqlx::postgres::PgArguments>,
    row: &'q DestinationRow,
) -> sqlx::query::Query<'q, Postgres, sqlx::postgres::PgArguments> {
    query
        .bind(&row.id)
        .bind(&row.tenant_id)
        .bind(&row.name)
        .bind(&row.url)
        .bind(&row.signing_secret)
        .bind(&row.previous_signing_secret)
        .bind(row.previous_valid_until)
        .bind(&row.headers)
        .bind(&row.header_names)
        .bind(&row.filter)
        .bind(&row.ordering)
        .bind(row.max_in_flight)
        .bind(row.rate_limit_per_s)
        .bind(row.timeout_ms)
        .bind(&row.retry_schedule_s)
        .bind(row.max_age_s)
        .bind(row.paused)
        .bind(&row.key_id)
        .bind(row.created_at)
        .bind(row.updated_at)
        .bind(row.restrict_egress)
}

pub async fn insert(conn: &mut PgConnection, row: &DestinationRow) -> Result<(), sqlx::Error> {
    bind_all(sqlx::query(insert_sql!()), row).execute(conn).await.map(|_| ())
}

/// Inserts unless a destination with this id exists; whether it inserted.
pub async fn insert_if_absent(conn: &mut PgConnection, row: &DestinationRow) -> Result<bool, sqlx::Error> {
    let done = bind_all(sqlx::query(concat!(insert_sql!(), " ON CONFLICT (id) DO NOTHING")), row).execute(conn).await?;
    Ok(done.rows_affected() == 1)
}

/// Writes every column but `id` and `created_at`.
pub async fn update(conn: &mut PgConnection, row: &DestinationRow) -> Result<(), sqlx::Error> {
    sqlx::query(
        "UPDATE destinations SET tenant_id = $2, name = $3, url = $4, signing_secret = $5, \
         previous_signing_secret = $6, previous_valid_until = $7, headers = $8, header_names = $9, \
         filter = $10, ordering = $11, max_in_flight = $12, rate_limit_per_s = $13, timeout_ms = $14, \
         retry_schedule_s = $15, max_age_s = $16, paused = $17, key_id = $18, updated_at = $19, \
         restrict_egress = $20 WHERE id = $1",
    )
    .bind(&row.id)
    .bind(&row.tenant_id)
    .bind(&row.name)
    .bind(&row.url)
    .bind(&row.signing_secret)
    .bind(&row.previous_signing_secret)
    .bind(row.previous_valid_until)
    .bind(&row.headers)
    .bind(&row.header_names)
    .bind(&row.filter)
    .bind(&row.ordering)
    .bind(row.max_in_flight)
    .bind(row.rate_limit_per_s)
    .bind(row.timeout_ms)
    .bind(&row.retry_schedule_s)
    .bind(row.max_age_s)
    .bind(row.paused)
    .bind(&row.key_id)
    .bind(row.updated_at)
    .bind(row.restrict_egress)
    .execute(conn)
    .await
    .map(|_| ())
}

/// The row whatever its tenant: for the mirror only.
pub(crate) async fn get_unscoped(conn: &mut PgConnection, id: &str) -> Result<Option<DestinationRow>, sqlx::Error> {
    sqlx::query_as::<_, DestinationRow>(concat!("SELECT ", columns!(), " FROM destinations WHERE id = $1"))
        .bind(id)
        .fetch_optional(conn)
        .await
}

/// The row if `scope` may see it: a tenant token sees its tenant's destinations only (not
/// those of every tenant).
pub async fn get(conn: &mut PgConnection, scope: &Scope, id: &str) -> Result<Option<DestinationRow>, sqlx::Error> {
    sqlx::query_as::<_, DestinationRow>(concat!(
        "SELECT ",
        columns!(),
        " FROM destinations WHERE id = $1 AND ($2::text IS NULL OR tenant_id = $2)"
    ))
    .bind(id)
    .bind(scope.tenant_filter())
    .fetch_optional(conn)
    .await
}

/// The row if `scope` may see it, locked until the transaction ends.
pub async fn get_for_update(tx: &mut Transaction<'_, Postgres>, scope: &Scope, id: &str) -> Result<Option<DestinationRow>, sqlx::Error> {
    sqlx::query_as::<_, DestinationRow>(concat!(
        "SELECT ",
        columns!(),
        " FROM destinations WHERE id = $1 AND ($2::text IS NULL OR tenant_id = $2) FOR UPDATE"
    ))
    .bind(id)
    .bind(scope.tenant_filter())
    .fetch_optional(&mut **tx)
    .await
}

pub async fn delete(conn: &mut PgConnection, scope: &Scope, id: &str) -> Result<bool, sqlx::Error> {
    let done = sqlx::query("DELETE FROM destinations WHERE id = $1 AND ($2::text IS NULL OR tenant_id = $2)")
        .bind(id)
        .bind(scope.tenant_filter())
        .execute(conn)
        .await?;
    Ok(done.rows_affected() == 1)
}

/// Filters of the list route; `after` is the cursor (the last id of the previous page).
#[derive(Debug, Default)]
pub struct ListFilter {
    pub tenant_id: Option<String>,
    pub after: Option<String>,
    pub limit: i64,
}

/// The rows `scope` may see that match `filter`.
pub async fn list(pool: &PgPool, scope: &Scope, filter: &ListFilter) -> Result<Vec<DestinationRow>, sqlx::Error> {
    sqlx::query_as::<_, DestinationRow>(concat!(
        "SELECT ",
        columns!(),
        " FROM destinations \
         WHERE ($1::text IS NULL OR tenant_id = $1) \
           AND ($4::text IS NULL OR tenant_id = $4) \
           AND ($2::text IS NULL OR id > $2) \
         ORDER BY id LIMIT $3"
    ))
    .bind(&filter.tenant_id)
    .bind(&filter.after)
    .bind(filter.limit)
    .bind(scope.tenant_filter())
    .fetch_all(pool)
    .await
}

/// Every destination, for the reconciliation of the bucket.
pub async fn all(conn: &mut PgConnection) -> Result<Vec<DestinationRow>, sqlx::Error> {
    sqlx::query_as::<_, DestinationRow>(concat!("SELECT ", columns!(), " FROM destinations ORDER BY id")).fetch_all(conn).await
}

/// Rows sealed by another key than `current_kid`, locked, at most `limit`.
pub async fn sealed_by_other_keys(
    tx: &mut Transaction<'_, Postgres>,
    current_kid: &str,
    limit: i64,
) -> Result<Vec<DestinationRow>, sqlx::Error> {
    sqlx::query_as::<_, DestinationRow>(concat!(
        "SELECT ",
        columns!(),
        " FROM destinations WHERE key_id <> $1 ORDER BY id LIMIT $2 FOR UPDATE"
    ))
    .bind(current_kid)
    .bind(limit)
    .fetch_all(&mut **tx)
    .await
}

/// Records that the destination changed, in the transaction of the change; returns the outbox
/// seq.
pub async fn enqueue(conn: &mut PgConnection, destination_id: &str) -> Result<i64, sqlx::Error> {
    sqlx::query_scalar("INSERT INTO destination_outbox (destination_id) VALUES ($1) RETURNING seq")
        .bind(destination_id)
        .fetch_one(conn)
        .await
}

/// Destinations, mirrored to `hookline_destinations`.
pub(crate) struct Destinations;

impl Mirrored for Destinations {
    const WHAT: &'static str = "destination";
    const OUTBOX_BATCH: &'static str = "SELECT seq, destination_id FROM destination_outbox ORDER BY seq LIMIT $1";
    const OUTBOX_DELETE: &'static str = "DELETE FROM destination_outbox WHERE seq = ANY($1)";
    const OUTBOX_LEN: &'static str = "SELECT count(*) FROM destination_outbox";
    type Record = DestinationRecord;

    async fn current(conn: &mut PgConnection, id: &str) -> Result<Option<Current<DestinationRecord>>, sqlx::Error> {
        Ok(self::get_unscoped(conn, id).await?.map(|row| row.to_record()))
    }

    async fn all(conn: &mut PgConnection) -> Result<AllRows<DestinationRecord>, sqlx::Error> {
        Ok(self::all(conn).await?.into_iter().map(|row| (row.id.clone(), row.to_record())).collect())
    }

    fn writes(
        metrics: &ApiMetrics,
    ) -> &prometheus_client::metrics::family::Family<MirrorLabels, prometheus_client::metrics::counter::Counter> {
        &metrics.destination_mirror_writes
    }

    fn pending(metrics: &ApiMetrics) -> &prometheus_client::metrics::gauge::Gauge {
        &metrics.destination_outbox_pending
    }
}

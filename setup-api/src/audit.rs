//! The audit log: every change made through the API (and so through the CLI, which uses it) is
//! written to `audit_log` in the transaction of the change, by the service function that makes
//! it, from the [`Writer`] it must be given: who (token id and name), what (action, resource
//! type and id, its tenant), when, and the fields given. Never a secret's value: only the fields
//! of [`PLAIN_FIELDS`] keep their value, URLs lose their user info and query, every other field
//! is recorded as `"[redacted]"` (or, for an object of them, its keys).
//!
//! `GET /api/v1/audit` reads it, newest first; a tenant token sees only its tenant's entries.

use axum::extract::{RawQuery, State};
use axum::Json;
use serde::Serialize;
use serde_json::{Map, Value};
use sqlx::PgConnection;
use time::OffsetDateTime;
use utoipa::ToSchema;

use crate::auth::{Scope, Writer};
use crate::error::{ApiError, ErrorBody};
use crate::server::SharedState;
use crate::validate;

/// Fields whose values are never secret: recorded as given.
const PLAIN_FIELDS: &[&str] = &[
    "id",
    "tenant_id",
    "source",
    "platform",
    "name",
    "default",
    "ordering",
    "max_in_flight",
    "rate_limit_per_s",
    "timeout_ms",
    "retry_schedule_s",
    "max_age_s",
    "paused",
    "read_only",
    "filter",
    "previous_valid_for_s",
    "stream",
    "dry_run",
    "stage",
    "reason",
    "seqs",
    "limit",
    "destination",
    "selection",
    "rate_per_s",
];
/// Objects whose keys are recorded, not their values (header values, settings).
const KEYS_ONLY: &[&str] = &["headers", "settings"];

/// The fields of a request body as the audit log keeps them.
pub fn fields(body: &Value) -> Value {
    let Value::Object(map) = body else {
        return Value::Object(Map::new());
    };
    let mut out = Map::new();
    for (key, value) in map {
        let kept = if PLAIN_FIELDS.contains(&key.as_str()) {
            value.clone()
        } else if key == "url" {
            value.as_str().map(redact_url).map(Value::String).unwrap_or(Value::Null)
        } else if KEYS_ONLY.contains(&key.as_str()) {
            match value {
                Value::Object(m) => Value::Array(m.keys().map(|k| Value::String(k.clone())).collect()),
                Value::Null => Value::Null,
                _ => Value::String("[redacted]".into()),
            }
        } else {
            Value::String("[redacted]".into())
        };
        out.insert(key.clone(), kept);
    }
    Value::Object(out)
}

/// The fields of raw body bytes (already parsed once by the handler).
pub fn fields_of_bytes(body: &[u8]) -> Value {
    serde_json::from_slice(body).map(|v| fields(&v)).unwrap_or_else(|_| Value::Object(Map::new()))
}

/// A URL without its user info, query and fragment (which may hold credentials).
fn redact_url(raw: &str) -> String {
    match url::Url::parse(raw) {
        Ok(mut u) => {
            let _ = u.set_username("");
            let _ = u.set_password(None);
            u.set_query(None);
            u.set_fragment(None);
            u.to_string()
        }
        Err(_) => "[not a URL]".to_string(),
    }
}

/// One change to record.
pub struct Entry<'a> {
    pub action: &'a str,
    pub resource_type: &'a str,
    pub resource_id: &'a str,
    /// The tenant of the resource (`None`: every tenant, or none).
    pub tenant_id: Option<&'a str>,
    pub fields: Value,
}

/// Writes `entry` on `conn` (the change's transaction), as done by `writer`.
pub async fn record(conn: &mut PgConnection, writer: &Writer, entry: Entry<'_>) -> Result<(), sqlx::Error> {
    let p = writer.principal();
    sqlx::query(
        "INSERT INTO audit_log (token_id, token_name, tenant_id, action, resource_type, resource_id, fields) \
         VALUES ($1, $2, $3, $4, $5, $6, $7)",
    )
    .bind(&p.token_id)
    .bind(&p.token_name)
    .bind(entry.tenant_id)
    .bind(entry.action)
    .bind(entry.resource_type)
    .bind(entry.resource_id)
    .bind(sqlx::types::Json(&entry.fields))
    .execute(conn)
    .await
    .map(|_| ())
}

/// One entry as answered.
#[derive(Debug, Serialize, ToSchema)]
pub struct AuditEntry {
    /// Increasing; `cursor` takes it.
    pub id: i64,
    #[serde(with = "time::serde::rfc3339")]
    pub at: OffsetDateTime,
    pub token_id: String,
    pub token_name: String,
    pub tenant_id: Option<String>,
    /// `create`, `update`, `delete`, `rotate_secret`, `pause`, `resume`, `test`, `setup`,
    /// `replay`, `redrive`, `purge`, `revoke`.
    pub action: String,
    /// `channel`, `destination`, `token`, `dead_letters`, `replay`.
    pub resource_type: String,
    pub resource_id: String,
    /// The fields given; secrets as `"[redacted]"`.
    #[schema(value_type = Object)]
    pub fields: Value,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct AuditPage {
    pub entries: Vec<AuditEntry>,
    /// Pass as `cursor` for the next (older) page; absent on the last.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_cursor: Option<String>,
}

#[derive(Debug, Default)]
struct AuditQuery {
    resource: Option<String>,
    token: Option<String>,
    from: Option<OffsetDateTime>,
    to: Option<OffsetDateTime>,
    limit: i64,
    before: Option<i64>,
}

fn parse_query(query: Option<&str>) -> Result<AuditQuery, ApiError> {
    let mut q = AuditQuery { limit: validate::DEFAULT_PAGE, ..Default::default() };
    let mut seen = Vec::new();
    let time = |field: &str, v: &str| {
        hookline_operations::selection::parse_time(v).map_err(|_| ApiError::invalid(field, "an RFC 3339 time or an age (15m, 2h, 7d)"))
    };
    for (key, value) in form_urlencoded::parse(query.unwrap_or("").as_bytes()) {
        let key = key.into_owned();
        if seen.contains(&key) {
            return Err(ApiError::bad_query(&key, "given more than once"));
        }
        seen.push(key.clone());
        match key.as_str() {
            "resource" => {
                validate::id("resource", &value)?;
                q.resource = Some(value.into_owned());
            }
            "token" => {
                if value.is_empty() || value.len() > 64 || !value.chars().all(|c| c.is_ascii_alphanumeric() || "_-".contains(c)) {
                    return Err(ApiError::invalid("token", "a token id (tok_..., bootstrap-0), not a token's value"));
                }
                q.token = Some(value.into_owned());
            }
            "from" => q.from = Some(time("from", &value)?),
            "to" => q.to = Some(time("to", &value)?),
            "limit" => {
                q.limit = value
                    .parse::<i64>()
                    .ok()
                    .filter(|n| (1..=validate::MAX_PAGE).contains(n))
                    .ok_or_else(|| ApiError::invalid("limit", format!("an integer from 1 to {}", validate::MAX_PAGE)))?;
            }
            "cursor" => {
                q.before = Some(value.parse::<i64>().map_err(|_| ApiError::invalid("cursor", "not a cursor of this API"))?);
            }
            other => {
                let shown: String = other.chars().take(64).collect();
                return Err(ApiError::bad_query(&shown, "unknown parameter; expected resource, token, from, to, limit, cursor"));
            }
        }
    }
    Ok(q)
}

type AuditRow = (i64, OffsetDateTime, String, String, Option<String>, String, String, String, sqlx::types::Json<Value>);

/// Entries, newest first, that `scope` may see.
async fn list(pool: &sqlx::PgPool, scope: &Scope, q: &AuditQuery) -> Result<Vec<AuditEntry>, sqlx::Error> {
    let rows: Vec<AuditRow> = sqlx::query_as(
        "SELECT id, at, token_id, token_name, tenant_id, action, resource_type, resource_id, fields FROM audit_log \
         WHERE ($1::text IS NULL OR tenant_id = $1) \
           AND ($2::text IS NULL OR resource_id = $2) \
           AND ($3::text IS NULL OR token_id = $3) \
           AND ($4::timestamptz IS NULL OR at >= $4) \
           AND ($5::timestamptz IS NULL OR at <= $5) \
           AND ($6::bigint IS NULL OR id < $6) \
         ORDER BY id DESC LIMIT $7",
    )
    .bind(scope.tenant_filter())
    .bind(&q.resource)
    .bind(&q.token)
    .bind(q.from)
    .bind(q.to)
    .bind(q.before)
    .bind(q.limit)
    .fetch_all(pool)
    .await?;
    Ok(rows
        .into_iter()
        .map(|(id, at, token_id, token_name, tenant_id, action, resource_type, resource_id, fields)| AuditEntry {
            id,
            at,
            token_id,
            token_name,
            tenant_id,
            action,
            resource_type,
            resource_id,
            fields: fields.0,
        })
        .collect())
}

/// The audit log, newest first, a page at a time.
#[utoipa::path(
    get,
    path = "/api/v1/audit",
    tag = "audit",
    params(
        ("resource" = Option<String>, Query, description = "Only changes of this resource id (channel, destination, token)"),
        ("token" = Option<String>, Query, description = "Only changes made with this token id"),
        ("from" = Option<String>, Query, description = "RFC 3339 or an age (15m, 2h, 7d)"),
        ("to" = Option<String>, Query, description = "RFC 3339 or an age"),
        ("limit" = Option<i64>, Query, description = "Page size, 1 to 200 (default 50)"),
        ("cursor" = Option<String>, Query, description = "`next_cursor` of the previous page"),
    ),
    responses(
        (status = 200, body = AuditPage),
        (status = 400, description = "An unknown or repeated parameter", body = ErrorBody),
        (status = 401, body = ErrorBody),
        (status = 422, description = "A parameter's value is invalid", body = ErrorBody),
    )
)]
pub async fn list_audit(State(state): State<SharedState>, scope: Scope, RawQuery(query): RawQuery) -> Result<Json<AuditPage>, ApiError> {
    let mut q = parse_query(query.as_deref())?;
    let limit = q.limit;
    q.limit = limit + 1;
    let mut entries = list(&state.pool, &scope, &q).await?;
    let next_cursor = if entries.len() as i64 > limit {
        entries.truncate(limit as usize);
        entries.last().map(|e| e.id.to_string())
    } else {
        None
    };
    Ok(Json(AuditPage { entries, next_cursor }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_never_reach_the_fields() {
        let body = serde_json::json!({
            "tenant_id": "acme", "secret": "s3cr3t-value", "signing_secret": "whsec_abc",
            "headers": {"X-Api-Key": "key-value"}, "url": "https://user:pw@hooks.example.com/in?token=q1#f",
            "verify_token": "vt", "name": "n",
        });
        let f = fields(&body);
        let text = f.to_string();
        for secret in ["s3cr3t-value", "whsec_abc", "key-value", "pw", "q1", "\"vt\""] {
            assert!(!text.contains(secret), "{secret} in {text}");
        }
        assert_eq!(f["tenant_id"], "acme");
        assert_eq!(f["headers"], serde_json::json!(["X-Api-Key"]));
        assert_eq!(f["url"], "https://hooks.example.com/in");
        assert_eq!(f["secret"], "[redacted]");
    }

    #[test]
    fn queries_are_checked() {
        assert_eq!(parse_query(Some("limit=0")).expect_err("limit").status(), 422);
        assert_eq!(parse_query(Some("token=hlk_abc%20")).expect_err("token").status(), 422);
        assert_eq!(parse_query(Some("what=1")).expect_err("unknown").status(), 400);
        let q = parse_query(Some("resource=ch_1&token=tok_1&limit=5&cursor=9&from=1h")).expect("ok");
        assert_eq!((q.resource.as_deref(), q.token.as_deref(), q.limit, q.before), (Some("ch_1"), Some("tok_1"), 5, Some(9)));
    }
}

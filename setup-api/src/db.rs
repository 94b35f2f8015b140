//! Postgres: the pool, the embedded migrations, `ChannelRow` (one row of `channels`, secrets
//! sealed) and the queries on it and on the outbox. Runtime queries only (`query`/`query_as`
//! with binds), so nothing needs a database at build time.

use sqlx::postgres::{PgPool, PgPoolOptions};
use sqlx::types::Json;
use sqlx::{PgConnection, Postgres, Transaction};
use std::time::Duration;
use time::OffsetDateTime;

use hookline_shared::channel::{ChannelRecord, PreviousSecret};
use hookline_shared::crypto::{CryptoError, Keyring, Sealed};
use hookline_shared::{Secret, Source};

use crate::auth::Scope;
use crate::error::ApiError;

pub type Settings = serde_json::Map<String, serde_json::Value>;

/// The migrations in `migrations/`, compiled in: `(version, description, SQL)`, as
/// `sqlx::migrate!` would read them (description: the file name after the version, `_` as
/// spaces; checksum: SHA-384 of the SQL). Listed by hand rather than by that macro, which pulls
/// sqlx's macro crate and a second build of its TLS library into every build (about 45 s of a
/// clean release build here); a test checks this list against the folder.
pub const MIGRATIONS: &[(i64, &str, &str)] = &[
    (20250101000001, "channels", include_str!("../../migrations/20250101000001_channels.sql")),
    (20261201000001, "destinations", include_str!("../../migrations/20261201000001_destinations.sql")),
    (20261202000001, "tokens and audit", include_str!("../../migrations/20261202000001_tokens_and_audit.sql")),
];

/// The migrations, ready to run.
pub static MIGRATOR: std::sync::LazyLock<sqlx::migrate::Migrator> = std::sync::LazyLock::new(|| {
    use sqlx::SqlSafeStr;
    sqlx::migrate::Migrator::with_migrations(
        MIGRATIONS
            .iter()
            .map(|(version, description, sql)| {
                sqlx::migrate::Migration::new(
                    *version,
                    std::borrow::Cow::Borrowed(*description),
                    sqlx::migrate::MigrationType::Simple,
                    sql.into_sql_str(),
                    false,
                )
            })
            .collect(),
    )
});

/// Postgres error text safe for logs: sqlx errors carry no bind values and no URL.
pub fn describe(e: &sqlx::Error) -> String {
    e.to_string()
}

pub async fn connect(url: &Secret, max_connections: u32) -> Result<PgPool, sqlx::Error> {
    PgPoolOptions::new().max_connections(max_connections.max(2)).acquire_timeout(Duration::from_secs(3)).connect(url.expose()).await
}

/// One row of `channels`. Every secret is sealed, bound to the channel id.
#[derive(Debug, Clone)]
pub struct ChannelRow {
    pub id: String,
    pub tenant_id: String,
    pub source: String,
    pub platform: String,
    pub name: Option<String>,
    pub is_default: bool,
    pub settings: Json<Settings>,
    pub key_id: String,
    pub secret: Json<Sealed>,
    pub previous_secret: Option<Json<Sealed>>,
    pub previous_secret_expires_at: Option<OffsetDateTime>,
    pub verify_token: Option<Json<Sealed>>,
    pub credentials: Option<Json<Sealed>>,
    pub created_at: OffsetDateTime,
    pub updated_at: OffsetDateTime,
}

impl<'r> sqlx::FromRow<'r, sqlx::postgres::PgRow> for ChannelRow {
    fn from_row(row: &'r sqlx::postgres::PgRow) -> Result<Self, sqlx::Error> {
        use sqlx::Row;
        Ok(ChannelRow {
            id: row.try_get("id")?,
            tenant_id: row.try_get("tenant_id")?,
            source: row.try_get("source")?,
            platform: row.try_get("platform")?,
            name: row.try_get("name")?,
            is_default: row.try_get("is_default")?,
            settings: row.try_get("settings")?,
            key_id: row.try_get("key_id")?,
            secret: row.try_get("secret")?,
            previous_secret: row.try_get("previous_secret")?,
            previous_secret_expires_at: row.try_get("previous_secret_expires_at")?,
            verify_token: row.try_get("verify_token")?,
            credentials: row.try_get("credentials")?,
            created_at: row.try_get("created_at")?,
            updated_at: row.try_get("updated_at")?,
        })
    }
}

#[cfg(test)]
mod migration_tests {
    #[test]
    fn the_compiled_in_migrations_are_the_migrations_folder() {
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../migrations");
        let mut files: Vec<(i64, String, String)> = std::fs::read_dir(dir)
            .unwrap_or_else(|e| panic!("{dir}: {e}"))
            .flatten()
            .filter_map(|e| {
                let name = e.file_name().to_str()?.strip_suffix(".sql")?.to_string();
                let (version, description) = name.split_once('_')?;
                let sql = std::fs::read_to_string(e.path()).ok()?;
                Some((version.parse().ok()?, description.replace('_', " "), sql))
            })
            .collect();
        files.sort();
        let listed: Vec<(i64, String, String)> = super::MIGRATIONS.iter().map(|(v, d, s)| (*v, d.to_string(), s.to_string())).collect();
        assert_eq!(listed, files, "migrations/ and db::MIGRATIONS differ: list every file there");
    }
}

/// Now, at the microsecond precision Postgres keeps, so that what is answered equals what is
/// read back.
pub fn now() -> OffsetDateTime {
    let t = OffsetDateTime::now_utc();
    t.replace_nanosecond(t.nanosecond() / 1000 * 1000).unwrap_or(t)
}

impl ChannelRow {
    pub fn source(&self) -> Result<Source, ApiError> {
        self.source
            .parse()
            .map_err(|_| ApiError::internal(format!("channel {}: unknown source {:?} in the database", self.id, self.source)))
    }

    /// What the KV bucket holds for this channel: what ingest reads.
    pub fn to_record(&self) -> Result<ChannelRecord, ApiError> {
        Ok(ChannelRecord {
            id: self.id.clone(),
            tenant_id: self.tenant_id.clone(),
            source: self.source()?,
            platform: self.platform.clone(),
            name: self.name.clone(),
            default: self.is_default,
            secret: self.secret.0.clone(),
            previous_secret: match (&self.previous_secret, self.previous_secret_expires_at) {
                (Some(s), Some(expires_at)) => Some(PreviousSecret { secret: s.0.clone(), expires_at }),
                _ => None,
            },
            verify_token: self.verify_token.as_ref().map(|t| t.0.clone()),
            settings: self.settings.0.clone(),
            updated_at: self.updated_at,
        })
    }

    /// Every sealed value of the row, for re-sealing.
    fn sealed_mut(&mut self) -> impl Iterator<Item = &mut Sealed> {
        std::iter::once(&mut self.secret.0)
            .chain(self.previous_secret.as_mut().map(|s| &mut s.0))
            .chain(self.verify_token.as_mut().map(|s| &mut s.0))
            .chain(self.credentials.as_mut().map(|s| &mut s.0))
    }

    /// Seals every secret of the row again under the keyring's current key when an older key
    /// sealed any of them. Returns whether anything changed.
    pub fn reseal(&mut self, keyring: &Keyring) -> Result<bool, CryptoError> {
        let id = self.id.clone();
        let stale = self.key_id != keyring.current_id() || self.sealed_mut().any(|s| keyring.needs_reseal(s));
        if !stale {
            return Ok(false);
        }
        for sealed in self.sealed_mut() {
            let plain = keyring.open(sealed, &id)?;
            *sealed = keyring.seal(&plain, &id);
        }
        self.key_id = keyring.current_id().to_string();
        Ok(true)
    }
}

/// The constraint a unique violation names, mapped to a 409; anything else is internal.
pub fn classify(e: sqlx::Error) -> ApiError {
    if let sqlx::Error::Database(db) = &e {
        if db.code().as_deref() == Some("23505") {
            return match db.constraint() {
                Some("channels_pkey") => ApiError::conflict("id", "a channel with this id already exists"),
                Some("destinations_pkey") => ApiError::conflict("id", "a destination with this id already exists"),
                Some("channels_one_default_per_platform") => {
                    ApiError::conflict("default", "another channel is already the default for this platform")
                }
                _ => ApiError::conflict("", "the change collides with an existing channel"),
            };
        }
    }
    ApiError::internal(format!("postgres: {}", describe(&e)))
}

/// The columns of `ChannelRow`, as a literal so that every query stays a `&'static str`.
macro_rules! columns {
    () => {
        "id, tenant_id, source, platform, name, is_default, settings, key_id, secret, \
         previous_secret, previous_secret_expires_at, verify_token, credentials, created_at, \
         updated_at"
    };
}

pub async fn insert(conn: &mut PgConnection, row: &ChannelRow) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO channels (id, tenant_id, source, platform, name, is_default, settings, key_id, \
         secret, previous_secret, previous_secret_expires_at, verify_token, credentials, created_at, \
         updated_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15)",
    )
    .bind(&row.id)
    .bind(&row.tenant_id)
    .bind(&row.source)
    .bind(&row.platform)
    .bind(&row.name)
    .bind(row.is_default)
    .bind(&row.settings)
    .bind(&row.key_id)
    .bind(&row.secret)
    .bind(&row.previous_secret)
    .bind(row.previous_secret_expires_at)
    .bind(&row.verify_token)
    .bind(&row.credentials)
    .bind(row.created_at)
    .bind(row.updated_at)
    .execute(conn)
    .await
    .map(|_| ())
}

/// Inserts unless a channel with this id exists; whether it inserted.
pub async fn insert_if_absent(conn: &mut PgConnection, row: &ChannelRow) -> Result<bool, sqlx::Error> {
    let done = sqlx::query(
        "INSERT INTO channels (id, tenant_id, source, platform, name, is_default, settings, key_id, \
         secret, previous_secret, previous_secret_expires_at, verify_token, credentials, created_at, \
         updated_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15) \
         ON CONFLICT (id) DO NOTHING",
    )
    .bind(&row.id)
    .bind(&row.tenant_id)
    .bind(&row.source)
    .bind(&row.platform)
    .bind(&row.name)
    .bind(row.is_default)
    .bind(&row.settings)
    .bind(&row.key_id)
    .bind(&row.secret)
    .bind(&row.previous_secret)
    .bind(row.previous_secret_expires_at)
    .bind(&row.verify_token)
    .bind(&row.credentials)
    .bind(row.created_at)
    .bind(row.updated_at)
    .execute(conn)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// Writes every column but `id` and `created_at`.
pub async fn update(conn: &mut PgConnection, row: &ChannelRow) -> Result<(), sqlx::Error> {
    sqlx::query(
        "UPDATE channels SET tenant_id = $2, source = $3, platform = $4, name = $5, is_default = $6, \
         settings = $7, key_id = $8, secret = $9, previous_secret = $10, \
         previous_secret_expires_at = $11, verify_token = $12, credentials = $13, updated_at = $14 \
         WHERE id = $1",
    )
    .bind(&row.id)
    .bind(&row.tenant_id)
    .bind(&row.source)
    .bind(&row.platform)
    .bind(&row.name)
    .bind(row.is_default)
    .bind(&row.settings)
    .bind(&row.key_id)
    .bind(&row.secret)
    .bind(&row.previous_secret)
    .bind(row.previous_secret_expires_at)
    .bind(&row.verify_token)
    .bind(&row.credentials)
    .bind(row.updated_at)
    .execute(conn)
    .await
    .map(|_| ())
}

/// The row whatever its tenant: for the mirror only (it copies every row to the bucket).
pub(crate) async fn get_unscoped(conn: &mut PgConnection, id: &str) -> Result<Option<ChannelRow>, sqlx::Error> {
    sqlx::query_as::<_, ChannelRow>(concat!("SELECT ", columns!(), " FROM channels WHERE id = $1")).bind(id).fetch_optional(conn).await
}

/// The row, if `scope` may see it (another tenant's channel is absent).
pub async fn get(conn: &mut PgConnection, scope: &Scope, id: &str) -> Result<Option<ChannelRow>, sqlx::Error> {
    sqlx::query_as::<_, ChannelRow>(concat!("SELECT ", columns!(), " FROM channels WHERE id = $1 AND ($2::text IS NULL OR tenant_id = $2)"))
        .bind(id)
        .bind(scope.tenant_filter())
        .fetch_optional(conn)
        .await
}

/// The row if `scope` may see it, locked until the transaction ends.
pub async fn get_for_update(tx: &mut Transaction<'_, Postgres>, scope: &Scope, id: &str) -> Result<Option<ChannelRow>, sqlx::Error> {
    sqlx::query_as::<_, ChannelRow>(concat!(
        "SELECT ",
        columns!(),
        " FROM channels WHERE id = $1 AND ($2::text IS NULL OR tenant_id = $2) FOR UPDATE"
    ))
    .bind(id)
    .bind(scope.tenant_filter())
    .fetch_optional(&mut **tx)
    .await
}

/// Deletes the row if `scope` may see it; whether it did.
pub async fn delete(conn: &mut PgConnection, scope: &Scope, id: &str) -> Result<bool, sqlx::Error> {
    let done = sqlx::query("DELETE FROM channels WHERE id = $1 AND ($2::text IS NULL OR tenant_id = $2)")
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
    pub source: Option<String>,
    pub platform: Option<String>,
    pub after: Option<String>,
    pub limit: i64,
}

/// The rows `scope` may see that match `filter`.
pub async fn list(pool: &PgPool, scope: &Scope, filter: &ListFilter) -> Result<Vec<ChannelRow>, sqlx::Error> {
    sqlx::query_as::<_, ChannelRow>(concat!(
        "SELECT ",
        columns!(),
        " FROM channels \
         WHERE ($1::text IS NULL OR tenant_id = $1) \
           AND ($6::text IS NULL OR tenant_id = $6) \
           AND ($2::text IS NULL OR source = $2) \
           AND ($3::text IS NULL OR platform = $3) \
           AND ($4::text IS NULL OR id > $4) \
         ORDER BY id LIMIT $5"
    ))
    .bind(&filter.tenant_id)
    .bind(&filter.source)
    .bind(&filter.platform)
    .bind(&filter.after)
    .bind(filter.limit)
    .bind(scope.tenant_filter())
    .fetch_all(pool)
    .await
}

/// Every channel, for the reconciliation of the bucket.
pub async fn all(conn: &mut PgConnection) -> Result<Vec<ChannelRow>, sqlx::Error> {
    sqlx::query_as::<_, ChannelRow>(concat!("SELECT ", columns!(), " FROM channels ORDER BY id")).fetch_all(conn).await
}

/// Rows sealed by another key than `current_kid`, locked, at most `limit`.
pub async fn sealed_by_other_keys(
    tx: &mut Transaction<'_, Postgres>,
    current_kid: &str,
    limit: i64,
) -> Result<Vec<ChannelRow>, sqlx::Error> {
    sqlx::query_as::<_, ChannelRow>(concat!("SELECT ", columns!(), " FROM channels WHERE key_id <> $1 ORDER BY id LIMIT $2 FOR UPDATE"))
        .bind(current_kid)
        .bind(limit)
        .fetch_all(&mut **tx)
        .await
}

/// Records that the channel changed, in the transaction of the change; returns the outbox seq.
pub async fn enqueue(conn: &mut PgConnection, channel_id: &str) -> Result<i64, sqlx::Error> {
    sqlx::query_scalar("INSERT INTO channel_outbox (channel_id) VALUES ($1) RETURNING seq").bind(channel_id).fetch_one(conn).await
}

pub async fn outbox_contains(pool: &PgPool, seq: i64) -> Result<bool, sqlx::Error> {
    sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM channel_outbox WHERE seq = $1)").bind(seq).fetch_one(pool).await
}

pub async fn outbox_len(pool: &PgPool) -> Result<i64, sqlx::Error> {
    sqlx::query_scalar("SELECT count(*) FROM channel_outbox").fetch_one(pool).await
}

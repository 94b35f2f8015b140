//! `hookline secrets rotate-key`: seal every channel and destination secret again under
//! `secrets.key`.
//!
//! Rows (of `channels`, then of `destinations`) sealed by an older key (`key_id` differs) are opened with `secrets.previous_keys`,
//! sealed again and written back with an outbox entry, a batch per transaction, so the bucket
//! follows. Order of an operator's rotation: give every process the new `secrets.key` with the
//! old key in `secrets.previous_keys`, restart them, run this, and drop the old key once it
//! reports 0 left. A rotation that re-sealed rows writes one entry to the audit log (token
//! `cli`, action `rotate_key`, the new key id, how many rows of each table).

use std::time::Duration;

use hookline_shared::config::Config;

use crate::audit;
use crate::auth::{Principal, Scope};
use crate::destinations::{db as destination_db, service as destination_service};
use crate::{db, mirror, SetupApiError};

const BATCH: i64 = 100;
/// How long rotate-key spends relaying the outbox itself, for when no setup-api runs.
const DRAIN_BUDGET: Duration = Duration::from_secs(30);

/// Re-encrypts every row (channels and destinations) sealed by an older key under
/// `secrets.key`; returns how many rows.
pub async fn rotate_key(config: &Config) -> Result<u64, SetupApiError> {
    let keyring = config.keyring()?;
    let url = config
        .database
        .url
        .as_ref()
        .ok_or_else(|| hookline_shared::config::ConfigError::new("database.url", "required: the Postgres URL of the setup API"))?;
    let pool = db::connect(url, 2).await.map_err(|e| SetupApiError::Connect(db::describe(&e)))?;
    db::MIGRATOR.run(&pool).await.map_err(|e| SetupApiError::Migrate(e.to_string()))?;
    let mut total = 0u64;
    loop {
        let mut tx = pool.begin().await?;
        let rows = db::sealed_by_other_keys(&mut tx, keyring.current_id(), BATCH).await?;
        if rows.is_empty() {
            tx.rollback().await?;
            break;
        }
        for mut row in rows {
            let id = row.id.clone();
            row.reseal(&keyring).map_err(|e| SetupApiError::Crypto(format!("channel {id}: {e}")))?;
            db::update(&mut tx, &row).await?;
            db::enqueue(&mut tx, &id).await?;
            total += 1;
        }
        tx.commit().await?;
    }
    tracing::info!(rows = total, key_id = keyring.current_id(), "channel secrets sealed under the current key");
    let mut destinations = 0u64;
    loop {
        let mut tx = pool.begin().await?;
        let rows = destination_db::sealed_by_other_keys(&mut tx, keyring.current_id(), BATCH).await?;
        if rows.is_empty() {
            tx.rollback().await?;
            break;
        }
        for row in rows {
            let resealed = destination_service::reseal(&keyring, &row).map_err(SetupApiError::Crypto)?;
            destination_db::update(&mut tx, &resealed).await?;
            destination_db::enqueue(&mut tx, &row.id).await?;
            destinations += 1;
        }
        tx.commit().await?;
    }
    tracing::info!(rows = destinations, key_id = keyring.current_id(), "destination secrets sealed under the current key");
    let channels = total;
    total += destinations;
    if total > 0 {
        // The CLI's change, in the audit log like the API's (no token: the operator ran it).
        let writer = Scope::new(Principal {
            token_id: "cli".to_string(),
            token_name: "hookline secrets rotate-key".to_string(),
            tenant: None,
            read_only: false,
        })
        .writer()
        .map_err(|_| SetupApiError::Database("the CLI's audit scope".into()))?;
        let mut conn = pool.acquire().await?;
        let entry = audit::Entry {
            action: "rotate_key",
            resource_type: "secrets_key",
            resource_id: keyring.current_id(),
            tenant_id: None,
            fields: serde_json::json!({"channels": channels, "destinations": destinations}),
        };
        audit::record(&mut conn, &writer, entry).await?;
    }
    if total > 0 && config.nats.url.is_some() {
        match mirror::drain(config, &pool, DRAIN_BUDGET).await {
            Ok(n) => tracing::info!(changes = n, "re-sealed rows mirrored to the buckets"),
            Err(e) => tracing::warn!(error = %e, "the re-sealed rows wait in the outbox; a running setup-api mirrors them"),
        }
    }
    pool.close().await;
    Ok(total)
}

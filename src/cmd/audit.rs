//! The audit entry of an operator command that changes something without the setup API
//! (`dlq redrive`, `dlq purge`, `replay`): written to the setup API's `audit_log` when a
//! Postgres is known (`database.url`, or the running `up`'s), as token `cli`. Never fails the
//! command, whose change is done by then: without a database it says so in a warning.

use serde_json::Value;

use hookline_setup_api::audit::{self, Entry};
use hookline_setup_api::auth::{Principal, Scope};
use hookline_shared::config::Config;

pub async fn record(config: &Config, command: &str, action: &str, tenant: Option<&str>, fields: Value) {
    let mut config = config.clone();
    if config.database.url.is_none() {
        let needs = hookline_shared::runtime::Needs { nats: false, database: true, secrets_key: false };
        let _ = hookline_shared::runtime::fill_from_running_up(&mut config, needs);
    }
    let Some(url) = config.database.url.as_ref() else {
        tracing::warn!(command, "not in the audit log: no database.url (the setup API's Postgres) is configured");
        return;
    };
    let written = async {
        let pool = hookline_setup_api::db::connect(url, 1).await.map_err(|e| hookline_setup_api::db::describe(&e))?;
        hookline_setup_api::db::MIGRATOR.run(&pool).await.map_err(|e| e.to_string())?;
        let writer = Scope::new(Principal {
            token_id: "cli".to_string(),
            token_name: format!("hookline {command}"),
            tenant: None,
            read_only: false,
        })
        .writer()
        .map_err(|_| "the CLI's audit scope".to_string())?;
        let mut conn = pool.acquire().await.map_err(|e| e.to_string())?;
        let entry = Entry { action, resource_type: "operation", resource_id: action, tenant_id: tenant, fields: audit::fields(&fields) };
        audit::record(&mut conn, &writer, entry).await.map_err(|e| e.to_string())?;
        drop(conn);
        pool.close().await;
        Ok::<_, String>(())
    };
    if let Err(e) = written.await {
        tracing::warn!(command, error = %e, "not in the audit log: Postgres refused the entry");
    }
}

//! The mirror end to end, with a running ingest: a channel created through the API is accepted
//! within a second and a deleted one answers 404 within a second; a rotated secret verifies
//! with old and new until the deadline and with the new one only after; a change made while
//! NATS is down reaches the bucket when it returns; with Postgres down ingest keeps serving and
//! setup-api is not ready; at start the bucket is reconciled with Postgres.

mod common;

use serde_json::json;
use std::time::Duration;

use common::{assert_logs_clean, secret, Options, Stack};
use hookline_shared::channel::ChannelRecord;
use hookline_shared::harness::wait_for;
use hookline_shared::Source;

const SECOND: Duration = Duration::from_secs(1);

#[tokio::test]
async fn ingest_follows_creates_and_deletes_within_a_second() {
    let stack = Stack::start(Options { ingest: true, ..Default::default() }).await;
    for (source, secret_value) in [
        (Source::Whatsapp, secret("mirror-meta-app-secret")),
        (Source::Telegram, secret("mirror_telegram_secret_token")),
        (Source::Twilio, secret("mirror-twilio-auth-token")),
    ] {
        let created = stack.api.create(&json!({"tenant_id": "acme", "source": source.as_str(), "secret": secret_value})).await;
        let id = created["id"].as_str().expect("id").to_string();
        let took = stack.wait_webhook(&id, source, &secret_value, 200, SECOND).await;
        println!("{source}: accepted {took:?} after the API's answer");
        assert_eq!(stack.webhook(&id, source, "wrong-secret").await, 401);

        assert_eq!(stack.api.delete(&format!("/api/v1/channels/{id}")).await.status, 204);
        let took = stack.wait_webhook(&id, source, &secret_value, 404, SECOND).await;
        println!("{source}: 404 {took:?} after the API's answer");
    }
    assert_logs_clean();
}

#[tokio::test]
async fn a_rotated_secret_verifies_with_both_until_the_deadline_then_only_the_new_one() {
    let stack = Stack::start(Options { ingest: true, ..Default::default() }).await;
    let old = secret("rotation-old-app-secret");
    let new = secret("rotation-new-app-secret");
    let created = stack.api.create(&json!({"tenant_id": "acme", "source": "whatsapp", "secret": old})).await;
    let id = created["id"].as_str().expect("id").to_string();
    stack.wait_webhook(&id, Source::Whatsapp, &old, 200, SECOND).await;

    let answer = stack.api.post(&format!("/api/v1/channels/{id}/rotate-secret"), &json!({"secret": new, "previous_valid_for_s": 3})).await;
    assert_eq!(answer.status, 200, "{}", answer.text);
    let expires_at = time::OffsetDateTime::parse(
        answer.json()["previous_secret_expires_at"].as_str().expect("expiry"),
        &time::format_description::well_known::Rfc3339,
    )
    .expect("RFC 3339");
    // The new secret is accepted within a second; the old one still is.
    stack.wait_webhook(&id, Source::Whatsapp, &new, 200, SECOND).await;
    assert!(time::OffsetDateTime::now_utc() < expires_at - time::Duration::milliseconds(500));
    assert_eq!(stack.webhook(&id, Source::Whatsapp, &old).await, 200);
    assert_eq!(stack.webhook(&id, Source::Whatsapp, &new).await, 200);

    // After the deadline: only the new one.
    while time::OffsetDateTime::now_utc() <= expires_at + time::Duration::milliseconds(50) {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(stack.webhook(&id, Source::Whatsapp, &old).await, 401);
    assert_eq!(stack.webhook(&id, Source::Whatsapp, &new).await, 200);

    // Rotating with no grace stops the old secret at once.
    let newer = secret("rotation-newer-app-secret");
    let answer =
        stack.api.post(&format!("/api/v1/channels/{id}/rotate-secret"), &json!({"secret": newer, "previous_valid_for_s": 0})).await;
    assert_eq!(answer.json()["previous_secret_expires_at"], serde_json::Value::Null);
    stack.wait_webhook(&id, Source::Whatsapp, &new, 401, SECOND).await;
    assert_eq!(stack.webhook(&id, Source::Whatsapp, &newer).await, 200);
    assert_logs_clean();
}

async fn bucket_record(stack: &Stack, id: &str) -> Option<ChannelRecord> {
    let store = stack.bucket().await;
    let bytes = store.get(id).await.ok().flatten()?;
    serde_json::from_slice(&bytes).ok()
}

#[tokio::test]
async fn a_change_made_while_nats_is_down_reaches_the_bucket_when_it_returns() {
    let mut stack = Stack::start(Options::default()).await;
    let kept = stack.api.create(&json!({"tenant_id": "acme", "source": "telegram", "secret": secret("nats_outage_kept_secret")})).await;
    let kept_id = kept["id"].as_str().expect("id").to_string();
    let doomed = stack.api.create(&json!({"tenant_id": "acme", "source": "telegram", "secret": secret("nats_outage_doomed_secret")})).await;
    let doomed_id = doomed["id"].as_str().expect("id").to_string();
    wait_for("both in the bucket", Duration::from_secs(5), || async {
        (bucket_record(&stack, &kept_id).await.is_some() && bucket_record(&stack, &doomed_id).await.is_some()).then_some(())
    })
    .await;

    stack.nats.kill();
    // The API keeps working with Postgres alone; the changes wait in the outbox.
    let born = stack
        .api
        .create(
            &json!({"tenant_id": "acme", "source": "telegram", "name": "born in the outage", "secret": secret("nats_outage_born_secret")}),
        )
        .await;
    let born_id = born["id"].as_str().expect("id").to_string();
    let renamed = stack.api.patch(&format!("/api/v1/channels/{kept_id}"), &json!({"name": "renamed in the outage"})).await;
    assert_eq!(renamed.status, 200);
    assert_eq!(stack.api.delete(&format!("/api/v1/channels/{doomed_id}")).await.status, 204);
    let db = stack.db().await;
    let pending: i64 = sqlx::query_scalar("SELECT count(*) FROM channel_outbox").fetch_one(&db).await.expect("count");
    assert!(pending >= 3, "the outbox holds the changes: {pending}");
    // Longer than the relay's put timeout, so it has failed and is retrying.
    tokio::time::sleep(Duration::from_secs(6)).await;

    stack.nats.restart();
    wait_for("the outage's changes in the bucket", Duration::from_secs(30), || async {
        let born = bucket_record(&stack, &born_id).await?;
        let kept = bucket_record(&stack, &kept_id).await?;
        let doomed_gone = bucket_record(&stack, &doomed_id).await.is_none();
        (born.name.as_deref() == Some("born in the outage") && kept.name.as_deref() == Some("renamed in the outage") && doomed_gone)
            .then_some(())
    })
    .await;
    wait_for("the outbox emptied", Duration::from_secs(5), || async {
        let n: i64 = sqlx::query_scalar("SELECT count(*) FROM channel_outbox").fetch_one(&db).await.ok()?;
        (n == 0).then_some(())
    })
    .await;
    stack.stop_setup_api().await;
    assert_logs_clean();
}

#[tokio::test]
async fn with_postgres_down_ingest_keeps_serving_and_setup_api_is_not_ready() {
    let mut stack = Stack::start(Options { ingest: true, ..Default::default() }).await;
    let s = secret("pg_outage_telegram_secret");
    let created = stack.api.create(&json!({"tenant_id": "acme", "source": "telegram", "secret": s})).await;
    let id = created["id"].as_str().expect("id").to_string();
    stack.wait_webhook(&id, Source::Telegram, &s, 200, SECOND).await;

    stack.pg.stop();
    let http = common::client();
    let ready = format!("{}/readyz", stack.api.base);
    wait_for("setup-api not ready", Duration::from_secs(10), || {
        let http = http.clone();
        let ready = ready.clone();
        async move {
            let r = http.get(&ready).send().await.ok()?;
            (r.status() == 503).then_some(())
        }
    })
    .await;
    let health = http.get(format!("{}/healthz", stack.api.base)).send().await.expect("healthz");
    assert_eq!(health.status(), 200, "alive, only not ready");
    // The API cannot answer without its database: a bare 500.
    let answer = stack.api.get(&format!("/api/v1/channels/{id}")).await;
    assert_eq!(answer.status, 500);
    assert!(answer.text.is_empty(), "{}", answer.text);
    // Ingest does not need Postgres.
    for _ in 0..3 {
        assert_eq!(stack.webhook(&id, Source::Telegram, &s).await, 200);
    }
    let ingest_ready = http.get(format!("{}/readyz", stack.ingest_base())).send().await.expect("readyz");
    assert_eq!(ingest_ready.status(), 200);

    stack.pg.restart();
    wait_for("setup-api ready again", Duration::from_secs(15), || {
        let http = http.clone();
        let ready = ready.clone();
        async move {
            let r = http.get(&ready).send().await.ok()?;
            (r.status() == 200).then_some(())
        }
    })
    .await;
    assert_eq!(stack.api.get(&format!("/api/v1/channels/{id}")).await.status, 200);
    assert_logs_clean();
}

#[tokio::test]
async fn at_start_the_bucket_is_reconciled_with_postgres() {
    let mut stack = Stack::start(Options::default()).await;
    let created = stack
        .api
        .create(&json!({"tenant_id": "acme", "source": "telegram", "name": "truth", "secret": secret("reconcile_secret_one")}))
        .await;
    let id = created["id"].as_str().expect("id").to_string();
    let good = wait_for("in the bucket", Duration::from_secs(5), || bucket_record(&stack, &id)).await;
    stack.stop_setup_api().await;

    // While it is down: the bucket drifts (a stale copy, a channel Postgres never had).
    let store = stack.bucket().await;
    let mut stale = good.clone();
    stale.name = Some("drifted".into());
    store.put(id.as_str(), serde_json::to_vec(&stale).expect("json").into()).await.expect("put");
    let mut ghost = good.clone();
    ghost.id = "ghost".into();
    store.put("ghost", serde_json::to_vec(&ghost).expect("json").into()).await.expect("put");

    stack.restart_setup_api().await;
    wait_for("the bucket reconciled", Duration::from_secs(10), || async {
        let current = bucket_record(&stack, &id).await?;
        let ghost_gone = bucket_record(&stack, "ghost").await.is_none();
        (current == good && ghost_gone).then_some(())
    })
    .await;
    assert_logs_clean();
}

#[tokio::test]
async fn channels_declared_in_the_configuration_are_imported_and_kept() {
    let decl_secret = secret("declared_channel_secret");
    let file_dir = tempfile_dir();
    let path = file_dir.join("hookline.toml");
    std::fs::write(
        &path,
        format!("[[channels]]\nid = \"declared-tg\"\ntenant_id = \"acme\"\nsource = \"telegram\"\nsecret = \"{decl_secret}\"\n"),
    )
    .expect("write");
    // The harness builds the configuration from variables; the declared channel is added
    // as the loader would.
    let mut stack = Stack::start(Options::default()).await;
    let from_file = hookline_shared::config::Config::load_with_env(
        &hookline_shared::config::Sources { file: Some(path) },
        &[("HOOKLINE_SECRETS__KEY".to_string(), stack.config.secrets.key.as_ref().expect("key").expose().to_string())],
    )
    .expect("loads");
    stack.config.channels = from_file.channels;
    stack.restart_setup_api().await;
    let listed = stack.api.get("/api/v1/channels/declared-tg").await;
    assert_eq!(listed.status, 200, "{}", listed.text);
    wait_for("declared channel in the bucket", Duration::from_secs(5), || bucket_record(&stack, "declared-tg")).await;
    // A second start keeps what the API changed since.
    stack.api.patch("/api/v1/channels/declared-tg", &json!({"name": "renamed"})).await;
    stack.restart_setup_api().await;
    assert_eq!(stack.api.get("/api/v1/channels/declared-tg").await.json()["name"], "renamed");
    let _ = std::fs::remove_dir_all(&file_dir);
    assert_logs_clean();
}

fn tempfile_dir() -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "hookline-setup-api-test-{}-{}",
        std::process::id(),
        time::OffsetDateTime::now_utc().unix_timestamp_nanos()
    ));
    std::fs::create_dir_all(&dir).expect("dir");
    dir
}

#[tokio::test]
async fn shutdown_relays_the_last_changes_and_returns() {
    let mut stack = Stack::start(Options::default()).await;
    let mut ids = Vec::new();
    for i in 0..5 {
        let c =
            stack.api.create(&json!({"tenant_id": "acme", "source": "telegram", "secret": secret(format!("shutdown_secret_{i}"))})).await;
        ids.push(c["id"].as_str().expect("id").to_string());
    }
    // Stopped right after the answers: run() returns Ok (checked by stop) and nothing waits.
    stack.stop_setup_api().await;
    let db = stack.db().await;
    let pending: i64 = sqlx::query_scalar("SELECT count(*) FROM channel_outbox").fetch_one(&db).await.expect("count");
    assert_eq!(pending, 0);
    for id in &ids {
        assert!(bucket_record(&stack, id).await.is_some(), "{id} in the bucket");
    }
    assert_logs_clean();
}

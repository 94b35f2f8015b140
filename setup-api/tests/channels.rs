//! The channel routes against real Postgres and nats-server: create, read, list, update and
//! delete with the contract's errors; bearer tokens; secrets sealed in Postgres and absent from
//! every answer and log line; the OpenAPI document; and `rotate_key`.

mod common;

use axum::http::Method;
use serde_json::{json, Value};
use std::time::Duration;

use common::{assert_logs_clean, secret, Options, Stack, TOKEN};
use hookline_shared::channel::ChannelRecord;
use hookline_shared::crypto::{generate_key_base64, Keyring, SecretsKey};
use hookline_shared::harness::{self, wait_for};
use hookline_shared::Secret;

fn wa(tenant: &str, secret_value: &str) -> Value {
    json!({
        "tenant_id": tenant,
        "source": "whatsapp",
        "name": "Support line",
        "secret": secret_value,
        "verify_token": secret(format!("verify-{secret_value}")),
    })
}

#[tokio::test]
async fn crud_with_the_contracts_answers() {
    let stack = Stack::start(Options::default()).await;
    let api = &stack.api;
    let app_secret = secret("meta-app-secret-crud-1");

    // Create: 201, Location, the channel without its secret.
    let answer = api.post("/api/v1/channels", &wa("acme", &app_secret)).await;
    assert_eq!(answer.status, 201, "{}", answer.text);
    let created = answer.json();
    let id = created["id"].as_str().expect("id").to_string();
    assert!(id.starts_with("ch_") && id.len() == 29, "{id}");
    assert_eq!(answer.headers.get("location").and_then(|v| v.to_str().ok()), Some(format!("/api/v1/channels/{id}").as_str()));
    assert_eq!(created["tenant_id"], "acme");
    assert_eq!(created["source"], "whatsapp");
    assert_eq!(created["platform"], "whatsapp");
    assert_eq!(created["provider"], "meta");
    assert_eq!(created["name"], "Support line");
    assert_eq!(created["default"], false);
    assert_eq!(created["secret_set"], true);
    assert_eq!(created["verify_token_set"], true);
    assert_eq!(created["webhook_url"], format!("{}/webhooks/{id}", stack.public_url));
    assert!(created.get("secret").is_none() && created.get("verify_token").is_none());
    for key in ["created_at", "updated_at"] {
        let t = created[key].as_str().expect("time");
        time::OffsetDateTime::parse(t, &time::format_description::well_known::Rfc3339).expect("RFC 3339");
    }

    // Read.
    let read = api.get(&format!("/api/v1/channels/{id}")).await;
    assert_eq!(read.status, 200);
    assert_eq!(read.json(), created);

    // Update: only what is given changes; null clears the name.
    let updated = api.patch(&format!("/api/v1/channels/{id}"), &json!({"name": "Sales line", "settings": {"team": "sales"}})).await;
    assert_eq!(updated.status, 200, "{}", updated.text);
    let updated = updated.json();
    assert_eq!(updated["name"], "Sales line");
    assert_eq!(updated["settings"]["team"], "sales");
    assert_eq!(updated["tenant_id"], "acme");
    assert_eq!(updated["created_at"], created["created_at"]);
    assert_ne!(updated["updated_at"], created["updated_at"]);
    let cleared = api.patch(&format!("/api/v1/channels/{id}"), &json!({"name": null, "verify_token": null})).await.json();
    assert_eq!(cleared["name"], Value::Null);
    assert_eq!(cleared["verify_token_set"], false);
    assert_eq!(cleared["settings"]["team"], "sales");

    // Delete, then it is gone.
    assert_eq!(api.delete(&format!("/api/v1/channels/{id}")).await.status, 204);
    let gone = api.get(&format!("/api/v1/channels/{id}")).await;
    assert_eq!(gone.status, 404);
    assert_eq!(gone.error().0, "not_found");
    assert_eq!(api.delete(&format!("/api/v1/channels/{id}")).await.status, 404);
    assert_logs_clean();
}

#[tokio::test]
async fn bad_input_unknown_ids_duplicates_and_missing_tokens() {
    // 27 refused tokens below: more than the default limit of failed authentications a minute.
    let stack = Stack::start(Options { extra: &[("HOOKLINE_SETUP_API__AUTH_FAILURES_PER_MINUTE", "100")], ..Default::default() }).await;
    let api = &stack.api;
    let s = secret("meta-app-secret-errors-2");

    // Missing or wrong tokens: 401 on every route, known or not.
    for (method, path) in [
        (Method::GET, "/api/v1/channels"),
        (Method::POST, "/api/v1/channels"),
        (Method::GET, "/api/v1/channels/ch_x"),
        (Method::PATCH, "/api/v1/channels/ch_x"),
        (Method::DELETE, "/api/v1/channels/ch_x"),
        (Method::POST, "/api/v1/channels/ch_x/rotate-secret"),
        (Method::POST, "/api/v1/integrations/telegram/setup"),
        (Method::GET, "/api/v1/openapi.json"),
        (Method::GET, "/api/v1/nothing-here"),
    ] {
        for token in [None, Some("wrong-token-0123456789abcdef"), Some("")] {
            let answer = api.send(method.clone(), path, Some("{}"), token).await;
            assert_eq!(answer.status, 401, "{method} {path} {token:?}");
            assert_eq!(answer.error().0, "unauthorized");
            assert_eq!(answer.headers.get("www-authenticate").and_then(|v| v.to_str().ok()), Some("Bearer"));
        }
    }
    assert_eq!(api.get("/api/v1/nothing-here").await.status, 404);
    let put = api.send(Method::PUT, "/api/v1/channels/ch_x", Some("{}"), Some(TOKEN)).await;
    assert_eq!((put.status, put.error().0.as_str()), (405, "method_not_allowed"));

    // Bodies that are not a JSON object: 400.
    for body in ["", "not json", "[1,2]", "\"text\"", "{\"tenant_id\": "] {
        let answer = api.send(Method::POST, "/api/v1/channels", Some(body), Some(TOKEN)).await;
        assert_eq!(answer.status, 400, "{body:?}: {}", answer.text);
        assert_eq!(answer.error().0, "invalid_json");
    }

    // Fields: 422 naming the field, never quoting the value.
    let base = wa("acme", &s);
    let with = |k: &str, v: Value| {
        let mut b = base.clone();
        b[k] = v;
        b
    };
    let without = |k: &str| {
        let mut b = base.clone();
        b.as_object_mut().expect("object").remove(k);
        b
    };
    let cases: Vec<(Value, &str, &str)> = vec![
        (without("tenant_id"), "tenant_id", "invalid_field"),
        (without("source"), "source", "invalid_field"),
        (without("secret"), "secret", "invalid_field"),
        (with("tenant_id", json!("a.b")), "tenant_id", "invalid_field"),
        (with("tenant_id", json!(7)), "tenant_id", "invalid_field"),
        (with("source", json!("fax")), "source", "invalid_field"),
        (with("platform", json!("sms")), "platform", "invalid_field"),
        (with("secret", json!("")), "secret", "invalid_field"),
        (with("secret", json!(12345)), "secret", "invalid_field"),
        (with("default", json!("yes")), "default", "invalid_field"),
        (with("settings", json!([1])), "settings", "invalid_field"),
        (with("id", json!("has space")), "id", "invalid_field"),
        (with("name", json!("")), "name", "invalid_field"),
        (with("colour", json!("red")), "colour", "unknown_field"),
        (json!({"tenant_id": "acme", "source": "telegram", "secret": "ok_token", "verify_token": "v"}), "verify_token", "invalid_field"),
        (json!({"tenant_id": "acme", "source": "telegram", "secret": "not a telegram token!"}), "secret", "invalid_field"),
        (json!({"tenant_id": "acme", "source": "webchat", "secret": "plain"}), "secret", "invalid_field"),
        (json!({"tenant_id": "acme", "source": "dialog360", "secret": "x", "settings": {"auth": "magic"}}), "settings", "invalid_field"),
    ];
    for (body, field, code) in cases {
        let answer = api.post("/api/v1/channels", &body).await;
        assert_eq!(answer.status, 422, "{body}: {}", answer.text);
        assert_eq!(answer.error(), (code.to_string(), Some(field.to_string())), "{body}");
        assert!(!answer.text.contains("12345"), "{}", answer.text);
    }

    // Duplicates: 409.
    let mut named = base.clone();
    named["id"] = json!("wa-main");
    named["default"] = json!(true);
    api.create(&named).await;
    let dup = api.post("/api/v1/channels", &named).await;
    assert_eq!(dup.status, 409, "{}", dup.text);
    assert_eq!(dup.error(), ("conflict".into(), Some("id".into())));
    let second_default = api.post("/api/v1/channels", &with("default", json!(true))).await;
    assert_eq!(second_default.status, 409, "{}", second_default.text);
    assert_eq!(second_default.error(), ("conflict".into(), Some("default".into())));
    let other = api.create(&base).await;
    let other_id = other["id"].as_str().expect("id");
    let patch_default = api.patch(&format!("/api/v1/channels/{other_id}"), &json!({"default": true})).await;
    assert_eq!(patch_default.status, 409, "{}", patch_default.text);

    // Unknown ids: 404 on every channel route.
    for (method, path, body) in [
        (Method::GET, "/api/v1/channels/ch_nope", None),
        (Method::PATCH, "/api/v1/channels/ch_nope", Some(r#"{"name":"x"}"#)),
        (Method::DELETE, "/api/v1/channels/ch_nope", None),
        (Method::POST, "/api/v1/channels/ch_nope/rotate-secret", Some(r#"{"secret":"abc"}"#)),
        (Method::GET, "/api/v1/channels/not%20an%20id", None),
        (Method::POST, "/api/v1/integrations/fax/setup", Some("{}")),
    ] {
        let answer = api.send(method.clone(), path, body, Some(TOKEN)).await;
        assert_eq!(answer.status, 404, "{method} {path}: {}", answer.text);
        assert_eq!(answer.error().0, "not_found");
    }

    // PATCH refuses what cannot change, and an empty patch changes nothing.
    for (body, field) in [
        (json!({"source": "telegram"}), "source"),
        (json!({"secret": "new"}), "secret"),
        (json!({"id": "x"}), "id"),
        (json!({"platform": "sms"}), "platform"),
        (json!({"verify_token": 5}), "verify_token"),
    ] {
        let answer = api.patch("/api/v1/channels/wa-main", &body).await;
        assert_eq!(answer.status, 422, "{body}: {}", answer.text);
        assert_eq!(answer.error().1.as_deref(), Some(field), "{body}");
    }
    let same = api.patch("/api/v1/channels/wa-main", &json!({})).await;
    assert_eq!(same.status, 200);

    // rotate-secret validates too.
    for (body, field) in [
        (json!({}), "secret"),
        (json!({"secret": ""}), "secret"),
        (json!({"secret": "x", "previous_valid_for_s": -1}), "previous_valid_for_s"),
        (json!({"secret": "x", "previous_valid_for_s": 99999999}), "previous_valid_for_s"),
    ] {
        let answer = api.post("/api/v1/channels/wa-main/rotate-secret", &body).await;
        assert_eq!(answer.status, 422, "{body}: {}", answer.text);
        assert_eq!(answer.error().1.as_deref(), Some(field), "{body}");
    }

    // A body over the limit: 413 in the same format.
    let huge = json!({"tenant_id": "acme", "source": "whatsapp", "secret": "x".repeat(100_000)});
    let answer = api.post("/api/v1/channels", &huge).await;
    assert_eq!(answer.status, 413, "{}", answer.text);
    assert_eq!(answer.error().0, "body_too_large");
    assert_logs_clean();
}

#[tokio::test]
async fn lists_page_and_filter() {
    let stack = Stack::start(Options::default()).await;
    let api = &stack.api;
    let mut acme = Vec::new();
    for i in 0..5 {
        let c = api.create(&json!({"tenant_id": "acme", "source": "telegram", "secret": secret(format!("tg_secret_list_{i}"))})).await;
        acme.push(c["id"].as_str().expect("id").to_string());
    }
    api.create(&json!({"tenant_id": "globex", "source": "tawkto", "secret": secret("tawk-secret-list")})).await;
    api.create(&json!({"tenant_id": "globex", "source": "twilio", "platform": "whatsapp", "secret": secret("twilio-token-list")})).await;

    // Pages of 2 through acme's 5, in creation order.
    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let path = match &cursor {
            Some(c) => format!("/api/v1/channels?tenant_id=acme&limit=2&cursor={c}"),
            None => "/api/v1/channels?tenant_id=acme&limit=2".to_string(),
        };
        let page = api.get(&path).await;
        assert_eq!(page.status, 200, "{}", page.text);
        let page = page.json();
        let ids: Vec<String> =
            page["channels"].as_array().expect("channels").iter().map(|c| c["id"].as_str().expect("id").to_string()).collect();
        assert!(ids.len() <= 2);
        seen.extend(ids);
        match page["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_string()),
            None => break,
        }
    }
    assert_eq!(seen, acme);

    let all = api.get("/api/v1/channels").await.json();
    assert_eq!(all["channels"].as_array().expect("list").len(), 7);
    assert!(all.get("next_cursor").is_none());
    let twilio = api.get("/api/v1/channels?source=twilio").await.json();
    assert_eq!(twilio["channels"].as_array().expect("list").len(), 1);
    assert_eq!(twilio["channels"][0]["platform"], "whatsapp");
    let wa_platform = api.get("/api/v1/channels?platform=whatsapp&tenant_id=globex").await.json();
    assert_eq!(wa_platform["channels"].as_array().expect("list").len(), 1);
    let none = api.get("/api/v1/channels?tenant_id=nobody").await.json();
    assert_eq!(none["channels"], json!([]));

    for (query, status, field) in [
        ("limit=0", 422, "limit"),
        ("limit=500", 422, "limit"),
        ("source=fax", 422, "source"),
        ("cursor=..", 422, "cursor"),
        ("sort=name", 400, "sort"),
    ] {
        let answer = api.get(&format!("/api/v1/channels?{query}")).await;
        assert_eq!(answer.status, status, "{query}: {}", answer.text);
        assert_eq!(answer.error().1.as_deref(), Some(field), "{query}");
    }
    assert_logs_clean();
}

#[tokio::test]
async fn secrets_are_sealed_at_rest_and_never_answered() {
    let stack = Stack::start(Options::default()).await;
    let api = &stack.api;
    let app_secret = secret("plaintext-app-secret-at-rest");
    let created = api.create(&wa("acme", &app_secret)).await;
    let id = created["id"].as_str().expect("id").to_string();
    let rotated_to = secret("plaintext-rotated-secret-at-rest");
    let answer =
        api.post(&format!("/api/v1/channels/{id}/rotate-secret"), &json!({"secret": rotated_to, "previous_valid_for_s": 600})).await;
    assert_eq!(answer.status, 200, "{}", answer.text);
    assert!(answer.json()["previous_secret_expires_at"].is_string());

    // The table holds sealed values only, each naming the current key.
    let db = stack.db().await;
    let (secret_col, previous, verify, key_id): (String, String, String, String) =
        sqlx::query_as("SELECT secret::text, previous_secret::text, verify_token::text, key_id FROM channels WHERE id = $1")
            .bind(&id)
            .fetch_one(&db)
            .await
            .expect("row");
    let row_text = format!("{secret_col} {previous} {verify}");
    for plain in [&app_secret, &rotated_to, &format!("verify-{app_secret}")] {
        assert!(!row_text.contains(plain.as_str()), "plaintext in Postgres: {row_text}");
        let b64 = base64::Engine::encode(&base64::engine::general_purpose::STANDARD, plain);
        assert!(!row_text.contains(&b64), "base64 plaintext in Postgres");
    }
    let keyring = stack.config.keyring().expect("keyring");
    assert_eq!(key_id, keyring.current_id());
    let sealed: hookline_shared::crypto::Sealed = serde_json::from_str(&secret_col).expect("a sealed value");
    assert_eq!(sealed.kid, keyring.current_id());
    assert_eq!(keyring.open(&sealed, &id).expect("opens").expose(), rotated_to);

    // The bucket holds the same sealed values, which open to the rotated secrets.
    let store = stack.bucket().await;
    let record: ChannelRecord = wait_for("the channel in the bucket", Duration::from_secs(5), || {
        let store = store.clone();
        let id = id.clone();
        async move {
            let bytes = store.get(id.as_str()).await.ok().flatten()?;
            let record: ChannelRecord = serde_json::from_slice(&bytes).ok()?;
            record.previous_secret.is_some().then_some(record)
        }
    })
    .await;
    let channel = record.open(&keyring).expect("ingest can open it");
    assert_eq!(channel.secrets.current.expose(), rotated_to);
    let bucket_text = String::from_utf8_lossy(&store.get(id.as_str()).await.expect("get").expect("entry")).into_owned();
    common::assert_no_secret("the bucket's record", &bucket_text);

    // No answer held a secret (checked on every call) and neither did /metrics.
    let metrics = common::client().get(format!("{}/metrics", api.base)).send().await.expect("metrics").text().await.expect("text");
    assert!(metrics.contains("hookline_setup_api_requests_total"), "{metrics}");
    assert!(metrics.contains("hookline_channel_mirror_writes_total"), "{metrics}");
    assert!(
        metrics.contains(r#"hookline_setup_api_requests_total{route="/api/v1/channels/{id}/rotate-secret",method="POST",status="200"} 1"#),
        "{metrics}"
    );
    common::assert_no_secret("/metrics", &metrics);
    assert_logs_clean();
}

#[tokio::test]
async fn the_openapi_document_is_generated_from_the_code() {
    let stack = Stack::start(Options::default()).await;
    let answer = stack.api.get("/api/v1/openapi.json").await;
    assert_eq!(answer.status, 200);
    assert_eq!(answer.headers.get("content-type").and_then(|v| v.to_str().ok()), Some("application/json"));
    let doc = answer.json();
    assert!(doc["openapi"].as_str().expect("version").starts_with("3."));
    let paths = doc["paths"].as_object().expect("paths");
    for (path, method) in [
        ("/api/v1/channels", "post"),
        ("/api/v1/channels", "get"),
        ("/api/v1/channels/{id}", "get"),
        ("/api/v1/channels/{id}", "patch"),
        ("/api/v1/channels/{id}", "delete"),
        ("/api/v1/channels/{id}/rotate-secret", "post"),
        ("/api/v1/integrations/{platform}/setup", "post"),
    ] {
        assert!(paths[path].get(method).is_some(), "{method} {path}");
    }
    assert_eq!(doc["components"]["securitySchemes"]["bearer"]["scheme"], "bearer");
    for schema in ["ChannelView", "CreateChannel", "ErrorBody", "TelegramSetup", "WhatsappSetup", "TwilioSetup"] {
        assert!(doc["components"]["schemas"].get(schema).is_some(), "{schema}");
    }
    assert_logs_clean();
}

#[tokio::test]
async fn rotate_key_reseals_every_row_under_the_new_key() {
    let mut stack = Stack::start(Options::default()).await;
    let old_key = stack.config.secrets.key.clone().expect("key");
    let mut ids = Vec::new();
    for i in 0..3 {
        let c = stack
            .api
            .create(&json!({"tenant_id": "acme", "source": "whatsapp", "secret": secret(format!("rotate-key-secret-{i}")), "verify_token": secret(format!("rotate-key-verify-{i}"))}))
            .await;
        ids.push(c["id"].as_str().expect("id").to_string());
    }
    stack
        .api
        .post(
            &format!("/api/v1/channels/{}/rotate-secret", ids[0]),
            &json!({"secret": secret("rotate-key-secret-new"), "previous_valid_for_s": 3600}),
        )
        .await;
    // The procedure: stop the API, give everyone the new key (old one as previous), rotate.
    stack.stop_setup_api().await;
    let new_key = generate_key_base64().expect("key");
    secret(new_key.expose());
    let previous = format!("[\"{}\"]", old_key.expose());
    let db_url = stack.db_url.clone();
    let rotated_config = harness::config(
        &stack.nats.url(),
        &[
            ("HOOKLINE_DATABASE__URL", &db_url),
            ("HOOKLINE_SETUP_API__TOKENS", TOKEN),
            ("HOOKLINE_SECRETS__KEY", new_key.expose()),
            ("HOOKLINE_SECRETS__PREVIOUS_KEYS", &previous),
        ],
    );
    let n = hookline_setup_api::rotate_key(&rotated_config).await.expect("rotates");
    assert_eq!(n, 3);
    assert_eq!(hookline_setup_api::rotate_key(&rotated_config).await.expect("again"), 0);

    // Every row opens with the new key alone; the old key opens none.
    let new_only = Keyring::new(SecretsKey::from_base64(&new_key).expect("key"), vec![]);
    let old_only = Keyring::new(SecretsKey::from_base64(&old_key).expect("key"), vec![]);
    let db = stack.db().await;
    let rows: Vec<(String, String)> = sqlx::query_as("SELECT id, key_id FROM channels").fetch_all(&db).await.expect("rows");
    assert!(rows.iter().all(|(_, kid)| kid == new_only.current_id()));
    // The CLI's change is in the audit log, once (the second run changed nothing).
    let audited: Vec<(String, String, String)> =
        sqlx::query_as("SELECT token_id, resource_id, fields::text FROM audit_log WHERE action = 'rotate_key'")
            .fetch_all(&db)
            .await
            .expect("audit");
    assert_eq!(audited.len(), 1, "{audited:?}");
    assert_eq!((audited[0].0.as_str(), audited[0].1.as_str()), ("cli", new_only.current_id()));
    assert!(audited[0].2.contains("\"channels\": 3"), "{audited:?}");
    // The bucket followed (rotate-key relays the outbox itself when no API runs).
    let store = stack.bucket().await;
    for id in &ids {
        let bytes = store.get(id.as_str()).await.expect("get").expect("entry");
        let record: ChannelRecord = serde_json::from_slice(&bytes).expect("record");
        let channel = record.open(&new_only).expect("opens with the new key");
        assert!(record.open(&old_only).is_err());
        if *id == ids[0] {
            assert_eq!(channel.secrets.current.expose(), "rotate-key-secret-new");
            assert_eq!(channel.secrets.previous.as_ref().map(|(s, _)| s.expose()), Some("rotate-key-secret-0"));
        }
        assert!(channel.verify_token.is_some());
    }
    let pending: i64 = sqlx::query_scalar("SELECT count(*) FROM channel_outbox").fetch_one(&db).await.expect("count");
    assert_eq!(pending, 0);

    // A key that cannot open the rows is an error, not a silent skip.
    let stranger = generate_key_base64().expect("key");
    secret(stranger.expose());
    let wrong = harness::config(&stack.nats.url(), &[("HOOKLINE_DATABASE__URL", &db_url), ("HOOKLINE_SECRETS__KEY", stranger.expose())]);
    let err = hookline_setup_api::rotate_key(&wrong).await.expect_err("cannot open");
    assert!(err.to_string().contains("channel"), "{err}");
    let _ = Secret::new("unused");
    assert_logs_clean();
}

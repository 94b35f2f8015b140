//! The destination routes against real Postgres and nats-server: create (the bucket holds the
//! sealed record within a second; no plaintext secret or header value in the bucket, Postgres,
//! an answer or a log line), list, read, update, delete, rotate-secret, pause and resume, the
//! breaker state read from `hookline_destination_state`, `/test` against a local receiver that
//! checks the Standard Webhooks signature on its own, every refusal naming its field and writing
//! nothing, the OpenAPI document, the reconciliation at start, a NATS outage, declared
//! destinations, and `rotate_key`.

mod common;

use axum::http::Method;
use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use serde_json::{json, Value};
use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use common::{assert_logs_clean, secret, Answer, Options, Stack, TOKEN};
use hookline_shared::crypto::{generate_key_base64, Keyring, SecretsKey};
use hookline_shared::destination::{generate_signing_secret, DestinationRecord};
use hookline_shared::harness::{self, wait_for};

const SECOND: Duration = Duration::from_secs(1);

/// A fresh `whsec_` secret, registered (whole and its base64 part) as a secret the tests set.
fn signing_secret() -> String {
    let s = generate_signing_secret().expect("rng").expose().to_string();
    secret(s.strip_prefix("whsec_").expect("prefix"));
    secret(s)
}

fn api_key(tag: &str) -> String {
    secret(format!("api-key-{tag}-{}", hex::encode(rand_bytes())))
}

fn rand_bytes() -> [u8; 8] {
    let mut b = [0u8; 8];
    getrandom::fill(&mut b).expect("rng");
    b
}

async fn bucket_record(stack: &Stack, id: &str) -> Option<(DestinationRecord, String)> {
    let store = stack.destinations_bucket().await;
    let bytes = store.get(id).await.ok().flatten()?;
    let text = String::from_utf8_lossy(&bytes).into_owned();
    Some((serde_json::from_slice(&bytes).expect("a DestinationRecord"), text))
}

async fn bucket_keys(stack: &Stack) -> BTreeSet<String> {
    use futures_util::StreamExt;
    let store = stack.destinations_bucket().await;
    let mut keys = store.keys().await.expect("keys");
    let mut out = BTreeSet::new();
    while let Some(k) = keys.next().await {
        out.insert(k.expect("key"));
    }
    out
}

/// Waits until the bucket's record of `id` passes `check`; how long after `since` it did.
async fn wait_record(stack: &Stack, id: &str, within: Duration, check: impl Fn(&DestinationRecord) -> bool) -> DestinationRecord {
    wait_for(&format!("destination {id} in the bucket"), within, || async {
        bucket_record(stack, id).await.map(|(r, _)| r).filter(|r| check(r))
    })
    .await
}

async fn wait_gone(stack: &Stack, id: &str, within: Duration) {
    wait_for(&format!("destination {id} gone from the bucket"), within, || async { bucket_record(stack, id).await.is_none().then_some(()) })
        .await
}

// ---------------------------------------------------------------------------------------------
// A receiver for /test: tokio + hyper, recording every request.

#[derive(Debug, Clone)]
struct Seen {
    path: String,
    headers: hyper::HeaderMap,
    body: Vec<u8>,
}

impl Seen {
    fn header(&self, name: &str) -> Option<String> {
        self.headers.get(name).and_then(|v| v.to_str().ok()).map(str::to_string)
    }
}

struct Receiver {
    base: String,
    seen: Arc<Mutex<Vec<Seen>>>,
    shutdown: CancellationToken,
}

impl Receiver {
    /// `/slow` answers after 2 s, `/fail` answers 500, anything else 202 with a 3000-byte body
    /// that starts by echoing the `X-Api-Key` header it got.
    async fn start() -> Receiver {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let base = format!("http://{}", listener.local_addr().expect("addr"));
        let seen: Arc<Mutex<Vec<Seen>>> = Arc::default();
        let shutdown = CancellationToken::new();
        let (record, stop) = (seen.clone(), shutdown.clone());
        tokio::spawn(async move {
            loop {
                let (stream, _) = tokio::select! {
                    _ = stop.cancelled() => return,
                    accepted = listener.accept() => match accepted { Ok(a) => a, Err(_) => continue },
                };
                let record = record.clone();
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                        let record = record.clone();
                        async move {
                            let (parts, body) = req.into_parts();
                            let body = body.collect().await.map(|c| c.to_bytes().to_vec()).unwrap_or_default();
                            let seen = Seen { path: parts.uri.path().to_string(), headers: parts.headers, body };
                            record.lock().unwrap_or_else(|p| p.into_inner()).push(seen.clone());
                            let (status, text) = match seen.path.as_str() {
                                "/slow" => {
                                    tokio::time::sleep(Duration::from_secs(2)).await;
                                    (200, "late".to_string())
                                }
                                "/fail" => (500, "boom".to_string()),
                                _ => (202, format!("got key={} ", seen.header("x-api-key").unwrap_or_default()) + &"z".repeat(3000)),
                            };
                            let response = hyper::Response::builder()
                                .status(status)
                                .header("content-type", "text/plain")
                                .body(Full::new(Bytes::from(text)))
                                .expect("response");
                            Ok::<_, std::convert::Infallible>(response)
                        }
                    });
                    let io = hyper_util::rt::TokioIo::new(stream);
                    let _ = hyper::server::conn::http1::Builder::new().serve_connection(io, service).await;
                });
            }
        });
        Receiver { base, seen, shutdown }
    }

    fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

/// How many of the space-separated `v1,` signatures of `header` verify with `secret`, computed
/// here with hmac, sha2 and base64 (not with the project's verifier).
fn signatures_by(secret: &str, id: &str, timestamp: &str, body: &[u8], header: &str) -> usize {
    use hmac::{Hmac, KeyInit, Mac};
    let key = B64.decode(secret.strip_prefix("whsec_").expect("whsec_")).expect("base64");
    let mut mac = <Hmac<sha2::Sha256> as KeyInit>::new_from_slice(&key).expect("key");
    mac.update(format!("{id}.{timestamp}.").as_bytes());
    mac.update(body);
    let expected = format!("v1,{}", B64.encode(mac.finalize().into_bytes()));
    header.split(' ').filter(|s| *s == expected).count()
}

// ---------------------------------------------------------------------------------------------

fn full_body(id: &str, signing: &str, key: &str) -> Value {
    json!({
        "id": id,
        "tenant_id": "acme",
        "name": "Billing",
        "url": "https://billing.example.com/hookline?region=eu",
        "signing_secret": signing,
        "headers": {"X-Api-Key": key},
        "filter": {"source": ["mercadopago"], "kind": ["payment"], "match": {"payment.action": {"$prefix": "payment."}}},
        "ordering": "conversation",
        "max_in_flight": 8,
        "rate_limit_per_s": 2.5,
        "timeout_ms": 5000,
        "retry_schedule_s": [1, 10, 60],
        "max_age_s": 3600
    })
}

#[tokio::test]
async fn a_created_destination_reaches_the_bucket_sealed_within_a_second() {
    let stack = Stack::start(Options::default()).await;
    let api = &stack.api;
    let signing = signing_secret();
    let key = api_key("create");

    let answer = api.post("/api/v1/destinations", &full_body("billing", &signing, &key)).await;
    let answered = Instant::now();
    assert_eq!(answer.status, 201, "{}", answer.text);
    assert_eq!(answer.headers.get("location").and_then(|v| v.to_str().ok()), Some("/api/v1/destinations/billing"));
    let created = answer.json();
    assert_eq!(created["id"], "billing");
    assert_eq!(created["tenant_id"], "acme");
    assert_eq!(created["name"], "Billing");
    assert_eq!(created["url"], "https://billing.example.com/hookline?region=eu");
    assert_eq!(created["filter"]["source"], json!(["mercadopago"]));
    assert_eq!(created["ordering"], "conversation");
    assert_eq!((created["max_in_flight"].as_u64(), created["rate_limit_per_s"].as_f64()), (Some(8), Some(2.5)));
    assert_eq!((created["timeout_ms"].as_u64(), created["max_age_s"].as_u64()), (Some(5000), Some(3600)));
    assert_eq!(created["retry_schedule_s"], json!([1, 10, 60]));
    assert_eq!((&created["paused"], &created["state"]), (&json!(false), &json!("active")));
    assert_eq!(created["header_names"], json!(["X-Api-Key"]));
    assert_eq!(created["signing_secret_set"], true);
    for absent in ["signing_secret", "headers", "previous_secret_valid_until", "previous_signing_secret"] {
        assert!(created.get(absent).is_none(), "{absent} in {created}");
    }
    for t in ["created_at", "updated_at"] {
        time::OffsetDateTime::parse(created[t].as_str().expect("time"), &time::format_description::well_known::Rfc3339).expect("RFC 3339");
    }

    // The bucket holds the record within a second of the answer, sealed, and it opens.
    let record = wait_record(&stack, "billing", SECOND, |_| true).await;
    println!("in the bucket {:?} after the answer", answered.elapsed());
    let keyring = stack.config.keyring().expect("keyring");
    let opened = record.open(&keyring).expect("the forwarder can open it");
    assert_eq!(opened.signing_secret.as_ref().map(|s| s.expose()), Some(signing.as_str()));
    assert_eq!(opened.headers["X-Api-Key"].expose(), key);
    assert_eq!(opened.tenant_id.as_deref(), Some("acme"));
    assert_eq!(opened.timeout_ms, Some(5000));
    assert_eq!(record.signing_secret.kid, keyring.current_id());
    let (_, bucket_text) = bucket_record(&stack, "billing").await.expect("entry");
    assert!(bucket_text.contains("\"X-Api-Key\""), "header names stay readable: {bucket_text}");
    common::assert_no_secret("the bucket's record", &bucket_text);

    // Postgres: every column of the row, and the sealed values name the current key.
    let db = stack.db().await;
    let (row_text, key_id, names): (String, String, Vec<String>) =
        sqlx::query_as("SELECT row_to_json(d)::text, key_id, header_names FROM destinations d WHERE id = 'billing'")
            .fetch_one(&db)
            .await
            .expect("row");
    common::assert_no_secret("the destinations row", &row_text);
    assert_eq!(key_id, keyring.current_id());
    assert_eq!(names, ["X-Api-Key"]);
    let everything: String = sqlx::query_scalar("SELECT coalesce(string_agg(row_to_json(o)::text, ' '), '') FROM destination_outbox o")
        .fetch_one(&db)
        .await
        .expect("outbox");
    common::assert_no_secret("the outbox", &everything);

    // Read back: the same answer.
    assert_eq!(api.get("/api/v1/destinations/billing").await.json(), created);

    // Without an id: dst_ and 26 base32 characters; without a tenant: every tenant.
    let generated = api.create_destination(&json!({"url": "http://127.0.0.1:9/in", "signing_secret": signing_secret()})).await;
    let id = generated["id"].as_str().expect("id");
    assert!(id.starts_with("dst_") && id.len() == 30, "{id}");
    assert!(id[4..].bytes().all(|b| b.is_ascii_lowercase() || (b'2'..=b'7').contains(&b)), "{id}");
    assert_eq!((&generated["tenant_id"], &generated["filter"], &generated["ordering"]), (&Value::Null, &json!({}), &json!("none")));
    assert_eq!(generated["header_names"], json!([]));
    assert!(generated.get("max_in_flight").is_none() && generated.get("timeout_ms").is_none(), "{generated}");
    let record = wait_record(&stack, id, SECOND, |_| true).await;
    assert_eq!(record.tenant_id, None);
    assert_logs_clean();
}

#[tokio::test]
async fn list_get_patch_and_delete() {
    let stack = Stack::start(Options::default()).await;
    let api = &stack.api;
    let keyring = stack.config.keyring().expect("keyring");
    let mut acme = Vec::new();
    for i in 0..3 {
        let d = api
            .create_destination(
                &json!({"tenant_id": "acme", "url": format!("https://a{i}.example.com/"), "signing_secret": signing_secret()}),
            )
            .await;
        acme.push(d["id"].as_str().expect("id").to_string());
    }
    acme.sort();
    api.create_destination(
        &json!({"id": "globex-1", "tenant_id": "globex", "url": "https://g.example.com/", "signing_secret": signing_secret()}),
    )
    .await;
    api.create_destination(&json!({"id": "everyone", "url": "https://e.example.com/", "signing_secret": signing_secret()})).await;

    // Pages of 2 through acme's 3, by id.
    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let path = match &cursor {
            Some(c) => format!("/api/v1/destinations?tenant_id=acme&limit=2&cursor={c}"),
            None => "/api/v1/destinations?tenant_id=acme&limit=2".to_string(),
        };
        let page = api.get(&path).await;
        assert_eq!(page.status, 200, "{}", page.text);
        let page = page.json();
        let ids: Vec<String> =
            page["destinations"].as_array().expect("list").iter().map(|d| d["id"].as_str().expect("id").to_string()).collect();
        assert!(ids.len() <= 2);
        seen.extend(ids);
        match page["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_string()),
            None => break,
        }
    }
    assert_eq!(seen, acme);
    let all = api.get("/api/v1/destinations").await.json();
    assert_eq!(all["destinations"].as_array().expect("list").len(), 5);
    assert!(all.get("next_cursor").is_none());
    assert_eq!(api.get("/api/v1/destinations?tenant_id=nobody").await.json()["destinations"], json!([]));

    // Patch: only what is given changes; headers are replaced as a whole; null clears.
    let key = api_key("patch");
    let signing = signing_secret();
    let created = api
        .create_destination(&json!({
            "id": "support", "tenant_id": "acme", "name": "Support", "url": "https://support.example.com/in",
            "signing_secret": signing, "headers": {"X-Old": api_key("old")}, "max_in_flight": 4, "timeout_ms": 2000
        }))
        .await;
    let first = wait_record(&stack, "support", SECOND, |_| true).await;
    let patched = api
        .patch(
            "/api/v1/destinations/support",
            &json!({"name": "Support (EU)", "headers": {"X-Api-Key": key}, "filter": {"kind": ["message"]}, "max_in_flight": null, "timeout_ms": 3000}),
        )
        .await;
    assert_eq!(patched.status, 200, "{}", patched.text);
    let patched = patched.json();
    assert_eq!(patched["name"], "Support (EU)");
    assert_eq!(patched["header_names"], json!(["X-Api-Key"]));
    assert_eq!(patched["filter"], json!({"kind": ["message"]}));
    assert!(patched.get("max_in_flight").is_none(), "{patched}");
    assert_eq!(patched["timeout_ms"], 3000);
    assert_eq!((&patched["url"], &patched["tenant_id"]), (&created["url"], &created["tenant_id"]));
    assert_eq!(patched["created_at"], created["created_at"]);
    assert_ne!(patched["updated_at"], created["updated_at"]);
    let record = wait_record(&stack, "support", SECOND, |r| r.updated_at != first.updated_at).await;
    let opened = record.open(&keyring).expect("opens");
    assert_eq!(opened.signing_secret.as_ref().map(|s| s.expose()), Some(signing.as_str()), "the signing secret is kept");
    assert_eq!(opened.headers.keys().collect::<Vec<_>>(), ["X-Api-Key"]);
    assert_eq!(opened.headers["X-Api-Key"].expose(), key);
    assert_eq!((opened.max_in_flight, opened.timeout_ms), (None, Some(3000)));
    assert_eq!(api.get("/api/v1/destinations/support").await.json(), patched);

    let cleared =
        api.patch("/api/v1/destinations/support", &json!({"tenant_id": null, "name": null, "headers": null, "filter": null})).await;
    assert_eq!(cleared.status, 200, "{}", cleared.text);
    let cleared = cleared.json();
    assert_eq!(
        (&cleared["tenant_id"], &cleared["name"], &cleared["header_names"], &cleared["filter"]),
        (&Value::Null, &Value::Null, &json!([]), &json!({}))
    );
    let same = api.patch("/api/v1/destinations/support", &json!({})).await;
    assert_eq!(same.status, 200);

    // Delete: the key leaves the bucket within a second; then 404.
    assert_eq!(api.delete("/api/v1/destinations/support").await.status, 204);
    wait_gone(&stack, "support", SECOND).await;
    let gone = api.get("/api/v1/destinations/support").await;
    assert_eq!((gone.status, gone.error().0.as_str()), (404, "not_found"));
    assert_eq!(api.delete("/api/v1/destinations/support").await.status, 404);
    assert_eq!(bucket_keys(&stack).await.len(), 5);
    assert_logs_clean();
}

#[tokio::test]
async fn a_rotated_signing_secret_keeps_the_previous_one_signing_until_it_expires() {
    let stack = Stack::start(Options::default()).await;
    let api = &stack.api;
    let receiver = Receiver::start().await;
    let keyring = stack.config.keyring().expect("keyring");
    let old = signing_secret();
    let new = signing_secret();
    api.create_destination(&json!({"id": "rot", "tenant_id": "acme", "url": format!("{}/in", receiver.base), "signing_secret": old})).await;

    let before = time::OffsetDateTime::now_utc();
    let answer = api.post("/api/v1/destinations/rot/rotate-secret", &json!({"signing_secret": new, "previous_valid_for_s": 600})).await;
    assert_eq!(answer.status, 200, "{}", answer.text);
    let until = time::OffsetDateTime::parse(
        answer.json()["previous_secret_valid_until"].as_str().expect("until"),
        &time::format_description::well_known::Rfc3339,
    )
    .expect("RFC 3339");
    assert!(until >= before + time::Duration::seconds(599) && until <= before + time::Duration::seconds(602), "{until}");

    // The record carries the previous secret and its expiry; both sign until then.
    let record = wait_record(&stack, "rot", SECOND, |r| r.previous_signing_secret.is_some()).await;
    assert_eq!(record.previous_valid_until, Some(until));
    let opened = record.open(&keyring).expect("opens");
    let now = time::OffsetDateTime::now_utc();
    let secrets: Vec<&str> = opened.signing_secrets(now).into_iter().map(|s| s.expose()).collect();
    assert_eq!(secrets, [new.as_str(), old.as_str()]);
    assert_eq!(opened.signing_secrets(until).len(), 1, "only the new one after the expiry");

    // /test carries both signatures.
    let tested = api.post("/api/v1/destinations/rot/test", &json!({})).await;
    assert_eq!(tested.status, 200, "{}", tested.text);
    let got = receiver.seen().pop().expect("delivered");
    let (id, ts, sig) = (
        got.header("webhook-id").expect("id"),
        got.header("webhook-timestamp").expect("ts"),
        got.header("webhook-signature").expect("sig"),
    );
    assert_eq!(sig.split(' ').count(), 2, "{sig}");
    assert_eq!(signatures_by(&new, &id, &ts, &got.body, &sig), 1);
    assert_eq!(signatures_by(&old, &id, &ts, &got.body, &sig), 1);

    // Rotating with no overlap drops the old one at once.
    let newer = signing_secret();
    let answer = api.post("/api/v1/destinations/rot/rotate-secret", &json!({"signing_secret": newer, "previous_valid_for_s": 0})).await;
    assert_eq!(answer.status, 200, "{}", answer.text);
    assert!(answer.json().get("previous_secret_valid_until").is_none());
    let record = wait_record(&stack, "rot", SECOND, |r| r.previous_signing_secret.is_none()).await;
    assert_eq!(record.previous_valid_until, None);
    assert_eq!(record.open(&keyring).expect("opens").signing_secret.as_ref().map(|s| s.expose()), Some(newer.as_str()));
    let db = stack.db().await;
    let (prev, prev_until): (Option<String>, Option<time::OffsetDateTime>) =
        sqlx::query_as("SELECT previous_signing_secret::text, previous_valid_until FROM destinations WHERE id = 'rot'")
            .fetch_one(&db)
            .await
            .expect("row");
    assert_eq!((prev, prev_until), (None, None));

    // Default overlap: a day.
    let answer = api.post("/api/v1/destinations/rot/rotate-secret", &json!({"signing_secret": signing_secret()})).await;
    let until = time::OffsetDateTime::parse(
        answer.json()["previous_secret_valid_until"].as_str().expect("until"),
        &time::format_description::well_known::Rfc3339,
    )
    .expect("time");
    assert!((until - time::OffsetDateTime::now_utc() - time::Duration::days(1)).abs() < time::Duration::seconds(5));
    assert_logs_clean();
}

#[tokio::test]
async fn pause_resume_and_the_breaker_state() {
    let stack = Stack::start(Options::default()).await;
    let api = &stack.api;
    let created = api
        .create_destination(
            &json!({"id": "pausable", "tenant_id": "acme", "url": "https://p.example.com/", "signing_secret": signing_secret()}),
        )
        .await;
    assert_eq!(created["state"], "active");

    let paused = api.post("/api/v1/destinations/pausable/pause", &json!({})).await;
    assert_eq!(paused.status, 200, "{}", paused.text);
    let paused = paused.json();
    assert_eq!((&paused["paused"], &paused["state"]), (&json!(true), &json!("paused")));
    wait_record(&stack, "pausable", SECOND, |r| r.paused).await;
    // Pausing again changes nothing.
    let again = api.send(Method::POST, "/api/v1/destinations/pausable/pause", None, Some(TOKEN)).await.json();
    assert_eq!(again["updated_at"], paused["updated_at"]);

    let resumed = api.post("/api/v1/destinations/pausable/resume", &json!({})).await.json();
    assert_eq!((&resumed["paused"], &resumed["state"]), (&json!(false), &json!("active")));
    wait_record(&stack, "pausable", SECOND, |r| !r.paused).await;

    // The forwarders publish the breaker's state; the API shows it (paused wins).
    let js = stack.nats.jetstream().await;
    let states = js
        .create_key_value(async_nats::jetstream::kv::Config { bucket: "hookline_destination_state".into(), ..Default::default() })
        .await
        .expect("state bucket");
    states.put("pausable", r#"{"state":"tripped","since":"2026-12-01T00:00:00Z"}"#.into()).await.expect("put");
    // An earlier answer found no bucket: the API waits a few seconds before it looks again.
    wait_for("state tripped", Duration::from_secs(10), || async {
        (api.get("/api/v1/destinations/pausable").await.json()["state"] == "tripped").then_some(())
    })
    .await;
    let listed = api.get("/api/v1/destinations?tenant_id=acme").await.json();
    assert_eq!(listed["destinations"][0]["state"], "tripped");
    assert_eq!(api.post("/api/v1/destinations/pausable/pause", &json!({})).await.json()["state"], "paused");
    assert_eq!(api.post("/api/v1/destinations/pausable/resume", &json!({})).await.json()["state"], "tripped");
    states.put("pausable", r#"{"state":"active"}"#.into()).await.expect("put");
    assert_eq!(api.get("/api/v1/destinations/pausable").await.json()["state"], "active");
    assert_logs_clean();
}

#[tokio::test]
async fn test_delivers_a_signed_synthetic_event_and_answers_what_the_target_said() {
    let stack = Stack::start(Options::default()).await;
    let api = &stack.api;
    let receiver = Receiver::start().await;
    let signing = signing_secret();
    let key = api_key("probe");
    api.create_destination(&json!({
        "id": "probe", "tenant_id": "acme", "url": format!("{}/hooks?x=1", receiver.base),
        "signing_secret": signing, "headers": {"X-Api-Key": key}, "filter": {"kind": ["payment"]}
    }))
    .await;
    // Paused, and filtered to payments: /test is sent all the same.
    api.post("/api/v1/destinations/probe/pause", &json!({})).await;

    let started = time::OffsetDateTime::now_utc().unix_timestamp();
    let answer = api.send(Method::POST, "/api/v1/destinations/probe/test", None, Some(TOKEN)).await;
    assert_eq!(answer.status, 200, "{}", answer.text);
    let result = answer.json();
    assert_eq!((&result["success"], &result["status"]), (&json!(true), &json!(202)));
    assert!(result["duration_ms"].is_u64());
    assert!(result.get("connection_error").is_none());
    let excerpt = result["body_excerpt"].as_str().expect("excerpt");
    assert!(excerpt.len() <= 1024 && excerpt.len() > 1000, "{}", excerpt.len());
    assert!(excerpt.starts_with("got key=[redacted] zzz"), "the echoed header value is redacted: {excerpt}");

    let seen = receiver.seen();
    assert_eq!(seen.len(), 1);
    let got = &seen[0];
    assert_eq!(got.path, "/hooks");
    assert_eq!(got.header("x-api-key").as_deref(), Some(key.as_str()), "the extra header is sent");
    assert_eq!(got.header("content-type").as_deref(), Some("application/json"));
    assert!(got.header("user-agent").is_some_and(|u| u.starts_with("hookline/")));
    let traceparent = got.header("traceparent").expect("traceparent");
    assert_eq!(traceparent.split('-').count(), 4, "{traceparent}");
    let id = got.header("webhook-id").expect("webhook-id");
    let ts = got.header("webhook-timestamp").expect("webhook-timestamp");
    assert!((ts.parse::<i64>().expect("unix seconds") - started).abs() <= 5);
    let sig = got.header("webhook-signature").expect("webhook-signature");
    assert_eq!(signatures_by(&signing, &id, &ts, &got.body, &sig), 1, "{sig}");
    assert_eq!(signatures_by(&signing, &id, &ts, b"{}", &sig), 0, "the signature covers the body");
    let event: Value = serde_json::from_slice(&got.body).expect("JSON body");
    assert_eq!((&event["id"], &result["event_id"]), (&json!(id), &json!(id)));
    assert!(id.starts_with("evt_") && id.len() == 36, "{id}");
    assert_eq!((&event["kind"], &event["schema_version"], &event["tenant_id"]), (&json!("other"), &json!(1), &json!("acme")));
    for field in ["source", "platform", "provider", "channel_id", "received_at"] {
        assert!(event[field].is_string(), "{field}: {event}");
    }
    // A fresh id every time.
    api.post("/api/v1/destinations/probe/test", &json!({})).await;
    let ids: BTreeSet<String> = receiver.seen().iter().filter_map(|s| s.header("webhook-id")).collect();
    assert_eq!(ids.len(), 2);

    // A destination of every tenant: tenant `test`. A 500 is reported, not retried.
    api.create_destination(&json!({"id": "probe-all", "url": format!("{}/fail", receiver.base), "signing_secret": signing_secret()})).await;
    let failed = api.post("/api/v1/destinations/probe-all/test", &json!({})).await.json();
    assert_eq!((&failed["success"], &failed["status"], &failed["body_excerpt"]), (&json!(false), &json!(500), &json!("boom")));
    let last = receiver.seen().pop().expect("delivered");
    assert_eq!(serde_json::from_slice::<Value>(&last.body).expect("json")["tenant_id"], "test");
    assert_eq!(receiver.seen().iter().filter(|s| s.path == "/fail").count(), 1);

    // No answer: the connection error, or the timeout of the destination.
    let closed = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let closed_url = format!("http://{}/in", closed.local_addr().expect("addr"));
    drop(closed);
    api.create_destination(&json!({"id": "probe-closed", "tenant_id": "acme", "url": closed_url, "signing_secret": signing_secret()}))
        .await;
    let refused = api.post("/api/v1/destinations/probe-closed/test", &json!({})).await.json();
    assert_eq!((&refused["success"], refused.get("status")), (&json!(false), None));
    assert_eq!(refused["connection_error"]["reason"], "connect_error", "{refused}");
    assert!(refused["connection_error"]["message"].as_str().is_some_and(|m| !m.is_empty()));
    api.create_destination(&json!({"id": "probe-slow", "tenant_id": "acme", "url": format!("{}/slow", receiver.base), "signing_secret": signing_secret(), "timeout_ms": 300})).await;
    let t0 = Instant::now();
    let slow = api.post("/api/v1/destinations/probe-slow/test", &json!({})).await.json();
    assert_eq!(slow["connection_error"]["reason"], "timeout", "{slow}");
    assert!(t0.elapsed() < Duration::from_millis(1500), "{:?}", t0.elapsed());

    let unknown = api.post("/api/v1/destinations/nope/test", &json!({})).await;
    assert_eq!(unknown.status, 404);
    let metrics = common::client().get(format!("{}/metrics", api.base)).send().await.expect("metrics").text().await.expect("text");
    assert!(metrics.contains(r#"hookline_destination_tests_total{outcome="2xx"} 2"#), "{metrics}");
    assert!(metrics.contains(r#"hookline_destination_tests_total{outcome="connect_error"} 1"#), "{metrics}");
    assert!(metrics.contains("hookline_destination_mirror_writes_total"), "{metrics}");
    common::assert_no_secret("/metrics", &metrics);
    assert_logs_clean();
}

/// Everything the API holds about destinations, to show that a refusal wrote nothing.
async fn snapshot(stack: &Stack, db: &sqlx::PgPool) -> (String, i64, BTreeSet<String>) {
    let rows: String = sqlx::query_scalar("SELECT coalesce(string_agg(row_to_json(d)::text, '\n' ORDER BY id), '') FROM destinations d")
        .fetch_one(db)
        .await
        .expect("rows");
    let seq: i64 = sqlx::query_scalar("SELECT last_value FROM destination_outbox_seq_seq").fetch_one(db).await.expect("seq");
    (rows, seq, bucket_keys(stack).await)
}

#[tokio::test]
async fn bad_input_is_refused_naming_the_field_and_nothing_is_written() {
    let stack = Stack::start(Options::default()).await;
    let api = &stack.api;
    let signing = signing_secret();
    let key = api_key("bad");
    let base = json!({"id": "bad-base", "tenant_id": "acme", "url": "https://x.example.com/", "signing_secret": signing, "headers": {"X-Api-Key": key}});
    api.create_destination(&base).await;
    wait_record(&stack, "bad-base", SECOND, |_| true).await;
    let db = stack.db().await;
    let before = snapshot(&stack, &db).await;

    let with = |k: &str, v: Value| {
        let mut b = base.clone();
        b["id"] = json!("bad-new");
        b[k] = v;
        b
    };
    let without = |k: &str| {
        let mut b = base.clone();
        b["id"] = json!("bad-new");
        b.as_object_mut().expect("object").remove(k);
        b
    };
    let create = "/api/v1/destinations";
    let patch = "/api/v1/destinations/bad-base";
    let rotate = "/api/v1/destinations/bad-base/rotate-secret";
    let cases: Vec<(Method, &str, Value, &str, &str)> = vec![
        (Method::POST, create, with("colour", json!("red")), "unknown_field", "colour"),
        (Method::POST, create, with("state", json!("active")), "invalid_field", "state"),
        (Method::POST, create, without("url"), "invalid_field", "url"),
        (Method::POST, create, with("url", json!("ftp://x.example.com/")), "invalid_field", "url"),
        (Method::POST, create, with("url", json!("not a url")), "invalid_field", "url"),
        (Method::POST, create, with("url", json!("https://user:pw@x.example.com/")), "invalid_field", "url"),
        (Method::POST, create, with("url", json!(42)), "invalid_field", "url"),
        (Method::POST, create, without("signing_secret"), "invalid_field", "signing_secret"),
        (Method::POST, create, with("signing_secret", json!("plain-text-12345")), "invalid_field", "signing_secret"),
        (Method::POST, create, with("signing_secret", json!("whsec_c2hvcnQ=")), "invalid_field", "signing_secret"),
        (Method::POST, create, with("id", json!("has space")), "invalid_field", "id"),
        (Method::POST, create, with("id", json!("x".repeat(65))), "invalid_field", "id"),
        (Method::POST, create, with("id", json!("default")), "invalid_field", "id"),
        (Method::POST, create, with("tenant_id", json!("a.b")), "invalid_field", "tenant_id"),
        (Method::POST, create, with("name", json!("  ")), "invalid_field", "name"),
        (
            Method::POST,
            create,
            with("filter", json!({"match": {"message.type": {"$gtx": 1}}})),
            "invalid_field",
            "filter.match.message.type.$gtx",
        ),
        (Method::POST, create, with("filter", json!({"match": {"sender.id": {"$in": 1}}})), "invalid_field", "filter.match.sender.id.$in"),
        (
            Method::POST,
            create,
            with("filter", json!({"match": {"message.text": {"$prefix": 5}}})),
            "invalid_field",
            "filter.match.message.text.$prefix",
        ),
        (Method::POST, create, with("filter", json!({"kind": ["nope"]})), "invalid_field", "filter.kind"),
        (Method::POST, create, with("filter", json!({"source": ["fax"]})), "invalid_field", "filter.source"),
        (Method::POST, create, with("filter", json!({"colour": ["red"]})), "invalid_field", "filter.colour"),
        (Method::POST, create, with("filter", json!("everything")), "invalid_field", "filter"),
        (Method::POST, create, with("headers", json!({"Content-Type": "text/plain"})), "invalid_field", "headers.Content-Type"),
        (Method::POST, create, with("headers", json!({"X-Api-Key": 12345})), "invalid_field", "headers.X-Api-Key"),
        (Method::POST, create, with("headers", json!({"X-Api-Key": "a\r\nInjected: yes"})), "invalid_field", "headers.X-Api-Key"),
        (Method::POST, create, with("headers", json!(["X-Api-Key"])), "invalid_field", "headers"),
        (Method::POST, create, with("ordering", json!("fifo")), "invalid_field", "ordering"),
        (Method::POST, create, with("max_in_flight", json!(0)), "invalid_field", "max_in_flight"),
        (Method::POST, create, with("max_in_flight", json!(1.5)), "invalid_field", "max_in_flight"),
        (Method::POST, create, with("rate_limit_per_s", json!(-1)), "invalid_field", "rate_limit_per_s"),
        (Method::POST, create, with("timeout_ms", json!(5)), "invalid_field", "timeout_ms"),
        (Method::POST, create, with("retry_schedule_s", json!([1, 0])), "invalid_field", "retry_schedule_s[1]"),
        (Method::POST, create, with("retry_schedule_s", json!([])), "invalid_field", "retry_schedule_s"),
        (Method::POST, create, with("max_age_s", json!(1)), "invalid_field", "max_age_s"),
        (Method::POST, create, with("paused", json!("yes")), "invalid_field", "paused"),
        (Method::PATCH, patch, json!({"id": "other"}), "invalid_field", "id"),
        (Method::PATCH, patch, json!({"signing_secret": signing_secret()}), "invalid_field", "signing_secret"),
        (Method::PATCH, patch, json!({"colour": "red"}), "unknown_field", "colour"),
        (Method::PATCH, patch, json!({"url": "ftp://x.example.com/"}), "invalid_field", "url"),
        (Method::PATCH, patch, json!({"url": null}), "invalid_field", "url"),
        (Method::PATCH, patch, json!({"tenant_id": "a b"}), "invalid_field", "tenant_id"),
        (
            Method::PATCH,
            patch,
            json!({"filter": {"match": {"message.type": {"$gtx": 1}}}}),
            "invalid_field",
            "filter.match.message.type.$gtx",
        ),
        (Method::PATCH, patch, json!({"filter": {"kind": ["nope"]}}), "invalid_field", "filter.kind"),
        (Method::PATCH, patch, json!({"headers": {"Host": "evil"}}), "invalid_field", "headers.Host"),
        (Method::PATCH, patch, json!({"max_in_flight": 0}), "invalid_field", "max_in_flight"),
        (Method::PATCH, patch, json!({"retry_schedule_s": [5, 90000]}), "invalid_field", "retry_schedule_s[1]"),
        (Method::PATCH, patch, json!({"state": "active"}), "invalid_field", "state"),
        (Method::POST, rotate, json!({}), "invalid_field", "signing_secret"),
        (Method::POST, rotate, json!({"signing_secret": "not-whsec-12345"}), "invalid_field", "signing_secret"),
        (Method::POST, rotate, json!({"signing_secret": "whsec_c2hvcnQ="}), "invalid_field", "signing_secret"),
        (
            Method::POST,
            rotate,
            json!({"signing_secret": signing_secret(), "previous_valid_for_s": -1}),
            "invalid_field",
            "previous_valid_for_s",
        ),
        (
            Method::POST,
            rotate,
            json!({"signing_secret": signing_secret(), "previous_valid_for_s": 99_999_999}),
            "invalid_field",
            "previous_valid_for_s",
        ),
        (Method::POST, rotate, json!({"signing_secret": signing_secret(), "colour": 1}), "unknown_field", "colour"),
    ];
    for (method, path, body, code, field) in cases {
        let answer = api.send(method.clone(), path, Some(&body.to_string()), Some(TOKEN)).await;
        assert_eq!(answer.status, 422, "{method} {path} {body}: {}", answer.text);
        assert_eq!(answer.error(), (code.to_string(), Some(field.to_string())), "{method} {path} {body}");
        assert!(!answer.text.contains("12345"), "a value is quoted: {}", answer.text);
    }

    // 409 on a taken id; 400 on a body that is not an object; 413 over the limit.
    let dup = api.post(create, &base).await;
    assert_eq!((dup.status, dup.error()), (409, ("conflict".to_string(), Some("id".to_string()))), "{}", dup.text);
    for body in ["", "not json", "[1]", "{\"url\": "] {
        let answer = api.send(Method::POST, create, Some(body), Some(TOKEN)).await;
        assert_eq!((answer.status, answer.error().0.as_str()), (400, "invalid_json"), "{body:?}");
        let answer = api.send(Method::PATCH, patch, Some(body), Some(TOKEN)).await;
        assert_eq!(answer.status, 400, "{body:?}");
    }
    let huge = api.post(create, &with("name", json!("n".repeat(100_000)))).await;
    assert_eq!(huge.status, 413);

    // 404 on every route for an unknown or impossible id.
    for id in ["nope", "not%20an%20id"] {
        for (method, suffix, body) in [
            (Method::GET, "", None),
            (Method::PATCH, "", Some(r#"{"name":"x"}"#)),
            (Method::DELETE, "", None),
            (Method::POST, "/rotate-secret", Some(r#"{"signing_secret":"whsec_MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY="}"#)),
            (Method::POST, "/pause", None),
            (Method::POST, "/resume", None),
            (Method::POST, "/test", None),
        ] {
            let path = format!("/api/v1/destinations/{id}{suffix}");
            let answer = api.send(method.clone(), &path, body, Some(TOKEN)).await;
            assert_eq!((answer.status, answer.error().0.as_str()), (404, "not_found"), "{method} {path}: {}", answer.text);
        }
    }

    // List queries.
    for (query, status, field) in [
        ("limit=0", 422, "limit"),
        ("limit=500", 422, "limit"),
        ("tenant_id=a.b", 422, "tenant_id"),
        ("cursor=..", 422, "cursor"),
        ("source=x", 400, "source"),
    ] {
        let answer = api.get(&format!("/api/v1/destinations?{query}")).await;
        assert_eq!(answer.status, status, "{query}: {}", answer.text);
        assert_eq!(answer.error().1.as_deref(), Some(field), "{query}");
    }

    // No token: 401 on every destination route.
    for (method, path) in [
        (Method::GET, "/api/v1/destinations"),
        (Method::POST, "/api/v1/destinations"),
        (Method::GET, "/api/v1/destinations/bad-base"),
        (Method::PATCH, "/api/v1/destinations/bad-base"),
        (Method::DELETE, "/api/v1/destinations/bad-base"),
        (Method::POST, "/api/v1/destinations/bad-base/rotate-secret"),
        (Method::POST, "/api/v1/destinations/bad-base/pause"),
        (Method::POST, "/api/v1/destinations/bad-base/resume"),
        (Method::POST, "/api/v1/destinations/bad-base/test"),
    ] {
        let answer = api.send(method.clone(), path, Some("{}"), None).await;
        assert_eq!(answer.status, 401, "{method} {path}");
    }

    // Nothing was written: not a row, not an outbox entry, not a key.
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(snapshot(&stack, &db).await, before);
    assert_logs_clean();
}

#[tokio::test]
async fn the_openapi_document_lists_every_destination_route() {
    let stack = Stack::start(Options::default()).await;
    let doc: Answer = stack.api.get("/api/v1/openapi.json").await;
    assert_eq!(doc.status, 200);
    let doc = doc.json();
    let paths = doc["paths"].as_object().expect("paths");
    for (path, method) in [
        ("/api/v1/destinations", "post"),
        ("/api/v1/destinations", "get"),
        ("/api/v1/destinations/{id}", "get"),
        ("/api/v1/destinations/{id}", "patch"),
        ("/api/v1/destinations/{id}", "delete"),
        ("/api/v1/destinations/{id}/rotate-secret", "post"),
        ("/api/v1/destinations/{id}/pause", "post"),
        ("/api/v1/destinations/{id}/resume", "post"),
        ("/api/v1/destinations/{id}/test", "post"),
    ] {
        assert!(paths[path].get(method).is_some(), "{method} {path}");
        assert_eq!(paths[path][method]["tags"], json!(["destinations"]), "{method} {path}");
    }
    let schemas = &doc["components"]["schemas"];
    for schema in
        ["CreateDestination", "UpdateDestination", "RotateDestinationSecret", "DestinationView", "DestinationPage", "DestinationTestResult"]
    {
        assert!(schemas.get(schema).is_some(), "{schema}");
    }
    let view = &schemas["DestinationView"]["properties"];
    assert!(view.get("signing_secret").is_none() && view.get("headers").is_none());
    for field in ["state", "header_names", "signing_secret_set", "previous_secret_valid_until", "filter", "paused"] {
        assert!(view.get(field).is_some(), "{field}");
    }
    assert_eq!(schemas["CreateDestination"]["properties"]["signing_secret"]["writeOnly"], true);
    assert_eq!(schemas["RotateDestinationSecret"]["properties"]["signing_secret"]["writeOnly"], true);
    assert_logs_clean();
}

#[tokio::test]
async fn at_start_the_bucket_is_reconciled_with_postgres() {
    let mut stack = Stack::start(Options::default()).await;
    stack.api.create_destination(&json!({"id": "truth", "tenant_id": "acme", "name": "truth", "url": "https://t.example.com/", "signing_secret": signing_secret()})).await;
    let good = wait_record(&stack, "truth", SECOND, |_| true).await;
    stack.stop_setup_api().await;

    // While it is down the bucket drifts: a stale copy, and two Postgres never had (`default`
    // among them, which the forwarders ignore in the bucket).
    let store = stack.destinations_bucket().await;
    let mut stale = good.clone();
    stale.name = Some("drifted".into());
    store.put("truth", serde_json::to_vec(&stale).expect("json").into()).await.expect("put");
    let mut ghost = good.clone();
    ghost.id = "ghost".into();
    store.put("ghost", serde_json::to_vec(&ghost).expect("json").into()).await.expect("put");
    let mut default = good.clone();
    default.id = "default".into();
    store.put("default", serde_json::to_vec(&default).expect("json").into()).await.expect("put");

    stack.restart_setup_api().await;
    // Live means reconciled: no waiting.
    assert_eq!(bucket_record(&stack, "truth").await.map(|(r, _)| r), Some(good));
    assert!(bucket_record(&stack, "ghost").await.is_none());
    assert!(bucket_record(&stack, "default").await.is_none());
    assert_logs_clean();
}

#[tokio::test]
async fn a_change_made_while_nats_is_down_reaches_the_bucket_when_it_returns() {
    let mut stack = Stack::start(Options::default()).await;
    stack
        .api
        .create_destination(
            &json!({"id": "kept", "tenant_id": "acme", "url": "https://k.example.com/", "signing_secret": signing_secret()}),
        )
        .await;
    stack
        .api
        .create_destination(
            &json!({"id": "doomed", "tenant_id": "acme", "url": "https://d.example.com/", "signing_secret": signing_secret()}),
        )
        .await;
    wait_record(&stack, "kept", SECOND, |_| true).await;
    wait_record(&stack, "doomed", SECOND, |_| true).await;

    stack.nats.kill();
    stack
        .api
        .create_destination(
            &json!({"id": "born", "tenant_id": "acme", "url": "https://b.example.com/", "signing_secret": signing_secret()}),
        )
        .await;
    assert_eq!(stack.api.post("/api/v1/destinations/kept/pause", &json!({})).await.status, 200);
    assert_eq!(stack.api.delete("/api/v1/destinations/doomed").await.status, 204);
    let db = stack.db().await;
    let pending: i64 = sqlx::query_scalar("SELECT count(*) FROM destination_outbox").fetch_one(&db).await.expect("count");
    assert!(pending >= 3, "the outbox holds the changes: {pending}");
    tokio::time::sleep(Duration::from_secs(6)).await;

    stack.nats.restart();
    wait_for("the outage's changes in the bucket", Duration::from_secs(30), || async {
        let born = bucket_record(&stack, "born").await.is_some();
        let kept = bucket_record(&stack, "kept").await.is_some_and(|(r, _)| r.paused);
        let doomed_gone = bucket_record(&stack, "doomed").await.is_none();
        (born && kept && doomed_gone).then_some(())
    })
    .await;
    wait_for("the outbox emptied", Duration::from_secs(5), || async {
        let n: i64 = sqlx::query_scalar("SELECT count(*) FROM destination_outbox").fetch_one(&db).await.ok()?;
        (n == 0).then_some(())
    })
    .await;
    stack.stop_setup_api().await;
    assert_logs_clean();
}

#[tokio::test]
async fn destinations_declared_in_the_configuration_are_imported_and_kept() {
    let mut stack = Stack::start(Options::default()).await;
    let declared = signing_secret();
    let dir = std::env::temp_dir().join(format!("hookline-destinations-test-{}-{}", std::process::id(), hex::encode(rand_bytes())));
    std::fs::create_dir_all(&dir).expect("dir");
    let path = dir.join("hookline.toml");
    std::fs::write(&path, format!("[[destinations]]\nid = \"declared\"\ntenant_id = \"acme\"\nurl = \"https://declared.example.com/\"\nsigning_secret = \"{declared}\"\n")).expect("write");
    let from_file = hookline_shared::config::Config::load_with_env(
        &hookline_shared::config::Sources { file: Some(path) },
        &[("HOOKLINE_SECRETS__KEY".to_string(), stack.config.secrets.key.as_ref().expect("key").expose().to_string())],
    )
    .expect("loads");
    stack.config.destinations = from_file.destinations;
    stack.restart_setup_api().await;
    assert_eq!(stack.api.get("/api/v1/destinations/declared").await.status, 200);
    wait_record(&stack, "declared", SECOND, |_| true).await;
    // An API change made since wins over the declaration at the next start.
    stack.api.patch("/api/v1/destinations/declared", &json!({"name": "renamed"})).await;
    stack.restart_setup_api().await;
    assert_eq!(stack.api.get("/api/v1/destinations/declared").await.json()["name"], "renamed");
    let _ = std::fs::remove_dir_all(&dir);
    assert_logs_clean();
}

#[tokio::test]
async fn rotate_key_reseals_destinations_under_the_new_key() {
    let mut stack = Stack::start(Options::default()).await;
    let old_key = stack.config.secrets.key.clone().expect("key");
    let first = signing_secret();
    let second = signing_secret();
    let key = api_key("rotate-key");
    stack.api.create_destination(&json!({"id": "rk", "tenant_id": "acme", "url": "https://rk.example.com/", "signing_secret": first, "headers": {"X-Api-Key": key}})).await;
    let rotated = stack
        .api
        .post("/api/v1/destinations/rk/rotate-secret", &json!({"signing_secret": second, "previous_valid_for_s": 3600}))
        .await
        .json();
    stack.stop_setup_api().await;

    let new_key = generate_key_base64().expect("key");
    secret(new_key.expose());
    let previous = format!("[\"{}\"]", old_key.expose());
    let db_url = stack.db_url.clone();
    let config = harness::config(
        &stack.nats.url(),
        &[
            ("HOOKLINE_DATABASE__URL", &db_url),
            ("HOOKLINE_SETUP_API__TOKENS", TOKEN),
            ("HOOKLINE_SECRETS__KEY", new_key.expose()),
            ("HOOKLINE_SECRETS__PREVIOUS_KEYS", &previous),
        ],
    );
    assert_eq!(hookline_setup_api::rotate_key(&config).await.expect("rotates"), 1);
    assert_eq!(hookline_setup_api::rotate_key(&config).await.expect("again"), 0);

    let new_only = Keyring::new(SecretsKey::from_base64(&new_key).expect("key"), vec![]);
    let old_only = Keyring::new(SecretsKey::from_base64(&old_key).expect("key"), vec![]);
    let db = stack.db().await;
    let (kid, updated_at): (String, time::OffsetDateTime) =
        sqlx::query_as("SELECT key_id, updated_at FROM destinations WHERE id = 'rk'").fetch_one(&db).await.expect("row");
    assert_eq!(kid, new_only.current_id());
    assert_eq!(
        hookline_shared::timefmt::to_rfc3339(updated_at),
        rotated["updated_at"].as_str().expect("time"),
        "re-sealing changes nothing else"
    );
    let (record, _) = bucket_record(&stack, "rk").await.expect("in the bucket");
    assert!(record.open(&old_only).is_err());
    let opened = record.open(&new_only).expect("opens with the new key alone");
    let now = time::OffsetDateTime::now_utc();
    assert_eq!(opened.signing_secrets(now).into_iter().map(|s| s.expose().to_string()).collect::<Vec<_>>(), [second, first]);
    assert_eq!(opened.headers["X-Api-Key"].expose(), key);
    assert_logs_clean();
}

/// The whole way: a destination created, paused and resumed through the API is felt by a running
/// forwarder within a second of the answer, with no restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_change_through_the_api_is_felt_by_a_running_forwarder_within_a_second() {
    let stack = Stack::start(Options::default()).await;
    let target = hookline_shared::harness::target::Target::start(&[]).await;
    let shutdown = CancellationToken::new();
    let forwarder = {
        let (config, shutdown) = (stack.config.clone(), shutdown.clone());
        tokio::spawn(async move {
            let _ = hookline_forwarder::worker::run(&config, hookline_shared::metrics::Metrics::new(), None, shutdown).await;
        })
    };
    let js = stack.nats.jetstream().await;
    let send = |id: &'static str| {
        let js = js.clone();
        async move {
            let body = json!({"id": id, "schema_version": 1, "kind": "message", "source": "telegram", "platform": "telegram",
                "provider": "telegram", "tenant_id": "acme", "channel_id": "tg", "received_at": hookline_shared::timefmt::now_rfc3339()});
            let mut headers = async_nats::HeaderMap::new();
            headers.insert("Nats-Msg-Id", id);
            js.publish_with_headers("hookline.events.acme.telegram.message", headers, body.to_string().into())
                .await
                .expect("publish")
                .await
                .expect("ack");
        }
    };
    let secret = generate_signing_secret().expect("secret");
    let created = stack
        .api
        .post("/api/v1/destinations", &json!({"id": "live", "url": target.url, "signing_secret": secret.expose(), "tenant_id": "acme"}))
        .await;
    assert_eq!(created.status, 201, "{}", created.text);
    let answered = Instant::now();
    // Its consumer exists (the forwarder saw it) within a second of the answer.
    let js_ref = &js;
    wait_for("the forwarder set up the new destination", Duration::from_secs(5), || async move {
        js_ref
            .get_stream("HOOKLINE_EVENTS")
            .await
            .ok()?
            .get_consumer::<async_nats::jetstream::consumer::pull::Config>("destination-live")
            .await
            .ok()
            .map(|_| ())
    })
    .await;
    assert!(answered.elapsed() < Duration::from_secs(1), "the forwarder saw the destination {:?} after the answer", answered.elapsed());
    send("api-1").await;
    let t = &target;
    wait_for("delivered", Duration::from_secs(5), || async move { t.ids().contains("api-1").then_some(()) }).await;

    let paused = stack.api.post("/api/v1/destinations/live/pause", &json!({})).await;
    assert_eq!(paused.status, 200, "{}", paused.text);
    tokio::time::sleep(Duration::from_secs(1)).await;
    send("api-2").await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(!target.ids().contains("api-2"), "delivered while paused through the API");
    let resumed = stack.api.post("/api/v1/destinations/live/resume", &json!({})).await;
    assert_eq!(resumed.status, 200, "{}", resumed.text);
    let answered = Instant::now();
    wait_for("delivered after resume", Duration::from_secs(5), || async move { t.ids().contains("api-2").then_some(()) }).await;
    assert!(answered.elapsed() < Duration::from_secs(1), "resume felt {:?} after the answer", answered.elapsed());
    shutdown.cancel();
    let _ = tokio::time::timeout(Duration::from_secs(10), forwarder).await;
}

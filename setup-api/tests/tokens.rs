//! API tokens, scopes and the audit log against real Postgres and nats-server: a walk over every
//! route of the OpenAPI document with a foreign tenant's token (nothing of the other tenant is
//! shown or touched; a route the walk does not know fails it), the same walk with a read-only
//! token (403 on every change), revocation seen by a second, independent setup-api server on
//! the same Postgres within a second, a tenant's destination whose name resolves to 127.0.0.1
//! refused when written and, when it slipped through, not delivered to at connect time, the
//! audit entries of a session of changes, the limit on failed authentications, and no token
//! value in Postgres, a log line or an answer after its creation.

mod common;

use axum::http::Method;
use serde_json::{json, Value};
use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};
use tokio::net::TcpListener;

use common::{assert_logs_clean, assert_no_secret, secret, start_setup_api, Api, Options, Stack, TOKEN};

/// A Standard Webhooks signing secret made from `label`, registered as a secret.
fn whsec(label: &str) -> String {
    use base64::Engine;
    secret(format!("whsec_{}", base64::engine::general_purpose::STANDARD.encode(format!("{label}-signing-key-0123456789abcdef"))))
}

/// Creates a token as the bootstrap admin: `(id, value)`; the value is registered as a secret
/// (no later answer, log line or table may hold it).
async fn create_token(api: &Api, body: Value) -> (String, String) {
    let answer = api.send_unchecked(Method::POST, "/api/v1/tokens", Some(&body.to_string()), Some(TOKEN)).await;
    assert_eq!(answer.status, 201, "{}", answer.text);
    let v = answer.json();
    let value = v["token"].as_str().expect("token").to_string();
    assert!(value.starts_with("hlk_") && value.len() >= 30, "{value}");
    secret(value.clone());
    (v["id"].as_str().expect("id").to_string(), value)
}

async fn call(api: &Api, token: &str, method: &Method, path: &str, body: Option<&Value>) -> common::Answer {
    let body = body.map(Value::to_string);
    api.send(method.clone(), path, body.as_deref(), Some(token)).await
}

/// What one tenant owns, made by the admin: a channel, a destination, a dead letter, a raw
/// webhook and an event in the streams.
struct Owned {
    channel: String,
    destination: String,
    dlq_seq: u64,
    raw_seq: u64,
    event_id: String,
}

async fn make_tenant(stack: &Stack, tenant: &str) -> Owned {
    let api = &stack.api;
    let channel = api
        .create(&json!({"tenant_id": tenant, "source": "whatsapp", "secret": secret(format!("meta-app-secret-{tenant}-1"))}))
        .await["id"]
        .as_str()
        .expect("id")
        .to_string();
    let destination = api
        .create_destination(&json!({
            "tenant_id": tenant, "url": format!("https://{tenant}.example.com/in"),
            "signing_secret": whsec(tenant),
            "headers": {"X-Api-Key": secret(format!("{tenant}-header-value-1"))},
        }))
        .await["id"]
        .as_str()
        .expect("id")
        .to_string();
    // A forward-stage dead letter of this tenant, as the forwarder writes it.
    let js = stack.nats.jetstream().await;
    hookline_shared::jetstream::ensure_streams(&js, &stack.config.streams).await.expect("streams");
    let mut original = async_nats::HeaderMap::new();
    original.insert(hookline_shared::names::header::TENANT, tenant);
    let subject = format!("hookline.events.{tenant}.whatsapp");
    hookline_shared::dlq::publish(
        &js,
        &hookline_shared::metrics::Metrics::new(),
        hookline_shared::dlq::DeadLetter {
            stage: "forward",
            reason: "rejected_4xx",
            detail: "HTTP 400",
            attempts: 1,
            subject: &subject,
            seq: 7,
            who: tenant,
            body: bytes::Bytes::from_static(b"{}"),
            original_headers: Some(&original),
            last_status: Some("400"),
            destination: Some(&destination),
        },
        Duration::from_secs(5),
    )
    .await
    .expect("dead letter");
    let letters = api.get(&format!("/api/v1/dlq?tenant={tenant}")).await;
    assert_eq!(letters.status, 200, "{}", letters.text);
    let dlq_seq = letters.json().as_array().and_then(|a| a.last()).and_then(|l| l["seq"].as_u64()).expect("the dead letter is listed");
    // A raw webhook of its channel and an event, as ingest and the normalizer store them.
    let mut raw_headers = async_nats::HeaderMap::new();
    raw_headers.insert(hookline_shared::names::header::TENANT, tenant);
    raw_headers.insert(hookline_shared::names::header::CHANNEL, channel.as_str());
    let raw_seq = js
        .publish_with_headers(
            hookline_shared::names::raw_subject(hookline_shared::Source::Whatsapp, &channel),
            raw_headers,
            bytes::Bytes::from(format!("{{\"object\":\"whatsapp_business_account\",\"tenant\":\"{tenant}\"}}")),
        )
        .await
        .expect("publish raw")
        .await
        .expect("raw acked")
        .sequence;
    let event = hookline_setup_api::destinations::probe::synthetic_event(tenant, time::OffsetDateTime::now_utc()).expect("event");
    let mut event_headers = async_nats::HeaderMap::new();
    event_headers.insert("Nats-Msg-Id", event.id.as_str());
    event_headers.insert(hookline_shared::names::header::TENANT, tenant);
    let event_subject = hookline_shared::names::event_subject(tenant, &event.platform, "other");
    let event_seq = js
        .publish_with_headers(event_subject.clone(), event_headers, serde_json::to_vec(&event).expect("json").into())
        .await
        .expect("publish event")
        .await
        .expect("event acked")
        .sequence;
    // Its index entry, as the normalizer writes it, so that its owner finds it by id (and a
    // foreign token's 404 means hidden, not absent).
    for m in hookline_shared::lookup_records::index_messages(&event, event_seq, &event_subject) {
        js.publish(m.subject, m.payload).await.expect("publish index").await.expect("index acked");
    }
    Owned { channel, destination, dlq_seq, raw_seq, event_id: event.id }
}

/// What the admin sees of `owned` (and of every token): compared before and after a walk.
async fn snapshot(api: &Api, tenant: &str, owned: &Owned) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    for path in [
        format!("/api/v1/channels/{}", owned.channel),
        format!("/api/v1/destinations/{}", owned.destination),
        format!("/api/v1/dlq/{}", owned.dlq_seq),
        format!("/api/v1/dlq?tenant={tenant}"),
        format!("/api/v1/channels?tenant_id={tenant}"),
        format!("/api/v1/destinations?tenant_id={tenant}"),
        "/api/v1/tokens".to_string(),
    ] {
        let answer = api.get(&path).await;
        assert_eq!(answer.status, 200, "{path}: {}", answer.text);
        // Ages move on their own.
        let mut v = answer.json();
        strip_ages(&mut v);
        out.insert(path, v.to_string());
    }
    out
}

fn strip_ages(v: &mut Value) {
    match v {
        Value::Object(m) => {
            m.remove("age_s");
            m.remove("last_used_at");
            m.values_mut().for_each(strip_ages);
        }
        Value::Array(a) => a.iter_mut().for_each(strip_ages),
        _ => {}
    }
}

/// The OpenAPI document's routes: `(METHOD, path template)`.
async fn documented_routes(api: &Api) -> Vec<(String, String)> {
    let doc = api.get("/api/v1/openapi.json").await.json();
    let mut routes = Vec::new();
    for (path, item) in doc["paths"].as_object().expect("paths") {
        for method in ["get", "post", "put", "patch", "delete"] {
            if item.get(method).is_some() {
                routes.push((method.to_uppercase(), path.clone()));
            }
        }
    }
    assert!(routes.len() >= 25, "{routes:?}");
    routes
}

/// What the walk sends to a route, with `victim`'s ids and tenant: the path, and the body.
/// Panics for a route it does not know: a new route must be added here, with its expectation.
fn request_for(method: &str, template: &str, victim_tenant: &str, victim: &Owned, victim_token: &str) -> (String, Option<Value>) {
    let path = template
        .replace("/channels/{id}", &format!("/channels/{}", victim.channel))
        .replace("/destinations/{id}", &format!("/destinations/{}", victim.destination))
        .replace("/tokens/{id}", &format!("/tokens/{victim_token}"))
        .replace("{platform}", "telegram")
        .replace("/raw/{seq}", &format!("/raw/{}", victim.raw_seq))
        .replace("{event_id}", &victim.event_id)
        .replace("{seq}", &victim.dlq_seq.to_string());
    let t = victim_tenant;
    let body = match (method, template) {
        ("GET", "/api/v1/channels") => return (format!("{path}?tenant_id={t}"), None),
        ("GET", "/api/v1/destinations") => return (format!("{path}?tenant_id={t}"), None),
        ("GET", "/api/v1/dlq") => return (format!("{path}?tenant={t}"), None),
        ("GET", "/api/v1/audit") => return (format!("{path}?resource={}", victim.channel), None),
        // The event routes of the events branch (GET /api/v1/events/{event_id}, /raw/{seq},
        // /events?...): the victim's event and raw webhook; the list without parameters.
        ("GET", "/api/v1/events/{event_id}" | "/api/v1/raw/{seq}" | "/api/v1/events") => None,
        ("GET", _) | ("DELETE", _) => None,
        ("POST", "/api/v1/channels") => Some(json!({"tenant_id": t, "source": "whatsapp", "secret": "meta-app-secret-intruder-1"})),
        ("PATCH", "/api/v1/channels/{id}") => Some(json!({"name": "taken over"})),
        ("POST", "/api/v1/channels/{id}/rotate-secret") => Some(json!({"secret": "meta-app-secret-intruder-2"})),
        ("POST", "/api/v1/destinations") => {
            Some(json!({"tenant_id": t, "url": "https://intruder.example.com/", "signing_secret": whsec("intruder")}))
        }
        ("PATCH", "/api/v1/destinations/{id}") => Some(json!({"url": "https://intruder.example.com/"})),
        ("POST", "/api/v1/destinations/{id}/rotate-secret") => Some(json!({"signing_secret": whsec("intruder")})),
        ("POST", "/api/v1/destinations/{id}/pause" | "/api/v1/destinations/{id}/resume" | "/api/v1/destinations/{id}/test") => None,
        ("POST", "/api/v1/integrations/{platform}/setup") => Some(json!({"tenant_id": t, "bot_token": "123456:intruder-bot-token"})),
        ("POST", "/api/v1/replay" | "/api/v1/replays") => {
            Some(json!({"stream": "events", "selection": {"tenant": t}, "destination": victim.destination}))
        }
        ("POST", "/api/v1/dlq/redrive" | "/api/v1/dlq/purge") => Some(json!({"selection": {"tenant": t}, "seqs": [victim.dlq_seq]})),
        ("POST", "/api/v1/tokens") => Some(json!({"name": "intruder", "tenant_id": t})),
        (m, p) => panic!("{m} {p} is in the OpenAPI document but not in the walk of tests/tokens.rs: add it with what it must answer"),
    };
    (path, body)
}

/// The statuses a foreign tenant's token may get from a route (never a 2xx that shows or
/// changes the other tenant's resource).
fn foreign_expectation(method: &str, template: &str) -> &'static [u16] {
    match (method, template) {
        // Lists, counts and selections: answered, without the other tenant.
        (
            "GET",
            "/api/v1/channels"
            | "/api/v1/destinations"
            | "/api/v1/dlq"
            | "/api/v1/audit"
            | "/api/v1/openapi.json"
            | "/api/v1/events"
            | "/api/v1/overview",
        ) => &[200],
        ("POST", "/api/v1/replay" | "/api/v1/dlq/redrive" | "/api/v1/dlq/purge") => &[200, 404],
        // A background replay of the other tenant's selection selects nothing (or its
        // destination is absent).
        ("POST", "/api/v1/replays") => &[202, 404],
        // Writes naming the other tenant.
        ("POST", "/api/v1/channels" | "/api/v1/destinations" | "/api/v1/integrations/{platform}/setup") => &[403],
        // Token management: admins only.
        (_, p) if p.starts_with("/api/v1/tokens") => &[403],
        // The other tenant's resources are absent.
        _ => &[404],
    }
}

#[tokio::test]
async fn every_route_of_the_openapi_document_hides_another_tenants_resources() {
    let stack = Stack::start(Options::default()).await;
    let api = &stack.api;
    let globex = make_tenant(&stack, "globex").await;
    let acme_own = make_tenant(&stack, "acme").await;
    let (globex_token_id, _) = create_token(api, json!({"name": "globex ci", "tenant_id": "globex"})).await;
    let (_, acme) = create_token(api, json!({"name": "acme ops", "tenant_id": "acme"})).await;

    // The acme token works: it sees its own channel, destination and dead letter.
    let mine = call(api, &acme, &Method::GET, "/api/v1/channels", None).await;
    assert_eq!(mine.status, 200, "{}", mine.text);
    assert!(mine.text.contains(&acme_own.channel) && !mine.text.contains(&globex.channel), "{}", mine.text);
    let mine = call(api, &acme, &Method::GET, "/api/v1/destinations", None).await;
    assert!(mine.text.contains(&acme_own.destination) && !mine.text.contains(&globex.destination), "{}", mine.text);
    let mine = call(api, &acme, &Method::GET, "/api/v1/dlq", None).await;
    assert!(mine.text.contains("acme") && !mine.text.contains("globex"), "{}", mine.text);
    assert_eq!(call(api, &acme, &Method::GET, &format!("/api/v1/dlq/{}", acme_own.dlq_seq), None).await.status, 200);

    let before = snapshot(api, "globex", &globex).await;
    let routes = documented_routes(api).await;
    for (method, template) in &routes {
        let (path, body) = request_for(method, template, "globex", &globex, &globex_token_id);
        let m = Method::from_bytes(method.as_bytes()).expect("method");
        let answer = call(api, &acme, &m, &path, body.as_ref()).await;
        let allowed = foreign_expectation(method, template);
        assert!(allowed.contains(&answer.status), "{method} {path} answered {} to a foreign token: {}", answer.status, answer.text);
        if (200..300).contains(&answer.status) {
            for leak in ["globex", &globex.channel, &globex.destination] {
                assert!(!answer.text.contains(leak), "{method} {path} shows {leak}: {}", answer.text);
            }
            for count in ["selected", "events", "redriven", "purged"] {
                if let Some(n) = answer.json().get(count).filter(|n| n.is_number()) {
                    assert_eq!(n, 0, "{method} {path}: {}", answer.text);
                }
            }
        }
    }
    let after = snapshot(api, "globex", &globex).await;
    assert_eq!(before, after, "a foreign token changed the other tenant's resources");
    assert_logs_clean();
}

#[tokio::test]
async fn a_read_only_token_is_refused_on_every_change() {
    let stack = Stack::start(Options::default()).await;
    let api = &stack.api;
    let globex = make_tenant(&stack, "globex").await;
    let (_, reader) = create_token(api, json!({"name": "globex dashboard", "tenant_id": "globex", "read_only": true})).await;
    let (admin_reader_id, admin_reader) = create_token(api, json!({"name": "auditor", "read_only": true})).await;
    let before = snapshot(api, "globex", &globex).await;
    for (token, label) in [(&reader, "tenant read-only"), (&admin_reader, "admin read-only")] {
        let mut changes = 0;
        for (method, template) in documented_routes(api).await {
            let (path, body) = request_for(&method, &template, "globex", &globex, &admin_reader_id);
            let m = Method::from_bytes(method.as_bytes()).expect("method");
            let answer = call(api, token, &m, &path, body.as_ref()).await;
            if method == "GET" {
                // Reads work (token management is for admins that may write); the walk names no
                // replay run, so that one is absent.
                if template == "/api/v1/replays/{run_id}" {
                    assert_eq!(answer.status, 404, "{label}: {method} {path}: {}", answer.text);
                } else if !template.starts_with("/api/v1/tokens") {
                    assert_eq!(answer.status, 200, "{label}: {method} {path}: {}", answer.text);
                }
            } else {
                changes += 1;
                assert_eq!(answer.status, 403, "{label}: {method} {path}: {}", answer.text);
                assert_eq!(answer.error().0, "forbidden");
            }
        }
        assert!(changes >= 15, "{changes}");
    }
    assert_eq!(before, snapshot(api, "globex", &globex).await, "a read-only token changed something");
}

#[tokio::test]
async fn a_revoked_token_is_refused_by_a_second_setup_api_within_a_second() {
    let stack = Stack::start(Options::default()).await;
    let api = &stack.api;
    // A second, independent setup-api server (its own state, cache and pool) on the same Postgres.
    let second = start_setup_api(&stack.config, TcpListener::bind("127.0.0.1:0").await.expect("bind")).await;
    let other = Api::new(&second.base);
    let (id, value) = create_token(api, json!({"name": "short-lived", "tenant_id": "acme"})).await;
    for a in [api, &other] {
        assert_eq!(a.send(Method::GET, "/api/v1/channels", None, Some(&value)).await.status, 200);
    }
    let listed = api.get("/api/v1/tokens").await.json();
    let mine = listed["tokens"].as_array().expect("tokens").iter().find(|t| t["id"] == id.as_str()).expect("listed").clone();
    assert!(mine["last_used_at"].is_string(), "{mine}");
    assert_eq!(mine["tenant_id"], "acme");
    assert!(mine.get("token").is_none() && mine.get("hash").is_none(), "{mine}");

    // Keep the second server's cache warm right up to the revocation.
    assert_eq!(other.send(Method::GET, "/api/v1/channels", None, Some(&value)).await.status, 200);
    assert_eq!(api.delete(&format!("/api/v1/tokens/{id}")).await.status, 204);
    let revoked = Instant::now();
    assert_eq!(api.send(Method::GET, "/api/v1/channels", None, Some(&value)).await.status, 401, "the revoking server");
    loop {
        let status = other.send(Method::GET, "/api/v1/channels", None, Some(&value)).await.status;
        if status == 401 {
            break;
        }
        assert_eq!(status, 200);
        assert!(revoked.elapsed() < Duration::from_secs(1), "the second server still accepts the revoked token");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let seen_after = revoked.elapsed();
    assert!(seen_after < Duration::from_secs(1), "{seen_after:?}");
    assert_eq!(api.delete(&format!("/api/v1/tokens/{id}")).await.status, 404, "revoked twice");
    let listed = api.get("/api/v1/tokens").await;
    assert!(!listed.text.contains(&id), "a revoked token is not listed: {}", listed.text);
    second.stop().await;
}

#[tokio::test]
async fn a_tenants_destination_pointing_at_a_private_address_is_refused_when_written() {
    let stack = Stack::start(Options::default()).await;
    let api = &stack.api;
    let (_, acme) = create_token(api, json!({"name": "acme", "tenant_id": "acme"})).await;
    let body = |url: &str| json!({"url": url, "signing_secret": whsec("egress-test")});
    for url in [
        "http://localhost:9/in",
        "http://127.0.0.1:9/in",
        "http://[::1]/in",
        "http://[::ffff:127.0.0.1]/in",
        "http://10.1.2.3/in",
        "http://169.254.169.254/latest/meta-data",
        "http://metadata.google.internal/",
        "http://0.0.0.0/",
        "http://100.64.0.1/",
        "http://[fe80::1]/",
    ] {
        let answer = call(api, &acme, &Method::POST, "/api/v1/destinations", Some(&body(url))).await;
        assert_eq!(answer.status, 422, "{url}: {}", answer.text);
        assert_eq!(answer.error(), ("invalid_field".to_string(), Some("url".to_string())), "{url}");
    }
    // A name that resolves to 127.0.0.1 through DNS (here /etc/hosts) other than "localhost".
    let loopback_name = ["localhost.localdomain", "ip6-localhost", "localhost6"]
        .into_iter()
        .find(|n| std::net::ToSocketAddrs::to_socket_addrs(&(*n, 80)).is_ok_and(|mut a| a.all(|a| a.ip().is_loopback())));
    if let Some(name) = loopback_name {
        let answer = call(api, &acme, &Method::POST, "/api/v1/destinations", Some(&body(&format!("http://{name}:9/in")))).await;
        assert_eq!(answer.status, 422, "{name}: {}", answer.text);
        assert!(answer.text.contains("loopback"), "{}", answer.text);
    }
    // A public address is accepted; the destination is the tenant's and its egress is checked.
    let ok = call(api, &acme, &Method::POST, "/api/v1/destinations", Some(&body("https://93.184.216.34/in"))).await;
    assert_eq!(ok.status, 201, "{}", ok.text);
    let id = ok.json()["id"].as_str().expect("id").to_string();
    assert_eq!(ok.json()["tenant_id"], "acme");
    // Turning it to a private address is refused too, and changes nothing.
    let patch =
        call(api, &acme, &Method::PATCH, &format!("/api/v1/destinations/{id}"), Some(&json!({"url": "http://192.168.1.10/"}))).await;
    assert_eq!(patch.status, 422, "{}", patch.text);
    let bucket = stack.destinations_bucket().await;
    let record = hookline_shared::harness::wait_for("the record", Duration::from_secs(5), || {
        let bucket = bucket.clone();
        let id = id.clone();
        async move { bucket.get(&id).await.ok().flatten() }
    })
    .await;
    let record: hookline_shared::destination::DestinationRecord = serde_json::from_slice(&record).expect("record");
    assert!(record.restrict_egress && record.url == "https://93.184.216.34/in", "{record:?}");
    // An admin may point anywhere.
    let admin = api
        .post("/api/v1/destinations", &json!({"tenant_id": "acme", "url": "http://localhost:9/in", "signing_secret": whsec("admin")}))
        .await;
    assert_eq!(admin.status, 201, "{}", admin.text);
}

#[tokio::test]
async fn private_destinations_are_open_to_tenants_when_configured() {
    let stack = Stack::start(Options { extra: &[("HOOKLINE_SETUP_API__ALLOW_PRIVATE_DESTINATIONS", "true")], ..Default::default() }).await;
    let (_, acme) = create_token(&stack.api, json!({"name": "acme", "tenant_id": "acme"})).await;
    let body = json!({"url": "http://localhost:9/in", "signing_secret": whsec("open")});
    let answer = call(&stack.api, &acme, &Method::POST, "/api/v1/destinations", Some(&body)).await;
    assert_eq!(answer.status, 201, "{}", answer.text);
}

#[tokio::test]
async fn a_name_that_resolves_to_loopback_at_connect_time_is_not_delivered_to() {
    // The receiver listens on loopback; "rebind.test" passed the check when written (it pointed
    // elsewhere then) and now answers 127.0.0.1.
    let receiver = common::FakePlatform::start(|_| async { (200, "{}".to_string()) }).await;
    let port = receiver.base.rsplit(':').next().expect("port").to_string();
    let table = HashMap::from([("rebind.test".to_string(), vec!["127.0.0.1".parse().expect("ip")])]);
    let resolver = hookline_shared::egress::EgressResolver::with_table(table);
    let mut destination = hookline_shared::destination::Destination::default_from_config(&format!("http://rebind.test:{port}/in"), None);
    destination.restrict_egress = true;
    let deliverer =
        hookline_forwarder::deliver::Deliverer::for_destination_resolving(&destination, Duration::from_secs(2), 1, resolver.clone())
            .expect("deliverer");
    let (outcome, _, _) = deliverer.deliver("evt_1", bytes::Bytes::from_static(b"{}"), "").await;
    match outcome {
        hookline_forwarder::outcome::DeliveryOutcome::Retryable { reason, status: None, .. } => assert_eq!(reason, "egress_refused"),
        other => panic!("delivered or refused otherwise: {other:?}"),
    }
    assert!(receiver.calls().is_empty(), "the receiver was reached");
    // An IP literal never reaches a resolver: refused by the client's own check.
    let mut literal = hookline_shared::destination::Destination::default_from_config(&format!("{}/in", receiver.base), None);
    literal.restrict_egress = true;
    let deliverer = hookline_forwarder::deliver::Deliverer::for_destination(&literal, Duration::from_secs(2), 1).expect("deliverer");
    let (outcome, _, _) = deliverer.deliver("evt_2", bytes::Bytes::from_static(b"{}"), "").await;
    assert!(matches!(outcome, hookline_forwarder::outcome::DeliveryOutcome::Retryable { reason: "egress_refused", .. }), "{outcome:?}");
    assert!(receiver.calls().is_empty(), "the receiver was reached");
    // Without the restriction (an admin's destination) the same receiver is delivered to.
    let mut open = hookline_shared::destination::Destination::default_from_config(&format!("{}/in", receiver.base), None);
    open.restrict_egress = false;
    let deliverer = hookline_forwarder::deliver::Deliverer::for_destination(&open, Duration::from_secs(2), 1).expect("deliverer");
    let (outcome, _, _) = deliverer.deliver("evt_4", bytes::Bytes::from_static(b"{}"), "").await;
    assert!(matches!(outcome, hookline_forwarder::outcome::DeliveryOutcome::Delivered(_)), "{outcome:?}");
    assert_eq!(receiver.calls().len(), 1);
}

#[tokio::test]
async fn a_session_of_changes_is_in_the_audit_log() {
    let stack = Stack::start(Options::default()).await;
    let api = &stack.api;
    let (token_id, acme) = create_token(api, json!({"name": "acme deploy", "tenant_id": "acme"})).await;
    let (_, globex) = create_token(api, json!({"name": "globex", "tenant_id": "globex"})).await;
    let channel_secret = secret("meta-app-secret-audit-1");
    let created = call(
        api,
        &acme,
        &Method::POST,
        "/api/v1/channels",
        Some(&json!({"tenant_id": "acme", "source": "whatsapp", "secret": channel_secret})),
    )
    .await;
    assert_eq!(created.status, 201, "{}", created.text);
    let channel = created.json()["id"].as_str().expect("id").to_string();
    let path = format!("/api/v1/channels/{channel}");
    assert_eq!(call(api, &acme, &Method::PATCH, &path, Some(&json!({"name": "Support"}))).await.status, 200);
    let rotated =
        call(api, &acme, &Method::POST, &format!("{path}/rotate-secret"), Some(&json!({"secret": secret("meta-app-secret-audit-2")})))
            .await;
    assert_eq!(rotated.status, 200, "{}", rotated.text);
    let header_value = secret("audit-header-value-1");
    let dest = call(
        api,
        &acme,
        &Method::POST,
        "/api/v1/destinations",
        Some(&json!({"url": "https://93.184.216.34/in", "signing_secret": whsec("audit"), "headers": {"X-Api-Key": header_value}})),
    )
    .await;
    assert_eq!(dest.status, 201, "{}", dest.text);
    let destination = dest.json()["id"].as_str().expect("id").to_string();
    assert_eq!(call(api, &acme, &Method::POST, &format!("/api/v1/destinations/{destination}/pause"), None).await.status, 200);
    assert_eq!(call(api, &acme, &Method::DELETE, &path, None).await.status, 204);

    let log = call(api, &acme, &Method::GET, "/api/v1/audit", None).await;
    assert_eq!(log.status, 200, "{}", log.text);
    let entries = log.json()["entries"].as_array().expect("entries").clone();
    let got: Vec<(String, String, String)> = entries
        .iter()
        .map(|e| {
            (
                e["action"].as_str().unwrap_or("").into(),
                e["resource_type"].as_str().unwrap_or("").into(),
                e["resource_id"].as_str().unwrap_or("").into(),
            )
        })
        .collect();
    let want: Vec<(String, String, String)> = [
        ("delete", "channel", channel.as_str()),
        ("pause", "destination", destination.as_str()),
        ("create", "destination", destination.as_str()),
        ("rotate_secret", "channel", channel.as_str()),
        ("update", "channel", channel.as_str()),
        ("create", "channel", channel.as_str()),
        ("create", "token", token_id.as_str()),
    ]
    .iter()
    .map(|(a, b, c)| (a.to_string(), b.to_string(), c.to_string()))
    .collect();
    assert_eq!(got, want, "{}", log.text);
    for e in &entries[..6] {
        assert_eq!(e["token_id"], token_id.as_str());
        assert_eq!(e["token_name"], "acme deploy");
        assert_eq!(e["tenant_id"], "acme");
        assert!(e["at"].is_string());
    }
    assert_eq!(entries[4]["fields"], json!({"name": "Support"}));
    assert_eq!(entries[2]["fields"]["headers"], json!(["X-Api-Key"]));
    assert_eq!(entries[2]["fields"]["url"], "https://93.184.216.34/in");
    assert_no_secret("the audit log", &log.text);
    // Filters, pages.
    let one = call(api, &acme, &Method::GET, &format!("/api/v1/audit?resource={destination}"), None).await.json();
    assert_eq!(one["entries"].as_array().map(Vec::len), Some(2), "{one}");
    let page = call(api, &acme, &Method::GET, "/api/v1/audit?limit=3", None).await.json();
    assert_eq!(page["entries"].as_array().map(Vec::len), Some(3));
    let cursor = page["next_cursor"].as_str().expect("cursor").to_string();
    let next = call(api, &acme, &Method::GET, &format!("/api/v1/audit?limit=3&cursor={cursor}"), None).await.json();
    assert_eq!(next["entries"][0]["action"], "rotate_secret", "{next}");
    let by_token = api.get(&format!("/api/v1/audit?token={token_id}")).await.json();
    assert_eq!(by_token["entries"].as_array().map(Vec::len), Some(6), "{by_token}");
    // Another tenant sees none of it; the admin sees it all.
    let theirs = call(api, &globex, &Method::GET, "/api/v1/audit", None).await.json();
    assert!(!theirs.to_string().contains(&channel) && !theirs.to_string().contains("acme"), "{theirs}");
    let all = api.get("/api/v1/audit?limit=200").await.json();
    assert_eq!(all["entries"].as_array().map(Vec::len), Some(8), "{all}");
    // In Postgres too, without a secret.
    let db = stack.db().await;
    let rows: Vec<(String,)> = sqlx::query_as("SELECT fields::text FROM audit_log").fetch_all(&db).await.expect("audit rows");
    for (fields,) in rows {
        assert_no_secret("audit_log.fields", &fields);
    }
    assert_logs_clean();
}

#[tokio::test]
async fn failed_authentications_are_limited_per_address_without_slowing_valid_tokens() {
    let stack = Stack::start(Options { extra: &[("HOOKLINE_SETUP_API__AUTH_FAILURES_PER_MINUTE", "3")], ..Default::default() }).await;
    let api = &stack.api;
    let (_, valid) = create_token(api, json!({"name": "valid"})).await;
    for _ in 0..3 {
        assert_eq!(api.send(Method::GET, "/api/v1/channels", None, Some("wrong-token-0123456789")).await.status, 401);
    }
    let limited = api.send(Method::GET, "/api/v1/channels", None, Some("wrong-token-0123456789")).await;
    assert_eq!(limited.status, 429, "{}", limited.text);
    assert_eq!(limited.headers.get("retry-after").and_then(|v| v.to_str().ok()), Some("60"));
    assert_eq!(api.send(Method::GET, "/api/v1/channels", None, Some("hlk_00000000000000000000000000000000")).await.status, 429);
    assert_eq!(api.send(Method::GET, "/api/v1/channels", None, None).await.status, 429);
    // A created token from the same address is answered at once.
    let started = Instant::now();
    assert_eq!(api.send(Method::GET, "/api/v1/channels", None, Some(&valid)).await.status, 200);
    assert!(started.elapsed() < Duration::from_millis(500));
    let metrics = common::client().get(format!("{}/metrics", api.base)).send().await.expect("metrics").text().await.expect("text");
    assert!(metrics.contains("hookline_setup_api_auth_failures_total 6"), "{metrics}");
}

#[tokio::test]
async fn no_token_value_in_postgres_logs_or_answers() {
    let stack = Stack::start(Options::default()).await;
    let api = &stack.api;
    let (id, value) = create_token(api, json!({"name": "leak check", "tenant_id": "acme"})).await;
    // Use it: reads, a change, a refusal, the listing; `send` checks every answer for it.
    assert_eq!(api.send(Method::GET, "/api/v1/channels", None, Some(&value)).await.status, 200);
    let created = api
        .send(
            Method::POST,
            "/api/v1/channels",
            Some(&json!({"tenant_id": "acme", "source": "whatsapp", "secret": secret("meta-app-secret-leak-1")}).to_string()),
            Some(&value),
        )
        .await;
    assert_eq!(created.status, 201, "{}", created.text);
    assert_eq!(api.send(Method::GET, "/api/v1/tokens", None, Some(&value)).await.status, 403);
    assert_eq!(api.get("/api/v1/tokens").await.status, 200);
    assert_eq!(api.get(&format!("/api/v1/audit?token={id}")).await.status, 200);
    // Every table of the database, as text.
    let db = stack.db().await;
    let tables: Vec<(String,)> =
        sqlx::query_as("SELECT tablename::text FROM pg_tables WHERE schemaname = 'public'").fetch_all(&db).await.expect("tables");
    assert!(tables.iter().any(|(t,)| t == "api_tokens") && tables.iter().any(|(t,)| t == "audit_log"), "{tables:?}");
    let mut dump = String::new();
    for (table,) in &tables {
        let rows: Vec<(String,)> =
            sqlx::query_as(sqlx::AssertSqlSafe(format!("SELECT t::text FROM \"{table}\" t"))).fetch_all(&db).await.expect("rows");
        for (row,) in rows {
            dump.push_str(&row);
            dump.push('\n');
        }
    }
    assert!(dump.contains(&id), "the dump holds the token's row");
    assert!(!dump.contains(&value), "Postgres holds the token's value");
    let hex_digest = hex::encode(<sha2::Sha256 as sha2::Digest>::digest(value.as_bytes()));
    assert!(dump.contains(&hex_digest), "Postgres holds the token's SHA-256");
    assert_logs_clean();
    assert!(!common::captured_logs().contains(&value));
}

//! The lookup routes against real servers and a real pipeline (normalizer and forwarder running
//! in this process on the stack's nats-server): an event found by its platform message id and by
//! its conversation, shown with its raw webhook and its state at five destinations (delivered at
//! once; answered 500 then retried and delivered; answered 410 and dead-lettered; refused by its
//! filter; paused, so waiting), every attempt; the raw webhook by sequence; 404s; parameters at
//! fault named; the tenant narrowing of the library.

mod common;

use async_nats::HeaderMap;
use axum::http::Method;
use serde_json::{json, Value};
use std::time::Duration;
use tokio_util::sync::CancellationToken;

use common::{secret, Options, Stack};
use hookline_shared::destination::generate_signing_secret;
use hookline_shared::harness::{target::Target, wait_for};
use hookline_shared::metrics::Metrics;
use hookline_shared::names::header;

const TELEGRAM_TEXT: &str = include_str!("../../normalizer/tests/fixtures/telegram/message_text.json");

fn signing_secret() -> String {
    let s = generate_signing_secret().expect("rng").expose().to_string();
    secret(s.strip_prefix("whsec_").expect("prefix"));
    secret(s)
}

async fn publish_raw(js: &async_nats::jetstream::Context, body: &str) -> u64 {
    let mut headers = HeaderMap::new();
    headers.insert(header::SOURCE, "telegram");
    headers.insert(header::CHANNEL, "tg1");
    headers.insert(header::TENANT, "acme");
    headers.insert(header::RECEIVED_AT, hookline_shared::timefmt::now_rfc3339().as_str());
    headers.insert(header::CONTENT_TYPE, "application/json");
    let ack = js.publish_with_headers("hookline.raw.telegram.tg1", headers, body.to_string().into()).await.expect("publish");
    ack.await.expect("ack").sequence
}

fn state_of<'a>(view: &'a Value, destination: &str) -> &'a Value {
    view["destinations"]
        .as_array()
        .and_then(|all| all.iter().find(|d| d["destination"] == destination))
        .unwrap_or_else(|| panic!("no destination {destination} in {view}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_event_is_found_by_message_id_and_shown_with_its_raw_webhook_its_destinations_and_every_attempt() {
    let ok = Target::start(&[]).await;
    let flaky = Target::start(&[]).await;
    flaky.set_status(500);
    let rejecting = Target::start(&[]).await;
    rejecting.set_status(410);
    let extra = [
        ("HOOKLINE_FORWARDER__TARGET_URL", ok.url.as_str()),
        ("HOOKLINE_FORWARDER__RETRY_SCHEDULE_S", "[1, 1, 1, 1]"),
        ("HOOKLINE_FORWARDER__RETRY_JITTER", "0"),
    ];
    let stack = Stack::start(Options { extra: &extra, ..Default::default() }).await;
    let api = &stack.api;
    for (id, url, filter) in [
        ("flaky", &flaky.url, json!({})),
        ("rejecting", &rejecting.url, json!({})),
        ("picky", &ok.url, json!({"kind": ["status"]})),
        ("resting", &ok.url, json!({})),
    ] {
        api.create_destination(&json!({"id": id, "url": url, "signing_secret": signing_secret(), "filter": filter})).await;
    }
    assert_eq!(api.post("/api/v1/destinations/resting/pause", &json!({})).await.status, 200);

    let shutdown = CancellationToken::new();
    let (config, stop) = (stack.config.clone(), shutdown.clone());
    let normalizer = tokio::spawn(async move { hookline_normalizer::worker::run(&config, Metrics::new(), None, stop).await });
    let (config, stop) = (stack.config.clone(), shutdown.clone());
    let forwarder = tokio::spawn(async move { hookline_forwarder::worker::run(&config, Metrics::new(), None, stop).await });

    let js = stack.nats.jetstream().await;
    hookline_shared::jetstream::ensure_streams(&js, &stack.config.streams).await.expect("streams");
    let raw_seq = publish_raw(&js, TELEGRAM_TEXT).await;
    let second = TELEGRAM_TEXT.replace("10000", "10001").replace("1365", "1366").replace("/start", "second");
    publish_raw(&js, &second).await;

    // Found by the platform's message id, through the index.
    let page = wait_for("the event found by message id", Duration::from_secs(20), || async {
        let answer = api.get("/api/v1/events?message_id=1111111%3A1365").await;
        assert_eq!(answer.status, 200, "{}", answer.text);
        let page = answer.json();
        (page["events"].as_array().map(Vec::len) == Some(1)).then_some(page)
    })
    .await;
    let found = &page["events"][0];
    assert_eq!(found["event"]["message"]["text"], "/start");
    assert!(page.get("next_cursor").is_none(), "{page}");
    let event_id = found["event"]["id"].as_str().expect("id").to_string();

    // The first attempt to flaky answered 500; then it answers 200.
    let flaky_ref = &flaky;
    wait_for("flaky's first attempt", Duration::from_secs(20), || async move { (!flaky_ref.received().is_empty()).then_some(()) }).await;
    flaky.set_status(200);

    let path = format!("/api/v1/events/{event_id}");
    let view = wait_for("every destination settled", Duration::from_secs(30), || async {
        let answer = api.get(&path).await;
        if answer.status != 200 {
            return None;
        }
        let view = answer.json();
        let settled = [("default", "delivered"), ("flaky", "delivered"), ("rejecting", "dead_lettered")]
            .iter()
            .all(|(d, s)| view["destinations"].as_array().is_some_and(|a| a.iter().any(|x| x["destination"] == *d && x["state"] == *s)));
        settled.then_some(view)
    })
    .await;
    assert_eq!(view["event_id"], event_id.as_str());
    assert_eq!(view["tenant_id"], "acme");
    assert_eq!(view["subject"], "hookline.events.acme.telegram.message");
    assert_eq!(view["event"]["message"]["id"], "1111111:1365");
    assert_eq!(view["raw"], json!({"subject": "hookline.raw.telegram.tg1", "seq": raw_seq, "index": 0}));
    assert_eq!(state_of(&view, "picky")["state"], "filtered_out");
    assert_eq!((state_of(&view, "resting")["state"].as_str(), &state_of(&view, "resting")["paused"]), (Some("waiting"), &json!(true)));
    let rejecting_state = state_of(&view, "rejecting");
    assert_eq!((rejecting_state["last_status"].as_u64(), rejecting_state["dlq_reason"].as_str()), (Some(410), Some("rejected_4xx")));
    assert_eq!(state_of(&view, "default")["attempts"], 1);

    let attempts: Vec<&Value> = view["attempts"].as_array().expect("attempts").iter().filter(|a| a["destination"] == "flaky").collect();
    assert_eq!(attempts.len(), 2, "{view}");
    assert_eq!((attempts[0]["attempt"].as_u64(), attempts[0]["status"].as_u64()), (Some(1), Some(500)));
    assert_eq!(attempts[0]["outcome"], "retrying");
    assert!(attempts[0]["next_attempt_at"].is_string(), "{}", attempts[0]);
    assert_eq!((attempts[1]["attempt"].as_u64(), attempts[1]["status"].as_u64()), (Some(2), Some(200)));
    assert_eq!(attempts[1]["outcome"], "delivered");
    assert!(attempts.iter().all(|a| a["duration_ms"].as_f64().is_some() && a["at"].is_string() && a["event_id"] == event_id.as_str()));
    assert!(view["attempts"].as_array().expect("attempts").iter().all(|a| a["destination"] != "picky" && a["destination"] != "resting"));

    // A destination created after the event was stored never gets it (its consumer starts at its
    // creation): not `waiting`, which would never end.
    api.create_destination(&json!({"id": "late", "url": &ok.url, "signing_secret": signing_secret(), "filter": {}})).await;
    // (The view reads the bucket, which the mirror fills within a moment.)
    let later = wait_for("the new destination in the view", Duration::from_secs(10), || async {
        let view = api.get(&path).await.json();
        view["destinations"].as_array().is_some_and(|all| all.iter().any(|d| d["destination"] == "late")).then_some(view)
    })
    .await;
    assert_eq!(state_of(&later, "late")["state"], "before_destination", "{later}");
    assert_eq!(state_of(&later, "late")["attempts"], 0);

    // The raw webhook, as received.
    let raw = api.get(&format!("/api/v1/raw/{raw_seq}")).await;
    assert_eq!(raw.status, 200, "{}", raw.text);
    let raw = raw.json();
    assert_eq!(raw["body"], TELEGRAM_TEXT);
    assert_eq!(raw["headers"][header::CHANNEL], json!(["tg1"]));
    assert_eq!(raw["subject"], "hookline.raw.telegram.tg1");

    // Other searches: by conversation (both events), by tenant and kind (a scan), by channel, none.
    let by_conversation = api.get("/api/v1/events?conversation_id=1111111").await.json();
    assert_eq!(by_conversation["events"].as_array().map(Vec::len), Some(2), "{by_conversation}");
    let scanned = api.get("/api/v1/events?tenant=acme&kind=message&channel=tg1&from=1h").await.json();
    let mut texts: Vec<&str> =
        scanned["events"].as_array().expect("events").iter().filter_map(|e| e["event"]["message"]["text"].as_str()).collect();
    texts.sort();
    assert_eq!(texts, ["/start", "second"], "in the order stored, which the normalizer's concurrency decides");
    let paged = api.get("/api/v1/events?tenant=acme&limit=1").await.json();
    assert_eq!(paged["events"].as_array().map(Vec::len), Some(1));
    let cursor = paged["next_cursor"].as_str().expect("a cursor after a full page").to_string();
    let rest = api.get(&format!("/api/v1/events?tenant=acme&limit=1&cursor={cursor}")).await.json();
    let mut both = [&paged["events"][0]["event"]["message"]["text"], &rest["events"][0]["event"]["message"]["text"]];
    both.sort_by_key(|v| v.as_str().map(str::to_string));
    assert_eq!(both, [&json!("/start"), &json!("second")], "{paged} {rest}");
    for nothing in [
        "/api/v1/events?message_id=1111111%3A9999",
        "/api/v1/events?tenant=globex",
        "/api/v1/events?message_id=1111111%3A1365&tenant=globex",
        "/api/v1/events?kind=payment",
        "/api/v1/events?channel=tg2",
    ] {
        let answer = api.get(nothing).await;
        assert_eq!((answer.status, answer.json()["events"].as_array().map(Vec::len)), (200, Some(0)), "{nothing}: {}", answer.text);
    }

    // Absent: 404.
    for absent in ["/api/v1/events/evt_00000000000000000000000000000000", "/api/v1/raw/999999", "/api/v1/events/a.b"] {
        let answer = api.get(absent).await;
        assert_eq!((answer.status, answer.error().0.as_str()), (404, "not_found"), "{absent}");
    }
    // Parameters at fault: 400 naming them.
    for (bad, field) in [
        ("/api/v1/raw/abc", "seq"),
        ("/api/v1/raw/0", "seq"),
        ("/api/v1/events?limit=abc", "limit"),
        ("/api/v1/events?kind=bogus", "kind"),
        ("/api/v1/events?from=someday", "from"),
        ("/api/v1/events?tenant=a*b", "tenant"),
        ("/api/v1/events?cursor=nope", "cursor"),
        ("/api/v1/events?sort=asc", "sort"),
    ] {
        let answer = api.get(bad).await;
        assert_eq!(answer.status, 400, "{bad}: {}", answer.text);
        assert_eq!(answer.error(), ("invalid_query".to_string(), Some(field.to_string())), "{bad}");
    }
    // The same auth as every /api/v1 route.
    for path in [path.as_str(), "/api/v1/raw/1", "/api/v1/events?tenant=acme"] {
        assert_eq!(api.send(Method::GET, path, None, None).await.status, 401, "{path}");
    }
    // Tenant narrowing: another tenant's event and raw webhook do not exist for it.
    assert!(hookline_operations::lookup::event(&js, &event_id, Some("globex")).await.expect("lookup").is_none());
    assert!(hookline_operations::lookup::event(&js, &event_id, Some("acme")).await.expect("lookup").is_some());
    assert!(hookline_operations::lookup::raw(&js, raw_seq, Some("globex")).await.expect("lookup").is_none());
    let query = hookline_operations::lookup::FindQuery { conversation_id: Some("1111111".into()), limit: 10, ..Default::default() };
    assert!(hookline_operations::lookup::find(&js, &query, Some("globex")).await.expect("find").events.is_empty());

    // The OpenAPI document lists the routes.
    let doc = api.get("/api/v1/openapi.json").await.json();
    for p in ["/api/v1/events/{event_id}", "/api/v1/raw/{seq}", "/api/v1/events"] {
        assert!(doc["paths"][p]["get"].is_object(), "{p}");
    }

    shutdown.cancel();
    let _ = tokio::time::timeout(Duration::from_secs(15), normalizer).await;
    let _ = tokio::time::timeout(Duration::from_secs(15), forwarder).await;
}

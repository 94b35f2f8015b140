//! The routes the console reads, against real NATS and Postgres: the overview's counters (streams,
//! the normalizer's consumer, a destination's consumer and its breaker entry, dead letters by
//! reason), a channel's last webhook, and a replay run in the background to its end.

mod common;

use common::*;
use serde_json::json;
use std::time::Duration;

use hookline_shared::harness::wait_for;
use hookline_shared::names;
use hookline_shared::Source;

/// POSTs Telegram update `n` (its own body, so not a duplicate) to ingest; its status.
async fn update(stack: &Stack, channel: &str, secret: &str, n: u64) -> u16 {
    let path = format!("/webhooks/{channel}");
    let body = format!(
        r#"{{"update_id":{n},"message":{{"message_id":{n},"date":1700000000,"chat":{{"id":7,"type":"private"}},"from":{{"id":7,"is_bot":false,"first_name":"A"}},"text":"hello {n}"}}}}"#
    );
    let headers =
        hookline_ingest::sign::signature_headers(Source::Telegram, secret, body.as_bytes(), &format!("{}{path}", stack.public_url), 0);
    let mut req = client().post(format!("{}{path}", stack.ingest_base())).header("Content-Type", "application/json").body(body);
    for (k, v) in headers {
        req = req.header(k, v);
    }
    req.send().await.expect("ingest answers").status().as_u16()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_overview_counts_streams_consumers_breakers_and_dead_letters() {
    let stack = Stack::start(Options { ingest: true, ..Default::default() }).await;
    let js = stack.nats.jetstream().await;
    hookline_shared::jetstream::ensure_streams(&js, &stack.config.streams).await.expect("streams");

    let empty = stack.api.get("/api/v1/overview").await;
    assert_eq!(empty.status, 200, "{}", empty.text);
    let v = empty.json();
    assert_eq!(v["scope"], json!({"tenant": null, "read_only": false}));
    let names: Vec<&str> = v["streams"].as_array().expect("streams").iter().filter_map(|s| s["name"].as_str()).collect();
    assert_eq!(names, ["HOOKLINE_RAW", "HOOKLINE_EVENTS", "HOOKLINE_DLQ"]);
    assert_eq!(v["dead_letters"], json!({"total": 0, "counted": 0, "truncated": false, "by_reason": []}));
    assert_eq!(v["destinations"], json!([]));

    // Two webhooks stored, a destination with its consumer and a tripped breaker, dead letters.
    let secret = secret("overview-telegram-secret-0123456789");
    let channel = stack.api.create(&json!({"tenant_id": "acme", "source": "telegram", "secret": secret})).await;
    let id = channel["id"].as_str().expect("id");
    let before = stack.api.get(&format!("/api/v1/channels/{id}/activity")).await.json();
    assert_eq!(before, json!({"channel_id": id, "last_webhook_at": null, "last_raw_seq": null}));
    stack.wait_webhook(id, Source::Telegram, &secret, 200, Duration::from_secs(10)).await;
    assert_eq!(update(&stack, id, &secret, 2).await, 200);
    let after = stack.api.get(&format!("/api/v1/channels/{id}/activity")).await.json();
    assert_eq!(after["last_raw_seq"], 2, "{after}");
    let at =
        time::OffsetDateTime::parse(after["last_webhook_at"].as_str().expect("a time"), &time::format_description::well_known::Rfc3339)
            .expect("RFC 3339");
    assert!((time::OffsetDateTime::now_utc() - at).whole_seconds().abs() < 30);
    assert_eq!(stack.api.get("/api/v1/channels/ch_nope/activity").await.status, 404);

    stack
        .api
        .create_destination(&json!({"id": "crm", "tenant_id": "acme", "url": "http://127.0.0.1:9/", "signing_secret": "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"}))
        .await;
    let events = js.get_stream(names::EVENTS_STREAM).await.expect("events");
    events
        .create_consumer(async_nats::jetstream::consumer::pull::Config {
            durable_name: Some("destination-crm".into()),
            filter_subject: "hookline.events.acme.>".into(),
            ..Default::default()
        })
        .await
        .expect("the destination's consumer");
    js.publish(names::event_subject("acme", "webchat", "message"), "{}".into()).await.expect("publish").await.expect("ack");
    js.publish(names::event_subject("other", "webchat", "message"), "{}".into()).await.expect("publish").await.expect("ack");
    let state = hookline_shared::jetstream::kv_bucket(
        &js,
        hookline_shared::jetstream::BucketSpec {
            name: names::DESTINATION_STATE_BUCKET,
            description: "test",
            history: 1,
            max_age: Duration::ZERO,
            replicas: 1,
        },
    )
    .await
    .expect("state bucket");
    state.put("crm", r#"{"state":"tripped","since":"2026-12-02T00:00:00Z"}"#.into()).await.expect("put");
    for (reason, n) in [("rejected_4xx", 2), ("attempts_exhausted", 1)] {
        for i in 0..n {
            let mut headers = async_nats::HeaderMap::new();
            headers.insert(names::header::DLQ_STAGE, "forward");
            headers.insert(names::header::DLQ_REASON, reason);
            headers.insert(names::header::TENANT, "acme");
            headers.insert(names::header::MSG_ID, format!("{reason}-{i}").as_str());
            if reason == "attempts_exhausted" {
                headers.insert(names::header::DESTINATION, "crm");
            }
            js.publish_with_headers(names::dlq_subject("forward", "acme"), headers, "{}".into())
                .await
                .expect("publish")
                .await
                .expect("ack");
        }
    }

    let v = stack.api.get("/api/v1/overview").await.json();
    let raw = &v["streams"][0];
    assert_eq!((raw["messages"].as_u64(), raw["last_seq"].as_u64()), (Some(2), Some(2)), "{v}");
    let crm = &v["destinations"][0];
    assert_eq!(crm["id"], "crm");
    assert_eq!(crm["state"], "tripped");
    assert_eq!(crm["breaker"]["state"], "tripped");
    assert_eq!(crm["consumer"]["num_pending"], 1, "only acme's event is for it: {crm}");
    assert_eq!(crm["consumer"]["consumer"], "destination-crm");
    assert_eq!(v["dead_letters"]["total"], 3);
    assert_eq!(
        v["dead_letters"]["by_reason"],
        json!([
            {"stage": "forward", "reason": "rejected_4xx", "count": 2},
            {"stage": "forward", "reason": "attempts_exhausted", "destination": "crm", "count": 1}
        ])
    );
    // Paused wins over tripped.
    assert_eq!(stack.api.post("/api/v1/destinations/crm/pause", &json!({})).await.status, 200);
    assert_eq!(stack.api.get("/api/v1/overview").await.json()["destinations"][0]["state"], "paused");
    assert_eq!(stack.api.send(axum::http::Method::GET, "/api/v1/overview", None, None).await.status, 401);
    assert_logs_clean();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_replay_in_the_background_reports_its_progress_until_done() {
    let stack = Stack::start(Options { ingest: true, ..Default::default() }).await;
    let secret = secret("replays-telegram-secret-0123456789");
    let channel = stack.api.create(&json!({"tenant_id": "acme", "source": "telegram", "secret": secret})).await;
    let id = channel["id"].as_str().expect("id").to_string();
    stack.wait_webhook(&id, Source::Telegram, &secret, 200, Duration::from_secs(10)).await;
    for n in 2..6 {
        assert_eq!(update(&stack, &id, &secret, n).await, 200);
    }
    let selection = json!({"stream": "raw", "selection": {"channel": id}, "rate_per_s": 3});
    let dry = stack.api.post("/api/v1/replay", &json!({"stream": "raw", "selection": {"channel": id}, "dry_run": true})).await.json();
    assert_eq!(dry["selected"], 5);

    // A second setup-api process on the same NATS and Postgres, as behind a load balancer: it
    // answers for the run the first one runs.
    let second = start_setup_api(&stack.config, tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind")).await;
    let other = Api::new(&second.base);

    let started = stack.api.post("/api/v1/replays", &selection).await;
    assert_eq!(started.status, 202, "{}", started.text);
    let run = started.json();
    assert_eq!(run["state"], "running");
    let run_id = run["run_id"].as_str().expect("run id").to_string();
    let path = format!("/api/v1/replays/{run_id}");
    let seen_running_with_progress = std::sync::atomic::AtomicBool::new(false);
    let seen_elsewhere_with_progress = std::sync::atomic::AtomicBool::new(false);
    let done = wait_for("the replay done", Duration::from_secs(20), || async {
        let v = stack.api.get(&path).await.json();
        if v["state"] == "running" && v["read"].as_u64().unwrap_or(0) > 0 {
            seen_running_with_progress.store(true, std::sync::atomic::Ordering::Relaxed);
        }
        let elsewhere = other.get(&path).await;
        assert_eq!(elsewhere.status, 200, "the second process: {}", elsewhere.text);
        let w = elsewhere.json();
        assert!(w["state"] == "running" || w["state"] == "done", "{w}");
        if w["state"] == "running" && w["read"].as_u64().unwrap_or(0) > 0 {
            seen_elsewhere_with_progress.store(true, std::sync::atomic::Ordering::Relaxed);
        }
        (v["state"] == "done").then_some(v)
    })
    .await;
    assert_eq!(done["read"], 5, "{done}");
    assert_eq!(done["summary"]["selected"], 5);
    assert!(
        seen_running_with_progress.load(std::sync::atomic::Ordering::Relaxed),
        "at 3 a second, five messages take more than a second: progress was never seen"
    );
    assert!(seen_elsewhere_with_progress.load(std::sync::atomic::Ordering::Relaxed), "the second process never saw the run's progress");
    let elsewhere = wait_for("the second process sees it done", Duration::from_secs(5), || async {
        let w = other.get(&path).await.json();
        (w["state"] == "done").then_some(w)
    })
    .await;
    assert_eq!((&elsewhere["read"], &elsewhere["summary"]), (&done["read"], &done["summary"]));
    // A tenant's token: another tenant's run does not exist, on either process.
    let body = json!({"name": "globex-ops", "tenant_id": "globex"}).to_string();
    let token = stack.api.send_unchecked(axum::http::Method::POST, "/api/v1/tokens", Some(&body), Some(TOKEN)).await;
    assert_eq!(token.status, 201, "{}", token.text);
    let globex = token.json()["token"].as_str().expect("token value").to_string();
    let globex = globex.as_str();
    for api in [&stack.api, &other] {
        let answer = api.send_unchecked(axum::http::Method::GET, &path, None, Some(globex)).await;
        assert_eq!(answer.status, 404, "{}: {}", api.base, answer.text);
    }
    assert_eq!(other.get("/api/v1/replays/run_0000000000000000").await.status, 404);
    // A run whose process stopped mid-way (its last word long ago): abandoned, not running forever.
    let js = stack.nats.jetstream().await;
    let runs = js.get_key_value(names::REPLAY_RUNS_BUCKET).await.expect("the runs bucket");
    let stale = json!({"run_id": "run_00000000000000ab", "state": "running", "read": 2, "summary": null, "error": null,
        "tenant": null, "updated_at": "2026-01-01T00:00:00Z"});
    runs.put("run_00000000000000ab", stale.to_string().into()).await.expect("put");
    let abandoned = other.get("/api/v1/replays/run_00000000000000ab").await.json();
    assert_eq!((&abandoned["state"], &abandoned["read"]), (&json!("abandoned"), &json!(2)), "{abandoned}");
    assert_eq!(stack.api.get("/api/v1/replays/run_0000000000000000").await.status, 404);
    let bad = stack.api.post("/api/v1/replays", &json!({"stream": "raw", "selection": {"channel": "a.b"}})).await;
    assert_eq!(bad.status, 422, "{}", bad.text);
}

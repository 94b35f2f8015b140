//! Operations end to end against a real nats-server: a replay of a time window delivers those
//! events again with `replay: true` and the same ids; a DLQ re-drive after the target is fixed
//! delivers the dead letters and empties the DLQ; SIGTERM to a forwarder under load loses nothing.

use async_nats::jetstream;
use async_nats::HeaderMap;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use hookline_forwarder::sink::{FailurePlan, SinkState};
use hookline_shared::config::Config;
use hookline_shared::harness::{self, wait_for, TestNats};
use hookline_shared::metrics::Metrics;
use hookline_shared::names::{self, header};
use hookline_shared::servers::free_port;
use hookline_shared::{Secret, Source};

const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

fn update(n: u64) -> Vec<u8> {
    format!(r#"{{"update_id":{n},"message":{{"message_id":{n},"date":1700000000,"chat":{{"id":77,"type":"private"}},"from":{{"id":77,"is_bot":false,"first_name":"Ana"}},"text":"n{n}"}}}}"#).into_bytes()
}

async fn publish_raw(js: &jetstream::Context, n: u64) {
    let mut headers = HeaderMap::new();
    headers.insert(header::SOURCE, "telegram");
    headers.insert(header::CHANNEL, "tg");
    headers.insert(header::TENANT, "acme");
    headers.insert(header::RECEIVED_AT, hookline_shared::timefmt::now_rfc3339().as_str());
    js.publish_with_headers(names::raw_subject(Source::Telegram, "tg"), headers, update(n).into())
        .await
        .expect("publish")
        .await
        .expect("ack");
}

async fn start_sink() -> (Arc<SinkState>, String) {
    let state = SinkState::new(Some(&Secret::new(SECRET)), false).expect("sink");
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let url = format!("http://{}/events", listener.local_addr().expect("addr"));
    tokio::spawn(hookline_forwarder::sink::serve(listener, state.clone(), CancellationToken::new()));
    (state, url)
}

/// Normalizer and forwarder in this process, delivering to `target`.
fn start_workers(config: &Config, shutdown: &CancellationToken) {
    let metrics = Metrics::new();
    let (c1, s1, m1) = (config.clone(), shutdown.clone(), metrics.clone());
    tokio::spawn(async move { hookline_normalizer::worker::run(&c1, m1, None, s1).await.expect("normalizer") });
    let (c2, s2) = (config.clone(), shutdown.clone());
    tokio::spawn(async move { hookline_forwarder::worker::run(&c2, metrics, None, s2).await.expect("forwarder") });
}

fn hookline(nats_url: &str, args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_hookline"))
        .env("HOOKLINE_NATS__URL", nats_url)
        .env("HOOKLINE_LOG__LEVEL", "warn")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("hookline runs")
}

async fn dlq_count(js: &jetstream::Context) -> u64 {
    let mut s = js.get_stream(names::DLQ_STREAM).await.expect("dlq");
    s.info().await.expect("info").state.messages
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replay_of_a_time_window_delivers_those_events_again_marked_with_the_same_ids() {
    let nats = TestNats::start();
    let (sink, url) = start_sink().await;
    let config = harness::config(&nats.url(), &[("HOOKLINE_FORWARDER__TARGET_URL", &url), ("HOOKLINE_FORWARDER__SIGNING_SECRET", SECRET)]);
    let js = nats.jetstream().await;
    hookline_shared::jetstream::ensure_streams(&js, &config.streams).await.expect("streams");
    let shutdown = CancellationToken::new();
    start_workers(&config, &shutdown);
    for n in 1..=5 {
        publish_raw(&js, n).await;
    }
    let sink_ref = &sink;
    wait_for("the first window delivered", Duration::from_secs(20), || async move { (sink_ref.stats().unique == 5).then_some(()) }).await;
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let window_start = hookline_shared::timefmt::now_rfc3339();
    for n in 6..=8 {
        publish_raw(&js, n).await;
    }
    wait_for("the second window delivered", Duration::from_secs(20), || async move { (sink_ref.stats().unique == 8).then_some(()) }).await;
    let before: std::collections::HashMap<String, usize> = sink.attempts().into_iter().map(|(id, a)| (id, a.len())).collect();

    let dry = hookline(&nats.url(), &["replay", "raw", "--from", &window_start, "--dry-run"]);
    assert!(dry.status.success(), "{}", String::from_utf8_lossy(&dry.stderr));
    assert!(
        String::from_utf8_lossy(&dry.stdout).starts_with("would replay 3 raw message(s) as 3 event(s)"),
        "{}",
        String::from_utf8_lossy(&dry.stdout)
    );
    let out = hookline(&nats.url(), &["replay", "raw", "--from", &window_start]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));

    wait_for("the replayed events delivered", Duration::from_secs(20), || async move { (sink_ref.stats().received == 11).then_some(()) })
        .await;
    let after = sink.attempts();
    let replayed: Vec<&String> = after.iter().filter(|(_, a)| a.iter().any(|x| x.replay)).map(|(id, _)| id).collect();
    assert_eq!(replayed.len(), 3, "exactly the window's events came again");
    for id in replayed {
        assert_eq!(before.get(id), Some(&1), "{id}: the replay keeps the id of an event delivered once before");
        assert_eq!(after[id].len(), 2);
        assert!(!after[id][0].replay && after[id][1].replay);
    }
    // Replaying events (not raw) works the same way, through the forwarder only.
    let out = hookline(&nats.url(), &["replay", "events", "--from", &window_start, "--tenant", "acme"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    wait_for("the events replay delivered", Duration::from_secs(20), || async move { (sink_ref.stats().received >= 14).then_some(()) })
        .await;
    shutdown.cancel();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dlq_redrive_after_the_target_is_fixed_delivers_the_dead_letters_and_empties_the_dlq() {
    let nats = TestNats::start();
    let (sink, url) = start_sink().await;
    sink.set_failure(FailurePlan { status: 422, ..Default::default() });
    let config = harness::config(&nats.url(), &[("HOOKLINE_FORWARDER__TARGET_URL", &url), ("HOOKLINE_FORWARDER__SIGNING_SECRET", SECRET)]);
    let js = nats.jetstream().await;
    hookline_shared::jetstream::ensure_streams(&js, &config.streams).await.expect("streams");
    let shutdown = CancellationToken::new();
    start_workers(&config, &shutdown);
    for n in 1..=4 {
        publish_raw(&js, n).await;
    }
    let js_ref = &js;
    wait_for("four dead letters", Duration::from_secs(20), || async move { (dlq_count(js_ref).await == 4).then_some(()) }).await;
    let list = hookline(&nats.url(), &["dlq", "list", "--stage", "forward"]);
    let text = String::from_utf8_lossy(&list.stdout);
    assert!(list.status.success() && text.contains("rejected_4xx") && text.contains("4 dead letter(s)"), "{text}");

    sink.set_failure(FailurePlan::default());
    let out = hookline(&nats.url(), &["dlq", "redrive", "--reason", "rejected_4xx"]);
    assert!(out.status.success(), "{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stdout).contains("re-drove 4 of 4"), "{}", String::from_utf8_lossy(&out.stdout));
    let sink_ref = &sink;
    wait_for("the re-driven events delivered", Duration::from_secs(20), || async move { (sink_ref.stats().unique == 4).then_some(()) })
        .await;
    assert_eq!(dlq_count(&js).await, 0);
    shutdown.cancel();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_to_a_forwarder_under_load_loses_nothing() {
    const N: usize = 300;
    let nats = TestNats::start();
    let (sink, url) = start_sink().await;
    sink.set_delay(Duration::from_millis(30));
    let config = harness::config(&nats.url(), &[]);
    let js = nats.jetstream().await;
    hookline_shared::jetstream::ensure_streams(&js, &config.streams).await.expect("streams");
    let received_at = hookline_shared::timefmt::now_rfc3339();
    for i in 0..N {
        let id = format!("evt_term_{i}");
        let body = format!(
            r#"{{"id":"{id}","schema_version":1,"kind":"message","source":"webchat","platform":"webchat","provider":"hookline","tenant_id":"acme","channel_id":"wc","received_at":"{received_at}"}}"#
        );
        let mut headers = HeaderMap::new();
        headers.insert(header::MSG_ID, id.as_str());
        js.publish_with_headers("hookline.events.acme.webchat.message", headers, body.into()).await.expect("publish").await.expect("ack");
    }
    let spawn = || {
        Command::new(env!("CARGO_BIN_EXE_hookline"))
            .env("HOOKLINE_NATS__URL", nats.url())
            .env("HOOKLINE_FORWARDER__TARGET_URL", &url)
            .env("HOOKLINE_FORWARDER__SIGNING_SECRET", SECRET)
            .env("HOOKLINE_FORWARDER__LISTEN", format!("127.0.0.1:{}", free_port().expect("port")))
            .env("HOOKLINE_FORWARDER__MAX_IN_FLIGHT", "16")
            .env("HOOKLINE_LOG__LEVEL", "warn")
            .arg("forwarder")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("forwarder starts")
    };
    let mut first = spawn();
    let sink_ref = &sink;
    wait_for("deliveries under way", Duration::from_secs(20), || async move { (sink_ref.stats().received >= 50).then_some(()) }).await;
    // SAFETY: kill(2) on our own child.
    unsafe {
        libc::kill(first.id() as i32, libc::SIGTERM);
    }
    let status = wait_for("the forwarder exits after SIGTERM", Duration::from_secs(20), || {
        let got = first.try_wait().ok().flatten();
        async move { got }
    })
    .await;
    assert!(status.success(), "exit status {status}");
    let at_stop = sink.stats();
    assert!(at_stop.unique < N as u64, "it stopped before the end ({} delivered)", at_stop.unique);
    let mut second = spawn();
    wait_for("everything delivered", Duration::from_secs(60), || async move { (sink_ref.stats().unique == N as u64).then_some(()) }).await;
    assert_eq!(sink.stats().duplicates, 0, "a graceful stop acks what it delivered");
    let _ = second.kill();
    let _ = second.wait();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_setup_api_lists_and_redrives_dead_letters_over_http() {
    let nats = TestNats::start();
    let pg = harness::TestPostgres::start();
    let db = pg.create_database("ops");
    let (sink, url) = start_sink().await;
    sink.set_failure(FailurePlan { status: 400, ..Default::default() });
    let token = "operations-token-0123456789";
    let config = harness::config(
        &nats.url(),
        &[
            ("HOOKLINE_FORWARDER__TARGET_URL", &url),
            ("HOOKLINE_FORWARDER__SIGNING_SECRET", SECRET),
            ("HOOKLINE_DATABASE__URL", &db),
            ("HOOKLINE_SETUP_API__TOKENS", token),
        ],
    );
    let js = nats.jetstream().await;
    hookline_shared::jetstream::ensure_streams(&js, &config.streams).await.expect("streams");
    let shutdown = CancellationToken::new();
    start_workers(&config, &shutdown);
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let api = format!("http://{}/api/v1", listener.local_addr().expect("addr"));
    {
        let (config, shutdown) = (config.clone(), shutdown.clone());
        tokio::spawn(async move { hookline_setup_api::run(&config, Metrics::new(), listener, shutdown).await.expect("setup-api") });
    }
    for n in 1..=3 {
        publish_raw(&js, n).await;
    }
    let js_ref = &js;
    wait_for("three dead letters", Duration::from_secs(20), || async move { (dlq_count(js_ref).await == 3).then_some(()) }).await;

    let http = reqwest::Client::new();
    let unauthorized = http.get(format!("{api}/dlq")).send().await.expect("answered");
    assert_eq!(unauthorized.status(), 401);
    let listed: serde_json::Value = wait_for("the API answers", Duration::from_secs(20), || {
        let http = http.clone();
        let api = api.clone();
        async move {
            let r = http.get(format!("{api}/dlq?stage=forward")).bearer_auth(token).send().await.ok()?;
            (r.status() == 200).then_some(r.json().await.ok()?)
        }
    })
    .await;
    let letters = listed.as_array().expect("a list");
    assert_eq!(letters.len(), 3);
    assert!(letters.iter().all(|l| l["reason"] == "rejected_4xx" && l["last_status"] == "400"), "{listed}");
    let seq = letters[0]["seq"].as_u64().expect("seq");
    let one: serde_json::Value =
        http.get(format!("{api}/dlq/{seq}")).bearer_auth(token).send().await.expect("answered").json().await.expect("json");
    assert_eq!(one["letter"]["seq"], seq);

    sink.set_failure(FailurePlan::default());
    let redriven: serde_json::Value = http
        .post(format!("{api}/dlq/redrive"))
        .bearer_auth(token)
        .json(&serde_json::json!({"stage": "forward"}))
        .send()
        .await
        .expect("answered")
        .json()
        .await
        .expect("json");
    assert_eq!(redriven["redriven"], 3, "{redriven}");
    let sink_ref = &sink;
    wait_for("the re-driven events delivered", Duration::from_secs(20), || async move { (sink_ref.stats().unique == 3).then_some(()) })
        .await;
    assert_eq!(dlq_count(&js).await, 0);
    shutdown.cancel();
}

//! `hookline events show` and `events find` against a real nats-server, the normalizer and the
//! forwarder running in this process: a webhook's event found by its message id and shown with
//! its delivery, readable and as JSON; a missing event exits non-zero; a bad flag is named.

mod common;

use async_nats::HeaderMap;
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use hookline_forwarder::sink::SinkState;
use hookline_shared::harness::{self, wait_for, TestNats};
use hookline_shared::metrics::Metrics;
use hookline_shared::names::{self, header};
use hookline_shared::{Secret, Source};

const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

fn hookline(nats_url: &str, args: &[&str]) -> std::process::Output {
    common::hookline()
        .env("HOOKLINE_NATS__URL", nats_url)
        .env("HOOKLINE_LOG__LEVEL", "warn")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("hookline runs")
}

fn text(out: &std::process::Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_find_and_show_answer_by_message_id_with_the_delivery() {
    let nats = TestNats::start();
    let sink = SinkState::new(Some(&Secret::new(SECRET)), false).expect("sink");
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let url = format!("http://{}/events", listener.local_addr().expect("addr"));
    tokio::spawn(hookline_forwarder::sink::serve(listener, sink.clone(), CancellationToken::new()));
    let config = harness::config(&nats.url(), &[("HOOKLINE_FORWARDER__TARGET_URL", &url), ("HOOKLINE_FORWARDER__SIGNING_SECRET", SECRET)]);
    let js = nats.jetstream().await;
    hookline_shared::jetstream::ensure_streams(&js, &config.streams).await.expect("streams");
    let shutdown = CancellationToken::new();
    let metrics = Metrics::new();
    let (c1, s1, m1) = (config.clone(), shutdown.clone(), metrics.clone());
    tokio::spawn(async move { hookline_normalizer::worker::run(&c1, m1, None, s1).await.expect("normalizer") });
    let (c2, s2) = (config.clone(), shutdown.clone());
    tokio::spawn(async move { hookline_forwarder::worker::run(&c2, metrics, None, s2).await.expect("forwarder") });

    let body = r#"{"update_id":5,"message":{"message_id":42,"date":1700000000,"chat":{"id":77,"type":"private"},"from":{"id":77,"is_bot":false,"first_name":"Ana"},"text":"hello"}}"#;
    let mut headers = HeaderMap::new();
    headers.insert(header::SOURCE, "telegram");
    headers.insert(header::CHANNEL, "tg");
    headers.insert(header::TENANT, "acme");
    headers.insert(header::RECEIVED_AT, hookline_shared::timefmt::now_rfc3339().as_str());
    js.publish_with_headers(names::raw_subject(Source::Telegram, "tg"), headers, body.into()).await.expect("publish").await.expect("ack");
    let sink_ref: &Arc<SinkState> = &sink;
    wait_for("delivered", Duration::from_secs(20), || async move { (sink_ref.stats().received == 1).then_some(()) }).await;

    let nats_url = nats.url();
    let found = wait_for("found by message id", Duration::from_secs(20), || {
        let nats_url = nats_url.clone();
        async move {
            let out = tokio::task::spawn_blocking(move || hookline(&nats_url, &["events", "find", "--message-id", "77:42", "--json"]))
                .await
                .ok()?;
            assert!(out.status.success(), "{}", text(&out));
            let line = String::from_utf8_lossy(&out.stdout).lines().next()?.to_string();
            serde_json::from_str::<serde_json::Value>(&line).ok()
        }
    })
    .await;
    assert_eq!(found["event"]["message"]["text"], "hello");
    let event_id = found["event"]["id"].as_str().expect("id").to_string();

    let readable = hookline(&nats.url(), &["events", "find", "--message-id", "77:42", "--tenant", "acme"]);
    assert!(readable.status.success(), "{}", text(&readable));
    assert!(String::from_utf8_lossy(&readable.stdout).contains(&event_id), "{}", text(&readable));
    assert!(String::from_utf8_lossy(&readable.stdout).contains("1 event(s)"), "{}", text(&readable));

    // The delivery log reaches the lookup in the background: poll until the attempt is there.
    let show = wait_for("shown with its delivery", Duration::from_secs(20), || {
        let (nats_url, event_id) = (nats.url(), event_id.clone());
        async move {
            let out = tokio::task::spawn_blocking(move || hookline(&nats_url, &["events", "show", &event_id, "--json"])).await.ok()?;
            assert!(out.status.success(), "{}", text(&out));
            let view: serde_json::Value = serde_json::from_slice(&out.stdout).ok()?;
            (view["destinations"][0]["state"] == "delivered").then_some(view)
        }
    })
    .await;
    assert_eq!(show["destinations"][0]["destination"], "default");
    assert_eq!(show["attempts"][0]["status"], 200);
    assert_eq!(show["raw"]["subject"], "hookline.raw.telegram.tg");

    let readable = hookline(&nats.url(), &["events", "show", &event_id]);
    let shown = String::from_utf8_lossy(&readable.stdout).to_string();
    assert!(readable.status.success(), "{}", text(&readable));
    for part in [event_id.as_str(), "HOOKLINE_RAW seq", "default", "delivered", "200"] {
        assert!(shown.contains(part), "{part:?} missing from:\n{shown}");
    }

    let missing = hookline(&nats.url(), &["events", "show", "evt_00000000000000000000000000000000"]);
    assert!(!missing.status.success());
    assert!(text(&missing).contains("no event"), "{}", text(&missing));
    let bad = hookline(&nats.url(), &["events", "find", "--kind", "bogus"]);
    assert!(!bad.status.success());
    assert!(text(&bad).contains("--kind"), "{}", text(&bad));
    let help = hookline(&nats.url(), &["events", "find", "--help"]);
    assert!(String::from_utf8_lossy(&help.stdout).contains("--message-id"), "{}", text(&help));

    shutdown.cancel();
}

/// `hookline bench lookup`, small: its fill writes the index and the delivery log as the
/// pipeline does (plain publishes; those streams take no atomic batch), and every lookup finds
/// its event. The timing is the benchmark's to report, not asserted here.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_lookup_benchmark_fills_its_streams_and_finds_every_event() {
    let options = hookline_bench::lookup::LookupOptions {
        events: 3_000,
        samples: 50,
        max_fill: Duration::from_secs(60),
        fsync: hookline_shared::servers::Fsync::Always,
    };
    // Bounded: a fill that stops getting acks (too many publishes in flight) hangs, not fails.
    let report = tokio::time::timeout(Duration::from_secs(120), hookline_bench::lookup::run(&options))
        .await
        .expect("the lookup benchmark ended within 2 minutes")
        .expect("the lookup benchmark runs");
    assert_eq!(report.events_stored, 3_000, "{report:?}");
    assert_eq!((report.index_entries, report.attempt_records), (9_000, 3_000), "three keys and one attempt an event: {report:?}");
    assert_eq!((report.by_event_id.found, report.by_message_id.found), (50, 50), "{report:?}");
}

//! Forwarder processes against a real nats-server and an in-process sink: a forwarder SIGKILLed
//! with deliveries in flight and retries pending loses nothing once restarted, and two processes
//! share the work with no event delivered by both.

use async_nats::jetstream;
use async_nats::HeaderMap;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use hookline_forwarder::sink::{FailurePlan, SinkState};
use hookline_shared::harness::{self, wait_for, TestNats};
use hookline_shared::names::{self, header};
use hookline_shared::servers::free_port;
use hookline_shared::Secret;

const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

async fn publish_events(js: &jetstream::Context, prefix: &str, n: usize) {
    let received_at = hookline_shared::timefmt::now_rfc3339();
    let mut acks = Vec::new();
    for i in 0..n {
        let id = format!("evt_{prefix}_{i}");
        let body = format!(
            r#"{{"id":"{id}","schema_version":1,"kind":"message","source":"webchat","platform":"webchat","provider":"hookline","tenant_id":"acme","channel_id":"wc","received_at":"{received_at}","message":{{"id":"m{i}","type":"text","text":"hi"}}}}"#
        );
        let mut headers = HeaderMap::new();
        headers.insert(header::MSG_ID, id.as_str());
        acks.push(js.publish_with_headers("hookline.events.acme.webchat.message", headers, body.into()).await.expect("publish"));
    }
    for ack in acks {
        ack.await.expect("ack");
    }
}

async fn start_sink() -> (Arc<SinkState>, String, CancellationToken) {
    let state = SinkState::new(Some(&Secret::new(SECRET)), false).expect("sink");
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let url = format!("http://{}/events", listener.local_addr().expect("addr"));
    let stop = CancellationToken::new();
    tokio::spawn(hookline_forwarder::sink::serve(listener, state.clone(), stop.clone()));
    (state, url, stop)
}

fn spawn_forwarder(nats_url: &str, target: &str, ops_port: u16) -> Child {
    Command::new(env!("CARGO_BIN_EXE_hookline"))
        .env("HOOKLINE_NATS__URL", nats_url)
        .env("HOOKLINE_FORWARDER__TARGET_URL", target)
        .env("HOOKLINE_FORWARDER__SIGNING_SECRET", SECRET)
        .env("HOOKLINE_FORWARDER__LISTEN", format!("127.0.0.1:{ops_port}"))
        .env("HOOKLINE_FORWARDER__RETRY_SCHEDULE_S", "[1, 1, 1, 1, 1, 1]")
        .env("HOOKLINE_FORWARDER__ACK_WAIT_S", "3")
        .env("HOOKLINE_FORWARDER__MAX_IN_FLIGHT", "16")
        // These tests fail 40 deliveries in a row on purpose: the breaker would trip after 20
        // and hold the rest for its probe (tested in forwarder/tests/destinations.rs).
        .env("HOOKLINE_FORWARDER__BREAKER__FAILURES", "1000")
        .env("HOOKLINE_LOG__LEVEL", "warn")
        .arg("forwarder")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("hookline forwarder starts")
}

async fn dlq_count(js: &jetstream::Context) -> u64 {
    let mut s = js.get_stream(names::DLQ_STREAM).await.expect("dlq");
    s.info().await.expect("info").state.messages
}

async fn setup() -> (TestNats, jetstream::Context) {
    let nats = TestNats::start();
    let config = harness::config(&nats.url(), &[]);
    let js = nats.jetstream().await;
    hookline_shared::jetstream::ensure_streams(&js, &config.streams).await.expect("streams");
    (nats, js)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forwarder_killed_mid_delivery_loses_nothing_and_retries_what_waited_after_the_restart() {
    const N: usize = 200;
    let (nats, js) = setup().await;
    let (sink, url, _stop) = start_sink().await;
    // A slow target that fails the first 40 deliveries: some deliveries are in flight and some
    // events wait for a retry when the process dies.
    sink.set_delay(Duration::from_millis(100));
    sink.set_failure(FailurePlan { status: 500, count: Some(40), ..Default::default() });
    publish_events(&js, "kill", N).await;
    let mut forwarder = spawn_forwarder(&nats.url(), &url, free_port().expect("port"));
    let sink_ref = &sink;
    wait_for("failures and deliveries under way", Duration::from_secs(30), || async move {
        let s = sink_ref.stats();
        (s.injected_failures >= 40 && s.received >= 10).then_some(())
    })
    .await;
    forwarder.kill().expect("SIGKILL");
    forwarder.wait().expect("reaped");
    let failed_before_kill: Vec<String> =
        sink.attempts().into_iter().filter(|(_, a)| a.iter().all(|x| x.status == 500)).map(|(id, _)| id).collect();
    assert!(!failed_before_kill.is_empty(), "some events were waiting for a retry at the kill");

    let mut restarted = spawn_forwarder(&nats.url(), &url, free_port().expect("port"));
    wait_for("every event delivered", Duration::from_secs(60), || async move { (sink_ref.stats().unique == N as u64).then_some(()) }).await;
    let attempts = sink.attempts();
    for id in &failed_before_kill {
        let tries = &attempts[id];
        assert_eq!(tries.last().map(|a| a.status), Some(200), "{id} delivered after the restart: {tries:?}");
    }
    assert_eq!(dlq_count(&js).await, 0);
    let _ = restarted.kill();
    let _ = restarted.wait();
}

async fn delivered_by(port: u16) -> u64 {
    let text = reqwest::get(format!("http://127.0.0.1:{port}/metrics")).await.expect("metrics").text().await.expect("text");
    text.lines()
        .find(|l| l.starts_with(r#"hookline_deliveries_total{outcome="delivered"}"#))
        .and_then(|l| l.rsplit(' ').next()?.parse().ok())
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_forwarders_share_the_work_and_no_event_is_delivered_by_both() {
    const N: usize = 2_000;
    let (nats, js) = setup().await;
    let (sink, url, _stop) = start_sink().await;
    sink.set_delay(Duration::from_millis(2));
    let (port_a, port_b) = (free_port().expect("port"), free_port().expect("port"));
    let mut a = spawn_forwarder(&nats.url(), &url, port_a);
    let mut b = spawn_forwarder(&nats.url(), &url, port_b);
    publish_events(&js, "share", N).await;
    let sink_ref = &sink;
    wait_for("every event delivered", Duration::from_secs(60), || async move { (sink_ref.stats().unique == N as u64).then_some(()) }).await;
    let stats = sink.stats();
    assert_eq!(stats.duplicates, 0, "{stats:?}");
    assert_eq!(stats.bad_signature, 0);
    let (by_a, by_b) = (delivered_by(port_a).await, delivered_by(port_b).await);
    assert_eq!(by_a + by_b, N as u64, "a={by_a} b={by_b}");
    assert!(by_a > 0 && by_b > 0, "both processes delivered: a={by_a} b={by_b}");
    for child in [&mut a, &mut b] {
        let _ = child.kill();
        let _ = child.wait();
    }
}

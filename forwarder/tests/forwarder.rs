//! The forwarder against a real nats-server and local HTTP targets: signatures an independent
//! implementation accepts, retries on the durable schedule, Retry-After, dead letters.

use async_nats::jetstream::{self, consumer::PullConsumer};
use async_nats::HeaderMap;
use base64::Engine;
use hmac::{KeyInit, Mac};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use hookline_forwarder::sink::{FailurePlan, SinkState};
use hookline_shared::config::Config;
use hookline_shared::harness::{self, wait_for, TestNats};
use hookline_shared::metrics::Metrics;
use hookline_shared::names::{self, header};
use hookline_shared::Secret;

const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

fn event_json(id: &str) -> Vec<u8> {
    let received_at = hookline_shared::timefmt::now_rfc3339();
    format!(
        r#"{{"id":"{id}","schema_version":1,"kind":"message","source":"telegram","platform":"telegram","provider":"telegram","tenant_id":"acme","channel_id":"tg","received_at":"{received_at}","message":{{"id":"1:1","type":"text","text":"hi"}}}}"#
    )
    .into_bytes()
}

async fn publish_event(js: &jetstream::Context, id: &str) -> Vec<u8> {
    let body = event_json(id);
    let mut headers = HeaderMap::new();
    headers.insert(header::MSG_ID, id);
    headers.insert(header::TRACEPARENT, "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01");
    js.publish_with_headers("hookline.events.acme.telegram.message", headers, body.clone().into())
        .await
        .expect("publish")
        .await
        .expect("ack");
    body
}

struct Running {
    _nats: TestNats,
    js: jetstream::Context,
    metrics: Arc<Metrics>,
    shutdown: CancellationToken,
    task: tokio::task::JoinHandle<()>,
}

impl Running {
    async fn start(target: &str, extra: &[(&str, &str)]) -> Running {
        let nats = TestNats::start();
        let mut vars = vec![
            ("HOOKLINE_FORWARDER__TARGET_URL", target),
            ("HOOKLINE_FORWARDER__SIGNING_SECRET", SECRET),
            ("HOOKLINE_FORWARDER__RETRY_SCHEDULE_S", "[1, 1, 1, 1]"),
            ("HOOKLINE_FORWARDER__RETRY_JITTER", "0"),
        ];
        vars.extend_from_slice(extra);
        let config: Config = harness::config(&nats.url(), &vars);
        let js = nats.jetstream().await;
        hookline_shared::jetstream::ensure_streams(&js, &config.streams).await.expect("streams");
        let metrics = Metrics::new();
        let shutdown = CancellationToken::new();
        let task = {
            let (config, metrics, shutdown) = (config.clone(), metrics.clone(), shutdown.clone());
            tokio::spawn(async move { hookline_forwarder::worker::run(&config, metrics, None, shutdown).await.expect("forwarder runs") })
        };
        Running { _nats: nats, js, metrics, shutdown, task }
    }

    async fn consumer_settled(&self) {
        let js = &self.js;
        wait_for("the forwarder consumer acked everything", Duration::from_secs(20), || async move {
            let stream = js.get_stream(names::EVENTS_STREAM).await.ok()?;
            let mut consumer: PullConsumer = stream.get_consumer(names::FORWARDER_CONSUMER).await.ok()?;
            let info = consumer.info().await.ok()?;
            (info.num_pending == 0 && info.num_ack_pending == 0).then_some(())
        })
        .await;
    }

    async fn dlq_count(&self) -> u64 {
        let mut s = self.js.get_stream(names::DLQ_STREAM).await.expect("dlq");
        s.info().await.expect("info").state.messages
    }

    async fn stop(self) {
        self.shutdown.cancel();
        let _ = tokio::time::timeout(Duration::from_secs(15), self.task).await;
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

/// One HTTP/1.1 request, read by hand: (lowercased headers, body).
async fn accept_one(listener: TcpListener) -> (Vec<(String, String)>, Vec<u8>) {
    let (mut socket, _) = listener.accept().await.expect("accept");
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let head_end = loop {
        let n = socket.read(&mut chunk).await.expect("read");
        assert!(n > 0, "connection closed before the headers");
        buf.extend_from_slice(&chunk[..n]);
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i;
        }
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).to_string();
    let headers: Vec<(String, String)> = head
        .lines()
        .skip(1)
        .filter_map(|l| l.split_once(':').map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string())))
        .collect();
    let length: usize = headers.iter().find(|(k, _)| k == "content-length").and_then(|(_, v)| v.parse().ok()).expect("content-length");
    let mut body = buf[head_end + 4..].to_vec();
    while body.len() < length {
        let n = socket.read(&mut chunk).await.expect("read body");
        body.extend_from_slice(&chunk[..n]);
    }
    socket.write_all(b"HTTP/1.1 204 No Content\r\nContent-Length: 0\r\n\r\n").await.expect("answer");
    (headers, body)
}

#[tokio::test]
async fn a_delivered_event_is_signed_so_that_an_independent_implementation_accepts_it() {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let target = format!("http://{}/in", listener.local_addr().expect("addr"));
    let running = Running::start(&target, &[]).await;
    let body = publish_event(&running.js, "evt_signed").await;
    let (headers, received) = tokio::time::timeout(Duration::from_secs(20), accept_one(listener)).await.expect("delivered");
    let get = |name: &str| headers.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone()).unwrap_or_default();
    assert_eq!(received, body, "the event is delivered as stored");
    assert_eq!(get("content-type"), "application/json");
    assert_eq!(get("webhook-id"), "evt_signed");
    assert_eq!(get("traceparent").split('-').nth(1), Some("0af7651916cd43dd8448eb211c80319c"), "the trace continues");
    // Standard Webhooks, computed here from the specification, not with hookline's code.
    let key = base64::engine::general_purpose::STANDARD.decode(SECRET.trim_start_matches("whsec_")).expect("key");
    let mut mac = <hmac::Hmac<sha2::Sha256> as KeyInit>::new_from_slice(&key).expect("hmac");
    mac.update(format!("{}.{}.", get("webhook-id"), get("webhook-timestamp")).as_bytes());
    mac.update(&received);
    let expected = format!("v1,{}", base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes()));
    assert!(get("webhook-signature").split(' ').any(|s| s == expected), "{} != {expected}", get("webhook-signature"));
    let ts: i64 = get("webhook-timestamp").parse().expect("unix seconds");
    assert!((time::OffsetDateTime::now_utc().unix_timestamp() - ts).abs() < 60);
    running.consumer_settled().await;
    running.stop().await;
}

#[tokio::test]
async fn three_500s_then_200_gives_one_attempt_after_each_failure_on_the_schedule_then_an_ack() {
    let (sink, url, _stop) = start_sink().await;
    sink.set_failure(FailurePlan { status: 500, count: Some(3), ..Default::default() });
    let running = Running::start(&url, &[]).await;
    publish_event(&running.js, "evt_500").await;
    let sink_ref = &sink;
    wait_for("delivered after three failures", Duration::from_secs(30), || async move { (sink_ref.stats().received == 1).then_some(()) })
        .await;
    running.consumer_settled().await;
    let attempts = sink.attempts().remove("evt_500").expect("attempts");
    assert_eq!(attempts.iter().map(|a| a.status).collect::<Vec<_>>(), [500, 500, 500, 200]);
    for pair in attempts.windows(2) {
        let gap = pair[1].at_ms - pair[0].at_ms;
        assert!(gap >= 900, "retried after {gap} ms, before the schedule's 1 s");
    }
    assert_eq!(running.dlq_count().await, 0);
    let text = running.metrics.encode();
    assert!(text.contains(r#"hookline_deliveries_total{outcome="retried"} 3"#), "{text}");
    assert!(text.contains(r#"hookline_deliveries_total{outcome="delivered"} 1"#), "{text}");
    running.stop().await;
}

#[tokio::test]
async fn a_400_is_dead_lettered_at_once_with_status_reason_and_attempts() {
    let (sink, url, _stop) = start_sink().await;
    sink.set_failure(FailurePlan { status: 400, count: Some(1), ..Default::default() });
    let running = Running::start(&url, &[]).await;
    let body = publish_event(&running.js, "evt_400").await;
    let js = running.js.clone();
    let js_ref = &js;
    let letter = wait_for("the dead letter", Duration::from_secs(20), || async move {
        let dlq = js_ref.get_stream(names::DLQ_STREAM).await.ok()?;
        dlq.get_last_raw_message_by_subject("hookline.dlq.forward.acme").await.ok()
    })
    .await;
    let h = |name: &str| letter.headers.get(name).map(|v| v.as_str().to_string());
    assert_eq!(letter.payload.as_ref(), body.as_slice());
    assert_eq!(h(header::DLQ_REASON).as_deref(), Some("rejected_4xx"));
    assert_eq!(h(header::DLQ_LAST_STATUS).as_deref(), Some("400"));
    assert_eq!(h(header::DLQ_ATTEMPTS).as_deref(), Some("1"));
    assert_eq!(h(header::DLQ_STAGE).as_deref(), Some("forward"));
    running.consumer_settled().await;
    assert_eq!(sink.attempts().get("evt_400").map(Vec::len), Some(1), "no retry after a 400");
    running.stop().await;
}

#[tokio::test]
async fn a_429_with_retry_after_2_gets_no_new_attempt_before_2_seconds() {
    let (sink, url, _stop) = start_sink().await;
    sink.set_failure(FailurePlan { status: 429, count: Some(1), retry_after_s: Some(2), ..Default::default() });
    let running = Running::start(&url, &[("HOOKLINE_FORWARDER__RETRY_SCHEDULE_S", "[1, 10]")]).await;
    publish_event(&running.js, "evt_429").await;
    let sink_ref = &sink;
    wait_for("delivered after the 429", Duration::from_secs(20), || async move { (sink_ref.stats().received == 1).then_some(()) }).await;
    let attempts = sink.attempts().remove("evt_429").expect("attempts");
    assert_eq!(attempts.iter().map(|a| a.status).collect::<Vec<_>>(), [429, 200]);
    let gap = attempts[1].at_ms - attempts[0].at_ms;
    assert!(gap >= 2000, "retried {gap} ms after a Retry-After of 2 s");
    running.stop().await;
}

#[tokio::test]
async fn exhausted_attempts_dead_letter_with_the_last_status() {
    let (sink, url, _stop) = start_sink().await;
    sink.set_failure(FailurePlan { status: 503, ..Default::default() });
    let running = Running::start(&url, &[("HOOKLINE_FORWARDER__RETRY_SCHEDULE_S", "[1]")]).await;
    publish_event(&running.js, "evt_503").await;
    let js = running.js.clone();
    let js_ref = &js;
    let letter = wait_for("the dead letter", Duration::from_secs(20), || async move {
        let dlq = js_ref.get_stream(names::DLQ_STREAM).await.ok()?;
        dlq.get_last_raw_message_by_subject("hookline.dlq.forward.acme").await.ok()
    })
    .await;
    let h = |name: &str| letter.headers.get(name).map(|v| v.as_str().to_string());
    assert_eq!(h(header::DLQ_REASON).as_deref(), Some("attempts_exhausted"));
    assert_eq!(h(header::DLQ_LAST_STATUS).as_deref(), Some("503"));
    assert_eq!(h(header::DLQ_ATTEMPTS).as_deref(), Some("2"));
    assert_eq!(sink.attempts().get("evt_503").map(Vec::len), Some(2));
    running.stop().await;
}

#[tokio::test]
async fn a_failing_target_makes_the_in_flight_limit_drop_and_recover() {
    let (sink, url, _stop) = start_sink().await;
    sink.set_failure(FailurePlan { status: 500, ..Default::default() });
    // The breaker would trip after 20 failures and stop fetching: this test is about the limit.
    let running = Running::start(
        &url,
        &[
            ("HOOKLINE_FORWARDER__MAX_IN_FLIGHT", "32"),
            ("HOOKLINE_FORWARDER__MIN_IN_FLIGHT", "2"),
            ("HOOKLINE_FORWARDER__BREAKER__FAILURES", "1000"),
        ],
    )
    .await;
    for i in 0..40 {
        publish_event(&running.js, &format!("evt_lim_{i}")).await;
    }
    let metrics = running.metrics.clone();
    let m = &metrics;
    wait_for("the limit at its floor", Duration::from_secs(20), || async move {
        m.encode().contains("hookline_forwarder_in_flight_limit 2").then_some(())
    })
    .await;
    sink.set_failure(FailurePlan::default());
    let sink_ref = &sink;
    wait_for(
        "all delivered once the target recovers",
        Duration::from_secs(30),
        || async move { (sink_ref.stats().unique == 40).then_some(()) },
    )
    .await;
    let js = running.js.clone();
    let js_ref = &js;
    wait_for("the limit back near full", Duration::from_secs(20), || async move {
        publish_event(js_ref, &format!("evt_more_{}", rand_suffix())).await;
        m.encode()
            .lines()
            .find(|l| l.starts_with("hookline_forwarder_in_flight_limit "))
            .and_then(|l| l.split(' ').nth(1)?.parse::<u64>().ok())
            .filter(|v| *v >= 16)
            .map(|_| ())
    })
    .await;
    running.stop().await;
}

fn rand_suffix() -> u128 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or(0)
}

/// Answers each connection with the next of `answers` (status, body), then 200 "ok".
async fn serve_answers(listener: TcpListener, answers: Vec<(u16, Vec<u8>)>) {
    let mut answers = answers.into_iter();
    loop {
        let Ok((mut socket, _)) = listener.accept().await else { return };
        let (status, body) = answers.next().unwrap_or((200, b"ok".to_vec()));
        let mut buf = Vec::new();
        let mut chunk = [0u8; 8192];
        // Read the head and the body (Content-Length), then answer and close.
        while let Ok(n) = socket.read(&mut chunk).await {
            if n == 0 {
                break;
            }
            buf.extend_from_slice(&chunk[..n]);
            if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                let head = String::from_utf8_lossy(&buf[..i]).to_ascii_lowercase();
                let length: usize =
                    head.lines().find_map(|l| l.strip_prefix("content-length:").map(|v| v.trim().parse().unwrap_or(0))).unwrap_or(0);
                if buf.len() >= i + 4 + length {
                    break;
                }
            }
        }
        let head = format!("HTTP/1.1 {status} X\r\nContent-Length: {}\r\nConnection: close\r\n\r\n", body.len());
        let _ = socket.write_all(head.as_bytes()).await;
        let _ = socket.write_all(&body).await;
    }
}

/// The delivery log's records of one event, in the order stored.
async fn attempt_records(js: &jetstream::Context, event_id: &str) -> Vec<serde_json::Value> {
    let Ok(stream) = js.get_stream(names::ATTEMPTS_STREAM).await else { return Vec::new() };
    let mut out = Vec::new();
    let mut seq = 1;
    let filter = format!("hookline.attempts.{event_id}");
    while let Ok(m) = stream.get_first_raw_message_by_subject(&filter, seq).await {
        seq = m.sequence + 1;
        if let Ok(v) = serde_json::from_slice(&m.payload) {
            out.push(v);
        }
    }
    out
}

#[tokio::test]
async fn the_attempt_log_records_each_attempt_with_status_duration_and_the_answers_first_kib() {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let target = format!("http://{}/in", listener.local_addr().expect("addr"));
    let long_answer = vec![b'x'; 3000];
    tokio::spawn(serve_answers(listener, vec![(500, long_answer), (200, b"thanks".to_vec())]));
    let running = Running::start(&target, &[]).await;
    publish_event(&running.js, "evt_logged").await;
    let js = &running.js;
    let records = wait_for("two attempts recorded", Duration::from_secs(30), || async move {
        let r = attempt_records(js, "evt_logged").await;
        (r.len() >= 2).then_some(r)
    })
    .await;
    assert_eq!(records.len(), 2, "{records:?}");
    let (first, second) = (&records[0], &records[1]);
    assert_eq!(first["destination"], "default");
    assert_eq!(first["event_id"], "evt_logged");
    assert_eq!(first["tenant_id"], "acme");
    assert_eq!(first["event_subject"], "hookline.events.acme.telegram.message");
    assert_eq!((first["attempt"].as_u64(), first["status"].as_u64()), (Some(1), Some(500)));
    assert_eq!(first["outcome"], "retrying");
    assert_eq!(first["body"].as_str().map(str::len), Some(1024), "the first KiB of the answer");
    assert_eq!(first["body_truncated"], true);
    assert!(first["duration_ms"].as_f64().is_some_and(|d| d > 0.0), "{first}");
    let at = |v: &serde_json::Value, k: &str| v[k].as_str().and_then(hookline_shared::timefmt::parse_rfc3339).expect(k);
    let next = at(first, "next_attempt_at") - at(first, "at");
    assert!((0.9..3.0).contains(&next.as_seconds_f64()), "next attempt {next} after the first (schedule 1 s)");
    assert_eq!((second["attempt"].as_u64(), second["status"].as_u64()), (Some(2), Some(200)));
    assert_eq!((second["outcome"].as_str(), second["body"].as_str()), (Some("delivered"), Some("thanks")));
    assert!(second.get("next_attempt_at").is_none() && second.get("body_truncated").is_none(), "{second}");
    assert!(at(second, "at") >= at(first, "next_attempt_at") - time::Duration::milliseconds(100));
    let text = running.metrics.encode();
    assert!(text.contains(r#"hookline_log_records_total{log="attempts",outcome="written"} 2"#), "{text}");
    running.stop().await;
}

#[tokio::test]
async fn an_attempt_without_an_answer_is_logged_with_its_error_and_a_disabled_log_records_nothing() {
    // Nothing listens there.
    let closed = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let target = format!("http://{}/in", closed.local_addr().expect("addr"));
    drop(closed);
    let running = Running::start(&target, &[]).await;
    publish_event(&running.js, "evt_refused").await;
    let js = &running.js;
    let first =
        wait_for(
            "an attempt recorded",
            Duration::from_secs(20),
            || async move { attempt_records(js, "evt_refused").await.into_iter().next() },
        )
        .await;
    assert!(first.get("status").is_none(), "{first}");
    assert!(first["error"].as_str().is_some_and(|e| e.starts_with("connect_error")), "{first}");
    assert!(!first["error"].as_str().unwrap_or_default().contains("127.0.0.1"), "no URL in the error: {first}");
    assert_eq!(first["outcome"], "retrying");
    running.stop().await;

    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let target = format!("http://{}/in", listener.local_addr().expect("addr"));
    tokio::spawn(serve_answers(listener, Vec::new()));
    let running = Running::start(&target, &[("HOOKLINE_FORWARDER__ATTEMPTS_LOG", "false")]).await;
    publish_event(&running.js, "evt_unlogged").await;
    running.consumer_settled().await;
    assert!(attempt_records(&running.js, "evt_unlogged").await.is_empty());
    running.stop().await;
}

/// A consumer that vanishes under a running forwarder (deleted by hand here; a power cut can take
/// one created moments before, as the power-cut bench showed): the forwarder creates it again and
/// delivers, rather than fetching from nothing for ever.
#[tokio::test]
async fn a_consumer_deleted_under_the_forwarder_is_created_again_and_delivery_goes_on() {
    let (sink, url, stop_sink) = start_sink().await;
    let running = Running::start(&url, &[]).await;
    publish_event(&running.js, "evt_before").await;
    let s = &sink;
    wait_for("the first event delivered", Duration::from_secs(20), || async move {
        s.delivered_ids().contains(&"evt_before".to_string()).then_some(())
    })
    .await;
    running.consumer_settled().await;
    let stream = running.js.get_stream(names::EVENTS_STREAM).await.expect("stream");
    assert!(stream.delete_consumer(names::FORWARDER_CONSUMER).await.expect("delete").success);
    publish_event(&running.js, "evt_after").await;
    wait_for("the event stored after the deletion delivered", Duration::from_secs(30), || async move {
        s.delivered_ids().contains(&"evt_after".to_string()).then_some(())
    })
    .await;
    running.consumer_settled().await;
    running.stop().await;
    stop_sink.cancel();
}

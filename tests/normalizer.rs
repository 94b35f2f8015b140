//! The normalizer worker against a real nats-server: two `hookline normalizer` processes share
//! the durable consumer, one is SIGKILLed mid-run and restarted, and every expected event is in
//! HOOKLINE_EVENTS exactly once by id; an unparseable payload lands in the DLQ with its reason.

use async_nats::jetstream::{self, consumer::pull};
use async_nats::HeaderMap;
use futures_util::StreamExt;
use std::collections::HashSet;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use hookline_normalizer::{normalize, EventContext, RawInput};
use hookline_shared::config::Config;
use hookline_shared::event::{NormalizedEvent, RawRef};
use hookline_shared::harness::{self, wait_for, TestNats};
use hookline_shared::metrics::Metrics;
use hookline_shared::names::{self, header};
use hookline_shared::Source;

const TENANT: &str = "tenant-n";
const CHANNEL: &str = "tg-main";

fn telegram_update(n: u64) -> Vec<u8> {
    format!(
        r#"{{"update_id":{n},"message":{{"message_id":{n},"date":1700000000,"chat":{{"id":{chat},"type":"private","first_name":"Ana"}},"from":{{"id":{chat},"is_bot":false,"first_name":"Ana"}},"text":"message number {n}"}}}}"#,
        chat = 1000 + n % 7
    )
    .into_bytes()
}

async fn publish_raw(js: &jetstream::Context, source: Source, body: Vec<u8>) -> u64 {
    let mut headers = HeaderMap::new();
    headers.insert(header::SOURCE, source.as_str());
    headers.insert(header::CHANNEL, CHANNEL);
    headers.insert(header::TENANT, TENANT);
    headers.insert(header::RECEIVED_AT, "2026-01-01T00:00:00Z");
    headers.insert(header::CONTENT_TYPE, "application/json");
    js.publish_with_headers(names::raw_subject(source, CHANNEL), headers, body.into()).await.expect("publish").await.expect("ack").sequence
}

fn expected_events(source: Source, body: &[u8], seq: u64) -> Vec<NormalizedEvent> {
    let ctx = EventContext {
        tenant_id: TENANT.into(),
        channel_id: CHANNEL.into(),
        platform: String::new(),
        received_at: "2026-01-01T00:00:00Z".into(),
        raw: Some(RawRef { subject: names::raw_subject(source, CHANNEL), seq, index: None }),
    };
    normalize(&RawInput { source, body, content_type: Some("application/json"), query: None, context: &ctx }).expect("test payloads parse")
}

/// Publishes Telegram updates 1..=n as raw webhooks; the ids of the events they must become.
async fn publish_updates(js: &jetstream::Context, n: u64) -> HashSet<String> {
    let mut expected = HashSet::new();
    for i in 1..=n {
        let body = telegram_update(i);
        let seq = publish_raw(js, Source::Telegram, body.clone()).await;
        expected.extend(expected_events(Source::Telegram, &body, seq).into_iter().map(|e| e.id));
    }
    expected
}

async fn stream_messages(js: &jetstream::Context, stream: &str) -> u64 {
    let mut s = js.get_stream(stream).await.expect("stream");
    if stream == names::EVENTS_STREAM {
        // Events only: the stream also holds the normalizers' watermarks.
        let mut info = s.info_with_subjects(names::EVENTS_SUBJECTS).await.expect("info");
        let mut total = 0;
        while let Some(Ok((_, n))) = info.next().await {
            total += n as u64;
        }
        return total;
    }
    s.info().await.expect("info").state.messages
}

/// Every event in HOOKLINE_EVENTS, in order.
async fn all_events(js: &jetstream::Context, count: u64) -> Vec<NormalizedEvent> {
    let stream = js.get_stream(names::EVENTS_STREAM).await.expect("stream");
    let consumer = stream
        .create_consumer(pull::OrderedConfig { filter_subject: names::EVENTS_SUBJECTS.to_string(), ..Default::default() })
        .await
        .expect("ordered consumer");
    let mut messages = consumer.messages().await.expect("messages");
    let mut out = Vec::new();
    while (out.len() as u64) < count {
        let msg = tokio::time::timeout(Duration::from_secs(10), messages.next())
            .await
            .expect("events arrive")
            .expect("stream open")
            .expect("message");
        out.push(serde_json::from_slice(&msg.payload).expect("an event"));
    }
    out
}

fn spawn_normalizer(nats_url: &str) -> Child {
    Command::new(env!("CARGO_BIN_EXE_hookline"))
        .env("HOOKLINE_NATS__URL", nats_url)
        .env("HOOKLINE_NORMALIZER__LISTEN", "127.0.0.1:0")
        .env("HOOKLINE_NORMALIZER__ACK_WAIT_S", "2")
        .env("HOOKLINE_LOG__LEVEL", "warn")
        .arg("normalizer")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("hookline normalizer starts")
}

async fn setup(nats: &TestNats) -> (Config, jetstream::Context) {
    let config = harness::config(&nats.url(), &[]);
    let js = nats.jetstream().await;
    hookline_shared::jetstream::ensure_streams(&js, &config.streams).await.expect("streams");
    (config, js)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_messages_through_two_processes_one_killed_give_every_event_exactly_once() {
    const N: u64 = 10_000;
    let nats = TestNats::start();
    let (_config, js) = setup(&nats).await;
    let expected = publish_updates(&js, N).await;
    assert_eq!(expected.len() as u64, N, "one event per update");

    let mut first = spawn_normalizer(&nats.url());
    let mut second = spawn_normalizer(&nats.url());
    let js_ref = &js;
    wait_for("a third of the events", Duration::from_secs(60), || async move {
        (stream_messages(js_ref, names::EVENTS_STREAM).await >= N / 3).then_some(())
    })
    .await;
    // A crash in the middle: whatever it held unacked is redelivered to the others.
    first.kill().expect("SIGKILL");
    first.wait().expect("reaped");
    let mut restarted = spawn_normalizer(&nats.url());

    wait_for("every event", Duration::from_secs(120), || async move {
        (stream_messages(js_ref, names::EVENTS_STREAM).await >= N).then_some(())
    })
    .await;
    let consumer_state = wait_for("the consumer drained", Duration::from_secs(30), || async move {
        let stream = js_ref.get_stream(names::RAW_STREAM).await.ok()?;
        let mut consumer: jetstream::consumer::PullConsumer = stream.get_consumer(names::NORMALIZER_CONSUMER).await.ok()?;
        let info = consumer.info().await.ok()?.clone();
        (info.num_pending == 0 && info.num_ack_pending == 0).then_some(info)
    })
    .await;
    assert!(consumer_state.delivered.stream_sequence >= N);

    let events = all_events(&js, N).await;
    let ids: Vec<String> = events.iter().map(|e| e.id.clone()).collect();
    let unique: HashSet<String> = ids.iter().cloned().collect();
    assert_eq!(ids.len() as u64, N, "the stream holds exactly N events");
    assert_eq!(unique.len(), ids.len(), "no event id twice");
    assert_eq!(unique, expected, "exactly the expected events");
    assert_eq!(stream_messages(&js, names::DLQ_STREAM).await, 0);
    for event in events.iter().take(3) {
        assert_eq!((event.tenant_id.as_str(), event.channel_id.as_str()), (TENANT, CHANNEL));
        assert!(event.raw.is_some());
    }
    for child in [&mut second, &mut restarted] {
        let _ = child.kill();
        let _ = child.wait();
    }
}

#[tokio::test]
async fn an_unparseable_payload_lands_in_the_dlq_with_its_reason_and_is_acked() {
    let nats = TestNats::start();
    let (config, js) = setup(&nats).await;
    let bad_seq = publish_raw(&js, Source::Telegram, b"{not json".to_vec()).await;
    let good_body = telegram_update(1);
    let good_seq = publish_raw(&js, Source::Telegram, good_body.clone()).await;

    let shutdown = tokio_util::sync::CancellationToken::new();
    let metrics = Metrics::new();
    let worker = {
        let (config, shutdown, metrics) = (config.clone(), shutdown.clone(), metrics.clone());
        tokio::spawn(async move { hookline_normalizer::worker::run(&config, metrics, None, shutdown).await })
    };
    let js_ref = &js;
    wait_for("the dead letter and the event", Duration::from_secs(20), || async move {
        (stream_messages(js_ref, names::DLQ_STREAM).await == 1 && stream_messages(js_ref, names::EVENTS_STREAM).await == 1).then_some(())
    })
    .await;
    let dlq = js.get_stream(names::DLQ_STREAM).await.expect("dlq");
    let letter = dlq.get_last_raw_message_by_subject("hookline.dlq.normalize.telegram").await.expect("dead letter");
    let h = |name: &str| letter.headers.get(name).map(|v| v.as_str().to_string());
    assert_eq!(letter.payload.as_ref(), b"{not json");
    assert_eq!(h(header::DLQ_STAGE).as_deref(), Some("normalize"));
    assert_eq!(h(header::DLQ_REASON).as_deref(), Some("invalid_json"));
    assert_eq!(h(header::DLQ_SEQ), Some(bad_seq.to_string()));
    assert_eq!(h(header::DLQ_SUBJECT), Some(names::raw_subject(Source::Telegram, CHANNEL)));
    assert_eq!(h(header::DLQ_ATTEMPTS).as_deref(), Some("1"));
    assert!(h(header::DLQ_DETAIL).is_some_and(|d| !d.is_empty()));
    assert_eq!(h(header::CHANNEL).as_deref(), Some(CHANNEL), "the original headers travel with it");

    let events = all_events(&js, 1).await;
    assert_eq!(events, expected_events(Source::Telegram, &good_body, good_seq));

    let consumer_state = wait_for("both raw messages acked", Duration::from_secs(10), || async move {
        let stream = js_ref.get_stream(names::RAW_STREAM).await.ok()?;
        let mut consumer: jetstream::consumer::PullConsumer = stream.get_consumer(names::NORMALIZER_CONSUMER).await.ok()?;
        let info = consumer.info().await.ok()?.clone();
        (info.num_ack_pending == 0 && info.num_pending == 0).then_some(info)
    })
    .await;
    assert_eq!(consumer_state.ack_floor.stream_sequence, good_seq);
    let text = metrics.encode();
    assert!(text.contains(r#"hookline_dlq_messages_total{stage="normalize",reason="invalid_json"} 1"#), "{text}");
    assert!(text.contains(r#"hookline_consumer_pending_messages{consumer="normalizer"}"#), "the normalizer reports its lag: {text}");
    shutdown.cancel();
    worker.await.expect("joined").expect("worker ran");
}

#[tokio::test]
async fn nats_trouble_while_storing_events_is_retried_never_dead_lettered() {
    let nats = TestNats::start();
    // An events stream too small to take any event: publishes fail until the limit is raised.
    let config =
        harness::config(&nats.url(), &[("HOOKLINE_STREAMS__EVENTS__MAX_BYTES", "16"), ("HOOKLINE_NORMALIZER__RETRY_DELAY_MS", "200")]);
    let js = nats.jetstream().await;
    hookline_shared::jetstream::ensure_streams(&js, &config.streams).await.expect("streams");
    publish_raw(&js, Source::Telegram, telegram_update(5)).await;
    let shutdown = tokio_util::sync::CancellationToken::new();
    let metrics = Metrics::new();
    let worker = {
        let (config, shutdown, metrics) = (config.clone(), shutdown.clone(), metrics.clone());
        tokio::spawn(async move { hookline_normalizer::worker::run(&config, metrics, None, shutdown).await })
    };
    let metrics_ref = &metrics;
    wait_for("two retries", Duration::from_secs(20), || async move {
        metrics_ref.encode().contains(r#"hookline_normalizer_raw_messages_total{outcome="retried"} 2"#).then_some(())
    })
    .await;
    assert_eq!(stream_messages(&js, names::DLQ_STREAM).await, 0);
    let roomy = harness::config(&nats.url(), &[]);
    hookline_shared::jetstream::ensure_streams(&js, &roomy.streams).await.expect("raise the limit");
    let js_ref = &js;
    wait_for("the event after the limit is raised", Duration::from_secs(20), || async move {
        (stream_messages(js_ref, names::EVENTS_STREAM).await == 1).then_some(())
    })
    .await;
    assert_eq!(stream_messages(&js, names::DLQ_STREAM).await, 0);
    shutdown.cancel();
    worker.await.expect("joined").expect("worker ran");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_stops_a_normalizer_cleanly_and_a_restart_loses_nothing() {
    const N: u64 = 3_000;
    let nats = TestNats::start();
    let (_config, js) = setup(&nats).await;
    let expected = publish_updates(&js, N).await;
    let mut first = spawn_normalizer(&nats.url());
    let js_ref = &js;
    wait_for("some events", Duration::from_secs(60), || async move {
        (stream_messages(js_ref, names::EVENTS_STREAM).await >= 300).then_some(())
    })
    .await;
    // SAFETY: kill(2) on our own child.
    unsafe {
        libc::kill(first.id() as i32, libc::SIGTERM);
    }
    let status = wait_for("the normalizer exits after SIGTERM", Duration::from_secs(20), || {
        let exited = first.try_wait().ok().flatten();
        async move { exited }
    })
    .await;
    assert!(status.success(), "exit status {status}");
    let mut second = spawn_normalizer(&nats.url());
    wait_for(
        "every event",
        Duration::from_secs(60),
        || async move { (stream_messages(js_ref, names::EVENTS_STREAM).await >= N).then_some(()) },
    )
    .await;
    let ids: Vec<String> = all_events(&js, N).await.into_iter().map(|e| e.id).collect();
    let unique: HashSet<String> = ids.iter().cloned().collect();
    assert_eq!(ids.len(), unique.len(), "no event twice");
    assert_eq!(unique, expected);
    let _ = second.kill();
    let _ = second.wait();
}

/// The watermarks of `HOOKLINE_EVENTS`, oldest first: (stream sequence, raw ack floor).
async fn watermarks(js: &jetstream::Context) -> Vec<(u64, u64)> {
    let stream = js.get_stream(names::EVENTS_STREAM).await.expect("stream");
    let consumer = stream
        .create_consumer(pull::OrderedConfig { filter_subject: names::ORDER_WATERMARK_SUBJECT.to_string(), ..Default::default() })
        .await
        .expect("ordered consumer");
    let mut messages = consumer.messages().await.expect("messages");
    let mut out = Vec::new();
    while let Ok(Some(Ok(m))) = tokio::time::timeout(Duration::from_millis(500), messages.next()).await {
        let floor =
            serde_json::from_slice::<serde_json::Value>(&m.payload).ok().and_then(|v| v["raw_ack_floor"].as_u64()).expect("a floor");
        out.push((m.info().expect("info").stream_sequence, floor));
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watermarks_follow_the_events_they_cover_and_are_written_again_while_idle() {
    let nats = TestNats::start();
    let (config, js) = setup(&nats).await;
    let first = publish_raw(&js, Source::Telegram, telegram_update(1)).await;
    let second = publish_raw(&js, Source::Telegram, telegram_update(2)).await;
    let shutdown = tokio_util::sync::CancellationToken::new();
    let worker = {
        let (config, shutdown) = (config.clone(), shutdown.clone());
        tokio::spawn(async move { hookline_normalizer::worker::run(&config, Metrics::new(), None, shutdown).await })
    };
    let js_ref = &js;
    // Idle after two webhooks: a watermark covering both, then the same one again within 5 s.
    let marks = wait_for("two watermarks covering both webhooks", Duration::from_secs(15), || async move {
        let marks = watermarks(js_ref).await;
        (marks.iter().filter(|(_, floor)| *floor >= second).count() >= 2).then_some(marks)
    })
    .await;
    assert!(first < second);
    // Each watermark is stored after the events of every raw message it covers.
    let events = all_events(&js, 2).await;
    let stream = js.get_stream(names::EVENTS_STREAM).await.expect("stream");
    for (mark_seq, floor) in &marks {
        for event in events.iter().filter(|e| e.raw.as_ref().is_some_and(|r| r.seq <= *floor)) {
            let stored = stream.get_last_raw_message_by_subject(&names::event_subject(TENANT, &event.platform, event.kind.as_str())).await;
            let event_seq = stored.expect("event stored").sequence;
            assert!(event_seq < *mark_seq, "watermark {floor} at {mark_seq} stored before an event it covers ({event_seq})");
        }
    }
    shutdown.cancel();
    let _ = worker.await;
}

/// A consumer that vanishes under a running normalizer (deleted by hand here; a power cut can
/// take one created moments before): the normalizer creates it again and goes on, instead of
/// pulling from nothing for ever. What was acked before is normalized again (the same ids).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_consumer_deleted_under_the_normalizer_is_created_again_and_normalizing_goes_on() {
    let nats = TestNats::start();
    let (config, js) = setup(&nats).await;
    let shutdown = tokio_util::sync::CancellationToken::new();
    let worker = {
        let (config, shutdown) = (config.clone(), shutdown.clone());
        tokio::spawn(async move { hookline_normalizer::worker::run(&config, Metrics::new(), None, shutdown).await })
    };
    publish_raw(&js, Source::Telegram, telegram_update(1)).await;
    let js_ref = &js;
    wait_for("the first event", Duration::from_secs(20), || async move {
        (stream_messages(js_ref, names::EVENTS_STREAM).await >= 1).then_some(())
    })
    .await;
    let raw = js.get_stream(names::RAW_STREAM).await.expect("raw");
    assert!(raw.delete_consumer(names::NORMALIZER_CONSUMER).await.expect("delete").success);
    let body = telegram_update(2);
    let seq = publish_raw(&js, Source::Telegram, body.clone()).await;
    // The first webhook's event, normalized again, is a duplicate JetStream drops: a second
    // event is the new one.
    wait_for("the event of the webhook stored after the deletion", Duration::from_secs(30), || async move {
        (stream_messages(js_ref, names::EVENTS_STREAM).await >= 2).then_some(())
    })
    .await;
    let events = all_events(&js, 2).await;
    assert_eq!(events.len(), 2);
    assert_eq!(events[1], expected_events(Source::Telegram, &body, seq)[0]);
    shutdown.cancel();
    let _ = tokio::time::timeout(Duration::from_secs(15), worker).await;
}

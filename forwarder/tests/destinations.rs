//! Destinations against a real nats-server: each destination gets exactly the events its filter
//! and tenant allow, signed with its own secret (checked by an independent Standard Webhooks
//! implementation here); a failing destination trips, is probed at most once per interval and
//! gets everything once back, while another keeps flowing; pause and resume; rotation overlap;
//! delete; a bucket change felt within a second; the upgrade from the single `forwarder`
//! consumer; a rate limit held across three forwarder processes.

use async_nats::jetstream::{self, kv};
use async_nats::HeaderMap;
use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

use hookline_shared::config::Config;
use hookline_shared::crypto::Keyring;
use hookline_shared::destination::{DestinationRecord, DestinationSpec};
use hookline_shared::harness::target::{Received, Target};
use hookline_shared::harness::{self, wait_for, TestNats};
use hookline_shared::metrics::Metrics;
use hookline_shared::names::{self, header};
use hookline_shared::Secret;

const SECRET_A: &str = "whsec_MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=";
const SECRET_B: &str = "whsec_ZmVkY2JhOTg3NjU0MzIxMGZlZGNiYTk4NzY1NDMyMTA=";
const SECRET_C: &str = "whsec_YWJjZGVmZ2hpamtsbW5vcHFyc3R1dnd4eXoxMjM0NTY=";

/// An event as the normalizer publishes it.
fn event(id: &str, tenant: &str, source: &str, platform: &str, kind: &str, extra: serde_json::Value) -> (String, Vec<u8>) {
    let mut v = serde_json::json!({
        "id": id, "schema_version": 1, "kind": kind, "source": source, "platform": platform, "provider": source,
        "tenant_id": tenant, "channel_id": format!("{source}-ch"), "received_at": hookline_shared::timefmt::now_rfc3339(),
        "occurred_at": hookline_shared::timefmt::now_rfc3339(),
    });
    if let (Some(obj), Some(extra)) = (v.as_object_mut(), extra.as_object()) {
        obj.extend(extra.clone());
    }
    (names::event_subject(tenant, platform, kind), serde_json::to_vec(&v).expect("json"))
}

async fn publish(js: &jetstream::Context, subject: String, body: Vec<u8>, id: &str) {
    let mut headers = HeaderMap::new();
    headers.insert(header::MSG_ID, id);
    js.publish_with_headers(subject, headers, body.into()).await.expect("publish").await.expect("ack");
}

struct Stack {
    nats: TestNats,
    config: Config,
    js: jetstream::Context,
    keyring: Keyring,
    bucket: kv::Store,
    forwarders: Vec<(CancellationToken, tokio::task::JoinHandle<()>, Arc<Metrics>)>,
}

impl Stack {
    async fn start(extra: &[(&str, &str)]) -> Stack {
        let nats = TestNats::start();
        let mut vars = vec![
            ("HOOKLINE_FORWARDER__RETRY_SCHEDULE_S", "[1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1]"),
            ("HOOKLINE_FORWARDER__RETRY_JITTER", "0"),
            ("HOOKLINE_FORWARDER__LISTEN", "127.0.0.1:0"),
        ];
        vars.extend_from_slice(extra);
        let config: Config = harness::config(&nats.url(), &vars);
        let js = nats.jetstream().await;
        hookline_shared::jetstream::ensure_streams(&js, &config.streams).await.expect("streams");
        let buckets = hookline_forwarder::destinations::buckets(&js, &config).await.expect("buckets");
        let keyring = config.keyring().expect("keyring");
        Stack { nats, config, js, keyring, bucket: buckets.destinations, forwarders: Vec::new() }
    }

    fn spawn_forwarder(&mut self) -> Arc<Metrics> {
        let metrics = Metrics::new();
        let shutdown = CancellationToken::new();
        let task = {
            let (config, metrics, shutdown) = (self.config.clone(), metrics.clone(), shutdown.clone());
            tokio::spawn(async move { hookline_forwarder::worker::run(&config, metrics, None, shutdown).await.expect("forwarder runs") })
        };
        self.forwarders.push((shutdown, task, metrics.clone()));
        metrics
    }

    async fn put(&self, spec: serde_json::Value) -> DestinationRecord {
        let spec = DestinationSpec::from_json(&spec).unwrap_or_else(|e| panic!("spec: {e}"));
        let record = DestinationRecord::seal(&spec, &self.keyring, time::OffsetDateTime::now_utc()).unwrap_or_else(|e| panic!("seal: {e}"));
        self.put_record(&record).await;
        record
    }

    async fn put_record(&self, record: &DestinationRecord) {
        self.bucket.put(&record.id, serde_json::to_vec(record).expect("json").into()).await.expect("put");
    }

    /// Until the destination's consumer exists (the forwarders have seen it).
    async fn consumer_ready(&self, id: &str) {
        let js = &self.js;
        let name = hookline_forwarder::worker::consumer_name(id);
        let name = &name;
        wait_for("the destination's consumer", Duration::from_secs(10), || async move {
            js.get_stream(names::EVENTS_STREAM).await.ok()?.get_consumer::<jetstream::consumer::pull::Config>(name).await.ok().map(|_| ())
        })
        .await;
    }

    async fn dlq_count(&self) -> u64 {
        let mut s = self.js.get_stream(names::DLQ_STREAM).await.expect("dlq");
        s.info().await.expect("info").state.messages
    }

    async fn stop(mut self) {
        for (shutdown, task, _) in self.forwarders.drain(..) {
            shutdown.cancel();
            let _ = tokio::time::timeout(Duration::from_secs(15), task).await;
        }
        drop(self.nats);
    }
}

fn spec(id: &str, url: &str, secret: &str, rest: serde_json::Value) -> serde_json::Value {
    let mut v = serde_json::json!({"id": id, "url": url, "signing_secret": secret});
    if let (Some(obj), Some(rest)) = (v.as_object_mut(), rest.as_object()) {
        obj.extend(rest.clone());
    }
    v
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_destinations_get_exactly_the_events_their_filters_want_each_signed_with_its_own_secret() {
    let mut stack = Stack::start(&[]).await;
    let (payments, tenant_b, images) =
        (Target::start(&[SECRET_A]).await, Target::start(&[SECRET_B]).await, Target::start(&[SECRET_C]).await);
    stack.spawn_forwarder();
    stack
        .put(spec(
            "payments",
            &payments.url,
            SECRET_A,
            serde_json::json!({"filter": {"kind": ["payment"]}, "headers": {"X-Api-Key": "k-123"}}),
        ))
        .await;
    stack.put(spec("tenant-b", &tenant_b.url, SECRET_B, serde_json::json!({"tenant_id": "tenant-b"}))).await;
    // A tenant's destination whose filter asks for every tenant still gets only its own.
    stack
        .put(spec("images", &images.url, SECRET_C, serde_json::json!({"tenant_id": "tenant-a", "filter": {"tenant_id": ["tenant-a", "tenant-b"], "match": {"message.type": {"$in": ["image", "video"]}}}})))
        .await;
    for id in ["payments", "tenant-b", "images"] {
        stack.consumer_ready(id).await;
    }

    let mut want = [BTreeSet::new(), BTreeSet::new(), BTreeSet::new()];
    for i in 0..60 {
        let tenant = if i % 2 == 0 { "tenant-a" } else { "tenant-b" };
        let id = format!("evt-{i}");
        let (subject, body) = match i % 4 {
            0 => event(
                &id,
                tenant,
                "mercadopago",
                "mercadopago",
                "payment",
                serde_json::json!({"payment": {"id": "p1", "action": "payment.created"}}),
            ),
            1 => event(&id, tenant, "whatsapp", "whatsapp", "message", serde_json::json!({"message": {"id": "m", "type": "image"}})),
            2 => event(
                &id,
                tenant,
                "telegram",
                "telegram",
                "message",
                serde_json::json!({"message": {"id": "m", "type": "text", "text": "hi"}}),
            ),
            _ => event(&id, tenant, "whatsapp", "whatsapp", "status", serde_json::json!({"status": {"message_id": "m", "state": "read"}})),
        };
        if i % 4 == 0 {
            want[0].insert(id.clone());
        }
        if tenant == "tenant-b" {
            want[1].insert(id.clone());
        }
        if tenant == "tenant-a" && i % 4 == 1 {
            want[2].insert(id.clone());
        }
        publish(&stack.js, subject, body, &id).await;
    }
    let targets = [&payments, &tenant_b, &images];
    let (t, w) = (&targets, &want);
    wait_for(
        "every destination got its events",
        Duration::from_secs(20),
        || async move { (0..3).all(|i| t[i].ids() == w[i]).then_some(()) },
    )
    .await;
    // Nothing more arrives later.
    tokio::time::sleep(Duration::from_millis(500)).await;
    for (i, target) in targets.iter().enumerate() {
        assert_eq!(target.ids(), want[i], "destination {i} got other events");
        assert!(
            target.received().iter().all(|r| r.valid_signatures == vec![0]),
            "destination {i}: a delivery not signed with its own secret"
        );
    }
    assert!(
        payments.received().iter().all(|r| r.headers.iter().any(|(k, v)| k == "x-api-key" && v == "k-123")),
        "the extra header is missing"
    );
    stack.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_destination_trips_is_probed_once_per_interval_and_gets_everything_back_while_another_flows() {
    let mut stack = Stack::start(&[
        ("HOOKLINE_FORWARDER__BREAKER__FAILURES", "5"),
        ("HOOKLINE_FORWARDER__BREAKER__PROBE_S", "1"),
        ("HOOKLINE_FORWARDER__BREAKER__MAX_PROBE_S", "1"),
    ])
    .await;
    let (down, healthy) = (Target::start(&[SECRET_A]).await, Target::start(&[SECRET_B]).await);
    down.set_status(500);
    let metrics = stack.spawn_forwarder();
    stack.put(spec("down", &down.url, SECRET_A, serde_json::json!({"filter": {"kind": ["message"]}}))).await;
    stack.put(spec("healthy", &healthy.url, SECRET_B, serde_json::json!({"filter": {"kind": ["message"]}}))).await;
    stack.consumer_ready("down").await;
    stack.consumer_ready("healthy").await;
    let outage = Instant::now();
    let mut ids = BTreeSet::new();
    for i in 0..40 {
        let id = format!("evt-{i}");
        let (subject, body) =
            event(&id, "acme", "telegram", "telegram", "message", serde_json::json!({"message": {"id": "m", "type": "text"}}));
        publish(&stack.js, subject, body, &id).await;
        ids.insert(id);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // The healthy destination kept flowing during the outage.
    let (h, i) = (&healthy, &ids);
    wait_for("the healthy destination got everything", Duration::from_secs(10), || async move { (h.ids() == *i).then_some(()) }).await;
    let m = &metrics;
    wait_for("the failing destination tripped", Duration::from_secs(10), || async move {
        m.encode().contains("hookline_destination_state{destination=\"down\"} 2").then_some(())
    })
    .await;
    tokio::time::sleep(Duration::from_secs(4)).await;
    let during = down.received();
    // The fifth failure trips it; the sixth request may already have been in flight.
    let tripped_at = during.get(5).or(during.last()).map(|r| r.at).unwrap_or(outage);
    let outage_s = outage.elapsed().as_secs_f64();
    // Tripped after 5 failures: then at most one probe a second (plus the deliveries already in
    // flight when it tripped).
    let after_trip: Vec<&Received> = during.iter().filter(|r| r.at > tripped_at).collect();
    assert!(after_trip.len() as f64 <= (outage_s + 2.0) * 1.0 + 8.0, "{} requests while tripped in {outage_s:.1} s", after_trip.len());
    let mut per_second = std::collections::BTreeMap::new();
    for r in &after_trip {
        *per_second.entry((r.at - tripped_at).as_secs()).or_insert(0) += 1;
    }
    assert!(per_second.values().skip(1).all(|n| *n <= 2), "more than one probe per interval: {per_second:?}");

    down.set_status(200);
    let (d, i) = (&down, &ids);
    wait_for("the recovered destination got every event", Duration::from_secs(30), || async move {
        let got: BTreeSet<String> = d.received().into_iter().filter(|r| !r.event_id.is_empty()).map(|r| r.event_id).collect();
        i.is_subset(&got).then_some(())
    })
    .await;
    assert_eq!(stack.dlq_count().await, 0, "a tripped destination dead-letters nothing");
    let m = &metrics;
    wait_for("the breaker closed", Duration::from_secs(10), || async move {
        m.encode().contains("hookline_destination_state{destination=\"down\"} 0").then_some(())
    })
    .await;
    stack.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pause_resume_rotation_overlap_and_delete_take_effect_within_a_second() {
    let mut stack = Stack::start(&[]).await;
    let target = Target::start(&[SECRET_A, SECRET_B]).await;
    stack.spawn_forwarder();
    let record = stack.put(spec("d1", &target.url, SECRET_A, serde_json::json!({}))).await;
    stack.consumer_ready("d1").await;
    let send = |i: usize| {
        let js = stack.js.clone();
        async move {
            let id = format!("evt-{i}");
            let (subject, body) = event(&id, "acme", "telegram", "telegram", "message", serde_json::json!({}));
            publish(&js, subject, body, &id).await;
        }
    };
    send(0).await;
    let t = &target;
    wait_for("delivered", Duration::from_secs(10), || async move { t.ids().contains("evt-0").then_some(()) }).await;

    // Paused: nothing is delivered; the event waits.
    let mut paused = record.clone();
    paused.paused = true;
    stack.put_record(&paused).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    send(1).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(!target.ids().contains("evt-1"), "a paused destination delivered");
    // Resumed: the waiting event arrives.
    let changed = Instant::now();
    stack.put_record(&record).await;
    wait_for("delivered after resume", Duration::from_secs(10), || async move { t.ids().contains("evt-1").then_some(()) }).await;
    assert!(changed.elapsed() < Duration::from_secs(3), "resume took {:?}", changed.elapsed());

    // Rotation: both signatures while the previous secret is valid.
    let mut rotated = record.clone();
    rotated
        .rotate_signing_secret(&Secret::new(SECRET_B), &stack.keyring, time::OffsetDateTime::now_utc(), time::Duration::hours(1))
        .unwrap_or_else(|e| panic!("rotate: {e}"));
    stack.put_record(&rotated).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    send(2).await;
    wait_for("delivered after rotation", Duration::from_secs(10), || async move { t.ids().contains("evt-2").then_some(()) }).await;
    let r = target.received().into_iter().find(|r| r.event_id == "evt-2").expect("received");
    assert_eq!(r.valid_signatures, vec![0, 1], "during the overlap both secrets sign");

    // The same destination written again with another creation time (as two writers of a
    // declared destination stamp it): its consumer keeps its start, and it keeps delivering.
    let mut restamped = rotated.clone();
    restamped.created_at += time::Duration::minutes(5);
    stack.put_record(&restamped).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    send(4).await;
    wait_for("delivered after a new creation time", Duration::from_secs(10), || async move { t.ids().contains("evt-4").then_some(()) })
        .await;

    // Deleted: its consumer goes, nothing more is delivered.
    stack.bucket.delete("d1").await.expect("delete");
    let js = &stack.js;
    wait_for("the consumer removed", Duration::from_secs(5), || async move {
        js.get_stream(names::EVENTS_STREAM)
            .await
            .ok()?
            .get_consumer::<jetstream::consumer::pull::Config>("destination-d1")
            .await
            .err()
            .map(|_| ())
    })
    .await;
    send(3).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(!target.ids().contains("evt-3"), "a deleted destination delivered");
    stack.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_upgrade_from_the_single_forwarder_consumer_keeps_pending_events_and_scheduled_retries() {
    let target = Target::start(&[SECRET_A]).await;
    let mut stack =
        Stack::start(&[("HOOKLINE_FORWARDER__TARGET_URL", &target.url.clone()), ("HOOKLINE_FORWARDER__SIGNING_SECRET", SECRET_A)]).await;
    // The first stage's consumer, as it was: events pending, one held for a retry by a NAK.
    let stream = stack.js.get_stream(names::EVENTS_STREAM).await.expect("stream");
    let old: jetstream::consumer::PullConsumer = stream
        .create_consumer(jetstream::consumer::pull::Config {
            durable_name: Some(names::FORWARDER_CONSUMER.into()),
            ack_policy: jetstream::consumer::AckPolicy::Explicit,
            ack_wait: Duration::from_secs(60),
            max_deliver: -1,
            max_ack_pending: 100_000,
            filter_subject: names::EVENTS_SUBJECTS.into(),
            ..Default::default()
        })
        .await
        .expect("old consumer");
    let mut ids = BTreeSet::new();
    for i in 0..20 {
        let id = format!("old-{i}");
        let (subject, body) = event(&id, "acme", "telegram", "telegram", "message", serde_json::json!({}));
        publish(&stack.js, subject, body, &id).await;
        ids.insert(id);
    }
    // One event fetched and NAKed with a delay: a scheduled retry.
    {
        use futures_util::StreamExt;
        let mut batch = old.fetch().max_messages(1).messages().await.expect("fetch");
        let m = batch.next().await.expect("one").expect("message");
        m.ack_with(jetstream::AckKind::Nak(Some(Duration::from_secs(3)))).await.expect("nak");
    }
    drop(old);
    stack.spawn_forwarder();
    let (t, i) = (&target, &ids);
    wait_for("every pending event and the retry delivered", Duration::from_secs(20), || async move { i.is_subset(&t.ids()).then_some(()) })
        .await;
    let names: Vec<String> = {
        use futures_util::StreamExt;
        let stream = stack.js.get_stream(names::EVENTS_STREAM).await.expect("stream");
        stream.consumer_names().filter_map(|n| async move { n.ok() }).collect().await
    };
    assert_eq!(names, vec![names::FORWARDER_CONSUMER.to_string()], "default keeps the first stage's consumer");
    stack.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rate_limit_holds_for_the_destination_as_a_whole_across_three_processes() {
    let mut stack = Stack::start(&[]).await;
    let target = Target::start(&[SECRET_A]).await;
    for _ in 0..3 {
        stack.spawn_forwarder();
    }
    // Let the processes see each other before the load.
    tokio::time::sleep(Duration::from_secs(3)).await;
    stack.put(spec("limited", &target.url, SECRET_A, serde_json::json!({"rate_limit_per_s": 20.0}))).await;
    stack.consumer_ready("limited").await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    for i in 0..150 {
        let id = format!("evt-{i}");
        let (subject, body) = event(&id, "acme", "telegram", "telegram", "message", serde_json::json!({}));
        publish(&stack.js, subject, body, &id).await;
    }
    tokio::time::sleep(Duration::from_secs(6)).await;
    let received = target.received();
    let first = received.first().map(|r| r.at).expect("deliveries");
    // A window that leaves out the start (a burst of one fetch per process).
    let in_window = received.iter().filter(|r| r.at >= first + Duration::from_secs(1) && r.at < first + Duration::from_secs(5)).count();
    let rate = in_window as f64 / 4.0;
    assert!((17.0..=23.0).contains(&rate), "{rate:.1} deliveries/s with a limit of 20/s across three processes (within 15 %)");
    stack.stop().await;
}

/// An event of conversation `conversation` as the normalizer stores it: raw sequence `raw_seq`.
fn conversation_event(conversation: &str, n: usize, raw_seq: u64) -> (String, String, Vec<u8>) {
    let id = format!("evt_{conversation}_{n}");
    let (subject, body) = event(
        &id,
        "t1",
        "whatsapp",
        "whatsapp",
        "message",
        serde_json::json!({
            "conversation": {"id": conversation, "type": "direct"},
            "message": {"id": format!("wamid.{conversation}.{n}"), "type": "text", "text": format!("m{n}")},
            "raw": {"subject": "hookline.raw.whatsapp.whatsapp-ch", "seq": raw_seq, "index": 0},
        }),
    );
    (id, subject, body)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_ordered_destinations_failing_head_holds_only_its_conversation_until_dead_lettered_then_releases_it() {
    let mut stack = Stack::start(&[]).await;
    let target = Target::start(&[SECRET_A]).await;
    stack.spawn_forwarder();
    stack.put(spec("ordered", &target.url, SECRET_A, serde_json::json!({"ordering": "conversation", "retry_schedule_s": [1, 1]}))).await;
    stack.consumer_ready("ordered").await;
    // The head of conversation x fails every attempt; 50 other conversations, 3 messages each.
    let (head, subject, body) = conversation_event("x", 0, 1);
    target.fail_event(&head);
    let published = Instant::now();
    publish(&stack.js, subject, body, &head).await;
    let mut raw = 1;
    let mut others: Vec<Vec<String>> = vec![Vec::new(); 50];
    let mut rest_of_x = Vec::new();
    for n in 0..3 {
        for (c, ids) in others.iter_mut().enumerate() {
            raw += 1;
            let (id, subject, body) = conversation_event(&format!("c{c}"), n, raw);
            publish(&stack.js, subject, body, &id).await;
            ids.push(id);
        }
        if n > 0 {
            raw += 1;
            let (id, subject, body) = conversation_event("x", n, raw);
            publish(&stack.js, subject, body, &id).await;
            rest_of_x.push(id);
        }
    }
    // What a normalizer writes once every raw message up to `raw` is normalized.
    stack
        .js
        .publish(names::ORDER_WATERMARK_SUBJECT, format!("{{\"raw_ack_floor\":{raw}}}").into())
        .await
        .expect("publish")
        .await
        .expect("ack");

    let everything = 50 * 3 + 2;
    wait_for("every message but the head delivered", Duration::from_secs(30), || async {
        let ids = target.ids();
        (others.iter().flatten().chain(&rest_of_x).filter(|id| ids.contains(*id)).count() == everything).then_some(())
    })
    .await;
    let received = target.received();
    let at = |id: &str| received.iter().filter(|r| r.event_id == id).map(|r| r.at).collect::<Vec<_>>();
    let head_attempts = at(&head);
    assert_eq!(head_attempts.len(), 3, "the head is tried on the destination's schedule: 3 attempts");
    let last_head_attempt = *head_attempts.last().expect("attempts");
    // The other conversations did not wait for the failing head: all in before its last attempt,
    // each in order.
    for ids in &others {
        let times: Vec<Instant> = ids.iter().map(|id| at(id)[0]).collect();
        assert!(times.windows(2).all(|w| w[0] <= w[1]), "a conversation out of order: {ids:?}");
        assert!(times.iter().all(|t| *t < last_head_attempt), "a conversation waited for another's failing head");
    }
    let slowest = others.iter().flatten().map(|id| at(id)[0] - published).max().unwrap_or_default();
    eprintln!("the other conversations' slowest delivery: {slowest:?}; the head's last attempt at {:?}", last_head_attempt - published);
    // Conversation x waited for its head until the dead letter, then followed in order.
    let (x1, x2) = (at(&rest_of_x[0])[0], at(&rest_of_x[1])[0]);
    assert!(x1 > last_head_attempt && x2 > x1, "conversation x must follow its dead-lettered head, in order");
    assert_eq!(stack.dlq_count().await, 1, "the head is dead-lettered, nothing else");
    assert_eq!(received.iter().filter(|r| r.event_id == rest_of_x[0]).count(), 1);
    stack.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_destination_written_by_a_tenant_is_not_delivered_to_when_its_name_resolves_to_loopback() {
    // Both destinations name the receivers "localhost" (127.0.0.1 at connect time). The one a
    // tenant token wrote (`restrict_egress`) passed the write-time check when its name pointed
    // elsewhere; the forwarder's resolver refuses it now. The admin's is delivered to.
    let mut stack = Stack::start(&[]).await;
    let (guarded, open) = (Target::start(&[SECRET_A]).await, Target::start(&[SECRET_B]).await);
    stack.spawn_forwarder();
    let guarded_spec =
        spec("guarded", &guarded.url.replace("127.0.0.1", "localhost"), SECRET_A, serde_json::json!({"tenant_id": "tenant-a"}));
    let guarded_spec = DestinationSpec::from_json(&guarded_spec).unwrap_or_else(|e| panic!("spec: {e}"));
    let mut record = DestinationRecord::seal(&guarded_spec, &stack.keyring, time::OffsetDateTime::now_utc()).expect("seal");
    record.restrict_egress = true;
    stack.put_record(&record).await;
    stack.put(spec("open", &open.url.replace("127.0.0.1", "localhost"), SECRET_B, serde_json::json!({"tenant_id": "tenant-a"}))).await;
    for id in ["guarded", "open"] {
        stack.consumer_ready(id).await;
    }
    let mut want = BTreeSet::new();
    for i in 0..3 {
        let id = format!("evt-egress-{i}");
        let (subject, body) = event(
            &id,
            "tenant-a",
            "telegram",
            "telegram",
            "message",
            serde_json::json!({"message": {"id": "m", "type": "text", "text": "hi"}}),
        );
        publish(&stack.js, subject, body, &id).await;
        want.insert(id);
    }
    let (o, w) = (&open, &want);
    wait_for("the admin's destination got every event", Duration::from_secs(20), || async move { (o.ids() == *w).then_some(()) }).await;
    // Retries come every second (forwarder.retry_schedule_s): several have been refused by now.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert!(guarded.received().is_empty(), "a loopback address was reached for a tenant's destination");
    assert_eq!(stack.dlq_count().await, 0, "refused deliveries are retried, not dead-lettered");
    stack.stop().await;
}

/// An ordered destination's consumer deleted under its owner (a power cut can take a consumer
/// created moments before): the owner, holding nothing, creates it again and delivers on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_ordered_destinations_consumer_deleted_under_its_owner_is_created_again() {
    let mut stack = Stack::start(&[]).await;
    let target = Target::start(&[SECRET_A]).await;
    stack.spawn_forwarder();
    stack.put(spec("ordered", &target.url, SECRET_A, serde_json::json!({"ordering": "conversation"}))).await;
    stack.consumer_ready("ordered").await;
    let watermark = |raw: u64| format!("{{\"raw_ack_floor\":{raw}}}");
    let (first, subject, body) = conversation_event("x", 0, 1);
    publish(&stack.js, subject, body, &first).await;
    stack.js.publish(names::ORDER_WATERMARK_SUBJECT, watermark(1).into()).await.expect("publish").await.expect("ack");
    let t = &target;
    let first_ref = &first;
    wait_for("the first event delivered", Duration::from_secs(20), || async move { t.ids().contains(first_ref).then_some(()) }).await;

    let events = stack.js.get_stream(names::EVENTS_STREAM).await.expect("stream");
    let name = hookline_shared::destination::consumer_name("ordered");
    let s = &events;
    let n = &name;
    // Once its ack is in (nothing held), delete the consumer.
    wait_for("the first event acked", Duration::from_secs(10), || async move {
        let mut c: async_nats::jetstream::consumer::PullConsumer = s.get_consumer(n).await.ok()?;
        (c.info().await.ok()?.num_ack_pending == 0).then_some(())
    })
    .await;
    assert!(events.delete_consumer(&name).await.expect("delete").success);
    let (second, subject, body) = conversation_event("x", 1, 2);
    publish(&stack.js, subject, body, &second).await;
    stack.js.publish(names::ORDER_WATERMARK_SUBJECT, watermark(2).into()).await.expect("publish").await.expect("ack");
    let second_ref = &second;
    wait_for("the event stored after the deletion delivered", Duration::from_secs(30), || async move {
        t.ids().contains(second_ref).then_some(())
    })
    .await;
}

//! Replay and re-drive for one destination: what is replayed or re-driven for one destination
//! reaches only that one, and a tenant's destination never receives another tenant's events,
//! whatever a replay asks.

use async_nats::HeaderMap;
use std::collections::BTreeSet;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

use hookline_operations::dlq::{self, DlqFilter};
use hookline_operations::replay::{replay, ReplayOptions, ReplayStream};
use hookline_shared::destination::{DestinationRecord, DestinationSpec};
use hookline_shared::harness::target::Target;
use hookline_shared::harness::{self, wait_for, TestNats};
use hookline_shared::metrics::Metrics;
use hookline_shared::names::{self, header};

const SECRET_1: &str = "whsec_MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=";
const SECRET_2: &str = "whsec_ZmVkY2JhOTg3NjU0MzIxMGZlZGNiYTk4NzY1NDMyMTA=";

async fn publish(js: &async_nats::jetstream::Context, id: &str, tenant: &str) {
    let body = serde_json::json!({
        "id": id, "schema_version": 1, "kind": "message", "source": "telegram", "platform": "telegram", "provider": "telegram",
        "tenant_id": tenant, "channel_id": "tg", "received_at": hookline_shared::timefmt::now_rfc3339(),
        "message": {"id": "m", "type": "text", "text": "hi"},
    });
    let mut headers = HeaderMap::new();
    headers.insert(header::MSG_ID, id);
    headers.insert(header::TENANT, tenant);
    js.publish_with_headers(names::event_subject(tenant, "telegram", "message"), headers, serde_json::to_vec(&body).expect("json").into())
        .await
        .expect("publish")
        .await
        .expect("ack");
}

fn replayed(target: &Target) -> usize {
    target.received().len()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replay_and_redrive_for_one_destination_reach_only_that_one() {
    let nats = TestNats::start();
    let config = harness::config(&nats.url(), &[("HOOKLINE_FORWARDER__RETRY_JITTER", "0"), ("HOOKLINE_FORWARDER__LISTEN", "127.0.0.1:0")]);
    let js = nats.jetstream().await;
    hookline_shared::jetstream::ensure_streams(&js, &config.streams).await.expect("streams");
    let buckets = hookline_forwarder::destinations::buckets(&js, &config).await.expect("buckets");
    let keyring = config.keyring().expect("keyring");
    let (one, two) = (Target::start(&[SECRET_1]).await, Target::start(&[SECRET_2]).await);
    for (id, target, secret, tenant) in [("one", &one, SECRET_1, None), ("two", &two, SECRET_2, Some("tenant-a"))] {
        let mut spec = serde_json::json!({"id": id, "url": target.url, "signing_secret": secret});
        if let Some(t) = tenant {
            spec["tenant_id"] = serde_json::json!(t);
        }
        let spec = DestinationSpec::from_json(&spec).unwrap_or_else(|e| panic!("{e}"));
        let record = DestinationRecord::seal(&spec, &keyring, time::OffsetDateTime::now_utc()).unwrap_or_else(|e| panic!("{e}"));
        buckets.destinations.put(id, serde_json::to_vec(&record).expect("json").into()).await.expect("put");
    }
    let shutdown = CancellationToken::new();
    let forwarder = {
        let (config, shutdown) = (config.clone(), shutdown.clone());
        tokio::spawn(async move { hookline_forwarder::worker::run(&config, Metrics::new(), None, shutdown).await.expect("forwarder runs") })
    };
    let js_ref = &js;
    for consumer in ["destination-one", "destination-two"] {
        wait_for("the consumers", Duration::from_secs(10), || async move {
            js_ref
                .get_stream(names::EVENTS_STREAM)
                .await
                .ok()?
                .get_consumer::<async_nats::jetstream::consumer::pull::Config>(consumer)
                .await
                .ok()
                .map(|_| ())
        })
        .await;
    }
    publish(&js, "e-a", "tenant-a").await;
    publish(&js, "e-b", "tenant-b").await;
    let (o, t) = (&one, &two);
    wait_for("first deliveries", Duration::from_secs(10), || async move {
        (o.ids() == BTreeSet::from(["e-a".to_string(), "e-b".to_string()]) && t.ids() == BTreeSet::from(["e-a".to_string()])).then_some(())
    })
    .await;
    let (n_one, n_two) = (replayed(&one), replayed(&two));

    // A replay of every event, of every tenant, for destination two: only two gets copies, and
    // only of its own tenant.
    let options = ReplayOptions {
        stream: ReplayStream::Events,
        selection: Default::default(),
        dry_run: false,
        rate_per_s: None,
        destination: Some("two".into()),
    };
    let summary = replay(&js, &options, &mut |_| {}).await.expect("replay");
    assert_eq!(summary.selected, 2);
    wait_for("the replayed copy at two", Duration::from_secs(10), || async move { (replayed(t) == n_two + 1).then_some(()) }).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(replayed(&one), n_one, "a replay for two reached one");
    assert_eq!(replayed(&two), n_two + 1, "two got another tenant's event from a replay");

    // Destination one rejects the next event (a dead letter for one only); two takes it.
    one.set_status(400);
    publish(&js, "e-c", "tenant-a").await;
    let js_ref = &js;
    let letters = wait_for("the dead letter of one", Duration::from_secs(10), || async move {
        let l = dlq::list(js_ref, &DlqFilter { stage: Some("forward".into()), ..Default::default() }).await.ok()?;
        (!l.is_empty()).then_some(l)
    })
    .await;
    assert_eq!(letters.len(), 1);
    assert_eq!(letters[0].destination.as_deref(), Some("one"));
    wait_for("two delivered e-c", Duration::from_secs(10), || async move { t.ids().contains("e-c").then_some(()) }).await;
    let (n_one, n_two) = (replayed(&one), replayed(&two));

    // Re-driven once one accepts again: it reaches one, not two again.
    one.set_status(200);
    let only_one = DlqFilter { destination: Some("one".into()), ..Default::default() };
    let summary = dlq::redrive(&js, &only_one, false).await.expect("redrive");
    assert_eq!(summary.redriven, 1);
    wait_for("one got the re-driven event", Duration::from_secs(10), || async move { (replayed(o) == n_one + 1).then_some(()) }).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(replayed(&two), n_two, "a re-drive for one reached two");
    assert!(dlq::list(&js, &DlqFilter::default()).await.expect("list").is_empty());

    shutdown.cancel();
    let _ = tokio::time::timeout(Duration::from_secs(10), forwarder).await;
}

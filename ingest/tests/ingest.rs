//! Ingest against a real nats-server: every source's signed webhook is stored byte for byte,
//! bad signatures are refused and counted, duplicates are stored once, limits and outages get
//! the design's answers, and channels follow the KV bucket.

use async_nats::jetstream::{self, kv};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

use hookline_ingest::sign::signature_headers;
use hookline_shared::channel::{ChannelDecl, ChannelRecord};
use hookline_shared::config::Config;
use hookline_shared::harness::{self, wait_for, TestNats};
use hookline_shared::metrics::Metrics;
use hookline_shared::{names, Secret, Source};

const PUBLIC_URL: &str = "https://hooks.example.com";
const WEBCHAT_SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

struct Ingest {
    nats: TestNats,
    config: Config,
    base: String,
    shutdown: CancellationToken,
    task: tokio::task::JoinHandle<()>,
    js: jetstream::Context,
    store: kv::Store,
    http: reqwest::Client,
}

fn now() -> i64 {
    time::OffsetDateTime::now_utc().unix_timestamp()
}

fn secret_for(source: Source) -> &'static str {
    if source == Source::Webchat {
        WEBCHAT_SECRET
    } else {
        "test-secret-value-42"
    }
}

/// A realistic body per source (form-encoded for Twilio).
fn body_for(source: Source, n: u32) -> Vec<u8> {
    match source {
        Source::Twilio => format!("Body=hello+{n}&From=%2B15551234567&MessageSid=SM{n:032}&To=%2B15557654321").into_bytes(),
        _ => format!(r#"{{"n":{n},"text":"caf\u00e9 {n}","source":"{source}"}}"#).into_bytes(),
    }
}

impl Ingest {
    async fn start(extra: &[(&str, &str)]) -> Ingest {
        let nats = TestNats::start();
        let mut vars = vec![("HOOKLINE_INGEST__PUBLIC_URL", PUBLIC_URL)];
        vars.extend_from_slice(extra);
        let config = harness::config(&nats.url(), &vars);
        Self::start_with(nats, config).await
    }

    async fn start_with(nats: TestNats, config: Config) -> Ingest {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let base = format!("http://{}", listener.local_addr().expect("addr"));
        let shutdown = CancellationToken::new();
        let task = {
            let config = config.clone();
            let shutdown = shutdown.clone();
            tokio::spawn(async move {
                hookline_ingest::run(&config, Metrics::new(), listener, shutdown).await.expect("ingest runs");
            })
        };
        let http = reqwest::Client::builder().timeout(Duration::from_secs(20)).build().expect("client");
        let ready = format!("{base}/readyz");
        wait_for("ingest ready", Duration::from_secs(20), || {
            let http = http.clone();
            let ready = ready.clone();
            async move { http.get(&ready).send().await.ok().filter(|r| r.status() == 200).map(|_| ()) }
        })
        .await;
        let js = nats.jetstream().await;
        let store = js.get_key_value(names::CHANNELS_BUCKET).await.expect("bucket");
        Ingest { nats, config, base, shutdown, task, js, store, http }
    }

    async fn put_channel(&self, id: &str, source: Source, default: bool) {
        let decl = ChannelDecl {
            id: id.into(),
            tenant_id: "tenant-a".into(),
            source,
            secret: Secret::new(secret_for(source)),
            verify_token: Some(Secret::new("verify-me")),
            platform: None,
            name: None,
            default,
            settings: Default::default(),
        };
        let record = decl.to_record(&self.config.keyring().expect("keyring"), time::OffsetDateTime::now_utc());
        self.store.put(id, serde_json::to_vec(&record).expect("json").into()).await.expect("put");
    }

    /// Until a channel is known: a GET answers anything but 404 (405, or 403 for Meta).
    async fn wait_known(&self, id: &str) {
        let url = format!("{}/webhooks/{id}", self.base);
        wait_for(&format!("channel {id} served"), Duration::from_secs(5), || {
            let http = self.http.clone();
            let url = url.clone();
            async move { http.get(&url).send().await.ok().filter(|r| r.status() != 404).map(|_| ()) }
        })
        .await;
    }

    async fn post(&self, path: &str, headers: &[(String, String)], body: Vec<u8>) -> reqwest::Response {
        let mut req = self.http.post(format!("{}{path}", self.base)).body(body);
        for (k, v) in headers {
            req = req.header(k, v);
        }
        req.send().await.expect("request answered")
    }

    /// POSTs a correctly signed webhook for `channel_id` on `path`.
    async fn post_signed(&self, channel_id: &str, source: Source, path: &str, body: Vec<u8>) -> reqwest::Response {
        let mut headers = signature_headers(source, secret_for(source), &body, &format!("{PUBLIC_URL}{path}"), now());
        headers.push(("Content-Type".into(), content_type(source).into()));
        let _ = channel_id;
        self.post(path, &headers, body).await
    }

    async fn raw_count(&self) -> u64 {
        let mut stream = self.js.get_stream(names::RAW_STREAM).await.expect("stream");
        stream.info().await.expect("info").state.messages
    }

    async fn metrics(&self) -> String {
        self.http.get(format!("{}/metrics", self.base)).send().await.expect("metrics").text().await.expect("text")
    }

    async fn stop(self) {
        self.shutdown.cancel();
        let _ = tokio::time::timeout(Duration::from_secs(15), self.task).await;
        drop(self.nats);
    }
}

fn content_type(source: Source) -> &'static str {
    match source {
        Source::Twilio => "application/x-www-form-urlencoded",
        _ => "application/json",
    }
}

fn path_for(source: Source, id: &str) -> String {
    match source {
        Source::Mercadopago => format!("/webhooks/{id}?data.id=123456&type=payment"),
        _ => format!("/webhooks/{id}"),
    }
}

#[tokio::test]
async fn every_source_stores_the_exact_bytes_and_headers_of_a_signed_webhook() {
    let ingest = Ingest::start(&[]).await;
    for source in Source::ALL {
        ingest.put_channel(&format!("ch-{source}"), source, false).await;
    }
    for source in Source::ALL {
        let id = format!("ch-{source}");
        ingest.wait_known(&id).await;
        let body = body_for(source, 1);
        let path = path_for(source, &id);
        let response = ingest.post_signed(&id, source, &path, body.clone()).await;
        assert_eq!(response.status(), 200, "{source}: {:?}", response.text().await);

        let stream = ingest.js.get_stream(names::RAW_STREAM).await.expect("stream");
        let subject = names::raw_subject(source, &id);
        assert_eq!(subject, format!("hookline.raw.{source}.{id}"));
        let stored = stream.get_last_raw_message_by_subject(&subject).await.expect("stored message");
        assert_eq!(stored.payload.as_ref(), body.as_slice(), "{source}: bytes differ");
        let header = |name: &str| stored.headers.get(name).map(|v| v.as_str().to_string());
        assert_eq!(header("Hookline-Source").as_deref(), Some(source.as_str()));
        assert_eq!(header("Hookline-Channel").as_deref(), Some(id.as_str()));
        assert_eq!(header("Hookline-Tenant").as_deref(), Some("tenant-a"));
        assert_eq!(header("Content-Type").as_deref(), Some(content_type(source)));
        let received = header("Hookline-Received-At").expect("received-at");
        assert!(hookline_shared::timefmt::parse_rfc3339(&received).is_some(), "{received}");
        let traceparent = header("traceparent").expect("traceparent");
        assert_eq!(traceparent.split('-').map(str::len).collect::<Vec<_>>(), [2, 32, 16, 2], "{traceparent}");
        assert_eq!(header("Nats-Msg-Id"), Some(hookline_ingest::publish::message_id(&id, &body)));
        if source == Source::Mercadopago {
            assert_eq!(header("Hookline-Query").as_deref(), Some("data.id=123456&type=payment"));
        }
    }
    assert_eq!(ingest.raw_count().await, 9);
    let metrics = ingest.metrics().await;
    assert!(metrics.contains(r#"hookline_ingest_requests_total{source="twilio",status="200"} 1"#), "{metrics}");
    ingest.stop().await;
}

#[tokio::test]
async fn wrong_or_missing_signatures_get_401_store_nothing_and_are_counted() {
    let ingest = Ingest::start(&[]).await;
    for source in Source::ALL {
        ingest.put_channel(&format!("ch-{source}"), source, false).await;
    }
    for source in Source::ALL {
        let id = format!("ch-{source}");
        ingest.wait_known(&id).await;
        let path = path_for(source, &id);
        let body = body_for(source, 7);
        // Signed with another secret.
        let other = if source == Source::Webchat { "whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD" } else { "another-secret" };
        let headers = signature_headers(source, other, &body, &format!("{PUBLIC_URL}{path}"), now());
        assert_eq!(ingest.post(&path, &headers, body.clone()).await.status(), 401, "{source}: wrong secret");
        // Signed correctly, but the body changed on the way.
        let mut tampered = body.clone();
        tampered[2] ^= 1;
        let good = signature_headers(source, secret_for(source), &body, &format!("{PUBLIC_URL}{path}"), now());
        let tampered_status = ingest.post(&path, &good, tampered).await.status();
        if matches!(source, Source::Telegram | Source::Dialog360 | Source::Mercadopago) {
            // These schemes do not sign the body: Telegram and 360dialog send a shared secret,
            // Mercado Pago signs the query's data.id, the request id and a timestamp.
            assert_eq!(tampered_status, 200, "{source}");
        } else {
            assert_eq!(tampered_status, 401, "{source}: tampered body");
        }
        // No signature at all.
        let response = ingest.post(&path, &[], body).await;
        assert_eq!(response.status(), 401, "{source}: unsigned");
        assert_eq!(response.text().await.expect("text"), "invalid signature\n");
    }
    assert_eq!(ingest.raw_count().await, 3, "only the three schemes that do not sign the body stored theirs");
    let metrics = ingest.metrics().await;
    for source in Source::ALL {
        assert!(
            metrics.contains(&format!(r#"hookline_signature_failures_total{{source="{source}",reason="missing_header"}} 1"#)),
            "{source}: {metrics}"
        );
        assert!(metrics.contains(&format!(r#"hookline_ingest_requests_total{{source="{source}",status="401"}}"#)), "{source}");
    }
    assert!(metrics.contains(r#"hookline_signature_failures_total{source="whatsapp",reason="mismatch"} 2"#), "{metrics}");
    ingest.stop().await;
}

#[tokio::test]
async fn the_same_delivery_twice_is_stored_once() {
    let ingest = Ingest::start(&[]).await;
    ingest.put_channel("wa", Source::Whatsapp, false).await;
    ingest.wait_known("wa").await;
    let body = body_for(Source::Whatsapp, 3);
    for _ in 0..3 {
        assert_eq!(ingest.post_signed("wa", Source::Whatsapp, "/webhooks/wa", body.clone()).await.status(), 200);
    }
    assert_eq!(ingest.raw_count().await, 1);
    assert_eq!(ingest.post_signed("wa", Source::Whatsapp, "/webhooks/wa", body_for(Source::Whatsapp, 4)).await.status(), 200);
    assert_eq!(ingest.raw_count().await, 2);
    ingest.stop().await;
}

#[tokio::test]
async fn limits_unknown_channels_and_routes_get_the_designs_answers() {
    let ingest = Ingest::start(&[("HOOKLINE_INGEST__MAX_BODY_BYTES", "1024")]).await;
    ingest.put_channel("tg", Source::Telegram, false).await;
    ingest.wait_known("tg").await;
    let fits = vec![b'x'; 1024];
    assert_eq!(ingest.post_signed("tg", Source::Telegram, "/webhooks/tg", fits).await.status(), 200);
    let over = vec![b'x'; 1025];
    assert_eq!(ingest.post_signed("tg", Source::Telegram, "/webhooks/tg", over).await.status(), 413);
    // A body over the limit sent without Content-Length (chunked) is cut off too.
    let chunks: Vec<Result<Vec<u8>, std::io::Error>> = vec![Ok(vec![b'y'; 800]), Ok(vec![b'y'; 800])];
    let chunked = ingest
        .http
        .post(format!("{}/webhooks/tg", ingest.base))
        .header("X-Telegram-Bot-Api-Secret-Token", secret_for(Source::Telegram))
        .body(reqwest::Body::wrap_stream(futures_util::stream::iter(chunks)))
        .send()
        .await
        .expect("answered");
    assert_eq!(chunked.status(), 413);
    assert_eq!(ingest.raw_count().await, 1);

    assert_eq!(ingest.post_signed("nope", Source::Telegram, "/webhooks/nope", b"{}".to_vec()).await.status(), 404);
    assert_eq!(ingest.post("/elsewhere", &[], vec![]).await.status(), 404);
    let put = ingest.http.put(format!("{}/webhooks/tg", ingest.base)).body("{}").send().await.expect("answered");
    assert_eq!(put.status(), 405);
    let health = ingest.http.get(format!("{}/healthz", ingest.base)).send().await.expect("answered");
    assert_eq!(health.status(), 200);
    let metrics = ingest.metrics().await;
    assert!(metrics.contains(r#"hookline_ingest_requests_total{source="telegram",status="413"} 2"#), "{metrics}");
    assert!(metrics.contains(r#"hookline_ingest_requests_total{source="unknown",status="404"} 1"#), "{metrics}");
    ingest.stop().await;
}

#[tokio::test]
async fn with_nats_down_ingest_answers_503_with_retry_after_then_200_once_it_is_back() {
    let mut ingest = Ingest::start(&[("HOOKLINE_INGEST__PUBLISH_ACK_TIMEOUT_MS", "1000")]).await;
    ingest.put_channel("tg", Source::Telegram, false).await;
    ingest.wait_known("tg").await;
    assert_eq!(ingest.post_signed("tg", Source::Telegram, "/webhooks/tg", body_for(Source::Telegram, 1)).await.status(), 200);

    ingest.nats.kill();
    let started = Instant::now();
    let response = ingest.post_signed("tg", Source::Telegram, "/webhooks/tg", body_for(Source::Telegram, 2)).await;
    assert_eq!(response.status(), 503);
    assert_eq!(response.headers().get("retry-after").and_then(|v| v.to_str().ok()), Some("5"));
    assert!(started.elapsed() < Duration::from_secs(3), "answered within the ack timeout: {:?}", started.elapsed());
    let ready = ingest.http.get(format!("{}/readyz", ingest.base)).send().await.expect("answered");
    assert_eq!(ready.status(), 503);

    ingest.nats.restart();
    let ingest_ref = &ingest;
    wait_for("200 after NATS is back", Duration::from_secs(15), || async move {
        let r = ingest_ref.post_signed("tg", Source::Telegram, "/webhooks/tg", body_for(Source::Telegram, 2)).await;
        (r.status() == 200).then_some(())
    })
    .await;
    // The message answered 200 before the outage survived it (file storage), and the retried one is there.
    assert_eq!(ingest.raw_count().await, 2);
    ingest.stop().await;
}

#[tokio::test]
async fn channels_follow_the_bucket_within_a_second() {
    let ingest = Ingest::start(&[]).await;
    ingest.put_channel("late", Source::Tawkto, false).await;
    let put_at = Instant::now();
    ingest.wait_known("late").await;
    assert!(put_at.elapsed() < Duration::from_secs(1), "served after {:?}", put_at.elapsed());
    assert_eq!(ingest.post_signed("late", Source::Tawkto, "/webhooks/late", body_for(Source::Tawkto, 1)).await.status(), 200);

    ingest.store.delete("late").await.expect("delete");
    let deleted_at = Instant::now();
    let url = format!("{}/webhooks/late", ingest.base);
    wait_for("channel removed", Duration::from_secs(5), || {
        let http = ingest.http.clone();
        let url = url.clone();
        async move { http.get(&url).send().await.ok().filter(|r| r.status() == 404).map(|_| ()) }
    })
    .await;
    assert!(deleted_at.elapsed() < Duration::from_secs(1), "removed after {:?}", deleted_at.elapsed());

    // A record that is not a channel is refused loudly and not served.
    ingest.store.put("junk", "not json".into()).await.expect("put");
    ingest.put_channel("after-junk", Source::Telegram, false).await;
    ingest.wait_known("after-junk").await;
    assert_eq!(ingest.http.get(format!("{}/webhooks/junk", ingest.base)).send().await.expect("answered").status(), 404);
    ingest.stop().await;
}

#[tokio::test]
async fn channels_in_the_bucket_are_served_by_a_new_ingest_and_the_bucket_holds_no_plaintext() {
    let nats = TestNats::start();
    let mut config = harness::config(&nats.url(), &[("HOOKLINE_INGEST__PUBLIC_URL", PUBLIC_URL)]);
    config.channels.push(ChannelDecl {
        id: "declared".into(),
        tenant_id: "acme".into(),
        source: Source::Messenger,
        secret: Secret::new(secret_for(Source::Messenger)),
        verify_token: Some(Secret::new("hub-token-xyz")),
        platform: None,
        name: Some("Declared page".into()),
        default: true,
        settings: Default::default(),
    });
    let ingest = Ingest::start_with(nats, config).await;
    // Ready means the bucket's channels are served: no waiting for this one.
    let known = ingest.http.get(format!("{}/webhooks/declared", ingest.base)).send().await.expect("answered");
    assert_eq!(known.status(), 403, "a declared channel must be served as soon as ingest is ready");
    let entry = ingest.store.get("declared").await.expect("get").expect("declared channel in the bucket");
    let text = String::from_utf8_lossy(&entry);
    assert!(!text.contains(secret_for(Source::Messenger)) && !text.contains("hub-token-xyz"), "{text}");
    let record: ChannelRecord = serde_json::from_slice(&entry).expect("a channel record");
    assert_eq!(record.platform, "messenger");

    // Meta's handshake: the challenge comes back only with the right verify token.
    let ok = ingest
        .http
        .get(format!("{}/webhooks/declared?hub.mode=subscribe&hub.challenge=1158201444&hub.verify_token=hub-token-xyz", ingest.base))
        .send()
        .await
        .expect("answered");
    assert_eq!(ok.status(), 200);
    assert_eq!(ok.text().await.expect("text"), "1158201444");
    let bad = ingest
        .http
        .get(format!("{}/webhooks/declared?hub.mode=subscribe&hub.challenge=1&hub.verify_token=wrong", ingest.base))
        .send()
        .await
        .expect("answered");
    assert_eq!(bad.status(), 403);

    // The seed services' path reaches the platform's default channel.
    let body = body_for(Source::Messenger, 9);
    let path = "/api/v1/integrations/webhooks/messenger";
    let response = ingest.post_signed("declared", Source::Messenger, path, body.clone()).await;
    assert_eq!(response.status(), 200);
    let stream = ingest.js.get_stream(names::RAW_STREAM).await.expect("stream");
    let stored = stream.get_last_raw_message_by_subject("hookline.raw.messenger.declared").await.expect("stored");
    assert_eq!(stored.payload.as_ref(), body.as_slice());
    assert_eq!(ingest.post_signed("x", Source::Telegram, "/api/v1/integrations/webhooks/telegram", b"{}".to_vec()).await.status(), 404);
    ingest.stop().await;
}

async fn read_until_closed(stream: &mut TcpStream, limit: Duration) -> Option<String> {
    let mut buf = Vec::new();
    let read = tokio::time::timeout(limit, stream.read_to_end(&mut buf)).await;
    read.ok().map(|_| String::from_utf8_lossy(&buf).into_owned())
}

#[tokio::test]
async fn slow_clients_are_cut_off_by_header_and_body_timeouts() {
    let ingest =
        Ingest::start(&[("HOOKLINE_INGEST__HEADER_READ_TIMEOUT_MS", "300"), ("HOOKLINE_INGEST__BODY_READ_TIMEOUT_MS", "300")]).await;
    ingest.put_channel("tg", Source::Telegram, false).await;
    ingest.wait_known("tg").await;
    let addr = ingest.base.trim_start_matches("http://").to_string();

    // Headers that never finish.
    let mut slow_headers = TcpStream::connect(&addr).await.expect("connect");
    slow_headers.write_all(b"POST /webhooks/tg HTTP/1.1\r\nHost: x\r\n").await.expect("write");
    let closed = read_until_closed(&mut slow_headers, Duration::from_secs(5)).await;
    assert!(closed.is_some(), "connection with unfinished headers was not closed");

    // A body shorter than declared.
    let mut slow_body = TcpStream::connect(&addr).await.expect("connect");
    let head = format!(
        "POST /webhooks/tg HTTP/1.1\r\nHost: x\r\nX-Telegram-Bot-Api-Secret-Token: {}\r\nContent-Length: 100\r\n\r\n0123456789",
        secret_for(Source::Telegram)
    );
    slow_body.write_all(head.as_bytes()).await.expect("write");
    let answer = read_until_closed(&mut slow_body, Duration::from_secs(5)).await.expect("answered and closed");
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert_eq!(ingest.raw_count().await, 0);
    ingest.stop().await;
}

#[tokio::test]
async fn shutdown_stops_accepting_and_finishes_what_is_in_flight() {
    let ingest = Ingest::start(&[("HOOKLINE_INGEST__BODY_READ_TIMEOUT_MS", "5000")]).await;
    ingest.put_channel("tg", Source::Telegram, false).await;
    ingest.wait_known("tg").await;
    let addr = ingest.base.trim_start_matches("http://").to_string();
    let body = body_for(Source::Telegram, 5);
    // A request whose body is still arriving when shutdown begins.
    let mut in_flight = TcpStream::connect(&addr).await.expect("connect");
    let head = format!(
        "POST /webhooks/tg HTTP/1.1\r\nHost: x\r\nConnection: close\r\nX-Telegram-Bot-Api-Secret-Token: {}\r\nContent-Length: {}\r\n\r\n",
        secret_for(Source::Telegram),
        body.len()
    );
    in_flight.write_all(head.as_bytes()).await.expect("write head");
    in_flight.write_all(&body[..5]).await.expect("write part");
    tokio::time::sleep(Duration::from_millis(100)).await;
    ingest.shutdown.cancel();
    let ingest = Arc::new(ingest);
    let base = ingest.base.clone();
    wait_for("listener closed", Duration::from_secs(5), || {
        let base = base.clone();
        async move { TcpStream::connect(base.trim_start_matches("http://")).await.err().map(|_| ()) }
    })
    .await;
    in_flight.write_all(&body[5..]).await.expect("write rest");
    let answer = read_until_closed(&mut in_flight, Duration::from_secs(10)).await.expect("answered");
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert_eq!(ingest.raw_count().await, 1);
}

#[tokio::test]
async fn a_declared_channel_does_not_overwrite_the_buckets_version() {
    let nats = TestNats::start();
    let mut config = harness::config(&nats.url(), &[]);
    let decl = |tenant: &str| ChannelDecl {
        id: "shared-id".into(),
        tenant_id: tenant.into(),
        source: Source::Telegram,
        secret: Secret::new("file-token"),
        verify_token: None,
        platform: None,
        name: None,
        default: false,
        settings: Default::default(),
    };
    // The bucket already holds a version changed since (e.g. through the setup API).
    let js = nats.jetstream().await;
    let store = hookline_shared::jetstream::channels_bucket(&js, &config.streams).await.expect("bucket");
    let keyring = config.keyring().expect("keyring");
    let current = decl("tenant-from-api").to_record(&keyring, time::OffsetDateTime::now_utc());
    store.put("shared-id", serde_json::to_vec(&current).expect("json").into()).await.expect("put");
    config.channels.push(decl("tenant-from-file"));
    let ingest = Ingest::start_with(nats, config).await;
    let entry = ingest.store.get("shared-id").await.expect("get").expect("present");
    let record: ChannelRecord = serde_json::from_slice(&entry).expect("record");
    assert_eq!(record.tenant_id, "tenant-from-api");
    ingest.stop().await;
}

#[tokio::test]
async fn readyz_names_a_server_that_acknowledges_before_fsync() {
    for (fsync, warned) in [(hookline_shared::servers::Fsync::Lazy, true), (hookline_shared::servers::Fsync::Always, false)] {
        let nats = TestNats::start_with(fsync);
        let monitor = nats.monitor_url();
        let config = harness::config(&nats.url(), &[("HOOKLINE_INGEST__PUBLIC_URL", PUBLIC_URL), ("HOOKLINE_NATS__MONITOR_URL", &monitor)]);
        let ingest = Ingest::start_with(nats, config).await;
        let ready = ingest.http.get(format!("{}/readyz", ingest.base)).send().await.expect("answered");
        assert_eq!(ready.status(), 200, "a lazy server still serves; the body says what a 200 means");
        let body = ready.text().await.expect("body");
        assert_eq!(body.contains("acknowledges before it fsyncs"), warned, "{fsync:?}: {body}");
        if warned {
            assert!(body.contains("sync_interval: always"), "{body}");
        }
        ingest.shutdown.cancel();
    }
}

//! Hostile clients against a real ingest and nats-server: slowloris headers and bodies, a body
//! longer than its Content-Length, a Content-Length over the limit, invalid UTF-8 and deeply
//! nested JSON under a valid signature, and a flood of invalid signatures while valid webhooks
//! keep getting 200. Every attacker loop is bounded in count and in time, on loopback only.

use async_nats::jetstream::{self, kv};
use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

use hookline_ingest::publish::message_id;
use hookline_ingest::sign::signature_headers;
use hookline_shared::channel::ChannelDecl;
use hookline_shared::config::Config;
use hookline_shared::harness::{self, wait_for, TestNats};
use hookline_shared::metrics::Metrics;
use hookline_shared::{names, Secret, Source};

const PUBLIC_URL: &str = "https://hooks.example.com";
const WEBCHAT_SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

fn secret_for(source: Source) -> &'static str {
    if source == Source::Webchat {
        WEBCHAT_SECRET
    } else {
        "test-secret-value-42"
    }
}

fn now() -> i64 {
    time::OffsetDateTime::now_utc().unix_timestamp()
}

struct Ingest {
    nats: TestNats,
    config: Config,
    base: String,
    addr: String,
    shutdown: CancellationToken,
    task: tokio::task::JoinHandle<()>,
    js: jetstream::Context,
    store: kv::Store,
    http: reqwest::Client,
}

impl Ingest {
    async fn start(extra: &[(&str, &str)]) -> Ingest {
        let nats = TestNats::start();
        let mut vars = vec![("HOOKLINE_INGEST__PUBLIC_URL", PUBLIC_URL)];
        vars.extend_from_slice(extra);
        let config = harness::config(&nats.url(), &vars);
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr").to_string();
        let base = format!("http://{addr}");
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
        Ingest { nats, config, base, addr, shutdown, task, js, store, http }
    }

    /// Writes a channel to the bucket and waits until ingest serves it.
    async fn add_channel(&self, id: &str, source: Source) {
        let decl = ChannelDecl {
            id: id.into(),
            tenant_id: "tenant-h".into(),
            source,
            secret: Secret::new(secret_for(source)),
            verify_token: None,
            platform: None,
            name: None,
            default: false,
            settings: Default::default(),
        };
        let record = decl.to_record(&self.config.keyring().expect("keyring"), time::OffsetDateTime::now_utc());
        self.store.put(id, serde_json::to_vec(&record).expect("json").into()).await.expect("put");
        let url = format!("{}/webhooks/{id}", self.base);
        wait_for(&format!("channel {id} served"), Duration::from_secs(5), || {
            let http = self.http.clone();
            let url = url.clone();
            async move { http.get(&url).send().await.ok().filter(|r| r.status() != 404).map(|_| ()) }
        })
        .await;
    }

    /// POSTs `body` to `/webhooks/{id}` signed as `source` signs, on `client`.
    async fn post_signed(&self, client: &reqwest::Client, id: &str, source: Source, body: Vec<u8>) -> reqwest::Response {
        let path = format!("/webhooks/{id}");
        let headers = signature_headers(source, secret_for(source), &body, &format!("{PUBLIC_URL}{path}"), now());
        let content_type = if source == Source::Twilio { "application/x-www-form-urlencoded" } else { "application/json" };
        let mut req = client.post(format!("{}{path}", self.base)).header("Content-Type", content_type).body(body);
        for (k, v) in headers {
            req = req.header(k, v);
        }
        req.send().await.expect("request answered")
    }

    async fn raw_count(&self) -> u64 {
        let mut stream = self.js.get_stream(names::RAW_STREAM).await.expect("stream");
        stream.info().await.expect("info").state.messages
    }

    /// The payload of the last raw message of channel `id`, with its `Nats-Msg-Id`.
    async fn last_stored(&self, source: Source, id: &str) -> (Vec<u8>, Option<String>) {
        let stream = self.js.get_stream(names::RAW_STREAM).await.expect("stream");
        let msg = stream.get_last_raw_message_by_subject(&names::raw_subject(source, id)).await.expect("a stored message");
        let msg_id = msg.headers.get("Nats-Msg-Id").map(|v| v.as_str().to_string());
        (msg.payload.to_vec(), msg_id)
    }

    /// Every payload of `HOOKLINE_RAW`, in order.
    async fn all_payloads(&self) -> Vec<Vec<u8>> {
        let stream = self.js.get_stream(names::RAW_STREAM).await.expect("stream");
        let count = self.raw_count().await;
        let mut out = Vec::new();
        for seq in 1..=count {
            out.push(stream.get_raw_message(seq).await.expect("message by sequence").payload.to_vec());
        }
        out
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

/// The sum of the values of the metric lines that start with `prefix`.
fn metric_sum(metrics: &str, prefix: &str) -> u64 {
    metrics
        .lines()
        .filter(|l| l.starts_with(prefix))
        .filter_map(|l| l.rsplit(' ').next())
        .map(|v| v.parse::<f64>().unwrap_or_else(|_| panic!("metric value in {v:?}")) as u64)
        .sum()
}

/// An HTTP/1.1 response read off a raw connection.
#[derive(Debug)]
struct RawResponse {
    status: u16,
    body: Vec<u8>,
}

/// Reads one response from `r`; `buf` keeps what was read beyond it. `None` when the connection
/// ends before a whole response.
async fn read_response<R: AsyncRead + Unpin>(r: &mut R, buf: &mut Vec<u8>) -> Option<RawResponse> {
    let mut chunk = [0u8; 4096];
    let head_end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        match r.read(&mut chunk).await {
            Ok(0) | Err(_) => return None,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
    let status = head.split(' ').nth(1).and_then(|s| s.parse().ok()).unwrap_or_else(|| panic!("a status line: {head}"));
    let length: usize = head
        .lines()
        .find_map(|l| l.split_once(':').filter(|(k, _)| k.eq_ignore_ascii_case("content-length")).map(|(_, v)| v.trim()))
        .map_or(0, |v| v.parse().expect("a Content-Length"));
    while buf.len() < head_end + length {
        match r.read(&mut chunk).await {
            Ok(0) | Err(_) => return None,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
    let body = buf[head_end..head_end + length].to_vec();
    buf.drain(..head_end + length);
    Some(RawResponse { status, body })
}

/// Reads until the peer closes (EOF or reset), at most `limit`: what came, or `None` if the
/// connection was still open at the deadline.
async fn read_until_closed<R: AsyncRead + Unpin>(r: &mut R, limit: Duration) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    let mut chunk = [0u8; 4096];
    tokio::time::timeout(limit, async {
        loop {
            match r.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => out.extend_from_slice(&chunk[..n]),
            }
        }
    })
    .await
    .ok()
    .map(|()| out)
}

/// A request head for `/webhooks/{id}` with `headers`, declaring `content_length`.
fn request_head(id: &str, headers: &[(String, String)], content_length: usize) -> Vec<u8> {
    let mut head = format!("POST /webhooks/{id} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n");
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str(&format!("Content-Length: {content_length}\r\n\r\n"));
    head.into_bytes()
}

fn signed_headers(source: Source, id: &str, body: &[u8]) -> Vec<(String, String)> {
    signature_headers(source, secret_for(source), body, &format!("{PUBLIC_URL}/webhooks/{id}"), now())
}

/// What one slowloris connection saw.
struct Trickled {
    /// From connect to the server closing the connection (or answering), when it did.
    closed_after: Option<Duration>,
    sent: usize,
    /// What the server sent before closing.
    answer: Vec<u8>,
}

/// Connects, writes `preamble` at once, then `trickle` one byte every `every` until the server
/// closes the connection or answers, or `limit` passes. `started` counts connections that have
/// begun trickling.
async fn trickle(
    addr: String,
    preamble: Vec<u8>,
    trickle: Vec<u8>,
    every: Duration,
    limit: Duration,
    started: Arc<AtomicUsize>,
) -> Trickled {
    let connected = Instant::now();
    let stream = TcpStream::connect(&addr).await.expect("connect");
    let (mut reader, mut writer) = stream.into_split();
    let done = Arc::new(AtomicBool::new(false));
    let reading = {
        let done = done.clone();
        tokio::spawn(async move {
            let answer = read_until_closed(&mut reader, limit).await;
            let at = connected.elapsed();
            done.store(true, Ordering::Release);
            answer.map(|a| (a, at))
        })
    };
    let mut sent = 0;
    if writer.write_all(&preamble).await.is_ok() {
        sent += preamble.len();
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        for (i, byte) in trickle.iter().enumerate() {
            tick.tick().await;
            if done.load(Ordering::Acquire) || connected.elapsed() > limit {
                break;
            }
            if writer.write_all(&[*byte]).await.is_err() {
                break;
            }
            sent += 1;
            if i == 0 {
                started.fetch_add(1, Ordering::AcqRel);
            }
        }
    }
    let seen = reading.await.expect("reader task");
    Trickled { closed_after: seen.as_ref().map(|(_, at)| *at), sent, answer: seen.map(|(a, _)| a).unwrap_or_default() }
}

#[tokio::test]
async fn slowloris_headers_are_cut_off_while_a_valid_webhook_gets_200_promptly() {
    const CONNECTIONS: usize = 100;
    let header_timeout = Duration::from_millis(2000);
    let ingest = Ingest::start(&[("HOOKLINE_INGEST__HEADER_READ_TIMEOUT_MS", "2000")]).await;
    ingest.add_channel("wa", Source::Whatsapp).await;

    // Each attacker sends a request head one byte every 20 ms; the head is 8 000 bytes long, so
    // at that pace it would take 160 s. None may last much past the header read timeout.
    let mut head = b"POST /webhooks/wa HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ".to_vec();
    head.resize(8000, b'a');
    let started = Arc::new(AtomicUsize::new(0));
    let attackers: Vec<_> = (0..CONNECTIONS)
        .map(|_| {
            tokio::spawn(trickle(
                ingest.addr.clone(),
                Vec::new(),
                head.clone(),
                Duration::from_millis(20),
                Duration::from_secs(8),
                started.clone(),
            ))
        })
        .collect();
    wait_for("every slowloris connection trickling", Duration::from_secs(5), || {
        let n = started.load(Ordering::Acquire);
        async move { (n == CONNECTIONS).then_some(()) }
    })
    .await;

    // A valid webhook on its own connection, while all of them hold theirs.
    let fresh = reqwest::Client::builder().pool_max_idle_per_host(0).timeout(Duration::from_secs(10)).build().expect("client");
    let body = br#"{"object":"whatsapp_business_account","entry":[]}"#.to_vec();
    let sent_at = Instant::now();
    let response = ingest.post_signed(&fresh, "wa", Source::Whatsapp, body.clone()).await;
    let latency = sent_at.elapsed();
    assert_eq!(response.status(), 200);
    let still_trickling = attackers.iter().filter(|a| !a.is_finished()).count();
    assert_eq!(still_trickling, CONNECTIONS, "the valid webhook must be answered while every slowloris connection is held");
    assert!(latency < Duration::from_secs(1), "valid webhook answered after {latency:?}");
    assert_eq!(ingest.last_stored(Source::Whatsapp, "wa").await.0, body);

    let mut slowest = Duration::ZERO;
    for attacker in attackers {
        let t = attacker.await.expect("attacker task");
        let closed = t.closed_after.expect("a slowloris connection was never closed by ingest");
        assert!(t.sent < head.len(), "the head was never finished");
        assert!(t.answer.is_empty(), "a cut-off connection gets no answer: {:?}", String::from_utf8_lossy(&t.answer));
        assert!(closed >= header_timeout - Duration::from_millis(100), "closed after {closed:?}, before the header timeout");
        assert!(closed < header_timeout + Duration::from_secs(3), "closed after {closed:?}, long after the header timeout");
        slowest = slowest.max(closed);
    }
    eprintln!("slowloris headers: {CONNECTIONS} connections cut off, the last after {slowest:?}; valid webhook in {latency:?}");

    // Ingest still serves afterwards.
    let after = ingest.post_signed(&fresh, "wa", Source::Whatsapp, br#"{"after":true}"#.to_vec()).await;
    assert_eq!(after.status(), 200);
    assert_eq!(ingest.raw_count().await, 2);
    ingest.stop().await;
}

#[tokio::test]
async fn slowloris_bodies_get_408_after_the_body_read_timeout_and_store_nothing() {
    const CONNECTIONS: usize = 20;
    let body_timeout = Duration::from_millis(700);
    let ingest = Ingest::start(&[("HOOKLINE_INGEST__BODY_READ_TIMEOUT_MS", "700")]).await;
    ingest.add_channel("tg", Source::Telegram).await;

    // A complete head with a valid Telegram token (which does not sign the body), then a
    // 200-byte body at one byte every 25 ms: 5 s for the whole body.
    let body = vec![b'x'; 200];
    let head = request_head("tg", &signed_headers(Source::Telegram, "tg", &body), body.len());
    let started = Arc::new(AtomicUsize::new(0));
    let attackers: Vec<_> = (0..CONNECTIONS)
        .map(|_| {
            tokio::spawn(trickle(
                ingest.addr.clone(),
                head.clone(),
                body.clone(),
                Duration::from_millis(25),
                Duration::from_secs(8),
                started.clone(),
            ))
        })
        .collect();
    let mut slowest = Duration::ZERO;
    for attacker in attackers {
        let t = attacker.await.expect("attacker task");
        let answered = t.closed_after.expect("a slow body was never answered");
        let answer = String::from_utf8_lossy(&t.answer);
        assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
        assert!(t.sent < head.len() + body.len(), "the body was never finished");
        assert!(answered >= body_timeout - Duration::from_millis(50), "answered after {answered:?}, before the body timeout");
        assert!(answered < body_timeout + Duration::from_secs(3), "answered after {answered:?}, long after the body timeout");
        slowest = slowest.max(answered);
    }
    eprintln!("slowloris bodies: {CONNECTIONS} answered 408, the last after {slowest:?}");
    assert_eq!(ingest.raw_count().await, 0, "a body not received in time is never stored");
    let metrics = ingest.metrics().await;
    assert_eq!(metric_sum(&metrics, r#"hookline_ingest_requests_total{source="telegram",status="408"}"#), CONNECTIONS as u64);
    ingest.stop().await;
}

#[tokio::test]
async fn a_body_longer_than_its_content_length_is_cut_at_the_declared_length() {
    let ingest = Ingest::start(&[]).await;
    ingest.add_channel("wa", Source::Whatsapp).await;
    let declared = br#"{"object":"whatsapp_business_account","entry":[]}"#.to_vec();
    let extra = br#",{"smuggled":true}]}"#.to_vec();

    // Signed over the declared bytes: 200, and the message holds exactly those bytes.
    let mut conn = TcpStream::connect(&ingest.addr).await.expect("connect");
    let mut wire = request_head("wa", &signed_headers(Source::Whatsapp, "wa", &declared), declared.len());
    wire.extend_from_slice(&declared);
    wire.extend_from_slice(&extra);
    conn.write_all(&wire).await.expect("write");
    let mut buf = Vec::new();
    let first = tokio::time::timeout(Duration::from_secs(10), read_response(&mut conn, &mut buf)).await.expect("answered in time");
    assert_eq!(first.expect("a response").status, 200);
    // The extra bytes are read as the start of the next request, which is not HTTP: refused.
    let rest = read_until_closed(&mut conn, Duration::from_secs(10)).await.expect("connection closed");
    buf.extend_from_slice(&rest);
    let rest = String::from_utf8_lossy(&buf);
    assert!(rest.starts_with("HTTP/1.1 400"), "the extra bytes got: {rest}");
    let (stored, msg_id) = ingest.last_stored(Source::Whatsapp, "wa").await;
    assert_eq!(stored, declared, "only the declared bytes are stored");
    assert_eq!(msg_id, Some(message_id("wa", &declared)));
    assert_eq!(ingest.raw_count().await, 1);

    // Signed over declared + extra, but declaring only the first part: the signature covers
    // bytes ingest does not take as the body, so 401 and nothing stored.
    let mut whole = declared.clone();
    whole.extend_from_slice(&extra);
    let mut conn = TcpStream::connect(&ingest.addr).await.expect("connect");
    let mut wire = request_head("wa", &signed_headers(Source::Whatsapp, "wa", &whole), declared.len());
    wire.extend_from_slice(&whole);
    conn.write_all(&wire).await.expect("write");
    let mut buf = Vec::new();
    let answer = tokio::time::timeout(Duration::from_secs(10), read_response(&mut conn, &mut buf)).await.expect("answered in time");
    assert_eq!(answer.expect("a response").status, 401);
    let _ = read_until_closed(&mut conn, Duration::from_secs(10)).await.expect("connection closed");
    assert_eq!(ingest.raw_count().await, 1, "nothing more stored");
    ingest.stop().await;
}

#[tokio::test]
async fn a_content_length_over_the_limit_gets_413_without_the_body_being_read() {
    // A long body timeout: an answer that waited for the body would come after it.
    let ingest = Ingest::start(&[("HOOKLINE_INGEST__MAX_BODY_BYTES", "4096"), ("HOOKLINE_INGEST__BODY_READ_TIMEOUT_MS", "15000")]).await;
    ingest.add_channel("tg", Source::Telegram).await;
    let token = signed_headers(Source::Telegram, "tg", b"");
    for declared in [4097usize, 1 << 30] {
        let mut conn = TcpStream::connect(&ingest.addr).await.expect("connect");
        let sent_at = Instant::now();
        // The head only: not one byte of the body is ever sent.
        conn.write_all(&request_head("tg", &token, declared)).await.expect("write");
        let mut buf = Vec::new();
        let answer = tokio::time::timeout(Duration::from_secs(5), read_response(&mut conn, &mut buf))
            .await
            .expect("413 comes without waiting for the body")
            .expect("a response");
        assert_eq!(answer.status, 413, "Content-Length {declared}");
        assert_eq!(answer.body, b"body too large\n");
        assert!(sent_at.elapsed() < Duration::from_secs(5), "answered after {:?}", sent_at.elapsed());
        // And the connection is closed: ingest does not wait for (or drain) the body.
        let rest = read_until_closed(&mut conn, Duration::from_secs(5)).await.expect("connection closed after the 413");
        assert!(rest.is_empty(), "{:?}", String::from_utf8_lossy(&rest));
    }
    // And the limit itself is still accepted.
    let fits = vec![b'x'; 4096];
    let mut conn = TcpStream::connect(&ingest.addr).await.expect("connect");
    let mut wire = request_head("tg", &token, fits.len());
    wire.extend_from_slice(&fits);
    conn.write_all(&wire).await.expect("write");
    let mut buf = Vec::new();
    let answer = tokio::time::timeout(Duration::from_secs(10), read_response(&mut conn, &mut buf)).await.expect("in time");
    assert_eq!(answer.expect("a response").status, 200);
    assert_eq!(ingest.raw_count().await, 1);
    let metrics = ingest.metrics().await;
    assert_eq!(metric_sum(&metrics, r#"hookline_ingest_requests_total{source="telegram",status="413"}"#), 2);
    ingest.stop().await;
}

#[tokio::test]
async fn invalid_utf8_and_deeply_nested_json_with_a_valid_signature_are_stored_byte_for_byte() {
    let ingest = Ingest::start(&[]).await;
    const DEPTH: usize = 100_000;
    let invalid_utf8 = b"{\"text\":\"\xff\xfe \xc0\xaf \xed\xa0\x80 \x80 \xf4\x90\x80\x80 \xe2\x82\"}".to_vec();
    let deep_arrays = [vec![b'['; DEPTH], vec![b']'; DEPTH]].concat();
    let deep_objects = [br#"{"a":"#.repeat(DEPTH), b"1".to_vec(), vec![b'}'; DEPTH]].concat();
    let unclosed = vec![b'['; DEPTH];
    let bodies: Vec<(&str, Vec<u8>)> = vec![
        ("invalid UTF-8", invalid_utf8),
        ("100 000 nested arrays", deep_arrays),
        ("100 000 nested objects", deep_objects),
        ("100 000 unclosed arrays", unclosed),
    ];
    // The schemes that sign the body: the signature decides, whatever the bytes are.
    let sources = [Source::Whatsapp, Source::Tawkto, Source::Webchat];
    for source in sources {
        ingest.add_channel(&format!("ch-{source}"), source).await;
    }
    ingest.add_channel("ch-twilio", Source::Twilio).await;
    let mut stored = 0;
    for source in sources {
        let id = format!("ch-{source}");
        for (what, body) in &bodies {
            let started = Instant::now();
            let response = ingest.post_signed(&ingest.http, &id, source, body.clone()).await;
            assert_eq!(response.status(), 200, "{source}, {what}: {:?}", response.text().await);
            stored += 1;
            let (payload, msg_id) = ingest.last_stored(source, &id).await;
            assert!(payload == *body, "{source}, {what}: the stored bytes differ");
            assert_eq!(msg_id, Some(message_id(&id, body)), "{source}, {what}");
            eprintln!("{source}, {what} ({} bytes): 200 in {:?}", body.len(), started.elapsed());
        }
    }
    // A Twilio form body whose values are not UTF-8, raw and percent-encoded.
    let form = b"Body=caf\xe9+%FF%FE&From=%2B15551234567&MessageSid=SM0123&To=%2B15557654321".to_vec();
    let response = ingest.post_signed(&ingest.http, "ch-twilio", Source::Twilio, form.clone()).await;
    assert_eq!(response.status(), 200);
    stored += 1;
    assert_eq!(ingest.last_stored(Source::Twilio, "ch-twilio").await.0, form);
    assert_eq!(ingest.raw_count().await, stored);
    ingest.stop().await;
}

// Two worker threads: ingest and the attackers share the machine's two cores, not one thread.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_invalid_signatures_does_not_keep_valid_webhooks_from_200() {
    const ATTACKERS: usize = 6;
    const PER_ATTACKER: usize = 500;
    const VALID: usize = 40;
    let ingest = Arc::new(Ingest::start(&[]).await);
    ingest.add_channel("wa", Source::Whatsapp).await;

    // 3 000 refused requests aimed at about 2 s (1 500 a second) from six tasks, each on its own
    // keep-alive connections: wrong HMACs, malformed and missing signatures.
    let flood_started = Instant::now();
    let flood: Vec<_> = (0..ATTACKERS)
        .map(|a| {
            let ingest = ingest.clone();
            tokio::spawn(async move {
                let client = reqwest::Client::builder().timeout(Duration::from_secs(10)).build().expect("client");
                let url = format!("{}/webhooks/wa", ingest.base);
                let mut tick = tokio::time::interval(Duration::from_secs(2) / PER_ATTACKER as u32);
                tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
                let mut statuses = Vec::with_capacity(PER_ATTACKER);
                for i in 0..PER_ATTACKER {
                    tick.tick().await;
                    if flood_started.elapsed() > Duration::from_secs(60) {
                        break;
                    }
                    let body = format!(r#"{{"attacker":{a},"n":{i}}}"#);
                    let signature = match i % 3 {
                        0 => Some(format!("sha256={}", "0".repeat(64))),
                        1 => Some("sha256=not-hex".to_string()),
                        _ => None,
                    };
                    let mut req = client.post(&url).header("Content-Type", "application/json").body(body);
                    if let Some(sig) = signature {
                        req = req.header("X-Hub-Signature-256", sig);
                    }
                    statuses.push(req.send().await.map(|r| r.status().as_u16()).unwrap_or(0));
                }
                statuses
            })
        })
        .collect();

    // Meanwhile, valid webhooks every 50 ms on their own client.
    let valid = {
        let ingest = ingest.clone();
        tokio::spawn(async move {
            let client = reqwest::Client::builder().timeout(Duration::from_secs(10)).build().expect("client");
            let mut tick = tokio::time::interval(Duration::from_millis(50));
            let mut sent = Vec::new();
            let mut slowest = Duration::ZERO;
            for n in 0..VALID {
                tick.tick().await;
                let body = format!(r#"{{"valid":{n}}}"#).into_bytes();
                let started = Instant::now();
                let status = ingest.post_signed(&client, "wa", Source::Whatsapp, body.clone()).await.status();
                slowest = slowest.max(started.elapsed());
                assert_eq!(status, 200, "valid webhook {n} during the flood");
                sent.push(body);
            }
            (sent, slowest)
        })
    };

    let mut refused = 0;
    for attacker in flood {
        let statuses = attacker.await.expect("attacker task");
        assert_eq!(statuses.len(), PER_ATTACKER);
        assert!(statuses.iter().all(|&s| s == 401), "every invalid signature gets 401: {:?}", statuses.iter().find(|&&s| s != 401));
        refused += statuses.len();
    }
    let flood_took = flood_started.elapsed();
    let (valid_bodies, slowest_valid) = valid.await.expect("valid sender");
    eprintln!(
        "flood: {refused} invalid signatures in {flood_took:?} ({:.0}/s); {VALID} valid webhooks all 200, slowest {slowest_valid:?}",
        refused as f64 / flood_took.as_secs_f64()
    );
    // Paced for about 2 s (1 500 a second; about 1 400 measured on a 2-core machine). The bound
    // is loose (300 a second) so that a loaded machine does not fail it.
    assert!(flood_took < Duration::from_secs(10), "the flood took {flood_took:?}");

    // Every valid webhook is stored, and nothing else.
    let stored: BTreeSet<Vec<u8>> = ingest.all_payloads().await.into_iter().collect();
    let expected: BTreeSet<Vec<u8>> = valid_bodies.into_iter().collect();
    assert_eq!(stored, expected);
    // And every refusal is counted.
    let metrics = ingest.metrics().await;
    assert_eq!(metric_sum(&metrics, r#"hookline_signature_failures_total{source="whatsapp","#), refused as u64, "{metrics}");
    let of_kind = |k: usize| (ATTACKERS * (0..PER_ATTACKER).filter(|i| i % 3 == k).count()) as u64;
    assert_eq!(metric_sum(&metrics, r#"hookline_signature_failures_total{source="whatsapp",reason="mismatch"}"#), of_kind(0));
    assert_eq!(metric_sum(&metrics, r#"hookline_signature_failures_total{source="whatsapp",reason="malformed"}"#), of_kind(1));
    assert_eq!(metric_sum(&metrics, r#"hookline_signature_failures_total{source="whatsapp",reason="missing_header"}"#), of_kind(2));
    assert_eq!(metric_sum(&metrics, r#"hookline_ingest_requests_total{source="whatsapp",status="401"}"#), refused as u64);
    assert_eq!(metric_sum(&metrics, r#"hookline_ingest_requests_total{source="whatsapp",status="200"}"#), VALID as u64);
    match Arc::try_unwrap(ingest) {
        Ok(ingest) => ingest.stop().await,
        Err(_) => panic!("ingest still shared"),
    }
}

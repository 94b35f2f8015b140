//! What every setup-api test uses: a stack of real servers (nats-server, Postgres, setup-api,
//! and ingest when asked) on loopback ports, an API client that checks every answer for the
//! secrets the tests set, a log capture that the tests check for them too, fake platform
//! servers that record the calls they get, and signed webhooks for ingest.

#![allow(dead_code)]

use axum::body::Bytes;
use axum::extract::Request;
use axum::http::{HeaderMap, Method};
use serde_json::Value;
use std::io::Write;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use hookline_ingest::sign::signature_headers;
use hookline_setup_api::SetupApiError;
use hookline_shared::config::Config;
use hookline_shared::harness::{self, wait_for, TestNats, TestPostgres};
use hookline_shared::metrics::Metrics;
use hookline_shared::Source;

pub const TOKEN: &str = "test-token-0123456789abcdef";

// ---------------------------------------------------------------------------------------------
// Secrets the tests set, and the places they must never appear.

fn secrets() -> &'static Mutex<Vec<String>> {
    static SECRETS: OnceLock<Mutex<Vec<String>>> = OnceLock::new();
    SECRETS.get_or_init(|| Mutex::new(Vec::new()))
}

/// Registers `s` as a secret (checked against every answer and the logs) and returns it.
pub fn secret(s: impl Into<String>) -> String {
    let s = s.into();
    let mut all = secrets().lock().unwrap_or_else(|p| p.into_inner());
    if !all.contains(&s) {
        all.push(s.clone());
    }
    s
}

/// Panics when `text` holds a registered secret.
pub fn assert_no_secret(what: &str, text: &str) {
    let all = secrets().lock().unwrap_or_else(|p| p.into_inner()).clone();
    for s in all {
        assert!(!text.contains(&s), "{what} holds a secret the test set:\n{text}");
    }
}

struct Capture;

impl Write for Capture {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        logs().lock().unwrap_or_else(|p| p.into_inner()).extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn logs() -> &'static Mutex<Vec<u8>> {
    static LOGS: OnceLock<Mutex<Vec<u8>>> = OnceLock::new();
    LOGS.get_or_init(|| Mutex::new(Vec::new()))
}

/// Captures every log line of the test binary (debug everywhere, trace for hookline).
pub fn init() {
    static INIT: OnceLock<()> = OnceLock::new();
    INIT.get_or_init(|| {
        let filter = tracing_subscriber::EnvFilter::new("debug,hookline_setup_api=trace,hookline_ingest=trace,hookline_shared=trace");
        let _ = tracing_subscriber::fmt().with_env_filter(filter).with_ansi(false).with_writer(|| Capture).try_init();
    });
}

pub fn captured_logs() -> String {
    String::from_utf8_lossy(&logs().lock().unwrap_or_else(|p| p.into_inner())).into_owned()
}

/// Every log line so far is free of every secret the tests set; and there were log lines.
pub fn assert_logs_clean() {
    let text = captured_logs();
    if let Ok(path) = std::env::var("HOOKLINE_TEST_DUMP_LOGS") {
        let _ = std::fs::write(path, &text);
    }
    assert!(text.contains("setup-api request"), "the capture saw no setup-api log line");
    let all = secrets().lock().unwrap_or_else(|p| p.into_inner()).clone();
    for s in all {
        if let Some(at) = text.find(&s) {
            let start = text[..at].rfind('\n').map_or(0, |i| i + 1);
            let end = text[at..].find('\n').map_or(text.len(), |i| at + i);
            panic!("a log line holds a secret the test set:\n{}", &text[start..end]);
        }
    }
}

// ---------------------------------------------------------------------------------------------
// A running role.

pub struct Running {
    pub base: String,
    shutdown: CancellationToken,
    task: tokio::task::JoinHandle<()>,
}

impl Running {
    pub async fn stop(self) {
        self.shutdown.cancel();
        tokio::time::timeout(Duration::from_secs(20), self.task).await.expect("stopped in time").expect("task did not panic");
    }
}

/// Until `/readyz` answers 200 with a body holding `with`.
async fn ready(http: &reqwest::Client, base: &str, with: &'static str) {
    let url = format!("{base}/readyz");
    wait_for(&format!("{url} ready"), Duration::from_secs(30), || {
        let http = http.clone();
        let url = url.clone();
        async move {
            let r = http.get(&url).send().await.ok().filter(|r| r.status() == 200)?;
            r.text().await.ok().filter(|t| t.contains(with)).map(|_| ())
        }
    })
    .await;
}

pub async fn start_setup_api(config: &Config, listener: TcpListener) -> Running {
    let base = format!("http://{}", listener.local_addr().expect("addr"));
    let shutdown = CancellationToken::new();
    let task = {
        let config = config.clone();
        let shutdown = shutdown.clone();
        tokio::spawn(async move {
            let result: Result<(), SetupApiError> = hookline_setup_api::run(&config, Metrics::new(), listener, shutdown).await;
            result.expect("setup-api runs");
        })
    };
    // Live: the bucket is reconciled and changes reach it at once.
    ready(&client(), &base, "mirror: live").await;
    Running { base, shutdown, task }
}

pub async fn start_ingest(config: &Config, listener: TcpListener) -> Running {
    let base = format!("http://{}", listener.local_addr().expect("addr"));
    let shutdown = CancellationToken::new();
    let task = {
        let config = config.clone();
        let shutdown = shutdown.clone();
        tokio::spawn(async move {
            hookline_ingest::run(&config, Metrics::new(), listener, shutdown).await.expect("ingest runs");
        })
    };
    ready(&client(), &base, "").await;
    Running { base, shutdown, task }
}

pub fn client() -> reqwest::Client {
    reqwest::Client::builder().timeout(Duration::from_secs(30)).build().expect("client")
}

// ---------------------------------------------------------------------------------------------
// The stack.

pub struct Stack {
    pub nats: TestNats,
    pub pg: TestPostgres,
    pub db_url: String,
    pub config: Config,
    pub api: Api,
    pub setup: Option<Running>,
    pub ingest: Option<Running>,
    /// `ingest.public_url`: ingest's real address, so platforms (fakes) can call it back.
    pub public_url: String,
    setup_addr: std::net::SocketAddr,
}

#[derive(Default)]
pub struct Options<'a> {
    pub ingest: bool,
    pub extra: &'a [(&'a str, &'a str)],
}

impl Stack {
    pub async fn start(options: Options<'_>) -> Stack {
        init();
        let nats = TestNats::start();
        let pg = TestPostgres::start();
        let db_url = pg.create_database("hookline");
        let ingest_listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let setup_listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let setup_addr = setup_listener.local_addr().expect("addr");
        let public_url = format!("http://{}", ingest_listener.local_addr().expect("addr"));
        let mut vars: Vec<(&str, &str)> =
            vec![("HOOKLINE_DATABASE__URL", &db_url), ("HOOKLINE_SETUP_API__TOKENS", TOKEN), ("HOOKLINE_INGEST__PUBLIC_URL", &public_url)];
        vars.extend_from_slice(options.extra);
        let config = harness::config(&nats.url(), &vars);
        secret(TOKEN);
        if let Some(key) = &config.secrets.key {
            secret(key.expose());
        }
        let setup = start_setup_api(&config, setup_listener).await;
        let ingest = if options.ingest { Some(start_ingest(&config, ingest_listener).await) } else { None };
        Stack { api: Api::new(&setup.base), nats, pg, db_url, config, setup: Some(setup), ingest, public_url, setup_addr }
    }

    pub async fn stop_setup_api(&mut self) {
        if let Some(s) = self.setup.take() {
            s.stop().await;
        }
    }

    /// Starts setup-api again on the same address with the same configuration.
    pub async fn restart_setup_api(&mut self) {
        self.stop_setup_api().await;
        let listener = TcpListener::bind(self.setup_addr).await.expect("rebind");
        self.setup = Some(start_setup_api(&self.config, listener).await);
    }

    pub async fn db(&self) -> sqlx::PgPool {
        sqlx::postgres::PgPoolOptions::new().max_connections(2).connect(&self.db_url).await.expect("connect to the test database")
    }

    pub async fn bucket(&self) -> async_nats::jetstream::kv::Store {
        let js = self.nats.jetstream().await;
        wait_for("the channels bucket", Duration::from_secs(10), || {
            let js = js.clone();
            async move { js.get_key_value(hookline_shared::names::CHANNELS_BUCKET).await.ok() }
        })
        .await
    }

    pub async fn destinations_bucket(&self) -> async_nats::jetstream::kv::Store {
        let js = self.nats.jetstream().await;
        wait_for("the destinations bucket", Duration::from_secs(10), || {
            let js = js.clone();
            async move { js.get_key_value(hookline_shared::names::DESTINATIONS_BUCKET).await.ok() }
        })
        .await
    }

    pub fn ingest_base(&self) -> &str {
        &self.ingest.as_ref().expect("ingest runs").base
    }

    /// POSTs a webhook for `channel_id` signed with `secret` to ingest; its status.
    pub async fn webhook(&self, channel_id: &str, source: Source, secret: &str) -> u16 {
        let path = match source {
            Source::Mercadopago => format!("/webhooks/{channel_id}?data.id=123456&type=payment"),
            _ => format!("/webhooks/{channel_id}"),
        };
        let body: Vec<u8> = match source {
            Source::Twilio => b"Body=hello&From=%2B15551234567&MessageSid=SM0001&To=%2B15557654321".to_vec(),
            _ => br#"{"update_id":1,"message":{"text":"hello"}}"#.to_vec(),
        };
        let now = time::OffsetDateTime::now_utc().unix_timestamp();
        let headers = signature_headers(source, secret, &body, &format!("{}{path}", self.public_url), now);
        let mut req = client()
            .post(format!("{}{path}", self.ingest_base()))
            .header("Content-Type", if source == Source::Twilio { "application/x-www-form-urlencoded" } else { "application/json" })
            .body(body);
        for (k, v) in headers {
            req = req.header(k, v);
        }
        req.send().await.expect("ingest answers").status().as_u16()
    }

    /// Waits until ingest answers `want` to a webhook signed with `secret`; how long it took.
    pub async fn wait_webhook(&self, channel_id: &str, source: Source, secret: &str, want: u16, within: Duration) -> Duration {
        let started = std::time::Instant::now();
        wait_for(&format!("ingest answering {want} for {channel_id}"), within, || async {
            (self.webhook(channel_id, source, secret).await == want).then_some(())
        })
        .await;
        started.elapsed()
    }
}

// ---------------------------------------------------------------------------------------------
// The API client.

pub struct Api {
    pub base: String,
    http: reqwest::Client,
}

#[derive(Debug)]
pub struct Answer {
    pub status: u16,
    pub headers: reqwest::header::HeaderMap,
    pub text: String,
}

impl Answer {
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.text).unwrap_or_else(|e| panic!("not JSON ({e}): {:?}", self.text))
    }

    /// `(code, field)` of an error answer.
    pub fn error(&self) -> (String, Option<String>) {
        let v = self.json();
        let e = &v["error"];
        assert!(e["message"].is_string(), "{v}");
        (e["code"].as_str().unwrap_or_default().to_string(), e["field"].as_str().map(str::to_string))
    }
}

impl Api {
    pub fn new(base: &str) -> Api {
        Api { base: base.to_string(), http: client() }
    }

    /// Sends and returns the answer, without the secret check (for the one answer that holds
    /// a secret on purpose).
    pub async fn send_unchecked(&self, method: Method, path: &str, body: Option<&str>, token: Option<&str>) -> Answer {
        let mut req =
            self.http.request(reqwest::Method::from_bytes(method.as_str().as_bytes()).expect("method"), format!("{}{path}", self.base));
        if let Some(t) = token {
            req = req.header("Authorization", format!("Bearer {t}"));
        }
        if let Some(b) = body {
            req = req.header("Content-Type", "application/json").body(b.to_string());
        }
        let response = req.send().await.expect("setup-api answers");
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let text = response.text().await.expect("body");
        Answer { status, headers, text }
    }

    /// Sends, and checks that the answer holds no secret the tests set.
    pub async fn send(&self, method: Method, path: &str, body: Option<&str>, token: Option<&str>) -> Answer {
        let answer = self.send_unchecked(method, path, body, token).await;
        assert_no_secret(&format!("the answer to {path}"), &answer.text);
        for (name, value) in &answer.headers {
            assert_no_secret(&format!("header {name} of the answer to {path}"), &String::from_utf8_lossy(value.as_bytes()));
        }
        answer
    }

    pub async fn get(&self, path: &str) -> Answer {
        self.send(Method::GET, path, None, Some(TOKEN)).await
    }

    pub async fn post(&self, path: &str, body: &Value) -> Answer {
        self.send(Method::POST, path, Some(&body.to_string()), Some(TOKEN)).await
    }

    pub async fn patch(&self, path: &str, body: &Value) -> Answer {
        self.send(Method::PATCH, path, Some(&body.to_string()), Some(TOKEN)).await
    }

    pub async fn delete(&self, path: &str) -> Answer {
        self.send(Method::DELETE, path, None, Some(TOKEN)).await
    }

    /// Creates a destination and returns its JSON; panics unless 201.
    pub async fn create_destination(&self, body: &Value) -> Value {
        let answer = self.post("/api/v1/destinations", body).await;
        assert_eq!(answer.status, 201, "{}", answer.text);
        answer.json()
    }

    /// Creates a channel and returns its JSON; panics unless 201.
    pub async fn create(&self, body: &Value) -> Value {
        let answer = self.post("/api/v1/channels", body).await;
        assert_eq!(answer.status, 201, "{}", answer.text);
        answer.json()
    }
}

// ---------------------------------------------------------------------------------------------
// Fake platforms.

#[derive(Debug, Clone)]
pub struct Recorded {
    pub method: String,
    pub path: String,
    pub query: String,
    pub headers: HeaderMap,
    pub body: String,
}

impl Recorded {
    pub fn form(&self) -> Vec<(String, String)> {
        form_urlencoded::parse(self.body.as_bytes()).into_owned().collect()
    }

    pub fn form_value(&self, key: &str) -> Option<String> {
        self.form().into_iter().find(|(k, _)| k == key).map(|(_, v)| v)
    }

    pub fn header(&self, name: &str) -> Option<String> {
        self.headers.get(name).and_then(|v| v.to_str().ok()).map(str::to_string)
    }
}

type Responder = Arc<dyn Fn(Recorded) -> futures_util::future::BoxFuture<'static, (u16, String)> + Send + Sync>;

/// An HTTP server that records every request and answers what `respond` says.
pub struct FakePlatform {
    pub base: String,
    pub calls: Arc<Mutex<Vec<Recorded>>>,
    shutdown: CancellationToken,
}

impl FakePlatform {
    pub async fn start<F, Fut>(respond: F) -> FakePlatform
    where
        F: Fn(Recorded) -> Fut + Send + Sync + 'static,
        Fut: std::future::Future<Output = (u16, String)> + Send + 'static,
    {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let base = format!("http://{}", listener.local_addr().expect("addr"));
        let calls: Arc<Mutex<Vec<Recorded>>> = Arc::default();
        let respond: Responder = Arc::new(move |r| Box::pin(respond(r)));
        let app = {
            let calls = calls.clone();
            axum::Router::new().fallback(move |req: Request| {
                let calls = calls.clone();
                let respond = respond.clone();
                async move {
                    let (parts, body) = req.into_parts();
                    let bytes: Bytes = axum::body::to_bytes(body, 1 << 20).await.unwrap_or_default();
                    let recorded = Recorded {
                        method: parts.method.to_string(),
                        path: parts.uri.path().to_string(),
                        query: parts.uri.query().unwrap_or("").to_string(),
                        headers: parts.headers,
                        body: String::from_utf8_lossy(&bytes).into_owned(),
                    };
                    calls.lock().unwrap_or_else(|p| p.into_inner()).push(recorded.clone());
                    let (status, body) = respond(recorded).await;
                    (axum::http::StatusCode::from_u16(status).expect("status"), [("content-type", "application/json")], body)
                }
            })
        };
        let shutdown = CancellationToken::new();
        let stop = shutdown.clone();
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).with_graceful_shutdown(stop.cancelled_owned()).await;
        });
        FakePlatform { base, calls, shutdown }
    }

    pub fn calls(&self) -> Vec<Recorded> {
        self.calls.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

impl Drop for FakePlatform {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

/// Meta's verification of a callback URL: the GET handshake, as Meta sends it. Whether the
/// URL echoed the challenge.
pub async fn meta_handshake(callback_url: &str, verify_token: &str) -> bool {
    let challenge = "1158201444";
    let response = client()
        .get(callback_url)
        .query(&[("hub.mode", "subscribe"), ("hub.verify_token", verify_token), ("hub.challenge", challenge)])
        .send()
        .await;
    match response {
        Ok(r) if r.status() == 200 => r.text().await.is_ok_and(|t| t == challenge),
        _ => false,
    }
}

//! The console in a real headless Chromium, driven over WebDriver (chromedriver, fantoccini),
//! against the real setup-api with real NATS and Postgres: signing in and out, every page
//! rendered with no error in the browser's console (read through chromedriver's log of the
//! browser, `goog:loggingPrefs`), a re-drive from the dead-letter page.
//!
//! Chromium and chromedriver are required: when either is missing the tests fail and say how to
//! install them (`scripts/test` runs `scripts/install-deps`, which does).

mod common;

use async_nats::jetstream;
use common::*;
use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::{json, Value};
use std::path::PathBuf;
use std::process::Stdio;
use std::time::{Duration, Instant};

use hookline_shared::harness::wait_for;
use hookline_shared::names::{self, header};

// ---------------------------------------------------------------------------------------------
// The browser.

fn find_binary(env: &str, names: &[&str], also: &[&str]) -> Option<PathBuf> {
    if let Ok(p) = std::env::var(env) {
        return Some(PathBuf::from(p));
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    for name in names {
        for dir in std::env::split_paths(&path) {
            let candidate = dir.join(name);
            if candidate.is_file() {
                return Some(candidate);
            }
        }
    }
    also.iter().map(PathBuf::from).find(|p| p.is_file())
}

/// chromedriver's legacy log command: the browser's console since the last call.
#[derive(Debug)]
struct BrowserLog;

impl fantoccini::wd::WebDriverCompatibleCommand for BrowserLog {
    fn endpoint(&self, base: &url::Url, session: Option<&str>) -> Result<url::Url, url::ParseError> {
        base.join(&format!("session/{}/se/log", session.unwrap_or_default()))
    }
    fn method_and_body(&self, _: &url::Url) -> (http::Method, Option<String>) {
        (http::Method::POST, Some(json!({"type": "browser"}).to_string()))
    }
}

struct Browser {
    client: Client,
    /// Where `screenshot` saves PNGs: `HOOKLINE_CONSOLE_SCREENSHOTS`, or none.
    shots: Option<PathBuf>,
    driver: tokio::process::Child,
    _profile: tempfile::TempDir,
    base: String,
}

impl Browser {
    async fn start(base: &str) -> Browser {
        let chromium = find_binary("HOOKLINE_CHROMIUM", &["chromium", "chromium-browser", "google-chrome"], &["/usr/lib/chromium/chromium"])
            .unwrap_or_else(|| panic!("Chromium is not installed: run scripts/install-deps (scripts/test does), or apt-get install chromium chromium-driver; HOOKLINE_CHROMIUM names another binary"));
        let chromedriver = find_binary("HOOKLINE_CHROMEDRIVER", &["chromedriver"], &["/usr/lib/chromium/chromedriver"])
            .unwrap_or_else(|| panic!("chromedriver is not installed: run scripts/install-deps (scripts/test does), or apt-get install chromium-driver; HOOKLINE_CHROMEDRIVER names another binary"));
        let port = std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).expect("a free port").port();
        let driver = tokio::process::Command::new(&chromedriver)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            // Its own process group, which Chromium joins: dropping the browser (a test that
            // panicked too) kills them all, so no Chromium outlives its test.
            .process_group(0)
            .kill_on_drop(true)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", chromedriver.display()));
        let url = format!("http://127.0.0.1:{port}");
        let http = client();
        wait_for("chromedriver ready", Duration::from_secs(20), || {
            let http = http.clone();
            let status = format!("{url}/status");
            async move {
                let v: Value = http.get(&status).send().await.ok()?.json().await.ok()?;
                (v["value"]["ready"] == true).then_some(())
            }
        })
        .await;
        let profile = tempfile::tempdir().expect("profile dir");
        let mut args = vec![
            "--headless=new".to_string(),
            "--disable-gpu".to_string(),
            "--disable-dev-shm-usage".to_string(),
            "--no-first-run".to_string(),
            "--no-default-browser-check".to_string(),
            "--disable-extensions".to_string(),
            "--disable-background-networking".to_string(),
            "--disable-sync".to_string(),
            "--disable-component-update".to_string(),
            "--window-size=1280,800".to_string(),
            format!("--user-data-dir={}", profile.path().display()),
        ];
        // Chromium's sandbox needs user namespaces, which root in a container often lacks.
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } == 0 {
            args.push("--no-sandbox".to_string());
        }
        let mut caps = serde_json::Map::new();
        caps.insert("goog:chromeOptions".into(), json!({"binary": chromium, "args": args}));
        caps.insert("goog:loggingPrefs".into(), json!({"browser": "ALL"}));
        let client = ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
            .capabilities(caps)
            .connect(&url)
            .await
            .unwrap_or_else(|e| panic!("no WebDriver session with {}: {e}", chromium.display()));
        // 1280×800 of page: the window is that plus whatever the browser keeps around it.
        client.set_window_size(1280, 800).await.expect("window size");
        let frame = client
            .execute("return [window.outerWidth - window.innerWidth, window.outerHeight - window.innerHeight]", vec![])
            .await
            .expect("frame");
        let (dw, dh) = (frame[0].as_u64().unwrap_or(0) as u32, frame[1].as_u64().unwrap_or(0) as u32);
        if dw > 0 || dh > 0 {
            client.set_window_size(1280 + dw, 800 + dh).await.expect("window size");
        }
        let shots = std::env::var_os("HOOKLINE_CONSOLE_SCREENSHOTS").map(PathBuf::from);
        Browser { client, shots, driver, _profile: profile, base: base.to_string() }
    }

    async fn goto(&self, path: &str) {
        self.client.goto(&format!("{}{path}", self.base)).await.expect("navigates");
    }

    /// The browser console's entries since the last call: `(level, message)`.
    async fn log(&self) -> Vec<(String, String)> {
        let v = self.client.issue_cmd(BrowserLog).await.expect("the browser log");
        v.as_array()
            .map(|entries| {
                entries
                    .iter()
                    .map(|e| (e["level"].as_str().unwrap_or_default().to_string(), e["message"].as_str().unwrap_or_default().to_string()))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Panics when the browser's console holds an error (or a warning) since the last call.
    async fn assert_no_console_errors(&self, what: &str) {
        let bad: Vec<_> = self.log().await.into_iter().filter(|(level, _)| level == "SEVERE" || level == "WARNING").collect();
        assert!(bad.is_empty(), "{what}: the browser console holds errors: {bad:#?}");
    }

    /// The text of `css`, found again when a page redrew it between the find and the read (the
    /// overview redraws itself every few seconds).
    async fn text(&self, css: &str) -> String {
        let started = Instant::now();
        loop {
            let found = self.client.find(Locator::Css(css)).await;
            match found {
                Ok(el) => match el.text().await {
                    Ok(t) => return t,
                    Err(e) if started.elapsed() > Duration::from_secs(10) => panic!("{css}: {e}"),
                    Err(_) => {}
                },
                Err(e) if started.elapsed() > Duration::from_secs(10) => panic!("{css}: {e}"),
                Err(_) => {}
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Waits until the element `css` exists and its text holds `want`; its text.
    async fn wait_text(&self, css: &str, want: &str) -> String {
        let started = Instant::now();
        loop {
            if let Ok(el) = self.client.find(Locator::Css(css)).await {
                if let Ok(t) = el.text().await {
                    if t.contains(want) {
                        return t;
                    }
                    if started.elapsed() > Duration::from_secs(15) {
                        panic!("{css} never held {want:?}; it holds {t:?}");
                    }
                }
            }
            if started.elapsed() > Duration::from_secs(15) {
                panic!("{css} never appeared (waiting for {want:?})");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    async fn click(&self, css: &str) {
        self.client.wait().for_element(Locator::Css(css)).await.unwrap_or_else(|e| panic!("{css}: {e}")).click().await.expect("click");
    }

    async fn fill(&self, css: &str, value: &str) {
        let el = self.client.wait().for_element(Locator::Css(css)).await.unwrap_or_else(|e| panic!("{css}: {e}"));
        el.clear().await.expect("clear");
        el.send_keys(value).await.expect("type");
    }

    async fn js(&self, script: &str) -> Value {
        self.client.execute(script, vec![]).await.unwrap_or_else(|e| panic!("{script}: {e}"))
    }

    async fn page(&self) -> String {
        self.js("return document.getElementById('main').dataset.page || ''").await.as_str().unwrap_or_default().to_string()
    }

    async fn sign_in(&self, token: &str) {
        self.goto("/console").await;
        self.fill("#token", token).await;
        self.click("#login-submit").await;
        self.wait_text("#main h1", "Overview").await;
    }

    /// Saves a PNG of the window (1280×800) as `<shots>/<name>.png`, when `shots` is set.
    async fn screenshot(&self, name: &str) {
        let Some(dir) = &self.shots else { return };
        let png = self.client.screenshot().await.expect("screenshot");
        std::fs::create_dir_all(dir).expect("screenshot dir");
        std::fs::write(dir.join(format!("{name}.png")), png).expect("write screenshot");
    }

    async fn stop(self) {
        let _ = self.client.clone().close().await;
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        if let Some(pid) = self.driver.id() {
            // SAFETY: kill has no memory preconditions; the group is chromedriver's own.
            unsafe { libc::kill(-(pid as i32), libc::SIGKILL) };
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Seeds.

async fn streams(stack: &Stack) -> jetstream::Context {
    let js = stack.nats.jetstream().await;
    hookline_shared::jetstream::ensure_streams(&js, &stack.config.streams).await.expect("streams");
    js
}

/// Dead-letters an event for `tenant` at the forward stage, as the forwarder does.
async fn seed_dead_letter(js: &jetstream::Context, tenant: &str, event_id: &str, reason: &'static str, seq: u64) {
    let event = json!({"schema_version": 1, "id": event_id, "tenant_id": tenant, "kind": "message", "source": "webchat", "platform": "webchat",
        "provider": "hookline", "channel_id": "ch_console", "received_at": "2026-12-01T10:00:00Z"});
    let mut headers = async_nats::HeaderMap::new();
    headers.insert(header::TENANT, tenant);
    headers.insert(header::CHANNEL, "ch_console");
    let subject = names::event_subject(tenant, "webchat", "message");
    let letter = hookline_shared::dlq::DeadLetter {
        stage: "forward",
        reason,
        detail: "the target answered 400",
        attempts: 1,
        subject: &subject,
        seq,
        who: tenant,
        body: event.to_string().into_bytes().into(),
        original_headers: Some(&headers),
        last_status: Some("400"),
        destination: None,
    };
    hookline_shared::dlq::publish(js, &hookline_shared::metrics::Metrics::new(), letter, Duration::from_secs(5))
        .await
        .expect("dead letter");
}

async fn messages(js: &jetstream::Context, stream: &str) -> u64 {
    let mut s = js.get_stream(stream).await.expect("stream");
    s.info().await.expect("info").state.messages
}

// ---------------------------------------------------------------------------------------------
// The tests.

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_console_signs_in_renders_every_page_without_browser_errors_and_signs_out() {
    let stack = Stack::start(Options { ingest: true, ..Default::default() }).await;
    let js = streams(&stack).await;
    let http = client();
    let base = &stack.api.base;

    // The page and its assets: the policy that forbids inline scripts, no framing.
    let page = http.get(format!("{base}/console")).send().await.expect("console");
    assert_eq!(page.status(), 200);
    let csp = page.headers()["content-security-policy"].to_str().expect("csp").to_string();
    assert!(csp.contains("script-src 'self'") && !csp.contains("unsafe-inline"), "{csp}");
    assert_eq!(page.headers()["x-frame-options"], "DENY");
    assert_eq!(page.headers()["cache-control"], "no-store");
    // The API itself still needs a token.
    assert_eq!(http.get(format!("{base}/api/v1/overview")).send().await.expect("answer").status(), 401);

    // A channel with a webhook, a destination, a dead letter: every page has something to show.
    let secret = secret("console-telegram-secret-0123456789");
    let channel = stack.api.create(&json!({"tenant_id": "acme", "source": "telegram", "secret": secret, "name": "Support bot"})).await;
    let channel_id = channel["id"].as_str().expect("id").to_string();
    stack.wait_webhook(&channel_id, hookline_shared::Source::Telegram, &secret, 200, Duration::from_secs(10)).await;
    stack
        .api
        .create_destination(&json!({"id": "crm", "tenant_id": "acme", "url": "http://127.0.0.1:9/hooks", "signing_secret": "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"}))
        .await;
    seed_dead_letter(&js, "acme", "evt_console_page_0001", "rejected_4xx", 1).await;

    let browser = Browser::start(base).await;
    browser.goto("/console").await;
    browser.client.wait().for_element(Locator::Css("#login:not([hidden])")).await.expect("the login page");
    browser.assert_no_console_errors("the login page").await;
    assert_eq!(browser.js("return document.getElementById('token').type").await, "password");

    // A wrong token stays on the login page and says so.
    browser.fill("#token", "not-a-token-0123456789").await;
    browser.click("#login-submit").await;
    browser.wait_text("#login-error", "not accepted").await;
    let refused = browser.log().await;
    assert!(refused.iter().all(|(_, m)| m.contains("401")), "only the refused sign-in is logged: {refused:#?}");

    browser.fill("#token", TOKEN).await;
    browser.click("#login-submit").await;
    browser.wait_text("#main h1", "Overview").await;
    browser.wait_text("#stages", "raw webhooks kept").await;
    browser.wait_text("table.destinations", "crm").await;
    browser.wait_text("table.dead-letters", "rejected_4xx").await;
    assert_eq!(browser.text("#who").await, "admin");
    // The token is in this tab's sessionStorage and nowhere else the page can reach.
    let stored =
        browser.js("return [sessionStorage.getItem('hookline.console.token'), localStorage.length, document.cookie, location.href]").await;
    assert_eq!(stored[0], TOKEN);
    assert_eq!(stored[1], 0);
    assert_eq!(stored[2], "");
    assert!(!stored[3].as_str().unwrap_or_default().contains(TOKEN), "{stored}");
    // Live: a second sample draws a rate, and the graph has its lines.
    browser.wait_text("#overview p.muted", "Updated").await;
    let first = browser.text("#overview p.muted").await;
    let started = Instant::now();
    while browser.text("#overview p.muted").await == first {
        assert!(started.elapsed() < Duration::from_secs(10), "the overview did not update by itself");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(browser.js("return document.querySelectorAll('svg.chart polyline').length").await.as_u64().unwrap_or(0) >= 1);
    browser.screenshot("overview").await;
    browser.assert_no_console_errors("the overview").await;

    // Channels: the list, the URL to copy, the last webhook's time.
    browser.click("#nav a[data-page=channels]").await;
    browser.wait_text("table.channels", &channel_id).await;
    browser.wait_text("table.channels", channel["webhook_url"].as_str().expect("url")).await;
    browser.wait_text("table.channels .last-webhook", "ago").await;
    browser.screenshot("channels").await;
    browser.assert_no_console_errors("the channels page").await;

    // Destinations: the list and its state; pause and resume through the page.
    browser.click("#nav a[data-page=destinations]").await;
    browser.wait_text("table.destinations", "crm").await;
    browser.wait_text("table.destinations", "active").await;
    browser.click("table.destinations tr[data-key=crm] button.pause").await;
    browser.wait_text("#confirm-title", "Pause crm?").await;
    browser.click("#confirm-ok").await;
    browser.wait_text("table.destinations tr[data-key=crm]", "paused").await;
    assert_eq!(stack.api.get("/api/v1/destinations/crm").await.json()["paused"], true);
    browser.click("table.destinations tr[data-key=crm] button.resume").await;
    browser.wait_text("table.destinations tr[data-key=crm]", "active").await;
    browser.screenshot("destinations").await;
    browser.assert_no_console_errors("the destinations page").await;

    // Events, dead letters, replay.
    browser.click("#nav a[data-page=events]").await;
    browser.wait_text("#main h1", "Events").await;
    browser.client.wait().for_element(Locator::Css("#event-search")).await.expect("the search box");
    browser.screenshot("events").await;
    browser.assert_no_console_errors("the events page").await;
    browser.click("#nav a[data-page=dlq]").await;
    browser.wait_text("table.dead-letters", "rejected_4xx").await;
    browser.screenshot("dead-letters").await;
    browser.assert_no_console_errors("the dead-letter page").await;
    browser.click("#nav a[data-page=replay]").await;
    browser.fill("#replay-form input[name=from]", "1h").await;
    browser.click("#replay-count").await;
    browser.wait_text("#replay-out h2", "1 raw webhooks selected").await;
    browser.click("#replay-run").await;
    browser.wait_text("#confirm-list", "HOOKLINE_RAW").await;
    browser.click("#confirm-ok").await;
    browser.wait_text("#replay-progress", "Done: 1 selected").await;
    browser.screenshot("replay").await;
    browser.assert_no_console_errors("the replay page").await;
    assert_eq!(browser.page().await, "replay");

    // A token the API stops accepting sends the console back to the login page.
    browser.js("sessionStorage.setItem('hookline.console.token', 'revoked-token-0123456789'); return null").await;
    browser.click("#nav a[data-page=channels]").await;
    browser.client.wait().for_element(Locator::Css("#login:not([hidden])")).await.expect("back to the login page");
    browser.wait_text("#login-error", "refused the token").await;
    assert_eq!(browser.js("return sessionStorage.length").await, 0);
    let _ = browser.log().await;

    // Log out.
    browser.sign_in(TOKEN).await;
    browser.click("#logout").await;
    browser.client.wait().for_element(Locator::Css("#login:not([hidden])")).await.expect("the login page");
    assert_eq!(browser.js("return sessionStorage.length").await, 0);
    browser.goto("/console#/channels").await;
    browser.client.wait().for_element(Locator::Css("#login:not([hidden])")).await.expect("still signed out");
    browser.assert_no_console_errors("signed out").await;
    browser.stop().await;
    assert_logs_clean();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_dead_letter_is_redriven_from_the_dead_letter_page_after_a_dry_run_count() {
    let stack = Stack::start(Options::default()).await;
    let js = streams(&stack).await;
    seed_dead_letter(&js, "acme", "evt_redrive_0001", "rejected_4xx", 1).await;
    seed_dead_letter(&js, "acme", "evt_redrive_0002", "attempts_exhausted", 2).await;
    assert_eq!(messages(&js, names::DLQ_STREAM).await, 2);
    let events_before = messages(&js, names::EVENTS_STREAM).await;

    let browser = Browser::start(&stack.api.base).await;
    browser.sign_in(TOKEN).await;
    browser.click("#nav a[data-page=dlq]").await;
    browser.wait_text("table.dead-letters", "attempts_exhausted").await;
    // Only the letters of one reason.
    browser
        .client
        .find(Locator::Css("#dlq-filter select[name=reason]"))
        .await
        .expect("reason")
        .select_by_value("rejected_4xx")
        .await
        .expect("select");
    browser.click("#dlq-filter button[type=submit]").await;
    let started = Instant::now();
    while browser.text("#dlq-list").await.contains("attempts_exhausted") {
        assert!(started.elapsed() < Duration::from_secs(10), "the filter was not applied");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // The detail of the letter.
    browser.click("table.dead-letters td.num a").await;
    browser.wait_text("#dlq-detail", "evt_redrive_0001").await;

    // Re-drive: the count first, named in the confirmation; cancelling touches nothing.
    browser.click("#dlq-redrive").await;
    browser.wait_text("#confirm-title", "Re-drive 1 dead letter?").await;
    browser.wait_text("#confirm-list", "reason = rejected_4xx").await;
    browser.click("#confirm-cancel").await;
    assert_eq!(messages(&js, names::DLQ_STREAM).await, 2);
    browser.click("#dlq-redrive").await;
    browser.wait_text("#confirm-title", "Re-drive 1 dead letter?").await;
    browser.click("#confirm-ok").await;
    browser.wait_text("#flash", "Re-driven: 1 of 1").await;
    browser.wait_text("#dlq-list", "No dead letter matches").await;
    browser.assert_no_console_errors("the re-drive").await;

    // Back on its subject in HOOKLINE_EVENTS, gone from the DLQ; the other letter stays.
    assert_eq!(messages(&js, names::DLQ_STREAM).await, 1);
    assert_eq!(messages(&js, names::EVENTS_STREAM).await, events_before + 1);
    let events = js.get_stream(names::EVENTS_STREAM).await.expect("events");
    let back = events.get_last_raw_message_by_subject(&names::event_subject("acme", "webchat", "message")).await.expect("re-driven");
    assert!(String::from_utf8_lossy(&back.payload).contains("evt_redrive_0001"));
    let left = stack.api.get("/api/v1/dlq").await.json();
    assert_eq!(left.as_array().map(Vec::len), Some(1), "{left}");
    assert_eq!(left[0]["reason"], "attempts_exhausted");
    browser.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn channels_and_destinations_are_managed_from_their_pages() {
    let stack = Stack::start(Options::default()).await;
    let _js = streams(&stack).await;
    let signing = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
    let target = hookline_shared::harness::target::Target::start(&[signing]).await;
    let browser = Browser::start(&stack.api.base).await;
    browser.sign_in(TOKEN).await;

    // A channel by hand: the form, then the list with its webhook URL.
    browser.click("#nav a[data-page=channels]").await;
    browser.wait_text("#channel-list", "No channel yet").await;
    browser.fill("#create-channel input[name=tenant_id]", "acme").await;
    // A name that is HTML (and a script) is shown as text: no element is made from it.
    let hostile = r#"Web chat <img src=x onerror="window.__pwned=1"><script>window.__pwned=2</script>"#;
    browser.fill("#create-channel input[name=name]", hostile).await;
    browser
        .client
        .find(Locator::Css("#create-channel select[name=source]"))
        .await
        .expect("source")
        .select_by_value("webchat")
        .await
        .expect("select");
    let channel_secret = secret("whsec_Q2hhbm5lbFNlY3JldEZvckNvbnNvbGUwMTIz");
    browser.fill("#create-channel input[name=secret]", &channel_secret).await;
    browser.click("#create-channel button[type=submit]").await;
    browser.wait_text("#flash", "created").await;
    browser.wait_text("table.channels", "Web chat <img src=x").await;
    assert_eq!(browser.js("return document.querySelectorAll('main img, main script').length").await, 0);
    assert_eq!(browser.js("return window.__pwned === undefined").await, true);
    let listed = stack.api.get("/api/v1/channels").await.json();
    let channel = &listed["channels"][0];
    let id = channel["id"].as_str().expect("id").to_string();
    assert_eq!((channel["tenant_id"].as_str(), channel["source"].as_str()), (Some("acme"), Some("webchat")), "{listed}");
    browser.wait_text(&format!("table.channels tr[data-key={id}]"), channel["webhook_url"].as_str().expect("url")).await;
    browser.wait_text(&format!("table.channels tr[data-key={id}] .last-webhook"), "never").await;
    // The secret the operator typed is gone from the form.
    assert_eq!(browser.js("return document.querySelector('#create-channel input[name=secret]').value").await, "");

    // Rotate its secret: the form, the confirmation naming the channel and the grace period.
    browser.click(&format!("table.channels tr[data-key={id}] button.rotate")).await;
    let rotated = secret("whsec_Um90YXRlZFNlY3JldEZvckNvbnNvbGUwMTIz");
    browser.fill("#rotate-channel input[name=secret]", &rotated).await;
    browser.fill("#rotate-channel input[name=previous_valid_for_s]", "60").await;
    browser.click("#rotate-channel button[type=submit]").await;
    browser.wait_text("#confirm-list", &id).await;
    browser.wait_text("#confirm-list", "60 s").await;
    browser.click("#confirm-ok").await;
    browser.wait_text("#flash", "rotated").await;
    let after = stack.api.get(&format!("/api/v1/channels/{id}")).await.json();
    assert!(after["previous_secret_expires_at"].is_string(), "{after}");

    // A platform helper: Tawk.to has no API, so the answer is what to paste, its secret once.
    browser
        .client
        .find(Locator::Css("#create-channel select[name=_helper]"))
        .await
        .expect("helper")
        .select_by_value("tawkto")
        .await
        .expect("select");
    browser.fill("#create-channel input[name=tenant_id]", "acme").await;
    browser.fill("#create-channel input[name=name]", "Tawk widget").await;
    browser.click("#create-channel button[type=submit]").await;
    browser.wait_text("#create-channel", "Paste this into the platform's console").await;
    let paste = browser.text("#create-channel pre.json").await;
    let tawk = stack.api.get("/api/v1/channels?source=tawkto").await.json();
    let tawk_url = tawk["channels"][0]["webhook_url"].as_str().expect("the helper's channel").to_string();
    assert!(paste.contains(&tawk_url) && paste.contains("\"secret\""), "{paste}");
    browser.click(&format!("table.channels tr[data-key={}] button.delete", tawk["channels"][0]["id"].as_str().expect("id"))).await;
    browser.click("#confirm-ok").await;
    browser.wait_text("#flash", "deleted").await;

    // A destination: the form with a generated secret, a test delivery, the target's answer.
    browser.click("#nav a[data-page=destinations]").await;
    browser.fill("#create-destination input[name=id]", "billing").await;
    browser.fill("#create-destination input[name=tenant_id]", "acme").await;
    browser.fill("#create-destination input[name=url]", &target.url).await;
    browser.fill("#create-destination input[name=signing_secret]", signing).await;
    browser.fill("#create-destination textarea[name=filter]", r#"{"kind": ["payment"]}"#).await;
    browser.click("#create-destination button[type=submit]").await;
    browser.wait_text("table.destinations tr[data-key=billing]", "active").await;
    let billing = stack.api.get("/api/v1/destinations/billing").await.json();
    assert_eq!(billing["filter"], json!({"kind": ["payment"]}));
    browser.click("table.destinations tr[data-key=billing] button.test").await;
    browser.wait_text("#test-result", "answered 200").await;
    assert_eq!(target.received().len(), 1, "the test delivery reached the target");
    assert_eq!(target.received()[0].valid_signatures.len(), 1, "signed with the secret typed");
    browser.assert_no_console_errors("managing channels and destinations").await;

    // Delete both, each after a confirmation naming it.
    browser.click("table.destinations tr[data-key=billing] button.delete").await;
    browser.wait_text("#confirm-list", &target.url).await;
    browser.click("#confirm-ok").await;
    browser.wait_text("#destination-list", "No destination yet").await;
    assert_eq!(stack.api.get("/api/v1/destinations/billing").await.status, 404);
    browser.click("#nav a[data-page=channels]").await;
    browser.click(&format!("table.channels tr[data-key={id}] button.delete")).await;
    browser.wait_text("#confirm-title", &format!("Delete channel {id}?")).await;
    browser.click("#confirm-ok").await;
    browser.wait_text("#channel-list", "No channel yet").await;
    assert_eq!(stack.api.get(&format!("/api/v1/channels/{id}")).await.status, 404);
    browser.assert_no_console_errors("deleting").await;
    browser.stop().await;
    assert_logs_clean();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_tenant_token_sees_only_its_tenant_on_every_page() {
    let stack = Stack::start(Options { ingest: true, ..Default::default() }).await;
    let js = streams(&stack).await;
    let pipeline = Pipeline::start(&stack);
    let mut ids = std::collections::BTreeMap::new();
    let mut events = std::collections::BTreeMap::new();
    for (n, tenant) in ["acme", "globex"].into_iter().enumerate() {
        let tg_secret = secret(format!("{tenant}-telegram-secret-0123456789"));
        let channel = stack
            .api
            .create(&json!({"tenant_id": tenant, "source": "telegram", "name": format!("{tenant} bot"), "secret": tg_secret}))
            .await;
        let channel_id = channel["id"].as_str().expect("id").to_string();
        // Until ingest knows the channel (a well-formed update: no dead letter of its own).
        wait_for("ingest taking the channel", Duration::from_secs(10), || async {
            (telegram_update(&stack, &channel_id, &tg_secret, 500 + n as u64, 900 + n as u64).await == 200).then_some(())
        })
        .await;
        let event = wait_for(&format!("{tenant}'s event"), Duration::from_secs(20), || async {
            let e = last_event(&js, tenant).await;
            (e["message"]["text"] == format!("hello {}", 500 + n)).then_some(e)
        })
        .await;
        events.insert(tenant, event);
        ids.insert(tenant, channel_id);
        stack
            .api
            .create_destination(&json!({"id": format!("{tenant}-crm"), "tenant_id": tenant, "url": "http://127.0.0.1:9/", "signing_secret": "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"}))
            .await;
        seed_dead_letter(
            &js,
            tenant,
            &format!("evt_{tenant}_letter"),
            if tenant == "acme" { "rejected_4xx" } else { "attempts_exhausted" },
            n as u64 + 1,
        )
        .await;
    }
    let created = stack.api.post("/api/v1/tokens", &json!({"name": "acme console", "tenant_id": "acme"})).await;
    assert_eq!(created.status, 201, "{}", created.text);
    let acme_token = secret(created.json()["token"].as_str().expect("token").to_string());

    let browser = Browser::start(&stack.api.base).await;
    browser.sign_in(&acme_token).await;
    assert_eq!(browser.text("#who").await, "tenant acme");
    browser.wait_text("table.destinations", "acme-crm").await;
    browser.wait_text("table.dead-letters", "rejected_4xx").await;
    let overview = browser.text("#overview").await;
    assert!(!overview.contains("globex") && !overview.contains("attempts_exhausted"), "{overview}");
    assert_eq!(browser.js("return document.querySelectorAll('#stages').length").await, 0, "no counters of every tenant");

    browser.click("#nav a[data-page=channels]").await;
    browser.wait_text("table.channels", &ids["acme"]).await;
    let channels = browser.text("#channel-list").await;
    assert!(!channels.contains(&ids["globex"]) && !channels.contains("globex"), "{channels}");
    browser.click("#nav a[data-page=destinations]").await;
    browser.wait_text("table.destinations", "acme-crm").await;
    assert!(!browser.text("#destination-list").await.contains("globex"));
    // Events: acme's alone, in the list and by its message id; globex's is absent.
    let (acme_event, globex_event) = (events["acme"]["id"].as_str().expect("id"), events["globex"]["id"].as_str().expect("id"));
    browser.click("#nav a[data-page=events]").await;
    browser.wait_text("table.events", acme_event).await;
    assert!(!browser.text("#event-view").await.contains(globex_event));
    browser.fill("#event-search", events["acme"]["message"]["id"].as_str().expect("message id")).await;
    browser.click("#event-search-form button[type=submit]").await;
    browser.wait_text("table.events", acme_event).await;
    let globex_message = events["globex"]["message"]["id"].as_str().expect("message id");
    browser.fill("#event-search", globex_message).await;
    browser.click("#event-search-form button[type=submit]").await;
    browser.wait_text("#event-results h2", &format!("Nothing found for {globex_message}")).await;
    browser.assert_no_console_errors("a tenant's events").await;
    browser.goto(&format!("/console#/events/{globex_event}")).await;
    browser.wait_text("#event-view", &format!("No event {globex_event}")).await;
    let refused = browser.log().await;
    assert!(refused.iter().all(|(_, m)| m.contains("404")), "only the absent event is logged: {refused:#?}");
    browser.click("#nav a[data-page=dlq]").await;
    browser.wait_text("table.dead-letters", "rejected_4xx").await;
    let letters = browser.text("#dlq-list").await;
    assert!(!letters.contains("globex") && !letters.contains("attempts_exhausted"), "{letters}");
    // Purging "every" dead letter as acme counts and touches only acme's.
    browser.click("#dlq-purge").await;
    browser.wait_text("#confirm-title", "Purge 1 dead letter?").await;
    browser.click("#confirm-ok").await;
    browser.wait_text("#flash", "Purged 1 dead letter").await;
    assert_eq!(messages(&js, names::DLQ_STREAM).await, 1, "globex's dead letter stays");
    browser.assert_no_console_errors("a tenant's pages").await;

    // A read-only token is shown no control that would change something.
    let created = stack.api.post("/api/v1/tokens", &json!({"name": "acme dashboard", "tenant_id": "acme", "read_only": true})).await;
    let reader = secret(created.json()["token"].as_str().expect("token").to_string());
    browser.click("#logout").await;
    browser.sign_in(&reader).await;
    assert_eq!(browser.text("#who").await, "tenant acme (read-only)");
    browser.click("#nav a[data-page=channels]").await;
    browser.wait_text("table.channels", &ids["acme"]).await;
    let shown =
        browser.js("return [...document.querySelectorAll('.write')].filter(e => e.offsetParent !== null).map(e => e.textContent)").await;
    assert_eq!(shown, json!([]), "controls that change something are shown to a read-only token");
    browser.assert_no_console_errors("a read-only token's pages").await;
    browser.stop().await;
    pipeline.stop().await;
    assert_logs_clean();
}

// ---------------------------------------------------------------------------------------------
// The whole pipeline in this process: ingest (the stack's), a normalizer and a forwarder.

struct Pipeline {
    shutdown: tokio_util::sync::CancellationToken,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Pipeline {
    fn start(stack: &Stack) -> Pipeline {
        let shutdown = tokio_util::sync::CancellationToken::new();
        let mut tasks = Vec::new();
        {
            let (config, shutdown) = (stack.config.clone(), shutdown.clone());
            tasks.push(tokio::spawn(async move {
                let _ = hookline_normalizer::worker::run(&config, hookline_shared::metrics::Metrics::new(), None, shutdown).await;
            }));
        }
        {
            let (config, shutdown) = (stack.config.clone(), shutdown.clone());
            tasks.push(tokio::spawn(async move {
                let _ = hookline_forwarder::worker::run(&config, hookline_shared::metrics::Metrics::new(), None, shutdown).await;
            }));
        }
        Pipeline { shutdown, tasks }
    }

    async fn stop(self) {
        self.shutdown.cancel();
        for t in self.tasks {
            let _ = tokio::time::timeout(Duration::from_secs(20), t).await;
        }
    }
}

/// POSTs Telegram update `n` of chat `chat` to ingest; its status.
async fn telegram_update(stack: &Stack, channel: &str, secret: &str, n: u64, chat: u64) -> u16 {
    let path = format!("/webhooks/{channel}");
    let body = format!(
        r#"{{"update_id":{n},"message":{{"message_id":{n},"date":1764633600,"chat":{{"id":{chat},"type":"private","first_name":"Ana"}},"from":{{"id":{chat},"is_bot":false,"first_name":"Ana"}},"text":"hello {n}"}}}}"#
    );
    let headers = hookline_ingest::sign::signature_headers(
        hookline_shared::Source::Telegram,
        secret,
        body.as_bytes(),
        &format!("{}{path}", stack.public_url),
        0,
    );
    let mut req = client().post(format!("{}{path}", stack.ingest_base())).header("Content-Type", "application/json").body(body);
    for (k, v) in headers {
        req = req.header(k, v);
    }
    req.send().await.expect("ingest answers").status().as_u16()
}

/// The last event stored for `tenant`, as JSON (none yet: `Value::Null`).
async fn last_event(js: &jetstream::Context, tenant: &str) -> Value {
    let events = js.get_stream(names::EVENTS_STREAM).await.expect("events");
    match events.get_last_raw_message_by_subject(&format!("hookline.events.{tenant}.>")).await {
        Ok(m) => serde_json::from_slice(&m.payload).expect("event JSON"),
        Err(_) => Value::Null,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_webhook_found_by_its_platform_message_id_shows_its_delivery_answered_200() {
    let stack = Stack::start(Options { ingest: true, ..Default::default() }).await;
    let js = streams(&stack).await;
    let signing = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
    let target = hookline_shared::harness::target::Target::start(&[signing]).await;
    stack.api.create_destination(&json!({"id": "crm", "tenant_id": "acme", "url": target.url, "signing_secret": signing})).await;
    let secret = secret("console-delivery-telegram-secret-01");
    let channel = stack.api.create(&json!({"tenant_id": "acme", "source": "telegram", "secret": secret})).await;
    let channel_id = channel["id"].as_str().expect("id").to_string();
    let pipeline = Pipeline::start(&stack);
    stack.wait_webhook(&channel_id, hookline_shared::Source::Telegram, &secret, 200, Duration::from_secs(10)).await;
    assert_eq!(telegram_update(&stack, &channel_id, &secret, 4242, 77).await, 200);
    let event = wait_for("the update's event", Duration::from_secs(20), || async {
        let e = last_event(&js, "acme").await;
        (e["message"]["text"] == "hello 4242").then_some(e)
    })
    .await;
    let event_id = event["id"].as_str().expect("event id").to_string();
    let message_id = event["message"]["id"].as_str().expect("a platform message id").to_string();
    wait_for("delivered to the target", Duration::from_secs(20), || async { target.ids().contains(&event_id).then_some(()) }).await;

    let browser = Browser::start(&stack.api.base).await;
    browser.sign_in(TOKEN).await;
    browser.click("#nav a[data-page=events]").await;
    browser.fill("#event-search", &message_id).await;
    browser.click("#event-search-form button[type=submit]").await;
    browser.wait_text("#event-results h2", &message_id).await;
    browser.click(&format!("table.events tr[data-key={event_id}] a")).await;
    browser.wait_text("#event-detail h2", &event_id).await;
    browser.wait_text("table.event-destinations tr[data-key=crm]", "delivered").await;
    browser.wait_text("table.attempts", "200").await;
    browser.wait_text("#event-detail", "hello 4242").await;
    browser.wait_text("#raw-webhook", "hello 4242").await;
    browser.wait_text("#raw-webhook", "Hookline-Channel").await;
    browser.screenshot("event").await;
    browser.assert_no_console_errors("an event's page").await;
    // An event id in the box opens it directly; a conversation id lists its events.
    browser.click("#nav a[data-page=overview]").await;
    browser.click("#nav a[data-page=events]").await;
    browser.fill("#event-search", &event_id).await;
    browser.click("#event-search-form button[type=submit]").await;
    browser.wait_text("#event-detail h2", &event_id).await;
    if let Some(conversation) = event["conversation"]["id"].as_str() {
        browser.fill("#event-search", conversation).await;
        browser.click("#event-search-form button[type=submit]").await;
        browser.wait_text("#event-results", &event_id).await;
    }
    browser.assert_no_console_errors("the searches").await;
    browser.stop().await;
    pipeline.stop().await;
}

/// Screenshots of every page at 1280×800 for the docs, with a little of everything running:
/// `cargo test -p hookline-setup-api --test console screenshots -- --ignored` writes them to
/// docs/console/.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "writes docs/console/*.png; run by hand when the pages change"]
async fn screenshots_of_every_page() {
    let stack = Stack::start(Options { ingest: true, ..Default::default() }).await;
    let js = streams(&stack).await;
    let signing = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
    let crm = hookline_shared::harness::target::Target::start(&[signing]).await;
    let billing = hookline_shared::harness::target::Target::start(&[signing]).await;
    billing.set_status(503);
    stack.api.create_destination(&json!({"id": "crm", "name": "CRM inbox", "tenant_id": "acme", "url": crm.url, "signing_secret": signing, "ordering": "conversation"})).await;
    stack.api.create_destination(&json!({"id": "billing", "name": "Billing", "tenant_id": "acme", "url": billing.url, "signing_secret": signing, "filter": {"kind": ["message"]}, "retry_schedule_s": [1, 1, 1]})).await;
    stack.api.create_destination(&json!({"id": "analytics", "tenant_id": "globex", "url": "https://analytics.example.com/hookline", "signing_secret": signing, "paused": true})).await;
    let tg_secret = secret("screens-telegram-secret-0123456789");
    let tg = stack.api.create(&json!({"tenant_id": "acme", "source": "telegram", "name": "Support bot", "secret": tg_secret})).await;
    let tg_id = tg["id"].as_str().expect("id").to_string();
    stack.api.create(&json!({"tenant_id": "acme", "source": "webchat", "name": "Web chat", "secret": signing})).await;
    stack.api.create(&json!({"tenant_id": "globex", "source": "whatsapp", "name": "Sales line", "secret": "meta-app-secret-screens-01", "verify_token": "verify-screens-01"})).await;
    for (i, (tenant, reason)) in
        [("acme", "rejected_4xx"), ("acme", "rejected_4xx"), ("globex", "attempts_exhausted"), ("acme", "age_exhausted")]
            .into_iter()
            .enumerate()
    {
        seed_dead_letter(&js, tenant, &format!("evt_screens_{i}"), reason, 100 + i as u64).await;
    }
    let pipeline = Pipeline::start(&stack);
    stack.wait_webhook(&tg_id, hookline_shared::Source::Telegram, &tg_secret, 200, Duration::from_secs(10)).await;
    let mut browser = Browser::start(&stack.api.base).await;
    browser.shots = Some(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../docs/console"));
    browser.goto("/console").await;
    browser.client.wait().for_element(Locator::Css("#login:not([hidden])")).await.expect("the login page");
    browser.screenshot("login").await;
    browser.sign_in(TOKEN).await;
    // A minute of traffic, varying, so the graphs have something to draw.
    for n in 0..150u64 {
        let burst = 1 + (n / 10) % 4;
        for k in 0..burst {
            telegram_update(&stack, &tg_id, &tg_secret, 10_000 + n * 10 + k, 100 + (n + k) % 7).await;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    browser.screenshot("overview").await;
    browser.click("#nav a[data-page=channels]").await;
    browser.wait_text("table.channels", "ago").await;
    browser.screenshot("channels").await;
    browser.click("#nav a[data-page=destinations]").await;
    browser.click("table.destinations tr[data-key=crm] button.test").await;
    browser.wait_text("#test-result", "answered 200").await;
    browser.screenshot("destinations").await;
    browser.click("#nav a[data-page=events]").await;
    browser.wait_text("#event-results", "Events of the last hour").await;
    browser.click("#events-more").await;
    browser.wait_text("#event-results", "continued").await;
    browser.screenshot("events").await;
    let event = last_event(&js, "acme").await;
    browser.goto(&format!("/console#/events/{}", event["id"].as_str().expect("id"))).await;
    browser.wait_text("#event-detail", "Attempts").await;
    browser.screenshot("event").await;
    browser.click("#nav a[data-page=dlq]").await;
    browser.wait_text("table.dead-letters", "rejected_4xx").await;
    browser.click("table.dead-letters td.num a").await;
    browser.wait_text("#dlq-detail", "Body").await;
    browser.screenshot("dead-letters").await;
    browser.click("#nav a[data-page=replay]").await;
    browser.fill("#replay-form input[name=from]", "1h").await;
    browser.fill("#replay-form input[name=rate_per_s]", "100").await;
    browser.click("#replay-count").await;
    browser.click("#replay-run").await;
    browser.screenshot("replay-confirm").await;
    browser.click("#confirm-ok").await;
    wait_for("the replay a third done", Duration::from_secs(20), || async {
        let width = browser.js("return document.querySelector('#replay-progress .progress > div').style.width").await;
        (width.as_str().unwrap_or("").trim_end_matches('%').parse::<f64>().unwrap_or(0.0) > 30.0).then_some(())
    })
    .await;
    browser.screenshot("replay").await;
    browser.wait_text("#replay-progress", "Done").await;
    browser.stop().await;
    pipeline.stop().await;
}

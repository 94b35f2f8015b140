//! `hookline tokens create|list|revoke` against a real setup API (on real Postgres and
//! nats-server): the token is printed once and works, `list` never prints a value, `revoke` is
//! felt within a second, the changes are in the audit log under the admin token, and `--help`
//! explains where the command finds the API and its token.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use hookline_shared::harness::{self, TestNats, TestPostgres};
use hookline_shared::metrics::Metrics;

const ADMIN: &str = "cli-admin-token-0123456789";

fn hookline(api: &str, data_dir: &std::path::Path, args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_hookline"))
        .env("HOOKLINE_SETUP_API_URL", api)
        .env("HOOKLINE_SETUP_API_TOKEN", ADMIN)
        .env("HOOKLINE_DATA_DIR", data_dir)
        .env("HOOKLINE_LOG__LEVEL", "warn")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("hookline runs")
}

async fn status(http: &reqwest::Client, url: &str, token: &str) -> u16 {
    http.get(url).bearer_auth(token).send().await.expect("answered").status().as_u16()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_are_created_listed_and_revoked_from_the_command_line() {
    let nats = TestNats::start();
    let pg = TestPostgres::start();
    let db = pg.create_database("tokens");
    let config = harness::config(&nats.url(), &[("HOOKLINE_DATABASE__URL", &db), ("HOOKLINE_SETUP_API__TOKENS", ADMIN)]);
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let api = format!("http://{}", listener.local_addr().expect("addr"));
    let shutdown = CancellationToken::new();
    {
        let (config, shutdown) = (config.clone(), shutdown.clone());
        tokio::spawn(async move { hookline_setup_api::run(&config, Metrics::new(), listener, shutdown).await.expect("setup-api") });
    }
    let http = reqwest::Client::new();
    harness::wait_for("the setup API", Duration::from_secs(30), || {
        let (http, url) = (http.clone(), format!("{api}/readyz"));
        async move { http.get(url).send().await.ok().filter(|r| r.status() == 200).map(|_| ()) }
    })
    .await;
    let dir = tempfile::tempdir().expect("dir");

    let help = hookline(&api, dir.path(), &["tokens", "--help"]);
    let help_text = String::from_utf8_lossy(&help.stdout);
    assert!(help.status.success(), "{help:?}");
    for word in ["create", "list", "revoke", "HOOKLINE_SETUP_API_TOKEN", "--api-url"] {
        assert!(help_text.contains(word), "--help lacks {word}:\n{help_text}");
    }

    let created = hookline(&api, dir.path(), &["tokens", "create", "--name", "ci deploy", "--tenant", "acme", "--json"]);
    assert!(created.status.success(), "{}", String::from_utf8_lossy(&created.stderr));
    let v: serde_json::Value = serde_json::from_slice(&created.stdout).expect("json");
    let (id, value) = (v["id"].as_str().expect("id").to_string(), v["token"].as_str().expect("token").to_string());
    assert!(value.starts_with("hlk_") && v["tenant_id"] == "acme", "{v}");
    let channels = format!("{api}/api/v1/channels");
    assert_eq!(status(&http, &channels, &value).await, 200);

    let listed = hookline(&api, dir.path(), &["tokens", "list"]);
    let listed_text = String::from_utf8_lossy(&listed.stdout);
    assert!(listed.status.success() && listed_text.contains(&id) && listed_text.contains("ci deploy"), "{listed_text}");
    assert!(!listed_text.contains(&value), "list printed a token's value");

    let refused = hookline(&api, dir.path(), &["tokens", "create", "--name", "x", "--tenant", "a.b"]);
    assert!(!refused.status.success());
    assert!(String::from_utf8_lossy(&refused.stderr).contains("tenant_id"), "{}", String::from_utf8_lossy(&refused.stderr));

    let revoked = hookline(&api, dir.path(), &["tokens", "revoke", &id]);
    assert!(revoked.status.success(), "{}", String::from_utf8_lossy(&revoked.stderr));
    let at = Instant::now();
    while status(&http, &channels, &value).await != 401 {
        assert!(at.elapsed() < Duration::from_secs(1), "still accepted after revocation");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    let audit: serde_json::Value = serde_json::from_str(
        &http.get(format!("{api}/api/v1/audit?resource={id}")).bearer_auth(ADMIN).send().await.expect("audit").text().await.expect("text"),
    )
    .expect("json");
    let actions: Vec<&str> = audit["entries"].as_array().expect("entries").iter().filter_map(|e| e["action"].as_str()).collect();
    assert_eq!(actions, ["revoke", "create"], "{audit}");
    assert_eq!(audit["entries"][0]["token_id"], "bootstrap-0");
    assert!(!audit.to_string().contains(&value));

    // An operator command that changes the streams without the API is audited too, as `cli`.
    let js = nats.jetstream().await;
    hookline_shared::jetstream::ensure_streams(&js, &config.streams).await.expect("streams");
    let replay = Command::new(env!("CARGO_BIN_EXE_hookline"))
        .env("HOOKLINE_NATS__URL", nats.url())
        .env("HOOKLINE_DATABASE__URL", &db)
        .env("HOOKLINE_DATA_DIR", dir.path())
        .env("HOOKLINE_LOG__LEVEL", "warn")
        .args(["replay", "events", "--tenant", "acme"])
        .stdin(Stdio::null())
        .output()
        .expect("hookline runs");
    assert!(replay.status.success(), "{}", String::from_utf8_lossy(&replay.stderr));
    let audit: serde_json::Value = serde_json::from_str(
        &http.get(format!("{api}/api/v1/audit?token=cli")).bearer_auth(ADMIN).send().await.expect("audit").text().await.expect("text"),
    )
    .expect("json");
    let entry = &audit["entries"][0];
    assert_eq!((entry["action"].as_str(), entry["tenant_id"].as_str()), (Some("replay"), Some("acme")), "{audit}");
    assert_eq!(entry["token_name"], "hookline replay");
    shutdown.cancel();
}

//! The `hookline` binary itself: configuration errors name the key and stop the process, and
//! `hookline up` with no configuration, run in a folder inside a mode-0700 folder as a fresh clone
//! in root's home is, starts, stores a signed webhook, serves operator commands run beside it,
//! stops cleanly with no child left, and finds its data (NATS and Postgres) again.

mod common;
use common::hookline;

use std::io::{BufRead, BufReader};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use hookline_shared::harness::wait_for;
use hookline_shared::servers::free_port;

#[test]
fn a_malformed_key_stops_the_process_naming_the_key() {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = hookline().current_dir(dir.path()).env("HOOKLINE_INGEST__MAX_BODY_BYTES", "lots").arg("ingest").output().expect("runs");
    assert_eq!(out.status.code(), Some(78));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("ingest.max_body_bytes (HOOKLINE_INGEST__MAX_BODY_BYTES)"), "{stderr}");

    let out = hookline().current_dir(dir.path()).arg("ingest").output().expect("runs");
    assert_eq!(out.status.code(), Some(78));
    assert!(String::from_utf8_lossy(&out.stderr).contains("nats.url (HOOKLINE_NATS__URL): required"));

    std::fs::write(dir.path().join("hookline.toml"), "[ingest]\nlisten = \"nowhere\"\n").expect("write");
    let out = hookline().current_dir(dir.path()).arg("check-config").output().expect("runs");
    assert_eq!(out.status.code(), Some(78));
    assert!(String::from_utf8_lossy(&out.stderr).contains("ingest.listen"));
    std::fs::remove_file(dir.path().join("hookline.toml")).expect("rm");
    let out = hookline().current_dir(dir.path()).arg("check-config").output().expect("runs");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
}

struct Up {
    child: Child,
    nats_url: String,
    token: String,
    /// What `up` prints after its banner, line by line.
    lines: std::sync::mpsc::Receiver<String>,
}

impl Drop for Up {
    fn drop(&mut self) {
        // A failed assertion must not leave `up` and its servers running: interrupt it so that it
        // stops them, and kill it only if it does not stop.
        if let Ok(None) = self.child.try_wait() {
            // SAFETY: kill(2) on the pid of our own child.
            unsafe {
                libc::kill(self.child.id() as i32, libc::SIGINT);
            }
            let deadline = Instant::now() + Duration::from_secs(20);
            while Instant::now() < deadline && matches!(self.child.try_wait(), Ok(None)) {
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `up` run in `workdir` with the default data_dir (`.hookline` there).
fn start_up(workdir: &std::path::Path, port: u16) -> Up {
    let mut child = hookline()
        .current_dir(workdir)
        .env("HOOKLINE_INGEST__LISTEN", format!("127.0.0.1:{port}"))
        .env("HOOKLINE_SINK__LISTEN", "127.0.0.1:0")
        .env("HOOKLINE_SETUP_API__LISTEN", "127.0.0.1:0")
        .env("HOOKLINE_LOG__FORMAT", "json")
        .arg("up")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("hookline up starts");
    let stdout = child.stdout.take().expect("stdout");
    let mut nats_url = None;
    let mut token = None;
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut reader = BufReader::new(stdout).lines();
    for line in reader.by_ref() {
        let line = line.expect("utf-8 line");
        if let Some(rest) = line.trim().strip_prefix("nats") {
            nats_url = rest.split_whitespace().next().map(str::to_string);
        }
        if let Some((_, t)) = line.split_once("X-Telegram-Bot-Api-Secret-Token: ") {
            // The first sample is the demo channel's.
            token.get_or_insert_with(|| t.trim_end_matches(['\'', ' ', '\\']).to_string());
        }
        if line.starts_with("Ctrl-C stops everything") || Instant::now() > deadline {
            break;
        }
    }
    let (tx, lines) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in reader.map_while(Result::ok) {
            if tx.send(line).is_err() {
                return;
            }
        }
    });
    Up { child, nats_url: nats_url.expect("banner names NATS"), token: token.expect("banner has the sample command"), lines }
}

fn interrupt_and_wait(up: &mut Up) -> std::process::ExitStatus {
    // SAFETY: kill(2) on the pid of our own child.
    unsafe {
        libc::kill(up.child.id() as i32, libc::SIGINT);
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Ok(Some(status)) = up.child.try_wait() {
            return status;
        }
        assert!(Instant::now() < deadline, "hookline up did not stop after SIGINT");
        std::thread::sleep(Duration::from_millis(50));
    }
}

async fn raw_messages(nats_url: &str) -> u64 {
    let client = async_nats::connect(nats_url).await.expect("connect");
    let js = async_nats::jetstream::new(client);
    let mut stream = js.get_stream("HOOKLINE_RAW").await.expect("stream");
    stream.info().await.expect("info").state.messages
}

/// The pids of `pid`'s children.
fn children_of(pid: u32) -> Vec<u32> {
    std::fs::read_dir("/proc")
        .expect("/proc")
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|p| hookline_shared::servers::parent_pid(*p) == Some(pid))
        .collect()
}

fn alive(pid: u32) -> bool {
    hookline_shared::runtime::process_start_ticks(pid).is_some()
}

/// Where `up` put its private Postgres when the postgres user could not reach the folder.
struct ExternalPostgres(Option<std::path::PathBuf>);

impl ExternalPostgres {
    fn of(data_dir: &std::path::Path) -> Self {
        ExternalPostgres(std::fs::read_to_string(data_dir.join("postgres.location")).ok().map(|t| t.trim().into()))
    }
}

impl Drop for ExternalPostgres {
    fn drop(&mut self) {
        if let Some(dir) = &self.0 {
            if dir.starts_with(hookline_shared::servers::EXTERNAL_POSTGRES_BASE) {
                let _ = std::fs::remove_dir_all(dir);
            }
        }
    }
}

#[tokio::test]
async fn up_in_a_private_folder_accepts_a_webhook_serves_operator_commands_stops_cleanly_and_keeps_its_data() {
    // A mode-0700 folder, as root's home and `mktemp -d` are: the postgres user cannot enter it.
    let home = tempfile::tempdir().expect("tempdir");
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(home.path(), std::fs::Permissions::from_mode(0o700)).expect("chmod 0700");
    assert_eq!(std::fs::metadata(home.path()).expect("stat").permissions().mode() & 0o777, 0o700);
    let clone = home.path().join("hookline");
    std::fs::create_dir(&clone).expect("mkdir");
    let port = free_port().expect("port");
    let mut up = start_up(&clone, port);
    let data_dir = clone.join(".hookline");
    let _external = ExternalPostgres::of(&data_dir);
    let http = reqwest::Client::new();
    let base = format!("http://127.0.0.1:{port}");
    wait_for("up ready", Duration::from_secs(30), || {
        let http = http.clone();
        let url = format!("{base}/readyz");
        async move { http.get(&url).send().await.ok().filter(|r| r.status() == 200).map(|_| ()) }
    })
    .await;
    assert_eq!(std::fs::metadata(home.path()).expect("stat").permissions().mode() & 0o777, 0o700, "up changed the folder's mode");
    let sample = r#"{"update_id":1,"message":{"message_id":1,"date":1700000000,"chat":{"id":42,"type":"private"},"text":"hello"}}"#;
    let response = http
        .post(format!("{base}/webhooks/demo-telegram"))
        .header("X-Telegram-Bot-Api-Secret-Token", &up.token)
        .header("Content-Type", "application/json")
        .body(sample)
        .send()
        .await
        .expect("answered");
    assert_eq!(response.status(), 200);
    assert_eq!(raw_messages(&up.nats_url).await, 1);
    // The built-in sink prints the delivered event.
    let printed = loop {
        let line = up.lines.recv_timeout(Duration::from_secs(30)).expect("up prints the delivered event");
        if line.starts_with('{') {
            break line;
        }
    };
    let event: serde_json::Value = serde_json::from_str(&printed).expect("a JSON event");
    assert_eq!(event["kind"], "message");
    assert_eq!(event["channel_id"], "demo-telegram");
    assert_eq!(event["message"]["text"], "hello");

    // Operator commands run from the same folder find up's servers with no configuration.
    let record = match hookline_shared::runtime::lookup(&data_dir) {
        hookline_shared::runtime::Lookup::Found(r) => r,
        other => panic!("no live record of up: {other:?}"),
    };
    assert_eq!(record.pid, up.child.id());
    for args in [&["dlq", "list"][..], &["replay", "raw", "--from", "1h", "--dry-run"], &["secrets", "rotate-key"], &["tokens", "list"]] {
        let out = hookline().current_dir(&clone).args(args).output().expect("runs");
        assert!(out.status.success(), "hookline {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    }
    // `tokens` finds up's setup API and the token it generated.
    let out = hookline().current_dir(&clone).args(["tokens", "create", "--name", "from up", "--tenant", "demo"]).output().expect("runs");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stdout).contains("hlk_"), "{}", String::from_utf8_lossy(&out.stdout));
    let out = hookline().current_dir(&clone).args(["replay", "raw", "--from", "1h", "--dry-run"]).output().expect("runs");
    assert!(String::from_utf8_lossy(&out.stdout).contains("would replay 1 raw message"), "{}", String::from_utf8_lossy(&out.stdout));

    // A channel created through the setup API lives in the private Postgres.
    let api_token = std::fs::read_to_string(data_dir.join("setup-api.token")).expect("token file");
    let created = http
        .post(format!("{}/api/v1/channels", record.setup_api_url))
        .bearer_auth(api_token.trim())
        .json(&serde_json::json!({"id": "kept-bot", "tenant_id": "demo", "source": "telegram", "secret": "kept-bot-secret"}))
        .send()
        .await
        .expect("answered");
    assert_eq!(created.status(), 201);

    // A second `up` in the same folder refuses to share its servers' data.
    let out = hookline()
        .current_dir(&clone)
        .env("HOOKLINE_INGEST__LISTEN", "127.0.0.1:0")
        .env("HOOKLINE_SINK__LISTEN", "127.0.0.1:0")
        .env("HOOKLINE_SETUP_API__LISTEN", "127.0.0.1:0")
        .arg("up")
        .output()
        .expect("runs");
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("another hookline up"), "{}", String::from_utf8_lossy(&out.stderr));

    let children = children_of(up.child.id());
    assert!(children.len() >= 2, "up runs its nats-server and Postgres as children: {children:?}");
    let status = interrupt_and_wait(&mut up);
    assert!(status.success(), "exit status {status}");
    let left: Vec<u32> = children.into_iter().filter(|p| alive(*p)).collect();
    assert!(left.is_empty(), "children of up still run after it stopped: {left:?}");
    assert!(matches!(hookline_shared::runtime::lookup(&data_dir), hookline_shared::runtime::Lookup::Missing(_)), "record left");
    let out = hookline().current_dir(&clone).args(["dlq", "list"]).output().expect("runs");
    assert_eq!(out.status.code(), Some(78), "with up stopped, dlq list finds no server");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("nats.url") && stderr.contains("HOOKLINE_NATS__URL"), "{stderr}");

    // A second `up` finds its data: the same demo token, the stored webhook, the channel.
    let mut again = start_up(&clone, port);
    assert_eq!(again.token, up.token);
    assert_eq!(raw_messages(&again.nats_url).await, 1);
    let record = match hookline_shared::runtime::lookup(&data_dir) {
        hookline_shared::runtime::Lookup::Found(r) => r,
        other => panic!("no live record of the second up: {other:?}"),
    };
    let kept = wait_for("setup API of the second up", Duration::from_secs(30), || {
        let http = http.clone();
        let url = format!("{}/api/v1/channels/kept-bot", record.setup_api_url);
        let token = api_token.trim().to_string();
        async move { http.get(&url).bearer_auth(token).send().await.ok() }
    })
    .await;
    assert_eq!(kept.status(), 200, "the channel created in the first run is gone");
    assert!(interrupt_and_wait(&mut again).success());
}

#[test]
fn normalize_prints_events_as_json_lines_and_exits_2_on_an_unparseable_payload() {
    let fixture = concat!(env!("CARGO_MANIFEST_DIR"), "/normalizer/tests/fixtures/whatsapp/multi.json");
    let out = hookline().args(["normalize", "--source", "whatsapp", fixture]).output().expect("runs");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let lines: Vec<serde_json::Value> =
        String::from_utf8_lossy(&out.stdout).lines().map(|l| serde_json::from_str(l).expect("a JSON event per line")).collect();
    assert_eq!(lines.len(), 4, "the multi fixture holds four events");
    assert!(lines.iter().all(|e| e["source"] == "whatsapp" && e["schema_version"] == 1));

    let mut child = hookline()
        .args(["normalize", "--source", "telegram"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("runs");
    use std::io::Write;
    child.stdin.take().expect("stdin").write_all(b"{not json").expect("write");
    let out = child.wait_with_output().expect("exits");
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("invalid_json"), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(out.stdout.is_empty());

    let out = hookline().args(["normalize", "--source", "fax", fixture]).output().expect("runs");
    assert_eq!(out.status.code(), Some(2), "clap refuses an unknown source");
    assert!(String::from_utf8_lossy(&out.stderr).contains("unknown source"));
}

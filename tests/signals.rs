//! Signals during start-up: every command installs its handling before it starts anything, so
//! SIGINT or SIGTERM at any moment stops it within two seconds, and `up` stops every child it
//! started (none is left running).

mod common;
use common::hookline;

use std::path::Path;
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use hookline_shared::servers::free_port;

fn send(child: &Child, sig: i32) {
    // SAFETY: kill(2) on the pid of our own child.
    unsafe {
        libc::kill(child.id() as i32, sig);
    }
}

/// Waits for `child` to exit; the time it took.
fn exit_within(child: &mut Child, limit: Duration) -> Result<Duration, String> {
    let started = Instant::now();
    loop {
        if let Ok(Some(_)) = child.try_wait() {
            return Ok(started.elapsed());
        }
        if started.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            return Err(format!("still running {limit:?} after the signal"));
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Processes whose command line mentions `needle` (a folder only that run's children use).
fn processes_mentioning(needle: &str) -> Vec<(u32, String)> {
    std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let pid: u32 = e.file_name().to_str()?.parse().ok()?;
            let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
            let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
            cmdline.contains(needle).then_some((pid, cmdline))
        })
        .filter(|(pid, _)| hookline_shared::runtime::process_start_ticks(*pid).is_some())
        .collect()
}

fn external_postgres(data_dir: &Path) -> Option<std::path::PathBuf> {
    std::fs::read_to_string(data_dir.join("postgres.location")).ok().map(|t| t.trim().into())
}

#[test]
fn sigint_at_any_moment_of_ups_start_up_stops_it_within_two_seconds_with_no_child_left() {
    // From before the nats-server is up, through initdb and Postgres's start, to serving.
    for delay_ms in [30u64, 250, 700, 1500, 4000] {
        let home = tempfile::tempdir().expect("tempdir");
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(home.path(), std::fs::Permissions::from_mode(0o700)).expect("chmod 0700");
        let clone = home.path().join("clone");
        std::fs::create_dir(&clone).expect("mkdir");
        let mut up = hookline()
            .current_dir(&clone)
            .env("HOOKLINE_INGEST__LISTEN", format!("127.0.0.1:{}", free_port().expect("port")))
            .env("HOOKLINE_SINK__LISTEN", "127.0.0.1:0")
            .env("HOOKLINE_SETUP_API__LISTEN", "127.0.0.1:0")
            .arg("up")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("up starts");
        std::thread::sleep(Duration::from_millis(delay_ms));
        send(&up, libc::SIGINT);
        let took = exit_within(&mut up, Duration::from_secs(2));
        let data_dir = clone.join(".hookline");
        let pg = external_postgres(&data_dir);
        // Give a child that outlived up a moment to show itself, then look for it.
        std::thread::sleep(Duration::from_millis(100));
        let mut left = processes_mentioning(&clone.display().to_string());
        if let Some(pg) = &pg {
            left.extend(processes_mentioning(&pg.display().to_string()));
        }
        for (pid, _) in &left {
            // SAFETY: kill(2); these are leftovers of this test's own run.
            unsafe {
                libc::kill(*pid as i32, libc::SIGKILL);
            }
        }
        if let Some(pg) = &pg {
            if pg.starts_with(hookline_shared::servers::EXTERNAL_POSTGRES_BASE) {
                let _ = std::fs::remove_dir_all(pg);
            }
        }
        let took = took.unwrap_or_else(|e| panic!("SIGINT {delay_ms} ms after the start: {e}"));
        assert!(left.is_empty(), "SIGINT {delay_ms} ms after the start left children running: {left:?}");
        eprintln!("SIGINT {delay_ms} ms after the start: stopped in {took:?}");
    }
}

#[test]
fn sigterm_stops_a_role_still_retrying_its_nats_connection_within_two_seconds() {
    let port = free_port().expect("port");
    let nowhere = format!("nats://127.0.0.1:{port}");
    let key = hookline_shared::crypto::generate_key_base64().expect("key");
    for role in ["ingest", "normalizer", "forwarder"] {
        let mut child = hookline()
            .env("HOOKLINE_NATS__URL", &nowhere)
            .env("HOOKLINE_SECRETS__KEY", key.expose())
            .env("HOOKLINE_INGEST__LISTEN", "127.0.0.1:0")
            .env("HOOKLINE_NORMALIZER__LISTEN", "127.0.0.1:0")
            .env("HOOKLINE_FORWARDER__LISTEN", "127.0.0.1:0")
            .env("HOOKLINE_FORWARDER__TARGET_URL", "http://127.0.0.1:9/events")
            .arg(role)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("role starts");
        // Long enough to be inside the connection's retries.
        std::thread::sleep(Duration::from_millis(1200));
        assert!(matches!(child.try_wait(), Ok(None)), "{role} gave up on NATS instead of retrying");
        send(&child, libc::SIGTERM);
        let took = exit_within(&mut child, Duration::from_secs(2)).unwrap_or_else(|e| panic!("{role}: {e}"));
        eprintln!("{role}: stopped {took:?} after SIGTERM");
    }
}

#[test]
fn sigint_stops_an_operator_command_waiting_for_nats() {
    let port = free_port().expect("port");
    let mut child = hookline()
        .env("HOOKLINE_NATS__URL", format!("nats://127.0.0.1:{port}"))
        .args(["dlq", "list"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("dlq starts");
    std::thread::sleep(Duration::from_millis(500));
    send(&child, libc::SIGINT);
    exit_within(&mut child, Duration::from_secs(2)).unwrap_or_else(|e| panic!("dlq list: {e}"));
    assert_eq!(child.wait().expect("status").code(), Some(130));
}

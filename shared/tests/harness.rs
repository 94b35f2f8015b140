//! The harness itself: real servers start, work, and are gone after a panic.

use hookline_shared::harness::{TestNats, TestPostgres};
use std::net::TcpStream;
use std::path::PathBuf;

fn process_alive(pid: u32) -> bool {
    // A zombie still has a /proc entry; its state is Z.
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => stat.split(' ').nth(2).is_none_or(|s| s != "Z"),
        Err(_) => false,
    }
}

#[tokio::test]
async fn nats_runs_jetstream_on_a_loopback_port() {
    let nats = TestNats::start();
    let js = nats.jetstream().await;
    js.create_stream(async_nats::jetstream::stream::Config {
        name: "PROBE".into(),
        subjects: vec!["probe.>".into()],
        ..Default::default()
    })
    .await
    .expect("create stream");
    let ack = js.publish("probe.one", "hello".into()).await.expect("publish").await.expect("ack");
    assert_eq!(ack.sequence, 1);
    assert!(nats.url().starts_with("nats://127.0.0.1:"));
}

#[test]
fn nats_is_killed_and_its_folder_removed_even_when_a_test_panics() {
    let seen = std::sync::Arc::new(std::sync::Mutex::new(None::<(u32, u16, PathBuf)>));
    let seen_in = seen.clone();
    let result = std::thread::spawn(move || {
        let nats = TestNats::start();
        let port: u16 = nats.url().rsplit(':').next().and_then(|p| p.parse().ok()).expect("port");
        *seen_in.lock().expect("lock") = Some((nats.pid().expect("pid"), port, nats.dir().to_path_buf()));
        panic!("a failing test");
    })
    .join();
    assert!(result.is_err(), "the thread panicked");
    let (pid, port, dir) = seen.lock().expect("lock").clone().expect("the server had started");
    assert!(!process_alive(pid), "nats-server {pid} still runs");
    assert!(TcpStream::connect(("127.0.0.1", port)).is_err(), "port {port} still answers");
    assert!(!dir.exists(), "{} was not removed", dir.display());
}

#[tokio::test]
async fn postgres_starts_serves_sql_and_stops() {
    let mut pg = TestPostgres::start();
    let url = pg.create_database("probe");
    let pool = sqlx::PgPool::connect(&url).await.expect("connect");
    let one: (i32,) = sqlx::query_as("SELECT 1").fetch_one(&pool).await.expect("select");
    assert_eq!(one.0, 1);
    pool.close().await;
    let port = pg.port();
    let dir = pg.dir().to_path_buf();
    pg.stop();
    assert!(TcpStream::connect(("127.0.0.1", port)).is_err(), "postgres still listens after stop");
    drop(pg);
    assert!(!dir.exists(), "{} was not removed", dir.display());
}

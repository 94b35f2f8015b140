//! The test harness: real `nats-server` and Postgres processes on free loopback ports in
//! temporary folders, killed and removed on `Drop` (also when a test panics), plus small
//! helpers every integration test uses. Enabled by the `harness` feature.

pub mod powercut;
pub mod target;

use std::future::Future;
use std::time::{Duration, Instant};

use crate::config::{Config, Sources};
use crate::crypto::generate_key_base64;
use crate::servers::{find_nats_server, find_postgres_bin, free_port, NatsProcess, PgProcess};

/// A `nats-server -js` for one test.
pub struct TestNats {
    // Field order matters: the process stops before its folder is removed.
    process: NatsProcess,
    dir: tempfile::TempDir,
}

impl TestNats {
    /// Starts a server with nats-server's default fsync policy (fast; for tests that do not
    /// claim durability); panics with the reason (this is test code).
    pub fn start() -> TestNats {
        Self::start_with(crate::servers::Fsync::Lazy)
    }

    /// Starts a server with the fsync policy given.
    pub fn start_with(fsync: crate::servers::Fsync) -> TestNats {
        let binary = find_nats_server().unwrap_or_else(|e| panic!("{e}"));
        let dir = tempfile::Builder::new().prefix("hookline-nats-").tempdir().unwrap_or_else(|e| panic!("tempdir: {e}"));
        let port = free_port().unwrap_or_else(|e| panic!("free port: {e}"));
        let options = crate::servers::StartOptions { fsync, ..Default::default() };
        let process = NatsProcess::start_with(&binary, dir.path(), port, options).unwrap_or_else(|e| panic!("{e}"));
        TestNats { process, dir }
    }

    /// The server's monitoring endpoint, for `nats.monitor_url`.
    pub fn monitor_url(&self) -> String {
        self.process.monitor_url()
    }

    pub fn url(&self) -> String {
        self.process.url()
    }

    pub fn dir(&self) -> &std::path::Path {
        self.dir.path()
    }

    pub fn pid(&self) -> Option<u32> {
        self.process.pid()
    }

    /// SIGKILL the server (its store stays).
    pub fn kill(&mut self) {
        self.process.kill();
    }

    /// Start it again on the same port with the same store.
    pub fn restart(&mut self) {
        self.process.restart().unwrap_or_else(|e| panic!("{e}"));
    }

    pub async fn client(&self) -> async_nats::Client {
        async_nats::connect(self.url()).await.unwrap_or_else(|e| panic!("connect to test NATS: {e}"))
    }

    pub async fn jetstream(&self) -> async_nats::jetstream::Context {
        async_nats::jetstream::new(self.client().await)
    }
}

/// A Postgres cluster for one test binary or test; each test makes its own database.
pub struct TestPostgres {
    process: PgProcess,
    dir: tempfile::TempDir,
}

impl TestPostgres {
    pub fn start() -> TestPostgres {
        let bin = find_postgres_bin().unwrap_or_else(|e| panic!("{e}"));
        let dir = tempfile::Builder::new().prefix("hookline-pg-").tempdir().unwrap_or_else(|e| panic!("tempdir: {e}"));
        let port = free_port().unwrap_or_else(|e| panic!("free port: {e}"));
        let process = PgProcess::start(&bin, dir.path(), port).unwrap_or_else(|e| panic!("{e}"));
        TestPostgres { process, dir }
    }

    pub fn dir(&self) -> &std::path::Path {
        self.dir.path()
    }

    pub fn port(&self) -> u16 {
        self.process.port()
    }

    /// Creates a database and returns its URL.
    pub fn create_database(&self, name: &str) -> String {
        self.process.create_database(name).unwrap_or_else(|e| panic!("{e}"))
    }

    pub fn stop(&mut self) {
        self.process.stop().unwrap_or_else(|e| panic!("{e}"));
    }

    pub fn restart(&mut self) {
        self.process.restart().unwrap_or_else(|e| panic!("{e}"));
    }
}

/// A validated configuration for tests: the real loader, fed `HOOKLINE_*` variables that point
/// at `nats_url`, with a fresh secrets key and loopback listeners on free ports. `extra` adds or
/// overrides variables.
pub fn config(nats_url: &str, extra: &[(&str, &str)]) -> Config {
    let key = generate_key_base64().unwrap_or_else(|e| panic!("random key: {e}"));
    let mut vars: Vec<(String, String)> = vec![
        ("HOOKLINE_NATS__URL".into(), nats_url.into()),
        ("HOOKLINE_SECRETS__KEY".into(), key.expose().into()),
        ("HOOKLINE_INGEST__LISTEN".into(), "127.0.0.1:0".into()),
    ];
    for (k, v) in extra {
        vars.retain(|(name, _)| name != k);
        vars.push((k.to_string(), v.to_string()));
    }
    Config::load_with_env(&Sources::default(), &vars).unwrap_or_else(|e| panic!("test config: {e}"))
}

/// Polls `probe` until it returns `Some`, or panics naming `what` after `timeout`.
pub async fn wait_for<T, F, Fut>(what: &str, timeout: Duration, mut probe: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = probe().await {
            return v;
        }
        if Instant::now() > deadline {
            panic!("timed out after {timeout:?} waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

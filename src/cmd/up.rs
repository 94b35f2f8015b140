//! `hookline up`: everything in one process for a laptop. Starts a private nats-server under
//! `data_dir` when `nats.url` is not set, generates `secrets.key` there when none is configured,
//! declares a demo channel when none is, prints where each part listens and a command that sends
//! a signed sample webhook, and on Ctrl-C stops the roles and then its servers.

use anyhow::Context;
use std::path::Path;
use std::time::Duration;

use hookline_forwarder::sink::{self, SinkState};
use hookline_shared::channel::ChannelDecl;
use hookline_shared::config::Config;
use hookline_shared::crypto::generate_key_base64;
use hookline_shared::metrics::Metrics;
use hookline_shared::runtime::RunningUp;
use hookline_shared::servers::{
    find_nats_server, find_postgres_bin, free_port, private_postgres_dir, Fsync, NatsProcess, PgProcess, ProcessError, StartOptions,
};
use hookline_shared::{Secret, Source};
use tokio_util::sync::CancellationToken;

const DEMO_CHANNEL: &str = "demo-telegram";

/// Reads a secret kept in a file under data_dir, or creates it (mode 0600).
fn persisted_secret(path: &Path, make: impl FnOnce() -> anyhow::Result<Secret>) -> anyhow::Result<Secret> {
    if let Ok(text) = std::fs::read_to_string(path) {
        return Ok(Secret::new(text.trim().to_string()));
    }
    let secret = make()?;
    write_private(path, secret.expose())?;
    Ok(secret)
}

fn write_private(path: &Path, contents: &str) -> anyhow::Result<()> {
    hookline_shared::servers::write_private_file(path, contents).with_context(|| format!("cannot write {}", path.display()))
}

pub async fn run(config: Config, shutdown: CancellationToken) -> anyhow::Result<()> {
    match start_and_run(config, shutdown.clone()).await {
        Err(e) if shutdown.is_cancelled() && is_cancelled_start(&e) => {
            tracing::info!("stopped during start-up");
            Ok(())
        }
        other => other,
    }
}

fn is_cancelled_start(e: &anyhow::Error) -> bool {
    e.chain().any(|cause| matches!(cause.downcast_ref::<ProcessError>(), Some(ProcessError::Cancelled(_))))
}

async fn start_and_run(mut config: Config, shutdown: CancellationToken) -> anyhow::Result<()> {
    std::fs::create_dir_all(&config.data_dir).with_context(|| format!("cannot create data_dir {}", config.data_dir.display()))?;
    // Absolute: the private Postgres runs with its own working directory.
    let data_dir = config.data_dir.canonicalize().with_context(|| format!("data_dir {}", config.data_dir.display()))?;
    if let hookline_shared::runtime::Lookup::Found(other) = hookline_shared::runtime::lookup(&data_dir) {
        anyhow::bail!(
            "another hookline up (pid {}) serves {} already: stop it first, or run this one with another data_dir",
            other.pid,
            data_dir.display()
        );
    }
    // Durable: an acknowledgement (a 200, a 201) means the data is on disk. Cancelled by a signal
    // at any moment of the start.
    let options = StartOptions { fsync: Fsync::Always, cancel: shutdown.clone() };
    let mut record = RunningUp::for_this_process(
        format!("http://127.0.0.1:{}", config.ingest.listen.port()),
        format!("http://127.0.0.1:{}", config.setup_api.listen.port()),
    );

    let mut nats_process = None;
    if config.nats.url.is_none() {
        let binary = find_nats_server()?;
        let port = free_port()?;
        let dir = data_dir.join("nats");
        let opts = options.clone();
        let process = tokio::task::spawn_blocking(move || NatsProcess::start_with(&binary, &dir, port, opts)).await??;
        config.nats.url = Some(process.url());
        config.nats.monitor_url = Some(process.monitor_url());
        record.nats_url = Some(process.url());
        nats_process = Some(process);
    }
    if config.secrets.key.is_none() {
        let path = data_dir.join("secrets.key");
        let key = persisted_secret(&path, || Ok(generate_key_base64()?))?;
        config.secrets.key = Some(key);
        config.validate()?;
        record.secrets_key_file = Some(path);
    }
    let mut pg_process = None;
    if config.database.url.is_none() {
        let bin = find_postgres_bin()?;
        let port = free_port()?;
        let data = data_dir.clone();
        let opts = options.clone();
        let pg = tokio::task::spawn_blocking(move || -> anyhow::Result<PgProcess> {
            let dir = private_postgres_dir(&data)?;
            let pg = PgProcess::start_with(&bin, &dir, port, opts)?;
            pg.ensure_database("hookline")?;
            Ok(pg)
        })
        .await??;
        config.database.url = Some(Secret::new(pg.url("hookline")));
        record.database_url = Some(pg.url("hookline"));
        pg_process = Some(pg);
    }
    let mut setup_token = None;
    if config.setup_api.tokens.is_empty() {
        let token = persisted_secret(&data_dir.join("setup-api.token"), || {
            Ok(Secret::new(generate_key_base64()?.expose().chars().filter(char::is_ascii_alphanumeric).take(40).collect::<String>()))
        })?;
        config.setup_api.tokens = vec![token.clone()];
        setup_token = Some(token);
    }
    let demo_token = if config.channels.is_empty() {
        let token = persisted_secret(&data_dir.join("demo-telegram.token"), || {
            let key = generate_key_base64()?;
            Ok(Secret::new(key.expose().chars().filter(char::is_ascii_alphanumeric).take(32).collect::<String>()))
        })?;
        config.channels.push(ChannelDecl {
            id: DEMO_CHANNEL.into(),
            tenant_id: "demo".into(),
            source: Source::Telegram,
            secret: token.clone(),
            verify_token: None,
            platform: None,
            name: Some("hookline up demo channel".into()),
            default: true,
            settings: Default::default(),
        });
        Some(token)
    } else {
        None
    };

    let listener = super::bind(config.ingest.listen, "ingest.listen").await?;
    record.ingest_url = format!("http://127.0.0.1:{}", listener.local_addr()?.port());
    let mut builtin_sink = false;
    if config.forwarder.target_url.is_none() {
        // No messaging service: deliver to a sink in this process that prints each event.
        let secret = persisted_secret(&data_dir.join("sink-signing.secret"), || {
            Ok(Secret::new(format!("whsec_{}", generate_key_base64()?.expose())))
        })?;
        let state = SinkState::new(Some(&secret), true).context("sink signing secret")?;
        let sink_listener = super::bind(config.sink.listen, "sink.listen").await?;
        let addr = sink_listener.local_addr()?;
        tokio::spawn(sink::serve(sink_listener, state, shutdown.clone()));
        config.forwarder.target_url = Some(format!("http://{addr}/events"));
        config.forwarder.signing_secret = Some(secret);
        builtin_sink = true;
    }
    let setup_listener = super::bind(config.setup_api.listen, "setup_api.listen").await?;
    record.setup_api_url = format!("http://127.0.0.1:{}", setup_listener.local_addr()?.port());
    let metrics = Metrics::new();
    match record.write(&data_dir) {
        Ok(path) => tracing::debug!(record = %path.display(), "operator commands run here find this up"),
        Err(e) => tracing::warn!(error = %e, "cannot write the record that operator commands read; they need nats.url set"),
    }
    // After the record: what the banner says (operator commands work from here) is true once shown.
    print_banner(&config, nats_process.is_some(), demo_token.as_ref(), builtin_sink, setup_token.as_ref());
    let result = run_roles(&config, metrics, listener, setup_listener, shutdown).await;
    record.remove(&data_dir);

    if let Some(mut pg) = pg_process {
        match tokio::task::spawn_blocking(move || pg.stop()).await? {
            Ok(()) => tracing::info!("private Postgres stopped"),
            Err(e) => tracing::warn!(error = %e, "private Postgres did not stop cleanly"),
        }
    }
    if let Some(mut process) = nats_process {
        tokio::task::spawn_blocking(move || process.stop(Duration::from_secs(10))).await?;
        tracing::info!("private nats-server stopped");
    }
    result
}

/// Ingest and the normalizer side by side; when one fails, the others are stopped.
async fn run_roles(
    config: &Config,
    metrics: std::sync::Arc<Metrics>,
    listener: tokio::net::TcpListener,
    setup_listener: tokio::net::TcpListener,
    shutdown: tokio_util::sync::CancellationToken,
) -> anyhow::Result<()> {
    let stop_all = |r: anyhow::Result<()>| {
        if r.is_err() {
            shutdown.cancel();
        }
        r
    };
    let (ingest, normalizer, forwarder, setup_api) = tokio::join!(
        async { stop_all(hookline_ingest::run(config, metrics.clone(), listener, shutdown.clone()).await.context("ingest")) },
        async { stop_all(hookline_normalizer::worker::run(config, metrics.clone(), None, shutdown.clone()).await.context("normalizer")) },
        async { stop_all(hookline_forwarder::worker::run(config, metrics.clone(), None, shutdown.clone()).await.context("forwarder")) },
        async { stop_all(hookline_setup_api::run(config, metrics.clone(), setup_listener, shutdown.clone()).await.context("setup-api")) },
    );
    ingest.and(normalizer).and(forwarder).and(setup_api)
}

/// The setup API's address, its token (when generated here) and a command that creates a channel
/// through it and sends that channel a signed webhook.
fn print_setup_api(config: &Config, generated_token: Option<&Secret>) {
    let api = format!("http://127.0.0.1:{}", config.setup_api.listen.port());
    let ingest = format!("http://127.0.0.1:{}", config.ingest.listen.port());
    println!("  setup-api {api}/api/v1  (OpenAPI: {api}/api/v1/openapi.json)");
    println!("  console   {api}/console  (sign in with a setup-api token)");
    let Some(token) = generated_token else { return };
    println!("  token     {}  (generated; kept in {})", token.expose(), config.data_dir.join("setup-api.token").display());
    println!();
    println!("Create a channel through the API and send it a signed webhook:");
    println!();
    println!(
        "  curl -s -X POST {api}/api/v1/channels -H 'Authorization: Bearer {}' -H 'Content-Type: application/json' \\\n    -d '{{\"id\":\"my-bot\",\"tenant_id\":\"demo\",\"source\":\"telegram\",\"secret\":\"my-bot-secret-token\"}}' && sleep 1 && \\\n  curl -i -X POST {ingest}/webhooks/my-bot -H 'Content-Type: application/json' -H 'X-Telegram-Bot-Api-Secret-Token: my-bot-secret-token' \\\n    -d '{{\"update_id\":2,\"message\":{{\"message_id\":2,\"date\":1700000000,\"chat\":{{\"id\":7,\"type\":\"private\"}},\"text\":\"hi from the API\"}}}}'",
        token.expose()
    );
    println!();
}

fn print_banner(config: &Config, private_nats: bool, demo_token: Option<&Secret>, builtin_sink: bool, setup_token: Option<&Secret>) {
    let listen = config.ingest.listen;
    let local = format!("http://127.0.0.1:{}", listen.port());
    let nats = config.nats.url.as_deref().map(hookline_shared::jetstream::redact_url).unwrap_or_default();
    println!();
    println!("hookline up");
    if private_nats {
        println!("  nats      {nats}  (private, data in {})", config.data_dir.join("nats").display());
    } else {
        println!("  nats      {nats}");
    }
    println!("  ingest    {local}  (public URL {})", config.ingest.public_url);
    println!("  metrics   {local}/metrics");
    println!("  readiness {local}/readyz");
    let target = config.forwarder.target_url.as_deref().map(hookline_shared::jetstream::redact_url).unwrap_or_default();
    if builtin_sink {
        println!("  sink      {target}  (built in: prints each delivered event below)");
    } else {
        println!("  target    {target}");
    }
    if let Some(token) = demo_token {
        println!();
        println!("A demo Telegram channel '{DEMO_CHANNEL}' is declared. Send it a webhook:");
        println!();
        println!(
            "  curl -i -X POST {local}/webhooks/{DEMO_CHANNEL} -H 'Content-Type: application/json' \\\n    -H 'X-Telegram-Bot-Api-Secret-Token: {}' \\\n    -d '{{\"update_id\":1,\"message\":{{\"message_id\":1,\"date\":1700000000,\"chat\":{{\"id\":42,\"type\":\"private\"}},\"from\":{{\"id\":42,\"is_bot\":false,\"first_name\":\"Ana\"}},\"text\":\"hello\"}}}}'",
            token.expose()
        );
        println!();
        println!("It answers 200 once the webhook is stored in JetStream (stream HOOKLINE_RAW);");
        println!("the normalizer publishes its event to HOOKLINE_EVENTS and the forwarder delivers it.");
    }
    print_setup_api(config, setup_token);
    println!("Operator commands run from this folder find this up with no configuration, e.g.");
    println!("  hookline dlq list    hookline replay raw --from 1h --dry-run");
    println!("Ctrl-C stops everything; the data stays in {}.", config.data_dir.display());
    println!();
}

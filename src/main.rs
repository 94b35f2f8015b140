//! `hookline`: one binary, a role per subcommand. Parses arguments, loads the configuration,
//! installs telemetry and signal handling, and hands each role its shutdown token.

mod cmd;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use clap::{Parser, Subcommand};
use std::path::PathBuf;
use std::process::ExitCode;

/// Exit status for a configuration error (sysexits EX_CONFIG).
const EXIT_CONFIG: u8 = 78;

#[derive(Parser)]
#[command(
    name = "hookline",
    version,
    about = "Receives platform webhooks, keeps them in NATS JetStream, normalizes and forwards them.",
    long_about = "Receives platform webhooks, keeps them in NATS JetStream, normalizes and forwards them.\n\n\
Configuration: built-in defaults, then hookline.toml (or --config), then HOOKLINE_* environment \
variables with __ between levels (HOOKLINE_INGEST__LISTEN=0.0.0.0:8080); HOOKLINE_*_FILE reads a \
value from a file. See docs/configuration.md for every key."
)]
struct Cli {
    /// Configuration file (default: ./hookline.toml when it exists).
    #[arg(long, global = true, value_name = "FILE")]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Everything in one process for a laptop: ingest, normalizer and forwarder; starts a private
    /// nats-server under data_dir when nats.url is not set, a demo channel when none is declared,
    /// and delivers to a built-in sink that prints each event when forwarder.target_url is not set.
    Up,
    /// The ingest role: verifies webhooks and stores them in HOOKLINE_RAW (needs nats.url, secrets.key).
    Ingest,
    /// The normalizer role: raw webhooks from HOOKLINE_RAW to events in HOOKLINE_EVENTS (needs nats.url).
    Normalizer,
    /// The forwarder role: events from HOOKLINE_EVENTS to forwarder.target_url, signed, with durable retries.
    Forwarder,
    /// A receiver that verifies forwarded signatures and counts or prints events (see sink.* keys).
    Sink {
        /// Print each event received as a JSON line.
        #[arg(long)]
        print: bool,
        /// Answer this status instead of 200, to exercise retries.
        #[arg(long, value_name = "STATUS")]
        fail_status: Option<u16>,
        /// The share of deliveries that fail (default 1).
        #[arg(long, value_name = "RATIO", requires = "fail_status")]
        fail_ratio: Option<f64>,
        /// Fail only for this many seconds from the start.
        #[arg(long, value_name = "SECONDS", requires = "fail_status")]
        fail_for_s: Option<f64>,
    },
    /// The setup API: channel configurations in Postgres, mirrored to ingest (needs database.url, setup_api.tokens).
    SetupApi,
    /// Channel secrets' encryption key.
    Secrets {
        #[command(subcommand)]
        action: SecretsCommand,
    },
    /// Prints the events of one raw payload as JSON lines (exit 2 when it cannot be parsed).
    Normalize {
        /// The payload's source: whatsapp, messenger, instagram, telegram, twilio, dialog360,
        /// tawkto, mercadopago or webchat.
        #[arg(long)]
        source: hookline_shared::Source,
        /// The payload's Content-Type, as the platform sent it.
        #[arg(long)]
        content_type: Option<String>,
        /// The webhook request's query string (Mercado Pago puts data.id there).
        #[arg(long)]
        query: Option<String>,
        /// The payload file; standard input when absent.
        file: Option<PathBuf>,
    },
    /// Re-runs raw webhooks through the normalizer (raw) or events through the forwarder (events);
    /// what it publishes carries replay: true and keeps its ids.
    Replay {
        #[arg(value_enum)]
        stream: ReplayStreamArg,
        #[command(flatten)]
        select: SelectArgs,
        /// Count what would be replayed; publish nothing.
        #[arg(long)]
        dry_run: bool,
        /// At most this many messages a second.
        #[arg(long, value_name = "PER_SECOND")]
        rate: Option<u32>,
        /// Events only: deliver them to this destination alone.
        #[arg(long, value_name = "ID")]
        destination: Option<String>,
    },
    /// API tokens of the setup API: create (shown once), list (never a value) or revoke.
    ///
    /// Talks to the setup API over HTTP: --api-url (HOOKLINE_SETUP_API_URL), else the running
    /// `hookline up` of this folder, else setup_api.listen here. Authenticates with an admin
    /// token: HOOKLINE_SETUP_API_TOKEN, else the first of setup_api.tokens, else the one `up`
    /// generated (data_dir/setup-api.token).
    Tokens {
        /// The setup API's base URL, e.g. http://127.0.0.1:8081.
        #[arg(long, env = "HOOKLINE_SETUP_API_URL", global = true)]
        api_url: Option<String>,
        #[command(subcommand)]
        action: TokensCommand,
    },
    /// Dead letters: list, show, redrive (put back where they failed) or purge.
    Dlq {
        #[command(subcommand)]
        action: DlqCommand,
    },
    /// Lookups: one event with every delivery attempt (show), or events by message id,
    /// conversation, channel, tenant, kind and time (find).
    Events {
        #[command(subcommand)]
        action: EventsCommand,
    },
    /// Load generation and measurement (loopback only; every run bounded in time and count).
    Bench {
        #[command(subcommand)]
        run: BenchCommand,
    },
    /// Checks the configuration and exits: 0 when valid, 78 naming the wrong key otherwise.
    CheckConfig,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum ReplayStreamArg {
    /// HOOKLINE_RAW, through the normalizer.
    Raw,
    /// HOOKLINE_EVENTS, through the forwarder.
    Events,
}

/// Which messages: all given filters must match.
#[derive(clap::Args, Clone, Default)]
struct SelectArgs {
    /// From this time: RFC 3339, or an age such as 15m, 2h, 7d.
    #[arg(long, value_parser = parse_time)]
    from: Option<time::OffsetDateTime>,
    /// Up to this time: RFC 3339, or an age.
    #[arg(long, value_parser = parse_time)]
    to: Option<time::OffsetDateTime>,
    /// From this stream sequence.
    #[arg(long)]
    from_seq: Option<u64>,
    /// Up to this stream sequence.
    #[arg(long)]
    to_seq: Option<u64>,
    #[arg(long)]
    channel: Option<String>,
    #[arg(long)]
    tenant: Option<String>,
    #[arg(long)]
    source: Option<hookline_shared::Source>,
}

fn parse_time(s: &str) -> Result<time::OffsetDateTime, String> {
    hookline_operations::selection::parse_time(s)
}

impl From<SelectArgs> for hookline_operations::selection::Selection {
    fn from(a: SelectArgs) -> Self {
        hookline_operations::selection::Selection {
            from: a.from,
            to: a.to,
            from_seq: a.from_seq,
            to_seq: a.to_seq,
            channel: a.channel,
            tenant: a.tenant,
            source: a.source,
        }
    }
}

/// Which dead letters.
#[derive(clap::Args, Clone, Default)]
struct DlqFilterArgs {
    #[command(flatten)]
    select: SelectArgs,
    /// normalize or forward.
    #[arg(long)]
    stage: Option<String>,
    /// A reason code, e.g. invalid_json, rejected_4xx, attempts_exhausted.
    #[arg(long)]
    reason: Option<String>,
    /// Only these DLQ sequences (repeat the flag).
    #[arg(long = "seq")]
    seqs: Vec<u64>,
    /// At most this many.
    #[arg(long)]
    limit: Option<u64>,
    /// Forward-stage dead letters of this destination only.
    #[arg(long, value_name = "ID")]
    destination: Option<String>,
}

impl From<DlqFilterArgs> for hookline_operations::dlq::DlqFilter {
    fn from(a: DlqFilterArgs) -> Self {
        hookline_operations::dlq::DlqFilter {
            selection: a.select.into(),
            stage: a.stage,
            reason: a.reason,
            seqs: a.seqs,
            limit: a.limit,
            destination: a.destination,
        }
    }
}

/// The load of a bench run.
#[derive(clap::Args)]
struct BenchLoadArgs {
    /// Connections, each with one request at a time.
    #[arg(long, default_value_t = 64)]
    concurrency: usize,
    /// Requests a second in all; as fast as possible when absent.
    #[arg(long)]
    rate: Option<f64>,
    /// How long the load lasts.
    #[arg(long, default_value_t = 10.0)]
    duration_s: f64,
    /// At most this many requests.
    #[arg(long, default_value_t = 2_000_000)]
    requests: u64,
    /// One JSON object per run on standard output.
    #[arg(long)]
    json: bool,
    /// Draw the timeline to this SVG file.
    #[arg(long, value_name = "FILE.svg")]
    plot: Option<PathBuf>,
    /// When the bench's nats-server acknowledges: `always` after an fsync (what hookline ships),
    /// `lazy` at once, fsyncing every two minutes (nats-server's default; a power cut loses data).
    #[arg(long, value_enum, default_value_t = FsyncArg::Always)]
    fsync: FsyncArg,
}

#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum OrderingArg {
    None,
    Conversation,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum FsyncArg {
    Always,
    Lazy,
}

impl From<FsyncArg> for hookline_shared::servers::Fsync {
    fn from(a: FsyncArg) -> Self {
        match a {
            FsyncArg::Always => hookline_shared::servers::Fsync::Always,
            FsyncArg::Lazy => hookline_shared::servers::Fsync::Lazy,
        }
    }
}

impl From<BenchLoadArgs> for cmd::bench::BenchLoad {
    fn from(a: BenchLoadArgs) -> Self {
        cmd::bench::BenchLoad {
            concurrency: a.concurrency,
            rate: a.rate,
            duration_s: a.duration_s,
            requests: a.requests,
            json: a.json,
            plot: a.plot,
            fsync: a.fsync.into(),
        }
    }
}

#[derive(Subcommand)]
enum BenchCommand {
    /// Signed webhooks (a mix of the golden fixtures) against ingest with its own nats-server, or --url.
    Ingest {
        #[command(flatten)]
        load: BenchLoadArgs,
        /// An ingest already running (host:port on loopback); its channels must be the bench's.
        #[arg(long)]
        url: Option<std::net::SocketAddr>,
    },
    /// The same load against a bare hyper + JetStream publish + ack server, then against ingest: the ratio.
    Baseline {
        #[command(flatten)]
        load: BenchLoadArgs,
    },
    /// Ingest, normalizers, forwarders and a sink as processes under load; a ledger of every webhook answered 200.
    E2e {
        #[command(flatten)]
        load: BenchLoadArgs,
        #[arg(long, default_value_t = 1)]
        normalizers: usize,
        #[arg(long, default_value_t = 1)]
        forwarders: usize,
        /// nats-kill, cluster-node-kill, power-cut, normalizer-kill, forwarder-kill or target-500.
        #[arg(long)]
        fault: Option<hookline_bench::runs::Fault>,
        /// Destinations, each receiving every event at a sink of its own (1: the destination
        /// default; more: that many in the bucket hookline_destinations).
        #[arg(long, default_value_t = 1)]
        destinations: usize,
        /// `conversation`: conversations of messages (each sent once the previous one of its
        /// conversation was answered 200) to an ordered destination and its unordered twin at once;
        /// their order is checked and their delivered events/s compared. Faults: forwarder-kill
        /// (once), and --fail-ratio.
        #[arg(long, value_enum, default_value_t = OrderingArg::None)]
        ordering: OrderingArg,
        /// With --ordering conversation: how many conversations.
        #[arg(long, default_value_t = 1000)]
        conversations: usize,
        /// With --ordering conversation: messages per conversation.
        #[arg(long, default_value_t = 8)]
        messages: usize,
        /// With --ordering conversation: the targets answer 500 to this share of deliveries while
        /// messages are sent.
        #[arg(long)]
        fail_ratio: Option<f64>,
        /// on: the delivery log (HOOKLINE_ATTEMPTS) and the lookup index (HOOKLINE_INDEX) are
        /// written, as shipped; off: neither, to measure what they cost.
        #[arg(long, default_value = "on", value_parser = ["on", "off"])]
        attempts_log: String,
    },
    /// Stores N events (with their index entries and one attempt each) in a private nats-server,
    /// then times lookups by event id and by message id: p50 and p99.
    Lookup {
        /// Events to store (the fill stops at --max-fill-s).
        #[arg(long, default_value_t = 1_000_000)]
        events: u64,
        /// Lookups of each kind, on random stored events.
        #[arg(long, default_value_t = 1000)]
        samples: usize,
        /// The longest the fill may take, seconds.
        #[arg(long, default_value_t = 900)]
        max_fill_s: u64,
        /// The nats-server's fsync policy: always (as shipped) or lazy.
        #[arg(long, value_enum, default_value_t = FsyncArg::Always)]
        fsync: FsyncArg,
        /// One JSON object.
        #[arg(long)]
        json: bool,
    },
    /// (internal) the baseline server.
    #[command(hide = true)]
    ServeBaseline {
        #[arg(long)]
        nats: String,
        #[arg(long)]
        listen: std::net::SocketAddr,
    },
}

#[derive(Subcommand)]
enum TokensCommand {
    /// Creates a token and prints it once (only its SHA-256 is kept).
    Create {
        /// For people: who or what uses it.
        #[arg(long)]
        name: String,
        /// Only this tenant's channels, destinations, dead letters, replays and audit entries;
        /// without it, an admin token (every tenant, and token management).
        #[arg(long, value_name = "TENANT_ID")]
        tenant: Option<String>,
        /// Reads only: every change is refused (403).
        #[arg(long)]
        read_only: bool,
        /// Print the API's answer as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Lists the tokens that are not revoked, with when each was last used; never a value.
    List {
        /// Print the API's answer as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Revokes a token: every setup-api process refuses it within a second.
    Revoke {
        /// The token's id (tok_...), as `list` shows it.
        id: String,
    },
}

#[derive(Subcommand)]
enum SecretsCommand {
    /// Re-seals every channel secret under secrets.key (the old key listed in secrets.previous_keys).
    RotateKey,
}

#[derive(Subcommand)]
enum EventsCommand {
    /// One event: where it came from (its raw webhook's sequence), its state at every destination
    /// (delivered, retrying with the next attempt's time, dead_lettered, filtered_out, waiting)
    /// and every delivery attempt with the target's status, duration and answer.
    #[command(after_help = "Example: hookline events show evt_c3167890603f1d1574d05993b54f5a83")]
    Show {
        /// The event's id (evt_...), as in webhook-id or `events find`.
        event_id: String,
        /// The whole lookup as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Events matching every filter given, oldest first. With --message-id or --conversation-id
    /// the index answers at once; otherwise HOOKLINE_EVENTS is read in order from --from (by
    /// --tenant and --kind through the subject) for up to two seconds, then a cursor is printed.
    #[command(after_help = "Examples:
  hookline events find --message-id wamid.HBgLMTU1NTEyMzQ1NjcVAgASGBQzQUZBMDM=
  hookline events find --conversation-id 1111111 --tenant acme
  hookline events find --tenant acme --kind status --from 2h --limit 20")]
    Find {
        /// The platform's message id: the message and the statuses about it.
        #[arg(long)]
        message_id: Option<String>,
        /// The conversation's id (a chat, a phone number, a thread).
        #[arg(long)]
        conversation_id: Option<String>,
        /// A channel id.
        #[arg(long)]
        channel: Option<String>,
        /// A tenant id.
        #[arg(long)]
        tenant: Option<String>,
        /// message, status, payment, chat_event or other.
        #[arg(long)]
        kind: Option<String>,
        /// received_at from this time: RFC 3339, or an age such as 15m, 2h, 7d.
        #[arg(long, value_parser = parse_time)]
        from: Option<time::OffsetDateTime>,
        /// received_at up to this time: RFC 3339, or an age.
        #[arg(long, value_parser = parse_time)]
        to: Option<time::OffsetDateTime>,
        /// At most this many, 1 to 1000.
        #[arg(long, default_value_t = 50)]
        limit: usize,
        /// Go on where a previous search stopped (it prints the cursor).
        #[arg(long)]
        cursor: Option<String>,
        /// One JSON object per line ({seq, subject, event}).
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand)]
enum DlqCommand {
    /// Stage, reason, attempts, age and subject of each dead letter.
    List {
        #[command(flatten)]
        filter: DlqFilterArgs,
        /// One JSON object per line.
        #[arg(long)]
        json: bool,
    },
    /// One dead letter with its headers and body.
    Show { seq: u64 },
    /// Puts dead letters back where they failed; each leaves the DLQ once its re-publish is acked.
    Redrive {
        #[command(flatten)]
        filter: DlqFilterArgs,
        #[arg(long)]
        dry_run: bool,
    },
    /// Deletes dead letters (needs --yes).
    Purge {
        #[command(flatten)]
        filter: DlqFilterArgs,
        #[arg(long)]
        dry_run: bool,
        #[arg(long)]
        yes: bool,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Command::Normalize { source, content_type, query, file } = cli.command {
        return cmd::normalize::run(source, content_type, query, file);
    }
    let sources = hookline_shared::config::Sources { file: cli.config.clone() };
    let config = match hookline_shared::config::Config::load(&sources) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("hookline: {e}");
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    if let Command::CheckConfig = cli.command {
        println!("configuration is valid");
        return ExitCode::SUCCESS;
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("hookline: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async move {
        // Before anything starts: a signal at any later moment of start-up is seen.
        let shutdown = cmd::shutdown_on_signals()?;
        let _telemetry = hookline_shared::telemetry::init(&config.log, &config.telemetry)?;
        let mut config = config;
        let operator_needs = |nats, database, secrets_key| hookline_shared::runtime::Needs { nats, database, secrets_key };
        match cli.command {
            Command::Up => cmd::up::run(config, shutdown).await,
            Command::Ingest => cmd::ingest::run(config, shutdown).await,
            Command::Normalizer => cmd::normalizer::run(config, shutdown).await,
            Command::Forwarder => cmd::forwarder::run(config, shutdown).await,
            Command::SetupApi => cmd::setup_api::run(config, shutdown).await,
            Command::Secrets { action: SecretsCommand::RotateKey } => {
                hookline_shared::runtime::fill_from_running_up(&mut config, operator_needs(false, true, true))?;
                cmd::until_signal(&shutdown, cmd::setup_api::rotate_key(config)).await
            }
            Command::Replay { stream, select, dry_run, rate, destination } => {
                hookline_shared::runtime::fill_from_running_up(&mut config, operator_needs(true, false, false))?;
                let stream = match stream {
                    ReplayStreamArg::Raw => hookline_operations::replay::ReplayStream::Raw,
                    ReplayStreamArg::Events => hookline_operations::replay::ReplayStream::Events,
                };
                let selection: hookline_operations::selection::Selection = select.into();
                let fields = serde_json::json!({"stream": format!("{stream:?}").to_lowercase(), "selection": selection, "rate_per_s": rate, "destination": destination});
                let tenant = selection.tenant.clone();
                let audit_config = config.clone();
                cmd::until_signal(&shutdown, cmd::replay::run(config, stream, selection, dry_run, rate, destination)).await?;
                if !dry_run {
                    cmd::audit::record(&audit_config, "replay", "replay", tenant.as_deref(), fields).await;
                }
                Ok(())
            }
            Command::Bench { run } => {
                let bench = async move {
                    match run {
                        BenchCommand::Ingest { load, url } => cmd::bench::ingest(load.into(), url).await,
                        BenchCommand::Baseline { load } => cmd::bench::baseline(load.into()).await,
                        BenchCommand::E2e {
                            load,
                            normalizers,
                            forwarders,
                            fault,
                            destinations,
                            ordering: OrderingArg::Conversation,
                            conversations,
                            messages,
                            fail_ratio,
                            ..
                        } => {
                            let shape = cmd::bench::Conversations { conversations, messages, fail_ratio, destinations };
                            cmd::bench::ordered(load.into(), normalizers, forwarders, fault, shape).await
                        }
                        BenchCommand::E2e { load, normalizers, forwarders, fault, destinations, fail_ratio, attempts_log, .. } => {
                            if fail_ratio.is_some() {
                                Err(anyhow::anyhow!("--fail-ratio goes with --ordering conversation (else: --fault target-500)"))
                            } else {
                                cmd::bench::e2e(load.into(), normalizers, forwarders, fault, destinations, attempts_log == "on").await
                            }
                        }
                        BenchCommand::Lookup { events, samples, max_fill_s, fsync, json } => {
                            cmd::bench::lookup(events, samples, max_fill_s, fsync.into(), json).await
                        }
                        BenchCommand::ServeBaseline { nats, listen } => cmd::bench::serve_baseline(nats, listen).await,
                    }
                };
                cmd::until_signal(&shutdown, bench).await
            }
            Command::Events { action } => {
                hookline_shared::runtime::fill_from_running_up(&mut config, operator_needs(true, false, false))?;
                use cmd::events::EventsAction;
                let action = match action {
                    EventsCommand::Show { event_id, json } => EventsAction::Show { event_id, json },
                    EventsCommand::Find { message_id, conversation_id, channel, tenant, kind, from, to, limit, cursor, json } => {
                        let query = hookline_operations::lookup::FindQuery {
                            message_id,
                            conversation_id,
                            channel,
                            tenant,
                            kind,
                            from,
                            to,
                            limit,
                            cursor,
                        };
                        EventsAction::Find { query, json }
                    }
                };
                cmd::until_signal(&shutdown, cmd::events::run(config, action)).await
            }
            Command::Dlq { action } => {
                hookline_shared::runtime::fill_from_running_up(&mut config, operator_needs(true, false, false))?;
                use cmd::dlq::DlqAction;
                let (action, filter) = match action {
                    DlqCommand::List { filter, json } => (DlqAction::List { json }, filter),
                    DlqCommand::Show { seq } => (DlqAction::Show { seq }, DlqFilterArgs::default()),
                    DlqCommand::Redrive { filter, dry_run } => (DlqAction::Redrive { dry_run }, filter),
                    DlqCommand::Purge { filter, dry_run, yes } => (DlqAction::Purge { dry_run, yes }, filter),
                };
                let filter: hookline_operations::dlq::DlqFilter = filter.into();
                let audited = match action {
                    DlqAction::Redrive { dry_run: false } => Some(("dlq redrive", "redrive")),
                    DlqAction::Purge { dry_run: false, .. } => Some(("dlq purge", "purge")),
                    _ => None,
                };
                let (fields, tenant, audit_config) = (serde_json::to_value(&filter).unwrap_or_default(), filter.selection.tenant.clone(), config.clone());
                cmd::until_signal(&shutdown, cmd::dlq::run(config, action, filter)).await?;
                if let Some((command, what)) = audited {
                    cmd::audit::record(&audit_config, command, what, tenant.as_deref(), fields).await;
                }
                Ok(())
            }
            Command::Tokens { api_url, action } => {
                use cmd::tokens::TokensAction;
                let action = match action {
                    TokensCommand::Create { name, tenant, read_only, json } => TokensAction::Create { name, tenant, read_only, json },
                    TokensCommand::List { json } => TokensAction::List { json },
                    TokensCommand::Revoke { id } => TokensAction::Revoke { id },
                };
                cmd::until_signal(&shutdown, cmd::tokens::run(config, api_url, action)).await
            }
            Command::Sink { print, fail_status, fail_ratio, fail_for_s } => {
                cmd::sink::run(config, cmd::sink::SinkArgs { print, fail_status, fail_ratio, fail_for_s }, shutdown).await
            }
            Command::Normalize { .. } | Command::CheckConfig => Ok(()),
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            if e.downcast_ref::<cmd::Interrupted>().is_some() {
                eprintln!("hookline: interrupted");
                return ExitCode::from(130);
            }
            if let Some(config_error) = e.downcast_ref::<hookline_shared::config::ConfigError>() {
                eprintln!("hookline: {config_error}");
                return ExitCode::from(EXIT_CONFIG);
            }
            tracing::error!(error = format!("{e:#}"), "hookline stopped");
            eprintln!("hookline: {e:#}");
            ExitCode::FAILURE
        }
    }
}

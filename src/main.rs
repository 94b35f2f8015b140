//! `hookline`: one binary, a role per subcommand. Parses arguments, loads the configuration,
//! installs telemetry and signal handling, and hands each role its shutdown token.

mod cmd;

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
value from a file. See README.md for every key."
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
    /// Checks the configuration and exits: 0 when valid, 78 naming the wrong key otherwise.
    CheckConfig,
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
        let _telemetry = hookline_shared::telemetry::init(&config.log, &config.telemetry)?;
        match cli.command {
            Command::Up => cmd::up::run(config).await,
            Command::Ingest => cmd::ingest::run(config).await,
            Command::Normalizer => cmd::normalizer::run(config).await,
            Command::Forwarder => cmd::forwarder::run(config).await,
            Command::Sink { print, fail_status, fail_ratio, fail_for_s } => {
                cmd::sink::run(config, cmd::sink::SinkArgs { print, fail_status, fail_ratio, fail_for_s }).await
            }
            Command::Normalize { .. } | Command::CheckConfig => Ok(()),
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
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

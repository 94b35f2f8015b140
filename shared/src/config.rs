//! Configuration: built-in defaults, then `hookline.toml` (or `--config`), then the seed
//! services' variable names, then `HOOKLINE_*` variables (`__` between levels), then
//! `HOOKLINE_*_FILE` variables whose file holds the value. Validated before any socket opens;
//! every error names the dotted key and its environment variable.

use figment::providers::{Format, Serialized, Toml};
use figment::Figment;
use serde::Deserialize;
use std::collections::HashSet;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use crate::channel::ChannelDecl;
use crate::crypto::{Keyring, SecretsKey};
use crate::{names, Secret, Source};

const DEFAULTS: &str = include_str!("../hookline.default.toml");
const ENV_PREFIX: &str = "HOOKLINE_";

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    pub data_dir: PathBuf,
    pub nats: NatsConfig,
    pub log: LogConfig,
    pub telemetry: TelemetryConfig,
    pub ingest: IngestConfig,
    pub normalizer: NormalizerConfig,
    pub forwarder: ForwarderConfig,
    pub sink: SinkConfig,
    pub database: DatabaseConfig,
    pub setup_api: SetupApiConfig,
    pub secrets: SecretsConfig,
    pub streams: StreamsConfig,
    #[serde(default)]
    pub channels: Vec<ChannelDecl>,
    /// `[[destinations]]`: written to the bucket `hookline_destinations` by the forwarder when
    /// absent there (an API change wins), as channels are.
    #[serde(default)]
    pub destinations: Vec<crate::destination::DestinationDecl>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NatsConfig {
    /// Server URLs, comma separated.
    pub url: Option<String>,
    pub connect_timeout_ms: u64,
    /// The nats-server's monitoring endpoint (`http://host:8222`): when set, each role checks at
    /// start that the server fsyncs before it acknowledges, and warns when it does not.
    pub monitor_url: Option<String>,
    /// Group commit of concurrent publishes (ingest's raw webhooks, the normalizer's events):
    /// the most messages in one atomic batch; 1 publishes every message alone.
    pub group_commit_max_batch: usize,
    /// Atomic batches being committed at once, per stream and process.
    pub group_commit_max_in_flight: usize,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Pretty,
    Json,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogConfig {
    pub format: LogFormat,
    pub level: String,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TelemetryConfig {
    pub otlp_endpoint: Option<String>,
    pub service_name: String,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IngestConfig {
    pub listen: SocketAddr,
    pub public_url: String,
    pub max_body_bytes: usize,
    pub header_read_timeout_ms: u64,
    pub body_read_timeout_ms: u64,
    pub publish_ack_timeout_ms: u64,
    pub retry_after_s: u64,
    pub shutdown_grace_ms: u64,
    pub webchat_tolerance_s: i64,
    pub mercadopago_tolerance_s: i64,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NormalizerConfig {
    pub listen: SocketAddr,
    pub batch_size: usize,
    pub max_in_flight: usize,
    pub ack_wait_s: u64,
    pub retry_delay_ms: u64,
    pub publish_ack_timeout_ms: u64,
    /// Write each event's lookup keys to `HOOKLINE_INDEX` (in the background).
    pub index: bool,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ForwarderConfig {
    pub listen: SocketAddr,
    pub target_url: Option<String>,
    pub signing_secret: Option<Secret>,
    pub max_in_flight: usize,
    pub min_in_flight: usize,
    pub request_timeout_ms: u64,
    pub retry_schedule_s: Vec<u64>,
    pub retry_jitter: f64,
    pub max_age_s: u64,
    pub ack_wait_s: u64,
    pub batch_size: usize,
    pub breaker: BreakerConfig,
    /// Record every delivery attempt in `HOOKLINE_ATTEMPTS` (the delivery log).
    pub attempts_log: bool,
}

/// The circuit breaker of every destination.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BreakerConfig {
    /// Consecutive retryable failures that trip a destination.
    pub failures: u32,
    /// The first interval between probes while tripped; it doubles after each failed probe.
    pub probe_s: u64,
    /// The longest interval between probes.
    pub max_probe_s: u64,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SinkConfig {
    pub listen: SocketAddr,
    pub signing_secret: Option<Secret>,
    pub print: bool,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DatabaseConfig {
    /// Holds a password: a `Secret`.
    pub url: Option<Secret>,
    pub max_connections: u32,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SetupApiConfig {
    pub listen: SocketAddr,
    /// Bearer tokens; in the environment, comma separated.
    #[serde(deserialize_with = "secrets_list")]
    pub tokens: Vec<Secret>,
    pub telegram_api_url: String,
    pub graph_api_url: String,
    pub twilio_api_url: String,
    /// Failed authentications answered per client address and minute before 429.
    pub auth_failures_per_minute: u32,
    /// Lets tenant tokens write destinations to loopback, private and link-local addresses.
    pub allow_private_destinations: bool,
}

/// A list of secrets, from a list or from one comma-separated string.
fn secrets_list<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<Secret>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum OneOrMany {
        Many(Vec<String>),
        One(String),
    }
    Ok(match OneOrMany::deserialize(d)? {
        OneOrMany::Many(v) => v,
        OneOrMany::One(s) => s.split(',').map(str::trim).filter(|t| !t.is_empty()).map(str::to_string).collect(),
    }
    .into_iter()
    .map(Secret::new)
    .collect())
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SecretsConfig {
    pub key: Option<Secret>,
    #[serde(default)]
    pub previous_keys: Vec<Secret>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DiscardPolicy {
    /// Refuse new messages when a limit is reached (ingest answers 503; nothing stored is lost).
    New,
    /// Drop the oldest messages when a limit is reached.
    Old,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StreamLimits {
    pub max_age_s: u64,
    /// -1: no limit.
    pub max_bytes: i64,
    pub replicas: usize,
    pub duplicate_window_s: u64,
    pub discard: DiscardPolicy,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KvLimits {
    pub replicas: usize,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StreamsConfig {
    pub raw: StreamLimits,
    pub events: StreamLimits,
    pub dlq: StreamLimits,
    /// The delivery log, `HOOKLINE_ATTEMPTS`.
    pub attempts: StreamLimits,
    pub channels: KvLimits,
}

/// A configuration error: which key, and what is wrong with it. Never holds a secret value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub key: String,
    pub message: String,
}

impl ConfigError {
    pub fn new(key: impl Into<String>, message: impl Into<String>) -> Self {
        ConfigError { key: key.into(), message: message.into() }
    }
}

/// `ingest.max_body_bytes` → `HOOKLINE_INGEST__MAX_BODY_BYTES`
pub fn env_name(key: &str) -> String {
    format!("{ENV_PREFIX}{}", key.replace('.', "__").to_ascii_uppercase())
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.key.is_empty() {
            write!(f, "configuration: {}", self.message)
        } else if self.key.starts_with("channels") || self.key.starts_with("destinations") {
            write!(f, "configuration key {}: {}", self.key, self.message)
        } else {
            write!(f, "configuration key {} ({}): {}", self.key, env_name(&self.key), self.message)
        }
    }
}

impl std::error::Error for ConfigError {}

/// Where the process's configuration comes from.
#[derive(Debug, Default, Clone)]
pub struct Sources {
    /// `--config`; when `None`, `hookline.toml` in the working directory if it exists.
    pub file: Option<PathBuf>,
}

impl Config {
    /// Loads and validates the configuration of this process.
    pub fn load(sources: &Sources) -> Result<Config, ConfigError> {
        let vars: Vec<(String, String)> = std::env::vars().collect();
        Self::load_with_env(sources, &vars)
    }

    /// As `load`, with the environment given (for tests).
    pub fn load_with_env(sources: &Sources, vars: &[(String, String)]) -> Result<Config, ConfigError> {
        let mut figment = Figment::from(Toml::string(DEFAULTS));
        match &sources.file {
            Some(path) => {
                if !path.exists() {
                    return Err(ConfigError::new("", format!("the configuration file {} does not exist", path.display())));
                }
                figment = figment.merge(Toml::file_exact(path));
            }
            None if Path::new("hookline.toml").is_file() => figment = figment.merge(Toml::file_exact("hookline.toml")),
            None => {}
        }
        for (key, value) in seed_variables(vars)? {
            figment = figment.merge(Serialized::default(&key, value));
        }
        figment = figment.merge(PrefixedEnv(vars.to_vec()));
        for (key, value) in file_variables(vars)? {
            figment = figment.merge(Serialized::default(&key, value));
        }
        let config: Config = figment.extract().map_err(from_figment)?;
        config.validate()?;
        Ok(config)
    }

    /// Checks what serde cannot: URLs, ranges, keys, channel declarations.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if let Some(url) = &self.nats.url {
            validate_nats_urls(url).map_err(|m| ConfigError::new("nats.url", m))?;
        }
        if let Some(url) = &self.nats.monitor_url {
            validate_http_url(url).map_err(|m| ConfigError::new("nats.monitor_url", m))?;
        }
        validate_http_url(&self.ingest.public_url).map_err(|m| ConfigError::new("ingest.public_url", m))?;
        if let Some(endpoint) = &self.telemetry.otlp_endpoint {
            validate_http_url(endpoint).map_err(|m| ConfigError::new("telemetry.otlp_endpoint", m))?;
        }
        tracing_subscriber::EnvFilter::try_new(&self.log.level)
            .map_err(|e| ConfigError::new("log.level", format!("not a log filter: {e}")))?;
        let positive = [
            ("ingest.max_body_bytes", self.ingest.max_body_bytes as u64),
            ("ingest.header_read_timeout_ms", self.ingest.header_read_timeout_ms),
            ("ingest.body_read_timeout_ms", self.ingest.body_read_timeout_ms),
            ("ingest.publish_ack_timeout_ms", self.ingest.publish_ack_timeout_ms),
            ("ingest.retry_after_s", self.ingest.retry_after_s),
            ("nats.connect_timeout_ms", self.nats.connect_timeout_ms),
            ("normalizer.batch_size", self.normalizer.batch_size as u64),
            ("normalizer.max_in_flight", self.normalizer.max_in_flight as u64),
            ("normalizer.ack_wait_s", self.normalizer.ack_wait_s),
            ("normalizer.retry_delay_ms", self.normalizer.retry_delay_ms),
            ("normalizer.publish_ack_timeout_ms", self.normalizer.publish_ack_timeout_ms),
            ("ingest.webchat_tolerance_s", self.ingest.webchat_tolerance_s.max(0) as u64),
            ("ingest.mercadopago_tolerance_s", self.ingest.mercadopago_tolerance_s.max(0) as u64),
        ];
        for (key, value) in positive {
            if value == 0 {
                return Err(ConfigError::new(key, "must be greater than 0"));
            }
        }
        // nats-server's defaults: at most 1000 messages in an atomic batch, 50 batches in flight
        // per stream.
        if !(1..=1000).contains(&self.nats.group_commit_max_batch) {
            return Err(ConfigError::new("nats.group_commit_max_batch", "must be 1 to 1000 (nats-server's atomic batch limit)"));
        }
        if !(1..=50).contains(&self.nats.group_commit_max_in_flight) {
            return Err(ConfigError::new(
                "nats.group_commit_max_in_flight",
                "must be 1 to 50 (nats-server's batches in flight per stream)",
            ));
        }
        if self.ingest.max_body_bytes > 64 * 1024 * 1024 {
            return Err(ConfigError::new("ingest.max_body_bytes", "must be at most 67108864 (64 MiB)"));
        }
        for (name, limits) in
            [("raw", &self.streams.raw), ("events", &self.streams.events), ("dlq", &self.streams.dlq), ("attempts", &self.streams.attempts)]
        {
            if !(1..=5).contains(&limits.replicas) {
                return Err(ConfigError::new(format!("streams.{name}.replicas"), "must be 1 to 5"));
            }
            if limits.max_bytes == 0 || limits.max_bytes < -1 {
                return Err(ConfigError::new(format!("streams.{name}.max_bytes"), "must be -1 (no limit) or positive"));
            }
            if limits.duplicate_window_s == 0 {
                return Err(ConfigError::new(format!("streams.{name}.duplicate_window_s"), "must be greater than 0"));
            }
            if limits.max_age_s != 0 && limits.duplicate_window_s > limits.max_age_s {
                return Err(ConfigError::new(format!("streams.{name}.duplicate_window_s"), "must not exceed max_age_s"));
            }
        }
        if !(1..=5).contains(&self.streams.channels.replicas) {
            return Err(ConfigError::new("streams.channels.replicas", "must be 1 to 5"));
        }
        if let Some(url) = &self.forwarder.target_url {
            validate_http_url(url).map_err(|m| ConfigError::new("forwarder.target_url", m))?;
        }
        if self.forwarder.min_in_flight > self.forwarder.max_in_flight {
            return Err(ConfigError::new("forwarder.min_in_flight", "must not exceed forwarder.max_in_flight"));
        }
        if self.forwarder.retry_schedule_s.is_empty() || self.forwarder.retry_schedule_s.contains(&0) {
            return Err(ConfigError::new("forwarder.retry_schedule_s", "must list at least one delay, each greater than 0"));
        }
        if !(0.0..=1.0).contains(&self.forwarder.retry_jitter) {
            return Err(ConfigError::new("forwarder.retry_jitter", "must be between 0 and 1"));
        }
        for (key, secret) in
            [("forwarder.signing_secret", &self.forwarder.signing_secret), ("sink.signing_secret", &self.sink.signing_secret)]
        {
            if let Some(secret) = secret {
                if !secret.expose().starts_with("whsec_") {
                    return Err(ConfigError::new(key, "must be a Standard Webhooks secret: whsec_ followed by base64"));
                }
                crate::standard_webhooks::key_bytes(secret).map_err(|e| ConfigError::new(key, e.to_string()))?;
            }
        }
        if let Some(url) = &self.database.url {
            let ok = url::Url::parse(url.expose()).is_ok_and(|u| matches!(u.scheme(), "postgres" | "postgresql"));
            if !ok {
                return Err(ConfigError::new("database.url", "not a postgres:// URL"));
            }
        }
        for (key, url) in [
            ("setup_api.telegram_api_url", &self.setup_api.telegram_api_url),
            ("setup_api.graph_api_url", &self.setup_api.graph_api_url),
            ("setup_api.twilio_api_url", &self.setup_api.twilio_api_url),
        ] {
            validate_http_url(url).map_err(|m| ConfigError::new(key, m))?;
        }
        if self.setup_api.auth_failures_per_minute == 0 {
            return Err(ConfigError::new("setup_api.auth_failures_per_minute", "at least 1"));
        }
        if self.setup_api.tokens.iter().any(|t| t.expose().len() < 16) {
            return Err(ConfigError::new("setup_api.tokens", "each token must be at least 16 characters"));
        }
        if let Some(key) = &self.secrets.key {
            SecretsKey::from_base64(key).map_err(|e| ConfigError::new("secrets.key", e.to_string()))?;
        }
        for (i, key) in self.secrets.previous_keys.iter().enumerate() {
            SecretsKey::from_base64(key).map_err(|e| ConfigError::new(format!("secrets.previous_keys.{i}"), e.to_string()))?;
        }
        self.validate_channels()
    }

    fn validate_channels(&self) -> Result<(), ConfigError> {
        let mut ids = HashSet::new();
        let mut defaults = HashSet::new();
        for (i, ch) in self.channels.iter().enumerate() {
            let key = |field: &str| format!("channels[{i}].{field}");
            if !names::is_valid_id(&ch.id) {
                return Err(ConfigError::new(key("id"), "1 to 64 of A-Z a-z 0-9 _ -"));
            }
            if !ids.insert(ch.id.as_str()) {
                return Err(ConfigError::new(key("id"), format!("{:?} is declared twice", ch.id)));
            }
            if !names::is_valid_id(&ch.tenant_id) {
                return Err(ConfigError::new(key("tenant_id"), "1 to 64 of A-Z a-z 0-9 _ -"));
            }
            let platform = ch.platform_or_default();
            if !ch.source.platforms().contains(&platform) {
                return Err(ConfigError::new(
                    key("platform"),
                    format!("{platform:?} is not a platform of source {}: expected one of {:?}", ch.source, ch.source.platforms()),
                ));
            }
            if ch.secret.is_empty() {
                return Err(ConfigError::new(key("secret"), "must not be empty"));
            }
            if ch.source == Source::Webchat {
                crate::standard_webhooks::key_bytes(&ch.secret).map_err(|e| ConfigError::new(key("secret"), e.to_string()))?;
            }
            if ch.default && !defaults.insert(platform) {
                return Err(ConfigError::new(key("default"), format!("another channel is already the default for platform {platform}")));
            }
            crate::channel::ChannelSettings::from_map(ch.source, &ch.settings).map_err(|m| ConfigError::new(key("settings"), m))?;
        }
        if !self.channels.is_empty() && self.secrets.key.is_none() {
            return Err(ConfigError::new("secrets.key", "channels are declared, so a key to encrypt their secrets is required"));
        }
        self.validate_destinations()
    }

    fn validate_destinations(&self) -> Result<(), ConfigError> {
        let mut ids = HashSet::new();
        for (i, d) in self.destinations.iter().enumerate() {
            d.validate().map_err(|e| ConfigError::new(format!("destinations[{i}].{}", e.field), e.message.clone()))?;
            if d.id == crate::destination::DEFAULT_DESTINATION_ID {
                return Err(ConfigError::new(
                    format!("destinations[{i}].id"),
                    "\"default\" is the destination forwarder.target_url declares; give this one another id",
                ));
            }
            if !ids.insert(d.id.as_str()) {
                return Err(ConfigError::new(format!("destinations[{i}].id"), format!("{:?} is declared twice", d.id)));
            }
        }
        if !self.destinations.is_empty() && self.secrets.key.is_none() {
            return Err(ConfigError::new("secrets.key", "destinations are declared, so a key to encrypt their secrets is required"));
        }
        if self.forwarder.breaker.failures == 0 {
            return Err(ConfigError::new("forwarder.breaker.failures", "must be greater than 0"));
        }
        if self.forwarder.breaker.probe_s == 0 || self.forwarder.breaker.max_probe_s < self.forwarder.breaker.probe_s {
            return Err(ConfigError::new("forwarder.breaker.probe_s", "must be greater than 0 and at most forwarder.breaker.max_probe_s"));
        }
        Ok(())
    }

    /// The NATS URL, required by every role but `up`.
    pub fn require_nats_url(&self) -> Result<&str, ConfigError> {
        self.nats.url.as_deref().ok_or_else(|| ConfigError::new("nats.url", "required: the NATS server(s) to use"))
    }

    /// The keyring of `secrets.key` and `secrets.previous_keys`.
    pub fn keyring(&self) -> Result<Keyring, ConfigError> {
        let key = self
            .secrets
            .key
            .as_ref()
            .ok_or_else(|| ConfigError::new("secrets.key", "required: the base64 32-byte key that encrypts channel secrets"))?;
        let current = SecretsKey::from_base64(key).map_err(|e| ConfigError::new("secrets.key", e.to_string()))?;
        let mut previous = Vec::new();
        for (i, k) in self.secrets.previous_keys.iter().enumerate() {
            previous.push(SecretsKey::from_base64(k).map_err(|e| ConfigError::new(format!("secrets.previous_keys.{i}"), e.to_string()))?);
        }
        Ok(Keyring::new(current, previous))
    }
}

/// Variables with the `HOOKLINE_` prefix that are not configuration: the paths the scripts export
/// for the harness and `up`, where `hookline tokens` finds the setup API and its admin token
/// (`HOOKLINE_SETUP_API_URL`, `HOOKLINE_SETUP_API_TOKEN`), the browsers of the console's tests
/// (`HOOKLINE_CHROMIUM`, `HOOKLINE_CHROMEDRIVER`, exported by `scripts/install-deps` for `up` too),
/// and the service links Kubernetes injects for services whose name
/// starts with `hookline` (`HOOKLINE_INGEST_SERVICE_HOST`, `HOOKLINE_INGEST_PORT_8080_TCP`, ...).
/// Every other `HOOKLINE_*` variable must name a key, so a typo stops the process.
fn is_configuration_variable(rest: &str) -> bool {
    const TOOLS: [&str; 6] = ["NATS_SERVER", "PG_BIN", "SETUP_API_URL", "SETUP_API_TOKEN", "CHROMIUM", "CHROMEDRIVER"];
    if TOOLS.contains(&rest) {
        return false;
    }
    let kubernetes_link = !rest.contains("__")
        && (rest.ends_with("_SERVICE_HOST")
            || rest.contains("_SERVICE_PORT")
            || rest.ends_with("_PORT")
            || rest.contains("_PORT_") && (rest.contains("_TCP") || rest.contains("_UDP")));
    !kubernetes_link
}

/// `HOOKLINE_*` variables as a figment provider, read from the list given rather than the
/// process environment so that tests can pass their own.
struct PrefixedEnv(Vec<(String, String)>);

impl figment::Provider for PrefixedEnv {
    fn metadata(&self) -> figment::Metadata {
        figment::Metadata::named("HOOKLINE_ environment variable(s)")
    }
    fn data(&self) -> Result<figment::value::Map<figment::Profile, figment::value::Dict>, figment::Error> {
        let mut figment = Figment::new();
        for (k, v) in &self.0 {
            let Some(rest) = k.strip_prefix(ENV_PREFIX) else {
                continue;
            };
            if !is_configuration_variable(rest) {
                continue;
            }
            let key = rest.to_ascii_lowercase().replace("__", ".");
            if key.ends_with("_file") || key.is_empty() {
                continue;
            }
            let value: figment::value::Value = v.parse().unwrap_or_else(|_| figment::value::Value::from(v.clone()));
            figment = figment.merge(Serialized::default(&key, value));
        }
        figment.data()
    }
}

/// The seed services' variable names, as dotted keys.
fn seed_variables(vars: &[(String, String)]) -> Result<Vec<(String, String)>, ConfigError> {
    let mut out = Vec::new();
    let get = |name: &str| vars.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str());
    if let Some(url) = get("MESSAGING_SERVICE_URL") {
        out.push(("forwarder.target_url".to_string(), url.to_string()));
    }
    if let Some(url) = get("NATS_URL") {
        out.push(("nats.url".to_string(), url.to_string()));
    }
    if let Some(url) = get("DATABASE_URL") {
        out.push(("database.url".to_string(), url.to_string()));
    } else if let Some(host) = get("DB_HOST") {
        let user = get("DB_USER").unwrap_or("postgres");
        let password = get("DB_PASSWORD").map(|p| format!(":{}", utf8_percent(p))).unwrap_or_default();
        let port = get("DB_PORT").unwrap_or("5432");
        let name = get("DB_NAME").unwrap_or("hookline");
        out.push(("database.url".to_string(), format!("postgres://{}{password}@{host}:{port}/{name}", utf8_percent(user))));
    }
    for (k, v) in vars {
        if k == "PORT" {
            let port: u16 = v.parse().map_err(|_| ConfigError::new("ingest.listen", format!("PORT={v:?} is not a port number")))?;
            out.push(("ingest.listen".to_string(), format!("0.0.0.0:{port}")));
        }
    }
    Ok(out)
}

/// Percent-encodes what a URL's user-info may not hold.
fn utf8_percent(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// `HOOKLINE_SECRETS__KEY_FILE=/run/secrets/key` → `secrets.key` = the file's contents.
fn file_variables(vars: &[(String, String)]) -> Result<Vec<(String, String)>, ConfigError> {
    let mut out = Vec::new();
    for (k, path) in vars {
        let Some(rest) = k.strip_prefix(ENV_PREFIX) else {
            continue;
        };
        let Some(stem) = rest.strip_suffix("_FILE") else {
            continue;
        };
        let key = stem.to_ascii_lowercase().replace("__", ".");
        let value = std::fs::read_to_string(Path::new(path))
            .map_err(|e| ConfigError::new(key.clone(), format!("cannot read the file named by {k}: {e}")))?;
        out.push((key, value.trim_end_matches(['\r', '\n']).to_string()));
    }
    Ok(out)
}

fn from_figment(err: figment::Error) -> ConfigError {
    use figment::error::Kind;
    let mut path: Vec<String> = err.path.clone();
    let message = match &err.kind {
        Kind::UnknownField(field, expected) => {
            if path.last() != Some(field) {
                path.push(field.clone());
            }
            format!("unknown key; expected one of: {}", expected.join(", "))
        }
        Kind::MissingField(field) => {
            if path.last().map(String::as_str) != Some(field.as_ref()) {
                path.push(field.to_string());
            }
            "missing".to_string()
        }
        other => other.to_string(),
    };
    let from = err
        .metadata
        .as_ref()
        .map(|m| match &m.source {
            Some(src) => format!(" (from {src})"),
            None => format!(" (from {})", m.name),
        })
        .unwrap_or_default();
    ConfigError::new(path.join("."), format!("{message}{from}"))
}

fn validate_http_url(s: &str) -> Result<(), String> {
    match url::Url::parse(s) {
        Ok(u) if (u.scheme() == "http" || u.scheme() == "https") && u.host().is_some() => Ok(()),
        _ => Err("not an http(s) URL".to_string()),
    }
}

fn validate_nats_urls(s: &str) -> Result<(), String> {
    for part in s.split(',').map(str::trim) {
        if part.is_empty() {
            return Err("an empty server in the list".to_string());
        }
        let with_scheme = if part.contains("://") { part.to_string() } else { format!("nats://{part}") };
        match url::Url::parse(&with_scheme) {
            Ok(u) if ["nats", "tls", "ws", "wss"].contains(&u.scheme()) && u.host().is_some() => {}
            _ => return Err(format!("{:?} is not a NATS server address", crate::jetstream::redact_url(part))),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(toml: Option<&str>, env: &[(&str, &str)]) -> Result<Config, ConfigError> {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = toml.map(|t| {
            let path = dir.path().join("hookline.toml");
            std::fs::write(&path, t).expect("write config");
            path
        });
        let vars: Vec<(String, String)> = env.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        Config::load_with_env(&Sources { file }, &vars)
    }

    const KEY: &str = "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=";

    #[test]
    fn defaults_are_the_designs() {
        let c = load(None, &[]).expect("defaults load");
        assert_eq!(c.ingest.listen.to_string(), "0.0.0.0:8080");
        assert_eq!(c.ingest.public_url, "http://localhost:8080");
        assert_eq!(c.ingest.max_body_bytes, 1_048_576);
        assert_eq!(c.data_dir, PathBuf::from(".hookline"));
        assert!(c.nats.url.is_none());
        assert!(c.secrets.key.is_none());
    }

    #[test]
    fn env_overrides_file_overrides_defaults() {
        let c = load(
            Some("[ingest]\nmax_body_bytes = 2048\nlisten = \"127.0.0.1:1\"\n"),
            &[("HOOKLINE_INGEST__LISTEN", "127.0.0.1:9999"), ("HOOKLINE_NATS__URL", "nats://127.0.0.1:4222")],
        )
        .expect("loads");
        assert_eq!(c.ingest.max_body_bytes, 2048);
        assert_eq!(c.ingest.listen.to_string(), "127.0.0.1:9999");
        assert_eq!(c.nats.url.as_deref(), Some("nats://127.0.0.1:4222"));
    }

    #[test]
    fn seed_port_is_accepted_and_hookline_variables_win() {
        assert_eq!(load(None, &[("PORT", "3000")]).expect("loads").ingest.listen.to_string(), "0.0.0.0:3000");
        let c = load(None, &[("PORT", "3000"), ("HOOKLINE_INGEST__LISTEN", "127.0.0.1:1")]).expect("loads");
        assert_eq!(c.ingest.listen.to_string(), "127.0.0.1:1");
        let e = load(None, &[("PORT", "eighty")]).expect_err("refused");
        assert_eq!(e.key, "ingest.listen");
    }

    #[test]
    fn seed_service_names_are_mapped() {
        let c = load(
            None,
            &[
                ("MESSAGING_SERVICE_URL", "https://msg.example.com/in"),
                ("DB_HOST", "db"),
                ("DB_USER", "app"),
                ("DB_PASSWORD", "p@ss:w/rd"),
                ("DB_NAME", "hooks"),
            ],
        )
        .expect("loads");
        assert_eq!(c.forwarder.target_url.as_deref(), Some("https://msg.example.com/in"));
        assert_eq!(c.database.url.as_ref().map(Secret::expose), Some("postgres://app:p%40ss%3Aw%2Frd@db:5432/hooks"));
    }

    #[test]
    fn tokens_are_comma_separated_in_the_environment() {
        let c = load(None, &[("HOOKLINE_SETUP_API__TOKENS", "aaaaaaaaaaaaaaaa, bbbbbbbbbbbbbbbb")]).expect("loads");
        assert_eq!(c.setup_api.tokens.iter().map(Secret::expose).collect::<Vec<_>>(), ["aaaaaaaaaaaaaaaa", "bbbbbbbbbbbbbbbb"]);
        assert_eq!(load(None, &[("HOOKLINE_SETUP_API__TOKENS", "short")]).expect_err("short").key, "setup_api.tokens");
    }

    #[test]
    fn token_limits_and_the_egress_switch_have_defaults_and_are_checked() {
        let c = load(None, &[]).expect("loads");
        assert_eq!((c.setup_api.auth_failures_per_minute, c.setup_api.allow_private_destinations), (20, false));
        let c = load(
            None,
            &[("HOOKLINE_SETUP_API__ALLOW_PRIVATE_DESTINATIONS", "true"), ("HOOKLINE_SETUP_API__AUTH_FAILURES_PER_MINUTE", "5")],
        )
        .expect("loads");
        assert_eq!((c.setup_api.auth_failures_per_minute, c.setup_api.allow_private_destinations), (5, true));
        let e = load(None, &[("HOOKLINE_SETUP_API__AUTH_FAILURES_PER_MINUTE", "0")]).expect_err("zero");
        assert_eq!(e.key, "setup_api.auth_failures_per_minute");
    }

    #[test]
    fn tool_and_kubernetes_variables_are_not_configuration_but_typos_are_refused() {
        let c = load(
            None,
            &[
                ("HOOKLINE_NATS_SERVER", "/usr/bin/nats-server"),
                ("HOOKLINE_PG_BIN", "/usr/lib/postgresql/15/bin"),
                ("HOOKLINE_SETUP_API_URL", "http://127.0.0.1:8081"),
                ("HOOKLINE_CHROMEDRIVER", "/usr/bin/chromedriver"),
                ("HOOKLINE_SETUP_API_TOKEN", "hlk_0123"),
                ("HOOKLINE_INGEST_SERVICE_HOST", "10.0.0.1"),
                ("HOOKLINE_INGEST_SERVICE_PORT", "8080"),
                ("HOOKLINE_INGEST_PORT", "tcp://10.0.0.1:8080"),
                ("HOOKLINE_INGEST_PORT_8080_TCP_ADDR", "10.0.0.1"),
            ],
        );
        assert!(c.is_ok(), "{c:?}");
        assert_eq!(load(None, &[("HOOKLINE_INGEST__LISEN", "x")]).expect_err("typo").key, "ingest.lisen");
        assert_eq!(load(None, &[("HOOKLINE_DATADIR", "x")]).expect_err("typo").key, "datadir");
    }

    #[test]
    fn file_variables_read_secrets_from_files() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("key");
        std::fs::write(&path, format!("{KEY}\n")).expect("write");
        let c = load(None, &[("HOOKLINE_SECRETS__KEY_FILE", path.to_str().expect("utf-8"))]).expect("loads");
        assert_eq!(c.secrets.key.as_ref().map(Secret::expose), Some(KEY));
        let e = load(None, &[("HOOKLINE_SECRETS__KEY_FILE", "/nonexistent/key")]).expect_err("refused");
        assert_eq!(e.key, "secrets.key");
    }

    #[test]
    fn errors_name_the_key_and_its_variable() {
        let cases: Vec<(Result<Config, ConfigError>, &str, &str)> = vec![
            (load(None, &[("HOOKLINE_INGEST__MAX_BODY_BYTES", "lots")]), "ingest.max_body_bytes", "HOOKLINE_INGEST__MAX_BODY_BYTES"),
            (load(Some("[ingest]\nlisen = \"x\"\n"), &[]), "ingest.lisen", "unknown key"),
            (load(None, &[("HOOKLINE_INGEST__PUBLIC_URL", "ftp://x")]), "ingest.public_url", "not an http(s) URL"),
            (load(None, &[("HOOKLINE_NATS__URL", "nats://")]), "nats.url", "not a NATS server address"),
            (load(None, &[("HOOKLINE_SECRETS__KEY", "c2hvcnQ=")]), "secrets.key", "32 bytes"),
            (load(None, &[("HOOKLINE_LOG__FORMAT", "xml")]), "log.format", "HOOKLINE_LOG__FORMAT"),
            (load(None, &[("HOOKLINE_INGEST__PUBLISH_ACK_TIMEOUT_MS", "0")]), "ingest.publish_ack_timeout_ms", "greater than 0"),
            (load(None, &[("HOOKLINE_STREAMS__RAW__REPLICAS", "7")]), "streams.raw.replicas", "1 to 5"),
        ];
        for (result, key, fragment) in cases {
            let err = result.expect_err(key);
            assert_eq!(err.key, key, "{err}");
            assert!(err.to_string().contains(fragment), "{key}: {err}");
        }
    }

    #[test]
    fn a_bad_key_value_is_never_echoed() {
        let err = load(None, &[("HOOKLINE_SECRETS__KEY", "very-secret-but-wrong")]).expect_err("refused");
        assert!(!err.to_string().contains("very-secret-but-wrong"), "{err}");
    }

    #[test]
    fn channels_are_validated_with_their_index() {
        let base = format!("[secrets]\nkey = \"{KEY}\"\n");
        let ok = format!("{base}[[channels]]\nid = \"wa\"\ntenant_id = \"acme\"\nsource = \"whatsapp\"\nsecret = \"s\"\n");
        assert_eq!(load(Some(&ok), &[]).expect("loads").channels.len(), 1);
        let dup = format!("{ok}[[channels]]\nid = \"wa\"\ntenant_id = \"acme\"\nsource = \"telegram\"\nsecret = \"s\"\n");
        assert_eq!(load(Some(&dup), &[]).expect_err("dup").key, "channels[1].id");
        let bad_platform =
            format!("{base}[[channels]]\nid = \"t\"\ntenant_id = \"acme\"\nsource = \"telegram\"\nplatform = \"sms\"\nsecret = \"s\"\n");
        assert_eq!(load(Some(&bad_platform), &[]).expect_err("platform").key, "channels[0].platform");
        let no_key = "[[channels]]\nid = \"wa\"\ntenant_id = \"acme\"\nsource = \"whatsapp\"\nsecret = \"s\"\n";
        assert_eq!(load(Some(no_key), &[]).expect_err("key").key, "secrets.key");
        let bad_source = format!("{base}[[channels]]\nid = \"x\"\ntenant_id = \"acme\"\nsource = \"fax\"\nsecret = \"s\"\n");
        assert!(load(Some(&bad_source), &[]).expect_err("source").key.starts_with("channels"));
    }
}

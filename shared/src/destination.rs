//! Destinations: where events are delivered. What a writer gives (`DestinationSpec` from the setup
//! API, `DestinationDecl` from `[[destinations]]` in `hookline.toml`), what the KV bucket
//! `hookline_destinations` holds (`DestinationRecord`, secrets sealed), and what the forwarder
//! keeps in memory once the secrets are opened (`Destination`), with its settings after the
//! `forwarder.*` defaults (`EffectiveSettings`).
//!
//! Sealed values carry the id of the key that sealed them (`crypto::Sealed`) and are bound, as
//! associated data, to the destination id and to their place in the record:
//! `destination:<id>:signing_secret` (the current and the previous signing secret) and
//! `destination:<id>:header:<lowercased name>`. So a ciphertext copied onto another destination,
//! onto a channel of the same id, or from a header into the signing secret, does not open.

use serde::{Deserialize, Deserializer, Serialize};
use serde_json::Value;
use std::collections::{BTreeMap, HashSet};
use std::fmt;
use time::OffsetDateTime;

use crate::config::ForwarderConfig;
use crate::crypto::{CryptoError, Keyring, Sealed};
use crate::filter::{Filter, FilterError};
use crate::names::is_valid_id;
use crate::{standard_webhooks, Secret};

/// The destination that `forwarder.target_url` (or `MESSAGING_SERVICE_URL`) declares: no tenant,
/// the empty filter, every event.
pub const DEFAULT_DESTINATION_ID: &str = "default";
/// Generated ids are this prefix and 26 lowercase base32 characters.
pub const GENERATED_ID_PREFIX: &str = "dst_";
/// The durable consumer of a destination is this prefix and its id (see [`consumer_name`]).
pub const CONSUMER_PREFIX: &str = "destination-";
/// How long a rotated-out signing secret keeps signing, unless the caller says otherwise.
pub const DEFAULT_ROTATION_OVERLAP: time::Duration = time::Duration::hours(24);
/// The shortest HMAC key a destination's `whsec_` secret may hold, in bytes.
pub const MIN_SIGNING_KEY_BYTES: usize = 24;
/// Most extra headers per destination.
pub const MAX_HEADERS: usize = 32;
/// Longest value of an extra header, in bytes.
pub const MAX_HEADER_VALUE_BYTES: usize = 4096;
/// Longest header name, in bytes.
pub const MAX_HEADER_NAME_BYTES: usize = 256;
/// Longest `name`, in characters.
pub const MAX_NAME_CHARS: usize = 256;
/// Longest `url`, in bytes.
pub const MAX_URL_BYTES: usize = 2048;

/// Headers a destination may not set: hop-by-hop ones, and those the forwarder sets itself.
/// Names beginning with `hookline-` are refused too (reserved for hookline's own).
pub const RESERVED_HEADERS: &[&str] = &[
    "content-type",
    "content-length",
    "host",
    "webhook-id",
    "webhook-timestamp",
    "webhook-signature",
    "traceparent",
    "tracestate",
    "connection",
    "keep-alive",
    "proxy-connection",
    "transfer-encoding",
    "te",
    "trailer",
    "upgrade",
];

/// Bounds of the per-destination settings, inclusive.
pub mod limits {
    pub const MAX_IN_FLIGHT: (u32, u32) = (1, 10_000);
    /// Exclusive of 0: a positive rate.
    pub const RATE_LIMIT_PER_S_MAX: f64 = 100_000.0;
    pub const TIMEOUT_MS: (u64, u64) = (100, 120_000);
    pub const RETRY_SCHEDULE_LEN: (usize, usize) = (1, 50);
    pub const RETRY_DELAY_S: (u64, u64) = (1, 86_400);
    pub const MAX_AGE_S: (u64, u64) = (60, 30 * 86_400);
}

/// A part of a destination refused: `field` names it as the writer spelled it (`url`,
/// `headers.X-Api-Key`, `retry_schedule_s[3]`, `filter.match.sender.id.$in`); empty when the
/// whole input is at fault. The message never holds a secret.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldError {
    pub field: String,
    pub message: String,
}

impl FieldError {
    pub fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        FieldError { field: field.into(), message: message.into() }
    }

    /// The same error under a prefix: `within("destinations[2]")` turns `url` into
    /// `destinations[2].url` (for `hookline.toml`).
    pub fn within(self, prefix: &str) -> Self {
        let field = if self.field.is_empty() { prefix.to_string() } else { format!("{prefix}.{}", self.field) };
        FieldError { field, message: self.message }
    }
}

impl fmt::Display for FieldError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.field.is_empty() {
            f.write_str(&self.message)
        } else {
            write!(f, "{}: {}", self.field, self.message)
        }
    }
}

impl std::error::Error for FieldError {}

impl From<FilterError> for FieldError {
    fn from(e: FilterError) -> Self {
        FieldError { field: e.field, message: e.message }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum DestinationError {
    #[error("invalid destination: {0}")]
    Invalid(#[from] FieldError),
    #[error("no random bytes for a destination id: {0}")]
    Random(getrandom::Error),
    #[error("destination {id}: {part} does not open: {source}")]
    Crypto { id: String, part: String, source: CryptoError },
    #[error("destination {id}: {message}")]
    Malformed { id: String, message: String },
}

/// The order a destination gets its events in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Ordering {
    /// As fast as they come, in any order.
    #[default]
    None,
    /// The events of one conversation in order (DESIGN.md, "Ordered delivery").
    Conversation,
}

impl Ordering {
    pub fn as_str(self) -> &'static str {
        match self {
            Ordering::None => "none",
            Ordering::Conversation => "conversation",
        }
    }
}

/// A destination's read-only `state`, as the API and the console show it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DestinationState {
    Active,
    /// Set by an operator: nothing is sent, events wait in JetStream.
    Paused,
    /// The circuit breaker is open: only probes are sent.
    Tripped,
}

/// A fresh id: `dst_` and 26 characters of the lowercase base32 alphabet (`a-z 2-7`), each from
/// 5 bits of one random byte (130 random bits).
pub fn generate_id() -> Result<String, getrandom::Error> {
    const ALPHABET: &[u8; 32] = b"abcdefghijklmnopqrstuvwxyz234567";
    let mut bytes = [0u8; 26];
    getrandom::fill(&mut bytes)?;
    let mut id = String::with_capacity(GENERATED_ID_PREFIX.len() + bytes.len());
    id.push_str(GENERATED_ID_PREFIX);
    id.extend(bytes.iter().map(|b| char::from(ALPHABET[usize::from(b & 31)])));
    Ok(id)
}

/// A fresh signing secret: `whsec_` and the base64 of 32 random bytes.
pub fn generate_signing_secret() -> Result<Secret, getrandom::Error> {
    use base64::Engine;
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes)?;
    Ok(Secret::new(format!("whsec_{}", base64::engine::general_purpose::STANDARD.encode(bytes))))
}

/// The durable JetStream consumer (on `HOOKLINE_EVENTS`) of destination `id`, shared by every
/// forwarder process: `destination-<id>`. The destination `default` keeps the first stage's
/// single consumer `forwarder` instead (`hookline_forwarder::worker::consumer_name`), so that an
/// upgrade from one target keeps its pending events and scheduled retries as they are. Ids are
/// subject-safe tokens, so the name is a valid consumer name.
pub fn consumer_name(id: &str) -> String {
    format!("{CONSUMER_PREFIX}{id}")
}

fn signing_context(id: &str) -> String {
    format!("destination:{id}:signing_secret")
}

fn header_context(id: &str, name: &str) -> String {
    format!("destination:{id}:header:{}", name.to_ascii_lowercase())
}

/// A destination as a writer gives it (setup API body, or built from a [`DestinationDecl`]).
/// Secrets are write-only: there is no `Serialize`.
///
/// Build one from JSON with [`DestinationSpec::from_json`] (errors name the field), then check
/// it with [`DestinationSpec::validate`] (ranges, formats). `Deserialize` goes through
/// `from_json` too.
#[derive(Debug, Clone, PartialEq)]
pub struct DestinationSpec {
    /// 1–64 of `A-Z a-z 0-9 _ -`; `None` on create: one is generated ([`generate_id`]).
    pub id: Option<String>,
    /// The owning tenant; `None`: every tenant (only an admin may create such a destination).
    pub tenant_id: Option<String>,
    pub name: Option<String>,
    /// `http(s)://host…`, no credentials in it.
    pub url: String,
    /// `whsec_` and base64 of at least [`MIN_SIGNING_KEY_BYTES`] bytes.
    pub signing_secret: Secret,
    /// Extra request headers (an API key of the target); names as given, unique ignoring case.
    pub headers: BTreeMap<String, Secret>,
    pub filter: Filter,
    pub ordering: Ordering,
    /// Deliveries at once for this destination, per forwarder process (`forwarder.max_in_flight`).
    pub max_in_flight: Option<u32>,
    /// Deliveries per second for the destination as a whole, across forwarder processes.
    pub rate_limit_per_s: Option<f64>,
    /// The timeout of one delivery (`forwarder.request_timeout_ms`).
    pub timeout_ms: Option<u64>,
    /// Delay before each retry (`forwarder.retry_schedule_s`); need not be increasing.
    pub retry_schedule_s: Option<Vec<u64>>,
    /// An event older than this is dead-lettered instead of retried (`forwarder.max_age_s`).
    pub max_age_s: Option<u64>,
    /// Nothing is sent; events wait in JetStream, none is dead-lettered for it.
    pub paused: bool,
}

const SPEC_KEYS: &[&str] = &[
    "id",
    "tenant_id",
    "name",
    "url",
    "signing_secret",
    "headers",
    "filter",
    "ordering",
    "max_in_flight",
    "rate_limit_per_s",
    "timeout_ms",
    "retry_schedule_s",
    "max_age_s",
    "paused",
];
const READ_ONLY_KEYS: &[&str] = &["state", "created_at", "updated_at", "previous_valid_until", "previous_signing_secret"];

impl DestinationSpec {
    /// A spec with the given url and secret, everything else absent or default.
    pub fn new(url: impl Into<String>, signing_secret: Secret) -> Self {
        DestinationSpec {
            id: None,
            tenant_id: None,
            name: None,
            url: url.into(),
            signing_secret,
            headers: BTreeMap::new(),
            filter: Filter::default(),
            ordering: Ordering::None,
            max_in_flight: None,
            rate_limit_per_s: None,
            timeout_ms: None,
            retry_schedule_s: None,
            max_age_s: None,
            paused: false,
        }
    }

    /// Reads a spec from JSON: unknown keys, wrong types and a malformed filter are refused,
    /// naming the field. `null` is the same as an absent key. Ranges and formats are
    /// [`DestinationSpec::validate`]'s.
    pub fn from_json(value: &Value) -> Result<Self, FieldError> {
        let Value::Object(obj) = value else {
            return Err(FieldError::new("", "a destination must be a JSON object"));
        };
        for key in obj.keys() {
            if SPEC_KEYS.contains(&key.as_str()) {
                continue;
            }
            if READ_ONLY_KEYS.contains(&key.as_str()) {
                return Err(FieldError::new(key.as_str(), "read-only: set by hookline"));
            }
            if key.len() > 64 {
                return Err(FieldError::new("", "an unknown field (its name is longer than 64 bytes)"));
            }
            return Err(FieldError::new(key.as_str(), format!("unknown field: expected one of {}", SPEC_KEYS.join(", "))));
        }
        let get = |key: &str| obj.get(key).filter(|v| !v.is_null());
        let string = |key: &str| -> Result<Option<String>, FieldError> {
            match get(key) {
                None => Ok(None),
                Some(Value::String(s)) => Ok(Some(s.clone())),
                Some(_) => Err(FieldError::new(key, "must be a string")),
            }
        };
        let whole = |key: &str, range: (u64, u64)| -> Result<Option<u64>, FieldError> {
            match get(key) {
                None => Ok(None),
                Some(v) => v.as_u64().map(Some).ok_or_else(|| FieldError::new(key, whole_message(range))),
            }
        };
        let url = string("url")?.ok_or_else(|| FieldError::new("url", "required: the http(s) URL events are POSTed to"))?;
        let signing_secret = string("signing_secret")?
            .map(Secret::new)
            .ok_or_else(|| FieldError::new("signing_secret", "required: a Standard Webhooks secret, whsec_ followed by base64"))?;
        let mut headers = BTreeMap::new();
        match get("headers") {
            None => {}
            Some(Value::Object(map)) => {
                for (name, v) in map {
                    let Value::String(s) = v else {
                        return Err(FieldError::new(header_field(name), "must be a string"));
                    };
                    headers.insert(name.clone(), Secret::new(s.clone()));
                }
            }
            Some(_) => return Err(FieldError::new("headers", "must be an object of header names to values")),
        }
        let filter = match get("filter") {
            None => Filter::default(),
            Some(v) => Filter::parse(v)?,
        };
        let ordering = match get("ordering") {
            None => Ordering::None,
            Some(Value::String(s)) if s == "none" => Ordering::None,
            Some(Value::String(s)) if s == "conversation" => Ordering::Conversation,
            Some(_) => return Err(FieldError::new("ordering", "must be \"none\" or \"conversation\"")),
        };
        let max_in_flight = match whole("max_in_flight", widen(limits::MAX_IN_FLIGHT))? {
            None => None,
            Some(n) => Some(u32::try_from(n).map_err(|_| FieldError::new("max_in_flight", whole_message(widen(limits::MAX_IN_FLIGHT))))?),
        };
        let rate_limit_per_s = match get("rate_limit_per_s") {
            None => None,
            Some(v) => Some(v.as_f64().ok_or_else(|| FieldError::new("rate_limit_per_s", rate_message()))?),
        };
        let retry_schedule_s = match get("retry_schedule_s") {
            None => None,
            Some(Value::Array(items)) => {
                let mut out = Vec::with_capacity(items.len());
                for (i, item) in items.iter().enumerate() {
                    out.push(
                        item.as_u64()
                            .ok_or_else(|| FieldError::new(format!("retry_schedule_s[{i}]"), whole_message(limits::RETRY_DELAY_S)))?,
                    );
                }
                Some(out)
            }
            Some(_) => return Err(FieldError::new("retry_schedule_s", "must be a list of delays in seconds")),
        };
        let paused = match get("paused") {
            None => false,
            Some(Value::Bool(b)) => *b,
            Some(_) => return Err(FieldError::new("paused", "must be true or false")),
        };
        Ok(DestinationSpec {
            id: string("id")?,
            tenant_id: string("tenant_id")?,
            name: string("name")?,
            url,
            signing_secret,
            headers,
            filter,
            ordering,
            max_in_flight,
            rate_limit_per_s,
            timeout_ms: whole("timeout_ms", limits::TIMEOUT_MS)?,
            retry_schedule_s,
            max_age_s: whole("max_age_s", limits::MAX_AGE_S)?,
            paused,
        })
    }

    /// Checks what types cannot: ids, the URL, the secret, headers, ranges. The filter was
    /// checked when it was parsed. A `tenant_id` that the filter's `tenant_id` list leaves out is
    /// accepted, and such a destination receives nothing ([`Filter::subjects`]).
    pub fn validate(&self) -> Result<(), FieldError> {
        if let Some(id) = &self.id {
            if !is_valid_id(id) {
                return Err(FieldError::new("id", "1 to 64 of A-Z a-z 0-9 _ -"));
            }
        }
        if let Some(tenant) = &self.tenant_id {
            if !is_valid_id(tenant) {
                return Err(FieldError::new("tenant_id", "1 to 64 of A-Z a-z 0-9 _ -"));
            }
        }
        if let Some(name) = &self.name {
            if name.trim().is_empty() || name.chars().count() > MAX_NAME_CHARS || name.chars().any(char::is_control) {
                return Err(FieldError::new("name", format!("1 to {MAX_NAME_CHARS} characters, not blank, no control characters")));
            }
        }
        validate_url(&self.url).map_err(|m| FieldError::new("url", m))?;
        validate_signing_secret(&self.signing_secret).map_err(|m| FieldError::new("signing_secret", m))?;
        validate_headers(&self.headers)?;
        if let Some(n) = self.max_in_flight {
            let (lo, hi) = limits::MAX_IN_FLIGHT;
            if !(lo..=hi).contains(&n) {
                return Err(FieldError::new("max_in_flight", whole_message(widen(limits::MAX_IN_FLIGHT))));
            }
        }
        if let Some(r) = self.rate_limit_per_s {
            if !(r.is_finite() && r > 0.0 && r <= limits::RATE_LIMIT_PER_S_MAX) {
                return Err(FieldError::new("rate_limit_per_s", rate_message()));
            }
        }
        if let Some(t) = self.timeout_ms {
            check_range("timeout_ms", t, limits::TIMEOUT_MS)?;
        }
        if let Some(schedule) = &self.retry_schedule_s {
            let (lo, hi) = limits::RETRY_SCHEDULE_LEN;
            if !(lo..=hi).contains(&schedule.len()) {
                return Err(FieldError::new("retry_schedule_s", format!("must list {lo} to {hi} delays")));
            }
            for (i, delay) in schedule.iter().enumerate() {
                check_range(&format!("retry_schedule_s[{i}]"), *delay, limits::RETRY_DELAY_S)?;
            }
        }
        if let Some(age) = self.max_age_s {
            check_range("max_age_s", age, limits::MAX_AGE_S)?;
        }
        Ok(())
    }
}

impl<'de> Deserialize<'de> for DestinationSpec {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let value = Value::deserialize(d)?;
        DestinationSpec::from_json(&value).map_err(serde::de::Error::custom)
    }
}

fn widen((lo, hi): (u32, u32)) -> (u64, u64) {
    (u64::from(lo), u64::from(hi))
}

fn whole_message((lo, hi): (u64, u64)) -> String {
    format!("must be a whole number from {lo} to {hi}")
}

fn rate_message() -> String {
    format!("must be a number greater than 0 and at most {}", limits::RATE_LIMIT_PER_S_MAX)
}

fn check_range(field: &str, v: u64, (lo, hi): (u64, u64)) -> Result<(), FieldError> {
    if (lo..=hi).contains(&v) {
        Ok(())
    } else {
        Err(FieldError::new(field, whole_message((lo, hi))))
    }
}

/// `headers.<name>`, or `headers` when the name is too long to repeat.
fn header_field(name: &str) -> String {
    if name.len() > MAX_HEADER_NAME_BYTES {
        "headers".to_string()
    } else {
        format!("headers.{name}")
    }
}

fn validate_url(s: &str) -> Result<(), String> {
    if s.len() > MAX_URL_BYTES {
        return Err(format!("longer than {MAX_URL_BYTES} bytes"));
    }
    let url = url::Url::parse(s).map_err(|e| format!("not a URL: {e}"))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err("must be an http:// or https:// URL".to_string());
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err("must name a host".to_string());
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err("must not carry credentials (user:password@): send them in headers, which are sealed".to_string());
    }
    Ok(())
}

/// `whsec_` and base64 of at least [`MIN_SIGNING_KEY_BYTES`] bytes, parsed as the forwarder
/// will (`standard_webhooks::key_bytes`).
fn validate_signing_secret(secret: &Secret) -> Result<(), String> {
    if !secret.expose().starts_with("whsec_") {
        return Err("must be a Standard Webhooks secret: whsec_ followed by base64".to_string());
    }
    let key = standard_webhooks::key_bytes(secret).map_err(|e| e.to_string())?;
    if key.len() < MIN_SIGNING_KEY_BYTES {
        return Err(format!("the key must be at least {MIN_SIGNING_KEY_BYTES} bytes (whsec_ and the base64 of 32 random bytes is usual)"));
    }
    Ok(())
}

fn validate_headers(headers: &BTreeMap<String, Secret>) -> Result<(), FieldError> {
    if headers.len() > MAX_HEADERS {
        return Err(FieldError::new("headers", format!("at most {MAX_HEADERS} headers")));
    }
    let mut seen = HashSet::new();
    for (name, value) in headers {
        let field = header_field(name);
        if name.len() > MAX_HEADER_NAME_BYTES {
            return Err(FieldError::new(field, format!("a header name longer than {MAX_HEADER_NAME_BYTES} bytes")));
        }
        let parsed =
            hyper::header::HeaderName::from_bytes(name.as_bytes()).map_err(|_| FieldError::new(&field, "not an HTTP header name"))?;
        let lower = parsed.as_str();
        if RESERVED_HEADERS.contains(&lower) {
            return Err(FieldError::new(field, "set by the forwarder itself (or hop-by-hop): a destination may not set it"));
        }
        if lower.starts_with("hookline-") {
            return Err(FieldError::new(field, "names beginning with hookline- are reserved"));
        }
        if !seen.insert(lower.to_string()) {
            return Err(FieldError::new(field, "declared twice (header names ignore case)"));
        }
        if value.expose().len() > MAX_HEADER_VALUE_BYTES {
            return Err(FieldError::new(field, format!("the value is longer than {MAX_HEADER_VALUE_BYTES} bytes")));
        }
        if hyper::header::HeaderValue::from_str(value.expose()).is_err() {
            return Err(FieldError::new(field, "the value must be visible ASCII (no control characters or line breaks)"));
        }
    }
    Ok(())
}

/// A destination declared in `hookline.toml` as `[[destinations]]` (written to the bucket at
/// start, as channels are). The same fields as [`DestinationSpec`], with `id` required. Check
/// it with [`DestinationDecl::validate`] and name the entry with [`FieldError::within`]
/// (`destinations[2].url`).
///
/// ```toml
/// [[destinations]]
/// id = "billing"
/// url = "https://billing.example.com/hooks"
/// signing_secret = "whsec_..."
/// headers = { "X-Api-Key" = "..." }
/// filter = { source = ["mercadopago"], match = { "payment.action" = { "$prefix" = "payment." } } }
/// ```
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DestinationDecl {
    pub id: String,
    pub tenant_id: Option<String>,
    pub name: Option<String>,
    pub url: String,
    pub signing_secret: Secret,
    #[serde(default)]
    pub headers: BTreeMap<String, Secret>,
    #[serde(default)]
    pub filter: Filter,
    #[serde(default)]
    pub ordering: Ordering,
    pub max_in_flight: Option<u32>,
    pub rate_limit_per_s: Option<f64>,
    pub timeout_ms: Option<u64>,
    pub retry_schedule_s: Option<Vec<u64>>,
    pub max_age_s: Option<u64>,
    #[serde(default)]
    pub paused: bool,
}

impl DestinationDecl {
    pub fn to_spec(&self) -> DestinationSpec {
        DestinationSpec {
            id: Some(self.id.clone()),
            tenant_id: self.tenant_id.clone(),
            name: self.name.clone(),
            url: self.url.clone(),
            signing_secret: self.signing_secret.clone(),
            headers: self.headers.clone(),
            filter: self.filter.clone(),
            ordering: self.ordering,
            max_in_flight: self.max_in_flight,
            rate_limit_per_s: self.rate_limit_per_s,
            timeout_ms: self.timeout_ms,
            retry_schedule_s: self.retry_schedule_s.clone(),
            max_age_s: self.max_age_s,
            paused: self.paused,
        }
    }

    pub fn validate(&self) -> Result<(), FieldError> {
        self.to_spec().validate()
    }

    pub fn to_record(&self, keyring: &Keyring, now: OffsetDateTime) -> Result<DestinationRecord, DestinationError> {
        DestinationRecord::seal(&self.to_spec(), keyring, now)
    }
}

/// One destination as stored in the KV bucket `hookline_destinations` (JSON), keyed by its id.
/// Secrets stay sealed; header names are plain, their values sealed. There is no revision field
/// (channel records have none): the KV entry's own revision serves for compare-and-set.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DestinationRecord {
    pub id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tenant_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    pub url: String,
    pub signing_secret: Sealed,
    /// The signing secret before the last rotation: still signs until `previous_valid_until`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub previous_signing_secret: Option<Sealed>,
    #[serde(default, skip_serializing_if = "Option::is_none", with = "time::serde::rfc3339::option")]
    pub previous_valid_until: Option<OffsetDateTime>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub headers: BTreeMap<String, Sealed>,
    #[serde(default)]
    pub filter: Filter,
    #[serde(default)]
    pub ordering: Ordering,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_in_flight: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate_limit_per_s: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_ms: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_schedule_s: Option<Vec<u64>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_age_s: Option<u64>,
    #[serde(default)]
    pub paused: bool,
    /// Written by a tenant token (and `setup_api.allow_private_destinations` off): the forwarder
    /// connects only to addresses `egress::forbidden` allows, checked after DNS resolution.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub restrict_egress: bool,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    pub updated_at: OffsetDateTime,
}

impl DestinationRecord {
    /// Validates `spec` and seals its secrets: a new record (`created_at = updated_at = now`),
    /// with a generated id when the spec has none. To update a destination, seal the new spec
    /// and carry over `created_at` and the previous signing secret of the old record.
    pub fn seal(spec: &DestinationSpec, keyring: &Keyring, now: OffsetDateTime) -> Result<DestinationRecord, DestinationError> {
        spec.validate()?;
        let id = match &spec.id {
            Some(id) => id.clone(),
            None => generate_id().map_err(DestinationError::Random)?,
        };
        let headers = spec.headers.iter().map(|(name, value)| (name.clone(), keyring.seal(value, &header_context(&id, name)))).collect();
        Ok(DestinationRecord {
            signing_secret: keyring.seal(&spec.signing_secret, &signing_context(&id)),
            previous_signing_secret: None,
            previous_valid_until: None,
            headers,
            tenant_id: spec.tenant_id.clone(),
            name: spec.name.clone(),
            url: spec.url.clone(),
            filter: spec.filter.clone(),
            ordering: spec.ordering,
            max_in_flight: spec.max_in_flight,
            rate_limit_per_s: spec.rate_limit_per_s,
            timeout_ms: spec.timeout_ms,
            retry_schedule_s: spec.retry_schedule_s.clone(),
            max_age_s: spec.max_age_s,
            paused: spec.paused,
            restrict_egress: false,
            created_at: now,
            updated_at: now,
            id,
        })
    }

    /// Rotation: `new_secret` signs from now on; the current one keeps signing too until
    /// `now + overlap` (both signatures are sent, space separated). An overlap of zero or less
    /// drops the current one at once. A secret rotated out earlier is forgotten.
    pub fn rotate_signing_secret(
        &mut self,
        new_secret: &Secret,
        keyring: &Keyring,
        now: OffsetDateTime,
        overlap: time::Duration,
    ) -> Result<(), FieldError> {
        validate_signing_secret(new_secret).map_err(|m| FieldError::new("signing_secret", m))?;
        let old = std::mem::replace(&mut self.signing_secret, keyring.seal(new_secret, &signing_context(&self.id)));
        if overlap > time::Duration::ZERO {
            self.previous_signing_secret = Some(old);
            self.previous_valid_until = Some(now + overlap);
        } else {
            self.previous_signing_secret = None;
            self.previous_valid_until = None;
        }
        self.updated_at = now;
        Ok(())
    }

    /// Opens the secrets: the destination the forwarder delivers to.
    pub fn open(&self, keyring: &Keyring) -> Result<Destination, DestinationError> {
        let malformed = |message: &str| DestinationError::Malformed { id: self.id.clone(), message: message.to_string() };
        if !is_valid_id(&self.id) {
            return Err(malformed("the id is not 1 to 64 of A-Z a-z 0-9 _ -"));
        }
        let crypto = |part: String| move |source: CryptoError| DestinationError::Crypto { id: self.id.clone(), part, source };
        let signing_secret = keyring.open(&self.signing_secret, &signing_context(&self.id)).map_err(crypto("signing_secret".into()))?;
        let previous_signing_secret = match (&self.previous_signing_secret, self.previous_valid_until) {
            (Some(sealed), Some(until)) => {
                Some((keyring.open(sealed, &signing_context(&self.id)).map_err(crypto("previous_signing_secret".into()))?, until))
            }
            (Some(_), None) => return Err(malformed("previous_signing_secret without previous_valid_until")),
            (None, _) => None,
        };
        let mut headers = BTreeMap::new();
        for (name, sealed) in &self.headers {
            let value = keyring.open(sealed, &header_context(&self.id, name)).map_err(crypto(header_field(name)))?;
            headers.insert(name.clone(), value);
        }
        Ok(Destination {
            id: self.id.clone(),
            tenant_id: self.tenant_id.clone(),
            name: self.name.clone(),
            url: self.url.clone(),
            signing_secret: Some(signing_secret),
            previous_signing_secret,
            headers,
            filter: self.filter.clone(),
            ordering: self.ordering,
            max_in_flight: self.max_in_flight,
            rate_limit_per_s: self.rate_limit_per_s,
            timeout_ms: self.timeout_ms,
            retry_schedule_s: self.retry_schedule_s.clone(),
            max_age_s: self.max_age_s,
            paused: self.paused,
            restrict_egress: self.restrict_egress,
            created_at: Some(self.created_at),
        })
    }
}

/// A destination as the forwarder holds it: secrets opened. Per-destination settings stay
/// `None` when unset; [`Destination::settings`] applies the defaults.
#[derive(Debug, Clone)]
pub struct Destination {
    pub id: String,
    pub tenant_id: Option<String>,
    pub name: Option<String>,
    pub url: String,
    /// `None` only for the destination `default` when `forwarder.signing_secret` is unset:
    /// deliveries are then unsigned, as in the first stage.
    pub signing_secret: Option<Secret>,
    /// The previous signing secret and when it stops signing.
    pub previous_signing_secret: Option<(Secret, OffsetDateTime)>,
    pub headers: BTreeMap<String, Secret>,
    pub filter: Filter,
    pub ordering: Ordering,
    pub max_in_flight: Option<u32>,
    pub rate_limit_per_s: Option<f64>,
    pub timeout_ms: Option<u64>,
    pub retry_schedule_s: Option<Vec<u64>>,
    pub max_age_s: Option<u64>,
    pub paused: bool,
    /// Deliveries reach only addresses `egress::forbidden` allows (see `DestinationRecord`).
    pub restrict_egress: bool,
    /// When it was created (the bucket's record): it receives the events stored from then on,
    /// whenever a forwarder first sets up its consumer. `None` for `default`.
    pub created_at: Option<OffsetDateTime>,
}

impl Destination {
    /// The destination `default` that `forwarder.target_url` declares: no tenant, the empty
    /// filter (every event), no extra headers, every setting from `forwarder.*`. The URL and the
    /// secret were checked by the configuration (a secret shorter than
    /// [`MIN_SIGNING_KEY_BYTES`] is accepted here, as it was in the first stage).
    pub fn default_from_config(target_url: &str, signing_secret: Option<&Secret>) -> Destination {
        Destination {
            id: DEFAULT_DESTINATION_ID.to_string(),
            tenant_id: None,
            name: None,
            url: target_url.to_string(),
            signing_secret: signing_secret.cloned(),
            previous_signing_secret: None,
            headers: BTreeMap::new(),
            filter: Filter::default(),
            ordering: Ordering::None,
            max_in_flight: None,
            rate_limit_per_s: None,
            timeout_ms: None,
            retry_schedule_s: None,
            max_age_s: None,
            paused: false,
            restrict_egress: false,
            created_at: None,
        }
    }

    /// The secrets to sign a delivery at `now` with: the current one first, then the previous
    /// one while `now` is before its expiry. Empty for an unsigned `default`.
    pub fn signing_secrets(&self, now: OffsetDateTime) -> Vec<&Secret> {
        let previous = self.previous_signing_secret.as_ref().filter(|(_, until)| now < *until).map(|(s, _)| s);
        self.signing_secret.iter().chain(previous).collect()
    }

    /// The settings after the `forwarder.*` defaults. `min_in_flight` (the floor while the
    /// target fails) never exceeds `max_in_flight`.
    /// Unset, `rate_limit_per_s` means no limit (there is no `forwarder.rate_limit_per_s`).
    pub fn settings(&self, defaults: &ForwarderConfig) -> EffectiveSettings {
        let max_in_flight = self.max_in_flight.map_or(defaults.max_in_flight, |n| n as usize);
        EffectiveSettings {
            max_in_flight,
            min_in_flight: defaults.min_in_flight.min(max_in_flight),
            rate_limit_per_s: self.rate_limit_per_s,
            timeout_ms: self.timeout_ms.unwrap_or(defaults.request_timeout_ms),
            retry_schedule_s: self.retry_schedule_s.clone().unwrap_or_else(|| defaults.retry_schedule_s.clone()),
            max_age_s: self.max_age_s.unwrap_or(defaults.max_age_s),
        }
    }

    /// The JetStream filter subjects of its consumer: [`Filter::subjects`] with its own tenant
    /// forced. Empty: the destination receives nothing (create no consumer).
    pub fn subjects(&self) -> Vec<String> {
        self.filter.subjects(self.tenant_id.as_deref())
    }

    /// Whether the event (its JSON as published) is for this destination: of its tenant, when
    /// it has one, and passing its filter.
    pub fn accepts(&self, event: &Value) -> bool {
        let tenant_ok = match &self.tenant_id {
            Some(t) => event.get("tenant_id").and_then(Value::as_str) == Some(t.as_str()),
            None => true,
        };
        tenant_ok && self.filter.matches(event)
    }

    /// Its durable consumer: [`consumer_name`].
    pub fn consumer_name(&self) -> String {
        consumer_name(&self.id)
    }
}

/// A destination's settings with every default applied.
#[derive(Debug, Clone, PartialEq)]
pub struct EffectiveSettings {
    /// Deliveries at once, per forwarder process.
    pub max_in_flight: usize,
    /// The floor `max_in_flight` falls to while the target fails.
    pub min_in_flight: usize,
    /// Deliveries per second for the destination as a whole; `None`: no limit.
    pub rate_limit_per_s: Option<f64>,
    pub timeout_ms: u64,
    pub retry_schedule_s: Vec<u64>,
    pub max_age_s: u64,
}

impl EffectiveSettings {
    pub fn timeout(&self) -> std::time::Duration {
        std::time::Duration::from_millis(self.timeout_ms)
    }

    pub fn max_age(&self) -> std::time::Duration {
        std::time::Duration::from_secs(self.max_age_s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::{generate_key_base64, SecretsKey};
    use serde_json::json;
    use time::Duration;

    /// 32 bytes, base64.
    const SECRET: &str = "whsec_MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=";
    const OTHER_SECRET: &str = "whsec_ZmVkY2JhOTg3NjU0MzIxMGZlZGNiYTk4NzY1NDMyMTA=";

    fn keyring() -> Keyring {
        Keyring::new(SecretsKey::from_base64(&generate_key_base64().expect("rng")).expect("key"), vec![])
    }

    fn spec_json() -> Value {
        json!({
            "id": "billing",
            "tenant_id": "acme",
            "name": "Billing",
            "url": "https://billing.example.com/hooks?x=1",
            "signing_secret": SECRET,
            "headers": {"X-Api-Key": "key-abc-123", "Authorization": "Bearer tok-xyz"},
            "filter": {"source": ["mercadopago"], "match": {"payment.action": {"$prefix": "payment."}}},
            "ordering": "conversation",
            "max_in_flight": 8,
            "rate_limit_per_s": 2.5,
            "timeout_ms": 5000,
            "retry_schedule_s": [1, 10, 5],
            "max_age_s": 3600,
            "paused": true
        })
    }

    fn spec() -> DestinationSpec {
        DestinationSpec::from_json(&spec_json()).expect("valid spec")
    }

    #[test]
    fn a_full_spec_reads_and_validates() {
        let s = spec();
        s.validate().expect("valid");
        assert_eq!(s.id.as_deref(), Some("billing"));
        assert_eq!(s.ordering, Ordering::Conversation);
        assert_eq!(s.headers["X-Api-Key"].expose(), "key-abc-123");
        assert_eq!(s.retry_schedule_s.as_deref(), Some(&[1, 10, 5][..]));
        assert!(s.paused);
        let minimal =
            DestinationSpec::from_json(&json!({"url": "http://localhost:9000/", "signing_secret": SECRET, "id": null})).expect("ok");
        minimal.validate().expect("valid");
        assert_eq!(minimal, DestinationSpec::new("http://localhost:9000/", Secret::new(SECRET)));
        let via_serde: DestinationSpec = serde_json::from_value(spec_json()).expect("deserialize");
        assert_eq!(via_serde, s);
    }

    /// A change to the valid spec → the field its error names.
    #[test]
    fn every_refusal_names_its_field() {
        let long_header = "X".repeat(MAX_HEADER_NAME_BYTES + 1);
        let too_many_headers: serde_json::Map<String, Value> = (0..=MAX_HEADERS).map(|i| (format!("X-H{i}"), json!("v"))).collect();
        let cases: Vec<(Value, &str)> = vec![
            (json!({"colour": "red"}), "colour"),
            (json!({"state": "active"}), "state"),
            (json!({"id": 5}), "id"),
            (json!({"id": ""}), "id"),
            (json!({"id": "a.b"}), "id"),
            (json!({"id": "x".repeat(65)}), "id"),
            (json!({"tenant_id": "a b"}), "tenant_id"),
            (json!({"tenant_id": ["acme"]}), "tenant_id"),
            (json!({"name": "  "}), "name"),
            (json!({"name": "a\nb"}), "name"),
            (json!({"name": "n".repeat(MAX_NAME_CHARS + 1)}), "name"),
            (json!({"url": null}), "url"),
            (json!({"url": "ftp://example.com/"}), "url"),
            (json!({"url": "not a url"}), "url"),
            (json!({"url": "https://user:pw@example.com/"}), "url"),
            (json!({"url": "https://token@example.com/"}), "url"),
            (json!({"url": "https://"}), "url"),
            (json!({"url": format!("https://example.com/{}", "p".repeat(MAX_URL_BYTES))}), "url"),
            (json!({"signing_secret": null}), "signing_secret"),
            (json!({"signing_secret": "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY="}), "signing_secret"),
            (json!({"signing_secret": "whsec_!!!"}), "signing_secret"),
            (json!({"signing_secret": "whsec_c2hvcnQ="}), "signing_secret"),
            (json!({"headers": ["X-Api-Key"]}), "headers"),
            (json!({"headers": {"X-Api-Key": 5}}), "headers.X-Api-Key"),
            (json!({"headers": {"X-Api-Key": "a\r\nInjected: yes"}}), "headers.X-Api-Key"),
            (json!({"headers": {"X-Api-Key": "v".repeat(MAX_HEADER_VALUE_BYTES + 1)}}), "headers.X-Api-Key"),
            (json!({"headers": {"Bad Name": "v"}}), "headers.Bad Name"),
            (json!({"headers": {"": "v"}}), "headers."),
            (json!({"headers": {"Content-Type": "text/plain"}}), "headers.Content-Type"),
            (json!({"headers": {"webhook-signature": "v1,x"}}), "headers.webhook-signature"),
            (json!({"headers": {"Transfer-Encoding": "chunked"}}), "headers.Transfer-Encoding"),
            (json!({"headers": {"Host": "evil"}}), "headers.Host"),
            (json!({"headers": {"Traceparent": "x"}}), "headers.Traceparent"),
            (json!({"headers": {"Hookline-Destination": "x"}}), "headers.Hookline-Destination"),
            (json!({"headers": {"X-Key": "a", "x-key": "b"}}), "headers.x-key"),
            (json!({"headers": { long_header.clone(): "v" }}), "headers"),
            (json!({ "headers": too_many_headers }), "headers"),
            (json!({"filter": {"colour": 1}}), "filter.colour"),
            (json!({"filter": {"match": {"sender.id": {"$in": 1}}}}), "filter.match.sender.id.$in"),
            (json!({"filter": "everything"}), "filter"),
            (json!({"ordering": "fifo"}), "ordering"),
            (json!({"max_in_flight": 0}), "max_in_flight"),
            (json!({"max_in_flight": 10_001}), "max_in_flight"),
            (json!({"max_in_flight": -1}), "max_in_flight"),
            (json!({"max_in_flight": 1.5}), "max_in_flight"),
            (json!({"max_in_flight": 5_000_000_000u64}), "max_in_flight"),
            (json!({"rate_limit_per_s": 0}), "rate_limit_per_s"),
            (json!({"rate_limit_per_s": -2}), "rate_limit_per_s"),
            (json!({"rate_limit_per_s": 100_000.5}), "rate_limit_per_s"),
            (json!({"rate_limit_per_s": "10"}), "rate_limit_per_s"),
            (json!({"timeout_ms": 99}), "timeout_ms"),
            (json!({"timeout_ms": 120_001}), "timeout_ms"),
            (json!({"retry_schedule_s": []}), "retry_schedule_s"),
            (json!({"retry_schedule_s": vec![1; 51]}), "retry_schedule_s"),
            (json!({"retry_schedule_s": 5}), "retry_schedule_s"),
            (json!({"retry_schedule_s": [1, 2, 3, 0]}), "retry_schedule_s[3]"),
            (json!({"retry_schedule_s": [1, 86_401]}), "retry_schedule_s[1]"),
            (json!({"retry_schedule_s": [1, "2"]}), "retry_schedule_s[1]"),
            (json!({"max_age_s": 59}), "max_age_s"),
            (json!({"max_age_s": 30 * 86_400 + 1}), "max_age_s"),
            (json!({"paused": "yes"}), "paused"),
        ];
        for (change, field) in cases {
            let mut input = spec_json();
            for (k, v) in change.as_object().expect("object") {
                input[k] = v.clone();
            }
            let result = DestinationSpec::from_json(&input).and_then(|s| s.validate());
            match result {
                Ok(()) => panic!("{change} should be refused (at {field})"),
                Err(e) => {
                    assert_eq!(e.field, field, "{change}: {e}");
                    for secret in ["key-abc-123", "tok-xyz", "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY"] {
                        assert!(!e.to_string().contains(secret), "{e} shows a secret");
                    }
                }
            }
        }
        assert_eq!(DestinationSpec::from_json(&json!([1])).expect_err("not an object").field, "");
    }

    #[test]
    fn the_bounds_themselves_are_accepted() {
        let mut input = spec_json();
        for (k, v) in [
            ("max_in_flight", json!(1)),
            ("rate_limit_per_s", json!(100_000)),
            ("timeout_ms", json!(100)),
            ("retry_schedule_s", json!(vec![86_400; 50])),
            ("max_age_s", json!(30 * 86_400)),
        ] {
            input[k] = v;
        }
        DestinationSpec::from_json(&input).expect("reads").validate().expect("valid");
        for (k, v) in
            [("max_in_flight", json!(10_000)), ("rate_limit_per_s", json!(0.001)), ("timeout_ms", json!(120_000)), ("max_age_s", json!(60))]
        {
            input[k] = v;
        }
        DestinationSpec::from_json(&input).expect("reads").validate().expect("valid");
    }

    #[test]
    fn errors_read_as_field_and_message_and_nest_under_a_prefix() {
        let e = FieldError::new("url", "must name a host");
        assert_eq!(e.to_string(), "url: must name a host");
        assert_eq!(e.within("destinations[2]").to_string(), "destinations[2].url: must name a host");
        assert_eq!(FieldError::new("", "a destination must be a JSON object").to_string(), "a destination must be a JSON object");
    }

    #[test]
    fn generated_ids_are_dst_and_26_base32_characters() {
        let mut seen = HashSet::new();
        for _ in 0..200 {
            let id = generate_id().expect("rng");
            assert_eq!(id.len(), 30, "{id}");
            let tail = id.strip_prefix("dst_").expect("prefix");
            assert!(tail.bytes().all(|b| b.is_ascii_lowercase() || (b'2'..=b'7').contains(&b)), "{id}");
            assert!(is_valid_id(&id));
            assert!(seen.insert(id));
        }
        let secret = generate_signing_secret().expect("rng");
        assert!(validate_signing_secret(&secret).is_ok());
    }

    #[test]
    fn consumer_names_are_destination_dash_id() {
        assert_eq!(consumer_name("billing"), "destination-billing");
        assert_eq!(consumer_name(DEFAULT_DESTINATION_ID), "destination-default");
        assert_ne!(consumer_name(DEFAULT_DESTINATION_ID), crate::names::FORWARDER_CONSUMER);
    }

    #[test]
    fn seal_then_open_round_trips_through_json() {
        let ring = keyring();
        let now = OffsetDateTime::now_utc();
        let record = DestinationRecord::seal(&spec(), &ring, now).expect("seals");
        assert_eq!(record.created_at, now);
        let json = serde_json::to_string(&record).expect("serialize");
        let back: DestinationRecord = serde_json::from_str(&json).expect("parse");
        assert_eq!(back, record);
        let d = back.open(&ring).expect("opens");
        assert_eq!(d.id, "billing");
        assert_eq!(d.tenant_id.as_deref(), Some("acme"));
        assert_eq!(d.signing_secret.as_ref().map(Secret::expose), Some(SECRET));
        assert_eq!(d.headers["X-Api-Key"].expose(), "key-abc-123");
        assert_eq!(d.headers["Authorization"].expose(), "Bearer tok-xyz");
        assert_eq!(d.filter, spec().filter);
        assert_eq!(d.ordering, Ordering::Conversation);
        assert_eq!((d.max_in_flight, d.rate_limit_per_s, d.timeout_ms, d.max_age_s), (Some(8), Some(2.5), Some(5000), Some(3600)));
        assert!(d.paused);
        assert_eq!(d.consumer_name(), "destination-billing");
    }

    #[test]
    fn a_record_never_holds_a_plaintext_secret() {
        let ring = keyring();
        let mut record = DestinationRecord::seal(&spec(), &ring, OffsetDateTime::now_utc()).expect("seals");
        record.rotate_signing_secret(&Secret::new(OTHER_SECRET), &ring, OffsetDateTime::now_utc(), Duration::hours(1)).expect("rotates");
        let json = serde_json::to_string(&record).expect("serialize");
        for secret in [SECRET, OTHER_SECRET, &SECRET[6..], &OTHER_SECRET[6..], "key-abc-123", "tok-xyz"] {
            assert!(!json.contains(secret), "the bucket must not hold plaintext {secret}: {json}");
        }
        assert!(json.contains("\"X-Api-Key\""), "header names stay readable");
    }

    #[test]
    fn a_generated_id_is_used_when_the_spec_has_none() {
        let ring = keyring();
        let mut s = spec();
        s.id = None;
        let record = DestinationRecord::seal(&s, &ring, OffsetDateTime::now_utc()).expect("seals");
        assert!(record.id.starts_with("dst_"));
        assert_eq!(record.open(&ring).expect("opens").id, record.id);
    }

    #[test]
    fn sealing_refuses_an_invalid_spec() {
        let mut s = spec();
        s.url = "ftp://x/".into();
        match DestinationRecord::seal(&s, &keyring(), OffsetDateTime::now_utc()) {
            Err(DestinationError::Invalid(e)) => assert_eq!(e.field, "url"),
            other => panic!("expected Invalid, got {other:?}"),
        }
    }

    #[test]
    fn sealed_values_are_bound_to_the_destination_and_their_place() {
        let ring = keyring();
        let now = OffsetDateTime::now_utc();
        let a = DestinationRecord::seal(&spec(), &ring, now).expect("seals");
        let mut other = spec();
        other.id = Some("other".into());
        let mut b = DestinationRecord::seal(&other, &ring, now).expect("seals");
        b.signing_secret = a.signing_secret.clone();
        assert!(matches!(b.open(&ring), Err(DestinationError::Crypto { part, .. }) if part == "signing_secret"));
        let mut c = a.clone();
        c.signing_secret = a.headers["X-Api-Key"].clone();
        assert!(matches!(c.open(&ring), Err(DestinationError::Crypto { part, .. }) if part == "signing_secret"));
        let mut d = a.clone();
        let auth = a.headers["Authorization"].clone();
        d.headers.insert("X-Api-Key".into(), auth);
        assert!(matches!(d.open(&ring), Err(DestinationError::Crypto { part, .. }) if part == "headers.X-Api-Key"));
        assert!(matches!(a.open(&keyring()), Err(DestinationError::Crypto { .. })), "another key does not open it");
    }

    #[test]
    fn rotation_keeps_the_previous_secret_signing_until_it_expires() {
        let ring = keyring();
        let now = OffsetDateTime::now_utc();
        let mut record = DestinationRecord::seal(&spec(), &ring, now).expect("seals");
        record.rotate_signing_secret(&Secret::new(OTHER_SECRET), &ring, now, Duration::minutes(10)).expect("rotates");
        assert_eq!(record.previous_valid_until, Some(now + Duration::minutes(10)));
        let back: DestinationRecord = serde_json::from_str(&serde_json::to_string(&record).expect("ser")).expect("de");
        let d = back.open(&ring).expect("opens");
        let at = |t| d.signing_secrets(t).into_iter().map(|s| s.expose().to_string()).collect::<Vec<_>>();
        assert_eq!(at(now), [OTHER_SECRET, SECRET], "current first, previous while valid");
        assert_eq!(at(now + Duration::minutes(10) - Duration::seconds(1)), [OTHER_SECRET, SECRET]);
        assert_eq!(at(now + Duration::minutes(10)), [OTHER_SECRET], "only the current one after expiry");

        record.rotate_signing_secret(&Secret::new(SECRET), &ring, now, Duration::ZERO).expect("rotates");
        assert_eq!((record.previous_signing_secret.as_ref(), record.previous_valid_until), (None, None));
        assert_eq!(record.open(&ring).expect("opens").signing_secrets(now).len(), 1);

        let err = record.rotate_signing_secret(&Secret::new("whsec_c2hvcnQ="), &ring, now, Duration::hours(1)).expect_err("short");
        assert_eq!(err.field, "signing_secret");

        let mut broken = record.clone();
        broken.previous_signing_secret = Some(broken.signing_secret.clone());
        assert!(matches!(broken.open(&ring), Err(DestinationError::Malformed { .. })));
    }

    fn config_defaults() -> crate::config::ForwarderConfig {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("hookline.toml");
        std::fs::write(&path, "").expect("write");
        let config = crate::config::Config::load_with_env(&crate::config::Sources { file: Some(path) }, &[]).expect("defaults load");
        config.forwarder
    }

    #[test]
    fn settings_fall_back_to_the_forwarder_defaults() {
        let defaults = config_defaults();
        assert_eq!(defaults.request_timeout_ms, 10_000);
        let d = Destination::default_from_config("http://localhost:9000/", None);
        assert_eq!(
            d.settings(&defaults),
            EffectiveSettings {
                max_in_flight: defaults.max_in_flight,
                min_in_flight: defaults.min_in_flight,
                rate_limit_per_s: None,
                timeout_ms: defaults.request_timeout_ms,
                retry_schedule_s: defaults.retry_schedule_s.clone(),
                max_age_s: defaults.max_age_s,
            }
        );
        let ring = keyring();
        let own = DestinationRecord::seal(&spec(), &ring, OffsetDateTime::now_utc()).expect("seals").open(&ring).expect("opens");
        let s = own.settings(&defaults);
        assert_eq!(
            s,
            EffectiveSettings {
                max_in_flight: 8,
                min_in_flight: defaults.min_in_flight.min(8),
                rate_limit_per_s: Some(2.5),
                timeout_ms: 5000,
                retry_schedule_s: vec![1, 10, 5],
                max_age_s: 3600,
            }
        );
        assert_eq!(s.timeout(), std::time::Duration::from_millis(5000));
        let mut one = own.clone();
        one.max_in_flight = Some(1);
        assert_eq!(one.settings(&defaults).min_in_flight, 1, "the floor never exceeds the ceiling");
    }

    #[test]
    fn the_default_destination_takes_every_event_of_every_tenant() {
        let secret = Secret::new(SECRET);
        let d = Destination::default_from_config("https://messaging.example.com/hookline", Some(&secret));
        assert_eq!(d.id, DEFAULT_DESTINATION_ID);
        assert_eq!(d.tenant_id, None);
        assert!(d.filter.is_empty());
        assert_eq!(d.subjects(), ["hookline.events.*.*.*"]);
        assert!(d.accepts(&json!({"tenant_id": "anyone", "kind": "other"})));
        assert_eq!(d.signing_secrets(OffsetDateTime::now_utc()).len(), 1);
        let unsigned = Destination::default_from_config("http://localhost:9000/", None);
        assert!(unsigned.signing_secrets(OffsetDateTime::now_utc()).is_empty());
    }

    #[test]
    fn a_tenant_destination_only_ever_sees_its_tenant() {
        let ring = keyring();
        let mut s = spec();
        s.filter = Filter::default();
        let d = DestinationRecord::seal(&s, &ring, OffsetDateTime::now_utc()).expect("seals").open(&ring).expect("opens");
        assert_eq!(d.subjects(), ["hookline.events.acme.*.*"]);
        assert!(d.accepts(&json!({"tenant_id": "acme"})));
        assert!(!d.accepts(&json!({"tenant_id": "beta"})));
        assert!(!d.accepts(&json!({})));
        let mut excluded = d.clone();
        excluded.filter = Filter::parse(&json!({"tenant_id": ["beta"]})).expect("parses");
        assert!(excluded.subjects().is_empty(), "a filter that excludes its own tenant: nothing");
        assert!(!excluded.accepts(&json!({"tenant_id": "beta"})));
        assert!(!excluded.accepts(&json!({"tenant_id": "acme"})));
    }

    #[test]
    fn a_declaration_reads_from_toml() {
        #[derive(Deserialize)]
        struct File {
            destinations: Vec<DestinationDecl>,
        }
        use figment::providers::{Format, Toml};
        let toml = format!(
            r#"
            [[destinations]]
            id = "billing"
            url = "https://billing.example.com/hooks"
            signing_secret = "{SECRET}"
            headers = {{ "X-Api-Key" = "key-abc-123" }}
            rate_limit_per_s = 10
            retry_schedule_s = [5, 60]
            filter = {{ source = ["mercadopago"], match = {{ "payment.action" = {{ "$prefix" = "payment." }} }} }}

            [[destinations]]
            id = "support"
            tenant_id = "acme"
            url = "http://support.internal/in"
            signing_secret = "{OTHER_SECRET}"
            ordering = "conversation"
            "#
        );
        let file: File = figment::Figment::from(Toml::string(&toml)).extract().expect("reads");
        assert_eq!(file.destinations.len(), 2);
        let billing = &file.destinations[0];
        billing.validate().expect("valid");
        assert_eq!(billing.rate_limit_per_s, Some(10.0));
        assert_eq!(billing.filter.as_json(), &json!({"source": ["mercadopago"], "match": {"payment.action": {"$prefix": "payment."}}}));
        assert!(billing.filter.matches(&json!({"source": "mercadopago", "payment": {"id": "1", "action": "payment.created"}})));
        let support = &file.destinations[1];
        assert_eq!(support.ordering, Ordering::Conversation);
        let ring = keyring();
        let record = support.to_record(&ring, OffsetDateTime::now_utc()).expect("seals");
        assert_eq!(record.open(&ring).expect("opens").subjects(), ["hookline.events.acme.*.*"]);

        let bad = format!("[[destinations]]\nid = \"x\"\nurl = \"https://x/\"\nsigning_secret = \"{SECRET}\"\ncolour = \"red\"\n");
        assert!(figment::Figment::from(Toml::string(&bad)).extract::<File>().is_err(), "unknown keys are refused");
        let bad = format!("[[destinations]]\nid = \"x\"\nurl = \"ftp://x/\"\nsigning_secret = \"{SECRET}\"\n");
        let file: File = figment::Figment::from(Toml::string(&bad)).extract().expect("reads");
        assert_eq!(file.destinations[0].validate().expect_err("ftp").within("destinations[0]").field, "destinations[0].url");
    }
}

//! The circuit breaker's state, as the forwarders publish it: the KV bucket
//! `hookline_destination_state`, keyed by destination id, JSON `{"state": "tripped", ...}`.
//! The API only reads it, with a short timeout: when the bucket is missing (no forwarder ran
//! yet), NATS is away or slow, or an entry is absent or unreadable, the destination is shown
//! `active` (or `paused`, which the API knows itself).

use async_nats::jetstream::{self, kv};
use serde_json::Value;
use std::collections::HashSet;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// The bucket the forwarders publish each destination's breaker state in.
pub const DESTINATION_STATE_BUCKET: &str = hookline_shared::names::DESTINATION_STATE_BUCKET;
/// How long one answer waits for the states of its destinations, in all.
const STATE_TIMEOUT: Duration = Duration::from_millis(250);
/// After a failure (no bucket, no NATS), answers skip the lookup this long.
const QUIET_AFTER_FAILURE: Duration = Duration::from_secs(5);

pub struct StateReader {
    js: jetstream::Context,
    store: Mutex<Option<kv::Store>>,
    failed_at: Mutex<Option<Instant>>,
}

impl StateReader {
    pub fn new(js: jetstream::Context) -> Self {
        StateReader { js, store: Mutex::new(None), failed_at: Mutex::new(None) }
    }

    fn failed(&self) {
        *self.failed_at.lock().unwrap_or_else(|p| p.into_inner()) = Some(Instant::now());
    }

    fn quiet(&self) -> bool {
        self.failed_at.lock().unwrap_or_else(|p| p.into_inner()).is_some_and(|t| t.elapsed() < QUIET_AFTER_FAILURE)
    }

    async fn open(&self) -> Option<kv::Store> {
        if let Some(store) = self.store.lock().unwrap_or_else(|p| p.into_inner()).clone() {
            return Some(store);
        }
        let store = self.js.get_key_value(DESTINATION_STATE_BUCKET).await.ok()?;
        *self.store.lock().unwrap_or_else(|p| p.into_inner()) = Some(store.clone());
        Some(store)
    }

    /// The ids among `ids` whose breaker the forwarders report `tripped`.
    pub async fn tripped<'a>(&self, ids: impl IntoIterator<Item = &'a str>) -> HashSet<String> {
        let ids: Vec<&str> = ids.into_iter().collect();
        if ids.is_empty() || self.quiet() {
            return HashSet::new();
        }
        let lookup = async {
            let store = self.open().await?;
            let gets = ids.iter().map(|id| {
                let store = store.clone();
                async move { (id.to_string(), store.get(*id).await) }
            });
            let mut tripped = HashSet::new();
            let mut all_read = true;
            for (id, entry) in futures_util::future::join_all(gets).await {
                match entry {
                    Ok(Some(bytes)) if is_tripped(&bytes) => {
                        tripped.insert(id);
                    }
                    Ok(_) => {}
                    Err(_) => all_read = false,
                }
            }
            Some((tripped, all_read))
        };
        match tokio::time::timeout(STATE_TIMEOUT, lookup).await {
            Ok(Some((tripped, all_read))) => {
                if !all_read {
                    self.failed();
                }
                tripped
            }
            _ => {
                self.failed();
                HashSet::new()
            }
        }
    }
}

/// Whether a state entry says `{"state": "tripped"}`.
fn is_tripped(bytes: &[u8]) -> bool {
    serde_json::from_slice::<Value>(bytes).ok().and_then(|v| v.get("state").and_then(Value::as_str).map(|s| s == "tripped")) == Some(true)
}

#[cfg(test)]
mod tests {
    #[test]
    fn only_a_tripped_state_is_tripped() {
        assert!(super::is_tripped(br#"{"state":"tripped","since":"2026-12-01T00:00:00Z"}"#));
        for other in [&br#"{"state":"active"}"#[..], b"{}", b"tripped", b"", br#"{"state":1}"#] {
            assert!(!super::is_tripped(other), "{}", String::from_utf8_lossy(other));
        }
    }
}

//! Whether the nats-server fsyncs before it acknowledges. When `nats.monitor_url` points at its
//! monitoring endpoint, each role asks `/varz` at start: a server that acknowledges before fsync
//! (nats-server's default, `sync_interval` of two minutes) loses acknowledged writes on a power
//! cut or an OS crash, so the role says so in its log and in the body of `/readyz`.

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};

/// What the role found; set once, read by `/readyz`.
pub type DurabilityNote = Arc<OnceLock<String>>;

/// The warning for a server that acknowledges before fsync, or None when it fsyncs first.
pub fn warning_for(varz: &serde_json::Value) -> Option<String> {
    let config = &varz["jetstream"]["config"];
    if config["sync_always"].as_bool() == Some(true) {
        return None;
    }
    let interval =
        config["sync_interval"].as_u64().map(|ns| format!("every {} s", ns / 1_000_000_000)).unwrap_or_else(|| "on a timer".into());
    Some(format!(
        "warning: the nats-server acknowledges before it fsyncs (it fsyncs {interval}): a power cut or an OS crash loses \
         webhooks already answered 200; set sync_interval: always in its jetstream block"
    ))
}

/// Asks the monitoring endpoint at `monitor_url` (`http://host:8222`) for `/varz`.
pub async fn fetch_varz(monitor_url: &str) -> Result<serde_json::Value, String> {
    let url: hyper::Uri = format!("{}/varz", monitor_url.trim_end_matches('/')).parse().map_err(|e| format!("{e}"))?;
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new()).build_http::<Empty<Bytes>>();
    let response = tokio::time::timeout(Duration::from_secs(3), client.get(url))
        .await
        .map_err(|_| "no answer within 3 s".to_string())?
        .map_err(|e| e.to_string())?;
    if !response.status().is_success() {
        return Err(format!("answered {}", response.status()));
    }
    let body = tokio::time::timeout(Duration::from_secs(3), response.into_body().collect())
        .await
        .map_err(|_| "no body within 3 s".to_string())?
        .map_err(|e| e.to_string())?
        .to_bytes();
    serde_json::from_slice(&body).map_err(|e| format!("not JSON: {e}"))
}

/// Checks the server once, logs what it found, and records a warning in `note`. Nothing when
/// `monitor_url` is not configured: the role cannot see the server's settings then.
pub async fn check(monitor_url: Option<&str>, role: &'static str, note: &DurabilityNote) {
    let Some(url) = monitor_url else { return };
    match fetch_varz(url).await {
        Ok(varz) => match warning_for(&varz) {
            Some(warning) => {
                tracing::warn!(role, "{warning}");
                let _ = note.set(warning);
            }
            None => tracing::info!(role, "the nats-server fsyncs before it acknowledges (sync_interval: always)"),
        },
        Err(e) => tracing::warn!(role, monitor = %url, error = %e, "cannot read the nats-server's settings from nats.monitor_url"),
    }
}

#[cfg(test)]
mod tests {
    use super::warning_for;

    #[test]
    fn a_server_that_fsyncs_on_a_timer_is_named() {
        let lazy = serde_json::json!({"jetstream": {"config": {"sync_interval": 120_000_000_000u64}}});
        let text = warning_for(&lazy).unwrap_or_default();
        assert!(text.contains("every 120 s") && text.contains("sync_interval: always"), "{text}");
        let durable = serde_json::json!({"jetstream": {"config": {"sync_always": true, "sync_interval": 120_000_000_000u64}}});
        assert_eq!(warning_for(&durable), None);
    }
}

//! Dead letters: list and show them with their stage, reason, attempts and age; re-drive them
//! (put each back where it failed, then remove it from the DLQ only after the re-publish is
//! acked); purge them.

use async_nats::jetstream;
use async_nats::HeaderMap;
use serde::{Deserialize, Serialize};

use hookline_shared::names::{self, header};

use crate::reader::{Read, Reader};
use crate::selection::Selection;
use crate::OpsError;

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct DlqFilter {
    #[serde(default)]
    pub selection: Selection,
    /// `normalize` or `forward`.
    pub stage: Option<String>,
    pub reason: Option<String>,
    /// Only these DLQ sequences.
    #[serde(default)]
    pub seqs: Vec<u64>,
    /// At most this many.
    pub limit: Option<u64>,
    /// Forward-stage dead letters of this destination only.
    #[serde(default)]
    pub destination: Option<String>,
}

/// One dead letter as operators see it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct DeadLetterView {
    pub seq: u64,
    pub stage: String,
    pub reason: String,
    pub detail: String,
    pub attempts: String,
    pub last_status: Option<String>,
    /// Where the message was when it failed.
    pub subject: String,
    pub original_seq: String,
    pub channel: Option<String>,
    pub tenant: Option<String>,
    /// The destination a forward-stage letter failed for (a re-drive returns it there only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub destination: Option<String>,
    #[serde(with = "time::serde::rfc3339")]
    pub dead_lettered_at: time::OffsetDateTime,
    pub age_s: i64,
    pub body_bytes: usize,
}

fn text(headers: Option<&HeaderMap>, name: &str) -> Option<String> {
    headers.and_then(|h| h.get(name)).map(|v| v.as_str().to_string())
}

fn view(item: &Read) -> DeadLetterView {
    let h = item.message.headers.as_ref();
    DeadLetterView {
        seq: item.seq,
        stage: text(h, header::DLQ_STAGE).unwrap_or_default(),
        reason: text(h, header::DLQ_REASON).unwrap_or_default(),
        detail: text(h, header::DLQ_DETAIL).unwrap_or_default(),
        attempts: text(h, header::DLQ_ATTEMPTS).unwrap_or_default(),
        last_status: text(h, header::DLQ_LAST_STATUS),
        subject: text(h, header::DLQ_SUBJECT).unwrap_or_default(),
        original_seq: text(h, header::DLQ_SEQ).unwrap_or_default(),
        channel: text(h, header::CHANNEL),
        tenant: text(h, header::TENANT),
        destination: text(h, header::DESTINATION),
        dead_lettered_at: item.published,
        age_s: (time::OffsetDateTime::now_utc() - item.published).whole_seconds(),
        body_bytes: item.message.payload.len(),
    }
}

fn filter_subject(filter: &DlqFilter) -> String {
    let stage = filter.stage.as_deref().unwrap_or("*");
    let who = filter.selection.source.map(|s| s.as_str().to_string()).or_else(|| filter.selection.tenant.clone());
    format!("hookline.dlq.{stage}.{}", who.as_deref().unwrap_or("*"))
}

fn matches(filter: &DlqFilter, v: &DeadLetterView) -> bool {
    (filter.seqs.is_empty() || filter.seqs.contains(&v.seq))
        && filter.reason.as_ref().is_none_or(|r| *r == v.reason)
        && filter.selection.channel.as_ref().is_none_or(|c| v.channel.as_ref() == Some(c))
        // The subject names the tenant only when no source is given: check it here too.
        && filter.selection.tenant.as_ref().is_none_or(|t| v.tenant.as_ref() == Some(t))
        && filter.destination.as_ref().is_none_or(|d| v.destination.as_ref() == Some(d))
}

fn validate(filter: &DlqFilter) -> Result<(), OpsError> {
    filter.selection.validate().map_err(OpsError::Invalid)?;
    if let Some(stage) = &filter.stage {
        if !["normalize", "forward"].contains(&stage.as_str()) {
            return Err(OpsError::Invalid(format!("--stage {stage:?}: expected normalize or forward")));
        }
    }
    Ok(())
}

/// Visits the matching dead letters in order; `f` returns false to stop.
async fn each<F>(js: &jetstream::Context, filter: &DlqFilter, mut f: F) -> Result<(), OpsError>
where
    F: FnMut(&Read, DeadLetterView) -> bool,
{
    validate(filter)?;
    let mut seen = 0u64;
    let limit = filter.limit.unwrap_or(u64::MAX);
    let mut reader = Reader::open(js, names::DLQ_STREAM, &filter_subject(filter), &filter.selection).await?;
    while seen < limit {
        let Some(item) = reader.next().await? else { break };
        let v = view(&item);
        if matches(filter, &v) {
            seen += 1;
            if !f(&item, v) {
                break;
            }
        }
    }
    Ok(())
}

pub async fn list(js: &jetstream::Context, filter: &DlqFilter) -> Result<Vec<DeadLetterView>, OpsError> {
    let mut out = Vec::new();
    each(js, filter, |_, v| {
        out.push(v);
        true
    })
    .await?;
    Ok(out)
}

/// One dead letter with its body and every header.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DeadLetterDetail {
    pub letter: DeadLetterView,
    pub headers: Vec<(String, String)>,
    /// The body as text when it is UTF-8, else base64-free hex of its first 4 KiB.
    pub body: String,
}

pub async fn show(js: &jetstream::Context, seq: u64) -> Result<Option<DeadLetterDetail>, OpsError> {
    let filter = DlqFilter {
        seqs: vec![seq],
        selection: Selection { from_seq: Some(seq), to_seq: Some(seq), ..Default::default() },
        ..Default::default()
    };
    let mut found = None;
    each(js, &filter, |item, v| {
        let mut headers: Vec<(String, String)> = item
            .message
            .headers
            .iter()
            .flat_map(|h| h.iter())
            .flat_map(|(k, vs)| vs.iter().map(move |v| (k.to_string(), v.as_str().to_string())))
            .collect();
        headers.sort();
        let body = match std::str::from_utf8(&item.message.payload) {
            Ok(s) => s.to_string(),
            Err(_) => hex::encode(&item.message.payload[..item.message.payload.len().min(4096)]),
        };
        found = Some(DeadLetterDetail { letter: v, headers, body });
        false
    })
    .await?;
    Ok(found)
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct RedriveSummary {
    pub dry_run: bool,
    pub selected: u64,
    pub redriven: u64,
    /// Dead letters that could not be put back (they stay in the DLQ).
    pub failed: u64,
}

/// Puts each matching dead letter back on the subject it failed on (raw for the normalize stage,
/// events for the forward stage), waits for that ack, then deletes it from the DLQ.
pub async fn redrive(js: &jetstream::Context, filter: &DlqFilter, dry_run: bool) -> Result<RedriveSummary, OpsError> {
    let mut selected: Vec<(u64, String, HeaderMap, bytes::Bytes)> = Vec::new();
    each(js, filter, |item, v| {
        let mut headers = HeaderMap::new();
        if let Some(original) = item.message.headers.as_ref() {
            for (name, values) in original.iter() {
                let name: &str = name.as_ref();
                if name.starts_with("Hookline-Dlq-") || name.starts_with("Nats-") {
                    continue;
                }
                for value in values {
                    headers.append(name, value.as_str());
                }
            }
        }
        headers.insert(header::MSG_ID, format!("redrive-{}", v.seq).as_str());
        selected.push((v.seq, v.subject, headers, item.message.payload.clone()));
        true
    })
    .await?;
    let mut summary = RedriveSummary { dry_run, selected: selected.len() as u64, ..Default::default() };
    if dry_run {
        return Ok(summary);
    }
    let dlq = js.get_stream(names::DLQ_STREAM).await.map_err(|e| OpsError::Stream { stream: names::DLQ_STREAM, message: e.to_string() })?;
    for (seq, subject, headers, body) in selected {
        let back_where_it_failed = subject.starts_with("hookline.raw.") || subject.starts_with("hookline.events.");
        if !back_where_it_failed {
            tracing::warn!(seq, subject, "dead letter without a raw or events subject; left in the DLQ");
            summary.failed += 1;
            continue;
        }
        let published = async { js.publish_with_headers(subject.clone(), headers, body).await?.await }.await;
        match published {
            Ok(_) => match dlq.delete_message(seq).await {
                Ok(_) => summary.redriven += 1,
                Err(e) => {
                    // Published but not removed: a second redrive is deduplicated by its msg id.
                    tracing::warn!(seq, error = %e, "re-published, but not removed from the DLQ");
                    summary.failed += 1;
                }
            },
            Err(e) => {
                tracing::warn!(seq, error = %e, "cannot re-publish; left in the DLQ");
                summary.failed += 1;
            }
        }
    }
    Ok(summary)
}

/// Deletes the matching dead letters; returns how many (or would, in a dry run).
pub async fn purge(js: &jetstream::Context, filter: &DlqFilter, dry_run: bool) -> Result<u64, OpsError> {
    let seqs: Vec<u64> = list(js, filter).await?.into_iter().map(|v| v.seq).collect();
    if dry_run {
        return Ok(seqs.len() as u64);
    }
    let dlq = js.get_stream(names::DLQ_STREAM).await.map_err(|e| OpsError::Stream { stream: names::DLQ_STREAM, message: e.to_string() })?;
    let mut purged = 0;
    for seq in seqs {
        if dlq.delete_message(seq).await.is_ok() {
            purged += 1;
        }
    }
    Ok(purged)
}

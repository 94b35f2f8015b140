//! The channels ingest serves: a directory in memory, filled and kept current by a watch on
//! the KV bucket `hookline_channels`, so ingest needs only NATS (never Postgres) and a change
//! in the bucket is served within a second, without restart.

use async_nats::jetstream::kv;
use futures_util::StreamExt;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;
use tokio_util::sync::CancellationToken;

use hookline_shared::channel::{Channel, ChannelDecl, ChannelRecord};
use hookline_shared::crypto::Keyring;

#[derive(Default)]
struct Entries {
    by_id: HashMap<String, Arc<Channel>>,
}

/// The channels known now. Reads are a lock and a hash lookup; writes come from the watcher.
#[derive(Default)]
pub struct ChannelDirectory {
    entries: RwLock<Entries>,
    loaded: AtomicBool,
}

impl ChannelDirectory {
    pub fn get(&self, id: &str) -> Option<Arc<Channel>> {
        self.read().by_id.get(id).cloned()
    }

    /// The channel created with `default: true` for `platform`.
    pub fn default_for(&self, platform: &str) -> Option<Arc<Channel>> {
        // At most one per platform is allowed; should two claim it, the smallest id wins so
        // that every ingest node picks the same one.
        self.read().by_id.values().filter(|c| c.default && c.platform == platform).min_by(|a, b| a.id.cmp(&b.id)).cloned()
    }

    pub fn len(&self) -> usize {
        self.read().by_id.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Whether the bucket's contents at start have been read.
    pub fn is_loaded(&self) -> bool {
        self.loaded.load(Ordering::Acquire)
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Entries> {
        // A panic while holding the lock cannot leave the map half-written (single inserts).
        self.entries.read().unwrap_or_else(|p| p.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, Entries> {
        self.entries.write().unwrap_or_else(|p| p.into_inner())
    }

    fn upsert(&self, channel: Channel) {
        self.write().by_id.insert(channel.id.clone(), Arc::new(channel));
    }

    fn remove(&self, id: &str) {
        self.write().by_id.remove(id);
    }

    fn mark_loaded(&self) {
        if !self.loaded.swap(true, Ordering::AcqRel) {
            tracing::info!(channels = self.len(), "channels loaded");
        }
    }
}

/// Writes the channels declared in `hookline.toml` to the bucket (secrets sealed).
/// Channels declared in the file seed the bucket: each is written only when the bucket does not
/// hold its id yet, so changes made since through the setup API are not overwritten (the setup
/// API imports them into Postgres by the same rule).
pub async fn write_declared(store: &kv::Store, keyring: &Keyring, declared: &[ChannelDecl]) -> Result<(), String> {
    for decl in declared {
        let record = decl.to_record(keyring, time::OffsetDateTime::now_utc());
        let json = serde_json::to_vec(&record).map_err(|e| format!("channel {}: {e}", decl.id))?;
        match store.create(&decl.id, json.into()).await {
            Ok(_) => tracing::info!(channel_id = %decl.id, "declared channel written to the bucket"),
            Err(e) if e.kind() == kv::CreateErrorKind::AlreadyExists => {
                tracing::debug!(channel_id = %decl.id, "declared channel already in the bucket; kept as it is")
            }
            Err(e) => return Err(format!("cannot write channel {} to the bucket: {e}", decl.id)),
        }
    }
    Ok(())
}

async fn bucket_messages(js: &async_nats::jetstream::Context) -> Result<u64, String> {
    let mut stream = js.get_stream(format!("KV_{}", hookline_shared::names::CHANNELS_BUCKET)).await.map_err(|e| e.to_string())?;
    stream.info().await.map(|i| i.state.messages).map_err(|e| e.to_string())
}

fn apply(directory: &ChannelDirectory, keyring: &Keyring, entry: &kv::Entry) {
    match entry.operation {
        kv::Operation::Put => {
            let record: ChannelRecord = match serde_json::from_slice(&entry.value) {
                Ok(r) => r,
                Err(e) => {
                    tracing::error!(channel_id = %entry.key, error = %e, "unreadable channel record; the channel is not served");
                    directory.remove(&entry.key);
                    return;
                }
            };
            if record.id != entry.key {
                tracing::error!(channel_id = %entry.key, "channel record under another id's key; not served");
                directory.remove(&entry.key);
                return;
            }
            match record.open(keyring) {
                Ok(channel) => {
                    tracing::debug!(channel_id = %channel.id, source = %channel.source, revision = entry.revision, "channel updated");
                    directory.upsert(channel);
                }
                Err(e) => {
                    tracing::error!(error = %e, "channel not served");
                    directory.remove(&entry.key);
                }
            }
        }
        kv::Operation::Delete | kv::Operation::Purge => {
            tracing::debug!(channel_id = %entry.key, "channel removed");
            directory.remove(&entry.key);
        }
    }
}

/// Keeps `directory` in step with the bucket until `shutdown`. A broken watch is re-created,
/// replaying the bucket's latest values (deletes included), so nothing is missed.
pub async fn watch(
    js: async_nats::jetstream::Context,
    store: kv::Store,
    keyring: Arc<Keyring>,
    directory: Arc<ChannelDirectory>,
    shutdown: CancellationToken,
) {
    loop {
        // An empty bucket sends nothing to a watcher, so "loaded" must come from its size. (The
        // store's own `status()` answers from info cached when the bucket was opened.)
        match bucket_messages(&js).await {
            Ok(0) => directory.mark_loaded(),
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "cannot read the channels bucket's size"),
        }
        match store.watch_with_history(">").await {
            Ok(mut entries) => loop {
                let next = tokio::select! {
                    _ = shutdown.cancelled() => return,
                    next = entries.next() => next,
                };
                match next {
                    Some(Ok(entry)) => {
                        apply(&directory, &keyring, &entry);
                        if entry.delta == 0 || entry.seen_current {
                            directory.mark_loaded();
                        }
                    }
                    Some(Err(e)) => {
                        tracing::warn!(error = %e, "channel watch failed; re-creating it");
                        break;
                    }
                    None => {
                        tracing::warn!("channel watch ended; re-creating it");
                        break;
                    }
                }
            },
            Err(e) => tracing::warn!(error = %e, "cannot watch the channels bucket; retrying"),
        }
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(Duration::from_millis(500)) => {}
        }
    }
}

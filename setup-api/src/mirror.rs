//! The mirror: Postgres is the truth, the KV bucket `hookline_channels` is what ingest reads.
//!
//! Every change writes a row to `channel_outbox` in its own transaction. The relay publishes,
//! in `seq` order, the current state of each channel named there (a put of its
//! `ChannelRecord`, or a delete when the row is gone) and deletes the outbox rows once the
//! bucket acknowledged the write. While NATS is away the rows wait and the relay retries, so an
//! outage delays the mirror but loses nothing. At start the whole bucket is reconciled with
//! Postgres (put what differs, delete what Postgres lacks). All writers of the bucket hold one
//! Postgres advisory lock, so two setup-api processes never interleave their writes.

use async_nats::jetstream::kv;
use futures_util::StreamExt;
use sqlx::PgPool;
use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::{watch, Notify};
use tokio_util::sync::CancellationToken;

use hookline_shared::channel::ChannelRecord;
use hookline_shared::config::Config;
use hookline_shared::jetstream;

use crate::db::{self, ChannelRow};
use crate::metrics::{ApiMetrics, MirrorLabels};

/// The advisory lock every writer of the bucket holds ("hookline" in ASCII).
const MIRROR_LOCK: i64 = 0x686f_6f6b_6c69_6e65;
/// Outbox rows handled per round.
const BATCH: i64 = 256;
/// How often the relay looks at the outbox when nothing wakes it (other processes' changes).
const POLL: Duration = Duration::from_millis(500);
const MAX_BACKOFF: Duration = Duration::from_secs(5);

#[derive(Debug, thiserror::Error)]
pub enum MirrorError {
    #[error("postgres: {0}")]
    Postgres(String),
    #[error("the KV bucket: {0}")]
    Bucket(String),
}

impl From<sqlx::Error> for MirrorError {
    fn from(e: sqlx::Error) -> Self {
        MirrorError::Postgres(db::describe(&e))
    }
}

/// The handle the API holds: wake the relay, or wait for a change to be relayed.
pub struct Mirror {
    /// The bucket was reconciled and the relay runs.
    live: std::sync::atomic::AtomicBool,
    wake: Notify,
    rounds: watch::Sender<u64>,
    metrics: Arc<ApiMetrics>,
}

impl Mirror {
    pub fn new(metrics: Arc<ApiMetrics>) -> Arc<Self> {
        Arc::new(Mirror { live: std::sync::atomic::AtomicBool::new(false), wake: Notify::new(), rounds: watch::Sender::new(0), metrics })
    }

    /// Whether the bucket was reconciled and the relay runs (NATS may still drop out later:
    /// the outbox then holds the changes).
    pub fn is_live(&self) -> bool {
        self.live.load(std::sync::atomic::Ordering::Acquire)
    }

    fn set_live(&self, live: bool) {
        self.live.store(live, std::sync::atomic::Ordering::Release);
        self.metrics.mirror_live.set(i64::from(live));
    }

    /// A change was committed: relay it now rather than at the next poll.
    pub fn kick(&self) {
        self.wake.notify_one();
    }

    /// Waits until the outbox row `seq` is relayed (the bucket acknowledged the change), up to
    /// `timeout`. Whether it was.
    pub async fn wait_relayed(&self, pool: &PgPool, seq: i64, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        let mut rounds = self.rounds.subscribe();
        loop {
            match db::outbox_contains(pool, seq).await {
                Ok(false) => return true,
                Ok(true) => {}
                Err(_) => return false,
            }
            let remaining = deadline.saturating_duration_since(Instant::now());
            if remaining.is_zero() {
                return false;
            }
            if let Ok(Err(_)) = tokio::time::timeout(remaining, rounds.changed()).await {
                // The relay is gone; poll instead.
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }

    fn round_done(&self) {
        self.rounds.send_modify(|n| *n = n.wrapping_add(1));
    }
}

fn count(metrics: &ApiMetrics, op: &'static str, outcome: &'static str) {
    metrics.mirror_writes.get_or_create(&MirrorLabels { op, outcome }).inc();
}

/// Writes the channel's current state to the bucket: its record, or a delete when it is gone.
async fn publish(store: &kv::Store, metrics: &ApiMetrics, id: &str, row: Option<&ChannelRow>) -> Result<(), MirrorError> {
    match row {
        Some(row) => {
            let record = row.to_record().map_err(|_| MirrorError::Postgres(format!("channel {id}: unreadable row")))?;
            let json = serde_json::to_vec(&record).map_err(|e| MirrorError::Postgres(format!("channel {id}: {e}")))?;
            let result = store.put(id, json.into()).await;
            count(metrics, "put", if result.is_ok() { "ok" } else { "error" });
            result.map(|_| ()).map_err(|e| MirrorError::Bucket(format!("put {id}: {e}")))
        }
        None => {
            let result = store.delete(id).await;
            count(metrics, "delete", if result.is_ok() { "ok" } else { "error" });
            result.map_err(|e| MirrorError::Bucket(format!("delete {id}: {e}")))
        }
    }
}

/// One pass over the outbox: how many rows were relayed. Zero when another process holds the
/// lock.
pub async fn relay_round(pool: &PgPool, store: &kv::Store, metrics: &ApiMetrics) -> Result<usize, MirrorError> {
    let mut tx = pool.begin().await?;
    let locked: bool = sqlx::query_scalar("SELECT pg_try_advisory_xact_lock($1)").bind(MIRROR_LOCK).fetch_one(&mut *tx).await?;
    if !locked {
        tx.rollback().await?;
        return Ok(0);
    }
    let rows: Vec<(i64, String)> =
        sqlx::query_as("SELECT seq, channel_id FROM channel_outbox ORDER BY seq LIMIT $1").bind(BATCH).fetch_all(&mut *tx).await?;
    // Each channel once, in the order of its last change in the batch, with all its rows.
    let mut channels: Vec<(String, Vec<i64>)> = Vec::new();
    for (seq, id) in rows {
        match channels.iter().position(|(c, _)| *c == id) {
            Some(i) => {
                let (c, mut seqs) = channels.remove(i);
                seqs.push(seq);
                channels.push((c, seqs));
            }
            None => channels.push((id, vec![seq])),
        }
    }
    let mut relayed = 0;
    let mut failure = None;
    for (id, seqs) in channels {
        let row = db::get(&mut tx, &id).await?;
        match publish(store, metrics, &id, row.as_ref()).await {
            Ok(()) => {}
            Err(MirrorError::Postgres(message)) => {
                // A row that cannot become a record would block the outbox forever.
                tracing::error!(channel_id = %id, error = %message, "channel cannot be mirrored; skipped");
            }
            Err(e) => {
                failure = Some(e);
                break;
            }
        }
        sqlx::query("DELETE FROM channel_outbox WHERE seq = ANY($1)").bind(&seqs).execute(&mut *tx).await?;
        relayed += seqs.len();
    }
    tx.commit().await?;
    match failure {
        Some(e) => Err(e),
        None => Ok(relayed),
    }
}

/// What the reconciliation did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Reconciled {
    pub put: usize,
    pub deleted: usize,
    pub unchanged: usize,
}

/// Makes the bucket hold exactly Postgres's channels.
pub async fn reconcile(pool: &PgPool, store: &kv::Store, metrics: &ApiMetrics) -> Result<Reconciled, MirrorError> {
    let mut tx = pool.begin().await?;
    sqlx::query("SELECT pg_advisory_xact_lock($1)").bind(MIRROR_LOCK).execute(&mut *tx).await?;
    let mut stale: HashSet<String> = HashSet::new();
    let mut keys = store.keys().await.map_err(|e| MirrorError::Bucket(format!("list keys: {e}")))?;
    while let Some(key) = keys.next().await {
        stale.insert(key.map_err(|e| MirrorError::Bucket(format!("list keys: {e}")))?);
    }
    let mut done = Reconciled::default();
    for row in db::all(&mut tx).await? {
        stale.remove(&row.id);
        let current = store.get(row.id.as_str()).await.map_err(|e| MirrorError::Bucket(format!("get {}: {e}", row.id)))?;
        let same = match (&current, row.to_record()) {
            (Some(bytes), Ok(record)) => serde_json::from_slice::<ChannelRecord>(bytes).ok() == Some(record),
            _ => false,
        };
        if same {
            done.unchanged += 1;
        } else {
            match publish(store, metrics, &row.id, Some(&row)).await {
                Ok(()) => done.put += 1,
                Err(MirrorError::Postgres(message)) => {
                    tracing::error!(channel_id = %row.id, error = %message, "channel cannot be mirrored; skipped")
                }
                Err(e) => return Err(e),
            }
        }
    }
    for id in stale {
        publish(store, metrics, &id, None).await?;
        done.deleted += 1;
    }
    tx.commit().await?;
    Ok(done)
}

/// Connects to NATS and opens (or creates) the bucket, retrying until it works or `shutdown`.
pub async fn open_bucket(config: &Config, shutdown: &CancellationToken) -> Option<kv::Store> {
    loop {
        let attempt = async {
            let client = jetstream::connect(&config.nats, "hookline-setup-api").await?;
            let js = async_nats::jetstream::new(client);
            jetstream::channels_bucket(&js, &config.streams).await
        };
        tokio::select! {
            _ = shutdown.cancelled() => return None,
            opened = attempt => match opened {
                Ok(store) => return Some(store),
                Err(e) => tracing::warn!(error = %e, "the mirror cannot open the channels bucket yet; retrying"),
            },
        }
        tokio::select! {
            _ = shutdown.cancelled() => return None,
            _ = tokio::time::sleep(Duration::from_secs(2)) => {}
        }
    }
}

async fn refresh_pending(pool: &PgPool, metrics: &ApiMetrics) {
    if let Ok(n) = db::outbox_len(pool).await {
        metrics.outbox_pending.set(n);
    }
}

/// The mirror's task: open the bucket, reconcile it, then relay the outbox until `shutdown`,
/// and relay what is left once more (briefly) before returning.
pub async fn run(config: Config, pool: PgPool, mirror: Arc<Mirror>, shutdown: CancellationToken) {
    let metrics = mirror.metrics.clone();
    let Some(store) = open_bucket(&config, &shutdown).await else {
        return;
    };
    let mut backoff = Duration::from_millis(200);
    loop {
        match reconcile(&pool, &store, &metrics).await {
            Ok(r) => {
                tracing::info!(put = r.put, deleted = r.deleted, unchanged = r.unchanged, "channels bucket reconciled with Postgres");
                mirror.set_live(true);
                break;
            }
            Err(e) => {
                tracing::warn!(error = %e, retry_in = ?backoff, "cannot reconcile the channels bucket yet");
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    _ = tokio::time::sleep(backoff) => {}
                }
                backoff = (backoff * 2).min(MAX_BACKOFF);
            }
        }
    }
    backoff = Duration::from_millis(200);
    while !shutdown.is_cancelled() {
        let outcome = relay_round(&pool, &store, &metrics).await;
        mirror.round_done();
        refresh_pending(&pool, &metrics).await;
        match outcome {
            Ok(n) => {
                backoff = Duration::from_millis(200);
                if n > 0 {
                    tracing::debug!(changes = n, "channel changes mirrored");
                    continue;
                }
                tokio::select! {
                    _ = shutdown.cancelled() => {}
                    _ = mirror.wake.notified() => {}
                    _ = tokio::time::sleep(POLL) => {}
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, retry_in = ?backoff, "cannot mirror channel changes yet; they wait in the outbox");
                tokio::select! {
                    _ = shutdown.cancelled() => {}
                    _ = tokio::time::sleep(backoff) => {}
                }
                backoff = (backoff * 2).min(MAX_BACKOFF);
            }
        }
    }
    mirror.set_live(false);
    // Relay what the last requests wrote, without holding the shutdown up for long.
    match tokio::time::timeout(Duration::from_secs(3), relay_round(&pool, &store, &metrics)).await {
        Ok(Ok(n)) if n > 0 => tracing::info!(changes = n, "channel changes mirrored at shutdown"),
        Ok(Ok(_)) => {}
        Ok(Err(e)) => {
            tracing::warn!(error = %e, "changes left in the outbox at shutdown; the next start relays them")
        }
        Err(_) => tracing::warn!("changes left in the outbox at shutdown; the next start relays them"),
    }
    mirror.round_done();
}

/// Relays the outbox until it is empty, an error, or `budget` runs out (for `rotate-key`,
/// which may run while no setup-api does). How many changes were relayed.
pub async fn drain(config: &Config, pool: &PgPool, budget: Duration) -> Result<usize, MirrorError> {
    let metrics = ApiMetrics::new();
    let deadline = Instant::now() + budget;
    let never = CancellationToken::new();
    let store = tokio::time::timeout(budget, open_bucket(config, &never))
        .await
        .ok()
        .flatten()
        .ok_or_else(|| MirrorError::Bucket("NATS is not reachable".into()))?;
    let mut total = 0;
    loop {
        let remaining = deadline.saturating_duration_since(Instant::now());
        if remaining.is_zero() {
            return Ok(total);
        }
        match tokio::time::timeout(remaining, relay_round(pool, &store, &metrics)).await {
            Ok(Ok(0)) => {
                if db::outbox_len(pool).await? == 0 {
                    return Ok(total);
                }
                // Another process holds the lock and relays.
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Ok(Ok(n)) => total += n,
            Ok(Err(e)) => return Err(e),
            Err(_) => return Ok(total),
        }
    }
}

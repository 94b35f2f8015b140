//! The mirror: Postgres is the truth, the KV buckets are what the workers read:
//! `hookline_channels` (ingest) and `hookline_destinations` (the forwarders).
//!
//! Every change writes a row to its table's outbox (`channel_outbox`, `destination_outbox`) in
//! its own transaction. The relay publishes, in `seq` order, the current state of each row named
//! there (a put of its record, or a delete when the row is gone) and deletes the outbox rows
//! once the bucket acknowledged the write. While NATS is away the rows wait and the relay
//! retries, so an outage delays the mirror but loses nothing. At start each bucket is reconciled
//! with Postgres (put what differs, delete what Postgres lacks). All writers of the buckets hold
//! one Postgres advisory lock, so two setup-api processes never interleave their writes.
//!
//! What differs between the two tables is [`Mirrored`]: [`Channels`] here, and
//! `crate::destinations::db::Destinations`.

use async_nats::jetstream::kv;
use futures_util::StreamExt;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use serde::de::DeserializeOwned;
use serde::Serialize;
use sqlx::{PgConnection, PgPool};
use std::collections::HashSet;
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::{watch, Notify};
use tokio_util::sync::CancellationToken;

use hookline_shared::channel::ChannelRecord;
use hookline_shared::config::Config;
use hookline_shared::jetstream;

use crate::db;
use crate::destinations::db::Destinations;
use crate::metrics::{ApiMetrics, MirrorLabels};

/// The advisory lock every writer of the buckets holds ("hookline" in ASCII).
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

/// A row's current state as its bucket's record: `Err` (a message) when the row cannot become
/// one (it is then skipped, logged, rather than block the outbox forever).
pub(crate) type Current<R> = Result<R, String>;
/// Every row by id, as [`Current`] records.
pub(crate) type AllRows<R> = Vec<(String, Current<R>)>;

/// One table mirrored to one bucket: its outbox, how a row becomes the bucket's record, and its
/// metrics.
pub(crate) trait Mirrored {
    /// `channel` or `destination`, for logs.
    const WHAT: &'static str;
    /// `SELECT seq, <id> FROM <outbox> ORDER BY seq LIMIT $1`
    const OUTBOX_BATCH: &'static str;
    /// `DELETE FROM <outbox> WHERE seq = ANY($1)`
    const OUTBOX_DELETE: &'static str;
    /// `SELECT count(*) FROM <outbox>`
    const OUTBOX_LEN: &'static str;
    /// What the bucket holds, JSON.
    type Record: Serialize + DeserializeOwned + PartialEq + Send;

    /// The record of row `id` as it is now; `None` when the row is gone.
    fn current(conn: &mut PgConnection, id: &str) -> impl Future<Output = Result<Option<Current<Self::Record>>, sqlx::Error>> + Send;
    /// Every row, for the reconciliation.
    fn all(conn: &mut PgConnection) -> impl Future<Output = Result<AllRows<Self::Record>, sqlx::Error>> + Send;
    fn writes(metrics: &ApiMetrics) -> &Family<MirrorLabels, Counter>;
    fn pending(metrics: &ApiMetrics) -> &Gauge;
}

/// Channels, mirrored to `hookline_channels`.
pub(crate) struct Channels;

impl Mirrored for Channels {
    const WHAT: &'static str = "channel";
    const OUTBOX_BATCH: &'static str = "SELECT seq, channel_id FROM channel_outbox ORDER BY seq LIMIT $1";
    const OUTBOX_DELETE: &'static str = "DELETE FROM channel_outbox WHERE seq = ANY($1)";
    const OUTBOX_LEN: &'static str = "SELECT count(*) FROM channel_outbox";
    type Record = ChannelRecord;

    async fn current(conn: &mut PgConnection, id: &str) -> Result<Option<Current<ChannelRecord>>, sqlx::Error> {
        Ok(db::get_unscoped(conn, id).await?.map(|row| row.to_record().map_err(|_| format!("channel {id}: unreadable row"))))
    }

    async fn all(conn: &mut PgConnection) -> Result<AllRows<ChannelRecord>, sqlx::Error> {
        Ok(db::all(conn)
            .await?
            .into_iter()
            .map(|row| {
                let record = row.to_record().map_err(|_| format!("channel {}: unreadable row", row.id));
                (row.id, record)
            })
            .collect())
    }

    fn writes(metrics: &ApiMetrics) -> &Family<MirrorLabels, Counter> {
        &metrics.mirror_writes
    }

    fn pending(metrics: &ApiMetrics) -> &Gauge {
        &metrics.outbox_pending
    }
}

fn count<K: Mirrored>(metrics: &ApiMetrics, op: &'static str, outcome: &'static str) {
    K::writes(metrics).get_or_create(&MirrorLabels { op, outcome }).inc();
}

/// Writes a row's current state to the bucket: its record, or a delete when it is gone.
async fn publish<K: Mirrored>(
    store: &kv::Store,
    metrics: &ApiMetrics,
    id: &str,
    current: Option<Current<K::Record>>,
) -> Result<(), MirrorError> {
    match current {
        Some(record) => {
            let record = record.map_err(MirrorError::Postgres)?;
            let json = serde_json::to_vec(&record).map_err(|e| MirrorError::Postgres(format!("{} {id}: {e}", K::WHAT)))?;
            let result = store.put(id, json.into()).await;
            count::<K>(metrics, "put", if result.is_ok() { "ok" } else { "error" });
            result.map(|_| ()).map_err(|e| MirrorError::Bucket(format!("put {id}: {e}")))
        }
        None => {
            let result = store.delete(id).await;
            count::<K>(metrics, "delete", if result.is_ok() { "ok" } else { "error" });
            result.map_err(|e| MirrorError::Bucket(format!("delete {id}: {e}")))
        }
    }
}

/// One pass over the channel outbox: how many rows were relayed. Zero when another process
/// holds the lock.
pub async fn relay_round(pool: &PgPool, store: &kv::Store, metrics: &ApiMetrics) -> Result<usize, MirrorError> {
    relay::<Channels>(pool, store, metrics).await
}

/// One pass over `K`'s outbox: how many rows were relayed. Zero when another process holds the
/// lock.
pub(crate) async fn relay<K: Mirrored>(pool: &PgPool, store: &kv::Store, metrics: &ApiMetrics) -> Result<usize, MirrorError> {
    let mut tx = pool.begin().await?;
    let locked: bool = sqlx::query_scalar("SELECT pg_try_advisory_xact_lock($1)").bind(MIRROR_LOCK).fetch_one(&mut *tx).await?;
    if !locked {
        tx.rollback().await?;
        return Ok(0);
    }
    let rows: Vec<(i64, String)> = sqlx::query_as(K::OUTBOX_BATCH).bind(BATCH).fetch_all(&mut *tx).await?;
    // Each row once, in the order of its last change in the batch, with all its outbox rows.
    let mut changed: Vec<(String, Vec<i64>)> = Vec::new();
    for (seq, id) in rows {
        match changed.iter().position(|(c, _)| *c == id) {
            Some(i) => {
                let (c, mut seqs) = changed.remove(i);
                seqs.push(seq);
                changed.push((c, seqs));
            }
            None => changed.push((id, vec![seq])),
        }
    }
    let mut relayed = 0;
    let mut failure = None;
    for (id, seqs) in changed {
        let current = K::current(&mut tx, &id).await?;
        match publish::<K>(store, metrics, &id, current).await {
            Ok(()) => {}
            Err(MirrorError::Postgres(message)) => {
                // A row that cannot become a record would block the outbox forever.
                tracing::error!(id = %id, what = K::WHAT, error = %message, "cannot be mirrored; skipped");
            }
            Err(e) => {
                failure = Some(e);
                break;
            }
        }
        sqlx::query(K::OUTBOX_DELETE).bind(&seqs).execute(&mut *tx).await?;
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

/// Makes the channels bucket hold exactly Postgres's channels.
pub async fn reconcile(pool: &PgPool, store: &kv::Store, metrics: &ApiMetrics) -> Result<Reconciled, MirrorError> {
    reconcile_table::<Channels>(pool, store, metrics).await
}

/// Makes `K`'s bucket hold exactly Postgres's rows.
pub(crate) async fn reconcile_table<K: Mirrored>(
    pool: &PgPool,
    store: &kv::Store,
    metrics: &ApiMetrics,
) -> Result<Reconciled, MirrorError> {
    let mut tx = pool.begin().await?;
    sqlx::query("SELECT pg_advisory_xact_lock($1)").bind(MIRROR_LOCK).execute(&mut *tx).await?;
    let mut stale: HashSet<String> = HashSet::new();
    let mut keys = store.keys().await.map_err(|e| MirrorError::Bucket(format!("list keys: {e}")))?;
    while let Some(key) = keys.next().await {
        stale.insert(key.map_err(|e| MirrorError::Bucket(format!("list keys: {e}")))?);
    }
    let mut done = Reconciled::default();
    for (id, record) in K::all(&mut tx).await? {
        stale.remove(&id);
        let bucket = store.get(id.as_str()).await.map_err(|e| MirrorError::Bucket(format!("get {id}: {e}")))?;
        let same = match (&bucket, &record) {
            (Some(bytes), Ok(record)) => serde_json::from_slice::<K::Record>(bytes).ok().as_ref() == Some(record),
            _ => false,
        };
        if same {
            done.unchanged += 1;
        } else {
            match publish::<K>(store, metrics, &id, Some(record)).await {
                Ok(()) => done.put += 1,
                Err(MirrorError::Postgres(message)) => {
                    tracing::error!(id = %id, what = K::WHAT, error = %message, "cannot be mirrored; skipped")
                }
                Err(e) => return Err(e),
            }
        }
    }
    for id in stale {
        publish::<K>(store, metrics, &id, None).await?;
        done.deleted += 1;
    }
    tx.commit().await?;
    Ok(done)
}

/// The buckets the mirror writes.
#[derive(Clone)]
pub struct Buckets {
    pub channels: kv::Store,
    pub destinations: kv::Store,
}

/// Connects to NATS and opens (or creates) the buckets, retrying until it works or `shutdown`.
pub async fn open_buckets(config: &Config, shutdown: &CancellationToken) -> Option<Buckets> {
    loop {
        let attempt = async {
            let client = jetstream::connect(&config.nats, "hookline-setup-api").await?;
            let js = async_nats::jetstream::new(client);
            let channels = jetstream::channels_bucket(&js, &config.streams).await?;
            let destinations = jetstream::destinations_bucket(&js, &config.streams).await?;
            Ok::<_, jetstream::NatsSetupError>(Buckets { channels, destinations })
        };
        tokio::select! {
            _ = shutdown.cancelled() => return None,
            opened = attempt => match opened {
                Ok(buckets) => return Some(buckets),
                Err(e) => tracing::warn!(error = %e, "the mirror cannot open its buckets yet; retrying"),
            },
        }
        tokio::select! {
            _ = shutdown.cancelled() => return None,
            _ = tokio::time::sleep(Duration::from_secs(2)) => {}
        }
    }
}

async fn outbox_len<K: Mirrored>(pool: &PgPool) -> Result<i64, sqlx::Error> {
    sqlx::query_scalar(K::OUTBOX_LEN).fetch_one(pool).await
}

async fn refresh_pending(pool: &PgPool, metrics: &ApiMetrics) {
    if let Ok(n) = outbox_len::<Channels>(pool).await {
        Channels::pending(metrics).set(n);
    }
    if let Ok(n) = outbox_len::<Destinations>(pool).await {
        Destinations::pending(metrics).set(n);
    }
}

/// One pass over both outboxes: how many rows were relayed, and the first failure. A failure of
/// one bucket does not keep the other from being relayed.
async fn relay_all(pool: &PgPool, buckets: &Buckets, metrics: &ApiMetrics) -> (usize, Option<MirrorError>) {
    let mut relayed = 0;
    let mut failure = None;
    match relay::<Channels>(pool, &buckets.channels, metrics).await {
        Ok(n) => relayed += n,
        Err(e) => failure = Some(e),
    }
    match relay::<Destinations>(pool, &buckets.destinations, metrics).await {
        Ok(n) => relayed += n,
        Err(e) => failure = failure.or(Some(e)),
    }
    (relayed, failure)
}

/// The mirror's task: open the buckets, reconcile them, then relay the outboxes until
/// `shutdown`, and relay what is left once more (briefly) before returning.
pub async fn run(config: Config, pool: PgPool, mirror: Arc<Mirror>, shutdown: CancellationToken) {
    let metrics = mirror.metrics.clone();
    let Some(buckets) = open_buckets(&config, &shutdown).await else {
        return;
    };
    let mut backoff = Duration::from_millis(200);
    let (mut channels_done, mut destinations_done) = (false, false);
    loop {
        if !channels_done {
            match reconcile_table::<Channels>(&pool, &buckets.channels, &metrics).await {
                Ok(r) => {
                    tracing::info!(put = r.put, deleted = r.deleted, unchanged = r.unchanged, "channels bucket reconciled with Postgres");
                    channels_done = true;
                }
                Err(e) => tracing::warn!(error = %e, retry_in = ?backoff, "cannot reconcile the channels bucket yet"),
            }
        }
        if !destinations_done {
            match reconcile_table::<Destinations>(&pool, &buckets.destinations, &metrics).await {
                Ok(r) => {
                    tracing::info!(
                        put = r.put,
                        deleted = r.deleted,
                        unchanged = r.unchanged,
                        "destinations bucket reconciled with Postgres"
                    );
                    destinations_done = true;
                }
                Err(e) => tracing::warn!(error = %e, retry_in = ?backoff, "cannot reconcile the destinations bucket yet"),
            }
        }
        if channels_done && destinations_done {
            mirror.set_live(true);
            break;
        }
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(backoff) => {}
        }
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
    backoff = Duration::from_millis(200);
    while !shutdown.is_cancelled() {
        let (n, failure) = relay_all(&pool, &buckets, &metrics).await;
        mirror.round_done();
        refresh_pending(&pool, &metrics).await;
        match failure {
            None => {
                backoff = Duration::from_millis(200);
                if n > 0 {
                    tracing::debug!(changes = n, "changes mirrored");
                    continue;
                }
                tokio::select! {
                    _ = shutdown.cancelled() => {}
                    _ = mirror.wake.notified() => {}
                    _ = tokio::time::sleep(POLL) => {}
                }
            }
            Some(e) => {
                tracing::warn!(error = %e, retry_in = ?backoff, "cannot mirror changes yet; they wait in the outbox");
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
    match tokio::time::timeout(Duration::from_secs(3), relay_all(&pool, &buckets, &metrics)).await {
        Ok((n, None)) if n > 0 => tracing::info!(changes = n, "changes mirrored at shutdown"),
        Ok((_, None)) => {}
        Ok((_, Some(e))) => {
            tracing::warn!(error = %e, "changes left in the outbox at shutdown; the next start relays them")
        }
        Err(_) => tracing::warn!("changes left in the outbox at shutdown; the next start relays them"),
    }
    mirror.round_done();
}

/// Relays the outboxes until they are empty, an error, or `budget` runs out (for `rotate-key`,
/// which may run while no setup-api does). How many changes were relayed.
pub async fn drain(config: &Config, pool: &PgPool, budget: Duration) -> Result<usize, MirrorError> {
    let metrics = ApiMetrics::new();
    let deadline = Instant::now() + budget;
    let never = CancellationToken::new();
    let buckets = tokio::time::timeout(budget, open_buckets(config, &never))
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
        match tokio::time::timeout(remaining, relay_all(pool, &buckets, &metrics)).await {
            Ok((_, Some(e))) => return Err(e),
            Ok((0, None)) => {
                if outbox_len::<Channels>(pool).await? == 0 && outbox_len::<Destinations>(pool).await? == 0 {
                    return Ok(total);
                }
                // Another process holds the lock and relays.
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Ok((n, None)) => total += n,
            Err(_) => return Ok(total),
        }
    }
}

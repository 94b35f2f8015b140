//! Who delivers an ordered destination: a lease in the KV bucket `hookline_order_leases`, one key
//! per destination. A process creates the key (only one can), renews it every two seconds by
//! compare-and-set on its revision, and deletes it when it stops; a process that dies stops
//! renewing and the bucket's age limit removes the key after [`TTL`], so another takes over.
//! The holder counts its lease valid for [`TTL`] less a margin after its last renewal, so it
//! stops delivering before anyone else can start.

use async_nats::jetstream::kv;
use std::time::{Duration, Instant};

/// The bucket of leases (its `max_age` is [`TTL`]).
pub const LEASES_BUCKET: &str = hookline_shared::names::ORDER_LEASES_BUCKET;
/// How long a lease outlives its last renewal on the server.
pub const TTL: Duration = Duration::from_secs(6);
/// How often the holder renews.
pub const RENEW_EVERY: Duration = Duration::from_secs(2);
/// The holder's lease ends this long before the server's, so two never deliver at once.
const MARGIN: Duration = Duration::from_secs(2);

pub struct Lease {
    store: kv::Store,
    key: String,
    instance: String,
    revision: u64,
    renewed_at: Instant,
}

/// Why a lease ended.
#[derive(Debug, PartialEq, Eq)]
pub enum Lost {
    /// Another process holds it now.
    Taken,
    /// Not renewed in time (NATS unreachable).
    Expired,
}

impl Lease {
    /// The lease of `key`, when no one holds it.
    pub async fn try_acquire(store: &kv::Store, key: &str, instance: &str) -> Option<Lease> {
        let renewed_at = Instant::now();
        match store.create(key, instance.as_bytes().to_vec().into()).await {
            Ok(revision) => {
                Some(Lease { store: store.clone(), key: key.to_string(), instance: instance.to_string(), revision, renewed_at })
            }
            Err(e) if e.kind() == kv::CreateErrorKind::AlreadyExists => None,
            Err(e) => {
                tracing::debug!(destination = key, error = %e, "cannot take the ordered destination's lease now; retrying");
                None
            }
        }
    }

    /// Whether this process may still deliver.
    pub fn valid(&self) -> bool {
        self.renewed_at.elapsed() < TTL - MARGIN
    }

    pub async fn renew(&mut self) -> Result<(), Lost> {
        let at = Instant::now();
        match self.store.update(&self.key, self.instance.as_bytes().to_vec().into(), self.revision).await {
            Ok(revision) => {
                self.revision = revision;
                self.renewed_at = at;
                Ok(())
            }
            Err(e) if e.kind() == kv::UpdateErrorKind::WrongLastRevision => Err(Lost::Taken),
            Err(e) => {
                tracing::warn!(destination = %self.key, error = %e, "cannot renew the ordered destination's lease");
                if self.valid() {
                    Ok(())
                } else {
                    Err(Lost::Expired)
                }
            }
        }
    }

    /// Gives the lease up at once, so that another process takes over without waiting.
    pub async fn release(self) {
        if let Err(e) = self.store.delete_expect_revision(&self.key, Some(self.revision)).await {
            tracing::debug!(destination = %self.key, error = %e, "lease not released; it expires");
        }
    }
}

//! An adaptive bound on deliveries in flight: it halves on every retryable failure (down to a
//! floor) and grows by one on every success (up to the ceiling), so a failing target is not
//! hammered and a recovered one gets full speed back.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use tokio::sync::Notify;

pub struct AdaptiveLimit {
    min: usize,
    max: usize,
    limit: AtomicUsize,
    in_flight: AtomicUsize,
    changed: Notify,
}

/// One delivery's place; released on drop.
pub struct Slot {
    owner: Arc<AdaptiveLimit>,
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.owner.in_flight.fetch_sub(1, Ordering::AcqRel);
        self.owner.changed.notify_waiters();
    }
}

impl AdaptiveLimit {
    pub fn new(min: usize, max: usize) -> Arc<Self> {
        let min = min.max(1);
        let max = max.max(min);
        Arc::new(AdaptiveLimit { min, max, limit: AtomicUsize::new(max), in_flight: AtomicUsize::new(0), changed: Notify::new() })
    }

    pub fn limit(&self) -> usize {
        self.limit.load(Ordering::Acquire)
    }

    pub fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::Acquire)
    }

    /// Waits for room under the current limit.
    pub async fn acquire(self: &Arc<Self>) -> Slot {
        loop {
            let notified = self.changed.notified();
            let current = self.in_flight.load(Ordering::Acquire);
            if current < self.limit() && self.in_flight.compare_exchange(current, current + 1, Ordering::AcqRel, Ordering::Acquire).is_ok()
            {
                return Slot { owner: self.clone() };
            }
            notified.await;
        }
    }

    pub fn on_success(&self) {
        let _ = self.limit.fetch_update(Ordering::AcqRel, Ordering::Acquire, |l| Some((l + 1).min(self.max)));
        self.changed.notify_waiters();
    }

    pub fn on_failure(&self) {
        let _ = self.limit.fetch_update(Ordering::AcqRel, Ordering::Acquire, |l| Some((l / 2).max(self.min)));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn halves_on_failure_and_grows_back_on_success() {
        let l = AdaptiveLimit::new(2, 64);
        assert_eq!(l.limit(), 64);
        for _ in 0..10 {
            l.on_failure();
        }
        assert_eq!(l.limit(), 2);
        for _ in 0..100 {
            l.on_success();
        }
        assert_eq!(l.limit(), 64);
    }

    #[tokio::test]
    async fn no_more_slots_than_the_limit() {
        let l = AdaptiveLimit::new(1, 2);
        let a = l.acquire().await;
        let _b = l.acquire().await;
        assert_eq!(l.in_flight(), 2);
        let waiting = tokio::spawn({
            let l = l.clone();
            async move { l.acquire().await }
        });
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        assert!(!waiting.is_finished(), "a third slot was granted over the limit");
        drop(a);
        let _c = tokio::time::timeout(std::time::Duration::from_secs(1), waiting).await.expect("granted after release").expect("joined");
        assert_eq!(l.in_flight(), 2);
    }
}

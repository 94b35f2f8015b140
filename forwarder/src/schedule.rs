//! The durable retry schedule: after attempt n fails, the delay before attempt n+1, with jitter,
//! and never shorter than what the target asked for with `Retry-After`.

use std::time::Duration;

#[derive(Debug, Clone)]
pub struct RetrySchedule {
    delays: Vec<Duration>,
    jitter: f64,
}

impl RetrySchedule {
    pub fn new(delays_s: &[u64], jitter: f64) -> Self {
        RetrySchedule { delays: delays_s.iter().map(|s| Duration::from_secs(*s)).collect(), jitter: jitter.clamp(0.0, 1.0) }
    }

    /// Attempts in all: the first, then one per delay.
    pub fn max_attempts(&self) -> usize {
        self.delays.len() + 1
    }

    /// The delay after failed attempt `attempt` (1-based), or None when attempts are exhausted.
    /// `unit` in [0, 1) picks the jitter; `retry_after` is the target's own wish.
    pub fn delay_after(&self, attempt: usize, unit: f64, retry_after: Option<Duration>) -> Option<Duration> {
        let base = *self.delays.get(attempt.checked_sub(1)?)?;
        // Jitter spreads retries of events that failed together: base × [1 − j, 1 + j).
        let factor = 1.0 - self.jitter + 2.0 * self.jitter * unit.clamp(0.0, 1.0);
        let jittered = base.mul_f64(factor);
        let longest = self.delays.iter().max().copied().unwrap_or(base);
        // Honour Retry-After, but within the schedule's longest delay.
        Some(match retry_after {
            Some(wish) => jittered.max(wish.min(longest)),
            None => jittered,
        })
    }
}

/// A number in [0, 1) for jitter.
pub fn random_unit() -> f64 {
    let mut b = [0u8; 8];
    if getrandom::fill(&mut b).is_err() {
        return 0.5;
    }
    (u64::from_le_bytes(b) >> 11) as f64 / (1u64 << 53) as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_follow_the_schedule_within_the_jitter() {
        let s = RetrySchedule::new(&[5, 30, 120], 0.2);
        assert_eq!(s.max_attempts(), 4);
        assert_eq!(s.delay_after(1, 0.5, None), Some(Duration::from_secs(5)));
        assert_eq!(s.delay_after(2, 0.0, None), Some(Duration::from_secs(24)));
        let high = s.delay_after(3, 0.999_999, None).expect("third");
        assert!(high < Duration::from_secs(144) && high > Duration::from_secs(143), "{high:?}");
        assert_eq!(s.delay_after(4, 0.5, None), None, "attempts exhausted");
        assert_eq!(s.delay_after(0, 0.5, None), None);
    }

    #[test]
    fn retry_after_is_honoured_up_to_the_longest_delay() {
        let s = RetrySchedule::new(&[1, 10], 0.0);
        assert_eq!(s.delay_after(1, 0.5, Some(Duration::from_secs(2))), Some(Duration::from_secs(2)));
        assert_eq!(s.delay_after(2, 0.5, Some(Duration::from_secs(2))), Some(Duration::from_secs(10)));
        assert_eq!(s.delay_after(1, 0.5, Some(Duration::from_secs(3600))), Some(Duration::from_secs(10)));
    }

    #[test]
    fn random_units_are_in_range() {
        for _ in 0..1000 {
            let u = random_unit();
            assert!((0.0..1.0).contains(&u));
        }
    }
}

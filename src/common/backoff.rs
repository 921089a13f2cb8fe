//! Exponential backoff with full jitter: attempt `k` waits a uniformly random time in
//! `[0, min(max, base · 2^k)]`. Full jitter spreads retries of many nodes that failed together
//! (a seed restarting, a partition healing) instead of bunching them at the same instants.
//!
//! The caller passes the random source, so the protocol core stays deterministic under its seed.

use rand::Rng;
use std::time::Duration;

/// Exponential backoff with full jitter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    /// The cap of the first wait.
    pub base: Duration,
    /// No wait is longer than this.
    pub max: Duration,
}

impl Backoff {
    /// A backoff from `base` doubling up to `max`.
    pub fn new(base: Duration, max: Duration) -> Self {
        Backoff { base, max }
    }

    /// The longest wait of attempt `attempt` (0-based): `min(max, base · 2^attempt)`.
    pub fn cap(&self, attempt: u32) -> Duration {
        let factor = 1u32 << attempt.min(20);
        self.base.saturating_mul(factor).min(self.max)
    }

    /// The wait before attempt `attempt + 1`: uniform in `[0, cap(attempt)]`.
    pub fn delay(&self, attempt: u32, rng: &mut impl Rng) -> Duration {
        let cap = self.cap(attempt).as_micros() as u64;
        Duration::from_micros(rng.gen_range(0..=cap))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn caps_double_up_to_max_and_delays_fill_the_range() {
        let b = Backoff::new(Duration::from_millis(100), Duration::from_secs(2));
        let caps: Vec<u64> = (0..7).map(|k| b.cap(k).as_millis() as u64).collect();
        assert_eq!(caps, [100, 200, 400, 800, 1600, 2000, 2000]);
        assert_eq!(b.cap(u32::MAX), Duration::from_secs(2));
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(3);
        let delays: Vec<Duration> = (0..2000).map(|_| b.delay(3, &mut rng)).collect();
        assert!(delays.iter().all(|d| *d <= Duration::from_millis(800)));
        // Full jitter: both ends of the range are reached, not only the upper half.
        assert!(delays.iter().any(|d| *d < Duration::from_millis(80)));
        assert!(delays.iter().any(|d| *d > Duration::from_millis(720)));
        let mean = delays.iter().sum::<Duration>() / delays.len() as u32;
        assert!(
            (Duration::from_millis(360)..Duration::from_millis(440)).contains(&mean),
            "{mean:?}"
        );
    }
}

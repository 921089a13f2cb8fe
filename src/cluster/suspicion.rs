//! Lifeguard's two local mechanisms: the dynamic suspicion timeout and local health awareness.
//!
//! A suspicion starts with the longest timeout, `max`, and shrinks towards `min` as `k`
//! independent members confirm it: `timeout = max - (max - min) * ln(c + 1) / ln(k + 1)` after
//! `c` confirmations. A node that merely hears one suspicion waits long enough for the suspect
//! to refute; a node that many members failed to reach is declared dead quickly.

use crate::identity::NodeId;
use std::time::Duration;

use crate::common::Time;

/// `min = mult * max(1, log10(n)) * interval` (memberlist's formula).
pub(crate) fn suspicion_min(mult: u32, n: usize, interval: Duration) -> Duration {
    let scale = (n.max(1) as f64).log10().max(1.0);
    interval.mul_f64(f64::from(mult) * scale)
}

/// A running suspicion about one member.
#[derive(Debug, Clone)]
pub(crate) struct Suspicion {
    /// When this node started suspecting.
    pub start: Time,
    pub min: Duration,
    pub max: Duration,
    /// Confirmations that bring the timeout down to `min`.
    pub k: u32,
    /// Who suspected it: the first suspector, then each confirmation.
    pub suspectors: Vec<NodeId>,
    /// Which arming of the timer is current.
    pub generation: u64,
    /// When the last-chance probe was sent (see `Swim::on_suspicion_timeout`).
    pub last_chance: Option<Time>,
}

impl Suspicion {
    /// With `k == 0` the timeout is `min` from the start (no confirmations to wait for).
    pub fn new(
        from: NodeId,
        start: Time,
        min: Duration,
        max: Duration,
        k: u32,
        generation: u64,
    ) -> Self {
        debug_assert!(min <= max);
        Suspicion {
            start,
            min,
            max,
            k,
            suspectors: vec![from],
            generation,
            last_chance: None,
        }
    }

    /// Records an independent confirmation. Returns true if it was new and counted (the
    /// timeout may have shrunk); false for a repeat or once `k` are in.
    pub fn confirm(&mut self, from: &NodeId) -> bool {
        if self.confirmations() >= self.k || self.suspectors.contains(from) {
            return false;
        }
        self.suspectors.push(from.clone());
        true
    }

    /// Confirmations after the first suspicion.
    pub fn confirmations(&self) -> u32 {
        self.suspectors.len() as u32 - 1
    }

    /// Total timeout after the confirmations so far.
    pub fn timeout(&self) -> Duration {
        if self.k == 0 {
            return self.min;
        }
        let frac = (f64::from(self.confirmations()) + 1.0).ln() / (f64::from(self.k) + 1.0).ln();
        let span = self.max.saturating_sub(self.min);
        self.max
            .saturating_sub(span.mul_f64(frac.clamp(0.0, 1.0)))
            .max(self.min)
    }

    /// When the suspect is declared dead unless it refutes.
    pub fn deadline(&self) -> Time {
        self.start + self.timeout()
    }
}

/// Local health multiplier: grows when this node misses acks or nacks or has to refute, shrinks
/// with every successful probe. Probe interval and timeout are stretched by `score + 1`.
#[derive(Debug, Clone, Default)]
pub(crate) struct Awareness {
    score: u32,
    max: u32,
}

impl Awareness {
    pub fn new(max: u32) -> Self {
        Awareness { score: 0, max }
    }

    pub fn score(&self) -> u32 {
        self.score
    }

    pub fn apply(&mut self, delta: i32) {
        let s = i64::from(self.score) + i64::from(delta);
        self.score = s.clamp(0, i64::from(self.max)) as u32;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(s: &str) -> NodeId {
        NodeId::new(s).unwrap()
    }

    #[test]
    fn min_timeout_table() {
        let i = Duration::from_secs(1);
        for (n, want_ms) in [(0, 4000), (1, 4000), (10, 4000), (100, 8000), (1000, 12000)] {
            assert_eq!(
                suspicion_min(4, n, i),
                Duration::from_millis(want_ms),
                "n={n}"
            );
        }
    }

    #[test]
    fn timeout_shrinks_with_confirmations() {
        let (min, max) = (Duration::from_secs(2), Duration::from_secs(12));
        let mut s = Suspicion::new(id("a"), Time::ZERO, min, max, 3, 0);
        assert_eq!(s.timeout(), max);
        assert!(
            !s.confirm(&id("a")),
            "the first suspector does not confirm itself"
        );
        assert!(s.confirm(&id("b")));
        // 12 - 10 * ln 2 / ln 4 = 7 s
        assert_eq!(s.timeout(), Duration::from_secs(7));
        assert!(s.confirm(&id("c")));
        assert!(s.confirm(&id("d")));
        assert_eq!(s.timeout(), min);
        assert!(!s.confirm(&id("e")), "no more than k confirmations count");
        assert_eq!(s.deadline(), Time::ZERO + min);
    }

    #[test]
    fn k_zero_means_min_at_once() {
        let s = Suspicion::new(
            id("a"),
            Time::ZERO,
            Duration::from_secs(2),
            Duration::from_secs(9),
            0,
            0,
        );
        assert_eq!(s.timeout(), Duration::from_secs(2));
    }

    #[test]
    fn awareness_is_clamped() {
        let mut a = Awareness::new(3);
        a.apply(-1);
        assert_eq!(a.score(), 0);
        a.apply(5);
        assert_eq!(a.score(), 3);
        a.apply(-2);
        assert_eq!(a.score(), 1);
    }
}

//! The replay window: a sealed frame is opened at most once, and only while it is fresh.
//!
//! Every sealed frame carries, under the AEAD, the wall-clock time its sender sealed it
//! (`sent_ms`, milliseconds since the Unix epoch) and a random 24-byte nonce. A receiver
//! admits a frame when:
//! 1. `sent_ms` is within `tolerance` of its own clock, either way; otherwise it is **stale**;
//! 2. `sent_ms` is above the window's `floor` (below); otherwise it is **stale**;
//! 3. the pair `(sent_ms, nonce)` was not admitted before; otherwise it is **replayed**.
//!
//! The window remembers the pairs it admitted, ordered by `sent_ms`. A pair whose `sent_ms`
//! falls more than `tolerance` behind the clock is forgotten, and the floor rises to its
//! `sent_ms`. The floor only rises, so the rule holds whatever the clock does: *every frame
//! admitted with `sent_ms` above the floor is remembered*. So a frame admitted once is refused
//! forever after, as replayed while remembered and as stale after that.
//!
//! **Bounded under any input.** The window holds at most `capacity` pairs (about 40 bytes each
//! with the tree's overhead: 2.5 MiB at the default 65,536). Only frames that authenticated
//! reach it, so only a key holder can fill it. When an admission would go over the bound, the
//! oldest pair is forgotten and the floor rises to its `sent_ms`: the window shrinks from its
//! old end rather than forget a pair it may still need. Under a flood of `r` frames a second,
//! it covers the last `capacity / r` seconds: an honest frame older than that (a slow link or a
//! sender's clock behind by more) is refused as stale, never a replay admitted. Honest traffic
//! is far below the bound: a member of a 1,000-node cluster receives a few tens of frames a
//! second, a few thousand in the two tolerances a pair may be remembered.
//!
//! **Clocks.** The tolerance covers clock skew between members plus a frame's time in flight
//! (a stream record may take up to `read_timeout` to arrive). Members' clocks must agree
//! within it (NTP keeps them within milliseconds); a member whose clock is off by more neither
//! opens the others' frames nor gets its own opened, and is soon declared failed. A receiver
//! whose clock ran ahead by more than the tolerance and was then set back refuses frames until
//! real time passes its floor: that is, for as long again as its clock was wrong.
//!
//! The window reads no clock: the caller passes `now_ms`.

use crate::identity::NONCE_BYTES;
use std::collections::BTreeSet;
use std::time::Duration;

/// Default clock-skew tolerance: a sealed frame more than this old or this far in the future
/// is stale.
pub const CLOCK_SKEW_MAX_DEFAULT: Duration = Duration::from_secs(60);
/// Default number of sealed frames remembered.
pub const REPLAY_CACHE_MAX_DEFAULT: usize = 1 << 16;

/// Why a sealed frame that authenticated was not admitted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ReplayError {
    /// Sealed too long ago (or too far ahead) for the window to vouch for it.
    #[error("stale frame: sealed at {sent_ms} ms, now {now_ms} ms")]
    Stale {
        /// The sender's time stamp.
        sent_ms: u64,
        /// This node's clock.
        now_ms: u64,
    },
    /// A frame admitted before.
    #[error("replayed frame")]
    Replayed,
}

/// The frames admitted lately, to refuse them a second time (see the module doc).
#[derive(Debug, Clone)]
pub struct ReplayWindow {
    tolerance_ms: u64,
    capacity: usize,
    /// Admitted `(sent_ms, nonce)` pairs above the floor.
    seen: BTreeSet<(u64, [u8; NONCE_BYTES])>,
    /// Frames with `sent_ms` at or below this are refused: their pairs may be forgotten.
    floor_ms: u64,
}

impl ReplayWindow {
    /// A window admitting frames within `tolerance` of the clock, remembering at most
    /// `capacity` of them (at least 1).
    pub fn new(tolerance: Duration, capacity: usize) -> Self {
        ReplayWindow {
            tolerance_ms: tolerance.as_millis().try_into().unwrap_or(u64::MAX),
            capacity: capacity.max(1),
            seen: BTreeSet::new(),
            floor_ms: 0,
        }
    }

    /// Admits the frame sealed at `sent_ms` with `nonce`, or says why not; `now_ms` is this
    /// node's wall clock.
    pub fn admit(
        &mut self,
        now_ms: u64,
        sent_ms: u64,
        nonce: &[u8; NONCE_BYTES],
    ) -> Result<(), ReplayError> {
        self.expire(now_ms);
        if sent_ms.abs_diff(now_ms) > self.tolerance_ms || sent_ms <= self.floor_ms {
            return Err(ReplayError::Stale { sent_ms, now_ms });
        }
        if !self.seen.insert((sent_ms, *nonce)) {
            return Err(ReplayError::Replayed);
        }
        if self.seen.len() > self.capacity {
            self.forget_oldest();
        }
        debug_assert!(self.seen.len() <= self.capacity);
        Ok(())
    }

    /// Forgets the pairs too old to be admitted anyway.
    fn expire(&mut self, now_ms: u64) {
        let horizon = now_ms.saturating_sub(self.tolerance_ms);
        while self.seen.first().is_some_and(|(s, _)| *s < horizon) {
            self.forget_oldest();
        }
    }

    fn forget_oldest(&mut self) {
        if let Some((sent_ms, _)) = self.seen.pop_first() {
            self.floor_ms = self.floor_ms.max(sent_ms);
        }
    }

    /// Frames remembered now.
    pub fn len(&self) -> usize {
        self.seen.len()
    }

    /// Whether no frame is remembered.
    pub fn is_empty(&self) -> bool {
        self.seen.is_empty()
    }

    /// Frames sealed at or before this are refused as stale whatever the clock says.
    pub fn floor_ms(&self) -> u64 {
        self.floor_ms
    }
}

impl Default for ReplayWindow {
    fn default() -> Self {
        ReplayWindow::new(CLOCK_SKEW_MAX_DEFAULT, REPLAY_CACHE_MAX_DEFAULT)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const NOW: u64 = 1_700_000_000_000;

    fn nonce(i: u64) -> [u8; NONCE_BYTES] {
        let mut n = [0u8; NONCE_BYTES];
        n[..8].copy_from_slice(&i.to_le_bytes());
        n
    }

    fn stale(sent_ms: u64, now_ms: u64) -> Result<(), ReplayError> {
        Err(ReplayError::Stale { sent_ms, now_ms })
    }

    #[test]
    fn a_frame_is_admitted_once_and_only_while_fresh() {
        let mut w = ReplayWindow::new(Duration::from_secs(60), 100);
        assert_eq!(w.admit(NOW, NOW, &nonce(1)), Ok(()));
        assert_eq!(w.admit(NOW + 5, NOW, &nonce(1)), Err(ReplayError::Replayed));
        // Same time, other nonce: another frame.
        assert_eq!(w.admit(NOW, NOW, &nonce(2)), Ok(()));
        // The edges of the tolerance, both ways.
        assert_eq!(w.admit(NOW, NOW - 60_000, &nonce(3)), Ok(()));
        assert_eq!(w.admit(NOW, NOW + 60_000, &nonce(4)), Ok(()));
        assert_eq!(
            w.admit(NOW, NOW - 60_001, &nonce(5)),
            stale(NOW - 60_001, NOW)
        );
        assert_eq!(
            w.admit(NOW, NOW + 60_001, &nonce(6)),
            stale(NOW + 60_001, NOW)
        );
        // Once the clock has moved on, the first frame is forgotten, and stale.
        let later = NOW + 60_001;
        assert_eq!(w.admit(later, NOW, &nonce(1)), stale(NOW, later));
        assert_eq!(w.floor_ms(), NOW);
        assert_eq!(w.len(), 1, "only the frame sealed ahead of time is left");
    }

    #[test]
    fn a_clock_set_back_never_lets_a_forgotten_frame_in() {
        let mut w = ReplayWindow::new(Duration::from_secs(60), 100);
        w.admit(NOW, NOW, &nonce(1)).unwrap();
        // The receiver's clock jumps ahead (the pair is forgotten), then back.
        w.admit(NOW + 3_600_000, NOW + 3_600_000, &nonce(2))
            .unwrap();
        assert_eq!(w.admit(NOW, NOW, &nonce(1)), stale(NOW, NOW));
    }

    #[test]
    fn at_the_bound_the_window_shrinks_and_refuses_older_frames_as_stale() {
        let mut w = ReplayWindow::new(Duration::from_secs(60), 3);
        for i in 0..5 {
            w.admit(NOW, NOW - 1000 + i, &nonce(i)).unwrap();
        }
        assert_eq!(w.len(), 3);
        assert_eq!(w.floor_ms(), NOW - 1000 + 1);
        // Forgotten frames (and any frame as old) are stale, not admitted.
        for i in 0..2 {
            let sent = NOW - 1000 + i;
            assert_eq!(w.admit(NOW, sent, &nonce(i)), stale(sent, NOW));
            assert_eq!(w.admit(NOW, sent, &nonce(99)), stale(sent, NOW));
        }
        for i in 2..5 {
            assert_eq!(
                w.admit(NOW, NOW - 1000 + i, &nonce(i)),
                Err(ReplayError::Replayed)
            );
        }
        assert_eq!(w.admit(NOW, NOW, &nonce(7)), Ok(()));
    }

    #[test]
    fn extreme_times_neither_panic_nor_stick() {
        let mut w = ReplayWindow::new(Duration::MAX, 4);
        assert_eq!(w.admit(0, u64::MAX, &nonce(1)), Ok(()));
        let mut w = ReplayWindow::new(Duration::from_secs(1), 4);
        assert!(w.admit(NOW, u64::MAX, &nonce(1)).is_err());
        assert!(w.admit(NOW, 0, &nonce(1)).is_err());
        assert_eq!(w.admit(u64::MAX, u64::MAX, &nonce(1)), Ok(()));
        assert!(w.is_empty() || w.len() == 1);
    }

    proptest! {
        /// Whatever frames arrive, in any order and at any clock: the window stays within its
        /// capacity, and no frame admitted once is admitted again.
        #[test]
        fn bounded_and_never_admits_twice(
            events in proptest::collection::vec((0u64..200_000, 0u64..200_000, 0u64..40), 1..400),
            cap in 1usize..50,
        ) {
            let mut w = ReplayWindow::new(Duration::from_secs(30), cap);
            let mut admitted = std::collections::HashSet::new();
            for (now, sent, n) in events {
                if w.admit(NOW + now, NOW + sent, &nonce(n)).is_ok() {
                    prop_assert!(admitted.insert((sent, n)), "admitted twice: {sent} {n}");
                }
                prop_assert!(w.len() <= cap);
            }
        }
    }
}

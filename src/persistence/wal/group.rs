//! Group commit, the concurrent heart of [`super::Wal`]: appenders queue encoded records in one
//! shared batch and wait; one of them at a time (the leader) takes the batch, hands it to the
//! writer outside the lock, and acknowledges everyone in it. A writer's error poisons the log:
//! every waiter wakes with it and every later append is refused.
//!
//! This file uses nothing of the crate but `super::sync` (std's `Mutex` and `Condvar` here), so
//! `tests/wal_model.rs` compiles this very file against loom's and checks the handoff, the
//! poison and the wake-ups under every interleaving loom explores.

use super::sync::{Condvar, Mutex, MutexGuard};
use std::fmt::Display;
use std::ops::Range;

/// What appenders queue for the next leader.
pub(crate) trait Pending: Default {
    /// Whether nothing is queued.
    fn is_empty(&self) -> bool;
}

/// The state every appender shares; held only briefly.
#[derive(Debug)]
pub(crate) struct State<B> {
    /// The index the next submitted record gets.
    pub(crate) next_index: u64,
    /// Records submitted and not yet taken by a leader.
    pub(crate) batch: B,
    /// The highest acknowledged index.
    pub(crate) acked: u64,
    /// Whether a leader is writing a batch now.
    pub(crate) leader: bool,
    /// Why the log is poisoned, once it is (the first reason is kept).
    pub(crate) poisoned: Option<String>,
    /// Bumped by every truncation of the log's end (which lowers `acked`): a ticket from before
    /// one was acknowledged already, since truncation waits for a quiet log.
    pub(crate) truncations: u64,
}

/// Issued by [`GroupCommit::submit`], redeemed by [`GroupCommit::wait`]: the indexes of the
/// submitted records, and the truncation count when they were submitted.
#[derive(Debug, Clone)]
pub(crate) struct Ticket(pub(crate) Range<u64>, u64);

/// Why [`GroupCommit::wait`] failed.
#[derive(Debug)]
pub(crate) enum WaitError<E> {
    /// The log was poisoned (by another leader, or before this wait).
    Poisoned(String),
    /// This thread led a batch and the writer failed; the log is poisoned with it now.
    Failed(E),
}

/// The batch, the acknowledgement counter and the poison, with the condition variable that
/// wakes waiters.
#[derive(Debug)]
pub(crate) struct GroupCommit<B> {
    state: Mutex<State<B>>,
    cond: Condvar,
}

impl<B: Pending> GroupCommit<B> {
    /// A log whose records up to `acked` are acknowledged.
    pub(crate) fn new(acked: u64) -> Self {
        GroupCommit {
            state: Mutex::new(State {
                next_index: acked + 1,
                batch: B::default(),
                acked,
                leader: false,
                poisoned: None,
                truncations: 0,
            }),
            cond: Condvar::new(),
        }
    }

    /// The shared state, locked.
    pub(crate) fn lock(&self) -> MutexGuard<'_, State<B>> {
        // A panic while holding the lock leaves nothing half-done that matters: a leader's
        // panic poisons the log (see `wait`). Keep going rather than cascade panics.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Assigns the next `count` indexes and lets `fill` queue the records (given the batch and
    /// the first index); refused with the reason once the log is poisoned.
    pub(crate) fn submit(
        &self,
        count: u64,
        fill: impl FnOnce(&mut B, u64),
    ) -> Result<Ticket, String> {
        let mut s = self.lock();
        if let Some(p) = &s.poisoned {
            return Err(p.clone());
        }
        let first = s.next_index;
        fill(&mut s.batch, first);
        s.next_index += count;
        Ok(Ticket(first..s.next_index, s.truncations))
    }

    /// Waits until the ticket's records are acknowledged, leading a batch when no one else is:
    /// `write` gets the batch (no lock held) and returns the highest index it made safe to
    /// acknowledge.
    pub(crate) fn wait<E: Display>(
        &self,
        ticket: &Ticket,
        mut write: impl FnMut(&B) -> Result<u64, E>,
    ) -> Result<(), WaitError<E>> {
        let last = ticket.0.end.saturating_sub(1);
        let mut s = self.lock();
        loop {
            if ticket.0.is_empty() || s.acked >= last || s.truncations != ticket.1 {
                return Ok(());
            }
            if let Some(p) = &s.poisoned {
                return Err(WaitError::Poisoned(p.clone()));
            }
            if s.leader || s.batch.is_empty() {
                s = self.cond.wait(s).unwrap_or_else(|p| p.into_inner());
                continue;
            }
            s.leader = true;
            let batch = std::mem::take(&mut s.batch);
            drop(s);
            let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| write(&batch)));
            s = self.lock();
            s.leader = false;
            let result = match result {
                Ok(r) => r,
                Err(panic) => {
                    // Leave the log poisoned and the other appenders awake, then unwind on.
                    s.poisoned.get_or_insert_with(|| "a writer panicked".into());
                    self.cond.notify_all();
                    drop(s);
                    std::panic::resume_unwind(panic)
                }
            };
            match result {
                Ok(_) if s.poisoned.is_some() => {
                    // Poisoned while this batch was written (the interval flusher's flush
                    // failed): nothing is acknowledged after the poison. Whoever poisoned woke
                    // the waiters already.
                    return Err(WaitError::Poisoned(s.poisoned.clone().unwrap_or_default()));
                }
                Ok(acked) => s.acked = s.acked.max(acked),
                Err(e) => {
                    s.poisoned.get_or_insert_with(|| e.to_string());
                    self.cond.notify_all();
                    return Err(WaitError::Failed(e));
                }
            }
            self.cond.notify_all();
        }
    }

    /// Poisons the log (the first reason is kept) and wakes every waiter.
    pub(crate) fn poison(&self, why: impl Display) {
        let mut s = self.lock();
        s.poisoned.get_or_insert_with(|| why.to_string());
        self.cond.notify_all();
    }

    /// Why the log is poisoned, if it is.
    pub(crate) fn poisoned(&self) -> Option<String> {
        self.lock().poisoned.clone()
    }
}

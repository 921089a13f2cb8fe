//! A model check of the WAL's group commit with loom: `src/persistence/wal/group.rs` (the very
//! file the log uses) compiled against loom's `Mutex` and `Condvar`, driven by appender threads
//! and an interval flusher over a model disk whose flush can fail. Loom runs every interleaving
//! (up to a preemption bound) and fails a run where a thread waits forever (a deadlock: every
//! thread blocked) or where an assertion below breaks:
//!
//! - no acknowledged append is lost: an append that returned `Ok` was written, and in `Always`
//!   mode flushed, by the time it returned;
//! - every index is given once, and appenders in one batch get consecutive ones;
//! - a failed flush poisons the log: every waiter wakes with an error (none waits forever) and
//!   every later append is refused.
//!
//! The same file is in the crate (no `cfg(loom)` build of the whole crate is needed).

#[allow(dead_code)]
mod sync {
    pub(crate) use loom::sync::{Condvar, Mutex, MutexGuard};
}

#[allow(dead_code)]
#[path = "../src/persistence/wal/group.rs"]
mod group;

use group::{GroupCommit, Pending, WaitError};
use loom::sync::{Arc, Condvar, Mutex};
use loom::thread;

/// The queued indexes.
#[derive(Debug, Default)]
struct Queue(Vec<u64>);

impl Pending for Queue {
    fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// A disk: what was written, how much of it is flushed, and the flushes that fail.
#[derive(Debug, Default)]
struct Disk {
    written: Vec<u64>,
    durable: usize,
    flushes: u32,
    /// The flush with this number (from 1) fails, and every one after it.
    fail_from: Option<u32>,
}

impl Disk {
    fn flush(&mut self) -> Result<(), String> {
        self.flushes += 1;
        if self.fail_from.is_some_and(|n| self.flushes >= n) {
            return Err("fsync: I/O error".into());
        }
        self.durable = self.written.len();
        Ok(())
    }
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Mode {
    /// Flush in the leader before acknowledging.
    Always,
    /// Acknowledge once written; a flusher thread flushes.
    Interval,
}

struct Log {
    commit: GroupCommit<Queue>,
    disk: Mutex<Disk>,
    mode: Mode,
}

impl Log {
    fn new(mode: Mode, fail_from: Option<u32>) -> Arc<Log> {
        Arc::new(Log {
            commit: GroupCommit::new(0),
            disk: Mutex::new(Disk {
                fail_from,
                ..Disk::default()
            }),
            mode,
        })
    }

    /// The leader's work: write the batch, flush in `Always` mode; the highest index safe to
    /// acknowledge.
    fn write(&self, batch: &Queue) -> Result<u64, String> {
        let mut disk = self.disk.lock().unwrap();
        disk.written.extend_from_slice(&batch.0);
        if self.mode == Mode::Always {
            disk.flush()?;
        }
        Ok(*disk.written.last().expect("a batch is never empty"))
    }

    /// One append of `n` records: the indexes on success.
    fn append(&self, n: u64) -> Result<std::ops::Range<u64>, String> {
        self.append_with(n, |b| self.write(b))
    }

    /// One append of `n` records, a leader writing with `write`.
    fn append_with(
        &self,
        n: u64,
        write: impl FnMut(&Queue) -> Result<u64, String>,
    ) -> Result<std::ops::Range<u64>, String> {
        let ticket = self
            .commit
            .submit(n, |q, first| q.0.extend(first..first + n))?;
        match self.commit.wait(&ticket, write) {
            Ok(()) => Ok(ticket.0),
            Err(WaitError::Poisoned(p)) | Err(WaitError::Failed(p)) => Err(p),
        }
    }

    /// The interval flusher's work (as `Inner::sync`): flush, poison on failure.
    fn sync(&self) -> Result<(), String> {
        if let Some(p) = self.commit.poisoned() {
            return Err(p);
        }
        let r = self.disk.lock().unwrap().flush();
        if let Err(e) = &r {
            self.commit.poison(e);
        }
        r
    }

    /// Checks an acknowledged append against the disk.
    fn check_acked(&self, indexes: &std::ops::Range<u64>) {
        let disk = self.disk.lock().unwrap();
        for i in indexes.clone() {
            let at = disk.written.iter().position(|&w| w == i);
            let at = at.unwrap_or_else(|| panic!("acknowledged index {i} was never written"));
            if self.mode == Mode::Always {
                assert!(at < disk.durable, "acknowledged index {i} is not flushed");
            }
        }
    }
}

fn builder() -> loom::model::Builder {
    let mut b = loom::model::Builder::new();
    // Enough to reorder every lock handoff of two appenders and a flusher; the full space of
    // three threads without a bound takes minutes.
    if b.preemption_bound.is_none() {
        b.preemption_bound = Some(3);
    }
    b
}

/// Runs `appenders` appenders of `n` records each; returns their results.
fn run_appenders(
    log: &Arc<Log>,
    appenders: usize,
    n: u64,
) -> Vec<Result<std::ops::Range<u64>, String>> {
    let handles: Vec<_> = (0..appenders)
        .map(|_| {
            let log = log.clone();
            thread::spawn(move || log.append(n))
        })
        .collect();
    handles.into_iter().map(|h| h.join().unwrap()).collect()
}

#[test]
fn always_every_acknowledged_append_is_flushed_and_indexes_are_unique() {
    builder().check(|| {
        let log = Log::new(Mode::Always, None);
        let results = run_appenders(&log, 3, 2);
        let mut seen = Vec::new();
        for r in &results {
            let range = r
                .as_ref()
                .expect("no failure injected: every append succeeds");
            assert_eq!(range.end - range.start, 2);
            log.check_acked(range);
            seen.extend(range.clone());
        }
        seen.sort_unstable();
        assert_eq!(seen, (1..=6).collect::<Vec<_>>());
        let disk = log.disk.lock().unwrap();
        assert_eq!(disk.written.len(), 6, "each record written once");
        assert!(
            disk.flushes <= 3,
            "at most one flush per append: {}",
            disk.flushes
        );
        assert_eq!(log.commit.lock().acked, 6);
    });
}

#[test]
fn always_a_failed_flush_wakes_every_waiter_and_poisons_the_log() {
    builder().check(|| {
        let log = Log::new(Mode::Always, Some(1));
        let results = run_appenders(&log, 3, 1);
        // The first flush fails: no append can be acknowledged, and no one waits forever (loom
        // fails the run as a deadlock if a waiter is never woken).
        for r in &results {
            assert_eq!(r.as_ref().unwrap_err(), "fsync: I/O error");
        }
        assert_eq!(log.commit.poisoned().as_deref(), Some("fsync: I/O error"));
        assert_eq!(
            log.append(1).unwrap_err(),
            "fsync: I/O error",
            "later appends refused"
        );
    });
}

#[test]
fn always_a_flush_failing_later_keeps_what_was_acknowledged() {
    builder().check(|| {
        let log = Log::new(Mode::Always, Some(2));
        let results = run_appenders(&log, 3, 1);
        let ok: Vec<_> = results.iter().filter_map(|r| r.as_ref().ok()).collect();
        assert!(
            !ok.is_empty(),
            "the first flush succeeds, so its batch is acknowledged"
        );
        for range in &ok {
            log.check_acked(range);
        }
        // Whether the second flush happens depends on how the appenders were batched; when it
        // did, the log is poisoned and the rest failed with it.
        if log.disk.lock().unwrap().flushes >= 2 {
            assert!(results.iter().any(|r| r.is_err()));
            assert!(log.append(1).is_err());
        } else {
            assert_eq!(ok.len(), 3);
        }
    });
}

#[test]
fn interval_a_failed_background_flush_wakes_waiters_and_refuses_appends() {
    builder().check(|| {
        let log = Log::new(Mode::Interval, Some(1));
        let flusher = {
            let log = log.clone();
            thread::spawn(move || {
                // The interval flusher: flush until a flush fails (then the log is poisoned).
                for _ in 0..2 {
                    if log.sync().is_err() {
                        return;
                    }
                }
            })
        };
        let results = run_appenders(&log, 2, 1);
        flusher.join().unwrap();
        for r in results.iter().filter_map(|r| r.as_ref().ok()) {
            log.check_acked(r);
        }
        assert_eq!(log.commit.poisoned().as_deref(), Some("fsync: I/O error"));
        assert!(
            log.append(1).is_err(),
            "an append after the poison is refused"
        );
    });
}

/// A leader stuck in a slow write while the flusher's flush fails: the other appender wakes with
/// the error at once (it does not wait for the stuck leader), and the leader's batch, written
/// after the poison, is not acknowledged.
#[test]
fn interval_a_poison_wakes_waiters_behind_a_stuck_leader() {
    builder().check(|| {
        let log = Log::new(Mode::Interval, Some(1));
        let gate = Arc::new((Mutex::new(false), Condvar::new()));
        let returned = Arc::new((Mutex::new(0u32), Condvar::new()));
        let appenders: Vec<_> = (0..2)
            .map(|_| {
                let (log, gate, returned) = (log.clone(), gate.clone(), returned.clone());
                thread::spawn(move || {
                    let r = log.append_with(1, |b| {
                        let (open, cv) = &*gate;
                        let mut open = open.lock().unwrap();
                        while !*open {
                            open = cv.wait(open).unwrap();
                        }
                        drop(open);
                        log.write(b)
                    });
                    *returned.0.lock().unwrap() += 1;
                    returned.1.notify_all();
                    r
                })
            })
            .collect();
        let flusher = {
            let log = log.clone();
            thread::spawn(move || {
                let _ = log.sync();
            })
        };
        flusher.join().unwrap();
        // The writes are held until one appender has returned: the one not leading must be
        // woken by the poison (or refused by it at submit).
        {
            let mut n = returned.0.lock().unwrap();
            while *n == 0 {
                n = returned.1.wait(n).unwrap();
            }
        }
        *gate.0.lock().unwrap() = true;
        gate.1.notify_all();
        for h in appenders {
            let r = h.join().unwrap();
            assert_eq!(
                r.unwrap_err(),
                "fsync: I/O error",
                "nothing acknowledged after the poison"
            );
        }
    });
}

#[test]
fn interval_appends_and_flushes_interleave_without_loss() {
    builder().check(|| {
        let log = Log::new(Mode::Interval, None);
        let flusher = {
            let log = log.clone();
            thread::spawn(move || {
                log.sync().unwrap();
            })
        };
        let results = run_appenders(&log, 2, 2);
        flusher.join().unwrap();
        for r in &results {
            log.check_acked(r.as_ref().unwrap());
        }
        log.sync().unwrap();
        let disk = log.disk.lock().unwrap();
        assert_eq!(
            disk.durable, 4,
            "a final sync flushes every acknowledged record"
        );
    });
}

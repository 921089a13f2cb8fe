//! Waiting in the system tests: for a condition, with a deadline (`eventually`, and its blocking
//! form for tests that run on a blocking thread); and, for the tests that run real nodes, one
//! test at a time (`serial`).

use std::time::{Duration, Instant};

/// What one look at an awaited condition says: `true`, or `Ok(value)`, when it holds; `false`,
/// or `Err(what was seen)`, while it does not.
pub trait Check {
    /// What the wait returns once the condition holds.
    type Value;
    /// `Ok` once the condition holds; `Err` with what was seen (if the check says) until then.
    fn done(self) -> Result<Self::Value, Option<String>>;
}

impl Check for bool {
    type Value = ();
    fn done(self) -> Result<(), Option<String>> {
        if self {
            Ok(())
        } else {
            Err(None)
        }
    }
}

impl<T> Check for Result<T, String> {
    type Value = T;
    fn done(self) -> Result<T, Option<String>> {
        self.map_err(Some)
    }
}

/// A wait for `what`, until `deadline` from its start.
struct Wait<'a> {
    what: &'a str,
    deadline: Duration,
    end: Instant,
}

impl<'a> Wait<'a> {
    fn new(what: &'a str, deadline: Duration) -> Self {
        Wait {
            what,
            deadline,
            end: Instant::now() + deadline,
        }
    }

    /// The value of a look at the condition that holds; `None` for one that does not while there
    /// is time left; once there is none, a panic naming what was awaited and what was seen last.
    fn look<C: Check>(&self, look: C) -> Option<C::Value> {
        let last = match look.done() {
            Ok(v) => return Some(v),
            Err(_) if Instant::now() < self.end => return None,
            Err(last) => last,
        };
        let last = last.map(|l| format!("\nlast: {l}")).unwrap_or_default();
        panic!(
            "timed out after {:?} waiting for: {}{last}",
            self.deadline, self.what
        );
    }
}

/// Looks at `check` every 20 ms until it holds and returns its value; panics once `deadline` has
/// passed, naming `what` was awaited and what the last look saw.
pub async fn eventually<C: Check>(
    what: &str,
    deadline: Duration,
    mut check: impl AsyncFnMut() -> C,
) -> C::Value {
    let wait = Wait::new(what, deadline);
    loop {
        if let Some(v) = wait.look(check().await) {
            return v;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// [`eventually`] for a blocking thread: looks every 50 ms (a look may run a process).
pub fn eventually_blocking<C: Check>(
    what: &str,
    deadline: Duration,
    mut check: impl FnMut() -> C,
) -> C::Value {
    let wait = Wait::new(what, deadline);
    loop {
        if let Some(v) = wait.look(check()) {
            return v;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Tests that run real nodes take this lock so they run one at a time: their timeouts are short
/// (the `local` preset) and a 2-core CI machine running ten clusters at once would make a test
/// about failure detection fail for the wrong reason.
pub async fn serial() -> tokio::sync::MutexGuard<'static, ()> {
    static LOCK: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
    LOCK.lock().await
}

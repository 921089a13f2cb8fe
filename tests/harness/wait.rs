//! Waiting in the system tests: for a condition, with a deadline (`eventually`, and its blocking
//! form for tests that run on a blocking thread); and, for the tests that run real nodes, one
//! test at a time (`serial`).

use std::fmt;
use std::time::Duration;

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

/// A wait that ran out; both forms of `eventually` panic with it.
struct TimedOut<'a> {
    what: &'a str,
    deadline: Duration,
    last: Option<String>,
}

impl fmt::Display for TimedOut<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "timed out after {:?} waiting for: {}",
            self.deadline, self.what
        )?;
        match &self.last {
            Some(last) => write!(f, "\nlast: {last}"),
            None => Ok(()),
        }
    }
}

/// Looks at `check` every 20 ms until it holds and returns its value; panics once `deadline` has
/// passed, naming `what` was awaited and what the last look saw.
pub async fn eventually<C: Check>(
    what: &str,
    deadline: Duration,
    mut check: impl AsyncFnMut() -> C,
) -> C::Value {
    let end = tokio::time::Instant::now() + deadline;
    loop {
        let last = match check().await.done() {
            Ok(v) => return v,
            Err(last) => last,
        };
        if tokio::time::Instant::now() >= end {
            panic!(
                "{}",
                TimedOut {
                    what,
                    deadline,
                    last
                }
            );
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
    let end = std::time::Instant::now() + deadline;
    loop {
        let last = match check().done() {
            Ok(v) => return v,
            Err(last) => last,
        };
        if std::time::Instant::now() >= end {
            panic!(
                "{}",
                TimedOut {
                    what,
                    deadline,
                    last
                }
            );
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

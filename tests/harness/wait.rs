//! Waiting in the system tests: for a condition, with a deadline; and for the other tests that
//! run real nodes, one at a time.

/// Polls `cond` every 20 ms until it holds or `deadline` passes; `Err` names what was awaited.
pub async fn eventually(what: &str, deadline: std::time::Duration, mut cond: impl FnMut() -> bool) {
    let end = tokio::time::Instant::now() + deadline;
    while !cond() {
        if tokio::time::Instant::now() >= end {
            panic!("timed out after {deadline:?} waiting for: {what}");
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

/// Tests that run real nodes take this lock so they run one at a time: their timeouts are short
/// (the `local` preset) and a 2-core CI machine running ten clusters at once would make a test
/// about failure detection fail for the wrong reason.
pub async fn serial() -> tokio::sync::MutexGuard<'static, ()> {
    static LOCK: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
    LOCK.lock().await
}

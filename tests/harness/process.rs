//! Processes: the built `dcore` binary run to completion or spawned, a guard that kills a child
//! when a test ends, and the lines a child writes.

use std::io::{BufRead, BufReader, Read};
use std::ops::{Deref, DerefMut};
use std::process::{Child, Command, ExitStatus};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

/// The `dcore` binary cargo built for this test run.
pub const DCORE: &str = env!("CARGO_BIN_EXE_dcore");

/// A `dcore` command without the client settings of the caller's environment
/// (`DCORE_HTTP_ADDR`, `DCORE_TOKEN_FILE`), so a developer's shell cannot point a test elsewhere.
pub fn dcore_command() -> Command {
    let mut cmd = Command::new(DCORE);
    cmd.env_remove("DCORE_HTTP_ADDR")
        .env_remove("DCORE_TOKEN_FILE");
    cmd
}

/// A finished run of `dcore`.
#[derive(Debug)]
pub struct Run {
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    /// The exit code (`None` when a signal ended it).
    pub fn code(&self) -> Option<i32> {
        self.status.code()
    }

    /// Whether it exited with 0.
    pub fn ok(&self) -> bool {
        self.status.success()
    }
}

/// Runs `dcore ARGS` to completion.
pub fn dcore(args: &[&str]) -> Run {
    let out = dcore_command().args(args).output().expect("dcore runs");
    Run {
        status: out.status,
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// A child process that is killed (SIGKILL) and reaped when dropped, so a test that fails leaves
/// no process behind.
pub struct KillOnDrop(pub Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Deref for KillOnDrop {
    type Target = Child;
    fn deref(&self) -> &Child {
        &self.0
    }
}

impl DerefMut for KillOnDrop {
    fn deref_mut(&mut self) -> &mut Child {
        &mut self.0
    }
}

/// The lines a child writes to a pipe, read on a thread to the end (the pipe never fills): each
/// is kept, for a failure's context, and handed in turn to [`Lines::wait_for`].
pub struct Lines {
    rx: mpsc::Receiver<String>,
    seen: Arc<Mutex<Vec<String>>>,
}

impl Lines {
    pub fn new(pipe: impl Read + Send + 'static) -> Lines {
        let (tx, rx) = mpsc::channel();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let sink = seen.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(pipe).lines().map_while(Result::ok) {
                sink.lock().unwrap().push(line.clone());
                let _ = tx.send(line); // nobody may be waiting any more
            }
        });
        Lines { rx, seen }
    }

    /// Takes the lines not taken yet, at most `within`, until `pick` returns `Some` for one;
    /// `Err` says why it stopped waiting (time ran out, or the pipe closed).
    pub fn wait_for<T>(
        &self,
        within: Duration,
        mut pick: impl FnMut(&str) -> Option<T>,
    ) -> Result<T, String> {
        let end = Instant::now() + within;
        loop {
            let left = end.saturating_duration_since(Instant::now());
            let line = self.rx.recv_timeout(left).map_err(|e| e.to_string())?;
            if let Some(v) = pick(&line) {
                return Ok(v);
            }
        }
    }

    /// Every line read so far.
    pub fn text(&self) -> String {
        let seen = self.seen.lock().unwrap_or_else(|e| e.into_inner());
        seen.join("\n")
    }
}

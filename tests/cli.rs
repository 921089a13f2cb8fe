//! The `dcore` binary end to end: `dcore local` runs real nodes and reports what `--json` promises.

mod harness;

use std::process::Command;

fn dcore(args: &[&str]) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_dcore"))
        .args(args)
        .output()
        .expect("dcore runs");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test]
async fn local_json_reports_the_crash_and_no_false_failure() {
    let _serial = harness::serial().await;
    let args = [
        "local",
        "--nodes",
        "5",
        "--duration",
        "10",
        "--kill",
        "1",
        "--preset",
        "local",
        "--encrypt",
        "--json",
    ];
    let (ok, stdout, stderr) = dcore(&args);
    assert!(ok, "dcore local failed: {stderr}");
    let r: serde_json::Value = serde_json::from_str(stdout.trim()).expect("one JSON object");
    assert!(r["converged_ms"].is_u64(), "{r}");
    assert_eq!(r["detect_ms"]["undetected"], 0, "{r}");
    assert!(r["detect_ms"]["max"].as_u64().is_some(), "{r}");
    assert_eq!(r["false_positives"], 0, "{r}");
    assert_eq!(r["killed"].as_array().map(Vec::len), Some(1), "{r}");
    assert_eq!(r["encrypted"], true, "{r}");
    for key in ["cpu_s", "rss_mb", "msgs_per_node_s", "bytes_per_node_s"] {
        assert!(r[key].as_f64().is_some_and(|v| v > 0.0), "{key}: {r}");
    }
}

#[tokio::test]
async fn local_without_json_prints_a_summary_and_bad_flags_are_refused() {
    let _serial = harness::serial().await;
    let (ok, stdout, stderr) = dcore(&[
        "local",
        "--nodes",
        "3",
        "--duration",
        "3",
        "--preset",
        "local",
        "--summary",
    ]);
    assert!(ok, "dcore local failed: {stderr}");
    assert!(
        stdout.contains("formed:") && stdout.contains("3 nodes"),
        "{stdout}"
    );
    let (ok, _, stderr) = dcore(&["local", "--nodes", "3", "--kill", "3"]);
    assert!(!ok && stderr.contains("--kill"), "{stderr}");
}

/// Reads a child's stdout on a thread; `expect` waits (bounded) for a line containing `what`.
struct Lines(std::sync::mpsc::Receiver<String>, Vec<String>);

impl Lines {
    fn new(out: std::process::ChildStdout) -> Self {
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            use std::io::BufRead;
            for line in std::io::BufReader::new(out).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    return;
                }
            }
        });
        Lines(rx, Vec::new())
    }

    fn expect(&mut self, what: &str, within: std::time::Duration) {
        let end = std::time::Instant::now() + within;
        while let Some(left) = end.checked_duration_since(std::time::Instant::now()) {
            match self.0.recv_timeout(left) {
                Ok(line) => {
                    let hit = line.contains(what);
                    self.1.push(line);
                    if hit {
                        return;
                    }
                }
                Err(_) => break,
            }
        }
        panic!(
            "no line with {what:?} within {within:?}; output:\n{}",
            self.1.join("\n")
        );
    }
}

#[tokio::test]
async fn interactive_local_shows_a_crash_and_a_restart() {
    use std::io::Write;
    use std::process::Stdio;
    use std::time::Duration;
    let _serial = harness::serial().await;
    let mut child = Command::new(env!("CARGO_BIN_EXE_dcore"))
        .args(["local", "--nodes", "3", "--preset", "local"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("dcore runs");
    struct Kill(std::process::Child);
    impl Drop for Kill {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let mut lines = Lines::new(child.stdout.take().unwrap());
    let mut stdin = child.stdin.take().unwrap();
    let child = Kill(child);
    lines.expect("Type help", Duration::from_secs(10));
    lines.expect("   A   A   .", Duration::from_secs(10)); // n2's row: it sees both others
    writeln!(stdin, "kill 2").unwrap();
    lines.expect("n0: n2 failed", Duration::from_secs(15));
    writeln!(stdin, "restart n2").unwrap();
    lines.expect("n2 alive again (incarnation 1)", Duration::from_secs(15));
    writeln!(stdin, "kill 7").unwrap();
    lines.expect("error: there is no n7", Duration::from_secs(5));
    writeln!(stdin, "quit").unwrap();
    lines.expect("stopped", Duration::from_secs(10));
    let mut child = child;
    let status = child.0.wait().unwrap();
    assert!(status.success(), "{status}");
}

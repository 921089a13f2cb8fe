//! The `dcore` binary end to end: `dcore local` runs real nodes and reports what `--json` promises.

mod harness;

use harness::{dcore, dcore_command, KillOnDrop, Lines};
use std::time::Duration;

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
    let run = dcore(&args);
    assert!(run.ok(), "dcore local failed: {}", run.stderr);
    let r: serde_json::Value = serde_json::from_str(run.stdout.trim()).expect("one JSON object");
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

/// All local nodes share 127.0.0.1: the per-IP cap on inbound connections (64 by default) must
/// not count them as one peer, or the seed refuses most joiners and 100 nodes never form.
#[tokio::test]
async fn a_hundred_local_nodes_form() {
    let _serial = harness::serial().await;
    let run = dcore(&["local", "--nodes", "100", "--duration", "10", "--json"]);
    assert!(run.ok(), "dcore local failed: {}", run.stderr);
    let r: serde_json::Value = serde_json::from_str(run.stdout.trim()).expect("one JSON object");
    assert!(r["converged_ms"].is_u64(), "{r}");
    assert_eq!(r["converged_at_end"], true, "{r}");
}

#[tokio::test]
async fn local_without_json_prints_a_summary_and_bad_flags_are_refused() {
    let _serial = harness::serial().await;
    let run = dcore(&[
        "local",
        "--nodes",
        "3",
        "--duration",
        "3",
        "--preset",
        "local",
        "--summary",
    ]);
    assert!(run.ok(), "dcore local failed: {}", run.stderr);
    let stdout = &run.stdout;
    assert!(
        stdout.contains("formed:") && stdout.contains("3 nodes"),
        "{stdout}"
    );
    let run = dcore(&["local", "--nodes", "3", "--kill", "3"]);
    assert!(!run.ok() && run.stderr.contains("--kill"), "{}", run.stderr);
}

/// Waits (bounded) for a line of `lines` containing `what`.
fn expect(lines: &Lines, what: &str, within: Duration) {
    if let Err(e) = lines.wait_for(within, |line| line.contains(what).then_some(())) {
        panic!(
            "no line with {what:?} within {within:?} ({e}); output:\n{}",
            lines.text()
        );
    }
}

#[tokio::test]
async fn interactive_local_shows_a_crash_and_a_restart() {
    use std::io::Write;
    use std::process::Stdio;
    let _serial = harness::serial().await;
    let mut child = KillOnDrop(
        dcore_command()
            .args(["local", "--nodes", "3", "--preset", "local"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("dcore runs"),
    );
    let lines = Lines::new(child.stdout.take().unwrap());
    let mut stdin = child.stdin.take().unwrap();
    expect(&lines, "Type help", Duration::from_secs(10));
    expect(&lines, "   A   A   .", Duration::from_secs(10)); // n2's row: it sees both others
    writeln!(stdin, "kill 2").unwrap();
    expect(&lines, "n0: n2 failed", Duration::from_secs(15));
    writeln!(stdin, "restart n2").unwrap();
    expect(
        &lines,
        "n2 alive again (incarnation 1)",
        Duration::from_secs(15),
    );
    writeln!(stdin, "kill 7").unwrap();
    expect(&lines, "error: there is no n7", Duration::from_secs(5));
    writeln!(stdin, "quit").unwrap();
    expect(&lines, "stopped", Duration::from_secs(10));
    let status = child.wait().unwrap();
    assert!(status.success(), "{status}");
}

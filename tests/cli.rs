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
    ]);
    assert!(ok, "dcore local failed: {stderr}");
    assert!(
        stdout.contains("formed:") && stdout.contains("3 nodes"),
        "{stdout}"
    );
    let (ok, _, stderr) = dcore(&["local", "--nodes", "3", "--kill", "3"]);
    assert!(!ok && stderr.contains("--kill"), "{stderr}");
}
